"""Self-describing model directories: weights, architecture, classes, preprocessing, metrics.

Layout::

    model.safetensors   weights (torchvision key names)
    config.json         {"arch", "config", "classes", "preprocessing", "metrics", "provenance"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from resnetkit.models.config import ResNetConfig
from resnetkit.models.resnet import ResNet

FORMAT_VERSION = 1


def save_model_dir(
    model: ResNet,
    out: str | Path,
    *,
    arch: str,
    classes: list[str],
    preprocessing: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory that :func:`load_model_dir` (and every CLI command) can read."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"))
    config = asdict(model.config)
    config["layers"] = list(model.config.layers)
    config["widths"] = list(model.config.widths)
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config,
        "classes": classes,
        "preprocessing": preprocessing,
        "metrics": metrics or {},
        "provenance": provenance or {},
    }
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_model_meta(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory, with a clear error if it is not one."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path} is not a resnetkit model directory: expected config.json and "
            "model.safetensors (written by `resnetkit train` or `resnetkit finetune`)"
        )
    meta: dict[str, Any] = json.loads(config_file.read_text())
    return meta


def load_model_dir(path: str | Path) -> ResNet:
    """Build the model described by a directory and load its weights (strict, safetensors)."""
    path = Path(path)
    meta = read_model_meta(path)
    known = {f.name for f in fields(ResNetConfig)}
    raw = {k: v for k, v in meta["config"].items() if k in known}
    raw["layers"] = tuple(raw["layers"])
    raw["widths"] = tuple(raw["widths"])
    model = ResNet(ResNetConfig(**raw), name=meta.get("arch", path.name))
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    model.pretrained_cfg = {  # type: ignore[assignment]
        "classes": meta.get("classes", []),
        **meta.get("preprocessing", {}),
        "metrics": meta.get("metrics", {}),
    }
    return model
