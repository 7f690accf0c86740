"""CIFAR-10 and CIFAR-100 readers for the official archive layouts, plus a safe downloader.

Both layouts that Alex Krizhevsky publishes are understood, under ``root`` or with ``root`` being
the extracted folder itself:

* **binary** (``cifar-10-batches-bin/``, ``cifar-100-binary/``): fixed-size records of label
  byte(s) followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each 32x32 row-major).
  These are read with one vectorised numpy pass per file.
* **python** (``cifar-10-batches-py/``, ``cifar-100-python/``): pickled dicts. They are read with
  :class:`RestrictedUnpickler`, which only lets through the globals that rebuild numpy arrays, so
  a tampered file cannot run code.

:func:`load_cifar` returns an :class:`ArrayDataset` of ``uint8`` HWC images and ``int64`` labels.
:func:`download_cifar` fetches an official archive over HTTP(S), verifies its md5, and extracts it
refusing any member that would land outside the target folder.
"""

from __future__ import annotations

import http.client
import importlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from resnetkit.download import ChecksumError, fetch, file_digest
from resnetkit.text import first_few

__all__ = [
    "CIFAR_BASE_URL",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "ArrayDataset",
    "ChecksumError",
    "CIFARFormatError",
    "RestrictedUnpickler",
    "UnsafeArchiveError",
    "download_cifar",
    "extract_archive",
    "load_cifar",
    "load_pickle",
]

#: Where the official archives live; ``download_cifar(url=...)`` overrides it.
CIFAR_BASE_URL = "https://www.cs.toronto.edu/~kriz/"

#: Per-channel (R, G, B) mean of the training set on the 0-1 scale, keyed by dataset name.
CIFAR_MEAN: dict[str, tuple[float, float, float]] = {
    "cifar10": (0.4914, 0.4822, 0.4465),
    "cifar100": (0.5071, 0.4865, 0.4409),
}

#: Per-channel (R, G, B) standard deviation of the training set on the 0-1 scale.
CIFAR_STD: dict[str, tuple[float, float, float]] = {
    "cifar10": (0.2470, 0.2435, 0.2616),
    "cifar100": (0.2673, 0.2564, 0.2762),
}

_IMAGE_SIZE = 32
_PIXELS = 3 * _IMAGE_SIZE * _IMAGE_SIZE  # 3072 bytes per image
_NAMES = ("cifar10", "cifar100")
_SPLITS = ("train", "test")
_LAYOUT_NAMES = ("binary", "python")
_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


class CIFARFormatError(ValueError):
    """A CIFAR file exists but its contents are not what the official format says."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder, or is not a plain file."""


@dataclass(frozen=True)
class _Layout:
    """Where one dataset's files live in one official layout."""

    folder: str
    archive: str
    md5: str
    split_files: dict[str, tuple[str, ...]]
    meta_files: tuple[str, ...]

    def required(self, split: str) -> tuple[str, ...]:
        return self.split_files[split] + self.meta_files


_LAYOUTS: dict[tuple[str, str], _Layout] = {
    ("cifar10", "binary"): _Layout(
        folder="cifar-10-batches-bin",
        archive="cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        split_files={
            "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            "test": ("test_batch.bin",),
        },
        meta_files=("batches.meta.txt",),
    ),
    ("cifar10", "python"): _Layout(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        split_files={
            "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
            "test": ("test_batch",),
        },
        meta_files=("batches.meta",),
    ),
    ("cifar100", "binary"): _Layout(
        folder="cifar-100-binary",
        archive="cifar-100-binary.tar.gz",
        md5="03b5dce01913d631647c71ecec9e9cb8",
        split_files={"train": ("train.bin",), "test": ("test.bin",)},
        meta_files=("fine_label_names.txt", "coarse_label_names.txt"),
    ),
    ("cifar100", "python"): _Layout(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        split_files={"train": ("train",), "test": ("test",)},
        meta_files=("meta",),
    ),
}

