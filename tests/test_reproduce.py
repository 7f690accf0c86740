import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from resnetkit.cli.main import main
from resnetkit.reproduce.degradation import presets, run_degradation
from resnetkit.train.recipe import load_recipe
from tests.fakedata import write_fake_cifar10


def test_quick_preset_follows_the_paper_recipe_on_a_subset() -> None:
    quick = presets()["quick"]
    r = quick.recipe
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert r.milestones == (r.max_iters // 2, r.max_iters * 3 // 4)
    assert quick.train_subset == 10_000
    full = presets()["full"].recipe
    assert full.max_iters == 64_000 and full.milestones == (32_000, 48_000)


def test_degradation_runs_plots_and_resumes(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = write_fake_cifar10(tmp_path / "data", n_train=200, n_test=50)
    overrides = {
        "max_iters": 4,
        "epochs": 2,
        "batch_size": 40,
        "milestones": "2,3",
        "num_threads": 1,
        "warmup_iters": 1,
    }
    models = ("plain20", "resnet20")
    summary = run_degradation(data, tmp_path / "out", "quick", models, False, overrides, True)
    log = capsys.readouterr().err  # without bars, one line per model and per epoch
    assert "degradation (quick): plain20, model 1 of 2" in log
    assert "resnet20, model 2 of 2" in log and log.count("epoch 1/1 step 4:") == 2
    assert summary["complete"] and all(c["complete"] for c in summary["models"].values())
    assert set(summary["models"]) == set(models)
    for curve in summary["models"].values():
        assert curve["step"] == [4] and len(curve["train_error"]) == 1
    assert "resnet20_trains_better_than_plain20" in summary["checks"]
    png = (tmp_path / "out" / "degradation.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    saved = json.loads((tmp_path / "out" / "degradation.json").read_text())
    assert (
        saved["models"]["plain20"]["final_train_error"]
        == summary["models"]["plain20"]["final_train_error"]
    )
    assert (tmp_path / "out" / "resnet20" / "curves.png").exists()
    # A second call finds the finished runs and only redraws.
    before = (tmp_path / "out" / "plain20" / "model" / "model.safetensors").stat().st_mtime
    run_degradation(data, tmp_path / "out", "quick", models, False, overrides)
    after = (tmp_path / "out" / "plain20" / "model" / "model.safetensors").stat().st_mtime
    assert before == after


def test_cli_rejects_unknown_preset(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "degradation", "--preset", "huge", "--data-dir", "x"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_full_preset_also_checks_that_depth_pays_off(tmp_path: Path) -> None:
    from resnetkit.reproduce.degradation import MODELS, summarise

    finals = {"plain20": 9.0, "plain56": 14.0, "resnet20": 8.0, "resnet56": 6.5}
    for name, error in finals.items():
        (tmp_path / name).mkdir()
        row = {"step": 64_000, "train_top1": 100 - error, "test_top1": 90.0, "epoch_seconds": 1}
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    table = presets()
    full = summarise(tmp_path, MODELS, table["full"], table["full"].recipe)
    assert full["checks"] == {
        "plain56_trains_worse_than_plain20": True,
        "resnet56_trains_better_than_plain56": True,
        "resnet20_trains_better_than_plain20": True,
        "resnet56_trains_better_than_resnet20": True,
    }
    # The paper's Table 6 stands beside the runs of its own schedule, not the quick one's.
    assert full["models"]["resnet56"]["paper_test_error"] == 6.97
    assert "paper_test_error" not in full["models"]["plain56"]
    quick = summarise(tmp_path, MODELS, table["quick"], table["quick"].recipe)
    assert "resnet56_trains_better_than_resnet20" not in quick["checks"]
    assert "paper_test_error" not in quick["models"]["resnet56"]


def test_cli_passes_a_warmup_to_every_model(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import resnetkit.reproduce.degradation as degradation

    seen = {}

    def fake(
        data_dir,
        out,
        preset,
        models,
        progress,
        overrides=None,
        log_epochs=False,
        jobs=1,
        device="cpu",
    ):  # noqa: ANN001, ANN202, E501
        seen.update(out=out, models=models, overrides=overrides, log=log_epochs, jobs=jobs)
        seen["device"] = device
        return {"models": {}, "checks": {}, "complete": True}

    monkeypatch.setattr(degradation, "run_degradation", fake)
    argv = ["reproduce", "degradation", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*argv, "--warmup-iters", "150", "--no-progress"]) == 0
    assert seen["overrides"] == {"warmup_iters": 150} and seen["out"] == tmp_path / "o" / "quick"
    assert seen["log"]  # the command line logs epochs when there are no bars
    assert main([*argv, "--warmup-iters", "0", "--no-progress"]) == 0
    assert seen["overrides"] == {"warmup_iters": 0}  # the paper's recipe, as it is
    assert main([*argv, "--no-progress"]) == 0
    assert seen["overrides"] is None and seen["jobs"] == 1  # the preset's own
    assert main([*argv, "--no-progress", "--jobs", "2"]) == 0 and seen["jobs"] == 2
    assert seen["device"] == "cpu"
    # On a GPU: the device, bf16 and CUDA graphs reach every model.
    gpu = ["--device", "cuda", "--precision", "bf16", "--compile", "--no-progress"]
    assert main([*argv, *gpu]) == 0 and seen["device"] == "cuda"
    expected = {"precision": "bf16", "compile": True, "compile_mode": "reduce-overhead"}
    assert seen["overrides"] == expected
    assert main([*argv, "--compile", "--no-progress"]) == 0  # on a CPU: inductor's default
    assert seen["overrides"] == {"compile": True, "compile_mode": "default"}
    table = presets()
    assert table["quick"].recipe.warmup_iters == 150 and table["quick"].recipe.warmup_lr == 0
    assert table["full"].recipe.warmup_iters == 0  # the paper's schedule, untouched


def _write_rows(run: Path, rows: list[tuple[int, float]], seconds: float = 100.0) -> None:
    run.mkdir(parents=True)
    keys = ("step", "train_top1", "test_top1", "epoch_seconds")
    values = [(s, 100 - e, 100 - e, seconds) for s, e in rows]
    lines = [json.dumps(dict(zip(keys, v, strict=True))) for v in values]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_report_follows_a_long_run_without_training(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "runs" / "full"
    _write_rows(out / "resnet20", [(32_000, 12.0), (64_000, 2.0)])  # finished
    _write_rows(out / "resnet56", [(1_000, 50.0), (2_000, 40.0)])  # 2k of 64k, 200 s so far
    # plain20 and plain56: not started
    argv = ["reproduce", "degradation", "--preset", "full", "--out", str(tmp_path / "runs")]
    assert main([*argv, "--report"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["complete"] is False
    r20, r56, p20 = (shown["models"][n] for n in ("resnet20", "resnet56", "plain20"))
    assert r20["complete"] and r20["hours_left"] is None and r20["iterations"] == 64_000
    assert not r56["complete"] and r56["iterations"] == 2_000
    assert abs(r56["hours_left"] - 62_000 * 0.1 / 3600) < 1e-9  # 200 s for 2k iterations
    assert not p20["complete"] and p20["iterations"] == 0 and p20["hours_left"] is None
    # Unfinished runs take part in no check: resnet56's 40% is no final result.
    assert shown["checks"] == {}
    saved = json.loads((out / "degradation.json").read_text())
    assert saved["models"]["resnet56"]["train_error"] == [50.0, 40.0]
    assert (out / "degradation.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "resnet56" / "checkpoints").exists()  # nothing was trained
    # The evidence records the recipe the runs were trained with, not --report's options.
    trained = load_recipe("paper-cifar-full").override({"warmup_iters": 150})
    (out / "resnet56" / "recipe.yaml").write_text(yaml.safe_dump(trained.to_dict()))
    assert main([*argv, "--report"]) == 0
    assert json.loads((out / "degradation.json").read_text())["recipe"]["warmup_iters"] == 150
    capsys.readouterr()
    assert main([*argv, "--report", "--warmup-iters", "0"]) == 2
    assert "trained otherwise (warmup_iters: 150 -> 0" in capsys.readouterr().err
    # A model warmed up as the paper warmed ResNet-110 up: reported, with the difference said.
    other = load_recipe("paper-cifar-full")
    (out / "resnet20" / "recipe.yaml").write_text(yaml.safe_dump(other.to_dict()))
    assert main([*argv, "--report"]) == 0
    capsys.readouterr()
    saved = json.loads((out / "degradation.json").read_text())
    assert saved["warmup_differences"] == {"resnet56": ["warmup_iters: 150 -> 0"]}
    # Two models trained otherwise: one figure would compare them as if alike. Refused.
    decayed = other.override({"weight_decay": "5e-4"})
    (out / "resnet20" / "recipe.yaml").write_text(yaml.safe_dump(decayed.to_dict()))
    assert main([*argv, "--report"]) == 2
    assert "were trained with different recipes (weight_decay: " in capsys.readouterr().err


def test_a_finished_model_trained_otherwise_is_not_mixed_in(tmp_path: Path) -> None:
    # plain20 finished without the quick preset's warm-up; asking for the preset's own recipe
    # must not train the others with it and compare them in one figure.
    run = tmp_path / "out" / "quick" / "plain20"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    trained = presets()["quick"].recipe.override({"warmup_iters": 0})
    (run / "recipe.yaml").write_text(yaml.safe_dump(trained.to_dict()))
    models = ("plain20", "resnet20")
    with pytest.raises(ValueError, match=r"plain20 was trained with another recipe \(warmup_iters"):
        run_degradation(tmp_path / "no-data", tmp_path / "out" / "quick", "quick", models)
    assert not (tmp_path / "out" / "quick" / "resnet20").exists()
    with pytest.raises(ValueError, match="named twice"):
        run_degradation(tmp_path / "no-data", tmp_path / "o2", "quick", ("plain20", "plain20"))


def test_cli_refuses_a_model_named_twice(capsys) -> None:  # noqa: ANN001
    argv = ["reproduce", "degradation", "--models", "plain20,resnet20,plain20", "--jobs", "2"]
    assert main([*argv, "--data-dir", "x", "--out", "y"]) == 2
    assert "--models names plain20 twice" in capsys.readouterr().err


def test_report_names_the_missing_folder(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    argv = ["reproduce", "degradation", "--out", str(tmp_path / "none"), "--report"]
    assert main(argv) == 2
    assert "none/quick does not exist" in capsys.readouterr().err
    # --out naming the preset's folder itself: its runs are pointed at, for --report and
    # before training starts a new experiment under it
    quick = tmp_path / "deg" / "quick"
    (quick / "resnet20").mkdir(parents=True)
    (quick / "resnet20" / "metrics.jsonl").write_text("")
    above = f"{quick} holds the runs of a `reproduce degradation --preset quick` (resnet20): "
    above += f"--out is the folder above it, --out {tmp_path / 'deg'} --preset quick"
    for extra in (["--report"], ["--data-dir", str(tmp_path / "no-data")]):
        assert main(["reproduce", "degradation", "--out", str(quick), *extra]) == 2
        assert above in capsys.readouterr().err
    assert not (quick / "quick").exists()
    full = ["reproduce", "degradation", "--out", str(tmp_path / "deg"), "--preset", "full"]
    assert main([*full, "--report"]) == 2
    assert f"{tmp_path / 'deg'} holds runs of --preset quick" in capsys.readouterr().err


def test_model_names_are_checked_before_any_work(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """A typo in the second model used to surface only when its turn came (an hour later on
    the quick preset, days on the full one)."""
    argv = ["reproduce", "degradation", "--out", str(tmp_path / "d"), "--data-dir", str(tmp_path)]
    assert main([*argv, "--models", "resnet20,resnet2O"]) == 2
    assert "unknown model 'resnet2O'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    (tmp_path / "d" / "quick").mkdir(parents=True)
    for models, message in (("resnet2O", "unknown model"), (",", "--models names nothing")):
        assert main([*argv, "--report", "--models", models]) == 2
        assert message in capsys.readouterr().err


def test_each_experiment_has_only_its_own_options(capsys) -> None:  # noqa: ANN001
    """Options of another experiment are not silently ignored, and each one's --help lists
    only its own."""
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "degradation", "--shots", "5", "--data-dir", "."])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    owner = "(--shots is an option of resnetkit reproduce transfer)"
    assert f"degradation: error: unrecognized arguments: --shots 5 {owner}" in err
    assert "usage: resnetkit reproduce degradation" in err  # its own usage, not the top one
    with pytest.raises(SystemExit):
        main(["reproduce", "transfer", "--jobs=4"])
    assert "--jobs=4 (--jobs is an option of resnetkit reproduce degradation)" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["models", "--jobs"])  # no sibling to name: the plain message
    assert "resnetkit models: error: unrecognized arguments: --jobs\n" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "degradation", "--help"])
    shown = capsys.readouterr().out
    assert "--jobs" in shown and "--shots" not in shown and "--from" not in shown


TINY = {"epochs": 2, "batch_size": 40, "milestones": "2,3", "num_threads": 1, "warmup_iters": 1}


def test_jobs_train_models_at_once_each_with_its_log(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = write_fake_cifar10(tmp_path / "data", n_train=80, n_test=20)
    models = ("plain20", "resnet20")
    out = tmp_path / "out"
    summary = run_degradation(data, out, "quick", models, False, {**TINY, "max_iters": 2}, jobs=2)
    assert summary["complete"] and set(summary["models"]) == set(models)
    assert "resnet20_trains_better_than_plain20" in summary["checks"]
    err = capsys.readouterr().err
    for name in models:
        assert f"{name} started in its own process with 1 thread(s)" in err
        assert f"{name} finished" in err
        assert f"[{name}] epoch 1/1 step 2:" in err  # its log, passed on
        assert "epoch 1/1 step 2:" in (out / f"{name}.log").read_text()
        assert summary["models"][name]["step"] == [2]


def test_jobs_pass_sigterm_on_and_every_run_checkpoints(tmp_path: Path) -> None:
    LONG = {**TINY, "epochs": 100}  # noqa: N806  (far longer than the test waits)
    data = write_fake_cifar10(tmp_path / "data", n_train=200, n_test=50)
    out = tmp_path / "out"
    code = (
        "import sys; from pathlib import Path; "
        "from resnetkit.cli.main import main; "
        "from resnetkit.reproduce import degradation as d; "
        f"d.presets = lambda real=d.presets: {{k: d.replace(v, recipe=v.recipe.override({LONG!r}), "
        "train_subset=0, eval_subset=0) for k, v in real().items()}; "
        "sys.exit(main(sys.argv[1:]))"
    )
    argv = ["reproduce", "degradation", "--data-dir", str(data), "--out", str(out)]
    models = "plain20,resnet20,plain32"  # three for two jobs: one still waits when told to stop
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv, "--models", models, "--jobs", "2"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    runs = [out / "quick" / name / "checkpoints" / "latest" for name in models.split(",")]
    deadline = time.monotonic() + 120
    while sum(r.exists() for r in runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "every run in progress wrote a checkpoint" in err
    started = [name for name in models.split(",") if (out / "quick" / f"{name}.log").exists()]
    assert len(started) == 2 and "plain32" in started  # the most work left goes first
    for name in started:
        log = (out / "quick" / f"{name}.log").read_text()
        assert "stopped by SIGTERM at step" in log, log[-2000:]
        assert not (out / "quick" / name / "model").exists()


def test_a_signal_while_a_model_finishes_stops_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnetkit.train import trainer
    from resnetkit.train.errors import TrainingInterrupted

    finish = trainer.Trainer._finish

    def finish_after_a_kill(self: trainer.Trainer) -> trainer.TrainResult:
        os.kill(os.getpid(), signal.SIGTERM)  # too late to stop this run: it finishes
        return finish(self)

    monkeypatch.setattr(trainer.Trainer, "_finish", finish_after_a_kill)
    data = write_fake_cifar10(tmp_path / "data", n_train=80, n_test=20)
    overrides = {**TINY, "max_iters": 2}
    with pytest.raises(TrainingInterrupted, match="SIGTERM once plain20 had finished"):
        run_degradation(data, tmp_path / "out", "quick", ("plain20", "resnet20"), False, overrides)
    assert (tmp_path / "out" / "plain20" / "model" / "config.json").exists()
    assert not (tmp_path / "out" / "resnet20").exists()


def test_jobs_start_with_the_most_work_left(tmp_path: Path) -> None:
    from resnetkit.reproduce.degradation import _work_left

    recipe = presets()["full"].recipe
    _write_rows(tmp_path / "resnet56", [(60_000, 10.0)])
    _write_rows(tmp_path / "resnet20", [(16_000, 20.0)])
    names = ("resnet56", "resnet20", "plain56")
    left = {name: _work_left(tmp_path, name, recipe) for name in names}
    assert left == {"resnet56": 56 * 4_000 / 64_000, "resnet20": 15.0, "plain56": 56.0}


def test_hours_left_follow_the_recent_pace(tmp_path: Path) -> None:
    from resnetkit.reproduce.degradation import summarise

    preset = presets()["full"]
    run = tmp_path / "resnet20"
    _write_rows(run, [(1000 * i, 50.0) for i in range(1, 4)], seconds=400.0)  # slow at first
    with open(run / "metrics.jsonl", "a") as f:  # then five epochs at 100 s per 1000 iterations,
        for i in range(4, 9):  # one of them stretched by a pause: their median pace counts
            seconds = 1000 if i == 6 else 100
            f.write(json.dumps({"step": 1000 * i, "train_top1": 60, "epoch_seconds": seconds}))
            f.write("\n")
    curve = summarise(tmp_path, ("resnet20",), preset, preset.recipe)["models"]["resnet20"]
    assert curve["hours_left"] == pytest.approx((64_000 - 8_000) * 0.1 / 3600)
