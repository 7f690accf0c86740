"""The named models: every entry is a row of data turned into a :class:`ResNetConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from resnetkit.models.config import ResNetConfig

PAPER_2015 = "He et al. 2015, Deep Residual Learning for Image Recognition"
PAPER_2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks"

# ImageNet depths, paper Table 1.
IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# CIFAR nets of depth 6n+2 (paper section 4.2); 1202 is the paper's overfitting example.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
CIFAR_PLAIN_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_PLAIN_DEPTHS = (18, 34)
CIFAR_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its name, its config and where it comes from."""

    name: str
    config: ResNetConfig
    source: str


def _cifar(
    depth: int, *, block: str = "basic", shortcut: str = "A", preact: bool = False
) -> ResNetConfig:
    per_block = 3 if block == "bottleneck" else 2
    n, rest = divmod(depth - 2, 3 * per_block)
    if rest:
        raise ValueError(f"CIFAR depth {depth} is not {3 * per_block}n+2")
    return ResNetConfig(
        block=block,  # type: ignore[arg-type]
        layers=(n, n, n),
        widths=CIFAR_WIDTHS,
        stem="cifar",
        stem_width=16,
        shortcut=shortcut,  # type: ignore[arg-type]
        preact=preact,
        num_classes=10,
        default_input_size=32,
    )


def _imagenet(depth: int, **changes: object) -> ResNetConfig:
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNetConfig(block=block, layers=layers).with_options(**changes)  # type: ignore[arg-type]


def model_entries() -> list[ModelEntry]:
    """Every architecture resnetkit defines, in listing order."""
    entries: list[ModelEntry] = []
    for depth in IMAGENET_DEPTHS:
        entries.append(ModelEntry(f"resnet{depth}", _imagenet(depth), PAPER_2015 + ", Table 1"))
    for depth in CIFAR_DEPTHS:
        entries.append(ModelEntry(f"resnet{depth}", _cifar(depth), PAPER_2015 + ", Sec. 4.2"))
    # The bottleneck CIFAR nets of the 2016 paper, in the original (post-activation) form its
    # Tables 2 and 3 compare with pre-activation; they project where the shape changes.
    for depth in (164, 1001):
        config = _cifar(depth, block="bottleneck", shortcut="B")
        entries.append(ModelEntry(f"resnet{depth}", config, PAPER_2016 + ", Tables 2-3"))
    for depth in IMAGENET_PLAIN_DEPTHS:
        config = _imagenet(depth, shortcut="none")
        entries.append(ModelEntry(f"plain{depth}", config, PAPER_2015 + ", Table 2"))
    for depth in CIFAR_PLAIN_DEPTHS:
        config = _cifar(depth, shortcut="none")
        entries.append(ModelEntry(f"plain{depth}", config, PAPER_2015 + ", Fig. 6"))
    for depth in IMAGENET_DEPTHS:
        config = _imagenet(depth, preact=True)
        entries.append(ModelEntry(f"preact_resnet{depth}", config, PAPER_2016))
    # The 2016 paper's ImageNet-200 (Table 5), in the original and the pre-activation form.
    layers_200 = (3, 24, 36, 3)
    entries.append(
        ModelEntry(
            "resnet200",
            ResNetConfig(block="bottleneck", layers=layers_200),
            PAPER_2016 + ", Table 5",
        )
    )
    entries.append(
        ModelEntry(
            "preact_resnet200",
            ResNetConfig(block="bottleneck", layers=layers_200, preact=True),
            PAPER_2016 + ", Table 5",
        )
    )
    # CIFAR pre-activation nets project the shortcut when the shape changes (option B).
    entries.append(
        ModelEntry("preact_resnet110", _cifar(110, shortcut="B", preact=True), PAPER_2016)
    )
    for depth in (164, 1001):
        config = _cifar(depth, block="bottleneck", shortcut="B", preact=True)
        entries.append(ModelEntry(f"preact_resnet{depth}", config, PAPER_2016 + ", Table 2"))
    entries += [
        ModelEntry(
            "resnext50_32x4d",
            _imagenet(50, groups=32, width_per_group=4),
            "Xie et al. 2017, Aggregated Residual Transformations (torchvision layout)",
        ),
        ModelEntry(
            "resnext101_32x8d",
            _imagenet(101, groups=32, width_per_group=8),
            "Xie et al. 2017, Aggregated Residual Transformations (torchvision layout)",
        ),
        ModelEntry(
            "resnext101_64x4d",
            _imagenet(101, groups=64, width_per_group=4),
            "Xie et al. 2017, Aggregated Residual Transformations (torchvision layout)",
        ),
        ModelEntry(
            "wide_resnet50_2",
            _imagenet(50, width_per_group=128),
            "Zagoruyko & Komodakis 2016, Wide Residual Networks (torchvision layout)",
        ),
        ModelEntry(
            "wide_resnet101_2",
            _imagenet(101, width_per_group=128),
            "Zagoruyko & Komodakis 2016, Wide Residual Networks (torchvision layout)",
        ),
        ModelEntry(
            "resnet50d",
            _imagenet(50, stem="deep", avg_down=True),
            "He et al. 2018, Bag of Tricks, ResNet-D (timm layout)",
        ),
    ]
    # The rest of Bag of Tricks' tweaked family, as timm names and lays them out: ResNet-C
    # (the deep 3x3 stem) and ResNet-D (that stem plus average-pool downsampling shortcuts).
    entries.append(
        ModelEntry(
            "resnet50c",
            _imagenet(50, stem="deep"),
            "He et al. 2018, Bag of Tricks, ResNet-C (timm layout)",
        )
    )
    for depth in (18, 34, 101, 152):
        entries.append(
            ModelEntry(
                f"resnet{depth}d",
                _imagenet(depth, stem="deep", avg_down=True),
                "He et al. 2018, Bag of Tricks, ResNet-D (timm layout)",
            )
        )
    return entries
