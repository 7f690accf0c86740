"""The architecture of a residual network, described as data."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real
from typing import Literal, get_args

BlockType = Literal["basic", "bottleneck"]
StemType = Literal["imagenet", "cifar", "deep"]
Shortcut = Literal["A", "B", "C", "none"]
# Where BN and ReLU sit around the addition in a post-activation unit (2016 paper, Fig. 4).
Unit = Literal["original", "bn_after_add", "relu_before_add", "relu_only_preact"]
# What an identity shortcut does to its input (2016 paper, Fig. 2 and Table 1).
Skip = Literal["identity", "scaling", "exclusive_gating", "shortcut_gating", "dropout"]
# The numeric field each skip reads; set for another skip they would be silently ignored.
SKIP_FIELDS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "scaling": ("skip_scale", "residual_scale"),
    "exclusive_gating": ("gate_bias",),
    "shortcut_gating": ("gate_bias",),
    "dropout": ("skip_dropout",),
}
# Fields that change what a network computes but not its weights' names or shapes (gates add
# weights, but a gated net's weights alone do not say where they go): a weights file cannot
# tell them, so a model directory's config.json must.
FUNCTION_FIELDS = (
    "stride_in_1x1",
    "unit",
    "skip",
    "skip_scale",
    "residual_scale",
    "gate_bias",
    "skip_dropout",
)
SKIP_FIGURES = {
    "scaling": "2b",
    "exclusive_gating": "2c",
    "shortcut_gating": "2d",
    "dropout": "2f",
}


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that decides the shape of a ResNet; named variants are rows of this.

    References: He et al., "Deep Residual Learning for Image Recognition" (2015) for the
    blocks, shortcut options A/B/C and CIFAR nets; He et al., "Identity Mappings in Deep Residual
    Networks" (2016) for pre-activation and the unit ablations of its Fig. 4; Xie et al.
    (ResNeXt) and Zagoruyko & Komodakis (WRN) for `groups` / `width_per_group`; He et al.,
    "Bag of Tricks" (2018) for the deep stem and average-pool shortcut (ResNet-D).
    """

    block: BlockType  # "basic" (two 3x3) or "bottleneck" (1x1-3x3-1x1, expansion 4)
    layers: tuple[int, ...]  # number of blocks in each stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # base width of each stage
    stem: StemType = "imagenet"  # 7x7/2 conv + maxpool, 3x3/1 conv (CIFAR), or 3 3x3 convs
    stem_width: int = 64  # output channels of the stem
    shortcut: Shortcut = "B"  # paper Table 3: A pad, B project on change, C project always
    stride_in_1x1: bool = False  # v1 (2015 paper) strides the first 1x1; v1.5 strides the 3x3
    preact: bool = False  # BN-ReLU before each conv (2016 paper, Fig. 4e: full pre-activation)
    # 2016 paper Fig. 4 a-d, for post-activation units: (a) original, (b) BN after the addition,
    # (c) ReLU before the addition, (d) ReLU-only pre-activation (ReLU before each conv, BN
    # after it); all four have the same parameters, (e) is preact=True.
    unit: Unit = "original"
    # 2016 paper Fig. 2 / Table 1, on every identity shortcut (a unit that changes shape keeps
    # its own shortcut): "scaling" sums skip_scale * x + residual_scale * F(x); the gates
    # g(x) = sigmoid(1x1 conv(x)) start with bias gate_bias, "exclusive_gating" sums
    # (1 - g) * x + g * F(x) and "shortcut_gating" (1 - g) * x + F(x); "dropout" drops shortcut
    # entries with probability skip_dropout in training, unscaled, and scales the shortcut by
    # 1 - skip_dropout at test (the paper's expected scale). Fig. 2e (1x1 conv) is shortcut="C".
    skip: Skip = "identity"
    skip_scale: float = 0.5
    residual_scale: float = 1.0
    gate_bias: float = -6.0
    skip_dropout: float = 0.5
    groups: int = 1  # grouped 3x3 convolution (ResNeXt cardinality)
    width_per_group: int = 64  # bottleneck width per group; 128 doubles it (Wide ResNet-50-2)
    avg_down: bool = False  # projection shortcut as avgpool + stride-1 1x1 conv (ResNet-D)
    # The largest input-to-feature-map stride: stages that would go further dilate their 3x3
    # convolutions instead of striding (8 or 16 for segmentation backbones, DeepLab-style;
    # torchvision's replace_stride_with_dilation, timm's output_stride); at or above the
    # network's own stride (32 for ImageNet nets, 4 for CIFAR's) it changes nothing.
    output_stride: int = 32
    num_classes: int = 1000
    in_chans: int = 3
    default_input_size: int = 224

    def __post_init__(self) -> None:
        for name in ("layers", "widths"):  # a list or array given would make the config
            value = getattr(self, name)  # unhashable and unequal to the same built-in one
            if not isinstance(value, str | bytes) and hasattr(value, "__iter__"):
                object.__setattr__(self, name, tuple(value))
        for name, kind in (
            ("block", BlockType),
            ("stem", StemType),
            ("shortcut", Shortcut),
            ("unit", Unit),
            ("skip", Skip),
        ):
            allowed = get_args(kind)
            if getattr(self, name) not in allowed:  # "b" would silently build option C
                raise ValueError(
                    f"{name} must be one of {', '.join(map(repr, allowed))}; got "
                    f"{getattr(self, name)!r}"
                )
        if len(self.layers) != len(self.widths):
            raise ValueError(
                f"layers {self.layers} and widths {self.widths} must have the same length"
            )
        counts = ("num_classes", "in_chans", "stem_width", "groups", "width_per_group")
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        for name in ("layers", "widths"):
            values = getattr(self, name)
            whole = all(isinstance(v, Integral) and not isinstance(v, bool) for v in values)
            if not whole or min(values, default=0) <= 0:
                raise ValueError(f"{name} must be positive whole numbers, got {values!r}")
            object.__setattr__(self, name, tuple(int(v) for v in values))  # JSON takes these
        if self.num_classes < 0 or self.in_chans < 1:
            raise ValueError(
                f"num_classes must be >= 0 (0: no classifier) and in_chans >= 1; got "
                f"{self.num_classes} and {self.in_chans}"
            )
        for name in ("stride_in_1x1", "preact", "avg_down"):  # "false" is a true string
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        stride = self.output_stride
        if not isinstance(stride, Integral) or isinstance(stride, bool) or stride < 1:
            raise ValueError(f"output_stride must be a positive whole number, got {stride!r}")
        if stride & (stride - 1) or stride < self.stem_stride:
            raise ValueError(
                f"output_stride must be a power of two from the stem's stride "
                f"({self.stem_stride}) up: 8, 16 or 32 for ImageNet nets; got {stride}"
            )
        size = self.default_input_size
        if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"default_input_size must be a positive whole number, got {size!r}")
        # A convolution with no output channel builds and fails at the first forward pass.
        least_stem = 2 if self.stem == "deep" else 1  # the deep stem's first convs: half
        if self.stem_width < least_stem or self.groups < 1 or self.width_per_group < 1:
            raise ValueError(
                f"stem_width must be >= {least_stem}, groups and width_per_group >= 1; got "
                f"{self.stem_width}, {self.groups} and {self.width_per_group}"
            )
        if self.block == "bottleneck" and min(self.widths) * self.width_per_group < 64:
            raise ValueError(
                f"width_per_group {self.width_per_group} leaves the narrowest bottleneck "
                f"(width {min(self.widths)}) without a channel: at least "
                f"{-(-64 // min(self.widths))}"
            )
        if self.avg_down and self.shortcut in ("A", "none"):  # it would build and do nothing
            raise ValueError(
                f"avg_down makes the projection shortcuts average-pool first (ResNet-D); "
                f"shortcut {self.shortcut!r} has no projections"
            )
        if self.preact and self.unit != "original":
            raise ValueError(
                f"unit {self.unit!r} is a variant of the post-activation unit (2016 paper, Fig. "
                "4b-d); preact=True is the full pre-activation unit (Fig. 4e). Use one or the "
                "other"
            )
        self._check_skip()
        if self.block == "basic" and self.stride_in_1x1:  # it would be accepted and do nothing
            raise ValueError(
                "stride_in_1x1 moves a bottleneck's stride to its first 1x1 conv (ResNet v1); "
                "basic blocks have no 1x1: ResNet-18/34 are the same in v1 and v1.5"
            )
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError("basic blocks support only groups=1 and width_per_group=64")

    def _check_skip(self) -> None:
        defaults = {f: getattr(ResNetConfig, f) for fields in SKIP_FIELDS.values() for f in fields}
        for name in defaults:
            value = getattr(self, name)
            if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.skip_dropout < 1.0:
            raise ValueError(f"skip_dropout must be in [0, 1), got {self.skip_dropout}")
        stray = [
            name
            for name, default in defaults.items()
            if getattr(self, name) != default and name not in SKIP_FIELDS[self.skip]
        ]
        if stray:
            name = stray[0]
            users = " or ".join(repr(s) for s, fields in SKIP_FIELDS.items() if name in fields)
            raise ValueError(
                f"{name}={getattr(self, name)} is read only with skip={users}; this config "
                f"has skip={self.skip!r}"
            )
        if self.skip != "identity" and self.shortcut in ("none", "C"):
            has = "no shortcuts" if self.shortcut == "none" else "no identity shortcuts (option C)"
            raise ValueError(
                f"skip={self.skip!r} changes the identity shortcuts; this network has {has}"
            )

    def variants(self) -> list[str]:
        """The 2016 paper's variants this config uses, in words ([] for the original unit)."""
        notes = []
        if self.unit != "original":
            notes.append(f"{self.unit} units (2016 paper, Fig. 4)")
        if self.skip != "identity":
            values = ", ".join(f"{f}={getattr(self, f)}" for f in SKIP_FIELDS[self.skip])
            figure = SKIP_FIGURES[self.skip]
            notes.append(f"{self.skip} shortcuts ({values}; 2016 paper, Fig. {figure})")
        if self.output_stride < self.natural_stride:
            notes.append(f"output stride {self.output_stride} (dilated stages)")
        return notes

    @property
    def natural_stride(self) -> int:
        """The network's stride without dilation: 32 for ImageNet nets, 4 for CIFAR's; an
        ``output_stride`` at or above it changes nothing."""
        return self.stem_stride * 2 ** (len(self.layers) - 1)

    @property
    def stem_stride(self) -> int:
        """The stride of the stem: 4 (a strided conv and a max-pool), 1 for CIFAR's."""
        return 1 if self.stem == "cifar" else 4

    @property
    def expansion(self) -> int:
        """Output channels of a block divided by its base width."""
        return 4 if self.block == "bottleneck" else 1

    @property
    def sum_activated(self) -> bool:
        """Whether each unit ends with a ReLU after its addition (Fig. 4a and 4b); the other
        units leave the sum as it is, so the network applies a final activation instead."""
        return not self.preact and self.unit in ("original", "bn_after_add")

    @property
    def num_features(self) -> int:
        """Channels of the final feature map (input of the classifier)."""
        return self.widths[-1] * self.expansion

    @property
    def depth(self) -> int:
        """Weighted layers as the papers count them (convs on the main path plus the fc)."""
        per_block = 3 if self.block == "bottleneck" else 2
        stem_convs = 3 if self.stem == "deep" else 1
        return stem_convs + per_block * sum(self.layers) + 1

    def with_options(self, **changes: object) -> ResNetConfig:
        """Return a copy with some fields changed (validated like the constructor).

        Raises:
            TypeError: a name that is not a field (with close matches).
        """
        names = [f.name for f in fields(self)]
        unknown = [k for k in changes if k not in names]
        if unknown:  # dataclasses' own error names no alternative
            close = {c for k in unknown for c in difflib.get_close_matches(k, names, 3, 0.5)}
            hint = f" Did you mean {', '.join(map(repr, sorted(close)))}?" if close else ""
            raise TypeError(
                f"unknown architecture option(s) {unknown}.{hint} Valid: {', '.join(names)}"
            )
        return replace(self, **changes)  # type: ignore[arg-type]
