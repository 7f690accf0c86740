"""The degradation experiment (He et al. 2015, Fig. 6): plain nets get worse with depth,
residual nets get better.

Trains plain-20/56 and ResNet-20/56 on CIFAR-10 with the same recipe, one after the other
(each run resumable), then draws training and test error against iterations: plain dashed,
ResNet solid, as in the paper's figure, and writes the numbers to ``degradation.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnetkit.train.checkpoint import atomic_write_text, latest_checkpoint
from resnetkit.train.recipe import Recipe, load_recipe, recipe_differences
from resnetkit.train.runlog import read_metrics

if TYPE_CHECKING:
    from resnetkit.train.spec import TrainSpec

MODELS = ("plain20", "plain56", "resnet20", "resnet56")


@dataclass(frozen=True)
class Preset:
    """How much compute the experiment gets."""

    name: str
    recipe: Recipe
    train_subset: int  # 0: all 50k images
    eval_subset: int  # 0: all 10k test images
    description: str


#: What every metrics row of a run must hold for the figure and the report.
ROW_KEYS = ("step", "train_top1", "epoch_seconds")


def presets() -> dict[str, Preset]:
    paper = load_recipe("paper-cifar-full")
    # Quick: 10k training images for 12 epochs (936 iterations), lr divided by 10 at 50% and 75%
    # of the schedule as the paper's 32k/48k of 64k; 72-97 minutes measured on 2 CPU cores.
    # Every model ramps the lr up linearly over the first 150 iterations: at lr 0.1 from the
    # first step ResNet-56's first epoch diverges (the paper warms its ResNet-110 up for the
    # same reason) and 936 iterations leave it no time to recover, which hides the cure
    # (paper recipe, measured: ResNet-56 66.9% training error vs plain-56 72.9%; with the
    # ramp: 35.8% vs 69.0%). `--warmup-iters 0` runs the paper's recipe as it is.
    quick_iters = 12 * (10_000 // 128)
    quick = replace(
        paper,
        name="degradation-quick",
        epochs=12,
        max_iters=quick_iters,
        milestones=(quick_iters // 2, quick_iters * 3 // 4),
        warmup_iters=150,
        eval_every=1,
    )
    return {
        "quick": Preset(
            "quick",
            quick,
            10_000,
            2_000,
            "10k training images, 12 epochs with a 150-iteration lr warm-up, 2k test images "
            "(about 1.5 hours on 2 cores)",
        ),
        "full": Preset(
            "full",
            paper,
            0,
            0,
            "the paper's schedule: 64k iterations at batch 128 on all 50k images",
        ),
    }


def _finished(run: Path) -> bool:
    return (run / "model" / "config.json").exists()


def _spec(
    data_dir: Path,
    run: Path,
    preset: Preset,
    recipe: Recipe,
    progress: bool,
    log_epochs: bool,
    device: str = "cpu",
) -> TrainSpec:
    """How one model of the experiment trains (its folder's name is the model's), resuming
    where a checkpoint is."""
    from resnetkit.train.spec import TrainSpec

    return TrainSpec(
        model=run.name,
        dataset="cifar10",
        data_dir=data_dir,
        out=run,
        recipe=recipe,
        resume=latest_checkpoint(run / "checkpoints") is not None,
        train_subset=preset.train_subset,
        eval_subset=preset.eval_subset,
        progress=progress,
        log_epochs=log_epochs,
        device=device,
    )


def run_degradation(
    data_dir: Path,
    out: Path,
    preset: str = "quick",
    models: tuple[str, ...] = MODELS,
    progress: bool = True,
    recipe_overrides: dict[str, Any] | None = None,
    log_epochs: bool = False,
    jobs: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train every model (resuming unfinished runs, skipping finished ones), plot and summarise.

    Returns the summary written to ``out/degradation.json``. ``log_epochs`` writes one line per
    epoch to stderr when there are no progress bars (a run in the background). ``jobs`` > 1
    trains that many models at once, each in its own process with its share of the threads and
    its own log (``out/NAME.log``): small CIFAR convolutions use many threads poorly, so on 2
    cores two one-thread runs do about 1.7x the work of one two-thread run in fp32 (1.1x in
    bf16, where one run uses the cores better). ``device`` is
    where every model trains (``cuda``: on a GPU, where ``jobs`` > 1 runs the models' kernels
    in turn unless CUDA's Multi-Process Service is running).
    """
    from resnetkit.train.errors import TrainingInterrupted
    from resnetkit.train.trainer import train

    chosen = _preset(preset)
    stopped: int | None = None
    previous = ""
    recipe = chosen.recipe.override(recipe_overrides or {})
    if len(set(models)) != len(models):  # two processes would train into one folder
        raise ValueError(f"a model is named twice in {', '.join(models)}")
    # A finished model is not trained again: one trained otherwise (another warm-up, say)
    # would sit in the same figure and checks as if it were comparable.
    for name in models:
        if (out / name / "recipe.yaml").is_file():
            changed = recipe_differences(load_recipe(out / name / "recipe.yaml").to_dict(), recipe)
            if changed:
                raise ValueError(
                    f"{out / name} was trained with another recipe ({'; '.join(changed)}, "
                    "trained -> asked): give the same options as before, or another --out"
                )
    out.mkdir(parents=True, exist_ok=True)
    todo = [name for name in models if not _finished(out / name)]
    if jobs > 1 and len(todo) > 1:
        _train_in_parallel(data_dir, out, chosen, recipe, todo, jobs, device)
        return report_degradation(out, preset, models, recipe_overrides)
    for index, name in enumerate(models, 1):
        if _finished(out / name):
            continue
        if stopped is not None:  # told to stop while the last model was finishing
            raise TrainingInterrupted(
                f"stopped by {signal.Signals(stopped).name} once {previous} had finished; to "
                "continue, run the same command again",
                stopped,
            )
        spec = _spec(data_dir, out / name, chosen, recipe, progress, log_epochs, device)
        if log_epochs:
            print(
                f"degradation ({chosen.name}): {name}, model {index} of {len(models)}"
                + (", resuming" if spec.resume else ""),
                file=sys.stderr,
                flush=True,
            )
        result = train(spec)
        stopped, previous = result.stop_signal, name
    return report_degradation(out, preset, models, recipe_overrides)


