"""Training an image folder through the streaming path (augment: imagenet)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from resnetkit.models.model_dir import read_model_meta
from resnetkit.train.recipe import Recipe
from resnetkit.train.trainer import TrainSpec, train
from tests.test_train import Crash, crash_at, torchrun_train

RECIPE = Recipe(
    epochs=2,
    batch_size=8,
    lr=0.05,
    schedule="cosine",
    augment="imagenet",
    checkpoint_every_s=1e9,
    checkpoint_every_iters=2,
    num_threads=1,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of 48x40 pictures (bright top or bright bottom) in train/ and val/, and one
    corrupt file among the 32 training files (4 full batches of 8: it is met every epoch)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 4)):
        for label, name in enumerate(("top", "bottom")):
            (root / split / name).mkdir(parents=True)
            n = count - 1 if (split, name) == ("train", "top") else count
            for i in range(n):
                pixels = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
                rows = slice(0, 20) if label == 0 else slice(20, 40)
                pixels[rows] += 150
                Image.fromarray(pixels).save(root / split / name / f"{i:02d}.png")
    (root / "train" / "top" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def spec(data: Path, out: Path, recipe: Recipe = RECIPE, **kw: object) -> TrainSpec:
    return TrainSpec(
        model="resnet20",
        dataset="folder",
        data_dir=data,
        out=out,
        recipe=recipe,
        progress=False,
        **{"image_size": 32, **kw},  # type: ignore[arg-type]
    )


def test_streaming_run_reports_bad_files_and_records_preprocessing(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A worker process decodes: the file's name must still reach the log, once.
    recipe = RECIPE.override({"num_workers": 1})
    result = train(spec(photos, tmp_path / "run", recipe, log_epochs=True))
    err = capsys.readouterr().err
    assert err.count("broken.png: ") == 1 and f"skipped {photos / 'train' / 'top'}" in err, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["streaming"] is True
    assert run["train_images"] == 32 and run["eval_images"] == {"val": 8}
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # The broken file is reported (and skipped) in every epoch; training goes on.
    assert [r.get("skipped_images") for r in rows] == [1, 1]
    assert "val_top1" in rows[-1] and 0 <= result.metrics["val_top1"] <= 100
    meta = read_model_meta(tmp_path / "run" / "model")
    pre = meta["preprocessing"]
    assert pre["input_size"] == 32 and pre["crop"] == 32
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406])  # ImageNet statistics


def test_streaming_run_resumes_to_identical_weights(photos: Path, tmp_path: Path) -> None:
    train(spec(photos, tmp_path / "a"))
    with pytest.raises(Crash):
        train(spec(photos, tmp_path / "b", on_step=crash_at(5)))
    with pytest.raises(ValueError, match="input_size: 32 -> 40"):  # another --image-size
        train(spec(photos, tmp_path / "b", resume=True, image_size=40))
    train(spec(photos, tmp_path / "b", resume=True))
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_streaming_takes_subsets_like_the_in_memory_path(photos: Path, tmp_path: Path) -> None:
    from resnetkit.train.trainer import Trainer

    for augment in ("imagenet", "crop_flip"):  # streamed, and decoded into memory
        recipe = RECIPE.override({"augment": augment})
        trainer = Trainer(spec(photos, tmp_path / augment, recipe, train_subset=10, eval_subset=3))
        assert len(trainer.data.train_labels) == 10 and trainer.data.eval_counts == {"val": 3}


def test_repeated_augmentation_reaches_both_paths_and_holds_on_resume(
    photos: Path, tmp_path: Path
) -> None:
    from resnetkit.train.trainer import Trainer

    for augment in ("imagenet", "crop_flip"):  # streamed, and decoded into memory
        recipe = RECIPE.override({"augment": augment, "repeated_augment": 4})
        trainer = Trainer(spec(photos, tmp_path / augment, recipe))
        labels = torch.cat([y for _, y in trainer.data.train_loader])
        assert (labels.view(-1, 4) == labels.view(-1, 4)[:, :1]).all(), augment
    recipe = RECIPE.override({"repeated_augment": 2})
    with pytest.raises(Crash):
        train(spec(photos, tmp_path / "run", recipe, on_step=crash_at(3)))
    with pytest.raises(ValueError, match="repeated_augment: 2 -> 1"):  # another data order
        train(spec(photos, tmp_path / "run", RECIPE, resume=True))


def test_streaming_refuses_what_it_cannot_do(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class_balance 'sampler'.*use class_balance 'loss'"):
        train(spec(photos, tmp_path / "a", RECIPE.override({"class_balance": "sampler"})))
    with pytest.raises(ValueError, match="pixel_mean"):
        train(spec(photos, tmp_path / "b", RECIPE.override({"normalize": "pixel_mean"})))
    cifar = TrainSpec(
        model="resnet20",
        dataset="cifar10-sample",
        data_dir=tmp_path,
        out=tmp_path / "c",
        recipe=RECIPE,
        progress=False,
    )
    with pytest.raises(ValueError, match="for image folders.*use crop_flip"):
        train(cifar)


def test_resume_counts_a_batch_of_only_bad_images(photos: Path, tmp_path: Path) -> None:
    """At batch size 1 the broken file is a batch with no good image: it must still count as a
    position, or a resumed epoch would start one batch early and train one twice."""
    from resnetkit.data.streaming import folder_loader

    loader = folder_loader(photos / "train", None, None, 1, train=True, seed=0)
    loader.set_epoch(0)
    position = list(loader.iterate(keep_empty=True)).index(None)
    assert position < 26  # the crash below comes after the empty batch
    assert len(list(loader.iterate())) == 31  # without keep_empty it is left out

    one = RECIPE.override({"batch_size": 1, "epochs": 1})
    train(spec(photos, tmp_path / "a", one))
    with pytest.raises(Crash):
        train(spec(photos, tmp_path / "b", one, on_step=crash_at(27)))
    train(spec(photos, tmp_path / "b", one, resume=True))
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The broken file was met before the crash; the resumed pass skips its batch undecoded, yet
    # the epoch's row still counts it (from the checkpoint), as the uninterrupted run's does.
    rows = {
        name: [json.loads(r) for r in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("a", "b")
    }
    assert [r["skipped_images"] for r in rows["b"]] == [r["skipped_images"] for r in rows["a"]]
    assert rows["a"][0]["skipped_images"] == 1


def test_ddp_names_the_broken_files_of_every_process(photos: Path, tmp_path: Path) -> None:
    """Each process streams its half of the folder: a broken file met by the second one is
    named too (by the first, once), and the epoch's count is the sum over both."""
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    (data / "train" / "bottom" / "00.png").write_bytes(b"GIF89a broken")  # 2 of 32 now
    (data / "val" / "top" / "broken.png").write_bytes(b"")  # met by both: not sharded
    options = ["--dataset", "folder", "--augment", "imagenet", "--image-size", "32"]
    options += ["--batch-size", "8", "--lr", "0.05", "--warmup-iters", "0", "--ema-decay", "0"]
    cmd = torchrun_train(data, tmp_path / "ddp", 2, *options)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_epoch = proc.stderr.index("epoch 1/2 ")
    for broken in ("train/top/broken.png", "train/bottom/00.png", "val/top/broken.png"):
        line = f"skipped {data / broken}: "
        assert proc.stderr.count(line) == 1, proc.stderr[-3000:]
        assert proc.stderr.index(line) < first_epoch, broken  # named with the epoch that met it
    rows = [json.loads(r) for r in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["world_size"], r["skipped_images"]) for r in rows] == [(2, 2), (2, 2)]


