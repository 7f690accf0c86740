"""Small helpers shared by the benchmarks: timing, mean ± std, machine info, result files.

Every benchmark measures its variants in one process, alternating them in rounds, so that all
of them see the same machine state (a busy neighbour, thermal throttling, a cold cache) rather
than one variant getting a quiet minute and another a noisy one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def measure_round(
    stream: Iterator[T], work: Callable[[T], int], *, steps: int, warmup: int
) -> float:
    """Items per second of ``work`` over ``steps`` items of ``stream``, after ``warmup`` untimed.

    The clock runs around ``next(stream)`` as well as ``work``: fetching the batch is part of
    the cost being measured. ``work`` returns how many items (images) it handled.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    for _ in range(warmup):
        work(next(stream))
    items = 0
    start = time.perf_counter()
    for _ in range(steps):
        items += work(next(stream))
    return items / (time.perf_counter() - start)


def interleaved_rounds(
    runners: Mapping[str, Callable[[], float]], rounds: int
) -> dict[str, list[float]]:
    """Run every variant once per round and collect one rate per variant per round.

    The order rotates from round to round (A B C, B C A, C A B, ...) so that no variant always
    runs first, right after start-up, or right after the most expensive one.
    """
    if rounds <= 0:
        raise ValueError(f"rounds must be positive, got {rounds}")
    names = list(runners)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            rate = runners[name]()
            rates[name].append(rate)
            print(f"  round {r + 1}/{rounds} {name}: {rate:,.0f} images/s", flush=True)
    return rates


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for a single value), min, max and the raw values."""
    if not values:
        raise ValueError("nothing to summarise")
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def mean_std(summary: Mapping[str, Any], digits: int = 0) -> str:
    """``"1,234 ± 56"`` from a :func:`summarize` result."""
    return f"{summary['mean']:,.{digits}f} ± {summary['std']:,.{digits}f}"


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """The speed-up of one variant over another: ratio of the means, and per-round ratios.

    Per-round ratios pair measurements taken a few seconds apart, so their spread shows how
    stable the comparison is even when the machine's speed drifts between rounds.
    """
    per_round = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return {
        "of_means": statistics.fmean(numerator) / statistics.fmean(denominator),
        "per_round": summarize(per_round),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; columns after the first two are right-aligned (numbers)."""
    align = ["---" if i < 2 else "---:" for i in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def write_results(out: str | Path, results: Mapping[str, Any], table: str) -> tuple[Path, Path]:
    """Write ``results`` as JSON to ``out`` and ``table`` to the ``.md`` file beside it."""
    json_path = Path(out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(table + "\n")
    return json_path, md_path


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON: {value!r}")


def set_threads(threads: int) -> None:
    """Set torch's intra-op threads; 0 keeps torch's default (one per core)."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def add_timing_args(parser: argparse.ArgumentParser, steps: int, warmup: int) -> None:
    """The flags every benchmark shares: how long to measure and how many threads."""
    parser.add_argument(
        "--steps", type=int, default=steps, help="timed batches per variant per round"
    )
    parser.add_argument(
        "--warmup", type=int, default=warmup, help="untimed batches before each timed run"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternating variants")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)


def fast_cifar_schedule(steps: int) -> dict[str, float]:
    """fast-cifar's warm-up and EMA window as the same shares of a run of ``steps``: its
    warm-up is 11% of its 45 epochs on 50k images (17,550 steps), its EMA window (1 / (1 -
    0.999) = 1,000 steps) 5.7% (0.999 over a run of 1,170 steps would leave 31% of the first
    step's weights in the exported ones). Recipe fields ``warmup_iters`` and ``ema_decay``."""
    return {
        "warmup_iters": round(0.11 * steps),
        "ema_decay": round(1 - 1 / max(0.057 * steps, 2.0), 5),
    }
