"""Export a model to ONNX, TorchScript, a torch.export ExportedProgram, TensorFlow Lite or
Core ML, and prove it right.

Every export is verified on the spot: the written file is loaded back in the runtime that will
serve it (ONNX Runtime on the CPU, ``torch.jit.load``, ``torch.export.load``, the LiteRT
interpreter), run on a real photo and on random input, and compared with the eager PyTorch
model in float32. With a dynamic batch the same file is run at two batch sizes, so a batch
dimension that was silently frozen during export is caught here rather than in production.

Core ML is the exception: Apple's runtime exists only on macOS, so elsewhere the ``.mlpackage``
is converted and read back (its input shape checked) but not run, and the report says so.
TensorFlow Lite needs ``pip install 'resnetkit[tflite]'`` (litert-torch), Core ML
``pip install 'resnetkit[coreml]'`` (coremltools); both files have a fixed batch size.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import torch
from torch import Tensor, nn

from resnetkit.export.fold import count_batchnorms, fold_batchnorm
from resnetkit.export.metadata import EXTRA_FILE, add_onnx_metadata, metadata_text
from resnetkit.models.resnet import ResNet

Format = Literal["onnx", "torchscript", "exported-program", "tflite", "coreml"]
FORMATS: tuple[str, ...] = get_args(Format)
SUGGESTED_SUFFIX = {
    "onnx": ".onnx",
    "torchscript": ".ts",
    "exported-program": ".pt2",
    "tflite": ".tflite",
    "coreml": ".mlpackage",
}
# Suffixes that name one format only (.pt and .pth are left alone: state dicts use them too).
SUFFIX_FORMATS = {suffix: fmt for fmt, suffix in SUGGESTED_SUFFIX.items()}
FORMAT_NOUNS = {
    "onnx": "an ONNX file",
    "torchscript": "a TorchScript file",
    "exported-program": "an ExportedProgram file",
    "tflite": "a TFLite file",
    "coreml": "a Core ML package (a folder)",
}
#: ONNX opset used when none is given: the dynamo exporter's default, well inside ONNX
#: Runtime's support and the TorchScript-based exporter's range.
DEFAULT_OPSET = 18
#: The opsets this PyTorch writes ResNets at (both exporters tried, 2026-11).
OPSET_RANGE = (11, 23)
#: Largest accepted |exported - eager| on any output element (float32 logits).
DEFAULT_TOLERANCE = 1e-4
#: The default with ``half``: float16 keeps about 3 significant digits of each logit.
HALF_TOLERANCE = 0.1
#: Batch sizes run on the same file: one, and a size no exporter would pick as its example.
DYNAMIC_BATCH_SIZES = (1, 3)
DEFAULT_IMAGE = "cat.png"  # a real 32x32 photo bundled in resnetkit.assets

Runner = Callable[[Tensor], list[Tensor]]


def named_target(out: str | Path, fmt: str, command: str, *, any_suffix: bool = False) -> Path:
    """``out`` as the name of the ``fmt`` file that ``command`` writes: it must end in the
    format's suffix (with ``any_suffix``, in some suffix: export leaves ``.pt`` to the user),
    as runtimes, ``serve`` and ``evaluate`` know exported files by their suffix.

    Raises:
        ValueError: another name, with the one to use instead.
    """
    out = Path(out)
    suffix = SUGGESTED_SUFFIX[fmt]
    if out.suffix.lower() == suffix or (any_suffix and out.suffix):
        return out
    # another format's suffix is replaced (as export suggests); any other name is kept whole
    name = out.with_suffix(suffix) if out.suffix.lower() in SUFFIX_FORMATS else f"{out}{suffix}"
    need = f"needs a suffix (usually {suffix})" if any_suffix else f"must end in {suffix}"
    raise ValueError(
        f"{out}: {command} writes {FORMAT_NOUNS[fmt]}, and its name {need}: name it {name}"
    )


class ExportVerificationError(RuntimeError):
    """The exported file does not reproduce the eager model.

    Attributes:
        report: the measurements, as for a successful export.
    """

    def __init__(self, message: str, report: ExportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely it matches the eager model.

    Attributes:
        path: the exported file.
        format: "onnx", "torchscript" or "exported-program".
        exporter: the code path that wrote the file, e.g. ``torch.onnx.export(dynamo=False)``.
        size_bytes: size of the file.
        input_shape: the input the file accepts; "batch" marks a dynamic batch dimension.
        batch_sizes: batch sizes run on the exported file.
        max_abs_diff_image: largest |exported - eager| on the real photo.
        max_abs_diff_random: largest |exported - eager| on standard-normal input.
        float32_noise: largest |eager float32 - eager float64| on the random input: how far
            PyTorch itself is from exact arithmetic, the scale below which differences are
            rounding, not a broken export.
        tolerance: the accepted maximum of both differences.
        folded_batchnorms: BatchNorm layers folded into convolutions (0 without folding).
        opset: ONNX opset (None for the other formats).
        notes: what else the user should know (fallbacks taken, deprecations).
        ran: whether the file was run at all (False for Core ML away from macOS: then the
            differences are NaN and nothing about the outputs is known).
    """

    path: Path
    format: str
    exporter: str
    size_bytes: int
    input_shape: tuple[int | str, ...]
    batch_sizes: tuple[int, ...]
    max_abs_diff_image: float
    max_abs_diff_random: float
    float32_noise: float
    tolerance: float
    folded_batchnorms: int
    opset: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    ran: bool = True

    @property
    def max_abs_diff(self) -> float:
        return max(self.max_abs_diff_image, self.max_abs_diff_random)

    @property
    def passed(self) -> bool:
        """The file ran and matched the eager model (False when it could not be run)."""
        return self.ran and self.max_abs_diff <= self.tolerance

    def summary(self) -> str:
        """A few lines for people: the file, its size and the verification results."""
        shape = "(" + ", ".join(str(d) for d in self.input_shape) + ")"
        opset = f", opset {self.opset}" if self.opset is not None else ""
        verdict = "ok" if self.passed else "FAILED"
        if not self.ran:
            verdict = "NOT VERIFIED (the file could not be run here)"
        lines = [
            f"{self.path} ({self.size_bytes / 1e6:.2f} MB, {self.format}{opset})",
            f"  exporter        {self.exporter}",
            f"  input           {shape}",
            f"  batchnorm       {self.folded_batchnorms} layers folded into convolutions",
            f"  verified at     batch sizes {', '.join(map(str, self.batch_sizes))}",
            f"  max |diff|      real image {self.max_abs_diff_image:.2e}, "
            f"random input {self.max_abs_diff_random:.2e} "
            f"(tolerance {self.tolerance:.3g}): {verdict}",
            f"  float32 noise   {self.float32_noise:.2e} (eager float32 vs float64)",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def export_model(
    model: nn.Module,
    fmt: Format,
    out: str | Path,
    *,
    dynamic_batch: bool = False,
    opset: int | None = None,
    fold_bn: bool = True,
    input_size: int | None = None,
    image: str | Path | Tensor | None = None,
    tolerance: float | None = None,
    half: bool = False,
) -> ExportReport:
    """Export ``model`` to ``out`` and verify the file against the eager model.

    The model is exported on the CPU in float32 and eval mode; it is not modified. The file is
    then loaded back (ONNX Runtime ``CPUExecutionProvider``, ``torch.jit.load`` or
    ``torch.export.load``) and run on a real photo and on random input, at batch sizes 1 and 3
    with ``dynamic_batch``, else at batch size 1.

    Args:
        model: a resnetkit model (``fold_bn`` needs a :class:`ResNet`).
        fmt: "onnx", "torchscript" or "exported-program".
        out: the file to write (parent folders are created). Suggested suffixes: ``.onnx``,
            ``.ts``, ``.pt2``; another format's suffix is refused. ONNX, TorchScript and
            ExportedProgram files carry the class names and preprocessing (see
            :func:`~resnetkit.export.metadata.read_metadata`).
        dynamic_batch: make the batch dimension dynamic, and prove it by running two sizes.
        opset: ONNX opset (default 18); only for "onnx".
        fold_bn: fold BatchNorm into the preceding convolutions first (see
            :func:`~resnetkit.export.fold.fold_batchnorm`).
        input_size: side of the square input; default the model's ``input_size`` from
            :func:`~resnetkit.models.loading.preprocessing_of`.
        image: the real image for the check: a file (resized to ``input_size`` and normalised
            with the model's mean/std) or an already preprocessed (C, H, W) or (1, C, H, W)
            tensor. Default: the bundled ``cat.png``.
        tolerance: the largest accepted |exported - eager| on any output value; default
            :data:`DEFAULT_TOLERANCE`, or :data:`HALF_TOLERANCE` with ``half``.
        half: ONNX only: weights and activations in float16 (half the file; its speed is
            not measured here), inputs and outputs still float32 (a Cast at each end), so
            every consumer of the float32 file takes this one unchanged. Verified against
            the float32 eager model.

    Returns:
        The report; the file is at ``report.path``.

    Raises:
        ExportVerificationError: the file's outputs differ from eager PyTorch by more than
            ``tolerance`` (the file is kept for inspection; the message gives the difference).
        ValueError: an unknown format, a name without a suffix, ``opset`` with a format other
            than ONNX, or an image that does not fit the model.
        ImportError: "onnx" without onnx and onnxruntime installed (``resnetkit[export]``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise ValueError(f"--opset applies to ONNX only, not to {fmt}")
    if opset is not None and not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(
            f"opset {opset} cannot be written here: choose {OPSET_RANGE[0]} to {OPSET_RANGE[1]} "
            f"(default {DEFAULT_OPSET})"
        )
    if half and fmt != "onnx":
        raise ValueError(f"--half applies to ONNX only, not to {fmt}")
    if tolerance is None:
        tolerance = HALF_TOLERANCE if half else DEFAULT_TOLERANCE
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
    if input_size is not None and input_size < 1:
        raise ValueError(f"input_size must be at least 1 pixel, got {input_size}")
    if fmt != "coreml" and Path(out).is_dir():  # found out before the export, not after it
        raise IsADirectoryError(f"{out} is a folder: give a file name such as model.onnx")
    named_target(out, fmt, "export", any_suffix=True)
    if fmt in FIXED_BATCH_FORMATS and dynamic_batch:
        raise ValueError(
            f"{fmt} files have a fixed batch size here: export without --dynamic-batch "
            "(batch size 1), or use onnx or exported-program for a dynamic batch"
        )
    suffix_says = SUFFIX_FORMATS.get(Path(out).suffix.lower())
    if suffix_says and suffix_says != fmt:  # an .onnx name holding TorchScript misleads
        raise ValueError(
            f"{out}: the name says {suffix_says}, the format is {fmt}: name it "
            f"{Path(out).with_suffix(SUGGESTED_SUFFIX[fmt]).name}, or pass --format {suffix_says}"
        )
    if fmt in OPTIONAL_FORMATS:
        _require(fmt)
    from resnetkit.models.loading import preprocessing_of

    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and moved onto it once verified: a file that fails the check
    # never replaces an earlier (verified) one. Its own name, in a hidden folder, as TorchScript
    # and ExportedProgram archives name their members after the file (m/..., not
    # m.unverified/...). A Core ML package is a folder: written in place.
    staging = target.with_name(f".{target.name}.unverified")
    if fmt != "coreml":
        staging.mkdir(exist_ok=True)
    out = target if fmt == "coreml" else staging / target.name
    cfg = preprocessing_of(model)
    if half:  # float16 steps of ~5e-4 near 1: a threshold chosen in float32 does not hold
        cfg.pop("min_confidence", None)
    size = int(input_size or cfg["input_size"])
    meta = metadata_text(model, cfg, size)  # classes and preprocessing travel with the file
    in_chans = _in_chans(model)
    # The reference is the eager model as the user has it, in float32 on the CPU, unfolded.
    reference = copy.deepcopy(model).cpu().float().eval().requires_grad_(False)
    to_export: nn.Module = reference
    folded = 0
    if fold_bn:
        if not isinstance(reference, ResNet):
            raise ValueError(f"fold_bn needs a resnetkit ResNet, got {type(model).__name__}")
        to_export = fold_batchnorm(reference)
        folded = count_batchnorms(reference) - count_batchnorms(to_export)

    # Read before anything is written: a bad photo must not leave a half-checked file at out.
    photo = _image_tensor(image, cfg, size, in_chans)
    # Tracing at batch size 1 lets exporters treat the batch as the constant 1.
    example = torch.randn(2 if dynamic_batch else 1, in_chans, size, size)
    notes: list[str] = []
    if half:
        to_export = _HalfInside(to_export)
        notes.append("float16 weights and activations; float32 inputs and outputs")
    if fmt == "onnx":
        requested = opset or DEFAULT_OPSET
        exporter = _export_onnx(to_export, example, out, dynamic_batch, requested, notes)
        add_onnx_metadata(out, meta)
        # The dynamo exporter writes its own opset and converts afterwards, which can fail
        # (it then only logs): report what the file really declares.
        opset = _onnx_opset(out)
        if opset != requested:
            notes.append(f"opset {requested} was requested; the file declares opset {opset}")
    elif fmt == "torchscript":
        exporter = _export_torchscript(to_export, example, out, notes, meta)
    elif fmt == "tflite":
        exporter = _export_tflite(to_export, example, out)
    elif fmt == "coreml":
        exporter = _export_coreml(to_export, example, out)
    else:
        exporter = _export_program(to_export, example, out, dynamic_batch, meta)

    try:
        runner = load_exported(out, fmt)
    except CannotRunHere as why:
        notes.append(str(why))
        _move_verified(out, target, staging)
        return ExportReport(
            path=target,
            format=fmt,
            exporter=exporter,
            size_bytes=_size(target),
            input_shape=(1, in_chans, size, size),
            batch_sizes=(),
            max_abs_diff_image=float("nan"),
            max_abs_diff_random=float("nan"),
            float32_noise=_float32_noise(reference, torch.randn(1, in_chans, size, size)),
            tolerance=tolerance,
            folded_batchnorms=folded,
            notes=tuple(notes),
            ran=False,
        )
    batch_sizes = DYNAMIC_BATCH_SIZES if dynamic_batch else (1,)
    generator = torch.Generator().manual_seed(0)
    diff_image = diff_random = 0.0
    random_inputs = []
    for batch in batch_sizes:
        # Alternate the photo with its mirror image so that rows of a batch differ.
        photos = torch.cat([photo, photo.flip(-1)] * batch)[:batch]
        noise = torch.randn(batch, in_chans, size, size, generator=generator)
        random_inputs.append(noise)
        diff_image = max(diff_image, _max_abs_diff(runner(photos), _eager(reference, photos)))
        diff_random = max(diff_random, _max_abs_diff(runner(noise), _eager(reference, noise)))

    report = ExportReport(
        path=target,
        format=fmt,
        exporter=exporter,
        size_bytes=_size(out),
        input_shape=("batch" if dynamic_batch else 1, in_chans, size, size),
        batch_sizes=tuple(batch_sizes),
        max_abs_diff_image=diff_image,
        max_abs_diff_random=diff_random,
        float32_noise=_float32_noise(reference, random_inputs[0]),
        tolerance=tolerance,
        folded_batchnorms=folded,
        opset=opset if fmt == "onnx" else None,
        notes=tuple(notes),
    )
    if not report.passed:
        kept = (
            f"{target} was left as it was; the failed export is kept for inspection at {out}"
            if out != target
            else "The file is kept for inspection"
        )
        raise ExportVerificationError(
            f"the {fmt} export does not reproduce the eager model: max |exported - eager| is "
            f"{diff_image:.3e} on the real image and {diff_random:.3e} on random input, above "
            f"the tolerance {tolerance:.3g} (PyTorch's own float32 rounding here: "
            f"{report.float32_noise:.1e}). {kept}; "
            + (
                "that is within 10x PyTorch's own rounding (large outputs round coarsely): "
                f"accept it with --tolerance {report.max_abs_diff:.1e}"
                if report.max_abs_diff <= 10 * report.float32_noise
                else "try another format or opset, or export without BatchNorm folding"
            )
            + ".",
            replace(report, path=out),
        )
    if out != target:
        del runner  # an ONNX Runtime session may hold the file open
        _move_verified(out, target, staging)
    return report


def _move_verified(out: Path, target: Path, staging: Path) -> None:
    """Move the file at ``out`` onto ``target`` and remove the folder it was written in."""
    if out == target:
        return
    os.replace(out, target)
    shutil.rmtree(staging, ignore_errors=True)


def load_exported(path: str | Path, fmt: Format) -> Runner:
    """Load an exported file in its runtime, as a function from a float32 batch to outputs.

    Args:
        path: a file written by :func:`export_model`.
        fmt: its format.

    Returns:
        A function taking an (N, C, H, W) float32 tensor and returning the model's outputs as
        a list of CPU tensors (one for a classifier).
    """
    path = Path(path)
    if fmt == "onnx":
        _require(fmt)
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        def run_onnx(x: Tensor) -> list[Tensor]:
            outputs = session.run(None, {input_name: x.detach().cpu().float().numpy()})
            return [torch.from_numpy(np.asarray(o)) for o in outputs]

        return run_onnx
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            module: Callable[[Tensor], Any] = torch.jit.load(str(path), map_location="cpu")
    elif fmt == "exported-program":
        module = torch.export.load(str(path)).module()
    elif fmt == "tflite":
        return _tflite_runner(path)
    elif fmt == "coreml":
        return _coreml_runner(path)
    else:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")

    def run_torch(x: Tensor) -> list[Tensor]:
        with torch.no_grad():
            return _as_list(module(x))

    return run_torch


class CannotRunHere(RuntimeError):
    """The exported file is fine but its runtime does not exist on this platform."""


#: Formats whose converters or runtimes are optional extras: name shown, the modules they need
#: and the extra that installs them.
OPTIONAL_FORMATS = {
    "onnx": ("ONNX", ("onnx", "onnxruntime"), "export"),
    "tflite": ("tflite", ("litert_torch",), "tflite"),
    "coreml": ("coreml", ("coremltools",), "coreml"),
}
FIXED_BATCH_FORMATS = ("tflite", "coreml")


def _require(fmt: str) -> None:
    label, modules, extra = OPTIONAL_FORMATS[fmt]
    missing = [m.replace("_", "-") for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        where = ""
        if extra == "tflite":  # its pins would break the serve extra in the same environment
            where = (
                " in a separate virtual environment (litert-torch pins pydantic and "
                "typing-extensions below what `resnetkit serve` needs; `make test-extras` "
                "builds one in .venv-extras)"
            )
        raise ImportError(
            f"{label} export needs {' and '.join(missing)}: pip install 'resnetkit[{extra}]'{where}"
        )


def _size(path: Path) -> int:
    """Bytes of a file, or of everything in a directory (a Core ML .mlpackage)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _export_tflite(model: nn.Module, example: Tensor, out: Path) -> str:
    import litert_torch

    litert_torch.convert(model, (example,)).export(str(out))
    return f"litert_torch.convert (litert-torch {_version('litert-torch')})"


def _tflite_runner(path: Path) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    expected = tuple(int(d) for d in source["shape"])

    def run_tflite(x: Tensor) -> list[Tensor]:
        if tuple(x.shape) != expected:
            raise ValueError(f"{path} takes inputs of shape {expected}, got {tuple(x.shape)}")
        interpreter.set_tensor(source["index"], x.detach().cpu().float().numpy())
        interpreter.invoke()
        return [torch.from_numpy(np.array(interpreter.get_tensor(o["index"]))) for o in outputs]

    return run_tflite


def _export_coreml(model: nn.Module, example: Tensor, out: Path) -> str:
    import coremltools as ct

    if out.suffix != ".mlpackage":
        raise ValueError(f"a Core ML model is a .mlpackage directory; name it so, not {out.name}")
    program = torch.export.export(model, (example,)).run_decompositions({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ct.convert(
            program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16
        )
    converted.save(str(out))
    return f"coremltools.convert (coremltools {_version('coremltools')}, mlprogram, iOS 16+)"


def _coreml_runner(path: Path) -> Runner:
    import platform

    import coremltools as ct

    # Reading the spec works everywhere: check the input is what was exported.
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    (source,) = spec.description.input
    shape = tuple(int(d) for d in source.type.multiArrayType.shape)
    if platform.system() != "Darwin":
        raise CannotRunHere(
            f"Core ML models run only on macOS (Apple's Core ML framework); the .mlpackage was "
            f"converted and read back (input {source.name!r} of shape {shape}) but not run here. "
            "Run the same export on a Mac to verify it."
        )
    model = ct.models.MLModel(str(path))  # pragma: no cover - macOS only
    names = [o.name for o in spec.description.output]  # pragma: no cover

    def run_coreml(x: Tensor) -> list[Tensor]:  # pragma: no cover - macOS only
        result = model.predict({source.name: x.detach().cpu().float().numpy()})
        return [torch.from_numpy(np.asarray(result[n], dtype=np.float32)) for n in names]

    return run_coreml  # pragma: no cover


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown version"


def _onnx_opset(path: Path) -> int | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _in_chans(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "in_chans", 3))


def _output_names(model: nn.Module, example: Tensor) -> list[str]:
    with torch.no_grad():
        count = len(_as_list(model(example)))
    if count > 1:
        return [f"features{i}" for i in range(count)]
    return ["logits" if getattr(model, "num_classes", 1) > 0 else "features"]


def _export_onnx(
    model: nn.Module,
    example: Tensor,
    out: Path,
    dynamic_batch: bool,
    opset: int,
    notes: list[str],
) -> str:
    """Write ONNX with the dynamo exporter if it is available, else the TorchScript-based one."""
    names = _output_names(model, example)
    if importlib.util.find_spec("onnxscript") is None:
        notes.append(
            "the dynamo ONNX exporter needs onnxscript, which is not installed: used the "
            "TorchScript-based exporter"
        )
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (example,),
                    str(out),
                    dynamo=True,
                    verbose=False,  # no progress lines on stdout
                    opset_version=opset,
                    input_names=["input"],
                    output_names=names,
                    dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None,
                    external_data=False,
                )
        except Exception as err:  # any failure of the new exporter: fall back to the old one
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            notes.append(
                f"the dynamo ONNX exporter failed ({type(err).__name__}: {reason[:200]}): used "
                "the TorchScript-based exporter"
            )
        else:
            # It exports at its own opset and converts afterwards; a failed conversion is only
            # logged, leaving the file at another opset than asked for.
            written = _onnx_opset(out)
            if written == opset:
                return "torch.onnx.export(dynamo=True)"
            notes.append(
                f"the dynamo ONNX exporter wrote opset {written} instead of {opset}: used the "
                "TorchScript-based exporter"
            )
    axes = {name: {0: "batch"} for name in ["input", *names]} if dynamic_batch else None
    # The tracer warns about the model's Python input checks and the legacy exporter about
    # its own deprecation; whether the file is right is what the verification decides.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(out),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=names,
                dynamic_axes=axes,
            )
    except OSError:  # the file cannot be written: say so, not something about opsets
        raise
    except Exception as err:  # both exporters failed: most often an opset they cannot write
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ValueError(
            f"ONNX export at opset {opset} failed ({type(err).__name__}: {reason}); the "
            f"default, {DEFAULT_OPSET}, works, as do 11 to 23 with this PyTorch"
        ) from None
    return "torch.onnx.export(dynamo=False)"


