"""Datasets by name, as in-memory arrays for the fast path."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnetkit.data.cifar import CIFAR_MEAN, CIFAR_STD, ArrayDataset, load_cifar

if TYPE_CHECKING:
    from resnetkit.data.folder import Sample

DATASETS = ("cifar10", "cifar100", "folder", "cifar10-sample")
SAMPLE_FILE = "cifar10_sample.npz"


def load_sample(split: str) -> ArrayDataset:
    """The real CIFAR-10 images bundled with resnetkit: 1000 training images (100 per class,
    from data_batch_1) and 500 test images (50 per class, from test_batch), for the demo and
    for tests that need real pictures offline."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = resources.files("resnetkit.assets").joinpath(SAMPLE_FILE)
    with resources.as_file(path) as file, np.load(file, allow_pickle=False) as data:
        return ArrayDataset(
            data[f"{split}_images"],
            data[f"{split}_labels"].astype(np.int64),
            tuple(str(c) for c in data["classes"]),
        )


@dataclass(frozen=True)
class TrainEvalData:
    """What a training run needs: train, evaluation splits and the normalisation statistics."""

    train: ArrayDataset
    evals: dict[str, ArrayDataset]  # "val" and/or "test"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int


def hold_out(data: ArrayDataset, count: int, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Split off ``count`` random images (fixed by ``seed``) as a validation set."""
    if not 0 < count < len(data.labels):
        raise ValueError(f"cannot hold out {count} of {len(data.labels)} images for validation")
    order = np.random.default_rng(seed).permutation(len(data.labels))
    keep, val = np.sort(order[count:]), np.sort(order[:count])
    return (
        ArrayDataset(data.images[keep], data.labels[keep], data.classes),
        ArrayDataset(data.images[val], data.labels[val], data.classes),
    )


FOLDER_VAL_SPLIT = (
    "val_split holds out CIFAR images; a folder is split by its train/ and val/ sub-folders, "
    "or 10% of it is held out: set val_split to 0 (--val-split 0)"
)


def channel_stats(
    images: np.ndarray, chunk: int = 1 << 22
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images, in [0, 1] units.

    Sums run over ``chunk`` pixels at a time, so memory stays a few tens of MB whatever the
    dataset's size (a float64 copy of all of it is 32 times the images).
    """
    pixels = images.reshape(-1, images.shape[-1])
    total = np.zeros(pixels.shape[1], dtype=np.float64)
    squares = np.zeros(pixels.shape[1], dtype=np.float64)
    for start in range(0, len(pixels), chunk):
        part = pixels[start : start + chunk].astype(np.float64)
        total += part.sum(0)
        squares += np.square(part).sum(0)
    count = max(len(pixels), 1)
    mean = total / count
    var = np.maximum(squares / count - mean**2, 0.0)
    return tuple((mean / 255.0).tolist()), tuple((np.sqrt(var) / 255.0).tolist())


def load_train_eval(
    dataset: str,
    data_dir: str | Path,
    *,
    val_split: int = 0,
    image_size: int = 32,
    val_fraction: float = 0.1,
    download: bool = False,
    train_subset: int = 0,
    eval_subset: int = 0,
    seed: int = 0,
) -> TrainEvalData:
    """Load a dataset by name for training.

    Args:
        dataset: ``cifar10``, ``cifar100`` or ``folder`` (one sub-folder per class).
        data_dir: where the data lies.
        val_split: hold this many training images out as "val" (CIFAR; a folder refuses it).
        image_size: side of the square images of a folder dataset.
        val_fraction: fraction of a folder held out as "val" (stratified), unless the folder has
            ``train/`` and ``val/`` sub-folders (see :func:`~resnetkit.data.folder.folder_splits`).
        download: fetch CIFAR if missing.
        train_subset: keep only this many training images (a fixed random draw).
        eval_subset: keep only this many images of each evaluation split.
        seed: seed of the hold-out and subset draws.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    evals: dict[str, ArrayDataset] = {}
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if dataset == "cifar10-sample":
        train, evals["test"] = load_sample("train"), load_sample("test")
        mean, std, size = CIFAR_MEAN["cifar10"], CIFAR_STD["cifar10"], 32
    elif dataset in ("cifar10", "cifar100"):
        train = load_cifar(data_dir, dataset, "train", download=download)
        evals["test"] = load_cifar(data_dir, dataset, "test", download=download)
        mean, std = CIFAR_MEAN[dataset], CIFAR_STD[dataset]
        size = 32
    else:
        if val_split:  # it would silently replace the folder's own validation set
            raise ValueError(FOLDER_VAL_SPLIT)
        from resnetkit.data.folder import folder_splits

        fit, held, classes = folder_splits(data_dir, val_fraction, seed)
        train = _folder(image_size, fit, classes, "training")
        val = _folder(image_size, held, classes, "validation")
        if len(val.labels):  # none held out (one image a class) or none readable: no "val"
            evals["val"] = val
        mean, std = channel_stats(train.images)
        size = image_size
    if train_subset:
        train = _subset(train, train_subset, seed)
    if val_split:
        train, evals["val"] = hold_out(train, val_split, seed)
    if eval_subset:
        evals = {name: _subset(split, eval_subset, seed) for name, split in evals.items()}
    return TrainEvalData(train, evals, tuple(mean), tuple(std), size)


def subset_order(total: int, count: int, seed: int) -> np.ndarray:
    """The indices (sorted) of a fixed random draw of ``count`` of ``total`` items; all of
    them when ``count`` is 0 or not smaller. Shared by the in-memory and streaming paths."""
    if not count or count >= total:
        return np.arange(total)
    order = np.random.default_rng(seed + 1).permutation(total)[:count]
    order.sort()
    return order


def _subset(data: ArrayDataset, count: int, seed: int) -> ArrayDataset:
    if count >= len(data.labels):
        return data
    order = subset_order(len(data.labels), count, seed)
    return ArrayDataset(data.images[order], data.labels[order], data.classes)


def _folder(size: int, samples: list[Sample], classes: tuple[str, ...], split: str) -> ArrayDataset:
    from resnetkit.data.folder import format_failures, load_folder_arrays

    images, labels, found, failures = load_folder_arrays(
        None, size, samples=samples, classes=classes
    )
    if failures:  # on stderr: stdout carries the command's JSON result
        # "of 18" alone read as the folder's count when the bad file was among those held out
        total = len(labels) + len(failures)
        print(format_failures(failures, total, f"{split} images"), file=sys.stderr)
    return ArrayDataset(images, labels, tuple(found))
