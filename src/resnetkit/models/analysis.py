"""Measure a model: parameters, multiply-adds, stage shapes and activation memory.

Everything runs on the ``meta`` device, so even ResNet-1202 is measured instantly and without
allocating memory. Multiply-adds come from ``torch.utils.flop_counter`` (FLOPs / 2), which counts
convolutions and matrix products, the convention of the paper and of torchvision's tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnetkit.models.registry import create_model, get_model_config
from resnetkit.models.resnet import ResNet


@dataclass(frozen=True)
class ModelStats:
    """What ``resnetkit info`` reports about one model at one input size."""

    name: str
    params: int
    macs: int
    input_size: int
    stage_shapes: dict[str, list[int]]
    output_shape: list[int]
    activation_bytes: int  # fp32 outputs of every layer for one image (what training stores)
    depth: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on an input of ``input_shape`` (batch included)."""
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape, device=device))
    return counter.get_total_flops() // 2


def _activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(_module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        nonlocal total
        # An in-place ReLU, or DropPath in eval, hands back its input: memory counted already.
        if isinstance(output, torch.Tensor) and not any(output is x for x in inputs):
            total += output.numel() * 4

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def _meta_model(name: str, **options: Any) -> ResNet:
    with torch.device("meta"):
        model = create_model(name, **options)
    assert isinstance(model, ResNet)
    return model.eval()


def params_and_macs(name: str, input_size: int | None = None) -> tuple[int, int, int]:
    """(parameters, multiply-adds, input size) of a registered model; one meta forward pass."""
    config = get_model_config(name)
    size = input_size or config.default_input_size
    model = _meta_model(name)
    return count_params(model), count_macs(model, (1, config.in_chans, size, size)), size


def model_stats(name: str, input_size: int | None = None, **options: Any) -> ModelStats:
    """Measure a registered model at ``input_size`` (default: its native size), built with
    ``options`` (``create_model`` keywords such as ``shortcut="A"``)."""
    return stats_of(_meta_model(name, **options), name, input_size)


def stats_of(model: ResNet, name: str, input_size: int | None = None) -> ModelStats:
    """:func:`model_stats` of a built model (on any device; it runs one forward pass of a
    zero image in eval mode and no gradient, on the meta device when it is there)."""
    config = model.config
    size = input_size or config.default_input_size
    device = next(model.parameters()).device
    x = torch.zeros(1, config.in_chans, size, size, device=device)
    with torch.no_grad():
        features = model.forward_intermediates(x)
        output = model(x)
    if isinstance(output, list):  # features_only: the feature maps of forward_intermediates
        output = output[-1]
    stage_shapes = {
        info["module"]: list(f.shape) for info, f in zip(model.feature_info, features, strict=True)
    }
    return ModelStats(
        name=name,
        params=count_params(model),
        macs=count_macs(model, tuple(x.shape)),
        input_size=size,
        stage_shapes=stage_shapes,
        output_shape=list(output.shape),
        activation_bytes=_activation_bytes(model, x),
        depth=config.depth,
    )
