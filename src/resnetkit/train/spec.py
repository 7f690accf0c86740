"""What a training run is asked to do (:class:`TrainSpec`) and what it hands back
(:class:`TrainResult`); :func:`resnetkit.train.trainer.train` takes the one and returns the
other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnetkit.data.fast import Normalization
from resnetkit.models.resnet import ResNet
from resnetkit.train.recipe import Recipe, as_recipe
from resnetkit.train.run_folder import RunOrigin


@dataclass
class TrainSpec:
    """What to train, on what, and where to write it."""

    model: str | ResNet  # a registered name, or a built model to fine-tune
    dataset: str
    data_dir: Path  # a str is taken too
    out: Path
    recipe: Recipe  # a name or YAML path is taken too
    resume: bool = False
    download: bool = False
    train_subset: int = 0
    eval_subset: int = 0
    # the side of folder images (crops); None: the recipe's train_image_size, else 224 for
    # the full-size augments (imagenet, scale), else 32. CIFAR's are 32.
    image_size: int | None = None
    device: str = "cpu"
    progress: bool = True
    # Without progress bars, still write one line per epoch (and resume and early-stop notes)
    # to stderr: what a run in the background (nohup, a batch job) should leave in its log.
    log_epochs: bool = False
    model_options: dict[str, Any] = field(default_factory=dict)
    # A Normalization (which may subtract a per-pixel mean) to use instead of the dataset's
    # statistics: a pretrained model's own. (mean, std) is taken too.
    normalization: Normalization | None = None
    # Called after every optimizer step with the step number (tests use it to simulate a crash).
    on_step: Callable[[int], None] | None = None
    # Fine-tuning a built model: a fresh classifier for the data's classes, even when it has as
    # many classes as the data (its rows are kept only for the same class names, reordered).
    new_head: bool = False
    # False for rehearsals that write nothing (--dry-run, --find-lr): --out is not checked, so
    # they may be pointed at a run folder that holds a run.
    writes: bool = True
    # The command that starts the run (and a fine-tuning's source): --resume must match it,
    # and its advice names that command's flags.
    origin: RunOrigin = RunOrigin()

    def __post_init__(self) -> None:
        # strings are paths too (TrainSpec(..., data_dir="data", out="runs/a"))
        self.data_dir = Path(self.data_dir)
        self.out = Path(self.out)
        self.recipe = as_recipe(self.recipe)
        if self.normalization is not None:  # checked before the run folder is written
            if not isinstance(self.normalization, Normalization):
                mean, std = self.normalization  # type: ignore[misc]  # (mean, std)
                self.normalization = Normalization(tuple(mean), tuple(std))
            in_chans = (
                self.model.config.in_chans
                if isinstance(self.model, ResNet)
                else self.model_options.get("in_chans", 3)
            )
            self.normalization.check_channels(in_chans, "model inputs (TrainSpec.normalization)")


@dataclass
class TrainResult:
    out: Path
    is_main: bool
    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    # SIGTERM or SIGINT that came too late to stop this run (its last step, or while the model
    # directory was written): whoever runs more after it should stop instead.
    stop_signal: int | None = None