def _work_left(out: Path, name: str, recipe: Recipe) -> float:
    """Roughly how long a model's run still has to go: its depth (``resnet56`` -> 56) times
    the share of its iterations left (1 when the schedule is in epochs)."""
    digits = "".join(ch for ch in name if ch.isdigit())
    rows = read_metrics(out / name, ROW_KEYS)
    done = rows[-1]["step"] if rows else 0
    share = max(recipe.max_iters - done, 0) / recipe.max_iters if recipe.max_iters else 1.0
    return (int(digits) if digits else 1) * share


def _train_in_parallel(
    data_dir: Path,
    out: Path,
    preset: Preset,
    recipe: Recipe,
    names: list[str],
    jobs: int,
    device: str = "cpu",
) -> None:
    """Train ``names`` with at most ``jobs`` at a time, the longest first (which keeps the
    last one to finish from starting late). SIGTERM or Ctrl-C is passed on to every running
    model, which checkpoints; then this raises :class:`TrainingInterrupted`. A model that fails
    does not stop the others."""
    import multiprocessing
    import threading
    import time

    import torch

    from resnetkit.train.errors import RunFailed, TrainingInterrupted

    context = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // jobs)
    queue = sorted(names, key=lambda name: _work_left(out, name, recipe), reverse=True)
    running: dict[str, Any] = {}
    failed: dict[str, int] = {}
    stop: list[int] = []
    read: dict[str, int] = {}  # how far each model's log has been passed on

    def pass_on_logs() -> None:
        """Each model's new log lines, on this process's stderr with the model's name."""
        for name, offset in read.items():
            with open(out / f"{name}.log", "rb") as log:
                log.seek(offset)
                text = log.read()
            done = text.rfind(b"\n") + 1  # whole lines only
            for line in text[:done].decode(errors="replace").splitlines():
                print(f"[{name}] {line}", file=sys.stderr, flush=True)
            read[name] = offset + done

    def on_signal(signum: int, frame: Any) -> None:
        if not stop:  # os.write: a print here could interrupt a print (see the trainer)
            message = (
                f"{signal.Signals(signum).name}: passing it on to the runs in progress, which "
                "write a checkpoint and stop\n"
            )
            with contextlib.suppress(OSError):
                os.write(sys.stderr.fileno(), message.encode())
        stop.append(signum)
        for process in running.values():
            process.terminate()  # SIGTERM: the trainer checkpoints at the end of its step

    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while (queue and not stop) or running:
            while queue and len(running) < jobs and not stop:
                name = queue.pop(0)
                log = out / f"{name}.log"
                process = context.Process(
                    target=_train_one,
                    args=(data_dir, out / name, preset, recipe, threads, log, os.getpid(), device),
                    name=f"degradation-{name}",
                )
                log.touch(mode=0o644)
                read[name] = log.stat().st_size  # a resumed model's log goes on from here
                process.start()
                running[name] = process
                if stop:  # the signal came while the process was starting
                    process.terminate()
                print(
                    f"degradation ({preset.name}): {name} started in its own process with "
                    f"{threads} thread(s); its log ({log}) follows, each line marked [{name}]",
                    file=sys.stderr,
                    flush=True,
                )
            pass_on_logs()
            for name, process in list(running.items()):
                if process.is_alive():
                    continue
                process.join()
                pass_on_logs()
                del running[name]
                code = process.exitcode
                if code and not (stop and code in (128 + signal.SIGTERM, -signal.SIGTERM)):
                    failed[name] = code
                status = "finished" if code == 0 else f"ended with status {code}"
                print(f"degradation ({preset.name}): {name} {status}", file=sys.stderr, flush=True)
            time.sleep(0.5)
    finally:
        for signum, handler in old.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for process in running.values():  # only after an error here: stop the runs too
            process.terminate()
            process.join()
    failures = ", ".join(
        f"{name} (status {code}; see {out / name}.log)" for name, code in failed.items()
    )
    if stop:
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(stop[0]).name}: every run in progress wrote a "
            "checkpoint; to continue, run the same command again"
            + (f". Failed before that: {failures}" if failed else ""),
            stop[0],
        )
    if failed:
        raise RunFailed(f"training failed for {failures}; the other models finished")


