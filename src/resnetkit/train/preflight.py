"""What a run checks before it trains, so that a mistake stops it in seconds, not hours in:
the model's name, the batch arithmetic, the classes, the validation split, the run's length."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from resnetkit.data.labels import is_label_file
from resnetkit.models.resnet import ResNet
from resnetkit.train.data_setup import TrainData
from resnetkit.train.recipe import Recipe, check_run_length


def check_trainable(model: str | ResNet) -> None:
    """``train`` starts from random weights: a name of pretrained weights is refused with the
    ``finetune`` command that starts from them."""
    if isinstance(model, str) and model.startswith(("hf-hub:", "hf_hub:")):
        raise ValueError(
            f"--model {model} names pretrained weights on the Hugging Face Hub; "
            f"`train` starts from random weights. To start from them, use `resnetkit "
            f"finetune --model {model}`"
        )
    if isinstance(model, str) and "." in model:  # a tag: random weights
        arch, _, tag = model.partition(".")
        raise ValueError(
            f"--model {model} names pretrained weights; `train` starts from random "
            f"weights (--model {arch}). To start from the {tag} weights, use `resnetkit "
            f"finetune --model {model}`"
        )


def warn_idle_distillation(recipe: Recipe) -> None:
    """Warn about distillation settings that do nothing: weights without a teacher, or a
    teacher whose answers weigh nothing."""
    defaults = Recipe()
    unused = [
        f"{key} {getattr(recipe, key)}"
        for key in ("distill_alpha", "distill_temperature")
        if getattr(recipe, key) != getattr(defaults, key)
    ]
    if unused and not recipe.teacher:
        warnings.warn(
            f"{' and '.join(unused)} weigh a teacher's answers, and the run has no teacher "
            "(--teacher MODEL): they do nothing",
            stacklevel=3,
        )
    if recipe.teacher and recipe.distill_alpha == 0:
        warnings.warn(
            f"distill_alpha 0: the teacher {recipe.teacher} runs at every step and its "
            "answers weigh nothing; leave --teacher out to train on the labels alone",
            stacklevel=3,
        )


def per_rank_batch(recipe: Recipe, world_size: int) -> int:
    """The images each process puts through a forward pass: the batch shared out over the
    processes and the accumulation steps, which must divide it evenly."""
    share = recipe.batch_size // (world_size * recipe.accum_steps)
    if share * world_size * recipe.accum_steps != recipe.batch_size:
        raise ValueError(
            f"batch_size {recipe.batch_size} must divide evenly by processes "
            f"({world_size}) x accum_steps ({recipe.accum_steps})"
        )
    return share


def check_classes(data: TrainData, data_dir: Path) -> None:
    """At least two classes (a multi-label tagger: one), each named."""
    classes = data.classes
    if data.multi_label and not classes:
        raise ValueError(
            f"{data_dir} names no class in its labels column: every image has none; "
            "give the images their classes (or, for a yes/no tagger, the one class where "
            "it applies)"
        )
    if data.multi_label:  # a multi-label tagger may have one class
        return
    if len(classes) < 2:
        one = f" ({classes[0]})" if classes else ""
        raise ValueError(
            f"{data_dir} has {len(classes)} class{one}: a classifier needs at "
            "least two classes. If the images sit one level deeper, pass that folder"
        )
    # An empty class folder keeps its label, but a run where one class alone has training
    # images learns to answer that class every time (and validates at 100%).
    present = data.train_labels.unique().tolist()
    if len(present) == 1:
        empty = [repr(name) for i, name in enumerate(classes) if i != present[0]]
        verb = "holds" if len(empty) == 1 else "hold"
        raise ValueError(
            f"{data_dir}: only class {classes[present[0]]!r} has training images; "
            f"{', '.join(empty)} {verb} none, and a classifier needs images of at least two "
            "classes: put images in those folders (or remove them)"
        )


def check_validation(recipe: Recipe, data: TrainData, data_dir: Path, *, warn: bool) -> None:
    """select_best and early stopping need a validation split, and one big enough not to
    follow noise (a warning below 50 images, when ``warn``)."""
    if not (recipe.select_best or recipe.early_stop_patience > 0):
        return
    more_val = (
        "give the label file more val rows (a split column)"
        if is_label_file(data_dir)
        else "give the folder a val/ with more images"
    )
    val_count = data.eval_counts.get("val", 0)
    if 0 < val_count < 50 and warn:
        warnings.warn(
            f"the validation split has only {val_count} images, so select_best and early "
            f"stopping follow noise: {more_val}, or pass --select-best false "
            "--early-stop-patience 0",
            stacklevel=3,
        )
    if "val" not in data.eval_loaders:
        raise ValueError(
            "select_best / early_stop_patience choose on a validation split, and there is "
            "none (or it holds no readable image): set val_split (CIFAR) or give the folder "
            "a val/ sub-folder (or let it hold some images out: a class needs 2 or more), "
            "or pass --select-best false --early-stop-patience 0"
        )


def run_length(recipe: Recipe, data: TrainData, data_dir: Path) -> tuple[int, int, int]:
    """(optimizer steps an epoch, steps in all, epochs): the recipe's ``max_iters``, else its
    epochs of the data's full batches.

    Raises:
        ValueError: no training image, too few for one batch, or a warm-up or EMA longer
            than the run.
    """
    iters_per_epoch = len(data.train_loader) // recipe.accum_steps
    if not len(data.train_labels):
        raise ValueError(
            f"no readable training images in {data_dir} (the files skipped above say why)"
        )
    if iters_per_epoch == 0:
        raise ValueError(
            f"{len(data.train_labels)} training images give no full batch of "
            f"{recipe.batch_size}; lower --batch-size"
        )
    total_iters = recipe.max_iters or recipe.epochs * iters_per_epoch
    check_run_length(recipe, total_iters)
    return iters_per_epoch, total_iters, math.ceil(total_iters / iters_per_epoch)
