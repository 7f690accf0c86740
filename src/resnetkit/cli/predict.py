"""``resnetkit predict``: classify image files and folders with a trained model.

Exit status: 0 when at least one image was classified, 1 when every input failed, 2 for usage
and model errors (printed by :func:`resnetkit.cli.main.main`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resnetkit.predict import PredictionReport
from resnetkit.cli.common import add_model_args, positive_int


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "predict",
        help="classify image files or folders with a trained model",
        description="Top-k classes of every image given (folders are searched recursively); "
        "a multi-label model's also every class at its threshold (labels; top-k then lists "
        "them too, beyond k if need be). Unreadable files are listed with the reason and do "
        "not stop the others.",
    )
    add_model_args(p, onnx=True)
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files, folders")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default 64")
    p.add_argument(
        "--tta",
        action="store_true",
        help="average each image's probabilities with its mirror image's (twice the compute)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: the probability from which a class is an image's, one for "
        "every class (default: the model's own: 0.5, or the per-class ones `resnetkit "
        "calibrate` chose)",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="mark an answer unsure when its top probability is below this (default: the "
        "model's own, from `resnetkit calibrate --target-accuracy`; 0 marks none)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="as_json", action="store_true", help="print one JSON object")
    fmt.add_argument(
        "--csv",
        dest="as_csv",
        action="store_true",
        help="print path,rank,class,probability rows (failures go to stderr); a multi-label "
        "model's add a column 'predicted' (1 when the class reaches the threshold), a model "
        "with a min confidence a column 'unsure' (1 on every row of an unsure answer)",
    )
    p.set_defaults(func=run_predict)


def format_text(report: PredictionReport) -> str:
    """One line per image (``path  class 93.1%  class 3.0% ...``), failures, a count line."""
    lines = []
    width = max((len(p["path"]) for p in report.predictions), default=0)
    for pred in report.predictions:
        guesses = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in pred["top_k"])
        if "labels" in pred:  # multi-label: the classes at the threshold, then the top k
            chosen = ", ".join(t["class"] for t in pred["labels"]) or "(none)"
            guesses = f"[{chosen}]  {guesses}"
        if pred.get("unsure"):
            guesses = f"(unsure)  {guesses}"
        lines.append(f"{pred['path']:<{width}}  {guesses}")
    if report.failures:
        lines.append(f"failed ({len(report.failures)}):")
        lines.extend(f"  {f['path']}: {f['reason']}" for f in report.failures)
    unsure = sum(bool(p.get("unsure")) for p in report.predictions)
    marked = f" ({unsure} unsure)" if any("unsure" in p for p in report.predictions) else ""
    lines.append(f"{len(report.predictions)} predicted{marked}, {len(report.failures)} failed")
    return "\n".join(lines)


def write_csv(report: PredictionReport) -> None:
    """``path,rank,class,probability`` rows on stdout (rank 1 = most likely), failures on stderr."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    multi = any("labels" in pred for pred in report.predictions)
    selective = any("unsure" in pred for pred in report.predictions)
    extra = (["predicted"] if multi else []) + (["unsure"] if selective else [])
    writer.writerow(["path", "rank", "class", "probability", *extra])
    for pred in report.predictions:
        chosen = {t["index"] for t in pred.get("labels", [])}
        for rank, top in enumerate(pred["top_k"], start=1):
            row = [pred["path"], rank, top["class"], f"{top['probability']:.6f}"]
            row += [int(top["index"] in chosen)] if multi else []
            writer.writerow(row + ([int(pred["unsure"])] if selective else []))
    for failure in report.failures:
        print(f"resnetkit predict: {failure['path']}: {failure['reason']}", file=sys.stderr)


def run_predict(args: argparse.Namespace) -> int:
    from resnetkit.models.loading import load_classifier  # heavy imports only when used
    from resnetkit.predict import predict

    model = load_classifier(args.model, arch=args.arch)
    report = predict(
        model,
        args.inputs,
        top_k=args.top_k,
        batch_size=args.batch_size,
        progress=sys.stderr.isatty(),
        tta=args.tta,
        threshold=args.threshold,
        min_confidence=args.min_confidence,
    )
    if args.as_json:
        print(json.dumps({"model": str(args.model), **report.to_dict()}))
    elif args.as_csv:
        write_csv(report)
    else:
        print(format_text(report))
    return 0 if report.predictions else 1
