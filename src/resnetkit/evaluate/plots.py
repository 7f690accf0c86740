"""Confusion-matrix figures, drawn with matplotlib's object API (no pyplot, no global state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Above this many classes the cells are too small for their counts to be readable.
MAX_CLASSES_WITH_COUNTS = 20


def plot_confusion(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Save a confusion matrix as a PNG.

    Colours are row-normalised (the fraction of each true class predicted as each class), so
    classes with few images are as visible as large ones; the counts are written in the cells
    when there are at most 20 classes.

    Args:
        matrix: (N, N) counts, rows the true class and columns the predicted one.
        classes: the N class names.
        path: the PNG to write (parent folders are created).
        title: drawn above the matrix.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import

    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({n}, {n})")
    rows = counts.sum(1, keepdims=True)
    fractions = counts / np.maximum(rows, 1)

    side = min(max(6.0, 0.45 * n + 3.0), 20.0)
    label_size = 10 if n <= 20 else max(5, int(10 - n / 15))
    fig = Figure(figsize=(side + 1.5, side), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")

    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=list(classes), rotation=45, ha="right", fontsize=label_size)
    ax.set_yticks(ticks, labels=list(classes), fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    if n <= MAX_CLASSES_WITH_COUNTS:
        for i in range(n):
            for j in range(n):
                if counts[i, j] == 0:
                    continue
                colour = "white" if fractions[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=8 if n > 10 else 9,
                )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=150)
    return path
