"""The shortcut ablations of the 2016 paper (Identity Mappings, Fig. 2 and Table 1): constant
scaling, exclusive and shortcut-only gating, dropout on the shortcut."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from resnetkit import create_model
from resnetkit.export.fold import count_batchnorms
from resnetkit.interop.convert import convert_checkpoint
from resnetkit.interop.writers import to_torchvision
from resnetkit.models.blocks import Skip
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import save_model_dir
from tests.test_units import check_trains_and_folds, randomise

KINDS = ["scaling", "exclusive_gating", "shortcut_gating", "dropout"]


OPTIONS: dict[str, dict[str, float]] = {
    "scaling": {"skip_scale": 0.3, "residual_scale": 0.7},
    "dropout": {"skip_dropout": 0.2},  # not the default 0.5, so the option must reach the unit
}


def figure_2(kind: str, branch: Tensor, x: Tensor, skip: Skip) -> Tensor:
    """The sum before the ReLU in each unit of the 2016 paper's Fig. 2, written out with the
    options the model was asked for (not read back from the unit under test)."""
    if kind == "scaling":
        return 0.7 * branch + 0.3 * x
    if kind == "dropout":  # in eval mode: the shortcut scaled by its keep probability
        return branch + 0.8 * x
    assert skip.gate is not None
    g = torch.sigmoid(F.conv2d(x, skip.gate.weight, skip.gate.bias))
    return (g * branch if kind == "exclusive_gating" else branch) + (1 - g) * x


@pytest.mark.parametrize("kind", KINDS)
def test_each_shortcut_computes_figure_2(kind: str) -> None:
    model = randomise(create_model("resnet20", skip=kind, **OPTIONS.get(kind, {})))
    if kind.endswith("gating"):  # a gate that does something per channel and pixel
        with torch.no_grad():
            model.layer1[1].skip.gate.bias.normal_()
    block = model.layer1[1]
    x = torch.randn(2, 16, 8, 8)
    branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    with torch.no_grad():
        expected = F.relu(figure_2(kind, branch, x, block.skip))
        torch.testing.assert_close(block(x), expected)


def test_units_that_change_shape_keep_their_own_shortcut() -> None:
    """The variants act on identity shortcuts; the first unit of stages 2 and 3 keeps its
    option A padding (or B projection) as it is."""
    for shortcut in ("A", "B"):
        model = create_model("resnet20", skip="exclusive_gating", shortcut=shortcut)
        units = [b for stage in model.stages for b in stage]
        changing = [b for b in units if b.downsample is not None]
        assert len(changing) == 2 and all(b.skip is None for b in changing)
        assert all(isinstance(b.skip, Skip) for b in units if b.downsample is None)


def test_gates_add_a_1x1_conv_per_identity_unit_and_start_near_the_identity() -> None:
    """ResNet-110 with gates: one 1x1 conv with bias per identity unit (18 of 16 channels, 17
    of 32, 17 of 64), biases at -6, so 1 - g(x) starts near 1 (the paper's working init)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with torch.device("meta"):
        plain_sum = count(create_model("resnet110"))
        gated = count(create_model("resnet110", skip="shortcut_gating"))
    assert gated - plain_sum == 18 * (16 * 16 + 16) + 17 * (32 * 32 + 32) + 17 * (64 * 64 + 64)
    model = create_model("resnet20", skip="shortcut_gating", gate_bias=-7.0)
    gate = model.layer3[2].skip.gate
    assert torch.equal(gate.bias, torch.full((64,), -7.0))
    assert gate.weight.std() > 0  # initialised like every conv, not left at zero


def test_dropout_on_the_shortcut_scales_it_by_one_half_on_average() -> None:
    """Sec. 3.1: dropout "statistically imposes a scale of lambda with an expectation of 0.5
    on the shortcut": entries dropped and not rescaled in training, x * 0.5 at test."""
    skip = Skip("dropout", 8, skip_dropout=0.5)
    branch, x = torch.zeros(4, 8, 16, 16), torch.ones(4, 8, 16, 16)
    torch.manual_seed(0)
    trained = skip.train()(branch, x)
    assert set(trained.unique().tolist()) == {0.0, 1.0}  # dropped, or kept as it was
    assert 0.45 < trained.mean() < 0.55
    assert torch.equal(skip.eval()(branch, x), 0.5 * x)


def test_scaling_the_shortcut_to_zero_is_the_plain_net() -> None:
    """Table 1's first row: 0 on the shortcut leaves a plain network (compared on the first
    stage, where no unit changes shape)."""
    plain = randomise(create_model("plain20"))
    scaled = create_model("resnet20", skip="scaling", skip_scale=0.0)
    scaled.load_state_dict(plain.state_dict())  # the same parameter names: nothing missing
    scaled.eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(scaled.layer1(x), plain.layer1(x))
        assert not torch.allclose(create_model("resnet20").eval().layer1(x), plain.layer1(x))


@pytest.mark.parametrize("kind", KINDS)
def test_every_shortcut_trains_folds_and_is_described(kind: str, tmp_path: Path) -> None:
    model = create_model("resnet20", skip=kind, num_classes=4)
    # randomised weights make logits in the hundreds: fp32 folding error is relative
    folded, x = check_trains_and_folds(model, tol=1e-3)
    assert count_batchnorms(folded) == 0
    prep = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32}
    classes = ["a", "b", "c", "d"]
    save_model_dir(model, tmp_path / "m", arch="resnet20", classes=classes, preprocessing=prep)
    loaded = load_model(tmp_path / "m")
    assert loaded.config.skip == kind
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert f"{kind} shortcuts (" in (tmp_path / "m" / "README.md").read_text()


