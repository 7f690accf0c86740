"""Residual blocks and shortcuts: the building bricks of every model in the zoo.

Parameter names follow torchvision (`conv1`, `bn1`, `downsample.0`, ...) so that its checkpoints
load without a key map.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnetkit.models.config import Unit

UNITS: tuple[str, ...] = get_args(Unit)


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """3x3 convolution, padded to keep the size at stride 1 (dilated too), without bias.

    A BatchNorm always follows or precedes it, so a bias would be redundant.
    """
    return nn.Conv2d(
        in_planes,
        out_planes,
        3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        groups=groups,
        bias=False,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a sample's whole residual branch in training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by the stride and zero-pad the new channels.

    The new channels are split equally before and after the old ones, as the widely used CIFAR
    reproductions do (the paper only says "extra zero entries padded"). Parameter-free.
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        if extra_channels < 0:
            raise ValueError("option A cannot reduce channels; use shortcut 'B' or 'C'")
        self.stride = stride
        self.pad_before = extra_channels // 2
        self.pad_after = extra_channels - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


def make_shortcut(
    option: str,
    in_planes: int,
    out_planes: int,
    stride: int,
    *,
    preact: bool,
    avg_down: bool,
    dilated: bool = False,
) -> nn.Module | None:
    """Build the shortcut of one block; None means identity (or no shortcut for option "none").

    Args:
        option: "A" (zero-pad), "B" (project only when the shape changes), "C" (project always)
            or "none" (plain network).
        in_planes: channels entering the block.
        out_planes: channels leaving the block.
        stride: spatial stride of the block.
        preact: pre-activation blocks project the already normalised input, so no BatchNorm.
        avg_down: ResNet-D: average-pool then a stride-1 projection, instead of a strided 1x1.
        dilated: the block's stage dilates instead of striding (``output_stride``): a ResNet-D
            shortcut then pools 2x2 at stride 1 with "same" padding, as timm's does.
    """
    changes_shape = stride != 1 or in_planes != out_planes
    if option == "none" or (option in ("A", "B") and not changes_shape):
        return None
    if option == "A":
        return PadShortcut(stride, out_planes - in_planes)
    layers: list[nn.Module] = []
    if avg_down:
        pool: nn.Module = nn.Identity()
        if stride > 1:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        elif dilated:  # timm's AvgPool2dSame(2, 1): zero-pad right and bottom, then average
            pool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, 1))
        layers += [pool, conv1x1(in_planes, out_planes)]
    else:
        layers.append(conv1x1(in_planes, out_planes, stride))
    if not preact:
        layers.append(nn.BatchNorm2d(out_planes))
    return nn.Sequential(*layers)


class Skip(nn.Module):
    """A shortcut that is not the identity (2016 paper, Fig. 2 and Table 1): joins a unit's
    residual branch ``F(x)`` and its input ``x`` in place of ``F(x) + x``.

    See :class:`~resnetkit.models.config.ResNetConfig` for the kinds. The gate is a 1x1
    convolution with a bias, ``g(x) = sigmoid(W_g x + b_g)``, one value per channel and pixel;
    the paper starts ``b_g`` negative (-6), so that ``1 - g`` is near 1 and the unit starts near
    the identity.
    """

    def __init__(
        self,
        kind: str,
        channels: int,
        *,
        skip_scale: float = 0.5,
        residual_scale: float = 1.0,
        gate_bias: float = -6.0,
        skip_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if kind not in ("scaling", "exclusive_gating", "shortcut_gating", "dropout"):
            raise ValueError(f"no Skip of kind {kind!r}")
        self.kind = kind
        self.skip_scale = skip_scale
        self.residual_scale = residual_scale
        self.gate_bias = gate_bias
        self.skip_dropout = skip_dropout
        self.gate: nn.Conv2d | None = None
        if kind.endswith("gating"):
            self.gate = nn.Conv2d(channels, channels, 1, bias=True)

    def reset_gate(self) -> None:
        """Start the gate's bias at ``gate_bias`` (the rest of the model is initialised by
        :class:`~resnetkit.models.resnet.ResNet`, which does not know about gates)."""
        if self.gate is not None:
            assert self.gate.bias is not None
            nn.init.constant_(self.gate.bias, self.gate_bias)

    def forward(self, branch: Tensor, x: Tensor) -> Tensor:
        if self.kind == "scaling":
            return self.residual_scale * branch + self.skip_scale * x
        if self.kind == "dropout":
            # Dropout as the paper has it: entries kept with probability 1 - p and not
            # rescaled, so that the shortcut is scaled by 1 - p on average in training, and
            # exactly at test ("a scale of lambda with an expectation of 0.5", Sec. 3.1).
            keep = 1.0 - self.skip_dropout
            if not self.training:
                return branch + keep * x
            return branch + x * torch.bernoulli(torch.full_like(x, keep))
        assert self.gate is not None
        gate = torch.sigmoid(self.gate(x))
        if self.kind == "exclusive_gating":
            branch = gate * branch
        return branch + (1.0 - gate) * x

    def extra_repr(self) -> str:
        values = {
            "scaling": f"skip_scale={self.skip_scale}, residual_scale={self.residual_scale}",
            "dropout": f"p={self.skip_dropout}",
        }.get(self.kind, f"gate_bias={self.gate_bias}")
        return f"{self.kind}, {values}"


def _check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(map(repr, UNITS))}, got {unit!r}")
    return unit


def _after_sum(unit: str, out: Tensor, bn: nn.Module, relu: nn.Module) -> Tensor:
    """The end of a post-activation unit (2016 paper, Fig. 4): (a) ReLU; (b) BN, then ReLU;
    (c) and (d) nothing, the sum goes on as it is."""
    if unit == "bn_after_add":
        out = bn(out)
    if unit in ("original", "bn_after_add"):
        out = relu(out)
    return out


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (paper Fig. 2 left / Fig. 5 left).

    ``unit`` moves BN and ReLU around the addition as in the 2016 paper's Fig. 4 a-d (see
    :class:`~resnetkit.models.config.ResNetConfig`); the layers and their names stay the same.
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        drop_path: float = 0.0,
        unit: str = "original",
        skip: Skip | None = None,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride, dilation=dilation[0])
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation[1])
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path)
        self.skip = skip  # None: the identity (or a projection, in a unit that changes shape)
        self.unit = _check_unit(unit)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        if self.unit == "relu_only_preact":  # (d): the ReLU moves in front of the conv
            x = F.relu(x)  # not in place: the identity keeps the raw sum

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        if self.unit != "bn_after_add":
            out = self.bn2(out)
        if self.unit == "relu_before_add":
            out = self.relu(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = self.drop_path(out)
            out = out + identity if self.skip is None else self.skip(out, identity)
        return _after_sum(self.unit, out, self.bn2, self.relu)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (paper Fig. 5 right); ``unit`` as in :class:`BasicBlock`.

    `stride_in_1x1=True` is the 2015 paper's placement (ResNet v1); the default puts the stride
    on the 3x3 as torchvision does (ResNet v1.5), which is slightly more accurate and costs
    about 0.3 GMACs more on ResNet-50.
    """

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        drop_path: float = 0.0,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        unit: str = "original",
        skip: Skip | None = None,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups, dilation[0])
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path)
        self.skip = skip  # None: the identity (or a projection, in a unit that changes shape)
        self.unit = _check_unit(unit)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        if self.unit == "relu_only_preact":  # (d): the ReLU moves in front of the conv
            x = F.relu(x)  # not in place: the identity keeps the raw sum

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        if self.unit != "bn_after_add":
            out = self.bn3(out)
        if self.unit == "relu_before_add":
            out = self.relu(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = self.drop_path(out)
            out = out + identity if self.skip is None else self.skip(out, identity)
        return _after_sum(self.unit, out, self.bn3, self.relu)


def _check_first(first: str) -> str:
    if first not in ("", "after_conv", "after_bn"):
        raise ValueError(f"first must be '', 'after_conv' or 'after_bn', got {first!r}")
    return first


class _PreActUnit(nn.Module):
    """What the two pre-activation units share."""

    bn1: nn.Module | None
    downsample: nn.Module | None
    first: str

    def _preactivate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The BN-ReLU'd input of a pre-activation unit's branch, and its shortcut's output.

        2016 paper, appendix (and fb.resnet.torch's preresnet.lua): a unit that changes shape
        pre-activates both paths (the projection sees BN-ReLU'd input); the first unit after a bare
        conv stem (``first="after_conv"``, CIFAR) does too, even with an identity shortcut; after a
        stem that ends in BN-ReLU (``first="after_bn"``, ImageNet) the first unit adds no BN-ReLU.
        Every other unit keeps the identity on the raw sum.
        """
        # relu must not be in-place here: `x` is still needed for the identity shortcut.
        pre = F.relu(self.bn1(x)) if self.bn1 is not None else x
        if self.downsample is not None:
            return pre, self.downsample(pre)
        return pre, pre if self.first == "after_conv" else x


class PreActBasicBlock(_PreActUnit):
    """BN-ReLU-conv twice; the sum is not activated (2016 paper, Fig. 1b)."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        drop_path: float = 0.0,
        first: str = "",
        skip: Skip | None = None,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.first = _check_first(first)
        # "after_bn": the stem already ends with BN-ReLU, so this unit adds none of its own.
        self.bn1 = nn.BatchNorm2d(in_planes) if first != "after_bn" else None
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_planes, planes, stride, dilation=dilation[0])
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation[1])
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path)
        self.skip = skip  # None: the identity (or a projection, in a unit that changes shape)

    def forward(self, x: Tensor) -> Tensor:
        pre, identity = self._preactivate(x)

        out = self.conv1(pre)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)

        if self.residual:
            out = self.drop_path(out)
            out = out + identity if self.skip is None else self.skip(out, identity)
        return out


