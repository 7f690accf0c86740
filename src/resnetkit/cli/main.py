"""Entry point of the ``resnetkit`` command."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from resnetkit import __version__
from resnetkit.cli import (
    bench,
    calibrate,
    convert,
    demo,
    evaluate,
    explain,
    export,
    finetune,
    plot,
    predict,
    quantize,
    reproduce,
    serve,
    train,
    zoo,
)
from resnetkit.train.errors import RunFailed, TrainingDiverged, TrainingInterrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnetkit", description="Deep residual networks: model zoo, training, deployment."
    )
    parser.add_argument("--version", action="version", version=f"resnetkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    zoo.add_parsers(sub)
    demo.add_parsers(sub)
    train.add_parsers(sub)
    finetune.add_parsers(sub)
    reproduce.add_parsers(sub)
    plot.add_parsers(sub)
    evaluate.add_parsers(sub)
    calibrate.add_parsers(sub)
    export.add_parsers(sub)
    convert.add_parsers(sub)
    predict.add_parsers(sub)
    quantize.add_parsers(sub)
    explain.add_parsers(sub)
    serve.add_parsers(sub)
    bench.add_parsers(sub)
    return parser


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Any]:
    """The parsers ``args`` went through, outermost first (``resnetkit``, ``reproduce``, ...)."""
    chain = [parser]
    while True:
        subs = [a for a in chain[-1]._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        chosen = subs[0].choices.get(name) if isinstance(name, str) else None
        if chosen is None:
            return chain
        chain.append(chosen)


def _close_flags(parser: argparse.ArgumentParser, flags: list[str]) -> list[str]:
    """``--batch_size: did you mean --batch-size?`` for each of ``flags`` that is a misspelling
    of one of ``parser``'s own options (``--tencrop``, ``--lrr``, ``--confussion``)."""
    known = [f for f in parser._option_string_actions if f.startswith("--")]
    hints = []
    for flag in flags:
        spelled = "--" + flag.lstrip("-").replace("_", "-").lower()
        close = difflib.get_close_matches(spelled, known, n=3, cutoff=0.75)
        if close:
            hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    return hints


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and say which sub-command an unknown option belongs to, with that sub-command's
    usage (argparse reports it against the top-level usage)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        chain = _chosen(parser, args)
        flags = [e.split("=")[0] for e in extras if e.startswith("-")]
        owners = []
        if len(chain) > 2:  # e.g. `reproduce degradation --shots`: another experiment's option
            subs = next(a for a in chain[-2]._actions if isinstance(a, argparse._SubParsersAction))
            owners = [
                f"{flag} is an option of {sibling.prog}"
                for flag in flags
                for sibling in dict.fromkeys(subs.choices.values())
                if sibling is not chain[-1] and flag in sibling._option_string_actions
            ]
        hints = owners + _close_flags(
            chain[-1], [f for f in flags if not any(o.startswith(f"{f} ") for o in owners)]
        )
        hint = f" ({'; '.join(hints)})" if hints else ""
        chain[-1].error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    formatted = warnings.formatwarning
    warnings.formatwarning = _warning_line(args.command, formatted)
    try:
        return _run(args)
    finally:
        warnings.formatwarning = formatted


def _warning_line(command: str, format_: Callable[..., str]) -> Callable[..., str]:
    """Warnings meant for the user (``UserWarning``: skipped files, a label file without
    splits...) as one line naming the command, not Python's ``file:line:`` and source line;
    the rest (a library's deprecations) as Python writes them. (Only how a warning is
    written changes: recording them, as tests do, is untouched.)"""

    def line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        source: str | None = None,
    ) -> str:
        if issubclass(category, UserWarning):
            return f"resnetkit {command}: warning: {message}\n"
        return format_(message, category, filename, lineno, source)

    return line


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except KeyError as err:  # an unknown model name (UnknownModelError); any other is a bug
        from resnetkit.models.registry import UnknownModelError

        if not isinstance(err, UnknownModelError):
            raise
        print(f"resnetkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (
        FileNotFoundError,
        FileExistsError,  # a run already in --out (pass --resume)
        NotADirectoryError,  # a file where a folder is needed (--data photo.jpg)
        ValueError,
        TypeError,
    ) as err:
        print(f"resnetkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `resnetkit models | head`: the reader has what it wanted
        with contextlib.suppress(OSError, ValueError):  # no second error when Python flushes
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # what `ls | head` leaves, quietly
    except OSError as err:  # a file that cannot be read or written: no traceback for that
        where = f": {err.filename}" if err.filename else ""
        print(f"resnetkit {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:  # a checkpoint was written first
        if err.main_process:  # under torchrun, one line for the run, not one per process
            print(f"resnetkit {args.command}: {err}", file=sys.stderr)
        return 128 + err.signum  # the shell's convention for a process stopped by a signal
    except KeyboardInterrupt:  # Ctrl-C in predict, export, ...: a stop asked for, no bug
        print(f"resnetkit {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    except (TrainingDiverged, RunFailed) as err:
        print(f"resnetkit {args.command}: error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:  # an optional extra that is not installed
        extra = _EXTRAS.get((err.name or "").split(".")[0])
        hint = f": pip install 'resnetkit[{extra}]'" if extra else ""
        what = f"{err.name} is not installed{hint}" if err.name else str(err)
        print(f"resnetkit {args.command}: error: {what}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a model that exports or compiles to something else
        from resnetkit.export.cpu import CPUOptimizationError
        from resnetkit.export.exporter import ExportVerificationError

        if not isinstance(err, ExportVerificationError | CPUOptimizationError):
            raise
        print(f"resnetkit {args.command}: error: {err}", file=sys.stderr)
        return 2


#: The extra that brings each optional module (``pip install 'resnetkit[EXTRA]'``).
_EXTRAS = {
    "onnx": "export",
    "onnxruntime": "export",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "prometheus_client": "serve",
    "tensorboard": "tensorboard",
    "litert_torch": "tflite",
    "coremltools": "coreml",
    "h5py": "keras",
}


if __name__ == "__main__":
    sys.exit(main())
