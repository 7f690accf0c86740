"""Rehearsals: training steps that leave no trace, to measure a run before it starts (its
pace and length for --dry-run, the lr finder's sweep)."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from resnetkit.train.checkpoint import latest_checkpoint
from resnetkit.train.schedule import lr_multiplier

if TYPE_CHECKING:
    from resnetkit.train.trainer import Trainer


@contextlib.contextmanager
def trial(t: Trainer) -> Iterator[Iterator[list[tuple[Tensor, Tensor]]]]:
    """Training steps that leave no trace, for measuring (:func:`plan`, the lr finder).

    Yields the step groups (see :meth:`Trainer._batches`) epoch after epoch, without end; on
    leaving, the weights, BatchNorm statistics, EMA, optimizer, scheduler (also if the caller
    swapped in another), scaler, random state and position in the data are as they were, so a
    run started afterwards is the run it would have been.
    """
    saved_model = copy.deepcopy(t.model.state_dict())
    saved_ema = copy.deepcopy(t.ema.state_dict()) if t.ema is not None else None
    saved_optimizer = copy.deepcopy(t.optimizer.state_dict())
    scheduler, saved_scheduler = t.scheduler, t.scheduler.state_dict()
    saved_scaler = t.scaler.state_dict()
    saved_rng = torch.get_rng_state()
    saved_cuda_rng = torch.cuda.get_rng_state(t.device) if t.device.type == "cuda" else None
    position = (t.step, t.epoch, t.batch_in_epoch)
    last_good = t._last_good_batch  # what an undecodable DDP batch is replaced by
    modes = [(module, module.training) for module in t.model.modules()]  # frozen BNs

    def groups() -> Iterator[list[tuple[Tensor, Tensor]]]:
        while True:
            for group in t._batches():
                yield group
                # As the training loop counts: mixup/cutmix draw each step's mix from it.
                t.step, t.batch_in_epoch = t.step + 1, t.batch_in_epoch + 1
            t.epoch, t.batch_in_epoch = t.epoch + 1, 0

    t._set_train_mode()
    try:
        yield groups()
    finally:
        t.model.load_state_dict(saved_model)
        if t.ema is not None and saved_ema is not None:
            t.ema.load_state_dict(saved_ema)
        t.optimizer.load_state_dict(saved_optimizer)
        t.scheduler = scheduler
        scheduler.load_state_dict(saved_scheduler)
        t.scaler.load_state_dict(saved_scaler)
        torch.set_rng_state(saved_rng)
        if saved_cuda_rng is not None:
            torch.cuda.set_rng_state(saved_cuda_rng, t.device)
        t.step, t.epoch, t.batch_in_epoch = position
        t._last_good_batch = last_good
        for module, training in modes:
            module.train(training)


def plan(t: Trainer, steps: int = 5) -> dict[str, Any]:
    """What this run would do and about how long it would take, writing nothing: the data,
    the schedule (lr at its turning points) and the pace of ``steps`` timed training steps
    after one untimed warm-up step (which pays for torch.compile). The steps leave no trace
    (see :func:`trial`)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    timings: list[float] = []
    with trial(t) as groups:
        for index, group in enumerate(groups):
            start = time.monotonic()
            t._train_step(group)
            if t.device.type == "cuda":
                torch.cuda.synchronize(t.device)
            if index > 0:
                timings.append(time.monotonic() - start)
            if len(timings) == steps:
                break
    per_step = sorted(timings)[len(timings) // 2]
    recipe, total = t.recipe, t.total_iters
    # --resume: what is left from the latest checkpoint (its name holds its step)
    latest = latest_checkpoint(t.ckpt_root) if t.spec.resume else None
    done = min(int(latest.name.rsplit("-", 1)[1]), total) if latest is not None else 0
    turns = {0, recipe.warmup_iters, total // 2, total - 1}
    if recipe.schedule == "multistep":
        turns |= {m for m in recipe.milestones if m < total}
    multiplier = lr_multiplier(recipe, total)
    return {
        "model": t.arch,
        "dataset": t.spec.dataset,
        "train_images": len(t.data.train_labels),
        "eval_images": t.data.eval_counts,
        "train_size": t.data.train_size,
        "eval_size": int(t.data.preprocessing["input_size"]),
        "eval_resize": int(t.data.preprocessing["resize"]),
        "batch_size": recipe.batch_size,
        "iters_per_epoch": t.iters_per_epoch,
        "total_iters": total,
        "epochs": t.epochs,
        "schedule": recipe.schedule,
        "lr_at_step": {step: recipe.lr * multiplier(step) for step in sorted(turns)},
        "timed_steps": len(timings),
        "seconds_per_step": per_step,
        "images_per_second": recipe.batch_size / per_step,
        "from_step": done,
        "estimated_hours": (total - done) * per_step / 3600,
        "threads": torch.get_num_threads(),
        "device": str(t.device),
    }
