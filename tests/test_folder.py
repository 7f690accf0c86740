"""Tests for robust image decoding and the image-folder dataset (all data made in tmp_path)."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from resnetkit.data.folder import (
    ImageFolderDataset,
    collate_skip_bad,
    folder_splits,
    format_failures,
    load_folder_arrays,
    resize_center_crop,
    scan_image_folder,
    split_samples,
    verify_images,
)
from resnetkit.data.images import (
    IMAGE_EXTENSIONS,
    REASON_CORRUPT,
    REASON_EMPTY,
    REASON_NOT_IMAGE,
    ImageDecodeError,
    load_image,
    verify_image,
)

MAX_PIXELS = 5_000  # every good image is at most 64x64 = 4096 pixels; the bomb is 100x100
RED = (255, 0, 0)
WHITE = (255, 255, 255)

GOOD = {
    "cats/a_rgb.jpg",
    "cats/b_rgb.png",
    "cats/c_gray.png",
    "cats/d_palette_alpha.png",
    "cats/nested/e_upper.PNG",
    "dogs/a_rgba.png",
    "dogs/b_cmyk.jpg",
    "dogs/c_gray16.png",
    "dogs/d_exif6.jpg",
    "fish/a_noise.jpg",
    "fish/b_anim.gif",
}
BAD = {
    "cats/z_empty.jpg": REASON_EMPTY,
    "cats/z_text.jpg": REASON_NOT_IMAGE,
    "dogs/z_truncated.jpg": REASON_CORRUPT,
    "dogs/z_header_cut.jpg": REASON_CORRUPT,  # Pillow: "Truncated File Read", no disk error
    "fish/z_bomb.png": "image too large",
}


def _noise_jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _make_tree(root: Path) -> None:
    for sub in ("cats/nested", "cats/.ipynb_checkpoints", "dogs", "fish", ".hidden"):
        (root / sub).mkdir(parents=True)
    cats, dogs, fish = root / "cats", root / "dogs", root / "fish"

    Image.new("RGB", (40, 30), (10, 200, 30)).save(cats / "a_rgb.jpg", quality=95)
    Image.new("RGB", (30, 40), (200, 10, 30)).save(cats / "b_rgb.png")
    Image.new("L", (32, 32), 77).save(cats / "c_gray.png")
    pal = Image.new("P", (20, 20), 0)  # index 0 is transparent, index 1 opaque green
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (10, 0, 20, 20))
    pal.save(cats / "d_palette_alpha.png", transparency=0)
    Image.new("RGB", (24, 24), (0, 0, 200)).save(cats / "nested" / "e_upper.PNG")
    (cats / "z_empty.jpg").write_bytes(b"")
    (cats / "z_text.jpg").write_text("this is not a picture\n")
    (cats / "notes.txt").write_text("ignored: not an image extension\n")
    Image.new("RGB", (8, 8)).save(cats / ".ipynb_checkpoints" / "hidden.jpg")
    Image.new("RGB", (8, 8)).save(root / ".hidden" / "hidden.jpg")

    rgba = Image.new("RGBA", (20, 20), (0, 255, 0, 0))  # fully transparent green
    rgba.paste((255, 0, 0, 255), (10, 0, 20, 20))  # right half opaque red
    rgba.save(dogs / "a_rgba.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(dogs / "b_cmyk.jpg", quality=95)
    gray16 = np.zeros((3, 8), dtype=np.uint16)
    gray16[0], gray16[1] = 65535, 32768
    img16 = Image.fromarray(gray16)
    assert img16.mode == "I;16"
    img16.save(dogs / "c_gray16.png")
    stored = Image.new("RGB", (40, 20), (0, 0, 255))  # landscape as stored in the file
    stored.paste(RED, (0, 0, 8, 8))  # marked top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: rotate 90 degrees clockwise for display
    stored.save(dogs / "d_exif6.jpg", exif=exif, quality=95)
    noise = _noise_jpeg_bytes()
    (dogs / "z_truncated.jpg").write_bytes(noise[: len(noise) // 2])
    (dogs / "z_header_cut.jpg").write_bytes(noise[:100])  # cut inside its header

    (fish / "a_noise.jpg").write_bytes(noise)
    frames = [Image.new("P", (12, 12), i) for i in range(2)]
    frames[0].save(fish / "b_anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (100, 100), (1, 2, 3)).save(fish / "z_bomb.png")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images")
    _make_tree(path)
    return path


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


# --- scanning -----------------------------------------------------------------------------


def test_scan_finds_classes_labels_and_ignores_hidden(root: Path) -> None:
    with pytest.warns(
        UserWarning,
        match=r"its class folders: 1 file\(s\) not named as images were left out \(\.txt: 1\)",
    ):
        samples, classes = scan_image_folder(root)
    assert classes == ("cats", "dogs", "fish")
    found = {_rel(root, p): label for p, label in samples}
    assert set(found) == GOOD | set(BAD)
    for rel, label in found.items():
        assert label == classes.index(rel.split("/")[0])
    assert [label for _, label in samples] == sorted(label for _, label in samples)
    assert samples == scan_image_folder(str(root))[0]  # deterministic, str accepted


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        scan_image_folder(tmp_path / "missing")
    Image.new("RGB", (4, 4)).save(tmp_path / "loose.jpg")
    with pytest.raises(ValueError, match=r"root/<class>/<image>.*1 image"):
        scan_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images found.*empty_class"):
        scan_image_folder(tmp_path)
    (tmp_path / "full").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "full" / "x.jpeg")
    with pytest.warns(UserWarning, match="contain no images.*empty_class"):
        samples, classes = scan_image_folder(tmp_path)
    assert classes == ("empty_class", "full")
    assert [label for _, label in samples] == [1]
    # Training reads through folder_splits: a file, an archive say, is no folder of classes.
    (tmp_path / "photos.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(NotADirectoryError, match=r"not a folder: .*unpack the archive first"):
        folder_splits(tmp_path / "photos.zip")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        folder_splits(tmp_path / "missing")


def test_scan_knows_jpeg_by_its_other_names_and_says_what_it_left_out(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    for name in ("a.jpg", "b.JFIF", "c.jpe"):
        Image.new("RGB", (4, 4)).save(tmp_path / "cat" / name, format="JPEG")
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "d.avif")
    for name in ("e.heic", "f.heic", "labels.csv"):
        (tmp_path / "cat" / name).write_bytes(b"x")
    with pytest.warns(UserWarning, match=r"3 file\(s\) .* left out \(\.heic: 2, \.csv: 1\)"):
        samples, _ = scan_image_folder(tmp_path)
    assert [p.name for p, _ in samples] == ["a.jpg", "b.JFIF", "c.jpe", "d.avif"]
    assert all(load_image(p).size == (4, 4) for p, _ in samples)


# --- decoding -----------------------------------------------------------------------------


def test_every_good_file_decodes_to_rgb(root: Path) -> None:
    for rel in sorted(GOOD):
        image = load_image(root / rel, max_pixels=MAX_PIXELS)
        assert image.mode == "RGB", rel


def test_mode_conversions(root: Path) -> None:
    pal = load_image(root / "cats/d_palette_alpha.png")
    assert pal.getpixel((2, 5)) == WHITE  # transparent palette entry -> white
    assert pal.getpixel((15, 5)) == (0, 255, 0)
    rgba = load_image(root / "dogs/a_rgba.png")
    assert rgba.getpixel((2, 5)) == WHITE  # composited onto white, not black or green
    assert rgba.getpixel((15, 5)) == RED
    assert load_image(root / "cats/c_gray.png").getpixel((3, 3)) == (77, 77, 77)
    cmyk = np.asarray(load_image(root / "dogs/b_cmyk.jpg"), dtype=int)[8, 8]
    assert np.abs(cmyk - np.array(RED)).max() <= 8
    gray16 = np.asarray(load_image(root / "dogs/c_gray16.png"))
    assert gray16.shape == (3, 8, 3)
    assert (gray16[0] == 255).all() and (gray16[2] == 0).all()
    assert (np.abs(gray16[1].astype(int) - 128) <= 1).all()  # scaled, not clipped to 255


def test_other_wide_modes_are_scaled() -> None:
    big_endian = Image.frombytes("I;16B", (2, 1), bytes([0xFF, 0xFF, 0x80, 0x00]))
    buf = io.BytesIO()
    big_endian.save(buf, "TIFF")
    assert np.asarray(load_image(buf.getvalue()))[0, :, 0].tolist() == [255, 128]
    buf = io.BytesIO()
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(buf, "TIFF")
    assert np.asarray(load_image(buf.getvalue()))[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_applied(root: Path) -> None:
    image = load_image(root / "dogs/d_exif6.jpg")
    assert image.size == (20, 40)  # stored 40x20, displayed rotated
    # 90 degrees clockwise moves the stored top-left corner to the top-right.
    top_right = np.asarray(image.getpixel((image.width - 3, 2)), dtype=int)
    assert np.abs(top_right - np.array(RED)).max() <= 12
    assert image.getpixel((2, 2))[2] > 200  # top-left is now blue


@pytest.mark.parametrize(("rel", "reason"), sorted(BAD.items()))
def test_bad_files_raise_with_path_and_reason(root: Path, rel: str, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        load_image(root / rel, max_pixels=MAX_PIXELS)
    assert info.value.path == root / rel
    assert info.value.reason.startswith(reason)
    assert str(root / rel) in str(info.value)


def test_bomb_refused_before_decoding(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decode(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data decoded despite the size limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageDecodeError, match=r"100x100 = 10,000 pixels .* limit of 5,000"):
        load_image(root / "fish/z_bomb.png", max_pixels=MAX_PIXELS)
    with pytest.raises(ImageDecodeError, match="image too large"):
        verify_image(root / "fish/z_bomb.png", max_pixels=MAX_PIXELS)


def test_pillow_bomb_guard_is_caught(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = root / "cats/a_rgb.jpg"  # 40x30 = 1200 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would only warn
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow raises its own error
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path)


def test_the_callers_lower_limit_is_the_one_named(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's --max-megapixels below Pillow's guard is the limit its user is told about,
    whether Pillow would only warn or refuses the file itself."""
    path = root / "cats/a_rgb.jpg"  # 40x30 = 1200 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match=r"40x30 = 1,200 pixels exceeds the limit of 500 "):
        load_image(path, max_pixels=500)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageDecodeError, match=r"1,200 pixels exceeds the limit of 50 pixels"):
        load_image(path, max_pixels=50)


