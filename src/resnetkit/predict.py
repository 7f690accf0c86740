"""Classify image files and folders with a trained model: ``resnetkit.predict``.

Every file goes through :func:`~resnetkit.data.images.load_image`, so a bad file (empty,
truncated, not an image, a decompression bomb) becomes an entry in ``failures`` with its reason
and never stops the others. Preprocessing is the model's own (see
:func:`~resnetkit.models.loading.preprocessing_of`): resize the shorter side, centre-crop,
normalise by per-channel mean/std, or subtract the paper's per-pixel mean when the model has one.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnetkit.text import first_few

if TYPE_CHECKING:  # torch is imported when a function runs, not with ``import resnetkit``
    from PIL import Image
    from torch import Tensor, nn

__all__ = ["PredictionReport", "Preprocessing", "class_names", "collect_images", "predict"]


@dataclass
class PredictionReport:
    """What :func:`predict` found, in input order.

    Attributes:
        predictions: one ``{"path", "top_k": [{"class", "index", "probability"}]}`` per image
            that was read, ``top_k`` sorted by descending probability. A multi-label model's
            also have ``labels``: every class whose (sigmoid) probability reaches the
            threshold, most likely first, any number of them (``top_k`` then holds at least
            these).
        failures: one ``{"path", "reason"}`` per file (or empty folder) that could not be used.
    """

    predictions: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form: ``{"predictions": [...], "failures": [...]}``."""
        return {"predictions": self.predictions, "failures": self.failures}


@dataclass(frozen=True, eq=False)  # a Tensor field: == would raise; compare the fields
class Preprocessing:
    """How a decoded RGB image becomes a model input.

    Attributes:
        image_size: side of the centre crop fed to the model.
        resize: shorter side before cropping.
        interpolation: resize interpolation (``bilinear``, ``bicubic``, ...).
        mean: per-channel mean, 0-1 scale (unused with ``pixel_mean``).
        std: per-channel standard deviation, 0-1 scale (unused with ``pixel_mean``).
        pixel_mean: (C, image_size, image_size) mean image to subtract instead, or ``None``.
        channels: 3 (RGB), or 1 for a grayscale model (images are converted to luminance,
            and three-value mean/std averaged, as timm does for ``in_chans=1``).
    """

    image_size: int
    resize: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_mean: Tensor | None = None
    channels: int = 3

    @classmethod
    def of(cls, model: nn.Module) -> Preprocessing:
        """Read a model's preprocessing (``input_size``, optional ``crop``, ``resize``,
        ``crop_pct``, ``interpolation``, ``pixel_mean``), with the same defaults as
        :func:`~resnetkit.data.transforms.build_eval_transform`: small inputs such as CIFAR's
        32x32 are resized to the input size whole, large ones resized to 1/0.875 and cropped."""
        from resnetkit.models.loading import preprocessing_of
        from resnetkit.models.model_dir import interpolation_problem

        cfg = preprocessing_of(model)
        # set in Python, not read from config.json (which is checked when loaded)
        problem = interpolation_problem(cfg.get("interpolation"), "pretrained_cfg['interpolation']")
        if problem:
            raise ValueError(f"the model's {problem}")
        channels = int(getattr(getattr(model, "config", None), "in_chans", 3))
        if channels not in (1, 3):
            raise ValueError(
                f"the model takes {channels} input channels; image files give 3 (RGB) or 1 "
                "(grayscale): feed it tensors of your own"
            )
        size = int(cfg.get("crop") or cfg["input_size"])
        crop_pct = float(cfg.get("crop_pct") or (0.875 if size >= 128 else 1.0))
        resize = int(cfg.get("resize") or round(size / crop_pct))
        pixel_mean = None
        if cfg.get("pixel_mean") is not None:
            values = cfg["pixel_mean"]
            if len(values) != channels * size * size:
                raise ValueError(
                    f"the model's pixel_mean has {len(values)} values; expected "
                    f"{channels}*{size}*{size} = {channels * size * size} for {size}x{size} "
                    "inputs"
                )
            import torch

            pixel_mean = torch.tensor(values, dtype=torch.float32).view(channels, size, size)
        return cls(
            image_size=size,
            resize=resize,
            interpolation=str(cfg.get("interpolation") or "bilinear"),
            mean=channel_stats_for(cfg["mean"], channels),
            std=channel_stats_for(cfg["std"], channels),
            pixel_mean=pixel_mean,
            channels=channels,
        )

    def transform(self) -> Callable[[Image.Image], Tensor]:
        """A function from a decoded image to the model's (C, H, W) float32 input. Images of
        other modes (RGBA, palette, grayscale, 16-bit...) are converted to RGB first as image
        files are (:func:`~resnetkit.data.images.to_rgb`: transparency onto white)."""
        from PIL.Image import Image as PILImage

        from resnetkit.data.images import to_rgb
        from resnetkit.data.transforms import build_eval_transform

        # With a per-pixel mean the transform only scales to 0-1; the mean image is
        # subtracted after.
        per_channel = self.pixel_mean is None
        base = build_eval_transform(
            self.image_size,
            self.mean if per_channel else (0.0,) * self.channels,
            self.std if per_channel else (1.0,) * self.channels,
            resize=self.resize,
            interpolation=self.interpolation,
        )
        pixel_mean = self.pixel_mean
        gray = self.channels == 1

        def to_input(image: Image.Image) -> Tensor:
            if isinstance(image, PILImage):  # RGBA gave four channels to three means
                image = to_rgb(image)
            x: Tensor = base(image.convert("L") if gray else image)
            return x - pixel_mean if pixel_mean is not None else x

        return to_input


