"""``resnetkit finetune``: transfer a pretrained ResNet to a folder of your own images."""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from resnetkit.cli.common import (
    add_model_args,
    image_side,
    left_out_unless_resume,
    not_in_run,
    note_taken,
    output_folder,
    run_to_resume,
)
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
    # Required, but a --resume left without them takes the run's own (see fill_from_run).
    add_model_args(p, resumed="(with --resume, default: the run's own)")
    p.add_argument(
        "--data",
        default=None,
        type=Path,
        help="image folder (DIR/<class>/<image>) or a labels .csv/.tsv (path,label[,split]; "
        "path,labels[,split] for several classes an image, a multi-label model; with "
        "--resume, default: the run's own)",
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
        default=None,  # None: not given, which a --resume takes from the run
        help="train the same architecture from random weights (the baseline; with --resume, "
        "default: as the run started)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out, with its own recipe and image size; `finetune --out "
        "RUN --resume` alone takes --model, --data, --scratch and a bare checkpoint's --arch "
        "from RUN/run.json",
    )
    p.add_argument(
        "--image-size",
        type=image_side,
        default=None,
        help="train at this input side instead of the model's own (e.g. 64 for a CIFAR model "
        "on larger pictures; with --resume, default: the run's own, from OUT/recipe.yaml)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    add_lr_finder_args(p)
    add_recipe_overrides(p)  # --freeze-stages K, --epochs N, --freeze-bn true, ...
    p.set_defaults(func=run, usage_error=p.error)


def fill_from_run(args: argparse.Namespace, usage_error: Callable[[str], NoReturn]) -> None:
    """``finetune --out RUN --resume`` alone: the --model (the source the run fine-tunes),
    --data, --scratch and, for a bare checkpoint, --arch left out are the run's own
    (``RUN/run.json``), with a note saying which; those given are used as given (resuming
    refuses a change). The image size comes with the run's recipe (``RUN/recipe.yaml``).
    Without --resume, --model and --data are required."""
    from resnetkit.train.run_folder import source_name

    left_out = left_out_unless_resume(args, ("model", "data"), usage_error)
    if not args.resume:
        args.scratch = bool(args.scratch)
        return
    out = Path(args.out)
    run = run_to_resume(out, "finetune")
    facts = run.get("origin")
    origin: dict[str, Any] = facts if isinstance(facts, dict) else {}
    recorded: dict[str, str] = {
        name: value
        for name, value in (("model", origin.get("source")), ("data", run.get("data_dir")))
        if isinstance(value, str)
    }
    missing = [name for name in left_out if name not in recorded]
    if missing:
        what = " and ".join(
            {"model": "the model the run fine-tunes", "data": "the data it trains on"}[name]
            for name in missing
        )
        raise not_in_run(out, run, missing, what, " and ".join(f"--{name}" for name in missing))
    taken = [f"--{name} {shlex.quote(recorded[name])}" for name in left_out]
    if "model" in left_out:
        args.model = recorded["model"]
    if "data" in left_out:
        args.data = Path(recorded["data"])
    if args.scratch is None:  # a run.json without it: not --scratch (the checkpoint checks)
        args.scratch = origin.get("from_scratch") is True
        taken += ["--scratch"] if args.scratch else []
    bare = Path(args.model).expanduser().is_file()
    same_source = source_name(args.model) == origin.get("source")
    if args.arch is None and bare and same_source and isinstance(run.get("model"), str):
        args.arch = run["model"]  # the architecture the run trains: the checkpoint's --arch
        taken.append(f"--arch {shlex.quote(args.arch)}")
    note_taken(out, taken)


def run(args: argparse.Namespace) -> int:
    from resnetkit.train.finetune import finetune_spec, train_and_report

    check_lr_finder_args(args)
    fill_from_run(args, args.usage_error)
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