class PreActBottleneck(_PreActUnit):
    """Pre-activation bottleneck (2016 paper): PreAct-ResNet-164/1001 and the ImageNet depths."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        drop_path: float = 0.0,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        first: str = "",
        skip: Skip | None = None,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.first = _check_first(first)
        self.bn1 = nn.BatchNorm2d(in_planes) if first != "after_bn" else None
        self.conv1 = conv1x1(in_planes, width, stride_1x1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups, dilation[0])
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path)
        self.skip = skip  # None: the identity (or a projection, in a unit that changes shape)

    def forward(self, x: Tensor) -> Tensor:
        pre, identity = self._preactivate(x)

        out = self.conv1(pre)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn3(out)
        out = self.relu(out)

        out = self.conv3(out)

        if self.residual:
            out = self.drop_path(out)
            out = out + identity if self.skip is None else self.skip(out, identity)
        return out


def block_class(block: str, preact: bool) -> type[nn.Module]:
    """The block class for a config's `block` and `preact` fields."""
    table: dict[tuple[str, bool], type[nn.Module]] = {
        ("basic", False): BasicBlock,
        ("bottleneck", False): Bottleneck,
        ("basic", True): PreActBasicBlock,
        ("bottleneck", True): PreActBottleneck,
    }
    return table[(block, preact)]
