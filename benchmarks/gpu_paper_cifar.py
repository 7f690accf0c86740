"""The paper's CIFAR-10 recipe on ResNet-20/56/110 and plain-20/56 on a lent GPU, inside one
short device lease: issue 3's GPU check and the full degradation experiment (Fig. 6) at once.

Nothing here is needed to use resnetkit; it is how this project runs issue 3's GPU check when a
session is lent a GPU for a few minutes. CIFAR-10 (180 MB) does not fit one device call (64 MiB
travel), so it goes in two parts, as lossless WebP mosaics (17 MB per 10,000 images against 30 MB
raw); on arrival every batch file is rebuilt byte for byte and checked against the SHA-256 of the
original. Then the five models train at once, each in its own process, for at most
``--budget-s`` seconds; a run still going then gets SIGTERM, writes a checkpoint and is reported
with the iterations it reached. Each run's ``metrics.jsonl`` comes back too, laid out as
``reproduce degradation --preset full`` lays out its runs, so the figure is drawn here, and
each finished model, for ``reproduce responses`` (Fig. 7: plain-20/56, ResNet-20/56/110).
The steps (``.gpu/`` is git-ignored, so only ``carry`` sends it)::

    here:    python -m benchmarks.gpu_paper_cifar pack --data-dir ../shared/data/cifar10 --out .gpu
    call 1:  carry .gpu/part1
             python3 -m benchmarks.gpu_paper_cifar unpack --part .gpu/part1 --to runs/gpu-cifar &&
             python3 -m benchmarks.gpu_paper_cifar smoke    (each model runs; eager ms per step)
    call 2:  carry .gpu/part2 (at once: the machine stays warm only about 30 s)
             python3 -m benchmarks.gpu_paper_cifar unpack --part .gpu/part2 --to runs/gpu-cifar &&
             python3 -m benchmarks.gpu_paper_cifar train --data-dir runs/gpu-cifar \
                 --out runs/gpu-paper --results $OUT --budget-s 420
    here:    copy $OUT/gpu-paper-cifar.json to benchmarks/results/, and $OUT/runs to a
             writable DIR, then: resnetkit reproduce degradation --preset full --out DIR --report
             and resnetkit reproduce responses --data-dir DATA --from DIR/full \
                 --models plain20,plain56,resnet20,resnet56,resnet110

The speed settings (bf16, channels_last, CUDA graphs through ``torch.compile``, evaluating every
4th epoch) change how fast the recipe runs, not the recipe: batch 128, lr 0.1 divided by 10 at
32k and 48k iterations, 64k iterations, ResNet-110 warmed up at lr 0.01 for 400 iterations,
all 50k training images (``paper-cifar-full``: the paper fixed the 64k iterations on a 45k/5k
split, and its Table 6 and Fig. 6 models train on the whole set, as the CPU run of the
degradation preset does).
"""

from __future__ import annotations

import argparse
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
    "--eval-every 4"
)
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


def smoke(
    models: tuple[str, ...] = MODELS, device: str = "cuda", steps: int = 20
) -> dict[str, Any]:
    """A few eager training steps of each model on random data (bf16 on a GPU, channels_last):
    proves the package runs on the device before the long call, and measures eager milliseconds
    per step."""
    import torch

    _import_from_src()
    from resnetkit.models.registry import create_model

    timings: dict[str, Any] = {"device": _device_info()}
    for name in models:
        model = create_model(name).to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(128, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (128,), device=device)
        start = 0.0
        for step in range(steps + 3):  # 3 warm-up steps
            if step == 3:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
            on_gpu = device.startswith("cuda")  # bf16 there; a CPU without bf16 units: fp32
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=on_gpu):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings[name] = {
            "eager_ms_per_step": round(1000 * (time.perf_counter() - start) / steps, 2),
            "loss_finite": bool(torch.isfinite(loss)),
        }
    return timings


def _device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
) -> dict[str, Any]:
    """Train ``models`` with ``recipe`` at once, one process each, for at most ``budget_s``
    seconds; returns (and writes to ``results``) what each reached, with each run's
    ``metrics.jsonl`` under ``results/runs/full/<model>/``. ``extra`` goes to every model,
    ``model_args`` (default: ResNet-110's warm-up) to one."""
    model_args = MODEL_ARGS if model_args is None else model_args
    _import_from_src()
    from resnetkit.train.runlog import read_metrics

    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {}
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
            if time.monotonic() - start > budget_s + 90:
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
        time.sleep(0.5)
    summary: dict[str, Any] = {
        "recipe": recipe,
        "speed_settings": extra,
        "budget_s": budget_s,
        "device": _device_info(),
        "models": {},
    }
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
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        (results / "gpu-paper-cifar.json").write_text(json.dumps(summary, indent=2) + "\n")
        for name in procs:  # what `reproduce degradation --report` reads, a few kB each
            back = results / "runs" / "full" / name
            back.mkdir(parents=True, exist_ok=True)
            for kept in ("metrics.jsonl", "run.json", "recipe.yaml"):
                if (out / name / kept).is_file():
                    shutil.copy2(out / name / kept, back / kept)
            # A finished model (1-7 MB) comes back whole, for `reproduce responses` (Fig. 7).
            if (out / name / "model" / "config.json").is_file():
                shutil.copytree(out / name / "model", back / "model", dirs_exist_ok=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="(here) CIFAR-10 binary batches -> two parts to carry")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p = sub.add_parser("unpack", help="(there) one part -> checked .bin batches")
    p.add_argument("--part", type=Path, required=True)
    p.add_argument("--to", type=Path, required=True)
    p = sub.add_parser("smoke", help="(there) a few eager steps of each model: runs? how fast?")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20)
    p = sub.add_parser("train", help="(there) train the models at once within a time budget")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/gpu-paper"))
    p.add_argument("--results", type=Path, help="where gpu-paper-cifar.json goes ($OUT)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--budget-s", type=float, default=420.0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--extra", default=GPU_SPEED, help="recipe overrides for every model")
    p.add_argument("--recipe", default=RECIPE)
    args = parser.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.data_dir, args.out)
        print(f"packed {len(manifest['batches'])} batches into {args.out}/part1 and part2")
    elif args.command == "unpack":
        for path in unpack(args.part, args.to):
            print(f"rebuilt {path} (sha256 checked)")
    elif args.command == "smoke":
        models = tuple(m for m in args.models.split(",") if m)
        print(json.dumps(smoke(models, args.device, args.steps), indent=2))
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
        )
        for name, entry in summary["models"].items():
            print(
                f"{name}: {entry['iterations']} iterations in {entry['wall_s']} s, "
                f"finished {entry['finished']}, test top-1 {entry['final_test_top1']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
