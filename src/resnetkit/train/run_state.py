"""A run's checkpoint: what :meth:`Trainer.save` writes and how a resume puts it back.

The files themselves are checkpoint.py's; whether a checkpoint fits this run is resume.py's
and run_folder.py's. Here: the state a run carries across a restart (step, optimizer,
schedule, random streams, history, model selection, the epoch so far).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from resnetkit.train import distributed
from resnetkit.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint_tensors,
    save_checkpoint,
    state_dict_for_save,
)
from resnetkit.train.distributed import DistInfo
from resnetkit.train.recipe import Recipe
from resnetkit.train.resume import (
    check_finite,
    check_optimizer,
    check_tensors,
    damaged,
    read_state,
)
from resnetkit.train.run_folder import (
    RunOrigin,
    check_same_model_options,
    check_same_origin,
    check_same_recipe,
    check_same_run,
    read_run_json,
)

if TYPE_CHECKING:
    from resnetkit.train.trainer import Trainer


def run_facts(t: Trainer) -> dict[str, Any]:
    """What makes this run this run, beyond its recipe: resuming with any of it changed
    would train another model on other data under the same step counter."""
    return {
        "model": t.arch,
        "architecture": t.arch_config,
        # not a config field, but it changes what every step trains
        "drop_path_rate": float(t.spec.model_options.get("drop_path_rate", 0.0)),
        "dataset": t.spec.dataset,
        "classes": list(t.classes),
        "train_images": len(t.data.train_labels),
        "input_size": t.data.preprocessing["input_size"],  # the saved model's
        "train_size": t.data.train_size,  # --image-size of folders
        "iters_per_epoch": t.iters_per_epoch,
        # the teacher's weights (its name is in the recipe): another is another run
        "teacher_sha256": t.teacher.sha256 if t.teacher is not None else None,
        **t.spec.origin.facts(),  # checked on their own: check_same_origin
    }


def run_state(t: Trainer, streams: list[Any]) -> dict[str, Any]:
    """state.pt's contents; ``streams``: every process's random streams, in rank order."""
    return {
        "step": t.step,
        "epoch": t.epoch,
        "batch_in_epoch": t.batch_in_epoch,
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng": streams,  # every process's own, in rank order
        "history": json.dumps(t.history),
        "train_seconds": t.train_seconds,
        "best_top1": t.best_top1,
        "best_loss": t.best_loss,
        "evals_since_best": t.evals_since_best,
        "stopped_early": t.stopped_early,
        "recipe": json.dumps(t.recipe.to_dict()),
        "run": json.dumps(run_facts(t)),
        # loss sum, correct, seen, seconds and undecodable images of the epoch so far (a
        # mid-epoch checkpoint), summed over the DDP processes
        "epoch_partial": json.dumps(t.epoch_partial),
        "epoch_partial_all": True,
    }


def rng_state(device: torch.device) -> dict[str, Tensor | None]:
    """This process's random streams (DropPath and skip dropout draw from them)."""
    on_gpu = device.type == "cuda"
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if on_gpu else None,
    }


def restore_rng(state: dict[str, Any], dist: DistInfo, device: torch.device) -> None:
    streams = state.get("rng")
    if not streams or len(streams) != dist.world_size:
        # Older checkpoints: the main process's CPU stream, for every process.
        torch.set_rng_state(state["rng_cpu"])
        return
    own = streams[dist.rank]
    torch.set_rng_state(own["cpu"])
    if own.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(own["cuda"], device)


def save_run(t: Trainer) -> None:
    """Write a checkpoint of ``t`` (the main process; the others gather their streams)."""
    # Each process's own streams (seeded seed + rank), for each to continue its own.
    streams = distributed.all_gather_objects(rng_state(t.device), t.dist)
    if not t.dist.is_main:
        return
    tensors = {"model": state_dict_for_save(t.model)}
    if t.ema is not None:
        tensors["ema"] = state_dict_for_save(t.ema.module)
        tensors["ema_meta"] = {"n_averaged": t.ema.n_averaged.detach().cpu().clone()}
    if t.best_weights is not None:
        tensors["best"] = t.best_weights
    save_checkpoint(t.ckpt_root, t.step, tensors, run_state(t, streams))


