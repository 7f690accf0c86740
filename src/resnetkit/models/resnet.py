"""The ResNet model: a stem, stages of residual blocks, and a classifier head."""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Iterator, Sequence
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from resnetkit.models.blocks import Skip, block_class, conv3x3, make_shortcut
from resnetkit.models.config import ResNetConfig


class FeatureInfo(list[dict[str, Any]]):
    """Per-stage ``num_chs``, ``reduction`` and ``module``, with timm's ``FeatureInfo``
    accessors (a neck reads ``model.feature_info.channels()``)."""

    def channels(self) -> list[int]:
        return [int(info["num_chs"]) for info in self]

    def reduction(self) -> list[int]:
        return [int(info["reduction"]) for info in self]

    def module_name(self) -> list[str]:
        return [str(info["module"]) for info in self]


class ResNet(nn.Module):
    """A residual (or plain) network built from a :class:`ResNetConfig`.

    Every model shares one interface: ``forward_features`` (last feature map),
    ``forward_head(x, pre_logits=False)``, ``forward_intermediates(x, out_indices)`` (per-stage
    maps for detection or segmentation), ``reset_classifier(num_classes)``.

    Args:
        config: the architecture.
        zero_init_residual: start every residual branch at zero (last BN gamma, or last conv for
            pre-activation blocks), so each block begins as the identity (Goyal et al. 2017).
        drop_path_rate: stochastic depth, rising linearly from 0 to this rate over the blocks.
        grad_checkpointing: recompute block activations in the backward pass to save memory.
        features_only: make ``forward`` return the stage outputs listed in ``out_indices``.
        out_indices: residual stages returned by ``forward`` when ``features_only``, 0 being
            ``layer1`` (timm counts its stem as 0: its (2, 3, 4) is this (1, 2, 3)); an int or
            any sequence of ints. The classifier and later stages stay (weights load as
            they are) and get no gradient.
        name: the model's name, used in error messages.
    """

    def __init__(
        self,
        config: ResNetConfig,
        *,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        name: str = "resnet",
    ) -> None:
        super().__init__()
        self.config = config
        self.name = name
        self.num_classes = config.num_classes
        self.grad_checkpointing = grad_checkpointing
        self.features_only = features_only
        num_stages = len(config.layers)
        self.out_indices = (
            tuple(range(num_stages))
            if out_indices is None
            else _stage_indices(out_indices, num_stages, name)
        )
        if not 0.0 <= drop_path_rate < 1.0:  # checked here: blocks see a fraction of it
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if drop_path_rate and config.shortcut == "none":
            raise ValueError(
                f"drop_path_rate drops residual branches; {name} has no shortcuts, so there is "
                "nothing to drop (a dropped block would output zeros): leave it at 0"
            )
        if zero_init_residual and config.shortcut == "none":
            raise ValueError(
                f"zero_init_residual zeroes the last BN of every block; {name} has no shortcuts, "
                "so each block would output zeros forever: leave it off for plain nets"
            )

        self._build_stem(config)
        block = block_class(config.block, config.preact)
        residual = config.shortcut != "none"
        total_blocks = sum(config.layers)
        in_planes = config.stem_width
        block_index = 0
        reduction = config.stem_stride
        dilation = 1
        stage_info: list[dict[str, Any]] = []
        for stage, (depth, width) in enumerate(zip(config.layers, config.widths, strict=True)):
            stride = 1 if stage == 0 else 2
            previous_dilation = dilation
            if reduction * stride > config.output_stride:  # dilate instead (DeepLab)
                dilation *= stride
                stride = 1
            reduction *= stride
            blocks: list[nn.Module] = []
            for i in range(depth):
                block_stride = stride if i == 0 else 1
                out_planes = width * config.expansion
                rate = drop_path_rate * block_index / max(total_blocks - 1, 1)
                # torchvision's and timm's rule: a stage's first block keeps the dilation
                # of the stage before in its first 3x3, the rest use the stage's own
                first_dilation = previous_dilation if i == 0 else dilation
                extra: dict[str, Any] = {}
                if config.block == "bottleneck":
                    extra = {
                        "groups": config.groups,
                        "width_per_group": config.width_per_group,
                        "stride_in_1x1": config.stride_in_1x1,
                    }
                if dilation > 1:
                    extra["dilation"] = (first_dilation, dilation)
                if config.preact and stage == 0 and i == 0:  # the first unit (see blocks.py)
                    extra["first"] = "after_bn" if self.bn1 is not None else "after_conv"
                if not config.preact:
                    extra["unit"] = config.unit
                shortcut = make_shortcut(
                    config.shortcut,
                    in_planes,
                    out_planes,
                    block_stride,
                    preact=config.preact,
                    avg_down=config.avg_down,
                    # only the block that would have strided pools (as timm's)
                    dilated=i == 0 and dilation > previous_dilation,
                )
                if residual and shortcut is None and config.skip != "identity":
                    extra["skip"] = Skip(
                        config.skip,
                        out_planes,
                        skip_scale=config.skip_scale,
                        residual_scale=config.residual_scale,
                        gate_bias=config.gate_bias,
                        skip_dropout=config.skip_dropout,
                    )
                blocks.append(
                    block(in_planes, width, block_stride, shortcut, residual, rate, **extra)
                )
                in_planes = out_planes
                block_index += 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
            stage_info.append(
                {"num_chs": in_planes, "reduction": reduction, "module": f"layer{stage + 1}"}
            )
        # as timm: every stage, or with features_only the ones forward returns
        self.feature_info = FeatureInfo(
            [stage_info[i] for i in self.out_indices] if features_only else stage_info
        )
        if config.skip != "identity" and not any(isinstance(m, Skip) for m in self.modules()):
            raise ValueError(
                f"skip={config.skip!r} changes identity shortcuts, and every unit of {name} "
                f"(layers {config.layers}) changes shape: it has none. Give a stage 2 or more "
                "blocks"
            )
        self.min_input_size = stage_info[-1]["reduction"]
        self.num_features = config.num_features
        # Pre-activation nets end with a BN-ReLU, since their last block's sum is not activated;
        # units (c) and (d) of the 2016 paper's Fig. 4 leave it unactivated too: a final ReLU.
        self.final_bn = nn.BatchNorm2d(self.num_features) if config.preact else None
        self.final_relu = not config.sum_activated
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = self._make_fc(config.num_classes)
        self._init_weights(zero_init_residual)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The residual stages, in order (``layer1`` ...)."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.layers))]

    def _build_stem(self, config: ResNetConfig) -> None:
        width = config.stem_width
        self.maxpool: nn.Module | None = None
        self.bn1: nn.Module | None = None
        if config.stem == "cifar":
            self.conv1: nn.Module = conv3x3(config.in_chans, width)
        elif config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_chans, width, 7, stride=2, padding=3, bias=False)
        else:  # "deep": three 3x3 convs (ResNet-C/D), keys as in timm's resnet50d
            mid = width // 2
            self.conv1 = nn.Sequential(
                conv3x3(config.in_chans, mid, stride=2),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
                conv3x3(mid, mid),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
                conv3x3(mid, width),
            )
        # A pre-activation CIFAR net starts its first block with BN-ReLU: the stem is a bare conv.
        if not (config.preact and config.stem == "cifar"):
            self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        if config.stem != "cifar":
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes)

    def _init_weights(self, zero_init_residual: bool) -> None:
        if self.conv1_weight().is_meta:  # shape-only models (analysis) need no initialisation
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Skip):
                m.reset_gate()
        if zero_init_residual:
            for stage in self.stages:
                for block in stage:
                    # A branch ends with a BN, but with a conv in a pre-activation unit and
                    # where the BN moved after the addition (Fig. 4b of the 2016 paper).
                    ends_with_conv = self.config.preact or self.config.unit == "bn_after_add"
                    names = ("conv3", "conv2") if ends_with_conv else ("bn3", "bn2")
                    last = getattr(block, names[0], None) or getattr(block, names[1])
                    nn.init.zeros_(last.weight)

    def conv1_weight(self) -> Tensor:
        """Weight of the first convolution (the one that sees ``in_chans`` channels)."""
        conv = self.conv1[0] if isinstance(self.conv1, nn.Sequential) else self.conv1
        assert isinstance(conv, nn.Conv2d)
        return conv.weight

    def __prepare_scriptable__(self) -> ResNet:
        """``torch.jit.script`` calls this first: say what to use instead of its own error."""
        raise TypeError(
            f"{self.name} does not compile with torch.jit.script (TorchScript is deprecated in "
            "PyTorch). Use torch.export.export(model.eval(), (example,)) for a graph, "
            "torch.compile for speed, or `resnetkit export` for ONNX; torch.fx (and "
            "torchvision's create_feature_extractor) and torch.jit.trace trace it as well."
        )

    def check_input(self, x: Tensor) -> None:
        """Raise a TypeError (not a floating-point tensor) or a ValueError that states the
        expected shape if ``x`` cannot be an input."""
        in_chans = self.config.in_chans
        expected = f"(batch, {in_chans}, height, width) with height and width >= " + str(
            self.min_input_size
        )
        if not isinstance(x, Tensor):  # a numpy array or a PIL image failed on .dim()
            raise TypeError(
                f"{self.name} takes a torch tensor {expected}, got {type(x).__name__}: "
                "convert images with resnetkit.Preprocessing.of(model).transform(), arrays "
                "with torch.from_numpy"
            )
        if not x.is_floating_point():  # uint8 pixels failed inside the first convolution
            raise TypeError(
                f"{self.name} takes floating-point input, got {x.dtype}: scale pixels to 0-1 "
                "and normalise them (resnetkit.Preprocessing.of(model).transform() does both)"
            )
        if x.dim() != 4:
            hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
            raise ValueError(
                f"{self.name} expects a 4-D input {expected}; got shape {tuple(x.shape)}.{hint}"
            )
        if x.shape[1] != in_chans:
            hint = ""
            if x.shape[-1] == in_chans:
                hint = " It looks channels-last (NHWC): use x.permute(0, 3, 1, 2)."
            raise ValueError(
                f"{self.name} expects {in_chans} input channels {expected}; got shape "
                f"{tuple(x.shape)}.{hint} For other channel counts create the model with "
                "in_chans=N."
            )
        if x.shape[2] < self.min_input_size or x.shape[3] < self.min_input_size:
            raise ValueError(
                f"{self.name} expects images of at least {self.min_input_size}x"
                f"{self.min_input_size} pixels {expected}; got shape {tuple(x.shape)}. "
                "Resize the input."
            )

    def forward_stem(self, x: Tensor) -> Tensor:
        """Run the stem (conv1, bn1, relu, maxpool as the config has them)."""
        if not (torch.jit.is_tracing() or isinstance(x, torch.fx.Proxy)):
            self.check_input(x)  # shapes are symbols while tracing
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.bn1(x)
            x = self.relu(x)
        if self.maxpool is not None:
            x = self.maxpool(x)
        return x

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            for block in stage:
                contexts = functools.partial(_recompute_keeps_bn_stats, block)
                x = checkpoint(block, x, use_reentrant=False, context_fn=contexts)
            return x
        return stage(x)

    def _final_norm(self, x: Tensor) -> Tensor:
        if self.final_bn is not None:
            x = self.final_bn(x)
        if self.final_relu:
            x = F.relu(x)  # not in place: with (c) or (d) units, x is the last block's sum
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """Input images to the last feature map (before pooling)."""
        x = self.forward_stem(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return self._final_norm(x)

    def forward_intermediates(
        self, x: Tensor, out_indices: Sequence[int] | None = None
    ) -> list[Tensor]:
        """Per-stage feature maps (for detection or segmentation necks).

        Args:
            x: input images, (batch, in_chans, height, width).
            out_indices: stages to return (0-based); defaults to the model's ``out_indices``.

        Returns:
            The feature maps of the wanted stages, in stage order, each once.
        """
        stages = self.stages
        wanted = set(
            self.out_indices
            if out_indices is None
            else _stage_indices(out_indices, len(stages), self.name)
        )
        outputs: list[Tensor] = []
        x = self.forward_stem(x)
        for i, stage in enumerate(stages):
            x = self._run_stage(stage, x)
            if i == len(stages) - 1:
                x = self._final_norm(x)
            if i in wanted:
                outputs.append(x)
            if i >= max(wanted):
                break
        return outputs

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map to logits (or to the pooled features when ``pre_logits``)."""
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:  # type: ignore[override]
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a new, freshly initialised one (0 removes it), on the device
        and in the dtype of the rest of the model. The old head's class names (in
        ``pretrained_cfg``) go with it, and so do a multi-label model's per-class thresholds
        and a model's ``min_confidence`` (chosen for the old head's outputs: the new one
        starts from the defaults)."""
        config = self.config.with_options(num_classes=num_classes)  # checked before any change
        weight = self.conv1_weight()
        self.num_classes = num_classes
        self.config = config
        self.fc = self._make_fc(num_classes).to(device=weight.device, dtype=weight.dtype)
        cfg = getattr(self, "pretrained_cfg", None)
        if isinstance(cfg, dict) and len(cfg.get("classes") or []) != num_classes:
            cfg = self.pretrained_cfg = {**cfg, "classes": []}
        if isinstance(cfg, dict) and isinstance(cfg.get("threshold"), list):
            cfg = self.pretrained_cfg = {k: v for k, v in cfg.items() if k != "threshold"}
        if isinstance(cfg, dict) and "min_confidence" in cfg:  # chosen for the old head too
            self.pretrained_cfg = {k: v for k, v in cfg.items() if k != "min_confidence"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


def _recompute_keeps_bn_stats(
    block: nn.Module,
) -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
    """Checkpoint contexts (forward, recomputation): the backward pass runs the block's forward
    again, in training mode, and its BatchNorms would update their running statistics a
    second time; they are put back as the first forward left them."""
    return contextlib.nullcontext(), _bn_buffers_restored(block)


@contextlib.contextmanager
def _bn_buffers_restored(block: nn.Module) -> Iterator[None]:
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)


def _stage_indices(value: int | Sequence[int], num_stages: int, name: str) -> tuple[int, ...]:
    """``out_indices`` as a tuple of stage numbers (an int, a list, a numpy array...), each in
    ``0..num_stages - 1``, in stage order and each once: the order the maps come out in."""
    items: Any = [value] if isinstance(value, Integral) else value
    try:
        indices = tuple(operator.index(i) for i in items)
    except TypeError:
        raise ValueError(
            f"out_indices must be stage numbers of {name}, 0..{num_stages - 1}; got {value!r}"
        ) from None
    bad = sorted(i for i in indices if not 0 <= i < num_stages)
    if not indices or bad:
        raise ValueError(
            f"out_indices {list(indices)} must name stages of {name}, 0..{num_stages - 1}"
            + (f" ({bad} are not)" if bad else "")
        )
    return tuple(sorted(set(indices)))
