"""The learning-rate range test: which ``--lr`` to train with, from a hundred steps.

Smith, *Cyclical Learning Rates for Training Neural Networks* (2017, Sec. 3.3), in the form
fastai's ``lr_find`` and Lightning's ``Tuner.lr_find`` made common: train while the learning rate
grows exponentially from tiny to huge, and read the loss. Past its lowest point the steps are too
large: that lr is the largest that still trains, the peak of a one-cycle or warmed-up schedule
(Smith 2018). The sweep runs inside :meth:`Trainer.trial`, so the model, optimizer and data
position are restored afterwards.

The reading is the minimum of a *centred* average of the losses. The running (exponential)
average that fastai and Lightning read lags: its minimum comes later, at a larger lr, by about
``1 / (1 - beta)`` steps (fastai's 0.98 over 100 steps: 50 steps, three decades of lr), which is
why their rules back off from it by 10x or read the steepest slope instead. The steepest slope
was tried here and rejected: on ResNet-20 / CIFAR-10 the loss falls evenly over three decades,
so the steepest point is wherever the noise is (it landed on 1e-6, the first steps, and on a dip
beside the minimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnetkit.figure_io import save_png

if TYPE_CHECKING:
    from resnetkit.train.trainer import Trainer

#: The running average that decides when the loss has blown up (it must be causal).
SMOOTHING = 0.9
#: Half the width of the centred average, in decades of lr.
HALF_WINDOW = 0.125


@dataclass(frozen=True)
class LRSweep:
    """What a range test measured.

    Attributes:
        lrs: the learning rate of each step (the recipe's ``lr`` field: with a
            ``backbone_lr_mult`` the backbone ran at that multiple of it).
        losses: the training loss of each step.
        smoothed: ``losses`` averaged over a quarter of a decade of lr around each step.
        suggested: the lr of the lowest ``smoothed`` loss: the largest that still trains.
        stopped: why the sweep ended: ``end`` (all steps run), ``exploded`` (the running
            average of the loss rose above ``diverge_factor`` times its minimum) or
            ``diverged`` (NaN or inf).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested: float
    stopped: str


def running_average(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Exponential moving average with bias correction (the first values are not pulled to 0)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def centred_average(
    lrs: list[float], losses: list[float], half_window: float = HALF_WINDOW
) -> list[float]:
    """Each loss averaged with those whose lr is within ``half_window`` decades of its own
    (fewer at the ends): no lag, so the minimum stays where it is."""
    if len(lrs) != len(losses):
        raise ValueError(f"{len(lrs)} learning rates for {len(losses)} losses")
    x, y = np.log10(lrs), np.asarray(losses, dtype=np.float64)
    out = []
    for centre in x:
        near = np.abs(x - centre) <= half_window + 1e-12
        out.append(float(y[near].mean()))
    return out


def find_lr(
    trainer: Trainer,
    *,
    start: float = 1e-6,
    end: float = 10.0,
    steps: int = 100,
    diverge_factor: float = 4.0,
) -> LRSweep:
    """Run the range test on ``trainer``'s model, data and recipe (batch size, momentum, weight
    decay, augmentation: all as the run will have them), then restore everything.

    Args:
        trainer: a :class:`Trainer` not yet run (or between runs).
        start: the first learning rate.
        end: the last, reached at step ``steps``, unless the loss explodes before.
        steps: how many learning rates the sweep tries, one training step each (and one step
            more, to see the last one's effect); the steps cycle through the data.
        diverge_factor: stop once the running average of the loss exceeds this many times
            its minimum.

    Raises:
        ValueError: a bad range, or under ``torchrun`` (run the test in one process: the
            processes would have to agree on when to stop).
    """
    import torch

    from resnetkit.train.errors import TrainingDiverged

    if not (0 < start < end) or not math.isfinite(end):
        raise ValueError(f"the lr range must satisfy 0 < start < end, got {start} .. {end}")
    if steps < 5:
        raise ValueError(f"an lr sweep needs at least 5 steps, got {steps}")
    if trainer.dist.enabled:
        raise ValueError("find the lr in one process (without torchrun), then train with it")
    base = trainer.recipe.lr
    if base <= 0:
        raise ValueError("the recipe's lr is 0 (a frozen run): nothing to sweep")
    ratio = end / start

    def multiplier(step: int) -> float:  # of the recipe's lr, as the run's own scheduler
        return start * ratio ** (step / (steps - 1)) / base

    lrs: list[float] = []
    losses: list[float] = []
    stopped = "end"
    # A step's loss is measured before its update: it shows what the *previous* step's lr did.
    # So each loss is paired with the lr of the last step that trained, and one step more than
    # ``steps`` is run to see the last lr's effect.
    applied: float | None = None
    with trainer.trial() as groups:
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, multiplier)
        for taken, group in enumerate(groups, 1):
            lr = trainer.optimizer.param_groups[0]["lr"]  # the head's: the recipe's lr field
            try:
                loss, _, seen = trainer._train_step(group)
            except TrainingDiverged:
                stopped = "diverged"
                break
            if not seen:  # every image of the step failed to decode: no update either
                continue
            if applied is not None:
                lrs.append(applied)
                losses.append(float(loss) / seen)
                running = running_average(losses)
                if len(losses) > 1 and running[-1] > diverge_factor * min(running):
                    stopped = "exploded"
                    break
            applied = lr
            if taken > steps:
                break
    if not lrs:
        raise ValueError(
            "no step of the sweep trained (the loss was not finite from the first step, or "
            "every batch failed to decode): check the data and the model"
        )
    smoothed = centred_average(lrs, losses)
    return LRSweep(lrs, losses, smoothed, lrs[int(np.argmin(smoothed))], stopped)


