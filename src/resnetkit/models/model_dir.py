"""Self-describing model directories: weights, architecture, classes, preprocessing, metrics.

Layout::

    model.safetensors   weights (torchvision key names)
    config.json         {"arch", "config", "classes", "preprocessing", "metrics", "provenance"}
                        (+ "task": {"multi_label": true, "threshold": 0.5} for a model that
                        gives each class its own sigmoid, see resnetkit.data.multilabel)
    README.md           a model card for people, written from config.json

Each file is written atomically, config.json last: a directory with a config.json is complete.
"""

from __future__ import annotations

import difflib
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from resnetkit.models.config import ResNetConfig
from resnetkit.models.resnet import ResNet
from resnetkit.text import first_few

FORMAT_VERSION = 1
MODEL_DIR_FILES = ("model.safetensors", "config.json", "README.md")


def save_model_dir(
    model: ResNet,
    out: str | Path,
    *,
    arch: str,
    classes: list[str],
    preprocessing: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    replace: bool = False,
    multi_label: bool = False,
    threshold: float | list[float] = 0.5,
    min_confidence: float | None = None,
) -> Path:
    """Write a model directory that :func:`load_model_dir` (and every CLI command) can read.

    ``multi_label`` marks a model whose classes are scored each on its own (sigmoid), a
    class predicted from ``threshold`` (one for all classes, or one per class).
    ``min_confidence`` (a model that picks one class an image): a top probability below it
    makes the answer ``unsure`` (selective classification; ``resnetkit calibrate
    --target-accuracy`` chooses it).

    ``out`` must be new or empty; with ``replace``, it may also hold a model directory, which
    is replaced. A folder with anything else in it is refused: its files (a project's own
    README.md, say) are never overwritten.
    """
    from resnetkit.train.checkpoint import atomic_write_bytes, atomic_write_text

    if multi_label and isinstance(threshold, list) and len(threshold) != model.num_classes:
        raise ValueError(  # load_model_dir would refuse the directory
            f"threshold: {len(threshold)} per-class thresholds for a {model.num_classes}-class "
            "model; give one for each class (in the model's order), or one for all"
        )
    if min_confidence is not None and (multi_label or not model.num_classes):
        raise ValueError(
            "min_confidence is for models that pick one class an image (softmax); a "
            + ("multi-label model predicts each class from its threshold" if multi_label
               else "model without a classifier head answers with no class")
        )  # fmt: skip
    if min_confidence is not None and not 0 < min_confidence < 1:
        raise ValueError(f"min_confidence must be a probability in (0, 1), got {min_confidence}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file: give a new or empty folder for the model")
    if out.is_dir() and any(out.iterdir()):
        # Ours: the three files, or what a write killed half-way left (temporary copies).
        ours = all(
            entry.name in MODEL_DIR_FILES
            or any(entry.name.startswith(f".{name}.") for name in MODEL_DIR_FILES)
            for entry in out.iterdir()
        )
        if not (replace and ours):
            is_model_dir = (out / "config.json").is_file()
            what = "a model directory" if ours and is_model_dir else "other files"
            raise FileExistsError(
                f"{out} already holds {what}; give a new or empty folder (nothing is overwritten)"
            )
    _check_class_count(model, classes)
    # A loaded model's pretrained_cfg is the natural thing to pass, but it also carries the
    # classes, metrics and task settings, which have arguments of their own: left in, they
    # would override those arguments when the directory is loaded.
    preprocessing = {k: v for k, v in preprocessing.items() if k not in NOT_PREPROCESSING}
    config = asdict(model.config)
    config["layers"] = list(model.config.layers)
    config["widths"] = list(model.config.widths)
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config,
        "classes": classes,
        "preprocessing": preprocessing,
        "metrics": metrics or {},
        "provenance": provenance or {},
    }
    if multi_label:
        cut = [float(t) for t in threshold] if isinstance(threshold, list) else float(threshold)
        meta["task"] = {"multi_label": True, "threshold": cut}
    elif min_confidence is not None:
        meta["task"] = {"multi_label": False, "min_confidence": float(min_confidence)}
    if model.features_only:  # a backbone: forward returns these stages' feature maps
        meta["features"] = {"features_only": True, "out_indices": list(model.out_indices)}
    # Everything is checked and serialised before the first file is written: a directory is
    # never left half-written, and never holds what load_model_dir would refuse.
    text = json.dumps(meta, indent=2, default=_json_value) + "\n"
    problem = _meta_problem(json.loads(text))
    if problem:
        raise ValueError(f"cannot write {out / 'config.json'}: {problem}")
    for doubt in meta_doubts(json.loads(text)):
        warnings.warn(f"writing {out / 'config.json'}: {doubt}", stacklevel=2)
    card = model_card(meta, model)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", safetensors_bytes(tensors))
    atomic_write_text(out / "README.md", card)
    atomic_write_text(out / "config.json", text)
    for entry in out.iterdir():  # temporary copies of an earlier write that was killed
        if any(entry.name.startswith(f".{name}.") for name in MODEL_DIR_FILES):
            entry.unlink(missing_ok=True)
    return out


