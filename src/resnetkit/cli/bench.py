"""``resnetkit bench``: inference latency and throughput of every CPU path, with anchors."""

from __future__ import annotations

import argparse
import json

from resnetkit.cli.common import add_model_args, non_negative_int, output_file, positive_int


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from resnetkit.bench import BACKENDS

    p = sub.add_parser(
        "bench",
        help="inference speed: eager, compiled, bf16, ONNX Runtime fp32/int8",
        description="Measures latency (p50/p90 per batch) and throughput of the model on every "
        "backend, in interleaved rounds, with torchvision's own model holding the same weights "
        "as the anchor (for architectures torchvision has) and a default ONNX Runtime session "
        "as the second reference. Export, int8 calibration and compilation happen before the "
        "clock starts. A bare architecture name (resnet50) is measured with random weights: "
        "speed does not depend on the values.",
    )
    add_model_args(p)
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, from: {', '.join(BACKENDS)} (default: all)",
    )
    p.add_argument(
        "--batch-size",
        default="1",
        help="one batch size or several, comma-separated (e.g. 1,16)",
    )
    p.add_argument("--input-size", type=positive_int, default=None)
    p.add_argument("--iters", type=positive_int, default=20, help="timed calls per round")
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--warmup", type=non_negative_int, default=3)
    p.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="intra-op threads (0: one per core, the default)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--out",
        type=output_file,
        default=None,
        help="also write the report here (JSON), and its table beside it (.md)",
    )
    p.set_defaults(func=run)


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--batch-size must be integers separated by commas, got {text!r}"
        ) from None
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"--batch-size must be positive, got {text!r}")
    return sizes


def run(args: argparse.Namespace) -> int:
    from resnetkit.bench import bench_model
    from resnetkit.models.loading import load_model_or_random
    from resnetkit.train.provenance import machine_info

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends:
        raise ValueError("--backends names no backend; e.g. --backends eager,ort")
    model = load_model_or_random(args.model, arch=args.arch)
    report = bench_model(
        model,
        name=args.model,
        backends=backends,
        batch_sizes=_batch_sizes(args.batch_size),
        input_size=args.input_size,
        iters=args.iters,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
        log=(lambda _: None) if args.json else print,
    )
    report.machine = machine_info()
    if args.out is not None:
        from resnetkit.train.checkpoint import atomic_write_text

        out = (
            args.out if args.out.suffix == ".json" else args.out.with_name(args.out.name + ".json")
        )
        atomic_write_text(out, json.dumps(report.to_dict(), indent=2) + "\n")
        atomic_write_text(out.with_suffix(".md"), report.table() + "\n")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"\n{report.model}, {report.input_size}x{report.input_size}, "
            f"{report.threads} threads; ratios from p50 latency (>1: faster)"
        )
        print(report.table())
    return 0
