"""``resnetkit reproduce``: the papers' experiments (and the transfer check) on real CIFAR-10."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from resnetkit.cli.common import data_dir_for, distinct_names, output_folder, positive_int
from resnetkit.reproduce.degradation import MODELS, presets
from resnetkit.reproduce.transfer import DEFAULT_CLASSES


def _common(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help=data_help)
    p.add_argument("--out", type=output_folder, default=None, help="default runs/EXPERIMENT")
    p.add_argument("--no-progress", action="store_true")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "reproduce",
        help="reproduce an experiment: degradation (Fig. 6), layer responses (Fig. 7) or "
        "few-shot transfer",
        description="The papers' experiments on real CIFAR-10; "
        "`resnetkit reproduce EXPERIMENT --help` lists each one's options.",
    )
    experiments = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")

    d = experiments.add_parser(
        "degradation",
        help="plain-20/56 against ResNet-20/56 on CIFAR-10 (the paper's Figure 6)",
        description="Train plain-20/56 and ResNet-20/56 on CIFAR-10 and draw the paper's "
        "Figure 6: training and test error against iterations (plain dashed, ResNet solid), "
        "with the numbers in OUT/PRESET/degradation.json.",
    )
    _common(d, "folder holding CIFAR-10 (required unless --report)")
    d.add_argument(
        "--preset",
        default="quick",
        choices=tuple(presets()),
        help="quick: "
        + presets()["quick"].description
        + "; full: "
        + presets()["full"].description,
    )
    d.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    d.add_argument(
        "--warmup-iters",
        type=int,
        default=None,
        help="ramp the lr up linearly over this many iterations for every model (default: the "
        "preset's, 150 for quick, 0 for full; 0 is the paper's recipe, lr 0.1 from the start)",
    )
    d.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="train this many models at once, each in its own process with its share of the "
        "threads and a log of its own (OUT/PRESET/MODEL.log); 2 on 2 cores do about 1.7x the "
        "work of 1 in fp32, about 1.1x in bf16",
    )
    d.add_argument(
        "--device",
        default="cpu",
        help="where the models train: cpu, cuda, cuda:1 ... (on a GPU add --precision bf16 "
        "--compile; there --jobs > 1 runs the models' kernels in turn unless CUDA's "
        "Multi-Process Service runs)",
    )
    d.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="arithmetic of every model (default: the preset's, fp32; bf16 pays on GPUs and "
        "on CPUs with native bf16). A run resumes only in its own precision",
    )
    d.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every model (on a GPU with CUDA graphs: reduce-overhead)",
    )
    d.add_argument(
        "--report",
        action="store_true",
        help="train nothing: summarise and draw what the runs in --out hold so far, with each "
        "model's iterations and hours left (to follow a long run, such as --preset full)",
    )
    d.set_defaults(func=_degradation)

    r = experiments.add_parser(
        "responses",
        help="the std of every 3x3 layer's response in trained models (the paper's Figure 7)",
        description="Measure the standard deviation of each 3x3 layer's response (after BN, "
        "before the addition and the ReLU) on the CIFAR-10 test set, the paper's Figure 7; by "
        "default for the models `reproduce degradation` trained.",
    )
    _common(r, "folder holding CIFAR-10 (not needed with --dataset cifar10-sample)")
    r.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated: names of runs in --from, model directories or tags such as "
        "resnet20.cifar10",
    )
    r.add_argument(
        "--from",
        dest="runs_from",
        type=Path,
        default=None,
        help="where each of --models is a trained run (NAME/model/); default the degradation "
        "runs, runs/degradation/PRESET",
    )
    r.add_argument(
        "--preset",
        default="quick",
        choices=tuple(presets()),
        help="which degradation runs the default --from reads",
    )
    _dataset_arg(r)
    r.set_defaults(func=_responses)

    t = experiments.add_parser(
        "transfer",
        help="few-shot transfer: fine-tuned against trained from scratch",
        description="Fine-tune a pretrained model and train the same network from scratch on a "
        "few images per class, scored on held-out test images.",
    )
    _common(t, "folder holding CIFAR-10 (not needed with --dataset cifar10-sample)")
    t.add_argument("--source", default="resnet20.cifar10", help="the pretrained model")
    _dataset_arg(t)
    t.add_argument("--classes", default=",".join(DEFAULT_CLASSES), help="comma-separated")
    t.add_argument("--shots", type=positive_int, default=50, help="training images per class")
    t.add_argument("--seeds", default="0,1,2", help="one run pair per seed, comma-separated")
    t.add_argument("--epochs", type=positive_int, default=30)
    t.add_argument(
        "--batch-size", type=positive_int, default=32, help="at most shots x classes (32)"
    )
    t.add_argument(
        "--eval-per-class",
        type=int,
        default=0,
        help="held-out test images per class (0: all of them)",
    )
    t.set_defaults(func=_transfer)


def _dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        choices=("cifar10", "cifar10-sample"),
        default="cifar10",
        help="cifar10-sample: the 1000+500 real images bundled with resnetkit (offline)",
    )


def _out(args: argparse.Namespace) -> Path:
    return args.out or Path("runs") / args.experiment


def _other_presets(root: Path, preset: str) -> str:
    """``; ROOT holds runs of --preset quick``, when it does, for --report of another preset."""
    held = [p for p in presets() if p != preset and any((root / p).glob("*/metrics.jsonl"))]
    return f"; {root} holds runs of --preset {' and '.join(held)}" if held else ""


def _names(text: str, flag: str = "--models") -> list[str]:
    return distinct_names(text.split(","), flag)


def _registered(names: list[str]) -> tuple[str, ...]:
    """Model names checked against the registry before any work (a typo would otherwise stop
    the experiment hours in, when its turn came)."""
    from resnetkit.models.registry import get_model_config

    for name in names:
        get_model_config(name)  # UnknownModelError, with close matches
    return tuple(names)


def _degradation(args: argparse.Namespace) -> int:
    from resnetkit.reproduce.degradation import report_degradation, run_degradation

    out = _out(args) / args.preset
    models = _registered(_names(args.models))
    given: dict[str, Any] = {}
    if args.warmup_iters is not None:
        given["warmup_iters"] = args.warmup_iters
    if args.precision is not None:
        given["precision"] = args.precision
    if args.compile:
        on_gpu = args.device.startswith("cuda")
        given.update(compile=True, compile_mode="reduce-overhead" if on_gpu else "default")
    overrides = given or None
    root = _out(args)
    if not out.is_dir() and root.name in presets() and any(root.glob("*/metrics.jsonl")):
        # --out names a preset's folder (runs/degradation/quick): its runs would not be found,
        # and a new experiment would start under it, hours of training again
        raise FileNotFoundError(
            f"{root} holds the runs of a `reproduce degradation --preset {root.name}` "
            f"({', '.join(sorted(p.parent.name for p in root.glob('*/metrics.jsonl')))}): "
            f"--out is the folder above it, --out {root.parent} --preset {root.name}"
        )
    if args.report:
        if not out.is_dir():
            raise FileNotFoundError(
                f"{out} does not exist: --report reads the runs of an earlier "
                "`reproduce degradation` with the same --out and --preset"
                + _other_presets(root, args.preset)
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
            device=args.device,
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


def _transfer(args: argparse.Namespace) -> int:
    out = _out(args)
    from resnetkit.reproduce.transfer import run_transfer

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not seeds:
            raise ValueError
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


def _responses(args: argparse.Namespace) -> int:
    """Each of ``--models`` is ``FROM/NAME/model`` when that exists, else a model directory or
    tag as given."""
    from resnetkit.reproduce.responses import measure_responses

    out = _out(args)
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
