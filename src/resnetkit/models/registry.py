"""One registry of architectures and the front door: ``create_model`` and ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import functools
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any, get_args, get_origin, get_type_hints

from torch import nn

from resnetkit.models.config import ResNetConfig
from resnetkit.models.resnet import ResNet
from resnetkit.models.zoo import ModelEntry, model_entries

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


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style pattern, e.g. ``"resnet*"``."""
    return get_registry().names(pattern)


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
    if key not in TEXT_OPTIONS:
        raise ValueError(
            f"unknown model option {key!r}.{_suggest(key, TEXT_OPTIONS)} "
            f"Valid options: {', '.join(TEXT_OPTIONS)}"
        )
    kind, value = TEXT_OPTIONS[key], value.strip()
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return key, value.lower() in ("true", "1", "yes")
        if kind in (int, float):
            return key, kind(value)
        if get_origin(kind) is tuple:
            return key, tuple(int(v) for v in value.split(","))
    except ValueError as err:
        raise ValueError(f"model option {key}={value!r}: {err}") from None
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
        return hub.get_hub_weights(name)
    if not tag and not any(t.split(".")[0] == arch for t in list_pretrained()):
        default = hub.default_tag(arch)
        if default is not None:
            return hub.get_hub_weights(default)
    return get_pretrained(name if tag else arch)


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
    try:
        return _find_weights(name, arch, tag)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None


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
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered architecture (``resnet50``) or a pretrained tag: packaged with
            resnetkit (``resnet20.cifar10``, ``resnet20.paper_cifar10``) or torchvision's
            ImageNet weights (``resnet50.tv_in1k``, ``resnet50.tv2_in1k``).
        pretrained: load the tag's weights with their preprocessing: packaged ones offline,
            torchvision's from the cache or downloaded once (sha256 checked); for a bare
            architecture, its default packaged weights (``resnet20``: ``resnet20.cifar10``)
            or else torchvision's best.
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
        TypeError: an option is unknown (the message lists the valid ones).
    """
    arch, _, tag = name.partition(".")
    _check_options(name, config_changes)
    config = get_model_config(arch)
    if pretrained or tag:
        weights = _find_weights(name, arch, tag)
        config = config.with_options(num_classes=weights.num_classes)
    if pretrained:
        changed = sorted(k for k, v in config_changes.items() if getattr(config, k) != v)
        if changed:  # v1.5 weights in a v1 net load without a shape error, and are wrong
            raise ValueError(
                f"pretrained weights fix the architecture; {', '.join(changed)} would change it. "
                "Load them as they are, then model.reset_classifier(N) for a new head (or "
                "`resnetkit convert --adapt-head/--adapt-in-chans`)"
            )
    config = config.with_options(**config_changes)
    model = ResNet(
        config,
        zero_init_residual=zero_init_residual,
        drop_path_rate=drop_path_rate,
        grad_checkpointing=grad_checkpointing,
        features_only=features_only,
        out_indices=out_indices,
        name=arch,
    )
    if pretrained:
        weights.load_into(model)
    return model
