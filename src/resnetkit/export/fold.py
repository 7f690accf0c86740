"""Fold inference-mode BatchNorm into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma
+ beta``. When ``x`` is the output of a convolution, that map can be baked into the convolution's
weights and bias, which removes one memory-bound layer per convolution at deployment time.

Only *conv -> BN* pairs are folded. A pre-activation block starts with BN -> ReLU -> conv: its
first BN feeds a ReLU (and, in a projection block, the shortcut too), not a convolution's output,
so it stays a BatchNorm, as does the final BN of a pre-activation net. The inner pairs of such a
block (``conv1 -> bn2``, and ``conv2 -> bn3`` in the bottleneck) are ordinary conv -> BN pairs and
are folded. Where a post-activation unit moves its last BN after the addition (the 2016 paper's
Fig. 4b, ``unit="bn_after_add"``), that BN sees a sum, not a convolution, and stays too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from resnetkit.models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from resnetkit.models.resnet import ResNet

#: (conv, bn) attribute pairs of each block, where the conv's output goes straight into the BN.
BLOCK_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    PreActBasicBlock: (("conv1", "bn2"),),
    PreActBottleneck: (("conv1", "bn2"), ("conv2", "bn3")),
}


def conv_bn_pairs(block: nn.Module) -> tuple[tuple[str, str], ...]:
    """The (conv, bn) attribute pairs of ``block`` that can be folded."""
    pairs = BLOCK_PAIRS.get(type(block), ())
    if getattr(block, "unit", "original") == "bn_after_add":  # its last BN follows the sum
        pairs = pairs[:-1]
    return pairs


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    The arithmetic is done in float64 and rounded once, so the folded layer differs from the
    pair by a single float32 rounding.

    Args:
        conv: the convolution (with or without bias).
        bn: the BatchNorm that directly follows it, with running statistics.

    Raises:
        ValueError: the BN has no running statistics or does not match the conv's channels.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"cannot fold {bn}: it has no running statistics (track_running_stats=False), so "
            "its eval-mode output depends on the batch"
        )
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"cannot fold {bn} into {conv}: {bn.num_features} BN channels, "
            f"{conv.out_channels} conv output channels"
        )
    dtype = conv.weight.dtype
    weight = conv.weight.detach().double()
    bias = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(conv.out_channels, dtype=torch.float64, device=weight.device)
    )
    mean = bn.running_mean.double()
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma * inv_std

    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=dtype,
    )
    assert folded.bias is not None
    with torch.no_grad():
        folded.weight.copy_((weight * scale.view(-1, 1, 1, 1)).to(dtype))
        folded.bias.copy_(((bias - mean) * scale + beta).to(dtype))
    return folded.eval()


def _fold_sequential(seq: nn.Sequential) -> int:
    """Fold each Conv2d -> BatchNorm2d neighbour pair inside ``seq``; returns the count."""
    count = 0
    for i in range(len(seq) - 1):
        conv, bn = seq[i], seq[i + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            seq[i] = fold_conv_bn(conv, bn)
            seq[i + 1] = nn.Identity()
            count += 1
    return count


def _fold_attrs(module: nn.Module, conv_name: str, bn_name: str) -> int:
    conv, bn = getattr(module, conv_name), getattr(module, bn_name)
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
        return 0
    setattr(module, conv_name, fold_conv_bn(conv, bn))
    setattr(module, bn_name, nn.Identity())
    return 1


def _fold_stem(model: ResNet) -> int:
    count = 0
    if isinstance(model.conv1, nn.Sequential):  # deep stem: conv-bn-relu-conv-bn-relu-conv
        count += _fold_sequential(model.conv1)
        last = model.conv1[-1]
        if isinstance(last, nn.Conv2d) and isinstance(model.bn1, nn.BatchNorm2d):
            model.conv1[-1] = fold_conv_bn(last, model.bn1)
            model.bn1 = nn.Identity()
            count += 1
    else:
        count += _fold_attrs(model, "conv1", "bn1")
    return count


def fold_batchnorm(model: ResNet) -> nn.Module:
    """An inference copy of ``model`` with every conv -> BN pair folded into the conv.

    Folded: the stem (``conv1``/``bn1``, and each conv/BN of a deep stem), the conv/BN pairs of
    every block, and the projection shortcuts (``downsample``: conv then BN, also after the
    average pool of ResNet-D). Each folded BN is replaced by ``nn.Identity`` so the module tree
    and the forward pass stay those of :class:`ResNet`; each folded conv gains a bias.

    Not folded: BNs that precede a convolution, i.e. the first BN of every pre-activation block
    and the final BN of a pre-activation net, and BNs after the addition (``bn_after_add``).
    They stay BatchNorm2d (in eval mode), so the outputs do not change.

    Args:
        model: the model; it is not modified.

    Returns:
        A deep copy in eval mode, with ``requires_grad`` off, equal to ``model.eval()`` up to
        float32 rounding (typically within 1e-5).
    """
    if not isinstance(model, ResNet):
        raise TypeError(f"fold_batchnorm expects a resnetkit ResNet, got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()
    _fold_stem(folded)
    for stage in folded.stages:
        for block in stage:
            for conv_name, bn_name in conv_bn_pairs(block):
                _fold_attrs(block, conv_name, bn_name)
            downsample = getattr(block, "downsample", None)
            if isinstance(downsample, nn.Sequential):
                _fold_sequential(downsample)
    folded.requires_grad_(False)
    return folded


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm2d layers a model still has (after folding: the unfoldable ones)."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
