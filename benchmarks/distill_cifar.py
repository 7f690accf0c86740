"""Knowledge distillation on real CIFAR-10: a ResNet-20 taught by the shipped ResNet-56.

Two runs of the same recipe (``fast-cifar``, its warm-up and EMA window scaled to the run) on
the same training images (``--train-subset``, a random subset), differing only in the
teacher. The teacher saw all 50,000 labelled training images, the students a fifth of them:
the setting measured is a large model trained on more data teaching a small one on what it
has:

- ``labels``: ResNet-20 from random weights, on the labels alone;
- ``distilled``: the same, with ``teacher: resnet56.paper_cifar10`` (92.60% test top-1, trained
  by resnetkit with the paper's recipe), ``distill_alpha`` 0.9 and ``distill_temperature`` 4
  (Hinton et al. 2015; the usual CIFAR setting).

Both are evaluated on the whole CIFAR-10 test set (top-1, and how often the student's answer
is the teacher's). The runs resume where they stopped when the command is run again with
the same arguments (``--fresh`` starts them over; other arguments need it, since a run
resumes only with its own recipe). Results:
``benchmarks/results/distill-cifar.json``.

    .venv/bin/python -m benchmarks.distill_cifar --data-dir ../shared/data/cifar10

About 15 minutes on 2 cores with the defaults (10,000 images, 15 epochs; the distilled run
pays for a ResNet-56 forward pass a step: 4.0 and 7.4 minutes of training in the committed
results).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import fast_cifar_schedule, markdown_table, write_results

TEACHER = "resnet56.paper_cifar10"
RUNS = ("labels", "distilled")


def answers_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The class a model picks for each uint8 (N, 3, 32, 32) image, normalised its own way
    (the teacher subtracts a per-pixel mean, the students a per-channel one)."""
    from resnetkit.data.fast import Normalization
    from resnetkit.predict import Preprocessing

    pre = Preprocessing.of(model)
    norm = Normalization(pre.mean, pre.std, pre.pixel_mean)
    with torch.no_grad():
        return torch.cat([model(norm.apply(chunk)).argmax(1) for chunk in images.split(500)])


def percent(hits: torch.Tensor) -> float:
    return round(100 * float(hits.float().mean()), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("RESNETKIT_CIFAR10"))
    parser.add_argument("--work", type=Path, default=Path("runs/distill-cifar"))
    parser.add_argument("--train-subset", type=int, default=10_000, help="0: all 50,000")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--teacher", default=TEACHER)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument(
        "--ema-decay", type=float, default=None, help="default: the recipe's window, scaled"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="start the runs over")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill-cifar.json"))
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("give --data-dir (a CIFAR-10 root) or set RESNETKIT_CIFAR10")
    torch.set_num_threads(args.threads)

    from resnetkit.data.cifar import load_cifar
    from resnetkit.models.loading import load_model
    from resnetkit.train.recipe import load_recipe
    from resnetkit.train.trainer import TrainSpec, train

    test = load_cifar(args.data_dir, "cifar10", "test")
    images = torch.from_numpy(test.images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(test.labels)

    schedule = fast_cifar_schedule(args.epochs * ((args.train_subset or 50_000) // 128))
    if args.ema_decay is not None:
        schedule["ema_decay"] = args.ema_decay
    recipe = load_recipe("fast-cifar").override(
        {"epochs": args.epochs, "num_threads": args.threads, "seed": args.seed, **schedule}
    )
    runs: dict[str, Any] = {}
    answers: dict[str, torch.Tensor] = {}
    answers["teacher"] = answers_of(load_model(args.teacher), images)
    teacher_top1 = percent(answers["teacher"] == labels)
    for name in RUNS:
        extra = {}
        if name == "distilled":
            extra = {
                "teacher": args.teacher,
                "distill_alpha": args.alpha,
                "distill_temperature": args.temperature,
            }
        out = args.work / name
        if args.fresh:
            shutil.rmtree(out, ignore_errors=True)
        spec = TrainSpec(
            model="resnet20", dataset="cifar10", data_dir=args.data_dir, out=out,
            recipe=recipe.override(extra), train_subset=args.train_subset, progress=False,
            log_epochs=True, resume=(out / "checkpoints").is_dir(),
        )  # fmt: skip
        start = time.monotonic()
        result = train(spec)
        answers[name] = answers_of(load_model(result.model_dir), images)
        runs[name] = {
            "test_top1": percent(answers[name] == labels),
            "agrees_with_teacher": percent(answers[name] == answers["teacher"]),
            "train_seconds": round(result.metrics["train_seconds"], 1),
            "steps": result.metrics["steps"],
            "wall_seconds_this_call": round(time.monotonic() - start, 1),
        }
        print(f"{name}: test top-1 {runs[name]['test_top1']:.2f}%, agrees with the teacher on "
              f"{runs[name]['agrees_with_teacher']:.2f}% "
              f"({runs[name]['train_seconds'] / 60:.1f} min of training)", flush=True)  # fmt: skip

    gain = runs["distilled"]["test_top1"] - runs["labels"]["test_top1"]
    results = {
        "benchmark": "distill_cifar",
        "command": "python -m benchmarks.distill_cifar --data-dir CIFAR10 "
        f"--train-subset {args.train_subset} --epochs {args.epochs} --teacher {args.teacher} "
        f"--alpha {args.alpha} --temperature {args.temperature} --seed {args.seed}",
        "student": "resnet20",
        "teacher": {"name": args.teacher, "test_top1": teacher_top1},
        "train_images": args.train_subset or 50_000,
        "recipe": recipe.to_dict(),
        "runs": runs,
        "distilled_minus_labels_top1": round(gain, 2),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    table = markdown_table(
        ["run", "test top-1 (%)", "agrees with the teacher (%)", "training minutes"],
        [
            [
                name,
                f"{run['test_top1']:.2f}",
                f"{run['agrees_with_teacher']:.2f}",
                f"{run['train_seconds'] / 60:.1f}",
            ]  # fmt: skip
            for name, run in runs.items()
        ]
        + [[f"teacher ({args.teacher})", f"{teacher_top1:.2f}", "100.00", "-"]],
    )
    table += (
        f"\n\nResNet-20 on {results['train_images']:,} CIFAR-10 training images, "
        f"{args.epochs} epochs of fast-cifar; test top-1 on the 10,000 test images."
    )
    write_results(args.out, results, table)
    print(f"distillation: {gain:+.2f} points of test top-1; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
