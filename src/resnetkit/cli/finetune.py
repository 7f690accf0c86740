"""``resnetkit finetune``: transfer a pretrained ResNet to a folder of your own images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnetkit.cli.common import add_model_args, image_side, output_folder
from resnetkit.cli.train import (
    add_lr_finder_args,
    add_recipe_overrides,
    check_lr_finder_args,
    recipe_from_args,
    sweep_lr,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pretrained model on an image folder (one sub-folder per class)",
        description="New head for the folder's classes, lower learning rate for the backbone "
        "(--backbone-lr-mult), optional frozen stages and BatchNorm statistics, class-balanced "
        "loss, best epoch on validation kept, early stopping. Writes OUT/model (a model "
        "directory), OUT/report.json, OUT/confusion.png (multi-label: OUT/pr_curves.png) and "
        "OUT/curves.png.",
    )
    add_model_args(p)
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="image folder (DIR/<class>/<image>) or a labels .csv/.tsv (path,label[,split]; "
        "path,labels[,split] for several classes an image, a multi-label model)",
    )
    p.add_argument("--out", required=True, type=output_folder)
    p.add_argument(
        "--recipe",
        default=None,
        help="built-in name or YAML file (default finetune; with --resume, the run's own)",
    )
    p.add_argument(
        "--scratch",
        action="store_true",
        help="train the same architecture from random weights (the baseline)",
    )
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--image-size",
        type=image_side,
        default=None,
        help="train at this input side instead of the model's own (e.g. 64 for a CIFAR model "
        "on larger pictures)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    add_lr_finder_args(p)
    add_recipe_overrides(p)  # --freeze-stages K, --epochs N, --freeze-bn true, ...
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from resnetkit.train.finetune import finetune_spec, train_and_report

    check_lr_finder_args(args)
    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(
            f"--data {args.data}: no such folder or label file (one sub-folder of images per "
            "class, or a .csv/.tsv of image paths and labels)"
        )
    spec = finetune_spec(
        args.model,
        args.data,
        args.out,
        arch=args.arch,
        recipe=recipe_from_args(args, default="finetune"),
        scratch=args.scratch,
        resume=args.resume,
        progress=not args.no_progress,
        log_epochs=True,
        device=args.device,
        image_size=args.image_size,
    )
    if args.find_lr is not None:
        return sweep_lr(spec, args.find_lr, args.lr_plot)
    result = train_and_report(spec, source=args.model, scratch=args.scratch)
    if result.train.is_main:
        shown = {k: v for k, v in result.report.items() if not k.startswith("per_class")}
        print(json.dumps(shown, indent=2))
    return 0
