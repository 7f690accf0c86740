"""The paper's Figure 7: standard deviations of layer responses on CIFAR-10.

He et al. 2015, Sec. 4.2: "The responses are the outputs of each 3x3 layer, after BN and before
other nonlinearity (ReLU/addition)." The paper reads two things in it: ResNets have generally
smaller responses than their plain counterparts, as the residual functions are closer to zero
than the non-residual ones (its motivation, Sec. 3.1); and the deeper the ResNet, the smaller
its responses, each layer modifying the signal less.

A layer's response std is measured per channel over every image and position of the split,
then averaged over the layer's channels (the paper does not say how it pools channels).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from resnetkit.evaluate.evaluator import collect_logits
from resnetkit.models.loading import load_model
from resnetkit.train.checkpoint import atomic_write_text


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BatchNorm after each 3x3 convolution, in forward order (the stem's first): in
    torchvision's naming each ``bnK`` follows the ``convK`` beside it.

    Raises:
        ValueError: a pre-activation model (its BatchNorms come before the convolutions, so
            it has no response after BN and before the addition to measure), or one whose
            units normalise after the addition.
    """
    config = getattr(model, "config", None)
    if getattr(config, "preact", False):
        raise ValueError(
            "a pre-activation ResNet normalises before each convolution: Fig. 7's responses "
            "(after BN, before the addition) exist only in the original ResNet and plain nets"
        )
    if getattr(config, "unit", "original") == "bn_after_add":
        raise ValueError(
            "unit 'bn_after_add' normalises after the addition: the last 3x3 of each unit has "
            "no response after BN and before the addition (Fig. 7) to measure"
        )
    modules = dict(model.named_modules())
    layers = []
    for name, module in model.named_modules():
        prefix, _, leaf = name.rpartition(".")
        if not isinstance(module, nn.BatchNorm2d) or not leaf.startswith("bn"):
            continue
        conv_name = f"conv{leaf[2:]}"
        conv = modules.get(f"{prefix}.{conv_name}" if prefix else conv_name)
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            layers.append((name, module))
    return layers


class _ChannelMoments:
    """Running per-channel sums of a layer's outputs and their squares (float64)."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.squares: Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        y = output.detach().double()
        total, squares = y.sum((0, 2, 3)).cpu(), (y * y).sum((0, 2, 3)).cpu()
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += y.shape[0] * y.shape[2] * y.shape[3]

    def std(self) -> float:
        """The channels' standard deviations, averaged over the channels."""
        assert self.total is not None and self.squares is not None and self.count
        mean = self.total / self.count
        variance = (self.squares / self.count - mean * mean).clamp_min(0.0)
        return float(variance.sqrt().mean())


def layer_response_stds(
    model: nn.Module,
    data_dir: str | Path,
    *,
    dataset: str = "cifar10",
    split: str = "test",
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, Any]:
    """The std of each 3x3 layer's response (see the module docstring) over a split, with the
    model's top-1 on it, inputs prepared as its preprocessing says (as ``evaluate`` does)."""
    layers = response_layers(model)
    if not layers:
        raise ValueError("the model has no 3x3 convolution followed by a BatchNorm to measure")
    moments = [_ChannelMoments() for _ in layers]
    handles = [bn.register_forward_hook(m) for (_, bn), m in zip(layers, moments, strict=True)]
    try:
        logits, labels, _ = collect_logits(
            model, dataset, data_dir, split=split, batch_size=batch_size, device=device
        )
    finally:
        for handle in handles:
            handle.remove()
    return {
        "layers": [name for name, _ in layers],
        "std": [m.std() for m in moments],
        "images": len(labels),
        "top1": 100.0 * float((logits.argmax(1) == labels).double().mean()),
    }


def _label(model: nn.Module, source: str, taken: set[str]) -> str:
    name = str(getattr(model, "name", "") or Path(source).name)
    return name if name not in taken else source


def measure_responses(
    sources: Sequence[str | Path],
    data_dir: str | Path,
    out: Path,
    *,
    dataset: str = "cifar10",
    split: str = "test",
    device: str = "cpu",
) -> dict[str, Any]:
    """Fig. 7 for trained models (model directories or packaged tags): writes
    ``out/responses.json`` (every layer's std, each model's top-1) and ``out/responses.png``."""
    models: dict[str, Any] = {}
    for source in sources:
        try:
            model = load_model(source)
            with torch.no_grad():
                measured = layer_response_stds(
                    model, data_dir, dataset=dataset, split=split, device=device
                )
        except (ValueError, FileNotFoundError) as err:  # which of several models it was
            raise type(err)(f"{source}: {err}") from None
        label = _label(model, str(source), set(models))
        models[label] = {"source": str(source), "arch": getattr(model, "name", None), **measured}
    summary = {
        "what": "std of each 3x3 layer's output after BN, before ReLU/addition (He et al. 2015, "
        "Fig. 7): per channel over every image and position, averaged over channels",
        "dataset": dataset,
        "split": split,
        "models": models,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "responses.json", json.dumps(summary, indent=2) + "\n")
    from resnetkit.reproduce.figures import plot_responses

    plot_responses(summary, out / "responses.png")
    return summary
