"""A user's mistakes get a clear message naming the file or option, never a traceback, and
never cost them a file."""

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import resnetkit
from resnetkit.cli.main import main
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import save_model_dir
from resnetkit.train.recipe import load_recipe

CAT = str(resources.files("resnetkit.assets").joinpath("cat.png"))


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_an_out_file_that_is_a_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model", "resnet20.cifar10"]
    for argv in (
        ["explain", *model, CAT, "--out", str(tmp_path)],
        ["export", *model, "--format", "onnx", "--out", str(tmp_path)],
        ["quantize", *model, "--out", str(tmp_path)],
        ["plot", str(tmp_path), "--out", str(tmp_path)],
    ):
        assert f"{tmp_path} is a folder: give a file name" in parse_error(argv, capsys), argv
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    err = parse_error(["embed", *model, CAT, "--out", str(blocker / "x.npy")], capsys)
    assert f"{blocker} is a file, not a folder" in err


def test_evaluate_checks_where_its_figures_go_before_evaluating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    argv = ["evaluate", "--model", "nonexistent-model-dir/", "--dataset", "cifar10-sample"]
    # The figure is checked first: the model is not even looked for.
    assert main([*argv, "--reliability", str(blocker / "r.png")]) == 2
    assert f"--reliability {blocker / 'r.png'}: {blocker} is a file" in capsys.readouterr().err


