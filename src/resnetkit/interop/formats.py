"""Where a checkpoint comes from, and explicit maps from its parameter names to ours.

Our names are torchvision's (``conv1``, ``bn1``, ``layer1.0.downsample.0``, ``fc``). timm's
ResNets use the very same names, including the deep stem of ``resnet50d`` (``conv1.0/1/3/4/6``)
and its average-pool shortcut (``downsample.1`` conv, ``downsample.2`` BN), so they need no map.
Hugging Face ``ResNetForImageClassification`` and Keras applications ResNet50 get a module map
each (below); training-script checkpoints are normalised: nesting, wrapper prefixes, head names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from resnetkit.models.loading import NESTED_KEYS, WRAPPER_PREFIXES
from resnetkit.text import first_few

SourceFormat = Literal["resnetkit", "torchvision", "timm", "huggingface", "keras", "script"]
SOURCE_FORMATS: tuple[str, ...] = (
    "resnetkit",
    "torchvision",
    "timm",
    "huggingface",
    "keras",
    "script",
)
#: Formats whose names are ours already (after training-script normalisation).
NATIVE_FORMATS = ("resnetkit", "torchvision", "timm", "script")

#: Keras ResNets (v1) expect caffe-style inputs: BGR, 0-255, minus this mean (here RGB, 0-1
#: scale), no std. The stem is flipped to RGB on import, so these are the converted model's.
KERAS_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)
KERAS_STD = (1 / 255, 1 / 255, 1 / 255)
#: Keras BatchNormalization epsilon in keras.applications.resnet; PyTorch's is 1e-5.
KERAS_BN_EPS = 1.001e-5
TORCH_BN_EPS = 1e-5

_OUR_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
_HF_PREFIXES = ("resnet.embedder.", "resnet.encoder.")
#: transformers' headless ResNetModel / ResNetBackbone save without the ``resnet.`` prefix.
_HF_BACKBONE_PREFIXES = ("embedder.embedder.", "encoder.stages.")


@dataclass(frozen=True)
class ModuleMap:
    """Our module names against another library's: whole modules, then the parts of a block.

    Block ``b`` of stage ``s`` (ours: ``layer{s+1}.{b}``, both 0-based) is called
    ``block.format(stage=s + stage_base, block=b + block_base)`` followed by its part's name.
    """

    fixed: Mapping[str, str]
    block: str
    stage_base: int
    block_base: int
    parts: Mapping[str, str]

    def theirs(self, module: str) -> str | None:
        """Their name of one of our modules, or None if they have no such module."""
        if module in self.fixed:
            return self.fixed[module]
        match = _OUR_BLOCK.match(module)
        if match is None or match.group(3) not in self.parts:
            return None
        stage = int(match.group(1)) - 1 + self.stage_base
        block = int(match.group(2)) + self.block_base
        return self.block.format(stage=stage, block=block) + self.parts[match.group(3)]

    def ours(self, module: str) -> str | None:
        """Our name of one of their modules, or None if we have no such module."""
        for mine, theirs in self.fixed.items():
            if module == theirs:
                return mine
        match = self._their_block.match(module)
        if match is None:
            return None
        part = next((m for m, t in self.parts.items() if t == match.group("part")), None)
        if part is None:
            return None
        stage = int(match.group("stage")) - self.stage_base + 1
        block = int(match.group("block")) - self.block_base
        return f"layer{stage}.{block}.{part}"

    @property
    def _their_block(self) -> re.Pattern[str]:
        pattern = re.escape(self.block)
        pattern = pattern.replace(re.escape("{stage}"), r"(?P<stage>\d+)")
        pattern = pattern.replace(re.escape("{block}"), r"(?P<block>\d+)")
        return re.compile(f"^{pattern}(?P<part>.+)$")


#: transformers' ResNetForImageClassification (``microsoft/resnet-50`` and friends).
HF_MAP = ModuleMap(
    fixed={
        "conv1": "resnet.embedder.embedder.convolution",
        "bn1": "resnet.embedder.embedder.normalization",
        "fc": "classifier.1",  # classifier = Sequential(Flatten, Linear)
    },
    block="resnet.encoder.stages.{stage}.layers.{block}.",
    stage_base=0,
    block_base=0,
    parts={
        "conv1": "layer.0.convolution",
        "bn1": "layer.0.normalization",
        "conv2": "layer.1.convolution",
        "bn2": "layer.1.normalization",
        "conv3": "layer.2.convolution",
        "bn3": "layer.2.normalization",
        "downsample.0": "shortcut.convolution",
        "downsample.1": "shortcut.normalization",
    },
)

#: keras.applications.resnet (ResNet50/101/152, v1): layer names such as ``conv2_block1_0_conv``.
KERAS_MAP = ModuleMap(
    fixed={"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "predictions"},
    block="conv{stage}_block{block}_",
    stage_base=2,  # Keras counts conv1 (the stem) as stage 1, so layer1 is conv2
    block_base=1,
    parts={
        "conv1": "1_conv",
        "bn1": "1_bn",
        "conv2": "2_conv",
        "bn2": "2_bn",
        "conv3": "3_conv",
        "bn3": "3_bn",
        "downsample.0": "0_conv",
        "downsample.1": "0_bn",
    },
)

#: Classifier names used by training scripts, renamed to ``fc`` (kuangliu's CIFAR nets use
#: ``linear``, many scripts ``classifier`` or ``head``, timm's other families ``head.fc``).
_HEAD_ALIAS = re.compile(r"^(?:linear|classifier|head)(?:\.fc|\.\d+)?\.(weight|bias)$")
#: A classifier module beside a backbone of one's own (``self.head = nn.Linear(...)``).
_OWN_HEAD = re.compile(r"^((?:fc|linear|classifier|head)(?:\.fc|\.\d+)?)\.(weight|bias)$")
#: kuangliu's pytorch-cifar calls the projection shortcut ``shortcut``.
_SHORTCUT_ALIAS = re.compile(r"^(layer\d+\.\d+\.)shortcut\.(\d+\..+)$")
_OUR_ROOTS = ("conv1.", "bn1.", "layer1.", "fc.", "resnet.", "classifier.")


@dataclass
class Translation:
    """A checkpoint in our parameter names.

    Attributes:
        state: tensors under our names; keys that have no counterpart keep their own name.
        source_format: the format the names were read as.
        detected_format: the format the names look like (differs only if told otherwise).
        notes: what was done to the names, for people (``module.`` stripped, ...).
        untranslated: keys of the source that have no name of ours.
    """

    state: dict[str, Tensor]
    source_format: str
    detected_format: str = ""
    notes: list[str] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)


def detect_format(keys: Iterable[str]) -> SourceFormat:
    """Guess the library of a flat checkpoint from its key names.

    timm and torchvision share names; ``timm`` is returned only for timm-only layouts (the deep
    stem ``conv1.0``), and training-script quirks are recognised by :func:`to_resnetkit_names`.
    """
    keys = list(keys)
    if any(k.startswith(_HF_PREFIXES + _HF_BACKBONE_PREFIXES) for k in keys):
        return "huggingface"
    if any("/" in k or k.startswith(("conv1_conv", "conv2_block1_")) for k in keys):
        return "keras"
    if any(k.startswith("conv1.0.") for k in keys):
        return "timm"
    return "torchvision"


def to_resnetkit_names(
    obj: Mapping[str, Any], source_format: str = "auto", *, use_ema: bool = False
) -> Translation:
    """Translate a checkpoint (flat or nested, tensors or numpy arrays) to our names.

    Args:
        obj: a state dict, a training checkpoint holding one under ``state_dict``,
            ``model_state_dict`` or ``model``, or Keras weights (``layer/kernel:0`` -> array).
        source_format: one of :data:`SOURCE_FORMATS`, or ``"auto"`` to detect it.

    Raises:
        ValueError: no state dict inside, or an unknown format.
    """
    if source_format != "auto" and source_format not in SOURCE_FORMATS:
        raise ValueError(
            f"unknown checkpoint format {source_format!r}; expected auto or one of "
            f"{', '.join(SOURCE_FORMATS)}"
        )
    state, notes = normalize_script(obj, use_ema=use_ema)
    detected = detect_format(state)
    if source_format == "keras" and detected != "keras":
        # Keras names pass through untouched, so these would load, and then be treated as
        # Keras weights (BGR first convolution, caffe preprocessing): silently wrong.
        raise ValueError(
            f"the names look like {detected} (e.g. {next(iter(state), '?')!r}), not Keras "
            "('conv1_conv/kernel:0'): leave out --from keras (auto reads them), or give "
            f"--from {detected}"
        )
    fmt = detected if source_format == "auto" else source_format
    if fmt in ("torchvision", "timm") and notes and source_format == "auto":
        fmt = "script"
    if fmt == "huggingface":
        if any(k.startswith(_HF_BACKBONE_PREFIXES) for k in state):
            notes.append("a headless transformers ResNetModel: read under 'resnet.'")
            state = {
                f"resnet.{k}" if k.startswith(_HF_BACKBONE_PREFIXES) else k: v
                for k, v in state.items()
            }
        translation = _rename_modules(state, HF_MAP, "huggingface")
    elif fmt == "keras":
        translation = keras_to_ours(state)
    else:
        translation = Translation(state, fmt)
    translation.notes[:0] = notes
    translation.detected_format = detected
    return translation


def same_names(a: str, b: str) -> bool:
    """Whether two formats name parameters alike (torchvision, timm, scripts, resnetkit)."""
    return a == b or (a in NATIVE_FORMATS and b in NATIVE_FORMATS)


def normalize_script(
    obj: Mapping[str, Any], *, use_ema: bool = False
) -> tuple[dict[str, Tensor], list[str]]:
    """Undo what training scripts do to a state dict; say what was undone.

    Unnests ``state_dict`` / ``model_state_dict`` / ``model``, strips ``module.`` (DataParallel,
    DDP, AveragedModel) and ``_orig_mod.`` (torch.compile) and the prefix of the one network
    in the dict (a Lightning module's ``model.``, beside a loss's buffers), renames heads
    called ``linear``/``classifier``/``head`` to ``fc`` and ``shortcut`` to ``downsample``.
    Numpy arrays become tensors. An EMA copy of the weights beside them (``state_dict_ema``,
    ``model_ema``, a module ``ema_model.``...) is said, and read instead with ``use_ema``.

    Raises:
        ValueError: no state dict inside; several networks (a student and its teacher); or
            ``use_ema`` and no EMA copy.
    """
    notes: list[str] = []
    current: Any = obj
    took_ema = False
    for _ in range(len(NESTED_KEYS) + 1):
        if _is_flat(current):
            break
        key = next((k for k in NESTED_KEYS if isinstance(current, Mapping) and k in current), None)
        ema = next(
            (k for k in EMA_KEYS if isinstance(current, Mapping) and _holds_weights(current, k)),
            None,
        )
        if ema is not None and (use_ema or key is None):
            key, took_ema = ema, True
        elif ema is not None:
            notes.append(_ema_left(repr(ema)))
        if key is None and isinstance(current, Mapping):  # kuangliu's pytorch-cifar: 'net'
            flat = [k for k, v in current.items() if isinstance(k, str) and _is_flat(v)]
            key = flat[0] if len(flat) == 1 else None
        if key is None:
            found = (
                f"a dict with keys {sorted(map(str, current))[:10]}"
                if isinstance(current, Mapping)
                else f"a {type(current).__name__}"
            )
            optimizer = isinstance(current, Mapping) and any("optimizer" in str(k) for k in current)
            raise ValueError(
                "expected a state dict (parameter name -> tensor), possibly under one of "
                f"{', '.join(NESTED_KEYS + EMA_KEYS)} or the one key that holds one; found "
                f"{found}"
                + (
                    ": an optimizer's state holds no model weights; pass the file saved with "
                    "the model's state_dict()"
                    if optimizer
                    else ""
                )
            )
        notes.append(f"weights were nested under {key!r}")
        current = current[key]
    else:
        raise ValueError(f"state dict nested too deeply under {', '.join(NESTED_KEYS)}")
    state = {k: _as_tensor(v) for k, v in current.items()}

    why = {"module.": "DataParallel/DDP", "_orig_mod.": "torch.compile"}
    # A wrapper inside a network's prefix (a Lightning module's model._orig_mod.conv1...)
    # comes off once that prefix has: repeat until nothing changes.
    for _ in range(4):
        changed = False
        if "n_averaged" in state and any(k.startswith("module.") for k in state):
            del state["n_averaged"]  # torch.optim.swa_utils.AveragedModel's count
            notes.append("an AveragedModel (EMA or SWA): dropped its n_averaged counter")
            why["module."] = "AveragedModel"
            took_ema = True
        stripped: dict[str, Tensor] = {}
        for key, value in state.items():
            while key.startswith(WRAPPER_PREFIXES):
                prefix, key = key.split(".", 1)
                note = f"stripped the '{prefix}.' prefix ({why.get(prefix + '.', 'a wrapper')})"
                if note not in notes:
                    notes.append(note)
                changed = True
            stripped[key] = value
        state = stripped
        if any("/" in k or k.startswith(_NET_ROOTS) for k in state) or detect_format(state) in (
            "huggingface",
            "keras",
        ):
            break  # a network in our names already, or another library's
        chosen = _choose_network(state, use_ema, notes)
        if chosen is not None:
            took_ema = took_ema or _is_ema(chosen)
            prefix = f"{chosen}."
            taken = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            left = [k for k in state if not k.startswith(prefix)]
            # A head beside the backbone (whose own fc is an nn.Identity): one linear layer
            heads = {k: m.group(2) for k in left if (m := _OWN_HEAD.match(k))}
            head = {k.rsplit(".", 1)[0] for k in heads}
            if len(head) == 1 and not any(k.startswith("fc.") for k in taken):
                taken |= {f"fc.{leaf}": state[k] for k, leaf in heads.items()}
                left = [k for k in left if k not in heads]
                notes.append(f"took {head.pop().split('.')[0]!r} as the classifier (fc)")
            if left:
                notes.append(
                    f"took the network under {prefix!r}; left {len(left)} other tensor(s) "
                    f"({first_few(left, 3)})"
                )
            else:
                notes.append(f"stripped the {prefix!r} prefix shared by every key")
            state = taken
            changed = True
        if not changed:
            break
    if use_ema and not took_ema:
        raise ValueError(
            "use_ema (--use-ema): the checkpoint holds no EMA weights (none under "
            f"{', '.join(EMA_KEYS)}, nor a module named like ema_model, nor an AveragedModel)"
        )

    if not any(k.startswith("fc.") for k in state) and not any(
        k.startswith("resnet.") for k in state
    ):
        renamed = {k: f"fc.{m.group(1)}" for k in state if (m := _HEAD_ALIAS.match(k))}
        modules = sorted({k.rsplit(".", 1)[0] for k in renamed})
        if len(modules) == 1:
            notes.append(f"renamed the classifier {modules[0]!r} to 'fc'")
            state = {renamed.get(k, k): v for k, v in state.items()}
        elif modules:  # classifier.0 and classifier.3: an MLP head, not one linear layer
            notes.append(
                f"the classifier has several layers ({', '.join(modules)}); a ResNet's head "
                "is one linear layer, so none of them became 'fc'"
            )
    shortcuts = {
        k: f"{m.group(1)}downsample.{m.group(2)}" for k in state if (m := _SHORTCUT_ALIAS.match(k))
    }
    if shortcuts:
        notes.append("renamed 'shortcut' modules to 'downsample'")
        state = {shortcuts.get(k, k): v for k, v in state.items()}
    return state, notes


#: Where training scripts keep an exponential moving average of the weights beside them:
#: timm's train.py ``state_dict_ema``, torchvision's references ``model_ema``, others ``ema``.
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")
_EMA_NAME = re.compile(r"(?:^|_)ema(?:$|_)", re.IGNORECASE)
#: How a network's keys start (in any of the formats read here, or inside a wrapper).
_NET_ROOTS = ("conv1.", "bn1.", "layer1.", "resnet.", "embedder.", "encoder.") + WRAPPER_PREFIXES


def _holds_weights(container: Mapping[str, Any], key: str) -> bool:
    value = container.get(key)
    return isinstance(value, Mapping) and bool(value)


def _ema_left(where: str) -> str:
    return (
        f"the checkpoint also holds EMA weights under {where}, not read (use_ema=True or "
        "--use-ema reads them)"
    )


def _is_ema(name: str) -> bool:
    return bool(_EMA_NAME.search(name))


def _choose_network(state: Mapping[str, Tensor], use_ema: bool, notes: list[str]) -> str | None:
    """The top-level module that holds the network, in a dict of several modules' tensors
    (a Lightning module's ``model.`` beside its loss's ``criterion.weight``); None if none.

    Raises:
        ValueError: several networks, e.g. a student and its teacher.
    """
    groups: dict[str, list[str]] = {}
    for key in state:
        head, _, rest = key.partition(".")
        groups.setdefault(head, []).append(rest)
    nets = [g for g, rests in groups.items() if any(r.startswith(_NET_ROOTS) for r in rests)]
    ema = [g for g in nets if _is_ema(g)]
    plain = [g for g in nets if g not in ema]
    chosen = ema if use_ema or not plain else plain
    if not use_ema and plain and ema:
        notes.append(_ema_left(f"'{ema[0]}.'"))
    if len(chosen) > 1:
        counts = ", ".join(f"'{g}.' ({len(groups[g])} tensors)" for g in chosen)
        raise ValueError(
            f"the checkpoint holds several networks: {counts}. Load one of them: "
            f"load_checkpoint(model, {{k.removeprefix('{chosen[0]}.'): v for k, v in "
            f"state.items() if k.startswith('{chosen[0]}.')}})"
        )
    return chosen[0] if chosen else None


def _is_flat(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor | np.ndarray) for k, v in obj.items())
    )


def _as_tensor(value: Tensor | np.ndarray) -> Tensor:
    if isinstance(value, np.ndarray):  # a copy of any layout; ascontiguousarray made 0-d 1-d
        return torch.from_numpy(np.array(value))
    return value


def _rename_modules(state: Mapping[str, Tensor], names: ModuleMap, fmt: str) -> Translation:
    out = Translation({}, fmt)
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        mine = names.ours(module)
        if mine is None:
            out.untranslated.append(key)
            out.state[key] = value
        else:
            out.state[f"{mine}.{leaf}"] = value
    return out


def ours_to_huggingface(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict in transformers' ResNet names (every key must have one)."""
    out: dict[str, Tensor] = {}
    unmapped = []
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        theirs = HF_MAP.theirs(module)
        if theirs is None:
            unmapped.append(key)
        else:
            out[f"{theirs}.{leaf}"] = value
    if unmapped:
        raise ValueError(f"no Hugging Face name for {unmapped[:5]}: this layout has no equivalent")
    return out


