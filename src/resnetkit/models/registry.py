"""One registry of architectures and the front door: ``create_model`` and ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any, get_args, get_origin, get_type_hints

import torch

from resnetkit.models.config import ResNetConfig
from resnetkit.models.resnet import ResNet
from resnetkit.models.zoo import ModelEntry, model_entries
from resnetkit.text import what_it_takes

MODEL_OPTIONS = (
    "pretrained",
    "zero_init_residual",
    "drop_path_rate",
    "grad_checkpointing",
    "features_only",
    "out_indices",
)
CONFIG_OPTIONS = tuple(f.name for f in fields(ResNetConfig))


class UnknownModelError(KeyError):
    """A model name that is not registered; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownWeightsError(UnknownModelError, ValueError):
    """A pretrained tag no weights go by; the message lists close matches and where to look."""


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class Registry:
    """Name -> architecture. Registering a name twice is an error."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}

    def register(self, entry: ModelEntry) -> None:
        if entry.name in self._entries:
            raise ValueError(f"model {entry.name!r} is already registered")
        self._entries[entry.name] = entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown model {name!r}.{_suggest(name, self._entries)} "
                f"Valid models: {', '.join(self._entries)}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return [n for n in self._entries if fnmatch.fnmatchcase(n, pattern)]


@functools.cache
def get_registry() -> Registry:
    """The registry of every built-in model, built on first use (not at import)."""
    registry = Registry()
    for entry in model_entries():
        registry.register(entry)
    return registry


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Names of the registered models matching a shell-style pattern, e.g. ``"resnet*"``;
    with ``pretrained=True`` the weights' tags instead (``resnet20.cifar10``,
    ``resnet50.tv2_in1k``: packaged ones and torchvision's), each a name for
    :func:`create_model`."""
    if not pretrained:
        return get_registry().names(pattern)
    from resnetkit.models import hub
    from resnetkit.models.pretrained import list_pretrained

    tags = list_pretrained() + hub.list_hub()
    return [t for t in tags if fnmatch.fnmatchcase(t, pattern)]


def get_model_config(name: str) -> ResNetConfig:
    """The architecture config of a registered model."""
    return get_registry().get(name).config


#: Options a training run can set from text (``--model-option KEY=VALUE``), with their types.
TEXT_OPTIONS: dict[str, Any] = {
    "zero_init_residual": bool,
    "drop_path_rate": float,
    "grad_checkpointing": bool,
    # the data decides the number of classes and the input size
    **{k: v for k, v in get_type_hints(ResNetConfig).items() if k not in ("num_classes",)},
}


def parse_model_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(key, typed value)`` for :func:`create_model`, e.g. ``unit=bn_after_add``,
    ``shortcut=B``, ``zero_init_residual=true``, ``drop_path_rate=0.1``, ``widths=16,32,64``.

    Raises:
        ValueError: no ``=``, an unknown key (with close matches), or a value of the wrong type.
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ValueError(f"model option {text!r} must be KEY=VALUE, e.g. unit=bn_after_add")
    if key == "num_classes":
        raise ValueError(
            "num_classes is not a model option: a run has as many classes as its data (the "
            "class folders, a label file's labels, CIFAR's 10 or 100)"
        )
    if key not in TEXT_OPTIONS:
        raise ValueError(
            f"unknown model option {key!r}.{_suggest(key, TEXT_OPTIONS)} "
            f"Valid options: {', '.join(TEXT_OPTIONS)}"
        )
    kind, value = TEXT_OPTIONS[key], value.strip()
    expected = what_it_takes(kind)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return key, value.lower() in ("true", "1", "yes")
        if kind in (int, float):
            return key, kind(value)
        if get_origin(kind) is tuple:
            return key, tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"model option {key}={value!r}: expected {expected}") from None
    allowed = get_args(kind)
    if allowed and value not in allowed:
        raise ValueError(
            f"model option {key}={value!r}: expected one of {', '.join(map(str, allowed))}"
        )
    return key, value


def _check_options(name: str, options: dict[str, Any]) -> None:
    valid = MODEL_OPTIONS + CONFIG_OPTIONS
    unknown = [k for k in options if k not in valid]
    if unknown:
        hints = "".join(_suggest(k, valid) for k in unknown)
        raise TypeError(
            f"create_model({name!r}) got unknown option(s) {unknown}.{hints} "
            f"Valid options: {', '.join(valid)}"
        )


