"""Confusion-matrix and reliability figures, drawn with matplotlib's object API (no pyplot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resnetkit.figure_io import save_png

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
    return save_png(fig, path, dpi=150)


def plot_reliability(
    reliability: Sequence[dict[str, Any]],
    ece: float,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Save a reliability diagram: accuracy against confidence per confidence bin (bars), the
    diagonal a perfectly calibrated model would follow, and how many images fall in each bin.

    Args:
        reliability: the bins of :meth:`~resnetkit.evaluate.metrics.ConfusionMeter.calibration`.
        ece: the expected calibration error in percent, written on the plot.
        path: the PNG to write (parent folders are created).
        title: drawn above the plot.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    lower = np.array([b["lower"] for b in reliability]) * 100
    width = np.array([b["upper"] - b["lower"] for b in reliability]) * 100
    filled = [b["count"] > 0 for b in reliability]
    accuracy = np.array([b["accuracy"] if b["count"] else 0.0 for b in reliability])
    confidence = np.array([b["confidence"] if b["count"] else 0.0 for b in reliability])
    counts = np.array([b["count"] for b in reliability])

    fig = Figure(figsize=(5.5, 6.5), dpi=150, layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.bar(
        lower,
        accuracy,
        width=width,
        align="edge",
        color="#1f77b4",
        edgecolor="white",
        label="accuracy",
    )
    # From each bar's top to its bin's mean confidence: above the bar, overconfident; below
    # its top, underconfident.
    gaps = confidence - accuracy
    top.bar(
        lower[filled],
        gaps[filled],
        bottom=accuracy[filled],
        width=width[filled],
        align="edge",
        fill=False,
        hatch="///",
        edgecolor="#d62728",
        linewidth=0.8,
        label="gap to mean confidence",
    )
    top.plot([0, 100], [0, 100], "--", color="black", linewidth=1, label="calibrated")
    top.set_xlim(0, 100)
    top.set_ylim(0, 100)
    top.set_ylabel("accuracy (%)")
    top.legend(loc="upper left")
    top.text(97, 4, f"ECE {ece:.2f}%", ha="right", fontsize=11)
    top.grid(alpha=0.3)
    if title:
        top.set_title(title, fontsize=10)
    bottom.bar(lower, counts, width=width, align="edge", color="#7f7f7f", edgecolor="white")
    bottom.set_xlabel("confidence: top softmax probability (%)")
    bottom.set_ylabel("images")
    bottom.grid(alpha=0.3)
    path = Path(path)
    return save_png(fig, path, dpi=150)
