"""The fastest float32 ways to run a ResNet on a CPU with PyTorch alone.

Both methods fold BatchNorm into the convolutions first, then hand the whole network to a graph
compiler that fuses each convolution with the ReLU and residual addition after it and keeps the
weights pre-packed in oneDNN's layout:

- ``"onednn-graph"``: the model is traced and frozen with TorchScript and run by oneDNN Graph
  (``torch.jit.enable_onednn_fusion``), whole residual stages at a time. The fastest here
  (ResNet-50 on 2 AVX-512 cores: faster than ONNX Runtime; see the README's speed section).
  TorchScript is deprecated in recent PyTorch but still ships; the switch is process-wide and
  stays on once set.
- ``"inductor"``: ``torch.compile`` with weight freezing, NHWC activations. Not deprecated;
  slower than oneDNN Graph on ResNet-50 here.

A batch larger than ``chunk_size`` runs as consecutive chunks of that many images (by default
four 224x224 images' worth of pixels), whose activations stay in the CPU's caches. Each
compiled graph is specialised to one input shape: the first call at a new chunk size compiles
for it (seconds), later ones are fast. Every result is checked against the eager model before
it is returned.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from resnetkit.export.fold import fold_batchnorm
from resnetkit.models.resnet import ResNet

Method = Literal["onednn-graph", "inductor"]
METHODS: tuple[Method, ...] = ("onednn-graph", "inductor")
#: Calls of a new trace before it serves: TorchScript's profiling executor records shapes on
#: the first calls and hands the graph to oneDNN Graph after them.
WARMUP_CALLS = 3
#: Accepted difference to eager, relative to the largest output: a 50-layer float32 network's
#: logits differ from eager's by a few 1e-6 of their scale when the arithmetic is reordered
#: (BatchNorm folded, other kernels); a wrong computation differs by a large fraction of it.
RELATIVE_TOLERANCE = 1e-5
#: Input pixels per compiled call, 4 images of 224x224. Measured on ResNet-50 at batch 16 on
#: 2 cores: one piece 0.95x ONNX Runtime, chunks of 1 image 1.15x, of 2 1.10x, of 4 1.23x, of
#: 8 1.09x. Small images need large chunks: ResNet-20 at 32x32 in chunks of 4 ran at 0.68x
#: ONNX Runtime against 1.05x in one piece of 128 (per-call overhead).
CHUNK_PIXELS = 4 * 224 * 224


def chunk_for(height: int, width: int) -> int:
    """Images per compiled call at this input size: :data:`CHUNK_PIXELS` worth of them."""
    return max(1, CHUNK_PIXELS // (height * width))


class CPUOptimizationError(RuntimeError):
    """The optimised model cannot be built here, or computes something else than eager."""


def optimize_for_cpu(
    model: ResNet,
    example: Tensor,
    method: Method = "onednn-graph",
    tolerance: float = RELATIVE_TOLERANCE,
    chunk_size: int | None = 0,
) -> Callable[[Tensor], Tensor]:
    """A float32 CPU function computing ``model`` faster than eager PyTorch.

    Args:
        model: a resnetkit ResNet; it is not modified (a folded copy is compiled).
        example: an input of the shape that will be served most, (N, C, H, W); the function
            is compiled and warmed up on it. Another batch size compiles on its first call.
        method: "onednn-graph" or "inductor" (see the module docstring).
        tolerance: the largest accepted |optimised - eager| on ``example``'s outputs, as a
            fraction of the largest |eager| output (or absolute, when that is below 1).
        chunk_size: most images per compiled call; a larger batch runs as consecutive
            chunks (the last one smaller). 0: :func:`chunk_for` the example's size (4 images
            at 224x224, 196 at 32x32). ``None``: the whole batch at once.

    Returns:
        A function from an (N, C, H, W) float32 tensor to the logits, run without autograd.

    Raises:
        CPUOptimizationError: the compiler is missing or failed here, or the result differs
            from eager by more than ``tolerance`` (the message gives the difference).
        ValueError: an unknown ``method`` or a negative ``chunk_size``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if chunk_size is not None and chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0 (0: automatic) or None, got {chunk_size}")
    check = getattr(model, "check_input", None)  # a ResNet's: the shape it takes, named
    if check is not None:
        check(example)  # a wrong shape is the caller's, not the compiler's failure
    if chunk_size == 0:
        chunk_size = chunk_for(example.shape[-2], example.shape[-1])
    eager = copy.deepcopy(model).cpu().float().eval().requires_grad_(False)
    example = example.detach().cpu().float()
    folded = fold_batchnorm(eager)
    build = _onednn_graph if method == "onednn-graph" else _inductor
    try:
        run = _in_chunks(build(folded), chunk_size)
        got = run(example)  # compiles for the example's (chunk) shape
    except Exception as err:  # a missing C++ compiler, an unsupported build of torch
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise CPUOptimizationError(
            f"{method} failed here ({type(err).__name__}: {first}); use the other method "
            "or the eager model"
        ) from err
    with torch.inference_mode():
        want = eager(example)
    diff = float((got.float() - want).abs().max())
    allowed = tolerance * max(1.0, float(want.abs().max()))
    if not diff <= allowed:
        raise CPUOptimizationError(
            f"{method} output differs from eager by {diff:.2e} (> {allowed:.1e}, {tolerance:.3g} "
            "of the largest output); do not use it for this model"
        )
    return _checked(run, check)


