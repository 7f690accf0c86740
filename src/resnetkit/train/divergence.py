"""A run that diverged: a NaN or infinite loss or weights stop it, naming the step and the
last good checkpoint.

On an accelerator a step does not wait for the device: the first non-finite loss is recorded
there (:func:`record_bad`) and looked at later (:func:`deferred_error`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from resnetkit.text import first_few, plural
from resnetkit.train.checkpoint import latest_checkpoint
from resnetkit.train.errors import TrainingDiverged


def kept(ckpt_root: Path) -> str:
    """Where a stopped run can go back to."""
    folder = latest_checkpoint(ckpt_root)
    return f"The last good checkpoint is kept: {folder}" if folder else "No checkpoint was written"


def diverged_error(loss: str, step: int, epoch: int, ckpt_root: Path) -> TrainingDiverged:
    return TrainingDiverged(
        f"loss is {loss} at step {step} (epoch {epoch}); stopped. {kept(ckpt_root)}. "
        "Lower --lr, add --grad-clip 1.0 or --warmup-iters."
    )


def check_finite_weights(model: nn.Module, step: int, ckpt_root: Path) -> None:
    """A finite loss can still leave NaN or infinite weights or BatchNorm statistics (an
    lr far too high): stop before they reach a checkpoint or an evaluation."""
    tensors = [
        (name, t)
        for name, t in (*model.named_parameters(), *model.named_buffers())
        if t.is_floating_point()
    ]
    if not tensors:
        return
    # One wait for the device for all of them, not one per tensor.
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors]).tolist()
    bad = [name for (name, _), ok in zip(tensors, finite, strict=True) if not ok]
    if bad:
        shown = first_few(bad, 3)
        raise TrainingDiverged(
            f"{plural(len(bad), 'weight tensor')} became NaN or infinite by step {step} "
            f"({shown}); stopped. {kept(ckpt_root)}. Lower --lr, add --grad-clip 1.0 or "
            "--warmup-iters."
        )


def record_bad(
    loss: Tensor, step: int, first_bad_step: Tensor, first_bad_loss: Tensor
) -> tuple[Tensor, Tensor]:
    """The first step whose loss was not finite, and that loss, updated on the device with
    this ``step``'s ``loss`` (no wait for it)."""
    first = torch.isfinite(loss.detach()).logical_not() & (first_bad_step < 0)
    return (
        torch.where(first, step, first_bad_step),
        torch.where(first, loss.detach().float(), first_bad_loss),
    )


def deferred_error(
    first_bad_step: Tensor, first_bad_loss: Tensor, iters_per_epoch: int, ckpt_root: Path
) -> TrainingDiverged | None:
    """The error for a non-finite loss that :func:`record_bad` recorded, if any (one wait for
    the device)."""
    step = int(first_bad_step)
    if step < 0:
        return None
    epoch = step // max(iters_per_epoch, 1) + 1
    return diverged_error(str(float(first_bad_loss)), step, epoch, ckpt_root)


def not_finite(loss: Tensor) -> Tensor:
    """1.0 where the loss is NaN or infinite, else 0.0, as a one-element float tensor (ready
    for an all-reduce)."""
    return torch.isfinite(loss.detach()).logical_not().to(torch.float32).reshape(1)
