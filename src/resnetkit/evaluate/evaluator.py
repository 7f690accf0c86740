"""Evaluate a trained model on CIFAR or an image folder: accuracy, per class, confusion, 10-crop.

Inputs are prepared exactly as the model's ``pretrained_cfg`` says (mean/std, or the 2015
paper's per-pixel mean), at its input size.

10-crop testing (He et al. 2015, Sec. 3.4 and 4.2, following Krizhevsky et al. 2012) averages
the softmax scores of the four corner crops, the centre crop and their horizontal flips:

* CIFAR (32x32 images): each image is padded by 4 zero pixels on every side (as in training)
  and the ten 32x32 crops are taken from the 40x40 result.
* Image folders: the shorter side is resized to ``input_size * 256 / 224`` (about 1.14x; 256
  for 224) with a centre square crop, and the ten ``input_size`` crops are taken from that.

Multi-scale testing (He et al. 2015, Sec. 3.4, following Simonyan & Zisserman and He et al.
2014) uses the network in its fully-convolutional form: each image of a folder, whole (not
cropped, its own aspect ratio), is resized so that its shorter side is each of the given
scales (the paper's {224, 256, 384, 480, 640}), and the softmax scores are averaged. The
global average pool makes the network take any size. A model that subtracts a per-pixel mean
subtracts that mean's per-channel average instead.

With 10 crops or several scales, ``loss`` is the negative log of the averaged probability of
the true class.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from resnetkit.data.cifar import ArrayDataset, load_cifar
from resnetkit.data.datasets import DATASETS, load_sample
from resnetkit.data.fast import Normalization, TensorLoader, to_nchw_tensor
from resnetkit.data.folder import (
    TRAIN_FOLDERS,
    ImageFolderDataset,
    find_split,
    format_failures,
    load_folder_arrays,
    resize_center_crop,
    scan_image_folder,
    split_folders,
    split_names,
)
from resnetkit.devices import resolve_device
from resnetkit.evaluate.metrics import evaluate_batches
from resnetkit.models.loading import preprocessing_of
from resnetkit.predict import channel_stats_for

CIFAR_SIZE = 32
CIFAR_TEN_CROP_PAD = 4
#: Folder 10-crop: resize to this multiple of the crop size first (256 / 224, as for ImageNet).
FOLDER_TEN_CROP_SCALE = 256 / 224
#: The shorter sides of the paper's multi-scale testing (He et al. 2015, Sec. 3.4).
PAPER_SCALES = (224, 256, 384, 480, 640)


def ten_crop_views(images: Tensor, size: int) -> list[Tensor]:
    """The four corner crops, the centre crop and their horizontal flips, in that order.

    Args:
        images: (B, C, H, W) with H, W >= size.
        size: side of the square crops.

    Returns:
        Ten (B, C, size, size) tensors (torchvision ``TenCrop`` order).
    """
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot take {size}x{size} crops from {h}x{w} images")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    corners = ((0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left))
    crops = [images[..., y : y + size, x : x + size] for y, x in corners]
    return crops + [c.flip(-1) for c in crops]


@dataclass
class _Scorer:
    """Turns a batch from the loader into logits (or log of 10-crop averaged probabilities).

    Attributes:
        model: the network, in eval mode.
        input_size: the side the model expects; batches of another size are resized.
        crop: side of the 10 crops, or ``None`` for single-crop evaluation.
        pixel_mean: (3, crop, crop) mean to subtract after cropping (only with ``crop``).
    """

    model: Callable[[Tensor], Tensor]
    input_size: int
    crop: int | None = None
    pixel_mean: Tensor | None = None

    def _logits(self, x: Tensor) -> Tensor:
        if self.pixel_mean is not None:
            x = x - self.pixel_mean.to(x.device)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            # Bilinear weights sum to 1, so resizing after per-channel normalisation equals
            # normalising after resizing.
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.model(x).float()

    def __call__(self, x: Tensor) -> Tensor:
        if self.crop is None:
            return self._logits(x)
        probs = torch.stack([self._logits(v).softmax(1) for v in ten_crop_views(x, self.crop)])
        return probs.mean(0).clamp_min(1e-12).log()


@dataclass
class _MultiScaleScorer:
    """Log of the softmax averaged over scales, for a batch of one whole uint8 image.

    Attributes:
        model: the network, in eval mode (fully convolutional up to its global pool).
        scales: shorter sides the image is resized to (antialiased bilinear, as ``Resize``).
        mean: per-channel mean, in [0, 1] units.
        std: per-channel std, in [0, 1] units.
    """

    model: Callable[[Tensor], Tensor]
    scales: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        probs = []
        for side in self.scales:
            resized = TF.resize(x, [side], antialias=True)  # the shorter side to `side`
            inputs = resized.float().div_(255.0).sub_(mean).div_(std)
            probs.append(self.model(inputs).float().softmax(1))
        return torch.stack(probs).mean(0).clamp_min(1e-12).log()


def load_eval_data(
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "test",
    size: int = 32,
    download: bool = False,
    subset: int = 0,
    seed: int = 0,
) -> ArrayDataset:
    """Load an evaluation split as uint8 arrays.

    Args:
        dataset: ``cifar10``, ``cifar100``, ``folder`` or ``cifar10-sample`` (bundled).
        data_dir: CIFAR root, or an image folder (one sub-folder per class). For folders,
            ``data_dir/split`` is used when it exists (e.g. ``data/val``), else ``data_dir``.
        split: ``train`` or ``test`` for CIFAR; a sub-folder name for folders.
        size: side of folder images (resized and centre-cropped); CIFAR is always 32.
        download: fetch CIFAR if missing.
        subset: keep only a fixed random draw of this many images (0: all); a folder decodes
            only those.
        seed: seed of that draw.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset != "folder":
        data = (
            load_sample(split)
            if dataset == "cifar10-sample"
            else load_cifar(data_dir, dataset, split, download=download)
        )
        if subset:
            pick = _draw(len(data.labels), subset, seed)
            data = ArrayDataset(data.images[pick], data.labels[pick], data.classes)
        return data
    samples, classes, root = eval_samples(data_dir, split)
    if subset:
        samples = [samples[i] for i in _draw(len(samples), subset, seed)]
    images, labels, classes, failures = load_folder_arrays(
        None, size, samples=samples, classes=classes
    )
    if failures:
        warnings.warn(format_failures(failures, len(labels) + len(failures)), stacklevel=2)
    if not len(labels):
        raise ValueError(f"no readable images in {root}")
    return ArrayDataset(images, labels, classes)