def test_export_refuses_unwritable_opsets_and_keeps_out_on_a_bad_photo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"\x08\x09an earlier export")  # as ONNX files begin
    argv = ["export", "--model", "resnet20.cifar10", "--format", "onnx", "--out", str(out)]
    assert main([*argv, "--opset", "3"]) == 2
    assert "opset 3 cannot be written here: choose 11 to 23" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main([*argv, "--image", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert out.read_bytes() == b"\x08\x09an earlier export"
    assert "must be at least 1" in parse_error([*argv, "--input-size", "-4"], capsys)


def test_model_directories_never_overwrite_other_files(tmp_path: Path) -> None:
    model = resnetkit.create_model("resnet20")
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# My project\n")
    with pytest.raises(FileExistsError, match="already holds other files"):
        save_model_dir(model, project, arch="resnet20", classes=[], preprocessing={})
    assert (project / "README.md").read_text() == "# My project\n"
    out = save_model_dir(model, tmp_path / "m", arch="resnet20", classes=[], preprocessing={})
    with pytest.raises(FileExistsError, match="already holds a model directory"):
        save_model_dir(model, out, arch="resnet20", classes=[], preprocessing={})
    save_model_dir(model, out, arch="resnet20", classes=["a"] * 10, preprocessing={}, replace=True)
    assert load_model(out).pretrained_cfg["classes"] == ["a"] * 10  # type: ignore[index]


def test_convert_refuses_a_folder_with_files_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "r20.safetensors"
    save_file(resnetkit.create_model("resnet20").state_dict(), str(src))
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# My project\n")
    argv = ["convert", str(src), "--arch", "resnet20"]
    assert main([*argv, "--out", str(project)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (project / "README.md").read_text() == "# My project\n"
    assert "must be >= 0" in parse_error([*argv, "--out", "x", "--num-classes", "-3"], capsys)
    assert "must be at least 1" in parse_error([*argv, "--out", "x", "--in-chans", "0"], capsys)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        resnetkit.create_model("resnet20", num_classes=-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["config"].pop("layers"), "config.layers must be a list of positive"),
        (lambda m: m["config"].update(layers=3), "config.layers must be a list of positive"),
        (lambda m: m.update(preprocessing=[]), "preprocessing must be an object"),
        (lambda m: m["preprocessing"].update(input_size="big"), "input_size must be a positive"),
        (lambda m: m["preprocessing"].update(std=[0, 0, 0]), "preprocessing.std must be positive"),
        (lambda m: m.update(classes="cat"), "classes must be a list of names"),
        (lambda m: m.pop("preprocessing"), "preprocessing is missing: the input_size, mean"),
        (lambda m: m.update(format_version=99), "format_version 99: this resnetkit reads"),
        (
            lambda m: m["preprocessing"].update(mean=[0.5, 0.5]),
            "preprocessing.mean must be a list of 1 or 3 numbers for a 3-channel model",
        ),
        (lambda m: m["config"].update(in_chans="rgb"), "config.in_chans must be a positive"),
    ],
)
def test_a_broken_config_json_names_the_file_and_the_field(
    tmp_path: Path, change: object, message: str
) -> None:
    out = save_model_dir(
        resnetkit.create_model("resnet20"),
        tmp_path / "m",
        arch="resnet20",
        classes=[],
        preprocessing={"input_size": 32, "mean": [0.5] * 3, "std": [0.2] * 3},
    )
    meta = json.loads((out / "config.json").read_text())
    change(meta)  # type: ignore[operator]
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message) as err:
        load_model(out)
    assert str(out / "config.json") in str(err.value)


def test_one_normalisation_value_serves_every_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`info` accepts a single mean and std; predict used to fail on it with a message that
    named no file. One value now serves all three channels, as torchvision's Normalize."""
    out = save_model_dir(
        resnetkit.create_model("resnet20"),
        tmp_path / "m",
        arch="resnet20",
        classes=[f"c{i}" for i in range(10)],
        preprocessing={"input_size": 32, "mean": [0.5], "std": [0.25]},
    )
    cat = str(resources.files("resnetkit") / "assets" / "cat.png")
    assert main(["predict", "--model", str(out), cat, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    from resnetkit.predict import Preprocessing

    prep = Preprocessing.of(load_model(out))
    assert (prep.mean, prep.std) == ((0.5,) * 3, (0.25,) * 3)


def test_a_recipe_that_is_not_yaml_names_its_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text("epochs: 3\nlr: [oops\n")
    with pytest.raises(ValueError, match=r"mine.yaml, line 3: not valid YAML"):
        load_recipe(bad)


def test_a_pickle_that_calls_os_system_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(1), "x": Evil()}, evil)
    with pytest.raises(ValueError, match=r"references posix.system.*refuses it for safety"):
        load_model(evil, arch="resnet20")
    assert not marker.exists()


def test_a_thin_image_is_refused_before_it_is_blown_up(tmp_path: Path) -> None:
    thin = tmp_path / "thin.png"
    Image.new("RGB", (4000, 1)).save(thin)
    model = resnetkit.create_model("resnet18", num_classes=3)  # resized to 256 first
    report = resnetkit.predict(model, [thin, CAT])
    assert [f["path"] for f in report.failures] == [str(thin)]
    assert "too elongated: 4000x1 would become 256x1024000" in report.failures[0]["reason"]
    assert len(report.predictions) == 1
    # Streamed evaluation of a folder resizes too: the image is skipped and reported.
    from resnetkit.data.folder import ImageFolderDataset

    dataset = ImageFolderDataset(None, samples=[(thin, 0)], classes=["a"], shorter_side=256)
    assert dataset[0] is None and "too elongated" in dataset.failures[0][1]
    with pytest.raises(TypeError, match="inputs must be image file or folder paths"):
        resnetkit.predict(model, b"\x89PNG")  # type: ignore[arg-type]


def test_training_on_a_folder_of_unreadable_files_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / name / f"{i}.png").write_bytes(b"broken")
    argv = ["train", "--model", "resnet20", "--dataset", "folder", "--data-dir"]
    assert main([*argv, str(tmp_path / "data"), "--out", str(tmp_path / "run")]) == 2
    assert "no readable training images in" in capsys.readouterr().err


