"""What runs the model's forward passes for the service: eager PyTorch, an ONNX Runtime
session exported on the spot, or the CPU-optimised graph (padded to a few compiled batch
shapes); and the weights' fingerprint served as the model's version."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn


def torch_forward(
    model: nn.Module, call: Callable[[Tensor], Tensor] | None = None
) -> Callable[[Tensor], Tensor]:
    """``call`` (default: the model itself) on batches moved to the model's device and
    dtype, without autograd, answering float32 on the CPU."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    run = call or model

    def forward(batch: Tensor) -> Tensor:
        with torch.inference_mode():
            return run(batch.to(device=device, dtype=dtype)).float().cpu()

    return forward


def features_forward(model: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The pooled features (:func:`~resnetkit.explain.pooled_features`) as a batch function
    on the model's device and dtype; ``None`` for a model without them."""
    from resnetkit.explain import pooled_features

    pooled = pooled_features(model)
    return None if pooled is None else torch_forward(model, pooled)


def onnx_forward(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """Export once (dynamic batch, verified against eager PyTorch) and load in ONNX Runtime.

    The session holds the model in memory, so the temporary file is deleted straight away.
    """
    from resnetkit.export.exporter import export_model, load_exported

    with tempfile.TemporaryDirectory(prefix="resnetkit-serve-") as tmp:
        report = export_model(model, "onnx", Path(tmp) / "model.onnx", dynamic_batch=True)
        run = load_exported(report.path, "onnx")

    def forward(batch: Tensor) -> Tensor:
        return run(batch)[0]

    return forward


def padded_batch(n: int, chunk: int) -> int:
    """How many rows the optimized backend runs ``n`` images as.

    :func:`~resnetkit.export.cpu.optimize_for_cpu` runs a batch in chunks of ``chunk`` images;
    padding ``n`` up to a multiple of ``chunk`` (or, below it, to a power of two) means only a
    handful of chunk shapes ever occur, and all of them are compiled at startup: no request
    waits for a compile.
    """
    if n >= chunk:
        return -(-n // chunk) * chunk
    size = 1
    while size < n:
        size *= 2
    return min(size, chunk)


def optimized_forward(
    model: nn.Module, image_size: int, max_batch: int
) -> Callable[[Tensor], Tensor]:
    from resnetkit.export.cpu import chunk_for, optimize_for_cpu
    from resnetkit.models.resnet import ResNet

    if not isinstance(model, ResNet):
        raise ValueError(
            f"the optimized backend compiles resnetkit ResNets, not {type(model).__name__}; "
            "use backend torch or onnx"
        )
    chunk = chunk_for(image_size, image_size)
    shape = (model.config.in_chans, image_size, image_size)
    sizes = sorted({padded_batch(n, chunk) for n in range(1, min(chunk, max_batch) + 1)})
    # Checked against eager on random input (zeros would test little more than the biases).
    run = optimize_for_cpu(model, torch.randn(sizes[-1], *shape), chunk_size=chunk)
    for size in sizes[:-1]:  # every shape a chunk can have, compiled now
        run(torch.zeros(size, *shape))

    def forward(batch: Tensor) -> Tensor:
        n = batch.shape[0]
        padded = padded_batch(n, chunk)
        if padded > n:
            batch = torch.cat([batch, batch.new_zeros(padded - n, *batch.shape[1:])])
        return run(batch.float())[:n]

    return forward


def weights_version(model: nn.Module) -> str:
    """A fingerprint of the weights (sha256 of every tensor, in order, or of the ONNX file
    served): the model's version."""
    from resnetkit.export.runtime import OrtClassifier

    if isinstance(model, OrtClassifier):
        return model.file_digest()
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()[:16]
