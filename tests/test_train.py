"""The training loop: it learns, resumes exactly, stops on NaN, writes what it promises."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

import resnetkit
from resnetkit.models.model_dir import load_model_dir
from resnetkit.train.checkpoint import latest_checkpoint
from resnetkit.train.recipe import Recipe, build_recipe, builtin_recipes, load_recipe
from resnetkit.train.schedule import lr_multiplier
from resnetkit.train.trainer import (
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    TrainSpec,
    train,
)
from tests.conftest import needs_cxx
from tests.fakedata import write_fake_cifar10

TINY = Recipe(
    epochs=2,
    batch_size=50,
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    schedule="cosine",
    warmup_iters=2,
    label_smoothing=0.1,
    ema_decay=0.9,
    checkpoint_every_s=1e9,
    num_threads=1,
)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"))


def spec(data: Path, out: Path, recipe: Recipe = TINY, **kw: object) -> TrainSpec:
    return TrainSpec(
        model="resnet20",
        dataset="cifar10",
        data_dir=data,
        out=out,
        recipe=recipe,
        progress=False,
        **kw,  # type: ignore[arg-type]
    )


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def test_train_writes_model_dir_metrics_and_provenance(cifar_dir: Path, tmp_path: Path) -> None:
    result = train(spec(cifar_dir, tmp_path / "run"))
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_top1", "test_top1", "test_top5", "images_per_second"} <= set(
        rows[-1]
    )
    run = json.loads((out / "run.json").read_text())
    assert run["provenance"]["torch"] == torch.__version__
    assert "git_commit" in run["provenance"] and run["train_images"] == 250
    # the resolved recipe, with the side that trained
    assert load_recipe(out / "recipe.yaml") == TINY.override(
        {"name": "custom", "train_image_size": 32}
    )
    model = load_model_dir(result.model_dir)
    assert model.pretrained_cfg["classes"][0] == "airplane"
    assert model.pretrained_cfg["input_size"] == 32
    assert 0.0 <= result.metrics["test_top1"] <= 100.0
    assert (out / "tensorboard").is_dir()


def test_epoch_lines_say_the_time_left(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.train.reporting import duration as _duration

    train(spec(cifar_dir, tmp_path / "run", TINY, log_epochs=True))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and ", eta " in lines[0] and "eta" not in lines[1]
    assert [_duration(s) for s in (42.4, 185, 50_280)] == ["42s", "3m05s", "13h58m"]


def test_time_left_leaves_out_the_slow_first_step(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first step pays for torch.compile and warm-up: at its pace the eta would be hours.
    def slow_first(step: int) -> None:
        if step == 1:
            time.sleep(4)

    train(spec(cifar_dir, tmp_path / "run", TINY, log_epochs=True, on_step=slow_first))
    first = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("epoch 1/"))
    seconds = first.split(", eta ")[1]
    assert seconds.endswith("s") and "m" not in seconds and int(seconds[:-1]) < 4, first


def test_training_learns_an_easy_dataset(cifar_dir: Path, tmp_path: Path) -> None:
    recipe = TINY.override({"epochs": 6, "ema_decay": 0.0, "lr": 0.1})
    result = train(spec(cifar_dir, tmp_path / "run", recipe))
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.metrics["test_top1"] > 40.0  # chance is 10%


class Crash(Exception):
    pass


def crash_at(step: int):  # noqa: ANN201
    def hook(s: int) -> None:
        if s == step:
            raise Crash

    return hook


def test_interrupted_and_resumed_run_ends_with_identical_weights(
    cifar_dir: Path, tmp_path: Path
) -> None:
    recipe = TINY.override({"epochs": 3, "checkpoint_every_iters": 3})
    train(spec(cifar_dir, tmp_path / "straight", recipe))
    with pytest.raises(Crash):  # 5 iterations per epoch: checkpoints at 3, 5, 6; crash at 8
        train(spec(cifar_dir, tmp_path / "crashed", recipe, on_step=crash_at(8)))
    assert latest_checkpoint(tmp_path / "crashed" / "checkpoints").name == "ckpt-00000006"
    # A row written after the last checkpoint (crash between the two) must not survive resume.
    with open(tmp_path / "crashed" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 99, "step": 7}) + "\n")
    train(spec(cifar_dir, tmp_path / "crashed", recipe, resume=True))
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "crashed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(r) for r in (tmp_path / "crashed" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # Epoch 2 resumed from its middle (step 6): its sums so far came from the checkpoint.
    straight = [json.loads(r) for r in (tmp_path / "straight" / "metrics.jsonl").open()]
    for key in ("train_loss", "train_top1", "test_top1"):
        assert [r[key] for r in rows] == [r[key] for r in straight], key


def sigterm_at(step: int):  # noqa: ANN201
    def hook(s: int) -> None:
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


@pytest.mark.parametrize("stop_at", [4, 5])  # in the middle of epoch 1, at its last step
def test_sigterm_checkpoints_at_the_step_and_resume_matches(
    cifar_dir: Path, tmp_path: Path, stop_at: int
) -> None:
    recipe = TINY.override({"epochs": 2})
    train(spec(cifar_dir, tmp_path / "straight", recipe))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=f"SIGTERM at step {stop_at} .*--resume") as err:
        train(spec(cifar_dir, tmp_path / "run", recipe, on_step=sigterm_at(stop_at)))
    assert err.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before, "the old handler must come back"
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and ckpt.name == f"ckpt-{stop_at:08d}"
    assert not (tmp_path / "run" / "model").exists()
    train(spec(cifar_dir, tmp_path / "run", recipe, resume=True))
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "run")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_killed_cli_runs_resume_to_the_uninterrupted_weights(
    cifar_dir: Path, tmp_path: Path
) -> None:
    """kill -9 loses at most the steps since the last checkpoint; a plain kill (SIGTERM) writes
    a checkpoint at the step it arrives and exits with status 143. The uninterrupted run and
    the two killed ones run side by side, one thread each."""
    args = [
        sys.executable,
        "-m",
        "resnetkit.cli.main",
        "train",
        "--model",
        "resnet20",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(cifar_dir),
        "--recipe",
        "fast-cifar",
        "--epochs",
        "3",  # 15 steps: killed after step 7, well before the end
        "--batch-size",
        "50",
        "--num-threads",
        "1",
        "--no-progress",
        "--checkpoint-every-iters",
        "1",
        "--eval-every",
        "10",
        "--warmup-iters",
        "2",
        "--ema-decay",
        "0.9",
    ]
    signals = {"kill9": signal.SIGKILL, "term": signal.SIGTERM}
    straight = subprocess.Popen([*args, "--out", str(tmp_path / "a")], stderr=subprocess.PIPE)
    procs = {
        name: subprocess.Popen(
            [*args, "--out", str(tmp_path / name)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in signals
    }
    deadline = time.monotonic() + 120
    waiting = dict(signals)
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            ckpts = tmp_path / name / "checkpoints"
            found = latest_checkpoint(ckpts) if (ckpts / "latest").exists() else None
            if found is not None and int(found.name.split("-")[1]) >= 7:
                os.kill(procs[name].pid, waiting.pop(name))
        time.sleep(0.05)
    errors = {name: proc.communicate()[1] for name, proc in procs.items()}
    _, straight_err = straight.communicate()
    assert straight.returncode == 0, straight_err
    for name in signals:
        assert not (tmp_path / name / "model").exists(), f"{name} finished before the kill"
    assert procs["term"].returncode == 128 + signal.SIGTERM, errors["term"]
    step = int(errors["term"].split("stopped by SIGTERM at step ")[1].split()[0])
    assert latest_checkpoint(tmp_path / "term" / "checkpoints").name == f"ckpt-{step:08d}"
    # The one killed by -9 resumes with `--out RUN --resume` alone (and speed flags): the
    # model, dataset and data folder come from its run.json, the recipe from its recipe.yaml.
    short = [*args[:4], "--num-threads", "1", "--no-progress"]
    resumed = {
        name: subprocess.Popen(
            [*(short if name == "kill9" else args), "--out", str(tmp_path / name), "--resume"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in signals
    }
    reference = final_weights(tmp_path / "a")
    for name, proc in resumed.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        note = (
            f"note: continuing {tmp_path / 'kill9'} with --model resnet20 --dataset cifar10 "
            f"--data-dir {cifar_dir} (from {tmp_path / 'kill9' / 'run.json'})"
        )
        assert (note in err) == (name == "kill9"), err
        weights = final_weights(tmp_path / name)
        for key in reference:
            assert torch.equal(reference[key], weights[key]), (name, key)


@pytest.mark.parametrize("defer", [False, True])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    cifar_dir: Path, tmp_path: Path, defer: bool
) -> None:
    """defer: as on a GPU, the NaN is recorded on the device and found before the checkpoint of
    step 4, named after the step where it appeared."""
    recipe = TINY.override({"checkpoint_every_iters": 2})
    trainer = Trainer(spec(cifar_dir, tmp_path / "run", recipe))
    trainer._defer_sync = defer

    def poison(step: int) -> None:
        if step == 3:
            with torch.no_grad():
                trainer.model.fc.weight.fill_(float("nan"))

    trainer.spec.on_step = poison
    with pytest.raises(TrainingDiverged, match="loss is nan at step 3 .*last good checkpoint"):
        trainer.run()
    assert int(trainer._first_bad_step) == (3 if defer else -1)
    folder = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert folder is not None and folder.name == "ckpt-00000002"
    weights = load_file(str(folder / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_steps_that_do_not_wait_for_the_device_train_the_same_run(
    cifar_dir: Path, tmp_path: Path
) -> None:
    """On a GPU the loss and accuracy sums stay on the device between steps (``_defer_sync``);
    forced on here, the run must end with the same weights and the same metrics."""
    from resnetkit.train.runlog import read_metrics

    recipe = TINY.override({"ema_decay": 0.0, "checkpoint_every_iters": 3})
    rows = {}
    for name, defer in (("waits", False), ("defers", True)):
        trainer = Trainer(spec(cifar_dir, tmp_path / name, recipe))
        assert not trainer._defer_sync  # the CPU: every step checks at once
        trainer._defer_sync = defer
        trainer.run()
        rows[name] = read_metrics(tmp_path / name)
    reference = final_weights(tmp_path / "waits")
    weights = final_weights(tmp_path / "defers")
    assert all(torch.equal(reference[k], weights[k]) for k in reference)
    for a, b in zip(rows["waits"], rows["defers"], strict=True):
        assert a["train_top1"] == b["train_top1"] and a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)  # float32 sums


def test_tensor_loader_on_a_device_makes_its_batches_there() -> None:
    """The GPU path, on the meta device: data, draws sent along, statistics built there once
    (a CPU tensor mixed into the arithmetic would raise)."""
    from resnetkit.data.fast import Normalization, TensorLoader

    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    for norm in (Normalization(pixel_mean=torch.rand(3, 8, 8)), Normalization((0.5,) * 3)):
        loader = TensorLoader(images, torch.arange(40) % 10, 16, norm, train=True)
        assert loader.to("meta") and loader.device.type == "meta"
        batches = list(loader)
        assert len(batches) == 2 and all(
            x.device.type == y.device.type == "meta" for x, y in batches
        )
        assert batches[0][0].shape == (16, 3, 8, 8) and batches[0][0].dtype == torch.float32
        assert len(norm._on) == 1 and next(iter(norm._on)).type == "meta"


def test_tensor_loader_draws_other_crops_on_each_rank() -> None:
    from resnetkit.data.fast import Normalization, TensorLoader

    image = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    images = image.expand(32, -1, -1, -1).contiguous()  # which images a rank gets is moot
    labels = torch.zeros(32, dtype=torch.int64)

    def first_batch(rank: int, world_size: int) -> torch.Tensor:
        loader = TensorLoader(
            images, labels, 16, Normalization(), train=True, rank=rank, world_size=world_size
        )
        return next(iter(loader))[0]

    assert torch.equal(first_batch(0, 2), first_batch(0, 1))  # rank 0: the one-process draws
    assert not torch.equal(first_batch(0, 2), first_batch(1, 2))


def test_cli_reports_a_diverged_run_as_an_error_line(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.cli.main import main

    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    argv += ["--out", str(tmp_path / "run"), "--no-progress", "--num-threads", "1"]
    argv += ["--epochs", "2", "--batch-size", "50", "--warmup-iters", "0", "--ema-decay", "0"]
    assert main([*argv, "--lr", "1e30"]) == 1
    err = capsys.readouterr().err
    assert "resnetkit train: error: loss is" in err and "Lower --lr" in err


def test_builtin_recipes_load_and_cite_their_source() -> None:
    assert {"paper-cifar", "paper-imagenet", "fast-cifar"} <= set(builtin_recipes())
    paper = load_recipe("paper-cifar")
    assert (paper.batch_size, paper.lr, paper.weight_decay, paper.momentum) == (128, 0.1, 1e-4, 0.9)
    assert paper.milestones == (32000, 48000) and paper.max_iters == 64000
    assert paper.val_split == 5000 and paper.normalize == "pixel_mean"
    for name in builtin_recipes():
        assert load_recipe(name).source


def test_recipe_overrides_are_typed_and_checked() -> None:
    r = load_recipe("paper-cifar").override(
        {"lr": "0.05", "milestones": "100,200", "nesterov": "true"}
    )
    assert r.lr == 0.05 and r.milestones == (100, 200) and r.nesterov is True
    with pytest.raises(ValueError, match="unknown recipe field 'lrate'"):
        r.override({"lrate": 1})
    # close names, and lr for the learning_rate of other toolkits, in a file too
    with pytest.raises(ValueError, match=r"field 'learning_rate'\. Did you mean 'lr'\? Fields"):
        r.override({"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"'warmup_iter'\. Did you mean 'warmup_iters', "):
        build_recipe({"warmup_iter": 5}, "r.yaml")
    with pytest.raises(ValueError, match="'epochs'.*cannot read 'ten'"):
        r.override({"epochs": "ten"})
    with pytest.raises(ValueError, match="schedule"):
        r.override({"schedule": "linear"})
    # A bad value given on the command line is named as given, not blamed on the file.
    with pytest.raises(ValueError, match=r"^--epochs 0: recipe field 'epochs' is 0: it must be"):
        load_recipe("fast-cifar", {"epochs": "0"})
    with pytest.raises(ValueError, match=r"^--batch-size -2: recipe field 'batch_size' is -2"):
        load_recipe("fast-cifar", {"batch_size": "-2", "lr": "0.1"})
    with pytest.raises(ValueError, match="'eval_resize' is 100000: at most 4096 pixels"):
        r.override({"eval_resize": 100_000})  # not a 335 GB allocation later
    with pytest.raises(ValueError, match="'epochs': cannot read '2.5e0' as a whole number"):
        r.override({"epochs": "2.5e0"})  # not silently 2
    # what a field takes in words, not Python's type names ("as tuple", "as bool")
    with pytest.raises(ValueError, match="'10,abc' as whole numbers separated by commas, e.g."):
        r.override({"milestones": "10,abc"})
    with pytest.raises(ValueError, match="cannot read 'maybe' as true or false"):
        r.override({"nesterov": "maybe"})
    with pytest.raises(ValueError, match=r"\[32000, 'a'\] is not a list of whole numbers"):
        build_recipe({"milestones": [32000, "a"]}, "r.yaml")  # as YAML reads a file
    with pytest.raises(ValueError, match="'epochs': cannot read '1e400'"):
        r.override({"epochs": "1e400"})
    assert r.override({"max_iters": "64e3"}).max_iters == 64000
    for key, value in (("ema_decay", "1.0"), ("ema_decay", "1.5"), ("momentum", "5")):
        with pytest.raises(
            ValueError, match=f"'{key}' is {float(value)}: it must be in \\[0, 1\\)"
        ):
            r.override({key: value})
    with pytest.raises(ValueError, match="'random_erasing' is 2.0: a probability"):
        r.override({"random_erasing": "2"})
    with pytest.raises(ValueError, match="'crop_padding' is 1000: random crops"):
        r.override({"crop_padding": "1000"})
    with pytest.raises(ValueError, match="'lr' 0 and 'warmup_lr' 0.01: a warm-up above"):
        r.override({"lr": "0", "warmup_lr": "0.01", "warmup_iters": "5"})  # was a ZeroDivision
    with pytest.raises(ValueError, match="cosine ramps up linearly over warmup_iters"):
        r.override({"schedule": "cosine", "warmup_lr": "0.01"})  # was silently ignored
    silently_wrong = {  # each was accepted, and trained otherwise than asked (or crashed late)
        "warmup_iters is 0: give --warmup-iters too": {"warmup_lr": "0.01"},
        "'gamma' is 0.0: the factor": {"gamma": "0"},
        "'gamma' is 5.0: the factor": {"gamma": "5"},
        "Nesterov momentum needs a momentum": {"nesterov": "true", "momentum": "0"},
        "'seed' is -1: it must be in": {"seed": "-1"},
        "'seed' is 4294967296": {"seed": str(2**32)},
    }
    for message, fields in silently_wrong.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            r.override(fields)
    assert r.override({"schedule": "cosine", "gamma": "0"}).gamma == 0  # read only by multistep


def test_a_recipe_file_may_have_an_upper_case_suffix(tmp_path: Path) -> None:
    (tmp_path / "r.YAML").write_text("lr: 0.2\n")
    assert load_recipe(tmp_path / "r.YAML").lr == 0.2


def test_overrides_mend_a_recipe_file_before_it_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "warm.yaml"
    path.write_text("warmup_lr: 0.01\nschedule: multistep\nmilestones: [100]\n")
    with pytest.raises(ValueError, match="warm.yaml: .*give --warmup-iters too"):
        load_recipe(path)
    recipe = load_recipe(path, {"warmup_iters": "40"})  # --warmup-iters 40 on the command line
    assert (recipe.warmup_iters, recipe.warmup_lr) == (40, 0.01)


def test_yaml_values_are_type_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("milestones: 300\nbatch_size: 32.0\nmax_iters: 6.4e+4\nlr: 1\n")
    r = load_recipe(path)  # one milestone, integral floats: what YAML readers write
    assert r.milestones == (300,) and r.batch_size == 32 and r.max_iters == 64000
    assert r.lr == 1.0 and isinstance(r.lr, float)
    for bad, field in (("batch_size: 32.5", "batch_size"), ("nesterov: 1", "nesterov")):
        path.write_text(bad + "\n")
        with pytest.raises(ValueError, match=f"r.yaml: recipe field '{field}'"):
            load_recipe(path)
    with pytest.raises(ValueError, match="eval_every is 0"):
        Recipe(eval_every=0)
    with pytest.raises(FileNotFoundError, match="recipe file not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")


def test_mistakes_are_caught_before_the_data_is_read(cifar_dir: Path, tmp_path: Path) -> None:
    """A tag (weights) given to `train`, a --resume with nothing to resume, a run already in
    --out: refused before loading (minutes for large data); here the data does not exist."""
    missing = tmp_path / "no-data"
    with pytest.raises(ValueError, match="resnet20.cifar10 names pretrained weights.*finetune"):
        Trainer(replace(spec(missing, tmp_path / "a"), model="resnet20.cifar10"))
    for hub_name in ("hf-hub:timm/resnet50.a1_in1k", "hf-hub:microsoft/resnet-50"):
        with pytest.raises(ValueError, match="on the Hugging Face Hub.*finetune --model hf-hub"):
            Trainer(replace(spec(missing, tmp_path / "a"), model=hub_name))
    with pytest.raises(FileNotFoundError, match="nothing to resume in"):
        Trainer(spec(missing, tmp_path / "b", resume=True))
    train(spec(cifar_dir, tmp_path / "c", TINY.override({"epochs": 1, "ema_decay": 0.0})))
    with pytest.raises(FileExistsError, match="already holds a run.*--resume"):
        Trainer(spec(missing, tmp_path / "c"))
    # --resume of the run's model/ (what evaluate takes): the run to resume is named
    inside = f"{tmp_path / 'c' / 'model'}: it is a part of the run {tmp_path / 'c'}; resume that"
    with pytest.raises(FileNotFoundError, match=re.escape(inside)):
        Trainer(spec(missing, tmp_path / "c" / "model", resume=True))


def test_milestones_after_the_end_are_pointed_out(cifar_dir: Path, tmp_path: Path) -> None:
    late = TINY.override({"schedule": "multistep", "milestones": "4,100000"})
    with pytest.warns(UserWarning, match=r"milestones \[100000\] are not before the run's end"):
        Trainer(spec(cifar_dir, tmp_path / "a", late))


def test_refuses_a_warmup_or_ema_longer_than_the_run(cifar_dir: Path, tmp_path: Path) -> None:
    # 250 images at batch 50: 5 iterations per epoch, 10 in all
    with pytest.raises(ValueError, match="warmup_iters 10 is not shorter.*--warmup-iters 1 "):
        Trainer(spec(cifar_dir, tmp_path / "a", TINY.override({"warmup_iters": 10})))
    expected = r"ema_decay 0.999 .* about 1,000 .* 99% the initial.*--ema-decay 0.7408"
    with pytest.raises(ValueError, match=expected):
        Trainer(spec(cifar_dir, tmp_path / "b", TINY.override({"ema_decay": 0.999})))
    # Both at once (fast-cifar on a small set): one message with both fixes.
    both = TINY.override({"warmup_iters": 1950, "ema_decay": 0.999})
    with pytest.raises(ValueError, match="--warmup-iters 1 .* and --ema-decay 0.7408"):
        Trainer(spec(cifar_dir, tmp_path / "c", both))


def test_resume_refuses_another_recipe_and_the_cli_uses_the_runs_own(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.cli.main import main

    recipe = TINY.override({"epochs": 2, "checkpoint_every_iters": 3})
    with pytest.raises(Crash):
        train(spec(cifar_dir, tmp_path / "run", recipe, on_step=crash_at(4)))
    other = recipe.override({"lr": 0.2, "schedule": "onecycle", "num_threads": 2})
    with pytest.raises(ValueError, match=r"another recipe.*lr: 0.05 -> 0.2; schedule: 'cosine'"):
        train(spec(cifar_dir, tmp_path / "run", other, resume=True))
    # The precision changes the arithmetic of every step: refused too.
    with pytest.raises(ValueError, match=r"another recipe.*precision: 'fp32' -> 'bf16'"):
        train(
            spec(cifar_dir, tmp_path / "run", recipe.override({"precision": "bf16"}), resume=True)
        )
    # Threads, checkpoint cadence and speed settings (memory format, compiling: a run compiled
    # on a GPU goes on without) may change on resume; `train --resume` without --recipe takes
    # the run's recipe.yaml (not the fast-cifar default).
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    argv += ["--out", str(tmp_path / "run"), "--resume", "--no-progress", "--num-threads", "1"]
    assert main([*argv, "--channels-last", "false", "--compile-mode", "reduce-overhead"]) == 0
    assert load_recipe(tmp_path / "run" / "recipe.yaml").lr == 0.05
    # Without --resume the finished run is not overwritten: an error line, not a traceback.
    assert main([a for a in argv if a != "--resume"]) == 2
    # Resumed once finished, it trains nothing and keeps its model directory as it is
    # (edited since, say); one whose model directory is gone gets it written again.
    card = tmp_path / "run" / "model" / "README.md"
    card.write_text("edited by hand\n")
    capsys.readouterr()
    assert main(argv) == 0
    assert card.read_text() == "edited by hand\n"
    err = capsys.readouterr().err
    assert "had already finished (10 steps): nothing to train" in err
    assert "kept as it was" in err
    # Said once: no "resumed from ... at step 10" nor a start line of a run to come.
    assert "resumed from" not in err and "from step" not in err
    shutil.rmtree(tmp_path / "run" / "model")
    assert main(argv) == 0
    assert "# resnet20" in card.read_text()


def test_model_options_are_recorded_and_resume_keeps_the_architecture(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unit variants share every weight name, so only the recorded architecture stops a
    resume from training another network with the same checkpoint."""
    from resnetkit.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    argv += ["--out", str(out), "--no-progress", "--epochs", "1", "--num-threads", "1"]
    argv += ["--batch-size", "50", "--warmup-iters", "0", "--ema-decay", "0"]
    options = ["unit=relu_before_add", "shortcut=B", "drop_path_rate=0.1"]
    assert main([*argv, *(f"--model-option={o}" for o in options)]) == 0
    assert load_model_dir(out / "model").config.unit == "relu_before_add"
    run = json.loads((out / "run.json").read_text())
    expected = {"unit": "relu_before_add", "shortcut": "B", "drop_path_rate": 0.1}
    assert run["model_options"] == expected
    # --resume: the run's own options, and those given on top (a finished run resumes to its
    # end); a memory option keeps the rest, and is recorded with them
    assert main([*argv, "--resume"]) == 0
    assert main([*argv, "--resume", "--model-option", "grad_checkpointing=true"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model_options"] == {**expected, "grad_checkpointing": True}
    capsys.readouterr()
    assert main([*argv, "--resume", "--model-option", "unit=bn_after_add"]) == 2
    err = capsys.readouterr().err
    assert "--model-option unit=relu_before_add (the run's) -> unit=bn_after_add" in err, err
    assert "shortcut" not in err
    assert main([*argv, "--resume", "--model-option", "drop_path_rate=0"]) == 2
    assert "drop_path_rate=0.1 (the run's) -> drop_path_rate=0.0" in capsys.readouterr().err
    # A library caller that leaves an option out is refused by the architecture it records.
    with pytest.raises(ValueError, match=r"architecture.unit: 'relu_before_add' -> 'original'"):
        train(spec(cifar_dir, out, load_recipe(out / "recipe.yaml"), resume=True))
    with pytest.raises(SystemExit):
        main([*argv, "--model-option", "unit=bn"])
    assert "expected one of original, bn_after_add" in capsys.readouterr().err


def test_run_files_are_readable_by_others(cifar_dir: Path, tmp_path: Path) -> None:
    """safetensors and temporary files are created 0600; a model directory must not be."""
    train(spec(cifar_dir, tmp_path / "run", TINY.override({"epochs": 1, "ema_decay": 0.5})))
    mask = os.umask(0)
    os.umask(mask)
    expected = 0o666 & ~mask
    for path in ("model/model.safetensors", "model/config.json", "model/README.md", "recipe.yaml"):
        assert (tmp_path / "run" / path).stat().st_mode & 0o777 == expected, path
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and (ckpt / "model.safetensors").stat().st_mode & 0o777 == expected


def test_paper_schedule_and_warmup() -> None:
    recipe = load_recipe("paper-cifar").override({"warmup_iters": 400, "warmup_lr": 0.01})
    f = lr_multiplier(recipe, 64000)
    assert f(0) * recipe.lr == pytest.approx(0.01)
    assert f(400) * recipe.lr == pytest.approx(0.1)
    assert f(32000) * recipe.lr == pytest.approx(0.01)
    assert f(48000) * recipe.lr == pytest.approx(0.001)
    ramp = lr_multiplier(load_recipe("paper-cifar").override({"warmup_iters": 100}), 64000)
    assert ramp(0) == pytest.approx(0.01) and ramp(49) == pytest.approx(0.5)
    assert ramp(100) == ramp(31999) == 1.0 and ramp(32000) == pytest.approx(0.1)
    onecycle = lr_multiplier(load_recipe("fast-cifar"), 10000)
    assert onecycle(0) < onecycle(1950) == pytest.approx(1.0) and onecycle(10000) == 0.0


def torchrun_train(data: Path, out: Path, epochs: int, *options: str) -> list[str]:
    """`resnetkit train` in 2 CPU processes; ``options`` replace the CIFAR-10 defaults."""
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    run = ["-m", "resnetkit.cli.main", "train", "--model", "resnet20", "--data-dir", str(data)]
    run += ["--out", str(out), "--epochs", str(epochs), "--num-threads", "1", "--no-progress"]
    cifar = ["--dataset", "cifar10", "--recipe", "fast-cifar", "--batch-size", "50"]
    cifar += ["--warmup-iters", "2", "--ema-decay", "0.5"]
    return torchrun + run + list(options or cifar)


def test_two_process_ddp_on_cpu_stays_in_sync(cifar_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = torchrun_train(cifar_dir, out, epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in rows] == [2, 2]  # each epoch checked the ranks agree
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    # 250 images, 25 per process per step: 5 steps per epoch, each rank sees half the data
    assert rows[-1]["step"] == 10
    assert load_model_dir(out / "model").config.num_classes == 10


def test_sigterm_stops_every_ddp_process_after_the_same_step_and_resume_matches(
    cifar_dir: Path, tmp_path: Path
) -> None:
    """torchrun passes SIGTERM on to its workers, which may see it during different steps: they
    vote in the step's all-reduce and all stop after the same one, with one checkpoint. The
    stopped run saves at every step (``--checkpoint-every-s 0``, the main process's clock
    deciding for all) with the epoch's sums over both processes, so the resumed epoch's
    metrics are the uninterrupted run's, not the main process's share twice."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 250 images at batch 10: 25 steps an epoch, 5 images per process per step.
    small = ["--dataset", "cifar10", "--recipe", "fast-cifar", "--batch-size", "10"]
    small += ["--warmup-iters", "2", "--ema-decay", "0.5", "--eval-every", "2"]
    # DropPath draws from each process's own global stream: resumed, each continues its own.
    small += ["--model-option", "drop_path_rate=0.2"]
    straight = tmp_path / "straight"
    done = subprocess.run(
        torchrun_train(cifar_dir, straight, 2, *small), capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "ddp"
    cmd = torchrun_train(cifar_dir, out, 2, *small, "--checkpoint-every-s", "0")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        latest = latest_checkpoint(out / "checkpoints")
        if latest is not None and int(latest.name.split("-")[1]) >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    # Both processes compare their steps before stopping (an error if they differ); only the
    # main one says that the run stopped.
    steps = [int(part.split()[0]) for part in stderr.split("stopped by SIGTERM at step ")[1:]]
    assert len(steps) == 1, stderr[-3000:]
    assert "stopped after different steps" not in stderr, stderr[-3000:]
    assert latest_checkpoint(out / "checkpoints").name == f"ckpt-{steps[0]:08d}"
    assert 6 <= steps[0] < 25, "the run must stop in the middle of epoch 1"
    assert not (out / "model").exists()
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = final_weights(straight), final_weights(out)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(r) for r in (out / "metrics.jsonl").open()]
    expected = [json.loads(r) for r in (straight / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [r["step"] for r in expected] == [25, 50]
    for row, want in zip(rows, expected, strict=True):
        assert row["train_top1"] == want["train_top1"]
        assert row["train_loss"] == pytest.approx(want["train_loss"], rel=1e-12)


def test_sync_bn_on_cpu_is_refused_clearly(cifar_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync_bn needs a GPU"):
        Trainer(spec(cifar_dir, tmp_path / "run", TINY.override({"sync_bn": True})))


def test_modern_augmentations_train_and_resume_exactly(cifar_dir: Path, tmp_path: Path) -> None:
    recipe = TINY.override(
        {
            "epochs": 2,
            "trivial_augment": True,
            "random_erasing": 0.25,
            "mixup_alpha": 0.2,
            "cutmix_alpha": 1.0,
            "checkpoint_every_iters": 2,
        }
    )
    train(spec(cifar_dir, tmp_path / "a", recipe))
    with pytest.raises(Crash):
        train(spec(cifar_dir, tmp_path / "b", recipe, on_step=crash_at(8)))
    train(spec(cifar_dir, tmp_path / "b", recipe, resume=True))
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_compile_mode_is_checked() -> None:
    assert Recipe(compile=True, compile_mode="reduce-overhead").compile_mode == "reduce-overhead"
    with pytest.raises(ValueError, match="compile_mode.*reduce-overhead"):
        Recipe(compile_mode="fastest")


@needs_cxx
@pytest.mark.slow  # compiling a training step takes about two minutes on 2 cores
def test_compiled_training_follows_eager_training(cifar_dir: Path, tmp_path: Path) -> None:
    recipe = TINY.override({"epochs": 1, "max_iters": 3, "ema_decay": 0.0, "warmup_iters": 0})
    train(spec(cifar_dir, tmp_path / "eager", recipe))
    compiled = recipe.override({"compile": True, "compile_mode": "reduce-overhead"})
    train(spec(cifar_dir, tmp_path / "compiled", compiled))
    a, b = final_weights(tmp_path / "eager"), final_weights(tmp_path / "compiled")
    assert a.keys() == b.keys()
    for key in a:  # fused kernels round differently, nothing more
        torch.testing.assert_close(b[key].float(), a[key].float(), atol=2e-2, rtol=2e-2)


def test_dry_run_plans_without_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from resnetkit.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10-sample", "--out", str(out)]
    overrides = ["--batch-size", "50", "--num-threads", "1", "--val-split", "100"]
    schedule = ["--max-iters", "60", "--milestones", "30,45"]
    assert main([*argv, *overrides, *schedule, "--recipe", "paper-cifar", "--dry-run", "2"]) == 0
    text = capsys.readouterr().out
    assert "900 training images of 32x32 (evaluation: 500 test, 100 val)" in text
    assert "60 iterations of batch 50 = 4 epochs of 18" in text
    assert "lr (multistep): 0.1 at 0, 0.01 at 30, 0.001 at 45, 0.001 at 59" in text
    assert "median of 2 steps" in text and "nothing was written" in text
    assert not out.exists()
    # --resume: the time left from the latest checkpoint, not the whole run's
    (out / "checkpoints" / "ckpt-00000045").mkdir(parents=True)
    (out / "checkpoints" / "ckpt-00000045" / "state.pt").write_bytes(b"")
    again = [*argv, *overrides, *schedule, "--recipe", "paper-cifar", "--dry-run", "2"]
    assert main([*again, "--resume"]) == 0
    assert " from step 45 (the latest checkpoint) here" in capsys.readouterr().out
    # A rehearsal writes nothing: it may look at a folder that holds a run without --resume
    assert main(again) == 0
    assert "nothing was written" in capsys.readouterr().out
    # --milestones on a schedule that does not read them: refused, not ignored
    onecycle = [*argv, "--recipe", "fast-cifar", "--milestones", "30,45", "--dry-run", "1"]
    assert main(onecycle) == 2
    assert "--milestones shapes the multistep schedule; this recipe's schedule is onecycle" in (
        capsys.readouterr().err
    )
    assert main([*onecycle, "--gamma", "0.2"]) == 2
    assert "--milestones and --gamma shape the multistep schedule;" in capsys.readouterr().err


def test_eval_subset_shortens_a_run_s_evaluations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--eval-subset: a short CIFAR run evaluated all 10,000 test images every epoch (85 of a
    256-image run's 90 seconds); TrainSpec.eval_subset had no flag."""
    from resnetkit.cli.main import main

    argv = ["train", "--model", "resnet20", "--dataset", "cifar10-sample"]
    argv += ["--out", str(tmp_path / "run"), "--batch-size", "50", "--num-threads", "1"]
    argv += ["--warmup-iters", "0", "--ema-decay", "0", "--eval-subset", "40"]
    assert main([*argv, "--dry-run", "1"]) == 0
    assert "1,000 training images of 32x32 (evaluation: 40 test)" in capsys.readouterr().out


def test_fp16_on_a_cpu_is_refused_before_the_data_loads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision fp16 needs a GPU"):
        Trainer(
            spec(tmp_path / "no-data-here", tmp_path / "run", TINY.override({"precision": "fp16"}))
        )
    assert not (tmp_path / "run").exists()


def test_resume_refuses_other_data_or_another_model(cifar_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = TINY.override({"checkpoint_every_iters": 2, "ema_decay": 0.0})
    with pytest.raises(Crash):
        train(spec(cifar_dir, out, recipe, train_subset=100, on_step=crash_at(3)))
    with pytest.raises(
        ValueError, match=r"other settings; resuming would change train_images"
    ) as by:
        train(spec(cifar_dir, out, recipe, train_subset=150, resume=True))
    # the advice names the run's own settings (a changed data folder shows only as counts)
    own = f"(it started with --model resnet20 --dataset cifar10 --data-dir {cifar_dir}), or"
    assert own in str(by.value)
    other = TrainSpec("resnet32", "cifar10", cifar_dir, out, recipe, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"model: 'resnet20' -> 'resnet32'"):
        train(replace(other, train_subset=100))


def test_a_run_from_before_a_new_architecture_field_resumes(
    cifar_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint whose facts predate a config field (as `skip` was added) resumes: the
    missing field is the default it had then, not a change."""
    out = tmp_path / "run"
    recipe = TINY.override({"checkpoint_every_iters": 2, "ema_decay": 0.0})
    with pytest.raises(Crash):
        train(spec(cifar_dir, out, recipe, train_subset=100, on_step=crash_at(3)))
    state_file = latest_checkpoint(out / "checkpoints") / "state.pt"
    state = torch.load(state_file, weights_only=True)
    facts = json.loads(state["run"])
    for name in ("skip", "skip_scale", "residual_scale", "gate_bias", "skip_dropout"):
        del facts["architecture"][name]
    facts["architecture"]["unit"] = "relu_before_add"  # a real change is still named
    torch.save({**state, "run": json.dumps(facts)}, state_file)
    only_unit = r"would change architecture.unit: 'relu_before_add' -> 'original'\. Resume"
    with pytest.raises(ValueError, match=only_unit):  # and no field it lacks
        train(spec(cifar_dir, out, recipe, train_subset=100, resume=True))
    facts["architecture"]["unit"] = "original"
    torch.save({**state, "run": json.dumps(facts)}, state_file)
    train(spec(cifar_dir, out, recipe, train_subset=100, resume=True))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]


def test_out_is_checked_before_any_training(cifar_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.json").write_text("my own notes")
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=r"holds files that are not a training run's"):
        train(spec(cifar_dir, mine, TINY, on_step=crash_at(1)))  # Crash would mean it trained
    assert (mine / "run.json").read_text() == "my own notes"
    with pytest.raises(FileNotFoundError, match="nothing to resume in .*typo: it does not exist"):
        train(spec(cifar_dir, tmp_path / "typo", TINY, resume=True))
    assert not (tmp_path / "typo").exists()


def test_a_damaged_checkpoint_is_named_and_a_missing_latest_falls_back(
    cifar_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    recipe = TINY.override({"checkpoint_every_iters": 2})
    with pytest.raises(Crash):
        train(spec(cifar_dir, out, recipe, on_step=crash_at(5)))
    ckpts = out / "checkpoints"
    newest = latest_checkpoint(ckpts)
    assert newest is not None and newest.name == "ckpt-00000004"
    (ckpts / "latest").unlink()
    assert latest_checkpoint(ckpts) == newest  # the newest complete folder
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(
        ValueError, match=r"ckpt-00000004 is damaged .*continues from ckpt-00000002"
    ) as err:
        train(spec(cifar_dir, out, recipe, resume=True))
    assert "latest" not in str(err.value)  # it is gone: nothing to remove


def test_nan_weights_never_reach_a_checkpoint(cifar_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(spec(cifar_dir, tmp_path / "run", TINY))
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var.fill_(float("nan"))
    with pytest.raises(
        TrainingDiverged, match=r"became NaN or infinite.*No checkpoint was written"
    ):
        trainer.save()
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is None


def test_a_model_write_killed_half_way_is_written_again(tmp_path: Path) -> None:
    from resnetkit.models.model_dir import save_model_dir

    model = resnetkit.create_model("resnet20")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / ".model.safetensors.abc123").write_bytes(b"half")  # kill -9 during the write
    (folder / "model.safetensors").write_bytes(b"old")
    save_model_dir(model, folder, arch="resnet20", classes=[], preprocessing={}, replace=True)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]


def test_settings_that_cannot_work_are_refused(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.cli.main import main

    for change, message in (
        ({"lr": float("nan")}, "'lr' is nan"),
        ({"max_iters": -5}, "'max_iters' is -5"),
        ({"num_threads": -1}, "'num_threads' is -1"),
        ({"milestones": (0, 5)}, "milestones"),
    ):
        with pytest.raises(ValueError, match=message):
            TINY.override(change)
    one_class = tmp_path / "wrapped"
    (one_class / "pets" / "cat").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(one_class / "pets" / "cat" / f"{i}.png")
    argv = ["train", "--model", "resnet20", "--dataset", "folder", "--out", str(tmp_path / "r")]
    assert main([*argv, "--data-dir", str(one_class)]) == 2
    assert "1 class (pets): a classifier needs at least two" in capsys.readouterr().err
    # Two class folders, one of them empty: a model that always answers "cat" is refused.
    (one_class / "pets" / "dog").mkdir()
    assert main([*argv, "--data-dir", str(one_class / "pets")]) == 2
    err = capsys.readouterr().err
    assert "only class 'cat' has training images; 'dog' holds none" in err
    assert not (tmp_path / "r").exists()
    assert main(argv) == 2
    assert "--data-dir is needed for --dataset folder" in capsys.readouterr().err
    # The bundled sample reads no folder: one given is refused, not silently ignored.
    sample = ["train", "--model", "resnet20", "--dataset", "cifar10-sample"]
    assert main([*sample, "--data-dir", str(one_class), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {one_class}: --dataset cifar10-sample is bundled" in err
    assert "--dataset cifar10" in err and not (tmp_path / "r").exists()


def test_one_process_at_a_time_trains_in_a_folder(cifar_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{alive.pid}\n")
        with pytest.raises(FileExistsError, match=f"another process \\(pid {alive.pid}\\)"):
            train(spec(cifar_dir, out, TINY, on_step=crash_at(1)))
    finally:
        alive.kill()
        alive.wait()
    # Its process is gone (as after a kill -9): the lock is taken over, and let go at the end.
    train(spec(cifar_dir, out, TINY.override({"epochs": 1, "ema_decay": 0.0})))
    assert (out / "model" / "config.json").is_file() and not (out / ".lock").exists()


def test_a_lock_whose_process_id_was_reused_is_taken_over(tmp_path: Path) -> None:
    from resnetkit.train.run_folder import _start_time, run_lock

    # A restarted container gives ids out again: this process's own, or a live process that
    # started after the lock was written, is not the run that wrote it.
    for stale in (f"{os.getpid()}\n", f"1 {int(_start_time(1) or 0) + 1}\n"):
        (tmp_path / ".lock").write_text(stale)
        with run_lock(tmp_path):
            holder = (tmp_path / ".lock").read_text().split()
            assert holder == [str(os.getpid()), _start_time(os.getpid())]
        assert not (tmp_path / ".lock").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left behind
    with run_lock(tmp_path):  # readable by another user sharing the folder
        assert (tmp_path / ".lock").stat().st_mode & 0o777 == 0o644
    # The same id and start time: the run is alive, and the lock is kept.
    (tmp_path / ".lock").write_text(f"1 {_start_time(1)}\n")
    with pytest.raises(FileExistsError, match=r"another process \(pid 1\)"), run_lock(tmp_path):
        pass


def test_the_recorded_command_can_be_pasted_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from resnetkit.train.provenance import provenance

    argv = ["resnetkit", "finetune", "--data", "/my data/it's", "--out", "runs/ft 1"]
    monkeypatch.setattr(sys, "argv", argv)
    assert shlex.split(provenance()["command"]) == argv


def test_epochs_replace_a_recipes_stop_by_iterations(capsys: pytest.CaptureFixture[str]) -> None:
    """paper-cifar stops at 64k iterations: --epochs alone did nothing."""
    from resnetkit.cli.main import build_parser
    from resnetkit.cli.train import recipe_from_args

    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--out", "x"]
    args = build_parser().parse_args([*argv, "--recipe", "paper-cifar", "--epochs", "3"])
    recipe = recipe_from_args(args)
    assert (recipe.epochs, recipe.max_iters) == (3, 0)
    assert "replaces the recipe's stop at 64,000 iterations" in capsys.readouterr().err
    both = [*argv, "--recipe", "paper-cifar", "--epochs", "3", "--max-iters", "100"]
    recipe = recipe_from_args(build_parser().parse_args(both))
    assert (recipe.epochs, recipe.max_iters) == (3, 100)


def test_a_run_says_first_what_trains_where_and_how(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    argv += ["--out", str(out), "--no-progress", "--num-threads", "1", "--epochs", "1"]
    assert main([*argv, "--batch-size", "50", "--warmup-iters", "0", "--ema-decay", "0"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        "training resnet20 (0.27M parameters) on cpu: fp32, channels_last; 250 training "
        "images in memory; 5 iterations, 5 per epoch"
    )
    facts = json.loads((out / "run.json").read_text())
    assert facts["device"] == "cpu" and facts["data_on_device"] is False


def test_the_weight_ema_is_torchs_and_waits_for_no_device() -> None:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from resnetkit.train.optim import WeightEMA

    torch.manual_seed(0)
    model = resnetkit.create_model("resnet20")
    ours = WeightEMA(model, 0.9)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):  # weights and BatchNorm statistics (floats and step counts) move
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3, 32, 32))
        ours.update_parameters(model)
        torchs.update_parameters(model)
    assert ours.n_averaged.device.type == "cpu" and int(ours.n_averaged) == 3
    theirs = torchs.module.state_dict()
    for name, a in ours.module.state_dict().items():
        assert torch.equal(a, theirs[name]), name


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_an_fp16_step_reads_no_number_back(optimizer: str) -> None:
    """GradScaler reads a plain optimizer's overflow flag back every step (``.item()`` on a
    device tensor: a wait for the GPU); the fused optimizer fp16 gets takes it on the device
    and steps the same. Run on the CPU, which has a GradScaler and fused optimizers too."""
    from unittest import mock

    from resnetkit.train.optim import build_optimizer

    reads: list[torch.Tensor] = []  # by the scaler (AdamW reads its CPU step counts: no wait)
    item = torch.Tensor.item

    def counted_item(t: torch.Tensor) -> float | int | bool:
        if sys._getframe(1).f_code.co_filename.endswith("grad_scaler.py"):
            reads.append(t)
        return item(t)

    results = []
    for precision, expected_reads in (("fp16", 0), ("bf16", 1)):
        torch.manual_seed(0)
        model = resnetkit.create_model("resnet20", num_classes=3)
        recipe = TINY.override({"precision": precision, "optimizer": optimizer})
        opt = build_optimizer(model, recipe)
        assert bool(opt.defaults["fused"]) == (precision == "fp16")
        scaler = torch.amp.GradScaler("cpu")  # bf16 runs have none: here, to compare
        reads.clear()
        with mock.patch.object(torch.Tensor, "item", counted_item):
            loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        assert len(reads) == expected_reads, precision
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1])


class BlockingCopies(TorchFunctionMode):
    """Records every copy from ordinary memory to a device made without non_blocking: on a
    GPU each waits for the work queued before it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        source = args[0] if args else None
        if getattr(func, "__name__", "") == "to" and isinstance(source, torch.Tensor):
            target = kwargs.get("device") or next(
                (a for a in args[1:] if isinstance(a, str | torch.device)), None
            )
            blocking = not kwargs.get("non_blocking", False)
            if source.device.type == "cpu" and target is not None and blocking:
                self.seen.append(f"{torch.device(target)} copy of {tuple(source.shape)}")
        return func(*args, **kwargs)


def test_a_deferred_step_never_waits_for_the_device(cifar_dir: Path, tmp_path: Path) -> None:
    """The GPU path, on the meta device: a step that defers its checks must not read a number
    back (a meta tensor refuses to) nor copy from ordinary memory without non_blocking (each
    such copy waits for the GPU): with EMA and label smoothing, as the fast recipe trains."""
    recipe = TINY.override({"ema_decay": "0.9", "label_smoothing": "0.1", "nesterov": "true"})
    trainer = Trainer(spec(cifar_dir, tmp_path / "run", recipe))
    meta = torch.device("meta")
    trainer.device = meta
    trainer.model.to(meta)  # the optimizer holds the same parameters, now on the device
    assert trainer.ema is not None
    trainer.ema.module.to(meta)  # its step counter stays in ordinary memory, as on a GPU
    trainer._first_bad_step = trainer._first_bad_step.to(meta)
    trainer._first_bad_loss = trainer._first_bad_loss.to(meta)

    x = torch.empty(10, 3, 32, 32, device=meta)
    y = torch.zeros(10, dtype=torch.int64, device=meta)
    for _ in range(2):  # the EMA's first update copies, the next ones average
        with BlockingCopies() as copies:
            loss, correct, seen = trainer._train_step([(x, y)], defer=True)
    assert copies.seen == [] and seen == 10
    assert isinstance(loss, torch.Tensor) and loss.device == meta  # still on the device


def test_batches_are_augmented_on_the_device_without_waiting_for_it() -> None:
    """The GPU data path, on the meta device: TrivialAugment, random erasing and MixCut send
    their CPU draws without a blocking copy (each would wait for the GPU's queued work)."""
    from resnetkit.data.fast import Normalization, TensorLoader
    from resnetkit.data.transforms import MixCut, batch_random_erasing, batch_trivial_augment

    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    loader = TensorLoader(
        images, torch.arange(64) % 10, 32, Normalization((0.5,) * 3), train=True,
        uint8_augment=batch_trivial_augment,
        float_augment=lambda x, g: batch_random_erasing(x, 0.5, g),
    )  # fmt: skip
    assert loader.to("meta")
    with BlockingCopies() as copies:
        batches = list(loader)
        mixed, _ = MixCut(0.2, 1.0, 10, 0.0)(*batches[0], torch.Generator().manual_seed(0))
    assert copies.seen == [] and len(batches) == 2 and mixed.device.type == "meta"


def test_train_spec_takes_paths_as_strings() -> None:
    spec = TrainSpec("resnet20", "cifar10", "data", "runs/a", load_recipe("fast-cifar"))  # type: ignore[arg-type]
    assert spec.data_dir == Path("data") and spec.out / "model" == Path("runs/a/model")
    # A recipe by name too (it failed later on a str's missing train_image_size), and
    # override's dict asked for by name (it failed on a str's missing items).
    named = TrainSpec("resnet20", "cifar10", "data", "runs/a", "fast-cifar")  # type: ignore[arg-type]
    assert named.recipe == load_recipe("fast-cifar")
    with pytest.raises(TypeError, match="recipe must be a Recipe, a built-in recipe's name"):
        TrainSpec("resnet20", "cifar10", "data", "runs/a", {"lr": 0.1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"override takes a dict of fields, such as \{'lr'"):
        load_recipe("fast-cifar").override("lr=0.1")  # type: ignore[arg-type]


def test_adamw_without_decay_on_norms_and_biases_trains_and_resumes_exactly(
    cifar_dir: Path, tmp_path: Path
) -> None:
    recipe = TINY.override(
        {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "decay_norm_and_bias": False}
    )
    trainer = Trainer(spec(cifar_dir, tmp_path / "look", recipe))
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    decayed, plain = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])  # convs and fc weight
    assert {p.ndim for p in plain["params"]} == {1}  # BN weights and biases, fc bias
    count = sum(p.numel() for g in (decayed, plain) for p in g["params"])
    assert count == sum(p.numel() for p in trainer.model.parameters())
    train(spec(cifar_dir, tmp_path / "straight", recipe))
    with pytest.raises(TrainingInterrupted):
        train(spec(cifar_dir, tmp_path / "run", recipe, on_step=sigterm_at(4)))
    train(spec(cifar_dir, tmp_path / "run", recipe, resume=True))  # Adam's moments restored
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "run")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(ValueError, match="Nesterov momentum is SGD's"):
        recipe.override({"nesterov": True})  # asked for outright: refused
    # a run saved before these fields existed trained with SGD, decaying every parameter:
    # resuming it with AdamW is another recipe, said so (not torch's KeyError 'step')
    from resnetkit.train.recipe import recipe_differences

    old = {k: v for k, v in TINY.to_dict().items() if k not in ("optimizer", "decay_norm_and_bias")}
    assert recipe_differences(old, TINY) == []
    assert set(recipe_differences(old, recipe)) == {
        "optimizer: 'sgd' -> 'adamw'",
        "lr: 0.05 -> 0.002",
        "weight_decay: 0.0005 -> 0.05",
        "decay_norm_and_bias: True -> False",
    }
    # a recipe with Nesterov SGD switched to AdamW drops its Nesterov (--optimizer adamw alone)
    assert load_recipe("fast-cifar").override({"optimizer": "adamw"}).nesterov is False
    assert load_recipe("fast-cifar", {"optimizer": "adamw"}).nesterov is False  # the CLI's way
    with pytest.raises(ValueError, match="'optimizer' is 'lamb'"):
        recipe.override({"optimizer": "lamb"})


def test_train_gives_the_caller_back_its_random_stream_and_settings(
    cifar_dir: Path, tmp_path: Path
) -> None:
    """A notebook that trains goes on with its own RNG stream, threads and determinism."""
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    recipe = replace(TINY, num_threads=threads + 1, deterministic=True, seed=5)
    try:
        train(spec(cifar_dir, tmp_path / "run", recipe))
        assert torch.equal(torch.rand(3), expected)
        assert torch.get_num_threads() == threads
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


# ----------------------------------------------------------------- resuming, refused and not


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: what a refused resume must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def crashed(cifar_dir: Path, tmp_path: Path) -> tuple[Path, Recipe]:
    """A run stopped at step 5, with checkpoints at steps 2 and 4."""
    out = tmp_path / "run"
    recipe = TINY.override({"checkpoint_every_iters": 2, "ema_decay": 0.0})
    with pytest.raises(Crash):
        train(spec(cifar_dir, out, recipe, on_step=crash_at(5)))
    return out, recipe


def test_a_checkpoint_that_does_not_fit_is_named_and_the_run_left_alone(
    cifar_dir: Path, crashed: tuple[Path, Recipe]
) -> None:
    """Weights missing, extra or of another shape, a state without its optimizer or epoch,
    momentum buffers of another model: each named with its file, before anything is written."""
    from safetensors.torch import save_file

    out, recipe = crashed
    newest = out / "checkpoints" / "ckpt-00000004"
    weights, state_file = newest / "model.safetensors", newest / "state.pt"
    good_weights, state = load_file(str(weights)), torch.load(state_file, weights_only=True)

    def refused(pattern: str) -> None:
        before = files_of(out)
        with pytest.raises(ValueError, match=pattern):
            train(spec(cifar_dir, out, recipe, resume=True, on_step=crash_at(6)))
        assert files_of(out) == before

    save_file({k: v for k, v in good_weights.items() if k != "fc.bias"}, str(weights))
    refused(r"ckpt-00000004/model.safetensors: 1 weight missing \(fc.bias\).*another --model")
    save_file({**good_weights, "fc2.weight": torch.zeros(2)}, str(weights))
    refused(r"model.safetensors: 1 weight the model does not have \(fc2.weight\)")
    wide = {**good_weights, "layer1.0.conv1.weight": torch.zeros(32, 16, 3, 3)}
    save_file(wide, str(weights))
    refused(r"layer1.0.conv1.weight has shape \[32,16,3,3\], the model expects \[16,16,3,3\]")
    save_file(good_weights, str(weights))

    torch.save({k: v for k, v in state.items() if k not in ("optimizer", "epoch")}, state_file)
    refused(r"ckpt-00000004/state.pt: no 'epoch' .*; no 'optimizer' .*continues from ckpt-0+2")
    momentum = {i: dict(entry) for i, entry in state["optimizer"]["state"].items()}
    momentum[0]["momentum_buffer"] = torch.zeros(3, 3)
    optimizer = {**state["optimizer"], "state": momentum}
    torch.save({**state, "optimizer": optimizer}, state_file)
    refused(r"state.pt: the optimizer's momentum_buffer of conv1.weight has shape \[3,3\]")


def test_nan_weights_in_a_checkpoint_name_it_and_the_way_back(
    cifar_dir: Path, crashed: tuple[Path, Recipe]
) -> None:
    from safetensors.torch import save_file

    out, recipe = crashed
    weights = out / "checkpoints" / "ckpt-00000004" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["layer2.0.bn1.running_var"][0] = float("nan")
    save_file(tensors, str(weights))
    before = files_of(out)
    expected = (
        r"ckpt-00000004/model.safetensors holds NaN or infinite values in 1 tensor "
        r"\(layer2.0.bn1.running_var\).*remove .*ckpt-00000004 and .*latest: --resume then "
        r"continues from ckpt-00000002.*lower --lr"
    )
    with pytest.raises(ValueError, match=expected):
        train(spec(cifar_dir, out, recipe, resume=True, on_step=crash_at(6)))
    assert files_of(out) == before


def test_resume_without_recipe_yaml_takes_the_recipe_its_checkpoint_keeps(
    cifar_dir: Path, crashed: tuple[Path, Recipe], capsys: pytest.CaptureFixture[str]
) -> None:
    """fast-cifar (the default) on a run of 10 iterations would have said its warm-up is too
    long; the run's own recipe is in its checkpoint."""
    from resnetkit.cli.main import main

    out, recipe = crashed
    (out / "recipe.yaml").unlink()
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    argv += ["--out", str(out), "--resume", "--no-progress"]
    # another recipe named: that is what is said, not the length of its warm-up
    assert main([*argv, "--recipe", "fast-cifar"]) == 2
    err = capsys.readouterr().err
    assert "trained with another recipe" in err and "warmup_iters 1950 is not shorter" not in err
    assert not (out / "recipe.yaml").exists()
    # a checkpoint from before recipes were kept in it: what is missing, and what to do
    state_file = out / "checkpoints" / "ckpt-00000004" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "recipe"}, state_file)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out / 'recipe.yaml'} is missing, and {state_file} keeps no copy" in err, err
    assert "pass --recipe" in err
    torch.save(state, state_file)
    assert main(argv) == 0
    assert load_recipe(out / "recipe.yaml").lr == recipe.lr


