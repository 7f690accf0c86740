"""``resnetkit models`` and ``resnetkit info``: look at the model zoo."""

from __future__ import annotations

import argparse
import difflib
import json
import os
from pathlib import Path
from typing import Any

from resnetkit.cli.common import add_model_option_arg, positive_int


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


class _StatsCache:
    """Parameters and multiply-adds per model, kept in ``$RESNETKIT_HOME/zoo-stats.json``
    (default ``~/.cache/resnetkit``) under each config's repr and the torch version: counting
    them builds every model, seconds for the 1000-layer ones. A cache that cannot be read or
    written is ignored."""

    def __init__(self) -> None:
        import torch

        from resnetkit.models.hub import cache_dir

        self.path = cache_dir().parent / "zoo-stats.json"
        self.version = torch.__version__
        self.changed = False
        try:
            data = json.loads(self.path.read_text())
            self.rows: dict[str, Any] = data["rows"] if data.get("torch") == self.version else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.rows = {}

    def get(self, name: str, key: str) -> tuple[int, int, int]:
        row = self.rows.get(name)
        if isinstance(row, dict) and row.get("config") == key:
            return int(row["params"]), int(row["macs"]), int(row["size"])
        from resnetkit.models.analysis import params_and_macs

        params, macs, size = params_and_macs(name)
        self.rows[name] = {"config": key, "params": params, "macs": macs, "size": size}
        self.changed = True
        return params, macs, size

    def save(self) -> None:
        if not self.changed:
            return
        from resnetkit.train.checkpoint import atomic_write_text

        try:
            atomic_write_text(self.path, json.dumps({"torch": self.version, "rows": self.rows}))
        except OSError:
            pass


def models(pattern: str = "*", as_json: bool = False) -> int:
    """List every registered model with its parameters and multiply-adds at its native size."""
    from resnetkit.models.registry import get_model_config, list_models

    names = list_models(pattern)
    if not names:
        hint = ""
        if pattern in list_models(pretrained=True):
            hint = f" ({pattern} is a weights tag: `resnetkit info {pattern}` describes it)"
        elif close := difflib.get_close_matches(pattern.lower(), list_models(), n=3, cutoff=0.6):
            hint = f" (did you mean {', '.join(close)}?)"
        print(f"no model matches {pattern!r}{hint}; try `resnetkit models` for all of them")
        return 1
    from resnetkit.models import hub
    from resnetkit.models.pretrained import default_tag, list_pretrained

    weights: dict[str, list[str]] = {}
    packaged = list_pretrained()
    for tag in packaged + hub.list_hub():
        arch, _, suffix = tag.partition(".")
        weights.setdefault(arch, []).append(suffix)
    shipped_archs = {tag.partition(".")[0] for tag in packaged}
    for arch, suffixes in weights.items():
        # What create_model(ARCH, pretrained=True) loads first: packaged weights win (the
        # index is read only for the architectures that have some).
        try:
            first = default_tag(arch) if arch in shipped_archs else hub.default_tag(arch)
        except RuntimeError:  # an index with no single default: listed as it is
            continue
        if first is not None and first.partition(".")[2] in suffixes:
            default = first.partition(".")[2]
            weights[arch] = [default] + [s for s in suffixes if s != default]
    cache = _StatsCache()
    rows: list[dict[str, Any]] = []
    for name in names:
        config = get_model_config(name)
        params, macs, size = cache.get(name, repr(config))
        rows.append(
            {
                "name": name,
                "params": params,
                "macs": macs,
                "input_size": size,
                "block": config.block + (" (pre-act)" if config.preact else ""),
                "shortcut": config.shortcut,
                "weights": weights.get(name, []),
            }
        )
    cache.save()
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'model':<20} {'params':>10} {'MACs':>11} {'input':>6}  {'block':<20} "
        f"{'shortcut':<9} weights"
    )
    for r in rows:
        print(
            f"{r['name']:<20} {_human(r['params']):>10} {_human(r['macs']):>11} "
            f"{r['input_size']:>6}  {r['block']:<20} {r['shortcut']:<9} {', '.join(r['weights'])}"
        )
    shipped = ", ".join(sorted({t.partition(".")[2] for t in packaged}))
    print(
        f"{len(rows)} models. Weights: create_model('MODEL.WEIGHTS', pretrained=True), the "
        f"first listed for MODEL alone; {shipped} are packaged (offline), tv_in1k/tv2_in1k are "
        "torchvision's ImageNet weights (downloaded once, sha256-checked)"
    )
    return 0


