"""Labels from a CSV (or TSV) file instead of class folders: ``--dataset folder --data-dir
labels.csv``.

The file has a header. One column names the image (``path``, ``file``, ``filename``,
``image``, ``image_path``, ``image_id``, ``id``, ``fname``), one its class (``label``,
``class``, ``class_name``, ``category``, ``target``, ``y``), and an optional one its split
(``split``, ``subset``, ``set``: ``train``/``val``/``test`` and the synonyms image folders
accept, on every row). Cells are separated by commas (tabs in a ``.tsv``; semicolons when
the header has those and no comma, as Excel writes CSV where the decimal mark is a comma).
Paths are relative to the file's folder (or absolute), ``\\`` read as ``/`` when that is
where the file is (a list written on Windows); a name without a suffix (Kaggle's
``image_id``) is looked up with each image suffix. Classes are the
distinct labels, sorted (numerically when every label is an integer), so that ``2`` comes
before ``10``.

A row whose image is missing stays in the list and is reported by path when it is decoded,
like a corrupt file; the file itself must be well-formed: a row without a label, an unknown
split or a missing column is refused with the line number and what to write instead.

Multi-label files (each image has any number of classes, none included) name their column
``labels`` or ``tags`` instead (a header with both a label and a multi-label column is
refused). A cell lists an image's classes separated by ``|``, ``;`` or ``,`` (the first of
these, in that order, found anywhere in the column), else by whitespace (Kaggle's Planet
layout, ``haze primary``); an empty cell is an image with none of the classes. Each
row's set of classes is then one "label set" (:mod:`resnetkit.data.multilabel`): the file's
``classes`` are these sets, written as their class names joined by ``|``, so that datasets,
splits and loaders carry one integer per image either way.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from resnetkit.data.images import IMAGE_EXTENSIONS
from resnetkit.data.splits import SPLIT_FOLDERS
from resnetkit.text import first_few

#: Suffixes read as label files.
LABEL_FILE_SUFFIXES = (".csv", ".tsv")
PATH_COLUMNS = ("path", "file", "filename", "image", "image_path", "image_id", "id", "fname")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target", "y")
MULTI_LABEL_COLUMNS = ("labels", "tags")
#: What joins the class names of a label set (see resnetkit.data.multilabel).
SET_SEPARATOR = "|"
#: Separators of a multi-label cell, in order of preference (else whitespace).
MULTI_LABEL_SEPARATORS = ("|", ";", ",")
SPLIT_COLUMNS = ("split", "subset", "set")

Sample = tuple[Path, int]


def is_label_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file named like a label file."""
    path = Path(path)
    return path.suffix.lower() in LABEL_FILE_SUFFIXES and path.is_file()


