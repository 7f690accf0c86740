"""Tests for augmentation (per-image and batch) and the streaming folder loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from resnetkit.data import transforms as T
from resnetkit.data.streaming import FolderLoader, folder_loader
from resnetkit.data.transforms import (
    MixCut,
    batch_random_erasing,
    batch_trivial_augment,
    build_eval_transform,
    build_train_transform,
    from_recipe,
    soft_cross_entropy,
)
from resnetkit.train.recipe import Recipe

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # normalisation that leaves [0, 1] values as is


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)
    return Image.fromarray(pixels.numpy())


def _as_float(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255.0


# --- per-image transforms ---------------------------------------------------------------------


@pytest.mark.parametrize("augment", ["crop_flip", "imagenet", "none"])
@pytest.mark.parametrize("extras", [False, True])
def test_train_transform_shape_and_dtype(augment: str, extras: bool) -> None:
    transform = build_train_transform(
        32, MEAN, STD, augment=augment, trivial_augment=extras, random_erasing=0.5 * extras
    )
    for image in (_image(32, 32), _image(45, 60)):
        x = transform(image)
        assert x.shape == (3, 32, 32)
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()


def test_train_transform_rejects_unknown_augment() -> None:
    with pytest.raises(ValueError, match="augment"):
        build_train_transform(32, MEAN, STD, augment="autoaugment")


def test_crop_flip_shifts_content_within_the_padding() -> None:
    image = _image(32, 32)
    plain = _as_float(image)
    padded = F.pad(plain, (4, 4, 4, 4))
    windows = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    windows += [w.flip(-1) for w in windows]
    transform = build_train_transform(32, *IDENTITY, augment="crop_flip", crop_padding=4)
    torch.manual_seed(1)
    outputs = [transform(image) for _ in range(12)]
    assert any(not torch.equal(out, plain) for out in outputs)
    for out in outputs:  # every output is one of the padded, possibly flipped, windows
        assert any(torch.allclose(out, w) for w in windows)


def test_eval_transform_is_deterministic_and_center_crops() -> None:
    transform = build_eval_transform(32, *IDENTITY)
    image = _image(32, 32)
    torch.testing.assert_close(transform(image), _as_float(image))  # small images: used whole
    big = build_eval_transform(128, MEAN, STD)  # 0.875 crop: resize to 146, crop 128
    wide = _image(150, 200)
    first, second = big(wide), big(wide)
    assert first.shape == (3, 128, 128) and first.dtype == torch.float32
    assert torch.equal(first, second)


def test_from_recipe_reads_the_augmentation_fields() -> None:
    recipe = Recipe(augment="imagenet", trivial_augment=True, random_erasing=0.25)
    kinds = [type(t) for t in from_recipe(recipe, 32, MEAN, STD).transforms]
    assert v2.RandomResizedCrop in kinds and v2.TrivialAugmentWide in kinds
    assert v2.RandomErasing in kinds


# --- batch transforms -------------------------------------------------------------------------


def _batch(n: int = 16, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_batch_trivial_augment_shape_dtype_and_reproducible() -> None:
    images = _batch(32)
    out = batch_trivial_augment(images, torch.Generator().manual_seed(3))
    again = batch_trivial_augment(images, torch.Generator().manual_seed(3))
    other = batch_trivial_augment(images, torch.Generator().manual_seed(4))
    assert out.shape == images.shape and out.dtype == torch.uint8
    changed = (out != images).flatten(1).any(1)
    assert 0 < int(changed.sum()) < len(images)  # identity (and zero magnitudes) leave some
    assert torch.equal(out, again)
    assert not torch.equal(out, other)
    assert torch.equal(images, _batch(32))  # input untouched


@pytest.mark.parametrize("name", [n for n in T.TA_OP_NAMES if n != "Identity"])
def test_batch_trivial_augment_ops_match_torchvision(name: str) -> None:
    images = _batch(4, 12)
    reference = v2.TrivialAugmentWide()
    table, signed = T._TA_OPS[name]
    k = T.TA_OP_NAMES.index(name)
    for b in (1, 10, 20, 30):  # bin 20 of Rotate is 90 degrees (torchvision's rot90 path)
        for sign in (1.0, -1.0) if signed else (1.0,):
            m = sign * float(table[b].float())
            expected = reference._apply_image_or_video_transform(
                images, name, m, interpolation=reference.interpolation, fill=reference._fill
            )
            mags = torch.full((4,), m, dtype=torch.float64)
            if name in T._GEOMETRIC_NAMES:
                got = T._affine_batch(images, torch.full((4,), k), mags)
            else:
                got = T._colour_op(name, images, mags.float().view(-1, 1, 1, 1))
            diff = (got.int() - expected.int()).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.02, (name, m)


def test_batch_random_erasing_erases_about_p_of_images() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, 16, 16, generator=g)
    out = batch_random_erasing(x, 0.5, torch.Generator().manual_seed(1))
    erased = (out != x).flatten(1).any(1)
    assert 0.4 < erased.float().mean() < 0.6
    assert (out[out != x] == 0).all()
    area = (out == 0).flatten(1).float().mean(1)[erased]
    assert area.min() >= 0.01 and area.max() <= 0.45  # 0.02-0.33, plus rounding to pixels
    assert torch.equal(out, batch_random_erasing(x, 0.5, torch.Generator().manual_seed(1)))
    assert torch.equal(batch_random_erasing(x, 0.0, g), x)


# --- MixUp / CutMix ---------------------------------------------------------------------------


def _mix_inputs(b: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(b)


def test_mixup_is_convex_and_targets_sum_to_one() -> None:
    x, y = _mix_inputs()
    mix = MixCut(mixup_alpha=0.4, cutmix_alpha=0.0, num_classes=8, label_smoothing=0.1)
    params = mix.sample(8, 16, 16, torch.Generator().manual_seed(5))
    assert params is not None and params.box is None and 0 < params.lam < 1
    mixed, targets = mix.apply(x, y, params)
    expected = params.lam * x + (1 - params.lam) * x[params.perm]
    torch.testing.assert_close(mixed, expected)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    assert targets.min() >= 0.1 / 8 - 1e-6  # smoothing mass is kept on every class


def test_cutmix_targets_follow_the_pasted_area() -> None:
    b = 8
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 16, 16).clone()
    mix = MixCut(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=b)
    mixed, targets = mix(x, torch.arange(b), torch.Generator().manual_seed(2))
    own = (mixed[:, 0] == torch.arange(b).view(b, 1, 1)).flatten(1).float().mean(1)
    torch.testing.assert_close(targets[torch.arange(b), torch.arange(b)], own)
    torch.testing.assert_close(targets.sum(1), torch.ones(b))
    assert torch.equal(x[:, :, 0, 0], torch.arange(b, dtype=torch.float32)[:, None].expand(b, 3))


def test_mixcut_is_reproducible_and_uses_both_modes() -> None:
    x, y = _mix_inputs()
    mix = MixCut(mixup_alpha=0.2, cutmix_alpha=1.0, num_classes=8)
    a = mix(x, y, torch.Generator().manual_seed(9))
    b = mix(x, y, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g = torch.Generator().manual_seed(0)
    draws = [mix.sample(8, 16, 16, g) for _ in range(20)]
    assert {d is not None and d.box is None for d in draws} == {True, False}


def test_mixcut_disabled_only_makes_targets() -> None:
    x, y = _mix_inputs()
    mixed, targets = MixCut(0.0, 0.0, num_classes=8)(x, y, torch.Generator())
    assert mixed is x
    assert torch.equal(targets, F.one_hot(y, 8).float())


def test_soft_cross_entropy_matches_cross_entropy() -> None:
    logits = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(y, 5).float()), F.cross_entropy(logits, y)
    )
    smoothed = MixCut(0.0, 0.0, num_classes=5, label_smoothing=0.1).targets(y)
    torch.testing.assert_close(
        soft_cross_entropy(logits, smoothed), F.cross_entropy(logits, y, label_smoothing=0.1)
    )
    # Class weights (class_balance: loss) stay in effect under mixup/cutmix.
    weight = torch.tensor([3.0, 1.0, 1.0, 0.5, 2.0])
    mixed = torch.softmax(torch.randn(6, 5), dim=1)
    torch.testing.assert_close(
        soft_cross_entropy(logits, mixed, weight), F.cross_entropy(logits, mixed, weight=weight)
    )


# --- streaming folder loader ------------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Two classes, 7 good 20x24 PNGs and one corrupt file."""
    for i in range(7):
        cls = "cat" if i < 4 else "dog"
        (tmp_path / cls).mkdir(exist_ok=True)
        _image(20, 24, seed=i).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return tmp_path


