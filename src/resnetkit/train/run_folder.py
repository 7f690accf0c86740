"""A run's folder: the lock that keeps one process training in it, what it may hold, and
whether a checkpoint in it belongs to the run being started (``--resume``)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from resnetkit.models.config import ResNetConfig
from resnetkit.text import first_few
from resnetkit.train.checkpoint import LATEST, latest_checkpoint
from resnetkit.train.recipe import Recipe, recipe_differences, recipe_source

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

#: The run facts :func:`check_same_origin` checks (the command, a fine-tuning's source).
ORIGIN_KEYS = ("command", "source", "from_scratch")

#: Model options a resumed run may change: they save memory, and train the same network.
RESUMABLE_OPTIONS = frozenset({"grad_checkpointing"})


@dataclass(frozen=True)
class RunOrigin:
    """The command that started a run and, for ``finetune``, the weights it started from: a
    run goes on only under the command that started it, from the same source."""

    command: str = "train"  # train | finetune
    source: str = ""  # finetune: the pretrained model (a tag, or a path made absolute)
    scratch: bool = False  # finetune --scratch: the source's architecture, random weights

    def facts(self) -> dict[str, Any]:
        """What a checkpoint's run facts and run.json record of it."""
        if self.command == "train":
            return {"command": "train"}
        return {"command": self.command, "source": self.source, "from_scratch": self.scratch}

    @property
    def data_flag(self) -> str:
        """The flag that names the run's data."""
        return "--data" if self.command == "finetune" else "--data-dir"

    @property
    def resume_flags(self) -> str:
        """The flags that must name what the run started with, for its advice."""
        if self.command == "finetune":
            return "--model, --data, --scratch (or not) and --image-size"
        return "--model, --model-option, --dataset, --data-dir, --train-subset and --image-size"


def source_name(source: str | Path) -> str:
    """A fine-tuning source as a run records it: a path made absolute (the same folder named
    from elsewhere is the same source), a tag as it is."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


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
    files are a run's own and are written again). Either must be able to write its
    checkpoints (found out now, not after the first epoch)."""
    if resume and not out.exists():
        raise FileNotFoundError(
            f"nothing to resume in {out}: it does not exist; check --out, or run without "
            "--resume to start"
        )
    has_checkpoint = latest_checkpoint(ckpt_root) is not None
    if resume:
        if not has_checkpoint:
            run = out.parent  # out is the run's model/ or checkpoints/, say
            if (run / "run.json").is_file() and (run / "checkpoints").is_dir():
                raise FileNotFoundError(
                    f"nothing to resume in {out}: it is a part of the run {run}; resume that "
                    f"(--out {run})"
                )
            raise FileNotFoundError(
                f"nothing to resume in {out}: it holds no checkpoint; check --out, or "
                "run without --resume to start"
            )
        _check_writable_run(out, ckpt_root)
        return
    if has_checkpoint:
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    foreign = sorted(
        entry.name
        for entry in (out.iterdir() if out.is_dir() else [])
        if entry.name not in RUN_FILES and not _is_draft(entry.name)
    )
    if foreign:
        shown = first_few(foreign, 5)
        raise FileExistsError(
            f"{out} holds files that are not a training run's ({shown}); choose a new "
            "or empty --out (nothing is overwritten)"
        )
    _check_writable_run(out, ckpt_root)


def _check_writable_run(out: Path, ckpt_root: Path) -> None:
    """The run's folders that exist take new files: ``checkpoints/``, and ``out`` for
    run.json and metrics.jsonl (a read-only one of either would be found out mid-run)."""
    for folder in (ckpt_root, out):
        if folder.is_dir():
            check_writable(folder)


def _is_draft(name: str) -> bool:
    """A file a run writes under another name before moving it into place (a lock, or one of
    its files written whole: ``.run.json.x1y2``); a killed run leaves it behind."""
    return any(name.startswith(f".{own}.") for own in RUN_FILES | {"lock", "write-test"})


def remove_drafts(out: Path) -> None:
    """Remove the drafts (see :func:`_is_draft`) a killed run left in ``out`` and in its
    ``checkpoints`` (its ``latest`` pointer's). Call it holding the run's lock, once the run
    is sure to go on: no other process is writing them."""
    drafts = [p for p in out.glob(".*") if _is_draft(p.name) and not p.name.startswith(".lock")]
    drafts += list((out / "checkpoints").glob(f".{LATEST}.*"))
    for path in drafts:
        if path.is_file():
            path.unlink(missing_ok=True)


