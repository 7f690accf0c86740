"""Folders in the layout timm publishes on the Hugging Face Hub: ``config.json`` and
``model.safetensors``. :func:`to_timm_folder` writes one (``convert --to timm DIR``); reading
one is :func:`resnetkit.models.hf_hub.get_folder_weights` (``load_model(DIR)``, ``--model
DIR``, ``convert DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save

from resnetkit.interop.writers import to_timm
from resnetkit.models.loading import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES
from resnetkit.models.resnet import ResNet

#: What a weights file is called: anything else names the folder ``convert --to timm`` writes.
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
#: Names of other formats' files: a mistake for ``--to timm``, refused.
OTHER_SUFFIXES = (".onnx", ".npz", ".h5", ".hdf5", ".json", ".pkl", ".zip", ".gz", ".tflite")


def is_folder_target(out: str | Path) -> bool:
    """Whether ``convert --to timm --out OUT`` writes a folder: OUT is one already, or its
    name does not end like a weights file (``resnet50.a1_in1k`` is a folder: timm's names have
    dots; ``x.pth.tar`` is a file).

    Raises:
        ValueError: OUT is named like another format's file (``.onnx``, ``.npz``...).
    """
    out = Path(out)
    if out.is_dir():
        return True
    suffix = out.suffix.lower()
    if suffix in OTHER_SUFFIXES:
        raise ValueError(
            f"--out {out}: {suffix} is not a timm format; give a folder (timm's Hub layout) "
            "or a .safetensors/.pth state dict (or another --to)"
        )
    return suffix not in WEIGHT_SUFFIXES


def to_timm_folder(model: ResNet, out_dir: str | Path, *, classes: list[str] | None = None) -> Path:
    """Write a folder in the layout timm publishes on the Hugging Face Hub.

    ``config.json`` holds ``architecture``, ``num_classes``, ``model_args`` (input channels,
    output stride) and ``pretrained_cfg`` (the model's preprocessing as resnetkit applies it:
    ``input_size`` the crop, ``crop_pct`` the resize before it, 1.0 for a small model resized
    whole) and ``label_names``;
    ``model.safetensors`` the weights. ``timm.create_model("local-dir:DIR", pretrained=True)``
    builds it, and ``hf-hub:ORG/NAME`` once it is uploaded; resnetkit loads the folder too.

    Args:
        model: one of timm's ResNets (see :data:`~resnetkit.models.hf_hub.TIMM_ARCHS`).
        out_dir: directory to create, or an empty one.
        classes: class names (default: the model's own).

    Raises:
        ValueError: not an architecture timm has, something timm's ResNet cannot express (a
            per-pixel mean included).
        FileExistsError: ``out_dir`` is not empty.
    """
    from resnetkit.models.hf_hub import TIMM_ARCHS
    from resnetkit.models.loading import preprocessing_of
    from resnetkit.predict import channel_stats_for
    from resnetkit.train.checkpoint import atomic_write_bytes, atomic_write_text

    if model.name not in TIMM_ARCHS:
        raise ValueError(
            f"timm has no {model.name!r}: a timm folder holds one of {', '.join(TIMM_ARCHS)} "
            "(write a state dict or a resnetkit model directory instead)"
        )
    state = to_timm(model)  # refuses what timm cannot express
    cfg = preprocessing_of(model)
    if cfg.get("pixel_mean") is not None:
        raise ValueError("timm cannot subtract a per-pixel mean (the model's preprocessing)")
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new or empty folder")
    try:  # one value a channel, as timm normalises (a grey model: the RGB values averaged)
        mean = list(channel_stats_for(cfg["mean"], model.config.in_chans))
        std = list(channel_stats_for(cfg["std"], model.config.in_chans))
    except ValueError as err:
        raise ValueError(f"the model's preprocessing does not fit its input: {err}") from None
    size, resize, interpolation = _eval_geometry(model, cfg)
    c = model.config
    stride = min(c.output_stride, c.natural_stride)
    model_args: dict[str, Any] = {
        "in_chans": c.in_chans,
        "num_classes": model.num_classes,
        "global_pool": "avg",
    }
    if stride < c.natural_stride:
        model_args["output_stride"] = stride
    names = list(classes or cfg.get("classes") or [])
    config: dict[str, Any] = {
        "architecture": model.name,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": "avg",
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": str(cfg.get("tag") or "resnetkit"),
            "custom_load": False,
            "input_size": [c.in_chans, size, size],
            "fixed_input_size": False,
            "interpolation": interpolation,
            # timm resizes to floor(size / crop_pct): the half pixel keeps `resize` exact
            "crop_pct": 1.0 if resize == size else size / (resize + 0.5),
            "crop_mode": "center",
            "mean": mean,
            "std": std,
            "num_classes": model.num_classes,
            "pool_size": [-(-size // stride), -(-size // stride)],
            "first_conv": "conv1.0" if c.stem == "deep" else "conv1",
            "classifier": "fc",
        },
    }
    if names and len(names) == model.num_classes:
        config["label_names"] = names
    out.mkdir(parents=True, exist_ok=True)
    weights = save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"})
    atomic_write_bytes(out / "model.safetensors", weights)
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")  # last
    return out


def _eval_geometry(model: ResNet, cfg: dict[str, Any]) -> tuple[int, int, str]:
    """``(crop, resize, interpolation)`` as resnetkit prepares a picture for ``model``
    (:class:`~resnetkit.predict.Preprocessing`: below 128 pixels a picture is resized whole,
    not resized larger and cropped), so that timm prepares it the same way."""
    from resnetkit.predict import Preprocessing

    if model.config.in_chans in (1, 3):
        prep = Preprocessing.of(model)
        return prep.image_size, prep.resize, prep.interpolation
    # other inputs are tensors, not pictures: resnetkit resizes none of them
    size = int(cfg.get("crop") or cfg["input_size"])
    return size, size, str(cfg.get("interpolation") or "bilinear")