def _find_weights(name: str, arch: str, tag: str) -> Any:
    """Packaged weights (offline) for their tags and architectures, else torchvision's
    published ImageNet weights (``resnet50.tv2_in1k``; ``resnet50`` alone: the best of them)."""
    from resnetkit.models import hub  # weights tables read lazily
    from resnetkit.models.pretrained import get_pretrained, list_pretrained

    if hub.is_hub_tag(name):
        try:
            return hub.get_hub_weights(name)
        except KeyError as err:  # a tag torchvision has for other depths only
            raise UnknownWeightsError(str(err.args[0])) from None
    if not tag and not any(t.split(".")[0] == arch for t in list_pretrained()):
        default = hub.default_tag(arch)
        if default is not None:
            return hub.get_hub_weights(default)
    try:
        return get_pretrained(name if tag else arch)
    except KeyError as err:
        known = [t for t in list_pretrained() + hub.list_hub() if t.split(".")[0] == arch]
        close = _suggest(name, known)  # (the message lists every packaged tag already)
        raise UnknownWeightsError(f"{err.args[0]}{close}") from None


def find_weights(name: str) -> Any:
    """What a pretrained name stands for, without loading or downloading anything: the
    :class:`~resnetkit.models.pretrained.PretrainedWeights` packaged with resnetkit or the
    :class:`~resnetkit.models.hub.HubWeights` of torchvision's ImageNet weights; a bare
    architecture gives its default weights.

    Raises:
        UnknownModelError: the architecture is not registered.
        ValueError: no weights go by that name (the message lists those that do).
    """
    arch, _, tag = name.partition(".")
    get_model_config(arch)
    return _find_weights(name, arch, tag)


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    zero_init_residual: bool = False,
    drop_path_rate: float = 0.0,
    grad_checkpointing: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **config_changes: Any,
) -> ResNet:
    """Build a registered model.

    Args:
        name: a registered architecture (``resnet50``) or a pretrained tag: packaged with
            resnetkit (``resnet20.cifar10``, ``resnet20.paper_cifar10``) or torchvision's
            ImageNet weights (``resnet50.tv_in1k``, ``resnet50.tv2_in1k``); or a Hugging Face
            Hub repository, ``hf-hub:timm/resnet50.a1_in1k`` or ``hf-hub:microsoft/resnet-50``
            (see :mod:`resnetkit.models.hf_hub`).
        pretrained: load the tag's weights with their preprocessing: packaged ones offline,
            torchvision's from the cache or downloaded once (sha256 checked); for a bare
            architecture, its default packaged weights (``resnet20``: ``resnet20.cifar10``)
            or else torchvision's best. With another ``num_classes`` (0: no head) the body
            keeps the weights and the head starts fresh; with another ``in_chans`` the first
            conv's RGB filters are summed (1) or repeated and scaled (N), as timm does.
        zero_init_residual: start each residual branch at zero.
        drop_path_rate: stochastic depth rate of the last block.
        grad_checkpointing: trade compute for memory (the 1001/1202-layer nets).
        features_only: ``forward`` returns per-stage feature maps.
        out_indices: which stages ``features_only`` returns.
        **config_changes: fields of :class:`ResNetConfig`, e.g. ``num_classes=10``,
            ``in_chans=1``, ``shortcut="B"`` or ``stride_in_1x1=True`` (ResNet v1).

    Returns:
        A :class:`ResNet` in training mode.

    Raises:
        UnknownModelError: the name is not registered (the message lists close matches).
        UnknownWeightsError: no weights go by the tag (a ``KeyError`` and a ``ValueError``;
            the message lists close matches).
        TypeError: ``name`` is not a string (a path: use ``load_model``), an option is
            unknown (the message lists the valid ones), or ``pretrained`` is not a bool.
        ValueError: ``pretrained`` with an option that changes what the weights compute.
    """
    from resnetkit.models import hf_hub

    if not isinstance(name, str):
        hint = (
            ": for a model directory or a weights file, use resnetkit.load_model(PATH)"
            if isinstance(name, os.PathLike)
            else ""
        )
        raise TypeError(f"create_model takes a model name (str), got {name!r}{hint}")
    _check_options(name, config_changes)
    if isinstance(pretrained, str):  # a tag passed here would load another one silently
        raise TypeError(
            f"pretrained must be True or False, got {pretrained!r}; name the weights in the "
            f"model name instead, e.g. create_model('{name.partition('.')[0]}.TAG', "
            "pretrained=True)"
        )
    weights: Any = None
    if hf_hub.is_hf_hub_name(name):  # the repository's config says what to build
        weights = hf_hub.get_hf_hub_weights(name)
        arch = weights.arch
        config = get_model_config(arch).with_options(**weights.config_changes)
    else:
        arch, _, tag = name.partition(".")
        config = get_model_config(arch)
        if pretrained or tag:
            weights = _find_weights(name, arch, tag)
    return _assemble(
        arch,
        config,
        weights,
        pretrained,
        config_changes,
        zero_init_residual=zero_init_residual,
        drop_path_rate=drop_path_rate,
        grad_checkpointing=grad_checkpointing,
        features_only=features_only,
        out_indices=out_indices,
    )


