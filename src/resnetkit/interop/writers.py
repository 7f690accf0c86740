"""Writing a resnetkit model in other libraries' layouts: torchvision and timm state dicts,
a Hugging Face transformers directory (with its image processor), Keras ``.npz`` arrays; each
refuses, naming them, the features its library's ResNet cannot express."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save
from torch import Tensor

from resnetkit.interop.formats import ours_to_huggingface, ours_to_keras
from resnetkit.models.config import ResNetConfig
from resnetkit.models.hf_hub import PIL_RESAMPLE
from resnetkit.models.resnet import ResNet


def _unsupported(config: ResNetConfig, target: str) -> list[str]:
    """What in ``config`` the ``target`` library's ResNet cannot express."""
    c = config
    problems = []
    if c.preact:
        problems.append("pre-activation blocks (preact=True)")
    if c.unit != "original":  # same weight names, another function: loading would mislead
        problems.append(f"the {c.unit} unit (2016 paper, Fig. 4; only the original)")
    if c.skip != "identity":
        problems.append(f"{c.skip} shortcuts (2016 paper, Fig. 2; only the identity)")
    if c.shortcut != "B":
        problems.append(f"shortcut option {c.shortcut} (only B)")
    if len(c.layers) != 4:
        problems.append(f"{len(c.layers)} stages (only 4)")
    stems = {"timm": ("imagenet", "deep")}.get(target, ("imagenet",))
    if c.stem not in stems:
        problems.append(f"the {c.stem} stem")
    if c.stem == "imagenet" and c.stem_width != 64 and target in ("torchvision", "timm"):
        problems.append(f"stem width {c.stem_width} (only 64)")
    if c.avg_down and target != "timm":
        problems.append("average-pool shortcuts (avg_down=True, ResNet-D)")
    if target in ("torchvision", "timm") and c.stride_in_1x1:
        problems.append(f"the stride on the first 1x1 (ResNet v1; {target} is v1.5)")
    if target == "torchvision" and c.widths != (64, 128, 256, 512):
        problems.append(f"stage widths {c.widths}")
    if target in ("huggingface", "keras") and c.output_stride < 32:
        problems.append(f"dilated stages (output_stride={c.output_stride}; only 32)")
    if target in ("huggingface", "keras") and (c.groups != 1 or c.width_per_group != 64):
        problems.append("grouped or widened bottlenecks (ResNeXt / Wide ResNet)")
    if target == "keras":
        if c.block != "bottleneck":
            problems.append("basic blocks (Keras has bottleneck ResNets only)")
        elif not c.stride_in_1x1:
            problems.append(
                "the stride on the 3x3 (v1.5; Keras ResNets are v1: stride_in_1x1=True)"
            )
    return problems


def _require_layout(model: ResNet, target: str) -> None:
    problems = _unsupported(model.config, target)
    if problems:
        raise ValueError(
            f"{model.name} cannot be written as a {target} ResNet: it has "
            f"{'; '.join(problems)}. Save it as a resnetkit model directory instead."
        )


def _detached(model: ResNet) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def to_torchvision(model: ResNet) -> dict[str, Tensor]:
    """A state dict for ``torchvision.models.resnet*`` / ``resnext*`` / ``wide_resnet*``.

    Raises:
        ValueError: the model has something torchvision's ResNet cannot express (another
            stem, shortcut option or stride placement, pre-activation, ...).
    """
    _require_layout(model, "torchvision")
    return _detached(model)


def to_timm(model: ResNet) -> dict[str, Tensor]:
    """A state dict for ``timm.create_model("resnet50")`` and kin (``resnet50d`` included).

    Raises:
        ValueError: the model has something timm's ResNet cannot express.
    """
    _require_layout(model, "timm")
    return _detached(model)


