"""Temperature scaling: make a classifier's confidence match how often it is right.

Guo et al. 2017 ("On Calibration of Modern Neural Networks") found deep ResNets overconfident
and a single temperature ``T``, fitted on held-out images by minimising the negative
log-likelihood of ``softmax(logits / T)``, the simplest and among the best fixes; training with
label smoothing leaves a model underconfident instead, and the same fit corrects it (``T < 1``).
Dividing logits by ``T`` never changes which class wins, so accuracy stays exactly the same.

:func:`calibrate` fits ``T`` on one random part of an evaluation split and measures the
calibration error before and after on the rest, so the improvement it reports is not measured
on the images it was fitted on. :func:`apply_temperature` folds ``T`` into the classifier
(``fc.weight / T``, ``fc.bias / T``): every consumer of the model (predict, serve, ONNX export,
int8 quantisation) then gives calibrated probabilities with no extra step.

A multi-label model (a sigmoid per class) has no softmax to scale; what it can be calibrated
on is where each class starts: :func:`calibrate_thresholds` chooses one threshold per class,
the one that maximises that class's F1 on one part of the split
(:func:`~resnetkit.data.multilabel.fit_thresholds`), and measures F1 and exact matches before
and after on the rest; the model directory keeps them (``task.threshold``, a list).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from resnetkit.evaluate.metrics import ConfusionMeter
from resnetkit.models.resnet import ResNet

#: Temperatures outside this range mean the logits carry no usable signal (or a bug).
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class CalibrationReport:
    """What :func:`calibrate` found.

    Attributes:
        temperature: the fitted ``T`` (logits are divided by it).
        fit_images: images ``T`` was fitted on.
        check_images: held-out images the numbers below are measured on.
        before, after: ``nll`` (mean negative log-likelihood), ``ece`` (expected calibration
            error, percent) and ``top1`` (percent, the same before and after).
    """

    temperature: float
    fit_images: int
    check_images: int
    before: dict[str, float]
    after: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ThresholdReport:
    """What :func:`calibrate_thresholds` found.

    Attributes:
        thresholds: one per class, in the model's class order.
        classes: the model's class names.
        fit_images: images the thresholds were chosen on.
        check_images: held-out images the numbers below are measured on.
        before, after: ``micro_f1``, ``macro_f1``, ``exact`` and ``map`` (percent; mAP does
            not depend on thresholds) at the model's own threshold, then at the new ones.
    """

    thresholds: list[float]
    classes: list[str]
    fit_images: int
    check_images: int
    before: dict[str, float | None]
    after: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature minimising the mean negative log-likelihood of ``softmax(logits / T)``.

    The loss is convex in ``1/T``; L-BFGS on ``log T`` finds its minimum in a few steps.

    Raises:
        ValueError: no images, every image classified correctly (nothing to fit), or a fitted
            temperature outside :data:`TEMPERATURE_RANGE`.
    """
    if len(labels) == 0:
        raise ValueError("no images to fit the temperature on")
    if bool((logits.argmax(dim=1) == labels).all()):
        # The likelihood then only grows as the temperature falls: where it stops says
        # nothing about the model, only about the optimiser.
        raise ValueError(
            f"the model classifies all {len(labels)} fitting images correctly, so nothing "
            "bounds how confident it should be: fit on more (or harder) held-out images"
        )
    logits = logits.detach().double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    temperature = float(log_t.detach().exp())
    low, high = TEMPERATURE_RANGE
    if temperature < low:
        raise ValueError(
            f"the fitted temperature {temperature:.3g} is below {low}: the few images it "
            "misclassifies barely count; fit on more (or harder) held-out images"
        )
    if temperature > high:
        raise ValueError(
            f"the fitted temperature {temperature:.3g} is above {high}: the model's outputs "
            "barely depend on the images (wrong preprocessing or an untrained model?)"
        )
    return temperature


