"""torch.hub entry points (hubconf.py at the repository root), loaded from the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import resnetkit

ROOT = Path(__file__).resolve().parents[1]


def test_torch_hub_lists_every_architecture_and_loads_packaged_weights() -> None:
    # torch.hub.list and help read GitHub repositories only; they list what this module holds
    hubconf = torch.hub._import_module("hubconf", str(ROOT / "hubconf.py"))
    names = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert set(resnetkit.list_models()) <= set(names)
    assert "resnet50" in hubconf.resnet50.__doc__
    model = torch.hub.load(str(ROOT), "resnet20", source="local", pretrained=True)
    expected = resnetkit.create_model("resnet20", pretrained=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), expected.eval()(x), rtol=0, atol=0)
    assert model.pretrained_cfg["input_size"] == 32  # its preprocessing came with it
    tagged = torch.hub.load(
        str(ROOT), "create_model", "resnet20.paper_cifar10", source="local", pretrained=True
    )
    assert tagged.pretrained_cfg["tag"] == "resnet20.paper_cifar10"
    options = torch.hub.load(str(ROOT), "resnet50", source="local", num_classes=7, in_chans=1)
    assert options(torch.randn(1, 1, 64, 64)).shape == (1, 7)
    with pytest.raises(TypeError, match="num_clases.*Did you mean 'num_classes'"):
        torch.hub.load(str(ROOT), "resnet20", source="local", num_clases=3)
