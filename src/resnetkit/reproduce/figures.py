"""Figures people want to look at: the degradation plot, layer responses and training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnetkit.figure_io import save_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DEPTH_COLOURS = {20: "#1f77b4", 32: "#2ca02c", 44: "#9467bd", 56: "#d62728", 110: "#ff7f0e"}


def _depth(name: str) -> int:
    return int("".join(ch for ch in name if ch.isdigit()) or 0)


def plot_degradation(summary: dict[str, Any], path: Path) -> Path:
    """Paper Fig. 6 style: training (left) and test (right) error against iterations;
    plain nets dashed, ResNets solid, one colour per depth."""
    fig = _figure(figsize=(11, 4.2), dpi=150)
    axes = fig.subplots(1, 2, sharey=True)
    for name, curve in summary["models"].items():
        if not curve["step"]:
            continue
        plain = name.startswith("plain")
        label = f"{'plain' if plain else 'ResNet'}-{_depth(name)}"
        if curve.get("paper_test_error") is not None:
            label += f" (paper: {curve['paper_test_error']:g}% test)"
        style = {
            "color": _DEPTH_COLOURS.get(_depth(name), "black"),
            "linestyle": "--" if plain else "-",
            "linewidth": 1.6 if plain else 2.2,
            "label": label,
        }
        for ax, xs, ys in (
            (axes[0], curve["step"], curve["train_error"]),
            (axes[1], curve["test_step"], curve["test_error"]),
        ):
            # a run followed early has one or two points: a line alone would not show them
            dots = {"marker": "o", "markersize": 4} if len(xs) < 3 else {}
            ax.plot(xs, ys, **style, **dots)
    for ax, title in zip(axes, ("training error", "test error"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%)")
    axes[1].legend(loc="upper right")
    recipe = summary["recipe"]
    images = f"{summary['train_subset']:,}" if summary["train_subset"] else "all 50,000"
    warmup = recipe.get("warmup_iters", 0)
    title = (
        f"Degradation on CIFAR-10: {images} training images, {recipe['max_iters']:,} iterations "
        f"at batch {recipe['batch_size']}, "
        + (f"lr warm-up over {warmup} iterations" if warmup else "no lr warm-up")
        + "; plain dashed, ResNet solid"
    )
    unfinished = [
        f"{name} {curve['iterations']:,}"
        for name, curve in summary["models"].items()
        if not curve.get("complete", True)
    ]
    if unfinished:  # a long run followed while it trains
        title += "\nIN PROGRESS, iterations so far: " + ", ".join(unfinished)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def plot_responses(summary: dict[str, Any], path: Path) -> Path:
    """Paper Fig. 7 style: the std of each 3x3 layer's response in layer order (top) and sorted
    from largest to smallest (bottom); plain nets dashed, ResNets solid, one colour per depth."""
    fig = _figure(figsize=(8, 7), dpi=150)
    axes = fig.subplots(2, 1)
    for label, entry in summary["models"].items():
        arch = str(entry.get("arch") or label)
        plain = arch.startswith("plain")
        style = {
            "color": _DEPTH_COLOURS.get(_depth(arch), None),
            "linestyle": "--" if plain else "-",
            "linewidth": 1.4 if plain else 1.8,
            "label": f"{label} (test top-1 {entry['top1']:.1f}%)",
        }
        stds = entry["std"]
        index = range(1, len(stds) + 1)
        axes[0].plot(index, stds, **style)
        axes[1].plot(index, sorted(stds, reverse=True), **style)
    axes[0].set_xlabel("layer index (original order)")
    axes[1].set_xlabel("layer index (sorted by magnitude)")
    for ax in axes:
        ax.set_ylabel("std of response")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Layer responses on {summary['dataset']} {summary['split']}: std after BN, before "
        "ReLU/addition, of each 3x3 layer; plain dashed, ResNet solid",
        fontsize=10,
    )
    fig.tight_layout()
    return save_png(fig, path)


_SPLIT_COLOURS = {"train": "#1f77b4", "val": "#2ca02c", "test": "#d62728"}
_SPLIT_STYLES = {"train": ":", "val": "-.", "test": "-"}
_RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def plot_training_curves(
    runs: Sequence[dict[str, Any]] | Mapping[str, Sequence[dict[str, Any]]],
    path: Path,
    title: str = "",
    x: str = "epoch",
) -> Path:
    """Loss and top-1 error (train and every evaluated split) from metrics.jsonl rows; for a
    multi-label run (rows with ``*_exact``, no ``*_top1``) the exact-match error.

    ``runs`` is one run's rows, or rows by run label to compare runs in one figure: then each
    run has a colour and each split a line style (train dotted, val dash-dot, test solid).
    ``x`` is ``"epoch"`` or ``"step"`` (iterations: runs with other batch sizes or epoch
    lengths line up by the number of updates).
    """
    if x not in ("epoch", "step"):
        raise ValueError(f"x must be 'epoch' or 'step', got {x!r}")
    by_run = dict(runs) if isinstance(runs, Mapping) else {"": runs}
    fig = _figure(figsize=(11, 4.2), dpi=150)
    loss_ax, err_ax = fig.subplots(1, 2)
    every = [r for rows in by_run.values() for r in rows]
    multi_label = any("train_exact" in r for r in every) and not any(
        "train_top1" in r for r in every
    )
    score = "exact" if multi_label else "top1"
    for index, (label, rows) in enumerate(by_run.items()):
        for split in ("train", "val", "test"):
            points = [r for r in rows if f"{split}_{score}" in r]
            if not points:
                continue
            xs = [r[x] for r in points]
            if len(by_run) == 1:
                style: dict[str, Any] = {"color": _SPLIT_COLOURS[split], "label": split}
            else:
                style = {
                    "color": _RUN_COLOURS[index % len(_RUN_COLOURS)],
                    "linestyle": _SPLIT_STYLES[split],
                    "label": f"{label} {split}",
                }
            if split != "train":  # evaluated every few epochs: show where
                style["marker"] = "o"
                style["markersize"] = 3
            with_loss = [r for r in points if f"{split}_loss" in r]
            loss_ax.plot(
                [r[x] for r in with_loss], [r[f"{split}_loss"] for r in with_loss], **style
            )
            err_ax.plot(xs, [100 - r[f"{split}_{score}"] for r in points], **style)
    loss_ax.set_title("loss")
    err_ax.set_title("top-1 error (%)" if score == "top1" else "exact-match error (%)")
    for ax in (loss_ax, err_ax):
        ax.set_xlabel("iterations" if x == "step" else "epoch")
        ax.grid(alpha=0.3)
    err_ax.legend(fontsize=8 if len(by_run) > 2 else 10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def _figure(figsize: tuple[float, float], dpi: int) -> Figure:
    """A new figure; matplotlib is imported here, not with the training code that imports
    this module (half a second of every ``import resnetkit.train.trainer``)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)