#: What ``preprocessing`` may hold (config.json's, a bare checkpoint's given on loading).
PREPROCESSING_KEYS = (
    "input_size",
    "mean",
    "std",
    "crop",
    "resize",
    "crop_pct",
    "interpolation",
    "pixel_mean",
)


def check_preprocessing(
    model: ResNet, preprocessing: Mapping[str, Any] | None, classes: list[str]
) -> dict[str, Any]:
    """Refuse what :func:`load_model_dir` would refuse in a config.json for ``model``: unknown
    keys, mean/std of another channel count, NaN or infinity, a non-positive size or std, an
    interpolation resnetkit has not, class names that do not match the head. Mean/std on the
    0-255 scale are warned about.

    Returns:
        ``preprocessing`` as a dict (``{}`` for None).

    Raises:
        ValueError: naming the field and what it must be.
    """
    if preprocessing is None:
        preprocessing = {}
    if not isinstance(preprocessing, Mapping):
        raise ValueError(f"preprocessing must be a dict, got {preprocessing!r}")
    preprocessing = dict(preprocessing)
    unknown = [k for k in preprocessing if k not in PREPROCESSING_KEYS]
    if unknown:
        raise ValueError(
            f"preprocessing: unknown key(s) {unknown}; expected some of "
            f"{', '.join(PREPROCESSING_KEYS)}"
        )
    _check_class_count(model, classes)
    config = {
        "layers": list(model.config.layers),
        "widths": list(model.config.widths),
        "block": model.config.block,
        "in_chans": model.config.in_chans,
    }
    meta = {"config": config, "classes": classes, "preprocessing": preprocessing}
    problem = _meta_problem(json.loads(json.dumps(meta, default=_json_value)))
    if problem:
        raise ValueError(problem)
    for key in ("mean", "std"):
        doubt = scale_doubt(key, preprocessing.get(key))
        if doubt:
            warnings.warn(doubt, stacklevel=2)
    return preprocessing


def _check_class_count(model: ResNet, classes: list[str]) -> None:
    # a string is not counted: _meta_problem names it as not a list
    if isinstance(classes, list) and classes and len(classes) != model.num_classes:
        raise ValueError(
            f"classes: {len(classes)} names for a model with {model.num_classes} outputs; give "
            "one name for each output, in the model's order (or none)"
        )


#: Keys of a loaded model's ``pretrained_cfg`` that are not preprocessing: ``save_model_dir``
#: has arguments for them (or writes them itself), so they are kept out of ``preprocessing``.
NOT_PREPROCESSING = ("classes", "metrics", "multi_label", "threshold", "min_confidence")


