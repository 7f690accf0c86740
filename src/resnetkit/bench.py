"""Inference speed of one model on every CPU path, side by side with its anchors.

``bench_model`` prepares each backend once (export, quantisation and compilation happen before
the clock starts, and their cost is reported as ``setup_s``), then measures them in interleaved
rounds: every backend runs ``iters`` calls per round, and the order rotates from round to round,
so that a busy neighbour or a clock change hits all backends alike rather than one of them.
Latency is per call (one batch); throughput is images per second over all timed calls.

Backends (all on the CPU, float32 unless named otherwise):

- ``torchvision``: ``torchvision.models`` with the same weights, eager, NCHW. The anchor; only
  for architectures torchvision has.
- ``eager``: the resnetkit model as loaded, eager, NCHW.
- ``channels_last``: eager in NHWC memory layout (oneDNN's preferred layout).
- ``compile``: BatchNorm folded into the convolutions, NHWC, ``torch.compile`` (Inductor) with
  weight freezing, which lets Inductor pre-pack the weights for oneDNN once
  (:func:`~resnetkit.export.cpu.optimize_for_cpu` with ``method="inductor"``).
- ``onednn-graph``: BatchNorm folded, traced and frozen with TorchScript, run by oneDNN Graph
  (``optimize_for_cpu``'s default method).
- ``bf16``: NHWC under ``torch.autocast(dtype=bfloat16)``. Fast only on CPUs with native bf16
  (AMX or AVX512-BF16); elsewhere it is emulated and slower than float32.
- ``ort``: a default ONNX Runtime session (CPUExecutionProvider) of the verified fp32 export.
- ``ort-int8``: ONNX Runtime on the static int8 QDQ model, calibrated on real photos (the
  bundled CIFAR-10 sample, resized to the model's input size).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# torch is imported by the functions that run models: the backend names serve the command
# line, which should start fast.
if TYPE_CHECKING:
    from torch import Tensor, nn

    from resnetkit.export.cpu import Method
    from resnetkit.models.resnet import ResNet

BACKENDS = (
    "torchvision",
    "eager",
    "channels_last",
    "compile",
    "onednn-graph",
    "bf16",
    "ort",
    "ort-int8",
)
#: resnetkit's PyTorch float32 paths, among which ``best_fp32`` picks.
FP32_BACKENDS = ("eager", "channels_last", "compile", "onednn-graph")
DEFAULT_BACKENDS = BACKENDS

Runner = Callable[["Tensor"], Any]


class BackendUnavailable(RuntimeError):
    """A backend cannot run this model here (missing package, architecture, hardware)."""


@dataclass
class BackendResult:
    """One backend at one batch size."""

    backend: str
    batch_size: int
    setup_s: float = 0.0  # preparing the backend (export, quantisation, compiling) and warm-up
    # max |output - eager float32 output| on the benchmark input: a fast path that computes
    # something else is not a fast path.
    max_abs_diff: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    skipped: str = ""

    @property
    def p50_ms(self) -> float:
        return _percentile(self.latencies_ms, 50)

    @property
    def p90_ms(self) -> float:
        return _percentile(self.latencies_ms, 90)

    @property
    def images_per_s(self) -> float:
        total = sum(self.latencies_ms) / 1000
        return self.batch_size * len(self.latencies_ms) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.skipped:
            out.update(p50_ms=self.p50_ms, p90_ms=self.p90_ms, images_per_s=self.images_per_s)
        return out


@dataclass
class BenchReport:
    """Every backend at every batch size, and what the numbers were measured on."""

    model: str
    input_size: int
    threads: int
    results: list[BackendResult]
    anchor: str
    machine: dict[str, Any] = field(default_factory=dict)

    def result(self, backend: str, batch_size: int) -> BackendResult:
        for r in self.results:
            if r.backend == backend and r.batch_size == batch_size:
                return r
        raise KeyError(f"no result for {backend} at batch size {batch_size}")

    def best_fp32(self, batch_size: int) -> BackendResult | None:
        """The fastest resnetkit PyTorch float32 path at ``batch_size`` (by p50 latency)."""
        candidates = [
            r
            for r in self.results
            if r.batch_size == batch_size and r.backend in FP32_BACKENDS and not r.skipped
        ]
        return min(candidates, key=lambda r: r.p50_ms) if candidates else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_size": self.input_size,
            "threads": self.threads,
            "anchor": self.anchor,
            "machine": self.machine,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        """The report :meth:`to_dict` wrote (e.g. read back from ``bench --out``)."""
        fields = ("backend", "batch_size", "setup_s", "max_abs_diff", "latencies_ms", "skipped")
        results = [BackendResult(**{k: r[k] for k in fields}) for r in data["results"]]
        return cls(
            model=data["model"],
            input_size=data["input_size"],
            threads=data["threads"],
            results=results,
            anchor=data["anchor"],
            machine=data.get("machine", {}),
        )

    def table(self) -> str:
        """A markdown table: latency, throughput, and speed relative to the anchor and to ORT."""
        headers = [
            "batch",
            "backend",
            "p50 ms",
            "p90 ms",
            "images/s",
            f"x {self.anchor}",
            "x ort",
            "max diff",
        ]
        rows = []
        for batch in sorted({r.batch_size for r in self.results}):
            anchor = self._maybe(self.anchor, batch)
            ort = self._maybe("ort", batch)
            for r in (r for r in self.results if r.batch_size == batch):
                if r.skipped:
                    skipped = f"skipped: {r.skipped}"
                    rows.append([str(batch), r.backend, "-", "-", "-", "-", "-", skipped])
                    continue
                rows.append(
                    [
                        str(batch),
                        r.backend,
                        f"{r.p50_ms:.2f}",
                        f"{r.p90_ms:.2f}",
                        f"{r.images_per_s:,.0f}",
                        _ratio(r, anchor),
                        _ratio(r, ort),
                        f"{r.max_abs_diff:.1e}",
                    ]
                )
        align = ["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:"]
        lines = [headers, align, *rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)

    def _maybe(self, backend: str, batch: int) -> BackendResult | None:
        try:
            r = self.result(backend, batch)
        except KeyError:
            return None
        return None if r.skipped else r


def _ratio(r: BackendResult, ref: BackendResult | None) -> str:
    """Speed of ``r`` relative to ``ref`` from p50 latencies (>1: ``r`` is faster)."""
    if ref is None or not r.p50_ms:
        return "-"
    return f"{ref.p50_ms / r.p50_ms:.2f}"


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values), q))


def prepare_backend(
    name: str,
    model: ResNet,
    example: Tensor,
    workdir: Path,
    calibration: Callable[[], list[np.ndarray]],
    threads: int = 0,
) -> Runner:
    """A function running one batch on backend ``name``, warmed up on ``example``.

    ``threads`` sets ONNX Runtime's intra-op threads (0: its default, one per physical core);
    PyTorch's are set once for the process.

    Raises:
        BackendUnavailable: the backend cannot run this model here; the message says why.
        ValueError: an unknown backend name.
    """
    import torch

    model = copy.deepcopy(model).cpu().float().eval().requires_grad_(False)
    if name == "eager":
        return _torch_runner(model, channels_last=False)
    if name == "channels_last":
        return _torch_runner(model.to(memory_format=torch.channels_last), channels_last=True)
    if name == "bf16":
        return _torch_runner(
            model.to(memory_format=torch.channels_last), channels_last=True, bf16=True
        )
    if name == "compile":
        return _optimized_runner(model, example, "inductor")
    if name == "onednn-graph":
        return _optimized_runner(model, example, "onednn-graph")
    if name == "torchvision":
        return _torch_runner(_torchvision_twin(model), channels_last=False)
    if name in ("ort", "ort-int8"):
        return _ort_runner(name, model, workdir, calibration, threads, example.shape[-1])
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def _torch_runner(model: nn.Module, *, channels_last: bool, bf16: bool = False) -> Runner:
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(x.contiguous(memory_format=fmt))

    return run


def _optimized_runner(model: ResNet, example: Tensor, method: Method) -> Runner:
    from resnetkit.export.cpu import CPUOptimizationError, optimize_for_cpu

    try:
        return optimize_for_cpu(model, example, method)
    except CPUOptimizationError as err:
        raise BackendUnavailable(str(err)) from None


def _torchvision_twin(model: ResNet) -> nn.Module:
    """torchvision's own model of the same architecture, holding the same weights."""
    import torchvision

    from resnetkit.interop import to_torchvision

    try:
        state = to_torchvision(model)
    except ValueError as err:
        raise BackendUnavailable(f"torchvision has no such model ({err})") from None
    arch = model.name.split(".")[0]
    builder = getattr(torchvision.models, arch, None)
    if builder is None:
        raise BackendUnavailable(f"torchvision.models has no {arch!r}")
    twin = builder(num_classes=model.num_classes)
    try:
        twin.load_state_dict(state)
    except RuntimeError as err:
        raise BackendUnavailable(f"torchvision's {arch} differs from this model: {err}") from None
    return twin.eval().requires_grad_(False)