def _checked(
    run: Callable[[Tensor], Tensor], check: Callable[[Tensor], None] | None
) -> Callable[[Tensor], Tensor]:
    """``run`` behind the model's own input checks (the compiled graph skips its forward),
    so a wrong shape or dtype gets the model's message, not an interpreter traceback."""

    def checked(x: Tensor) -> Tensor:
        if check is not None:
            check(x)
        if x.dtype != torch.float32:
            raise TypeError(
                f"the optimised model takes float32 inputs (normalised images), got {x.dtype}: "
                "convert with x.float()"
            )
        return run(x)

    return checked


def _in_chunks(
    run: Callable[[Tensor], Tensor], chunk_size: int | None
) -> Callable[[Tensor], Tensor]:
    if chunk_size is None:
        return run

    def chunked(x: Tensor) -> Tensor:
        if x.shape[0] <= chunk_size:
            return run(x)
        return torch.cat([run(part) for part in x.split(chunk_size)])

    return chunked


def _onednn_graph(folded: nn.Module) -> Callable[[Tensor], Tensor]:
    torch.jit.enable_onednn_fusion(True)
    # A traced graph is fused for the input shape it was profiled with; at another shape it
    # falls back to unfused operators. So each new shape gets its own trace.
    by_shape: dict[tuple[int, ...], Callable[[Tensor], Tensor]] = {}

    def run(x: Tensor) -> Tensor:
        shape = tuple(x.shape)
        if shape not in by_shape:
            with warnings.catch_warnings():
                # torch.jit's deprecation notices, and the model's Python input checks
                # becoming constants (the shapes they check are fixed per trace).
                warnings.simplefilter("ignore")
                with torch.no_grad():
                    traced = torch.jit.trace(folded, (x,), check_trace=False)
                    scripted = torch.jit.freeze(traced)
                    for _ in range(WARMUP_CALLS - 1):  # profiled, then fused
                        scripted(x)
            by_shape[shape] = scripted
        with torch.no_grad():
            return by_shape[shape](x)

    return run


def _inductor(folded: nn.Module) -> Callable[[Tensor], Tensor]:
    # Freezing turns the weights into constants, which Inductor pre-packs for oneDNN once; as
    # a compile option it holds for every shape compiled later too (a last, smaller chunk).
    compiled = torch.compile(
        folded.to(memory_format=torch.channels_last), dynamic=False, options={"freezing": True}
    )

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return compiled(x.contiguous(memory_format=torch.channels_last))

    return run
