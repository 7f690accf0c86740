"""What the service accepts from a client, and how it refuses the rest: :class:`ApiError`,
JSON bodies of base64 images (:func:`images_from_json`)."""

from __future__ import annotations

import base64
import binascii
import json
import reprlib
from typing import Any

#: Keys of a JSON body that carry images: one, a list, or KServe/TF Serving's instances.
JSON_KEYS = ("image", "images", "instances")
#: Content types a multipart part may declare (besides none at all and ``image/*``).
GENERIC_PART_TYPES = ("application/octet-stream",)


class ApiError(Exception):
    """A request the service refuses: answered with ``status`` and ``{"error", "detail"}``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


def too_many_images(count: int, limit: int) -> ApiError:
    """The 413 for ``count`` images in a request that may hold ``limit``, with what to do."""
    return ApiError(
        413,
        "too_many_images",
        f"{count} images in one request; at most {limit} are accepted: send them in requests "
        f"of {limit} or fewer, or start the service with a larger --max-images",
    )


def images_from_json(body: bytes, limit: int) -> tuple[list[str | None], list[bytes]]:
    """The images of a JSON body, base64-decoded, with their names (``None`` when not given):
    ``{"image": B64}``, ``{"images": [B64 | {"name", "data": B64}, ...]}`` or KServe's and TF
    Serving's ``{"instances": [{"b64": B64}, ...]}``; standard or URL-safe base64, padded or
    not, or ``data:image/...;base64,`` URLs.

    Raises:
        ApiError: not JSON, no image key, a malformed item, bad base64, more than ``limit``
            images.
    """
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty: send an image")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {err}") from None
    shape = (
        '{"image": "<base64>"}, {"images": ["<base64>" or {"name": ..., "data": '
        '"<base64>"}, ...]} or {"instances": [{"b64": "<base64>"}, ...]}'
    )
    keys = [k for k in JSON_KEYS if isinstance(document, dict) and k in document]
    if len(keys) != 1:
        found = sorted(document)[:5] if isinstance(document, dict) else type(document).__name__
        raise ApiError(400, "no_image", f"expected a JSON object {shape}; found {found}")
    items = document[keys[0]]
    items = [items] if keys[0] == "image" else items
    if not isinstance(items, list) or not items:
        raise ApiError(400, "no_image", f"{keys[0]!r} must be a non-empty list: {shape}")
    if len(items) > limit:
        raise too_many_images(len(items), limit)
    names: list[str | None] = []
    data: list[bytes] = []
    for i, item in enumerate(items):
        name, text = _json_image(item, i, len(items), shape)
        names.append(name)
        data.append(_b64decode(text, describe_image(name, i, len(items))))
    return names, data


def _json_image(item: Any, index: int, count: int, shape: str) -> tuple[str | None, str]:
    """``(name, base64 text)`` of one JSON image item: a string, or an object with ``data``
    or ``b64`` (and optionally ``name``)."""
    if isinstance(item, str):
        return None, item
    if isinstance(item, dict):
        name = item.get("name")
        text = item.get("data", item.get("b64"))
        if isinstance(text, str) and (name is None or isinstance(name, str)):
            return name, text
    raise ApiError(
        400,
        "no_image",
        f"{describe_image(None, index, count)} is {type(item).__name__} "
        f"{reprlib.repr(item)}: each image is a base64 string or an object with a base64 "
        f"'data' (or 'b64') and a 'name': {shape}",
    )


def _b64decode(text: str, what: str) -> bytes:
    """Standard or URL-safe base64, with or without padding and line breaks, or a data URL.

    Raises:
        ApiError: 400 ``invalid_base64``, or 415 for a data URL of another media type.
    """
    if text.startswith("data:"):
        header, comma, payload = text.partition(",")
        media = header[5:].split(";")[0].strip().lower()
        if not comma or not header.endswith(";base64"):
            raise ApiError(
                400, "invalid_base64", f"{what}: a data URL must be data:image/...;base64,<data>"
            )
        if media and not media.startswith("image/") and media not in GENERIC_PART_TYPES:
            raise ApiError(
                415, "unsupported_media_type", f"{what}: the data URL says {media!r}, not image/*"
            )
        text = payload
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return base64.b64decode(compact, altchars=b"-_", validate=True)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(
            400,
            "invalid_base64",
            f"{what}: not valid base64 ({err}); send the file's bytes base64-encoded",
        ) from None


def describe_image(filename: str | None, index: int, count: int) -> str:
    """How an error names one image of a request: "the image", or "image 2 of 3 ('a.png')"."""
    if count == 1 and not filename:
        return "the image"
    return f"image {index + 1} of {count}" + (f" ({filename!r})" if filename else "")