class _HalfInside(nn.Module):
    """``model`` in float16 behind float32 inputs and outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half()

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x.half())
        if isinstance(out, Tensor):
            return out.float()
        return [t.float() for t in out]  # type: ignore[return-value]


def _export_torchscript(
    model: nn.Module, example: Tensor, out: Path, notes: list[str], meta: str
) -> str:
    # Tracing records the tensor operations; the Python input checks become constants. The
    # batch size is not baked in (no operation depends on it), which the verification proves.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={EXTRA_FILE: meta})
    notes.append("TorchScript is deprecated in recent PyTorch; prefer exported-program or onnx")
    return "torch.jit.trace"


def _export_program(
    model: nn.Module, example: Tensor, out: Path, dynamic_batch: bool, meta: str
) -> str:
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(out), extra_files={EXTRA_FILE: meta})
    return "torch.export.export"


def _as_list(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Sequence):
        return [cast(Tensor, o) for o in output]
    raise TypeError(f"expected a tensor or a list of tensors as model output, got {type(output)}")


def _eager(model: nn.Module, x: Tensor) -> list[Tensor]:
    with torch.no_grad():
        return _as_list(model(x))


def _max_abs_diff(got: list[Tensor], want: list[Tensor]) -> float:
    """Largest |got - want| over all outputs; infinite for a shape mismatch or a NaN."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return float("inf")
        if w.numel():
            diff = float((g.double() - w.double()).abs().max())
            worst = max(worst, diff if np.isfinite(diff) else float("inf"))
    return worst