def describe(sweep: LRSweep) -> str:
    """The sweep's answer, for people."""
    why = {
        "end": "ran all its steps",
        "exploded": "stopped when the loss rose far above its minimum",
        "diverged": "stopped when the loss became NaN or infinite",
    }[sweep.stopped]
    lines = [
        f"lr sweep: {len(sweep.lrs)} steps from {sweep.lrs[0]:.2g} to {sweep.lrs[-1]:.2g}, {why}",
        f"  lowest loss {min(sweep.smoothed):.4f} (averaged) at lr {sweep.suggested:.3g}",
    ]
    if sweep.suggested == sweep.lrs[-1] and sweep.stopped == "end":
        lines.append(
            "  the loss still fell at the largest lr tried: no limit found (more --find-lr "
            "steps, or the loss is not learning)"
        )
    elif sweep.suggested == sweep.lrs[0] and len(sweep.lrs) > 1:
        lines.append(
            "  the loss never fell below its start: check the data and the model; no lr suggested"
        )
    else:
        lines.append(
            f"  suggested --lr {sweep.suggested:.2g}: the largest lr that still trained (Smith "
            "2018: the peak of a one-cycle schedule); if a run at it diverges early, add "
            "--warmup-iters or take a third of it"
        )
    return "\n".join(lines)


def plot_sweep(sweep: LRSweep, path: str | Path, title: str | None = None) -> Path:
    """Loss against learning rate (log scale), raw and averaged, the suggestion marked."""
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import

    path = Path(path)
    fig = Figure(figsize=(7, 4.5), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(sweep.lrs, sweep.losses, color="0.75", linewidth=1, label="loss of each step")
    ax.plot(
        sweep.lrs, sweep.smoothed, color="tab:blue", linewidth=2, label="averaged over 1/4 decade"
    )
    ax.axvline(
        sweep.suggested, color="tab:red", linestyle="--", label=f"lowest: {sweep.suggested:.2g}"
    )
    ax.set_xscale("log")
    top = min(max(sweep.smoothed), 2 * sweep.smoothed[0])  # keep the explosion from flattening
    ax.set_ylim(min(sweep.smoothed) * 0.9, top * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title or "learning-rate range test")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_png(fig, path)
