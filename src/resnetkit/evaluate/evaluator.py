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
from torchvision.transforms.v2 import functional as TF

from resnetkit.data.cifar import ArrayDataset, load_cifar
from resnetkit.data.datasets import DATASETS, load_sample
from resnetkit.data.fast import Normalization, TensorLoader, to_nchw_tensor
from resnetkit.data.folder import (
    format_failures,
    load_folder_arrays,
)
from resnetkit.data.multilabel import check_threshold, evaluate_multi_label, model_threshold
from resnetkit.data.transforms import default_resize
from resnetkit.devices import resolve_device
from resnetkit.evaluate import PAPER_SCALES
from resnetkit.evaluate.folders import (
    FolderStream,
    eval_samples,
    folder_stream,
    label_map,
    to_model_channels,
)
from resnetkit.evaluate.metrics import evaluate_batches
from resnetkit.models.loading import load_classifier, preprocessing_of
from resnetkit.predict import channel_stats_for, check_counts, unsure_below

CIFAR_SIZE = 32
CIFAR_TEN_CROP_PAD = 4
#: Folder 10-crop: resize to this multiple of the crop size first (256 / 224, as for ImageNet).
FOLDER_TEN_CROP_SCALE = 256 / 224


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
        scales: shorter sides the image is resized to (antialiased, as ``Resize``).
        mean: per-channel mean, in [0, 1] units.
        std: per-channel std, in [0, 1] units.
        interpolation: the model's resize interpolation (``bilinear``, ``bicubic``...).
    """

    model: Callable[[Tensor], Tensor]
    scales: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __call__(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        mode = TF.InterpolationMode(self.interpolation)
        probs = []
        for side in self.scales:
            # the shorter side to `side`, with the model's interpolation (antialiased)
            resized = TF.resize(x, [side], interpolation=mode, antialias=True)
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
    return decode_samples(samples, classes, root, size, subset=subset, seed=seed)


def decode_samples(
    samples: list[tuple[Path, int]],
    classes: tuple[str, ...],
    root: Path,
    size: int,
    *,
    subset: int = 0,
    seed: int = 0,
    advice: str = "",
) -> ArrayDataset:
    """A folder's ``samples`` (found in ``root``) as uint8 arrays of ``size`` pixels: a fixed
    random draw of ``subset`` of them (0: all), only those decoded. Unreadable files are named
    in a warning and skipped.

    Raises:
        ValueError: none of them could be read (naming ``root``, then ``advice``).
    """
    if subset:
        samples = [samples[i] for i in _draw(len(samples), subset, seed)]
    images, labels, classes, failures = load_folder_arrays(
        None, size, samples=samples, classes=classes
    )
    if failures:
        warnings.warn(format_failures(failures, len(samples)), stacklevel=3)
    if not len(labels):
        raise ValueError(
            f"no readable images in {root} ({len(samples)} tried, named above){advice}"
        )
    return ArrayDataset(images, labels, classes)


def eval_data_name(dataset: str, split: str, data_dir: str | Path) -> str:
    """The evaluation data as an error names it: ``the bundled cifar10-sample (test)``,
    ``cifar10 test in DIR``."""
    if dataset == "cifar10-sample":
        return f"the bundled cifar10-sample ({split})"
    return f"{dataset} {split} in {data_dir}"


def _draw(total: int, count: int, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random draw of ``count`` of ``total`` items."""
    return np.sort(np.random.default_rng(seed).permutation(total)[: min(count, total)])


def _match_classes(
    data: ArrayDataset, num_classes: int, model_classes: list[str], where: str
) -> ArrayDataset:
    """Check the model's head fits the data; labels follow the model's class names (see
    :func:`_label_map`)."""
    remap, classes = label_map(data.classes, num_classes, model_classes, where)
    if remap is None:
        return data
    return ArrayDataset(data.images, remap[data.labels], classes)


