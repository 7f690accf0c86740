"""``resnetkit reproduce degradation``: the paper's Figure 6 on real CIFAR-10."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnetkit.reproduce.degradation import MODELS, presets


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("reproduce", help="reproduce an experiment of the papers")
    p.add_argument("experiment", choices=("degradation",))
    p.add_argument(
        "--preset",
        default="quick",
        choices=tuple(presets()),
        help="quick: "
        + presets()["quick"].description
        + "; full: "
        + presets()["full"].description,
    )
    p.add_argument("--data-dir", required=True, type=Path, help="folder holding CIFAR-10")
    p.add_argument("--out", type=Path, default=Path("runs/degradation"))
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from resnetkit.reproduce.degradation import run_degradation

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    out = args.out / args.preset
    summary = run_degradation(args.data_dir, out, args.preset, models, not args.no_progress)
    finals = {
        name: {k: c[k] for k in ("final_train_error", "final_test_error")}
        for name, c in summary["models"].items()
    }
    print(
        json.dumps(
            {"figure": str(out / "degradation.png"), "final": finals, "checks": summary["checks"]},
            indent=2,
        )
    )
    return 0