def channel_stats_for(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """A model's per-channel mean or std for ``channels`` inputs: one value serves every
    channel (as torchvision's ``Normalize`` broadcasts it); three are averaged to one for a
    grayscale model (a converted RGB model keeps its RGB statistics in its config)."""
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if channels == 1 and len(values) == 3:
        return (sum(values) / 3.0,)
    if len(values) != channels:
        raise ValueError(f"{len(values)} normalisation values for a {channels}-channel model")
    return values


def check_counts(**counts: Any) -> None:
    """Refuse any of ``counts`` that is not a whole number >= 1, by its name (``top_k=2.5``
    and ``batch_size="64"`` reached torch's errors, ``batch_size=0`` a ZeroDivisionError)."""
    for name, value in counts.items():
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be at least 1 (a whole number), got {value!r}")


def image_inputs(inputs: Any) -> list[str | Path]:
    """``inputs`` of :func:`predict` and :func:`~resnetkit.explain.embed` as a list of paths:
    one path becomes a list of one (a string is not iterated letter by letter); anything but
    paths, or none at all, is refused with what to pass instead."""
    if isinstance(inputs, str | Path | bytes | bytearray):
        inputs = [inputs]  # bytes are refused below, with the way to classify them
    try:
        inputs = list(inputs)  # a generator would be used up by the check below
    except TypeError:
        inputs = [inputs]  # a PIL image or an array: refused below
    if not all(isinstance(item, str | Path) for item in inputs):
        raise TypeError(
            "inputs must be image file or folder paths (str or Path); for encoded bytes or "
            "decoded images, prepare them with Preprocessing.of(model).transform() and call "
            "the model, or use `resnetkit serve`"
        )
    if not inputs:
        raise ValueError("no images given: pass image files and/or folders")
    return inputs


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand folders (recursively, sorted) into image files; keep named files as given.

    Files named explicitly are used whatever their suffix; inside folders only
    :data:`~resnetkit.data.images.IMAGE_EXTENSIONS` count.

    Returns:
        ``(files, failures)``; a folder without any image file is a failure.
    """
    from resnetkit.data.images import IMAGE_EXTENSIONS, image_files, left_out, suffix_counts

    files: list[Path] = []
    failures: list[dict[str, str]] = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            files.append(path)  # a missing or unreadable file is reported when it is decoded
            continue
        skipped: Counter[str] = Counter()
        found = image_files(path, skipped)
        if not found:
            reason = f"folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
            reason += f"; other files: {suffix_counts(skipped)}" if skipped else ""
            failures.append({"path": str(path), "reason": reason})
        elif skipped:  # .heic photos left out by their name: say so, not nothing
            warnings.warn(f"{path}: {left_out(skipped)}", UserWarning, stacklevel=2)
        files.extend(found)
    return files, failures


def predict(
    model: nn.Module | str | Path,
    inputs: Sequence[str | Path] | str | Path,
    *,
    arch: str | None = None,
    top_k: int = 5,
    batch_size: int = 64,
    progress: bool = False,
    tta: bool = False,
    threshold: float | None = None,
    min_confidence: float | None = None,
    on_batch: Callable[[list[dict[str, Any]], Sequence[Path]], object] | None = None,
) -> PredictionReport:
    """Classify image files and folders; bad files are reported, never fatal.

    Args:
        model: a loaded classifier (e.g. from :func:`~resnetkit.models.loading.load_model`),
            or what ``load_model`` accepts: a model directory, a packaged tag such as
            ``resnet20.cifar10``, or a checkpoint file (with ``arch``); or an ``.onnx`` file
            written by ``resnetkit export``, run by ONNX Runtime. It runs on the device its
            parameters are on.
        inputs: image files and/or folders (searched recursively, sorted).
        arch: architecture of a bare checkpoint file, as for ``load_model``.
        top_k: classes reported per image (at most the number of classes).
        batch_size: images per forward pass.
        progress: show a progress bar (on stderr) when there is more than one batch.
        tta: test-time augmentation: average the probabilities (softmax, or a multi-label
            model's sigmoids) of each image and of its mirror image (twice the compute; the
            flip the models were trained with).
        threshold: a multi-label model's probability from which a class is an image's
            (default: the model's own: 0.5 unless its config says otherwise, which may give
            one per class). Multi-label
            models score each class with a sigmoid, the others with a softmax.
        min_confidence: a top-class probability below which an answer is marked ``unsure``
            (selective classification; default: the model's own, chosen by ``resnetkit
            calibrate --target-accuracy``; 0 marks none). Models that pick one class only.
        on_batch: called after each batch with its predictions (in input order, as they are
            appended to the report) and every image file to be read (the same list each call,
            e.g. to align columns), so that results can be written as they come: a run
            stopped half-way (Ctrl-C) keeps what was written. The progress bar is cleared
            while it runs, so it may print.

    Returns:
        A :class:`PredictionReport`. Class names come from the model (its index as a string
        when it has none).

    Raises:
        ValueError: no inputs, ``top_k`` or ``batch_size`` below 1, a model without a
            classifier head or whose class names do not match its head, or a model that
            ``load_model`` refuses.
    """
    import torch
    from tqdm import tqdm

    from resnetkit.data.multilabel import check_threshold, model_threshold
    from resnetkit.models.loading import load_classifier

    inputs = image_inputs(inputs)
    check_counts(top_k=top_k, batch_size=batch_size)
    if arch is not None and not isinstance(model, str | Path):
        raise ValueError(
            "arch is for a model given by its file (a bare checkpoint); this one is loaded already"
        )
    net = load_classifier(model, arch=arch) if isinstance(model, str | Path) else unwrap(model)
    classes = class_names(net)
    own_threshold = model_threshold(net)
    if threshold is not None and own_threshold is None:
        raise ValueError(
            "threshold is for multi-label models (a sigmoid per class); this one picks one "
            "class an image: use top_k (--top-k)"
        )
    cut = check_threshold(threshold) if threshold is not None else own_threshold
    floor = unsure_below(
        net,
        min_confidence,
        multi_label=own_threshold is not None,
        other_views="--tta (mirror-image averaging)" if tta else None,
    )
    scores = _sigmoid if cut is not None else _softmax
    k = min(top_k, len(classes))
    prep = Preprocessing.of(net)

    files, failures = collect_images(inputs)
    report = PredictionReport(failures=failures)
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    bar = tqdm(
        total=len(files),
        unit="img",
        desc="predict",
        disable=not (progress and len(files) > batch_size),
    )
    was_training = net.training
    net.eval()
    try:
        for paths, batch in image_batches(files, prep, batch_size, report.failures, bar.update):
            with torch.inference_mode():
                x = batch.to(device=device, dtype=dtype)
                probs = scores(net(x))
                if tta:
                    probs = (probs + scores(net(_mirror(x, prep)))) / 2
            rankings = rank_classes(probs, classes, k, cut, min_confidence=floor)
            done = [{"path": str(p), **r} for p, r in zip(paths, rankings, strict=True)]
            report.predictions.extend(done)
            if on_batch is not None:
                bar.clear()
                on_batch(done, files)
                bar.refresh()
    finally:
        net.train(was_training)
        bar.close()
    return report


def _softmax(logits: Tensor) -> Tensor:
    return logits.float().softmax(dim=1)


def _sigmoid(logits: Tensor) -> Tensor:
    return logits.float().sigmoid()


def unsure_below(
    model: nn.Module,
    min_confidence: float | None,
    *,
    multi_label: bool,
    other_views: str | None = None,
) -> float | None:
    """The top-class probability below which answers are marked unsure: ``min_confidence``
    when given (0: none), else the model's own; None when nothing is marked.

    ``other_views`` says how the probabilities differ from the single view at the model's
    own size its threshold was chosen on (``"10-crop testing"``, ...): the model's own is
    then not applied (with a warning), only a ``min_confidence`` given.

    Raises:
        ValueError: a value outside [0, 1), or one given for a multi-label model.
    """
    import warnings

    from resnetkit.evaluate.selective import check_min_confidence, model_min_confidence

    if min_confidence is not None and multi_label and min_confidence > 0:
        raise ValueError(
            "min_confidence is for models that pick one class an image; a multi-label model "
            "answers every class at its threshold (give --threshold)"
        )
    if min_confidence is not None:
        return check_min_confidence(min_confidence) or None
    own = model_min_confidence(model) if not multi_label else None
    if own is not None and other_views is not None:
        warnings.warn(
            f"the model's min_confidence {own:.4g} was chosen on single-view probabilities at "
            f"its own input size; with {other_views} they differ, so no answer is marked "
            "unsure (give --min-confidence to mark some)",
            stacklevel=3,
        )
        return None
    return own


def rank_classes(
    probs: Tensor,
    classes: Sequence[str],
    k: int,
    threshold: float | list[float] | None = None,
    *,
    min_confidence: float | None = None,
) -> list[dict[str, Any]]:
    """Per image of ``probs`` (images, classes): ``{"top_k": [{"class", "index",
    "probability"}]}``, the ``k`` most probable classes; with a multi-label ``threshold`` also
    ``labels``, every class at or above it, most probable first (``top_k`` then ranks at
    least these); with ``min_confidence`` also ``unsure``, whether the top class's
    probability is below it. What ``predict`` and ``resnetkit serve`` answer.

    Raises:
        ValueError: a per-class ``threshold`` list of another length than ``classes``.
    """
    if isinstance(threshold, list) and len(threshold) != len(classes):
        raise ValueError(
            f"{len(threshold)} per-class thresholds for {len(classes)} classes: the model's "
            "task.threshold belongs to another head; calibrate it again (resnetkit calibrate) "
            "or give one threshold"
        )
    probs = probs.float().cpu()
    values, indices = probs.topk(min(k, len(classes)), dim=1)
    out = []
    for row, p, i in zip(probs.tolist(), values.tolist(), indices.tolist(), strict=True):
        top = [
            {"class": classes[c], "index": c, "probability": v} for v, c in zip(p, i, strict=True)
        ]
        ranking: dict[str, Any] = {"top_k": top}
        if min_confidence is not None:
            ranking["unsure"] = p[0] < min_confidence
        if threshold is not None:
            cuts = threshold if isinstance(threshold, list) else [threshold] * len(classes)
            order = sorted((c for c, v in enumerate(row) if v >= cuts[c]), key=lambda c: -row[c])
            ranking["labels"] = [
                {"class": classes[c], "index": c, "probability": row[c]} for c in order
            ]
            # by index, not position: topk may order equal probabilities otherwise
            ranked = {t["index"] for t in top}
            top.extend(t for t in ranking["labels"] if t["index"] not in ranked)
        out.append(ranking)
    return out


def _mirror(x: Tensor, prep: Preprocessing) -> Tensor:
    """The normalised batch of the mirrored images: a per-pixel mean is subtracted from the
    mirror image as it is, not mirrored with it."""
    if prep.pixel_mean is None:
        return x.flip(-1)
    mean = prep.pixel_mean.to(device=x.device, dtype=x.dtype)
    return (x + mean).flip(-1) - mean


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel, DataParallel or an AveragedModel (EMA):
    the one whose preprocessing, classes and head count."""
    from torch import nn

    inner = getattr(model, "module", None)
    while isinstance(inner, nn.Module) and inner is not model:
        model, inner = inner, getattr(inner, "module", None)
    return model


def class_names(model: nn.Module) -> list[str]:
    """The names of the classes a model predicts (indices as strings when it lists none).

    Raises:
        ValueError: the model has no classifier head (``num_classes=0`` or ``features_only``).
    """
    from resnetkit.models.loading import preprocessing_of

    model = unwrap(model)
    if getattr(model, "features_only", False):
        raise ValueError(
            "the model was built with features_only=True: it returns feature maps, not class "
            "scores; build it without features_only to classify"
        )
    if hasattr(model, "num_classes"):
        num_classes = int(getattr(model, "num_classes", 0) or 0)
    else:  # another library's ResNet (torchvision, timm): its head says it
        fc = getattr(model, "fc", None)
        num_classes = int(getattr(fc, "out_features", 0) or 0)
        if fc is None:
            raise ValueError(
                f"cannot tell how many classes this {type(model).__name__} predicts (it has "
                "neither num_classes nor an fc layer); load it with resnetkit.load_model"
            )
    if num_classes <= 0:
        raise ValueError("the model has no classifier head (num_classes=0); nothing to predict")
    names = [str(c) for c in preprocessing_of(model)["classes"]]
    if not names:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(
            f"the model predicts {num_classes} classes but lists {len(names)} class names "
            f"({first_few(names, 5)}); fix 'classes' in "
            "its config.json"
        )
    return names


def image_batches(
    files: list[Path],
    prep: Preprocessing,
    batch_size: int,
    failures: list[dict[str, str]],
    advance: Callable[[int], object] = lambda _: None,
) -> Iterator[tuple[list[Path], Tensor]]:
    """Decode and preprocess files, yielding full batches of readable images.

    Unreadable files are appended to ``failures`` (path and reason) as they are met, so the
    list keeps input order; they never stop the rest.
    """
    import torch

    from resnetkit.data.images import ImageDecodeError, load_image

    transform = prep.transform()
    paths: list[Path] = []
    tensors: list[Tensor] = []
    for path in files:
        try:
            # JPEGs may decode straight at a reduced scale, never below the resize target.
            image = load_image(path, draft_size=prep.resize)
        except ImageDecodeError as err:
            failures.append({"path": str(path), "reason": err.reason})
        else:
            tensors.append(transform(image))
            paths.append(path)
        advance(1)
        if len(tensors) == batch_size:
            yield paths, torch.stack(tensors)
            paths, tensors = [], []
    if tensors:
        yield paths, torch.stack(tensors)