def info(
    name: str,
    input_size: int | None = None,
    as_json: bool = False,
    options: dict[str, Any] | None = None,
) -> int:
    """Parameters, multiply-adds, per-stage shapes and activation memory of one model, with
    any architecture ``options`` (``create_model`` keywords) applied; for a pretrained tag
    (``resnet20.paper_cifar10``), also what its weights are: source, recipe, measured
    accuracy, preprocessing and classes (read from the index: nothing is downloaded)."""
    from resnetkit.models.analysis import model_stats
    from resnetkit.models.hf_hub import get_hf_hub_weights, is_hf_hub_name
    from resnetkit.models.registry import CONFIG_OPTIONS, find_weights, get_model_config

    options = dict(options or {})
    arch, _, tag = name.partition(".")
    card = None
    if Path(name).is_dir():
        return _model_dir_info(name, input_size, as_json, options)
    if Path(name).is_file():
        raise ValueError(
            f"{name} is a file: info describes a model name (resnet50, resnet20.cifar10) or "
            "a model directory (a run's model/ folder); for a weights file, convert it first"
        )
    if is_hf_hub_name(name):  # reads (or fetches) the repository's config.json only
        hub = get_hf_hub_weights(name)
        arch = hub.arch
        card = _hub_card(hub)
        options = {**hub.config_changes, "num_classes": hub.num_classes, **options}
    elif "/" in name or os.sep in name:
        raise FileNotFoundError(
            f"{name}: no such model directory (a name with a slash is read as a folder)"
        )
    elif tag:
        card = _weights_card(find_weights(name))
        options.setdefault("num_classes", card["num_classes"])
    stats = model_stats(arch, input_size, **options)
    if as_json:
        print(json.dumps({**stats.to_dict(), **({"weights": card} if card else {})}, indent=2))
        return 0
    config = get_model_config(arch).with_options(
        **{k: v for k, v in options.items() if k in CONFIG_OPTIONS}
    )
    _print_stats(arch, config, stats)
    if card:
        _print_card(card)
    return 0


#: The metrics a model directory's card shows.
SCORES = ("_top1", "_top5", "_map", "_micro_f1", "_macro_f1", "_exact")


def _model_dir_info(
    path: str, input_size: int | None, as_json: bool, options: dict[str, Any]
) -> int:
    """``info`` of a model directory (``resnetkit train``'s, ``finetune``'s, ``convert``'s):
    the network it holds, measured, and what its config.json says of its weights."""
    from resnetkit.models.analysis import stats_of
    from resnetkit.models.loading import load_model, preprocessing_of
    from resnetkit.models.model_dir import read_model_meta

    if options:
        raise ValueError(
            f"--model-option: {path} is a model directory, whose architecture is fixed by its "
            "config.json; options apply to zoo names"
        )
    trained = Path(path) / "model"
    if not (Path(path) / "config.json").is_file() and (trained / "config.json").is_file():
        raise ValueError(
            f"{path} is a training run's folder, not a model directory: the model it trained "
            f"is {trained}; describe that (resnetkit info {trained})"
        )
    meta = read_model_meta(path)  # first: a folder of another layout is named as such
    model = load_model(path)
    cfg = preprocessing_of(model)
    stats = stats_of(model, model.name, input_size or int(cfg["input_size"]))
    # what the model is fed: its config.json's, with the defaults loading fills in
    given = {k: v for k, v in meta.get("preprocessing", {}).items() if v is not None}
    prep = {**{k: cfg[k] for k in ("input_size", "mean", "std")}, **given}
    if prep.get("pixel_mean") is not None:
        prep.pop("mean", None)
        prep.pop("std", None)
        side = cfg["input_size"]
        prep["per_pixel_mean"] = f"{model.config.in_chans}x{side}x{side}"
    prep.pop("pixel_mean", None)
    for key in ("mean", "std"):  # measured on the training set: more digits than matter
        if isinstance(prep.get(key), list):
            prep[key] = [round(float(v), 4) for v in prep[key]]
    prov = meta.get("provenance") or {}
    recipe = prov.get("recipe")
    card: dict[str, Any] = {
        "tag": path,
        "source": "a resnetkit model directory"
        + (f", converted from {prov['converted_from']}" if prov.get("converted_from") else ""),
        "file": str(Path(path) / "model.safetensors"),
        "metrics": {  # the measured scores (not train_seconds, steps...)
            k: v
            for k, v in (meta.get("metrics") or {}).items()
            if k.endswith(SCORES) and isinstance(v, int | float) and not isinstance(v, bool)
        },
        "preprocessing": prep,
        "num_classes": 0 if model.features_only else model.num_classes,
        "classes": list(meta.get("classes") or []),
    }
    if isinstance(recipe, dict):
        card["recipe"] = f"{recipe.get('name', '?')} on {prov.get('dataset', '?')}"
    task = meta.get("task") or {}
    if task.get("multi_label"):
        card["task"] = {"multi_label": True, "threshold": task.get("threshold", 0.5)}
    elif task.get("min_confidence") is not None:
        card["task"] = {"multi_label": False, "min_confidence": task["min_confidence"]}
    if as_json:
        print(json.dumps({**stats.to_dict(), "weights": card}, indent=2))
        return 0
    output = None if model.features_only else "logits" if model.num_classes else "features"
    _print_stats(model.name, model.config, stats, output)
    _print_card(card)
    return 0


