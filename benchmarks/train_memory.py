"""Training memory of the deep CIFAR ResNets, with and without gradient checkpointing.

The paper's deepest net, ResNet-1202, holds about 153 MiB of activations per 32x32 image
(``resnetkit info resnet1202``): a training step at batch 128 would want some 20 GB on a CPU or
GPU. ``create_model(..., grad_checkpointing=True)`` keeps only each block's input and recomputes
the rest in the backward pass. This measures what that buys and costs, against the same net
without it (the anchor), in the same run::

    .venv/bin/python -m benchmarks.train_memory --models resnet110,resnet1202 --batch-size 16

Each variant trains in a fresh process (peak memory is a per-process high-water mark): the
model, SGD and a random batch are built, the resident memory is read, then ``--steps`` timed
steps run after one untimed one. "Step memory" is the peak resident memory minus what the
process held before its first step: the activations, gradients and optimizer state a step
adds, and what the allocator keeps. "Saved for backward" is what autograd holds at the end of
the forward pass (the tensors its saved-tensor hooks see, each storage once). The variants
alternate in rounds, the order rotating, as in the other benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "checkpointed")  # the first is the anchor


def _rss_mib() -> float:
    """This process's resident memory now (Linux: /proc/self/statm, in pages)."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """This process's resident high-water mark (VmHWM). Not ``getrusage``'s ru_maxrss: Linux
    carries that across exec, so a child started from a larger process (pytest, say) would
    report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


def one(
    model_name: str, batch: int, checkpointed: bool, steps: int, threads: int
) -> dict[str, Any]:
    """One variant in this process: its step memory and step time."""
    import torch
    from torch import nn

    from resnetkit import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name, grad_checkpointing=checkpointed).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    before = _rss_mib()
    seconds = []
    saved: dict[int, int] = {}  # storage -> bytes that autograd keeps for the backward pass

    def keep(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    for i in range(steps + 1):
        start = time.perf_counter()
        hooks = (
            torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t)
            if i == 0  # the untimed step: the hooks cost a little time, no memory
            else contextlib.nullcontext()
        )
        with hooks:
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - start)
    peak = _peak_rss_mib()
    if not torch.isfinite(loss):
        raise RuntimeError(f"{model_name}: the loss is {float(loss)}")
    return {
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "step_memory_mib": peak - before,
        "saved_for_backward_mib": sum(saved.values()) / 2**20,
        "step_seconds": seconds[1:],  # the first step is untimed (allocations, warm caches)
    }


def _child(model: str, batch: int, variant: str, steps: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.train_memory", "--one", model]
    cmd += ["--batch-size", str(batch), "--steps", str(steps), "--threads", str(threads)]
    cmd += ["--checkpointed"] if variant == "checkpointed" else []
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(
    models: tuple[str, ...], batch: int, steps: int, rounds: int, threads: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for model in models:
        got: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            order = VARIANTS[r % 2 :] + VARIANTS[: r % 2]
            for variant in order:
                m = _child(model, batch, variant, steps, threads)
                got[variant].append(m)
                print(
                    f"  {model} round {r + 1}/{rounds} {variant}: step memory "
                    f"{m['step_memory_mib']:,.0f} MiB, step {min(m['step_seconds']):.2f} s",
                    flush=True,
                )
        summary: dict[str, Any] = {}
        for variant in VARIANTS:
            memory = [m["step_memory_mib"] for m in got[variant]]
            step = [min(m["step_seconds"]) for m in got[variant]]
            summary[variant] = {
                "saved_for_backward_mib": got[variant][0]["saved_for_backward_mib"],
                "step_memory_mib": statistics.mean(memory),
                "step_memory_mib_rounds": memory,
                "step_seconds": statistics.mean(step),
                "step_seconds_rounds": step,
            }
        plain, ckpt = summary["plain"], summary["checkpointed"]
        summary["memory_ratio"] = plain["step_memory_mib"] / ckpt["step_memory_mib"]
        summary["time_ratio"] = ckpt["step_seconds"] / plain["step_seconds"]
        results[model] = summary
    return results


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Batch {report['batch_size']}, 32x32 inputs, SGD, {report['threads']} threads, "
        f"{report['rounds']} rounds (fresh process per variant and round).",
        "",
        "| model | saved for backward, plain / checkpointed | step memory, plain (anchor) | "
        "step memory, checkpointed | memory: x less | step time, plain | "
        "step time, checkpointed | time: x more |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, s in report["models"].items():
        p, c = s["plain"], s["checkpointed"]
        lines.append(
            f"| {model} | {p['saved_for_backward_mib']:,.0f} / "
            f"{c['saved_for_backward_mib']:,.0f} MiB | "
            f"{p['step_memory_mib']:,.0f} MiB | {c['step_memory_mib']:,.0f} MiB | "
            f"**{s['memory_ratio']:.1f}x** | {p['step_seconds']:.2f} s | "
            f"{c['step_seconds']:.2f} s | {s['time_ratio']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet110,resnet1202")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--one", metavar="MODEL", help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--checkpointed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        m = one(args.one, args.batch_size, args.checkpointed, args.steps, args.threads)
        print(json.dumps(m))
        return 0
    from resnetkit.train.provenance import machine_info

    models = tuple(m for m in args.models.split(",") if m)
    machine = machine_info()  # before measuring: the load average is the one we ran under
    report = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "anchor": "plain",
        "models": run(models, args.batch_size, args.steps, args.rounds, args.threads),
    }
    report["machine"] = machine
    write_results(args.out / "train_memory.json", report, to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
