"""``resnetkit models`` and ``resnetkit info``: look at the model zoo."""

from __future__ import annotations

import argparse
import json
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
        print(f"no model matches {pattern!r}; try `resnetkit models` for all of them")
        return 1
    from resnetkit.models import hub
    from resnetkit.models.pretrained import default_tag, list_pretrained

    weights: dict[str, list[str]] = {}
    packaged = list_pretrained()
    for tag in packaged + hub.list_hub():
        arch, _, suffix = tag.partition(".")
        weights.setdefault(arch, []).append(suffix)
    for arch, suffixes in weights.items():
        # What create_model(ARCH, pretrained=True) loads first: packaged weights win.
        try:
            first = default_tag(arch) or hub.default_tag(arch)
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
    any architecture ``options`` (``create_model`` keywords) applied."""
    from resnetkit.models.analysis import model_stats
    from resnetkit.models.registry import CONFIG_OPTIONS, get_model_config

    options = options or {}
    stats = model_stats(name, input_size, **options)
    if as_json:
        print(json.dumps(stats.to_dict(), indent=2))
        return 0
    config = get_model_config(name).with_options(
        **{k: v for k, v in options.items() if k in CONFIG_OPTIONS}
    )
    kind = f"{config.block} blocks" + (" (pre-activation)" if config.preact else "")
    kind += "".join(f", {note}" for note in config.variants())
    print(f"{name}: {stats.depth} layers, {kind}, shortcut option {config.shortcut}")
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
    print(f"    {'logits':<8} {stats.output_shape}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="list every model with parameters and multiply-adds")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*'")
    p.add_argument("--json", dest="as_json", action="store_true")
    p.set_defaults(func=lambda a: models(a.pattern, a.as_json))

    p = sub.add_parser("info", help="parameters, multiply-adds and stage shapes of a model")
    p.add_argument("name")
    p.add_argument(
        "--input-size", type=positive_int, default=None, help="square input side in pixels"
    )
    p.add_argument("--json", dest="as_json", action="store_true")
    add_model_option_arg(p, "(e.g. shortcut=A to count option A's parameters)")
    p.set_defaults(func=lambda a: info(a.name, a.input_size, a.as_json, dict(a.model_option or ())))
