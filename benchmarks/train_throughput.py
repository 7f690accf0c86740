"""CPU training throughput of ResNet-20 on CIFAR-10: a plain PyTorch loop vs resnetkit's fast path.

Both variants run in one process, alternating in rounds (each round: a few untimed warm-up
steps, then ``--steps`` timed SGD steps per variant), so they see the same machine state.

* ``plain-pytorch`` (the anchor): what a typical user writes. A ``Dataset`` of PIL images,
  torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor`` +
  ``Normalize``, ``DataLoader(batch_size=128, shuffle=True, num_workers=2)``, NCHW, fp32.
* ``resnetkit-fast``: :class:`~resnetkit.data.fast.TensorLoader` (the set as one uint8 tensor,
  cropped and flipped in batch) and a channels_last model, as ``resnetkit train`` does.
* ``resnetkit-fast-bf16`` (``--bf16``) and ``resnetkit-fast-compile`` (``--compile``): optional.
  On the 2-core Xeon we develop on, ``torch.compile`` measured slower than eager; it is off by
  default.

Every variant trains its own copy of the same ``create_model("resnet20")`` (identical initial
weights) with the same step: SGD with Nesterov momentum 0.9, weight decay 5e-4, cross-entropy.

Run (from the repository root)::

    .venv/bin/python -m benchmarks.train_throughput --data-dir ../shared/data/cifar10

Without ``--data-dir`` (or ``$RESNETKIT_CIFAR10``) it uses the 1000 real CIFAR-10 images
bundled with resnetkit. Results: ``benchmarks/results/train_throughput.json`` and a markdown
table beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.common import (
    add_timing_args,
    interleaved_rounds,
    markdown_table,
    mean_std,
    measure_round,
    ratio_summary,
    set_threads,
    summarize,
    write_results,
)
from benchmarks.data_pipeline import (
    DATA_ENV,
    SAMPLE,
    Batch,
    Stream,
    dataloader_stream,
    load_train_split,
    resolve_data_dir,
    tensor_loader,
    tensorloader_stream,
)
from resnetkit.models.registry import create_model
from resnetkit.train.provenance import machine_info

ANCHOR = "plain-pytorch"
FAST = "resnetkit-fast"


@dataclass(frozen=True)
class ThroughputConfig:
    """Everything that decides the numbers; saved next to them."""

    data_dir: str = SAMPLE  # CIFAR-10 root, or "cifar10-sample" (the bundled 1000 images)
    model: str = "resnet20"
    num_workers: int = 2  # the anchor's DataLoader workers
    batch_size: int = 128
    steps: int = 30  # timed SGD steps per variant per round
    warmup: int = 5  # untimed steps before each timed run (workers start, caches warm)
    rounds: int = 3
    threads: int = 0  # torch intra-op threads; 0: torch's default
    bf16: bool = False  # add the resnetkit-fast-bf16 variant
    compile: bool = False  # add the resnetkit-fast-compile variant
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


@dataclass(frozen=True)
class Variant:
    """One way of training: where batches come from and how the model is set up."""

    description: str
    stream: Callable[[], Stream]
    channels_last: bool
    bf16: bool = False
    compile: bool = False


def sgd_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, bf16: bool
) -> Callable[[Batch], int]:
    """One training step on a batch; returns the number of images."""

    def step(batch: Batch) -> int:
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        optimizer.step()
        return len(y)

    return step


def _runner(variant: Variant, initial: nn.Module, config: ThroughputConfig) -> Callable[[], float]:
    model = copy.deepcopy(initial)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    net: nn.Module = torch.compile(model) if variant.compile else model  # type: ignore[assignment]
    step = sgd_step(net, optimizer, variant.bf16)

    def one_round() -> float:
        stream = variant.stream()
        try:
            return measure_round(stream, step, steps=config.steps, warmup=config.warmup)
        finally:
            stream.close()  # shuts DataLoader workers down before the next variant runs

    return one_round


def run(config: ThroughputConfig) -> dict[str, Any]:
    """Measure every variant in alternating rounds; returns the results (also for JSON)."""
    set_threads(config.threads)
    data = load_train_split(config.data_dir)
    if len(data.labels) < config.batch_size:
        raise ValueError(
            f"{config.data_dir} has {len(data.labels)} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    fast_loader = tensor_loader(data, config.batch_size, config.seed, channels_last=True)
    fast_stream = partial(tensorloader_stream, fast_loader)
    variants = {
        ANCHOR: Variant(
            f"DataLoader of PIL images + torchvision transforms ({config.num_workers} workers), "
            "NCHW, fp32",
            partial(dataloader_stream, data, config.batch_size, config.num_workers, config.seed),
            channels_last=False,
        ),
        FAST: Variant("TensorLoader, channels_last, fp32", fast_stream, channels_last=True),
    }
    if config.bf16:
        variants[f"{FAST}-bf16"] = Variant(
            "TensorLoader, channels_last, bf16 autocast", fast_stream, True, bf16=True
        )
    if config.compile:
        variants[f"{FAST}-compile"] = Variant(
            "TensorLoader, channels_last, fp32, torch.compile", fast_stream, True, compile=True
        )

    torch.manual_seed(config.seed)
    initial = create_model(config.model, num_classes=len(data.classes)).train()
    runners = {name: _runner(v, initial, config) for name, v in variants.items()}
    machine = machine_info()  # before measuring: the load average is the one we ran under
    print(
        f"train throughput: {config.model}, {len(data.labels)} images from {config.data_dir}",
        flush=True,
    )
    rates = interleaved_rounds(runners, config.rounds)
    results: dict[str, dict[str, Any]] = {
        name: {
            "description": variants[name].description,
            "images_per_s": summarize(values),
            "ratio_vs_anchor": ratio_summary(values, rates[ANCHOR]),
        }
        for name, values in rates.items()
    }
    return {
        "benchmark": "train_throughput",
        "config": {**asdict(config), "train_images": len(data.labels)},
        "machine": machine,
        "anchor": ANCHOR,
        "fast": FAST,
        "variants": results,
        "ratio": results[FAST]["ratio_vs_anchor"]["of_means"],
    }


def results_table(results: dict[str, Any]) -> str:
    """A markdown table of the results, ready for the README."""
    rows = [
        [
            name,
            v["description"],
            mean_std(v["images_per_s"]),
            f"{v['ratio_vs_anchor']['of_means']:.2f}x",
        ]
        for name, v in results["variants"].items()
    ]
    config, machine = results["config"], results["machine"]
    note = (
        f"\n\n{config['model']}, batch {config['batch_size']}, SGD (Nesterov), "
        f"{config['rounds']} rounds x {config['steps']} steps per variant (after "
        f"{config['warmup']} warm-up steps), {config['train_images']} training images; "
        f"{machine['cpu']}, {machine['torch_threads']} torch threads, torch {machine['torch']}."
    )
    headers = ["variant", "setup", "images/s (mean ± std)", f"vs {results['anchor']}"]
    return markdown_table(headers, rows) + note


def parse_args(argv: Sequence[str] | None) -> tuple[ThroughputConfig, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"CIFAR-10 root (default: ${DATA_ENV}, else the bundled '{SAMPLE}')",
    )
    parser.add_argument(
        "--num-workers", type=int, default=2, help="DataLoader workers of the plain loop"
    )
    add_timing_args(parser, steps=30, warmup=5)
    parser.add_argument("--bf16", action="store_true", help="add a bf16 autocast variant")
    parser.add_argument(
        "--compile", action="store_true", help="add a torch.compile variant (slow to start)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/train_throughput.json")
    )
    args = parser.parse_args(argv)
    config = ThroughputConfig(
        data_dir=resolve_data_dir(args.data_dir),
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
        bf16=args.bf16,
        compile=args.compile,
        seed=args.seed,
    )
    return config, args.out


def main(argv: Sequence[str] | None = None) -> int:
    config, out = parse_args(argv)
    results = run(config)
    table = results_table(results)
    json_path, md_path = write_results(out, results, table)
    print(f"\n{table}\n\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