_NUM_CLASSES = {("cifar10", "fine"): 10, ("cifar100", "fine"): 100, ("cifar100", "coarse"): 20}


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """An in-memory image classification dataset.

    Attributes:
        images: ``uint8`` array of shape ``(N, 32, 32, 3)``, channels last (HWC), RGB.
        labels: ``int64`` array of shape ``(N,)`` with values in ``[0, len(classes))``.
        classes: Class names; ``classes[k]`` is the name of label ``k``.
    """

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        """Check shapes and dtypes so that a malformed dataset fails where it is built."""
        images, labels = self.images, self.labels
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(
                f"images must be uint8 with shape (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        if labels.dtype != np.int64 or labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(
                f"labels must be int64 with shape ({len(images)},), "
                f"got {labels.dtype} {labels.shape}"
            )

    def __len__(self) -> int:
        """Return the number of images."""
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)


# --------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------

#: The only globals a CIFAR python-layout pickle may reference: what numpy arrays need.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # numpy's protocol-5 pickles (pickle.HIGHEST_PROTOCOL) rebuild arrays from a buffer.
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


def _numpy_core_attr(submodule: str, name: str) -> Any:
    """Resolve ``name`` in ``numpy._core.<submodule>`` (numpy 2) or ``numpy.core.<submodule>``
    (numpy 1) without deprecation warnings."""
    for package in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        return getattr(module, name)
    raise pickle.UnpicklingError(f"cannot find numpy {submodule}.{name}")  # pragma: no cover


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds plain containers and numpy arrays.

    Any other global (a function or class named in the pickle, such as ``os.system``) is refused
    with :class:`pickle.UnpicklingError` before it is ever looked up, so nothing it names runs.

    Args:
        file: Binary file object to read the pickle from.
        source: Name used in error messages (usually the file path).
        encoding: How Python 2 ``str`` objects are decoded; ``"bytes"`` keeps them as bytes,
            which is what the official CIFAR pickles need.
    """

    def __init__(self, file: IO[bytes], source: str = "<pickle>", encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global, or raise :class:`pickle.UnpicklingError` naming it."""
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self._source}: refusing to load global '{module}.{name}'; CIFAR pickles may "
                "only reference what numpy arrays need"
            )
        if module.startswith(("numpy.core.", "numpy._core.")):
            return _numpy_core_attr(module.rsplit(".", 1)[1], name)
        return super().find_class(module, name)


