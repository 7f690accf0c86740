"""Evaluation data from folders and label files, decoded a batch at a time.

A folder's ``split`` is found as :func:`folder_split` says (``DIR/val``, in any case, or
``DIR`` itself), a label file's as its split column says (:func:`eval_samples`); labels are
mapped onto the model's class names (:func:`label_map`). :func:`folder_stream` decodes the
pictures as :func:`~resnetkit.data.folder.load_folder_arrays` would, one batch at a time
(``num_workers`` processes decoding ahead), so that ImageNet's 50,000 validation pictures
need no more memory than a batch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from resnetkit.data.fast import Normalization
from resnetkit.data.folder import (
    ImageFolderDataset,
    find_split,
    format_failures,
    resize_center_crop,
    scan_image_folder,
    split_folders,
)
from resnetkit.data.splits import TRAIN_FOLDERS, VALIDATION_FOLDERS, split_names
from resnetkit.text import first_few


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
            warnings.warn(
                f"{data_dir} has no split column, so split {split!r} does not apply: every row "
                "is used. If the model was trained on this file, most rows are its training "
                "images; give the file a split column with val or test rows",
                UserWarning,
                stacklevel=3,
            )
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
    elif (
        root.is_dir()
        and not split_folders(root)
        and split.lower() in VALIDATION_FOLDERS
        and root.name.lower() not in VALIDATION_FOLDERS
    ):
        # a folder of class folders is a test set as it stands; asked for its validation
        # images, it may well be the training folder that finetune held some out of
        warnings.warn(
            f"{root} has no {split}/ folder, so --split {split} does not apply: every image "
            "in its class folders is scored. If the model was trained on this folder, most "
            f"are its training images; point at a held-out folder ({root / split}/<class>/)",
            UserWarning,
            stacklevel=4,
        )
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


#: What to do about data of other classes, as ``evaluate`` says it (see :func:`label_map`).
EVALUATE_ADVICE = (
    "Evaluate on the dataset the model was trained on, or fine-tune it for this one first."
)


def label_map(
    data_classes: Sequence[str],
    num_classes: int,
    model_classes: list[str],
    where: str,
    *,
    advice: str = EVALUATE_ADVICE,
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """How the data's labels map onto the model's outputs: ``(remap, classes)``, ``remap``
    ``None`` when they are the same. Labels follow the model's class names when the data's
    are the same set in another order, or some of them (a test folder of a few classes: the
    others are scored as never seen, per-class None).

    Args:
        data_classes: the data's class names, by label.
        num_classes: the model's outputs.
        model_classes: the model's class names (empty when it names none).
        where: the data, as an error names it (``"folder data/val"``).
        advice: what an error about a different number of classes tells the user to do,
            in the words (and flags) of the command that reads the data.

    Raises:
        ValueError: the model has no classifier head, or the classes cannot be matched.
    """
    data_classes = tuple(data_classes)
    if num_classes <= 0:
        raise ValueError("the model has no classifier head (num_classes=0); nothing to evaluate")
    if len(model_classes) == num_classes and set(data_classes) < set(model_classes):
        index = {name: i for i, name in enumerate(model_classes)}
        remap = np.array([index[name] for name in data_classes], dtype=np.int64)
        return remap, tuple(model_classes)
    unknown = [name for name in data_classes if name not in model_classes]
    if len(model_classes) == num_classes == len(data_classes) and 0 < len(unknown) < num_classes:
        # Some names are the model's, so the data names classes as the model does: the
        # others are classes it does not know (by index, a dog folder would be scored as the
        # model's ship).
        raise ValueError(
            f"{where} has classes the model does not know: {first_few(unknown, 10)} (the model's: "
            f"{first_few(model_classes, 10)}). If they are some of the model's under other names, "
            f"name them as the model does. {advice}"
        )
    if num_classes != len(data_classes):
        named = f" ({first_few(model_classes, 10)})" if len(model_classes) == num_classes else ""
        raise ValueError(
            f"class mismatch: the model predicts {num_classes} classes{named} but {where} has "
            f"{len(data_classes)} ({first_few(data_classes, 10)}). {advice}"
        )
    if not model_classes or list(data_classes) == model_classes:
        return None, data_classes
    if sorted(data_classes) == sorted(model_classes):
        index = {name: i for i, name in enumerate(model_classes)}
        remap = np.array([index[name] for name in data_classes], dtype=np.int64)
        return remap, tuple(model_classes)
    # all different (ImageNet's wnid folders against a model's readable names): by index
    differ = [f"{d}!={m}" for d, m in zip(data_classes, model_classes, strict=True) if d != m]
    warnings.warn(
        f"class names of the model and of {where} differ ({first_few(differ, 5)}); "
        "labels are compared by index, which is "
        "right only if these are the model's classes in its order under other names (ImageNet's "
        "wnid folders for its readable names, say); if they are other classes, the scores mean "
        f"nothing. {advice}",
        stacklevel=4,
    )
    return None, data_classes


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


class _Decode:
    """A decoded picture as a uint8 (C, H, W) tensor: the shorter side resized to ``side``
    and the centre square kept (as :func:`~resnetkit.data.folder.load_folder_arrays`), or
    whole for ``None``. A class, not a closure, so that worker processes can receive it."""

    def __init__(self, side: int | None, interpolation: str = "bilinear") -> None:
        self.side = side
        self.interpolation = interpolation

    def __call__(self, image: Any) -> Tensor:
        if self.side is not None:
            image = resize_center_crop(image, self.side, self.interpolation)
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


class FolderStream:
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
        #: Multi-label data: labels index label sets, whose targets are this table's rows
        #: (one column per class of the model); None for one class an image.
        self.label_table: Tensor | None = None

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
    load_size: int | None,
    crop: int | None,
    channels: int,
    norm: Normalization | None,
    batch_size: int,
    num_classes: int,
    model_classes: list[str],
    num_workers: int = 0,
    interpolation: str = "bilinear",
    multi_label: bool = False,
    scale_to: int | None = None,
    advice: str = EVALUATE_ADVICE,
) -> FolderStream:
    """The evaluation batches of ``data_dir``'s ``split`` (see :func:`eval_samples`), its
    labels following the model's class names (see :func:`label_map`): each picture's
    shorter side resized to ``load_size`` with the centre square kept (``None``: whole
    pictures, at batch size 1), the centre ``crop``, the model's ``channels``, then ``norm``
    (``None``: uint8 left for the caller). ``scale_to``: with ``load_size`` ``None``, the
    largest shorter side the caller will resize the whole pictures to (multi-scale testing),
    so that a thin picture it would blow up past the pixel limit is skipped and named like an
    undecodable one. ``multi_label``: the model scores each class on its own, and the data
    must be a multi-label label file (see ``FolderStream.label_table``). ``advice``: what an
    error about data of another number of classes says to do (see :func:`label_map`)."""
    from resnetkit.data.multilabel import is_multi_label_file, targets_for_model

    samples, classes, root = eval_samples(data_dir, split)
    table = None
    if multi_label != is_multi_label_file(data_dir):
        raise ValueError(
            f"the model gives each class its own probability (multi-label), and {data_dir} has "
            "one class an image: evaluate it on a label file with a 'labels' column"
            if multi_label
            else f"{data_dir} lists several classes an image (a 'labels' column), and the model "
            "picks one class an image: train or fine-tune a multi-label model on it"
        )
    if multi_label:
        if len(model_classes) != num_classes:
            raise ValueError(
                "the model does not name its classes: multi-label data are matched to it by "
                "class name"
            )
        table = targets_for_model(classes, model_classes, str(root))
        label_keys = classes
        classes = tuple(model_classes)
    else:
        remap, classes = label_map(
            classes, num_classes, model_classes, f"folder {root}", advice=advice
        )
        if remap is not None:
            samples = [(path, int(remap[label])) for path, label in samples]
        label_keys = classes
    dataset = ImageFolderDataset(
        root,
        _Decode(load_size, interpolation),
        samples=samples,
        classes=label_keys,
        shorter_side=load_size if load_size is not None else scale_to,
    )
    prepare = _Prepare(crop, channels, norm)
    stream = FolderStream(dataset, classes, batch_size, num_workers, prepare)
    stream.label_table = table
    return stream
