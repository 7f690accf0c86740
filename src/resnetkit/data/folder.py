"""Image-folder datasets: one sub-folder per class, bad files skipped instead of crashing.

Expected layout::

    root/
        cat/001.jpg
        cat/more/002.png      (nested folders are searched too)
        dog/003.jpeg

Class names are the sorted sub-folder names, and labels are their indices in that order.
Hidden files and folders (names starting with ``.``) are ignored.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from resnetkit.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    image_files,
    left_out,
    load_image,
    verify_image,
)
from resnetkit.data.labels import is_label_file, read_label_file
from resnetkit.data.splits import (  # re-exported: where they were first defined
    SPLIT_FOLDERS,
    TRAIN_FOLDERS,
    VALIDATION_FOLDERS,
    split_names,
)

__all__ = [
    "ImageFolderDataset",
    "collate_skip_bad",
    "format_failures",
    "load_folder_arrays",
    "resize_center_crop",
    "scan_image_folder",
    "split_folders",
    "split_samples",
    "verify_images",
]

Sample = tuple[Path, int]
Failure = tuple[Path, str]


@dataclass(frozen=True)
class Skipped:
    """What :class:`ImageFolderDataset` returns for an undecodable file when ``name_failures``
    is on: the file and why, so that the name survives a trip from a worker process (not a
    tuple, so that it cannot pass for an ``(image, label)`` pair)."""

    path: Path
    reason: str


_LAYOUT_HINT = "expected layout root/<class>/<image>, e.g. root/cat/001.jpg"


def scan_image_folder(root: str | Path) -> tuple[list[Sample], tuple[str, ...]]:
    """List the images of a class-per-folder dataset (or of a label file without a split
    column: every row, see :mod:`resnetkit.data.labels`).

    Classes are the sorted names of the non-hidden sub-folders of ``root``. Each class folder
    is searched recursively for files whose suffix (case-insensitively) is one of
    :data:`~resnetkit.data.images.IMAGE_EXTENSIONS`; hidden files and folders are skipped.
    Samples are ordered by class, then by relative path, so the result is deterministic.

    A class folder without any images keeps its place (and label) in ``classes`` so labels
    always match the folder names, but a ``UserWarning`` names it; if no class has any image
    a ``ValueError`` lists them all.

    Args:
        root: The dataset folder.

    Returns:
        ``(samples, classes)``: ``samples`` is a list of ``(path, label)``, ``classes`` the
        class names indexed by label.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
        NotADirectoryError: If ``root`` is not a folder.
        ValueError: If ``root`` has no class sub-folders, or none of them holds an image.
    """
    root = Path(root).expanduser()
    if is_label_file(root):
        table = read_label_file(root)
        if table.has_splits:  # every row would mix its test rows into training
            raise ValueError(
                f"{root} has a split column ({', '.join(table.split_names())}): read it "
                "with folder_splits (training) or the evaluator's eval_samples (one split), "
                "which keep the splits apart"
            )
        return table.samples(), table.classes
    _check_folder(root)
    classes = _class_folders(root)
    if not classes:
        loose = sum(
            1 for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        extra = ""
        if loose:
            extra = f"; found {loose} image(s) directly in root, move them into class folders"
        raise ValueError(f"no class sub-folders in {root}: {_LAYOUT_HINT}{extra}")

    samples: list[Sample] = []
    empty: list[str] = []
    skipped: Counter[str] = Counter()
    for label, name in enumerate(classes):
        files = image_files(root / name, skipped)
        if not files:
            empty.append(name)
        samples.extend((p, label) for p in files)

    exts = " ".join(IMAGE_EXTENSIONS)
    if not samples:
        raise ValueError(
            f"no images found in any class folder of {root} ({', '.join(classes)}); "
            f"{_LAYOUT_HINT}; recognised extensions: {exts}"
        )
    if empty:
        warnings.warn(
            f"{len(empty)} class folder(s) in {root} contain no images (recognised extensions: "
            f"{exts}): {', '.join(empty)}",
            UserWarning,
            stacklevel=2,
        )
    if skipped:  # a .heic photo is left out by its name: say so, not nothing
        warnings.warn(f"{root}, its class folders: {left_out(skipped)}", UserWarning, stacklevel=2)
    return samples, classes


_ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")


def _check_folder(root: Path) -> None:
    """A dataset ``root`` that is not a folder is refused, saying what it should be."""
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        unpack = "; unpack the archive first" if root.suffix.lower() in _ARCHIVES else ""
        raise NotADirectoryError(
            f"not a folder: {root} ({_LAYOUT_HINT}; or a .csv/.tsv label file, see "
            f"resnetkit.data.labels){unpack}"
        )


def _class_folders(root: Path) -> tuple[str, ...]:
    """The sorted names of ``root``'s class folders: its non-hidden sub-folders, less a link
    to ``root`` itself or a folder above it (``all -> .`` would make a class of every image,
    a warning names it). Two names of one folder (``kitty -> cat``) are refused: each image
    would come in twice, under two labels."""
    real_root = os.path.realpath(root)
    classes: list[str] = []
    above: list[str] = []
    runs: list[str] = []
    by_real: dict[str, str] = {}
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith("."):
            continue
        if _holds_runs(p):
            runs.append(p.name)
            continue
        real = os.path.realpath(p)
        if real_root == real or real_root.startswith(real.rstrip(os.sep) + os.sep):
            above.append(p.name)
            continue
        if real in by_real:
            raise ValueError(
                f"{root}: class folders {by_real[real]!r} and {p.name!r} are the same folder "
                f"({real}), so its images would be given two labels: remove the link"
            )
        by_real[real] = p.name
        classes.append(p.name)
    if above:
        warnings.warn(
            f"{root}: left out {', '.join(above)}, a link to this folder or one above it "
            "(as a class it would hold every image)",
            UserWarning,
            stacklevel=3,
        )
    if runs:  # `finetune --data DIR --out DIR/ft`: the next run learnt a class "ft" of plots
        warnings.warn(
            f"{root}: left out {', '.join(runs)}, training run folder(s) (run.json), not "
            "classes: keep --out outside the data folder",
            UserWarning,
            stacklevel=3,
        )
    return tuple(classes)


def _holds_runs(folder: Path) -> bool:
    """Whether ``folder`` is a training run's folder (``train``/``finetune --out``, which
    writes ``run.json`` first) or holds nothing but such folders (``DIR/runs/ft``)."""
    if (folder / "run.json").is_file():
        return True
    found = False
    with os.scandir(folder) as entries:  # a class folder's first image ends it
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not (entry.is_dir() and os.path.isfile(os.path.join(entry.path, "run.json"))):
                return False
            found = True
    return found


class ImageFolderDataset(Dataset[Any]):
    """A class-per-folder image dataset that skips undecodable files instead of raising.

    ``dataset[i]`` returns ``(image, label)`` where ``image`` is ``transform(rgb_image)``, or
    the RGB ``PIL.Image`` itself when there is no transform. If the file cannot be decoded
    (see :func:`~resnetkit.data.images.load_image`) it returns ``None`` instead and records
    ``(path, reason)`` in :attr:`failures` (once per path; a path that failed before is not
    decoded again). Use :func:`collate_skip_bad` as the DataLoader ``collate_fn`` to drop the
    ``None`` items.

    With ``num_workers > 0`` each worker process has its own copy of the dataset, so
    :attr:`failures` in the main process stays empty; the ``None`` marker is what reaches the
    main process, which can count skipped items as ``len(dataset)`` minus the items it saw.
    Use :func:`verify_images` before training to report bad files by path.

    Attributes:
        samples: ``(path, label)`` pairs.
        classes: Class names indexed by label.
        class_to_idx: Class name to label.
        targets: The labels, in sample order.
        transform: Applied to each decoded RGB image.
        max_pixels: Largest accepted ``width * height``.
        failures: ``(path, reason)`` of each file that failed in this process.
    """

    def __init__(
        self,
        root: str | Path | None,
        transform: Callable[[Image.Image], Any] | None = None,
        samples: Sequence[tuple[str | Path, int]] | None = None,
        classes: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        shorter_side: int | None = None,
    ) -> None:
        """Scan ``root`` or take an explicit sample list.

        Args:
            root: Dataset folder to scan; may be ``None`` when both ``samples`` and
                ``classes`` are given.
            transform: Callable applied to each RGB ``PIL.Image``.
            samples: Explicit ``(path, label)`` pairs (e.g. one side of
                :func:`split_samples`); if ``None``, ``root`` is scanned.
            classes: Class names; if ``None``, taken from scanning ``root``.
            max_pixels: Largest accepted ``width * height``; larger images are skipped.
            shorter_side: What ``transform`` resizes the shorter side to, if it does: passed
                to :func:`~resnetkit.data.images.load_image` as ``draft_size``.

        Raises:
            ValueError: If neither ``root`` nor both ``samples`` and ``classes`` are given,
                or a label is outside ``range(len(classes))``.
        """
        if samples is None or classes is None:
            if root is None:
                raise ValueError("give root, or both samples and classes")
            scanned, scanned_classes = scan_image_folder(root)
            samples = scanned if samples is None else samples
            classes = scanned_classes if classes is None else classes
        self.root = Path(root) if root is not None else None
        self.samples: list[Sample] = [(Path(p), int(label)) for p, label in samples]
        self.classes: tuple[str, ...] = tuple(classes)
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.targets: list[int] = [label for _, label in self.samples]
        bad = [t for t in self.targets if not 0 <= t < len(self.classes)]
        if bad:
            raise ValueError(f"label {bad[0]} outside 0..{len(self.classes) - 1}")
        self.transform = transform
        self.max_pixels = max_pixels
        self.shorter_side = shorter_side
        self.failures: list[Failure] = []
        self._failed: dict[Path, str] = {}
        # Return a Skipped marker instead of None (FolderLoader: names from worker processes).
        self.name_failures = False

    def __len__(self) -> int:
        """Number of samples, including any that will turn out to be undecodable."""
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | Skipped | None:
        """Decode one sample.

        Args:
            index: Sample index.

        Returns:
            ``(transform(image) or image, label)``; for an undecodable file ``None``, or a
            :class:`Skipped` naming it when ``name_failures`` is on.
        """
        path, label = self.samples[index]
        if path in self._failed:
            return Skipped(path, self._failed[path]) if self.name_failures else None
        try:
            image = load_image(path, max_pixels=self.max_pixels, draft_size=self.shorter_side)
        except ImageDecodeError as exc:
            self._failed[path] = exc.reason
            self.failures.append((path, exc.reason))
            return Skipped(path, exc.reason) if self.name_failures else None
        if self.transform is not None:
            return self.transform(image), label
        return image, label


def collate_skip_bad(batch: Sequence[Any]) -> Any:
    """DataLoader ``collate_fn`` that drops undecodable (``None``) items.

    Good items are collated with ``torch.utils.data.default_collate``; when the images are
    ``PIL.Image`` objects (no transform) the result is ``(list_of_images, labels_tensor)``.
    The batch may thus be smaller than ``batch_size``; when every item is bad the result is
    ``None`` and the training loop should skip the step (and count the items as skipped).

    Args:
        batch: Items returned by :class:`ImageFolderDataset`.

    Returns:
        The collated good items, or ``None`` if there are none.
    """
    good = [item for item in batch if item is not None and not isinstance(item, Skipped)]
    if not good:
        return None
    if isinstance(good[0][0], Image.Image):
        images = [item[0] for item in good]
        labels = torch.tensor([int(item[1]) for item in good], dtype=torch.int64)
        return images, labels
    return default_collate(good)


def verify_images(
    samples: Iterable[tuple[str | Path, int]] | Iterable[str | Path],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    full_decode: bool = False,
    size: int | None = None,
) -> list[Failure]:
    """Check every file up front and list the unusable ones.

    The default check is fast (header, size limit and Pillow's ``verify()``); it misses some
    truncated JPEGs, which ``full_decode=True`` catches at the cost of decoding everything.

    Args:
        samples: ``(path, label)`` pairs, or plain paths.
        max_pixels: Largest accepted ``width * height``.
        full_decode: Decode all pixel data (slower; with ``size``, catches every file training
            at that size would skip).
        size: The side the images will be resized to (see :func:`load_image`'s
            ``draft_size``): a thin image that resizing would blow up is refused.

    Returns:
        ``(path, reason)`` for each bad file, in input order; see :func:`format_failures`.
    """
    failures: list[Failure] = []
    for item in samples:
        path = Path(item[0] if isinstance(item, tuple) else item)
        try:
            verify_image(path, max_pixels=max_pixels, full_decode=full_decode, draft_size=size)
        except ImageDecodeError as exc:
            failures.append((path, exc.reason))
    return failures


def format_failures(failures: Sequence[Failure], total: int | None = None, what: str = "") -> str:
    """Render bad files one per line, followed by a count.

    Args:
        failures: ``(path, reason)`` pairs.
        total: Number of files checked, for the summary line.
        what: What the ``total`` files are, e.g. ``"validation images"``.

    Returns:
        A multi-line report, e.g. ``"a.jpg: empty file\\n1 bad image file(s) of 10"``.
    """
    lines = [f"{path}: {reason}" for path, reason in failures]
    summary = f"{len(failures)} bad image file(s)"
    if total is not None:
        summary += f" of {total}" + (f" {what}" if what else "")
    lines.append(summary + (" (they will be skipped)" if failures else ""))
    return "\n".join(lines)


def split_samples(
    samples: Sequence[tuple[Path, int]], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into train and validation sets, stratified by class and deterministic.

    Each class is shuffled with its own generator seeded from ``(seed, label)`` after sorting
    its paths, so the result depends only on the set of samples, the fraction and the seed
    (not on input order or on other classes). A class with ``n`` images gives
    ``round(n * val_fraction)`` of them to validation, but at least one when ``n >= 2`` and
    ``val_fraction > 0``, and never all of them (a class with one image stays in training).

    Args:
        samples: ``(path, label)`` pairs.
        val_fraction: Fraction for validation, in ``[0, 1)``.
        seed: Random seed.

    Returns:
        ``(train, val)``, each in the order the samples were given.

    Raises:
        ValueError: If ``val_fraction`` is outside ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        by_class.setdefault(int(label), []).append(i)
    val_idx: set[int] = set()
    for label, indices in by_class.items():
        n = len(indices)
        if val_fraction == 0.0 or n < 2:
            continue
        n_val = min(max(1, math.floor(n * val_fraction + 0.5)), n - 1)
        ordered = sorted(indices, key=lambda i: Path(samples[i][0]).as_posix())
        random.Random(f"{seed}:{label}").shuffle(ordered)
        val_idx.update(ordered[:n_val])
    train = [(Path(p), int(t)) for i, (p, t) in enumerate(samples) if i not in val_idx]
    val = [(Path(p), int(t)) for i, (p, t) in enumerate(samples) if i in val_idx]
    return train, val


def _split_dirs(root: Path) -> dict[str, Path]:
    """Sub-folders of ``root`` named like a split (any case) that hold class folders, by
    lower-case name: a class folder called "train" holds images, not folders."""
    return {
        p.name.lower(): p
        for p in sorted(root.iterdir())
        if p.is_dir()
        and p.name.lower() in SPLIT_FOLDERS
        and any(child.is_dir() for child in p.iterdir())
    }


def split_folders(root: str | Path) -> list[str]:
    """The split folders (``train/``, ``val/``, ``test/``...) of ``root`` when each holds class
    folders; [] when ``root`` is a folder of classes (one may be called "test")."""
    root = Path(root)
    splits = sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_FOLDERS
    )
    if splits and len(_split_dirs(root)) == len(splits):
        return splits
    return []


def find_split(root: str | Path, split: str) -> Path | None:
    """``root/split`` if it is a folder, else the split folder of ``root`` with that name in
    another case or another of its names (``Val/`` or ``validation/`` for ``val``); None when
    there is none."""
    root = Path(root)
    if (root / split).is_dir():
        return root / split
    if not root.is_dir():
        return None
    dirs = _split_dirs(root)
    return next((dirs[name] for name in split_names(split) if name in dirs), None)


def folder_splits(
    root: str | Path, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    """The training and validation samples of an image folder (or a label file: its
    ``train`` rows and ``val`` rows when it has a split column, see
    :mod:`resnetkit.data.labels`).

    A folder with a ``train/`` (or ``training/``, in any case) sub-folder of class folders
    trains on it and validates on its sibling ``val/`` (or ``valid/``, ``validation/``), which
    must have the same class folders; without one, ``val_fraction`` of each training class is
    held out with :func:`split_samples`. A ``test/`` (``testing/``) sibling is never read
    (keep it for ``resnetkit evaluate``). Any other folder is one set of class folders, split
    the same way.

    Args:
        root: The dataset folder.
        val_fraction: Fraction held out when there is no validation folder.
        seed: Seed of that hold-out.

    Returns:
        ``(train, val, classes)``.

    Raises:
        ValueError: If the validation folder and the training folder have different class
            folders, or if ``root`` has split folders (``test/``, ``val/``...) but no
            ``train/``.
    """
    root = Path(root).expanduser()
    if is_label_file(root):
        return _label_file_splits(root, val_fraction, seed)
    _check_folder(root)
    dirs = _split_dirs(root)
    train_dir = next((dirs[name] for name in TRAIN_FOLDERS if name in dirs), None)
    if train_dir is not None:
        train, classes = scan_image_folder(train_dir)
        val_dir = next((dirs[name] for name in VALIDATION_FOLDERS if name in dirs), None)
        if val_dir is not None:
            val, val_classes = scan_image_folder(val_dir)
            if val_classes != classes:
                raise ValueError(
                    f"{val_dir}: class folders {list(val_classes)} differ from "
                    f"{train_dir}: {list(classes)}; give both the same class folders"
                )
            return train, val, classes
        train, val = split_samples(train, val_fraction, seed)
        return train, val, classes
    splits = split_folders(root)
    if splits:
        # test/cat/..., val/cat/...: these are splits, and reading them as classes would train
        # a "test against val" classifier without a word.
        raise ValueError(
            f"{root} holds split folders {splits} but no train/: put the training images in "
            f"{root / 'train'}/<class>/ (with an optional val/), or point at one split folder"
        )
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(folders) > 1 and all(name.lower() in SPLIT_FOLDERS for name in folders):
        # train/*.jpg + val/*.jpg: splits without class folders, not classes "train" and "val"
        raise ValueError(
            f"{root}: {folders} look like split folders but hold images, not class folders: "
            f"put each class's images in its own folder, {root / folders[0]}/<class>/"
        )
    samples, classes = scan_image_folder(root)
    train, val = split_samples(samples, val_fraction, seed)
    return train, val, classes


#: Pillow's filter for each interpolation name a model's preprocessing may give.
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize_center_crop(
    image: Image.Image, size: int, interpolation: str = "bilinear"
) -> Image.Image:
    """Resize so the shorter side is ``size`` (antialiased), then center-crop.

    Pillow's resize filters are antialiased (the kernel widens when downscaling), matching
    ``torchvision.transforms.Resize(size, antialias=True)`` + ``CenterCrop(size)``.

    Args:
        image: An image.
        size: Output side length.
        interpolation: ``bilinear`` (default), ``bicubic``, ``nearest``, ... (the model's).

    Returns:
        A ``size`` x ``size`` image.

    Raises:
        ValueError: an unknown interpolation.
    """
    if interpolation not in RESAMPLING:
        raise ValueError(f"interpolation {interpolation!r}; choose one of {list(RESAMPLING)}")
    width, height = image.size
    # torchvision's arithmetic (so predict's inputs, timm's and transformers' too): the long
    # side truncated, not rounded; 80x112 to 32 is 32x44, where rounding gave 32x45 and every
    # pixel of the crop a little off
    short, long = min(width, height), max(width, height)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), RESAMPLING[interpolation])
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def load_folder_arrays(
    root: str | Path | None,
    size: int,
    *,
    samples: Sequence[tuple[str | Path, int]] | None = None,
    classes: Sequence[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[Failure]]:
    """Decode every good image once into memory, for fast training on small datasets.

    Each image goes through :func:`~resnetkit.data.images.load_image` (JPEGs may be decoded
    at reduced scale by the decoder when they are much larger than ``size``), then
    :func:`resize_center_crop`. Undecodable files are skipped and reported.

    Args:
        root: Dataset folder to scan (may be ``None`` if ``samples`` and ``classes`` given).
        size: Output side length.
        samples: Explicit ``(path, label)`` pairs instead of scanning ``root``.
        classes: Class names; taken from scanning ``root`` if ``None``.
        max_pixels: Largest accepted ``width * height``.

    Returns:
        ``(images, labels, classes, failures)``: ``images`` is ``uint8`` of shape
        ``(N, size, size, 3)``, ``labels`` is ``int64`` of shape ``(N,)`` (N = good images,
        in sample order), ``failures`` lists ``(path, reason)`` of the skipped files.

    Raises:
        ValueError: If ``size < 1`` or neither ``root`` nor ``samples`` and ``classes``
            are given.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if samples is None or classes is None:
        if root is None:
            raise ValueError("give root, or both samples and classes")
        scanned, scanned_classes = scan_image_folder(root)
        samples = scanned if samples is None else samples
        classes = scanned_classes if classes is None else classes
    images = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    labels = np.empty((len(samples),), dtype=np.int64)
    failures: list[Failure] = []
    count = 0
    for raw_path, label in samples:
        path = Path(raw_path)
        try:
            image = load_image(path, max_pixels=max_pixels, draft_size=size)
        except ImageDecodeError as exc:
            failures.append((path, exc.reason))
            continue
        images[count] = np.asarray(resize_center_crop(image, size))
        labels[count] = label
        count += 1
    if count < len(samples):
        images = images[:count].copy()
        labels = labels[:count].copy()
    lost = sorted({label for _, label in samples} - set(labels.tolist()))
    if lost:  # a class the model would have an output for and never see an image of
        names = ", ".join(str(classes[i]) for i in lost)
        warnings.warn(
            f"{root if root is not None else 'the images given'}: no file of class(es) {names} "
            "could be decoded (each is listed with its reason): nothing is left of them to "
            "train on or to score",
            UserWarning,
            stacklevel=2,
        )
    return images, labels, tuple(classes), failures


def _label_file_splits(
    path: Path, val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    table = read_label_file(path)

    # Multi-label: a label is a label set, mostly of one or two images (17 classes make
    # thousands of sets), so stratifying by it would hold out anything from none to half:
    # by class instead, rare classes first.
    def split(
        samples: Sequence[tuple[Path, int]], fraction: float, seed: int
    ) -> tuple[list[Sample], list[Sample]]:
        if table.multi_label:
            return _split_images(samples, table.classes, fraction, seed)
        return split_samples(samples, fraction, seed)

    if not table.has_splits:
        train, val = split(table.samples(), val_fraction, seed)
        return train, val, table.classes
    train = table.samples(TRAIN_FOLDERS)
    if not train:
        raise ValueError(
            f"{path}: no row has split train (splits found: {table.split_names()}); mark the "
            "training rows train, or drop the split column"
        )
    val = table.samples(VALIDATION_FOLDERS)
    if not val:
        train, val = split(train, val_fraction, seed)
    return train, val, table.classes


def _split_images(
    samples: Sequence[tuple[Path, int]], keys: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """The hold-out of multi-label samples (labels index the label sets ``keys``): about
    ``val_fraction`` of the images and of each class's positives
    (:func:`~resnetkit.data.multilabel.stratified_hold_out`), drawn by ``seed`` after sorting
    the paths, whatever their order."""
    from resnetkit.data.labels import SET_SEPARATOR
    from resnetkit.data.multilabel import stratified_hold_out

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(range(len(samples)), key=lambda i: (Path(samples[i][0]).as_posix(), i))
    names = [key.split(SET_SEPARATOR) if key else [] for key in keys]
    index = {name: c for c, name in enumerate(sorted({n for ns in names for n in ns}))}
    sets = [[index[name] for name in names[int(samples[i][1])]] for i in ordered]
    held = {ordered[j] for j in stratified_hold_out(sets, val_fraction, seed)}
    train = [(Path(p), int(t)) for i, (p, t) in enumerate(samples) if i not in held]
    val = [(Path(p), int(t)) for i, (p, t) in enumerate(samples) if i in held]
    return train, val
