"""ImageNet weights published by torchvision, under timm's tags: ``resnet50.tv_in1k``
(torchvision's ``IMAGENET1K_V1``) and ``resnet50.tv2_in1k`` (``IMAGENET1K_V2``, the 2021
recipe: 80.9% instead of 76.1% for ResNet-50).

The URLs, accuracies, class names and preprocessing come from torchvision's own weights
tables (``torchvision.models.get_model_weights``), so they cannot drift from what torchvision
publishes. A file is looked for first in resnetkit's cache, then in torch hub's (where
torchvision keeps what it downloaded), and downloaded only if neither has it. Every file is
checked against the sha256 prefix in its name (torchvision's convention) before it is used,
and read with ``weights_only=True``. Set ``RESNETKIT_HUB_URL`` to fetch from a mirror, and
``RESNETKIT_HOME`` to move the cache (default ``~/.cache/resnetkit``).
"""

from __future__ import annotations

import http.client
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from resnetkit.download import ChecksumError, fetch, file_digest

#: timm's tags for torchvision's weights, and torchvision's names for them.
TAGS = {"tv_in1k": "IMAGENET1K_V1", "tv2_in1k": "IMAGENET1K_V2"}
#: Architectures whose torchvision weights load into resnetkit's models as they are.
ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)
_HASH = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass(frozen=True)
class HubWeights:
    """One published checkpoint and what it expects."""

    tag: str  # "resnet50.tv2_in1k"
    url: str
    sha256_prefix: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    resize: int
    interpolation: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def pretrained_cfg(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": self.input_size,
            "resize": self.resize,
            "crop": self.input_size,
            "crop_pct": self.input_size / self.resize,  # the same crop, as timm reads it
            "interpolation": self.interpolation,
            # torchvision's published accuracy on the ImageNet-1k validation set
            "metrics": dict(self.metrics),
            "source": self.url,
        }

    def load_into(self, model: nn.Module, timeout: float = 60.0) -> None:
        """Find or download the file, verify it, load it (strict) and set ``pretrained_cfg``."""
        from resnetkit.models.loading import torch_load_weights_only

        path = self.fetch(timeout)
        state = torch_load_weights_only(path)
        model.load_state_dict(state, strict=True)
        model.pretrained_cfg = self.pretrained_cfg()  # type: ignore[assignment]

    def fetch(self, timeout: float = 60.0) -> Path:
        """The verified local file: cached by resnetkit or torch hub, else downloaded."""
        for candidate in (cache_dir() / self.filename, _torch_hub_dir() / self.filename):
            if candidate.is_file():
                actual = file_digest(candidate, "sha256")
                if not actual.startswith(self.sha256_prefix):
                    raise ChecksumError(
                        f"{candidate} does not have the sha256 its name promises "
                        f"({self.sha256_prefix}..., got {actual[:12]}...): delete it and call "
                        "again to download it afresh"
                    )
                return candidate
        target = cache_dir() / self.filename
        url = self.url
        mirror = os.environ.get("RESNETKIT_HUB_URL")
        if mirror:
            url = f"{mirror.rstrip('/')}/{self.filename}"
        try:
            fetch(url, target, "sha256", self.sha256_prefix, timeout)
        except ChecksumError:
            raise
        except (OSError, http.client.HTTPException) as err:
            raise FileNotFoundError(
                f"could not download the {self.tag} weights from {url}: {err}. Without a "
                f"network, copy torchvision's file {self.filename} into {cache_dir()} (or "
                f"{_torch_hub_dir()}) and call again"
            ) from None
        return target


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$RESNETKIT_HOME/hub`` or ``~/.cache/resnetkit/hub``."""
    home = os.environ.get("RESNETKIT_HOME") or Path.home() / ".cache" / "resnetkit"
    return Path(home).expanduser() / "hub"


def _torch_hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def list_hub() -> list[str]:
    """Every tag that resolves to torchvision's published weights."""
    from torchvision.models import get_model_weights

    tags = []
    for arch in ARCHS:
        names = {w.name for w in get_model_weights(arch)}
        tags += [f"{arch}.{tag}" for tag, name in TAGS.items() if name in names]
    return tags


def default_tag(arch: str) -> str | None:
    """The best published weights of an architecture (V2 where torchvision has them)."""
    available = list_hub()
    for tag in ("tv2_in1k", "tv_in1k"):
        if f"{arch}.{tag}" in available:
            return f"{arch}.{tag}"
    return None


def is_hub_tag(name: str) -> bool:
    arch, _, tag = name.partition(".")
    return arch in ARCHS and tag in TAGS


def get_hub_weights(name: str) -> HubWeights:
    """The published weights of a tag such as ``resnet50.tv2_in1k``."""
    from torchvision.models import get_model_weights

    arch, _, tag = name.partition(".")
    if not is_hub_tag(name):
        raise KeyError(f"{name!r} is not a torchvision weights tag; available: {list_hub()}")
    weights = {w.name: w for w in get_model_weights(arch)}
    found = weights.get(TAGS[tag])
    if found is None:
        raise KeyError(f"torchvision publishes no {TAGS[tag]} weights for {arch}")
    match = _HASH.search(found.url.rsplit("/", 1)[-1])
    if match is None:  # pragma: no cover - every torchvision ResNet file name carries one
        raise KeyError(f"{found.url} names no sha256 prefix to check it against")
    transforms = found.transforms()
    published = found.meta["_metrics"]["ImageNet-1K"]
    metrics = {
        "imagenet_top1": float(published["acc@1"]),
        "imagenet_top5": float(published["acc@5"]),
    }
    return HubWeights(
        tag=name,
        url=found.url,
        sha256_prefix=match.group(1),
        classes=tuple(found.meta["categories"]),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        input_size=int(transforms.crop_size[0]),
        resize=int(transforms.resize_size[0]),
        interpolation=transforms.interpolation.value,
        metrics=metrics,
    )
