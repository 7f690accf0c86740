"""What a finished run leaves beside its checkpoints: the model directory (weights, classes,
preprocessing, metrics, provenance), curves.png and final_metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.resnet import ResNet
from resnetkit.reproduce.figures import plot_training_curves
from resnetkit.train.checkpoint import atomic_write_text
from resnetkit.train.provenance import provenance
from resnetkit.train.reporting import per_class

if TYPE_CHECKING:
    from resnetkit.train.trainer import Trainer


def write_model_output(
    trainer: Trainer,
    final_model: ResNet,
    model_dir: Path,
    metrics: dict[str, Any],
    results: dict[str, Any],
) -> None:
    """Write the run's model directory (``final_model``, moved to the CPU in float32), its
    training curves and final_metrics.json (``metrics`` and the per-class ``results``).

    The main process's job; a finished run resumed writes its model directory again.
    """
    multi_label = trainer.label_table is not None
    net = final_model.float().to("cpu").to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    save_model_dir(
        net,
        model_dir,
        replace=True,  # this run's own (a finished run resumed writes it again)
        arch=trainer.arch,
        classes=trainer.classes,
        preprocessing=trainer.data.preprocessing,
        metrics=metrics,
        multi_label=multi_label,
        provenance={
            "recipe": trainer.recipe.to_dict(),
            "dataset": trainer.spec.dataset,
            "train_images": len(trainer.data.train_labels),
            "eval_images": trainer.data.eval_counts,
            **({"teacher": trainer.teacher.describe()} if trainer.teacher is not None else {}),
            **provenance(),
        },
    )
    plot_training_curves(
        trainer.history, trainer.out / "curves.png", f"{trainer.arch} on {trainer.spec.dataset}"
    )
    atomic_write_text(
        trainer.out / "final_metrics.json",
        json.dumps({**metrics, **per_class(results, multi_label)}, indent=2) + "\n",
    )
