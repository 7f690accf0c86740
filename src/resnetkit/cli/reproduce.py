"""``resnetkit reproduce``: the papers' experiments (and the transfer check) on real CIFAR-10."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from resnetkit.cli.common import data_dir_for, output_folder, positive_int
from resnetkit.reproduce.degradation import MODELS, presets
from resnetkit.reproduce.transfer import DEFAULT_CLASSES

#: The experiments each option means something to; given to another, it is refused (it would
#: be silently ignored).
USES: dict[str, tuple[str, ...]] = {
    "preset": ("degradation", "responses"),
    "models": ("degradation", "responses"),
    "warmup_iters": ("degradation",),
    "jobs": ("degradation",),
    "report": ("degradation",),
    "runs_from": ("responses",),
    "dataset": ("responses", "transfer"),
    **{
        dest: ("transfer",)
        for dest in ("source", "classes", "shots", "seeds", "epochs", "batch_size")
    },
    "eval_per_class": ("transfer",),
}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "reproduce",
        help="reproduce an experiment: degradation (Fig. 6), layer responses (Fig. 7) or "
        "few-shot transfer",
        description="degradation: plain-20/56 against ResNet-20/56 on CIFAR-10, the paper's "
        "Figure 6. responses: the std of every 3x3 layer's response in trained models, the "
        "paper's Figure 7 (by default the models degradation trained). transfer: fine-tune a "
        "pretrained model and train the same network from scratch on a few images per class, "
        "scored on held-out test images.",
    )
    p.add_argument("experiment", choices=("degradation", "responses", "transfer"))
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding CIFAR-10 (degradation, responses: required; transfer: needed "
        "unless --dataset cifar10-sample)",
    )
    p.add_argument("--out", type=output_folder, default=None, help="default runs/EXPERIMENT")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("degradation")
    g.add_argument(
        "--preset",
        default="quick",
        choices=tuple(presets()),
        help="quick: "
        + presets()["quick"].description
        + "; full: "
        + presets()["full"].description,
    )
    g.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated model names (responses: also model directories or tags such as "
        "resnet20.cifar10)",
    )
    g.add_argument(
        "--warmup-iters",
        type=int,
        default=None,
        help="ramp the lr up linearly over this many iterations for every model (default: the "
        "preset's, 150 for quick, 0 for full; 0 is the paper's recipe, lr 0.1 from the start)",
    )
    g.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="train this many models at once, each in its own process with its share of the "
        "threads and a log of its own (OUT/PRESET/MODEL.log); 2 on 2 cores does about 1.6x the "
        "work of 1",
    )
    g.add_argument(
        "--report",
        action="store_true",
        help="train nothing: summarise and draw what the runs in --out hold so far, with each "
        "model's iterations and hours left (to follow a long run, such as --preset full)",
    )
    g = p.add_argument_group("responses")
    g.add_argument(
        "--from",
        dest="runs_from",
        type=Path,
        default=None,
        help="where each of --models is a trained run (NAME/model/); default the degradation "
        "runs, runs/degradation/PRESET",
    )
    g = p.add_argument_group("transfer")
    g.add_argument("--source", default="resnet20.cifar10", help="the pretrained model")
    g.add_argument(
        "--dataset",
        choices=("cifar10", "cifar10-sample"),
        default="cifar10",
        help="transfer and responses; cifar10-sample: the 1000+500 real images bundled with "
        "resnetkit (offline)",
    )
    g.add_argument("--classes", default=",".join(DEFAULT_CLASSES), help="comma-separated")
    g.add_argument("--shots", type=positive_int, default=50, help="training images per class")
    g.add_argument("--seeds", default="0,1,2", help="one run pair per seed, comma-separated")
    g.add_argument("--epochs", type=positive_int, default=30)
    g.add_argument(
        "--batch-size", type=positive_int, default=32, help="at most shots x classes (32)"
    )
    g.add_argument(
        "--eval-per-class",
        type=int,
        default=0,
        help="held-out test images per class (0: all of them)",
    )
    p.set_defaults(func=run, option_defaults={dest: p.get_default(dest) for dest in USES})


def _names(text: str, flag: str = "--models") -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"{flag} names nothing: give at least one, comma-separated")
    return names


def _registered(names: list[str]) -> tuple[str, ...]:
    """Model names checked against the registry before any work (a typo would otherwise stop
    the experiment hours in, when its turn came)."""
    from resnetkit.models.registry import get_model_config

    for name in names:
        get_model_config(name)  # UnknownModelError, with close matches
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    foreign = [
        f"--{'from' if dest == 'runs_from' else dest.replace('_', '-')} "
        f"({' and '.join(USES[dest])})"
        for dest, default in args.option_defaults.items()
        if args.experiment not in USES[dest] and getattr(args, dest) != default
    ]
    if foreign:
        raise ValueError(
            f"not options of reproduce {args.experiment}: {', '.join(foreign)}; leave them out"
        )
    out = args.out or Path("runs") / args.experiment
    if args.experiment == "transfer":
        return _transfer(args, out)
    if args.experiment == "responses":
        return _responses(args, out)
    from resnetkit.reproduce.degradation import report_degradation, run_degradation

    out = out / args.preset
    models = _registered(_names(args.models))
    overrides = None if args.warmup_iters is None else {"warmup_iters": args.warmup_iters}
    if args.report:
        if not out.is_dir():
            raise FileNotFoundError(
                f"{out} does not exist: --report reads the runs of an earlier "
                "`reproduce degradation` with the same --out and --preset"
            )
        summary = report_degradation(out, args.preset, models, overrides)
    else:
        if args.data_dir is None:
            raise ValueError("reproduce degradation needs --data-dir (the folder holding CIFAR-10)")
        summary = run_degradation(
            args.data_dir,
            out,
            args.preset,
            models,
            not args.no_progress,
            overrides,
            log_epochs=True,
            jobs=args.jobs,
        )
    keys = ("final_train_error", "final_test_error", "iterations", "complete", "hours_left")
    models_out = {name: {k: c[k] for k in keys} for name, c in summary["models"].items()}
    print(
        json.dumps(
            {
                "figure": str(out / "degradation.png"),
                "complete": summary["complete"],
                "models": models_out,
                "checks": summary["checks"],
            },
            indent=2,
        )
    )
    return 0


def _transfer(args: argparse.Namespace, out: Path) -> int:
    from resnetkit.reproduce.transfer import run_transfer

    try:
        seeds = [int(s) for s in _names(args.seeds, "--seeds")]
    except ValueError:
        raise ValueError(
            f"--seeds must be integers separated by commas, got {args.seeds!r}"
        ) from None
    if len(set(seeds)) != len(seeds):  # a repeated seed is the same run again, not evidence
        raise ValueError(f"--seeds {args.seeds}: each seed once (runs of a seed are identical)")
    if args.eval_per_class < 0:
        raise ValueError(f"--eval-per-class must be >= 0 (0: all), got {args.eval_per_class}")
    summary = run_transfer(
        out,
        source=args.source,
        dataset=args.dataset,
        data_dir=args.data_dir,
        classes=_names(args.classes, "--classes"),
        shots=args.shots,
        seeds=seeds,
        epochs=args.epochs,
        eval_per_class=args.eval_per_class,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _responses(args: argparse.Namespace, out: Path) -> int:
    """Each of ``--models`` is ``FROM/NAME/model`` when that exists, else a model directory or
    tag as given."""
    from resnetkit.reproduce.responses import measure_responses

    data_dir = data_dir_for(args.dataset, args.data_dir)
    runs = args.runs_from or Path("runs") / "degradation" / args.preset
    sources: list[str | Path] = []
    for name in _names(args.models):
        trained = runs / name / "model"
        if (trained / "config.json").is_file():
            sources.append(trained)
        elif Path(name).exists():  # a model directory
            sources.append(name)
        elif "/" in name or os.sep in name:
            raise FileNotFoundError(f"--models: the model directory {name} does not exist")
        elif "." in name:  # a weights tag such as resnet20.cifar10
            sources.append(name)
        else:
            raise FileNotFoundError(
                f"no trained {name} in {runs} ({trained} has no config.json): train it with "
                f"`resnetkit reproduce degradation --models {name}`, point --from at the runs, "
                "or give a model directory or a tag such as resnet20.cifar10"
            )
    summary = measure_responses(sources, data_dir, out, dataset=args.dataset)
    shown = {
        label: {
            "top1": round(entry["top1"], 2),
            "layers": len(entry["std"]),
            "mean_std": round(sum(entry["std"]) / len(entry["std"]), 4),
        }
        for label, entry in summary["models"].items()
    }
    print(json.dumps({"figure": str(out / "responses.png"), "models": shown}, indent=2))
    return 0
