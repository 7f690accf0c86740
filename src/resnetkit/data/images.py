"""Robust image decoding shared by training, prediction and serving.

Every place that turns bytes (a file on disk or the body of a request) into pixels goes through
:func:`load_image`, so that all of them agree on EXIF orientation, on how unusual colour modes
become 8-bit RGB, and on what counts as a bad file. A bad file always surfaces as an
:class:`ImageDecodeError` that names the file and a short human reason; callers decide whether to
skip it (training) or report it (prediction, serving).
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "REASON_CORRUPT",
    "REASON_EMPTY",
    "REASON_NOT_IMAGE",
    "SERVE_MAX_PIXELS",
    "ImageDecodeError",
    "load_image",
    "to_rgb",
    "verify_image",
]

#: File name suffixes (lower case) treated as images when scanning folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".jfif",  # JPEG, as some browsers save it
    ".jpe",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".avif",
    ".ppm",
    ".pgm",
)

#: Default pixel limit (width * height); the same value as Pillow's own default guard.
DEFAULT_MAX_PIXELS = 89_478_485
#: What ``resnetkit serve`` accepts per image: 25 megapixels (75 MB once decoded to RGB), well
#: below Pillow's 89-megapixel default, since a server decodes many untrusted images at once.
SERVE_MAX_PIXELS = 25_000_000

REASON_EMPTY = "empty file"
REASON_CORRUPT = "truncated or corrupt image data"
REASON_NOT_IMAGE = "not an image (unrecognised format)"

# What Pillow's decoders raise on damaged data, besides OSError ("image file is truncated").
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)

ImageSource = str | Path | bytes | bytearray | memoryview


class ImageDecodeError(ValueError):
    """An image could not be decoded, or was refused.

    Attributes:
        path: The file that failed, or ``None`` when the image came from in-memory bytes.
        reason: A short human-readable reason, e.g. ``"empty file"``.
    """

    def __init__(self, path: Path | None, reason: str) -> None:
        """Create the error.

        Args:
            path: The offending file, or ``None`` for in-memory bytes.
            reason: Why it failed, in words.
        """
        self.path = path
        self.reason = reason
        where = str(path) if path is not None else "<in-memory image>"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[Path | None, str]]:
        """Pickle by constructor arguments, so the error crosses DataLoader worker processes."""
        return (type(self), (self.path, self.reason))


def image_files(root: str | Path, skipped: Counter[str] | None = None) -> list[Path]:
    """The image files under ``root``, at any depth, in path order.

    Symlinked folders are followed (``Path.rglob`` skips them before Python 3.13, so a class
    folder of links lost its images without a word), each real folder once, so that a link
    loop ends; a link to ``root`` itself or a folder above it is not. Hidden files and
    folders below ``root`` (``.DS_Store``, ``._x.jpg``, ``.git/``) are left out.

    Args:
        root: The folder to search.
        skipped: If given, counts the other (non-hidden) files by lower-case suffix, so a
            caller can say what it left out (``.heic: 12``).
    """
    root = Path(root)
    found: list[Path] = []
    seen: set[str] = set()
    real_root = os.path.realpath(root)
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        # a folder seen before (a loop), or a link up to the root or above it, whose other
        # folders (the other classes) would come in under this one's label
        above = real_root == real or real_root.startswith(real.rstrip(os.sep) + os.sep)
        if real in seen or (above and folder != str(root)):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(folder) / name
            if name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                if path.is_file():
                    found.append(path)
            elif skipped is not None:
                skipped[path.suffix.lower() or "(no suffix)"] += 1
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def left_out(skipped: Counter[str]) -> str:
    """The files :func:`image_files` counted in ``skipped``, for a warning: ``3 file(s) not
    named as images were left out (.heic: 2, .txt: 1); recognised extensions: ...``."""
    return (
        f"{skipped.total()} file(s) not named as images were left out "
        f"({suffix_counts(skipped)}); recognised extensions: {' '.join(IMAGE_EXTENSIONS)}"
    )


def suffix_counts(skipped: Counter[str]) -> str:
    """``.heic: 2, .txt: 1``: the five most common suffixes (", ..." when there are more)."""
    kinds = ", ".join(f"{suffix}: {n}" for suffix, n in skipped.most_common(5))
    return kinds + (", ..." if len(skipped) > 5 else "")


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"image too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
        f"{max_pixels:,} pixels (possible decompression bomb)"
    )


def _open(source: ImageSource, max_pixels: int) -> tuple[Image.Image, Path | None]:
    """Open lazily (header only) and refuse empty, unreadable, non-image and oversized input
    (over ``max_pixels``, or over Pillow's own ``Image.MAX_IMAGE_PIXELS``: a possible
    decompression bomb, refused here rather than left to Pillow's warning; the process-wide
    warning filters are not touched, since threads decode at once).

    Returns:
        The opened (not yet decoded) image and the source path (``None`` for bytes).
    """
    fp: Path | io.BytesIO
    path: Path | None
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageDecodeError(path, "is a directory, not an image file")
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageDecodeError(path, "file not found") from None
        except OSError as exc:
            raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
        if size == 0:
            raise ImageDecodeError(path, REASON_EMPTY)
        fp = path
    else:
        path = None
        data = bytes(source)
        if not data:
            raise ImageDecodeError(None, REASON_EMPTY)
        fp = io.BytesIO(data)
    try:
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise ImageDecodeError(path, REASON_NOT_IMAGE) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Over twice Pillow's limit, refused before the size is known to us; name the
        # caller's own limit when it is the lower one (its is the one a user can change).
        found = re.search(r"\((\d+) pixels\)", str(exc))
        limit = Image.MAX_IMAGE_PIXELS
        if found is not None and (limit is None or max_pixels <= limit):
            raise ImageDecodeError(
                path,
                f"image too large: {int(found[1]):,} pixels exceeds the limit of "
                f"{max_pixels:,} pixels (possible decompression bomb)",
            ) from exc
        raise ImageDecodeError(path, f"refused as a possible decompression bomb: {exc}") from exc
    except OSError as exc:
        if exc.errno is None:  # Pillow's own ("Truncated File Read"): the data, not the disk
            raise ImageDecodeError(path, REASON_CORRUPT) from exc
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(path, REASON_CORRUPT) from exc
    width, height = img.size
    if width * height > max_pixels:  # the caller's limit first: the one its user can change
        img.close()
        raise ImageDecodeError(path, _too_large(width, height, max_pixels))
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        img.close()
        raise ImageDecodeError(
            path,
            f"refused as a possible decompression bomb: {width}x{height} = "
            f"{width * height:,} pixels, over Pillow's limit of {int(limit):,} "
            "(PIL.Image.MAX_IMAGE_PIXELS)",
        )
    if width <= 0 or height <= 0:
        img.close()
        raise ImageDecodeError(path, f"image has no pixels ({width}x{height})")
    return img, path


def _check_resized_area(
    img: Image.Image, path: Path | None, shorter_side: int, max_pixels: int
) -> None:
    """Refuse a thin image that resizing its shorter side up to ``shorter_side`` would blow
    up past ``max_pixels`` (a 2000x1 PNG of 86 bytes would become 256x512,000)."""
    width, height = img.size
    short, long = min(width, height), max(width, height)
    if short >= shorter_side:
        return  # shrinking: never more pixels than the file already has
    grown_long = math.ceil(long * shorter_side / short)
    if grown_long * shorter_side > max_pixels:
        raise ImageDecodeError(
            path,
            f"image too elongated: {width}x{height} would become {shorter_side}x{grown_long} "
            f"pixels once its shorter side is resized to {shorter_side} (limit {max_pixels:,})",
        )


def _full_load(img: Image.Image, path: Path | None) -> None:
    """Force the complete decode, so truncated data fails here and not later."""
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(path, f"refused as a possible decompression bomb: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(path, REASON_CORRUPT) from exc


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).convert("RGB")


def _minmax_to_uint8(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _integer_to_rgb(img: Image.Image) -> Image.Image:
    raw = np.asarray(img)
    if img.mode.startswith("I;16") or (raw.min() >= 0 and raw.max() <= 65535):
        # 16-bit data: scale 0..65535 onto 0..255 with rounding (65535 -> 255, 32768 -> 128),
        # in place in 32 bits (65535 * 255 + 32767 fits): a 25-megapixel image in 100 MB, not
        # the 800 MB of int64 temporaries.
        values = raw.astype(np.uint32)
        values *= 255
        values += 32767
        values //= 65535
        return _gray_to_rgb(values)
    return _gray_to_rgb(_minmax_to_uint8(raw.astype(np.int64)))


def _float_to_rgb(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    finite = np.isfinite(values)
    out = np.zeros(values.shape, dtype=np.uint8)
    if finite.any():
        good = values[finite]
        lo, hi = float(good.min()), float(good.max())
        if lo >= 0.0 and hi <= 1.0:
            out[finite] = np.rint(good * 255.0).astype(np.uint8)
        elif lo >= 0.0 and hi <= 255.0:
            out[finite] = np.rint(good).astype(np.uint8)
        else:
            out[finite] = _minmax_to_uint8(good)
    return _gray_to_rgb(out)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any common mode to 8-bit RGB.

    * ``RGB`` is returned as is (the same object).
    * Transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, and ``P``/``L``/
      ``RGB`` images with a ``transparency`` entry) is composited onto a white background,
      not simply dropped, so transparent regions come out white rather than whatever colour
      the invisible pixels happened to store.
    * 16-bit integer modes (``I;16``, ``I;16B``, ...) are scaled from 0..65535 onto 0..255
      (not clipped). 32-bit ``I`` is treated the same way when its values fit in 0..65535
      (that is how Pillow may hand over 16-bit PNGs), otherwise it is min-max rescaled.
    * 32-bit float ``F`` is taken as 0..1 when its values fit there, as 0..255 when they fit
      there, and min-max rescaled otherwise; NaN and infinities become 0.
    * Everything else (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ...) uses Pillow's conversion.

    Args:
        img: A loaded Pillow image.

    Returns:
        An RGB image.

    Raises:
        ValueError: If Pillow cannot convert the mode to RGB.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info
    ):
        return _composite_on_white(img)
    if mode == "I" or mode.startswith("I;16"):
        return _integer_to_rgb(img)
    if mode == "F":
        return _float_to_rgb(img)
    return img.convert("RGB")


def load_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode an image completely and return it as 8-bit RGB, refusing bad input.

    Steps: refuse empty input; open lazily (header only) and refuse anything whose
    ``width * height`` exceeds ``max_pixels`` *before* any pixel data is decoded; decode fully
    (``img.load()``) so truncated data is detected now (``ImageFile.LOAD_TRUNCATED_IMAGES`` is
    never enabled here); apply the EXIF orientation (``ImageOps.exif_transpose``; a malformed
    EXIF block is ignored rather than failing the image); convert to RGB with :func:`to_rgb`
    (transparency is composited onto white; 16-bit data is scaled, not clipped). Only the first
    frame of animated or multi-page files is used.

    Pillow's global guard (``PIL.Image.MAX_IMAGE_PIXELS``) applies too: images it flags,
    with a warning or an error, are refused as well, so the effective limit is the smaller
    of the two.

    Args:
        source: A file path, or the encoded bytes of an image (e.g. an HTTP request body).
        max_pixels: Largest accepted ``width * height`` (as stored in the file).
        draft_size: If given, JPEG files may be decoded at a reduced scale (1/2, 1/4, 1/8,
            by the decoder itself, which is much faster) as long as both sides stay at least
            ``draft_size`` pixels. ``None`` decodes at full resolution.

    Returns:
        A new RGB image, independent of any open file.

    Raises:
        ImageDecodeError: With the path (``None`` for bytes) and a reason: ``"empty file"``,
            ``"truncated or corrupt image data"``, ``"not an image (unrecognised format)"``,
            ``"image too large: ..."`` (size and limit), ``"file not found"``, and so on.
    """
    img, path = _open(source, max_pixels)
    try:
        if draft_size is not None:
            _check_resized_area(img, path, draft_size, max_pixels)
        if draft_size is not None and img.format == "JPEG":
            img.draft(None, (draft_size, draft_size))
        _full_load(img, path)
        try:
            oriented = ImageOps.exif_transpose(img)
        except _DECODE_ERRORS:  # unreadable EXIF: keep the stored orientation
            oriented = img.copy()
        try:
            rgb = to_rgb(oriented)
        except ValueError as exc:
            raise ImageDecodeError(path, f"unsupported image mode {img.mode!r}") from exc
    finally:
        img.close()
    return rgb


def verify_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    full_decode: bool = False,
    draft_size: int | None = None,
) -> None:
    """Check that an image is usable, without keeping its pixels.

    The fast check (default) reads the header, applies the size limit and runs Pillow's
    ``verify()`` (which, e.g., checks PNG chunk checksums). It catches empty files, non-images,
    oversized images and many corrupt files, but not every truncated JPEG; ``full_decode=True``
    runs the complete :func:`load_image` and, given the ``draft_size`` the images will be
    resized to, catches everything that would fail in training (a thin image that resizing
    would blow up too).

    Args:
        source: A file path or encoded bytes.
        max_pixels: Largest accepted ``width * height``.
        full_decode: Decode all pixel data instead of the fast header check.
        draft_size: With ``full_decode``: the side the images will be resized to, as for
            :func:`load_image`.

    Raises:
        ImageDecodeError: If the image is unusable, as for :func:`load_image`.
    """
    if full_decode:
        load_image(source, max_pixels=max_pixels, draft_size=draft_size)
        return
    img, path = _open(source, max_pixels)
    try:
        img.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        msg = f"refused as a possible decompression bomb: {exc}"
        raise ImageDecodeError(path, msg) from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(path, REASON_CORRUPT) from exc
    finally:
        img.close()
