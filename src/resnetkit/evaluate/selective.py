"""Selective classification: answer when confident enough, mark the rest unsure.

A classifier that must name one of its classes for every picture is wrong, without a sign of
it, on the pictures it cannot tell (and on pictures of nothing it knows). Geifman & El-Yaniv
2017 ("Selective Classification for Deep Neural Networks") showed that the softmax response,
the top class's probability, ranks a ResNet's answers well from likely right to likely wrong:
answering only above a threshold trades coverage (the share of images answered) for accuracy
on those answered. :func:`fit_min_confidence` chooses the threshold that answers as many
images as possible at a target accuracy; :func:`calibrate_min_confidence` does so on a random
part of held-out images and measures the result on the rest, with a one-sided 95%
Clopper-Pearson lower bound on the accuracy of the answers (what the target can be trusted
to).

A model directory keeps the threshold (``task.min_confidence``): ``predict`` and ``serve``
mark an answer below it ``unsure``, and ``evaluate`` reports coverage and the accuracy of the
answers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: The confidence of the lower bound on the accuracy of the answered images.
BOUND_LEVEL = 0.95


def model_min_confidence(model: nn.Module) -> float | None:
    """The model's own threshold (``task.min_confidence`` of its directory), or None."""
    from resnetkit.models.loading import preprocessing_of
    from resnetkit.predict import unwrap

    value = preprocessing_of(unwrap(model)).get("min_confidence")
    if value is None:
        return None
    try:  # an exported file's metadata is read unchecked
        return check_min_confidence(value) or None
    except ValueError:
        raise ValueError(
            f"the model's min_confidence is {value!r}: a probability in (0, 1) (fix or drop "
            "min_confidence in its config or metadata)"
        ) from None


def check_min_confidence(value: float) -> float:
    """A ``--min-confidence`` from a command line or a request: in [0, 1) (0: answer all)."""
    if not (isinstance(value, int | float) and 0 <= value < 1) or isinstance(value, bool):
        raise ValueError(
            f"min_confidence {value!r}: a probability in [0, 1) below which the top class is "
            "marked unsure (0 answers every image)"
        )
    return float(value)


def accuracy_lower_bound(right: int, total: int, level: float = BOUND_LEVEL) -> float:
    """One-sided Clopper-Pearson lower bound on a success rate (``right`` of ``total``): the
    smallest rate that would give ``right`` or more successes with probability
    ``1 - level``. 0 for no successes; NaN for no trials."""
    if total == 0:
        return math.nan
    if right == 0:
        return 0.0
    j = torch.arange(right, total + 1, dtype=torch.float64)
    log_choose = (
        math.lgamma(total + 1) - torch.lgamma(j + 1) - torch.lgamma(total - j + 1)
    )  # log C(total, j)

    def upper_tail(p: float) -> float:  # P(X >= right) for X ~ Binomial(total, p)
        if p >= 1.0:
            return 1.0
        terms = log_choose + j * math.log(p) + (total - j) * math.log1p(-p)
        return float(torch.logsumexp(terms, 0).exp())

    low, high = 0.0, right / total
    for _ in range(60):  # the tail grows with p: bisect for tail = 1 - level
        mid = (low + high) / 2
        if upper_tail(mid) < 1.0 - level:
            low = mid
        else:
            high = mid
    return low


