"""What a training step updates the weights with: parameter groups, the optimizer, the
mixed-precision context, and the weights' moving average (EMA)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from resnetkit.models.resnet import ResNet
from resnetkit.train.recipe import Recipe


def param_groups(model: ResNet, recipe: Recipe) -> list[dict[str, Any]]:
    """The head and the body (when the body learns slower), each split in two when
    BatchNorm weights and biases get no weight decay. Frozen parameters are left out."""
    if recipe.backbone_lr_mult == 1.0:  # one group, in parameter order
        groups: list[dict[str, Any]] = [
            {"params": [p for p in model.parameters() if p.requires_grad]}
        ]
    else:
        head = [p for p in model.fc.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": head, "lr": recipe.lr}]
        if body:
            groups.append({"params": body, "lr": recipe.lr * recipe.backbone_lr_mult})
    if recipe.decay_norm_and_bias:
        return groups
    split = []
    for group in groups:
        params = group["params"]
        for kept, decay in (([p for p in params if p.ndim > 1], recipe.weight_decay),
                            ([p for p in params if p.ndim <= 1], 0.0)):  # fmt: skip
            if kept:
                split.append({**group, "params": kept, "weight_decay": decay})
    return split


def build_optimizer(model: ResNet, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (the papers': momentum, optional Nesterov) or AdamW over :func:`param_groups`.

    With fp16 loss scaling the optimizer is torch's fused one: GradScaler hands it the
    overflow flag on the device, where a plain optimizer makes the scaler read the flag back
    (a wait for the GPU at every step)."""
    fused = True if recipe.precision == "fp16" else None
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(
            param_groups(model, recipe),
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            fused=fused,
        )
    return torch.optim.SGD(
        param_groups(model, recipe),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
        fused=fused,
    )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's mixed precision: none (fp32), bf16, or fp16 (GPUs only)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a GPU (it relies on loss scaling); use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


class WeightEMA(AveragedModel):
    """An exponential moving average of a model's weights and buffers: torch's
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)``,
    computing the same, whose update never waits for a GPU (torch's copies its step counter,
    a CPU tensor, to the device for every group of tensors: a blocking copy, twice a step, of
    a number the average never reads)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, use_buffers=True)
        self.decay = decay

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        mine = [t.detach() for t in (*self.module.parameters(), *self.module.buffers())]
        theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
        if self.n_averaged == 0:  # a CPU counter: no wait
            for ema, new in zip(mine, theirs, strict=True):
                ema.copy_(new)
        else:
            by_dtype: dict[torch.dtype, tuple[list[Tensor], list[Tensor]]] = {}
            for ema, new in zip(mine, theirs, strict=True):
                if ema.is_floating_point():
                    pair = by_dtype.setdefault(ema.dtype, ([], []))
                    pair[0].append(ema)
                    pair[1].append(new)
                else:  # as torch's EMA does integers (BatchNorm's step counts)
                    ema.copy_(ema * self.decay + new * (1 - self.decay))
            for emas, news in by_dtype.values():
                torch._foreach_lerp_(emas, news, 1 - self.decay)
        self.n_averaged += 1
