"""Arguments that several sub-commands share."""

from __future__ import annotations

import argparse

MODEL_HELP = (
    "model directory (config.json + model.safetensors), packaged tag such as "
    "resnet20.cifar10, or a checkpoint file (.safetensors/.pt/.pth, needs --arch)"
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model NAME_OR_DIR`` and ``--arch ARCH`` (for bare checkpoint files)."""
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--arch", default=None, help="architecture of a bare checkpoint, e.g. resnet20")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