def test_embed_search_in_an_empty_folder_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["embed", "--model", "resnet20.cifar10", CAT, "--out", str(tmp_path / "v.npy")]
    assert main([*argv, "--search", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr()
    assert "no readable images to search" in err.err and "folder holds no image" in err.out
    assert "must be at least 1" in parse_error([*argv, "--k", "0"], capsys)


def test_embed_of_no_readable_image_keeps_the_earlier_vectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.npy"
    argv = ["embed", "--model", "resnet20.cifar10", "--out", str(out)]
    assert main([*argv, CAT]) == 0
    before = out.read_bytes()
    assert main([*argv, str(tmp_path / "typo.png")]) == 2  # a mistyped path
    err = capsys.readouterr().err
    assert "typo.png: file not found" in err and f"nothing written to {out}" in err
    assert out.read_bytes() == before
    # A missing --search folder is found out before anything is written, not afterwards.
    ship = CAT.replace("cat.png", "ship.png")
    assert main([*argv, CAT, ship, "--search", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--search" in err and "no such folder" in err
    # An image given to --search (which takes a folder) is told so, not called missing.
    assert main([*argv, CAT, "--search", ship]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "folder of images" in err and "no such" not in err
    assert out.read_bytes() == before


def test_explain_never_overwrites_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "cat.png"
    photo.write_bytes(Path(CAT).read_bytes())
    argv = ["explain", "--model", "resnet20.cifar10", str(photo), "--out", str(photo)]
    assert main(argv) == 2
    assert "is the input image" in capsys.readouterr().err
    assert photo.read_bytes() == Path(CAT).read_bytes()


def test_plot_writes_the_name_it_was_given(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    row = {"epoch": 1, "step": 1, "train_loss": 1.0, "train_top1": 50.0, "test_top1": 40.0}
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")  # no test_loss: still drawn
    assert main(["plot", str(run), "--out", str(tmp_path / "noext")]) == 0
    assert (tmp_path / "noext").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "noext.png").exists()


def test_serve_refuses_a_port_it_cannot_use(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    assert "a TCP port is 1..65535, got 99999" in parse_error(
        ["serve", "--model", "resnet20.cifar10", "--port", "99999"], capsys
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = taken.getsockname()[1]
        assert main(["serve", "--model", "resnet20.cifar10", "--port", str(number)]) == 2
    assert f"cannot listen on 127.0.0.1:{number}" in capsys.readouterr().err


def test_export_tolerance_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--model", "resnet20.cifar10", "--format", "onnx", "--out", "x.onnx"]
    for bad in ("-1", "0", "nan"):
        assert "must be a number > 0" in parse_error([*argv, "--tolerance", bad], capsys)


def test_the_in_memory_loader_names_what_is_wrong_with_its_input() -> None:
    """load_cifar gives (N, H, W, C) numpy arrays: passed on as they are, they failed at the
    first batch with a torch broadcast error, or (numpy) with a message that read as right."""
    import numpy as np

    from resnetkit.data.fast import Normalization, TensorLoader, to_nchw_tensor

    nhwc = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    norm = Normalization((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(TypeError, match="got ndarray: convert .*to_nchw_tensor"):
        TensorLoader(nhwc, labels, 2, norm, train=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(4, 8, 8, 3\) look like \(N, H, W, C\)"):
        TensorLoader(torch.from_numpy(nhwc), labels, 2, norm, train=True)
    images = to_nchw_tensor(nhwc)
    for kwargs, message in (
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"sample_weights": torch.ones(3)}, "3 sample_weights for 4 images: give one each"),
        ({"normalization": Normalization((0.5,) * 2, (0.25,) * 2)}, "2 values per statistic"),
    ):
        args: dict[str, Any] = {"batch_size": 2, "normalization": norm, **kwargs}
        with pytest.raises(ValueError, match=message):
            TensorLoader(images, labels, train=True, **args)
    with pytest.raises(ValueError, match="2 mean values but 3 std values"):
        Normalization((0.5,) * 2, (0.25,) * 3)
    assert len(list(TensorLoader(images, labels, 2, norm, train=True))) == 2


def test_a_training_normalization_of_the_wrong_channel_count_is_refused_before_writing(
    tmp_path: Path,
) -> None:
    """Found only when the loader was built, after the run folder was written."""
    from functools import partial

    from resnetkit.train.spec import TrainSpec

    out = tmp_path / "run"
    spec = partial(TrainSpec, "resnet20", "cifar10-sample", tmp_path, out, "fast-cifar")
    with pytest.raises(ValueError, match=r"2 values per statistic for 3-channel model inputs"):
        spec(normalization=((0.5, 0.5), (0.25, 0.25)))
    with pytest.raises(ValueError, match="2 mean values but 3 std values"):
        spec(normalization=((0.5, 0.5), (0.25,) * 3))
    assert not out.exists()
    # one value serves every channel
    grey = spec(normalization=((0.5,), (0.25,)), model_options={"in_chans": 1})
    assert grey.normalization.mean == (0.5,)  # type: ignore[union-attr]
