"""Whether a checkpoint can be resumed: its files read, hold what the trainer wrote, fit the
model and optimizer being built, and hold finite numbers. Every refusal names the file, what
is wrong, and the way back (an older checkpoint, or a new run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnetkit.text import first_few, plural
from resnetkit.train.checkpoint import LATEST, older_checkpoints

if TYPE_CHECKING:
    import torch

    from resnetkit.train.run_folder import RunOrigin

#: What ``state.pt`` must hold, and what each is (the trainer writes them all).
STATE_KEYS = {
    "step": "the step it was written at",
    "epoch": "the epochs done",
    "batch_in_epoch": "the position in the epoch",
    "optimizer": "the optimizer's state",
    "scheduler": "the lr schedule's position",
    "scaler": "the loss scaler's state",
    "history": "the metrics so far",
    "train_seconds": "the training time so far",
}
#: Entries of ``state.pt`` that hold JSON text, and the type it must decode to.
JSON_KEYS = {"history": list, "recipe": dict, "run": dict, "epoch_partial": list}


def way_back(folder: Path) -> str:
    """How to go on without the checkpoint ``folder``: from the one before, or anew."""
    older = older_checkpoints(folder)
    if not older:
        return "no older checkpoint is left; start the run again in a new --out"
    pointer = folder.parent / LATEST
    also = f" and {pointer}" if pointer.exists() else ""
    return f"remove {folder}{also}: --resume then continues from {older[-1].name}"


def damaged(folder: Path, err: Exception) -> ValueError:
    """The error for a checkpoint whose files cannot be read."""
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return ValueError(f"{folder} is damaged ({type(err).__name__}: {first}); {way_back(folder)}")


def read_state(folder: Path) -> dict[str, Any]:
    """``folder/state.pt``, checked to hold what the trainer writes (see :data:`STATE_KEYS`).

    Raises:
        ValueError: unreadable, or an entry missing or of the wrong kind (file and entry
            named, with the way back).
    """
    from resnetkit.models.loading import torch_load_weights_only

    path = folder / "state.pt"
    try:
        state = torch_load_weights_only(path)
    except Exception as err:  # a damaged file: name it and the way back
        raise damaged(folder, err) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} holds a {type(state).__name__}, not a training state; {way_back(folder)}"
        )
    problems = [f"no {key!r} ({what})" for key, what in STATE_KEYS.items() if key not in state]
    if "rng" not in state and "rng_cpu" not in state:
        problems.append("no random state ('rng' or 'rng_cpu')")
    for key in ("step", "epoch", "batch_in_epoch"):
        if key in state and (isinstance(state[key], bool) or not isinstance(state[key], int)):
            problems.append(f"{key!r} is {state[key]!r}, not a whole number")
    optimizer = state.get("optimizer")
    if "optimizer" in state and not (
        isinstance(optimizer, dict) and "state" in optimizer and "param_groups" in optimizer
    ):
        problems.append("'optimizer' is not an optimizer's state_dict (state, param_groups)")
    for key, kind in JSON_KEYS.items():
        if key not in state:
            continue
        try:
            value = json.loads(state[key])
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, kind):
            problems.append(f"{key!r} is not the JSON {kind.__name__} the trainer writes")
    if problems:
        raise ValueError(
            f"{path}: {'; '.join(problems)}: not a training checkpoint that resnetkit wrote, or "
            f"damaged; {way_back(folder)}"
        )
    return state


def check_tensors(
    folder: Path,
    tensors: dict[str, dict[str, torch.Tensor]],
    expected: dict[str, torch.Tensor],
    origin: RunOrigin,
) -> None:
    """The model's weights (and those of its EMA and best epoch) name and shape what
    ``expected`` (the model's state dict) does. ``origin``: the command resuming, for the
    advice (finetune has no --model-option; its --model is the source model).

    Raises:
        ValueError: missing, unexpected or misshapen tensors, named with their file.
    """
    for name in ("model", "ema", "best"):
        if name not in tensors:
            continue
        saved = tensors[name]
        path = folder / f"{name}.safetensors"
        missing = [k for k in expected if k not in saved]
        unexpected = [k for k in saved if k not in expected]
        shapes = [
            f"{k} has shape {_shape(saved[k])}, the model expects {_shape(v)}"
            for k, v in expected.items()
            if k in saved and saved[k].shape != v.shape
        ]
        problems = []
        if missing:
            problems.append(f"{plural(len(missing), 'weight')} missing ({first_few(missing, 3)})")
        if unexpected:
            extra = plural(len(unexpected), "weight")
            problems.append(f"{extra} the model does not have ({first_few(unexpected, 3)})")
        problems += shapes[:3] + ([f"{len(shapes) - 3} more shapes differ"] if shapes[3:] else [])
        if problems:
            other = (
                "from another source model (finetune --model)"
                if origin.command == "finetune"
                else "for another --model or --model-option"
            )
            raise ValueError(
                f"{path}: {'; '.join(problems)}; it was written {other}. Resume with the "
                "run's own, or start a new run in another --out"
            )


def check_optimizer(
    folder: Path, saved: dict[str, Any], optimizer: torch.optim.Optimizer, names: dict[int, str]
) -> None:
    """The optimizer state's groups hold as many parameters as the optimizer's, and its
    per-parameter buffers (momentum, Adam's moments) the parameters' shapes. ``names``: the
    parameters' names by ``id``.

    Raises:
        ValueError: naming ``state.pt``, the parameter and both shapes.
    """
    path = folder / "state.pt"
    groups = [group["params"] for group in optimizer.param_groups]
    saved_groups = [group.get("params", []) for group in saved["param_groups"]]
    sizes, saved_sizes = [len(g) for g in groups], [len(g) for g in saved_groups]
    if sizes != saved_sizes:
        raise ValueError(
            f"{path}: the optimizer's state has parameter groups of {saved_sizes} parameters, "
            f"the run's optimizer {sizes}; it was written for another model or lr settings "
            "(backbone_lr_mult, decay_norm_and_bias). Resume with the run's own, or start a new "
            "run in another --out"
        )
    for params, ids in zip(groups, saved_groups, strict=True):
        for param, index in zip(params, ids, strict=True):
            for key, value in saved["state"].get(index, {}).items():
                if not hasattr(value, "shape") or value.dim() == 0 or value.shape == param.shape:
                    continue  # a step counter, or a buffer that fits
                raise ValueError(
                    f"{path}: the optimizer's {key} of {names.get(id(param), index)} has shape "
                    f"{_shape(value)}, the parameter {_shape(param)}; the state was written for "
                    f"another model. To go back, {way_back(folder)}"
                )


def check_finite(
    folder: Path, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]
) -> None:
    """Weights and optimizer buffers hold no NaN or infinity (a run that diverged; the
    trainer never writes one, an older resnetkit or another tool may have).

    Raises:
        ValueError: naming the file, the tensors, the earlier checkpoint and a lower lr.
    """
    import torch

    found: list[tuple[Path, list[str]]] = []
    for name, group in tensors.items():
        bad = [k for k, t in group.items() if t.is_floating_point() and not t.isfinite().all()]
        if bad:
            found.append((folder / f"{name}.safetensors", bad))
    buffers = [
        f"{key} of parameter {index}"
        for index, entry in state["optimizer"]["state"].items()
        for key, value in (entry.items() if isinstance(entry, dict) else ())
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        if not value.isfinite().all()
    ]
    if buffers:
        found.append((folder / "state.pt", buffers))
    if not found:
        return
    path, bad = found[0]
    others = f" (and {', '.join(p.name for p, _ in found[1:])})" if found[1:] else ""
    raise ValueError(
        f"{path}{others} holds NaN or infinite values in {plural(len(bad), 'tensor')} "
        f"({first_few(bad, 3)}): the "
        f"run had diverged when it was written. To go back, {way_back(folder)}; or start "
        "again in a new --out with a lower --lr (or --grad-clip 1.0, --warmup-iters)"
    )


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ",".join(map(str, tensor.shape)) + "]"