def _keras_split(key: str) -> tuple[str, str] | None:
    parts = key.removesuffix(":0").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def keras_to_ours(arrays: Mapping[str, Tensor]) -> Translation:
    """Keras ResNet weights (``layer_name/kernel:0`` etc.) as our state dict.

    Convolution kernels go HWIO -> OIHW and dense kernels (in, out) -> (out, in). Keras convs
    have biases where ours have none; a bias ``b`` before a BatchNorm only shifts its input, so
    it is folded into the BN: ``running_mean -= b``. Keras' BN epsilon (1.001e-5) becomes
    PyTorch's 1e-5 by adding the difference to ``running_var``. The stem's input channels are
    reversed (Keras ResNets take BGR, caffe-style) so the result takes RGB.
    """
    out = Translation({}, "keras")
    layers: dict[str, dict[str, Tensor]] = {}
    for key, value in arrays.items():
        split = _keras_split(key)
        if split is None:
            out.untranslated.append(key)
            out.state[key] = value
        else:
            found = layers.setdefault(split[0], {})
            if split[1] in found:  # e.g. an optimizer's slot named after the layer's weight
                raise ValueError(
                    f"two arrays for Keras layer {split[0]!r} weight {split[1]!r} (one is "
                    f"{key!r}): save the model's weights alone (model.save_weights), not the "
                    "optimizer's"
                )
            found[split[1]] = value
    used: set[tuple[str, str]] = set()
    for layer, weights in layers.items():
        module = KERAS_MAP.ours(layer)
        kernel = weights.get("kernel")
        if module is None:
            continue
        if kernel is not None and kernel.dim() == 4:
            out.state[f"{module}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
            used.add((layer, "kernel"))
            # The bias is folded into the BN of the same unit (handled with that BN).
        elif kernel is not None and kernel.dim() == 2:
            out.state[f"{module}.weight"] = kernel.t().contiguous()
            used.add((layer, "kernel"))
            if "bias" in weights:
                out.state[f"{module}.bias"] = weights["bias"]
                used.add((layer, "bias"))
        elif "moving_mean" in weights:
            conv_layer = layer.removesuffix("_bn") + "_conv"
            conv_bias = layers.get(conv_layer, {}).get("bias")
            mean = weights["moving_mean"]
            if conv_bias is not None:
                mean = mean - conv_bias
                used.add((conv_layer, "bias"))
            leaves = {"weight": "gamma", "bias": "beta", "running_var": "moving_variance"}
            for leaf, name in leaves.items():
                if name in weights:
                    out.state[f"{module}.{leaf}"] = weights[name]
                    used.add((layer, name))
            out.state[f"{module}.running_mean"] = mean
            used.add((layer, "moving_mean"))
            if f"{module}.running_var" in out.state:
                var = out.state[f"{module}.running_var"]
                out.state[f"{module}.running_var"] = var + (KERAS_BN_EPS - TORCH_BN_EPS)
    for layer, weights in layers.items():
        for name, value in weights.items():
            if (layer, name) not in used:
                out.untranslated.append(f"{layer}/{name}")
                out.state[f"{layer}/{name}"] = value
    stem = out.state.get("conv1.weight")
    if stem is not None and stem.shape[1] == 3:
        out.state["conv1.weight"] = stem.flip(1).contiguous()
        out.notes.append(
            "reversed conv1's input channels (Keras ResNets take BGR): the model takes RGB; "
            "feed it caffe-style inputs, 0-255 minus the ImageNet mean, no std "
            "(mean=[0.485, 0.458, 0.408], std=[1/255]*3 on the 0-1 scale)"
        )
    if any("preact_bn" in k or "post_bn" in k for k in out.untranslated):
        out.notes.append("Keras ResNetV2 (pre-activation) names are not supported")
    return out


def ours_to_keras(state: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Our state dict as Keras ResNet weights, the exact inverse of :func:`keras_to_ours`.

    Keys are ``layer_name/kernel:0`` as ``model.weights[i].name`` reads in tf.keras; conv
    biases are written as zeros since ours have none.
    """
    modules: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf != "num_batches_tracked":
            modules.setdefault(module, {})[leaf] = value.detach().cpu().float()
    out: dict[str, np.ndarray] = {}
    unmapped = []
    for module, leaves in modules.items():
        layer = KERAS_MAP.theirs(module)
        if layer is None:
            unmapped.append(module)
            continue
        weight = leaves["weight"]
        if "running_mean" in leaves:
            var = (leaves["running_var"] - (KERAS_BN_EPS - TORCH_BN_EPS)).clamp_min(0.0)
            arrays = {
                "gamma": weight,
                "beta": leaves["bias"],
                "moving_mean": leaves["running_mean"],
                "moving_variance": var,
            }
        elif weight.dim() == 4:
            if module == "conv1" and weight.shape[1] == 3:
                weight = weight.flip(1)  # RGB -> BGR, as Keras ResNets expect
            arrays = {"kernel": weight.permute(2, 3, 1, 0), "bias": weight.new_zeros(len(weight))}
        else:
            arrays = {"kernel": weight.t(), "bias": leaves["bias"]}
        for name, tensor in arrays.items():
            out[f"{layer}/{name}:0"] = tensor.contiguous().numpy()
    if unmapped:
        raise ValueError(f"no Keras layer name for {unmapped[:5]}: this layout has no equivalent")
    return out