def _train_one(
    data_dir: Path,
    run: Path,
    preset: Preset,
    recipe: Recipe,
    threads: int,
    log: Path,
    parent: int,
    device: str = "cpu",
) -> None:
    """One model's run in a process of its own (see :func:`_train_in_parallel`)."""
    import threading
    import time

    import torch

    from resnetkit.train.errors import TrainingInterrupted
    from resnetkit.train.trainer import train

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(threads)

    def orphaned() -> None:  # the parent was killed outright: stop as if told to
        while os.getppid() == parent:
            time.sleep(2.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, daemon=True).start()
    try:
        train(_spec(data_dir, run, preset, recipe, False, True, device))
    except TrainingInterrupted as err:
        print(err, file=sys.stderr, flush=True)
        sys.exit(128 + err.signum)


#: Fields a model of the figure may differ in from the others: the paper itself warmed its
#: ResNet-110 up at lr 0.01 (Sec. 4.2), and the report records where they differ.
WARMUP_FIELDS = ("warmup_iters", "warmup_lr")


def report_degradation(
    out: Path,
    preset: str = "quick",
    models: tuple[str, ...] = MODELS,
    recipe_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarise and draw what the runs in ``out`` hold, finished or not, without training:
    how a run that spans days is followed. Writes ``degradation.json`` and ``degradation.png``.
    """
    chosen = _preset(preset)
    recipe = chosen.recipe.override(recipe_overrides or {})
    # The evidence records the recipe the runs were trained with, which --report's own
    # options cannot change.
    saved = [
        out / name / "recipe.yaml" for name in models if (out / name / "recipe.yaml").is_file()
    ]
    warmups: dict[str, list[str]] = {}
    if saved:
        trained = load_recipe(saved[0])
        for other in saved[1:]:  # one figure, one recipe (but the paper's ResNet-110 warm-up)
            differ = recipe_differences(load_recipe(other).to_dict(), trained)
            apart = [d for d in differ if not d.startswith(WARMUP_FIELDS)]
            if apart:
                raise ValueError(
                    f"{other.parent} and {saved[0].parent} were trained with different recipes "
                    f"({'; '.join(apart)}): their curves and checks would not compare like "
                    "with like; report them from separate --out folders"
                )
            if differ:
                warmups[other.parent.name] = differ
        changed = recipe_differences(trained.to_dict(), recipe)
        if recipe_overrides and changed:
            raise ValueError(
                f"the runs in {out} were trained otherwise ({'; '.join(changed)}, trained -> "
                "asked): --report describes them as they are; leave out the recipe options"
            )
        recipe = trained
    summary = summarise(out, models, chosen, recipe)
    if warmups:  # as the paper warmed ResNet-110 up (lr 0.01 for 400 iterations): said so
        summary["warmup_differences"] = warmups
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "degradation.json", json.dumps(summary, indent=2) + "\n")
    from resnetkit.reproduce.figures import plot_degradation

    plot_degradation(summary, out / "degradation.png")
    return summary


#: Test error (%) of the CIFAR-10 ResNets in He et al. 2015, Table 6 (best of 5 runs for 110),
#: trained on the schedule of the full preset; the plain nets appear only in Fig. 6.
PAPER_TEST_ERROR = {
    "resnet20": 8.75,
    "resnet32": 7.51,
    "resnet44": 7.17,
    "resnet56": 6.97,
    "resnet110": 6.43,
    "resnet1202": 7.93,
}


def _preset(name: str) -> Preset:
    table = presets()
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(table)}")
    return table[name]


def summarise(out: Path, models: tuple[str, ...], preset: Preset, recipe: Recipe) -> dict[str, Any]:
    """Curves, final errors and progress of each model, plus the checks the paper's claim
    implies (only between models whose runs have finished)."""
    target = recipe.max_iters or None
    curves: dict[str, Any] = {}
    for name in models:
        rows = read_metrics(out / name, ROW_KEYS)
        done = rows[-1]["step"] if rows else 0
        seconds = sum(r["epoch_seconds"] for r in rows)
        complete = _finished(out / name) or (target is not None and done >= target)
        left = None
        if target is not None and done:
            # At the pace of the last five epochs, their median: a run that spans sessions
            # changes speed (two runs at a time, a busy machine), its early epochs say little
            # about the rest, and one epoch stretched by a pause would skew a mean.
            steps = [0, *(r["step"] for r in rows)]
            paces = sorted(
                r["epoch_seconds"] / max(r["step"] - before, 1)
                for r, before in zip(rows[-5:], steps[-6:-1], strict=True)
            )
            pace = paces[len(paces) // 2]
            left = max(target - done, 0) * pace / 3600
        curves[name] = {
            "step": [r["step"] for r in rows],
            "train_error": [100.0 - r["train_top1"] for r in rows],
            "test_error": [100.0 - r["test_top1"] for r in rows if "test_top1" in r],
            "test_step": [r["step"] for r in rows if "test_top1" in r],
            "final_train_error": 100.0 - rows[-1]["train_top1"] if rows else None,
            "final_test_error": 100.0 - rows[-1]["test_top1"]
            if rows and "test_top1" in rows[-1]
            else None,
            "seconds": seconds,
            "iterations": done,
            "target_iterations": target,
            "complete": complete,
            # None before the first epoch has finished.
            "hours_left": None if complete else left,
        }
        if preset.name == "full" and name in PAPER_TEST_ERROR:  # the paper's schedule
            curves[name]["paper_test_error"] = PAPER_TEST_ERROR[name]
    checks: dict[str, bool] = {}

    def final(name: str) -> float | None:
        curve = curves.get(name, {})
        value = curve.get("final_train_error")
        return float(value) if value is not None and curve["complete"] else None

    pairs = {
        "plain56_trains_worse_than_plain20": ("plain20", "plain56"),
        "resnet56_trains_better_than_plain56": ("resnet56", "plain56"),
        "resnet20_trains_better_than_plain20": ("resnet20", "plain20"),
    }
    if preset.name == "full":  # a short schedule is not enough for depth to pay off
        pairs["resnet56_trains_better_than_resnet20"] = ("resnet56", "resnet20")
    for key, (lower, higher) in pairs.items():
        a, b = final(lower), final(higher)
        if a is not None and b is not None:
            checks[key] = a < b
    return {
        "preset": preset.name,
        "description": preset.description,
        "recipe": recipe.to_dict(),
        "train_subset": preset.train_subset,
        "eval_subset": preset.eval_subset,
        "complete": all(curve["complete"] for curve in curves.values()),
        "models": curves,
        "checks": checks,
    }