def test_decoding_in_threads_leaves_the_warning_filters_as_they_were(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server decodes in threads: warnings.catch_warnings() there restored each other's
    saved filter lists and left DecompressionBombWarning an error for the whole process."""
    import threading
    import warnings

    data = (root / "cats/b_rgb.png").read_bytes()
    before = list(warnings.filters)
    start = threading.Barrier(8)

    def decode() -> None:
        start.wait()
        for _ in range(150):
            load_image(data)

    threads = [threading.Thread(target=decode) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # and a bomb is still refused
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(root / "cats/a_rgb.jpg")
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as seen:  # outside a decode: a warning again
        warnings.simplefilter("always")
        warnings.warn("x", Image.DecompressionBombWarning, stacklevel=1)
    assert len(seen) == 1


def test_bytes_source_and_error_pickling(root: Path) -> None:
    image = load_image((root / "cats/b_rgb.png").read_bytes())
    assert image.size == (30, 40) and image.mode == "RGB"
    with pytest.raises(ImageDecodeError) as info:
        load_image(b"")
    assert info.value.path is None and info.value.reason == REASON_EMPTY
    copy = pickle.loads(pickle.dumps(ImageDecodeError(Path("a.jpg"), REASON_CORRUPT)))
    assert (copy.path, copy.reason) == (Path("a.jpg"), REASON_CORRUPT)
    assert ".PNG" not in IMAGE_EXTENSIONS and ".png" in IMAGE_EXTENSIONS


def test_draft_decodes_large_jpeg_smaller(tmp_path: Path) -> None:
    Image.new("RGB", (800, 600), (9, 9, 9)).save(tmp_path / "big.jpg")
    image = load_image(tmp_path / "big.jpg", draft_size=64)
    assert min(image.size) >= 64 and image.size[0] < 800


# --- dataset and loader -------------------------------------------------------------------


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(resize_center_crop(image, 8), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def test_dataset_returns_images_or_none_and_records_failures(root: Path) -> None:
    dataset = ImageFolderDataset(root, max_pixels=MAX_PIXELS)
    assert len(dataset) == len(GOOD) + len(BAD)
    assert dataset.classes == ("cats", "dogs", "fish")
    for index, (path, label) in enumerate(dataset.samples):
        item = dataset[index]
        if _rel(root, path) in GOOD:
            assert item is not None
            image, got_label = item
            assert isinstance(image, Image.Image) and image.mode == "RGB"
            assert got_label == label
        else:
            assert item is None
    for index in range(len(dataset)):  # a second epoch records nothing twice
        dataset[index]
    assert len(dataset.failures) == len(BAD)
    for path, reason in dataset.failures:
        assert reason.startswith(BAD[_rel(root, path)])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_skips_bad_items_to_the_end(root: Path, num_workers: int) -> None:
    dataset = ImageFolderDataset(root, transform=_to_tensor, max_pixels=MAX_PIXELS)
    loader = DataLoader(
        dataset, batch_size=4, shuffle=True, num_workers=num_workers, collate_fn=collate_skip_bad
    )
    seen, labels = 0, []
    for batch in loader:
        if batch is None:
            continue
        images, targets = batch
        assert images.shape[1:] == (3, 8, 8) and targets.dtype == torch.int64
        seen += images.shape[0]
        labels += targets.tolist()
    assert seen == len(GOOD)
    assert len(dataset) - seen == len(BAD)  # how a training loop counts skipped items
    assert sorted(labels) == sorted(label for p, label in dataset.samples if _rel(root, p) in GOOD)


def test_collate_skip_bad_edge_cases(root: Path) -> None:
    assert collate_skip_bad([None, None]) is None
    dataset = ImageFolderDataset(root, max_pixels=MAX_PIXELS)  # no transform: PIL images
    images, labels = collate_skip_bad([dataset[i] for i in range(len(dataset))])
    assert len(images) == len(GOOD) and all(isinstance(im, Image.Image) for im in images)
    assert labels.shape == (len(GOOD),)
    bad_only = [s for s in dataset.samples if _rel(root, s[0]) in BAD]
    subset = ImageFolderDataset(
        None, samples=bad_only, classes=dataset.classes, max_pixels=MAX_PIXELS
    )
    loader = DataLoader(subset, batch_size=2, collate_fn=collate_skip_bad)
    assert list(loader) == [None] * -(-len(BAD) // 2)  # every batch of bad files only
    with pytest.raises(ValueError, match="root"):
        ImageFolderDataset(None, samples=bad_only)


def test_verify_images_reports_exactly_the_bad_files(root: Path) -> None:
    samples, _ = scan_image_folder(root)
    failures = verify_images(samples, MAX_PIXELS, full_decode=True)
    assert {_rel(root, p): r.split(":")[0] for p, r in failures} == BAD
    fast = {_rel(root, p) for p, _ in verify_images(samples, MAX_PIXELS)}
    assert {"cats/z_empty.jpg", "cats/z_text.jpg", "fish/z_bomb.png"} <= fast <= set(BAD)
    report = format_failures(failures, total=len(samples))
    assert f"{len(BAD)} bad image file(s) of {len(samples)}" in report
    assert str(root / "cats/z_text.jpg") in report
    assert verify_images([root / "cats/a_rgb.jpg"], full_decode=True) == []

    # A thin image that resizing to the training size would blow up: refused as training would.
    thin = root.parent / "thin.png"
    Image.new("RGB", (2000, 1)).save(thin)
    assert verify_images([thin], 100_000, full_decode=True) == []
    [(_, reason)] = verify_images([thin], 100_000, full_decode=True, size=32)
    assert reason.startswith("image too elongated: 2000x1 would become 32x64000")


# --- split and in-memory arrays -----------------------------------------------------------


def test_split_is_stratified_and_deterministic() -> None:
    counts = {0: 10, 1: 5, 2: 2, 3: 1}
    samples = [(Path(f"c{c}/{i:02d}.jpg"), c) for c, n in counts.items() for i in range(n)]
    train, val = split_samples(samples, 0.2, seed=3)
    assert sorted(train + val) == sorted(samples) and not set(train) & set(val)
    val_counts = {c: sum(1 for _, t in val if t == c) for c in counts}
    assert val_counts == {0: 2, 1: 1, 2: 1, 3: 0}  # every class with >= 2 images is in val
    assert split_samples(samples, 0.2, seed=3) == (train, val)
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    train2, val2 = split_samples(shuffled, 0.2, seed=3)
    assert set(val2) == set(val)  # independent of input order
    other = {split_samples(samples, 0.2, seed=s)[1][0] for s in range(10)}
    assert len(other) > 1  # the seed matters
    assert split_samples(samples, 0.0, seed=3) == (samples, [])
    with pytest.raises(ValueError):
        split_samples(samples, 1.0, seed=3)


def test_folder_splits_by_subfolders_or_hold_out(tmp_path: Path) -> None:
    for split, names in (("train", ("a", "b")), ("val", ("a", "b"))):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (4, 4)).save(tmp_path / split / name / f"{i}.png")
    train, val, classes = folder_splits(tmp_path, 0.5, seed=0)
    assert classes == ("a", "b") and len(train) == len(val) == 6
    assert all(p.parts[-3] == "train" for p, _ in train) and all(
        p.parts[-3] == "val" for p, _ in val
    )
    # no train/ + val/ pair: a stratified hold-out of the folder itself
    train, val, classes = folder_splits(tmp_path / "train", 0.5, seed=0)
    assert classes == ("a", "b") and sorted(t for _, t in val) == [0, 0, 1, 1]
    # val/ with other class folders would silently mislabel every image: refused
    (tmp_path / "val" / "b").rename(tmp_path / "val" / "c")
    with pytest.raises(ValueError, match=r"val: class folders \['a', 'c'\] differ"):
        folder_splits(tmp_path, 0.1, seed=0)


def _classes_in(root: Path, split: str, names: tuple[str, ...] = ("a", "b")) -> None:
    for name in names:
        (root / split / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (4, 4)).save(root / split / name / f"{i}.png")


def test_folder_splits_know_the_usual_split_names(tmp_path: Path) -> None:
    # train/ + valid/: validation from valid/
    _classes_in(tmp_path / "one", "train")
    _classes_in(tmp_path / "one", "valid")
    train, val, classes = folder_splits(tmp_path / "one", 0.5, seed=0)
    assert classes == ("a", "b") and len(train) == len(val) == 8
    assert {p.parts[-3] for p, _ in val} == {"valid"}
    # train/ + test/: test/ is never read, validation is held out of train/
    _classes_in(tmp_path / "two", "train")
    _classes_in(tmp_path / "two", "test")
    train, val, classes = folder_splits(tmp_path / "two", 0.25, seed=0)
    assert classes == ("a", "b") and len(train) == 6 and len(val) == 2
    assert {p.parts[-3] for p, _ in train + val} == {"train"}
    # test/ + val/ without train/: not two classes called "test" and "val"
    _classes_in(tmp_path / "three", "test")
    _classes_in(tmp_path / "three", "val")
    with pytest.raises(ValueError, match=r"split folders \['test', 'val'\] but no train/"):
        folder_splits(tmp_path / "three", 0.1, seed=0)


def test_folder_refuses_val_split_that_would_replace_its_validation(tmp_path: Path) -> None:
    from resnetkit.data.datasets import load_train_eval

    _classes_in(tmp_path, "train")
    _classes_in(tmp_path, "val")
    data = load_train_eval("folder", tmp_path, image_size=4)
    assert len(data.evals["val"].labels) == 8
    with pytest.raises(ValueError, match="val_split holds out CIFAR images.*--val-split 0"):
        load_train_eval("folder", tmp_path, val_split=3, image_size=4)


def test_training_runs_inside_the_data_folder_are_not_classes(tmp_path: Path) -> None:
    """`finetune --data DIR --out DIR/ft`, then a second run on DIR: it trained a class "ft"
    on the first run's curves.png and confusion.png, without a word."""
    _classes_in(tmp_path, "data")
    data = tmp_path / "data"
    for run in (data / "ft", data / "runs" / "a", data / "runs" / "b"):
        (run / "checkpoints").mkdir(parents=True)
        (run / "run.json").write_text("{}")
        Image.new("RGB", (4, 4)).save(run / "curves.png")
    with pytest.warns(UserWarning, match=r"left out ft, runs, training run folder\(s\)"):
        samples, classes = scan_image_folder(data)
    assert classes == ("a", "b") and len(samples) == 8
    (data / "runs" / "notes.png").write_bytes(b"")  # a folder with more than runs: a class
    with pytest.warns(UserWarning, match=r"left out ft, training"):
        assert scan_image_folder(data)[1] == ("a", "b", "runs")


def test_a_bad_file_is_counted_among_the_images_of_its_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """finetune on 183 files said "1 bad image file(s) of 18" when the bad one had been held out
    for validation: the count of that split, read as the folder's."""
    from resnetkit.data.datasets import load_train_eval

    _classes_in(tmp_path, "train")
    _classes_in(tmp_path, "val")
    (tmp_path / "val" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    load_train_eval("folder", tmp_path, image_size=4)
    err = capsys.readouterr().err
    assert "broken.png: " in err and "1 bad image file(s) of 9 validation images" in err, err


def test_channel_stats_in_chunks_match_numpy() -> None:
    from resnetkit.data.datasets import channel_stats

    images = np.random.default_rng(0).integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=11)  # chunks that split images and pixels
    x = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-9)


