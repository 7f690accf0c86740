"""What a run writes beside its checkpoints: resolved recipe, run.json, metrics.jsonl and
TensorBoard scalars. Only the main process writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from resnetkit.train.checkpoint import atomic_write_text
from resnetkit.train.provenance import provenance
from resnetkit.train.recipe import Recipe


def read_metrics(out: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``, one per epoch (none yet: an empty list).

    Raises:
        ValueError: a line that is not a JSON object, lacks a ``required`` key, or holds
            something else than a number under it or a ``*_top1``/``*_top5``/``*_loss`` key
            (file, line and key named).
    """
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    text = path.read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not text.endswith("\n"):
                break  # the row being written (or cut by a kill -9; --resume writes it again)
            raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
        missing = [key for key in required if not isinstance(row, dict) or key not in row]
        if missing:
            raise ValueError(f"{path}, line {number}: no {', '.join(missing)}")
        for key, value in row.items() if isinstance(row, dict) else ():
            numeric = key in required or key.endswith(("_top1", "_top5", "_loss"))
            if numeric and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise ValueError(f"{path}, line {number}: {key} is {value!r}, not a number")
        rows.append(row)
    return rows


class RunLog:
    """Files of one run directory. ``enabled=False`` (non-main DDP ranks) writes nothing."""

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self._writer: Any = None

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def write_run_files(self, recipe: Recipe, run: dict[str, Any]) -> None:
        """``recipe.yaml`` (resolved) and ``run.json`` (run facts plus provenance: this
        process's, unless ``run`` holds one, as a resumed run keeps its first start's)."""
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "recipe.yaml", yaml.safe_dump(recipe.to_dict()))
        run = {**run, "provenance": run.get("provenance") or provenance()}
        atomic_write_text(self.out / "run.json", json.dumps(run, indent=2) + "\n")

    def reset(self, history: list[dict[str, Any]]) -> None:
        """Make metrics.jsonl hold exactly ``history`` (a fresh run, or the rows of the
        checkpoint a run resumes from, dropping rows written after it)."""
        if not self.enabled:
            return
        text = "".join(json.dumps(row) + "\n" for row in history)
        atomic_write_text(self.metrics_path, text)

    def append(self, row: dict[str, Any]) -> None:
        """One epoch's metrics to metrics.jsonl and, where tensorboard is installed, TensorBoard."""
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                self._writer = False
        if self._writer:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self._writer.add_scalar(key, value, row["step"])
            self._writer.flush()

    def close(self) -> None:
        if self._writer:
            self._writer.close()
        self._writer = None
