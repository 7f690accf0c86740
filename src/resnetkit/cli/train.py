"""``resnetkit train``: train a registered model on CIFAR or an image folder."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from resnetkit.cli.common import (
    add_model_option_arg,
    data_dir_for,
    image_side,
    left_out_unless_resume,
    non_negative_int,
    not_in_run,
    note_taken,
    output_folder,
    png_file,
    positive_int,
    run_to_resume,
)
from resnetkit.data.datasets import DATASETS
from resnetkit.text import plural
from resnetkit.train.recipe import (
    Recipe,
    build_recipe,
    builtin_recipes,
    load_recipe,
    recipe_source,
)

if TYPE_CHECKING:
    from resnetkit.train.spec import TrainSpec


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train",
        help="train a model (recipes: " + ", ".join(builtin_recipes()) + ")",
        description="Train a model. Any recipe field can be overridden, e.g. --lr 0.05 "
        "--epochs 30 --label-smoothing 0.1 (see `resnetkit recipes`).",
    )
    # Required, but a --resume left without them takes the run's own (see fill_from_run).
    p.add_argument(
        "--model",
        default=None,
        help="registered architecture, e.g. resnet20 (with --resume, default: the run's own)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help="cifar10-sample: 1000/500 real CIFAR-10 images bundled with resnetkit (with "
        "--resume, default: the run's own)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        type=Path,
        help="CIFAR root, image folder, or a labels .csv/.tsv for --dataset folder (path,label"
        "[,split] columns; needed for every dataset but cifar10-sample; with --resume, "
        "default: the run's own)",
    )
    add_model_option_arg(p, "(with --resume, default: the run's own)")
    p.add_argument("--out", required=True, type=output_folder, help="run directory")
    p.add_argument(
        "--recipe",
        default=None,
        help="built-in name or YAML file (default fast-cifar; with --resume, the run's own "
        "OUT/recipe.yaml)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out, with its own recipe; `train --out RUN --resume` "
        "alone takes --model, --dataset and --data-dir from RUN/run.json",
    )
    p.add_argument("--download", action="store_true", help="download CIFAR if missing")
    p.add_argument(
        "--train-subset", type=non_negative_int, default=0, help="use only N training images"
    )
    p.add_argument(
        "--eval-subset",
        type=non_negative_int,
        default=0,
        help="evaluate every epoch on only N images of each evaluation split (a fixed draw; "
        "the model card and run.json name the count), e.g. a short CIFAR run's 10,000 test "
        "images",
    )
    p.add_argument(
        "--image-size",
        type=image_side,
        default=None,
        help="side of folder images (default: the recipe's train_image_size, else 224 with "
        "--augment imagenet or scale, else 32)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--dry-run",
        nargs="?",
        const=5,
        type=positive_int,
        default=None,
        metavar="STEPS",
        help="write nothing: print the data, the schedule and the time the run would take, "
        "from STEPS timed training steps (default 5)",
    )
    add_lr_finder_args(p)
    add_recipe_overrides(p)
    p.set_defaults(func=run_train, usage_error=p.error)

    p = sub.add_parser("recipes", help="list the built-in recipes or print one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=run_recipes)


def add_lr_finder_args(p: argparse.ArgumentParser) -> None:
    """``--find-lr [STEPS]`` and ``--lr-plot PNG`` (train and finetune)."""
    p.add_argument(
        "--find-lr",
        nargs="?",
        const=100,
        type=sweep_steps,
        default=None,
        metavar="STEPS",
        help="write no run: sweep the lr from 1e-6 to 10 over STEPS training steps (default "
        "100, at least 5) and suggest an --lr (the learning-rate range test; with "
        "--backbone-lr-mult the backbone sweeps at that multiple)",
    )
    p.add_argument(
        "--lr-plot",
        type=png_file,
        default=None,
        help="with --find-lr: loss against lr, a PNG written under the name given",
    )


def sweep_steps(text: str) -> int:
    steps = positive_int(text)
    if steps < 5:
        raise argparse.ArgumentTypeError(f"an lr sweep needs at least 5 steps, got {steps}")
    return steps


def check_lr_finder_args(args: argparse.Namespace) -> None:
    """``--find-lr`` sweeps from the starting weights and writes no run."""
    if args.lr_plot is not None and args.find_lr is None:
        raise ValueError("--lr-plot draws the lr sweep: add --find-lr")
    if args.find_lr is not None and args.resume:
        raise ValueError("--find-lr sweeps from the starting weights, not a run's: drop --resume")
    if args.find_lr is not None and getattr(args, "dry_run", None) is not None:
        raise ValueError("--find-lr and --dry-run are two different rehearsals: pick one")


def sweep_lr(spec: TrainSpec, steps: int, plot: Path | None) -> int:
    """``--find-lr``: the range test on the run ``spec`` describes; prints the answer."""
    from resnetkit.train.lr_finder import describe, find_lr, plot_sweep
    from resnetkit.train.trainer import Trainer

    # The sweep replaces the schedule (so a warm-up never applies) and measures the training
    # loss, which an EMA of the weights does not change: neither is checked against the run's
    # length, as a run's would be.
    quiet = replace(spec.recipe, warmup_iters=0, warmup_lr=0.0, ema_decay=0.0)
    trainer = Trainer(replace(spec, recipe=quiet, writes=False))
    sweep = find_lr(trainer, steps=steps)
    print(describe(sweep))
    if plot is not None:
        plot_sweep(
            sweep, plot, title=f"lr range test: {trainer.arch}, batch {spec.recipe.batch_size}"
        )
        print(f"  plot: {plot}")
    return 0


#: Recipe fields shown in --help (the others are listed by `resnetkit recipes NAME`).
SHOWN_FIELDS = {
    "teacher": "knowledge distillation: a trained model (directory, tag such as "
    "resnet56.paper_cifar10, or hf-hub: name) that knows the data's classes; the student "
    "learns from its softened answers too",
    "distill_alpha": "with --teacher: the teacher's share of the loss (default 0.9)",
    "distill_temperature": "with --teacher: the softmax temperature T (default 4)",
    "eval_image_size": "evaluate (and save the model for) this side instead of the training "
    "crops' (FixRes: train at 176, test at 224); full-size augments only",
    "eval_resize": "the shorter side the evaluation crop is cut from (default side / 0.875 "
    "from 128 pixels up, else the side itself)",
}


#: Recipe fields without a flag of their own.
NO_FLAG = ("name", "source", "train_image_size")  # that one is --image-size


def add_recipe_overrides(p: argparse.ArgumentParser) -> None:
    """One ``--field-name VALUE`` option per recipe field (listed, with its default, in the
    epilog of --help; options of their own for :data:`SHOWN_FIELDS`)."""
    p.epilog = recipe_fields_help()
    p.formatter_class = _FlagsKeptWhole
    for f in fields(Recipe):
        if f.name in NO_FLAG:
            continue
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"recipe_{f.name}",
            default=None,
            metavar="MODEL" if f.name == "teacher" else type(f.default).__name__.upper(),
            help=SHOWN_FIELDS.get(f.name, argparse.SUPPRESS),
        )


class _FlagsKeptWhole(argparse.HelpFormatter):
    """argparse's help, with its paragraphs never broken inside a --flag-name."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        text = " ".join(text.split())
        return textwrap.fill(
            text,
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


def recipe_fields_help() -> str:
    """Every recipe field's flag with the schema's default, for the end of --help."""
    shown = []
    for f in fields(Recipe):
        if f.name in NO_FLAG:
            continue
        value = f.default
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, tuple):
            text = ",".join(map(str, value)) or '""'
        else:
            text = str(value) if value != "" else '""'
        shown.append(f"--{f.name.replace('_', '-')} {text}")
    return (
        "recipe fields: each flag overrides the recipe's value (the recipe schema's "
        "defaults shown; a recipe sets its own: `resnetkit recipes NAME` prints them): "
        + ", ".join(shown)
    )