@dataclass(frozen=True)
class LabelFile:
    """The rows of a label file.

    Attributes:
        path: the file.
        rows: ``(image path, class name, split or None)``, in file order.
        classes: class names, indexed by label; for a multi-label file, its label sets
            (see the module docstring).
        has_splits: whether the file has a split column.
        multi_label: whether the file lists several classes per image.
    """

    path: Path
    rows: tuple[tuple[Path, str, str | None], ...]
    classes: tuple[str, ...]
    has_splits: bool
    multi_label: bool = False

    def samples(self, splits: tuple[str, ...] | None = None) -> list[Sample]:
        """``(path, label)`` of every row, or of the rows whose split is one of ``splits``
        (lower case)."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [
            (image, index[label])
            for image, label, split in self.rows
            if splits is None or (split is not None and split in splits)
        ]

    def split_names(self) -> list[str]:
        return sorted({split for _, _, split in self.rows if split is not None})


def read_label_file(path: str | Path) -> LabelFile:
    """Read and check a label file (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: no header, no image or label column (or both a label and a multi-label
            one), an empty image cell or (one class an image) label cell, a row short of
            cells, an unknown split, or no rows.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from Excel is not a column name
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); save it as UTF-8 CSV") from None
    first = text.split("\n", 1)[0]
    if delimiter == "," and "," not in first and ";" in first:
        delimiter = ";"  # Excel's CSV where the decimal mark is a comma: path;label
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise ValueError(f"{path} is empty: it needs a header line, e.g. 'path,label'")
    names = [h.strip().lower() for h in header]
    path_col = next((names.index(c) for c in PATH_COLUMNS if c in names), None)
    label_col = next((names.index(c) for c in LABEL_COLUMNS if c in names), None)
    multi_col = next((names.index(c) for c in MULTI_LABEL_COLUMNS if c in names), None)
    if label_col is not None and multi_col is not None:
        raise ValueError(
            f"{path}: the header {header} has both a label column ({header[label_col]}) and "
            f"a multi-label one ({header[multi_col]}); keep one"
        )
    multi_label = multi_col is not None
    if multi_label:
        label_col = multi_col
    split_col = next((names.index(c) for c in SPLIT_COLUMNS if c in names), None)
    if path_col is None or label_col is None:
        missing = "image" if path_col is None else "label"
        choices = PATH_COLUMNS if path_col is None else LABEL_COLUMNS
        raise ValueError(
            f"{path}: the header {header} has no {missing} column; name it one of "
            f"{', '.join(choices)} (e.g. 'path,label' or 'path,label,split'; for several "
            "classes an image, 'path,labels')"
        )
    rows: list[tuple[Path, str, str | None]] = []
    missing_files: list[str] = []
    first_seen: dict[Path, tuple[int, str, str | None]] = {}  # line, label, split
    repeated: list[tuple[int, int]] = []
    for line, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        extra = any(c.strip() for c in cells[len(header) :])  # trailing empty cells are fine
        if len(cells) <= max(path_col, label_col, split_col or 0) or extra:
            raise ValueError(
                f"{path}, line {line}: {len(cells)} cells, the header has {len(header)}"
                + ('; a cell holding the separator needs quotes ("cat,dog")' if extra else "")
            )
        name, label = cells[path_col].strip(), cells[label_col].strip()
        if not name or (not label and not multi_label):
            what = "image" if not name else "label"
            raise ValueError(f"{path}, line {line}: no {what}; every row needs both")
        split: str | None = None
        if split_col is not None:
            split = cells[split_col].strip().lower()
            if split not in SPLIT_FOLDERS:
                raise ValueError(
                    f"{path}, line {line}: split {cells[split_col].strip()!r}; with a split "
                    f"column every row names one of {', '.join(SPLIT_FOLDERS)}"
                )
        image = _resolve(path.parent, name)
        if image in first_seen:  # the same image again: its class or split would be a toss-up
            before, label_before, split_before = first_seen[image]
            if label != label_before:
                raise ValueError(
                    f"{path}, line {line}: {name} is listed at line {before} as "
                    f"{label_before!r} and here as {label!r}: keep one row per image"
                    + ("" if multi_label else " (for several classes, a 'labels' column)")
                )
            if split != split_before:
                raise ValueError(
                    f"{path}, line {line}: {name} is in split {split!r} here and "
                    f"{split_before!r} at line {before}: an image in two splits would be "
                    "evaluated on what it trained on; keep one row per image"
                )
            repeated.append((line, before))
            continue
        first_seen[image] = (line, label, split)
        if not image.is_file():
            missing_files.append(name)
        rows.append((image, label, split))
    if not rows:
        raise ValueError(f"{path}: a header and no rows: list one image per line")
    if repeated:
        line, before = repeated[0]
        warnings.warn(
            f"{path}: {len(repeated)} row(s) repeat an earlier one (line {line} repeats line "
            f"{before}); each image is used once",
            UserWarning,
            stacklevel=2,
        )
    if missing_files:
        shown = first_few(missing_files, 5)
        warnings.warn(
            f"{path}: {len(missing_files)} of {len(rows)} image(s) not found relative to "
            f"{path.parent} ({shown}); they will be reported and skipped",
            UserWarning,
            stacklevel=2,
        )
    if multi_label:
        rows, classes = _label_sets(rows)
        if len(classes) == 1 and classes[0] and SET_SEPARATOR not in classes[0]:
            warnings.warn(  # a yes/no tagger with no "no"
                f"{path}: every image has the one class {classes[0]!r} in column "
                f"{header[label_col]!r}: a tagger learns it only from images without it too; "
                "add those with an empty cell",
                UserWarning,
                stacklevel=2,
            )
        elif all(key and SET_SEPARATOR not in key for key in classes):  # "labels" for "label"?
            warnings.warn(
                f"{path}: the column {header[label_col]!r} gives every image exactly one "
                "class; it is read as multi-label (a sigmoid per class, scored by mAP). For a "
                f"classifier that picks one class an image, rename it 'label'",
                UserWarning,
                stacklevel=2,
            )
        _warn_case_twins(path, {name for key in classes for name in key.split(SET_SEPARATOR)})
        return LabelFile(path, tuple(rows), classes, split_col is not None, multi_label=True)
    labels = {label for _, label, _ in rows}
    _warn_case_twins(path, labels)
    if any("|" in label for label in labels):
        warnings.warn(
            f"{path}: labels such as {next(lb for lb in labels if '|' in lb)!r} hold '|'; "
            f"they are read as one class each. For several classes an image, name the column "
            f"{header[label_col]!r} 'labels'",
            UserWarning,
            stacklevel=2,
        )
    return LabelFile(path, tuple(rows), sort_class_names(labels), split_col is not None)