def fit_min_confidence(confidence: Tensor, correct: Tensor, target: float) -> float:
    """The threshold that answers the most images at an accuracy of at least ``target``.

    Args:
        confidence: each image's top probability.
        correct: whether the top class is the image's (bool).
        target: the accuracy the answered images must reach, a fraction in (0, 1).

    Returns:
        The lowest confidence among the answered images: answering those at or above it
        gives the largest set whose accuracy reaches ``target`` (images of equal confidence
        are answered alike).

    Raises:
        ValueError: no images, a target outside (0, 1), or no threshold reaching it.
    """
    if not 0 < target < 1:
        raise ValueError(f"target accuracy {target}: a fraction in (0, 1), e.g. 0.99")
    if len(confidence) == 0:
        raise ValueError("no images to choose the threshold on")
    conf, hits, answered, ends = _ranked(confidence, correct)
    accuracy = hits / answered
    # hits >= target * answered, with room for the rounding of the target (99.9/100 is
    # 0.9990000000000001: 999 right of 1000 must count)
    good = ends & (hits >= target * answered - 1e-9)
    if not bool(good.any()):
        best = int(torch.where(ends, accuracy, -1.0).argmax())  # among the possible cuts
        raise ValueError(
            f"no confidence threshold makes {100 * target:g}% of the answers right on these "
            f"{len(conf)} images: the best is {100 * float(accuracy[best]):.2f}%, answering "
            f"the {best + 1} most confident; lower the target, or fit on more images"
        )
    last = int(good.nonzero().max())
    if float(conf[last]) >= 1.0:
        raise ValueError(
            f"only answers whose top probability is exactly 1 (the float32 softmax saturates) "
            f"are {100 * target:g}% right on these {len(conf)} images: the model is too "
            "confident to tell them apart. Scale it first (resnetkit calibrate --out DIR, "
            "temperature scaling) and choose on the scaled copy, or lower the target"
        )
    return float(conf[last])


