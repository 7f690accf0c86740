"""Look inside a ResNet: Grad-CAM heatmaps and pooled-feature embeddings."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnetkit.models.resnet import ResNet
from resnetkit.predict import (
    Preprocessing,
    check_counts,
    collect_images,
    image_batches,
    image_inputs,
)
from resnetkit.train.checkpoint import atomic_write_bytes


def grad_cam(model: ResNet, x: Tensor, target: int | None = None) -> tuple[Tensor, int, float]:
    """Grad-CAM (Selvaraju et al. 2017) on the last feature map.

    Args:
        model: a classifier.
        x: one preprocessed image, (1, C, H, W).
        target: class to explain; default: the predicted class.

    Returns:
        ``(heatmap, class, probability)``: heatmap (H, W) in [0, 1] at the input resolution;
        the probability is the class's softmax one, or for a multi-label model its own
        sigmoid one (what ``predict`` reports).
    """
    from resnetkit.data.multilabel import model_threshold

    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(
            f"grad_cam explains one image at a time: (1, C, H, W), got {tuple(x.shape)}"
        )
    if target is not None and (
        isinstance(target, bool) or not isinstance(target, int | np.integer)
    ):
        raise TypeError(f"target must be a class index (a whole number), got {target!r}")
    if getattr(model, "features_only", False):
        raise ValueError(
            f"{model.name} is a features_only backbone: it has no class scores to explain; "
            "load the classifier it came from"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # A leaf of its own: gradients reach it even when every parameter is frozen.
            features = model.forward_features(x).detach().requires_grad_(True)
            logits = model.forward_head(features)
            multi_label = model_threshold(model) is not None
            probs = (logits.sigmoid() if multi_label else logits.softmax(1))[0]
            cls = int(probs.argmax()) if target is None else int(target)
            if not 0 <= cls < logits.shape[1]:
                raise ValueError(f"target class {cls} out of range 0..{logits.shape[1] - 1}")
            # only this leaf's gradient: the model's own .grad (a caller's accumulation) stays
            (grad,) = torch.autograd.grad(logits[0, cls], features)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # importance of each channel
        cam = F.relu((weights * features).sum(1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        cam = cam - cam.min()
        if cam.max() > 0:
            cam = cam / cam.max()
    finally:
        model.train(was_training)
    return cam, cls, float(probs[cls].detach())


def explain_image(
    model: ResNet,
    image_path: str | Path,
    out: str | Path,
    *,
    target: int | None = None,
    alpha: float = 0.45,
) -> dict[str, Any]:
    """Write a Grad-CAM overlay of ``image_path`` to ``out`` (PNG); returns what it explained."""
    from matplotlib import colormaps
    from PIL import Image

    from resnetkit.data.images import load_image
    from resnetkit.models.loading import preprocessing_of

    out = Path(out)
    kind = Image.registered_extensions().get(out.suffix.lower())  # .jpg -> JPEG...
    if kind is None:
        raise ValueError(f"{out}: not an image file name; give one ending in .png or .jpg")
    if out.exists() and out.resolve() == Path(image_path).resolve():
        raise ValueError(f"{out} is the image being explained: give another file for the overlay")
    prep = Preprocessing.of(model)
    failures: list[dict[str, str]] = []
    batches = list(image_batches([Path(image_path)], prep, 1, failures))
    if failures:
        raise ValueError(f"{failures[0]['path']}: {failures[0]['reason']}")
    x = batches[0][1]
    cam, cls, prob = grad_cam(model, x, target)
    image = load_image(image_path)
    # The part of the picture the model saw: its shorter side scaled to `resize`, then the
    # centre `image_size` square; shown at a size people can look at (at least 256 pixels).
    width, height = image.size
    seen = prep.image_size * min(width, height) / prep.resize
    left, top = (width - seen) / 2, (height - seen) / 2
    side = max(256, round(seen))
    shown = image.resize(
        (side, side), Image.Resampling.BICUBIC, box=(left, top, left + seen, top + seen)
    )
    heat = Image.fromarray((cam.numpy() * 255).astype(np.uint8)).resize(
        shown.size, Image.Resampling.BILINEAR
    )
    coloured = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
    blend = (1 - alpha) * np.asarray(shown, dtype=np.float64) / 255 + alpha * coloured
    buffer = io.BytesIO()
    Image.fromarray((blend.clip(0, 1) * 255).astype(np.uint8)).save(buffer, format=kind)
    atomic_write_bytes(out, buffer.getvalue())
    classes = preprocessing_of(model)["classes"]
    name = str(classes[cls]) if cls < len(classes) else str(cls)
    return {
        "image": str(image_path),
        "class": name,
        "index": cls,
        "probability": prob,
        "heatmap": str(out),
    }


@dataclass
class Embeddings:
    paths: list[str]
    vectors: np.ndarray  # (N, D) float32 pooled features
    failures: list[dict[str, str]]


def pooled_features(model: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The function from an input batch to the pooled features the classifier reads:
    ``forward_head(forward_features(x), pre_logits=True)`` for resnetkit's and timm's ResNets,
    every module but ``fc`` for torchvision's (no hooks: it may run beside the classifier on
    another thread); ``None`` for a model that is neither."""
    features = getattr(model, "forward_features", None)
    head = getattr(model, "forward_head", None)
    if callable(features) and callable(head):
        return lambda x: head(features(x), pre_logits=True)
    children = list(model.children())
    if children and children[-1] is getattr(model, "fc", None) and hasattr(model, "avgpool"):
        trunk = nn.Sequential(*children[:-1])  # torchvision: conv1 ... layer4, avgpool
        return lambda x: trunk(x).flatten(1)
    return None


@torch.no_grad()
def embed(
    model: ResNet,
    inputs: str | Path | Sequence[str | Path],
    *,
    batch_size: int = 64,
    normalize: bool = False,
) -> Embeddings:
    """Pooled features (the classifier's input) of every readable image in ``inputs``.

    Args:
        model: a ResNet.
        inputs: image files and/or folders (searched recursively), or one of them.
        batch_size: images per forward pass.
        normalize: L2-normalise each vector (for cosine similarity).
    """
    inputs = image_inputs(inputs)
    check_counts(batch_size=batch_size)
    was_training = model.training
    model.eval()
    files, failures = collect_images(inputs)
    prep = Preprocessing.of(model)
    paths: list[str] = []
    chunks: list[Tensor] = []
    features = pooled_features(model)
    assert features is not None  # a ResNet has forward_features and forward_head
    try:
        weight = model.conv1_weight()  # batches go where the model is, in its dtype
        for batch_paths, batch in image_batches(files, prep, batch_size, failures):
            batch = batch.to(device=weight.device, dtype=weight.dtype)
            chunks.append(features(batch).float().cpu())
            paths += [str(p) for p in batch_paths]
    finally:
        model.train(was_training)
    dim = model.num_features
    vectors = torch.cat(chunks) if chunks else torch.zeros(0, dim)
    if normalize:
        vectors = F.normalize(vectors, dim=1)
    return Embeddings(paths, vectors.float().numpy(), failures)


def nearest(queries: np.ndarray, index: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Cosine-similarity top-k of each query row among the index rows: (scores, indices)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = index / np.maximum(np.linalg.norm(index, axis=1, keepdims=True), 1e-12)
    sims = q @ d.T
    k = min(k, d.shape[0])
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), order
