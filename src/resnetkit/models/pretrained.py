"""Weights trained by resnetkit and shipped inside the package (read offline, never unpickled)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

WEIGHTS_PACKAGE = "resnetkit.weights"


@dataclass(frozen=True)
class PretrainedWeights:
    """A packaged checkpoint with the preprocessing it expects and what it measured."""

    tag: str  # "arch.weights", e.g. "resnet20.cifar10" or "resnet20.paper_cifar10"
    file: str  # safetensors file inside resnetkit/weights
    sha256: str
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    metrics: dict[str, float] = field(default_factory=dict)
    recipe: str = ""
    #: 3*H*W floats (the 2015 paper's per-pixel mean, subtracted after cropping), or None.
    pixel_mean: tuple[float, ...] | None = None

    @property
    def path(self) -> Path:
        return Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(self.file)))

    def pretrained_cfg(self) -> dict[str, Any]:
        """What a user needs to feed the model: preprocessing, classes and measured accuracy."""
        cfg: dict[str, Any] = {
            "tag": self.tag,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": self.input_size,
            # said outright, so that timm's resolve_data_config does not assume its ImageNet
            # defaults (bicubic, resize by 1/0.875 and crop) for these 32x32 images
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "metrics": dict(self.metrics),
            "recipe": self.recipe,
        }
        if self.pixel_mean is not None:
            cfg["pixel_mean"] = list(self.pixel_mean)
        return cfg

    def load_into(self, model: nn.Module) -> None:
        """Load the weights (checksum verified, strict) and attach ``model.pretrained_cfg``."""
        from safetensors.torch import load_file

        data = self.path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise RuntimeError(
                f"packaged weights {self.path} are corrupt (sha256 {digest}, expected "
                f"{self.sha256}); reinstall resnetkit"
            )
        model.load_state_dict(load_file(self.path), strict=True)
        model.pretrained_cfg = self.pretrained_cfg()  # type: ignore[assignment]


def _index() -> dict[str, dict[str, Any]]:
    text = resources.files(WEIGHTS_PACKAGE).joinpath("index.json").read_text()
    index: dict[str, dict[str, Any]] = json.loads(text)
    return index


def list_pretrained() -> list[str]:
    """Tags of the weights shipped with resnetkit."""
    return sorted(_index())


def default_tag(arch: str, index: dict[str, dict[str, Any]] | None = None) -> str | None:
    """The tag ``create_model(arch, pretrained=True)`` loads: the architecture's only packaged
    weights, or the one marked ``"default": true`` in the index when it has several."""
    index = _index() if index is None else index
    tags = sorted(tag for tag in index if tag.split(".")[0] == arch)
    if len(tags) <= 1:
        return tags[0] if tags else None
    marked = [tag for tag in tags if index[tag].get("default")]
    if len(marked) != 1:
        raise RuntimeError(
            f"resnetkit's weights index marks {len(marked)} of {arch}'s tags ({', '.join(tags)}) "
            "as the default, not one; name the tag you want, e.g. "
            f"create_model({tags[0]!r}, pretrained=True)"
        )
    return marked[0]


def get_pretrained(name: str) -> PretrainedWeights:
    """The packaged weights for a tag (``resnet20.cifar10``) or an architecture's default tag."""
    index = _index()
    if name not in index:
        default = default_tag(name, index) if "." not in name else None
        if default is None:
            shipped = ", ".join(sorted(index)) or "none yet"
            raise KeyError(
                f"no packaged weights named {name!r}; resnetkit ships: {shipped}, and fetches "
                "torchvision's ImageNet weights as ARCH.tv_in1k / ARCH.tv2_in1k (e.g. "
                "resnet50.tv2_in1k). For other weights (timm, your own) load a checkpoint file."
            )
        name = default
    row = index[name]
    pixel_mean = row.get("pixel_mean")
    return PretrainedWeights(
        tag=name,
        file=row["file"],
        sha256=row["sha256"],
        num_classes=int(row["num_classes"]),
        classes=tuple(row["classes"]),
        mean=tuple(row["mean"]),
        std=tuple(row["std"]),
        input_size=int(row["input_size"]),
        metrics={k: float(v) for k, v in row.get("metrics", {}).items()},
        recipe=row.get("recipe", ""),
        pixel_mean=None if pixel_mean is None else tuple(float(v) for v in pixel_mean),
    )
