"""Classification metrics accumulated over batches.

Besides accuracy, the meter measures calibration: whether a model's confidence (its top
softmax probability) matches how often it is right. The expected calibration error (ECE) sorts
the predictions into :data:`CALIBRATION_BINS` equal-width confidence bins and averages
``|accuracy - confidence|`` over the bins, weighted by their share of the images (Guo et al.
2017, "On Calibration of Modern Neural Networks", who found ResNet-110 on CIFAR overconfident).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

CALIBRATION_BINS = 15


@dataclass
class ConfusionMeter:
    """Accumulates a confusion matrix (rows: true class, columns: predicted) and top-5 hits."""

    num_classes: int
    # selective classification: also count the images whose top probability reaches this
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        self.answered = self.answered_right = 0
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.top5_hits = 0
        self.loss_sum = 0.0
        # Per confidence bin: images, summed confidence, correct predictions.
        self.bins = torch.zeros(3, CALIBRATION_BINS, dtype=torch.float64)

    def update(self, logits: Tensor, labels: Tensor, loss_sum: float = 0.0) -> None:
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(
                "the model's outputs are NaN or infinite: its weights are broken (a diverged "
                "training run?)"
            )
        pred = logits.argmax(1)
        index = labels * self.num_classes + pred
        self.matrix += torch.bincount(index.cpu(), minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )
        k = min(5, self.num_classes)
        self.top5_hits += int((logits.topk(k, 1).indices == labels[:, None]).any(1).sum())
        self.loss_sum += loss_sum
        confidence = logits.float().softmax(1).amax(1).double().cpu()
        which = (confidence * CALIBRATION_BINS).long().clamp(max=CALIBRATION_BINS - 1)
        right = (pred == labels).double().cpu()
        for row, values in enumerate((torch.ones_like(confidence), confidence, right)):
            self.bins[row].index_add_(0, which, values)
        if self.min_confidence is not None:
            # in float64, as rank_classes compares (0.9 is not a float32)
            take = logits.float().softmax(1).amax(1).double().cpu() >= self.min_confidence
            self.answered += int(take.sum())
            self.answered_right += int(right[take].sum())

    @property
    def count(self) -> int:
        return int(self.matrix.sum())

    def summary(self, classes: Iterable[str] | None = None) -> dict[str, object]:
        """top1/top5 in percent, mean loss, per-class accuracy (None for a class with no
        images), the confusion matrix, per-class precision/recall/F1 with their macro and
        weighted means (:meth:`per_class_scores`) and calibration."""
        n = max(self.count, 1)
        correct = self.matrix.diag()
        per_class_total = self.matrix.sum(1)
        names = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]
        return {
            "top1": 100.0 * float(correct.sum()) / n,
            "top5": 100.0 * self.top5_hits / n,
            "loss": self.loss_sum / n,
            "count": self.count,
            # None for a class without images: 0% would read as a class always missed
            "per_class": {
                name: 100.0 * float(c) / float(t) if t else None
                for name, c, t in zip(names, correct, per_class_total, strict=True)
            },
            "confusion": self.matrix.tolist(),
            **self.per_class_scores(names),
            **self.calibration(),
            **({"selective": self.selective()} if self.min_confidence is not None else {}),
        }

    def selective(self) -> dict[str, Any]:
        """Coverage and accuracy at ``min_confidence``, as
        :func:`~resnetkit.evaluate.selective.selective_summary`."""
        from resnetkit.evaluate.selective import selective_summary

        right = int(self.matrix.diag().sum())
        cut = self.min_confidence or 0.0
        return selective_summary(self.count, self.answered, self.answered_right, right, cut)

    def per_class_scores(self, names: list[str]) -> dict[str, Any]:
        """For imbalanced data, where top-1 flatters a model that ignores rare classes:
        ``precision``, ``recall`` and ``f1`` per class (percent; None where undefined: a class
        never predicted has no precision, one without images no recall), ``macro_f1`` and
        ``balanced_accuracy`` (the mean over the classes that have images, an undefined
        precision counting as 0, as scikit-learn's ``zero_division=0``) and ``weighted_f1``
        (weighted by images per class)."""
        matrix = self.matrix.double()
        hits = matrix.diag()
        true, predicted = matrix.sum(1), matrix.sum(0)
        precision, recall, f1 = {}, {}, {}
        macro_f1 = balanced = weighted = 0.0
        present = int((true > 0).sum())
        for i, name in enumerate(names):
            p = float(hits[i] / predicted[i]) if predicted[i] else None
            r = float(hits[i] / true[i]) if true[i] else None
            f = None
            if r is not None:
                p0 = p or 0.0
                f = 2 * p0 * r / (p0 + r) if p0 + r else 0.0
                macro_f1 += f / present
                balanced += r / present
                weighted += f * float(true[i]) / max(float(true.sum()), 1.0)
            precision[name] = None if p is None else 100.0 * p
            recall[name] = None if r is None else 100.0 * r
            f1[name] = None if f is None else 100.0 * f
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "macro_f1": 100.0 * macro_f1,
            "weighted_f1": 100.0 * weighted,
            "balanced_accuracy": 100.0 * balanced,
        }

    def calibration(self) -> dict[str, Any]:
        """``ece`` (percent) and ``reliability``: per confidence bin, its bounds, the images in
        it, their mean confidence and their accuracy (both percent; None for an empty bin)."""
        count, confidence, right = self.bins
        n = max(float(count.sum()), 1.0)
        gap = (right - confidence).abs().sum() / n  # sum over bins of share * |acc - conf|
        reliability = [
            {
                "lower": i / CALIBRATION_BINS,
                "upper": (i + 1) / CALIBRATION_BINS,
                "count": int(c),
                "confidence": 100.0 * float(conf / c) if c else None,
                "accuracy": 100.0 * float(r / c) if c else None,
            }
            for i, (c, conf, r) in enumerate(zip(count, confidence, right, strict=True))
        ]
        return {"ece": 100.0 * float(gap), "reliability": reliability}


@torch.no_grad()
def evaluate_batches(
    model: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    device: torch.device | None = None,
    progress: bool = False,
    min_confidence: float | None = None,
) -> ConfusionMeter:
    """Run ``model`` over (inputs, labels) batches; returns the filled meter. ``progress``
    shows a bar on stderr (batches, with the running top-1); ``min_confidence`` also counts
    the images answered at it (:meth:`ConfusionMeter.selective`)."""
    from tqdm import tqdm

    meter = ConfusionMeter(num_classes, min_confidence)
    total = len(batches) if isinstance(batches, Sized) else None
    bar = tqdm(batches, total=total, disable=not progress, unit="batch", leave=False)
    for x, y in bar:
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x).float()
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        meter.update(logits, y, float(loss))
        if progress:
            top1 = 100.0 * float(meter.matrix.diag().sum()) / max(meter.count, 1)
            bar.set_postfix(top1=f"{top1:.2f}")
    return meter