def _warn_case_twins(path: Path, names: set[str]) -> None:
    """Warn about class names that differ only in case (``Cat`` and ``cat``): two classes to
    the model, and most likely one to whoever wrote the file."""
    by_fold: dict[str, list[str]] = {}
    for name in sorted(names - {""}):
        by_fold.setdefault(name.casefold(), []).append(name)
    twins = [group for group in by_fold.values() if len(group) > 1]
    if twins:
        shown = "; ".join(" and ".join(repr(n) for n in group) for group in twins[:3])
        warnings.warn(
            f"{path}: the classes {shown} differ only in case, so they are different classes; "
            "if each group is one class, write it the same way on every row",
            UserWarning,
            stacklevel=3,
        )


def sort_class_names(names: Iterable[str]) -> tuple[str, ...]:
    """Sorted, numerically when every name is an integer (``2`` before ``10``)."""
    names = set(names)
    # ASCII digits only: "--5" or "²" pass str.isdigit after lstrip("-") but not int()
    numeric = all(re.fullmatch(r"-?[0-9]+", name) for name in names)
    return tuple(sorted(names, key=int if numeric else None))


def _label_sets(
    rows: list[tuple[Path, str, str | None]],
) -> tuple[list[tuple[Path, str, str | None]], tuple[str, ...]]:
    """Multi-label rows: each cell split into class names and written back as its label
    set's key (names in class order joined by ``|``); returns the rows and the sorted keys."""
    cells = [cell for _, cell, _ in rows]
    separator = next((sep for sep in MULTI_LABEL_SEPARATORS if any(sep in c for c in cells)), None)
    per_row = [{name.strip() for name in cell.split(separator)} - {""} for cell in cells]
    order = {name: i for i, name in enumerate(sort_class_names(set().union(*per_row)))}
    keys = [SET_SEPARATOR.join(sorted(names, key=order.__getitem__)) for names in per_row]
    out = [(image, key, where) for (image, _, where), key in zip(rows, keys, strict=True)]
    return out, tuple(sorted(set(keys)))


def _resolve(folder: Path, name: str) -> Path:
    image = Path(name).expanduser()
    image = image if image.is_absolute() else folder / image
    if "\\" in name and not image.exists():  # written on Windows: cat\001.jpg
        posix = _resolve(folder, name.replace("\\", "/"))
        if posix.is_file():
            return posix
    if image.suffix or image.is_file():
        return image
    for suffix in IMAGE_EXTENSIONS:  # an id without its suffix
        for candidate in (image.with_suffix(suffix), image.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return image
