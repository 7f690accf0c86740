"""Dilated backbones (``output_stride``): torchvision's ``replace_stride_with_dilation`` and
timm's ``output_stride``, weight for weight and output for output."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

import resnetkit
from resnetkit.models.resnet import ResNet
from tests.nets import randomize

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _ours(name: str, **options: object) -> ResNet:
    model = resnetkit.create_model(name, num_classes=10, **options)
    return model.eval()


@pytest.mark.parametrize(
    ("output_stride", "dilate"), [(16, [False, False, True]), (8, [False, True, True])]
)
def test_torchvision_dilation(output_stride: int, dilate: list[bool]) -> None:
    reference = randomize(
        torchvision.models.resnet50(num_classes=10, replace_stride_with_dilation=dilate)
    )
    model = _ours("resnet50", output_stride=output_stride)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
        maps = model.forward_intermediates(x, out_indices=(3,))
    assert maps[0].shape[-1] == 64 // output_stride  # the last stage's map is that much finer
    assert model.feature_info[-1]["reduction"] == output_stride


@pytest.mark.parametrize(
    ("name", "output_stride"), [("resnet18", 16), ("resnet50d", 8), ("resnet34d", 16)]
)
def test_timm_output_stride(name: str, output_stride: int) -> None:
    """timm dilates basic blocks too, and pools ResNet-D shortcuts "same" at stride 1."""
    reference = randomize(
        timm.create_model(name, pretrained=False, num_classes=10, output_stride=output_stride)
    )
    model = _ours(name, output_stride=output_stride)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = _images(56)  # odd maps downstream: padding mistakes show
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)


def test_output_stride_is_checked_and_works_with_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="power of two from the stem's stride \\(4\\) up"):
        resnetkit.create_model("resnet50", output_stride=12)
    with pytest.raises(ValueError, match="power of two from the stem's stride \\(4\\) up"):
        resnetkit.create_model("resnet50", output_stride=2)
    plain = resnetkit.create_model("resnet20.cifar10", pretrained=True).eval()
    dilated = resnetkit.create_model("resnet20.cifar10", pretrained=True, output_stride=2).eval()
    assert dilated.feature_info[-1]["reduction"] == 2
    x = _images(32)
    with torch.no_grad():
        maps = dilated.forward_intermediates(x, out_indices=(2,))
        assert maps[0].shape[-1] == 16  # a CIFAR net's last map: 8x8, here 16x16
        assert not torch.allclose(dilated(x), plain(x), atol=1e-3)
    convs = [m for m in dilated.layer3.modules() if isinstance(m, nn.Conv2d)]
    assert [c.dilation[0] for c in convs][:3] == [1, 2, 2] and convs[0].stride == (1, 1)
    assert "output stride 2" in " ".join(dilated.config.variants())
    # measured on the undilated network: not claimed for this one
    assert "metrics" in plain.pretrained_cfg and "metrics" not in dilated.pretrained_cfg
    assert dilated.pretrained_cfg["adapted"] == ["output_stride=2"]
    # at or above a network's own stride nothing dilates, and nothing says it does
    same = resnetkit.create_model("resnet20", output_stride=8)
    assert same.config.variants() == [] and same.feature_info[-1]["reduction"] == 4


def test_only_the_block_that_would_stride_pools_its_shortcut() -> None:
    """Option C projects every shortcut; with ResNet-D's average pool, only the first block
    of a dilated stage (the one that would have strided) pools, as timm's does."""
    model = resnetkit.create_model("resnet50", shortcut="C", avg_down=True, output_stride=8)
    pools = [type(b.downsample[0]).__name__ for b in model.layer3]
    assert pools[0] == "Sequential" and set(pools[1:]) == {"Identity"}


@pytest.mark.parametrize("name", ["preact_resnet50", "resnet50d", "resnext50_32x4d"])
def test_dilated_models_fold_trace_and_export(name: str, tmp_path: Path) -> None:
    from resnetkit.export.exporter import export_model
    from resnetkit.export.fold import fold_batchnorm

    model = randomize(resnetkit.create_model(name, num_classes=10, output_stride=8))
    x = _images()
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(fold_batchnorm(model)(x), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), want)
    report = export_model(model, "onnx", tmp_path / "m.onnx", input_size=64)
    assert report.passed


def test_layouts_that_cannot_dilate_refuse_a_dilated_model(tmp_path: Path) -> None:
    from resnetkit.interop.writers import to_huggingface, to_keras_dict

    with pytest.raises(ValueError, match="dilated stages \\(output_stride=16; only 32\\)"):
        to_huggingface(_ours("resnet50", output_stride=16), tmp_path / "hf")
    v1 = _ours("resnet50", output_stride=16, stride_in_1x1=True)
    with pytest.raises(ValueError, match="dilated stages"):
        to_keras_dict(v1)