def recipe_from_args(args: argparse.Namespace, default: str = "fast-cifar") -> Recipe:
    """The ``--recipe`` with every ``--field`` override applied. Without ``--recipe``, a
    ``--resume`` continues with the run's own (``OUT/recipe.yaml``, else the copy its latest
    checkpoint keeps), anything else uses ``default``."""
    overrides = {
        k[len("recipe_") :]: v
        for k, v in vars(args).items()
        if k.startswith("recipe_") and v is not None
    }
    source = None
    if args.recipe is None and getattr(args, "resume", False):
        from resnetkit.train.run_folder import run_recipe_source

        source = run_recipe_source(Path(args.out))
    data, origin = source or recipe_source(args.recipe or default)
    stop = data.get("max_iters", Recipe().max_iters)
    if "epochs" in overrides and "max_iters" not in overrides and stop:
        # The paper's recipes stop by iterations (64k), which would make --epochs do nothing.
        overrides["max_iters"] = "0"
        print(
            f"note: --epochs {overrides['epochs']} replaces the recipe's stop at "
            f"{int(float(stop)):,} iterations (give --max-iters too to keep one)",
            file=sys.stderr,
        )
    resolved = build_recipe(data, origin, overrides)  # as a whole: overrides may mend the file
    ignored = [f"--{key.replace('_', '-')}" for key in ("milestones", "gamma") if key in overrides]
    if ignored and resolved.schedule != "multistep":
        one = len(ignored) == 1
        them = "it" if one else "them"
        raise ValueError(
            f"{' and '.join(ignored)} shape{'s' if one else ''} the multistep schedule; this "
            f"recipe's schedule is {resolved.schedule}, which does not read {them}: add "
            f"--schedule multistep, or leave {them} out"
        )
    return resolved