def _print_stats(arch: str, config: Any, stats: Any, output: str | None = "logits") -> None:
    kind = f"{config.block} blocks" + (" (pre-activation)" if config.preact else "")
    kind += "".join(f", {note}" for note in config.variants())
    print(f"{arch}: {stats.depth} layers, {kind}, shortcut option {config.shortcut}")
    print(f"  parameters      {stats.params:,} ({_human(stats.params)})")
    print(
        f"  multiply-adds   {stats.macs:,} ({_human(stats.macs)}) at {stats.input_size}x"
        f"{stats.input_size}"
    )
    print(
        f"  activations     {stats.activation_bytes / 2**20:.1f} MiB per image (fp32, all layers)"
    )
    print("  stage outputs (batch, channels, height, width):")
    for stage, shape in stats.stage_shapes.items():
        print(f"    {stage:<8} {shape}")
    if output:  # None: a features_only backbone, whose output is the stages above
        print(f"    {output:<8} {stats.output_shape}")


def _weights_card(weights: Any) -> dict[str, Any]:
    """What a user needs to know of pretrained weights before using them."""
    cfg = weights.pretrained_cfg()
    pixel_mean = cfg.get("pixel_mean")
    prep = {k: cfg[k] for k in ("input_size", "resize", "crop", "interpolation") if k in cfg}
    if pixel_mean is not None:  # 3 x H x W values: summarised, not listed
        prep["per_pixel_mean"] = f"3x{cfg['input_size']}x{cfg['input_size']}"
    else:
        prep.update(mean=cfg["mean"], std=cfg["std"])
    card: dict[str, Any] = {"tag": weights.tag}
    if hasattr(weights, "url"):
        card["source"] = "torchvision's published ImageNet weights (downloaded once, cached)"
        card["file"] = weights.url
        card["sha256"] = weights.sha256_prefix  # the prefix in the file's name
    else:
        card["source"] = "trained by resnetkit, packaged (offline)"
        card["file"] = weights.file
        card["sha256"] = weights.sha256
        card["recipe"] = weights.recipe
    card.update(
        metrics=cfg["metrics"],
        preprocessing=prep,
        num_classes=len(cfg["classes"]),
        classes=cfg["classes"],
    )
    return card


def _hub_card(hub: Any) -> dict[str, Any]:
    """The card of a Hugging Face Hub repository (its config: the weights are not fetched)."""
    cfg = hub.pretrained_cfg
    keys = ("input_size", "resize", "crop", "interpolation", "mean", "std")
    return {
        "tag": hub.name,
        "source": f"the Hugging Face Hub ({hub.source_format} layout; weights fetched on use)",
        "file": f"{hub.resolver.repo}@{hub.resolver.commit or hub.resolver.revision}",
        "metrics": {},
        "preprocessing": {k: cfg[k] for k in keys if k in cfg},
        "num_classes": hub.num_classes,
        "classes": cfg["classes"],
    }


def _print_card(card: dict[str, Any]) -> None:
    prep = card["preprocessing"]
    print(f"weights {card['tag']}: {card['source']}")
    digest = f" (sha256 {card['sha256'][:16]}...)" if card.get("sha256") else ""
    print(f"  file            {card['file']}{digest}")
    if card.get("recipe"):
        print(f"  trained with    {card['recipe']}")
    shown = ", ".join(f"{k} {v:g}" for k, v in card["metrics"].items())
    print(f"  measured        {shown or 'nothing recorded'}")
    if "per_pixel_mean" in prep:
        norm = f"per-pixel mean ({prep['per_pixel_mean']}) subtracted"
    else:
        norm = f"mean {prep['mean']}, std {prep['std']}"
    size = f"{prep['input_size']}x{prep['input_size']}"
    if prep.get("resize"):
        size = f"resize {prep['resize']} ({prep.get('interpolation', 'bilinear')}), crop " + size
    print(f"  input           {size}, {norm}")
    names = card["classes"]
    more = f", ... ({len(names)} in all)" if len(names) > 10 else ""
    print(f"  classes         {', '.join(names[:10]) or '(not named)'}{more}")
    task = card.get("task")
    if task and not task.get("multi_label"):
        print(
            "  task            one class an image, answers unsure below a top probability of "
            f"{task['min_confidence']:.4g}"
        )
    elif task:
        from resnetkit.data.multilabel import describe_threshold

        print(
            "  task            multi-label: a sigmoid per class, threshold "
            f"{describe_threshold(task['threshold'])}"
        )


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="list every model with parameters and multiply-adds")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*'")
    p.add_argument("--json", dest="as_json", action="store_true")
    p.set_defaults(func=lambda a: models(a.pattern, a.as_json))

    p = sub.add_parser("info", help="parameters, multiply-adds and stage shapes of a model")
    p.add_argument(
        "name",
        help="a zoo name (resnet50), a weights tag (resnet20.cifar10), an hf-hub: name, "
        "or a model directory (what its config.json says of its weights too)",
    )
    p.add_argument(
        "--input-size", type=positive_int, default=None, help="square input side in pixels"
    )
    p.add_argument("--json", dest="as_json", action="store_true")
    add_model_option_arg(p, "(e.g. shortcut=A to count option A's parameters)")
    p.set_defaults(func=lambda a: info(a.name, a.input_size, a.as_json, dict(a.model_option or ())))