def open_resume(
    out: Path,
    ckpt_root: Path,
    origin: RunOrigin,
    recipe: Recipe,
    model_options: dict[str, Any],
) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint and its state, once the state holds what the trainer writes
    and the run it continues is this one's: the same command (and fine-tuning source),
    recipe and model options. None without a checkpoint."""
    folder = latest_checkpoint(ckpt_root)
    if folder is None:
        return None
    state = read_state(folder)
    facts = json.loads(state["run"]) if "run" in state else {}
    if "command" not in facts:  # checkpoints from before the command was recorded
        facts = read_run_json(out).get("origin") or {}
    check_same_origin(out, facts, origin)
    check_same_recipe(out, state, recipe, origin)
    options = read_run_json(out).get("model_options")
    if isinstance(options, dict):
        check_same_model_options(out, options, model_options, origin)
    return folder, state


def resume_run(t: Trainer, opened: tuple[Path, dict[str, Any]]) -> Path:
    """Put the checkpoint ``opened`` (see :func:`open_resume`) back into ``t``, once every
    check has passed; returns its folder."""
    folder, state = opened
    try:
        tensors = load_checkpoint_tensors(folder)
        if "model" not in tensors:
            raise ValueError("model.safetensors is missing")
    except Exception as err:  # a damaged file: name it and the way back
        raise damaged(folder, err) from None
    origin = t.spec.origin
    check_same_run(t.out, state, run_facts(t), origin)
    check_tensors(folder, tensors, t.model.state_dict(), origin)
    check_finite(folder, tensors, state)
    names = {id(p): name for name, p in t.model.named_parameters()}
    check_optimizer(folder, state["optimizer"], t.optimizer, names)
    if t.ema is not None and "ema" in tensors and "ema_meta" not in tensors:
        raise ValueError(f"{folder}: ema.safetensors without ema_meta.safetensors; damaged")
    t.model.load_state_dict(tensors["model"])
    if t.ema is not None and "ema" in tensors:
        t.ema.module.load_state_dict(tensors["ema"])
        t.ema.n_averaged.copy_(tensors["ema_meta"]["n_averaged"])
    try:
        t.optimizer.load_state_dict(state["optimizer"])
        t.scheduler.load_state_dict(state["scheduler"])
        t.scaler.load_state_dict(state["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{folder / 'state.pt'}: the optimizer, schedule or loss scaler state does not "
            f"fit this run ({type(err).__name__}: {str(err)[:200]}); it was written by "
            "another run or version. Start a new run in another --out"
        ) from None
    restore_rng(state, t.dist, t.device)
    t.step = int(state["step"])
    t.epoch = int(state["epoch"])
    t.batch_in_epoch = int(state["batch_in_epoch"])
    t.history = json.loads(state["history"])
    t.train_seconds = float(state["train_seconds"])
    # Checkpoints written before model selection existed lack these fields.
    t.best_top1 = float(state.get("best_top1", -1.0))
    t.best_loss = float(state.get("best_loss", math.inf))
    t.evals_since_best = int(state.get("evals_since_best", 0))
    t.stopped_early = bool(state.get("stopped_early", False))
    t.best_weights = tensors.get("best")
    if t.batch_in_epoch and "epoch_partial" in state:
        saved = json.loads(state["epoch_partial"])
        t.epoch_partial = [*saved, 0][:5]  # older checkpoints lack the skipped count
        if not t.dist.is_main:
            # The sums cover every process: the main one carries them into the epoch's
            # all-reduce, the others start from nothing (and keep the seconds). Older
            # checkpoints held the main process's own sums, which stand in for each.
            if state.get("epoch_partial_all"):
                t.epoch_partial[:3] = [0.0, 0, 0]
            t.epoch_partial[4] = 0
    return folder