def _draw(total: int, count: int, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random draw of ``count`` of ``total`` items."""
    return np.sort(np.random.default_rng(seed).permutation(total)[: min(count, total)])


def eval_samples(
    data_dir: str | Path, split: str
) -> tuple[list[tuple[Path, int]], tuple[str, ...], Path]:
    """The ``(path, label)`` samples a folder's ``split`` is evaluated on, the class names and
    where they were read (see :func:`folder_split`); for a label file, its rows of that split
    (all rows when it has no split column), with the classes of the whole file."""
    from resnetkit.data.labels import is_label_file, read_label_file

    if is_label_file(data_dir):
        table = read_label_file(data_dir)
        if not table.has_splits:
            return table.samples(), table.classes, Path(data_dir)
        samples = table.samples(split_names(split))
        if not samples:
            raise ValueError(
                f"{data_dir}: no row has split {split!r}; its splits are "
                f"{table.split_names()}: pass --split with one of them"
            )
        return samples, table.classes, Path(data_dir)
    root = folder_split(data_dir, split)
    samples, classes = scan_image_folder(root)
    return samples, classes, root


def folder_split(data_dir: str | Path, split: str) -> Path:
    """The folder of class folders that ``split`` names under ``data_dir`` (``data_dir/val``,
    in any case), or ``data_dir`` itself when it holds no split folders.

    Raises:
        ValueError: ``data_dir`` holds split folders, none of them ``split``.
    """
    root = Path(data_dir)
    found = find_split(root, split)
    if found is not None:
        root = found
    elif root.is_dir() and split_folders(root):
        # train/ and val/ read as two classes would score (or calibrate on) a made-up task
        others = [name for name in split_folders(root) if name.lower() not in TRAIN_FOLDERS]
        choice = " or ".join(others) or "val"
        raise ValueError(
            f"{root} has no {split}/ but holds the split folders {split_folders(root)}: name the "
            f"split to use, {choice} (--split {others[0] if others else 'val'}; for quantize "
            "--eval-split or --calibration-split), or point at one folder of class folders"
        )
    return root


def _match_classes(
    data: ArrayDataset, num_classes: int, model_classes: list[str], where: str
) -> ArrayDataset:
    """Check the model's head fits the data; labels follow the model's class names (see
    :func:`_label_map`)."""
    remap, classes = _label_map(data.classes, num_classes, model_classes, where)
    if remap is None:
        return data
    return ArrayDataset(data.images, remap[data.labels], classes)


def _label_map(
    data_classes: Sequence[str], num_classes: int, model_classes: list[str], where: str
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """How the data's labels map onto the model's outputs: ``(remap, classes)``, ``remap``
    ``None`` when they are the same. Labels follow the model's class names when the data's
    are the same set in another order, or some of them (a test folder of a few classes: the
    others are scored as never seen, per-class None)."""
    data_classes = tuple(data_classes)
    if num_classes <= 0:
        raise ValueError("the model has no classifier head (num_classes=0); nothing to evaluate")
    if len(model_classes) == num_classes and set(data_classes) < set(model_classes):
        index = {name: i for i, name in enumerate(model_classes)}
        remap = np.array([index[name] for name in data_classes], dtype=np.int64)
        return remap, tuple(model_classes)
    if num_classes != len(data_classes):
        raise ValueError(
            f"class mismatch: the model predicts {num_classes} classes but {where} has "
            f"{len(data_classes)} ({', '.join(data_classes[:10])}"
            f"{', ...' if len(data_classes) > 10 else ''}). Evaluate on the dataset the model "
            "was trained on, or fine-tune it for this one first."
        )
    if not model_classes or list(data_classes) == model_classes:
        return None, data_classes
    if sorted(data_classes) == sorted(model_classes):
        index = {name: i for i, name in enumerate(model_classes)}
        remap = np.array([index[name] for name in data_classes], dtype=np.int64)
        return remap, tuple(model_classes)
    differ = [f"{d}!={m}" for d, m in zip(data_classes, model_classes, strict=True) if d != m]
    warnings.warn(
        f"class names of the model and of {where} differ ({', '.join(differ[:5])}); "
        "labels are compared by index",
        stacklevel=4,
    )
    return None, data_classes


def folder_resize(cfg: dict[str, Any], size: int) -> int:
    """The side a folder's images are resized to before the centre ``size`` crop, as the
    model's preprocessing says: its ``resize`` at its own size, else size/0.875 from 128 pixels
    up (as for ImageNet) and ``size`` itself below."""
    default_resize = round(size / 0.875) if size >= 128 else size
    own_size = size == int(cfg["input_size"])
    return int(cfg.get("resize") or default_resize) if own_size else default_resize


def center_crop(images: Tensor, size: int) -> Tensor:
    """The centre ``size`` x ``size`` of (N, C, H, W) images (torchvision's offsets)."""
    top = int(round((images.shape[-2] - size) / 2.0))
    left = int(round((images.shape[-1] - size) / 2.0))
    return images[..., top : top + size, left : left + size].contiguous()


def _luminance(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) RGB -> (N, 1, H, W) luma, with Pillow's ``convert("L")`` arithmetic."""
    r, g, b = (images[:, i].to(torch.int32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def to_model_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 (N, 3, H, W) images as a model with ``channels`` inputs sees them: unchanged for
    3, their luminance for a grayscale model (as ``predict`` feeds it)."""
    return _luminance(images) if channels == 1 else images


def model_normalization(cfg: dict[str, Any], channels: int, size: int) -> Normalization:
    """How a model's preprocessing ``cfg`` normalises ``size`` x ``size`` inputs: its per-pixel
    mean (the 2015 paper's CIFAR models), else its per-channel mean and std, one value each
    for a grayscale model."""
    pixel_mean = _pixel_mean(cfg, size)
    if pixel_mean is not None:
        return Normalization(pixel_mean=pixel_mean)
    return Normalization(
        mean=channel_stats_for(cfg["mean"], channels), std=channel_stats_for(cfg["std"], channels)
    )


def _pixel_mean(cfg: dict[str, Any], size: int) -> Tensor | None:
    values = cfg.get("pixel_mean")
    if values is None:
        return None
    side = math.isqrt(len(values) // 3)
    if 3 * side * side != len(values) or side != size:
        raise ValueError(
            f"the model's pixel_mean has {len(values)} values; expected 3*{size}*{size} = "
            f"{3 * size * size} for {size}x{size} inputs"
        )
    return torch.tensor(values, dtype=torch.float32).view(3, size, size)


def evaluate_model(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 256,
    ten_crop: bool = False,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    progress: bool = False,
    scales: Sequence[int] | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Measure a classifier on an evaluation split.

    Args:
        model: a classifier with ``num_classes`` (and ideally ``pretrained_cfg``, see
            :func:`~resnetkit.models.loading.preprocessing_of`), e.g. from ``load_model``.
        dataset: ``cifar10``, ``cifar100``, ``folder`` or ``cifar10-sample`` (bundled).
        data_dir: where the data lies (see :func:`load_eval_data`).
        split: which split (``test``/``train`` for CIFAR, a sub-folder for folders).
        batch_size: images per forward pass (times 10 with ``ten_crop``, one view at a time).
        ten_crop: the paper's 10-crop testing (see the module docstring).
        image_size: model input side; defaults to the model's ``input_size``. CIFAR images
            are resized to it when it is not 32.
        device: where to run the model (it is moved there, and back afterwards).
        download: fetch CIFAR if missing.
        progress: show a progress bar on stderr.
        scales: multi-scale testing of a folder (see the module docstring): the shorter
            sides, e.g. :data:`PAPER_SCALES`; images are decoded one at a time, whole.
            ``None``: single crop (or 10-crop).
        num_workers: processes decoding a folder's pictures ahead of the model (0: the
            calling process decodes them).

    Returns:
        ``top1``, ``top5`` (percent), ``loss`` (mean cross-entropy), ``count``, ``per_class``
        (class -> percent), ``confusion`` (rows: true class, columns: predicted), ``classes``,
        plus ``dataset``, ``split``, ``ten_crop``, ``scales`` (``None`` without multi-scale
        testing) and ``input_size``.

    Raises:
        ValueError: unknown dataset, the model's class count differs from the data's, or
            ``scales`` asked for with CIFAR or together with ``ten_crop``.
    """
    device = resolve_device(device)  # before the data is read
    scorer: Callable[[Tensor], Tensor]
    loader: Iterable[tuple[Tensor, Tensor]]
    if scales is not None:
        scales = _check_scales(scales, dataset, ten_crop)
        scorer, loader, classes, size = _prepare_multi_scale(
            model, data_dir, split, scales, num_workers
        )
    else:
        scorer, loader, classes, size = _prepare(
            model,
            dataset,
            data_dir,
            split,
            batch_size,
            ten_crop,
            image_size,
            download,
            num_workers,
        )
    with _evaluating(model, device):
        meter = evaluate_batches(scorer, loader, len(classes), device=device, progress=progress)
    return {
        **meter.summary(classes),
        "classes": list(classes),
        "dataset": dataset,
        "split": split,
        "ten_crop": ten_crop,
        "scales": list(scales) if scales is not None else None,
        "input_size": size,
    }


def _check_scales(scales: Sequence[int], dataset: str, ten_crop: bool) -> tuple[int, ...]:
    if dataset != "folder":
        raise ValueError(
            f"multi-scale testing resizes whole pictures to shorter sides of {PAPER_SCALES}: it "
            f"is for image folders; {dataset} images are 32x32 (use --ten-crop, the paper's "
            "CIFAR test is single-crop)"
        )
    if ten_crop:
        raise ValueError(
            "choose one of 10-crop testing and multi-scale testing (the paper reports them "
            "separately: 10-crop in Table 3, multi-scale fully-convolutional in Table 4)"
        )
    if not scales or any(int(s) != s or s < 1 or s > 4096 for s in scales):
        raise ValueError(
            f"scales {list(scales)}: give shorter sides between 1 and 4096, e.g. "
            f"{','.join(map(str, PAPER_SCALES))}"
        )
    return tuple(int(s) for s in scales)


@torch.no_grad()
def collect_logits(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 256,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor, list[str]]:
    """The model's float32 logits on an evaluation split (on the CPU), its labels and class
    names, with inputs prepared as :func:`evaluate_model` prepares them (single crop)."""
    device = resolve_device(device)
    scorer, loader, classes, _ = _prepare(
        model, dataset, data_dir, split, batch_size, False, image_size, download, num_workers
    )
    logits, labels = [], []
    with _evaluating(model, device):
        for x, y in loader:
            logits.append(scorer(x.to(device)).float().cpu())
            labels.append(y)
    return torch.cat(logits), torch.cat(labels), list(classes)


def _prepare_multi_scale(
    model: nn.Module,
    data_dir: str | Path,
    split: str,
    scales: tuple[int, ...],
    num_workers: int = 0,
) -> tuple[_MultiScaleScorer, _FolderStream, tuple[str, ...], int]:
    """The scorer and the one-image batches of multi-scale testing, the classes (the model's
    order) and the input size reported (the largest scale)."""
    cfg = preprocessing_of(model)
    channels = int(getattr(getattr(model, "config", None), "in_chans", 3))
    if channels not in (1, 3):
        raise ValueError(f"the model takes {channels} input channels; images give 3 or 1")
    samples, classes, root = eval_samples(data_dir, split)
    remap, classes = _label_map(
        classes, int(getattr(model, "num_classes", 0)), cfg["classes"], f"folder {root}"
    )
    if remap is not None:
        samples = [(path, int(remap[label])) for path, label in samples]

    dataset = ImageFolderDataset(
        root, _Decode(None), samples=samples, classes=classes, shorter_side=max(scales)
    )
    loader = _FolderStream(dataset, classes, 1, num_workers, _Prepare(None, channels, None))
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if cfg.get("pixel_mean") is not None:  # its per-channel average fits any size
        values = torch.tensor(cfg["pixel_mean"], dtype=torch.float32).view(3, -1).mean(1)
        mean, std = tuple(values.tolist()), (1.0, 1.0, 1.0)
    else:
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    mean, std = channel_stats_for(mean, channels), channel_stats_for(std, channels)
    return _MultiScaleScorer(model, scales, mean, std), loader, classes, max(scales)


@contextlib.contextmanager
def _evaluating(model: nn.Module, device: torch.device) -> Iterator[None]:
    """The model on ``device`` in eval mode, back on its own device and in its own mode
    afterwards (a model evaluated in the middle of training goes on training where it was)."""
    was_training = model.training
    home = next((t.device for t in itertools.chain(model.parameters(), model.buffers())), None)
    model.to(device).eval()
    try:
        yield
    finally:
        model.train(was_training)
        if home is not None and home != device:
            model.to(home)


def _prepare(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    split: str,
    batch_size: int,
    ten_crop: bool,
    image_size: int | None,
    download: bool,
    num_workers: int = 0,
) -> tuple[_Scorer, Iterable[tuple[Tensor, Tensor]], tuple[str, ...], int]:
    """The scorer (model plus its input handling), the batches, the class names and the
    input size of one evaluation: inputs prepared exactly as the model's preprocessing says.
    CIFAR is read into memory; a folder is decoded batch by batch (:class:`_FolderStream`),
    so that ImageNet's 50,000 validation pictures need no more memory than one batch."""
    cfg = preprocessing_of(model)
    channels = int(getattr(getattr(model, "config", None), "in_chans", 3))
    if channels not in (1, 3):
        raise ValueError(f"the model takes {channels} input channels; images give 3 or 1")
    size = int(image_size or cfg["input_size"])
    folder = dataset == "folder"
    data_size = size if folder else CIFAR_SIZE
    norm = model_normalization(cfg, channels, data_size)
    pixel_mean = norm.pixel_mean if ten_crop else None
    if pixel_mean is not None:  # crops are taken after normalising: the mean after cropping
        norm = Normalization()
    scorer = _Scorer(model, size, crop=data_size if ten_crop else None, pixel_mean=pixel_mean)
    num_classes = int(getattr(model, "num_classes", 0))
    if folder:
        resize = folder_resize(cfg, size)
        load_size = resize
        if ten_crop and resize <= size:
            load_size = int(round(size * FOLDER_TEN_CROP_SCALE))
        stream = folder_stream(
            data_dir,
            split,
            load_size=load_size,
            crop=None if ten_crop else size,
            channels=channels,
            norm=norm,
            batch_size=batch_size,
            num_classes=num_classes,
            model_classes=cfg["classes"],
            num_workers=num_workers,
        )
        return scorer, stream, stream.classes, size
    data = load_eval_data(dataset, data_dir, split=split, size=data_size, download=download)
    data = _match_classes(data, num_classes, cfg["classes"], f"{dataset} {split} in {data_dir}")
    images = to_model_channels(to_nchw_tensor(data.images), channels)
    if ten_crop:
        pad = CIFAR_TEN_CROP_PAD
        images = F.pad(images, (pad, pad, pad, pad))  # zero pixels, as in training
    loader = TensorLoader(images, torch.from_numpy(data.labels), batch_size, norm, train=False)
    return scorer, loader, data.classes, size


class _Decode:
    """A decoded picture as a uint8 (C, H, W) tensor: the shorter side resized to ``side``
    and the centre square kept (as :func:`~resnetkit.data.folder.load_folder_arrays`), or
    whole for ``None``. A class, not a closure, so that worker processes can receive it."""

    def __init__(self, side: int | None) -> None:
        self.side = side

    def __call__(self, image: Any) -> Tensor:
        if self.side is not None:
            image = resize_center_crop(image, self.side)
        return TF.pil_to_tensor(image)


class _Prepare:
    """A decoded uint8 batch as the model sees it: the centre ``crop``, the model's input
    channels, then ``norm`` (``None``: left as uint8, for multi-scale testing)."""

    def __init__(self, crop: int | None, channels: int, norm: Normalization | None) -> None:
        self.crop = crop
        self.channels = channels
        self.norm = norm

    def __call__(self, images: Tensor) -> Tensor:
        if self.crop is not None and images.shape[-1] != self.crop:
            images = center_crop(images, self.crop)
        images = to_model_channels(images, self.channels)
        return images if self.norm is None else self.norm.apply(images)


class _FolderStream:
    """Batches of a folder's images, decoded a batch at a time (``num_workers`` processes
    decoding ahead), prepared by ``prepare``. Undecodable files are skipped and, after a
    pass, named in one warning; a pass that decoded nothing raises ``ValueError``."""

    def __init__(
        self,
        dataset: ImageFolderDataset,
        classes: tuple[str, ...],
        batch_size: int,
        num_workers: int,
        prepare: Callable[[Tensor], Tensor],
    ) -> None:
        self.dataset = dataset
        self.classes = classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.prepare = prepare
        dataset.name_failures = True  # names that survive the trip from a worker process

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from resnetkit.data.streaming import collate_counting

        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            collate_fn=collate_counting,
            num_workers=self.num_workers,
        )
        failures: list[tuple[Path, str]] = []
        for batch, skipped in loader:
            failures += skipped
            if batch is not None:
                images, labels = batch
                yield self.prepare(images), labels
        total = len(self.dataset)
        if failures:
            warnings.warn(format_failures(failures, total), stacklevel=2)
        if len(failures) == total:
            raise ValueError(f"no readable images in {self.dataset.root or 'the folder'}")


def folder_stream(
    data_dir: str | Path,
    split: str,
    *,
    load_size: int,
    crop: int | None,
    channels: int,
    norm: Normalization,
    batch_size: int,
    num_classes: int,
    model_classes: list[str],
    num_workers: int = 0,
) -> _FolderStream:
    """The evaluation batches of ``data_dir``'s ``split`` (see :func:`folder_split`), its
    labels following the model's class names (see :func:`_label_map`)."""
    samples, classes, root = eval_samples(data_dir, split)
    remap, classes = _label_map(classes, num_classes, model_classes, f"folder {root}")
    if remap is not None:
        samples = [(path, int(remap[label])) for path, label in samples]
    dataset = ImageFolderDataset(
        root, _Decode(load_size), samples=samples, classes=classes, shorter_side=load_size
    )
    prepare = _Prepare(crop, channels, norm)
    return _FolderStream(dataset, classes, batch_size, num_workers, prepare)
