"""Load ResNet weights from torchvision, timm, Hugging Face, Keras or a training script, with
every mismatch explained; export our models to those libraries.

Nothing is adapted silently: a checkpoint that does not fit raises
:class:`CheckpointMismatchError`, whose report says what probably happened (other number of
classes, depth, shortcut option, input channels, ...). ``adapt_head`` and ``adapt_in_chans``
fix the two mismatches that transfer learning wants on purpose, and the report says so.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from resnetkit.interop.diagnose import architecture_findings, diagnose, stride_findings
from resnetkit.interop.formats import (
    KERAS_MEAN,
    KERAS_STD,
    to_resnetkit_names,
)
from resnetkit.interop.writers import (
    huggingface_preprocessor_note,
    to_huggingface,
    to_keras_dict,
    to_timm,
    to_torchvision,
)
from resnetkit.models.config import FUNCTION_FIELDS, ResNetConfig
from resnetkit.models.loading import (
    CUT_SHORT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KERAS_SUFFIXES,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    stand_in_hint,
    torch_load_weights_only,
)
from resnetkit.models.registry import create_model, get_model_config, model_from_weights
from resnetkit.models.resnet import ResNet

TARGETS = ("resnetkit", "torchvision", "timm", "huggingface", "keras")
_SHOWN = 5  # keys listed per category in a summary


@dataclass
class Checkpoint:
    """Weights read from somewhere, in our names, with what is known about their source.

    Attributes:
        state: tensors under our names (keys without a counterpart keep their own).
        source: a path, or ``"state dict"``.
        source_format: ``torchvision``, ``timm``, ``huggingface``, ``keras``, ``script`` or
            ``resnetkit``.
        detected_format: what the names look like (differs only if told otherwise).
        notes: what was done to the names.
        stride_in_1x1: the source's stride placement when its config says so (Keras: v1);
            None when unknown, since shapes cannot tell.
        variants: a resnetkit model directory's unit and shortcut variants (2016 paper),
            which names and shapes cannot tell either.
        classes: class names the source carries (Hugging Face ``id2label``, model dirs).
        problems: source features that no resnetkit model has.
        preprocessing: the input size, resize and normalization the source says: a resnetkit
            model directory's, a Hugging Face folder's ``preprocessor_config.json``'s, a timm
            folder's ``pretrained_cfg``'s (else empty).
        metrics: a resnetkit model directory's measured metrics (else empty).
        architecture: a resnetkit model directory's whole architecture (its config and arch
            name; else empty): a plain net and an option-A ResNet have the same weights.
        named_arch: the architecture a timm folder's config names (else empty).
        task: a resnetkit model directory's ``task`` (``multi_label``, ``threshold``: a
            sigmoid per class; else empty).
    """

    state: dict[str, Tensor]
    source: str
    source_format: str
    detected_format: str = ""
    notes: list[str] = field(default_factory=list)
    stride_in_1x1: bool | None = None
    variants: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    named_arch: str = ""  # the architecture a timm folder names
    task: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Classes of the checkpoint's head; 0 for a headless backbone."""
        fc = self.state.get("fc.weight")
        return int(fc.shape[0]) if fc is not None else 0

    @property
    def in_chans(self) -> int | None:
        """Input channels of the first convolution, if there is one."""
        conv = self.state.get("conv1.0.weight", self.state.get("conv1.weight"))
        return int(conv.shape[1]) if conv is not None and conv.dim() == 4 else None


