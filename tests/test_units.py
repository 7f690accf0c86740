"""The residual-unit ablations of the 2016 paper (Identity Mappings, Fig. 4 a-d) and its
post-activation bottleneck CIFAR nets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnetkit import create_model
from resnetkit.export.fold import count_batchnorms, fold_batchnorm
from resnetkit.interop.writers import to_torchvision
from resnetkit.models.blocks import UNITS, BasicBlock, Bottleneck
from resnetkit.models.config import ResNetConfig
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import parse_model_option
from resnetkit.reproduce.responses import response_layers

VARIANTS = [u for u in UNITS if u != "original"]


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so that every BN does something in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                shape = m.weight.shape
                m.weight.copy_(torch.rand(shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(shape, generator=gen) + 0.5)
    return model.eval()


def check_trains_and_folds(model: nn.Module, tol: float) -> tuple[nn.Module, Tensor]:
    """Every parameter gets a gradient, and with random weights and statistics the model with
    its BatchNorms folded computes what it did (to ``tol``); returns (folded, the input)."""
    x = torch.randn(2, 3, 32, 32)
    model(x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:3]
    randomise(model)
    folded = fold_batchnorm(model)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=tol, atol=tol)
    return folded, x


def figure_4_end(unit: str, branch: Tensor, shortcut: Tensor, bn: nn.Module) -> Tensor:
    """How each unit of the 2016 paper's Fig. 4 joins its last conv's output to the shortcut."""
    return {
        "original": F.relu(bn(branch) + shortcut),
        "bn_after_add": F.relu(bn(branch + shortcut)),
        "relu_before_add": F.relu(bn(branch)) + shortcut,
        "relu_only_preact": bn(branch) + shortcut,
    }[unit]


def test_basic_units_compute_figure_4() -> None:
    """Each unit against the paper's figure, written out with functional ops; with a
    projection, (d) feeds the shortcut the ReLU'd input, as pre-activation units do."""
    x = torch.randn(2, 8, 6, 6)  # a raw sum: negative values matter for (c) and (d)
    for unit in UNITS:
        proj = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        block = randomise(BasicBlock(8, 16, stride=2, downsample=proj, unit=unit))
        c1, b1, c2, b2 = block.conv1, block.bn1, block.conv2, block.bn2
        pre = F.relu(x) if unit == "relu_only_preact" else x
        branch = c2(F.relu(b1(c1(pre))))
        shortcut = proj(pre)
        expected = figure_4_end(unit, branch, shortcut, b2)
        with torch.no_grad():
            torch.testing.assert_close(block(x), expected, msg=unit)


def test_bottleneck_units_compute_figure_4() -> None:
    x = torch.randn(2, 16, 5, 5)
    for unit in UNITS:
        block = randomise(Bottleneck(16, 4, unit=unit))  # identity shortcut, 16 -> 16 channels
        pre = F.relu(x) if unit == "relu_only_preact" else x
        out = F.relu(block.bn1(block.conv1(pre)))
        out = F.relu(block.bn2(block.conv2(out)))
        branch, bn3 = block.conv3(out), block.bn3
        expected = figure_4_end(unit, branch, x, bn3)
        with torch.no_grad():
            torch.testing.assert_close(block(x), expected, msg=unit)


def same_weights(name: str, unit: str, source: nn.Module) -> nn.Module:
    model = create_model(name, unit=unit, num_classes=10)
    model.load_state_dict(source.state_dict(), strict=True)  # every unit: the same names
    return model.eval()


