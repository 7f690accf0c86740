"""Classification metrics accumulated over batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ConfusionMeter:
    """Accumulates a confusion matrix (rows: true class, columns: predicted) and top-5 hits."""

    num_classes: int

    def __post_init__(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.top5_hits = 0
        self.loss_sum = 0.0

    def update(self, logits: Tensor, labels: Tensor, loss_sum: float = 0.0) -> None:
        pred = logits.argmax(1)
        index = labels * self.num_classes + pred
        self.matrix += torch.bincount(index.cpu(), minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )
        k = min(5, self.num_classes)
        self.top5_hits += int((logits.topk(k, 1).indices == labels[:, None]).any(1).sum())
        self.loss_sum += loss_sum

    @property
    def count(self) -> int:
        return int(self.matrix.sum())

    def summary(self, classes: Iterable[str] | None = None) -> dict[str, object]:
        """top1/top5 in percent, mean loss, per-class accuracy and the confusion matrix."""
        n = max(self.count, 1)
        correct = self.matrix.diag()
        per_class_total = self.matrix.sum(1).clamp(min=1)
        names = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]
        return {
            "top1": 100.0 * float(correct.sum()) / n,
            "top5": 100.0 * self.top5_hits / n,
            "loss": self.loss_sum / n,
            "count": self.count,
            "per_class": {
                name: 100.0 * float(c) / float(t)
                for name, c, t in zip(names, correct, per_class_total, strict=True)
            },
            "confusion": self.matrix.tolist(),
        }


@torch.no_grad()
def evaluate_batches(
    model: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    device: torch.device | None = None,
    progress: bool = False,
) -> ConfusionMeter:
    """Run ``model`` over (inputs, labels) batches; returns the filled meter. ``progress``
    shows a bar on stderr (batches, with the running top-1)."""
    from tqdm import tqdm

    meter = ConfusionMeter(num_classes)
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