def huggingface_config(
    model: ResNet, classes: list[str] | None = None, multi_label: bool = False
) -> dict[str, Any]:
    """The ``config.json`` of a transformers ``ResNetForImageClassification`` for ``model``
    (``multi_label``: ``problem_type`` says so, and transformers' pipeline applies a sigmoid
    per class instead of a softmax)."""
    _require_layout(model, "huggingface")
    c = model.config
    labels = list(classes or [f"LABEL_{i}" for i in range(model.num_classes)])
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} class names for a {model.num_classes}-class model")
    task = {"problem_type": "multi_label_classification"} if multi_label else {}
    return {
        **task,
        "architectures": ["ResNetForImageClassification"],
        "model_type": "resnet",
        "num_channels": c.in_chans,
        "embedding_size": c.stem_width,
        "hidden_sizes": [w * c.expansion for w in c.widths],
        "depths": list(c.layers),
        "layer_type": c.block,
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": c.stride_in_1x1,
        "num_labels": model.num_classes,
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def huggingface_preprocessor(model: ResNet) -> dict[str, Any] | None:
    """The ``preprocessor_config.json`` that gives ``AutoImageProcessor`` (and so
    ``transformers.pipeline("image-classification")``) the model's own preprocessing: a
    ``BitImageProcessor`` resizing the shorter side to ``resize`` and cropping the centre
    (transformers' ConvNeXt processor, which its ResNets ship with, stretches inputs of 384
    and more instead of cropping them, and rounds its resize from a ratio). A grayscale model's
    takes grayscale pictures (``do_convert_rgb`` off, one mean and std; see
    :func:`huggingface_preprocessor_note`). ``None`` where it cannot be said (the note says
    why): a per-pixel mean (the 2015 paper's CIFAR recipe), inputs that are not pictures
    (neither 1 nor 3 channels), an interpolation PIL does not name. The crop can sit one pixel
    apart on a long side whose margin is odd (transformers and torchvision round the centre
    differently)."""
    from resnetkit.predict import Preprocessing

    if _no_preprocessor(model):
        return None
    prep = Preprocessing.of(model)
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": prep.channels == 3,
        "do_resize": True,
        "size": {"shortest_edge": prep.resize},
        "resample": PIL_RESAMPLE[prep.interpolation],
        "do_center_crop": True,
        "crop_size": {"height": prep.image_size, "width": prep.image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(prep.mean),
        "image_std": list(prep.std),
    }


def _no_preprocessor(model: ResNet) -> str | None:
    """Why the model's preprocessing has no ``preprocessor_config.json``, or None."""
    from resnetkit.models.loading import preprocessing_of

    channels = model.config.in_chans
    if channels not in (1, 3):
        return f"the model takes {channels}-channel tensors, not pictures"
    cfg = preprocessing_of(model)
    if cfg.get("pixel_mean") is not None:
        return "transformers' image processors cannot subtract a per-pixel mean"
    interpolation = str(cfg.get("interpolation") or "bilinear")
    if interpolation not in PIL_RESAMPLE:
        return f"PIL, which transformers resizes with, has no {interpolation!r} filter"
    return None


def huggingface_preprocessor_note(model: ResNet) -> str | None:
    """What a user of the Hugging Face folder :func:`to_huggingface` writes must know about
    its ``preprocessor_config.json`` (none written, or one for grayscale pictures), or None."""
    reason = _no_preprocessor(model)
    if reason:
        return (
            f"no preprocessor_config.json was written ({reason}): transformers' "
            "AutoImageProcessor and image-classification pipeline cannot prepare inputs for "
            "it; prepare them as resnetkit does"
        )
    if model.config.in_chans == 1:
        return (
            "the model is grayscale: its preprocessor_config.json takes grayscale pictures "
            "(processor(image.convert('L'))); transformers' image-classification pipeline "
            "converts pictures to RGB, which the 1-channel model refuses"
        )
    return None


def to_huggingface(
    model: ResNet,
    out_dir: str | Path,
    *,
    classes: list[str] | None = None,
    multi_label: bool = False,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that
    ``transformers.ResNetForImageClassification.from_pretrained(out_dir)`` loads, and the
    ``preprocessor_config.json`` of its preprocessing (see :func:`huggingface_preprocessor`),
    so that ``transformers.pipeline("image-classification", model=out_dir)`` runs it (an RGB
    model; :func:`huggingface_preprocessor_note` says what differs for others).
    ``config.json``'s ``num_channels`` is the model's input channels (1 for grayscale):
    resnetkit reads it back.

    Args:
        model: a ResNet with the ImageNet stem and option-B shortcuts (v1 or v1.5).
        out_dir: directory to create.
        classes: class names for ``id2label`` (default ``LABEL_i``).
        multi_label: a sigmoid per class (``problem_type: multi_label_classification``).

    Raises:
        ValueError: the model has something transformers' ResNet cannot express.
    """
    config = huggingface_config(model, classes, multi_label)
    tensors = ours_to_huggingface(_detached(model))
    if len(tensors) != len(model.state_dict()):
        raise AssertionError("every parameter must have exactly one Hugging Face name")
    from resnetkit.train.checkpoint import atomic_write_bytes, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
    atomic_write_bytes(out / "model.safetensors", weights)
    processor = huggingface_preprocessor(model)
    if processor is not None:
        text = json.dumps(processor, indent=2) + "\n"
        atomic_write_text(out / "preprocessor_config.json", text)
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")  # last
    return out


def to_keras_dict(model: ResNet) -> dict[str, np.ndarray]:
    """Weights for ``keras.applications.ResNet50`` (and 101/152), keyed ``layer/kernel:0``.

    Only bottleneck v1 models (``stride_in_1x1=True``) have a Keras equivalent. Convolution
    biases are zeros, the stem takes BGR, and the BN epsilon difference is folded back, so
    :func:`load_checkpoint` of the result gives the model back exactly.

    Raises:
        ValueError: the model has something Keras' ResNet cannot express.
    """
    _require_layout(model, "keras")
    return ours_to_keras(model.state_dict())


# --- one-call conversion (the CLI) ---------------------------------------------------------