def model_from_weights(weights: Any) -> ResNet:
    """The model that weights describe (packaged, torchvision's, a Hub repository or a folder
    in a Hub layout: see :func:`~resnetkit.models.hf_hub.get_folder_weights`), loaded."""
    config = get_model_config(weights.arch).with_options(**getattr(weights, "config_changes", {}))
    return _assemble(weights.arch, config, weights, True, {})


def _assemble(
    arch: str,
    config: ResNetConfig,
    weights: Any,
    pretrained: bool,
    config_changes: dict[str, Any],
    *,
    zero_init_residual: bool = False,
    drop_path_rate: float = 0.0,
    grad_checkpointing: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
) -> ResNet:
    """Build ``arch`` from ``config`` with the caller's changes; with ``pretrained``, load
    ``weights`` (adapting the head and input width as timm does)."""
    adapt: dict[str, int] = {}
    if weights is not None:
        config = config.with_options(num_classes=weights.num_classes)
    if pretrained:
        wanted_chans = config_changes.get("in_chans", config.in_chans)
        if config.in_chans != 3 and wanted_chans != config.in_chans:
            raise ValueError(
                f"the {arch} weights take {config.in_chans}-channel inputs; only RGB weights "
                f"adapt to another in_chans ({wanted_chans} asked): leave in_chans out"
            )
        # as timm: another head or input width adapts the weights (a new head, the first
        # conv's RGB filters summed or repeated); anything else would change what they compute
        adapt = {
            k: config_changes.pop(k)
            for k in ("num_classes", "in_chans")
            if k in config_changes and config_changes[k] != getattr(config, k)
        }
        wanted = config.with_options(**config_changes)  # lists become tuples there
        changed = sorted(
            k
            for k in config_changes
            # a dilated backbone runs the same weights (as timm's output_stride)
            if getattr(wanted, k) != getattr(config, k) and k != "output_stride"
        )
        if changed:  # v1.5 weights in a v1 net load without a shape error, and are wrong
            raise ValueError(
                f"pretrained weights fix the architecture; {', '.join(changed)} would change it. "
                "Only num_classes (a new head) and in_chans (an adapted first conv) can differ"
            )

    def effective(stride: int) -> int:  # at or above the net's own stride nothing dilates
        return min(stride, config.natural_stride)

    asked = config_changes.get("output_stride", config.output_stride)
    dilated = effective(asked) != effective(config.output_stride)
    config = config.with_options(**config_changes)
    model = ResNet(
        config.with_options(**adapt),
        zero_init_residual=zero_init_residual,
        drop_path_rate=drop_path_rate,
        grad_checkpointing=grad_checkpointing,
        features_only=features_only,
        out_indices=out_indices,
        name=arch,
    )
    if pretrained:
        if adapt:
            source = ResNet(config, name=arch)
            weights.load_into(source)
            _load_adapted(model, source, adapt)
        else:
            weights.load_into(model)
        if dilated:  # the same weights computing another function: not what was measured
            cfg = dict(getattr(model, "pretrained_cfg", None) or {})
            cfg.pop("metrics", None)
            cfg["adapted"] = [*cfg.get("adapted", []), f"output_stride={config.output_stride}"]
            model.pretrained_cfg = cfg  # type: ignore[assignment]
    return model


def _load_adapted(model: ResNet, source: ResNet, adapt: dict[str, int]) -> None:
    """Load ``source``'s weights into ``model``, which differs in ``adapt`` (its number of
    classes: the new head keeps its initialisation; of input channels: the first conv's RGB
    filters summed or repeated, as timm's ``adapt_input_conv``)."""
    from resnetkit.interop.convert import adapt_input_conv

    state = source.state_dict()
    if "in_chans" in adapt:
        conv = source.conv1_weight()
        key = next(k for k, v in source.named_parameters() if v is conv)
        state[key] = adapt_input_conv(adapt["in_chans"], conv.detach())
    if "num_classes" in adapt:
        own = model.state_dict()
        for key in [k for k in state if k.startswith("fc.")]:
            del state[key]
        state.update({k: v for k, v in own.items() if k.startswith("fc.")})
    model.load_state_dict(state, strict=True)
    cfg = dict(getattr(source, "pretrained_cfg", None) or {})
    if "num_classes" in adapt:
        cfg["classes"] = []  # the weights' class names went with their head
    pixel_mean = cfg.get("pixel_mean")
    if "in_chans" in adapt and pixel_mean is not None:  # one mean image per input channel
        rgb = torch.tensor(pixel_mean, dtype=torch.float64).view(3, -1)
        grey = rgb.mean(0, keepdim=True).expand(adapt["in_chans"], -1)
        cfg["pixel_mean"] = [float(v) for v in grey.flatten()]
    # what was measured was measured on the weights as they were
    cfg.pop("metrics", None)
    cfg["adapted"] = [f"{k}={v}" for k, v in sorted(adapt.items())]
    model.pretrained_cfg = cfg  # type: ignore[assignment]
