"""Fine-tune a pretrained ResNet on a folder of images, and write a report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnetkit.data.fast import Normalization
from resnetkit.models.loading import load_model, preprocessing_of
from resnetkit.train.checkpoint import atomic_write_text
from resnetkit.train.recipe import Recipe, as_recipe
from resnetkit.train.run_folder import RunOrigin, source_name
from resnetkit.train.spec import TrainResult, TrainSpec
from resnetkit.train.trainer import train


@dataclass(frozen=True)
class FinetuneResult:
    train: TrainResult
    report: dict[str, Any]


def finetune(
    source: str | Path,
    data: Path,
    out: Path,
    *,
    arch: str | None = None,
    recipe: Recipe | str | Path | None = None,
    scratch: bool = False,
    resume: bool = False,
    progress: bool = True,
    log_epochs: bool = False,
    device: str = "cpu",
    image_size: int | None = None,
) -> FinetuneResult:
    """Fine-tune ``source`` (registered tag, model directory, or checkpoint with ``arch``) on an
    image folder (one sub-folder per class, optionally ``train/`` and ``val/``).

    Args:
        source: the pretrained model.
        data: the image folder.
        out: run directory; the fine-tuned model lands in ``out/model``.
        arch: architecture of a bare checkpoint file.
        recipe: a Recipe, or a built-in recipe's name or a YAML path; default ``finetune``.
        scratch: same architecture and preprocessing but random weights (the baseline that
            fine-tuning should beat).
        resume: continue an interrupted run in ``out``.
        progress: show progress bars.
        log_epochs: without progress bars, still write one line per epoch to stderr.
        device: ``cpu`` or a CUDA device.
        image_size: train (and save the model) at this input side instead of the source
            model's own, e.g. 64 for a CIFAR model on larger pictures: a ResNet is fully
            convolutional up to its global pool.
    """
    spec = finetune_spec(
        source,
        data,
        out,
        arch=arch,
        recipe=recipe,
        scratch=scratch,
        resume=resume,
        progress=progress,
        log_epochs=log_epochs,
        device=device,
        image_size=image_size,
    )
    return train_and_report(spec, source=source, scratch=scratch)


def train_and_report(spec: TrainSpec, *, source: str | Path, scratch: bool) -> FinetuneResult:
    """Train the run :func:`finetune_spec` made and write its report beside it."""
    result = train(spec)
    report = write_report(result, spec.out, source=str(source), scratch=scratch)
    return FinetuneResult(result, report)


def finetune_spec(
    source: str | Path,
    data: Path,
    out: Path,
    *,
    arch: str | None = None,
    recipe: Recipe | str | Path | None = None,
    scratch: bool = False,
    resume: bool = False,
    progress: bool = True,
    log_epochs: bool = False,
    device: str = "cpu",
    image_size: int | None = None,
) -> TrainSpec:
    """The training run :func:`finetune` makes (its arguments are that function's): the model
    loaded with its preprocessing, the folder read at ``image_size``, else the recipe's
    ``train_image_size``, else the model's own input size."""
    from resnetkit.models.resnet import ResNet

    recipe = as_recipe(recipe or "finetune")
    model = load_model(source, arch=arch)
    pre = preprocessing_of(model)
    source_side, source_resize = int(pre["input_size"]), int(pre.get("resize") or 0)
    what = f"image_size {image_size}"
    if not image_size and recipe.train_image_size:
        what = f"recipe field 'train_image_size' ({recipe.train_image_size}; 0: the model's own)"
    image_size = image_size or recipe.train_image_size or None  # else the model's own side
    if image_size is not None and image_size != int(pre["input_size"]):
        if pre.get("pixel_mean") is not None:
            raise ValueError(
                f"{what}: {source} subtracts a per-pixel mean image of "
                f"{pre['input_size']}x{pre['input_size']} pixels, which fits no other size; "
                "fine-tune it at its own size"
            )
        pre["input_size"] = image_size
    recipe = _keep_resize_ratio(recipe, int(pre["input_size"]), source_side, source_resize, pre)
    if scratch:  # same architecture and preprocessing, freshly initialised weights
        model = ResNet(model.config, name=model.name)
    return TrainSpec(
        model=model,
        dataset="folder",
        data_dir=data,
        out=out,
        recipe=recipe,
        resume=resume,
        image_size=int(pre["input_size"]),
        device=device,
        progress=progress,
        log_epochs=log_epochs,
        normalization=_normalization(pre),
        new_head=True,
        origin=RunOrigin("finetune", source_name(source), scratch),
    )


def _keep_resize_ratio(
    recipe: Recipe, side: int, source_side: int, source_resize: int, pre: dict[str, Any]
) -> Recipe:
    """The evaluation resize of an ImageNet-sized model whose own is not the usual side / 0.875
    (torchvision's newer weights: 232 for 224) kept for the fine-tuned model, scaled to its
    evaluation side, when its crops are streamed and the recipe names none."""
    from resnetkit.data.transforms import FULL_SIZE_AUGMENTS
    from resnetkit.train.data_setup import eval_sizes, resolve_augment

    if recipe.eval_resize or source_side < 128 or not source_resize:
        return recipe
    pixel_mean = pre.get("pixel_mean") is not None
    if resolve_augment(recipe, side, "folder", pixel_mean=pixel_mean).augment not in (
        FULL_SIZE_AUGMENTS
    ):
        return recipe
    eval_side, usual = eval_sizes(recipe, side)
    resize = max(eval_side, round(eval_side * source_resize / source_side))
    return recipe if resize == usual else recipe.override({"eval_resize": resize})


def _normalization(pre: dict[str, Any]) -> Normalization:
    """The pretrained model's input normalization, a per-pixel mean included (the 2015 paper's
    CIFAR models subtract one: dropping it would feed the pretrained layers shifted inputs)."""
    pixel_mean = None
    if pre.get("pixel_mean") is not None:
        size = int(pre["input_size"])
        pixel_mean = torch.tensor(pre["pixel_mean"], dtype=torch.float32).view(3, size, size)
    return Normalization(tuple(pre["mean"]), tuple(pre["std"]), pixel_mean)


def _multi_label_report(
    result: TrainResult, out: Path, final: dict[str, Any], *, source: str, scratch: bool
) -> dict[str, Any]:
    metrics = result.metrics
    report: dict[str, Any] = {
        "source": source,
        "from_scratch": scratch,
        "multi_label": True,
        **{key: metrics.get(f"val_{key}") for key in ("map", "micro_f1", "macro_f1", "exact")},
        "per_class_ap": final["ap"].get("val", {}),
        "per_class_f1": final["f1"].get("val", {}),
        "epochs_run": len(result.history),
        "stopped_early": metrics.get("stopped_early", False),
        "model_dir": str(result.model_dir),
        "curves": str(out / "curves.png"),
    }
    curves = final.get("pr_curves", {}).get("val")
    if curves and curves.get("classes") and result.is_main:
        from resnetkit.evaluate.plots import plot_pr_curves

        title = f"val mAP {report['map']:.1f}%"
        plot_pr_curves(curves, report["per_class_ap"], out / "pr_curves.png", title=title)
        report["pr_curves_png"] = str(out / "pr_curves.png")
    if result.is_main:
        atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def write_report(result: TrainResult, out: Path, *, source: str, scratch: bool) -> dict[str, Any]:
    """``report.json`` and ``confusion.png`` from the run's final evaluation on the val split
    (a multi-label run: mAP, F1 and per-class AP, no confusion matrix)."""
    from resnetkit.evaluate.plots import plot_confusion

    final = json.loads((out / "final_metrics.json").read_text())
    if "ap" in final:
        return _multi_label_report(result, out, final, source=source, scratch=scratch)
    per_class = final.get("per_class", {}).get("val", {})
    confusion = final.get("confusion", {}).get("val")
    report: dict[str, Any] = {
        "source": source,
        "from_scratch": scratch,
        "val_top1": result.metrics.get("val_top1"),
        "val_top5": result.metrics.get("val_top5"),
        "per_class": per_class,
        "epochs_run": len(result.history),
        "stopped_early": result.metrics.get("stopped_early", False),
        "model_dir": str(result.model_dir),
        "curves": str(out / "curves.png"),
    }
    if confusion is not None:
        plot_confusion(
            confusion,
            list(per_class),
            out / "confusion.png",
            title=f"val top-1 {report['val_top1']:.1f}%",
        )
        report["confusion_png"] = str(out / "confusion.png")
    if result.is_main:
        atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report
