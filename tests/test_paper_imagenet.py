"""The 2015 paper's ImageNet recipe: scale augmentation, PCA lighting, multi-scale testing."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resnetkit.cli.main import main
from resnetkit.data.fast import Normalization
from resnetkit.data.transforms import (
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    PCALighting,
    batch_pca_lighting,
    build_train_transform,
    from_recipe,
    scale_range_for,
)
from resnetkit.evaluate import evaluator
from resnetkit.evaluate.evaluator import PAPER_SCALES, evaluate_model
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.train.data_setup import _float_augment
from resnetkit.train.recipe import Recipe, load_recipe, recipe_differences

IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _ramp(h: int, w: int) -> Image.Image:
    """Red channel = column (0..255 across the width), so a crop's red span shows its scale."""
    columns = np.linspace(0, 255, w).round().astype(np.uint8)
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[..., 0] = columns[None, :]
    return Image.fromarray(pixels)


# --- scale augmentation -----------------------------------------------------------------------


def test_scale_range_follows_the_crop_size() -> None:
    assert scale_range_for((256, 480), 224) == (256, 480)
    assert scale_range_for((256, 480), 112) == (128, 240)
    assert scale_range_for((256, 480), 32) == (37, 69)
    with pytest.raises(ValueError, match="smaller than the crop: its low end must be at least 224"):
        scale_range_for((200, 480), 224)
    with pytest.raises(ValueError, match="low <= high"):
        scale_range_for((480, 256), 224)


def _red_span(transform: v2.Compose, image: Image.Image) -> float:
    """The fraction of the picture's width one crop covers (from the red ramp, in [0, 1])."""
    red = transform(image)[0]
    return float(red.max() - red.min())


@pytest.mark.parametrize("side", [256, 480])
def test_scale_augmentation_resizes_the_shorter_side_then_crops(side: int) -> None:
    """A 224 crop of a picture whose shorter side went to ``side`` spans 224/(side * 4/3)
    of a 3:4 picture's width: the two ends of the paper's range, pinned."""
    image = _ramp(300, 400)
    transform = build_train_transform(224, *IDENTITY, augment="scale", scale_range=(side, side))
    torch.manual_seed(0)
    for _ in range(4):
        expected = (224 - 1) / (side * 4 / 3 - 1)
        assert _red_span(transform, image) == pytest.approx(expected, abs=0.02)
        assert transform(image).shape == (3, 224, 224)


def test_scale_augmentation_draws_sides_across_the_range() -> None:
    image = _ramp(300, 400)
    transform = build_train_transform(224, *IDENTITY, augment="scale")
    torch.manual_seed(1)
    spans = [_red_span(transform, image) for _ in range(40)]
    widest, narrowest = (223 / (256 * 4 / 3 - 1), 223 / (480 * 4 / 3 - 1))
    assert all(narrowest - 0.02 <= s <= widest + 0.02 for s in spans)
    assert max(spans) - min(spans) > 0.6 * (widest - narrowest)  # not one fixed side


def test_paper_imagenet_recipe_is_the_papers() -> None:
    recipe = load_recipe("paper-imagenet")
    assert recipe.augment == "scale" and recipe.scale_range == (256, 480)
    assert recipe.lighting == 0.1
    assert (recipe.batch_size, recipe.lr, recipe.weight_decay) == (256, 0.1, 1e-4)
    kinds = [type(t) for t in from_recipe(recipe, 224, *IDENTITY).transforms]
    assert v2.RandomShortestSize in kinds and v2.RandomCrop in kinds
    assert PCALighting in kinds and v2.RandomResizedCrop not in kinds
    # lighting in [0, 1] units: after ToDtype, before Normalize
    assert kinds.index(v2.ToDtype) < kinds.index(PCALighting) < kinds.index(v2.Normalize)


def test_recipe_checks_the_new_fields() -> None:
    with pytest.raises(ValueError, match="'scale_range' is \\[480, 256\\]"):
        Recipe(scale_range=(480, 256))
    with pytest.raises(ValueError, match="'lighting' is -0.1"):
        Recipe(lighting=-0.1)
    assert Recipe().override({"scale_range": "320,640"}).scale_range == (320, 640)
    # A run saved before these fields existed trained with what they now default to.
    old = {k: v for k, v in Recipe().to_dict().items() if k not in ("scale_range", "lighting")}
    assert recipe_differences(old, Recipe()) == []
    assert recipe_differences(old, Recipe(lighting=0.1)) == ["lighting: 0.0 -> 0.1"]


# --- PCA lighting -----------------------------------------------------------------------------


