"""Arguments that several sub-commands share."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

MODEL_HELP = (
    "model directory (config.json + model.safetensors), packaged tag such as "
    "resnet20.cifar10, a Hugging Face Hub repository (hf-hub:timm/resnet50.a1_in1k), or a "
    "checkpoint file (.safetensors/.pt/.pth, Keras .npz/.h5; needs --arch)"
)


def add_model_args(p: argparse.ArgumentParser, *, onnx: bool = False, resumed: str = "") -> None:
    """``--model NAME_OR_DIR`` and ``--arch ARCH`` (for bare checkpoint files); ``onnx``: the
    command also runs an ``.onnx`` file written by ``resnetkit export``; ``resumed``: the
    command's ``--resume`` takes both from the run (this note says so), so --model is left
    None rather than required (see :func:`left_out_unless_resume`)."""
    more = ", or an .onnx file from `resnetkit export` (run by ONNX Runtime)" if onnx else ""
    more += f" {resumed}" if resumed else ""
    p.add_argument("--model", required=not resumed, default=None, help=MODEL_HELP + more)
    p.add_argument(
        "--arch",
        default=None,
        help="architecture of a bare checkpoint, e.g. resnet20"
        + (f" {resumed}" if resumed else ""),
    )


def left_out_unless_resume(
    args: argparse.Namespace, names: tuple[str, ...], usage_error: Callable[[str], NoReturn]
) -> list[str]:
    """The options of ``names`` (``args`` attributes) left out, which a ``--resume`` takes from
    the run's ``run.json``; without ``--resume``, argparse's usage error that they are required."""
    left_out = [name for name in names if getattr(args, name) is None]
    if left_out and not args.resume:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in left_out)
        usage_error(f"the following arguments are required: {flags}")
    return left_out


def run_to_resume(out: Path, command: str) -> dict[str, Any]:
    """``out/run.json`` of the run that ``command --resume`` continues (empty when missing or
    unreadable); a run another command started is refused with the command that resumes it."""
    from resnetkit.train.run_folder import check_same_command, read_run_json

    run = read_run_json(out)
    origin = run.get("origin")
    check_same_command(out, origin if isinstance(origin, dict) else {}, command)
    return run


def not_in_run(
    out: Path, run: dict[str, Any], left_out: list[str], what: str, give: str
) -> ValueError:
    """The error of a ``--resume`` whose ``left_out`` options (``args`` attributes) ``run``
    (``out/run.json``) does not give: no folder, no run.json, unreadable, or ``what`` missing
    from it; ``give``: the flags to pass instead."""
    saved = out / "run.json"
    why = (
        f"there is no folder {out}"
        if not out.is_dir()
        else f"{out} is not a run folder (no run.json)"
        if not saved.is_file()
        else "it cannot be read"
        if not run
        else f"it does not name {what}"
    )
    flags = " and ".join(f"--{name.replace('_', '-')}" for name in left_out)
    return ValueError(
        f"--resume without {flags} takes {'it' if len(left_out) == 1 else 'them'} from {saved}, "
        f"and {why}: give {give}"
    )


def note_taken(out: Path, taken: list[str]) -> None:
    """``note: continuing RUN with --model X ... (from RUN/run.json)``: the flags a ``--resume``
    took from the run, once (the first process under torchrun)."""
    if taken and os.environ.get("RANK", "0") == "0":
        print(
            f"note: continuing {out} with {' '.join(taken)} (from {out / 'run.json'})",
            file=sys.stderr,
        )


def model_option(text: str) -> tuple[str, Any]:
    """``--model-option KEY=VALUE``, typed (torch is imported only once it is used)."""
    from resnetkit.models.registry import parse_model_option

    try:
        return parse_model_option(text)
    except ValueError as err:  # argparse would print only "invalid value"
        raise argparse.ArgumentTypeError(str(err)) from None


def add_model_option_arg(p: argparse.ArgumentParser, note: str = "") -> None:
    """``--model-option KEY=VALUE``, repeatable: any architecture option of ``create_model``."""
    p.add_argument(
        "--model-option",
        action="append",
        default=None,
        type=model_option,
        metavar="KEY=VALUE",
        help="an architecture option, repeatable: unit=bn_after_add|relu_before_add|"
        "relu_only_preact (2016 paper, Fig. 4), skip=scaling|exclusive_gating|shortcut_gating|"
        "dropout with gate_bias=-6 ... (Fig. 2), shortcut=A|B|C, stride_in_1x1=true, "
        "zero_init_residual=true, drop_path_rate=0.1 ..." + (f" {note}" if note else ""),
    )


def data_dir_for(
    dataset: str,
    data_dir: Path | None,
    flag: str = "--data-dir",
    dataset_flag: str = "--dataset",
) -> Path:
    """The folder a dataset is read from: the bundled ``cifar10-sample`` needs none; every
    other dataset must be told where it is (never the current folder by default)."""
    if dataset == "cifar10-sample":
        if data_dir is not None:  # else the folder given would be ignored without a word
            raise ValueError(
                f"{flag} {data_dir}: {dataset_flag} cifar10-sample is bundled with resnetkit "
                f"and reads no folder; drop {flag}, or for the CIFAR-10 there pass "
                f"{dataset_flag} cifar10"
            )
        return Path(".")
    if data_dir is not None:
        return data_dir
    raise ValueError(
        f"{flag} is needed for {dataset_flag} {dataset}: the CIFAR root or image folder to "
        "read (only the bundled cifar10-sample needs none)"
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def numbers(text: str) -> list[float]:
    """Comma-separated finite numbers, e.g. ``0.4914,0.4822,0.4465``."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def distinct_names(names: list[str], what: str) -> list[str]:
    """``names`` (stripped, empty ones left out) when there is at least one and none twice;
    else a ValueError that starts with ``what`` (the flag)."""
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ValueError(f"{what} names nothing: give at least one, comma-separated")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{what} names {', '.join(twice)} twice: give each once")
    return names


