"""What a training run tells people: its first line, a line per epoch (with the time left),
the undecodable files it skipped, and what final_metrics.json keeps per class."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from resnetkit.data.fast import TensorLoader
from resnetkit.text import plural
from resnetkit.train import distributed
from resnetkit.train.distributed import DistInfo

if TYPE_CHECKING:
    from resnetkit.train.trainer import Trainer


def note(message: str, progress: bool, log_epochs: bool) -> None:
    """A line on stderr: through tqdm under progress bars, plain with ``log_epochs``, else
    nothing."""
    if progress:
        tqdm.write(message, file=sys.stderr)  # stdout keeps only results (JSON)
    elif log_epochs:
        print(message, file=sys.stderr, flush=True)


def data_on_device(loader: object) -> bool:
    """Whether the training data lives on an accelerator (in-memory data that fits)."""
    return isinstance(loader, TensorLoader) and loader.device.type != "cpu"


def describe_start(t: Trainer) -> str:
    """The first line of a run's log: what trains, where, how, and on what."""
    r = t.recipe
    params = sum(p.numel() for p in t.model.parameters())
    how = [r.precision] + (["channels_last"] if r.channels_last else [])
    if r.compile:
        how.append(f"torch.compile ({r.compile_mode})")
    if t._defer_sync:
        how.append("steps not waiting for the device")
    if t.teacher is not None:
        how.append(
            f"distilled from {t.teacher.name} (alpha {r.distill_alpha:g}, "
            f"T {r.distill_temperature:g})"
        )
    where = str(t.device)
    if t.dist.enabled:
        where += f" x {t.dist.world_size} processes"
    if t.data.streaming:
        data = "streamed from disk"
        pre = t.data.preprocessing
        if pre["input_size"] != t.data.train_size or r.eval_resize:
            data += (
                f" ({t.data.train_size}-pixel crops; evaluated at {pre['input_size']}, "
                f"cut from {pre['resize']})"
            )
    else:
        data = "in memory" + (" on the device" if data_on_device(t.train_loader) else "")
    start = f", from step {t.step:,}" if t.step else ""
    return (
        f"training {t.arch} ({params / 1e6:.2f}M parameters) on {where}: "
        f"{', '.join(how)}; {len(t.data.train_labels):,} training images {data}; "
        f"{plural(t.total_iters, 'iteration')}, {t.iters_per_epoch:,} per epoch{start}"
    )


class SkippedFiles:
    """The undecodable files of a streamed folder, each to be named once."""

    def __init__(self) -> None:
        self.named: set[Path] = set()

    def new(self, loaders: list[Any], dist: DistInfo) -> list[tuple[str, str]]:
        """(path, reason) of the files first met since the last call; under torchrun each
        process reads its own share, and every process gets them all (a collective: every
        process calls it, failures or not)."""
        new: list[tuple[str, str]] = []
        for loader in loaders:
            for path, reason in getattr(loader, "failures", {}).items():
                if path not in self.named:
                    self.named.add(path)
                    new.append((str(path), reason))
        if dist.enabled:
            shares = distributed.all_gather_objects(new, dist)
            new = sorted({item for share in shares for item in share})  # type: ignore[attr-defined]
            self.named.update(Path(path) for path, _ in new)
        return new


def row_scores(multi_label: bool) -> tuple[str, ...]:
    """What each evaluated split adds to a metrics row (besides its loss)."""
    return ("map", "micro_f1", "exact") if multi_label else ("top1", "top5")


def epoch_line(
    row: dict[str, Any],
    *,
    epochs: int,
    total_iters: int,
    iters_per_epoch: int,
    pace_from: tuple[float, int] | None,
    now: float,
    seconds: float,
) -> str:
    """The log line of an epoch's metrics ``row``, with the time left at its pace.

    ``pace_from``: (time, step) this process's pace is measured from (see Trainer); ``now``:
    the epoch's end; ``seconds``: how long it trained.
    """
    epoch, step = row["epoch"], row["step"]
    shown = ", ".join(  # None: a multi-label score without the images to define it
        f"{k} {'-' if v is None else format(v, '.4g')}"
        for k, v in row.items()
        if k not in ("epoch", "step", "lr")
    )
    # Time left at this epoch's pace (training only; evaluations add a little), leaving
    # out this process's first step when it falls in this epoch.
    epoch_first = (epoch - 1) * iters_per_epoch
    if pace_from is not None and pace_from[1] > epoch_first:
        since, since_step = pace_from
        pace = (now - since) / max(step - since_step, 1)
    else:
        pace = seconds / max(step - epoch_first, 1)
    left = (total_iters - step) * pace
    eta = f", eta {duration(left)}" if step < total_iters else ""
    return f"epoch {epoch}/{epochs} step {step}: {shown}{eta}"


def per_class(results: dict[str, Any], multi_label: bool) -> dict[str, Any]:
    """What final_metrics.json keeps per class: accuracy and the confusion matrix, or
    (multi-label) AP, precision, recall, F1 and positive images; by split."""
    keys = per_class_keys(multi_label)
    return {key: {name: summary[key] for name, summary in results.items()} for key in keys}


def per_class_keys(multi_label: bool) -> tuple[str, ...]:
    if multi_label:
        return ("ap", "precision", "recall", "f1", "support", "pr_curves")
    return ("per_class", "confusion")


def duration(seconds: float) -> str:
    """42s, 3m05s, 13h58m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