def test_pca_lighting_adds_one_colour_per_image_with_alexnets_covariance() -> None:
    lighting = PCALighting(0.1)
    image = torch.rand(3, 5, 7)
    torch.manual_seed(0)
    out = lighting(image)
    shift = out - image
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift), atol=1e-6)  # one colour
    assert shift.abs().max() > 0
    # The shift is eigvec @ (alpha * eigval), alpha ~ N(0, 0.1^2): its covariance over many
    # draws is V diag(0.01 * eigval^2) V^T (the distribution AlexNet describes).
    draws = lighting.shift(20000, torch.Generator().manual_seed(1)).double()
    vec, val = torch.tensor(IMAGENET_PCA_EIGVEC).double(), torch.tensor(IMAGENET_PCA_EIGVAL)
    expected = vec @ torch.diag(0.01 * val.double() ** 2) @ vec.T
    torch.testing.assert_close(draws.T.cov(), expected, atol=1.5e-5, rtol=0.05)
    assert torch.equal(PCALighting(0.0)(image), image)
    with pytest.raises(ValueError, match="float \\(3, H, W\\)"):
        lighting(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_batch_lighting_is_per_image_lighting_before_normalising() -> None:
    x = torch.randn(6, 3, 4, 4)
    std = (0.2, 0.25, 0.5)
    out = batch_pca_lighting(x, 0.1, torch.Generator().manual_seed(3), std)
    expected = PCALighting(0.1).shift(6, torch.Generator().manual_seed(3)) / torch.tensor(std)
    torch.testing.assert_close(out - x, expected[:, :, None, None].expand_as(x))
    assert not torch.allclose(expected[0], expected[1])  # each image its own colour
    with pytest.raises(ValueError, match="RGB"):
        batch_pca_lighting(torch.zeros(2, 1, 4, 4), 0.1, torch.Generator())


def test_in_memory_path_lights_before_erasing() -> None:
    norm = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert _float_augment(Recipe(), norm) is None
    x = torch.zeros(4, 3, 8, 8)
    lit = _float_augment(Recipe(lighting=0.1), norm)
    assert lit is not None
    shifted = lit(x, torch.Generator().manual_seed(0))
    expected = PCALighting(0.1).shift(4, torch.Generator().manual_seed(0)) / 0.25
    torch.testing.assert_close(shifted[:, :, 0, 0], expected)
    both = _float_augment(Recipe(lighting=0.1, random_erasing=1.0), norm)
    assert both is not None
    out = both(x, torch.Generator().manual_seed(0))
    erased = (out == 0).all(dim=1)  # erased pixels are exactly the mean, lit ones are not
    assert erased.any() and not erased.all()


# --- multi-scale testing ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of pictures of three shapes (landscape, portrait, square), one corrupt."""
    root = tmp_path_factory.mktemp("multiscale")
    rng = np.random.default_rng(0)
    shapes = ((30, 40), (44, 33), (36, 36))
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for i, (h, w) in enumerate(shapes):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def _model(pixel_mean: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=2).eval()
    cfg = {"classes": ["cat", "dog"], "input_size": 32, "mean": [0.5, 0.4, 0.3]}
    cfg["std"] = [0.2, 0.25, 0.3]
    if pixel_mean:
        cfg["pixel_mean"] = torch.linspace(0.2, 0.6, 3 * 32 * 32).tolist()
    model.pretrained_cfg = cfg
    return model


def _by_hand(model: torch.nn.Module, root: Path, scales: tuple[int, ...]) -> tuple[float, float]:
    """Top-1 and mean loss, computed image by image without resnetkit's evaluator."""
    cfg = model.pretrained_cfg
    if "pixel_mean" in cfg:
        mean = torch.tensor(cfg["pixel_mean"]).view(3, -1).mean(1).view(1, 3, 1, 1)
        std = torch.ones(1, 3, 1, 1)
    else:
        mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    right, losses = 0, []
    for label, name in enumerate(("cat", "dog")):
        for path in sorted((root / name).glob("[0-9].png")):
            image = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None]
            probs = []
            for side in scales:
                h, w = image.shape[-2:]
                size = [side, int(side * w / h)] if h <= w else [int(side * h / w), side]
                x = TF.resize(image, size, antialias=True).float() / 255.0
                with torch.no_grad():
                    probs.append(model((x - mean) / std).softmax(1))
            p = torch.stack(probs).mean(0)[0]
            right += int(p.argmax()) == label
            losses.append(-math.log(float(p[label])))
    return 100.0 * right / len(losses), sum(losses) / len(losses)


