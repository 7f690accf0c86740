import json
import os
from pathlib import Path

import pytest

from resnetkit.cli.main import main


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "resnet50", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 25_557_032
    assert isinstance(data["macs"], int) and abs(data["macs"] - 4.089e9) < 0.01 * 4.089e9
    assert data["stage_shapes"]["layer4"] == [1, 2048, 7, 7]


def test_info_input_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "resnet20", "--input-size", "64", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_size"] == 64 and data["stage_shapes"]["layer3"] == [1, 64, 16, 16]


def test_info_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "269,722" in out and "layer3" in out


def test_info_builds_the_model_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    """Paper Table 3: option A pads instead of projecting, so ResNet-34 A has fewer weights;
    the Fig. 4 units of the 2016 paper move layers, not weights."""
    assert main(["info", "resnet34", "--json"]) == 0
    b = json.loads(capsys.readouterr().out)["params"]
    assert main(["info", "resnet34", "--model-option", "shortcut=A", "--json"]) == 0
    a = json.loads(capsys.readouterr().out)["params"]
    assert a < b == 21_797_672
    assert main(["info", "resnet110", "--model-option", "unit=relu_only_preact"]) == 0
    out = capsys.readouterr().out
    assert "relu_only_preact units" in out and "1,727,962" in out


def test_a_closed_pipe_ends_a_listing_quietly() -> None:
    """`resnetkit models | head`: no "error: Broken pipe" line, the exit status of `ls | head`
    (shown with `recipes`, the quickest listing)."""
    import signal
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails
    with os.fdopen(write, "w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "resnetkit.cli.main", "recipes"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert done.returncode == 128 + signal.SIGPIPE and done.stderr == "", done.stderr


def test_models_lists_each_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "plain*"]) == 0
    out = capsys.readouterr().out
    assert "plain56" in out and "853.018K" in out and "7 models" in out


def test_info_refuses_a_zero_input_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["info", "resnet20", "--input-size", "0"])
    assert "--input-size" in capsys.readouterr().err


def test_unknown_model_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "resnet51"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_info_tells_paths_from_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", f"{tmp_path}/gone/"]) == 2  # not "unknown model"
    assert "gone/: no such model directory" in capsys.readouterr().err
    (tmp_path / "cat.png").write_bytes(b"\x89PNG")
    assert main(["info", str(tmp_path / "cat.png")]) == 2  # not "unknown model '.../cat'"
    assert "cat.png is a file: info describes a model name" in capsys.readouterr().err
    # a run's folder, as evaluate --model takes it: its model/ is named (was "not a resnetkit
    # model directory: expected config.json and model.safetensors")
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    assert main(["info", str(tmp_path / "run")]) == 2
    model = tmp_path / "run" / "model"
    assert f"the model it trained is {model}; describe that (resnetkit info {model})" in (
        capsys.readouterr().err
    )


def test_models_keeps_its_counts_in_a_cache(capsys, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import json

    monkeypatch.setenv("RESNETKIT_HOME", str(tmp_path))
    assert main(["models", "resnet20", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    cache = json.loads((tmp_path / "zoo-stats.json").read_text())
    assert cache["rows"]["resnet20"]["params"] == first[0]["params"] == 269_722
    # An entry for this config is read, not counted again (a planted number shows it)
    config = cache["rows"]["resnet20"]["config"]
    cache["rows"]["resnet20"]["params"] = 1
    (tmp_path / "zoo-stats.json").write_text(json.dumps(cache))
    assert main(["models", "resnet20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["params"] == 1
    # An entry for another config (an older zoo row) is not trusted: counted again.
    assert config != "old"
    cache["rows"]["resnet20"].update(config="old", params=1)
    (tmp_path / "zoo-stats.json").write_text(json.dumps(cache))
    assert main(["models", "resnet20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["params"] == 269_722


def test_models_list_the_weights_a_bare_name_loads_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "resnet[25]0", "--json"]) == 0
    rows = {r["name"]: r["weights"] for r in json.loads(capsys.readouterr().out)}
    # create_model("resnet50", pretrained=True) is tv2_in1k; "resnet20" the packaged cifar10.
    assert rows["resnet50"] == ["tv2_in1k", "tv_in1k"]
    assert rows["resnet20"] == ["cifar10", "paper_cifar10"]


def test_info_of_a_tag_says_what_its_weights_are(capsys: pytest.CaptureFixture[str]) -> None:
    """Read from the index: nothing is loaded or downloaded (this machine has no network)."""
    assert main(["info", "resnet20.paper_cifar10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    card = data["weights"]
    assert data["params"] == 269_722 and card["num_classes"] == 10
    assert card["recipe"].startswith("paper-cifar") and card["metrics"]["test_top1"] > 91.25
    assert card["preprocessing"]["per_pixel_mean"] == "3x32x32"
    assert main(["info", "resnet50.tv2_in1k"]) == 0
    out = capsys.readouterr().out
    assert "25,557,032" in out and "imagenet_top1 80.858" in out
    assert "resize 232 (bilinear), crop 224x224" in out and "(1000 in all)" in out
    assert main(["info", "resnet56.cifar10"]) == 2
    assert "resnetkit ships: resnet20.cifar10" in capsys.readouterr().err


def test_models_with_no_match_names_the_close_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt name (or a weights tag) matched nothing and said only that."""
    assert main(["models", "resnet21"]) == 1
    assert "no model matches 'resnet21' (did you mean resnet32, resnet20" in capsys.readouterr().out
    assert main(["models", "ResNet56"]) == 1
    assert "(did you mean resnet56" in capsys.readouterr().out
    assert main(["models", "resnet20.cifar10"]) == 1
    said = capsys.readouterr().out
    assert (
        "resnet20.cifar10 is a weights tag: `resnetkit info resnet20.cifar10` describes it" in said
    )
    assert main(["models", "foo*"]) == 1
    assert capsys.readouterr().out.startswith("no model matches 'foo*'; try")
