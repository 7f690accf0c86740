"""Load test of ``resnetkit serve``: micro-batching on vs off, under a mix of good and bad input.

For each variant the server runs in this process (uvicorn on a thread, bound to 127.0.0.1 on a
free port) and an asyncio + httpx client sends ``--requests`` requests, ``--concurrency`` at a
time, for at most ``--timeout-s`` seconds. Seven in ten requests are valid (the bundled PNGs:
raw ``image/png`` bodies, single-file and three-file multipart uploads); three in ten are bad
(random bytes, a truncated PNG, a PNG header claiming 100000x100000 pixels) and must be
refused with their 4xx. Reported per variant: throughput, p50/p99 latency, responses by status,
requests that got a status other than the expected one, requests that got no response at all
(dropped) or were never sent (out of time), forward passes and their mean size, and the peak
RSS of the process so far (server and client together).

Run (from the repository root)::

    .venv/bin/python -m benchmarks.load_test --requests 400 --concurrency 32

Without ``--model`` it serves a randomly initialised ResNet-20 at 32x32 (speed does not depend
on the weights). Results: ``benchmarks/results/load_test.json`` and a markdown table beside it.
The exit status is 1 if any request got a 5xx, no response, or an unexpected status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import socket
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import httpx
import torch
import uvicorn
from fastapi import FastAPI
from torch import nn

from benchmarks.common import markdown_table, set_threads, write_results
from resnetkit.serve import create_app
from resnetkit.serve.app import BACKENDS, Backend
from resnetkit.train.provenance import machine_info

CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
ASSETS = ("cat.png", "ship.png", "automobile.png")


@dataclass(frozen=True)
class LoadConfig:
    model: str | None  # None: a random resnet20 at 32x32
    arch: str | None
    backend: str
    requests: int  # per variant
    concurrency: int  # requests in flight at once
    max_batch: int  # of the batching variant; the other runs with 1
    max_wait_ms: float
    timeout_s: float  # per variant; requests not sent by then are reported as unsent
    warmup: int  # untimed valid requests before each variant
    threads: int
    seed: int


@dataclass(frozen=True)
class Payload:
    """One kind of request and the status it must get."""

    kind: str
    expected: int
    images: int  # images in a valid request (0 for a bad one)
    content: bytes | None = None
    content_type: str | None = None
    files: tuple[tuple[str, str, bytes], ...] = ()  # (field, file name, bytes)

    def request_kwargs(self) -> dict[str, Any]:
        if self.files:
            return {
                "files": [(field, (name, data, "image/png")) for field, name, data in self.files]
            }
        return {"content": self.content, "headers": {"content-type": self.content_type}}


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG file whose header claims ``width`` x ``height`` pixels (a decompression bomb
    as far as the header goes): refused before any pixel is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def asset_bytes(name: str) -> bytes:
    return resources.files("resnetkit.assets").joinpath(name).read_bytes()


def build_payloads(seed: int = 0) -> list[Payload]:
    """Ten requests, one cycle of the mix: seven valid, three bad."""
    images = [asset_bytes(name) for name in ASSETS]
    cat, ship, car = images
    rng = random.Random(seed)
    return [
        Payload("png-body", 200, 1, content=cat, content_type="image/png"),
        Payload("png-body", 200, 1, content=ship, content_type="image/png"),
        Payload("png-body", 200, 1, content=car, content_type="image/png"),
        Payload("multipart-1", 200, 1, files=(("file", "cat.png", cat),)),
        Payload("multipart-1", 200, 1, files=(("file", "ship.png", ship),)),
        Payload(
            "multipart-3",
            200,
            3,
            files=tuple(("files", n, d) for n, d in zip(ASSETS, images, strict=True)),
        ),
        Payload("png-body", 200, 1, content=cat, content_type="image/png"),
        Payload("garbage", 422, 0, content=rng.randbytes(2048), content_type="image/png"),
        Payload("truncated-png", 422, 0, content=cat[: len(cat) // 2], content_type="image/png"),
        Payload("huge-png-header", 413, 0, content=huge_png_header(), content_type="image/png"),
    ]


def random_model(seed: int = 0) -> nn.Module:
    """A randomly initialised ResNet-20 for 32x32 CIFAR-10 images."""
    from resnetkit.models.registry import create_model

    torch.manual_seed(seed)
    model = create_model("resnet20", num_classes=len(CIFAR10_CLASSES))
    model.pretrained_cfg = {  # type: ignore[assignment]
        "classes": list(CIFAR10_CLASSES),
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2470, 0.2435, 0.2616],
        "input_size": 32,
    }
    return model.eval()


@contextlib.contextmanager
def running_server(app: FastAPI, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread, on 127.0.0.1 and a free port; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; loopback only
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on 127.0.0.1:{port}")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@dataclass
class Outcome:
    kind: str
    expected: int
    status: int | None  # None: no response (dropped)
    latency_s: float
    images: int
    problem: str = ""  # why a response does not count as right


async def send_load(
    url: str, payloads: Sequence[Payload], requests: int, concurrency: int, timeout_s: float
) -> tuple[list[Outcome], float]:
    """Send ``requests`` requests (cycling through ``payloads``), ``concurrency`` at a time.

    Returns:
        The outcome of every request sent, and the seconds it all took.
    """
    outcomes: list[Outcome] = []
    next_index = 0
    deadline = time.monotonic() + timeout_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(max(timeout_s, 1.0))
    async with httpx.AsyncClient(
        base_url=url,
        limits=limits,
        timeout=timeout,
        trust_env=False,  # never a proxy
    ) as client:

        async def one(payload: Payload) -> Outcome:
            start = time.perf_counter()
            try:
                response = await client.post("/predict", **payload.request_kwargs())
            except httpx.HTTPError as err:
                elapsed = time.perf_counter() - start
                return Outcome(payload.kind, payload.expected, None, elapsed, 0, repr(err))
            elapsed = time.perf_counter() - start
            outcome = Outcome(payload.kind, payload.expected, response.status_code, elapsed, 0)
            try:
                body = response.json()
            except ValueError:
                outcome.problem = "response is not JSON"
                return outcome
            if response.status_code == 200:
                outcome.images = len(body.get("predictions", []))
                if outcome.images != payload.images:
                    outcome.problem = f"{outcome.images} predictions for {payload.images} images"
            elif not (isinstance(body, dict) and "error" in body and "detail" in body):
                outcome.problem = "error response without 'error' and 'detail'"
            if response.status_code != payload.expected:
                outcome.problem = f"status {response.status_code}, expected {payload.expected}"
            return outcome

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests and time.monotonic() < deadline:
                payload = payloads[next_index % len(payloads)]
                next_index += 1
                outcomes.append(await one(payload))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return outcomes, elapsed


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_variant(model: nn.Module, config: LoadConfig, name: str, max_batch: int) -> dict[str, Any]:
    app = create_app(
        model,
        backend=cast(Backend, config.backend),
        max_batch=max_batch,
        max_wait_ms=config.max_wait_ms,
    )
    service = app.state.service
    payloads = build_payloads(config.seed)
    with running_server(app) as url:
        valid = [p for p in payloads if p.expected == 200]
        warm, _ = asyncio.run(send_load(url, valid, config.warmup, 1, config.timeout_s))
        calls0, images0 = service.batcher.calls, service.batcher.images
        outcomes, elapsed = asyncio.run(
            send_load(url, payloads, config.requests, config.concurrency, config.timeout_s)
        )
        calls = service.batcher.calls - calls0
        images = service.batcher.images - images0
    statuses = Counter("none" if o.status is None else str(o.status) for o in outcomes)
    answered = [o for o in outcomes if o.status is not None]
    latencies = [o.latency_s for o in answered] or [float("nan")]
    problems = Counter(f"{o.kind}: {o.problem}" for o in outcomes if o.problem)
    result = {
        "max_batch": max_batch,
        "max_wait_ms": config.max_wait_ms if max_batch > 1 else 0.0,
        "requests_sent": len(outcomes),
        "seconds": elapsed,
        "requests_per_s": len(answered) / elapsed if elapsed > 0 else 0.0,
        "images_per_s": sum(o.images for o in answered) / elapsed if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": 1000 * percentile(latencies, 50),
            "p99": 1000 * percentile(latencies, 99),
            "max": 1000 * max(latencies),
        },
        "status_counts": dict(sorted(statuses.items())),
        "server_errors": sum(1 for o in answered if o.status is not None and o.status >= 500),
        "dropped": sum(1 for o in outcomes if o.status is None),
        "unsent": config.requests - len(outcomes),
        "unexpected": sum(problems.values()),
        "problems": dict(problems.most_common(10)),
        "forward_passes": calls,
        "mean_batch_size": images / calls if calls else 0.0,
        "peak_rss_mib": peak_rss_mib(),
        "warmup_failures": sum(1 for o in warm if o.status != 200),
    }
    print(
        f"  {name}: {result['requests_per_s']:,.1f} req/s, p50 "
        f"{result['latency_ms']['p50']:.1f} ms, p99 {result['latency_ms']['p99']:.1f} ms, "
        f"statuses {result['status_counts']}, mean batch {result['mean_batch_size']:.1f}",
        flush=True,
    )
    return result


def run(config: LoadConfig) -> dict[str, Any]:
    """Run both variants (micro-batching off, then on) and collect the results."""
    set_threads(config.threads)
    if config.model is None:
        model = random_model(config.seed)
    else:
        from resnetkit.models.loading import load_model_or_random

        model = load_model_or_random(config.model, arch=config.arch)
    variants = {
        "no-batching": 1,
        "micro-batching": config.max_batch,
    }
    results = {name: run_variant(model, config, name, mb) for name, mb in variants.items()}
    off, on = results["no-batching"], results["micro-batching"]
    return {
        "benchmark": "load_test",
        "config": {
            **asdict(config),
            "model": config.model or "random resnet20 (32x32, CIFAR-10 classes)",
            "mix": [{"kind": p.kind, "expected": p.expected} for p in build_payloads()],
        },
        "machine": machine_info(),
        "variants": results,
        "speedup_requests_per_s": (
            on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else None
        ),
        "passed": all(
            v["server_errors"] == 0
            and v["dropped"] == 0
            and v["unsent"] == 0
            and v["unexpected"] == 0
            for v in results.values()
        ),
    }


def results_table(results: dict[str, Any]) -> str:
    headers = [
        "variant", "max batch", "req/s", "images/s", "p50 ms", "p99 ms", "statuses",
        "5xx", "dropped", "unsent", "unexpected", "mean batch", "peak RSS MiB",
    ]  # fmt: skip
    rows = []
    for name, v in results["variants"].items():
        statuses = " ".join(f"{k}:{n}" for k, n in v["status_counts"].items())
        rows.append(
            [
                name,
                str(v["max_batch"]),
                f"{v['requests_per_s']:,.1f}",
                f"{v['images_per_s']:,.1f}",
                f"{v['latency_ms']['p50']:.1f}",
                f"{v['latency_ms']['p99']:.1f}",
                statuses,
                str(v["server_errors"]),
                str(v["dropped"]),
                str(v["unsent"]),
                str(v["unexpected"]),
                f"{v['mean_batch_size']:.1f}",
                f"{v['peak_rss_mib']:,.0f}",
            ]
        )
    return markdown_table(headers, rows)


def parse_args(argv: Sequence[str] | None) -> tuple[LoadConfig, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load_test",
        description="Load-test resnetkit serve in-process on 127.0.0.1: micro-batching on vs off.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model dir, tag, or architecture name (random weights); default: random resnet20",
    )
    parser.add_argument("--arch", default=None, help="architecture of a bare checkpoint file")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--requests", type=int, default=400, help="requests per variant")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--max-batch", type=int, default=32, help="of the batching variant")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=120.0, help="time limit per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per variant")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/load_test.json"))
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "max_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout_s <= 0 or args.max_wait_ms < 0 or args.warmup < 0:
        parser.error("--timeout-s must be positive, --max-wait-ms and --warmup >= 0")
    config = LoadConfig(
        model=args.model,
        arch=args.arch,
        backend=args.backend,
        requests=args.requests,
        concurrency=args.concurrency,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        timeout_s=args.timeout_s,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
    )
    return config, args.out


def main(argv: Sequence[str] | None = None) -> int:
    config, out = parse_args(argv)
    results = run(config)
    table = results_table(results)
    json_path, md_path = write_results(out, results, table)
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
