"""Fine-tuning: new head, frozen stages and BN, discriminative lr, best epoch, early stop."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from resnetkit.cli.main import main
from resnetkit.models.model_dir import load_model_dir, save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.train.finetune import finetune, finetune_spec
from resnetkit.train.recipe import load_recipe
from resnetkit.train.trainer import Trainer, TrainSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two imbalanced classes of 32x32 photos-to-be: reddish 'apple' (24) and bluish 'sky' (8)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, colour, count in (("apple", (200, 40, 40), 24), ("sky", (40, 60, 210), 8)):
        (root / name).mkdir()
        for i in range(count):
            pixels = np.clip(rng.normal(colour, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("resnet20")
    out = tmp_path_factory.mktemp("source") / "model"
    classes = [f"c{i}" for i in range(10)]
    pre = {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    return save_model_dir(model, out, arch="resnet20", classes=classes, preprocessing=pre)


RECIPE = load_recipe("finetune").override(
    {"epochs": 3, "batch_size": 8, "num_threads": 1, "checkpoint_every_s": 1e9, "warmup_iters": 2}
)


def test_finetune_writes_model_report_and_keeps_frozen_stages(
    folder: Path, source: Path, tmp_path: Path
) -> None:
    recipe = RECIPE.override({"freeze_stages": 2})
    result = finetune(source, folder, tmp_path / "ft", recipe=recipe, progress=False)
    model = load_model_dir(result.train.model_dir)
    assert model.pretrained_cfg["classes"] == ["apple", "sky"]
    assert model.fc.out_features == 2
    assert model.pretrained_cfg["mean"] == [0.5, 0.5, 0.5]  # the source model's preprocessing
    before = load_file(str(source / "model.safetensors"))
    after = model.state_dict()
    for key in before:
        frozen = key.startswith(("conv1.", "bn1.", "layer1.", "layer2."))
        if key.startswith("fc."):
            continue
        if frozen:  # weights and BatchNorm statistics alike
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["layer3.2.conv2.weight"], after["layer3.2.conv2.weight"])
    assert not torch.equal(before["layer3.2.bn2.running_var"], after["layer3.2.bn2.running_var"])
    report = json.loads((tmp_path / "ft" / "report.json").read_text())
    assert set(report["per_class"]) == {"apple", "sky"}
    for name in ("confusion.png", "curves.png"):
        assert (tmp_path / "ft" / name).read_bytes().startswith(b"\x89PNG")


def test_backbone_gets_lower_lr_and_loss_is_class_weighted(
    folder: Path, source: Path, tmp_path: Path
) -> None:
    from resnetkit.models.loading import load_model

    trainer = Trainer(
        TrainSpec(load_model(source), "folder", folder, tmp_path / "t", RECIPE, progress=False)
    )
    head, body = trainer.optimizer.param_groups
    assert head["initial_lr"] == pytest.approx(RECIPE.lr)
    assert body["initial_lr"] == pytest.approx(RECIPE.lr * RECIPE.backbone_lr_mult)
    assert len(head["params"]) == 2  # fc weight and bias
    weights = trainer.loss_weights
    assert weights is not None and weights[1] > weights[0]  # the rarer class weighs more


def test_equal_top1_is_decided_by_the_validation_loss(
    folder: Path, source: Path, tmp_path: Path
) -> None:
    from resnetkit.models.loading import load_model

    trainer = Trainer(
        TrainSpec(load_model(source), "folder", folder, tmp_path / "t", RECIPE, progress=False)
    )
    trainer._track_best(50.0, 1.0)
    trainer._track_best(50.0, 0.8)  # same top-1, lower loss: better
    assert (trainer.best_top1, trainer.best_loss, trainer.evals_since_best) == (50.0, 0.8, 0)
    trainer._track_best(50.0, 0.9)  # same top-1, higher loss: not better
    assert trainer.evals_since_best == 1 and trainer.best_loss == 0.8
    trainer._track_best(66.7, 2.0)  # higher top-1 wins whatever the loss
    assert (trainer.best_top1, trainer.evals_since_best) == (66.7, 0)


def test_select_best_and_early_stopping(folder: Path, source: Path, tmp_path: Path) -> None:
    recipe = RECIPE.override({"epochs": 6, "lr": 0.0, "warmup_iters": 0, "early_stop_patience": 2})
    result = finetune(source, folder, tmp_path / "ft", recipe=recipe, progress=False)
    history = result.train.history
    assert len(history) == 3  # no improvement possible with lr 0: 1 eval + 2 patience
    assert result.train.metrics["stopped_early"] is True
    assert result.report["val_top1"] == pytest.approx(max(r["val_top1"] for r in history))
    # lr 0 still moves BatchNorm's running statistics, so each epoch's validation loss differs;
    # the model written is the best epoch's (highest top-1, then lowest loss), not the last one's
    best = min(range(len(history)), key=lambda i: (-history[i]["val_top1"], history[i]["val_loss"]))
    assert best != len(history) - 1  # otherwise restoring the best weights would not show
    assert result.train.metrics["val_loss"] == pytest.approx(history[best]["val_loss"], rel=1e-5)
    assert result.train.metrics["val_loss"] != pytest.approx(history[-1]["val_loss"], rel=1e-5)


def test_finetune_cli_starts_from_the_source_and_scratch_from_random_weights(
    folder: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "finetune",
        "--model",
        str(source),
        "--data",
        str(folder),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--num-threads",
        "1",
        "--no-progress",
        "--warmup-iters",
        "2",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["from_scratch"] is False and 0 <= shown["val_top1"] <= 100
    assert main([*args, "--out", str(tmp_path / "b"), "--scratch"]) == 0
    assert json.loads(capsys.readouterr().out)["from_scratch"] is True
    # the report's flag is not enough: the weights show where each run started
    stem = "conv1.weight"
    start = load_file(str(source / "model.safetensors"))[stem]
    tuned = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))[stem]
    scratch = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))[stem]
    moved = float((tuned - start).abs().max())
    assert moved < 0.1 * float((scratch - start).abs().max())


def test_sampler_balancing_draws_rare_class_more_often(
    folder: Path, source: Path, tmp_path: Path
) -> None:
    from resnetkit.models.loading import load_model

    recipe = RECIPE.override({"class_balance": "sampler"})
    trainer = Trainer(
        TrainSpec(load_model(source), "folder", folder, tmp_path / "t", recipe, progress=False)
    )
    labels = torch.cat([y for _, y in trainer.train_loader])
    share = float((labels == 1).float().mean())
    assert 0.3 < share < 0.7  # 'sky' is 25% of the data but about half of the draws


def test_finetune_keeps_a_per_pixel_mean(folder: Path, tmp_path: Path) -> None:
    """A model trained with the paper's per-pixel mean subtraction is fine-tuned on inputs
    normalised the same way (not x/255 with the mean dropped)."""
    torch.manual_seed(0)
    pixel_mean = torch.rand(3, 32, 32).mul(0.2).add(0.4)
    pre = {"input_size": 32, "mean": [0.0] * 3, "std": [1.0] * 3}
    pre["pixel_mean"] = pixel_mean.flatten().tolist()
    classes = [f"c{i}" for i in range(10)]
    source = save_model_dir(
        create_model("resnet20"),
        tmp_path / "src",
        arch="resnet20",
        classes=classes,
        preprocessing=pre,
    )
    result = finetune(source, folder, tmp_path / "ft", recipe=RECIPE, progress=False)
    cfg = load_model_dir(result.train.model_dir).pretrained_cfg
    assert torch.tensor(cfg["pixel_mean"]).view(3, 32, 32).allclose(pixel_mean)
    streamed = RECIPE.override({"augment": "imagenet"})
    with pytest.raises(ValueError, match="per-pixel mean.*--augment crop_flip"):
        finetune(source, folder, tmp_path / "ft2", recipe=streamed, progress=False)


def test_finetune_find_lr_sweeps_the_new_head_and_writes_no_run(
    folder: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(source), "--data", str(folder), "--out", str(out)]
    args += ["--batch-size", "8", "--num-threads", "1", "--warmup-iters", "0", "--epochs", "2"]
    assert main([*args, "--find-lr", "6", "--lr-plot", str(tmp_path / "lr.png")]) == 0
    text = capsys.readouterr().out
    # 3 batches per epoch: the sweep crosses epochs; at lr 10 it may blow up a step early.
    assert "steps from 1e-06 to" in text and "suggested --lr" in text
    assert (tmp_path / "lr.png").stat().st_size > 0
    assert not out.exists()


def test_a_new_head_unless_the_source_predicts_the_same_classes(
    folder: Path, tmp_path: Path
) -> None:
    # Two classes in the source as in the folder: the count alone must not keep the head.
    torch.manual_seed(0)
    base = create_model("resnet20", num_classes=2)
    pre = {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    weight = base.fc.weight.detach().clone()
    heads = {}
    for classes in (["apple", "sky"], ["sky", "apple"], ["c0", "c1"]):
        name = "-".join(classes)
        src = save_model_dir(
            base, tmp_path / name, arch="resnet20", classes=classes, preprocessing=pre
        )
        spec = finetune_spec(src, folder, tmp_path / "ft" / name, recipe=RECIPE, progress=False)
        heads[name] = Trainer(spec).model.fc.weight.detach()
    assert torch.equal(heads["apple-sky"], weight)  # the same classes: the same head
    assert torch.equal(heads["sky-apple"], weight[[1, 0]])  # the same classes, rows reordered
    assert not torch.allclose(heads["c0-c1"], weight)  # other classes: a fresh head


def test_one_image_a_class_leaves_no_validation_and_best_epoch_is_refused(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing can be held out of one image a class: selecting on an empty split would pick
    # epoch 1 on a val_top1 of 0.
    for name in ("apple", "sky"):
        (tmp_path / "one" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "one" / name / "0.png")
    args = ["finetune", "--model", str(source), "--data", str(tmp_path / "one")]
    args += ["--num-threads", "1", "--no-progress", "--epochs", "1", "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "ft")]) == 2
    assert "--select-best false --early-stop-patience 0" in capsys.readouterr().err
    # Without selection it trains; a broken file is listed on stderr, stdout stays JSON.
    (tmp_path / "one" / "sky" / "broken.png").write_bytes(b"not a png")
    plain = ["--select-best", "false", "--early-stop-patience", "0", "--warmup-iters", "0"]
    assert main([*args, *plain, "--out", str(tmp_path / "ft2")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["epochs_run"] == 1
    assert "broken.png" in captured.err and "broken.png" not in captured.out


@pytest.mark.filterwarnings("ignore:the validation split has only")
def test_finetune_augments_by_the_models_input_size(folder: Path, tmp_path: Path) -> None:
    """``augment: auto``: an ImageNet-sized model (here 128 pixels) sees random-resized crops
    streamed from the full pictures and is evaluated resize-then-centre-crop; a CIFAR-sized
    one keeps the in-memory pad-and-crop; a run that needs the set in memory keeps it there."""
    from torchvision.transforms import v2

    from resnetkit.data.streaming import FolderLoader

    assert load_recipe("finetune").augment == "auto"
    pre = {"input_size": 128, "mean": [0.5] * 3, "std": [0.25] * 3}
    big = save_model_dir(
        create_model("resnet18", num_classes=3),
        tmp_path / "big",
        arch="resnet18",
        classes=["a", "b", "c"],
        preprocessing=pre,
    )
    trainer = Trainer(finetune_spec(big, folder, tmp_path / "ft", recipe=RECIPE, progress=False))
    assert trainer.data.streaming and isinstance(trainer.train_loader, FolderLoader)
    transforms = trainer.train_loader.dataset.dataset.transform.transforms
    assert v2.RandomResizedCrop in [type(t) for t in transforms]
    assert trainer.data.preprocessing["resize"] == 146  # 128 / 0.875, then the centre crop
    assert trainer.recipe.augment == "auto"  # the run's recipe keeps what was asked
    assert trainer.data.augment == "imagenet"  # and run.json what it resolved to
    sampler = RECIPE.override({"class_balance": "sampler"})
    kept = Trainer(finetune_spec(big, folder, tmp_path / "s", recipe=sampler, progress=False))
    assert not kept.data.streaming
    small = Trainer(finetune_spec(_source32(tmp_path), folder, tmp_path / "small", recipe=RECIPE))
    assert not small.data.streaming and small.train_loader.pad == 4
    assert small.data.augment == "crop_flip"


def test_finetune_keeps_the_models_own_resize_ratio(folder: Path, tmp_path: Path) -> None:
    """A model evaluated from a resize other than side / 0.875 (torchvision's newer weights:
    232 for 224; here 133 for 128) keeps its ratio when fine-tuned with streamed crops,
    scaled to another evaluation side; a resize the recipe names wins."""

    def source(name: str, resize: int) -> Path:
        pre = {
            "input_size": 128,
            "resize": resize,
            "crop": 128,
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
        }
        model = create_model("resnet18", num_classes=3)
        return save_model_dir(
            model, tmp_path / name, arch="resnet18", classes=["a", "b", "c"], preprocessing=pre
        )

    tv2_like = source("tv2", 133)
    spec = finetune_spec(tv2_like, folder, tmp_path / "a", recipe=RECIPE, progress=False)
    assert spec.recipe.eval_resize == 133
    assert Trainer(spec).data.preprocessing["resize"] == 133  # and so the saved model
    larger = RECIPE.override({"eval_image_size": 256})
    assert finetune_spec(tv2_like, folder, tmp_path / "b", recipe=larger).recipe.eval_resize == 266
    named = RECIPE.override({"eval_resize": 140})
    assert finetune_spec(tv2_like, folder, tmp_path / "c", recipe=named).recipe.eval_resize == 140
    usual = finetune_spec(source("usual", 146), folder, tmp_path / "d", recipe=RECIPE)
    assert usual.recipe.eval_resize == 0  # 146 is 128 / 0.875, the default anyway
    in_memory = RECIPE.override({"class_balance": "sampler"})  # no resize to choose there
    assert finetune_spec(tv2_like, folder, tmp_path / "e", recipe=in_memory).recipe.eval_resize == 0


def _source32(tmp_path: Path) -> Path:
    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    return save_model_dir(
        create_model("resnet20", num_classes=2),
        tmp_path / "s32",
        arch="resnet20",
        classes=["a", "b"],
        preprocessing=pre,
    )


def test_finetune_distils_from_a_teacher_that_knows_the_folders_classes(
    folder: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = finetune(source, folder, tmp_path / "teacher", recipe=RECIPE, progress=False)
    args = ["finetune", "--model", str(source), "--data", str(folder), "--epochs", "2"]
    args += ["--batch-size", "8", "--num-threads", "1", "--no-progress", "--warmup-iters", "2"]
    assert (
        main([*args, "--out", str(tmp_path / "kd"), "--teacher", str(teacher.train.model_dir)]) == 0
    )
    card = (tmp_path / "kd" / "model" / "README.md").read_text()
    assert f"distilled from `{teacher.train.model_dir}`" in card
    # the source itself knows c0...c9, not apple and sky: no teacher for this folder
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--teacher", str(source)]) == 2
    assert "does not know the data's classes apple, sky (it knows c0" in capsys.readouterr().err


def test_finetune_names_a_missing_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.cli.main import main

    argv = ["finetune", "--model", "resnet20.cifar10", "--data", str(tmp_path / "nope")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--data {tmp_path / 'nope'}: no such folder or label file" in err, err
    assert not (tmp_path / "out").exists()


def test_a_file_as_data_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`finetune --data photo.jpg` exited with status 1 (an I/O failure's) where a missing
    folder, and every other usage error, exits with 2; so did `evaluate` and `train` with a
    file as --data-dir. The message is the same."""
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    runs = {
        "finetune": ["--data", str(photo), "--out", str(tmp_path / "out")],
        "evaluate": ["--dataset", "folder", "--data-dir", str(photo)],
    }
    for command, args in runs.items():
        assert main([command, "--model", "resnet20.cifar10", *args]) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"resnetkit {command}: error: not a folder: {photo} (expected "), err
        assert "root/<class>/<image>" in err and "or a .csv/.tsv label file" in err
    assert not (tmp_path / "out").exists()


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.filterwarnings("ignore:the validation split has only")
def test_resume_needs_the_command_source_and_data_that_started_the_run(
    folder: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --resume` of a fine-tuning and `finetune --resume` of a training are refused
    with the command that resumes them; so are another source, --scratch and other data, in
    finetune's own flags and without a word about the validation split first. The run folder
    is left as it was."""
    import shutil
    import warnings

    args = ["--batch-size", "8", "--num-threads", "1", "--no-progress", "--epochs", "1"]
    tune = ["finetune", "--model", str(source), "--data", str(folder), *args]
    ft = tmp_path / "ft"
    assert main([*tune, "--out", str(ft), "--warmup-iters", "2"]) == 0
    capsys.readouterr()
    before = files_of(ft)

    def refused(argv: list[str]) -> str:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main([*argv, "--resume"]) == 2
        assert not [w for w in seen if "validation split" in str(w.message)]
        assert files_of(ft) == before
        return " ".join(capsys.readouterr().err.split())

    train_cmd = ["train", "--model", "resnet20", "--dataset", "folder", "--data-dir", str(folder)]
    err = refused([*train_cmd, *args, "--out", str(ft)])
    assert "holds a `resnetkit finetune` run, which `train --resume` cannot continue" in err
    assert f"`resnetkit finetune --model {source} --data {folder} --out {ft} --resume`" in err
    other = _source32(tmp_path)
    err = refused(
        ["finetune", "--model", str(other), "--data", str(folder), *args, "--out", str(ft)]
    )
    assert (
        f"{ft} fine-tunes {source}, and --model is now {other}: resume with --model {source}" in err
    )
    assert "drop --scratch" in refused([*tune, "--out", str(ft), "--scratch"])
    # `--out RUN --resume` alone takes what is left out; what is given is used as given
    err = refused(["finetune", "--model", str(other), *args, "--out", str(ft)])
    assert f"note: continuing {ft} with --data {folder} (from" in err, err
    assert f"{ft} fine-tunes {source}, and --model is now {other}" in err
    assert "drop --scratch" in refused(["finetune", *args, "--out", str(ft), "--scratch"])
    fewer = tmp_path / "fewer"
    shutil.copytree(folder, fewer)
    (fewer / "apple" / "00.png").unlink()
    err = refused(
        ["finetune", "--model", str(source), "--data", str(fewer), *args, "--out", str(ft)]
    )
    assert "other settings; resuming would change train_images" in err, err
    assert "Resume with the run's own --model, --data, --scratch (or not)" in err
    assert "--dataset" not in err

    tr = tmp_path / "tr"
    quick = ["--warmup-iters", "0", "--ema-decay", "0"]
    assert main([*train_cmd, *args, *quick, "--out", str(tr)]) == 0
    capsys.readouterr()
    resume = f"`resnetkit train --model resnet20 --dataset folder --data-dir {folder} --out {tr}"
    # with its full command, or with `--out RUN --resume` alone: nothing taken from it
    for argv in (tune, ["finetune"]):
        assert main([*argv, "--out", str(tr), "--resume"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "holds a `resnetkit train` run, which `finetune --resume` cannot continue" in err
        assert resume in err and "note:" not in err, err


class Crash(Exception):
    pass


@pytest.mark.filterwarnings("ignore:the validation split has only")
def test_an_interrupted_finetune_resumes_with_out_and_resume_alone(
    folder: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two fine-tunings at another image size crash at the same step; one resumes with its
    full command, the other with `finetune --out RUN --resume` alone (--model and --data from
    its run.json, the image size from its recipe.yaml), and both end with the same weights."""
    from dataclasses import replace

    from resnetkit.train.trainer import train

    def crash(step: int) -> None:
        if step == 5:
            raise Crash

    recipe = RECIPE.override({"checkpoint_every_iters": 2})
    for name in ("full", "short"):
        spec = finetune_spec(source, folder, tmp_path / name, recipe=recipe, image_size=40)
        with pytest.raises(Crash):
            train(replace(spec, progress=False, on_step=crash))
    speed = ["--num-threads", "1", "--no-progress"]
    full = ["finetune", "--model", str(source), "--data", str(folder), "--image-size", "40"]
    assert main([*full, *speed, "--out", str(tmp_path / "full"), "--resume"]) == 0
    assert "note:" not in capsys.readouterr().err  # all given: nothing taken
    short = tmp_path / "short"
    assert main(["finetune", *speed, "--out", str(short), "--resume"]) == 0
    shown = capsys.readouterr()
    note = f"note: continuing {short} with --model {source} --data {folder} (from {short}/run.json)"
    assert note in shown.err, shown.err
    assert json.loads(shown.out)["from_scratch"] is False
    ends = [
        load_file(str(tmp_path / name / "model" / "model.safetensors"))
        for name in ("full", "short")
    ]
    assert ends[0].keys() == ends[1].keys()
    assert all(torch.equal(ends[0][key], ends[1][key]) for key in ends[0])
    assert load_model_dir(short / "model").pretrained_cfg["input_size"] == 40
    reports = [
        json.loads((tmp_path / name / "report.json").read_text()) for name in ("full", "short")
    ]
    assert reports[0]["val_top1"] == reports[1]["val_top1"]
    resumes = json.loads((short / "run.json").read_text())["resumes"]
    assert [r["step"] for r in resumes] == [4], resumes


def test_finetune_resume_without_model_or_data_needs_a_run_json(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for out, why in (
        (tmp_path / "none", f"there is no folder {tmp_path / 'none'}"),
        (tmp_path, f"{tmp_path} is not a run folder (no run.json)"),
    ):
        assert main(["finetune", "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"--resume without --model and --data takes them from {out / 'run.json'}" in err
        assert f"{why}: give --model and --data" in err, err
    # a run.json from before the source was recorded: --model must be given
    (tmp_path / "run.json").write_text(json.dumps({"model": "resnet20", "data_dir": "/d"}))
    assert main(["finetune", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume without --model takes it from" in err, err
    assert "it does not name the model the run fine-tunes: give --model" in err, err
    # --scratch and a bare checkpoint's --arch are the run's own too (here no checkpoint
    # follows: the note, then the refusal)
    bare = tmp_path / "bare.pt"
    torch.save(create_model("resnet20").state_dict(), bare)
    origin = {"command": "finetune", "source": str(bare), "from_scratch": True}
    run = {"model": "resnet20", "data_dir": str(folder), "origin": origin}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main(["finetune", "--out", str(tmp_path), "--resume"]) != 0
    err = capsys.readouterr().err
    taken = f"--model {bare} --data {folder} --scratch --arch resnet20 (from"
    assert f"note: continuing {tmp_path} with {taken}" in err, err
    assert "holds no checkpoint" in err, err
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--out", str(tmp_path / "new")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: the following arguments are required: --model, --data" in err


def test_weights_of_another_model_are_refused_in_the_commands_own_words(tmp_path: Path) -> None:
    """finetune has no --model-option: a resumed fine-tuning run whose checkpoint holds
    another model's weights (its source model written again since) was sent to one."""
    from resnetkit.train.resume import check_tensors
    from resnetkit.train.run_folder import RunOrigin

    saved = {"model": {"fc.weight": torch.zeros(10, 64)}}
    expected = {"fc.weight": torch.zeros(3, 64)}
    with pytest.raises(ValueError, match="shape") as err:
        check_tensors(tmp_path, saved, expected, RunOrigin("finetune", "resnet20.cifar10"))
    assert "written from another source model (finetune --model)" in str(err.value)
    assert "--model-option" not in str(err.value)
    with pytest.raises(ValueError, match="written for another --model or --model-option"):
        check_tensors(tmp_path, saved, expected, RunOrigin("train"))