def _ranked(confidence: Tensor, correct: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The images most confident first: their confidences, the running count of right
    answers, the running count of answers, and where a threshold may cut (the last of each
    group of equal confidences: a threshold answers ties together); float64."""
    order = confidence.double().argsort(descending=True, stable=True)
    conf = confidence.double()[order]
    hits = correct.double()[order].cumsum(0)
    answered = torch.arange(1, len(conf) + 1, dtype=torch.float64)
    ends = torch.ones(len(conf), dtype=torch.bool)
    ends[:-1] = conf[:-1] > conf[1:]
    return conf, hits, answered, ends


def selective_scores(
    confidence: Tensor, correct: Tensor, min_confidence: float
) -> dict[str, float | int | None]:
    """:func:`selective_summary` of answering the images whose ``confidence`` reaches
    ``min_confidence`` (``correct``: whether each image's top class is right)."""
    take = confidence.double() >= min_confidence  # in float64, as rank_classes compares
    return selective_summary(
        len(confidence), int(take.sum()), int(correct[take].sum()), int(correct.sum()),
        min_confidence,
    )  # fmt: skip


def selective_summary(
    images: int, answered: int, answered_right: int, right: int, min_confidence: float
) -> dict[str, float | int | None]:
    """``min_confidence``, ``answered`` (images), ``coverage`` (percent of all), ``top1``
    (percent of the answered right; None when none is), ``top1_lower_bound`` (its one-sided
    95% Clopper-Pearson bound) and ``unsure_top1`` (how often the top class would have been
    right on the others), from counts: ``right`` of all ``images``, ``answered_right`` of
    the ``answered``."""
    rest = images - answered
    return {
        "min_confidence": min_confidence,
        "answered": answered,
        "coverage": 100.0 * answered / images if images else None,
        "top1": 100.0 * answered_right / answered if answered else None,
        "top1_lower_bound": (
            100.0 * accuracy_lower_bound(answered_right, answered) if answered else None
        ),
        "unsure_top1": 100.0 * (right - answered_right) / rest if rest else None,
    }


#: At most this many points of a risk-coverage curve are kept (for plots and JSON).
CURVE_POINTS = 200


def risk_coverage(confidence: Tensor, correct: Tensor) -> dict[str, Any]:
    """The accuracy of the answers at every coverage a threshold can give (Geifman &
    El-Yaniv 2017's risk-coverage curve, as accuracy), and its summary number.

    Returns:
        ``coverage`` and ``accuracy`` (percent; at most :data:`CURVE_POINTS` points, from the
        most confident answers alone to all, the last always kept) and ``aurc``: the area
        under the risk-coverage curve, the error of the answers averaged over every coverage
        from one image to all (percent; lower is better; Geifman et al. 2019), from every
        image, not the points kept. Within a group of equal confidences, whose order means
        nothing, each position counts the group's right answers spread evenly (the expected
        count under any order), so the area does not depend on how ties were sorted.
    """
    n = len(confidence)
    if n == 0:
        raise ValueError("no images for a risk-coverage curve")
    _, hits, answered, ends = _ranked(confidence, correct)
    accuracy = hits / answered
    group = torch.zeros(n, dtype=torch.long)  # which group of equal confidences
    group[1:] = ends[:-1].long().cumsum(0)
    sizes = torch.bincount(group).double()
    right_in = hits[ends] - torch.cat([hits.new_zeros(1), hits[ends][:-1]])
    before = (hits[ends] - right_in)[group]
    place = torch.arange(1, n + 1, dtype=torch.float64) - (sizes.cumsum(0) - sizes)[group]
    expected = before + place * (right_in / sizes)[group]
    cuts = ends.nonzero().flatten()
    if len(cuts) > CURVE_POINTS:
        cuts = cuts[torch.linspace(0, len(cuts) - 1, CURVE_POINTS).round().long()]
    return {
        "coverage": (100.0 * (cuts + 1) / n).tolist(),
        "accuracy": (100.0 * accuracy[cuts]).tolist(),
        "aurc": 100.0 * float((1.0 - expected / answered).mean()),
    }


@dataclass(frozen=True)
class SelectiveReport:
    """What :func:`calibrate_min_confidence` found.

    Attributes:
        min_confidence: the chosen threshold on the top class's probability.
        target_accuracy: the accuracy (percent) the answered fitting images reach.
        fit_images: images the threshold was chosen on.
        check_images: held-out images ``after`` is measured on.
        before: :func:`selective_scores` of answering every checked image.
        after: :func:`selective_scores` at the threshold, on the checked images.
        curve: :func:`risk_coverage` of the checked images (its ``aurc`` in ``to_dict``,
            the points left out of it).
    """

    min_confidence: float
    target_accuracy: float
    fit_images: int
    check_images: int
    before: dict[str, Any]
    after: dict[str, Any]
    curve: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["aurc"] = out.pop("curve")["aurc"]
        return out


def calibrate_min_confidence(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    target_accuracy: float,
    *,
    split: str = "test",
    fit_fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    download: bool = False,
) -> SelectiveReport:
    """Choose ``min_confidence`` on a random ``fit_fraction`` of a split (the most images
    answered at ``target_accuracy``, a fraction), and measure it on the rest.

    Raises:
        ValueError: a multi-label model, ``fit_fraction`` outside (0, 1), too few images for
            both parts, or a target no threshold reaches.
    """
    from resnetkit.data.multilabel import model_threshold
    from resnetkit.evaluate.calibration import split_in_two
    from resnetkit.evaluate.evaluator import collect_logits

    if model_threshold(model) is not None:
        raise ValueError(
            "the model is multi-label (a sigmoid per class): it answers with every class at "
            "its threshold, not with one class to abstain from; choose per-class thresholds "
            "instead (resnetkit calibrate without --target-accuracy)"
        )
    if not 0 < target_accuracy < 1:
        raise ValueError(f"target accuracy {target_accuracy}: a fraction in (0, 1), e.g. 0.99")
    logits, labels, _ = collect_logits(
        model, dataset, data_dir, split=split, batch_size=batch_size, device=device,
        download=download,
    )  # fmt: skip
    # float32, as predict, serve and evaluate compute them: the chosen threshold is one of
    # these values exactly, so the image at the cut is answered there too (for the same
    # logits: another batch size, device or runtime may move one by a rounding step)
    confidence, top = logits.float().softmax(1).max(1)
    correct = top == labels
    fit, check = split_in_two(len(labels), fit_fraction, seed, f"{dataset} {split}")
    threshold = fit_min_confidence(confidence[fit], correct[fit], target_accuracy)
    return SelectiveReport(
        min_confidence=threshold,
        target_accuracy=100.0 * target_accuracy,
        fit_images=len(fit),
        check_images=len(check),
        before=selective_scores(confidence[check], correct[check], 0.0),
        after=selective_scores(confidence[check], correct[check], threshold),
        curve=risk_coverage(confidence[check], correct[check]),
    )
