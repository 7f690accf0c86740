"""torchvision's ImageNet weights under timm's tags: found in a cache or downloaded (from a
local server here), sha256-checked, loaded with their preprocessing. Nothing goes online."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

import resnetkit
from resnetkit.download import ChecksumError
from resnetkit.models import hub
from resnetkit.models.loading import load_model
from tests.conftest import dead_url

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tags_follow_torchvision_tables() -> None:
    tags = hub.list_hub()
    assert "resnet50.tv2_in1k" in tags and "resnet18.tv_in1k" in tags
    assert "resnet18.tv2_in1k" not in tags  # torchvision has no V2 ResNet-18
    assert hub.default_tag("resnet50") == "resnet50.tv2_in1k"
    assert hub.default_tag("resnet18") == "resnet18.tv_in1k"
    assert hub.default_tag("resnet20") is None
    w = hub.get_hub_weights("resnet50.tv2_in1k")
    assert w.url == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert w.sha256_prefix == "11ad3fa6" and (w.input_size, w.resize) == (224, 232)
    assert w.metrics["imagenet_top1"] == pytest.approx(80.858) and w.num_classes == 1000
    assert w.classes[0] == "tench" and w.interpolation == "bilinear"
    assert hub.get_hub_weights("resnet50.tv_in1k").resize == 256
    # timm's data config reads crop_pct: the same resize-then-crop as ours
    assert w.pretrained_cfg()["crop_pct"] * 232 == pytest.approx(224)
    with pytest.raises(KeyError, match="not a torchvision weights tag"):
        hub.get_hub_weights("resnet20.tv_in1k")
    # v1.5 weights in a v1 net would load without a shape error: refused before any download.
    with pytest.raises(ValueError, match="stride_in_1x1 would change it.*Only num_classes"):
        resnetkit.create_model("resnet50", pretrained=True, stride_in_1x1=True)


@pytest.fixture
def fake_resnet18(
    tmp_path: Path, server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, torch.Tensor], hub.HubWeights, Path]:
    """Random resnet18 weights served as torchvision's file, under an isolated cache."""
    serve, base = server
    state = resnetkit.create_model("resnet18").state_dict()
    real = hub.get_hub_weights("resnet18.tv_in1k")
    torch.save(state, serve / real.filename)
    digest = hashlib.sha256((serve / real.filename).read_bytes()).hexdigest()
    fake = dataclasses.replace(real, sha256_prefix=digest[:8])
    monkeypatch.setattr(hub, "get_hub_weights", lambda name: fake)
    monkeypatch.setenv("RESNETKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESNETKIT_HUB_URL", base)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    return state, fake, serve


def test_download_verify_load_then_cache(
    fake_resnet18: tuple[dict[str, torch.Tensor], hub.HubWeights, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, fake, serve = fake_resnet18
    model = resnetkit.create_model("resnet18.tv_in1k", pretrained=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    cfg = model.pretrained_cfg
    assert cfg["resize"] == 256 and cfg["crop"] == 224 and len(cfg["classes"]) == 1000
    assert cfg["metrics"]["imagenet_top1"] == pytest.approx(69.758)
    cached = hub.cache_dir() / fake.filename
    assert cached.is_file() and not list(cached.parent.glob(".*.part"))
    # Offline now: the cached file is used; `resnet18` alone means its best published weights.
    monkeypatch.setenv("RESNETKIT_HUB_URL", dead_url())
    again = load_model("resnet18.tv_in1k")
    assert torch.equal(again.fc.weight, state["fc.weight"]) and not again.training
    assert resnetkit.create_model("resnet18", pretrained=True).pretrained_cfg["tag"] == (
        "resnet18.tv_in1k"
    )
    # A cached file damaged after the fact is refused, named, never loaded.
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.raises(ChecksumError, match=f"{cached.name} does not have the sha256"):
        resnetkit.create_model("resnet18.tv_in1k", pretrained=True)


def test_torch_hub_cache_is_reused(
    fake_resnet18: tuple[dict[str, torch.Tensor], hub.HubWeights, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, fake, serve = fake_resnet18
    torch_hub = tmp_path / "torch_hub" / "checkpoints"
    torch_hub.mkdir(parents=True)
    (serve / fake.filename).rename(torch_hub / fake.filename)  # what torchvision downloaded
    monkeypatch.setenv("RESNETKIT_HUB_URL", dead_url())
    model = resnetkit.create_model("resnet18.tv_in1k", pretrained=True)
    assert torch.equal(model.fc.bias, state["fc.bias"])
    assert not (hub.cache_dir() / fake.filename).exists()  # nothing copied, nothing fetched


def test_bad_download_and_no_network(
    fake_resnet18: tuple[dict[str, torch.Tensor], hub.HubWeights, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, fake, serve = fake_resnet18
    (serve / fake.filename).write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="checksum mismatch.*the download was deleted"):
        resnetkit.create_model("resnet18.tv_in1k", pretrained=True)
    assert not hub.cache_dir().exists() or not any(hub.cache_dir().iterdir())
    monkeypatch.setenv("RESNETKIT_HUB_URL", dead_url())
    with pytest.raises(FileNotFoundError, match=f"copy torchvision's file {fake.filename} into"):
        resnetkit.create_model("resnet18.tv_in1k", pretrained=True)