def test_load_folder_arrays(root: Path) -> None:
    images, labels, classes, failures = load_folder_arrays(root, 16, max_pixels=MAX_PIXELS)
    samples, _ = scan_image_folder(root)
    good = [(p, t) for p, t in samples if _rel(root, p) in GOOD]
    assert images.shape == (len(GOOD), 16, 16, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [t for _, t in good]
    assert classes == ("cats", "dogs", "fish")
    assert {_rel(root, p): r.split(":")[0] for p, r in failures} == BAD
    cmyk = images[[_rel(root, p) for p, _ in good].index("dogs/b_cmyk.jpg")]
    assert np.abs(cmyk[8, 8].astype(int) - np.array(RED)).max() <= 8


def test_resize_center_crop() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste(RED, (0, 0, 10, 20))  # left quarter red: cropped away
    out = resize_center_crop(image, 10)
    assert out.size == (10, 10)
    assert out.getpixel((0, 5))[2] > 200 and out.getpixel((9, 5))[2] > 200


@pytest.mark.parametrize("size", [(80, 112), (63, 60), (126, 147), (20, 30)])
def test_resize_center_crop_gives_the_pixels_predict_gives(size: tuple[int, int]) -> None:
    """finetune's in-memory images and evaluate's folders are cut by resize_center_crop,
    predict/serve by torchvision's Resize + CenterCrop: an 80x112 picture became 32x45 here
    (rounded) and 32x44 there (truncated), every pixel of the crop up to 45 levels apart, so
    a fine-tuned model was validated on other inputs than predict gives it."""
    from resnetkit.data.transforms import build_eval_transform

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ours = np.asarray(resize_center_crop(image, 32), dtype=np.float32) / 255.0
    theirs = build_eval_transform(32, (0.0,) * 3, (1.0,) * 3)(image).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    """A class folder that links to more images keeps them (rglob skipped symlinked folders
    without a word); a link back up the tree does not loop; hidden files stay out."""
    from resnetkit.predict import collect_images

    extra = tmp_path / "elsewhere"
    extra.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(extra / f"{i}.png")
    cat = tmp_path / "data" / "cat"
    cat.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(cat / "own.png")
    (cat / "._own.png").write_bytes(b"macOS resource fork")
    (cat / "more").symlink_to(extra, target_is_directory=True)
    (extra / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    (cat / "up").symlink_to(tmp_path, target_is_directory=True)  # would bring elsewhere/ again
    dog = tmp_path / "data" / "dog"
    dog.mkdir()
    Image.new("RGB", (8, 8)).save(dog / "d.png")
    (cat / "parent").symlink_to(tmp_path / "data", target_is_directory=True)  # dog/ under cat
    samples, classes = scan_image_folder(tmp_path / "data")
    names = [p.relative_to(tmp_path / "data").as_posix() for p, _ in samples]
    assert classes == ("cat", "dog")
    assert names == [
        "cat/more/0.png",
        "cat/more/1.png",
        "cat/more/2.png",
        "cat/own.png",
        "dog/d.png",
    ]
    files, failures = collect_images([cat])
    assert [p.name for p in files] == ["0.png", "1.png", "2.png", "own.png"] and not failures
    # At the top: a link to the dataset (or above it) is no class; a second name of a class
    # folder would label its images twice.
    (tmp_path / "data" / "all").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "up").symlink_to(tmp_path, target_is_directory=True)
    with pytest.warns(UserWarning, match=r"left out all, up, a link to this folder or one above"):
        samples, classes = scan_image_folder(tmp_path / "data")
    assert classes == ("cat", "dog") and len(samples) == 5
    (tmp_path / "data" / "kitty").symlink_to(cat, target_is_directory=True)
    with pytest.raises(ValueError, match="'cat' and 'kitty' are the same folder"):
        scan_image_folder(tmp_path / "data")


def test_a_class_with_no_decodable_file_is_warned_about(tmp_path: Path) -> None:
    """Its output would ship untrained: 'bird' has one file, and it is text named .jpg."""
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "0.png")
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "a.jpg").write_text("junk")
    with pytest.warns(UserWarning, match=r"no file of class\(es\) bird could be decoded"):
        _, labels, classes, failures = load_folder_arrays(tmp_path, 8)
    assert classes == ("bird", "cat", "dog") and labels.tolist() == [1, 2] and len(failures) == 1