def folder_resize(cfg: dict[str, Any], size: int) -> int:
    """The side a folder's images are resized to before the centre ``size`` crop, as the
    model's preprocessing says: its ``resize`` at its own size, else size/0.875 from 128 pixels
    up (as for ImageNet) and ``size`` itself below."""
    usual = default_resize(size)
    own_size = size == int(cfg["input_size"])
    return int(cfg.get("resize") or usual) if own_size else usual


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
    model: nn.Module | str | Path,
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
    threshold: float | None = None,
    curves: bool = False,
    min_confidence: float | None = None,
) -> dict[str, Any]:
    """Measure a classifier on an evaluation split.

    Args:
        model: a classifier with ``num_classes`` (and ideally ``pretrained_cfg``, see
            :func:`~resnetkit.models.loading.preprocessing_of`), e.g. from ``load_model``;
            or what ``load_model`` takes (a weights tag, a model directory, an exported
            ``.onnx`` file), loaded here.
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
        threshold: a multi-label model's probability from which a class counts as predicted
            (default: its own); its results are those of
            :class:`~resnetkit.data.multilabel.MultiLabelMeter` (``map``, ``micro_f1``...).
        curves: a multi-label model's results also hold its precision-recall curves
            (``pr_curves``, for :func:`~resnetkit.evaluate.plots.plot_pr_curves`).
        min_confidence: also measure selective classification at this top-class
            probability (``selective``: coverage, accuracy of the answers; see
            :meth:`~resnetkit.evaluate.metrics.ConfusionMeter.selective`); default the
            model's own (``task.min_confidence``), 0 for none.

    Returns:
        ``top1``, ``top5`` (percent), ``loss`` (mean cross-entropy), ``count``, ``per_class``
        (class -> percent), ``confusion`` (rows: true class, columns: predicted), ``classes``,
        plus ``dataset``, ``split``, ``ten_crop``, ``scales`` (``None`` without multi-scale
        testing) and ``input_size``.

    Raises:
        ValueError: unknown dataset, the model's class count differs from the data's, or
            ``scales`` asked for with CIFAR or together with ``ten_crop``.
    """
    if isinstance(model, str | Path):  # as predict takes it
        model = load_classifier(model)
    check_counts(batch_size=batch_size)
    device = resolve_device(device)  # before the data is read
    own = model_threshold(model)
    own_size = preprocessing_of(model)["input_size"]
    views = (
        "10-crop testing" if ten_crop
        else "multi-scale testing" if scales is not None
        else f"{image_size}-pixel inputs" if image_size not in (None, own_size)
        else None
    )  # fmt: skip
    floor = unsure_below(model, min_confidence, multi_label=own is not None, other_views=views)
    if threshold is not None and own is None:
        raise ValueError(
            "threshold is for multi-label models (a sigmoid per class); this one picks one "
            "class an image"
        )
    if own is not None:
        return _evaluate_multi_label(
            model,
            dataset,
            data_dir,
            check_threshold(threshold) if threshold is not None else own,
            split=split,
            batch_size=batch_size,
            ten_crop=ten_crop,
            image_size=image_size,
            device=device,
            progress=progress,
            scales=scales,
            num_workers=num_workers,
            curves=curves,
        )
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
        meter = evaluate_batches(
            scorer, loader, len(classes), device=device, progress=progress, min_confidence=floor
        )
    return {
        **meter.summary(classes),
        "classes": list(classes),
        "dataset": dataset,
        "split": split,
        "ten_crop": ten_crop,
        "scales": list(scales) if scales is not None else None,
        "input_size": size,
    }


