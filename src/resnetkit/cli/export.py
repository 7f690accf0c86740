"""``resnetkit export``: write ONNX, TorchScript or an ExportedProgram, verified on the spot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnetkit.cli.common import add_model_args, output_file, positive_float, positive_int

FORMAT_CHOICES = ("onnx", "torchscript", "exported-program", "tflite", "coreml")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export",
        help="export a trained model to ONNX, TorchScript, ExportedProgram, TFLite or Core ML, "
        "verified",
        description="Export a trained model, then load the written file back in its runtime "
        "(ONNX Runtime, torch.jit, torch.export, the LiteRT interpreter), run it on a real photo "
        "and on random input and compare with eager PyTorch. Exits with status 2 if they differ "
        "by more than the tolerance. tflite needs resnetkit[tflite], coreml resnetkit[coreml]; "
        "Core ML files can only be run (and so verified) on macOS.",
    )
    add_model_args(p)
    p.add_argument("--format", dest="fmt", required=True, choices=FORMAT_CHOICES)
    p.add_argument(
        "--out",
        required=True,
        type=_export_target,
        help="file to write (.onnx, .ts, .pt2, .tflite, .mlpackage)",
    )
    p.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="accept any batch size (verified at batch sizes 1 and 3)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    p.add_argument(
        "--no-fold-bn",
        dest="fold_bn",
        action="store_false",
        help="keep BatchNorm layers instead of folding them into the convolutions",
    )
    p.add_argument("--input-size", type=positive_int, default=None, help="default: the model's")
    p.add_argument(
        "--image", type=Path, default=None, help="photo for the check (default: bundled cat.png)"
    )
    p.add_argument(
        "--tolerance",
        type=positive_float,
        default=None,
        help="largest accepted |exported - eager| on any output (default: 1e-4; 0.1 with --half)",
    )
    p.add_argument(
        "--half",
        action="store_true",
        help="ONNX: float16 weights and activations (half the file), float32 inputs and "
        "outputs; verified against the float32 model",
    )
    p.set_defaults(func=run_export)


def _export_target(text: str) -> Path:
    # A Core ML package is a folder, which a new export may replace.
    return Path(text) if text.endswith(".mlpackage") else output_file(text)


#: How the files ``export`` writes begin: only such a file is replaced by a new export.
_EXPORT_MAGIC = (b"PK\x03\x04", b"\x08")  # zip (TorchScript, ExportedProgram), ONNX protobuf


def _check_not_an_input(out: Path, model: str) -> None:
    """``--out`` is neither the model being exported (or a file of its directory) nor some
    other file: an existing file is replaced only when it is an earlier export."""
    source = Path(model).expanduser()
    target = out.resolve()
    if source.exists() and (target == source.resolve() or source.resolve() in target.parents):
        raise ValueError(f"--out {out} is (inside) the model being exported: write elsewhere")
    if out.is_file() and out.suffix.lower() in (".onnx", ".ts", ".pt2"):
        with out.open("rb") as f:
            head = f.read(4)
        if head and not head.startswith(_EXPORT_MAGIC):
            raise ValueError(
                f"--out {out} exists and is not an exported model: choose another name "
                "(nothing was overwritten)"
            )
    elif out.is_file() and out.suffix.lower() not in (".tflite",):
        raise ValueError(
            f"--out {out} exists and its name is not an export's (.onnx, .ts, .pt2, .tflite, "
            ".mlpackage): choose another name (nothing was overwritten)"
        )


def run_export(args: argparse.Namespace) -> int:
    from resnetkit.export.exporter import ExportVerificationError, export_model, named_target
    from resnetkit.models.loading import load_model

    named_target(args.out, args.fmt, "export", any_suffix=True)  # before the model is loaded
    _check_not_an_input(args.out, args.model)
    model = load_model(args.model, arch=args.arch)
    try:
        report = export_model(
            model,
            args.fmt,
            args.out,
            dynamic_batch=args.dynamic_batch,
            opset=args.opset,
            fold_bn=args.fold_bn,
            input_size=args.input_size,
            image=args.image,
            tolerance=args.tolerance,
            half=args.half,
        )
    except ExportVerificationError as err:
        print(err.report.summary())
        print(f"resnetkit export: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"resnetkit export: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