def load_pickle(path: str | Path) -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler` and ``encoding="bytes"``.

    Args:
        path: The pickle file.

    Returns:
        The unpickled object.

    Raises:
        pickle.UnpicklingError: The pickle references a global that is not allowed.
        CIFARFormatError: The file is truncated or otherwise not a valid pickle.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=str(path)).load()
    except pickle.UnpicklingError as exc:
        if "refusing to load global" in str(exc):
            raise
        raise CIFARFormatError(f"{path}: not a valid pickle ({exc})") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CIFARFormatError(f"{path}: not a valid pickle ({type(exc).__name__}: {exc})") from exc


def _get(mapping: Any, key: str, path: Path) -> Any:
    """Look up ``key`` in an unpickled dict whose keys may be ``bytes`` or ``str``."""
    if not isinstance(mapping, dict):
        raise CIFARFormatError(f"{path}: expected a pickled dict, got {type(mapping).__name__}")
    for candidate in (key.encode("ascii"), key):
        if candidate in mapping:
            return mapping[candidate]
    keys = sorted(k.decode("ascii", "replace") if isinstance(k, bytes) else str(k) for k in mapping)
    raise CIFARFormatError(f"{path}: missing key {key!r} (found keys: {', '.join(keys)})")


def _as_name(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _planes_to_hwc(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Turn ``(N, 3072)`` rows of R, G, B planes into contiguous ``(N, 32, 32, 3)`` images."""
    planes = pixels.reshape(-1, 3, _IMAGE_SIZE, _IMAGE_SIZE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1))


def _check_labels(labels: npt.NDArray[np.int64], num_classes: int, path: Path) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise CIFARFormatError(
            f"{path}: labels must lie in [0, {num_classes}), "
            f"found {int(labels.min())}..{int(labels.max())}"
        )


def _read_binary_file(
    path: Path, header: int, label_index: int, num_classes: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Read one binary batch: records of ``header`` label bytes followed by 3072 pixel bytes."""
    record = header + _PIXELS
    size = path.stat().st_size
    if size == 0 or size % record:
        raise CIFARFormatError(
            f"{path}: size {size} bytes is not a positive multiple of the {record}-byte record "
            f"({header} label byte(s) + {_PIXELS} pixel bytes); the file is truncated or corrupt"
        )
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    labels = raw[:, label_index].astype(np.int64)
    _check_labels(labels, num_classes, path)
    return _planes_to_hwc(raw[:, header:]), labels


def _read_names(path: Path, expected: int) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    names = tuple(name for name in names if name)
    if len(names) != expected:
        raise CIFARFormatError(f"{path}: expected {expected} class names, found {len(names)}")
    return names


def _load_binary(
    folder: Path, layout: _Layout, name: str, split: str, label_kind: str
) -> ArrayDataset:
    num_classes = _NUM_CLASSES[(name, label_kind)]
    if name == "cifar10":
        header, label_index = 1, 0
        classes = _read_names(folder / "batches.meta.txt", num_classes)
    else:
        header, label_index = 2, (1 if label_kind == "fine" else 0)
        classes = _read_names(folder / f"{label_kind}_label_names.txt", num_classes)
    parts = [
        _read_binary_file(folder / f, header, label_index, num_classes)
        for f in layout.split_files[split]
    ]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return ArrayDataset(images=images, labels=labels, classes=classes)


def _read_python_batch(
    path: Path, label_key: str, num_classes: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    batch = load_pickle(path)
    data = _get(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise CIFARFormatError(f"{path}: 'data' must be a 2-D uint8 array")
    if data.shape[1] != _PIXELS:
        raise CIFARFormatError(f"{path}: 'data' rows must have {_PIXELS} bytes, got {data.shape}")
    labels = np.asarray(_get(batch, label_key, path), dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise CIFARFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    _check_labels(labels, num_classes, path)
    return _planes_to_hwc(data), labels


def _load_python(
    folder: Path, layout: _Layout, name: str, split: str, label_kind: str
) -> ArrayDataset:
    num_classes = _NUM_CLASSES[(name, label_kind)]
    if name == "cifar10":
        label_key, meta_path, names_key = "labels", folder / "batches.meta", "label_names"
    else:
        label_key, meta_path = f"{label_kind}_labels", folder / "meta"
        names_key = f"{label_kind}_label_names"
    names = _get(load_pickle(meta_path), names_key, meta_path)
    classes = tuple(_as_name(n) for n in names)
    if len(classes) != num_classes:
        raise CIFARFormatError(
            f"{meta_path}: expected {num_classes} class names, found {len(classes)}"
        )
    parts = [
        _read_python_batch(folder / f, label_key, num_classes) for f in layout.split_files[split]
    ]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return ArrayDataset(images=images, labels=labels, classes=classes)


# --------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------


def _normalise_name(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _NAMES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected one of {', '.join(_NAMES)}")
    return key


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")


def _layouts_to_try(layout: str | None) -> tuple[str, ...]:
    if layout is None:
        return _LAYOUT_NAMES
    _check_choice(layout, _LAYOUT_NAMES, "layout")
    return (layout,)


def _archive_url(layout: _Layout, url: str | None) -> str:
    base = CIFAR_BASE_URL if url is None else url
    if base.endswith((".tar.gz", ".tgz")):
        return base
    return base.rstrip("/") + "/" + layout.archive


def _required(spec: _Layout, split: str | None) -> tuple[str, ...]:
    if split is not None:
        return spec.required(split)
    return spec.split_files["train"] + spec.split_files["test"] + spec.meta_files


def _not_found_message(
    root: Path,
    name: str,
    split: str | None,
    layouts: Sequence[str],
    url: str | None,
    *,
    download_failed: bool = False,
) -> str:
    what = _PRETTY[name] if split is None else f"{_PRETTY[name]} '{split}' split"
    lines = [f"{what} not found under root '{root}'."]
    hint = None if download_failed else _where_instead(root, name, split)
    if hint is not None:
        lines.append(hint)
    lines.append("Expected one of these folders inside the root (or the root being that folder):")
    incomplete: list[str] = []
    for layout_name in layouts:
        spec = _LAYOUTS[(name, layout_name)]
        required = _required(spec, split)
        lines.append(f"  - {spec.folder}/ ({layout_name} layout): {', '.join(required)}")
        for candidate in (root / spec.folder, root):
            present = [f for f in required if (candidate / f).is_file()]
            if present:
                missing = [f for f in required if f not in present]
                incomplete.append(f"'{candidate}' is incomplete, missing: {', '.join(missing)}")
                break
    lines.extend(incomplete)
    download_layout = "binary" if "binary" in layouts else layouts[0]
    spec = _LAYOUTS[(name, download_layout)]
    archive = _archive_url(spec, url)
    if download_failed:
        lines.append(
            f"Download {archive} on a machine with network access and extract it into '{root}'."
        )
    elif hint is None or hint.startswith(f"'{root}' does not exist"):
        lines.append(
            "To get it, pass download=True to load_cifar (--download where a command has it: "
            f"train, evaluate, calibrate), or download {archive} and extract it into '{root}'."
        )
    return "\n".join(lines)


def _where_instead(root: Path, name: str, split: str | None) -> str | None:
    """What ``root`` is when it holds no ``name``, where that tells where to look instead: a
    file (one of the dataset's own, or a label file), the folder above the dataset's root
    (``data/`` for ``data/cifar10/cifar-10-batches-bin``), the other CIFAR, or an image folder."""
    if not root.exists():
        return f"'{root}' does not exist."
    places = [root.parent] if root.is_file() else [root]
    if root.is_dir():  # one level down: a --data-dir above the dataset's root
        try:
            places += sorted(p for p in root.iterdir() if p.is_dir())[:200]
        except OSError:
            pass
    start = f"'{root}' is a file; " if root.is_file() else ""
    for other in (name, *(n for n in _NAMES if n != name)):
        for place in places:
            found = _find(place, other, split or "test", _LAYOUT_NAMES)
            if found is None:
                continue
            folder = found[1]
            holder = folder.parent if folder.name == _LAYOUTS[(other, found[0])].folder else folder
            if other == name:
                return (
                    f"{start}{_PRETTY[name]} is in '{folder}': use '{holder}' as the root "
                    f"(--data-dir {holder})."
                )
            return (
                f"{start}'{folder}' holds {_PRETTY[other]}, not {_PRETTY[name]}: read it with "
                f"name='{other}' (--dataset {other}), or point at a folder that holds "
                f"{_PRETTY[name]}."
            )
    if root.is_file():
        if root.suffix.lower() in (".csv", ".tsv"):
            return f"'{root}' is a file: a label file is read with --dataset folder."
        return f"'{root}' is a file: the root is the folder that holds the dataset's folder."
    from resnetkit.data.images import IMAGE_EXTENSIONS

    def holds_images(folder: Path) -> bool:
        try:
            return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in folder.iterdir())
        except OSError:
            return False

    classes = [p.name for p in places[1:] if holds_images(p)]
    if classes:
        shown = first_few([f"{c}/" for c in classes], 5)
        return (
            f"'{root}' holds folders of images ({shown}), not CIFAR's files: an image folder "
            "is read with --dataset folder."
        )
    return None


def _find(root: Path, name: str, split: str, layouts: Sequence[str]) -> tuple[str, Path] | None:
    for layout_name in layouts:
        spec = _LAYOUTS[(name, layout_name)]
        for candidate in (root / spec.folder, root):
            if all((candidate / f).is_file() for f in spec.required(split)):
                return layout_name, candidate
    return None


def load_cifar(
    root: str | Path,
    name: str = "cifar10",
    split: str = "train",
    download: bool = False,
    *,
    label_kind: str = "fine",
    layout: str | None = None,
    url: str | None = None,
) -> ArrayDataset:
    """Load a CIFAR-10 or CIFAR-100 split into memory.

    The binary layout is preferred when both are present under ``root``; both give identical
    arrays.

    Args:
        root: Folder that holds the extracted official folder (such as
            ``cifar-10-batches-bin/``), or that folder itself.
        name: ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` (50000 images) or ``"test"`` (10000 images).
        download: Download and extract the official binary archive into ``root`` when the
            files are missing.
        label_kind: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses); CIFAR-100 only.
        layout: Restrict the search to ``"binary"`` or ``"python"``; ``None`` accepts either.
        url: Base URL (or full archive URL) to download from instead of the official site.

    Returns:
        The split as an :class:`ArrayDataset` (``uint8`` HWC images, ``int64`` labels).

    Raises:
        FileNotFoundError: The files are missing (and ``download`` is false or the download
            failed); the message lists the expected folder and files and how to get them.
        CIFARFormatError: A file is truncated or does not follow the official format.
        pickle.UnpicklingError: A python-layout pickle references a forbidden global.
        ChecksumError: A downloaded archive has the wrong md5.
        ValueError: Unknown ``name``, ``split``, ``label_kind`` or ``layout``.
    """
    name = _normalise_name(name)
    _check_choice(split, _SPLITS, "split")
    _check_choice(label_kind, ("fine", "coarse"), "label_kind")
    if (name, label_kind) not in _NUM_CLASSES:
        raise ValueError(f"label_kind={label_kind!r} is only available for cifar100")
    layouts = _layouts_to_try(layout)
    root = Path(root).expanduser()

    found = _find(root, name, split, layouts)
    if found is None and download:
        download_layout = "binary" if "binary" in layouts else layouts[0]
        try:
            download_cifar(name, root, url, layout=download_layout)
        except FileNotFoundError as exc:
            reason = str(exc).splitlines()[0]
            message = _not_found_message(root, name, split, layouts, url, download_failed=True)
            raise FileNotFoundError(f"{reason}\n{message}") from exc
        found = _find(root, name, split, layouts)
    if found is None:
        raise FileNotFoundError(_not_found_message(root, name, split, layouts, url))

    layout_name, folder = found
    reader = _load_binary if layout_name == "binary" else _load_python
    return reader(folder, _LAYOUTS[(name, layout_name)], name, split, label_kind)


# --------------------------------------------------------------------------------------------
# Download and extraction
# --------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    return file_digest(path, "md5")


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    member_path = PurePosixPath(member.name)
    if member_path.is_absolute() or PureWindowsPath(member.name).anchor:
        raise UnsafeArchiveError(f"{archive}: refusing absolute member path {member.name!r}")
    if ".." in member_path.parts or "\\" in member.name:
        raise UnsafeArchiveError(f"{archive}: refusing member path {member.name!r} (contains '..')")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(
            f"{archive}: refusing member {member.name!r}: only plain files and folders are allowed"
        )


def _clash(source: Path, target: Path) -> tuple[Path, Path] | None:
    """The first place where moving ``source`` onto ``target`` would put a file over a folder
    or a folder over a file, if any."""
    if not target.exists():
        return None
    if source.is_dir() != target.is_dir():
        return source, target
    if source.is_dir():
        for child in source.iterdir():
            found = _clash(child, target / child.name)
            if found:
                return found
    return None


def _merge_into(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, merging folder contents into an existing folder (a file
    replaces a file; :func:`_clash` has ruled out the rest)."""
    if source.is_dir() and target.is_dir():
        for child in source.iterdir():
            _merge_into(child, target / child.name)
    else:
        os.replace(source, target)


