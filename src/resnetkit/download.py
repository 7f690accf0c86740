"""Downloads that never leave a partial or unverified file behind.

A file is streamed to a temporary name beside its target, its digest checked, and only then
renamed into place (atomically), so an interrupted or tampered download is never mistaken
for a good one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20


class ChecksumError(OSError):
    """A downloaded or cached file does not have the expected checksum."""


def usual_mode(path: Path) -> None:
    """Give a file (or folder) the permissions a plain ``open`` would, under the umask:
    temporary files, temporary folders and safetensors' own writes are private (0600/0700),
    which would leave a model directory unreadable to anyone else."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str,
    target: Path,
    algorithm: str,
    expected: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    verify: Callable[[Path], None] | None = None,
) -> None:
    """Stream ``url`` to ``target``, checking that its ``algorithm`` hex digest starts with
    ``expected`` (a full digest, or a prefix such as torchvision's 8 characters; ``""``
    checks nothing, for a caller that verifies the file itself). ``headers`` go with the
    request (an ``Authorization`` token) but not with a redirect it answers with. ``verify``
    checks the downloaded file before it takes the target's name (raising to refuse it).

    Raises:
        ChecksumError: the digest does not match; nothing is left at ``target``.
        OSError, http.client.HTTPException: the download failed (no network, HTTP error).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.new(algorithm, usedforsecurity=False)
        request = urllib.request.Request(url)
        for key, value in (headers or {}).items():
            # Not copied onto a redirect: a token for the Hub stays off its CDN's host.
            request.add_unredirected_header(key, value)
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=timeout) as response,
        ):
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if not actual.startswith(expected.lower()):
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {algorithm} {expected.lower()}"
                f"{'...' if len(expected) < len(actual) else ''}, got {actual}; the download "
                "was deleted"
            )
        if verify is not None:
            verify(tmp)
        usual_mode(tmp)  # mkstemp's file is private (0600)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