def test_shortcut_options_are_checked() -> None:
    bad = {
        (("skip", "gating"),): "skip must be one of 'identity', 'scaling'",
        (("skip", "scaling"), ("gate_bias", -3.0)): "gate_bias=-3.0 is read only with "
        "skip='exclusive_gating' or 'shortcut_gating'; this config has skip='scaling'",
        (("skip_scale", 0.9),): "skip_scale=0.9 is read only with skip='scaling'",
        (("skip", "dropout"), ("skip_dropout", 1.0)): r"skip_dropout must be in \[0, 1\)",
        (("skip", "scaling"), ("skip_scale", float("nan"))): "skip_scale must be a finite",
        (("skip", "scaling"), ("shortcut", "C")): "no identity shortcuts \\(option C\\)",
    }
    for options, match in bad.items():
        with pytest.raises(ValueError, match=match):
            create_model("resnet20", **dict(options))
    with pytest.raises(ValueError, match="this network has no shortcuts"):
        create_model("plain20", skip="dropout")
    with pytest.raises(ValueError, match=r"every unit of resnet50 \(layers \(1, 1, 1, 1\)\)"):
        create_model("resnet50", layers=(1, 1, 1, 1), skip="exclusive_gating")
    with pytest.raises(ValueError, match=r"exclusive_gating shortcuts \(2016 paper, Fig. 2"):
        to_torchvision(create_model("resnet18", skip="exclusive_gating"))


def test_convert_keeps_a_model_directorys_variants(tmp_path: Path) -> None:
    """The weights alone cannot tell a unit or shortcut variant (nor where gates go): convert
    builds the source's, and the foreign writers refuse it rather than change the function."""
    model = randomise(create_model("resnet18", skip="shortcut_gating", unit="relu_before_add"))
    prep = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 64}
    src = save_model_dir(model, tmp_path / "m", arch="resnet18", classes=[], preprocessing=prep)
    report, out = convert_checkpoint(src, "resnet18", tmp_path / "c", target="resnetkit")
    assert any("shortcut_gating shortcuts" in note for note in report.notes), report.notes
    converted = load_model(out)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x))
    for target in ("torchvision", "timm", "huggingface"):
        with pytest.raises(ValueError, match="the relu_before_add unit"):
            convert_checkpoint(src, "resnet18", tmp_path / target, target=target)
