"""Load ResNet weights from torchvision, timm, Hugging Face, Keras or a training script, with
every mismatch explained; export our models to those libraries.

Nothing is adapted silently: a checkpoint that does not fit raises
:class:`CheckpointMismatchError`, whose report says what probably happened (other number of
classes, depth, shortcut option, input channels, ...). ``adapt_head`` and ``adapt_in_chans``
fix the two mismatches that transfer learning wants on purpose, and the report says so.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from resnetkit.interop.formats import (
    KERAS_MEAN,
    KERAS_STD,
    ours_to_huggingface,
    ours_to_keras,
    same_names,
    to_resnetkit_names,
)
from resnetkit.models.config import ResNetConfig
from resnetkit.models.loading import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    torch_load_weights_only,
)
from resnetkit.models.registry import create_model, get_model_config, list_models
from resnetkit.models.resnet import ResNet

KERAS_SUFFIXES = (".npz", ".h5", ".hdf5")
TARGETS = ("resnetkit", "torchvision", "timm", "huggingface", "keras")
_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
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
        classes: class names the source carries (Hugging Face ``id2label``, model dirs).
        problems: source features that no resnetkit model has.
    """

    state: dict[str, Tensor]
    source: str
    source_format: str
    detected_format: str = ""
    notes: list[str] = field(default_factory=list)
    stride_in_1x1: bool | None = None
    classes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

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
    source: str | Path | Mapping[str, Any] | Checkpoint, source_format: str = "auto"
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

    Raises:
        FileNotFoundError: no such file or an incomplete directory.
        ValueError: an unknown format, or no state dict inside.
        ImportError: an ``.h5`` file without h5py installed.
    """
    if isinstance(source, Checkpoint):
        return source
    meta: dict[str, Any] = {}
    hint = "auto"
    if isinstance(source, Mapping):
        raw: Mapping[str, Any] = source
        origin = "state dict"
    else:
        path = Path(source).expanduser()
        raw, hint, meta = _read_path(path)
        origin = str(path)
    translation = to_resnetkit_names(raw, hint if source_format == "auto" else source_format)
    ckpt = Checkpoint(
        translation.state,
        origin,
        translation.source_format,
        translation.detected_format,
        translation.notes,
    )
    ckpt.stride_in_1x1 = meta.get("stride_in_1x1")
    ckpt.classes = list(meta.get("classes", []))
    ckpt.problems = list(meta.get("problems", []))
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
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}, "keras", {}
    if suffix in (".h5", ".hdf5"):
        return _read_h5(path), "keras", {}
    known = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES + KERAS_SUFFIXES)
    raise ValueError(f"{path}: unknown checkpoint format {suffix!r}; expected one of {known}")


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for damaged files
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise ImportError(
            f"reading {path} needs h5py (pip install h5py). Or save the weights as .npz in "
            "Keras: np.savez('weights.npz', **{w.path: w.numpy() for w in model.weights}) "
            "(tf.keras 2: w.name instead of w.path)"
        ) from None
    arrays: dict[str, np.ndarray] = {}

    def collect(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            arrays[name] = np.asarray(obj)

    # Keras 2 weight files hold layer/layer/kernel:0 (under model_weights/ in whole-model files).
    with h5py.File(path, "r") as f:
        f.visititems(collect)
    return arrays


def _read_dir(path: Path) -> tuple[Mapping[str, Any], str, dict[str, Any]]:
    config_file = path / "config.json"
    names = ("model.safetensors", "pytorch_model.bin")
    weights = next((path / n for n in names if (path / n).is_file()), None)
    if not config_file.is_file() or weights is None:
        raise FileNotFoundError(
            f"{path}: expected config.json and model.safetensors (a Hugging Face or resnetkit "
            "model directory)"
        )
    config = json.loads(config_file.read_text())
    raw = (
        _read_safetensors(weights)
        if weights.suffix == ".safetensors"
        else torch_load_weights_only(weights)
    )
    if config.get("model_type") == "resnet":
        return raw, "huggingface", _huggingface_meta(config)
    if "arch" in config and "config" in config:
        meta = {
            "stride_in_1x1": config["config"].get("stride_in_1x1"),
            "classes": config.get("classes") or [],
        }
        return raw, "resnetkit", meta
    raise ValueError(
        f"{config_file}: model_type {config.get('model_type')!r} is not a Hugging Face ResNet "
        "and it is not a resnetkit model directory"
    )


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
    return {
        "stride_in_1x1": bool(config.get("downsample_in_bottleneck", False)),
        "classes": labels,
        "problems": problems,
    }


# --- loading, with mismatches explained ----------------------------------------------------


def load_checkpoint(
    model: ResNet,
    source: str | Path | Mapping[str, Any] | Checkpoint,
    *,
    source_format: str = "auto",
    adapt_head: bool = False,
    adapt_in_chans: bool = False,
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

    Returns:
        A :class:`LoadReport`; ``missing`` etc. list what differed, ``adapted`` what was changed.

    Raises:
        CheckpointMismatchError: keys or shapes that do not fit (and were not adapted on
            request), or a source whose stride placement (v1/v1.5) differs from the model's.
    """
    ckpt = read_checkpoint(source, source_format)
    report = LoadReport(ckpt.source, ckpt.source_format, model.name, notes=list(ckpt.notes))
    state = dict(ckpt.state)
    expected = model.state_dict()
    report.missing, report.unexpected, report.shape_mismatches = _compare(state, expected)
    report.diagnosis = _diagnose(model, state, expected, report, ckpt.detected_format)
    stride_notes, blocking = _stride_findings(model, ckpt)
    report.notes += stride_notes
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