def _ort_runner(
    name: str,
    model: ResNet,
    workdir: Path,
    calibration: Callable[[], list[np.ndarray]],
    threads: int,
    size: int,
) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable(
            "needs onnx and onnxruntime (pip install resnetkit[export])"
        ) from None
    from resnetkit.export.exporter import export_model
    from resnetkit.export.quantize import quantize_onnx

    fp32 = workdir / f"model-{size}.fp32.onnx"  # at the size measured (--input-size)
    if not fp32.exists():
        export_model(model, "onnx", fp32, dynamic_batch=True, input_size=size)
    path = fp32
    if name == "ort-int8":
        path = quantize_onnx(fp32, workdir / f"model-{size}.int8.onnx", calibration())
    options = ort.SessionOptions()  # the defaults: all graph optimisations
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: Tensor) -> Any:
        return session.run(None, {input_name: x.contiguous().numpy()})

    return run


def bench_model(
    model: ResNet,
    *,
    name: str = "",
    backends: Sequence[str] = DEFAULT_BACKENDS,
    batch_sizes: Sequence[int] = (1,),
    input_size: int | None = None,
    iters: int = 20,
    warmup: int = 3,
    rounds: int = 3,
    threads: int = 0,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> BenchReport:
    """Measure ``model`` on every backend at every batch size (see the module docstring).

    Args:
        model: a resnetkit ResNet (its weights are what every backend runs).
        backends: which of :data:`BACKENDS`, in any order.
        batch_sizes: one measurement per backend per batch size.
        input_size: side of the square input; default the model's own.
        iters: timed calls per backend per round; ``rounds`` rounds, ``warmup`` untimed calls
            before each backend's first round.
        threads: torch and ONNX Runtime intra-op threads (0: their defaults, one per core).

    Returns:
        The report; backends that cannot run here are listed with the reason, not dropped.
    """
    import torch

    from resnetkit.models.loading import preprocessing_of

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(
            f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}"
        )
    # Each measured once: a second row of the same name would leave the first one empty.
    names, sizes = list(backends), list(batch_sizes)
    twice = [str(v) for v in sorted({b for b in names if names.count(b) > 1})]
    twice += [f"batch size {v}" for v in sorted({b for b in sizes if sizes.count(b) > 1})]
    if twice:
        raise ValueError(f"{', '.join(twice)} given twice: give each once")
    for value, what in ((iters, "iters"), (rounds, "rounds")):
        if value <= 0:
            raise ValueError(f"{what} must be positive, got {value}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not batch_sizes or min(batch_sizes) <= 0:
        raise ValueError(f"batch sizes must be positive, got {list(batch_sizes)}")
    if threads:
        torch.set_num_threads(threads)
    size = int(input_size or preprocessing_of(model)["input_size"])
    generator = torch.Generator().manual_seed(seed)
    in_chans = model.config.in_chans
    anchor = "torchvision" if "torchvision" in backends else backends[0]
    cached_calibration: list[list[np.ndarray]] = []

    def calibration() -> list[np.ndarray]:
        if not cached_calibration:
            cached_calibration.append(_calibration(model, size))
        return cached_calibration[0]

    results: list[BackendResult] = []
    with tempfile.TemporaryDirectory(prefix="resnetkit-bench-") as tmp:
        for batch in batch_sizes:
            x = torch.randn(batch, in_chans, size, size, generator=generator)
            with torch.inference_mode():
                reference = model.eval()(x).float()
            runners: dict[str, Runner] = {}
            by_name: dict[str, BackendResult] = {}
            for backend in backends:
                result = BackendResult(backend, batch)
                results.append(result)
                by_name[backend] = result
                start = time.perf_counter()
                try:
                    runner = prepare_backend(backend, model, x, Path(tmp), calibration, threads)
                    for _ in range(warmup):
                        runner(x)
                    result.max_abs_diff = _max_abs_diff(runner(x), reference)
                except BackendUnavailable as err:
                    result.skipped = str(err)
                    log(f"batch {batch} {backend}: skipped ({err})")
                    continue
                except Exception as err:  # one broken path must not lose the others' numbers
                    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                    result.skipped = f"failed: {type(err).__name__}: {first}"
                    log(f"batch {batch} {backend}: {result.skipped}")
                    continue
                result.setup_s = time.perf_counter() - start
                runners[backend] = runner
            for r in range(rounds):
                order = list(runners)
                order = order[r % len(order) :] + order[: r % len(order)] if order else order
                for backend in order:
                    times = _time_calls(runners[backend], x, iters)
                    by_name[backend].latencies_ms.extend(times)
                    log(
                        f"batch {batch} round {r + 1}/{rounds} {backend}: "
                        f"p50 {statistics.median(times):.2f} ms"
                    )
    # The anchor is the first backend that ran (torchvision when it did): a skipped one has
    # no numbers to divide by.
    ran = [b for b in backends if any(r.backend == b and r.latencies_ms for r in results)]
    if ran:
        anchor = "torchvision" if "torchvision" in ran else ran[0]
    return BenchReport(
        model=name or model.name,
        input_size=size,
        threads=torch.get_num_threads(),
        results=results,
        anchor=anchor,
    )


def _max_abs_diff(output: Any, reference: Tensor) -> float:
    import torch

    if isinstance(output, (list, tuple)):  # ONNX Runtime returns a list of arrays
        output = output[0]
    got = output if isinstance(output, torch.Tensor) else torch.as_tensor(np.asarray(output))
    return float((got.float() - reference).abs().max())


def _time_calls(runner: Runner, x: Tensor, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _calibration(model: ResNet, size: int) -> list[np.ndarray]:
    """Real photos (the bundled CIFAR-10 sample) preprocessed as ``model`` expects them, at
    ``size`` pixels: what static int8 quantisation calibrates its activation ranges on."""
    from resnetkit.export.quantize import calibration_batches

    return calibration_batches(
        model, "cifar10-sample", ".", count=128, batch_size=16, input_size=size
    )