def image_side(text: str) -> int:
    """A square image side in pixels: 1 to :data:`~resnetkit.train.recipe.MAX_IMAGE_SIDE`."""
    from resnetkit.train.recipe import MAX_IMAGE_SIDE

    value = positive_int(text)
    if value > MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"at most {MAX_IMAGE_SIDE} pixels, got {value}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def seed(text: str) -> int:
    """A random seed: a whole number in [0, 2**32)."""
    value = non_negative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2**32, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and value != float("inf")):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {value}")
    return value


def output_file(text: str) -> Path:
    """An ``--out`` file, checked before any work: not a folder, under a folder that exists
    (or can be created) and can be written to."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a folder: give a file name inside it (for example {path / 'NAME'}, "
            "with the suffix of the format)"
        )
    check_writable_folder(path.parent)
    return path


#: Suffixes of other image and document formats: a PNG under such a name would mislead.
OTHER_FIGURE_SUFFIXES = (".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pdf", ".svg")


def check_png_target(path: Path) -> None:
    """A figure's file name, before any work: resnetkit writes PNG, under the name given, but
    not under another format's suffix, and it never replaces a file that is not a PNG (a
    script or a photo given by mistake).

    Raises:
        argparse.ArgumentTypeError: the name or the file in its place says why not.
    """
    if path.suffix.lower() in OTHER_FIGURE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{path}: figures are written as PNG, not {path.suffix}; name it "
            f"{path.with_suffix('.png').name}"
        )
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                raise argparse.ArgumentTypeError(
                    f"{path} exists and is not a PNG image: it is not replaced; choose another "
                    "name for the figure"
                )


def png_file(text: str) -> Path:
    """A figure to write (``--out`` of ``plot``, ``--lr-plot``...): see
    :func:`check_png_target`; an earlier figure under the same name is replaced."""
    path = output_file(text)
    check_png_target(path)
    return path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def image_file(text: str) -> Path:
    """A picture to write in the format its suffix names (``explain --out``); an existing
    file is replaced only if it is a picture too (a previous result), never a script."""
    path = output_file(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{path}: name the picture with one of {', '.join(IMAGE_SUFFIXES)}"
        )
    if path.is_file():
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError):
            raise argparse.ArgumentTypeError(
                f"{path} exists and is not a picture: it is not replaced; choose another name"
            ) from None
    return path


def output_folder(text: str) -> Path:
    """An ``--out`` folder (it may exist), checked like :func:`output_file`."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: give a folder")
    check_writable_folder(path)
    return path


def refuse_non_empty(folder: Path) -> None:
    """Before the work: a model directory is written only into a new or empty ``--out``."""
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} is not empty; choose a new or empty --out (nothing is overwritten)"
        )


def check_writable_folder(folder: Path) -> None:
    """Raise ``ArgumentTypeError`` unless files can be written in ``folder`` (created later
    if missing): its nearest existing ancestor must be a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing}: permission denied")
