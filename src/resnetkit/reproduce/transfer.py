"""Few-shot transfer: does fine-tuning a pretrained ResNet beat training it from scratch?

For each seed, ``shots`` training images per class of a few CIFAR classes are drawn and written
as an image folder (``train/``), with the test images of the same classes as ``val/``; then the
same network is trained twice on it with ``resnetkit finetune``: once starting from the
pretrained weights (new head, backbone at a tenth of the learning rate), once from random
weights (the same schedule, every layer at the full learning rate). Both are scored on the
held-out test images after the last epoch: no best-epoch selection, since the test images must
not choose the model.

Caveat for the default source, ``resnet20.cifar10``: it was trained on the full CIFAR-10
training set, these classes included, so this measures how well its features serve a new head
on little data, not transfer to an unseen domain.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from resnetkit.data.cifar import ArrayDataset
from resnetkit.train.checkpoint import atomic_write_text, latest_checkpoint
from resnetkit.train.recipe import load_recipe

DEFAULT_CLASSES = ("cat", "dog", "deer", "horse", "bird")


def _splits(dataset: str, data_dir: Path | None) -> tuple[ArrayDataset, ArrayDataset]:
    if dataset == "cifar10-sample":
        from resnetkit.data.datasets import load_sample

        return load_sample("train"), load_sample("test")
    if dataset == "cifar10":
        from resnetkit.data.cifar import load_cifar

        if data_dir is None:
            raise ValueError("--data-dir is needed for cifar10 (the folder holding CIFAR-10)")
        return load_cifar(data_dir, "cifar10", "train"), load_cifar(data_dir, "cifar10", "test")
    raise ValueError(f"dataset must be 'cifar10' or 'cifar10-sample', got {dataset!r}")


def _write_folder(root: Path, data: ArrayDataset, picks: dict[str, np.ndarray]) -> None:
    for name, indices in picks.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            Image.fromarray(data.images[i]).save(folder / f"{int(i):05d}.png")


def _check_choice(
    train: ArrayDataset, classes: Sequence[str], shots: int, eval_per_class: int
) -> None:
    unknown = [c for c in classes if c not in train.classes]
    if unknown:
        raise ValueError(
            f"unknown class(es) {', '.join(unknown)}; CIFAR-10 has {', '.join(train.classes)}"
        )
    if len(set(classes)) < 2:
        raise ValueError(f"need at least 2 different classes, got {list(classes)}")
    if eval_per_class < 0:
        raise ValueError(f"eval_per_class must be >= 0 (0: all), got {eval_per_class}")
    for name in classes:
        available = int((train.labels == train.classes.index(name)).sum())
        if shots > available:
            raise ValueError(f"{shots} shots asked for {name!r}, only {available} images there")


def few_shot_folder(
    root: Path,
    train: ArrayDataset,
    test: ArrayDataset,
    classes: Sequence[str],
    shots: int,
    seed: int,
    eval_per_class: int = 0,
) -> dict[str, int]:
    """Write ``root/train/<class>/`` (``shots`` random training images per class) and
    ``root/val/<class>/`` (the class's test images, the first ``eval_per_class`` if set).

    Returns:
        The number of images written to each split.
    """
    _check_choice(train, classes, shots, eval_per_class)
    rng = np.random.default_rng(seed)
    shot_picks: dict[str, np.ndarray] = {}
    eval_picks: dict[str, np.ndarray] = {}
    for name in classes:
        label = train.classes.index(name)
        pool = np.flatnonzero(train.labels == label)
        if shots > len(pool):
            raise ValueError(f"{shots} shots asked for {name!r}, only {len(pool)} images there")
        shot_picks[name] = np.sort(rng.choice(pool, shots, replace=False))
        held_out = np.flatnonzero(test.labels == label)
        eval_picks[name] = held_out[:eval_per_class] if eval_per_class else held_out
    for split in ("train", "val"):  # written afresh: no image of an earlier draw stays
        shutil.rmtree(root / split, ignore_errors=True)
    _write_folder(root / "train", train, shot_picks)
    _write_folder(root / "val", test, eval_picks)
    return {
        "train": sum(len(v) for v in shot_picks.values()),
        "val": sum(len(v) for v in eval_picks.values()),
    }


def _claim(out: Path, settings: dict[str, Any]) -> None:
    """Record the settings of the runs in ``out``; refuse other settings there, since the runs
    resume from their checkpoints and would mix two experiments."""
    path = out / "transfer-settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [
            f"{k}: {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v
        ]
        if changed:
            raise ValueError(
                f"{out} holds transfer runs with other settings ({'; '.join(changed)}); pass "
                "another --out, or delete that folder to start again"
            )
        return
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def run_transfer(
    out: Path,
    *,
    source: str = "resnet20.cifar10",
    dataset: str = "cifar10",
    data_dir: Path | None = None,
    classes: Sequence[str] = DEFAULT_CLASSES,
    shots: int = 50,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 30,
    eval_per_class: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``source`` and train the same network from scratch on the same few-shot
    folders, one pair per seed, and write ``out/transfer.json``.

    Returns:
        The summary: per-seed top-1 on the held-out images for both, their means and standard
        deviations, and the gain of fine-tuning.
    """
    from resnetkit.models.loading import load_model
    from resnetkit.train.finetune import finetune

    if shots <= 0 or epochs <= 0 or not seeds:
        raise ValueError("shots and epochs must be positive and at least one seed given")
    train, test = _splits(dataset, data_dir)
    # Everything that can be wrong is found out before the settings are recorded: a typo
    # must not claim the folder for an experiment that can never run.
    _check_choice(train, classes, shots, eval_per_class)
    load_model(source)  # an unknown tag or a missing directory, named
    if batch_size < 1 or batch_size > shots * len(classes):
        raise ValueError(
            f"--batch-size {batch_size}: {shots} shots of {len(classes)} classes are "
            f"{shots * len(classes)} training images, which must hold at least one batch; "
            "lower --batch-size or raise --shots"
        )
    _claim(
        out,
        {
            "source": source,
            "dataset": dataset,
            "classes": list(classes),
            "shots": shots,
            "epochs": epochs,
            "eval_per_class": eval_per_class,
            "batch_size": batch_size,
        },
    )
    recipe = load_recipe("finetune")
    # The recipe's warm-up is for a real fine-tuning run; a few-shot one may be shorter.
    iterations = epochs * ((shots * len(classes)) // batch_size)
    base = recipe.override(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "warmup_iters": min(recipe.warmup_iters, iterations // 10),
            "select_best": False,  # scored on the test images: they must not pick the epoch
            "early_stop_patience": 0,
            "eval_every": epochs,
        }
    )
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        root = out / f"seed{seed}"
        counts = few_shot_folder(root / "data", train, test, classes, shots, seed, eval_per_class)
        scores: dict[str, Any] = {"seed": seed, **{f"{k}_images": v for k, v in counts.items()}}
        for mode in ("finetuned", "scratch"):
            recipe = base.override({"seed": seed})
            if mode == "scratch":  # every layer learns at the full rate from random weights
                recipe = recipe.override({"backbone_lr_mult": 1.0})
            result = finetune(
                source,
                root / "data",
                root / mode,
                recipe=recipe,
                scratch=mode == "scratch",
                # an interrupted experiment continues where each run stopped
                resume=latest_checkpoint(root / mode / "checkpoints") is not None,
                progress=progress,
            )
            scores[mode] = result.report["val_top1"]
        runs.append(scores)

    def stats(key: str) -> dict[str, float]:
        values = [float(r[key]) for r in runs]
        return {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }

    summary: dict[str, Any] = {
        "source": source,
        "dataset": dataset,
        "classes": list(classes),
        "shots_per_class": shots,
        "epochs": epochs,
        "batch_size": batch_size,
        "runs": runs,
        "finetuned_top1": stats("finetuned"),
        "scratch_top1": stats("scratch"),
        "finetune_wins_every_seed": all(r["finetuned"] > r["scratch"] for r in runs),
        "recipe": "finetune (select_best off, early stopping off); scratch: backbone_lr_mult 1",
    }
    summary["gain_points"] = summary["finetuned_top1"]["mean"] - summary["scratch_top1"]["mean"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "transfer.json", json.dumps(summary, indent=2) + "\n")
    return summary
