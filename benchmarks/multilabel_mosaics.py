"""Multi-label classification on real photos: CIFAR-10 mosaics, fine-tuned against scratch.

Each picture is a 2x2 grid of 32x32 cells (64x64 in all); each cell holds, with probability
``--fill`` (0.6), a real CIFAR-10 photo of a random class, else the grey of the dataset mean,
so a picture shows zero to four objects of up to four classes, and its labels are the set of
classes shown (VOC and COCO are multi-label in the same way: which classes are in the
picture). Training mosaics are cut from CIFAR-10's training photos, test mosaics from its test
photos; nothing else is read.

Two runs of the ``finetune`` recipe (``--epochs``, at 64x64 pixels) on the mosaics, written as
a resnetkit label file (``labels`` column, ``train``/``val``/``test`` rows):

- the shipped ``resnet20.cifar10``, fine-tuned (``resnetkit finetune --image-size 64``: its
  backbone at a tenth of the head's lr);
- the same network from random weights (``--scratch``), every layer at the full lr (0.02; the
  recipe's slow backbone would handicap it).

``--runs scratch`` (or ``fine-tuned``) runs one of them again on the same mosaics and replaces
its entry in an existing results file.

Both are evaluated on the test mosaics (``resnetkit evaluate``: mAP, micro/macro F1 and exact
matches at 0.5), and again at per-class thresholds chosen on half the validation mosaics
(``resnetkit calibrate``). Results: ``benchmarks/results/multilabel-mosaics.json``.

    .venv/bin/python -m benchmarks.multilabel_mosaics --data-dir ../shared/data/cifar10

About 20 minutes on 2 cores with the defaults (8.2 and 8.8 minutes of training in the
committed results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.common import markdown_table, write_results

CELL = 32


def make_mosaics(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    count: int,
    fill: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[list[str]]]:
    """``count`` 64x64 mosaics of 2x2 cells from ``images`` (N, 32, 32, 3) and their label
    lists (the classes shown, sorted by class index)."""
    grey = images.reshape(-1, 3).mean(0).round().astype(np.uint8)
    out = np.empty((count, 2 * CELL, 2 * CELL, 3), dtype=np.uint8)
    tags: list[list[str]] = []
    for n in range(count):
        shown: set[int] = set()
        for cell in range(4):
            top, left = (cell // 2) * CELL, (cell % 2) * CELL
            if rng.random() < fill:
                pick = int(rng.integers(len(images)))
                out[n, top : top + CELL, left : left + CELL] = images[pick]
                shown.add(int(labels[pick]))
            else:
                out[n, top : top + CELL, left : left + CELL] = grey
        tags.append([classes[c] for c in sorted(shown)])
    return out, tags


def write_label_file(root: Path, parts: dict[str, tuple[np.ndarray, list[list[str]]]]) -> Path:
    """PNG files under ``root/<split>/`` and ``root/labels.csv`` (path, labels, split)."""
    rows = ["path,labels,split"]
    for split, (pictures, tags) in parts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for i, (picture, names) in enumerate(zip(pictures, tags, strict=True)):
            name = f"{split}/{i:05d}.png"
            Image.fromarray(picture).save(root / name)
            rows.append(f"{name},{'|'.join(names)},{split}")
    path = root / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("RESNETKIT_CIFAR10"))
    parser.add_argument("--work", type=Path, default=Path("runs/multilabel-mosaics"))
    parser.add_argument("--train", type=int, default=8000, help="training mosaics")
    parser.add_argument("--val", type=int, default=1000, help="validation mosaics")
    parser.add_argument("--test", type=int, default=2000, help="test mosaics")
    parser.add_argument("--fill", type=float, default=0.6, help="chance a cell holds a photo")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="fine-tuned,scratch", help="comma-separated")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/multilabel-mosaics.json")
    )
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give --data-dir (a CIFAR-10 root) or set RESNETKIT_CIFAR10")
    torch.set_num_threads(args.threads)

    from resnetkit.data.cifar import load_cifar
    from resnetkit.evaluate.calibration import calibrate_thresholds
    from resnetkit.evaluate.evaluator import evaluate_model
    from resnetkit.models.loading import load_model
    from resnetkit.train.finetune import finetune
    from resnetkit.train.recipe import load_recipe

    train = load_cifar(args.data_dir, "cifar10", "train")
    test = load_cifar(args.data_dir, "cifar10", "test")
    classes = list(train.classes)
    rng = np.random.default_rng(args.seed)
    fit = make_mosaics(train.images, train.labels, classes, args.train + args.val, args.fill, rng)
    parts = {
        "train": (fit[0][: args.train], fit[1][: args.train]),
        "val": (fit[0][args.train :], fit[1][args.train :]),
        "test": make_mosaics(test.images, test.labels, classes, args.test, args.fill, rng),
    }
    shutil.rmtree(args.work / "data", ignore_errors=True)
    labels = write_label_file(args.work / "data", parts)
    sizes = [len(t) for t in parts["test"][1]]
    print(f"{labels}: {args.train}/{args.val}/{args.test} mosaics, classes per test picture "
          f"{np.bincount(sizes, minlength=5).tolist()} (0..4)", flush=True)  # fmt: skip

    recipe = load_recipe("finetune").override(
        {"epochs": args.epochs, "num_threads": args.threads, "seed": args.seed}
    )
    runs: dict[str, Any] = {}
    chosen = [name.strip() for name in args.runs.split(",")]
    if not set(chosen) <= {"fine-tuned", "scratch"}:
        parser.error(f"--runs {args.runs}: choose from fine-tuned, scratch")
    if set(chosen) != {"fine-tuned", "scratch"} and args.out.exists():
        runs.update(json.loads(args.out.read_text())["runs"])
    for name in chosen:
        scratch = name == "scratch"
        shutil.rmtree(args.work / name, ignore_errors=True)
        start = time.monotonic()
        result = finetune(
            "resnet20.cifar10",
            labels,
            args.work / name,
            recipe=recipe.override({"backbone_lr_mult": 1.0}) if scratch else recipe,
            scratch=scratch,
            progress=False,
            log_epochs=True,
            image_size=2 * CELL,
        )
        seconds = time.monotonic() - start
        model = load_model(result.train.model_dir)
        scores = evaluate_model(model, "folder", labels, split="test")
        # per-class thresholds chosen on half the validation mosaics (resnetkit calibrate)
        fitted = calibrate_thresholds(model, "folder", labels, split="val", seed=args.seed)
        model.pretrained_cfg["threshold"] = fitted.thresholds
        tuned = evaluate_model(model, "folder", labels, split="test")
        runs[name] = {
            "test": {k: scores[k] for k in ("map", "micro_f1", "macro_f1", "exact", "count")},
            "test_per_class_thresholds": {k: tuned[k] for k in ("micro_f1", "macro_f1", "exact")},
            "thresholds": dict(zip(fitted.classes, fitted.thresholds, strict=True)),
            "test_ap": scores["ap"],
            "val": {k: result.report[k] for k in ("map", "micro_f1", "macro_f1", "exact")},
            "epochs_run": result.report["epochs_run"],
            "seconds": round(seconds, 1),
        }
        print(f"{name}: test mAP {scores['map']:.2f}%, micro-F1 {scores['micro_f1']:.2f}% "
              f"({tuned['micro_f1']:.2f}% at per-class thresholds), exact "
              f"{scores['exact']:.2f}% ({tuned['exact']:.2f}%) ({seconds / 60:.1f} min)",
              flush=True)  # fmt: skip
    results = {
        "benchmark": "multilabel_mosaics",
        "command": "python -m benchmarks.multilabel_mosaics --data-dir CIFAR10 "
        f"--train {args.train} --val {args.val} --test {args.test} --fill {args.fill} "
        f"--epochs {args.epochs} --seed {args.seed}",
        "scratch_backbone_lr_mult": 1.0,
        "classes_per_test_picture": np.bincount(sizes, minlength=5).tolist(),
        "recipe": recipe.to_dict(),
        "runs": runs,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }

    def row(name: str, run: dict[str, Any]) -> list[str]:
        test, tuned = run["test"], run.get("test_per_class_thresholds") or {}

        def both(key: str) -> str:
            return f"{test[key]:.2f}" + (f" ({tuned[key]:.2f})" if key in tuned else "")

        return [name, f"{test['map']:.2f}", both("micro_f1"), both("macro_f1"), both("exact"),
                f"{run['seconds'] / 60:.1f}"]  # fmt: skip

    table = markdown_table(
        ["run", "test mAP (%)", "micro-F1 (%)", "macro-F1 (%)", "exact match (%)", "minutes"],
        [row(name, run) for name, run in runs.items()],
    )
    table += (
        "\n\nAt 0.5 (in brackets: at per-class thresholds chosen on "
        f"{round(args.val / 2)} validation mosaics)."
    )
    write_results(args.out, results, table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
