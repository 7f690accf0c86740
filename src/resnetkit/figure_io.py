"""Writing figures: whole or not at all."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_MISSING_GLYPH = re.compile(r"Glyph (\d+) \(.*\) missing from font\(s\) (.+?)\.?$")


def save_png(fig: Figure, path: Path, dpi: float | None = None) -> Path:
    """Write ``fig`` as PNG under ``path`` (the name as given, whatever its suffix), atomically:
    a kill or a full disk mid-write leaves the old file, not a truncated one that a later run
    would refuse to replace."""
    from resnetkit.train.checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(buffer, format="png", dpi=dpi)
    missing: dict[str, str] = {}  # glyph -> font, once each (matplotlib warns per drawing)
    for item in caught:
        found = _MISSING_GLYPH.match(str(item.message))
        if found:
            missing.setdefault(chr(int(found[1])), found[2])
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    if missing:
        shown = " ".join(list(missing)[:12]) + (" ..." if len(missing) > 12 else "")
        warnings.warn(
            f"{path}: {len(missing)} character(s) of its text are missing from the font "
            f"({', '.join(sorted(set(missing.values())))}) and show as boxes: {shown}. "
            "Install a font that has them (e.g. Noto Sans CJK for Chinese, Japanese or "
            "Korean class names) and put it first in matplotlib's rcParams['font.sans-serif']",
            UserWarning,
            stacklevel=2,
        )
    atomic_write_bytes(path, buffer.getvalue())
    return path
