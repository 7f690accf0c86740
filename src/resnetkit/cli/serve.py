"""``resnetkit serve``: classify images over HTTP (``POST /predict``) with a trained model.

Runs :func:`resnetkit.serve.create_app` under uvicorn; listens on 127.0.0.1 unless ``--host``
says otherwise. Needs ``pip install 'resnetkit[serve]'``.
"""

from __future__ import annotations

import argparse
import os
import sys

from resnetkit.cli.common import (
    add_model_args,
    non_negative_float,
    port,
    positive_float,
    positive_int,
)
from resnetkit.data.images import SERVE_MAX_PIXELS


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="serve a trained model over HTTP (POST /predict and /embed, /health, /metadata, "
        "/metrics)",
        description="Classify images sent to POST /predict, or turn them into feature vectors "
        "with POST /embed: multipart fields file/files, an image/* body, or JSON with base64 "
        'images ({"images": [...]}, or KServe\'s {"instances": [{"b64": ...}]}). '
        "A multi-label model's predictions also list labels, every class at its threshold "
        "(POST /predict?threshold=P for another). "
        "Concurrent requests are micro-batched into one forward pass.",
    )
    add_model_args(p, onnx=True)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 exposes it)",
    )
    p.add_argument("--port", type=port, default=8000, help="default 8000")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx", "optimized"),
        default="torch",
        help="torch; onnx: export once and run with ONNX Runtime (needs resnetkit[export]); "
        "optimized: compiled with oneDNN Graph at startup, batches run in chunks of four "
        "224x224 images' worth of pixels (float32 CPU, resnetkit ResNets)",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=32,
        help="most images per forward pass; 1 disables micro-batching (default 32)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=non_negative_float,
        default=5.0,
        help="how long a forward pass waits for more requests to join it (default 5)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require the API key held in environment variable VAR on /predict and /embed "
        "('Authorization: Bearer KEY' or 'X-API-Key: KEY'; a key on the command line would "
        "show in the process list). Default: no key",
    )
    g = p.add_argument_group("limits (what one request may cost; over them: a 413 or 422)")
    g.add_argument(
        "--max-body-mib",
        type=positive_float,
        default=10.0,
        help="largest request body in MiB (default 10)",
    )
    g.add_argument(
        "--max-megapixels",
        type=positive_float,
        default=SERVE_MAX_PIXELS / 1e6,
        help="largest width x height of one image in millions of pixels, refused before it is "
        f"decoded (default {SERVE_MAX_PIXELS / 1e6:g})",
    )
    g.add_argument(
        "--max-images",
        type=positive_int,
        default=16,
        help="most images in one request (default 16)",
    )
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from resnetkit.serve import create_app
    except ImportError as err:
        print(
            f"resnetkit serve: error: {err.name or err} is not installed: "
            "pip install 'resnetkit[serve]'",
            file=sys.stderr,
        )
        return 2
    if args.max_megapixels * 1e6 < 1 or args.max_body_mib * 1024 * 1024 < 1:
        raise ValueError("--max-megapixels and --max-body-mib must allow at least a pixel, a byte")
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key:
            raise ValueError(
                f"--api-key-env {args.api_key_env}: the variable is not set (or empty); export "
                f"it with the key first, e.g. {args.api_key_env}=$(openssl rand -hex 24)"
            )
    _check_free(args.host, args.port)  # before the model is loaded
    max_pixels = int(args.max_megapixels * 1e6)
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        # Pillow's own guard (89 megapixels) would refuse what the user chose to accept; this
        # process is the server, so its guard follows the server's limit.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        app = create_app(
            args.model,
            arch=args.arch,
            backend=args.backend,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_bytes=int(args.max_body_mib * 1024 * 1024),
            max_pixels=max_pixels,
            max_images_per_request=args.max_images,
            api_key=api_key,
        )
    except ImportError as err:  # the onnx backend without onnxruntime, say
        what = f"{err.name} is not installed: pip install 'resnetkit[export]'" if err.name else err
        print(f"resnetkit serve: error: {what}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _check_free(host: str, number: int) -> None:
    """Uvicorn reports a taken port only with a bare errno, after the model has loaded."""
    import socket

    try:
        infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"--host {host}: cannot be resolved ({err.strerror})") from None
    # Every address the name resolves to (localhost: ::1 and 127.0.0.1), as uvicorn binds them.
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind(address)
            except OSError as err:
                raise ValueError(
                    f"cannot listen on {host}:{number} ({address[0]}: {err.strerror}): "
                    f"{_bind_advice(err.errno, number)}"
                ) from None


def _bind_advice(code: int | None, number: int) -> str:
    """What to do about a failed bind, by its errno: only a taken port wants another --port."""
    import errno

    if code == errno.EADDRNOTAVAIL:
        return (
            "--host is not an address of this machine; give one of its own, 127.0.0.1 (this "
            "machine only) or 0.0.0.0 (every interface)"
        )
    if code == errno.EACCES and number < 1024:
        return f"port {number} needs administrator rights; choose one from 1024 up (--port 8000)"
    return "another server may be using the port; choose another --port"