def _float32_noise(reference: nn.Module, x: Tensor) -> float:
    exact = copy.deepcopy(reference).double()
    return _max_abs_diff(_eager(reference, x), _eager(exact, x.double()))


def _image_tensor(
    image: str | Path | Tensor | None, cfg: dict[str, Any], size: int, in_chans: int
) -> Tensor:
    """The real image as a normalised (1, C, size, size) float32 batch."""
    if isinstance(image, Tensor):
        x = image.detach().cpu().float()
        x = x.unsqueeze(0) if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1:] != (in_chans, size, size):
            raise ValueError(
                f"image tensor has shape {tuple(image.shape)}; expected a preprocessed "
                f"({in_chans}, {size}, {size}) or (1, {in_chans}, {size}, {size}) tensor"
            )
        return x
    if in_chans not in (1, 3):
        raise ValueError(
            f"the model takes {in_chans} input channels, so a photo cannot check it: pass "
            f"image= as a preprocessed ({in_chans}, {size}, {size}) tensor"
        )
    from PIL import Image

    from resnetkit.data.images import load_image
    from resnetkit.predict import channel_stats_for

    if image is None:
        with resources.as_file(resources.files("resnetkit.assets") / DEFAULT_IMAGE) as path:
            pil = load_image(path)
    else:
        pil = load_image(image)
    if in_chans == 1:  # a grayscale model: the photo's luminance
        pil = pil.convert("L")
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(pil, dtype=np.float32).reshape(size, size, in_chans) / 255.0
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    mean = torch.tensor(channel_stats_for(cfg["mean"], in_chans)).view(in_chans, 1, 1)
    std = torch.tensor(channel_stats_for(cfg["std"], in_chans)).view(in_chans, 1, 1)
    return ((x - mean) / std).unsqueeze(0)