def test_units_share_the_weights_and_change_the_function() -> None:
    """Same parameters (the paper compares them at equal size), another function; the net
    ends with a ReLU where its units leave the sum unactivated."""
    original = randomise(create_model("resnet20", num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = original(x)
        for unit in VARIANTS:
            model = same_weights("resnet20", unit, original)
            assert model.final_relu == (unit in ("relu_before_add", "relu_only_preact"))
            assert (model(x) - reference).abs().max() > 1e-3, unit


def test_without_shortcuts_every_unit_is_the_same_plain_net() -> None:
    """With nothing to add, moving BN or ReLU around the addition changes nothing: a check
    that each variant only moves layers, never adds or drops one."""
    original = randomise(create_model("plain20", num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = original(x)
        for unit in VARIANTS:
            torch.testing.assert_close(same_weights("plain20", unit, original)(x), reference)


@pytest.mark.parametrize("unit", VARIANTS)
@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_every_unit_trains_and_folds(name: str, unit: str) -> None:
    short = {"layers": (1, 2, 1, 1)} if name == "resnet50" else {}  # bottlenecks, fewer
    model = create_model(name, unit=unit, num_classes=4, **short)
    folded, _ = check_trains_and_folds(model, tol=1e-4)
    # (b)'s BN after the addition sees a sum, not a conv's output: one stays per block.
    blocks = sum(len(stage) for stage in model.stages)
    assert count_batchnorms(folded) == (blocks if unit == "bn_after_add" else 0)


@pytest.mark.parametrize("unit", UNITS)
def test_zero_init_starts_every_unit_as_the_identity(unit: str) -> None:
    """zero_init_residual zeroes the branch's last BN, or its last conv where the BN moved
    after the addition (b): at initialisation every unit passes its (non-negative) input on."""
    model = create_model("resnet56", unit=unit, zero_init_residual=True).eval()
    block = model.layer2[3]
    last = block.conv2 if unit == "bn_after_add" else block.bn2
    assert last.weight.abs().sum() == 0
    x = torch.rand(2, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x, rtol=1e-4, atol=1e-4)


def test_unit_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"unit must be one of 'original', 'bn_after_add'"):
        create_model("resnet20", unit="bn_after_sum")
    with pytest.raises(ValueError, match=r"Fig. 4b-d\); preact=True is the full pre-activation"):
        create_model("preact_resnet110", unit="relu_before_add")
    with pytest.raises(ValueError, match="unit must be one of"):
        BasicBlock(8, 8, unit="preact")


def test_model_option_text_is_typed() -> None:
    assert parse_model_option("unit=relu_only_preact") == ("unit", "relu_only_preact")
    assert parse_model_option("shortcut=B") == ("shortcut", "B")
    assert parse_model_option("zero-init-residual=true") == ("zero_init_residual", True)
    assert parse_model_option("drop_path_rate=0.1") == ("drop_path_rate", 0.1)
    assert parse_model_option("widths=16,32,64") == ("widths", (16, 32, 64))
    bad = {
        "unit=bn": r"unit='bn': expected one of original, bn_after_add",
        "unt=original": r"unknown model option 'unt'. Did you mean 'unit'",
        # the data decides it (it was an unknown option, "did you mean 'in_chans'?")
        "num_classes=3": "^num_classes is not a model option: a run has as many classes as its",
        "stride_in_1x1=maybe": "expected true or false",
        # what it takes in words, not Python's "invalid literal for int() with base 10"
        "widths=16,x": r"^model option widths='16,x': expected whole numbers separated by commas$",
        "drop_path_rate=abc": r"^model option drop_path_rate='abc': expected a number$",
        "stem_width=1.5": r"^model option stem_width='1.5': expected a whole number$",
        "unit": "must be KEY=VALUE",
    }
    for text, match in bad.items():
        with pytest.raises(ValueError, match=match):
            parse_model_option(text)


def test_a_unit_variant_survives_its_model_directory(tmp_path: Path) -> None:
    model = randomise(create_model("resnet20", unit="bn_after_add", num_classes=10))
    prep = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32}
    classes = [str(i) for i in range(10)]
    save_model_dir(model, tmp_path / "m", arch="resnet20", classes=classes, preprocessing=prep)
    loaded = load_model(tmp_path / "m")
    assert loaded.config.unit == "bn_after_add"
    assert "bn_after_add units (2016 paper, Fig. 4)" in (tmp_path / "m" / "README.md").read_text()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_foreign_layouts_and_fig7_refuse_what_they_cannot_express() -> None:
    """A torchvision state dict of a (b) net would load into torchvision's ResNet without an
    error and compute something else: refused by name."""
    with pytest.raises(ValueError, match=r"the bn_after_add unit \(2016 paper, Fig. 4"):
        to_torchvision(create_model("resnet18", unit="bn_after_add"))
    assert len(to_torchvision(create_model("resnet18"))) > 0
    with pytest.raises(ValueError, match="normalises after the addition"):
        response_layers(create_model("resnet20", unit="bn_after_add"))
    # (c) and (d) keep a BN right after each 3x3: Fig. 7 is measurable, 19 layers as in (a).
    assert len(response_layers(create_model("resnet20", unit="relu_before_add"))) == 19


def test_post_activation_bottleneck_cifar_nets_of_the_2016_paper() -> None:
    """ResNet-164 and -1001 in their original form (paper Tables 2-3: 1.7M and 10.2M)."""
    with torch.device("meta"):
        r164, r1001 = create_model("resnet164"), create_model("resnet1001")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(r164) == pytest.approx(1.7e6, rel=0.03)
    assert count(r1001) == pytest.approx(10.2e6, rel=0.03)
    config: ResNetConfig = r164.config
    assert (config.block, config.layers, config.shortcut, config.preact) == (
        "bottleneck",
        (18, 18, 18),
        "B",
        False,
    )
    assert r164.final_bn is None and not r164.final_relu


def test_a_bare_weights_file_of_a_variant_loads_with_its_options(tmp_path: Path) -> None:
    """A safetensors file holds weights only: the unit must be said again on loading."""
    from safetensors.torch import save_file

    model = randomise(create_model("resnet20", unit="relu_before_add", num_classes=10))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_model(tmp_path / "w.safetensors", arch="resnet20", unit="relu_before_add")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="apply to bare checkpoint files"):
        load_model("resnet20.cifar10", unit="bn_after_add")
