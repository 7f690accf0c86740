"""``resnetkit convert``: weights from torchvision, timm, Hugging Face, Keras or a training
script into a resnetkit model directory (or back out to those libraries)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnetkit.cli.common import (
    add_model_option_arg,
    distinct_names,
    image_side,
    non_negative_int,
    numbers,
    output_file,
    output_folder,
    positive_int,
    refuse_non_empty,
)

SOURCE_CHOICES = ("auto", "torchvision", "timm", "huggingface", "keras", "script", "resnetkit")
TARGET_CHOICES = ("resnetkit", "torchvision", "timm", "huggingface", "keras")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "convert",
        help="convert ResNet weights between torchvision, timm, Hugging Face, Keras and resnetkit",
        description="Load a checkpoint into a resnetkit architecture, explaining any mismatch "
        "(classes, depth, shortcut option, input channels, v1/v1.5), then write it. Classes and "
        "input channels default to the checkpoint's; changing them needs --adapt-head / "
        "--adapt-in-chans. Exits with status 2 if the checkpoint does not fit.",
    )
    p.add_argument(
        "src",
        type=Path,
        help="checkpoint: .safetensors, .pt/.pth/.bin/.ckpt/.pth.tar/.th (weights only), Keras "
        ".npz/.h5/.keras (layer/kernel:0 arrays; .h5/.keras need h5py), a Hugging Face / "
        "timm / resnetkit "
        "directory, or an hf-hub:ORG/NAME repository",
    )
    p.add_argument("--arch", required=True, help="resnetkit architecture, e.g. resnet50")
    p.add_argument(
        "--from",
        dest="source_format",
        choices=SOURCE_CHOICES,
        default="auto",
        help="format of SRC (default: detected from its names)",
    )
    p.add_argument(
        "--to",
        dest="target",
        choices=TARGET_CHOICES,
        default="resnetkit",
        help="resnetkit: model directory (the source's preprocessing: a model directory's, a "
        "Hugging Face folder's preprocessor_config.json, a timm folder's; else ImageNet "
        "mean/std); torchvision/timm: state dict "
        "(.safetensors, else torch.save), or for timm and an --out not named like a weights "
        "file (.safetensors/.pt/.pth/.bin/.ckpt/.tar/.th), a folder in timm's Hub layout "
        "(config.json + model.safetensors: timm's local-dir:/hf-hub: load it); huggingface: "
        "transformers directory; keras: .npz",
    )
    p.add_argument("--out", required=True, type=Path, help="file or directory to write")
    p.add_argument(
        "--num-classes",
        type=non_negative_int,
        default=None,
        help="default: the checkpoint's (0: no classifier, a feature extractor)",
    )
    p.add_argument(
        "--adapt-head",
        action="store_true",
        help="start a new --num-classes head if the checkpoint's does not fit",
    )
    p.add_argument("--in-chans", type=positive_int, default=None, help="default: the checkpoint's")
    p.add_argument(
        "--adapt-in-chans",
        action="store_true",
        help="adapt conv1 to --in-chans (1: sum over RGB; N: repeat, scaled by 3/N)",
    )
    add_model_option_arg(p, "(what the weights cannot tell, e.g. stem=cifar)")
    p.add_argument(
        "--use-ema",
        action="store_true",
        help="a training checkpoint's EMA weights (state_dict_ema, model_ema, an ema_model "
        "module...) instead of its weights",
    )
    known = p.add_argument_group(
        "what a bare checkpoint cannot say (or to replace what the source says; written to "
        "resnetkit, huggingface and timm Hub folders)"
    )
    known.add_argument(
        "--mean",
        type=numbers,
        default=None,
        help="per-channel input mean, 0-1 scale, comma-separated (default: the source's, "
        "else ImageNet's), e.g. 0.4914,0.4822,0.4465",
    )
    known.add_argument("--std", type=numbers, default=None, help="per-channel std, as --mean")
    known.add_argument(
        "--input-size",
        type=image_side,
        default=None,
        help="the side of the model's input (default: the source's, else the architecture's)",
    )
    known.add_argument(
        "--classes",
        type=class_names,
        default=None,
        help="the outputs' names in order: comma-separated, or a .txt file with one a line",
    )
    p.set_defaults(func=run_convert)


def class_names(text: str) -> list[str]:
    """``--classes``: comma-separated names, or a ``.txt`` file with one name a line (for
    names that hold commas)."""
    path = Path(text)
    if path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise argparse.ArgumentTypeError(f"cannot read {path}: {err}") from None
    else:
        lines = text.split(",")
    try:
        return distinct_names(lines, "--classes")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def run_convert(args: argparse.Namespace) -> int:
    from resnetkit.interop.convert import convert_checkpoint
    from resnetkit.interop.timm_folder import is_folder_target

    folder = args.target in ("resnetkit", "huggingface") or (
        args.target == "timm" and is_folder_target(args.out)
    )
    if Path(args.out).resolve() == Path(args.src).resolve():
        raise ValueError(f"--out {args.out} is the source: write the conversion to a new name")
    try:
        (output_folder if folder else output_file)(str(args.out))
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"--out {args.out}: {err}") from None
    if folder:
        refuse_non_empty(args.out)
    given = {"mean": args.mean, "std": args.std, "input_size": args.input_size}
    try:
        report, out = convert_checkpoint(
            args.src,
            args.arch,
            args.out,
            source_format=args.source_format,
            target=args.target,
            num_classes=args.num_classes,
            in_chans=args.in_chans,
            adapt_head=args.adapt_head,
            adapt_in_chans=args.adapt_in_chans,
            preprocessing={k: v for k, v in given.items() if v is not None},
            classes=args.classes,
            use_ema=args.use_ema,
            model_options=dict(args.model_option or []),
        )
    except ImportError as err:  # an .h5 file without h5py
        print(f"resnetkit convert: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {args.target} weights to {out}")
    return 0
