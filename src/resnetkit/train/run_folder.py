"""A run's folder: the lock that keeps one process training in it, what it may hold, and
whether a checkpoint in it belongs to the run being started (``--resume``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

from resnetkit.models.config import ResNetConfig
from resnetkit.train.checkpoint import latest_checkpoint
from resnetkit.train.recipe import Recipe, recipe_differences

#: What a run folder holds (a run that never checkpointed may be started again over them).
RUN_FILES = frozenset(
    {
        "run.json",
        "recipe.yaml",
        "metrics.jsonl",
        "tensorboard",
        "checkpoints",
        "curves.png",
        "final_metrics.json",
        "model",
        "report.json",  # finetune's
        "confusion.png",
        ".lock",  # left by a killed run; see run_lock
    }
)


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` (this process's id and start time) while a run trains in ``out``: a
    second process on the same folder (a ``--resume`` typed while the first still runs) would
    interleave its epochs and delete the other's checkpoint being written. A lock whose
    process is gone (a kill -9) is taken over, also when its id now belongs to another
    process (a restarted container reuses ids, this one's included)."""
    lock = out / ".lock"
    mine = f"{os.getpid()} {_start_time(os.getpid()) or '-'}\n"
    for _ in range(3):
        # Written whole under another name, then linked into place: never seen half-written.
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".lock.")
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)  # readable by whoever else shares the folder
            f.write(mine)
        try:
            try:
                os.link(tmp, lock)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links (FAT, some mounts)
                _create_lock(lock, mine)
        except FileExistsError:
            holder = _holder(lock)
            if holder == -1:
                raise FileExistsError(
                    f"{lock} belongs to another user, who may be training in {out}: ask them, "
                    "or remove the lock if no run is going"
                ) from None
            if holder is not None:
                raise FileExistsError(
                    f"another process (pid {holder}) is training in {out}; wait for it to end "
                    f"or stop it (kill {holder}: it checkpoints first), then run again"
                ) from None
            lock.unlink(missing_ok=True)  # left by a run that was killed
            continue
        finally:
            Path(tmp).unlink(missing_ok=True)
        break
    else:
        raise FileExistsError(f"could not take {lock}: another process keeps creating it")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _create_lock(lock: Path, text: str) -> None:
    """``lock`` created only if absent (FileExistsError otherwise), then written."""
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _holder(lock: Path) -> int | None:
    """The id of the live process that holds ``lock``, or None if the lock is stale."""
    try:
        fields = lock.read_text().split()
        pid = int(fields[0])
    except PermissionError:
        return -1  # another user's: taken as held, not deleted
    except (OSError, ValueError, IndexError):
        return None  # unreadable or empty (an older resnetkit's half-written lock)
    if pid == os.getpid():
        return None  # this process does not hold it yet: an earlier one with the same id did
    if not process_alive(pid):
        return None
    started = fields[1] if len(fields) > 1 and fields[1] != "-" else None
    now = _start_time(pid)
    if started is not None and now is not None and now != started:
        return None  # the id was reused by another process
    return pid


def _start_time(pid: int) -> str | None:
    """When a process started, in clock ticks since boot (Linux); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing ")".
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def check_out_folder(out: Path, ckpt_root: Path, resume: bool) -> None:
    """Before any work: --resume needs a checkpoint to continue from, and a new run needs
    a folder that is new, empty, or holds only a run that never wrote a checkpoint (its
    files are a run's own and are written again)."""
    has_checkpoint = latest_checkpoint(ckpt_root) is not None
    if resume:
        if not has_checkpoint:
            raise FileNotFoundError(
                f"nothing to resume in {out}: it holds no checkpoint; check --out, or "
                "run without --resume to start"
            )
        return
    if has_checkpoint:
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    foreign = sorted(
        entry.name
        for entry in (out.iterdir() if out.is_dir() else [])
        if entry.name not in RUN_FILES and not entry.name.startswith(".lock.")  # a lock's draft
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{out} holds files that are not a training run's ({shown}); choose a new "
            "or empty --out (nothing is overwritten)"
        )


def check_same_recipe(out: Path, state: dict[str, Any], recipe: Recipe) -> None:
    """Refuse to continue a run with another recipe (a different lr, schedule or batch
    would silently make it a different run); speed and logging fields may change."""
    if "recipe" in state:
        saved = json.loads(state["recipe"])
    else:  # checkpoints written before the recipe was stored in them
        path = out / "recipe.yaml"
        saved = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(saved, dict):
        return
    changed = recipe_differences(saved, recipe)
    if changed:
        raise ValueError(
            f"{out} was trained with another recipe; resuming would change "
            + "; ".join(changed)
            + f". Resume with the run's own recipe (--recipe {out / 'recipe.yaml'}, "
            "the default of `train --resume`), or start a new run in another --out"
        )


def check_same_run(out: Path, state: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to continue a run whose facts (``now``: model, architecture, data, input size,
    steps per epoch) differ from those its checkpoint ``state`` recorded."""
    if "run" not in state:  # checkpoints written before these facts were stored
        return
    saved = json.loads(state["run"])
    if isinstance(saved.get("architecture"), dict):  # fields added since take defaults
        saved["architecture"] = {**_config_defaults(), **saved["architecture"]}
    if "teacher_sha256" in saved and saved["teacher_sha256"] != now.get("teacher_sha256"):
        before, after = saved["teacher_sha256"], now.get("teacher_sha256")
        raise ValueError(
            f"{out} was trained "
            + (
                f"from a teacher with weights of SHA-256 {before[:12]}..., "
                if before
                else "without a teacher, "
            )
            + (
                f"and the teacher now holds others ({after[:12]}...): trained further, an "
                "updated tag, or an unpinned hf-hub: name that moved. Put the run's teacher "
                "back (an hf-hub: name pinned with @REVISION), or start a new run in another --out"
                if before and after
                else "and the run is now asked to distil from one: resume with the recipe it "
                "started with (train --resume reads OUT/recipe.yaml)"
                if after
                else "and the run is now asked to go on without it: resume with --teacher"
            )
        )
    changed = []
    for key in now:
        if key not in saved or saved[key] == now[key]:
            continue
        if isinstance(now[key], dict) and isinstance(saved[key], dict):  # name the fields
            changed += [
                f"{key}.{k}: {_short(saved[key].get(k))} -> {_short(now[key].get(k))}"
                for k in sorted(set(now[key]) | set(saved[key]))
                if saved[key].get(k) != now[key].get(k)
            ]
        else:
            changed.append(f"{key}: {_short(saved[key])} -> {_short(now[key])}")
    if changed:
        raise ValueError(
            f"{out} holds a run of other settings; resuming would change "
            + "; ".join(changed)
            + ". Resume with the run's own --model, --model-option, --dataset, --data-dir, "
            "--train-subset and --image-size, or start a new run in another --out"
        )


def _config_defaults() -> dict[str, Any]:
    """The architecture fields that have a default, as a run's facts store them (JSON)."""
    defaults = {f.name: f.default for f in fields(ResNetConfig) if f.default is not MISSING}
    return dict(json.loads(json.dumps(defaults)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