def test_resume_without_model_dataset_or_data_dir_needs_a_run_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.cli.main import main

    for out, why in (
        (tmp_path / "none", f"there is no folder {tmp_path / 'none'}"),
        (tmp_path, f"{tmp_path} is not a run folder (no run.json)"),
    ):
        assert main(["train", "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"--resume without --model and --dataset takes them from {out / 'run.json'}" in err
        assert f"{why}: give --model, --dataset and --data-dir" in err, err
    (tmp_path / "run.json").write_text("[1, 2]")
    assert main(["train", "--out", str(tmp_path), "--resume", "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert "--resume without --model takes it from" in err and "cannot be read" in err, err
    # a fine-tuning's run: its own command is named, with nothing taken from it
    run = {"model": "resnet20", "dataset": "folder", "data_dir": str(tmp_path), "origin": {}}
    run["origin"] = {"command": "finetune", "source": "resnet20.x", "from_scratch": False}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main(["train", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds a `resnetkit finetune` run" in err and "note:" not in err, err
    # without --resume they stay required, as argparse says
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "new")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: the following arguments are required: --model, --dataset" in err


def test_resume_takes_what_is_left_out_from_run_json_and_explicit_flags_win(
    cifar_dir: Path,
    crashed: tuple[Path, Recipe],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from resnetkit.cli.main import main

    out, recipe = crashed
    short = ["train", "--out", str(out), "--resume", "--no-progress"]
    # a model given is used as given, so the check on resuming refuses it
    assert main([*short, "--model", "resnet32"]) == 2
    err = capsys.readouterr().err
    assert f"note: continuing {out} with --dataset cifar10 --data-dir {cifar_dir} (from" in err
    assert "model: 'resnet20' -> 'resnet32'" in err, err
    # another dataset given: its folder is not taken from the run (and must be given)
    assert main([*short, "--dataset", "folder"]) == 2
    err = capsys.readouterr().err
    assert "note: continuing" in err and "--data-dir is needed for --dataset folder" in err, err
    # a data folder given is the one read (a copy elsewhere: warned, and it goes on)
    moved = tmp_path / "moved"
    shutil.copytree(cifar_dir, moved)
    with pytest.warns(UserWarning, match=rf"--data-dir {moved} is not the folder the run"):
        assert main([*short, "--data-dir", str(moved)]) == 0
    err = capsys.readouterr().err
    assert f"note: continuing {out} with --model resnet20 --dataset cifar10 (from" in err, err
    assert json.loads((out / "run.json").read_text())["resumes"][0]["data_dir"] == str(moved)
    # all three given: no note (the folder read last was the copy: warned again)
    full = ["--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    with pytest.warns(UserWarning, match=r"is not the folder the run started on \("):
        assert main([*short, *full]) == 0
    assert "note: continuing" not in capsys.readouterr().err


def test_a_cifar10_sample_run_resumes_with_out_and_resume_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.cli.main import main

    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(
            TrainSpec(
                "resnet20",
                "cifar10-sample",
                Path("."),
                out,
                TINY.override({"checkpoint_every_iters": 2, "ema_decay": 0.0}),
                train_subset=100,
                eval_subset=50,
                progress=False,
                on_step=crash_at(3),
            )
        )
    short = ["train", "--out", str(out), "--resume", "--no-progress"]
    # the subset is not kept in run.json: the refusal names the run's own flags to give
    assert main(short) == 2
    err = capsys.readouterr().err
    assert f"note: continuing {out} with --model resnet20 --dataset cifar10-sample (from" in err
    assert "(it started with --model resnet20 --dataset cifar10-sample)" in err, err
    assert main([*short, "--train-subset", "100", "--eval-subset", "50"]) == 0
    assert (out / "model" / "model.safetensors").is_file()


def test_run_json_keeps_the_first_start_and_lists_the_resumes(
    cifar_dir: Path, crashed: tuple[Path, Recipe], tmp_path: Path
) -> None:
    out, recipe = crashed
    first = json.loads((out / "run.json").read_text())
    moved = tmp_path / "moved"
    shutil.copytree(cifar_dir, moved)
    with pytest.warns(UserWarning, match=rf"--data-dir {moved} is not the folder the run started"):
        train(spec(moved, out, recipe, resume=True))
    run = json.loads((out / "run.json").read_text())
    assert run["provenance"] == first["provenance"]  # when and how it started
    assert [r["step"] for r in run["resumes"]] == [4]
    assert run["resumes"][0]["data_dir"] == str(moved) and "started" in run["resumes"][0]
    assert run["origin"] == {"command": "train"}


def test_stale_drafts_are_cleaned_and_a_read_only_folder_is_found_first(
    cifar_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from resnetkit.train import run_folder

    # A run killed while writing run.json and metrics.jsonl: its folder can be used again.
    out = tmp_path / "run"
    out.mkdir()
    for draft in (".run.json.k3j2x", ".metrics.jsonl.a8d0q"):
        (out / draft).write_text("{")
    recipe = TINY.override({"epochs": 1, "ema_decay": 0.0})
    train(spec(cifar_dir, out, recipe))
    assert not list(out.glob(".*.*")), list(out.glob(".*"))

    def read_only(**_: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(run_folder.tempfile, "TemporaryFile", read_only)
    with pytest.raises(PermissionError, match=r"checkpoints is not writable \(Read-only"):
        train(spec(cifar_dir, out, recipe, resume=True, on_step=crash_at(1)))
    with pytest.raises(PermissionError, match=r"new is not writable.*another --out"):
        (tmp_path / "new").mkdir()
        train(spec(cifar_dir, tmp_path / "new", recipe, on_step=crash_at(1)))


def test_a_read_only_run_folder_is_found_first_even_with_writable_checkpoints(
    cifar_dir: Path, crashed: tuple[Path, Recipe], monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json and metrics.jsonl live beside checkpoints/: a run folder that takes no new
    file (checkpoints/ on another mount, say) is named before any training, resuming or not."""
    import errno
    import tempfile

    from resnetkit.train import run_folder

    out, recipe = crashed
    real = tempfile.TemporaryFile

    def read_only_out(**kw: Any) -> Any:
        if Path(kw["dir"]) == out:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(**kw)

    monkeypatch.setattr(run_folder.tempfile, "TemporaryFile", read_only_out)
    before = files_of(out)
    with pytest.raises(PermissionError, match=rf"{out} is not writable \(Read-only"):
        train(spec(cifar_dir, out, recipe, resume=True, on_step=crash_at(5)))
    assert files_of(out) == before
    # a new run over one that never checkpointed: its checkpoints/ is there, and writable
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").mkdir()
    with pytest.raises(PermissionError, match=rf"{out} is not writable \(Read-only"):
        train(spec(cifar_dir, out, recipe, on_step=crash_at(1)))


def test_a_latest_pointer_out_of_the_run_is_refused(
    cifar_dir: Path, crashed: tuple[Path, Recipe], tmp_path: Path
) -> None:
    out, recipe = crashed
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out / "checkpoints" / "ckpt-00000004", elsewhere)
    (out / "checkpoints" / "latest").write_text("../../elsewhere\n")
    with pytest.raises(ValueError, match=r"latest names '../../elsewhere', which is not a chec"):
        train(spec(cifar_dir, out, recipe, resume=True))


def test_a_run_folder_given_as_a_model_points_to_its_model(
    cifar_dir: Path, crashed: tuple[Path, Recipe]
) -> None:
    from resnetkit.models.loading import load_model

    out, recipe = crashed
    weights = out / "checkpoints" / "ckpt-00000004" / "model.safetensors"
    with pytest.raises(ValueError, match=rf"has not finished.*--model {weights} --arch resnet20"):
        load_model(out)
    assert load_model(weights, arch="resnet20").fc.out_features == 10  # as advised
    train(spec(cifar_dir, out, recipe, resume=True))
    with pytest.raises(
        ValueError, match=rf"not a model directory.*pass that \(--model {out}/model"
    ):
        load_model(out)


def test_counts_of_one_are_singular_and_help_lists_the_recipe_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from resnetkit.cli.main import main
    from resnetkit.train.recipe import check_run_length

    with pytest.raises(ValueError, match=r"the run has 1 iteration; warmup_iters 2"):
        check_run_length(Recipe(warmup_iters=2), 1)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--warmup-iters 0, --warmup-lr 0.0" in shown and "--ema-decay 0.0" in shown
