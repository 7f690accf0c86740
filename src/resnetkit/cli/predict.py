"""``resnetkit predict``: classify image files and folders with a trained model.

Exit status: 0 when at least one image was classified, 1 when every input failed, 2 for usage
and model errors (printed by :func:`resnetkit.cli.main.main`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        "not stop the others. Text and --csv lines are written as each batch completes, the "
        "unreadable files and counts at the end: a run stopped with Ctrl-C keeps the lines of "
        "the batches done; --json prints one document at the end.",
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
    fmt.add_argument(
        "--json",
        dest="as_json",
        action="store_true",
        help="print one JSON object, when every image is done",
    )
    fmt.add_argument(
        "--csv",
        dest="as_csv",
        action="store_true",
        help="print path,rank,class,probability rows (failures go to stderr); a multi-label "
        "model's add a column 'predicted' (1 when the class reaches the threshold), a model "
        "with a min confidence a column 'unsure' (1 on every row of an unsure answer)",
    )
    p.set_defaults(func=run_predict)


class TextWriter:
    """The table on stdout a batch at a time, one line an image (``path  class 93.1%  class
    3.0% ...``, paths padded to the longest of the files to be read); then the failures and a
    count line."""

    def __init__(self) -> None:
        self.width = 0

    def batch(self, predictions: list[dict[str, Any]], files: Sequence[Path]) -> None:
        self.width = self.width or max(len(str(f)) for f in files)
        for pred in predictions:
            guesses = "  ".join(
                f"{t['class']} {100 * t['probability']:.1f}%" for t in pred["top_k"]
            )
            if "labels" in pred:  # multi-label: the classes at the threshold, then the top k
                chosen = ", ".join(t["class"] for t in pred["labels"]) or "(none)"
                guesses = f"[{chosen}]  {guesses}"
            if pred.get("unsure"):
                guesses = f"(unsure)  {guesses}"
            print(f"{pred['path']:<{self.width}}  {guesses}")
        sys.stdout.flush()  # a run stopped later keeps these

    def finish(self, report: PredictionReport) -> None:
        if report.failures:
            print(f"failed ({len(report.failures)}):")
            for failure in report.failures:
                print(f"  {failure['path']}: {failure['reason']}")
        unsure = sum(bool(p.get("unsure")) for p in report.predictions)
        marked = f" ({unsure} unsure)" if any("unsure" in p for p in report.predictions) else ""
        print(f"{len(report.predictions)} predicted{marked}, {len(report.failures)} failed")


class CsvWriter:
    """``path,rank,class,probability`` rows on stdout a batch at a time (rank 1 = most likely;
    ``predicted`` and ``unsure`` columns as the model has them), failures on stderr at the end."""

    def __init__(self) -> None:
        self.writer = csv.writer(sys.stdout, lineterminator="\n")
        self.extra: list[str] | None = None  # the header is written with the first rows

    def batch(self, predictions: list[dict[str, Any]], files: Sequence[Path]) -> None:
        if self.extra is None:  # a model's predictions all have the same keys
            first = predictions[0]
            self.extra = ["predicted"] if "labels" in first else []
            self.extra += ["unsure"] if "unsure" in first else []
            self.writer.writerow(["path", "rank", "class", "probability", *self.extra])
        multi, selective = "predicted" in self.extra, "unsure" in self.extra
        for pred in predictions:
            chosen = {t["index"] for t in pred.get("labels", [])}
            for rank, top in enumerate(pred["top_k"], start=1):
                row = [pred["path"], rank, top["class"], f"{top['probability']:.6f}"]
                row += [int(top["index"] in chosen)] if multi else []
                self.writer.writerow(row + ([int(pred["unsure"])] if selective else []))
        sys.stdout.flush()  # a run stopped later keeps these

    def finish(self, report: PredictionReport) -> None:
        if self.extra is None:  # nothing was predicted: the header alone
            self.writer.writerow(["path", "rank", "class", "probability"])
        for failure in report.failures:
            print(f"resnetkit predict: {failure['path']}: {failure['reason']}", file=sys.stderr)


def run_predict(args: argparse.Namespace) -> int:
    from resnetkit.models.loading import load_classifier  # heavy imports only when used
    from resnetkit.predict import predict

    model = load_classifier(args.model, arch=args.arch)
    # text and CSV are written as each batch completes; the JSON document is whole at the end
    writer = None if args.as_json else CsvWriter() if args.as_csv else TextWriter()
    report = predict(
        model,
        args.inputs,
        top_k=args.top_k,
        batch_size=args.batch_size,
        progress=sys.stderr.isatty(),
        tta=args.tta,
        threshold=args.threshold,
        min_confidence=args.min_confidence,
        on_batch=writer.batch if writer is not None else None,
    )
    if writer is None:
        print(json.dumps({"model": str(args.model), **report.to_dict()}))
    else:
        writer.finish(report)
    return 0 if report.predictions else 1
