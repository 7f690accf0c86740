"""``resnetkit demo``: a tour that does real work offline in a couple of minutes.

1. the model zoo with parameters and multiply-adds, and one model in detail;
2. the shipped ``resnet20.cifar10`` (trained by resnetkit) classifying real CIFAR-10 photos
   bundled with the package;
3. training a ResNet-20 from scratch for a minute on 1000 bundled real images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, cast

from resnetkit.cli import zoo


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)))


def _classify_bundled_images() -> None:
    import numpy as np
    import torch

    from resnetkit.data.images import load_image
    from resnetkit.models.pretrained import list_pretrained
    from resnetkit.models.registry import create_model

    if "resnet20.cifar10" not in list_pretrained():
        print("resnet20.cifar10 weights are not packaged in this build; skipping")
        return
    model = create_model("resnet20.cifar10", pretrained=True).eval()
    cfg = cast(dict[str, Any], model.pretrained_cfg)
    print(
        f"resnet20.cifar10: test top-1 {cfg['metrics'].get('test_top1', float('nan')):.2f}% "
        f"(measured on the 10,000 CIFAR-10 test images when it was trained)"
    )
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    assets = resources.files("resnetkit.assets")
    for name in ("cat.png", "automobile.png", "ship.png"):
        with resources.as_file(assets.joinpath(name)) as path:
            image = np.array(load_image(path))
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            probs = model((x - mean) / std).softmax(1)[0]
        top = probs.topk(3)
        guesses = ", ".join(
            f"{cfg['classes'][i]} {100 * p:.1f}%"
            for p, i in zip(top.values, top.indices, strict=True)
        )
        print(f"  {name:<16} -> {guesses}")
    from resnetkit.evaluate.evaluator import evaluate_model

    result = evaluate_model(model, "cifar10-sample", ".", split="test")
    print(
        f"  on the 500 bundled CIFAR-10 test photos: top-1 {result['top1']:.1f}%, "
        f"top-5 {result['top5']:.1f}%"
    )


def _train_briefly(seconds_budget: int) -> None:
    from resnetkit.train.errors import TrainingInterrupted
    from resnetkit.train.recipe import load_recipe
    from resnetkit.train.trainer import TrainSpec, train

    recipe = load_recipe("fast-cifar").override(
        {"epochs": 36, "warmup_iters": 16, "ema_decay": 0.0, "eval_every": 3, "batch_size": 64}
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        try:
            run = Path(tmp) / "run"
            result = train(
                TrainSpec("resnet20", "cifar10-sample", Path("."), run, recipe, progress=False)
            )
        except TrainingInterrupted as err:  # its checkpoint lives in a folder about to go
            raise TrainingInterrupted(
                "the demo's training was stopped; it keeps nothing (run `resnetkit train` to "
                "keep a run)",
                err.signum,
            ) from None
        elapsed = time.monotonic() - start
    for row in result.history:
        if "test_top1" not in row:  # the epochs with a test, every third: 12 lines, not 36
            continue
        test = f", test top-1 {row['test_top1']:.1f}%"
        print(
            f"  epoch {row['epoch']:>2}: train loss {row['train_loss']:.3f}, train top-1 "
            f"{row['train_top1']:.1f}%{test}, {row['images_per_second']:.0f} img/s"
        )
    print(
        f"  {elapsed:.0f} s; from 10% (chance) to {result.metrics['test_top1']:.1f}% on 500 "
        "unseen photos with 1000 training images. The full recipe on all 50,000 images gives "
        "the shipped model."
    )
    if elapsed > seconds_budget:
        print(f"  (slower than the {seconds_budget} s this demo aims for: a busy machine?)")


def demo(_: argparse.Namespace) -> int:
    _banner("1. The model zoo (parameters and multiply-adds at the native input size)")
    zoo.models()
    _banner("2. One model in detail: resnetkit info resnet50")
    zoo.info("resnet50")
    _banner("3. The shipped ResNet-20 classifies real CIFAR-10 photos")
    _classify_bundled_images()
    _banner("4. Training ResNet-20 from scratch on 1000 real CIFAR-10 images")
    _train_briefly(seconds_budget=120)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="a two-minute offline tour on real bundled data")
    p.set_defaults(func=demo)
