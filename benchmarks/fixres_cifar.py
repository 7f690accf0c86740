"""FixRes on real CIFAR-10: a net trained on random-resized crops tests better at a larger side.

Touvron et al. 2019 (*Fixing the train-test resolution discrepancy*): random-resized crops make
objects look larger in training than a whole picture resized to the same side does at test
time, so a model tests better at a side larger than its training crops'. That is what
``eval_image_size`` (``--eval-image-size``) is for, and why torchvision's newer weights train at
176 and test at 224 (the ``tv2-imagenet`` recipe).

One run: ResNet-20 from random weights on ``--train-subset`` CIFAR-10 training images written
as PNG files (a folder, as users' pictures are), streamed with random-resized crops (scale
0.08-1, torchvision's) of ``--train-side`` pixels (default 24) by the ``fast-cifar`` recipe
(its warm-up and EMA window scaled to the run). The trained weights are then tested on the
10,000 CIFAR-10 test images resized to each of ``--test-sides`` (default 24, 28, 32): the
training side, and larger. The run resumes when the command is run again with the same
arguments (``--fresh`` starts it over). Results: ``benchmarks/results/fixres-cifar.json``.

    .venv/bin/python -m benchmarks.fixres_cifar --data-dir ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import fast_cifar_schedule, markdown_table, write_results


def write_png_folder(
    images: np.ndarray, labels: np.ndarray, classes: list[str], root: Path
) -> None:
    """``root/<class>/<index>.png`` for each (H, W, 3) uint8 image; kept if already there."""
    done = root.parent / f"{root.name}.complete"  # beside it: not a file of the folder
    if done.is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    for name in classes:
        (root / name).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(root / classes[int(label)] / f"{i:05d}.png")
    done.write_text("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("RESNETKIT_CIFAR10"))
    parser.add_argument("--work", type=Path, default=Path("runs/fixres-cifar"))
    parser.add_argument("--train-subset", type=int, default=10_000, help="0: all 50,000")
    parser.add_argument("--train-side", type=int, default=24)
    parser.add_argument("--test-sides", default="24,28,32")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="start the run over")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fixres-cifar.json"))
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("give --data-dir (a CIFAR-10 root) or set RESNETKIT_CIFAR10")
    sides = [int(s) for s in args.test_sides.split(",")]
    torch.set_num_threads(args.threads)

    from resnetkit.data.cifar import load_cifar
    from resnetkit.data.datasets import subset_order
    from resnetkit.evaluate.evaluator import evaluate_model
    from resnetkit.models.loading import load_model
    from resnetkit.train.recipe import load_recipe
    from resnetkit.train.trainer import TrainSpec, train

    data = load_cifar(args.data_dir, "cifar10", "train")
    keep = subset_order(len(data.labels), args.train_subset, args.seed)
    folder = args.work / f"train-png-{len(keep)}-seed{args.seed}"
    write_png_folder(data.images[keep], data.labels[keep], list(data.classes), folder)

    run = args.work / "run"
    if args.fresh:
        shutil.rmtree(run, ignore_errors=True)
    # 90% of the folder trains (train/val split of folders)
    steps = args.epochs * (int(0.9 * len(keep)) // 128)
    recipe = load_recipe("fast-cifar").override(
        {"epochs": args.epochs, "num_threads": args.threads, "seed": args.seed,
         "augment": "imagenet", "train_image_size": args.train_side,
         **fast_cifar_schedule(steps)}
    )  # fmt: skip
    spec = TrainSpec(
        model="resnet20", dataset="folder", data_dir=folder, out=run, recipe=recipe,
        progress=False, log_epochs=True,
        resume=(run / "checkpoints").is_dir(),
    )  # fmt: skip
    result = train(spec)
    model = load_model(result.model_dir)
    tests = {}
    for side in sides:
        measured = evaluate_model(model, "cifar10", args.data_dir, image_size=side)
        tests[str(side)] = round(float(measured["top1"]), 2)
        print(f"tested at {side}x{side}: top-1 {tests[str(side)]:.2f}%", flush=True)
    best = max(sides, key=lambda s: tests[str(s)])
    results = {
        "benchmark": "fixres_cifar",
        "command": "python -m benchmarks.fixres_cifar --data-dir CIFAR10 "
        f"--train-subset {args.train_subset} --train-side {args.train_side} --test-sides "
        f"{args.test_sides} --epochs {args.epochs} --seed {args.seed}",
        "model": "resnet20",
        "train_images": len(keep),
        "train_side": args.train_side,
        "test_top1_by_side": tests,
        "best_test_side": best,
        "gain_over_train_side": round(tests[str(best)] - tests[str(args.train_side)], 2)
        if str(args.train_side) in tests
        else None,
        "train_seconds": round(result.metrics["train_seconds"], 1),
        "recipe": recipe.to_dict(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    table = markdown_table(
        ["test side", "test top-1 (%)"],
        [
            [
                f"{side}x{side}" + (" (training crops')" if side == args.train_side else ""),
                f"{tests[str(side)]:.2f}",
            ]
            for side in sides
        ],  # fmt: skip
    )
    table += (
        f"\n\nResNet-20 trained on {len(keep):,} CIFAR-10 images as PNG files (90% of them; "
        f"10% validate), random-resized crops of {args.train_side} pixels, {args.epochs} "
        "epochs of fast-cifar; tested on the 10,000 test images resized to each side."
    )
    write_results(args.out, results, table)
    print(f"FixRes: best at {best}x{best}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
