"""Data loading alone: images/s to produce augmented, normalised CIFAR-10 training batches.

Compares the pipeline most PyTorch tutorials write (a ``Dataset`` of PIL images, torchvision's
``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize``, and a
``DataLoader`` with worker processes) with resnetkit's :class:`~resnetkit.data.fast.TensorLoader`
(the whole set as one uint8 tensor, cropped and flipped in batch). No model runs.

Run (from the repository root)::

    .venv/bin/python -m benchmarks.data_pipeline --data-dir ../shared/data/cifar10

Without ``--data-dir`` (or ``$RESNETKIT_CIFAR10``) it uses the 1000 real CIFAR-10 images
bundled with resnetkit, so it runs anywhere. Results: ``benchmarks/results/data_pipeline.json``
and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

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
from resnetkit.data.cifar import CIFAR_MEAN, CIFAR_STD, ArrayDataset, load_cifar
from resnetkit.data.datasets import load_sample
from resnetkit.data.fast import Normalization, TensorLoader, to_nchw_tensor
from resnetkit.train.provenance import machine_info

DATA_ENV = "RESNETKIT_CIFAR10"
SAMPLE = "cifar10-sample"
Batch = tuple[Tensor, Tensor]
Stream = Generator[Batch, None, None]  # endless; close() releases workers


def resolve_data_dir(data_dir: str | None) -> str:
    """``--data-dir``, else ``$RESNETKIT_CIFAR10``, else the bundled sample."""
    return data_dir or os.environ.get(DATA_ENV) or SAMPLE


def load_train_split(data_dir: str) -> ArrayDataset:
    """CIFAR-10 training images from ``data_dir``, or the bundled sample for ``cifar10-sample``."""
    if data_dir == SAMPLE:
        return load_sample("train")
    return load_cifar(data_dir, "cifar10", "train")


# ------------------------------------------------------------------------------- the anchor
class PILImages(Dataset[tuple[Tensor, int]]):
    """uint8 HWC arrays served one PIL image at a time, as torchvision's ``CIFAR10`` does."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], Tensor]
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = Image.fromarray(self.images[index])
        return self.transform(image), int(self.labels[index])


def torchvision_train_transform() -> transforms.Compose:
    """The standard CIFAR training transform of the tutorials (paper augmentation)."""
    return transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN["cifar10"], CIFAR_STD["cifar10"]),
        ]
    )


def dataloader_stream(data: ArrayDataset, batch_size: int, num_workers: int, seed: int) -> Stream:
    """Endless shuffled batches from a ``DataLoader`` of PIL images, epoch after epoch.

    Workers persist across epochs (so a small dataset does not pay a worker start-up every few
    batches) and shut down when the stream is closed; ``drop_last`` keeps every batch full.
    """
    loader = DataLoader(
        PILImages(data.images, data.labels, torchvision_train_transform()),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    while True:
        yield from loader


# ------------------------------------------------------------------------------- resnetkit
def tensor_loader(
    data: ArrayDataset, batch_size: int, seed: int, *, channels_last: bool = True
) -> TensorLoader:
    """resnetkit's fast path as the trainer builds it (crop 4 + flip, channels_last)."""
    return TensorLoader(
        to_nchw_tensor(data.images),
        torch.from_numpy(data.labels),
        batch_size,
        Normalization(CIFAR_MEAN["cifar10"], CIFAR_STD["cifar10"]),
        train=True,
        seed=seed,
        channels_last=channels_last,
    )


def tensorloader_stream(loader: TensorLoader) -> Stream:
    """Endless batches from a :class:`TensorLoader`, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


# ------------------------------------------------------------------------------- benchmark
@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides the numbers; saved next to them."""

    data_dir: str = SAMPLE  # CIFAR-10 root, or "cifar10-sample" (the bundled 1000 images)
    num_workers: tuple[int, ...] = (2, 0)  # DataLoader variants; the first is the anchor
    batch_size: int = 128
    steps: int = 30  # timed batches per variant per round
    warmup: int = 3  # untimed batches before each timed run (workers start, queues fill)
    rounds: int = 3
    threads: int = 0  # torch intra-op threads; 0: torch's default
    seed: int = 0


def _count(batch: Batch) -> int:
    return len(batch[1])


def _timed(make_stream: Callable[[], Stream], config: PipelineConfig) -> float:
    stream = make_stream()
    try:
        return measure_round(stream, _count, steps=config.steps, warmup=config.warmup)
    finally:
        stream.close()  # shuts the DataLoader's workers down before the next variant runs


def run(config: PipelineConfig) -> dict[str, Any]:
    """Measure every pipeline in alternating rounds; returns the results (also for JSON)."""
    if not config.num_workers:
        raise ValueError("num_workers needs at least one value (the anchor's)")
    set_threads(config.threads)
    data = load_train_split(config.data_dir)
    if len(data.labels) < config.batch_size:
        raise ValueError(
            f"{config.data_dir} has {len(data.labels)} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    fast = tensor_loader(data, config.batch_size, config.seed)
    streams: dict[str, Callable[[], Stream]] = {}
    described: dict[str, str] = {}
    for workers in dict.fromkeys(config.num_workers):
        name = f"dataloader-pil-w{workers}"
        streams[name] = partial(dataloader_stream, data, config.batch_size, workers, config.seed)
        described[name] = f"DataLoader of PIL images + torchvision transforms, {workers} workers"
    streams["tensorloader"] = partial(tensorloader_stream, fast)
    described["tensorloader"] = "resnetkit TensorLoader (batched uint8 crop + flip, channels_last)"
    anchor = f"dataloader-pil-w{config.num_workers[0]}"

    machine = machine_info()  # before measuring: the load average is the one we ran under
    print(f"data pipeline: {len(data.labels)} images from {config.data_dir}", flush=True)
    rates = interleaved_rounds(
        {n: partial(_timed, s, config) for n, s in streams.items()}, config.rounds
    )
    variants: dict[str, dict[str, Any]] = {
        name: {
            "description": described[name],
            "images_per_s": summarize(values),
            "ratio_vs_anchor": ratio_summary(values, rates[anchor]),
        }
        for name, values in rates.items()
    }
    return {
        "benchmark": "data_pipeline",
        "config": {**asdict(config), "train_images": len(data.labels)},
        "machine": machine,
        "anchor": anchor,
        "fast": "tensorloader",
        "variants": variants,
        "ratio": variants["tensorloader"]["ratio_vs_anchor"]["of_means"],
    }


def results_table(results: dict[str, Any]) -> str:
    """A markdown table of the results, ready for a README."""
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
        f"\n\nBatches of {config['batch_size']}, {config['rounds']} rounds x {config['steps']} "
        f"batches, {config['train_images']} images; {machine['cpu']}, "
        f"{machine['torch_threads']} torch threads, torch {machine['torch']}."
    )
    headers = ["variant", "pipeline", "images/s (mean ± std)", f"vs {results['anchor']}"]
    return markdown_table(headers, rows) + note


def parse_args(argv: Sequence[str] | None) -> tuple[PipelineConfig, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.data_pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"CIFAR-10 root (default: ${DATA_ENV}, else the bundled '{SAMPLE}')",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        nargs="+",
        default=[2, 0],
        help="DataLoader worker counts to measure; the first is the anchor (default: 2 0)",
    )
    add_timing_args(parser, steps=30, warmup=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data_pipeline.json"))
    args = parser.parse_args(argv)
    config = PipelineConfig(
        data_dir=resolve_data_dir(args.data_dir),
        num_workers=tuple(args.num_workers),
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
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
