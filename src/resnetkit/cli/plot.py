"""``resnetkit plot``: training curves of one run, or of several side by side, at any time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from resnetkit.cli.common import png_file

REQUIRED = ("epoch", "step", "train_loss")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "plot",
        help="training curves of runs (finished or still training) in one PNG",
        description="Draws loss and top-1 error against epochs or iterations from each run's "
        "metrics.jsonl (the --out folder of `resnetkit train`, `finetune` or a degradation "
        "model), while it trains or after, and prints each run's summary. Several runs share "
        "the figure: one colour per run, train dotted, val dash-dot, test solid.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folders (or their metrics.jsonl)")
    # A string default, so that argparse runs png_file on it too (a Path would skip it).
    p.add_argument("--out", type=png_file, default="curves.png", help="PNG to write")
    p.add_argument(
        "--x",
        choices=("epoch", "step"),
        default="epoch",
        help="horizontal axis: epochs, or iterations (to line up runs with other batch sizes)",
    )
    p.add_argument("--labels", default=None, help="comma-separated, one per run (default: names)")
    p.add_argument("--title", default=None)
    p.add_argument("--json", dest="as_json", action="store_true", help="summary as JSON")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from resnetkit.reproduce.figures import plot_training_curves

    folders = [run.parent if run.name == "metrics.jsonl" else run for run in args.runs]
    labels = _labels(folders, args.labels)
    runs = {
        label: load_rows(folder, empty_ok=len(folders) > 1)
        for label, folder in zip(labels, folders, strict=True)
    }
    waiting = [label for label, rows in runs.items() if not rows]
    if len(waiting) == len(runs):
        raise ValueError(f"no epoch has finished yet in any of {', '.join(waiting)}")
    for label in waiting:  # a run just started beside others: they are drawn, it is named
        print(f"resnetkit plot: {label}: no epoch has finished yet; left out", file=sys.stderr)
        del runs[label]
    title = args.title
    if title is None and len(folders) == 1:
        title = _describe(folders[0])
    plot_training_curves(runs, args.out, title or "", x=args.x)
    summaries = {label: summarise(rows) for label, rows in runs.items()}
    if args.as_json:
        print(json.dumps({"figure": str(args.out), "runs": summaries}, indent=2))
    else:
        print(_table(summaries))
        print(f"figure: {args.out}")
    return 0


def _runs_nearby(folder: Path) -> str:
    """Where the runs are when ``folder`` holds none: above it (``folder`` is a run's
    ``model/`` or ``checkpoints/``) or below it (``reproduce degradation``'s --out, which holds
    OUT/PRESET/MODEL runs), said as the end of an error message."""
    if (folder.parent / "metrics.jsonl").is_file():
        return f": {folder.name}/ is a part of the run {folder.parent}; pass that folder"
    below = sorted(
        run.parent
        for pattern in ("*/metrics.jsonl", "*/*/metrics.jsonl")
        for run in folder.glob(pattern)
    )
    where = ": pass the --out folder of `resnetkit train` or `resnetkit finetune`"
    if not below:
        return where
    shown = " ".join(str(run) for run in below[:6]) + (" ..." if len(below) > 6 else "")
    return f"{where}, such as the runs under it: {shown}"


def load_rows(folder: Path, empty_ok: bool = False) -> list[dict[str, Any]]:
    """A run's metrics rows, checked; errors name the file and what to do. ``empty_ok``: a run
    with no finished epoch gives [] instead of an error."""
    from resnetkit.train.runlog import read_metrics

    path = folder / "metrics.jsonl"
    if folder.is_file():
        raise ValueError(
            f"{folder} is a file, not a run folder: pass the folder that holds metrics.jsonl "
            "(or that file itself, named metrics.jsonl)"
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such run folder")
    if not path.exists():
        raise FileNotFoundError(f"{folder} holds no metrics.jsonl{_runs_nearby(folder)}")
    rows = read_metrics(folder, REQUIRED)
    if not rows and not empty_ok:
        raise ValueError(f"{path} is empty: no epoch has finished yet")
    for number, row in enumerate(rows, 1):
        if not any(isinstance(row.get(k), int | float) for k in ("train_top1", "train_exact")):
            raise ValueError(f"{path}, row {number}: no train_top1 (or train_exact) number")
    return rows


def _score_keys(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """What a run is scored by: (training, evaluation) keys: top-1 both, or for a
    multi-label run exact-match accuracy and mAP."""
    return ("top1", "top1") if "train_top1" in rows[-1] else ("exact", "map")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a run stands: its last epoch, and the best and last top-1 of each evaluated split
    (a multi-label run: training exact-match accuracy, and mAP)."""
    last = rows[-1]
    train, score = _score_keys(rows)
    out: dict[str, Any] = {
        "epochs": last["epoch"],
        "step": last["step"],
        f"train_{train}": last[f"train_{train}"],
        "train_loss": last["train_loss"],
    }
    for split in ("val", "test"):
        key = f"{split}_{score}"
        evaluated = [r for r in rows if isinstance(r.get(key), int | float)]
        if evaluated:
            best = max(evaluated, key=lambda r: r[key])
            out[key] = evaluated[-1][key]
            out[f"best_{key}"] = best[key]
            out[f"best_{split}_epoch"] = best["epoch"]
    return out


