"""Multi-label classification: each image has any number of the classes (none included).

The data side carries one integer per image either way: for a multi-label label file (see
:mod:`resnetkit.data.labels`) it indexes the image's *label set*, written as its class names
joined by ``|`` (``""`` for none). :func:`label_sets` turns these keys into the class names
and a ``(sets, classes)`` multi-hot table, so that a batch's targets are ``table[labels]``.

The model scores each class on its own: a sigmoid per class, trained with binary
cross-entropy (as timm's ``BinaryCrossEntropy`` and Hugging Face's
``multi_label_classification``); a class is predicted when its probability reaches the
model's threshold (0.5 unless its config says otherwise; or one threshold per class, chosen
on held-out images by :func:`fit_thresholds`, ``resnetkit calibrate``).

Metrics (:class:`MultiLabelMeter`): mean average precision over the classes that have
positive images (``map``, the headline of multi-label benchmarks such as VOC and COCO; AP as
scikit-learn's ``average_precision_score``), and at the threshold micro- and macro-F1,
exact-match accuracy (every class of the image right) and per-class precision/recall/F1.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from resnetkit.data.labels import SET_SEPARATOR  # what joins the class names of a set's key

#: The probability from which a class counts as predicted, unless a model says otherwise.
DEFAULT_THRESHOLD = 0.5

#: One probability for every class, or one per class.
Threshold = float | list[float]


def label_sets(keys: Sequence[str]) -> tuple[list[str], Tensor]:
    """Class names and the ``(len(keys), classes)`` float multi-hot table of label-set keys.

    >>> label_sets(["", "cat", "cat|dog"])[1].tolist()
    [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
    """
    from resnetkit.data.labels import sort_class_names

    members = [[name for name in key.split(SET_SEPARATOR) if name] for key in keys]
    classes = list(sort_class_names({name for names in members for name in names}))
    index = {name: i for i, name in enumerate(classes)}
    table = torch.zeros(len(keys), len(classes))
    for row, names in enumerate(members):
        table[row, [index[name] for name in names]] = 1.0
    return classes, table


def is_multi_label_file(path: str | Path) -> bool:
    """Whether ``path`` is a label file with a multi-label column (reads the header only)."""
    import csv

    from resnetkit.data.labels import MULTI_LABEL_COLUMNS, is_label_file

    if not is_label_file(path):
        return False
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter=delimiter), [])
    except (OSError, UnicodeDecodeError):
        return False  # read_label_file says what is wrong
    return any(cell.strip().lower() in MULTI_LABEL_COLUMNS for cell in header)


def smooth_targets(targets: Tensor, smoothing: float) -> Tensor:
    """Label smoothing for independent binary targets: ``1 -> 1 - s/2``, ``0 -> s/2`` (as
    Keras's ``BinaryCrossentropy(label_smoothing=s)``: each target pulled towards 0.5)."""
    if not smoothing:
        return targets
    return targets * (1.0 - smoothing) + smoothing / 2


def multi_label_loss(logits: Tensor, targets: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy with logits over images and classes, in float32.
    ``pos_weight`` (classes,) weighs each class's positive term (class balancing)."""
    return F.binary_cross_entropy_with_logits(
        logits.float(), targets.float(), pos_weight=pos_weight
    )


def positive_weights(targets: Tensor) -> Tensor:
    """Per class, negatives over positives of the training targets (``pos_weight`` of
    torch's BCE, balancing rare classes), clamped to [1/100, 100]; 1 for a class with no
    positive or no negative image."""
    positives = targets.double().sum(0)
    negatives = len(targets) - positives
    ratio = torch.where(
        (positives > 0) & (negatives > 0), negatives / positives.clamp(min=1), torch.ones(())
    )
    return ratio.clamp(0.01, 100.0).float()


def exact_matches(logits: Tensor, targets: Tensor, threshold: float = DEFAULT_THRESHOLD) -> Tensor:
    """How many images have every class right at ``threshold`` (a 0-dim int64 tensor)."""
    predicted = logits.float().sigmoid() >= threshold
    return (predicted == (targets >= 0.5)).all(1).sum()


def precision_recall(scores: Tensor, positives: Tensor) -> tuple[Tensor, Tensor] | None:
    """Precision and recall (float64, 0-1) at every distinct score taken as the threshold,
    from the highest down (scikit-learn's ``precision_recall_curve``, in the other order);
    None without positives."""
    total = int(positives.sum())
    if total == 0:
        return None
    order = torch.argsort(scores, descending=True, stable=True)
    s, hit = scores[order].double(), positives[order].double()
    tp, seen = hit.cumsum(0), torch.arange(1, len(s) + 1, dtype=torch.float64)
    last = torch.ones(len(s), dtype=torch.bool)  # the last of each run of equal scores
    last[:-1] = s[1:] != s[:-1]
    tp, seen = tp[last], seen[last]
    return tp / seen, tp / total


def average_precision(scores: Tensor, positives: Tensor) -> float | None:
    """Average precision of one class as scikit-learn's ``average_precision_score``: the sum
    over distinct score thresholds of (recall gained) x (precision there); None without
    positives."""
    curve = precision_recall(scores, positives)
    if curve is None:
        return None
    precision, recall = curve
    gained = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((gained * precision).sum())


#: Points kept of a precision-recall curve (by recall, evenly) for JSON and figures.
CURVE_POINTS = 200


def _curve_points(curve: tuple[Tensor, Tensor]) -> dict[str, list[float]]:
    precision, recall = curve
    if len(recall) > CURVE_POINTS:  # the first point of each recall step, evenly spread
        keep = torch.linspace(0, len(recall) - 1, CURVE_POINTS).round().long().unique()
        precision, recall = precision[keep], recall[keep]
    return {"precision": precision.tolist(), "recall": recall.tolist()}


class MultiLabelMeter:
    """Collects probabilities and targets of an evaluation; :meth:`summary` scores them."""

    def __init__(self, num_classes: int, threshold: Threshold = DEFAULT_THRESHOLD) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self._cut = threshold_tensor(threshold, num_classes)
        self.scores: list[Tensor] = []
        self.targets: list[Tensor] = []
        self.loss_sum = 0.0

    @property
    def count(self) -> int:
        return sum(len(t) for t in self.targets)

    def update(self, logits: Tensor, targets: Tensor) -> None:
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(
                "the model's outputs are NaN or infinite: its weights are broken (a diverged "
                "training run?)"
            )
        logits, targets = logits.float(), targets.float()
        self.loss_sum += float(
            F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
        ) / max(self.num_classes, 1)
        self.scores.append(logits.sigmoid().cpu())
        self.targets.append(targets.cpu())

    def summary(self, classes: Iterable[str] | None = None, curves: bool = False) -> dict[str, Any]:
        """``map`` and per-class ``ap``; at the threshold ``micro_f1``, ``macro_f1``,
        ``exact`` (images with every class right) and per-class ``precision``, ``recall``,
        ``f1`` and ``support`` (positive images); ``loss`` (BCE per image and class); with
        ``curves``, ``pr_curves`` (see :meth:`_pr_curves`). All in
        percent; None where undefined (AP and recall: no positive image; precision: nothing
        predicted; F1: neither). ``macro_f1`` averages the classes whose F1 is defined."""
        names = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]
        scores = torch.cat(self.scores) if self.scores else torch.zeros(0, self.num_classes)
        truth = torch.cat(self.targets) >= 0.5 if self.targets else scores.bool()
        predicted = scores >= self._cut
        tp = (predicted & truth).sum(0).double()
        n_pred, n_true = predicted.sum(0).double(), truth.sum(0).double()
        ap: dict[str, float | None] = {}
        precision: dict[str, float | None] = {}
        recall: dict[str, float | None] = {}
        f1: dict[str, float | None] = {}
        for i, name in enumerate(names):
            value = average_precision(scores[:, i], truth[:, i])
            ap[name] = None if value is None else 100.0 * value
            precision[name] = 100.0 * float(tp[i] / n_pred[i]) if n_pred[i] else None
            recall[name] = 100.0 * float(tp[i] / n_true[i]) if n_true[i] else None
            # 2TP / (2TP + FP + FN): 0 for a class predicted on images that do not have it,
            # even without positives (scikit-learn's f1_score); undefined only when the class
            # is neither present nor predicted.
            both = n_pred[i] + n_true[i]
            f1[name] = 200.0 * float(tp[i] / both) if both else None
        present = [v for v in ap.values() if v is not None]
        scored = [v for v in f1.values() if v is not None]
        micro_den = float(n_pred.sum() + n_true.sum())
        count = len(scores)
        return {
            "map": sum(present) / len(present) if present else None,
            "micro_f1": 200.0 * float(tp.sum()) / micro_den if micro_den else None,
            "macro_f1": sum(scored) / len(scored) if scored else None,
            "exact": 100.0 * float((predicted == truth).all(1).sum()) / max(count, 1),
            "loss": self.loss_sum / max(count, 1),
            "count": count,
            "threshold": self.threshold,
            "ap": ap,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": {name: int(n) for name, n in zip(names, n_true.tolist(), strict=True)},
            **({"pr_curves": self._pr_curves(names, scores, truth)} if curves else {}),
        }

    @staticmethod
    def _pr_curves(names: list[str], scores: Tensor, truth: Tensor) -> dict[str, Any]:
        """Precision-recall curves: ``{"classes": {name: curve}, "micro": curve}``, a curve
        being ``{"precision": [...], "recall": [...]}`` (0-1, at most :data:`CURVE_POINTS`
        points); ``classes`` leaves out a class without positives, ``micro`` pools every
        image and class (None without any positive)."""
        per_class = {}
        for i, name in enumerate(names):
            curve = precision_recall(scores[:, i], truth[:, i])
            if curve is not None:
                per_class[name] = _curve_points(curve)
        pooled = precision_recall(scores.flatten(), truth.flatten())
        return {"classes": per_class, "micro": None if pooled is None else _curve_points(pooled)}


@torch.no_grad()
def evaluate_multi_label(
    model: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    table: Tensor,
    device: torch.device | None = None,
    threshold: Threshold = DEFAULT_THRESHOLD,
    progress: bool = False,
) -> MultiLabelMeter:
    """Run ``model`` over ``(inputs, label-set indices)`` batches; the targets are
    ``table[labels]``. Returns the filled meter."""
    from tqdm import tqdm

    meter = MultiLabelMeter(table.shape[1], threshold)
    total = len(batches) if isinstance(batches, Sized) else None
    bar = tqdm(batches, total=total, disable=not progress, unit="batch", leave=False)
    for x, y in bar:
        if device is not None:
            x = x.to(device, non_blocking=True)
        meter.update(model(x).float().cpu(), table[y.cpu()])
    return meter


def model_threshold(model: Any) -> Threshold | None:
    """A multi-label model's threshold (its config's, else :data:`DEFAULT_THRESHOLD`; a list
    when it has one per class); None for a model that picks one class an image (softmax)."""
    from resnetkit.models.loading import preprocessing_of
    from resnetkit.predict import unwrap

    cfg = preprocessing_of(unwrap(model))
    if not cfg.get("multi_label"):
        return None
    threshold = cfg.get("threshold", DEFAULT_THRESHOLD)
    return [float(t) for t in threshold] if isinstance(threshold, list) else float(threshold)


def threshold_tensor(threshold: Threshold, num_classes: int) -> Tensor:
    """``threshold`` as a (classes,) tensor, to compare probabilities (images, classes) with.

    Raises:
        ValueError: a list of another length than ``num_classes``.
    """
    if isinstance(threshold, list):
        if len(threshold) != num_classes:
            raise ValueError(f"{len(threshold)} per-class thresholds for {num_classes} classes")
        return torch.tensor(threshold, dtype=torch.float32)
    return torch.full((num_classes,), float(threshold))


def describe_threshold(threshold: Threshold) -> str:
    """``0.5``, or ``per class (0.21 to 0.74)``."""
    if isinstance(threshold, list):
        return f"per class ({min(threshold):.2g} to {max(threshold):.2g})"
    return f"{threshold:g}"


#: Where :func:`fit_thresholds` keeps a class's threshold: away from 0 and 1, where one
#: image more or less would flip it.
THRESHOLD_RANGE = (0.05, 0.95)


def fit_thresholds(probs: Tensor, targets: Tensor, default: Threshold) -> list[float]:
    """One threshold per class, maximising that class's F1 on ``probs``/``targets`` (images,
    classes): the midpoint between the probability that scores best as a threshold and the
    next lower one, among the midpoints within :data:`THRESHOLD_RANGE`. A class without
    positive images (or no usable midpoint) keeps its ``default``. Ties go to the threshold
    nearest 0.5 (the fewest surprises).

    Probabilities are compared in float32 (:class:`MultiLabelMeter`, ``predict`` and
    ``serve`` all do), so each threshold is a float32 value: the midpoint rounded to float32,
    or, where that rounding lands on the lower probability itself (two neighbouring float32
    values), the next float32 above it; it predicts exactly the images whose F1 it scored."""
    threshold_tensor(default, probs.shape[1])  # the length checked
    cut = default if isinstance(default, list) else [float(default)] * probs.shape[1]
    low, high = THRESHOLD_RANGE
    out = []
    for c in range(probs.shape[1]):
        truth = targets[:, c] >= 0.5
        positives = int(truth.sum())
        if positives == 0:
            out.append(float(cut[c]))
            continue
        p = probs[:, c].float()  # the precision every consumer compares in
        order = torch.argsort(p, descending=True, stable=True)
        ps, hit = p[order], truth[order].double()
        tp = hit.cumsum(0)
        predicted = torch.arange(1, len(ps) + 1, dtype=torch.float64)
        f1 = 2 * tp / (predicted + positives)
        below = torch.cat([ps[1:], torch.zeros(1, dtype=torch.float32)])
        # predicts exactly the images down to this one: a float32 in (below, ps]
        middle = ((ps.double() + below.double()) / 2).float()
        middle = torch.where(middle > below, middle, torch.nextafter(below, torch.ones(())))
        usable = (ps != below) & (middle >= low) & (middle <= high)
        if not bool(usable.any()):
            out.append(float(cut[c]))
            continue
        best = float(f1[usable].max())
        choices = middle[usable][f1[usable] >= best - 1e-12]
        out.append(float(choices[(choices - 0.5).abs().argmin()]))
    return out


def check_threshold(threshold: float) -> float:  # a command line's --threshold
    """``threshold`` if it is a probability strictly between 0 and 1, else ValueError."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    return float(threshold)


def targets_for_model(keys: Sequence[str], model_classes: Sequence[str], where: str) -> Tensor:
    """The multi-hot table of label-set ``keys`` with one column per class of a model (its
    order): a class the data never names is a column of zeros.

    Raises:
        ValueError: the data names a class the model does not predict.
    """
    names, table = label_sets(keys)
    index = {str(name): i for i, name in enumerate(model_classes)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ValueError(
            f"class mismatch: {where} names {', '.join(unknown[:10])}, which the model does "
            f"not predict (its classes: {', '.join(map(str, list(model_classes)[:10]))}"
            f"{', ...' if len(model_classes) > 10 else ''}); fine-tune it for this data first"
        )
    out = torch.zeros(len(keys), len(model_classes))
    out[:, [index[name] for name in names]] = table
    return out


def stratified_hold_out(sets: Sequence[Iterable[int]], fraction: float, seed: int) -> set[int]:
    """The images (indices) to hold out for validation from multi-label data: about
    ``fraction`` of them, and about ``fraction`` of each class's positives, rare classes
    first (the iterative stratification of Sechidis et al. 2011, "On the Stratification of
    Multi-Label Data": a random split can leave a rare class out of validation, and stratifying
    by label set cannot, with most sets of one or two images). ``sets`` lists each image's
    classes; the draw depends on ``seed`` and the given order. At least one image is held
    out of two or more when ``fraction > 0``, and never all of them."""
    n = len(sets)
    members = [sorted(set(s)) for s in sets]
    if n < 2 or fraction <= 0.0:
        return set()
    rng = random.Random(f"{seed}:stratify")
    order = list(range(n))
    rng.shuffle(order)
    position = {i: rank for rank, i in enumerate(order)}
    by_class: dict[int, list[int]] = {}
    for i in order:
        for c in members[i]:
            by_class.setdefault(c, []).append(i)
    # what each part still wants: images, and positives of each class (0: val, 1: train)
    want = [fraction * n, (1.0 - fraction) * n]
    want_class = [
        {c: fraction * len(ids) for c, ids in by_class.items()},
        {c: (1.0 - fraction) * len(ids) for c, ids in by_class.items()},
    ]
    left = {c: len(ids) for c, ids in by_class.items()}
    placed: dict[int, int] = {}

    def place(i: int, part: int) -> None:
        placed[i] = part
        want[part] -= 1
        for c in members[i]:
            want_class[part][c] -= 1
            left[c] -= 1

    while any(left.values()):
        rarest = min((c for c in left if left[c] > 0), key=lambda c: (left[c], c))
        for i in by_class[rarest]:
            if i in placed:
                continue
            scores = [(want_class[p][rarest], want[p], rng.random()) for p in (0, 1)]
            place(i, 0 if scores[0] > scores[1] else 1)
    for i in order:  # images of no class: where more images are wanted
        if i not in placed:
            place(i, 0 if (want[0], rng.random()) > (want[1], rng.random()) else 1)
    val = {i for i, part in placed.items() if part == 0}
    if not val:  # at least one, and never all
        val = {order[0]}
    elif len(val) == n:
        val.discard(max(val, key=position.__getitem__))
    return val