def _json_value(value: Any) -> Any:
    """numpy and torch scalars (and small arrays) as plain JSON numbers and lists."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    raise TypeError(
        f"{type(value).__name__} {value!r} cannot be written to config.json: give numbers, "
        "strings, lists and dicts"
    )


def model_card(meta: dict[str, Any], model: ResNet) -> str:
    """A README for the people who receive a model directory: what the network is, what it
    was trained on and how well it does, what its input must look like, and how to use it."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    classes = meta["classes"]
    prep = meta["preprocessing"]
    prov = meta["provenance"]
    kind = (
        "plain network (no shortcuts)"
        if cfg.shortcut == "none"
        else (f"{'pre-activation ' if cfg.preact else ''}ResNet, shortcut option {cfg.shortcut}")
    )
    kind += "".join(f", {note}" for note in cfg.variants())
    lines = [
        f"# {meta['arch']}",
        "",
        f"A resnetkit model directory: a {cfg.depth}-layer {kind}, {cfg.block} blocks, "
        f"{cfg.stem} stem; {params:,} parameters, {cfg.num_classes} outputs.",
        "",
        "## Classes",
        "",
        ", ".join(str(c) for c in classes) if classes else "(not named: outputs are indices)",
        "",
    ]
    task = meta.get("task") or {}
    if task.get("multi_label"):
        lines += [
            f"Multi-label: each class has its own sigmoid probability, and an image has every "
            f"class whose probability is at least {_threshold_text(task)} (any number "
            "of them, none included).",
            "",
        ]
    if task.get("min_confidence") is not None:
        lines += [
            f"Selective: an answer whose top probability is below {task['min_confidence']:.4g} "
            "is marked unsure (`unsure: true`), to be checked by a person or left out.",
            "",
        ]
    lines += [
        "## Input",
        "",
    ]
    size = prep.get("crop") or prep.get("input_size")
    lines.append(f"- RGB images at {size}x{size} pixels, values scaled to 0-1")
    if prep.get("resize") and prep["resize"] != size:
        lines.append(
            f"- a picture of another size: shorter side resized to {prep['resize']}, then the "
            f"central {size}x{size} crop"
        )
    if prep.get("pixel_mean") is not None:
        lines.append(
            "- minus the per-pixel mean image of the training set (the paper's CIFAR recipe)"
        )
    else:
        lines.append(f"- normalised per channel: mean {prep.get('mean')}, std {prep.get('std')}")
    lines.append("- `resnetkit predict` and `resnetkit.predict` do all of this from image files")
    shown = {"top1": "top-1", "top5": "top-5", "map": "mAP", "micro_f1": "micro-F1"}
    metrics = {
        (split, shown[name]): value
        for key, value in meta["metrics"].items()
        if isinstance(value, int | float)
        for split, name in [_split_metric(key)]
        if name in shown
    }
    if metrics:
        lines += ["", "## Measured", "", "| metric | value |", "| --- | ---: |"]
        counts = prov.get("eval_images") or {}
        for (split, name), value in metrics.items():
            images = f" on {counts[split]:,} images" if isinstance(counts.get(split), int) else ""
            lines.append(f"| {split} {name}{images} (%) | {value:.2f} |")
    recipe = prov.get("recipe")
    lines += ["", "## Provenance", ""]
    if isinstance(recipe, dict):
        lines.append(
            f"- trained by resnetkit {prov.get('resnetkit', '?')} (git commit "
            f"{prov.get('git_commit') or 'unknown'}), torch {prov.get('torch', '?')}"
        )
        if prov.get("dataset"):
            count = prov.get("train_images")
            images = f" ({count:,} training images)" if isinstance(count, int) else ""
            lines.append(f"- trained on {prov['dataset']}{images}")
        side = recipe.get("train_image_size")
        if isinstance(side, int) and side and side != size:
            lines.append(f"- trained on {side}x{side} crops, evaluated at {size}x{size} (FixRes)")
        lines.append(
            f"- recipe `{recipe.get('name', '?')}`: {str(recipe.get('optimizer', 'sgd')).upper()}"
            f", batch {recipe.get('batch_size')}, lr "
            f"{recipe.get('lr')}, {recipe.get('schedule')} schedule, weight decay "
            f"{recipe.get('weight_decay')}; the whole recipe is in config.json"
        )
        teacher = prov.get("teacher")
        if isinstance(teacher, dict) and teacher.get("name"):
            lines.append(
                f"- distilled from `{teacher['name']}` (weights sha256 "
                f"{str(teacher.get('sha256', '?'))[:12]}...; alpha {recipe.get('distill_alpha')}, "
                f"temperature {recipe.get('distill_temperature')})"
            )
        if prov.get("command"):
            lines.append(f"- command: `{prov['command']}`")
    elif prov.get("calibrated_from") and isinstance(
        (prov.get("calibration") or {}).get("thresholds"), list
    ):  # a multi-label model: per-class thresholds, no temperature
        fit = prov["calibration"]
        before, after = fit.get("before") or {}, fit.get("after") or {}
        lines.append(
            f"- {prov['calibrated_from']} with one threshold per class chosen by `resnetkit "
            f"calibrate` (each class's best F1 on {fit.get('fit_images')} images of "
            f"{fit.get('dataset')} {fit.get('split')})"
        )
        if isinstance(before.get("micro_f1"), int | float) and isinstance(
            after.get("micro_f1"), int | float
        ):
            lines.append(
                f"- on {fit.get('check_images')} other images: micro-F1 "
                f"{before['micro_f1']:.2f}% -> {after['micro_f1']:.2f}%, mAP unchanged"
            )
    elif prov.get("calibrated_from"):
        fit = prov.get("calibration") or {}
        before, after = fit.get("before") or {}, fit.get("after") or {}
        lines.append(
            f"- {prov['calibrated_from']} temperature-scaled by `resnetkit calibrate` "
            f"(T = {fit.get('temperature', float('nan')):.4f}, fitted on {fit.get('fit_images')} "
            f"images of {fit.get('dataset')} {fit.get('split')})"
        )
        if "ece" in before and "ece" in after:
            lines.append(
                f"- on {fit.get('check_images')} other images: calibration error (ECE) "
                f"{before['ece']:.2f}% -> {after['ece']:.2f}%, top-1 unchanged"
            )
    elif prov.get("converted_from"):
        lines.append(
            f"- converted by `resnetkit convert` from {prov['converted_from']} "
            f"({prov.get('source_format')} layout)"
        )
    else:
        lines.append("- see config.json")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "resnetkit predict --model THIS_FOLDER photo.jpg --top-k 3",
        "resnetkit evaluate --model THIS_FOLDER --dataset folder --data-dir "
        + ("LABELS.csv  # a 'labels' column" if task.get("multi_label") else "IMAGES"),
        "resnetkit export --model THIS_FOLDER --format onnx --out model.onnx",
        "```",
        "",
        "```python",
        "import resnetkit",
        'model = resnetkit.load_model("THIS_FOLDER")  # eval mode, preprocessing attached',
        'report = resnetkit.predict(model, ["photo.jpg"], top_k=3)',
        "```",
        "",
    ]
    return "\n".join(lines)