def _labels(folders: list[Path], given: str | None) -> list[str]:
    if given is not None:
        labels = [label.strip() for label in given.split(",")]
        if len(labels) != len(folders):
            raise ValueError(f"--labels names {len(labels)} runs; {len(folders)} were given")
        if "" in labels or len(set(labels)) != len(labels):  # one run would hide another
            raise ValueError(f"--labels must name each run once, and differently: {given!r}")
        return labels
    # Folder names; where two are alike (runs/a/model, runs/b/model), parents are added.
    resolved = [folder.resolve() for folder in folders]
    for depth in range(1, max(len(r.parts) for r in resolved) + 1):
        labels = ["/".join(r.parts[-depth:]) for r in resolved]
        if len(set(labels)) == len(labels):
            return labels
    return [str(folder) for folder in folders]  # the same folder twice


def _describe(folder: Path) -> str:
    try:
        run = json.loads((folder / "run.json").read_text())
        what = f"{run['model']} on {run['dataset']}"
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name
    return what if folder.name == run["model"] else f"{what} ({folder.name})"


def _table(runs: dict[str, dict[str, Any]]) -> str:
    def pct(row: dict[str, Any], key: str, mark: str = "") -> str:
        return f"{row[key]:.2f}{mark}" if key in row else "-"

    width = max(3, *(len(label) for label in runs))
    lines = [
        f"{'run':<{width}}  epochs     step  train top-1  test top-1  best test (epoch)  "
        "best val (epoch)"
    ]
    multi = False
    for label, row in runs.items():
        train, score = ("top1", "top1") if "train_top1" in row else ("exact", "map")
        multi = multi or score == "map"
        mark = "*" if score == "map" else ""
        best_test = (
            f"{row[f'best_test_{score}']:.2f}{mark} ({row['best_test_epoch']})"
            if f"best_test_{score}" in row
            else "-"
        )
        best_val = (
            f"{row[f'best_val_{score}']:.2f}{mark} ({row['best_val_epoch']})"
            if f"best_val_{score}" in row
            else "-"
        )
        lines.append(
            f"{label:<{width}}  {row['epochs']:>6}  {row['step']:>7}  "
            f"{pct(row, f'train_{train}', mark):>11}  {pct(row, f'test_{score}', mark):>10}  "
            f"{best_test:>17}  {best_val:>16}"
        )
    if multi:
        lines.append("* multi-label run: train exact-match accuracy, test and val mAP (%)")
    return "\n".join(lines)
