"""Figures people want to look at: the degradation plot and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

_DEPTH_COLOURS = {20: "#1f77b4", 32: "#2ca02c", 44: "#9467bd", 56: "#d62728", 110: "#ff7f0e"}


def _depth(name: str) -> int:
    return int("".join(ch for ch in name if ch.isdigit()) or 0)


def plot_degradation(summary: dict[str, Any], path: Path) -> Path:
    """Paper Fig. 6 style: training (left) and test (right) error against iterations;
    plain nets dashed, ResNets solid, one colour per depth."""
    fig = Figure(figsize=(11, 4.2), dpi=150)
    axes = fig.subplots(1, 2, sharey=True)
    for name, curve in summary["models"].items():
        if not curve["step"]:
            continue
        plain = name.startswith("plain")
        style = {
            "color": _DEPTH_COLOURS.get(_depth(name), "black"),
            "linestyle": "--" if plain else "-",
            "linewidth": 1.6 if plain else 2.2,
            "label": f"{'plain' if plain else 'ResNet'}-{_depth(name)}",
        }
        axes[0].plot(curve["step"], curve["train_error"], **style)
        axes[1].plot(curve["test_step"], curve["test_error"], **style)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_training_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss and top-1 error per epoch (train and every evaluated split) from metrics.jsonl rows."""
    fig = Figure(figsize=(11, 4.2), dpi=150)
    loss_ax, err_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], label="train", color="#1f77b4")
    err_ax.plot(epochs, [100 - r["train_top1"] for r in rows], label="train", color="#1f77b4")
    for split, colour in (("val", "#2ca02c"), ("test", "#d62728")):
        points = [(r["epoch"], r) for r in rows if f"{split}_top1" in r]
        if points:
            xs = [e for e, _ in points]
            loss_ax.plot(
                xs, [r[f"{split}_loss"] for _, r in points], "o-", label=split, color=colour
            )
            err_ax.plot(
                xs, [100 - r[f"{split}_top1"] for _, r in points], "o-", label=split, color=colour
            )
    loss_ax.set_title("loss")
    err_ax.set_title("top-1 error (%)")
    for ax in (loss_ax, err_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
