"""The paper's CIFAR-10 recipe on ResNet-20/56/110 and plain-20/56 on a lent GPU, inside one
short device lease: issue 3's GPU check and the full degradation experiment (Fig. 6) at once.

Nothing here is needed to use resnetkit; it is how this project runs issue 3's GPU check when a
session is lent a GPU for a few minutes. CIFAR-10 (180 MB) does not fit one device call (64 MiB
travel), so it goes in two parts, as lossless WebP mosaics (17 MB per 10,000 images against 30 MB
raw); on arrival every batch file is rebuilt byte for byte and checked against the SHA-256 of the
original. Then the five models train at once, each in its own process, for at most
``--budget-s`` seconds; a run still going then gets SIGTERM, writes a checkpoint and is reported
with the iterations it reached. A device call brings back at most 8 files: the summary, the
runs' curves and logs in ``logs.tar.xz``, and one tar per run (its finished model, else its
checkpoint, to continue it). ``receive`` lays them out here as ``reproduce degradation --preset
full`` lays out its runs, so the figure is drawn here. Run on 2026-11-30 (one H200, PyTorch 2.11
there): 530 s took ResNet-20 to 29.8k iterations, ResNet-56 to 18.9k, ResNet-110 to 10.1k
(``benchmarks/results/gpu-paper-cifar.json``). The steps (``.gpu/`` is git-ignored, so only
``carry`` sends it)::

    here:    python -m benchmarks.gpu_paper_cifar pack --data-dir ../shared/data/cifar10 --out .gpu
    call 1:  carry .gpu/part1  (about 60 s; fills the compile cache that call 2 reuses)
             python3 -m benchmarks.gpu_paper_cifar unpack --part .gpu/part1 --to runs/gpu-cifar &&
             python3 -m benchmarks.gpu_paper_cifar smoke --results $OUT/smoke
    call 2:  carry .gpu/part2 (at once: the machine stays warm only about 30 s)
             python3 -m benchmarks.gpu_paper_cifar unpack --part .gpu/part2 --to runs/gpu-cifar &&
             python3 -m benchmarks.gpu_paper_cifar train --data-dir runs/gpu-cifar \
                 --out runs/gpu-paper --results $OUT --budget-s 530 --grace-s 30
    here:    python -m benchmarks.gpu_paper_cifar receive --results FILES_AT --to DIR
             resnetkit reproduce degradation --preset full --out DIR --report
             (and, once models finish, reproduce responses --from DIR/full for Fig. 7)

Next time, add ``--mps`` to both calls: one ResNet-20 process alone trained at 27,000 images/s
on that H200 (``benchmarks/gpu_step_wait.py``), about what all five moved together, so without
MPS running them at once bought nothing; the smoke call says whether MPS started (not yet tried
on the device). To continue runs on a later lease (from where the GPU left them, or from where
this CPU got them since), ``send`` packs their latest checkpoints as the device packs its own::

    here:    python -m benchmarks.gpu_paper_cifar send --runs runs/gpu-paper/full \
                 --models resnet56,plain56,resnet110 --to .gpu/send   (a new, empty folder)
    call 0:  carry .gpu/send
             python3 -m benchmarks.gpu_paper_cifar receive --results .gpu/send --to runs/gpu-prev
    call 2:  ... train --data-dir runs/gpu-cifar --out runs/gpu-prev/full \
                 --models resnet56,plain56,resnet110 --require-resume --results $OUT ...

(a run with a checkpoint resumes; ``--require-resume`` refuses to start one from step 0 when
the machine lost call 0's files; ``--models`` keeps the finished ones from starting again;
``receive`` here refuses to replace a run that got further here meanwhile).

The speed settings (bf16, channels_last, CUDA graphs through ``torch.compile``, evaluating every
4th epoch) change how fast the recipe runs, not the recipe: batch 128, lr 0.1 divided by 10 at
32k and 48k iterations, 64k iterations, ResNet-110 warmed up at lr 0.01 for 400 iterations,
all 50k training images (``paper-cifar-full``: the paper fixed the 64k iterations on a 45k/5k
split, and its Table 6 and Fig. 6 models train on the whole set, as the CPU run of the
degradation preset does).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = {
    "part1": ("data_batch_1", "data_batch_2", "data_batch_3"),
    "part2": ("data_batch_4", "data_batch_5", "test_batch"),
}
RECORD = 3073  # one label byte, then 3x32x32 pixels (channel-major), per image
MODELS = ("resnet20", "resnet56", "resnet110", "plain20", "plain56")
RECIPE = "paper-cifar-full"
# The paper, Sec. 4.2: ResNet-110 starts at lr 0.01 until training error is below 80% (~400 it).
MODEL_ARGS = {"resnet110": ["--warmup-iters", "400", "--warmup-lr", "0.01"]}
# Evaluating the 10k test images after every one of the 165 epochs would cost ResNet-110 about a
# minute of the budget: every 4th epoch, and always after the last.
GPU_SPEED = (
    "--precision bf16 --channels-last true --compile true --compile-mode reduce-overhead "
    "--eval-every 4 --num-threads 3"
)
# What a device call can bring back: at most 8 files of at most 16 MB, at most 2 folders down.
BACK_FILES = 8
BACK_BYTES = 16 * 1024 * 1024
SRC = Path(__file__).resolve().parents[1] / "src"


def _import_from_src() -> None:
    """Make this checkout's resnetkit importable (on the device it is not installed)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def _mosaic(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> one (32*side, 32*side, 3) picture, zero-padded to a square of tiles."""
    n = len(images)
    side = max(1, math.ceil(math.sqrt(n)))
    tiles = np.zeros((side * side, 32, 32, 3), np.uint8)
    tiles[:n] = images
    return tiles.reshape(side, side, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(side * 32, -1, 3)


def _unmosaic(picture: np.ndarray, n: int) -> np.ndarray:
    side = picture.shape[0] // 32
    tiles = picture.reshape(side, 32, side, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3)
    return tiles[:n]


def pack(data_dir: Path, out: Path) -> dict[str, Any]:
    """Write ``out/part1`` and ``out/part2``: WebP mosaics, labels and a manifest of hashes."""
    from PIL import Image

    src = data_dir / "cifar-10-batches-bin"
    if not src.is_dir():
        raise FileNotFoundError(f"{src} not found: --data-dir must hold cifar-10-batches-bin/")
    meta = (src / "batches.meta.txt").read_text() if (src / "batches.meta.txt").exists() else ""
    manifest: dict[str, Any] = {"batches": {}, "meta": meta}
    for part, names in BATCHES.items():
        folder = out / part
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            raw = (src / f"{name}.bin").read_bytes()
            if len(raw) % RECORD:
                raise ValueError(f"{src / name}.bin is not a whole number of CIFAR-10 records")
            records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
            images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            buffer = io.BytesIO()
            Image.fromarray(_mosaic(images)).save(buffer, "WEBP", lossless=True, method=4)
            (folder / f"{name}.webp").write_bytes(buffer.getvalue())
            (folder / f"{name}.labels").write_bytes(records[:, 0].tobytes())
            manifest["batches"][name] = {
                "part": part,
                "images": len(records),
                "sha256": hashlib.sha256(raw).hexdigest(),
            }
    for part in BATCHES:
        (out / part / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def unpack(part: Path, to: Path) -> list[Path]:
    """Rebuild the part's ``.bin`` files under ``to/cifar-10-batches-bin``, checking each hash."""
    from PIL import Image

    manifest = json.loads((part / "manifest.json").read_text())
    folder = to / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    if manifest["meta"]:
        (folder / "batches.meta.txt").write_text(manifest["meta"])
    written = []
    for name, entry in manifest["batches"].items():
        if entry["part"] != part.name:
            continue
        with Image.open(part / f"{name}.webp") as picture:
            images = _unmosaic(np.asarray(picture.convert("RGB")), entry["images"])
        labels = np.frombuffer((part / f"{name}.labels").read_bytes(), np.uint8)
        records = np.concatenate(
            [labels[:, None], images.transpose(0, 3, 1, 2).reshape(len(labels), -1)], axis=1
        )
        raw = records.tobytes()
        if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise ValueError(f"{part / name}.webp does not rebuild the original {name}.bin")
        (folder / f"{name}.bin").write_bytes(raw)
        written.append(folder / f"{name}.bin")
    return written


def smoke_data(cifar: Path, to: Path) -> Path:
    """A CIFAR-10 folder for the smoke run made of the batches already there (part 1):
    every missing batch links to one that is, so the reader finds all six, and the names."""
    src = cifar / "cifar-10-batches-bin"
    have = sorted(src.glob("*.bin"))
    if not have:
        raise FileNotFoundError(f"no .bin batches under {src}: unpack a part first")
    folder = to / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([*BATCHES["part1"], *BATCHES["part2"]]):
        link = folder / f"{name}.bin"
        if not link.exists():
            link.symlink_to(have[i % len(have)].resolve())
    meta = src / "batches.meta.txt"
    if meta.is_file() and not (folder / meta.name).exists():
        (folder / meta.name).symlink_to(meta.resolve())
    return to


def smoke(
    cifar: Path,
    out: Path,
    results: Path | None,
    models: tuple[str, ...] = MODELS,
    device: str = "cuda",
    iters: int = 60,
    budget_s: float = 240.0,
    extra: str = GPU_SPEED,
    mps: bool = False,
) -> dict[str, Any]:
    """The long call's path in small: every model trains ``iters`` iterations through the same
    command line (bf16, channels_last, CUDA graphs, the test-set evaluation at the end), all at
    once. It proves the package runs on the device's own PyTorch, warms the compile cache the
    long call then reuses, and says how long compiling takes. Writes ``out/ok`` when every
    model finished with a finite test accuracy."""
    data = smoke_data(cifar, out / "data")
    extra = f"{extra} --max-iters {iters}"
    # ResNet-110's warm-up, shortened to fit the short run (400 iterations would be refused).
    short = {"resnet110": ["--warmup-iters", str(max(1, iters // 10)), "--warmup-lr", "0.01"]}
    summary = train_all(
        data,
        out / "runs",
        models,
        budget_s,
        device,
        extra,
        results,
        short,
        bundle_runs=False,
        mps=mps,
    )
    ok = all(m["finished"] and m["final_test_top1"] is not None for m in summary["models"].values())
    if ok:
        (out / "ok").write_text("ok\n")
    summary["ok"] = ok
    return summary


def _device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _train_at_once(
    data_dir: Path,
    out: Path,
    models: tuple[str, ...],
    budget_s: float,
    device: str,
    extra: str,
    model_args: dict[str, list[str]],
    recipe: str,
    grace_s: float,
    env: dict[str, str],
) -> tuple[dict[str, subprocess.Popen[bytes]], dict[str, Path], float, dict[str, float], set[str]]:
    """Start one ``train`` per model, stop those still going at the budget; returns the
    processes, their logs, the start time, when each ended and which were stopped."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    start = time.monotonic()
    for name in models:
        run = out / name
        resume = ["--resume"] if (run / "checkpoints" / "latest").exists() else []
        cmd = [
            sys.executable,
            "-m",
            "resnetkit.cli.main",
            "train",
            "--model",
            name,
            "--dataset",
            "cifar10",
            "--data-dir",
            str(data_dir),
            "--out",
            str(run),
            "--recipe",
            recipe,
            "--device",
            device,
            "--no-progress",
            *resume,
            *model_args.get(name, []),
            *shlex.split(extra),
        ]
        logs[name] = out / f"{name}.log"
        with logs[name].open("ab") as log:
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    ended: dict[str, float] = {}
    stopped: set[str] = set()
    while len(ended) < len(procs):
        for name, proc in procs.items():
            if name not in ended and proc.poll() is not None:
                ended[name] = time.monotonic() - start
        if time.monotonic() - start > budget_s:
            for name, proc in procs.items():
                if name not in ended and name not in stopped:
                    proc.send_signal(signal.SIGTERM)  # writes a checkpoint at the current step
                    stopped.add(name)
            if time.monotonic() - start > budget_s + grace_s:
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
        time.sleep(0.5)
    return procs, logs, start, ended, stopped


#: One CUDA call, made through the MPS server to prove a client reaches it.
MPS_PROBE = [sys.executable, "-c", "import torch; torch.ones(1, device='cuda').sum().item()"]


def start_mps(folder: Path) -> dict[str, str] | None:
    """Start CUDA's Multi-Process Service: without it a GPU runs one process's kernels at a
    time (time-slicing), and the paper recipe's small nets at batch 128 are bound by the
    latency of many small kernels, so five processes together went no faster than one alone
    (2026-11-30). Under MPS their kernels share the GPU at once. Returns the environment the
    processes need, or None where the control program is missing or did not start. It is a
    user-space daemon: no setting of the GPU changes, and :func:`stop_mps` ends it."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        return None
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(folder / "log"),
    }
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    stop_mps(env)  # one left by an earlier call on this machine
    quiet = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    try:
        done = subprocess.run([control, "-d"], env={**os.environ, **env}, timeout=30, **quiet)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    # The daemon forking proves little: a client must reach it (else it would run without MPS
    # silently, or stall). One CUDA call through it, in a bounded time.
    try:
        reached = subprocess.run(MPS_PROBE, env={**os.environ, **env}, timeout=60, **quiet)
    except (OSError, subprocess.TimeoutExpired):
        reached = None
    if reached is None or reached.returncode != 0:
        stop_mps(env)
        return None
    return env


def stop_mps(env: dict[str, str]) -> None:
    control = shutil.which("nvidia-cuda-mps-control")
    if control is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([control], input=b"quit\n", env={**os.environ, **env}, timeout=5)


def train_all(
    data_dir: Path,
    out: Path,
    models: tuple[str, ...] = MODELS,
    budget_s: float = 420.0,
    device: str = "cuda",
    extra: str = GPU_SPEED,
    results: Path | None = None,
    model_args: dict[str, list[str]] | None = None,
    recipe: str = RECIPE,
    grace_s: float = 45.0,
    bundle_runs: bool = True,
    mps: bool = False,
    require_resume: bool = False,
) -> dict[str, Any]:
    """Train ``models`` with ``recipe`` at once, one process each, for at most ``budget_s``
    seconds; returns (and writes to ``results``, with the runs: :func:`bring_back`) what each
    reached. ``extra`` goes to every model, ``model_args`` (default: ResNet-110's warm-up) to
    one. A run still going at the budget gets SIGTERM (it checkpoints at the end of its step)
    and ``grace_s`` seconds to exit. ``mps`` runs them under CUDA's Multi-Process Service
    (:func:`start_mps`); the summary says whether it started."""
    model_args = MODEL_ARGS if model_args is None else model_args
    _import_from_src()
    from resnetkit.train.runlog import read_metrics

    if require_resume:  # runs sent from here: never start one of them again from step 0
        missing = [m for m in models if not (out / m / "checkpoints" / "latest").is_file()]
        if missing:
            raise SystemExit(
                f"no checkpoint to continue under {out} for {', '.join(missing)} (--require-"
                "resume): receive the sent runs first (call 0), in this same machine"
            )
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    summary: dict[str, Any] = {
        "recipe": recipe,
        "speed_settings": extra,
        "budget_s": budget_s,
        "device": _device_info(),  # before training: nothing slow after the budget
        "models": {},
    }
    mps_folder = (out / "mps").resolve()  # absolute: a daemon may change its directory
    mps_env = start_mps(mps_folder) if mps else None
    summary["mps"] = mps_env is not None
    env.update(mps_env or {})
    try:
        try:
            procs, logs, start, ended, stopped = _train_at_once(
                data_dir, out, models, budget_s, device, extra, model_args, recipe, grace_s, env
            )
        finally:
            if mps_env is not None:
                stop_mps(mps_env)
        if mps_env is not None:
            summary["mps_clients"] = _mps_clients(mps_folder)
        _summarise_runs(summary, out, procs, logs, ended, stopped, model_args, read_metrics)
    finally:  # whatever went wrong above, the runs as they stand come back
        if results is not None:
            summary["bundles"] = bring_back(out, models, results, bundle_runs, mps_folder)
            (results / "gpu-paper-cifar.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _mps_clients(folder: Path) -> int:
    """How many processes the MPS server took on (its control log's "NEW CLIENT" lines): the
    daemon forking says little, a client that cannot reach it runs without MPS silently."""
    log = folder / "log" / "control.log"
    return log.read_text(errors="replace").count("NEW CLIENT") if log.is_file() else 0


def _summarise_runs(
    summary: dict[str, Any],
    out: Path,
    procs: dict[str, subprocess.Popen[bytes]],
    logs: dict[str, Path],
    ended: dict[str, float],
    stopped: set[str],
    model_args: dict[str, list[str]],
    read_metrics: Any,
) -> None:
    for name, proc in procs.items():
        run = out / name
        rows = read_metrics(run)
        finished = (run / "model" / "config.json").exists()
        last = rows[-1] if rows else {}
        evaluated = next((r for r in reversed(rows) if "test_top1" in r), {})
        latest = run / "checkpoints" / "latest"  # a run stopped mid-epoch got further than rows
        reached = int(latest.read_text().split("-")[-1]) if latest.exists() else 0
        summary["models"][name] = {
            "finished": finished,
            "returncode": proc.returncode,
            "stopped_at_budget": name in stopped,
            "wall_s": round(ended[name], 1),
            "train_seconds": round(sum(r.get("epoch_seconds", 0.0) for r in rows), 1),
            "iterations": max(last.get("step", 0), reached),
            # The last evaluation (every 4th epoch and the last one): its step says when.
            "final_test_top1": evaluated.get("test_top1"),
            "final_test_error": None if not evaluated else 100.0 - evaluated["test_top1"],
            "final_test_step": evaluated.get("step"),
            "final_train_top1": last.get("train_top1"),
            "extra_args": model_args.get(name, []),
            "epochs": [
                {
                    key: r[key]
                    for key in ("epoch", "step", "train_top1", "val_top1", "test_top1")
                    if key in r
                }
                for r in rows
            ],
            "log_tail": logs[name].read_text(errors="replace")[-1500:],
        }


def bring_back(
    out: Path,
    names: tuple[str, ...],
    results: Path,
    runs: bool = True,
    mps_folder: Path | None = None,
) -> dict[str, Any]:
    """Pack what the device call returns into few files (it brings back at most 8, of at most
    16 MB each, at most 2 folders down): ``logs.tar.xz`` holds every run's metrics, facts,
    recipe and log, which ``reproduce degradation --report`` reads; ``<model>.tar`` the run
    itself, its exported ``model/`` if it finished, else its latest checkpoint, so that
    extracting it into a runs folder makes a run that ``train --resume`` continues (here on the
    CPU, or on the next lent GPU); ``runs=False`` leaves those out. The list of what did not
    fit goes into the summary."""
    results.mkdir(parents=True, exist_ok=True)
    small = ("metrics.jsonl", "run.json", "recipe.yaml")
    with tarfile.open(results / "logs.tar.xz", "w:xz") as tar:
        for name in names:
            for kept in small:
                if (out / name / kept).is_file():
                    tar.add(out / name / kept, f"{name}/{kept}")
            if (out / f"{name}.log").is_file():
                tar.add(out / f"{name}.log", f"{name}.log")
        for log in sorted((mps_folder / "log").glob("*.log")) if mps_folder else ():
            tar.add(log, f"mps-{log.name}")  # did the clients reach the server?
    bundles: dict[str, Any] = {"logs.tar.xz": (results / "logs.tar.xz").stat().st_size}
    for name in names[: BACK_FILES - 2] if runs else ():  # the summary and logs take two
        run = out / name
        bundle = results / f"{name}.tar"
        with tarfile.open(bundle, "w") as tar:
            for kept in small:
                if (run / kept).is_file():
                    tar.add(run / kept, f"{name}/{kept}")
            if (run / "model" / "config.json").is_file():
                tar.add(run / "model", f"{name}/model")
            latest = run / "checkpoints" / "latest"
            if not (run / "model" / "config.json").is_file() and latest.is_file():
                tar.add(latest, f"{name}/checkpoints/latest")
                tar.add(
                    run / "checkpoints" / latest.read_text().strip(),
                    f"{name}/checkpoints/{latest.read_text().strip()}",
                )
        size = bundle.stat().st_size
        if size > BACK_BYTES:
            bundle.unlink()
            bundles[bundle.name] = f"left behind: {size} bytes, over {BACK_BYTES}"
        else:
            bundles[bundle.name] = size
    return bundles


def send(runs: Path, models: tuple[str, ...], to: Path) -> dict[str, int]:
    """(here) Pack each run's latest checkpoint, with its metrics, facts and recipe, into
    ``to/<model>.tar`` as the device packs its own, for a later call to carry and ``receive``
    there. Refuses a run with nothing to continue from (no checkpoint: never saved, or finished)
    and one that a live process is still training (its checkpoint may change while packed).
    Returns each tar's size (what travels: at most 64 MiB a call, all carried paths together)."""
    _import_from_src()
    from resnetkit.train.run_folder import process_alive

    problems = []
    for name in models:
        run = runs / name
        lock = run / ".lock"
        holder = lock.read_text().split()[0] if lock.is_file() else ""
        if holder.isdigit() and process_alive(int(holder)):
            problems.append(f"{run} is being trained (pid {holder}): stop it first (kill {holder})")
        elif (run / "model" / "config.json").is_file():
            problems.append(f"{run} has finished: nothing to continue")
        elif not (run / "checkpoints" / "latest").is_file():
            problems.append(f"{run} has no checkpoint to continue from")
    if to.is_dir() and any(to.iterdir()):  # an older tar there would travel too
        problems.append(f"{to} is not empty: send into a new folder (or empty it first)")
    if problems:
        raise SystemExit("; ".join(problems))
    to.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in models:
        run = runs / name
        pointer = (run / "checkpoints" / "latest").read_bytes()  # read once
        latest = pointer.decode().strip()
        with tarfile.open(to / f"{name}.tar", "w") as tar:
            for kept in ("metrics.jsonl", "run.json", "recipe.yaml"):
                if (run / kept).is_file():
                    tar.add(run / kept, f"{name}/{kept}")
            tar.add(run / "checkpoints" / latest, f"{name}/checkpoints/{latest}")
            info = tarfile.TarInfo(f"{name}/checkpoints/latest")
            info.size = len(pointer)
            tar.addfile(info, io.BytesIO(pointer))
        sizes[f"{name}.tar"] = (to / f"{name}.tar").stat().st_size
    return sizes


def receive(results: Path, to: Path) -> list[str]:
    """(here) Extract what a call brought back into ``to/full/<model>/``, the layout
    ``reproduce degradation --preset full --out TO --report`` reads; returns the runs found.
    The tars are this script's own, but members are still checked to stay inside ``to``."""
    full = (to / "full").resolve()
    full.mkdir(parents=True, exist_ok=True)
    found: set[str] = set()
    bundles = [b for b in (results / "logs.tar.xz", *sorted(results.glob("*.tar"))) if b.is_file()]
    incoming: dict[str, int] = {}
    for bundle in bundles:
        with tarfile.open(bundle) as tar:
            for member in tar.getmembers():
                target = (full / member.name).resolve()
                if not target.is_relative_to(full) or not (member.isfile() or member.isdir()):
                    raise ValueError(f"{bundle}: member {member.name!r} would land outside {full}")
                if "/" in member.name:
                    name = member.name.split("/")[0]
                    incoming[name] = max(incoming.get(name, 0), _step_in(tar, member))
    # A run further along here (continued on the CPU meanwhile) is not replaced by an older one.
    behind = [
        f"{name} (here {_progress(full / name)}, coming {step})"
        for name, step in sorted(incoming.items())
        if _progress(full / name) > step
    ]
    if behind:
        raise SystemExit(
            f"{full} holds runs further along than what came back: {', '.join(behind)}; "
            "receive into another --to"
        )
    for bundle in bundles:
        with tarfile.open(bundle) as tar:
            tar.extractall(full, filter="data")
            found.update(m.name.split("/")[0] for m in tar.getmembers() if "/" in m.name)
    return sorted(found)


def _step_in(tar: tarfile.TarFile, member: tarfile.TarInfo) -> int:
    """How far a run's member says it got: its checkpoint pointer, its metrics' last step, or
    its exported model (finished: beyond any step)."""
    if member.name.endswith("/model/config.json"):
        return 1 << 62
    if not member.isfile() or not member.name.endswith(("/checkpoints/latest", "metrics.jsonl")):
        return 0
    handle = tar.extractfile(member)
    text = handle.read().decode(errors="replace") if handle is not None else ""
    return _step_of(text, member.name.endswith("latest"))


def _step_of(text: str, pointer: bool) -> int:
    if pointer:  # ckpt-00018925
        tail = text.strip().rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else 0
    steps = [json.loads(line).get("step", 0) for line in text.splitlines() if line.strip()]
    return max(steps, default=0)


def _progress(run: Path) -> int:
    """How far a run here got (0: none)."""
    if (run / "model" / "config.json").is_file():
        return 1 << 62
    done = 0
    if (run / "checkpoints" / "latest").is_file():
        done = _step_of((run / "checkpoints" / "latest").read_text(), True)
    if (run / "metrics.jsonl").is_file():
        done = max(done, _step_of((run / "metrics.jsonl").read_text(errors="replace"), False))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="(here) CIFAR-10 binary batches -> two parts to carry")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p = sub.add_parser("unpack", help="(there) one part -> checked .bin batches")
    p.add_argument("--part", type=Path, required=True)
    p.add_argument("--to", type=Path, required=True)
    p = sub.add_parser("smoke", help="(there) a short run of every model on part 1's batches")
    p.add_argument("--cifar", type=Path, default=Path("runs/gpu-cifar"))
    p.add_argument("--out", type=Path, default=Path("runs/gpu-smoke"))
    p.add_argument("--results", type=Path, help="where its summary and logs go ($OUT/smoke)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--mps", action="store_true", help="under CUDA's Multi-Process Service")
    p = sub.add_parser("receive", help="(here) what a call brought back -> DIR/full/<model>")
    p.add_argument("--results", type=Path, required=True, help="the call's files")
    p.add_argument("--to", type=Path, required=True)
    p = sub.add_parser("send", help="(here) runs' latest checkpoints -> tars to carry")
    p.add_argument("--runs", type=Path, required=True, help="a folder of runs, e.g. DIR/full")
    p.add_argument("--models", required=True)
    p.add_argument("--to", type=Path, required=True)
    p = sub.add_parser("train", help="(there) train the models at once within a time budget")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/gpu-paper"))
    p.add_argument("--results", type=Path, help="where gpu-paper-cifar.json goes ($OUT)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--budget-s", type=float, default=420.0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--extra", default=GPU_SPEED, help="recipe overrides for every model")
    p.add_argument("--recipe", default=RECIPE)
    p.add_argument("--grace-s", type=float, default=45.0)
    p.add_argument("--mps", action="store_true", help="under CUDA's Multi-Process Service")
    p.add_argument(
        "--require-resume",
        action="store_true",
        help="refuse to start a model that has no checkpoint under --out (runs sent from here)",
    )
    args = parser.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.data_dir, args.out)
        print(f"packed {len(manifest['batches'])} batches into {args.out}/part1 and part2")
    elif args.command == "unpack":
        for path in unpack(args.part, args.to):
            print(f"rebuilt {path} (sha256 checked)")
    elif args.command == "receive":
        print("received: " + ", ".join(receive(args.results, args.to)))
    elif args.command == "send":
        models = tuple(m for m in args.models.split(",") if m)
        print(json.dumps(send(args.runs, models, args.to), indent=2))
    elif args.command == "smoke":
        models = tuple(m for m in args.models.split(",") if m)
        summary = smoke(
            args.cifar,
            args.out,
            args.results,
            models,
            args.device,
            args.iters,
            args.budget_s,
            mps=args.mps,
        )
        for name, entry in summary["models"].items():
            print(
                f"{name}: {entry['iterations']} iterations in {entry['wall_s']} s "
                f"(compiling included), finished {entry['finished']}, "
                f"rc {entry['returncode']}"
            )
            if not entry["finished"]:
                print(entry["log_tail"])
        if args.mps:
            print(f"MPS started: {summary['mps']}")
        print("SMOKE OK" if summary["ok"] else "SMOKE FAILED")
        return 0 if summary["ok"] else 1
    else:
        summary = train_all(
            args.data_dir,
            args.out,
            tuple(m for m in args.models.split(",") if m),
            args.budget_s,
            args.device,
            args.extra,
            args.results,
            recipe=args.recipe,
            grace_s=args.grace_s,
            mps=args.mps,
            require_resume=args.require_resume,
        )
        for name, entry in summary["models"].items():
            print(
                f"{name}: {entry['iterations']} iterations in {entry['wall_s']} s, "
                f"finished {entry['finished']}, test top-1 {entry['final_test_top1']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