@pytest.mark.filterwarnings("ignore:milestones")  # paper-imagenet's, on 4 iterations
def test_folder_image_size_defaults_to_the_recipes_crops(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --image-size the ImageNet recipe's random-resized crops are 224 pixels, as in
    the papers (32 would train an ImageNet ResNet on thumbnails); the in-memory path keeps 32;
    a size given wins."""
    import resnetkit.train.trainer as trainer_module
    from resnetkit.cli.main import main
    from resnetkit.train.trainer import Trainer

    sizes, recipes = [], []

    def fake_train(spec: TrainSpec) -> None:
        trainer = Trainer(spec)  # where the side is settled (the Python API's too)
        sizes.append(trainer.image_size)
        recipes.append(trainer.recipe)
        raise SystemExit(0)

    monkeypatch.setattr(trainer_module, "train", fake_train)
    base = ["train", "--model", "resnet18", "--dataset", "folder", "--data-dir", str(photos)]
    small = ["--epochs", "1", "--batch-size", "8", "--warmup-iters", "0", "--ema-decay", "0"]
    for extra in (
        ["--recipe", "paper-imagenet"],
        ["--augment", "imagenet"],
        ["--augment", "crop_flip"],
        ["--augment", "imagenet", "--image-size", "64"],
        ["--recipe", "tv2-imagenet"],  # the recipe's own side: FixRes's 176
        ["--recipe", "tv2-imagenet", "--image-size", "160"],
    ):
        with pytest.raises(SystemExit):
            main([*base, "--out", str(tmp_path / str(len(sizes))), *extra, *small])
    assert sizes == [224, 224, 32, 64, 176, 160]
    # a side given wins over the recipe's, and the run's recipe (recipe.yaml) says so
    assert [r.train_image_size for r in recipes[-2:]] == [176, 160]


def test_fixres_trains_on_small_crops_and_evaluates_larger(photos: Path, tmp_path: Path) -> None:
    """eval_image_size / eval_resize (FixRes, torchvision's 176 -> 224 from 232): training
    crops of one side, evaluation and the saved model at another; the run remembers both."""
    from resnetkit.train.trainer import Trainer

    recipe = RECIPE.override({"eval_image_size": 40, "eval_resize": 44})
    trainer = Trainer(spec(photos, tmp_path / "probe", recipe))
    images, _ = next(iter(trainer.data.train_loader))
    assert images.shape[-2:] == (32, 32)
    images, _ = next(iter(trainer.data.eval_loaders["val"]))
    assert images.shape[-2:] == (40, 40)
    assert "32-pixel crops; evaluated at 40, cut from 44" in trainer._describe_start()

    with pytest.raises(Crash):
        train(spec(photos, tmp_path / "run", recipe, on_step=crash_at(3)))
    with pytest.raises(ValueError, match="train_size: 32 -> 36"):  # the eval side is the same
        train(spec(photos, tmp_path / "run", recipe, resume=True, image_size=36))
    train(spec(photos, tmp_path / "run", recipe, resume=True))
    pre = read_model_meta(tmp_path / "run" / "model")["preprocessing"]
    assert (pre["input_size"], pre["crop"], pre["resize"]) == (40, 40, 44)
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "trained on 32x32 crops, evaluated at 40x40 (FixRes)" in card
    assert "shorter side resized to 44, then the central 40x40 crop" in card
    saved = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "eval_image_size: 40" in saved and "eval_resize: 44" in saved


def test_fixres_refuses_what_it_cannot_mean(photos: Path, tmp_path: Path) -> None:
    # the in-memory path holds each image at one side: no other side to evaluate at
    in_memory = RECIPE.override({"augment": "crop_flip", "eval_image_size": 40})
    with pytest.raises(ValueError, match="'eval_image_size' is for crops streamed.*crop_flip"):
        train(spec(photos, tmp_path / "a", in_memory))
    with pytest.raises(ValueError, match="'eval_resize' is 36, smaller than the 40-pixel"):
        train(
            spec(
                photos, tmp_path / "b", RECIPE.override({"eval_image_size": 40, "eval_resize": 36})
            )
        )
    with pytest.raises(ValueError, match="'eval_image_size' is -1"):
        RECIPE.override({"eval_image_size": -1})
    with pytest.raises(ValueError, match="'eval_resize' is 200, smaller than the 224-pixel"):
        RECIPE.override({"eval_image_size": 224, "eval_resize": 200})  # before any data is read
    # CIFAR's images are 32x32: another side is refused, not ignored
    cifar = {"model": "resnet20", "dataset": "cifar10-sample", "data_dir": tmp_path}
    small = RECIPE.override({"augment": "crop_flip"})
    with pytest.raises(ValueError, match="--image-size is 64, and cifar10-sample images are 32x32"):
        train(TrainSpec(**cifar, out=tmp_path / "c", recipe=small, image_size=64))  # type: ignore[arg-type]
    sized = small.override({"train_image_size": 176})
    with pytest.raises(ValueError, match="'train_image_size' is 176.*pass --image-size 32"):
        train(TrainSpec(**cifar, out=tmp_path / "d", recipe=sized))  # type: ignore[arg-type]


def test_tv2_recipe_holds_torchvisions_numbers() -> None:
    """The tv2-imagenet file against torchvision's command (8 x 128 images, 600 epochs, a
    5-epoch warm-up, --model-ema with 32 steps and decay 0.99998 adjusted by
    world_size x batch x ema_steps / epochs): the conversions its comment claims."""
    from resnetkit.train.recipe import load_recipe

    r = load_recipe("tv2-imagenet")
    assert (r.batch_size, r.epochs, r.lr, r.weight_decay) == (1024, 600, 0.5, 2e-5)
    assert r.warmup_iters == 5 * (1_281_167 // 1024)  # an epoch of ImageNet, full batches
    alpha = min(1.0, (1 - 0.99998) * 8 * 128 * 32 / 600)
    assert r.ema_decay == pytest.approx((1 - alpha) ** (1 / 32), abs=5e-7)
    assert (r.train_image_size, r.eval_image_size, r.eval_resize) == (176, 224, 232)
    assert (r.mixup_alpha, r.cutmix_alpha, r.label_smoothing, r.random_erasing) == (
        0.2,
        1.0,
        0.1,
        0.1,
    )
    assert r.trivial_augment and not r.decay_norm_and_bias and r.schedule == "cosine"
    assert r.repeated_augment == 4  # --ra-sampler --ra-reps 4