@pytest.mark.parametrize("pixel_mean", [False, True])
def test_multi_scale_matches_a_hand_computation(folder: Path, pixel_mean: bool) -> None:
    model = _model(pixel_mean)
    scales = (32, 48, 40)
    with pytest.warns(UserWarning, match="broken.png"):
        result = evaluate_model(model, "folder", folder, scales=scales)
    top1, loss = _by_hand(model, folder, scales)
    assert result["count"] == 6  # the corrupt file reported and skipped
    assert result["scales"] == [32, 48, 40] and result["input_size"] == 48
    assert result["top1"] == pytest.approx(top1)
    assert result["loss"] == pytest.approx(loss, rel=1e-4)
    with pytest.warns(UserWarning, match="broken.png"):
        single = evaluate_model(model, "folder", folder, scales=(32,))
    assert single["loss"] != pytest.approx(result["loss"], rel=1e-4)  # the scales count


def test_multi_scale_skips_a_picture_too_thin_to_scale(folder: Path, tmp_path: Path) -> None:
    """A 60000x1 strip is a 200-byte PNG; at shorter side 48 it would be 48x2,880,000 pixels
    (gigabytes of floats): it is named and skipped like an undecodable file."""
    shutil.copytree(folder, tmp_path / "data")
    Image.new("RGB", (60_000, 1)).save(tmp_path / "data" / "cat" / "strip.png")
    with pytest.warns(UserWarning, match=r"strip.png: image too elongated: 60000x1 would become"):
        result = evaluate_model(_model(), "folder", tmp_path / "data", scales=(32, 48))
    assert result["count"] == 6


def test_multi_scale_refusals(folder: Path) -> None:
    model = _model()
    with pytest.raises(ValueError, match="for image folders; cifar10-sample images are 32x32"):
        evaluate_model(model, "cifar10-sample", ".", scales=PAPER_SCALES)
    with pytest.raises(ValueError, match="choose one of 10-crop testing and multi-scale"):
        evaluate_model(model, "folder", folder, scales=PAPER_SCALES, ten_crop=True)
    with pytest.raises(ValueError, match="shorter sides between 1 and 4096"):
        evaluate_model(model, "folder", folder, scales=(0, 32))
    model.fixed_input_size = 32  # as an ONNX file exported at one size says
    with pytest.raises(ValueError, match="takes only 32x32 inputs"):
        evaluate_model(model, "folder", folder, scales=(32, 48))
    three = create_model("resnet20", num_classes=3)
    with pytest.raises(ValueError, match="class mismatch: the model predicts 3 classes"):
        evaluate_model(three, "folder", folder, scales=(32,))


def test_cli_multi_scale(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    model = _model()
    save_model_dir(
        model,
        tmp_path / "m",
        arch="resnet20",
        classes=["cat", "dog"],
        preprocessing=model.pretrained_cfg,
    )
    seen: list[tuple[int, ...]] = []
    real = evaluator._MultiScaleScorer.__call__

    def spy(self, x):  # noqa: ANN001, ANN202
        seen.append(self.scales)
        return real(self, x)

    monkeypatch.setattr(evaluator._MultiScaleScorer, "__call__", spy)
    argv = ["evaluate", "--model", str(tmp_path / "m"), "--dataset", "folder"]
    argv += ["--data-dir", str(folder)]
    with pytest.warns(UserWarning, match="broken.png"):
        assert main([*argv, "--multi-scale", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scales"] == list(PAPER_SCALES) and out["count"] == 6
    assert seen[-1] == PAPER_SCALES
    with pytest.warns(UserWarning, match="broken.png"):
        assert main([*argv, "--multi-scale", "32,40", "--confusion", f"{tmp_path}/"]) == 0
    text = capsys.readouterr().out
    assert "multi-scale (whole images), shorter side 32/40" in text
    assert (tmp_path / "confusion_folder_test_multiscale.png").is_file()
    assert main([*argv, "--multi-scale", "--image-size", "64"]) == 2
    assert "--image-size does not apply" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--multi-scale", "32,0"])
    assert "--multi-scale: must be at least 1, got 0" in capsys.readouterr().err


def test_scale_augment_trains_a_folder(folder: Path, tmp_path: Path) -> None:
    """The streamed path runs with the paper's augmentation (small crops: the range scales)."""
    from resnetkit.train.trainer import TrainSpec, train

    recipe = Recipe(
        epochs=1, batch_size=2, augment="scale", lighting=0.1, num_threads=1, checkpoint_every_s=1e9
    )
    spec = TrainSpec(
        model="resnet20",
        dataset="folder",
        data_dir=folder,
        out=tmp_path / "run",
        recipe=recipe,
        progress=False,
        image_size=32,
    )
    result = train(spec)
    assert len(result.history) == 1 and "train_loss" in result.history[0]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["streaming"] is True and run["augment"] == "scale"
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["augment"] == "scale" and saved["lighting"] == 0.1
