"""The command line as a whole: it starts without torch, and the package exports resolve lazily."""

import subprocess
import sys

import pytest

from resnetkit.cli.main import main

STARTUP = """
import contextlib, io, sys
import resnetkit
from resnetkit.cli.main import build_parser

parser = build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
for argv in [["--help"]] + [[name, "--help"] for name in commands]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        parser.parse_args(argv)
    assert "usage:" in out.getvalue(), argv
heavy = [m for m in ("torch", "torchvision", "onnxruntime") if m in sys.modules]
print(len(commands), heavy)
"""


def test_help_of_every_command_needs_no_torch() -> None:
    # Importing torch takes seconds; `resnetkit --help` and each command's help should not.
    out = subprocess.run(
        [sys.executable, "-c", STARTUP], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert int(out[0]) >= 14  # every command's help was rendered
    assert out[1:] == ["[]"], f"imported at start-up: {out[1:]}"


def test_training_and_evaluation_import_no_plotting_library() -> None:
    # matplotlib (about half a second) is imported by the functions that draw, not with the
    # trainer or the evaluator
    code = (
        "import sys, resnetkit.train.trainer, resnetkit.evaluate.evaluator, resnetkit.predict; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False"]


def test_python_dash_m_resnetkit_is_the_command_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resnetkit", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip().startswith("resnetkit ")


def test_package_exports_resolve_on_first_use() -> None:
    import resnetkit
    from resnetkit import ResNet, create_model, load_checkpoint

    assert isinstance(create_model("resnet20"), ResNet)
    assert resnetkit.load_checkpoint is load_checkpoint
    assert {"create_model", "load_checkpoint", "predict"} <= set(dir(resnetkit))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        resnetkit.nope  # noqa: B018


def test_a_key_error_that_is_not_an_unknown_model_is_not_hidden(monkeypatch) -> None:  # noqa: ANN001
    # A bug raising KeyError must show its traceback, not pass for a user's mistake.
    import resnetkit.cli.zoo as zoo

    def broken(*_: object, **__: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(zoo, "info", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["info", "resnet20"])


def test_a_missing_extra_is_named_with_its_pip_command(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    from importlib import resources

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if resnetkit[export] were not installed
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    (tmp_path / "m.onnx").write_bytes(b"")
    cat = str(resources.files("resnetkit.assets") / "cat.png")
    assert main(["predict", "--model", str(tmp_path / "m.onnx"), cat]) == 2
    assert main(["quantize", "--model", "resnet20.cifar10", "--out", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("pip install 'resnetkit[export]'") == 2, err
    assert "resnetkit predict: error: onnxruntime is not installed" in err
    assert "Traceback" not in err


def test_a_runtime_error_that_is_not_an_export_failure_is_not_hidden(monkeypatch) -> None:  # noqa: ANN001
    import resnetkit.cli.zoo as zoo

    def broken(*_: object, **__: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(zoo, "info", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info", "resnet20"])


def test_batch_size_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("evaluate", "calibrate"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--model", "resnet20.cifar10", "--batch-size", "0"])
        assert exit_.value.code == 2
        assert "--batch-size" in capsys.readouterr().err


def test_the_recorded_commit_is_resnetkit_s_own(tmp_path) -> None:  # noqa: ANN001
    from resnetkit.train.provenance import git_commit

    # resnetkit installed into another project's .venv: that project's commit is not ours
    env = ["-c", "user.email=a@b", "-c", "user.name=a"]
    commits = {}
    for name in ("other", "resnetkit"):
        project = tmp_path / f"my {name}"  # a space in the path, too
        (project / ".venv").mkdir(parents=True)
        (project / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
        subprocess.run(["git", "init", "-q", str(project)], check=True)
        subprocess.run(
            ["git", *env, "-C", str(project), "commit", "-q", "--allow-empty", "-m", "x"],
            check=True,
        )
        commits[name] = git_commit(project / ".venv")
    assert commits["other"] is None
    assert commits["resnetkit"] is not None and len(commits["resnetkit"]) == 40
    # the checkout itself (this repository, when the tests run from it)
    here = git_commit()
    assert here is None or len(here) == 40


def test_outputs_never_replace_inputs_or_unrelated_files(
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    import json
    from importlib import resources

    from safetensors.torch import save_file

    from resnetkit import create_model

    cat = str(resources.files("resnetkit.assets") / "cat.png")
    weights = tmp_path / "ck.safetensors"
    save_file(create_model("resnet20").state_dict(), weights)
    before = weights.read_bytes()
    export = ["export", "--model", str(weights), "--arch", "resnet20", "--format", "torchscript"]
    assert main([*export, "--out", str(weights)]) == 2  # the checkpoint itself
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main([*export, "--out", str(notes)]) == 2
    assert weights.read_bytes() == before and notes.read_text() == "mine"
    assert "nothing was overwritten" in capsys.readouterr().err
    # embed's path index beside the vectors: an unrelated JSON of that name is kept
    (tmp_path / "feats.json").write_text(json.dumps({"important": True}))
    assert (
        main(["embed", "--model", "resnet20.cifar10", cat, "--out", str(tmp_path / "feats.npy")])
        == 2
    )
    assert json.loads((tmp_path / "feats.json").read_text()) == {"important": True}
    assert not (tmp_path / "feats.npy").exists()
    # evaluate: two figures under one name, an image side past reason
    evaluate = ["evaluate", "--model", "resnet20.cifar10", "--dataset", "cifar10-sample"]
    same = str(tmp_path / "same.png")
    assert main([*evaluate, "--confusion", same, "--reliability", same]) == 2
    assert "--confusion and --reliability both name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*evaluate, "--image-size", "100000"])
    assert "at most 4096 pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # train too, before a 335 GB allocation
        main(["train", "--dataset", "folder", "--data-dir", ".", "--image-size", "100000"])
    assert "at most 4096 pixels" in capsys.readouterr().err
    # plot's default name is checked like any other
    monkeypatch.chdir(tmp_path)
    (tmp_path / "curves.png").write_text("my notes")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "step": 1, "train_top1": 5.0}) + "\n"
    )
    with pytest.raises(SystemExit):
        main(["plot", str(run)])
    assert "not a PNG" in capsys.readouterr().err
    assert (tmp_path / "curves.png").read_text() == "my notes"


def test_calibrate_refuses_training_images_in_any_name_and_bad_numbers(
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    argv = ["calibrate", "--model", "resnet20.cifar10", "--dataset", "folder"]
    for split in ("Train", "training"):
        assert main([*argv, "--data-dir", str(tmp_path), "--split", split]) == 2
        assert f"--split {split}: a temperature fitted" in capsys.readouterr().err
    for option, value in (("--fit-fraction", "1.5"), ("--seed", str(10**30))):
        with pytest.raises(SystemExit):
            main(["calibrate", "--model", "resnet20.cifar10", option, value])
        assert option in capsys.readouterr().err


def test_warnings_for_the_user_are_one_line_naming_the_command() -> None:
    """Not Python's 'path/to/module.py:123: UserWarning: ...' and the source line after it;
    other warnings keep Python's form. A subprocess: pytest records warnings instead."""
    code = (
        "import sys, warnings\n"
        "from resnetkit.cli import main as m\n"
        "def run(args):\n"
        "    warnings.warn('photo.png: skipped', UserWarning)\n"
        "    warnings.warn('old API', DeprecationWarning)\n"
        "    return 0\n"
        "parse = m._parse\n"
        "m._parse = lambda argv: setattr(a := parse(argv), 'func', run) or a\n"
        "warnings.simplefilter('always')\n"
        "sys.exit(m.main(['models']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = done.stderr.splitlines()
    assert lines[0] == "resnetkit models: warning: photo.png: skipped", done.stderr
    assert "DeprecationWarning: old API" in lines[1]


def test_help_texts_show_a_percent_sign_as_one() -> None:
    """argparse %-formats an argument's help but not a parser's description: '%%' in a
    description is printed as it stands ('at P%% accuracy' in `calibrate --help`)."""
    import argparse

    from resnetkit.cli.main import build_parser

    def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = [parser]
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for child in action.choices.values():
                    found += parsers(child)
        return found

    for parser in parsers(build_parser()):
        assert "%%" not in parser.format_help(), parser.prog


def test_a_misspelt_option_is_answered_with_the_one_meant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An underscore for a dash, a missing dash, a letter too many: the option meant is named
    (argparse said only "unrecognized arguments"); an option like none says nothing more."""
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10-sample", "--out", "x"]
    with pytest.raises(SystemExit):
        main([*argv, "--batch_size", "16", "--lrr", "0.1", "--limit-train", "5"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --batch_size 16 --lrr 0.1 --limit-train 5 (" in err
    assert "--batch_size: did you mean --batch-size?; --lrr: did you mean --lr?)" in err
    assert "--limit-train:" not in err
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", "m", "--dataset", "cifar10-sample", "--tencrop"])
    assert "(--tencrop: did you mean --ten-crop?)" in capsys.readouterr().err


def test_ctrl_c_stops_a_command_with_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C in `resnetkit predict` over a large folder printed a 40-line traceback."""
    import importlib

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    loading = importlib.import_module("resnetkit.models.loading")
    monkeypatch.setattr(loading, "load_classifier", lambda *_, **__: None)
    # (resnetkit.predict is also the function the package exports, so by its module's name)
    monkeypatch.setattr(importlib.import_module("resnetkit.predict"), "predict", interrupted)
    try:
        code = main(["predict", "--model", "m", "photos/"])
    except KeyboardInterrupt:  # (uncaught, it would stop pytest itself)
        pytest.fail("Ctrl-C escaped main(): Python printed its traceback")
    assert code == 130  # 128 + SIGINT, as the shell's
    assert capsys.readouterr().err == "resnetkit predict: interrupted (Ctrl-C)\n"
