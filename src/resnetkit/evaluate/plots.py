"""Confusion-matrix, reliability and precision-recall figures, drawn with matplotlib's object
API (no pyplot)."""

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


def plot_risk_coverage(
    curve: dict[str, Any],
    chosen: dict[str, Any],
    target: float,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Save a risk-coverage curve (as accuracy): how often the answers are right against the
    share of images answered, most confident first, with the chosen threshold marked.

    Args:
        curve: :func:`~resnetkit.evaluate.selective.risk_coverage` of held-out images.
        chosen: :func:`~resnetkit.evaluate.selective.selective_scores` at the threshold on
            the same images (``coverage``, ``top1``, ``min_confidence``).
        target: the target accuracy (percent), drawn as a line.
        path: the PNG to write (parent folders are created).
        title: drawn above the plot.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=150, layout="constrained")
    ax = fig.subplots()
    ax.plot(curve["coverage"], curve["accuracy"], color="#1f77b4", linewidth=1.5,
            label=f"answers right (AURC {curve['aurc']:.2f}%)")  # fmt: skip
    ax.axhline(target, color="#7f7f7f", linestyle="--", linewidth=1, label=f"target {target:g}%")
    if chosen.get("coverage") is not None and chosen.get("top1") is not None:
        ax.plot([chosen["coverage"]], [chosen["top1"]], "o", color="#d62728",
                label=f"min confidence {chosen['min_confidence']:.4g}: "
                f"{chosen['coverage']:.1f}% answered, {chosen['top1']:.2f}% right")  # fmt: skip
    # the floor from 5% coverage on: the first points rest on a handful of images
    settled = [a for c, a in zip(curve["coverage"], curve["accuracy"], strict=True) if c >= 5]
    low = min(min(settled or curve["accuracy"]), target) - 2
    ax.set_xlim(0, 100)
    ax.set_ylim(max(low, 0), 100.5)
    ax.set_xlabel("images answered, most confident first (%)")
    ax.set_ylabel("answers right (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_png(fig, Path(path), dpi=150)


#: Above this many classes the legend names only the best and the worst.
MAX_CLASSES_IN_LEGEND = 12


def pr_steps(curve: dict[str, list[float]]) -> tuple[list[float], list[float]]:
    """A precision-recall curve (points from the highest threshold down) as the staircase
    average precision measures, to draw with ``where="pre"``: each point's precision over the
    recall it gained, from recall 0 (scikit-learn's ``PrecisionRecallDisplay`` draws the same
    steps), so the area under the drawn line is the AP (of the points a long curve keeps,
    :data:`~resnetkit.data.multilabel.CURVE_POINTS`)."""
    recall, precision = list(curve["recall"]), list(curve["precision"])
    if not recall:
        return [], []
    return [0.0, *recall], [precision[0], *precision]


def plot_pr_curves(
    curves: dict[str, Any], ap: dict[str, float | None], path: str | Path, title: str | None = None
) -> Path:
    """Save a multi-label model's precision-recall curves as a PNG: one thin line per class
    (its AP in the legend; beyond :data:`MAX_CLASSES_IN_LEGEND` classes only the six best
    and six worst are named) and the pooled ("micro") curve in black.

    Args:
        curves: ``pr_curves`` of :meth:`resnetkit.data.multilabel.MultiLabelMeter.summary`.
        ap: per-class average precision (percent), as the summary gives it.
        path: the PNG to write (parent folders are created).
        title: drawn above the curves.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    per_class = curves.get("classes") or {}
    if not per_class:
        raise ValueError("no class has a positive image: there is no precision-recall curve")
    ranked = sorted(per_class, key=lambda name: -(ap.get(name) or 0.0))
    named = set(ranked)
    if len(ranked) > MAX_CLASSES_IN_LEGEND:
        half = MAX_CLASSES_IN_LEGEND // 2
        named = set(ranked[:half] + ranked[-half:])
    fig = Figure(figsize=(7.5, 6), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    palette = colormaps["tab20"]
    for index, name in enumerate(ranked):
        recall, precision = pr_steps(per_class[name])
        score = ap.get(name)
        label = f"{name} (AP {score:.1f})" if name in named and score is not None else None
        ax.step(recall, precision, where="pre", linewidth=1.0, alpha=0.8,
                color=palette(index % 20), label=label)  # fmt: skip
    micro = curves.get("micro")
    if micro:
        recall, precision = pr_steps(micro)
        ax.step(recall, precision, where="pre", linewidth=2.2, color="black",
                label="all classes pooled")  # fmt: skip
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if len(named) > 8 else 9, loc="lower left")
    if title:
        ax.set_title(title)
    return save_png(fig, Path(path), dpi=150)