def test_folder_loader_skips_and_counts_bad_images(folder: Path) -> None:
    transform = build_eval_transform(16, MEAN, STD)
    loader = folder_loader(folder, None, transform, 3, train=False)
    assert loader.num_samples == 8 and len(loader) == 3
    seen = 0
    for x, y in loader:
        assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32
        assert len(x) == len(y)
        seen += len(y)
    assert seen == 7
    assert loader.skipped == 1
    assert len(loader.failures) == 1


def _batches(loader: FolderLoader, start: int = 0) -> list[list[float]]:
    """Each batch as the list of its images' pixel sums (identifies the images)."""
    return [x.flatten(1).sum(1).tolist() for x, _ in loader.iterate(start)]


def test_folder_loader_shuffles_per_epoch_and_resumes(folder: Path) -> None:
    transform = build_eval_transform(16, *IDENTITY)
    loader = folder_loader(folder, None, transform, 2, train=True, seed=3)
    first = _batches(loader)
    assert len(first) == len(loader) == 4  # each batch of 2 holds at least one good image
    assert _batches(loader) == first  # the same epoch shuffles the same way
    assert _batches(loader, start=1) == first[1:]  # resuming skips whole batches
    loader.set_epoch(1)
    assert _batches(loader) != first


def test_random_crops_do_not_depend_on_which_process_decodes(folder: Path) -> None:
    """Each image's crop and flip follow from its place in the epoch: the same with worker
    processes as without, and the same after a resume (which hands the remaining batches to
    the workers in another order: resumed runs with --num-workers used to diverge)."""
    transform = build_train_transform(12, *IDENTITY, augment="imagenet")
    main = _batches(folder_loader(folder, None, transform, 2, train=True, seed=5))
    workers = folder_loader(folder, None, transform, 2, train=True, seed=5, num_workers=2)
    assert _batches(workers) == main
    assert _batches(workers, start=1) == main[1:]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    _batches(folder_loader(folder, None, transform, 2, train=True, seed=5))
    assert torch.equal(torch.rand(1), before)  # the main process's own stream is left alone


def test_folder_loader_shards_across_ranks(folder: Path) -> None:
    transform = build_eval_transform(16, *IDENTITY)
    loaders = [
        folder_loader(folder, None, transform, 2, train=True, rank=r, world_size=2)
        for r in range(2)
    ]
    assert loaders[0].num_samples == loaders[1].num_samples == 4
    shards = [{v for batch in _batches(ld) for v in batch} for ld in loaders]
    assert not shards[0] & shards[1]
    assert len(shards[0]) + len(shards[1]) + sum(ld.skipped for ld in loaders) == 8


def test_folder_loader_checks_classes(folder: Path) -> None:
    with pytest.raises(ValueError, match="do not match"):
        folder_loader(folder, ["dog", "cat"], None, 2, train=False)
    with pytest.raises(ValueError, match="class names"):
        folder_loader([(folder / "cat" / "0.png", 0)], None, None, 2, train=False)