def test_split_folders_are_found_in_any_case_and_by_their_long_names(tmp_path: Path) -> None:
    # Train/ + Validation/: validation from Validation/, not a hold-out of Train/
    _classes_in(tmp_path / "one", "Train")
    _classes_in(tmp_path / "one", "Validation")
    train, val, classes = folder_splits(tmp_path / "one", 0.5, seed=0)
    assert classes == ("a", "b") and len(train) == len(val) == 8
    assert {p.parts[-3] for p, _ in val} == {"Validation"}
    # Training/ + Testing/ (a common download layout): not two classes "Testing", "Training"
    _classes_in(tmp_path / "two", "Training")
    _classes_in(tmp_path / "two", "Testing")
    train, val, classes = folder_splits(tmp_path / "two", 0.25, seed=0)
    assert classes == ("a", "b") and len(train) == 6 and len(val) == 2
    assert {p.parts[-3] for p, _ in train + val} == {"Training"}
    # a class that happens to be called "train" (it holds images): still a class
    for name in ("bus", "train"):
        (tmp_path / "three" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (4, 4)).save(tmp_path / "three" / name / f"{i}.png")
    assert folder_splits(tmp_path / "three", 0.5, seed=0)[2] == ("bus", "train")
    # train/*.png + val/*.png: splits without class folders, refused
    for name in ("train", "val"):
        (tmp_path / "four" / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "four" / name / "0.png")
    with pytest.raises(ValueError, match=r"look like split folders but hold images"):
        folder_splits(tmp_path / "four", 0.1, seed=0)