def extract_archive(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar archive into ``dest`` safely.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links and device files are refused. Extraction goes to a temporary folder inside ``dest``
    and is then moved into place, so a failure never leaves a half-extracted dataset folder;
    files replace files of the same name, but an archive whose file would replace a folder in
    ``dest`` (or whose folder would replace a file) is refused before anything is moved.
    Where available, tarfile's ``"data"`` filter is applied as a second line of defence.

    Args:
        archive: The ``.tar``/``.tar.gz`` file.
        dest: Folder to extract into (created if missing).

    Raises:
        UnsafeArchiveError: A member is unsafe; nothing is extracted.
        tarfile.TarError: The archive is corrupt.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(staging, members=members)  # members were checked above
            for child in staging.iterdir():
                clash = _clash(child, dest / child.name)
                if clash:  # what is in dest is the user's: nothing of it is deleted
                    new, old = clash
                    kinds = ("folder", "file") if new.is_dir() else ("file", "folder")
                    raise UnsafeArchiveError(
                        f"{archive}: its {kinds[0]} {new.relative_to(staging)} would replace the "
                        f"{kinds[1]} {old}; move that {kinds[1]} away and extract again"
                    )
            for child in staging.iterdir():
                _merge_into(child, dest / child.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _folders_to_create(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(folders: Sequence[Path]) -> None:
    """Remove the folders a failed download created (deepest first), while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def download_cifar(
    name: str,
    root: str | Path,
    url: str | None = None,
    *,
    layout: str = "binary",
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download and extract an official CIFAR archive into ``root``.

    Nothing is fetched when the extracted folder is already complete. An archive already in
    ``root`` with the right md5 is reused. Otherwise the archive is streamed to a temporary file
    in ``root``, its md5 checked, renamed into place atomically, and extracted with
    :func:`extract_archive`. The archive is kept next to the extracted folder.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: Folder to download and extract into (created if missing).
        url: Base URL that holds the archive (default :data:`CIFAR_BASE_URL`), or the full URL
            of the archive when it ends in ``.tar.gz``/``.tgz``.
        layout: ``"binary"`` or ``"python"``: which official archive to fetch.
        md5: Expected md5 of the archive; defaults to the official checksum.
        timeout: Socket timeout in seconds.

    Returns:
        The extracted folder, for example ``root / "cifar-10-batches-bin"``.

    Raises:
        FileNotFoundError: The archive could not be downloaded (no network, HTTP error), or it
            did not contain the expected folder.
        ChecksumError: The downloaded file has the wrong md5; the partial file is deleted.
        UnsafeArchiveError: The archive has a member that would escape ``root``.
    """
    name = _normalise_name(name)
    _check_choice(layout, _LAYOUT_NAMES, "layout")
    spec = _LAYOUTS[(name, layout)]
    root = Path(root).expanduser()
    folder = root / spec.folder
    if all((folder / f).is_file() for f in _required(spec, None)):
        return folder

    created = _folders_to_create(root)
    root.mkdir(parents=True, exist_ok=True)
    expected_md5 = (md5 or spec.md5).lower()
    archive = root / spec.archive
    source = _archive_url(spec, url)
    if not (archive.is_file() and _md5(archive) == expected_md5):
        try:
            fetch(source, archive, "md5", expected_md5, timeout)
        except ChecksumError:
            _remove_if_empty(created)
            raise
        except (OSError, http.client.HTTPException) as exc:
            _remove_if_empty(created)
            raise FileNotFoundError(
                f"could not download {source}: {exc}\n"
                + _not_found_message(root, name, None, (layout,), url, download_failed=True)
            ) from exc
    extract_archive(archive, root)
    missing = [f for f in _required(spec, None) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{archive} did not contain the expected '{spec.folder}/' files: {', '.join(missing)}"
        )
    return folder
