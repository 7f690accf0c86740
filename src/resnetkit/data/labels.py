"""Labels from a CSV (or TSV) file instead of class folders: ``--dataset folder --data-dir
labels.csv``.

The file has a header. One column names the image (``path``, ``file``, ``filename``,
``image``, ``image_path``, ``image_id``, ``id``, ``fname``), one its class (``label``,
``class``, ``class_name``, ``category``, ``target``, ``y``), and an optional one its split
(``split``, ``subset``, ``set``: ``train``/``val``/``test`` and the synonyms image folders
accept, on every row). Paths are relative to the file's folder (or absolute); a name without
a suffix (Kaggle's ``image_id``) is looked up with each image suffix. Classes are the
distinct labels, sorted (numerically when every label is an integer), so that ``2`` comes
before ``10``.

A row whose image is missing stays in the list and is reported by path when it is decoded,
like a corrupt file; the file itself must be well-formed: a row without a label, an unknown
split or a missing column is refused with the line number and what to write instead.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

from resnetkit.data.images import IMAGE_EXTENSIONS
from resnetkit.data.splits import SPLIT_FOLDERS

#: Suffixes read as label files.
LABEL_FILE_SUFFIXES = (".csv", ".tsv")
PATH_COLUMNS = ("path", "file", "filename", "image", "image_path", "image_id", "id", "fname")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target", "y")
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
        classes: class names, indexed by label.
        has_splits: whether the file has a split column.
    """

    path: Path
    rows: tuple[tuple[Path, str, str | None], ...]
    classes: tuple[str, ...]
    has_splits: bool

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
        ValueError: no header, no image or label column, an empty cell, or no rows.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from Excel is not a column name
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); save it as UTF-8 CSV") from None
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise ValueError(f"{path} is empty: it needs a header line, e.g. 'path,label'")
    names = [h.strip().lower() for h in header]
    path_col = next((names.index(c) for c in PATH_COLUMNS if c in names), None)
    label_col = next((names.index(c) for c in LABEL_COLUMNS if c in names), None)
    split_col = next((names.index(c) for c in SPLIT_COLUMNS if c in names), None)
    if path_col is None or label_col is None:
        missing = "image" if path_col is None else "label"
        choices = PATH_COLUMNS if path_col is None else LABEL_COLUMNS
        raise ValueError(
            f"{path}: the header {header} has no {missing} column; name it one of "
            f"{', '.join(choices)} (e.g. 'path,label' or 'path,label,split')"
        )
    rows: list[tuple[Path, str, str | None]] = []
    missing_files: list[str] = []
    for line, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) <= max(path_col, label_col, split_col or 0):
            raise ValueError(
                f"{path}, line {line}: {len(cells)} cells, the header has {len(header)}"
            )
        name, label = cells[path_col].strip(), cells[label_col].strip()
        if not name or not label:
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
        if not image.is_file():
            missing_files.append(name)
        rows.append((image, label, split))
    if not rows:
        raise ValueError(f"{path}: a header and no rows: list one image per line")
    if missing_files:
        shown = ", ".join(missing_files[:5]) + (", ..." if len(missing_files) > 5 else "")
        warnings.warn(
            f"{path}: {len(missing_files)} of {len(rows)} image(s) not found relative to "
            f"{path.parent} ({shown}); they will be reported and skipped",
            UserWarning,
            stacklevel=2,
        )
    labels = {label for _, label, _ in rows}
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    classes = tuple(sorted(labels, key=int if numeric else None))
    return LabelFile(path, tuple(rows), classes, split_col is not None)


def _resolve(folder: Path, name: str) -> Path:
    image = Path(name).expanduser()
    image = image if image.is_absolute() else folder / image
    if image.suffix or image.is_file():
        return image
    for suffix in IMAGE_EXTENSIONS:  # an id without its suffix
        for candidate in (image.with_suffix(suffix), image.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return image