def _diagnose(
    model: ResNet,
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    report: LoadReport,
    detected: str,
) -> list[str]:
    if not (report.missing or report.unexpected or report.shape_mismatches):
        return []
    if not same_names(detected, report.source_format):
        return [
            f"the names look like {detected}, but were read as {report.source_format}: "
            "try --from auto (source_format='auto')"
        ]
    found = [
        _diagnose_head(state, expected),
        _diagnose_in_chans(state, expected),
        _diagnose_stem(state, expected),
        *_diagnose_blocks(model, state, expected),
    ]
    diagnosis = [d for d in found if d]
    explained = {"fc.weight", "fc.bias", "conv1.weight", "conv1.0.weight"}
    others = [s for s in report.shape_mismatches if s.key not in explained]
    if others and not any(d.startswith(_STRUCTURAL) for d in diagnosis):
        diagnosis.append(
            f"other widths: e.g. {others[0]} (stage widths, groups or width_per_group differ: "
            "a ResNeXt or Wide ResNet checkpoint?)"
        )
    if not diagnosis:
        diagnosis.append(
            f"the names do not match ({report.source_format} format): check the architecture "
            "and the source format (--arch, --from)"
        )
    return diagnosis


def _diagnose_head(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    ours, theirs = expected.get("fc.weight"), state.get("fc.weight")
    if ours is None and theirs is None:
        return None
    if ours is not None and theirs is not None:
        if ours.shape == theirs.shape:
            return None
        if theirs.dim() == 2 and theirs.shape[1] == ours.shape[1]:
            n, m = theirs.shape[0], ours.shape[0]
            return (
                f"other number of classes: the checkpoint's head (fc) has {n} classes, the model "
                f"{m}. Pass adapt_head=True (--adapt-head) to start a new {m}-class head on these "
                f"features, or create the model with num_classes={n} to keep the trained head."
            )
        return (
            f"the head's input differs (checkpoint fc {tuple(theirs.shape)}, model "
            f"{tuple(ours.shape)}): the feature widths differ, see below"
        )
    if theirs is None:
        assert ours is not None
        return (
            "the checkpoint has no classifier (fc): it is a backbone. Pass adapt_head=True "
            f"(--adapt-head) to initialise a new {ours.shape[0]}-class head, or create the model "
            "with num_classes=0."
        )
    return (
        f"the model has no head (num_classes=0) but the checkpoint has a {theirs.shape[0]}-class "
        f"fc: pass adapt_head=True to drop it, or create the model with "
        f"num_classes={theirs.shape[0]}."
    )


def _diagnose_in_chans(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    key = "conv1.0.weight" if "conv1.0.weight" in expected else "conv1.weight"
    ours, theirs = expected.get(key), state.get(key)
    if ours is None or theirs is None or theirs.dim() != 4 or theirs.shape[1] == ours.shape[1]:
        return None
    return (
        f"other number of input channels: the checkpoint's {key} takes {theirs.shape[1]}, the "
        f"model's {ours.shape[1]}. Pass adapt_in_chans=True (--adapt-in-chans) to adapt it as "
        "timm does (1 channel: sum over RGB; N: repeat RGB, scaled by 3/N), or create the "
        f"model with in_chans={theirs.shape[1]}."
    )


def _diagnose_stem(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    deep_ckpt, deep_model = "conv1.0.weight" in state, "conv1.0.weight" in expected
    if deep_ckpt != deep_model:
        has, other = ("checkpoint", "model") if deep_ckpt else ("model", "checkpoint")
        return (
            f"other stem: the {has} has the deep 3-conv stem (conv1.0 ... conv1.6, ResNet-C/D, "
            f"stem='deep'), the {other} a single conv1: check --arch (resnet50d?)"
        )
    ours, theirs = expected.get("conv1.weight"), state.get("conv1.weight")
    if ours is None or theirs is None or theirs.dim() != 4 or theirs.shape[-1] == ours.shape[-1]:
        return None

    def name(k: int) -> str:
        return {3: "3x3, a CIFAR stem", 7: "7x7, an ImageNet stem"}.get(k, f"{k}x{k}")

    return (
        f"other stem: the checkpoint's conv1 is {name(theirs.shape[-1])}; the model's is "
        f"{name(ours.shape[-1])}: check --arch"
    )


def _blocks(keys: Iterable[str]) -> dict[tuple[int, int], set[str]]:
    blocks: dict[tuple[int, int], set[str]] = {}
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks.setdefault((int(match.group(1)), int(match.group(2))), set()).add(match.group(3))
    return blocks


def _counts(blocks: Mapping[tuple[int, int], set[str]]) -> tuple[int, ...]:
    stages = sorted({stage for stage, _ in blocks})
    return tuple(sum(1 for s, _ in blocks if s == stage) for stage in stages)


def _block_type(blocks: Mapping[tuple[int, int], set[str]]) -> str:
    return "bottleneck" if any("conv3.weight" in parts for parts in blocks.values()) else "basic"


def _projected(blocks: Mapping[tuple[int, int], set[str]]) -> set[tuple[int, int]]:
    return {b for b, parts in blocks.items() if any(p.startswith("downsample.") for p in parts)}


def _option(blocks: Mapping[tuple[int, int], set[str]]) -> str:
    """The shortcut option (paper Table 3) that projects in these blocks."""
    projected = _projected(blocks)
    return "A" if not projected else "C" if projected == set(blocks) else "B"


def _archs_like(layers: tuple[int, ...], block: str, like: ResNetConfig) -> list[str]:
    """Registered models with these stage depths, of the same family as ``like``."""
    names = []
    for name in list_models():
        c = get_model_config(name)
        plain = (c.shortcut == "none") == (like.shortcut == "none")
        if c.layers == layers and c.block == block and c.preact == like.preact and plain:
            names.append(name)
    return names[:4]


#: Findings that explain shape mismatches all over the network by themselves.
_STRUCTURAL = ("other block type", "other stem", "other projection", "pre-activation")
_OPTION_WORDS = {
    "A": "option A (identity, zero-padded where the shape changes; no parameters) or a plain "
    "net (shortcut='none')",
    "B": "option B (projection only where the shape changes)",
    "C": "option C (projection in every block)",
}


def _diagnose_blocks(
    model: ResNet, state: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> list[str]:
    theirs, ours = _blocks(state), _blocks(expected)
    if not theirs:
        return []
    found = []
    block = _block_type(theirs)
    if block != _block_type(ours):
        found.append(
            f"other block type: the checkpoint has {block} blocks, the model "
            f"{_block_type(ours)} blocks: check --arch"
        )
    counts = _counts(theirs)
    if counts != _counts(ours):
        like = _archs_like(counts, block, model.config)
        like_text = f" (like {', '.join(like)})" if like else ""
        only_theirs = sorted(set(theirs) - set(ours))
        only_ours = sorted(set(ours) - set(theirs))
        example = (
            f"layer{only_theirs[0][0]}.{only_theirs[0][1]} is in the checkpoint only"
            if only_theirs
            else f"layer{only_ours[0][0]}.{only_ours[0][1]} is in the model only"
        )
        found.append(
            f"other depth: the checkpoint has {counts} {block} blocks per stage{like_text}, "
            f"the model ({model.name}) {_counts(ours)}; e.g. {example}. Create the model with "
            "the checkpoint's architecture."
        )
    projected_theirs, projected_ours = _projected(theirs), _projected(ours)
    option, option_ours = _option(theirs), _option(ours)
    if option != option_ours and block == _block_type(ours):
        found.append(
            f"other shortcut option: the checkpoint has projection shortcuts (downsample) in "
            f"{len(projected_theirs)} of {len(theirs)} blocks, i.e. {_OPTION_WORDS[option]}; "
            f"the model uses option {model.config.shortcut} ({len(projected_ours)} of "
            f"{len(ours)} blocks). Create the model with shortcut='{option}'."
        )
    else:
        avg_theirs = any("downsample.2.weight" in theirs[b] for b in projected_theirs)
        avg_ours = any("downsample.2.weight" in ours[b] for b in projected_ours)
        if avg_theirs != avg_ours:
            has, other = ("checkpoint", "model") if avg_theirs else ("model", "checkpoint")
            found.append(
                f"other projection shortcut: the {has} average-pools then projects (ResNet-D, "
                f"avg_down=True: downsample.1 conv, downsample.2 BN), the {other} uses a "
                "strided 1x1 (downsample.0 conv, downsample.1 BN)"
            )
    if ("final_bn.weight" in state) != ("final_bn.weight" in expected):
        has = "checkpoint" if "final_bn.weight" in state else "model"
        found.append(
            f"pre-activation: only the {has} has final_bn, the BN-ReLU that ends pre-activation "
            "nets (preact=True): check --arch (preact_resnet*)"
        )
    return found


def _stride_name(stride_in_1x1: bool) -> str:
    return "v1 (stride on the first 1x1)" if stride_in_1x1 else "v1.5 (stride on the 3x3)"


def _stride_findings(model: ResNet, ckpt: Checkpoint) -> tuple[list[str], list[str]]:
    """(notes, blocking problems) about the stride placement, which shapes cannot reveal."""
    if model.config.block != "bottleneck":
        return [], []
    ours, theirs = model.config.stride_in_1x1, ckpt.stride_in_1x1
    if theirs is None:
        if ckpt.source_format != "huggingface":
            return [], []
        return [
            "v1 vs v1.5 cannot be told from the weights' shapes: Hugging Face ResNets are v1.5 "
            "unless their config.json says downsample_in_bottleneck=true; the model is "
            f"{_stride_name(ours)}. Load the directory with its config.json to have it checked."
        ], []
    if theirs == ours:
        return [], []
    why = {
        "keras": "keras.applications ResNets are v1",
        "huggingface": f"its config.json has downsample_in_bottleneck={str(theirs).lower()}",
    }.get(ckpt.source_format, f"its config has stride_in_1x1={theirs}")
    return [], [
        f"other stride placement: the checkpoint is ResNet {_stride_name(theirs)}: {why}. The "
        f"model is {_stride_name(ours)}. Shapes cannot tell them apart, so the weights would "
        f"load and give wrong outputs. Create the model with stride_in_1x1={theirs}."
    ]


# --- export --------------------------------------------------------------------------------


def _unsupported(config: ResNetConfig, target: str) -> list[str]:
    """What in ``config`` the ``target`` library's ResNet cannot express."""
    c = config
    problems = []
    if c.preact:
        problems.append("pre-activation blocks (preact=True)")
    if c.shortcut != "B":
        problems.append(f"shortcut option {c.shortcut} (only B)")
    if len(c.layers) != 4:
        problems.append(f"{len(c.layers)} stages (only 4)")
    stems = {"timm": ("imagenet", "deep")}.get(target, ("imagenet",))
    if c.stem not in stems:
        problems.append(f"the {c.stem} stem")
    if c.stem == "imagenet" and c.stem_width != 64 and target in ("torchvision", "timm"):
        problems.append(f"stem width {c.stem_width} (only 64)")
    if c.avg_down and target != "timm":
        problems.append("average-pool shortcuts (avg_down=True, ResNet-D)")
    if target in ("torchvision", "timm") and c.stride_in_1x1:
        problems.append(f"the stride on the first 1x1 (ResNet v1; {target} is v1.5)")
    if target == "torchvision" and c.widths != (64, 128, 256, 512):
        problems.append(f"stage widths {c.widths}")
    if target in ("huggingface", "keras") and (c.groups != 1 or c.width_per_group != 64):
        problems.append("grouped or widened bottlenecks (ResNeXt / Wide ResNet)")
    if target == "keras":
        if c.block != "bottleneck":
            problems.append("basic blocks (Keras has bottleneck ResNets only)")
        elif not c.stride_in_1x1:
            problems.append(
                "the stride on the 3x3 (v1.5; Keras ResNets are v1: stride_in_1x1=True)"
            )
    return problems


def _require_layout(model: ResNet, target: str) -> None:
    problems = _unsupported(model.config, target)
    if problems:
        raise ValueError(
            f"{model.name} cannot be written as a {target} ResNet: it has "
            f"{'; '.join(problems)}. Save it as a resnetkit model directory instead."
        )


def _detached(model: ResNet) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def to_torchvision(model: ResNet) -> dict[str, Tensor]:
    """A state dict for ``torchvision.models.resnet*`` / ``resnext*`` / ``wide_resnet*``.

    Raises:
        ValueError: the model has something torchvision's ResNet cannot express (another
            stem, shortcut option or stride placement, pre-activation, ...).
    """
    _require_layout(model, "torchvision")
    return _detached(model)


def to_timm(model: ResNet) -> dict[str, Tensor]:
    """A state dict for ``timm.create_model("resnet50")`` and kin (``resnet50d`` included).

    Raises:
        ValueError: the model has something timm's ResNet cannot express.
    """
    _require_layout(model, "timm")
    return _detached(model)


def huggingface_config(model: ResNet, classes: list[str] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a transformers ``ResNetForImageClassification`` for ``model``."""
    _require_layout(model, "huggingface")
    c = model.config
    labels = list(classes or [f"LABEL_{i}" for i in range(model.num_classes)])
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} class names for a {model.num_classes}-class model")
    return {
        "architectures": ["ResNetForImageClassification"],
        "model_type": "resnet",
        "num_channels": c.in_chans,
        "embedding_size": c.stem_width,
        "hidden_sizes": [w * c.expansion for w in c.widths],
        "depths": list(c.layers),
        "layer_type": c.block,
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": c.stride_in_1x1,
        "num_labels": model.num_classes,
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def to_huggingface(model: ResNet, out_dir: str | Path, *, classes: list[str] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that
    ``transformers.ResNetForImageClassification.from_pretrained(out_dir)`` loads.

    Args:
        model: a ResNet with the ImageNet stem and option-B shortcuts (v1 or v1.5).
        out_dir: directory to create.
        classes: class names for ``id2label`` (default ``LABEL_i``).

    Raises:
        ValueError: the model has something transformers' ResNet cannot express.
    """
    config = huggingface_config(model, classes)
    tensors = ours_to_huggingface(_detached(model))
    if len(tensors) != len(model.state_dict()):
        raise AssertionError("every parameter must have exactly one Hugging Face name")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def to_keras_dict(model: ResNet) -> dict[str, np.ndarray]:
    """Weights for ``keras.applications.ResNet50`` (and 101/152), keyed ``layer/kernel:0``.

    Only bottleneck v1 models (``stride_in_1x1=True``) have a Keras equivalent. Convolution
    biases are zeros, the stem takes BGR, and the BN epsilon difference is folded back, so
    :func:`load_checkpoint` of the result gives the model back exactly.

    Raises:
        ValueError: the model has something Keras' ResNet cannot express.
    """
    _require_layout(model, "keras")
    return ours_to_keras(model.state_dict())


# --- one-call conversion (the CLI) ---------------------------------------------------------


def model_for(
    ckpt: Checkpoint, arch: str, *, num_classes: int | None = None, in_chans: int | None = None
) -> ResNet:
    """Build ``arch`` shaped like the checkpoint unless told otherwise.

    Classes and input channels default to the checkpoint's; the stride placement follows the
    source when it is known (Keras: v1; a Hugging Face or resnetkit config).
    """
    classes = ckpt.num_classes if num_classes is None else num_classes
    changes: dict[str, Any] = {"num_classes": classes}
    in_chans = ckpt.in_chans if in_chans is None else in_chans
    if in_chans is not None:
        changes["in_chans"] = in_chans
    if ckpt.stride_in_1x1 is not None and get_model_config(arch).block == "bottleneck":
        changes["stride_in_1x1"] = ckpt.stride_in_1x1
    model = create_model(arch, **changes)
    assert isinstance(model, ResNet)
    return model


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
) -> tuple[LoadReport, Path]:
    """Read ``src``, load it into ``arch`` (mismatches explained), and write it as ``target``.

    ``resnetkit`` writes a model directory (ImageNet mean/std, or caffe-style values for Keras
    weights); ``torchvision`` / ``timm`` a state dict (``.safetensors``, else ``torch.save``);
    ``huggingface`` a transformers directory; ``keras`` an ``.npz`` of ``layer/kernel:0`` arrays.

    Returns:
        The load report and the path written.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    ckpt = read_checkpoint(src, source_format)
    model = model_for(ckpt, arch, num_classes=num_classes, in_chans=in_chans)
    report = load_checkpoint(model, ckpt, adapt_head=adapt_head, adapt_in_chans=adapt_in_chans)
    if ckpt.stride_in_1x1 and model.config.stride_in_1x1:
        report.notes.append("built the model with stride_in_1x1=True (ResNet v1), as the source is")
    out = Path(out)
    classes = ckpt.classes if len(ckpt.classes) == model.num_classes else []
    if target == "resnetkit":
        from resnetkit.models.model_dir import save_model_dir

        keras = ckpt.source_format == "keras"
        preprocessing = {
            "input_size": model.config.default_input_size,
            "mean": list(KERAS_MEAN if keras else IMAGENET_MEAN),
            "std": list(KERAS_STD if keras else IMAGENET_STD),
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
            preprocessing=preprocessing,
            provenance=provenance,
        )
    elif target == "huggingface":
        to_huggingface(model, out, classes=classes or None)
    elif target == "keras":
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            np.savez(f, **to_keras_dict(model))  # type: ignore[arg-type]
    else:
        state = to_torchvision(model) if target == "torchvision" else to_timm(model)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in SAFETENSORS_SUFFIXES:
            save_file({k: v.contiguous() for k, v in state.items()}, str(out))
        else:
            torch.save(state, out)
    return report, out
