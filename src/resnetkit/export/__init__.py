"""Deployment: BatchNorm folding, export to ONNX, TorchScript or ExportedProgram with an
on-the-spot check of the written file against the eager model, and the fastest float32 CPU
paths within PyTorch (:func:`optimize_for_cpu`)."""

from resnetkit.export.cpu import CPUOptimizationError, optimize_for_cpu
from resnetkit.export.exporter import (
    FORMATS,
    ExportReport,
    ExportVerificationError,
    export_model,
    load_exported,
)
from resnetkit.export.fold import fold_batchnorm, fold_conv_bn
from resnetkit.export.metadata import read_metadata

__all__ = [
    "CPUOptimizationError",
    "FORMATS",
    "ExportReport",
    "ExportVerificationError",
    "export_model",
    "fold_batchnorm",
    "fold_conv_bn",
    "load_exported",
    "optimize_for_cpu",
    "read_metadata",
]
