"""Tests for resnetkit.data.cifar on tiny fake CIFAR files (no network, no shared data)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resnetkit.data.cifar import (
    CIFAR_MEAN,
    CIFAR_STD,
    ArrayDataset,
    ChecksumError,
    CIFARFormatError,
    RestrictedUnpickler,
    UnsafeArchiveError,
    download_cifar,
    extract_archive,
    load_cifar,
    load_pickle,
)
from tests.conftest import dead_url

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR100_FINE = tuple(f"fine_{i:02d}" for i in range(100))
CIFAR100_COARSE = tuple(f"coarse_{i:02d}" for i in range(20))
PER_BATCH = 2  # CIFAR-10 has 5 train batches -> 10 train images
N_TEST = 3


@dataclass
class Fake:
    """Known images (HWC) and labels per split."""

    images: dict[str, np.ndarray]
    fine: dict[str, np.ndarray]
    coarse: dict[str, np.ndarray]


def make_fake(name: str, seed: int = 0) -> Fake:
    rng = np.random.default_rng(seed)
    n_train = 5 * PER_BATCH if name == "cifar10" else 6
    num_fine = 10 if name == "cifar10" else 100
    images, fine, coarse = {}, {}, {}
    for split, n in (("train", n_train), ("test", N_TEST)):
        images[split] = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine[split] = rng.integers(0, num_fine, size=n).astype(np.int64)
        coarse[split] = rng.integers(0, 20, size=n).astype(np.int64)
    return Fake(images, fine, coarse)


def planes(images: np.ndarray) -> np.ndarray:
    """HWC images -> rows of 3072 bytes: 1024 R, 1024 G, 1024 B, each 32x32 row-major."""
    return np.stack([images[..., c].reshape(len(images), 1024) for c in range(3)], axis=1).reshape(
        len(images), 3072
    )


def write_binary(root: Path, name: str, fake: Fake) -> Path:
    if name == "cifar10":
        folder = root / "cifar-10-batches-bin"
        folder.mkdir(parents=True)
        (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
        batches: dict[str, tuple[str, int | None]] = {
            f"data_batch_{i + 1}.bin": ("train", i) for i in range(5)
        }
        batches["test_batch.bin"] = ("test", None)
        for file_name, (split, index) in batches.items():
            sl = slice(None) if index is None else slice(index * PER_BATCH, (index + 1) * PER_BATCH)
            labels = fake.fine[split][sl].astype(np.uint8)[:, None]
            records = np.concatenate([labels, planes(fake.images[split][sl])], axis=1)
            records.astype(np.uint8).tofile(folder / file_name)
    else:
        folder = root / "cifar-100-binary"
        folder.mkdir(parents=True)
        (folder / "fine_label_names.txt").write_text("\n".join(CIFAR100_FINE) + "\n")
        (folder / "coarse_label_names.txt").write_text("\n".join(CIFAR100_COARSE) + "\n")
        for split, file_name in (("train", "train.bin"), ("test", "test.bin")):
            head = np.stack([fake.coarse[split], fake.fine[split]], axis=1).astype(np.uint8)
            records = np.concatenate([head, planes(fake.images[split])], axis=1)
            records.astype(np.uint8).tofile(folder / file_name)
    return folder


def legacy_pickle(obj: Any, bytes_keys: bool = True) -> bytes:
    """Pickle like the official files: protocol 2, bytes keys, ``numpy.core.multiarray``."""
    if bytes_keys and isinstance(obj, dict):
        obj = {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}
    data = pickle.dumps(obj, protocol=2)
    # Protocol 2 names globals as plain text lines, so the numpy 1.x module name can be swapped in.
    return data.replace(b"\nnumpy._core.multiarray\n", b"\nnumpy.core.multiarray\n").replace(
        b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"
    )


def write_python(root: Path, name: str, fake: Fake, modern: bool = False) -> Path:
    def dump(path: Path, obj: dict[str, Any]) -> None:
        path.write_bytes(pickle.dumps(obj, protocol=4) if modern else legacy_pickle(obj))

    def text(names: tuple[str, ...]) -> list[Any]:
        return list(names) if modern else [n.encode() for n in names]

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        dump(folder / "batches.meta", {"label_names": text(CIFAR10_CLASSES), "num_vis": 3072})
        for i in range(5):
            sl = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
            batch = {
                "batch_label": "training batch",
                "labels": [int(v) for v in fake.fine["train"][sl]],
                "data": planes(fake.images["train"][sl]),
            }
            dump(folder / f"data_batch_{i + 1}", batch)
        test = {"labels": [int(v) for v in fake.fine["test"]], "data": planes(fake.images["test"])}
        dump(folder / "test_batch", test)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        meta = {
            "fine_label_names": text(CIFAR100_FINE),
            "coarse_label_names": text(CIFAR100_COARSE),
        }
        dump(folder / "meta", meta)
        for split in ("train", "test"):
            batch = {
                "fine_labels": [int(v) for v in fake.fine[split]],
                "coarse_labels": [int(v) for v in fake.coarse[split]],
                "data": planes(fake.images[split]),
            }
            dump(folder / split, batch)
    return folder


def classes_for(name: str) -> tuple[str, ...]:
    return CIFAR10_CLASSES if name == "cifar10" else CIFAR100_FINE


def assert_matches(ds: ArrayDataset, fake: Fake, name: str, split: str) -> None:
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    assert ds.images.shape == (len(fake.fine[split]), 32, 32, 3)
    assert ds.images.flags.c_contiguous
    np.testing.assert_array_equal(ds.images, fake.images[split])
    np.testing.assert_array_equal(ds.labels, fake.fine[split])
    assert ds.classes == classes_for(name)
    assert len(ds) == len(fake.fine[split])


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def test_binary_pixel_placement_from_hand_written_record(tmp_path: Path) -> None:
    rows, cols = np.indices((32, 32))
    red, green, blue = rows, cols, (rows * 32 + cols) % 251
    record = np.concatenate([[7], red.ravel(), green.ravel(), blue.ravel()]).astype(np.uint8)
    second = np.concatenate([[3], np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)])
    raw = np.concatenate([record, second.astype(np.uint8)])
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    raw.tofile(folder / "test_batch.bin")
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES))

    ds = load_cifar(tmp_path, split="test")

    assert ds.labels.tolist() == [7, 3]
    assert ds.images[0, 5, 9].tolist() == [5, 9, (5 * 32 + 9) % 251]
    assert ds.images[0, 31, 0].tolist() == [31, 0, (31 * 32) % 251]
    assert ds.images[1, 17, 4].tolist() == [10, 20, 30]
    for h, w, c in [(0, 0, 0), (3, 30, 1), (31, 31, 2), (12, 7, 2)]:
        assert ds.images[0, h, w, c] == raw[1 + c * 1024 + h * 32 + w]
        assert ds.images[1, h, w, c] == raw[3073 + 1 + c * 1024 + h * 32 + w]


def test_cifar100_binary_label_bytes_are_coarse_then_fine(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    pixels = np.arange(3072) % 256
    (np.concatenate([[4, 57], pixels]).astype(np.uint8)).tofile(folder / "test.bin")
    (folder / "fine_label_names.txt").write_text("\n".join(CIFAR100_FINE))
    (folder / "coarse_label_names.txt").write_text("\n".join(CIFAR100_COARSE))

    fine = load_cifar(tmp_path, "cifar100", "test")
    coarse = load_cifar(tmp_path, "cifar100", "test", label_kind="coarse")

    assert fine.labels.tolist() == [57] and fine.classes == CIFAR100_FINE
    assert coarse.labels.tolist() == [4] and coarse.classes == CIFAR100_COARSE
    assert fine.images[0, 0, 1].tolist() == [1, (1024 + 1) % 256, (2048 + 1) % 256]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("layout", ["binary", "python", "python-modern"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_each_layout(tmp_path: Path, name: str, layout: str, split: str) -> None:
    fake = make_fake(name)
    if layout == "binary":
        write_binary(tmp_path, name, fake)
    else:
        write_python(tmp_path, name, fake, modern=layout == "python-modern")
    assert_matches(load_cifar(tmp_path, name, split), fake, name, split)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_both_layouts_give_identical_arrays(tmp_path: Path, name: str) -> None:
    fake = make_fake(name, seed=1)
    write_binary(tmp_path, name, fake)
    write_python(tmp_path, name, fake)
    for split in ("train", "test"):
        kinds = ["fine", "coarse"] if name == "cifar100" else ["fine"]
        for kind in kinds:
            a = load_cifar(tmp_path, name, split, layout="binary", label_kind=kind)
            b = load_cifar(tmp_path, name, split, layout="python", label_kind=kind)
            np.testing.assert_array_equal(a.images, b.images)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert a.classes == b.classes
    coarse = (
        load_cifar(tmp_path, name, "train", label_kind="coarse") if name == "cifar100" else None
    )
    if coarse is not None:
        np.testing.assert_array_equal(coarse.labels, fake.coarse["train"])
        assert coarse.classes == CIFAR100_COARSE


def test_root_may_be_the_extracted_folder(tmp_path: Path) -> None:
    fake = make_fake("cifar10")
    folder = write_binary(tmp_path, "cifar10", fake)
    assert_matches(load_cifar(folder, split="test"), fake, "cifar10", "test")
    py_folder = write_python(tmp_path / "py", "cifar10", fake)
    assert_matches(load_cifar(str(py_folder), split="train"), fake, "cifar10", "train")


def test_truncated_binary_file_error_names_the_file(tmp_path: Path) -> None:
    folder = write_binary(tmp_path, "cifar10", make_fake("cifar10"))
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(CIFARFormatError, match="data_batch_3.bin") as info:
        load_cifar(tmp_path, split="train")
    assert "3073" in str(info.value)
    load_cifar(tmp_path, split="test")  # the other split is unaffected


def test_truncated_pickle_error_names_the_file(tmp_path: Path) -> None:
    folder = write_python(tmp_path, "cifar100", make_fake("cifar100"))
    (folder / "test").write_bytes((folder / "test").read_bytes()[:500])
    with pytest.raises(CIFARFormatError, match="cifar-100-python.test"):
        load_cifar(tmp_path, "cifar100", "test")


def test_out_of_range_label_is_reported(tmp_path: Path) -> None:
    folder = write_binary(tmp_path, "cifar10", make_fake("cifar10"))
    raw = bytearray((folder / "test_batch.bin").read_bytes())
    raw[3073] = 10
    (folder / "test_batch.bin").write_bytes(bytes(raw))
    with pytest.raises(CIFARFormatError, match=r"test_batch\.bin.*\[0, 10\)"):
        load_cifar(tmp_path, split="test")


# ------------------------------------------------------------------------------------------------
# Restricted unpickling
# ------------------------------------------------------------------------------------------------


def test_restricted_unpickler_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"echo pwned > {shlex.quote(str(marker))}",))

    payload = pickle.dumps({b"data": Evil()}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=rf"{os.system.__module__}\.system"):
        RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    assert not marker.exists()

    # The same payload planted in a python-layout folder is refused by load_cifar too.
    folder = write_python(tmp_path, "cifar10", make_fake("cifar10"))
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="test_batch.*refusing") as info:
        load_cifar(tmp_path, split="test")
    assert "system" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, refused",
    [
        (b"cbuiltins\neval\n(S'1/0'\ntR.", "builtins.eval"),
        (b"c__builtin__\nexec\n(S'1/0'\ntR.", "__builtin__.exec"),  # Python 2 spelling
        (b"\x80\x04\x8c\x02os\x8c\x05popen\x93.", "os.popen"),
    ],
)
def test_restricted_unpickler_refuses_handcrafted_globals(
    tmp_path: Path, payload: bytes, refused: str
) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=refused):
        load_pickle(path)


def test_restricted_unpickler_loads_numpy_arrays(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "ok.pkl"
    path.write_bytes(legacy_pickle({"data": array, "labels": [1, 2, 3]}))
    assert b"numpy.core.multiarray" in path.read_bytes()
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded[b"data"], array)
    assert loaded[b"labels"] == [1, 2, 3]


def test_restricted_unpickler_loads_protocol_5(tmp_path: Path) -> None:
    """numpy pickles arrays with protocol 5 through ``_frombuffer``: a CIFAR batch re-saved
    with pickle.HIGHEST_PROTOCOL must load, and other numeric functions stay refused."""
    array = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    path = tmp_path / "p5.pkl"
    path.write_bytes(pickle.dumps({b"data": array}, protocol=5))
    assert b"_frombuffer" in path.read_bytes()
    np.testing.assert_array_equal(load_pickle(path)[b"data"], array)
    path.write_bytes(b"\x80\x05cnumpy._core.numeric\nfromfunction\n.")
    with pytest.raises(pickle.UnpicklingError, match="numeric.fromfunction"):
        load_pickle(path)


# ------------------------------------------------------------------------------------------------
# Missing files and arguments
# ------------------------------------------------------------------------------------------------


def test_missing_files_message_says_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(tmp_path, "cifar10", "train")
    message = str(info.value)
    for expected in (
        str(tmp_path),
        "cifar-10-batches-bin",
        "cifar-10-batches-py",
        "data_batch_5.bin",
        "batches.meta.txt",
        "download=True",
        "--download",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    ):
        assert expected in message

    with pytest.raises(FileNotFoundError, match="cifar-100-binary") as info:
        load_cifar(tmp_path, "cifar100", "test")
    assert "cifar-100-python" in str(info.value) and "download" in str(info.value)


def test_missing_files_message_says_where_the_data_is_instead(tmp_path: Path) -> None:
    """A student's usual wrong roots: one level too high, a file of the dataset, the other
    CIFAR, an image folder, a label file. The message names the root to use instead."""
    data = tmp_path / "data"
    folder = write_binary(data / "cifar10", "cifar10", make_fake("cifar10"))
    (tmp_path / "pics" / "cat").mkdir(parents=True)
    (tmp_path / "pics" / "cat" / "1.png").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,label\n")

    def message(root: Path, name: str = "cifar10") -> str:
        with pytest.raises(FileNotFoundError) as info:
            load_cifar(root, name)
        return str(info.value)

    above = message(data)
    assert f"use '{data / 'cifar10'}' as the root (--data-dir {data / 'cifar10'})" in above
    assert "download" not in above  # it is there: fetching it again is no advice
    inside = message(folder / "data_batch_1.bin")
    assert "is a file" in inside and f"--data-dir {data / 'cifar10'}" in inside
    other = message(data / "cifar10", "cifar100")
    assert f"'{folder}' holds CIFAR-10, not CIFAR-100" in other and "--dataset cifar10" in other
    assert "holds folders of images (cat/)" in message(tmp_path / "pics")
    assert "--dataset folder" in message(tmp_path / "labels.csv")
    assert f"'{tmp_path / 'nope'}' does not exist" in message(tmp_path / "nope")


def test_incomplete_folder_lists_the_missing_files(tmp_path: Path) -> None:
    folder = write_binary(tmp_path, "cifar10", make_fake("cifar10"))
    (folder / "data_batch_4.bin").unlink()
    load_cifar(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match=r"missing: data_batch_4\.bin"):
        load_cifar(tmp_path, split="train")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "cifar1000"}, "unknown CIFAR dataset 'cifar1000'"),
        ({"split": "val"}, "unknown split 'val'"),
        ({"label_kind": "medium"}, "label_kind"),
        ({"name": "cifar10", "label_kind": "coarse"}, "coarse"),
        ({"layout": "hdf5"}, "unknown layout 'hdf5'"),
    ],
)
def test_bad_arguments_raise_value_error(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_cifar(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_array_dataset_validates_and_constants() -> None:
    with pytest.raises(ValueError, match=r"images must be uint8 with shape \(N, H, W, 3\)"):
        ArrayDataset(np.zeros((2, 32, 32), np.uint8), np.zeros(2, np.int64), ("a",))
    with pytest.raises(ValueError, match=r"labels must be int64 with shape \(2,\)"):
        ArrayDataset(np.zeros((2, 32, 32, 3), np.uint8), np.zeros(3, np.int64), ("a",))
    ds = ArrayDataset(np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.int64), ("a", "b"))
    assert len(ds) == 2 and ds.num_classes == 2
    assert CIFAR_MEAN["cifar10"] == (0.4914, 0.4822, 0.4465)
    assert CIFAR_STD["cifar100"] == (0.2673, 0.2564, 0.2762)
    assert set(CIFAR_MEAN) == set(CIFAR_STD) == {"cifar10", "cifar100"}


# ------------------------------------------------------------------------------------------------
# Download and extraction
# ------------------------------------------------------------------------------------------------


def make_archive(path: Path, folder: Path) -> str:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name, layout, archive_name",
    [
        ("cifar10", "binary", "cifar-10-binary.tar.gz"),
        ("cifar100", "python", "cifar-100-python.tar.gz"),
    ],
)
def test_download_extracts_and_loads(
    tmp_path: Path, server: tuple[Path, str], name: str, layout: str, archive_name: str
) -> None:
    serve, base = server
    fake = make_fake(name, seed=2)
    writer = write_binary if layout == "binary" else write_python
    md5 = make_archive(serve / archive_name, writer(tmp_path / "src", name, fake))
    root = tmp_path / "root"

    folder = download_cifar(name, root, base, layout=layout, md5=md5)

    assert folder.parent == root and folder.is_dir()
    assert (root / archive_name).is_file()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temp leftovers
    for split in ("train", "test"):
        assert_matches(load_cifar(root, name, split), fake, name, split)
    # Already complete: nothing is fetched, so even a dead server is fine.
    assert download_cifar(name, root, dead_url(), layout=layout, md5=md5) == folder


def test_download_wrong_md5_raises_and_leaves_no_partial_file(
    tmp_path: Path, server: tuple[Path, str]
) -> None:
    serve, base = server
    actual = make_archive(
        serve / "cifar-10-binary.tar.gz",
        write_binary(tmp_path / "src", "cifar10", make_fake("cifar10")),
    )
    root = tmp_path / "root"
    with pytest.raises(ChecksumError) as info:
        download_cifar("cifar10", root, base, md5="0" * 32)
    assert "0" * 32 in str(info.value) and actual in str(info.value)
    assert not root.exists()  # the folder the download created is gone with the file


def test_download_without_network_raises_file_not_found(tmp_path: Path) -> None:
    url = dead_url()
    root = tmp_path / "data" / "root"
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(root, "cifar10", "test", download=True, url=url)
    message = str(info.value)
    assert "could not download" in message and url in message
    assert "cifar-10-batches-bin" in message and "test_batch.bin" in message
    # The download was tried: the advice is to fetch the archive elsewhere, not to pass
    # download=True again.
    assert "download=True" not in message and "network access" in message
    # No empty folders are left behind, and a folder that was there before stays.
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError):
        download_cifar("cifar10", tmp_path / "mine", url)
    assert list(tmp_path.iterdir()) == [tmp_path / "mine"]


@pytest.mark.parametrize(
    "member", ["../evil.txt", "cifar-10-batches-bin/../../evil.txt", "/tmp/evil.txt"]
)
def test_unsafe_tar_member_is_refused(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        info = tarfile.TarInfo(member)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    dest = tmp_path / "a" / "dest"
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        extract_archive(archive, dest)
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []


def test_symlink_member_is_refused_by_download(tmp_path: Path, server: tuple[Path, str]) -> None:
    serve, base = server
    archive = serve / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError, match="test_batch.bin"):
        download_cifar("cifar10", root, base, md5=md5)
    assert not (root / "cifar-10-batches-bin").exists()


def test_extraction_never_deletes_a_folder_of_the_user(tmp_path: Path) -> None:
    """An archive whose file has the name of a folder in dest is refused before anything is
    moved: the folder (the user's notes here) survives, and so does every other file."""
    dest = tmp_path / "dest"
    (dest / "cifar-10-batches-bin").mkdir(parents=True)
    (dest / "cifar-10-batches-bin" / "notes.txt").write_text("mine")
    archive = tmp_path / "clash.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("readme.txt", b"new"), ("cifar-10-batches-bin", b"oops")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArchiveError, match="file cifar-10-batches-bin would replace"):
        extract_archive(archive, dest)
    assert (dest / "cifar-10-batches-bin" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-bin"]
