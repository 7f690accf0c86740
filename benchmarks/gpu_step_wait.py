"""What waiting for the GPU cost a training step: `resnetkit train`'s steps as they were (data
prepared on the CPU, sent from ordinary memory; loss, accuracy and the NaN check read back
every step) against as they are (data and augmentation on the GPU, sums kept there, the NaN
check every 100 steps), on the same model, recipe and batches, in one process.

Needs a GPU (it refuses to run without one); nothing in the test suite depends on it. Random
CIFAR-shaped data is written first (no dataset travels). Each variant trains ``--epochs``
epochs of ``--images`` images; the first epoch pays for ``torch.compile`` and is left out of
the throughput. The variants alternate over ``--rounds`` rounds::

    python3 -m benchmarks.gpu_step_wait --out $OUT --model resnet20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def write_random_cifar(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """CIFAR-10's binary layout filled with random pixels and labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n_train // 5)
    sizes = {f"data_batch_{i}": min(per, n_train - (i - 1) * per) for i in range(1, 6)}
    sizes["test_batch"] = n_test
    for name, n in sizes.items():
        records = np.empty((n, 3073), np.uint8)
        records[:, 0] = rng.integers(0, 10, n)
        records[:, 1:] = rng.integers(0, 256, (n, 3072))
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    names = ("airplane automobile bird cat deer dog frog horse ship truck").split()
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n")
    return root


def run_variant(
    data: Path, out: Path, model: str, epochs: int, device: str, waits: bool, compile_: bool
) -> dict[str, Any]:
    """Train one run; ``waits`` restores the old step (CPU data, a wait per step)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    import torch

    from resnetkit.train.recipe import load_recipe
    from resnetkit.train.runlog import read_metrics
    from resnetkit.train.trainer import Trainer, TrainSpec

    overrides: dict[str, Any] = {
        "epochs": epochs,
        "max_iters": 0,
        "milestones": (),
        "precision": "bf16" if device.startswith("cuda") else "fp32",
        "channels_last": True,
        "checkpoint_every_s": 1e9,
        "eval_every": 1000,
    }
    if compile_:
        overrides.update({"compile": True, "compile_mode": "reduce-overhead"})
    recipe = load_recipe("paper-cifar-full").override(overrides)
    spec = TrainSpec(
        model=model,
        dataset="cifar10",
        data_dir=data,
        out=out,
        recipe=recipe,
        device=device,
        progress=False,
    )
    trainer = Trainer(spec)
    if waits:
        trainer._defer_sync = False
        loader = trainer.train_loader
        loader.images, loader.labels = loader.images.cpu(), loader.labels.cpu()
    on_device = trainer.train_loader.device.type != "cpu"
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    rows = read_metrics(out)
    steady = [r["images_per_second"] for r in rows[1:]] or [rows[-1]["images_per_second"]]
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "waits": waits,
        "data_on_device": on_device,
        "wall_s": round(wall, 2),
        "first_epoch_s": round(rows[0]["epoch_seconds"], 2),
        "images_per_second": round(statistics.median(steady), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("no GPU here: this benchmark measures waits for one (--device cpu to try)")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-step-wait-"))  # not under --out: it all comes back
    data = write_random_cifar(work / "data", args.images, 256)
    results: dict[str, list[dict[str, Any]]] = {"waits": [], "defers": []}
    for r in range(args.rounds):
        order = ("waits", "defers") if r % 2 == 0 else ("defers", "waits")
        for name in order:
            entry = run_variant(
                data,
                work / f"{name}-{r}",
                args.model,
                args.epochs,
                args.device,
                name == "waits",
                not args.no_compile,
            )
            results[name].append(entry)
            print(f"round {r + 1} {name}: {entry}", flush=True)
    summary = {
        "model": args.model,
        "device": args.device,
        "compile": not args.no_compile,
        "runs": results,
        "images_per_second": {
            k: statistics.median(e["images_per_second"] for e in v) for k, v in results.items()
        },
    }
    shutil.rmtree(work, ignore_errors=True)
    ips = summary["images_per_second"]
    summary["speedup"] = round(ips["defers"] / ips["waits"], 2)
    (args.out / "gpu-step-wait.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.model}: waits {ips['waits']:.0f} img/s, defers {ips['defers']:.0f} img/s, "
        f"x{summary['speedup']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
