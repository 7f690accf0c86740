"""``resnetkit explain`` (Grad-CAM overlay) and ``resnetkit embed`` (pooled features)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from resnetkit.cli.common import add_model_args, image_file, output_file, positive_int


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("explain", help="Grad-CAM heatmap of what the model looked at")
    add_model_args(p)
    p.add_argument("image", type=Path)
    p.add_argument(
        "--out", required=True, type=image_file, help="picture to write (.png, .jpg ...)"
    )
    p.add_argument(
        "--target", default=None, help="class name or index to explain (default: the predicted)"
    )
    p.set_defaults(func=run_explain)

    p = sub.add_parser(
        "embed", help="pooled features of images, with optional similar-image search"
    )
    add_model_args(p)
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--out", required=True, type=output_file, help=".npy file; paths go to OUT.json")
    p.add_argument(
        "--search",
        type=Path,
        default=None,
        help="folder to search for each image's nearest neighbours (cosine)",
    )
    p.add_argument("--k", type=positive_int, default=5, help="neighbours per image (5)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.set_defaults(func=run_embed)


def run_explain(args: argparse.Namespace) -> int:
    from resnetkit.explain import explain_image
    from resnetkit.models.loading import load_model

    if args.out.resolve() == args.image.resolve():
        raise ValueError(f"--out {args.out} is the input image: give another file name")
    model = load_model(args.model, arch=args.arch)
    result = explain_image(model, args.image, args.out, target=_target(args.target, model))
    print(json.dumps(result, indent=2))
    return 0


def _target(text: str | None, model: Any) -> int | None:
    """A class index from ``--target``: one of the model's class names (folders named 1, 2,
    3 are common: a name is matched first), else an index."""
    if text is None:
        return None
    from resnetkit.models.loading import preprocessing_of

    classes = [str(c) for c in preprocessing_of(model)["classes"]]
    if text in classes:
        return classes.index(text)
    if text.isdigit():
        return int(text)
    if text not in classes:
        raise ValueError(
            f"--target {text!r} is neither a class index nor one of the model's classes: "
            + (", ".join(classes) if classes else "(the model has no class names)")
        )
    return classes.index(text)


def run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from resnetkit.explain import embed, nearest
    from resnetkit.models.loading import load_model
    from resnetkit.train.checkpoint import atomic_write_bytes, atomic_write_text

    if args.search is not None and not args.search.is_dir():  # before any work
        if args.search.exists():
            raise ValueError(
                f"--search {args.search}: is a file; it takes a folder of images to search "
                "(the images to embed are the positional arguments)"
            )
        raise FileNotFoundError(f"--search {args.search}: no such folder of images to search")
    out = args.out if args.out.suffix == ".npy" else args.out.with_name(args.out.name + ".npy")
    index_file = out.with_suffix(".json")
    if index_file.is_dir() or (index_file.is_file() and not _is_embed_index(index_file)):
        raise ValueError(
            f"{index_file} (where the paths of the vectors go) exists and is not an embed "
            "index: choose another --out (nothing was written)"
        )
    model = load_model(args.model, arch=args.arch)
    found = embed(model, args.images, batch_size=args.batch_size)
    if not found.paths:  # writing would replace earlier results with nothing
        for failure in found.failures:
            print(f"  {failure['path']}: {failure['reason']}", file=sys.stderr)
        raise ValueError(
            f"no readable images among {', '.join(map(str, args.images))} (reasons above); "
            f"nothing written to {args.out}"
        )
    buffer = io.BytesIO()
    np.save(buffer, found.vectors)
    paths = {"paths": found.paths, "failures": found.failures}
    # The index first: vectors beside another run's index would name the wrong images.
    atomic_write_text(index_file, json.dumps(paths, indent=2) + "\n")
    atomic_write_bytes(out, buffer.getvalue())
    print(
        f"{len(found.paths)} vectors of {found.vectors.shape[1]} features -> {out} "
        f"(paths in {index_file}); {len(found.failures)} unreadable"
    )
    for failure in found.failures:
        print(f"  {failure['path']}: {failure['reason']}")
    if args.search is not None:
        pool = embed(model, [args.search], batch_size=args.batch_size)
        if pool.failures:
            print(f"{len(pool.failures)} unreadable in --search {args.search}:")
        for failure in pool.failures:
            print(f"  {failure['path']}: {failure['reason']}")
        if not pool.paths:
            raise ValueError(f"--search {args.search}: no readable images to search")
        scores, order = nearest(found.vectors, pool.vectors, args.k)
        for path, row_scores, row in zip(found.paths, scores, order, strict=True):
            hits = ", ".join(
                f"{pool.paths[j]} ({s:.3f})" for s, j in zip(row_scores, row, strict=True)
            )
            print(f"{path}: {hits}")
    return 0


def _is_embed_index(path: Path) -> bool:
    try:
        return "paths" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False