def model_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--model-option`` pairs; a ``--resume`` starts from the run's own (``OUT/run.json``)
    and the pairs given change them (``grad_checkpointing=true`` to save memory keeps the run's
    ``drop_path_rate``; the check on resuming refuses a change to what the run trains)."""
    given = dict(args.model_option or [])
    saved = Path(args.out) / "run.json"
    if not (getattr(args, "resume", False) and saved.is_file()):
        return given
    try:
        options = json.loads(saved.read_text()).get("model_options") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{saved}: cannot read the run's model options ({err}); pass --model-option again"
        ) from None
    own = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return {**own, **given}


def format_plan(plan: dict[str, Any]) -> str:
    """The dry run's answer, for people."""
    evals = ", ".join(f"{n:,} {split}" for split, n in plan["eval_images"].items()) or "none"
    side = plan["train_size"]
    if plan["eval_size"] != side:
        evals += f", at {plan['eval_size']} pixels cut from {plan['eval_resize']}"
    lrs = ", ".join(f"{lr:.4g} at {step:,}" for step, lr in plan["lr_at_step"].items())
    hours = plan["estimated_hours"]
    took = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
    if plan["from_step"]:
        took += f" from step {plan['from_step']:,} (the latest checkpoint)"
    return "\n".join(
        [
            f"{plan['model']} on {plan['dataset']}: {plan['train_images']:,} training images "
            f"of {side}x{side} (evaluation: {evals})",
            f"  {plural(plan['total_iters'], 'iteration')} of batch {plan['batch_size']} = "
            f"{plural(plan['epochs'], 'epoch')} of {plan['iters_per_epoch']:,}",
            f"  lr ({plan['schedule']}): {lrs}",
            f"  measured: {plan['seconds_per_step']:.3f} s per step "
            f"({plan['images_per_second']:.0f} images/s, median of {plan['timed_steps']} steps on "
            f"{plan['device']}, {plan['threads']} threads)",
            f"  training would take about {took} here (evaluations add a little); nothing was "
            "written",
        ]
    )


def run_recipes(args: argparse.Namespace) -> int:
    if args.name is None:
        for name in builtin_recipes():
            r = load_recipe(name)
            print(f"{name:<18} {r.source}")
        return 0
    print(json.dumps(load_recipe(args.name).to_dict(), indent=2))
    return 0


def fill_from_run(args: argparse.Namespace, usage_error: Callable[[str], NoReturn]) -> None:
    """``train --out RUN --resume`` alone: the --model, --dataset and --data-dir left out are
    the run's own (``RUN/run.json``), with a note saying which; those given are used as given
    (resuming refuses a change). Without --resume, --model and --dataset are required."""
    left_out = left_out_unless_resume(args, ("model", "dataset"), usage_error)
    if not args.resume:
        return
    out = Path(args.out)
    run = run_to_resume(out, "train")
    dataset = args.dataset or run.get("dataset")
    wants_dir = args.data_dir is None and dataset != "cifar10-sample"
    if not left_out and not wants_dir:
        return
    readable = all(isinstance(run.get(key), str) for key in ("model", "dataset", "data_dir"))
    if not readable or run["dataset"] not in DATASETS:
        if not left_out:
            return  # only --data-dir missing: data_dir_for says it is needed, as before
        what = "the run's model, dataset and data folder"
        raise not_in_run(out, run, left_out, what, "--model, --dataset and --data-dir")
    taken = []
    if args.model is None:
        args.model = run["model"]
        taken.append(f"--model {shlex.quote(args.model)}")
    if args.dataset is None:
        args.dataset = run["dataset"]
        taken.append(f"--dataset {args.dataset}")
    if wants_dir and args.dataset == run["dataset"]:  # another dataset's folder would not do
        args.data_dir = Path(run["data_dir"])
        taken.append(f"--data-dir {shlex.quote(run['data_dir'])}")
    note_taken(out, taken)


def run_train(args: argparse.Namespace) -> int:
    from resnetkit.train.trainer import TrainSpec, train  # heavy imports only when training

    fill_from_run(args, args.usage_error)
    data_dir = data_dir_for(args.dataset, args.data_dir)
    recipe = recipe_from_args(args)
    spec = TrainSpec(
        model=args.model,
        dataset=args.dataset,
        data_dir=data_dir,
        out=args.out,
        recipe=recipe,
        resume=args.resume,
        download=args.download,
        train_subset=args.train_subset,
        eval_subset=args.eval_subset,
        image_size=args.image_size,
        device=args.device,
        progress=not args.no_progress,
        log_epochs=True,
        model_options=model_options_from_args(args),
    )
    check_lr_finder_args(args)
    if args.find_lr is not None:
        return sweep_lr(spec, args.find_lr, args.lr_plot)
    if args.dry_run is not None:
        from resnetkit.train.trainer import Trainer

        plan = Trainer(replace(spec, writes=False)).plan(args.dry_run)
        print(format_plan(plan))
        return 0
    result = train(spec)
    if result.is_main:
        print(json.dumps({"model_dir": str(result.model_dir), **result.metrics}, indent=2))
    return 0