def check_writable(folder: Path) -> None:
    """Raise PermissionError naming ``folder`` if a file cannot be created in it (a read-only
    folder or mount): a run would find out only at its first checkpoint."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test."):
            pass
    except OSError as err:
        raise PermissionError(
            f"{folder} is not writable ({err.strerror or err}): the run could not save its "
            "checkpoints and records there; make it writable (chmod u+w "
            f"{shlex.quote(str(folder))}) or choose another --out"
        ) from None


def run_recipe_source(out: Path) -> tuple[dict[str, Any], str] | None:
    """The recipe the run in ``out`` trains with, as :func:`recipe_source` gives one: its
    ``recipe.yaml``, else the copy its latest checkpoint keeps. None where there is no
    checkpoint, or it cannot be read (resuming says why).

    Raises:
        ValueError: a checkpoint without recipe.yaml beside it nor a copy inside (an older
            resnetkit's): the recipe must be given.
    """
    path = out / "recipe.yaml"
    if path.is_file():
        return recipe_source(path)
    try:
        folder = latest_checkpoint(out / "checkpoints")
    except (OSError, ValueError):
        return None
    if folder is None:
        return None
    from resnetkit.models.loading import torch_load_weights_only

    try:
        state = torch_load_weights_only(folder / "state.pt")
        saved = json.loads(state["recipe"]) if "recipe" in state else None
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(saved, dict):
        raise ValueError(
            f"{path} is missing, and {folder / 'state.pt'} keeps no copy of the recipe (an "
            "older resnetkit wrote it): pass --recipe with the recipe the run started with (a "
            "built-in name or its YAML file)"
        )
    return saved, f"the recipe kept in {folder / 'state.pt'}"


def check_same_recipe(
    out: Path, state: dict[str, Any], recipe: Recipe, origin: RunOrigin = RunOrigin()
) -> None:
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
            + f". Resume without --recipe and without those overrides (`{origin.command} "
            f"--resume` then takes the run's own: {out / 'recipe.yaml'}, or the copy its "
            "checkpoint keeps), or start a new run in another --out"
        )


def check_same_origin(out: Path, saved: dict[str, Any], origin: RunOrigin) -> None:
    """Refuse to continue a run under another command than the one that started it, or (a
    fine-tuning) from another source or with(out) --scratch. ``saved``: the run facts of its
    checkpoint, else its run.json (runs from before these were recorded are not checked)."""
    check_same_command(out, saved, origin.command)
    if saved.get("command") != "finetune":
        return
    before, now = saved.get("source"), origin.source
    if before is not None and before != now:
        raise ValueError(
            f"{out} fine-tunes {before}, and --model is now {now}: resume with --model "
            f"{shlex.quote(str(before))}, or start a new run from {now} in another --out"
        )
    scratch = saved.get("from_scratch")
    if scratch is not None and bool(scratch) != origin.scratch:
        raise ValueError(
            f"{out} was started with --scratch (random weights in {before}'s architecture); "
            "resuming without it would name the run's report wrongly: add --scratch"
            if scratch
            else f"{out} fine-tunes the weights of {before}, and --scratch asks for random "
            "ones: drop --scratch, or start the scratch baseline in another --out"
        )


def check_same_command(out: Path, saved: dict[str, Any], command: str) -> None:
    """Refuse to continue with ``command`` (``train``, ``finetune``) a run that another command
    started, naming the command line that resumes it (``saved``: as :func:`check_same_origin`)."""
    started = saved.get("command")
    if started is not None and started != command:
        again = _resume_command(out, saved, started)
        raise ValueError(
            f"{out} holds a `resnetkit {started}` run, which `{command} --resume` "
            f"cannot continue: resume it with `{again}`"
        )


def _resume_command(out: Path, saved: dict[str, Any], command: str) -> str:
    """The command line that resumes the run in ``out`` (what run.json remembers of it)."""
    run = read_run_json(out)
    data = run.get("data_dir")
    words = ["resnetkit", command]
    if command == "finetune":
        words += ["--model", str(saved.get("source") or "SOURCE"), "--data", str(data or "DATA")]
        words += ["--scratch"] if saved.get("from_scratch") else []
    else:
        words += ["--model", str(run.get("model") or saved.get("model") or "MODEL")]
        dataset = run.get("dataset") or saved.get("dataset") or "DATASET"
        words += ["--dataset", str(dataset)]
        if dataset != "cifar10-sample":
            words += ["--data-dir", str(data or "DATA_DIR")]
    return shlex.join([*words, "--out", str(out), "--resume"])


def read_run_json(out: Path) -> dict[str, Any]:
    """``out/run.json`` as a dict; empty when it is missing or unreadable."""
    try:
        run = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) else {}


def check_same_model_options(
    out: Path, saved: dict[str, Any], now: dict[str, Any], origin: RunOrigin = RunOrigin()
) -> None:
    """Refuse a ``--model-option`` that gives another value than the run started with
    (``saved``: its run.json's); those that only save memory may change."""
    changed = [
        f"{key}={_option_text(saved[key])} (the run's) -> {key}={_option_text(now[key])}"
        for key in sorted(set(saved) & set(now))
        if key not in RESUMABLE_OPTIONS and _option_text(saved[key]) != _option_text(now[key])
    ]
    if changed:
        raise ValueError(
            f"{out} was started with other model options; resuming would change --model-option "
            + "; ".join(changed)
            + f". Resume without those --model-option (`{origin.command} --resume` keeps the "
            f"run's own, from {out / 'run.json'}), or start a new run in another --out"
        )


def _option_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def run_record(
    out: Path, run: dict[str, Any], provenance: dict[str, Any], resumed_at: int | None
) -> dict[str, Any]:
    """What run.json holds: ``run``'s facts and, for a new run, its ``provenance``; a run
    resumed (at step ``resumed_at``) keeps the provenance of its first start (when, which
    command and version) and adds an entry to ``resumes`` (at which step, when, how, where)."""
    if resumed_at is None:
        return {**run, "provenance": provenance}
    before = read_run_json(out)
    first = before.get("provenance")
    resumes = before.get("resumes")
    return {
        **run,
        "provenance": first if isinstance(first, dict) else provenance,
        "resumes": [
            *(resumes if isinstance(resumes, list) else []),
            _resume_event(run, provenance, resumed_at),
        ],
    }


def _resume_event(run: dict[str, Any], provenance: dict[str, Any], step: int) -> dict[str, Any]:
    where: dict[str, Any] = {k: run[k] for k in ("data_dir", "device", "world_size") if k in run}
    return {"step": step, **where, **provenance}


def warn_moved_data(out: Path, data_dir: Path, flag: str) -> None:
    """Warn when a resumed run reads its data from another folder than it started on (its
    classes and image count were checked: a copy moved elsewhere goes on)."""
    before = read_run_json(out).get("data_dir")
    if not isinstance(before, str) or not Path(before).is_absolute():
        return  # older runs recorded the folder as typed, relative to a folder unknown now
    if Path(before).resolve() == data_dir.resolve():
        return
    warnings.warn(
        f"{flag} {data_dir} is not the folder the run started on ({before}); its classes and "
        "image count are the same, so the run goes on: make sure it holds the same images",
        stacklevel=3,
    )


def check_same_run(
    out: Path, state: dict[str, Any], now: dict[str, Any], origin: RunOrigin = RunOrigin()
) -> None:
    """Refuse to continue a run whose facts (``now``: model, architecture, data, input size,
    steps per epoch) differ from those its checkpoint ``state`` recorded (the command and
    source: :func:`check_same_origin`)."""
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
                f"started with ({origin.command} --resume reads OUT/recipe.yaml)"
                if after
                else "and the run is now asked to go on without it: resume with --teacher"
            )
        )
    changed = []
    for key in now:
        if key not in saved or saved[key] == now[key] or key in ORIGIN_KEYS:
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
            + f". Resume with the run's own {origin.resume_flags}{_started_with(out, origin)}, "
            "or start a new run in another --out"
        )


def _started_with(out: Path, origin: RunOrigin) -> str:
    """`` (it started with --model resnet20 --dataset folder --data-dir DIR)``: a train run's
    own settings that its run.json records, for the advice of a refused resume (the data
    folder is not one of the facts compared, so a changed count alone would not name it)."""
    run = read_run_json(out)
    if origin.command != "train" or not all(
        isinstance(run.get(key), str) for key in ("model", "dataset", "data_dir")
    ):
        return ""
    options = run.get("model_options") or {}
    options = options if isinstance(options, dict) else {}
    flags = [
        f"--model {run['model']}",
        *(f"--model-option {key}={_option_text(value)}" for key, value in options.items()),
        f"--dataset {run['dataset']}",
        # the bundled sample reads no folder (run.json says ".")
        *(
            []
            if run["dataset"] == "cifar10-sample"
            else [f"--data-dir {shlex.quote(run['data_dir'])}"]
        ),
    ]
    return f" (it started with {' '.join(flags)})"


def _config_defaults() -> dict[str, Any]:
    """The architecture fields that have a default, as a run's facts store them (JSON)."""
    defaults = {f.name: f.default for f in fields(ResNetConfig) if f.default is not MISSING}
    return dict(json.loads(json.dumps(defaults)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
