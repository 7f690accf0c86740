"""Package a finished training run's model as resnetkit's shipped weights.

    python tools/package_weights.py RUN_DIR --tag resnet20.cifar10

Copies RUN_DIR/model/model.safetensors into src/resnetkit/weights/, records its sha256,
classes, preprocessing and the run's measured test accuracy in weights/index.json, and copies
the run's metrics, recipe, provenance and curves to docs/results/<tag>/ as evidence.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from resnetkit.models.registry import get_model_config

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "resnetkit" / "weights"


def package(run: Path, tag: str) -> dict[str, object]:
    model_dir = run / "model"
    meta = json.loads((model_dir / "config.json").read_text())
    if meta["arch"] != tag.split(".")[0]:
        raise SystemExit(f"{run} trained {meta['arch']}, not {tag.split('.')[0]}")
    # A tag is rebuilt from the zoo's config: a run of another architecture would load into
    # it (or not) and compute something else.
    zoo = asdict(get_model_config(meta["arch"]))
    other = {
        k: v
        for k, v in meta["config"].items()
        if k not in ("num_classes", "in_chans") and json.dumps(v) != json.dumps(zoo.get(k))
    }
    if other:
        raise SystemExit(f"{run} trained {meta['arch']} with {other}: a tag holds zoo models only")
    if meta["preprocessing"].get("pixel_mean") is not None:
        # The index holds a per-channel mean and std: shipped without its per-pixel mean, such
        # a model (the paper recipe's normalize: pixel_mean) would be fed the wrong inputs.
        raise SystemExit(
            f"{run} subtracts a per-pixel mean (the paper recipe's normalize: pixel_mean); a tag "
            "carries a per-channel mean and std only: share the model directory instead"
        )
    file = tag.replace(".", "_") + ".safetensors"
    shutil.copyfile(model_dir / "model.safetensors", WEIGHTS / file)
    digest = hashlib.sha256((WEIGHTS / file).read_bytes()).hexdigest()
    pre = meta["preprocessing"]
    metrics = {k: v for k, v in meta["metrics"].items() if isinstance(v, (int, float))}
    recipe = meta["provenance"]["recipe"]
    entry = {
        "file": file,
        "sha256": digest,
        "num_classes": meta["config"]["num_classes"],
        "classes": meta["classes"],
        "mean": pre["mean"],
        "std": pre["std"],
        "input_size": pre["input_size"],
        "metrics": metrics,
        "recipe": f"{recipe['name']} ({recipe['epochs']} epochs)",
    }
    index_path = WEIGHTS / "index.json"
    index = json.loads(index_path.read_text())
    index[tag] = entry
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    evidence = ROOT / "docs" / "results" / tag
    evidence.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "recipe.yaml", "run.json", "curves.png", "final_metrics.json"):
        if (run / name).exists():
            shutil.copyfile(run / name, evidence / name)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    entry = package(args.run, args.tag)
    print(json.dumps({k: v for k, v in entry.items() if k != "classes"}, indent=2))


if __name__ == "__main__":
    main()
