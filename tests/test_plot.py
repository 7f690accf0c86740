"""`resnetkit plot`: curves of one or several runs from their metrics.jsonl."""

import json
from pathlib import Path

import pytest

from resnetkit.cli.main import main
from resnetkit.reproduce.figures import plot_training_curves

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(folder: Path, test: list[float], batch: int = 100, val: bool = False) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for epoch, top1 in enumerate(test, 1):
        row = {
            "epoch": epoch,
            "step": epoch * batch,
            "train_loss": 2.0 / epoch,
            "train_top1": 50.0 + 10 * epoch,
            "test_loss": 1.5 / epoch,
            "test_top1": top1,
        }
        if val:
            row.update(val_loss=1.0, val_top1=top1 - 1)
        rows.append(json.dumps(row))
    (folder / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "run.json").write_text(json.dumps({"model": "resnet20", "dataset": "cifar10"}))
    return folder


def test_compares_runs_with_the_same_folder_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "lr0.1" / "resnet20", [40.0, 70.0, 65.0])
    b = write_run(tmp_path / "lr0.05" / "resnet20", [30.0, 50.0], batch=50, val=True)
    out = tmp_path / "figs" / "cmp.png"
    argv = ["plot", str(a), str(b / "metrics.jsonl"), "--out", str(out), "--x", "step"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 20_000
    assert list(summary["runs"]) == ["lr0.1/resnet20", "lr0.05/resnet20"]
    first, second = summary["runs"].values()
    assert (first["epochs"], first["step"], first["test_top1"]) == (3, 300, 65.0)
    assert (first["best_test_top1"], first["best_test_epoch"]) == (70.0, 2)
    assert "best_val_top1" not in first and second["best_val_top1"] == 49.0


def test_one_run_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", [40.0, 60.0])
    out = tmp_path / "curves.png"
    assert main(["plot", str(run), "--out", str(out), "--labels", "mine"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("run ")
    assert table[1].split()[:5] == ["mine", "2", "200", "70.00", "60.00"]
    assert out.read_bytes().startswith(PNG)


GOOD_ROW = '{"epoch": 1, "step": 5, "train_loss": 1.0, "train_top1": 9}'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "holds no metrics.jsonl: pass the --out folder"),
        ("", "is empty: no epoch has finished yet"),
        (GOOD_ROW + '\n{"epoch": 2,\n', "line 2: not JSON"),
        ('{"epoch": 1, "train_loss": 1.0}\n', "line 1: no step"),
        ('{"epoch": 1, "step": 1, "train_loss": 1.0}\n', "row 1: no train_top1 (or train_exact)"),
        (GOOD_ROW[:-1] + ', "test_top1": null}\n', "line 1: test_top1 is None, not a number"),
        (GOOD_ROW.replace("9}", '"9"}') + "\n", "line 1: train_top1 is '9', not a number"),
    ],
)
def test_bad_runs_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main(["plot", str(run), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(run) in err
    assert not (tmp_path / "x.png").exists()


def test_a_file_or_a_missing_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A metrics file under another name is a file, not "no such run folder"; the same
    file named metrics.jsonl is read."""
    copy = tmp_path / "run1.jsonl"
    copy.write_text(GOOD_ROW + "\n")
    assert main(["plot", str(copy), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"{copy} is a file, not a run folder" in err and "no such" not in err
    assert main(["plot", str(tmp_path / "typo"), "--out", str(tmp_path / "x.png")]) == 2
    assert "typo: no such run folder" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    (tmp_path / "run").mkdir()
    copy.rename(tmp_path / "run" / "metrics.jsonl")
    target = tmp_path / "run" / "metrics.jsonl"
    assert main(["plot", str(target), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").read_bytes().startswith(PNG)


def test_a_row_still_being_written_is_left_out(tmp_path: Path) -> None:
    """The last line without its newline is a row being written (or cut by a kill -9, which
    --resume writes again): a report of a live run reads the rows before it."""
    from resnetkit.train.runlog import read_metrics

    run = write_run(tmp_path / "run", [40.0, 50.0])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "step": 3')
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_labels_must_match_the_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", [40.0])
    assert main(["plot", str(run), "--labels", "a,b", "--out", str(tmp_path / "x.png")]) == 2
    assert "--labels names 2 runs; 1 were given" in capsys.readouterr().err


def test_curves_take_epochs_or_steps_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x must be 'epoch' or 'step'"):
        plot_training_curves([], tmp_path / "x.png", x="time")


def test_a_figure_never_replaces_a_file_that_is_not_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run", [40.0, 50.0])
    script = tmp_path / "mk.py"
    script.write_text("print('mine')\n")
    with pytest.raises(SystemExit):  # argparse: exit status 2, before any work
        main(["plot", str(run), "--out", str(script)])
    assert "mk.py exists and is not a PNG image: it is not replaced" in capsys.readouterr().err
    assert script.read_text() == "print('mine')\n"
    with pytest.raises(SystemExit):
        main(["plot", str(run), "--out", str(tmp_path / "c.jpg")])
    assert "figures are written as PNG, not .jpg; name it c.png" in capsys.readouterr().err
    # An earlier figure, or a name without a suffix, is fine (the figure is redrawn).
    for name in ("c.png", "c.png", "curves"):
        assert main(["plot", str(run), "--out", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_a_run_with_no_epoch_yet_is_left_out_of_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = write_run(tmp_path / "done", [40.0, 50.0])
    started = tmp_path / "started"
    started.mkdir()
    (started / "metrics.jsonl").write_text("")
    out = tmp_path / "both.png"
    assert main(["plot", str(done), str(started), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "started: no epoch has finished yet; left out" in captured.err
    assert out.read_bytes().startswith(PNG) and "done" in captured.out
    assert main(["plot", str(started), str(started), "--out", str(out), "--labels", "a,b"]) == 2
    assert "no epoch has finished yet in any of a, b" in capsys.readouterr().err


def test_labels_must_tell_runs_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        row = {"epoch": 1, "step": 10, "train_loss": 1.0, "train_top1": 50.0}
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["plot", *runs, "--labels", "run,run", "--out", str(tmp_path / "c.png")]) == 2
    assert "--labels must name each run once" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_a_folder_next_to_runs_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's model/ (what evaluate takes) is answered with its run folder, and the --out of
    `reproduce degradation` (OUT/PRESET/MODEL) with the runs under it."""
    run = write_run(tmp_path / "r20", [40.0])
    (run / "model").mkdir()
    assert main(["plot", str(run / "model"), "--out", str(tmp_path / "x.png")]) == 2
    assert f"model/ is a part of the run {run}; pass that folder" in capsys.readouterr().err
    a = write_run(tmp_path / "deg" / "quick" / "plain20", [10.0])
    b = write_run(tmp_path / "deg" / "quick" / "resnet20", [20.0])
    assert main(["plot", str(tmp_path / "deg"), "--out", str(tmp_path / "x.png")]) == 2
    assert f"such as the runs under it: {a} {b}" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