def _threshold_text(task: dict[str, Any]) -> str:
    cut = task.get("threshold", 0.5)
    if isinstance(cut, list):
        return "its own threshold (one per class, in config.json: task.threshold)"
    return f"{cut}"


def _split_metric(key: str) -> tuple[str, str]:
    """``val_micro_f1`` -> ``("val", "micro_f1")``, ``val_top1`` -> ``("val", "top1")``."""
    for name in ("micro_f1", "macro_f1"):
        if key.endswith(f"_{name}"):
            return key[: -len(name) - 1], name
    split, _, name = key.rpartition("_")
    return split, name


def read_model_meta(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory, with a clear error if it is not one."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path} is not a resnetkit model directory: expected config.json and "
            "model.safetensors (written by `resnetkit train` or `resnetkit finetune`)"
        )
    try:
        meta = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        hint = "it was not written by resnetkit"
        if isinstance(meta, dict) and meta.get("model_type") == "resnet":
            hint = (
                "it is a Hugging Face model directory: convert it first with `resnetkit convert "
                f"{path} --arch ARCH --out DIR`"
            )
        raise ValueError(f"{config_file} has no resnetkit model description: {hint}")
    problem = _meta_problem(meta)
    if problem:
        raise ValueError(f"{config_file}: {problem}; fix the file or write it again")
    return meta


#: Resize interpolations (torchvision's ``InterpolationMode`` values, which PIL's filters are).
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


def interpolation_problem(interpolation: Any, where: str) -> str | None:
    """What is wrong with ``interpolation`` as a resize interpolation (``None``: nothing, or
    not given), the value named as ``where`` (e.g. ``preprocessing.interpolation``)."""
    if interpolation is None or interpolation in INTERPOLATIONS:
        return None
    return (
        f"{where} {interpolation!r} is not one resnetkit resizes with; use one of "
        f"{', '.join(INTERPOLATIONS)}"
    )


#: The top-level keys of config.json (``save_model_dir`` writes them).
META_KEYS = (
    "format_version",
    "arch",
    "config",
    "classes",
    "preprocessing",
    "metrics",
    "provenance",
    "task",
    "features",
)


