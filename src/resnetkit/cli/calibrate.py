"""``resnetkit calibrate``: temperature scaling (per-class thresholds for a multi-label model),
fitted on held-out images and checked on others."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from resnetkit.cli.common import (
    add_model_args,
    check_writable_folder,
    data_dir_for,
    fraction,
    png_file,
    positive_int,
    refuse_non_empty,
    seed,
)
from resnetkit.data.datasets import DATASETS

#: pretrained_cfg entries kept out of a calibrated model's preprocessing, besides those
#: save_model_dir leaves out itself: it is a new model, not the weights tag or recipe it came
#: from.
NOT_PREPROCESSING = ("tag", "recipe")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "calibrate",
        help="temperature scaling: confidence that matches accuracy (accuracy unchanged); "
        "--target-accuracy: when to answer unsure; multi-label models: per-class thresholds",
        description="Fits one temperature T on a random part of an evaluation split (logits "
        "divided by T, minimising the negative log-likelihood; Guo et al. 2017) and reports "
        "the calibration error (ECE) and log-likelihood before and after on the other part. "
        "With --out, writes a model directory with T folded into the classifier, so predict, "
        "serve, export and quantize give calibrated probabilities. Top-1 never changes. A "
        "multi-label model gets one threshold per class instead (each class's best F1 on the "
        "fitted part; F1 and exact matches reported before and after), kept by --out. "
        "--target-accuracy P chooses instead the least top-class probability to answer with "
        "(selective classification, Geifman & El-Yaniv 2017): the most images answered at P% "
        "accuracy on the fitted part, coverage and accuracy measured on the rest; with --out, "
        "predict and serve mark answers below it unsure.",
    )
    add_model_args(p, onnx=True)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument(
        "--data-dir",
        default=None,
        type=Path,
        help="CIFAR root, or an image folder (DIR/SPLIT is used when it exists, else DIR), or "
        "a labels .csv/.tsv (its rows of --split when it has a split column, else every row); "
        "needed for every dataset but cifar10-sample. A multi-label model needs --dataset "
        "folder and a label file with a 'labels' column",
    )
    p.add_argument(
        "--split",
        default="test",
        help="held-out images, never the training set (default: test; a folder's val/)",
    )
    p.add_argument(
        "--fit-fraction",
        type=fraction,
        default=0.5,
        help="the share of the split T (or a multi-label model's thresholds) is fitted on; "
        "the rest measures the result (0.5)",
    )
    p.add_argument(
        "--target-accuracy",
        type=target_percent,
        default=None,
        metavar="PERCENT",
        help="choose when the model answers unsure: the least top-class probability whose "
        "answers are PERCENT%% right (e.g. 99), instead of a temperature",
    )
    p.add_argument(
        "--curve",
        type=png_file,
        default=None,
        metavar="PNG",
        help="with --target-accuracy: the accuracy of the answers against the share answered "
        "(risk-coverage curve) on the checked images, the threshold marked",
    )
    p.add_argument("--seed", type=seed, default=0, help="which images go to each part")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--download", action="store_true", help="download CIFAR if missing")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="model directory to write the calibrated model to (for an .onnx --model with "
        "--target-accuracy: an .onnx file, a copy carrying the threshold)",
    )
    p.add_argument("--json", dest="as_json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def target_percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 < value < 100:
        raise argparse.ArgumentTypeError(
            f"{text}: a percentage between 1 and 100 (exclusive), e.g. 99 for 99%"
        )
    return value


def _check_out(out: Path, onnx: bool) -> None:
    """``--out``: a new .onnx file for an ONNX model, else a new or empty folder."""
    if onnx and out.suffix.lower() != ".onnx":
        raise ValueError(
            f"--out {out}: the model is an ONNX file, so its copy carrying the threshold is "
            "one too; name it NAME.onnx"
        )
    if onnx and out.exists():
        raise ValueError(f"--out {out} exists: give a new file (nothing is overwritten)")
    if not onnx and out.suffix.lower() == ".onnx":
        raise ValueError(
            f"--out {out}: the model is written as a model directory; give a folder name "
            "(`resnetkit export` makes an .onnx file of it)"
        )
    try:
        check_writable_folder(out.parent if onnx else out)
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"--out {out}: {err}") from None
    if not onnx:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file: give a folder")
        refuse_non_empty(out)


def run(args: argparse.Namespace) -> int:
    from resnetkit.data.multilabel import model_threshold
    from resnetkit.data.splits import TRAIN_FOLDERS
    from resnetkit.evaluate.calibration import apply_temperature, calibrate
    from resnetkit.models.loading import load_classifier, load_model, preprocessing_of

    if args.split.lower() in TRAIN_FOLDERS:  # the model fits its training images too well
        raise ValueError(
            f"--split {args.split}: a temperature fitted on the images the model was trained on "
            "makes it more, not less, overconfident on new ones; use held-out images (test, "
            "or a folder's val/)"
        )
    data_dir = data_dir_for(args.dataset, args.data_dir)
    onnx = str(args.model).lower().endswith(".onnx")
    if args.curve is not None and args.target_accuracy is None:
        raise ValueError("--curve draws what --target-accuracy chooses from: add --target-accuracy")
    if onnx and args.target_accuracy is None:
        raise ValueError(
            f"{args.model} is an ONNX file: temperature scaling and per-class thresholds are "
            "written into a model directory; calibrate the model it was exported from, then "
            "export that (an ONNX file takes --target-accuracy)"
        )
    if args.out is not None:  # before the work: writing would refuse it after
        _check_out(args.out, onnx)
    model: Any = (
        load_classifier(args.model, arch=args.arch)
        if onnx
        else load_model(args.model, arch=args.arch)
    )
    if onnx and model_threshold(model) is not None:
        raise ValueError(
            f"{args.model} is a multi-label ONNX file: its per-class thresholds are chosen on "
            "the model directory it was exported from (resnetkit calibrate --model DIR --out "
            "NEW_DIR), then exported again"
        )
    if args.target_accuracy is not None:
        return _min_confidence(args, model, data_dir)
    if model_threshold(model) is not None:
        return _thresholds(args, model, data_dir)
    report = calibrate(
        model,
        args.dataset,
        data_dir,
        split=args.split,
        fit_fraction=args.fit_fraction,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        download=args.download,
    )
    result: dict[str, Any] = {"model": str(args.model), **report.to_dict()}
    if args.out is not None:
        cfg = preprocessing_of(model)
        metrics = {  # accuracy is unchanged by the temperature; the losses are not
            k: v for k, v in (cfg.get("metrics") or {}).items() if k.endswith(("_top1", "_top5"))
        }
        if cfg.get("min_confidence") is not None:  # chosen on the probabilities T changes
            print(
                f"note: the model's min_confidence ({cfg['min_confidence']:.4g}) was chosen "
                "for its probabilities before scaling; the calibrated copy answers every image "
                "(choose it again: calibrate --target-accuracy on the copy)",
                file=sys.stderr,
            )
        result["out"] = _save_calibrated(
            args,
            apply_temperature(model, report.temperature),
            "temperature scaling",
            report.to_dict(),
            metrics=metrics,
        )
    if args.as_json:
        print(json.dumps(result, indent=2))
        return 0
    before, after = report.before, report.after
    print(
        f"temperature {report.temperature:.4f} (fitted on {report.fit_images} images of "
        f"{args.dataset} {args.split}; {'under' if report.temperature < 1 else 'over'}confident "
        f"before)\non the other {report.check_images} images:"
    )
    print(f"  {'':<10} {'before':>8} {'after':>8}")
    print(f"  {'ECE (%)':<10} {before['ece']:>8.2f} {after['ece']:>8.2f}")
    print(f"  {'NLL':<10} {before['nll']:>8.4f} {after['nll']:>8.4f}")
    print(f"  {'top-1 (%)':<10} {before['top1']:>8.2f} {after['top1']:>8.2f}")
    if args.out is not None:
        print(f"calibrated model: {args.out}")
    return 0


def _save_calibrated(
    args: argparse.Namespace,
    model: Any,
    method: str,
    report: dict[str, Any],
    *,
    metrics: dict[str, Any],
    **task: Any,
) -> str:
    """Write the calibrated ``model`` to ``--out`` as a model directory: its classes and
    preprocessing (not the task fields, which ``task`` gives anew: ``multi_label``,
    ``threshold``, ``min_confidence``), the ``metrics`` that still hold, and where and how it
    was calibrated."""
    from resnetkit.models.loading import preprocessing_of
    from resnetkit.models.model_dir import save_model_dir

    cfg = preprocessing_of(model)
    save_model_dir(
        model.cpu(),
        args.out,
        arch=model.name,
        classes=list(cfg["classes"]),
        preprocessing={k: v for k, v in cfg.items() if k not in NOT_PREPROCESSING},
        metrics=metrics,
        provenance={
            "calibrated_from": str(args.model),
            "calibration": {
                "method": method,
                "dataset": args.dataset,
                "split": args.split,
                "seed": args.seed,
                **report,
            },
        },
        **task,
    )
    return str(args.out)


def _thresholds(args: argparse.Namespace, model: Any, data_dir: Path) -> int:
    """``calibrate`` of a multi-label model: per-class thresholds (see
    :func:`~resnetkit.evaluate.calibration.calibrate_thresholds`)."""
    from resnetkit.evaluate.calibration import calibrate_thresholds
    from resnetkit.models.loading import preprocessing_of

    report = calibrate_thresholds(
        model,
        args.dataset,
        data_dir,
        split=args.split,
        fit_fraction=args.fit_fraction,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
    )
    result: dict[str, Any] = {"model": str(args.model), **report.to_dict()}
    if args.out is not None:
        cfg = preprocessing_of(model)
        metrics = {  # mAP does not depend on the thresholds; F1 and exact matches do
            k: v for k, v in (cfg.get("metrics") or {}).items() if k.endswith("_map")
        }
        result["out"] = _save_calibrated(
            args,
            model,
            "per-class thresholds (best F1)",
            report.to_dict(),
            metrics=metrics,
            multi_label=True,
            threshold=report.thresholds,
        )
    if args.as_json:
        print(json.dumps(result, indent=2))
        return 0

    def pct(value: float | None) -> str:
        return f"{value:8.2f}" if value is not None else f"{'-':>8}"

    print(
        f"per-class thresholds (each class's best F1 on {report.fit_images} images of "
        f"{args.dataset} {args.split}):"
    )
    width = max(len(c) for c in report.classes)
    for name, cut in zip(report.classes, report.thresholds, strict=True):
        print(f"  {name:<{width}}  {cut:.3f}")
    print(f"on the other {report.check_images} images:")
    print(f"  {'':<15} {'before':>8} {'after':>8}")
    for key, label in (("micro_f1", "micro F1 (%)"), ("macro_f1", "macro F1 (%)"),
                       ("exact", "exact (%)"), ("map", "mAP (%)")):  # fmt: skip
        print(f"  {label:<15} {pct(report.before[key])} {pct(report.after[key])}")
    if args.out is not None:
        print(f"calibrated model: {args.out}")
    return 0


def _min_confidence(args: argparse.Namespace, model: Any, data_dir: Path) -> int:
    """``calibrate --target-accuracy``: when to answer unsure (see
    :func:`~resnetkit.evaluate.selective.calibrate_min_confidence`)."""
    from resnetkit.evaluate.selective import calibrate_min_confidence
    from resnetkit.models.loading import preprocessing_of

    report = calibrate_min_confidence(
        model,
        args.dataset,
        data_dir,
        args.target_accuracy / 100,
        split=args.split,
        fit_fraction=args.fit_fraction,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        download=args.download,
    )
    result: dict[str, Any] = {"model": str(args.model), **report.to_dict()}
    if args.out is not None and str(args.model).lower().endswith(".onnx"):
        from resnetkit.export.metadata import read_metadata, write_onnx_with_metadata

        meta = {
            **read_metadata(args.model),
            "min_confidence": report.min_confidence,
            "selective": {  # how it was chosen, as a model directory's provenance says
                "calibrated_from": str(args.model),
                "dataset": args.dataset,
                "split": args.split,
                "seed": args.seed,
                "target_accuracy": report.target_accuracy,
                "fit_images": report.fit_images,
            },
        }
        write_onnx_with_metadata(args.model, args.out, json.dumps(meta))
        result["out"] = str(args.out)
    elif args.out is not None:
        result["out"] = _save_calibrated(
            args,
            model,
            "selective classification (least top-class probability)",
            report.to_dict(),
            metrics=preprocessing_of(model).get("metrics") or {},  # every image's: unchanged
            min_confidence=report.min_confidence,
        )
    if args.curve is not None:
        from resnetkit.evaluate.plots import plot_risk_coverage

        title = f"{args.model} on {args.dataset} {args.split} ({report.check_images} images)"
        result["curve_png"] = str(
            plot_risk_coverage(
                report.curve, report.after, report.target_accuracy, args.curve, title
            )
        )
    if args.as_json:
        print(json.dumps(result, indent=2))
        return 0
    after, before = report.after, report.before

    def pct(value: float | None) -> str:
        return f"{value:.2f}%" if value is not None else "-"

    print(
        f"min confidence {report.min_confidence:.4f} (chosen on {report.fit_images} images of "
        f"{args.dataset} {args.split}: it answers the most of them with at least "
        f"{report.target_accuracy:g}% of the answers right)"
    )
    print(f"on the other {report.check_images} images:")
    print(f"  answering all: {pct(before['top1'])} right")
    print(
        f"  answered {after['answered']} ({pct(after['coverage'])}): {pct(after['top1'])} right "
        f"(95% lower bound {pct(after['top1_lower_bound'])})"
    )
    unsure = report.check_images - after["answered"]
    print(f"  unsure {unsure}: the top class would have been right on {pct(after['unsure_top1'])}")
    print(f"  area under the risk-coverage curve (AURC): {report.curve['aurc']:.2f}%")
    if args.curve is not None:
        print(f"risk-coverage curve: {result['curve_png']}")
    if args.out is not None:
        print(f"model that answers unsure below it: {args.out}")
    return 0
