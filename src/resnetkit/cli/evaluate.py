"""``resnetkit evaluate``: accuracy, per-class accuracy and confusion matrix of a trained model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from resnetkit.cli.common import (
    add_model_args,
    check_png_target,
    check_writable_folder,
    data_dir_for,
    image_side,
    non_negative_int,
    positive_int,
)
from resnetkit.data.datasets import DATASETS
from resnetkit.evaluate import PAPER_SCALES


def scale_list(text: str) -> tuple[int, ...]:
    """``224,256,384`` -> a tuple of shorter sides (each a valid image side)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give shorter sides separated by commas, e.g. 224,256")
    return tuple(image_side(p) for p in parts)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate",
        help="measure a trained model on CIFAR or an image folder",
        description="Top-1/top-5 and per-class accuracy of a trained model, optionally with the "
        "paper's 10-crop testing and a confusion-matrix PNG. A multi-label model (on a label "
        "file with a 'labels' column): mAP, micro/macro-F1 and exact matches at its threshold, "
        "per-class AP, precision, recall and F1, and precision-recall curves (--pr-curves); "
        "10-crop, multi-scale, --confusion and --reliability are refused for it.",
    )
    add_model_args(p, onnx=True)
    p.add_argument(
        "--dataset",
        required=True,
        choices=DATASETS,
        help="cifar10-sample: 1000/500 real CIFAR-10 images bundled with resnetkit",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        type=Path,
        help="CIFAR root, or an image folder (DIR/SPLIT is used when it exists, else DIR), or "
        "a labels .csv/.tsv (its rows of --split when it has a split column; every row, "
        "--split aside, when it has none); needed for every dataset but cifar10-sample",
    )
    p.add_argument("--split", default="test", help="train or test for CIFAR (default: test)")
    p.add_argument(
        "--ten-crop",
        action="store_true",
        help="average the softmax over 4 corner + centre crops and their flips (CIFAR: from "
        "images padded by 4 pixels; folders: from images resized to 1.14x)",
    )
    p.add_argument(
        "--multi-scale",
        nargs="?",
        const=",".join(map(str, PAPER_SCALES)),
        default=None,
        type=scale_list,
        metavar="SIDES",
        help="folders: the paper's multi-scale testing, whole images (fully convolutional) "
        "resized to each shorter side, softmax averaged, one picture a forward pass "
        f"(--batch-size does not apply); default sides {','.join(map(str, PAPER_SCALES))}",
    )
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=0,
        help="folders: processes decoding pictures ahead of the model (default 0: none)",
    )
    p.add_argument(
        "--image-size", type=image_side, default=None, help="default: the model's (at most 4096)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--download", action="store_true", help="download CIFAR if missing")
    p.add_argument(
        "--confusion",
        type=str,  # a Path would drop the trailing "/" that marks a folder to create
        default=None,
        metavar="PNG",
        help="write the confusion matrix to this PNG (default: none); given a folder, write "
        "FOLDER/confusion_<dataset>_<split>[_10crop].png",
    )
    p.add_argument(
        "--reliability",
        type=str,
        default=None,
        metavar="PNG",
        help="write a reliability diagram (accuracy against confidence) to this PNG; given a "
        "folder, FOLDER/reliability_<dataset>_<split>[_10crop].png",
    )
    p.add_argument(
        "--pr-curves",
        type=str,
        default=None,
        metavar="PNG",
        help="multi-label models: write each class's precision-recall curve to this PNG; "
        "given a folder, FOLDER/pr_curves_<dataset>_<split>.png",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: the probability from which a class counts as predicted, "
        "one for every class (default: the model's own: 0.5, or the per-class ones `resnetkit "
        "calibrate` chose)",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="also report coverage and the accuracy of the answers whose top probability "
        "reaches this (default: the model's own, from `resnetkit calibrate "
        "--target-accuracy`; 0 for none)",
    )
    p.add_argument("--json", dest="as_json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_evaluate)


def figure_path(
    target: str | Path,
    dataset: str,
    split: str,
    ten_crop: bool,
    kind: str = "confusion",
    multi_scale: bool = False,
) -> Path:
    """Where ``--confusion`` (``--reliability``) writes: the path itself, or a default name
    inside a folder (an existing one, or one given with a trailing slash, created if missing)."""
    path = Path(target)
    if path.is_dir() or str(target).endswith(("/", "\\")):
        suffix = "_10crop" if ten_crop else ""
        suffix = "_multiscale" if multi_scale else suffix
        return path / f"{kind}_{dataset}_{split}{suffix}.png"
    return path


def format_report(result: dict[str, Any], model_name: str) -> str:
    """The human-readable table: overall accuracy, then one row per class."""
    if result.get("multi_label"):
        return format_multi_label(result, model_name)
    crops = "10-crop" if result["ten_crop"] else "single crop"
    size = f"{result['input_size']}x{result['input_size']}"
    if result.get("scales"):
        crops = "multi-scale (whole images)"
        size = "shorter side " + "/".join(map(str, result["scales"]))
    lines = [
        f"{model_name} on {result['dataset']} {result['split']}: {result['count']} images, "
        f"{crops}, {size}",
        f"  top-1 {result['top1']:6.2f}%   top-5 {result['top5']:6.2f}%   "
        f"loss {result['loss']:.4f}   ECE {result['ece']:.2f}% (confidence against accuracy)",
        f"  balanced accuracy {result['balanced_accuracy']:6.2f}%   macro F1 "
        f"{result['macro_f1']:6.2f}%   weighted F1 {result['weighted_f1']:6.2f}%",
    ]
    chosen = result.get("selective")
    if chosen is not None:

        def pct(value: float | None) -> str:
            return f"{value:.2f}%" if value is not None else "-"

        lines.append(
            f"  answered at min confidence {chosen['min_confidence']:.4g}: {chosen['answered']} "
            f"({pct(chosen['coverage'])}), {pct(chosen['top1'])} right (95% lower bound "
            f"{pct(chosen['top1_lower_bound'])}); unsure {result['count'] - chosen['answered']}, "
            f"{pct(chosen['unsure_top1'])} right"
        )
    lines.append("")

    def cell(value: float | None) -> str:
        return f"{value:6.2f}%" if value is not None else f"{'-':>7}"

    width = max([len("class"), *(len(c) for c in result["classes"])])
    header = f"  {'class':<{width}}  {'recall':>7}  {'precision':>9}  {'F1':>7}  {'images':>6}"
    lines.append(header)
    for name, row in zip(result["classes"], result["confusion"], strict=True):
        lines.append(
            f"  {name:<{width}}  {cell(result['recall'][name])}  "
            f"{cell(result['precision'][name]):>9}  {cell(result['f1'][name])}  {sum(row):>6}"
        )
    return "\n".join(lines)


def format_multi_label(result: dict[str, Any], model_name: str) -> str:
    """A multi-label evaluation: mAP, F1 and exact matches, then AP and the scores at the
    threshold per class."""
    from resnetkit.data.multilabel import describe_threshold

    def cell(value: float | None) -> str:
        return f"{value:6.2f}%" if value is not None else f"{'-':>7}"

    lines = [
        f"{model_name} on {result['dataset']} {result['split']}: {result['count']} images, "
        f"single crop, {result['input_size']}x{result['input_size']}, multi-label",
        f"  mAP {cell(result['map'])}   at threshold {describe_threshold(result['threshold'])}: "
        f"micro F1 "
        f"{cell(result['micro_f1'])}   macro F1 {cell(result['macro_f1'])}   exact match "
        f"{cell(result['exact'])}   loss {result['loss']:.4f}",
        "",
    ]
    width = max([len("class"), *(len(c) for c in result["classes"])])
    lines.append(
        f"  {'class':<{width}}  {'AP':>7}  {'recall':>7}  {'precision':>9}  {'F1':>7}  "
        f"{'images':>6}"
    )
    for name in result["classes"]:
        lines.append(
            f"  {name:<{width}}  {cell(result['ap'][name])}  {cell(result['recall'][name])}  "
            f"{cell(result['precision'][name]):>9}  {cell(result['f1'][name])}  "
            f"{result['support'][name]:>6}"
        )
    return "\n".join(lines)


def option(kind: str) -> str:
    """The command-line option that asks for a figure kind."""
    return kind.replace("_", "-")


def run_evaluate(args: argparse.Namespace) -> int:
    from resnetkit.data.multilabel import model_threshold
    from resnetkit.evaluate.evaluator import evaluate_model  # heavy imports only when used
    from resnetkit.models.loading import load_classifier

    data_dir = data_dir_for(args.dataset, args.data_dir)
    figures = {
        kind: figure_path(
            target, args.dataset, args.split, args.ten_crop, kind, args.multi_scale is not None
        )
        for kind, target in (
            ("confusion", args.confusion),
            ("reliability", args.reliability),
            ("pr_curves", args.pr_curves),
        )
        if target is not None
    }
    for kind, path in figures.items():  # checked first: an evaluation can take a while
        if not path.suffix:  # `--confusion out` for README's `out/`: a folder or a file?
            raise ValueError(
                f"--{option(kind)} {path}: a name without a suffix may be meant as a file or "
                f"a folder; name the PNG {path}.png, or the folder {path}/ (the figure gets a "
                "default name inside)"
            )
        try:
            check_writable_folder(path.parent)
            check_png_target(path)
        except argparse.ArgumentTypeError as err:
            raise ValueError(f"--{option(kind)} {path}: {err}") from None
    kinds = list(figures)
    for i, first in enumerate(kinds):
        for second in kinds[i + 1 :]:
            if figures[first].resolve() == figures[second].resolve():
                raise ValueError(
                    f"--{option(first)} and --{option(second)} both name {figures[first]}: one "
                    "figure would replace the other; give a file each (or a folder)"
                )
    if args.multi_scale is not None and args.image_size is not None:
        raise ValueError(
            "--multi-scale resizes whole pictures to its own sides; --image-size does not "
            "apply: drop it, or give the sides (--multi-scale 224,320)"
        )
    model = load_classifier(args.model, arch=args.arch)
    multi_label = model_threshold(model) is not None
    softmax_only = [kind for kind in figures if kind != "pr_curves"]
    if softmax_only and multi_label:  # before the evaluation, too
        names = " and ".join(f"--{kind}" for kind in softmax_only)
        raise ValueError(
            f"{names}: a multi-label model has no confusion matrix or top-class confidence; "
            "drop them (the per-class AP, precision and recall are in the report; "
            "--pr-curves draws its precision-recall curves)"
        )
    if "pr_curves" in figures and not multi_label:
        raise ValueError(
            "--pr-curves is for multi-label models (a sigmoid per class); this one picks one "
            "class an image: --confusion shows where it goes wrong"
        )
    fixed = getattr(model, "fixed_input_size", None)  # an ONNX file exported at one size
    if args.image_size is not None and fixed is not None and args.image_size != fixed:
        raise ValueError(
            f"--image-size {args.image_size}: {args.model} takes {fixed}x{fixed} inputs; drop "
            f"--image-size, or export again with --input-size {args.image_size}"
        )
    result = evaluate_model(
        model,
        args.dataset,
        data_dir,
        split=args.split,
        batch_size=args.batch_size,
        ten_crop=args.ten_crop,
        image_size=args.image_size,
        device=args.device,
        download=args.download,
        progress=sys.stderr.isatty(),
        scales=args.multi_scale,
        num_workers=args.num_workers,
        threshold=args.threshold,
        curves="pr_curves" in figures,
        min_confidence=args.min_confidence,
    )
    if "pr_curves" in figures:
        from resnetkit.evaluate.plots import plot_pr_curves

        path = figures["pr_curves"]
        curves = result.pop("pr_curves")  # points for the figure, not for the report
        if curves["classes"]:
            title = f"{model.name} on {args.dataset} {args.split} (mAP {result['map']:.2f}%)"
            result["pr_curves_png"] = str(plot_pr_curves(curves, result["ap"], path, title))
        else:  # the numbers are still worth having: no figure, and why
            print(
                f"resnetkit evaluate: --pr-curves {path}: no image of {args.split} has any of "
                "the classes, so there is no precision-recall curve to draw (not written)",
                file=sys.stderr,
            )
    # which test, as the default file names say it: a 10-crop figure beside a single-crop one
    # had the same title over another top-1
    test = ", 10-crop" if args.ten_crop else ", multi-scale" if result.get("scales") else ""
    if "confusion" in figures:
        from resnetkit.evaluate.plots import plot_confusion

        path = figures["confusion"]
        title = f"{model.name} on {args.dataset} {args.split}{test} (top-1 {result['top1']:.2f}%)"
        result["confusion_png"] = str(
            plot_confusion(result["confusion"], result["classes"], path, title)
        )
    if "reliability" in figures:
        from resnetkit.evaluate.plots import plot_reliability

        path = figures["reliability"]
        title = f"{model.name} on {args.dataset} {args.split}{test}"
        result["reliability_png"] = str(
            plot_reliability(result["reliability"], result["ece"], path, title)
        )
    if args.as_json:
        print(json.dumps({"model": str(args.model), **result}))
    else:
        print(format_report(result, str(args.model)))
        if "confusion_png" in result:
            print(f"confusion matrix: {result['confusion_png']}")
        if "reliability_png" in result:
            print(f"reliability diagram: {result['reliability_png']}")
        if "pr_curves_png" in result:
            print(f"precision-recall curves: {result['pr_curves_png']}")
    return 0