@dataclass(frozen=True)
class ShapeMismatch:
    """A key both sides have, with different shapes."""

    key: str
    checkpoint: tuple[int, ...]
    model: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.key}: checkpoint {self.checkpoint}, model {self.model}"


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` found and did.

    ``missing``, ``unexpected`` and ``shape_mismatches`` compare the checkpoint (in our names)
    with the model before any adaptation; ``diagnosis`` says in words what probably happened,
    ``adapted`` what was changed on request, ``notes`` what was done to the names.
    """

    source: str
    source_format: str
    model: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatches: list[ShapeMismatch] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loaded: bool = False

    def summary(self) -> str:
        """A few lines for people: the verdict, the first keys of each kind, the diagnosis."""
        verdict = "loaded into" if self.loaded else "does not fit"
        lines = [f"{self.source} ({self.source_format} format) {verdict} {self.model}"]
        for label, items in (
            ("missing keys", self.missing),
            ("unexpected keys", self.unexpected),
            ("shape mismatches", [str(s) for s in self.shape_mismatches]),
        ):
            if items:
                more = f" ... (+{len(items) - _SHOWN})" if len(items) > _SHOWN else ""
                lines.append(f"  {label} ({len(items)}): {'; '.join(items[:_SHOWN])}{more}")
        for label, items in (
            ("diagnosis", self.diagnosis),
            ("adapted", self.adapted),
            ("notes", self.notes),
        ):
            if items:
                lines.append(f"  {label}:")
                lines += [f"    - {item}" for item in items]
        return "\n".join(lines)


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model; ``report`` says what and probably why."""

    def __init__(self, report: LoadReport) -> None:
        super().__init__(report.summary())
        self.report = report


# --- reading -------------------------------------------------------------------------------


def read_checkpoint(
    source: str | Path | Mapping[str, Any] | Checkpoint,
    source_format: str = "auto",
    *,
    use_ema: bool = False,
) -> Checkpoint:
    """Read weights from a file, a directory or a dict, into our parameter names.

    Args:
        source: ``.safetensors``, ``.pt``/``.pth``/``.bin``/``.ckpt`` (read with
            ``torch.load(weights_only=True)``, zip or legacy format), Keras weights as ``.npz``
            (or ``.h5``, which needs h5py), a Hugging Face directory (``config.json`` +
            ``model.safetensors``), a resnetkit model directory, or an in-memory state dict
            (flat or nested, tensors or numpy arrays).
        source_format: ``auto`` (detect) or one of
            :data:`~resnetkit.interop.formats.SOURCE_FORMATS`.
        use_ema: read a training checkpoint's EMA copy of the weights (``state_dict_ema``,
            ``model_ema``, an ``ema_model.`` module...) instead of the weights themselves.

    Raises:
        FileNotFoundError: no such file or an incomplete directory.
        ValueError: an unknown format, or no state dict inside.
        ImportError: an ``.h5`` file without h5py installed.
    """
    if isinstance(source, Checkpoint):
        return source
    meta: dict[str, Any] = {}
    hint = "auto"
    from resnetkit.models.hf_hub import is_hf_hub_name

    if isinstance(source, Mapping):
        raw: Mapping[str, Any] = source
        origin = "state dict"
    elif is_hf_hub_name(str(source)) and not Path(source).exists():
        raw, hint, meta = _read_hub(str(source))
        origin = str(source)
    else:
        path = Path(source).expanduser()
        raw, hint, meta = _read_path(path)
        origin = str(path)
    try:
        translation = to_resnetkit_names(
            raw, hint if source_format == "auto" else source_format, use_ema=use_ema
        )
    except ValueError as err:
        if origin == "state dict":
            raise
        weights = Path(origin).with_name("model.safetensors")  # a resnetkit checkpoint's
        beside = f" ({weights} beside it)" if weights.is_file() and path.is_file() else ""
        raise ValueError(f"{origin}: {err}{beside}") from None  # which of the user's files
    ckpt = Checkpoint(
        translation.state,
        origin,
        translation.source_format,
        translation.detected_format,
        translation.notes,
    )
    if meta.get("source_format"):  # an hf-hub: repository, read into our names
        ckpt.source_format = ckpt.detected_format = meta["source_format"]
    ckpt.stride_in_1x1 = meta.get("stride_in_1x1")
    ckpt.variants = dict(meta.get("variants") or {})
    ckpt.classes = list(meta.get("classes", []))
    if ckpt.classes and ckpt.num_classes and len(ckpt.classes) != ckpt.num_classes:
        raise ValueError(  # the names would sit at other outputs than theirs
            f"{origin}: its config names {len(ckpt.classes)} classes, and its classifier has "
            f"{ckpt.num_classes} outputs; fix the class names (id2label in a Hugging Face "
            "config.json) to one for each output, in order"
        )
    ckpt.problems = list(meta.get("problems", []))
    ckpt.preprocessing = dict(meta.get("preprocessing") or {})
    ckpt.metrics = dict(meta.get("metrics") or {})
    ckpt.architecture = dict(meta.get("architecture") or {})
    ckpt.named_arch = str(meta.get("named_arch") or "")
    ckpt.task = dict(meta.get("task") or {})
    if ckpt.source_format == "keras" and ckpt.stride_in_1x1 is None:
        ckpt.stride_in_1x1 = True  # keras.applications ResNet50/101/152 are all v1
    return ckpt


def _read_path(path: Path) -> tuple[Mapping[str, Any], str, dict[str, Any]]:
    if path.is_dir():
        return _read_dir(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file or directory: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path), "auto", {}
    if suffix in PICKLE_SUFFIXES:
        return torch_load_weights_only(path), "auto", {}
    # Keras names are told by their look ('conv1_conv/kernel:0'), as are those of an .npz
    # written from a PyTorch state dict
    if suffix == ".npz":
        return _read_npz(path), "auto", {}
    if suffix in (".h5", ".hdf5"):
        return _read_h5(path), "auto", {}
    if suffix == ".keras":
        return _read_keras_archive(path), "auto", {}
    known = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES + KERAS_SUFFIXES)
    raise ValueError(f"{path}: unknown checkpoint format {suffix!r}; expected one of {known}")


#: How to save Keras weights under their layers' names, for the end of an error.
_KERAS_BY_NAME = (
    "np.savez('weights.npz', **{w.path: w.numpy() for w in model.weights}) (tf.keras 2: "
    "w.name instead of w.path)"
)
#: Keras 3's weights files (``model.save_weights``, inside ``.keras``): layers/conv2d_5/vars/0.
_KERAS_3_VARS = re.compile(r"(?:^|/)layers/[^/]+/vars/\d+$")
_KERAS_3 = (
    "whose arrays are named by layer class and position (layers/conv2d_5/vars/0), not by "
    "layer name (conv2_block1_1_conv/kernel), so they cannot be matched to a ResNet's layers: "
    "save the whole model instead (model.save('model.keras'): its config.json says which "
    f"layer is which) and pass that, or the weights by name: {_KERAS_BY_NAME}"
)
#: How to write an .npz of weights that resnetkit reads, for the end of an error.
_NPZ_ADVICE = (
    "an .npz of weights holds plain number arrays: save them with np.savez(path, "
    "**{name: np.asarray(w, dtype=np.float32) for name, w in weights.items()})"
)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (Keras weights), never unpickled.

    Raises:
        ValueError: not an .npz archive (numpy would say the file holds pickled data and
            advise loading it unsafely), or one of object arrays; naming the file.
    """
    if not zipfile.is_zipfile(path):  # a lone .npy, a Git LFS pointer, an HTML page...
        raise ValueError(
            f"{path}: not an .npz archive (numpy's zip of named arrays){stand_in_hint(path)}; "
            f"{_NPZ_ADVICE}"
        )
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except ValueError as e:  # an object array: loading it would unpickle
        raise ValueError(f"{path}: {str(e).rstrip('.')}; {_NPZ_ADVICE}") from None


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for damaged files
        short = "not fully covered" in str(err)  # its header names more bytes than follow
        raise ValueError(
            f"{path}: not a readable safetensors file ({err})"
            + (CUT_SHORT if short else stand_in_hint(path))
        ) from None


def _import_h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError(
            f"reading {path} needs h5py: pip install 'resnetkit[keras]'. Or save the weights "
            f"as .npz in Keras: {_KERAS_BY_NAME}"
        ) from None
    return h5py


def _read_keras_archive(path: Path) -> dict[str, np.ndarray]:
    """A Keras 3 model archive (``model.save("x.keras")``): its ``model.weights.h5`` names
    arrays by layer class and position (``layers/conv2d_5/vars/0``), and its ``config.json``
    lists the layers in that order, which gives each array its layer's name
    (``conv2_block1_1_conv/kernel``; a nested model's under that model's name)."""
    h5py = _import_h5py(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ValueError(
            f"{path}: not a Keras 3 model archive (a zip of config.json and model.weights.h5: "
            f"{err}){stand_in_hint(path)}"
        ) from None
    names: dict[str, str] = {}  # layers/conv2d_5/vars/0 -> conv2_block1_1_conv/kernel
    _keras_layer_names(config, "layers/", "", names)
    arrays: dict[str, np.ndarray] = {}

    def collect(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and name.startswith("layers/"):  # not the optimizer's
            layer, _, index = name.rpartition("/vars/")
            # a variable of a layer kind no ResNet has keeps its layer's name, to be reported
            arrays[names.get(name, f"{names.get(layer, layer)}/var{index}")] = np.asarray(obj)

    with h5py.File(io.BytesIO(weights), "r") as f:
        f.visititems(collect)
    if arrays and not any(name in names.values() for name in arrays):
        raise ValueError(
            f"{path}: its config.json names none of the layers in model.weights.h5 (e.g. "
            f"{next(iter(arrays))}): not an archive that model.save('x.keras') wrote? {_KERAS_3}"
        )
    return arrays


def _keras_layer_names(
    model: Mapping[str, Any], at: str, prefix: str, names: dict[str, str]
) -> None:
    # Keras 3 saves a model's layers in config order as snake_case(class name), then _1, _2...
    counts: dict[str, int] = {}
    for layer in (model.get("config") or {}).get("layers") or []:
        kind = str(layer.get("class_name", ""))
        snake = re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", kind))
        snake = re.sub(r"\W+", "", snake).lower()
        counts[snake] = counts.get(snake, -1) + 1
        key = f"{at}{snake}" + (f"_{counts[snake]}" if counts[snake] else "")
        config = layer.get("config") or {}
        name = names[key] = f"{prefix}{config.get('name', snake)}"
        if config.get("layers"):  # a nested model (a ResNet base under a new head)
            _keras_layer_names(layer, f"{key}/layers/", f"{name}/", names)
            continue
        variables = {
            "Conv2D": ["kernel", "bias"] if config.get("use_bias", True) else ["kernel"],
            "Dense": ["kernel", "bias"] if config.get("use_bias", True) else ["kernel"],
            "BatchNormalization": ["gamma"] * bool(config.get("scale", True))
            + ["beta"] * bool(config.get("center", True))
            + ["moving_mean", "moving_variance"],
        }.get(kind, [])
        for i, variable in enumerate(variables):
            names[f"{key}/vars/{i}"] = f"{name}/{variable}"


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    h5py = _import_h5py(path)
    arrays: dict[str, np.ndarray] = {}

    def collect(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            arrays[name] = np.asarray(obj)

    # Keras 2 weight files hold layer/layer/kernel:0 (under model_weights/ in whole-model files,
    # beside optimizer_weights/ whose Adam/m/conv1_conv/kernel would pass for the model's own).
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        group.visititems(collect)
    if any(_KERAS_3_VARS.search(name) for name in arrays):
        raise ValueError(f"{path}: a Keras 3 weights file, {_KERAS_3}")
    return arrays


def _read_dir(path: Path) -> tuple[Mapping[str, Any], str, dict[str, Any]]:
    config_file = path / "config.json"
    names = ("model.safetensors", "pytorch_model.bin")
    weights = next((path / n for n in names if (path / n).is_file()), None)
    if not config_file.is_file():
        from resnetkit.models.loading import refuse_run_folder

        refuse_run_folder(path, flag="")  # a run's folder or checkpoint: say what to pass
    if not config_file.is_file() or weights is None:
        raise FileNotFoundError(
            f"{path}: expected config.json and model.safetensors (a Hugging Face or resnetkit "
            "model directory)"
        )
    from resnetkit.models.hf_hub import processor_preprocessing, read_json_object

    config = read_json_object(config_file)
    raw = (
        _read_safetensors(weights)
        if weights.suffix == ".safetensors"
        else torch_load_weights_only(weights)
    )
    if config.get("model_type") == "resnet":
        meta = _huggingface_meta(config)
        processor = path / "preprocessor_config.json"
        if processor.is_file():  # read as loading the folder (predict) reads it
            meta["preprocessing"] = processor_preprocessing(processor)
        return raw, "huggingface", meta

    if "arch" in config and "config" in config:
        meta = {
            "stride_in_1x1": config["config"].get("stride_in_1x1"),
            "variants": {
                k: v
                for k, v in config["config"].items()
                if k in FUNCTION_FIELDS and k != "stride_in_1x1"
            },
            "classes": config.get("classes") or [],
            "preprocessing": config.get("preprocessing") or {},
            "metrics": config.get("metrics") or {},
            "architecture": {"arch": config["arch"], "config": dict(config["config"])},
            "task": config.get("task") or {},
        }
        return raw, "resnetkit", meta
    if "architecture" in config:  # timm's Hub layout (timm_folder.to_timm_folder writes it)
        from resnetkit.models.hf_hub import get_folder_weights

        hub = get_folder_weights(path)
        prep = {k: hub.pretrained_cfg[k] for k in ("input_size", "resize", "interpolation")}
        prep |= {"mean": hub.pretrained_cfg["mean"], "std": hub.pretrained_cfg["std"]}
        meta = {
            "classes": hub.pretrained_cfg["classes"],
            "preprocessing": prep,
            "variants": {k: v for k, v in hub.config_changes.items() if k != "in_chans"},
            "named_arch": hub.arch,
        }
        return raw, "timm", meta
    raise ValueError(
        f"{config_file}: model_type {config.get('model_type')!r} is not a Hugging Face ResNet "
        "and it is not a resnetkit model directory"
    )


def _read_hub(name: str) -> tuple[Mapping[str, Any], str, dict[str, Any]]:
    """An ``hf-hub:`` repository (timm's or transformers'), read as ``load_model`` reads it
    (from a cache or a pinned, verified download), with its preprocessing and classes."""
    from resnetkit.models.hf_hub import get_hf_hub_weights

    hub = get_hf_hub_weights(name)
    model = model_from_weights(hub)  # described once: create_model would read its config again
    cfg = hub.pretrained_cfg
    keys = ("input_size", "resize", "interpolation", "mean", "std")
    changes = hub.config_changes
    meta: dict[str, Any] = {
        "classes": cfg.get("classes") or [],
        "preprocessing": {k: cfg[k] for k in keys if k in cfg},
        "stride_in_1x1": bool(changes.get("stride_in_1x1", False)),  # timm's are all v1.5
        "variants": {k: v for k, v in changes.items() if k not in ("in_chans", "stride_in_1x1")},
        "named_arch": hub.arch if hub.source_format == "timm" else "",
        "task": (
            {"multi_label": True, "threshold": cfg.get("threshold", 0.5)}
            if cfg.get("multi_label")
            else {}
        ),
    }
    meta["source_format"] = hub.source_format  # said in the report; the names are ours
    return model.state_dict(), "resnetkit", meta


def _huggingface_meta(config: dict[str, Any]) -> dict[str, Any]:
    problems = []
    if config.get("downsample_in_first_stage"):
        problems.append(
            "the Hugging Face config has downsample_in_first_stage=true (a stride-2 first "
            "stage), which no resnetkit model has"
        )
    if config.get("hidden_act", "relu") != "relu":
        problems.append(f"the Hugging Face config uses {config['hidden_act']!r}, not relu")
    id2label = config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if all(re.fullmatch(r"LABEL_\d+", label) for label in labels):
        labels = []  # transformers' placeholders, not class names
    multi = config.get("problem_type") == "multi_label_classification"
    return {
        "stride_in_1x1": bool(config.get("downsample_in_bottleneck", False)),
        "classes": labels,
        "problems": problems,
        "task": {"multi_label": True, "threshold": 0.5} if multi else {},
    }


# --- loading, with mismatches explained ----------------------------------------------------


def load_checkpoint(
    model: ResNet,
    source: str | Path | Mapping[str, Any] | Checkpoint,
    *,
    source_format: str = "auto",
    adapt_head: bool = False,
    adapt_in_chans: bool = False,
    use_ema: bool = False,
) -> LoadReport:
    """Load weights from torchvision, timm, Hugging Face, Keras or a training script.

    Args:
        model: the resnetkit model to load into (its architecture decides; nothing is guessed).
        source: a file, a directory or a state dict; see :func:`read_checkpoint`.
        source_format: ``auto`` or the format to read the names as.
        adapt_head: if the classifier does not fit (other number of classes, or none), start
            a new ``model.num_classes``-way head instead of failing.
        adapt_in_chans: if the first conv sees another number of channels, adapt it as timm
            does: 1 channel sums the RGB filters, N channels repeat them scaled by 3/N.
        use_ema: load a training checkpoint's EMA copy of the weights instead of the weights.

    Returns:
        A :class:`LoadReport`; ``missing`` etc. list what differed, ``adapted`` what was changed.

    Raises:
        CheckpointMismatchError: keys or shapes that do not fit (and were not adapted on
            request), or a source whose stride placement (v1/v1.5) differs from the model's.
        TypeError: ``model`` is not a resnetkit ResNet (arguments swapped, or another
            network: load its weights with ``load_state_dict``).
    """
    if not isinstance(model, ResNet):
        raise TypeError(
            f"load_checkpoint(model, source) loads into a resnetkit ResNet, got "
            f"{type(model).__name__} as model"
            + (": the arguments look swapped" if isinstance(model, str | Path) else "")
        )
    ckpt = read_checkpoint(source, source_format, use_ema=use_ema)
    report = LoadReport(ckpt.source, ckpt.source_format, model.name, notes=list(ckpt.notes))
    state = dict(ckpt.state)
    expected = model.state_dict()
    report.missing, report.unexpected, report.shape_mismatches = _compare(state, expected)
    report.diagnosis = diagnose(model, state, expected, report, ckpt.detected_format)
    stride_notes, blocking = stride_findings(model, ckpt)
    report.notes += stride_notes
    blocking += architecture_findings(model, ckpt)
    blocking += ckpt.problems
    report.diagnosis += blocking

    differing = {*report.missing, *report.unexpected, *(s.key for s in report.shape_mismatches)}
    if adapt_head and any(k.startswith("fc.") for k in differing):
        report.adapted.append(_adapt_head(model, state))
    conv_key = "conv1.0.weight" if "conv1.0.weight" in expected else "conv1.weight"
    if adapt_in_chans and conv_key in differing and conv_key in state:
        weight, in_chans = state[conv_key], int(expected[conv_key].shape[1])
        if weight.dim() == 4 and weight.shape[1] == 3:
            state[conv_key] = adapt_input_conv(in_chans, weight.float()).to(weight.dtype)
            how = "summed RGB" if in_chans == 1 else f"repeated RGB, scaled by 3/{in_chans}"
            report.adapted.append(
                f"conv1: adapted {conv_key} from 3 to {in_chans} channels ({how})"
            )
        else:
            report.diagnosis.append(
                f"adapt_in_chans needs 3-channel weights; the checkpoint's {conv_key} has shape "
                f"{tuple(weight.shape)}"
            )

    if any(_compare(state, expected)) or blocking:
        raise CheckpointMismatchError(report)
    counters = {k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}
    model.load_state_dict({**counters, **state}, strict=True)
    report.loaded = True
    return report


def _compare(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[ShapeMismatch]]:
    # BatchNorm's counter does not affect evaluation; old checkpoints predate it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        ShapeMismatch(k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    return missing, unexpected, shapes


def adapt_input_conv(in_chans: int, weight: Tensor) -> Tensor:
    """A 3-channel first-conv weight for ``in_chans`` inputs, as timm's ``adapt_input_conv``.

    One channel: the sum of the RGB filters (a grey image gives the RGB response). N channels:
    the RGB filters repeated and scaled by 3/N, so the activation scale stays the same.
    """
    if weight.shape[1] != 3:
        raise ValueError(f"can only adapt 3-channel weights, got {weight.shape[1]} channels")
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = math.ceil(in_chans / 3)
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / in_chans)


def _adapt_head(model: ResNet, state: dict[str, Tensor]) -> str:
    old = state.get("fc.weight")
    for key in [k for k in state if k.startswith("fc.")]:
        del state[key]
    if model.num_classes > 0:
        # The same initialisation as ResNet.reset_classifier; the model is untouched until the
        # whole checkpoint is known to fit.
        head = nn.Linear(model.num_features, model.num_classes)
        state["fc.weight"], state["fc.bias"] = head.weight.detach(), head.bias.detach()
    new = f"initialised a new {model.num_classes}-class head (train it before use)"
    if old is None:
        return f"head: the checkpoint has no classifier; {new}"
    if model.num_classes == 0:
        return f"head: dropped the checkpoint's {old.shape[0]}-class classifier (model has none)"
    return f"head: dropped the checkpoint's {old.shape[0]}-class classifier and {new}"


def model_for(
    ckpt: Checkpoint,
    arch: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> ResNet:
    """Build ``arch`` shaped like the checkpoint unless told otherwise.

    Classes and input channels default to the checkpoint's; the stride placement follows the
    source when it is known (Keras: v1; a Hugging Face or resnetkit config), and so do a
    resnetkit model directory's unit and shortcut variants. ``options`` are architecture
    fields that a bare state dict cannot tell (``stem="cifar"``, ``unit=...``).
    """
    if ckpt.named_arch and ckpt.named_arch != arch:
        raise ValueError(
            f"{ckpt.source} holds timm's {ckpt.named_arch}, not {arch}: build it as "
            f"{ckpt.named_arch} (--arch {ckpt.named_arch})"
        )
    classes = ckpt.num_classes if num_classes is None else num_classes
    changes: dict[str, Any] = {"num_classes": classes}
    in_chans = ckpt.in_chans if in_chans is None else in_chans
    if in_chans is not None:
        changes["in_chans"] = in_chans
    if ckpt.stride_in_1x1 is not None and get_model_config(arch).block == "bottleneck":
        changes["stride_in_1x1"] = ckpt.stride_in_1x1
    changes.update(ckpt.variants)  # (b)-(d) units, gates ...: the source's, not the zoo's
    changes.update(options or {})
    saved = ckpt.architecture.get("config") or {}
    if saved and ckpt.architecture.get("arch") == arch:
        # A resnetkit directory of this architecture: built as it says (ResNet-D shortcuts,
        # widths...), which its weights' names and shapes cannot all tell.
        for key, value in saved.items():
            if key not in _ADAPTABLE_FIELDS and key not in changes:
                changes[key] = tuple(value) if isinstance(value, list) else value
    model = create_model(arch, **changes)
    assert isinstance(model, ResNet)
    _check_same_architecture(ckpt, arch, model.config)
    return model


# What a user may change when converting (the head, the stem's channels) or that changes no
# computation (the input size a model is described at).
_ADAPTABLE_FIELDS = ("num_classes", "in_chans", "default_input_size")


def _check_same_architecture(ckpt: Checkpoint, arch: str, config: ResNetConfig) -> None:
    """A resnetkit model directory says what it is: refuse building something else from its
    weights (a plain-20's weights load into ResNet-20 with option-A shortcuts without a
    mismatch, and compute another function)."""
    saved = ckpt.architecture.get("config")
    if not saved:
        return
    built = json.loads(json.dumps(asdict(config)))  # tuples as lists, as in config.json
    differ = [
        f"{name} {saved[name]!r} (--arch {arch}: {built[name]!r})"
        for name in built
        if name in saved and name not in _ADAPTABLE_FIELDS and saved[name] != built[name]
    ]
    if differ:
        raise ValueError(
            f"{ckpt.source} holds a {ckpt.architecture.get('arch')} with "
            f"{', '.join(differ)}: its weights would load but compute something else; pass "
            f"--arch {ckpt.architecture.get('arch')}"
        )


def convert_checkpoint(
    src: str | Path,
    arch: str,
    out: str | Path,
    *,
    source_format: str = "auto",
    target: str = "resnetkit",
    num_classes: int | None = None,
    in_chans: int | None = None,
    adapt_head: bool = False,
    adapt_in_chans: bool = False,
    preprocessing: Mapping[str, Any] | None = None,
    classes: list[str] | None = None,
    use_ema: bool = False,
    model_options: Mapping[str, Any] | None = None,
) -> tuple[LoadReport, Path]:
    """Read ``src``, load it into ``arch`` (mismatches explained), and write it as ``target``.

    ``preprocessing`` (``mean``, ``std``, ``input_size``..., as in a model directory's
    config.json) and ``classes`` say what the source cannot (a bare state dict), or replace
    what it says; only the targets with a place for them take them (resnetkit, huggingface
    and timm's Hub folder). ``use_ema`` converts a training checkpoint's EMA weights;
    ``model_options`` builds ``arch`` with architecture fields the source cannot tell
    (``stem="cifar"`` for kuangliu's CIFAR ResNet-18).

    The source's own preprocessing (a model directory's, a Hugging Face folder's
    ``preprocessor_config.json``, a timm folder's) travels to every target with a place for it.
    ``resnetkit`` writes a model directory (where the source says none, ImageNet mean/std, or
    caffe-style values for Keras weights); ``torchvision`` / ``timm`` a state dict
    (``.safetensors``, else ``torch.save``), or for ``timm`` and an ``out`` not named like a
    weights file, a folder in timm's Hub layout
    (:func:`~resnetkit.interop.timm_folder.to_timm_folder`);
    ``huggingface`` a transformers directory; ``keras`` an ``.npz`` of ``layer/kernel:0`` arrays.

    Returns:
        The load report and the path written.
    """
    from resnetkit.data.multilabel import describe_threshold
    from resnetkit.interop.timm_folder import is_folder_target, to_timm_folder
    from resnetkit.models.model_dir import check_preprocessing

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    ckpt = read_checkpoint(src, source_format, use_ema=use_ema)
    model = model_for(ckpt, arch, num_classes=num_classes, in_chans=in_chans, options=model_options)
    report = load_checkpoint(model, ckpt, adapt_head=adapt_head, adapt_in_chans=adapt_in_chans)
    if ckpt.stride_in_1x1 and model.config.stride_in_1x1:
        report.notes.append("built the model with stride_in_1x1=True (ResNet v1), as the source is")
    for note in model.config.variants():
        report.notes.append(f"built the model with {note}, as the source is")
    out = Path(out)
    if (preprocessing or classes is not None) and not (
        target in ("resnetkit", "huggingface") or (target == "timm" and is_folder_target(out))
    ):
        raise ValueError(
            f"a {target} state dict has no place for preprocessing or class names: write a "
            "model directory (resnetkit), a Hugging Face directory or a timm Hub folder"
        )
    if classes is None:
        classes = ckpt.classes if len(ckpt.classes) == model.num_classes else []
    with warnings.catch_warnings():
        if target == "resnetkit":  # save_model_dir warns of the same, naming the file
            warnings.simplefilter("ignore")
        given = check_preprocessing(model, preprocessing, classes)  # before anything is written
    if ckpt.preprocessing or given:  # the model's own preprocessing travels with it
        model.pretrained_cfg = {**ckpt.preprocessing, **given}  # type: ignore[assignment]
    multi_label = bool(ckpt.task.get("multi_label"))
    threshold = ckpt.task.get("threshold", 0.5)
    new_head = any(change.startswith("head:") for change in report.adapted)
    if (
        multi_label
        and isinstance(threshold, list)
        and (new_head or len(threshold) != model.num_classes)
    ):
        report.notes.append(
            f"the source's per-class thresholds ({describe_threshold(threshold)}) were chosen "
            f"for its own head, not this {model.num_classes}-class one: the new head predicts "
            "a class from 0.5 (after training it, `resnetkit calibrate` chooses its own)"
        )
        threshold = 0.5
    if multi_label and target == "huggingface" and threshold != 0.5:
        report.notes.append(  # config.json's problem_type says multi-label, not from where
            f"the Hugging Face config has no place for the threshold "
            f"({describe_threshold(threshold)}, in the source's config.json task.threshold): a "
            "model read back from it predicts a class from 0.5; apply the source's thresholds "
            "to transformers' sigmoid outputs"
        )
    min_confidence = ckpt.task.get("min_confidence")
    if min_confidence is not None and (report.adapted or target != "resnetkit"):
        report.notes.append(
            f"the source answers unsure below a top probability of {min_confidence:.4g} "
            "(task.min_confidence); "
            + (
                "chosen for its own head and stem, not these adapted ones: after training, "
                "`resnetkit calibrate --target-accuracy` chooses one"
                if report.adapted
                else f"the {target} weights have no place for it: apply it to the softmax "
                "outputs yourself"
            )
        )
        min_confidence = None
    if multi_label and target not in ("resnetkit", "huggingface"):  # no place for it there
        report.notes.append(
            f"the source is multi-label (a sigmoid per class, a class predicted from "
            f"{describe_threshold(threshold)}); the {target} weights do not say so: apply a "
            "sigmoid, not a "
            "softmax, to the outputs"
        )
    if target == "resnetkit":
        from resnetkit.models.model_dir import save_model_dir

        keras = ckpt.source_format == "keras"
        if "mean" not in ckpt.preprocessing and "mean" not in given:  # say what was assumed
            report.notes.append(
                f"the source names no input normalization: the model directory assumes "
                f"{'Keras caffe-style' if keras else 'ImageNet'} mean/std; if it was trained "
                "otherwise, edit preprocessing in its config.json"
            )
        if not classes and model.num_classes:
            report.notes.append(
                "the source names no classes: predictions will be class indices (edit "
                "classes in config.json to name them)"
            )
        assumed = {  # under what the source says (a resnetkit model keeps its own)
            "input_size": model.config.default_input_size,
            "mean": list(KERAS_MEAN if keras else IMAGENET_MEAN),
            "std": list(KERAS_STD if keras else IMAGENET_STD),
            **ckpt.preprocessing,
        }
        provenance = {
            "converted_from": ckpt.source,
            "source_format": ckpt.source_format,
            "adapted": report.adapted,
        }
        save_model_dir(
            model,
            out,
            arch=arch,
            classes=classes,
            preprocessing={**assumed, **given},
            # measured on the source model: still true unless its head or stem was adapted
            metrics=ckpt.metrics if not report.adapted else None,
            provenance=provenance,
            multi_label=multi_label,
            threshold=threshold,
            min_confidence=min_confidence,
        )
    elif target == "huggingface":
        to_huggingface(model, out, classes=classes or None, multi_label=multi_label)
        processor_note = huggingface_preprocessor_note(model)
        if processor_note:
            report.notes.append(processor_note)
    elif target == "keras":
        from resnetkit.train.checkpoint import atomic_write_bytes

        arrays = to_keras_dict(model)  # refuses a model Keras cannot express, before writing
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(out, buffer.getvalue())
    elif target == "timm" and is_folder_target(out):  # timm's Hub layout
        to_timm_folder(model, out, classes=classes or None)
    else:
        from resnetkit.train.checkpoint import atomic_write_bytes

        state = to_torchvision(model) if target == "torchvision" else to_timm(model)
        if model.config.output_stride < model.config.natural_stride:
            report.notes.append(
                f"a state dict cannot record output_stride={model.config.output_stride}: build "
                f"the model with it again where it is loaded"
            )
        if out.suffix.lower() in SAFETENSORS_SUFFIXES:
            atomic_write_bytes(out, save({k: v.contiguous() for k, v in state.items()}))
        else:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            atomic_write_bytes(out, buffer.getvalue())
    return report, out