def _evaluate_multi_label(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    threshold: float | list[float],
    *,
    split: str,
    batch_size: int,
    ten_crop: bool,
    image_size: int | None,
    device: torch.device,
    progress: bool,
    scales: Sequence[int] | None,
    num_workers: int,
    curves: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_model` of a multi-label model: mAP and the rest of
    :class:`~resnetkit.data.multilabel.MultiLabelMeter`'s summary, on a multi-label label
    file (single crop)."""
    if ten_crop or scales is not None:
        raise ValueError(
            "10-crop and multi-scale testing average softmax probabilities: they are for "
            "models that pick one class an image, and this one is multi-label"
        )
    if dataset != "folder":
        raise ValueError(
            f"the model is multi-label (a sigmoid per class) and {dataset} has one class an "
            "image: evaluate it with --dataset folder --data-dir LABELS.csv (a 'labels' column)"
        )
    scorer, loader, classes, size = _prepare(
        model, dataset, data_dir, split, batch_size, False, image_size, False, num_workers
    )
    table = getattr(loader, "label_table", None)
    assert table is not None  # _prepare's folder_stream checked the data
    with _evaluating(model, device):
        meter = evaluate_multi_label(
            scorer, loader, table, device, threshold=threshold, progress=progress
        )
    return {
        **meter.summary(classes, curves=curves),
        "multi_label": True,
        "classes": list(classes),
        "dataset": dataset,
        "split": split,
        "ten_crop": False,
        "scales": None,
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
    from resnetkit.train.recipe import MAX_IMAGE_SIDE

    if not scales or any(int(s) != s or s < 1 or s > MAX_IMAGE_SIDE for s in scales):
        raise ValueError(
            f"scales {list(scales)}: give shorter sides between 1 and {MAX_IMAGE_SIDE}, e.g. "
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
    names, with inputs prepared as :func:`evaluate_model` prepares them (single crop). For a
    multi-label model the labels are its (images, classes) multi-hot targets."""
    device = resolve_device(device)
    scorer, loader, classes, _ = _prepare(
        model, dataset, data_dir, split, batch_size, False, image_size, download, num_workers
    )
    logits, labels = [], []
    with _evaluating(model, device):
        for x, y in loader:
            logits.append(scorer(x.to(device)).float().cpu())
            labels.append(y)
    table = getattr(loader, "label_table", None)  # multi-label: label sets -> targets
    targets = torch.cat(labels)
    return torch.cat(logits), targets if table is None else table[targets], list(classes)


def _prepare_multi_scale(
    model: nn.Module,
    data_dir: str | Path,
    split: str,
    scales: tuple[int, ...],
    num_workers: int = 0,
) -> tuple[_MultiScaleScorer, FolderStream, tuple[str, ...], int]:
    """The scorer and the one-image batches of multi-scale testing, the classes (the model's
    order) and the input size reported (the largest scale)."""
    fixed = getattr(model, "fixed_input_size", None)  # an ONNX file exported at one size
    if fixed is not None:
        raise ValueError(
            f"multi-scale testing feeds whole pictures of several sizes; the model takes only "
            f"{fixed}x{fixed} inputs: evaluate the PyTorch model or checkpoint instead"
        )
    cfg = preprocessing_of(model)
    channels = _model_channels(model)
    interpolation = str(cfg.get("interpolation") or "bilinear")
    stream = folder_stream(
        data_dir,
        split,
        load_size=None,  # whole pictures
        scale_to=max(scales),  # a 4000x2 strip at 640 would take gigabytes: skipped
        crop=None,
        channels=channels,
        norm=None,
        batch_size=1,
        num_classes=int(getattr(model, "num_classes", 0)),
        model_classes=cfg["classes"],
        num_workers=num_workers,
    )
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if cfg.get("pixel_mean") is not None:  # its per-channel average fits any size
        values = torch.tensor(cfg["pixel_mean"], dtype=torch.float32).view(3, -1).mean(1)
        mean, std = tuple(values.tolist()), (1.0, 1.0, 1.0)
    else:
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    mean, std = channel_stats_for(mean, channels), channel_stats_for(std, channels)
    scorer = _MultiScaleScorer(model, scales, mean, std, interpolation)
    return scorer, stream, stream.classes, max(scales)


def _model_channels(model: nn.Module) -> int:
    """The input channels of a model: 3 (RGB) or 1 (grayscale)."""
    channels = int(getattr(getattr(model, "config", None), "in_chans", 3))
    if channels not in (1, 3):
        raise ValueError(f"the model takes {channels} input channels; images give 3 or 1")
    return channels


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
    channels = _model_channels(model)
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
            interpolation=str(cfg.get("interpolation") or "bilinear"),
            multi_label=bool(cfg.get("multi_label")),
        )
        return scorer, stream, stream.classes, size
    data = load_eval_data(dataset, data_dir, split=split, size=data_size, download=download)
    where = eval_data_name(dataset, split, data_dir)
    data = _match_classes(data, num_classes, cfg["classes"], where)
    images = to_model_channels(to_nchw_tensor(data.images), channels)
    if ten_crop:
        pad = CIFAR_TEN_CROP_PAD
        images = F.pad(images, (pad, pad, pad, pad))  # zero pixels, as in training
    loader = TensorLoader(images, torch.from_numpy(data.labels), batch_size, norm, train=False)
    return scorer, loader, data.classes, size
