"""One registry of architectures and the front door: ``create_model`` and ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import functools
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

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


def _check_options(name: str, options: dict[str, Any]) -> None:
    valid = MODEL_OPTIONS + CONFIG_OPTIONS
    unknown = [k for k in options if k not in valid]
    if unknown:
        hints = "".join(_suggest(k, valid) for k in unknown)
        raise TypeError(
            f"create_model({name!r}) got unknown option(s) {unknown}.{hints} "
            f"Valid options: {', '.join(valid)}"
        )


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
        name: a registered architecture (``resnet50``) or a pretrained tag (``resnet20.cifar10``).
        pretrained: load the packaged weights of a tag (offline), with their preprocessing.
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
        from resnetkit.models.pretrained import get_pretrained  # weights index read lazily

        weights = get_pretrained(name if tag else arch)
        config = config.with_options(num_classes=weights.num_classes)
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