def scores(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> dict[str, float]:
    """``nll``, ``ece`` and ``top1`` of ``logits / temperature``."""
    scaled = logits.double() / temperature
    meter = ConfusionMeter(logits.shape[1])
    meter.update(scaled, labels)
    summary = meter.summary()
    return {
        "nll": float(F.cross_entropy(scaled, labels)),
        "ece": float(summary["ece"]),  # type: ignore[arg-type]
        "top1": float(summary["top1"]),  # type: ignore[arg-type]
    }


def calibrate(
    model: ResNet,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "test",
    fit_fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    download: bool = False,
) -> CalibrationReport:
    """Fit a temperature on a random ``fit_fraction`` of a split; measure on the rest.

    Raises:
        ValueError: ``fit_fraction`` outside (0, 1), a model without a classifier, too few
            images for both parts, or a temperature that does not make sense.
    """
    from resnetkit.evaluate.evaluator import collect_logits

    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(
            f"fit_fraction must be between 0 and 1 (exclusive), got {fit_fraction}: the "
            "temperature is fitted on one part of the split and checked on the rest"
        )
    if not getattr(model, "num_classes", 0):
        raise ValueError("the model has no classifier head (num_classes=0): nothing to calibrate")
    from resnetkit.data.multilabel import model_threshold

    if model_threshold(model) is not None:
        raise ValueError(
            "the model is multi-label (a sigmoid per class, a class predicted from its "
            "threshold): temperature scaling fits one softmax over the classes, for models "
            "that pick one class an image; use calibrate_thresholds (per-class thresholds)"
        )
    logits, labels, _ = collect_logits(
        model,
        dataset,
        data_dir,
        split=split,
        batch_size=batch_size,
        device=device,
        download=download,
    )
    fit, check = split_in_two(len(labels), fit_fraction, seed, f"{dataset} {split}")
    temperature = fit_temperature(logits[fit], labels[fit])
    return CalibrationReport(
        temperature=temperature,
        fit_images=len(fit),
        check_images=len(check),
        before=scores(logits[check], labels[check]),
        after=scores(logits[check], labels[check], temperature),
    )


def split_in_two(n: int, fit_fraction: float, seed: int, what: str) -> tuple[Tensor, Tensor]:
    """A random ``fit_fraction`` of ``n`` images, and the rest."""
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(
            f"fit_fraction must be between 0 and 1 (exclusive), got {fit_fraction}: the "
            "calibration is fitted on one part of the split and checked on the rest"
        )
    fit_count = round(n * fit_fraction)
    if fit_count < 1 or fit_count >= n:
        raise ValueError(
            f"{what} has {n} images: too few to fit on {fit_fraction:.0%} of them and check "
            "on the rest"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:fit_count], order[fit_count:]


def calibrate_thresholds(
    model: ResNet,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "val",
    fit_fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> ThresholdReport:
    """Per-class thresholds of a multi-label model, chosen on a random ``fit_fraction`` of a
    split (each class's best F1), measured on the rest against the model's own threshold.

    Raises:
        ValueError: a model that is not multi-label, a dataset that is not a multi-label label
            file (``folder``), ``fit_fraction`` outside (0, 1), or too few images for both
            parts.
    """
    from resnetkit.data.multilabel import MultiLabelMeter, fit_thresholds, model_threshold
    from resnetkit.evaluate.evaluator import collect_logits

    own = model_threshold(model)
    if own is None:
        raise ValueError(
            "the model picks one class an image (softmax): per-class thresholds are for "
            "multi-label models; use calibrate (temperature scaling)"
        )
    if dataset != "folder":  # CIFAR's labels are one class an image, not multi-hot targets
        raise ValueError(
            f"the model is multi-label (a sigmoid per class) and {dataset} has one class an "
            "image: choose its thresholds with --dataset folder --data-dir LABELS.csv (a "
            "'labels' column)"
        )
    logits, targets, classes = collect_logits(
        model, dataset, data_dir, split=split, batch_size=batch_size, device=device
    )
    fit, check = split_in_two(len(targets), fit_fraction, seed, f"{dataset} {split}")
    thresholds = fit_thresholds(logits[fit].sigmoid(), targets[fit], own)

    def measured(threshold: float | list[float]) -> dict[str, float | None]:
        meter = MultiLabelMeter(len(classes), threshold)
        meter.update(logits[check], targets[check])
        summary = meter.summary(classes)
        return {key: summary[key] for key in ("micro_f1", "macro_f1", "exact", "map")}

    return ThresholdReport(
        thresholds=thresholds,
        classes=list(classes),
        fit_images=len(fit),
        check_images=len(check),
        before=measured(own),
        after=measured(thresholds),
    )


def apply_temperature(model: ResNet, temperature: float) -> ResNet:
    """A copy of ``model`` whose logits are the original's divided by ``temperature``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    fc = getattr(model, "fc", None)
    if not isinstance(fc, torch.nn.Linear):
        raise ValueError("the model has no linear classifier (fc) to scale")
    scaled = copy.deepcopy(model)
    head = scaled.fc
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)
    return scaled
