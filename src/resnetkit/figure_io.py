"""Writing figures: whole or not at all."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_png(fig: Figure, path: Path, dpi: float | None = None) -> Path:
    """Write ``fig`` as PNG under ``path`` (the name as given, whatever its suffix), atomically:
    a kill or a full disk mid-write leaves the old file, not a truncated one that a later run
    would refuse to replace."""
    from resnetkit.train.checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return path
