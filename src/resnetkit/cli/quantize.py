"""``resnetkit quantize``: int8 post-training quantisation with ONNX Runtime."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from resnetkit.cli.common import add_model_args, data_dir_for, output_file, positive_int
from resnetkit.data.datasets import DATASETS


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "quantize",
        help="int8 quantisation (ONNX Runtime), with accuracy before and after",
        description="Exports the model to a verified fp32 ONNX file (OUT with .fp32.onnx), "
        "calibrates activation ranges on real images and writes an int8 QDQ model to OUT. "
        "With --eval-dataset, prints top-1 of both on the same images.",
    )
    add_model_args(p)
    p.add_argument(
        "--out",
        required=True,
        type=_onnx_file,
        help="int8 ONNX file to write (NAME.onnx; the fp32 one is written beside it)",
    )
    p.add_argument("--method", choices=("static", "dynamic"), default="static")
    p.add_argument(
        "--calibrate-method", choices=("minmax", "percentile", "entropy"), default="minmax"
    )
    p.add_argument(
        "--calibration-dataset",
        choices=DATASETS,
        default="cifar10-sample",
        help="images that set the int8 activation ranges: use your own (folder with "
        "--calibration-dir) unless the model is a CIFAR-10 one (default: cifar10-sample, the "
        "bundled CIFAR-10 photos)",
    )
    p.add_argument(
        "--calibration-dir",
        type=Path,
        default=None,
        help="CIFAR root, or a folder of images for calibration: flat or in class folders, "
        "no labels needed (not needed for cifar10-sample)",
    )
    p.add_argument("--calibration-split", default="train")
    p.add_argument("--calibration-size", type=positive_int, default=512)
    p.add_argument("--eval-dataset", choices=DATASETS, default=None)
    p.add_argument(
        "--eval-dir",
        type=Path,
        default=None,
        help="CIFAR root or image folder to measure top-1 before and after on",
    )
    p.add_argument("--eval-split", default="test")
    p.set_defaults(func=run)


def _onnx_file(text: str) -> Path:
    from resnetkit.export.exporter import named_target

    try:
        return named_target(output_file(text), "onnx", "quantize")
    except ValueError as err:  # argparse would print only "invalid value"
        raise argparse.ArgumentTypeError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    from resnetkit.export.quantize import quantize_model
    from resnetkit.models.loading import load_model

    calibration_dir = (
        data_dir_for(
            args.calibration_dataset,
            args.calibration_dir,
            "--calibration-dir",
            "--calibration-dataset",
        )
        if args.method == "static"
        else Path(".")
    )
    eval_dir = (
        data_dir_for(args.eval_dataset, args.eval_dir, "--eval-dir", "--eval-dataset")
        if args.eval_dataset is not None
        else Path(".")
    )
    checks = (
        ("--calibration-split", args.calibration_dataset, args.calibration_split),
        ("--eval-split", args.eval_dataset, args.eval_split),
    )
    for flag, dataset, split in checks:  # before the fp32 export is written
        if dataset not in (None, "folder") and split not in ("train", "test"):
            raise ValueError(f"{flag} {split!r}: {dataset} has the splits train and test")
    model = load_model(args.model, arch=args.arch)
    if args.method == "static" and args.calibration_dataset == "cifar10-sample":
        from resnetkit.data.datasets import load_sample
        from resnetkit.models.loading import preprocessing_of

        if preprocessing_of(model)["classes"] != list(load_sample("test").classes):
            print(
                "resnetkit quantize: note: calibrating on the bundled CIFAR-10 photos; for a "
                "model of other images pass --calibration-dataset folder --calibration-dir DIR",
                file=sys.stderr,
            )
    report = quantize_model(
        model,
        args.out,
        calibration_dataset=args.calibration_dataset,
        calibration_dir=calibration_dir,
        calibration_split=args.calibration_split,
        calibration_size=args.calibration_size,
        method=args.method,
        calibrate_method=args.calibrate_method,
        eval_dataset=args.eval_dataset,
        eval_dir=eval_dir,
        eval_split=args.eval_split,
        eval_flags=("--eval-dataset", "--eval-dir"),
    )
    print(json.dumps(asdict(report), indent=2))
    return 0
