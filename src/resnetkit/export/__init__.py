"""Deployment: BatchNorm folding, and export to ONNX, TorchScript or ExportedProgram with an
on-the-spot check of the written file against the eager model."""

from resnetkit.export.exporter import (
    FORMATS,
    ExportReport,
    ExportVerificationError,
    export_model,
    load_exported,
)
from resnetkit.export.fold import fold_batchnorm, fold_conv_bn

__all__ = [
    "FORMATS",
    "ExportReport",
    "ExportVerificationError",
    "export_model",
    "fold_batchnorm",
    "fold_conv_bn",
    "load_exported",
]
