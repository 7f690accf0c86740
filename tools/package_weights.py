"""Package a finished training run's model as resnetkit's shipped weights.

    python tools/package_weights.py RUN_DIR --tag resnet20.cifar10 [--default]

Copies RUN_DIR/model/model.safetensors into src/resnetkit/weights/, records its sha256,
classes, preprocessing (a per-pixel mean too, for the paper recipe's models) and the run's
measured test accuracy in weights/index.json, and copies the run's metrics, recipe, provenance
and curves to docs/results/<tag>/ as evidence. An architecture with several tags needs one
marked ``--default``: the weights ``create_model(ARCH, pretrained=True)`` loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from resnetkit.models.registry import get_model_config
from resnetkit.train.checkpoint import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "resnetkit" / "weights"


def package(run: Path, tag: str, default: bool = False) -> dict[str, object]:
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
    if meta["config"].get("in_chans", 3) != 3:  # the index has no field for it: tags are RGB
        raise SystemExit(f"{run} takes {meta['config']['in_chans']} input channels: tags are RGB")
    recipe = (meta.get("provenance") or {}).get("recipe")
    if not isinstance(recipe, dict) or not {"name", "epochs"} <= set(recipe):
        raise SystemExit(
            f"{model_dir / 'config.json'} names no training recipe (provenance.recipe): package "
            "the model directory of a `resnetkit train` run"
        )
    pre = meta["preprocessing"]
    size = int(pre["input_size"])
    if pre.get("pixel_mean") is not None and len(pre["pixel_mean"]) != 3 * size * size:
        raise SystemExit(
            f"{model_dir / 'config.json'}: preprocessing.pixel_mean has "
            f"{len(pre['pixel_mean'])} values, not 3*{size}*{size} for its input_size {size}"
        )
    index_path = WEIGHTS / "index.json"
    index = json.loads(index_path.read_text())
    others = [t for t in index if t.split(".")[0] == meta["arch"] and t != tag]
    was_default = bool(index.get(tag, {}).get("default"))
    if (
        others
        and not default
        and not was_default
        and not any(index[t].get("default") for t in others)
    ):
        raise SystemExit(
            f"{meta['arch']} already ships {', '.join(others)}: pass --default to make {tag} "
            f"what create_model({meta['arch']!r}, pretrained=True) loads, or mark one of those "
            '"default": true in the index first'
        )
    file = tag.replace(".", "_") + ".safetensors"
    weights = (model_dir / "model.safetensors").read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    metrics = {
        k: v
        for k, v in meta["metrics"].items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)  # not stopped_early
    }
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
    if pre.get("pixel_mean") is not None:
        # 9 significant digits give back every float32 exactly.
        entry["pixel_mean"] = [float(f"{v:.9g}") for v in pre["pixel_mean"]]
    if default:
        for t in others:
            index[t].pop("default", None)
    if default or was_default:
        entry["default"] = True
    index[tag] = entry
    # Everything checked: the weights, then the index naming their digest, each whole.
    atomic_write_bytes(WEIGHTS / file, weights)
    atomic_write_text(index_path, dump_index(index))
    evidence = ROOT / "docs" / "results" / tag
    shutil.rmtree(evidence, ignore_errors=True)  # no file of an earlier run beside this one's
    evidence.mkdir(parents=True)
    for name in ("metrics.jsonl", "recipe.yaml", "run.json", "curves.png", "final_metrics.json"):
        if (run / name).exists():
            shutil.copyfile(run / name, evidence / name)
    return entry


def dump_index(index: dict[str, dict[str, object]]) -> str:
    """The index as indented JSON, with a per-pixel mean (3,072 numbers) kept on one line."""
    compact = {}
    for tag, entry in index.items():
        if "pixel_mean" in entry:
            entry = {**entry, "pixel_mean": f"@pixel_mean:{tag}@"}
        compact[tag] = entry
    text = json.dumps(compact, indent=2) + "\n"
    for tag, entry in index.items():
        if "pixel_mean" in entry:
            text = text.replace(json.dumps(f"@pixel_mean:{tag}@"), json.dumps(entry["pixel_mean"]))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tag", required=True)
    parser.add_argument(
        "--default", action="store_true", help="the architecture's default weights from now on"
    )
    args = parser.parse_args()
    entry = package(args.run, args.tag, args.default)
    shown = {k: v for k, v in entry.items() if k not in ("classes", "pixel_mean")}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