def meta_doubts(meta: dict[str, Any]) -> list[str]:
    """What in a valid parsed config.json is probably a mistake: keys resnetkit does not read
    (a typo is ignored, not applied), mean/std on the 0-255 scale, a one-class softmax head.
    """
    doubts = []
    config_names = [f.name for f in fields(ResNetConfig)]
    for where, keys, known in (
        ("", meta, META_KEYS),
        ("config.", meta.get("config") or {}, config_names),
    ):
        for key in keys:
            if key not in known:
                close = difflib.get_close_matches(key, known, 1, 0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                doubts.append(
                    f"unknown key '{where}{key}'{hint} is ignored; known: {', '.join(known)}"
                )
    prep = meta.get("preprocessing") or {}
    doubts += [doubt for key in ("mean", "std") if (doubt := scale_doubt(key, prep.get(key)))]
    task = meta.get("task") or {}
    if (meta.get("config") or {}).get("num_classes") == 1 and not task.get("multi_label"):
        doubts.append(
            "config.num_classes is 1 with a softmax head, which scores its one class 100% for "
            'every image; for a yes/no model give it a sigmoid ("task": {"multi_label": '
            'true, "threshold": 0.5}) or two classes'
        )
    return doubts


def scale_doubt(key: str, values: Any) -> str | None:
    """A warning for mean/std ``values`` on the 0-255 scale (resnetkit scales pixels to 0-1
    before normalising), or None."""
    if not isinstance(values, list | tuple) or not any(
        isinstance(v, int | float) and v > 1 for v in values
    ):
        return None
    return (
        f"preprocessing.{key} {list(values)} looks like the 0-255 scale; resnetkit scales "
        "pixels to 0-1 before normalising, so give 0-1 values (divide by 255)"
    )


def finite_numbers(values: list[Any] | tuple[Any, ...]) -> bool:
    """Every value is a finite int or float (not a bool): JSON's NaN and Infinity parse as
    floats, and either would turn every input into NaN."""
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a parsed config.json (field and expectation), or None."""

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    def numbers(value: Any) -> bool:
        return isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )

    config = meta["config"]
    for key in ("layers", "widths"):
        if not (isinstance(config.get(key), list) and all(map(positive_int, config[key]))):
            return f"config.{key} must be a list of positive whole numbers, got {config.get(key)!r}"
    if "block" not in config:
        return "config.block is missing (basic or bottleneck)"
    classes = meta.get("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return f"classes must be a list of names, got {classes!r}"
    outputs = config.get("num_classes")
    if classes and isinstance(outputs, int) and len(classes) != outputs:
        return (
            f"classes: {len(classes)} names for a model with {outputs} outputs "
            "(config.num_classes); give one name for each output, in the model's order (or none)"
        )
    version = meta.get("format_version", FORMAT_VERSION)
    if not positive_int(version) or version > FORMAT_VERSION:
        return (
            f"format_version {version!r}: this resnetkit reads model directories up to "
            f"format {FORMAT_VERSION}; a newer one wrote it: upgrade resnetkit"
        )
    if "preprocessing" not in meta:  # without it, pictures would be prepared by guesswork
        return (
            "preprocessing is missing: the input_size, mean and std the model was trained "
            'with, e.g. "preprocessing": {"input_size": 32, "mean": [...], "std": [...]}'
        )
    prep = meta["preprocessing"]
    if not isinstance(prep, dict):
        return f"preprocessing must be an object, got {prep!r}"
    for key in ("input_size", "crop", "resize"):
        if prep.get(key) is not None and not positive_int(prep[key]):
            return f"preprocessing.{key} must be a positive whole number, got {prep[key]!r}"
    channels = config.get("in_chans", 3)
    if not positive_int(channels):
        return f"config.in_chans must be a positive whole number, got {channels!r}"
    counts = sorted({1, 3, channels} if channels == 1 else {1, channels})
    for key in ("mean", "std"):
        value = prep.get(key)
        if value is not None and not (numbers(value) and len(value) in counts):
            wanted = " or ".join(map(str, counts))
            return (
                f"preprocessing.{key} must be a list of {wanted} numbers for a "
                f"{channels}-channel model, got {value!r}"
            )
        if value is not None and not finite_numbers(value):
            return (
                f"preprocessing.{key} must be finite numbers, got {value!r}: NaN or infinity "
                "would turn every input into NaN; give the dataset's per-channel values"
            )
    if prep.get("std") is not None and any(v <= 0 for v in prep["std"]):
        return f"preprocessing.std must be positive, got {prep['std']!r}"
    if prep.get("pixel_mean") is not None and not (
        numbers(prep["pixel_mean"]) and finite_numbers(prep["pixel_mean"])
    ):
        return "preprocessing.pixel_mean must be a list of finite numbers"
    problem = interpolation_problem(prep.get("interpolation"), "preprocessing.interpolation")
    if problem:
        return problem
    if not isinstance(meta.get("metrics", {}), dict):
        return f"metrics must be an object, got {meta['metrics']!r}"
    task = meta.get("task", {})
    if not isinstance(task, dict) or not isinstance(task.get("multi_label", False), bool):
        return f"task must be an object with a true/false multi_label, got {task!r}"
    threshold = task.get("threshold", 0.5)

    def probability(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1

    if isinstance(threshold, list):
        # one per output of the head (the classes may be unnamed: an empty list)
        outputs = config.get("num_classes", len(classes))
        if len(threshold) != outputs or not all(map(probability, threshold)):
            return (
                f"task.threshold must be one probability between 0 and 1, or one for each of "
                f"the {outputs} classes, got {threshold!r}"
            )
    elif not probability(threshold):
        return f"task.threshold must be a probability between 0 and 1, got {threshold!r}"
    if task.get("min_confidence") is not None:
        if task.get("multi_label"):
            return "task.min_confidence is for models that pick one class an image, not multi-label"
        if not probability(task["min_confidence"]):
            return (
                "task.min_confidence must be a probability between 0 and 1, got "
                f"{task['min_confidence']!r}"
            )
    return None


def load_model_dir(path: str | Path) -> ResNet:
    """Build the model described by a directory and load its weights (strict, safetensors)."""
    path = Path(path)
    meta = read_model_meta(path)
    for doubt in meta_doubts(meta):
        warnings.warn(f"{path / 'config.json'}: {doubt}", stacklevel=2)
    known = {f.name for f in fields(ResNetConfig)}
    raw = {k: v for k, v in meta["config"].items() if k in known}
    raw["layers"] = tuple(raw["layers"])
    raw["widths"] = tuple(raw["widths"])
    if raw.get("avg_down") and raw.get("shortcut") in ("A", "none"):
        # Older versions built this and it did nothing (no projection to average-pool):
        # the same network without the flag, which is now refused for new models.
        warnings.warn(
            f"{path / 'config.json'}: avg_down has no effect with shortcut "
            f"{raw['shortcut']!r}; loaded without it",
            stacklevel=2,
        )
        raw["avg_down"] = False
    features = meta.get("features") or {}
    try:
        model = ResNet(
            ResNetConfig(**raw),
            name=meta.get("arch", path.name),
            features_only=bool(features.get("features_only", False)),
            out_indices=features.get("out_indices"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path / 'config.json'}: cannot build the model ({err})") from None
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error type for damaged files
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from None
    expected = model.state_dict()
    problems = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "with other shapes": [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    if any(problems.values()):
        found = [
            f"{len(keys)} {label} ({first_few(keys, 3)})"
            for label, keys in problems.items()
            if keys
        ]
        raise ValueError(
            f"{weights} does not fit the {meta.get('arch', 'model')} that config.json "
            f"describes: {'; '.join(found)}"
        )
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = {  # type: ignore[assignment]
        **meta.get("preprocessing", {}),
        "classes": meta.get("classes", []),  # after: config.json's own fields win
        "metrics": meta.get("metrics", {}),
    }
    task = meta.get("task") or {}
    if task.get("multi_label"):
        model.pretrained_cfg["multi_label"] = True
        cut = task.get("threshold", 0.5)
        model.pretrained_cfg["threshold"] = (
            [float(t) for t in cut] if isinstance(cut, list) else float(cut)
        )
    if task.get("min_confidence") is not None:
        model.pretrained_cfg["min_confidence"] = float(task["min_confidence"])
    return model
