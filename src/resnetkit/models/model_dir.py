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

from resnetkit.download import usual_mode
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
    usual_mode(out / "model.safetensors")  # safetensors writes 0600: others could not read it
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
    try:
        meta = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        hint = "it was not written by resnetkit"
        if isinstance(meta, dict) and meta.get("model_type") == "resnet":
            hint = (
                "it is a Hugging Face model directory: convert it first with `resnetkit convert "
                f"{path} --arch ARCH --out DIR`"
            )
        raise ValueError(f"{config_file} has no resnetkit model description: {hint}")
    return meta


def load_model_dir(path: str | Path) -> ResNet:
    """Build the model described by a directory and load its weights (strict, safetensors)."""
    path = Path(path)
    meta = read_model_meta(path)
    known = {f.name for f in fields(ResNetConfig)}
    raw = {k: v for k, v in meta["config"].items() if k in known}
    raw["layers"] = tuple(raw["layers"])
    raw["widths"] = tuple(raw["widths"])
    try:
        model = ResNet(ResNetConfig(**raw), name=meta.get("arch", path.name))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path / 'config.json'}: cannot build the model ({err})") from None
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error type for damaged files
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from None
    expected = model.state_dict()
    problems = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "with other shapes": [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    if any(problems.values()):
        found = [
            f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for label, keys in problems.items()
            if keys
        ]
        raise ValueError(
            f"{weights} does not fit the {meta.get('arch', 'model')} that config.json "
            f"describes: {'; '.join(found)}"
        )
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = {  # type: ignore[assignment]
        "classes": meta.get("classes", []),
        **meta.get("preprocessing", {}),
        "metrics": meta.get("metrics", {}),
    }
    return model
