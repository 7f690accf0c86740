"""Post-training int8 quantisation with ONNX Runtime, and accuracy before and after.

Static quantisation calibrates activation ranges on real images (a folder or a dataset split),
then stores weights (per output channel) and activations in int8/uint8 in QDQ format, which
ONNX Runtime's CPU kernels (VNNI where available) run as integer convolutions. Dynamic
quantisation only quantises the matrix products (the classifier): for a ResNet it barely helps,
and it is offered for completeness.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnetkit.data.fast import TensorLoader, to_nchw_tensor
from resnetkit.export.runtime import OrtClassifier
from resnetkit.models.loading import preprocessing_of


@dataclass(frozen=True)
class QuantReport:
    """What quantisation produced."""

    fp32_path: str
    int8_path: str
    method: str
    calibration_images: int
    fp32_bytes: int
    int8_bytes: int
    accuracy: dict[str, Any] = field(default_factory=dict)


def calibration_batches(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "train",
    count: int = 512,
    batch_size: int = 32,
    seed: int = 0,
    input_size: int | None = None,
) -> list[np.ndarray]:
    """``count`` images of a split (a fixed random draw: only those are decoded), preprocessed
    as the model is fed when evaluated, predicting or served (a folder's images resized to the
    model's ``resize``, then centre-cropped), in batches (numpy); at ``input_size`` pixels when
    given instead of the model's own input size. Calibration needs no labels: a ``folder`` is
    a folder of class folders, a folder of images (see :func:`calibration_images`) or a label
    file; its unreadable images are named in a warning and skipped."""
    from resnetkit.evaluate.evaluator import folder_resize, load_eval_data, model_normalization
    from resnetkit.evaluate.folders import center_crop, to_model_channels

    cfg = preprocessing_of(model)
    channels = int(getattr(getattr(model, "config", None), "in_chans", 3))
    size = int(input_size or cfg["input_size"])
    folder = dataset == "folder"
    load = folder_resize(cfg, size) if folder else size
    if folder:
        pixels = _folder_images(data_dir, split, load, count, seed)
    else:
        data = load_eval_data(dataset, data_dir, split=split, size=load, subset=count, seed=seed)
        pixels = data.images
    images = to_nchw_tensor(pixels)
    if folder and load != size:
        images = center_crop(images, size)
    if images.shape[-1] != size:
        images = (
            torch.nn.functional.interpolate(
                images.float(), size=(size, size), mode="bilinear", antialias=True
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    # Calibrated on what the model is fed: luminance for a grayscale model, its normalisation.
    images = to_model_channels(images, channels)
    norm = model_normalization(cfg, channels, size)
    labels = torch.zeros(len(images), dtype=torch.int64)
    loader = TensorLoader(images, labels, batch_size, norm, train=False)
    return [x.numpy() for x, _ in loader]


def calibration_images(data_dir: str | Path, split: str = "train") -> tuple[list[Path], Path]:
    """The image files a folder's ``split`` calibrates on, and the folder they were found in.

    The split is found as evaluation finds it (``DIR/train``, or ``DIR`` itself, see
    :func:`~resnetkit.evaluate.folders.folder_split`). A folder holding images directly
    gives every image in it and its sub-folders, whatever their names (calibration needs no
    labels); one of class folders only, those of its class folders; a label file, its rows of
    the split (all rows when it has no split column).

    Raises:
        FileNotFoundError: no such folder.
        NotADirectoryError: a file (a photo, an archive) that is not a label file.
        ValueError: a folder without images, or split folders none of which is ``split``.
    """
    from resnetkit.data.folder import scan_image_folder
    from resnetkit.data.images import IMAGE_EXTENSIONS, image_files, left_out
    from resnetkit.data.labels import is_label_file
    from resnetkit.evaluate.folders import eval_samples, folder_split

    if is_label_file(data_dir):
        with warnings.catch_warnings():  # calibrating on training images is as it should be
            warnings.filterwarnings("ignore", ".* has no split column, so split", UserWarning)
            samples, _, root = eval_samples(data_dir, split)
        return [path for path, _ in samples], root
    if Path(data_dir).exists() and not Path(data_dir).is_dir():  # not evaluate's layout words
        raise NotADirectoryError(
            f"not a folder: {data_dir}: calibration needs a folder of images (flat, or in class "
            "folders; no labels needed) or a .csv/.tsv label file"
        )
    root = folder_split(data_dir, split)
    entries = sorted(root.iterdir()) if root.is_dir() else []
    loose = [
        p
        for p in entries
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    if not loose:  # class folders, as evaluate reads them (it names a missing or empty one)
        if root.is_dir() and not any(p.is_dir() and not p.name.startswith(".") for p in entries):
            raise ValueError(
                f"no images in {root}: put the calibration images in it, directly or in "
                f"sub-folders (recognised extensions: {' '.join(IMAGE_EXTENSIONS)})"
            )
        return [path for path, _ in scan_image_folder(root)[0]], root
    skipped: Counter[str] = Counter()
    files = image_files(root, skipped)
    if skipped:  # a .heic photo is left out by its name: say so, not nothing
        warnings.warn(f"{root}: {left_out(skipped)}", UserWarning, stacklevel=2)
    return files, root


def _folder_images(
    data_dir: str | Path, split: str, size: int, count: int, seed: int
) -> np.ndarray:
    """uint8 (N, size, size, 3) pictures of a fixed random draw of ``count`` of a folder's
    calibration images (see :func:`calibration_images`): only those are decoded, and the
    unreadable ones are named in a warning and skipped."""
    from resnetkit.evaluate.evaluator import decode_samples

    files, root = calibration_images(data_dir, split)
    samples = [(path, 0) for path in files]  # of one made-up class: no labels are needed
    with warnings.catch_warnings():  # of that class "-": said below, in its words
        warnings.filterwarnings("ignore", ".* no file of class\\(es\\) ", UserWarning)
        # the draw load_eval_data makes: the same images as when class folders were read by it
        data = decode_samples(
            samples,
            ("-",),
            root,
            size,
            subset=count,
            seed=seed,
            advice=": calibrate on a folder of images that open (JPEG, PNG, ...)",
        )
    return data.images


class _Reader:
    """ONNX Runtime CalibrationDataReader over prepared batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self._iter: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: list[np.ndarray] | None,
    *,
    method: str = "static",
    per_channel: bool = True,
    calibrate_method: str = "minmax",
) -> Path:
    """Quantise an fp32 ONNX file. ``calibration`` (preprocessed batches) is needed for static."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    if method not in ("static", "dynamic"):
        raise ValueError(f"method must be 'static' or 'dynamic', got {method!r}")
    if method == "static" and not calibration:
        raise ValueError("static quantisation needs calibration images (a folder or a dataset)")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if calibrate_method not in methods:
        raise ValueError(f"calibrate_method must be one of {', '.join(methods)}")
    import onnxruntime as ort

    input_name = (
        ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
        .get_inputs()[0]
        .name
    )
    with tempfile.TemporaryDirectory() as tmp:
        # ONNX Runtime's advice for both methods (and its warning when it is not followed):
        # shape inference and graph clean-up before quantising.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(str(prepared), str(int8_path), weight_type=QuantType.QInt8)
            return int8_path
        quantize_static(
            str(prepared),
            str(int8_path),
            _Reader(input_name, calibration or []),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[calibrate_method],
        )
    return int8_path


def check_eval_data(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    split: str = "test",
    *,
    flags: tuple[str, str] = ("eval_dataset", "eval_dir"),
) -> None:
    """Check that the accuracy of ``model`` can be measured on ``dataset`` (see
    :func:`compare_accuracy`): the data are there and their classes are the model's, by the
    same rules as evaluation (:func:`~resnetkit.evaluate.folders.label_map`). Only the class
    names are read (and CIFAR's arrays): it runs before export and calibration.

    Args:
        flags: how the caller names the dataset and its folder (``--eval-dataset``,
            ``--eval-dir`` on the command line), for the advice of an error.

    Raises:
        ValueError: the data's classes are not the model's (naming the data and what to do).
        FileNotFoundError: no such folder or file.
    """
    from resnetkit.evaluate.evaluator import eval_data_name, load_eval_data
    from resnetkit.evaluate.folders import folder_stream, label_map

    dataset_flag, dir_flag = flags
    advice = (
        f"Measure it on images of the model's classes ({dataset_flag} folder and {dir_flag} "
        f"with one folder per class, as the model was trained), or leave out {dataset_flag} "
        "to quantise without measuring accuracy. Nothing was written."
    )
    cfg = preprocessing_of(model)
    num_classes = int(getattr(model, "num_classes", 0))
    if dataset == "folder":  # the checks evaluate makes of a folder; nothing decoded
        folder_stream(
            data_dir,
            split,
            load_size=None,
            crop=None,
            channels=3,
            norm=None,
            batch_size=1,
            num_classes=num_classes,
            model_classes=cfg["classes"],
            multi_label=bool(cfg.get("multi_label")),
            advice=advice,
        )
        return
    data = load_eval_data(dataset, data_dir, split=split, subset=8)
    where = eval_data_name(dataset, split, data_dir)
    label_map(data.classes, num_classes, cfg["classes"], where, advice=advice)


def quantize_model(
    model: nn.Module,
    out: str | Path,
    *,
    calibration_dataset: str,
    calibration_dir: str | Path = ".",
    calibration_split: str = "train",
    calibration_size: int = 512,
    method: str = "static",
    calibrate_method: str = "minmax",
    eval_dataset: str | None = None,
    eval_dir: str | Path = ".",
    eval_split: str = "test",
    eval_flags: tuple[str, str] = ("eval_dataset", "eval_dir"),
) -> QuantReport:
    """Export ``model`` to fp32 ONNX (verified), quantise it to int8, and measure top-1 of
    both on ``eval_dataset`` when given (the accuracy cost of quantisation).

    ``out`` must end in ``.onnx`` (see :func:`~resnetkit.export.exporter.named_target`); the
    fp32 file is written beside it (``m.int8.onnx``: ``m.fp32.onnx``). Everything that can be
    checked is checked before any file is written or any image calibrated on: the name, the
    evaluation data and its classes (see :func:`check_eval_data`, whose error names the data
    by ``eval_flags``), the calibration images."""
    from resnetkit.export.exporter import export_model, named_target
    from resnetkit.export.metadata import add_onnx_metadata, read_metadata

    out = named_target(out, "onnx", "quantize")
    fp32 = out.with_name(out.stem.replace(".int8", "") + ".fp32.onnx")
    # The data first: a missing folder or split, or data of other classes, is named before any
    # file is written; the evaluation data first of all (it costs seconds, calibration more).
    if eval_dataset is not None:
        with _said_once(None):  # what it notes of the files is said when they are scored
            check_eval_data(model, eval_dataset, eval_dir, eval_split, flags=eval_flags)
    batches: list[np.ndarray] = []
    if method == "static":
        with _said_once("calibration images"):
            batches = calibration_batches(
                model,
                calibration_dataset,
                calibration_dir,
                split=calibration_split,
                count=calibration_size,
            )
    export_model(model, "onnx", fp32, dynamic_batch=True)
    quantize_onnx(fp32, out, batches, method=method, calibrate_method=calibrate_method)
    accuracy: dict[str, Any] = {}
    if eval_dataset is not None:
        with _said_once("evaluation images"):
            accuracy = compare_accuracy(model, fp32, out, eval_dataset, eval_dir, eval_split)
    # The int8 file carried the fp32 model's metrics: its own, measured above, or none.
    meta = read_metadata(out)
    meta.pop("metrics", None)
    meta.pop("min_confidence", None)  # chosen on the float32 model's probabilities
    meta["quantized"] = {"method": method, "evaluated_on": accuracy.get("dataset")}
    if accuracy:  # named as every model's metrics are: <split>_top1 (multi-label: _map)
        keys = ("map", "micro_f1") if "map" in accuracy["int8"] else ("top1", "top5")
        meta["metrics"] = {f"{eval_split}_{key}": accuracy["int8"][key] for key in keys}
    add_onnx_metadata(out, json.dumps(meta))
    return QuantReport(
        fp32_path=str(fp32),
        int8_path=str(out),
        method=method,
        calibration_images=sum(len(b) for b in batches),
        fp32_bytes=fp32.stat().st_size,
        int8_bytes=out.stat().st_size,
        accuracy=accuracy,
    )


@contextmanager
def _said_once(what: str | None) -> Iterator[None]:
    """The user warnings of one step of :func:`quantize_model` (files left out, unreadable
    ones), each once and prefixed with ``what`` the images are for; with ``what`` None, only
    if the step fails (a check whose findings the scoring says again). The same folder is
    read up to four times (checked, calibrated on, scored in fp32 and in int8): the same
    lines came three times, with nothing to tell them apart."""
    caught: list[warnings.WarningMessage] = []
    failed = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        failed = False
    finally:  # said also when the step fails: an unreadable file may be why
        said: set[tuple[type[Warning], str]] = set()
        for item in caught:
            text = str(item.message)
            if not issubclass(item.category, UserWarning):  # a library's: as it was
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
            elif (what is not None or failed) and (item.category, text) not in said:
                said.add((item.category, text))
                message = text if what is None else f"{what}: {text}"
                warnings.warn(message, item.category, stacklevel=3)


def compare_accuracy(
    model: nn.Module,
    fp32_path: Path,
    int8_path: Path,
    dataset: str,
    data_dir: str | Path,
    split: str = "test",
) -> dict[str, Any]:
    """Top-1/top-5 of the fp32 and int8 ONNX models on the same images, and the difference
    (a multi-label model: mAP, micro-F1 and exact match, and the drop of mAP)."""
    from resnetkit.evaluate.evaluator import evaluate_model

    results: dict[str, Any] = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        scores = evaluate_model(OrtClassifier(path, model), dataset, data_dir, split=split)
        keys = ("map", "micro_f1", "exact") if scores.get("multi_label") else ("top1", "top5")
        results[name] = {**{key: scores[key] for key in keys}, "count": scores["count"]}
    score = "map" if "map" in results["fp32"] else "top1"
    before, after = results["fp32"][score], results["int8"][score]
    # None: mAP of a split where no image has any of the classes
    drop = None if before is None or after is None else round(before - after, 4)
    results[f"{score}_drop"] = drop
    results["dataset"] = scored_data_name(dataset, data_dir, split)
    return results


def scored_data_name(dataset: str, data_dir: str | Path, split: str) -> str:
    """What :func:`compare_accuracy` scored: ``cifar10:test``, ``folder:val``; a folder
    without split folders, or a label file without a split column, is scored whole whatever
    ``split`` says, and so named by its path: ``folder DIR, every image (no test split)``."""
    from resnetkit.data.folder import find_split
    from resnetkit.data.labels import is_label_file, read_label_file

    if dataset != "folder":
        return f"{dataset}:{split}"
    if is_label_file(data_dir):
        whole = not read_label_file(data_dir).has_splits
    else:
        whole = find_split(data_dir, split) is None
    return f"folder {data_dir}, every image (no {split} split)" if whole else f"folder:{split}"
