"""``resnetkit serve``: the HTTP API, bad input, metrics, micro-batching, ONNX, the load test."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
import torch
from benchmarks import load_test
from fastapi import FastAPI
from PIL import Image

from resnetkit.cli.main import build_parser, main
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.predict import predict
from resnetkit.serve import BatcherClosedError, MicroBatcher, ServeConfig, create_app

CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
_ASSET_DIR = resources.files("resnetkit.assets")
ASSETS = [Path(str(_ASSET_DIR / name)) for name in ("cat.png", "automobile.png", "ship.png")]
CAT = ASSETS[0].read_bytes()
PNG = {"content-type": "image/png"}
OCTETS = {"content-type": "application/octet-stream"}
JSON = {"content-type": "application/json"}
B64 = base64.b64encode(CAT).decode()
T = TypeVar("T")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("resnet20")
    pre = {"input_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    out = tmp_path_factory.mktemp("serve") / "model"
    return save_model_dir(
        model, out, arch="resnet20", classes=CLASSES, preprocessing=pre, metrics={"top1": 0.5}
    )


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def serve(app: FastAPI, scenario: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run ``scenario`` against the app in-process (startup and shutdown included)."""

    async def run() -> T:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as c:
                return await scenario(c)

    return asyncio.run(run())


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(*names: str, field: str = "files") -> dict[str, Any]:
    by_name = {p.name: p.read_bytes() for p in ASSETS}
    return {"files": [(field, (name, by_name[name], "image/png")) for name in names]}


def test_health_and_metadata(model_dir: Path) -> None:
    app = create_app(model_dir)

    async def scenario(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return await c.get("/health"), await c.get("/metadata")

    health, meta = serve(app, scenario)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    data = meta.json()
    assert data["classes"] == CLASSES
    assert data["backend"] == "torch"
    assert data["model"]["name"] == "resnet20"
    assert data["model"]["metrics"] == {"top1": 0.5}
    assert data["model"]["version"].startswith("sha256:")
    assert data["preprocessing"]["image_size"] == 32
    assert data["preprocessing"]["mean"] == pytest.approx([0.49, 0.48, 0.45])
    assert data["batching"] == {"max_batch": 32, "max_wait_ms": 5.0}
    assert data["limits"]["max_images_per_request"] == 16


def test_predictions_equal_resnetkit_predict(model_dir: Path) -> None:
    reference = predict(model_dir, ASSETS, top_k=3).predictions
    expected = {Path(p["path"]).name: p["top_k"] for p in reference}
    app = create_app(model_dir)

    async def scenario(c: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await c.post("/predict?top_k=3", content=CAT, headers=PNG),
            await c.post("/predict?top_k=3", **multipart("ship.png", field="file")),
            await c.post("/predict?top_k=3", **multipart("cat.png", "automobile.png", "ship.png")),
        ]

    raw, one, several = serve(app, scenario)
    assert [r.status_code for r in (raw, one, several)] == [200, 200, 200]
    got = [(None, raw.json()["predictions"][0])]
    got += [(p["file"], p) for p in one.json()["predictions"] + several.json()["predictions"]]
    assert [name for name, _ in got] == [None, "ship.png", "cat.png", "automobile.png", "ship.png"]
    for name, pred in got:
        want = expected[name or "cat.png"]
        assert [t["class"] for t in pred["top_k"]] == [t["class"] for t in want]
        assert [t["index"] for t in pred["top_k"]] == [t["index"] for t in want]
        assert [t["probability"] for t in pred["top_k"]] == pytest.approx(
            [t["probability"] for t in want], abs=1e-5
        )
    assert several.json()["model"] == "resnet20"


async def _chunked(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]  # no Content-Length: the server must count


BAD_INPUTS: list[tuple[str, dict[str, Any], int, str, str]] = [
    # (id, request, status, error, a word the detail must contain)
    # Bytes declared as an image that do not decode: 422, whatever their first bytes, saying
    # what arrived and what is read (415 is for a declared media type that is not taken).
    ("not-an-image", {"content": b"hello, not a picture " * 20, "headers": PNG}, 422,
     "not_an_image", "received 420 bytes beginning 'hello, not a pic'...; send the bytes of "
     "an image file (JPEG, PNG"),
    ("truncated", {"content": CAT[: len(CAT) // 2], "headers": PNG}, 422, "corrupt_image",
     f"truncated or corrupt image data; received {len(CAT) // 2:,} bytes beginning 89 50 4e 47"),
    ("octet-stream-not-an-image", {"content": b"\x00\x01\xfe" * 9, "headers": OCTETS}, 422,
     "not_an_image", "received 27 bytes beginning 00 01 fe 00"),
    ("huge-header", {"content": load_test.huge_png_header(), "headers": PNG}, 413,
     "too_many_pixels", "pixels"),
    ("too-many-pixels", {"content": png_bytes(64, 64), "headers": PNG}, 413, "too_many_pixels",
     "4,096 pixels"),
    ("too-elongated", {"content": png_bytes(200, 1), "headers": PNG}, 413, "too_many_pixels",
     "too elongated"),
    ("content-length", {"content": b"\x89PNG" + bytes(70_000), "headers": PNG}, 413,
     "payload_too_large", "Content-Length"),
    ("body-size", {"content": _chunked, "headers": PNG}, 413, "payload_too_large",
     "the request body exceeds"),
    ("wrong-type", {"content": CAT, "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_media_type", "text/plain"),
    ("no-type", {"content": CAT}, 415, "unsupported_media_type", "(none)"),
    ("empty", {"content": b"", "headers": PNG}, 400, "empty_body", "empty"),
    ("too-many-images", multipart(*["cat.png"] * 5), 413, "too_many_images", "5 images"),
    ("bad-second-file", {"files": [("files", ("a.png", CAT, "image/png")),
                                   ("files", ("b.png", b"garbage", "image/png"))]}, 422,
     "not_an_image", "image 2 of 2 ('b.png')"),
    ("part-type", {"files": [("file", ("a.txt", CAT, "text/plain"))]}, 415,
     "unsupported_media_type", "text/plain"),
    ("no-file-field", {"files": [("image", ("a.png", CAT, "image/png"))]}, 400, "no_image",
     "'image'"),
    ("no-filename", {"content": b'--b\r\nContent-Disposition: form-data; name="file"\r\n'
                                b"Content-Type: image/png\r\n\r\n" + CAT + b"\r\n--b--\r\n",
                     "headers": {"content-type": "multipart/form-data; boundary=b"}}, 400,
     "no_image", "has no filename"),
    ("bad-multipart", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
     400, "bad_multipart", "multipart"),
    ("unclosed-multipart", {"content": b'--b\r\nContent-Disposition: form-data; name="file"; '
                                       b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
                                       + CAT + b"\r\n",
                            "headers": {"content-type": "multipart/form-data; boundary=b"}},
     400, "bad_multipart", "ends before its closing boundary --b--"),
    ("bad-top-k", {"content": CAT, "headers": PNG, "params": {"top_k": 0}}, 422,
     "invalid_parameter", "top_k"),
    ("json-syntax", {"content": b'{"images": [', "headers": JSON}, 400, "invalid_json",
     "not valid JSON"),
    ("json-no-key", {"json": {"picture": "x"}}, 400, "no_image", "['picture']"),
    ("json-two-keys", {"json": {"image": B64, "images": [B64]}}, 400, "no_image",
     "expected a JSON object"),
    ("json-empty-list", {"json": {"images": []}}, 400, "no_image", "non-empty list"),
    ("json-item", {"json": {"images": [B64, 7]}}, 400, "no_image", "image 2 of 2 is int"),
    ("json-base64", {"json": {"images": [B64, {"name": "b.png", "data": "not*base64"}]}}, 400,
     "invalid_base64", "image 2 of 2 ('b.png'): not valid base64"),
    ("json-data-url", {"json": {"image": "data:text/plain;base64," + B64}}, 415,
     "unsupported_media_type", "'text/plain', not image/*"),
    ("json-too-many", {"json": {"instances": [{"b64": B64}] * 5}}, 413, "too_many_images",
     "5 images"),
    ("json-not-image", {"json": {"image": base64.b64encode(b"hello" * 30).decode()}}, 422,
     "not_an_image", "the image: not an image"),
    ("json-empty", {"content": b"  ", "headers": JSON}, 400, "empty_body", "empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error", "word"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(
    model_dir: Path, request_kwargs: dict[str, Any], status: int, error: str, word: str
) -> None:
    app = create_app(model_dir, max_bytes=64 * 1024, max_pixels=48 * 48, max_images_per_request=4)
    kwargs = dict(request_kwargs)
    if callable(kwargs.get("content")):
        kwargs["content"] = kwargs["content"](bytes(100_000))

    async def scenario(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, str]:
        bad = await c.post("/predict", **kwargs)
        good = await c.post("/predict", content=CAT, headers=PNG)
        return bad, good, (await c.get("/metrics")).text

    bad, good, metrics = serve(app, scenario)
    assert bad.status_code == status, bad.text
    body = bad.json()
    assert body["error"] == error
    assert word in body["detail"]
    assert good.status_code == 200 and len(good.json()["predictions"]) == 1
    assert f'resnetkit_rejected_inputs_total{{reason="{error}"}} 1.0' in metrics


def test_a_413_says_what_to_do_about_it(model_dir: Path) -> None:
    """The 413s said what was too large ('5 images in one request; at most 4 are accepted')
    and stopped there: now also what to do, send fewer or smaller images, or start the service
    with a larger limit, by the flag that sets it."""
    app = create_app(model_dir, max_bytes=64 * 1024, max_pixels=48 * 48, max_images_per_request=4)
    images = (
        "at most 4 are accepted: send them in requests of 4 or fewer, or start the service "
        "with a larger --max-images"
    )
    body = (
        "exceeds the limit of 65,536 bytes (0.0625 MiB): send fewer or smaller images a "
        "request (base64 in JSON makes them a third larger), or start the service with a "
        "larger --max-body-mib"
    )
    pixels = "or start the service with a larger --max-megapixels"
    advice = {
        "too-many-images": images,
        "json-too-many": images,
        "content-length": body,
        "body-size": body,
        "huge-header": f"; scale it down (the model sees 32 pixels a side), {pixels}",
        "too-many-pixels": f"; scale it down (the model sees 32 pixels a side), {pixels}",
        "too-elongated": f"; crop it nearer to a square, {pixels}",
    }
    cases = {case[0]: dict(case[1]) for case in BAD_INPUTS if case[2] == 413}
    assert sorted(cases) == sorted(advice)  # every 413 the service answers

    async def scenario(c: httpx.AsyncClient) -> dict[str, httpx.Response]:
        answers = {}
        for name, kwargs in cases.items():
            if callable(kwargs.get("content")):
                kwargs["content"] = kwargs["content"](bytes(100_000))
            answers[name] = await c.post("/predict", **kwargs)
        return answers

    for name, answer in serve(app, scenario).items():
        assert answer.status_code == 413, name
        assert answer.json()["detail"].endswith(advice[name]), (name, answer.json()["detail"])


def test_a_query_parameter_of_another_name_is_refused_not_ignored(model_dir: Path) -> None:
    """`POST /predict?topk=1` (or top-k, k) answered with the default 5 classes: FastAPI
    ignores parameters it does not know, so the client never learnt it had misspelt one."""
    app = create_app(model_dir)

    async def scenario(c: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await c.post("/predict?topk=1", content=CAT, headers=PNG),
            await c.post("/embed?normalise=true", content=CAT, headers=PNG),
            await c.post("/predict?top_k=1", content=CAT, headers=PNG),
        ]

    topk, normalise, good = serve(app, scenario)
    assert topk.status_code == normalise.status_code == 422
    assert topk.json() == {
        "error": "invalid_parameter",
        "detail": "unknown query parameter(s) 'topk': /predict takes top_k, threshold, "
        "min_confidence",
    }
    assert "'normalise': /embed takes normalize" in normalise.json()["detail"]
    assert good.status_code == 200 and len(good.json()["predictions"][0]["top_k"]) == 1


def test_the_formats_an_undecodable_image_error_names_are_those_read() -> None:
    """The 422 detail lists what to send: every format of a recognised image extension (it
    left out AVIF, which the service reads)."""
    from resnetkit.data.images import IMAGE_EXTENSIONS
    from resnetkit.serve.app import READABLE_FORMATS

    named = {name.upper() for name in READABLE_FORMATS.split(", ")}
    formats = Image.registered_extensions()
    assert {formats[suffix] for suffix in IMAGE_EXTENSIONS} <= named


def test_a_raw_body_of_octets_is_read_as_an_image(model_dir: Path) -> None:
    """application/octet-stream (what most HTTP clients send bytes as) was refused with 415;
    its format is found from the bytes, as for image/*."""
    app = create_app(model_dir)

    async def scenario(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return (
            await c.post("/predict?top_k=3", content=CAT, headers=OCTETS),
            await c.post("/predict?top_k=3", content=CAT, headers=PNG),
        )

    octets, png = serve(app, scenario)
    assert octets.status_code == 200, octets.text
    assert octets.json()["predictions"] == png.json()["predictions"]


def test_an_app_starts_again_after_shutdown(model_dir: Path) -> None:
    app = create_app(model_dir)

    async def scenario(c: httpx.AsyncClient) -> int:
        return (await c.post("/predict", content=CAT, headers=PNG)).status_code

    assert serve(app, scenario) == 200
    assert app.state.service.batcher.closed  # the first shutdown stopped its worker
    assert serve(app, scenario) == 200  # a second lifespan (two TestClient blocks) serves again


def test_a_wait_that_would_kill_the_worker_is_refused() -> None:
    for wait in (float("inf"), 1e300, -1.0):
        with pytest.raises(ValueError, match=r"max_wait_ms must be in \[0, 60000\]"):
            ServeConfig(max_wait_ms=wait)
        with pytest.raises(ValueError, match=r"max_wait_ms must be in \[0, 60000\]"):
            MicroBatcher(lambda x: x, max_wait_ms=wait)


def test_a_backbone_without_classifier_is_refused() -> None:
    backbone = create_model("resnet20", features_only=True, out_indices=(0, 2))
    with pytest.raises(ValueError, match="features_only=True: it returns feature maps"):
        create_app(backbone)


def test_metrics_count_requests_latency_batches_and_rejections(model_dir: Path) -> None:
    app = create_app(model_dir)

    async def scenario(c: httpx.AsyncClient) -> str:
        await c.post("/predict", content=CAT, headers=PNG)
        await c.post("/predict", **multipart("cat.png", "ship.png"))
        await c.post("/predict", content=b"junk", headers=PNG)
        await c.get("/health")
        return (await c.get("/metrics")).text

    text = serve(app, scenario)
    assert 'resnetkit_requests_total{endpoint="/predict",status="200"} 2.0' in text
    assert 'resnetkit_requests_total{endpoint="/predict",status="422"} 1.0' in text
    assert 'resnetkit_requests_total{endpoint="/health",status="200"} 1.0' in text
    assert 'resnetkit_request_latency_seconds_count{endpoint="/predict"} 3.0' in text
    assert "resnetkit_images_predicted_total 3.0" in text
    assert "resnetkit_batch_size_count 2.0" in text
    assert "resnetkit_batch_size_sum 3.0" in text
    assert 'resnetkit_rejected_inputs_total{reason="not_an_image"} 1.0' in text


@pytest.mark.parametrize(("max_batch", "most_calls"), [(8, 2), (1, 8)])
def test_concurrent_requests_share_forward_passes(
    model_dir: Path, max_batch: int, most_calls: int
) -> None:
    app = create_app(model_dir, max_batch=max_batch, max_wait_ms=1000)

    async def scenario(c: httpx.AsyncClient) -> list[httpx.Response]:
        return list(
            await asyncio.gather(*(c.post("/predict", content=CAT, headers=PNG) for _ in range(8)))
        )

    responses = serve(app, scenario)
    assert [r.status_code for r in responses] == [200] * 8
    first = responses[0].json()["predictions"]
    assert all(r.json()["predictions"][0]["top_k"][0] == first[0]["top_k"][0] for r in responses)
    batcher = app.state.service.batcher
    assert batcher.images == 8
    assert batcher.calls <= most_calls
    if max_batch == 1:
        assert batcher.calls == 8


def test_batcher_splits_and_fills_batches() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(lambda x: x * 2, max_batch=4, max_wait_ms=2000, on_batch=sizes.append)
    gate = threading.Event()
    original = batcher.fn

    def held(x: torch.Tensor) -> torch.Tensor:
        gate.wait(10)  # hold the first pass until everything is queued
        return original(x)

    batcher.fn = held
    jobs = [torch.full((n, 1), float(n)) for n in (1, 3, 2, 2, 5)]
    futures: list[Future[torch.Tensor]] = [batcher.submit_nowait(x) for x in jobs]
    gate.set()
    for x, future in zip(jobs, futures, strict=True):
        torch.testing.assert_close(future.result(timeout=10), x * 2)
    # 1+3 fill a batch; 2+2 another; 5 is split into 4 and 1.
    assert sizes == [4, 4, 4, 1]
    batcher.close()
    with pytest.raises(BatcherClosedError):
        batcher.submit_nowait(jobs[0])


@pytest.mark.parametrize(("wait_ms", "expected"), [(1000, [2]), (0, [1, 1])])
def test_batcher_waits_for_more_requests_only_as_long_as_asked(
    wait_ms: int, expected: list[int]
) -> None:
    """A second request 50 ms after the first joins its batch within a 1 s window, and runs
    on its own without one."""
    sizes: list[int] = []
    batcher = MicroBatcher(lambda x: x, max_batch=4, max_wait_ms=wait_ms, on_batch=sizes.append)
    first = batcher.submit_nowait(torch.zeros(1, 1))
    time.sleep(0.05)
    second = batcher.submit_nowait(torch.ones(1, 1))
    assert float(second.result(timeout=10)) == 1.0 and float(first.result(timeout=10)) == 0.0
    batcher.close()
    assert sizes == expected


def test_onnx_backend_matches_torch(model_dir: Path) -> None:
    torch_app = create_app(model_dir)
    onnx_app = create_app(model_dir, backend="onnx")
    x = torch.randn(3, 3, 32, 32)
    torch_fn = torch_app.state.service.batcher.fn
    onnx_fn = onnx_app.state.service.batcher.fn
    torch.testing.assert_close(onnx_fn(x), torch_fn(x), atol=1e-4, rtol=0)

    async def scenario(c: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        response = await c.post("/predict?top_k=10", **multipart("cat.png", "ship.png"))
        return response.json(), (await c.get("/metadata")).json()

    (want, _), (got, meta) = serve(torch_app, scenario), serve(onnx_app, scenario)
    assert meta["backend"] == "onnx" and got["backend"] == "onnx"
    for g, w in zip(got["predictions"], want["predictions"], strict=True):
        g_probs = {t["class"]: t["probability"] for t in g["top_k"]}
        w_probs = {t["class"]: t["probability"] for t in w["top_k"]}
        assert g_probs == pytest.approx(w_probs, abs=1e-4)


def test_optimized_backend_pads_to_compiled_sizes_and_matches_torch(model_dir: Path) -> None:
    from resnetkit.serve.backends import padded_batch

    assert [padded_batch(n, 4) for n in range(1, 11)] == [1, 2, 4, 4, 8, 8, 8, 8, 12, 12]
    assert [padded_batch(n, 3) for n in range(1, 5)] == [1, 2, 3, 6]
    torch_fn = create_app(model_dir).state.service.batcher.fn
    app = create_app(model_dir, backend="optimized", max_batch=8)
    fn = app.state.service.batcher.fn
    for n in (1, 3, 6):  # 32x32: one chunk; padded to 4 and 8, never seen by the caller
        x = torch.randn(n, 3, 32, 32)
        got = fn(x)
        assert got.shape == (n, 10)
        torch.testing.assert_close(got, torch_fn(x), atol=1e-4, rtol=0)

    async def scenario(c: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        response = await c.post("/predict", **multipart("cat.png", "ship.png", "automobile.png"))
        return response.json(), (await c.get("/metadata")).json()

    got, meta = serve(app, scenario)
    assert meta["backend"] == "optimized" and len(got["predictions"]) == 3


def test_optimized_backend_only_ever_runs_the_sizes_it_compiled(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch reaches the compiled graph padded to a size compiled at start-up (a new
    size would compile again, seconds, in the middle of serving)."""
    from resnetkit.export import cpu

    seen: list[int] = []

    def build(folded: torch.nn.Module) -> Any:
        def run(x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            with torch.inference_mode():
                return folded(x)

        return run

    monkeypatch.setattr(cpu, "_onednn_graph", build)
    fn = create_app(model_dir, backend="optimized", max_batch=8).state.service.batcher.fn
    compiled = set(seen)
    assert compiled == {1, 2, 4, 8}  # 32x32 images: chunks of 196, so every size up to 8
    seen.clear()
    for n in range(1, 9):
        assert fn(torch.randn(n, 3, 32, 32)).shape == (n, 10)
    assert seen == [1, 2, 4, 4, 8, 8, 8, 8]


def test_cli_serve_runs_uvicorn_on_loopback(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert (args.host, args.port, args.backend, args.max_batch) == ("127.0.0.1", 8000, "torch", 32)
    assert args.max_megapixels * 1e6 == ServeConfig().max_pixels == 25_000_000  # not Pillow's 89.5
    seen: dict[str, Any] = {}

    def fake_run(app: FastAPI, **kwargs: Any) -> None:
        seen.update(kwargs, app=app)

    monkeypatch.setattr("uvicorn.run", fake_run)
    argv = ["serve", "--model", str(model_dir), "--max-batch", "4", "--max-wait-ms", "2"]
    assert main([*argv, "--max-body-mib", "2", "--max-megapixels", "1.5", "--max-images", "3"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000
    config = seen["app"].state.service.config
    assert (config.max_batch, config.max_wait_ms) == (4, 2.0)
    assert (config.max_bytes, config.max_pixels, config.max_images_per_request) == (
        2 * 1024 * 1024,
        1_500_000,
        3,
    )
    # A limit above Pillow's own guard raises the guard for this process (else Pillow would
    # refuse a 100-megapixel image the user allowed); a lower one leaves it alone.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    assert main([*argv, "--max-megapixels", "200"]) == 0
    assert Image.MAX_IMAGE_PIXELS == seen["app"].state.service.config.max_pixels == 200_000_000
    # The onnx backend without ONNX Runtime installed: an error with the fix, not a traceback.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main([*argv, "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime" in err and "pip install 'resnetkit[export]'" in err, err
    assert "Traceback" not in err


def test_cli_serve_says_why_it_cannot_listen(capsys: pytest.CaptureFixture[str]) -> None:
    """Every failed bind was put down to a taken port ("choose another --port"), also an
    address of another machine given as --host, where another port cannot help."""
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is never an address of this machine; refused before
    # the model is read
    assert main(["serve", "--model", "no-such-model", "--host", "192.0.2.1"]) == 2
    err = capsys.readouterr().err
    assert "cannot listen on 192.0.2.1:8000" in err and "another --port" not in err, err
    assert "--host is not an address of this machine" in err
    import errno

    from resnetkit.cli.serve import _bind_advice

    assert "from 1024 up" in _bind_advice(errno.EACCES, 80)  # a user's process, not root
    assert "another --port" in _bind_advice(errno.EADDRINUSE, 8000)


def test_load_test_smoke(tmp_path: Path) -> None:
    out = tmp_path / "load_test.json"
    argv = ["--requests", "40", "--concurrency", "8", "--warmup", "2", "--threads", "1"]
    assert load_test.main([*argv, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["passed"]
    for name in ("no-batching", "micro-batching"):
        variant = results["variants"][name]
        assert variant["requests_sent"] == 40
        assert variant["server_errors"] == variant["dropped"] == variant["unexpected"] == 0
        assert sum(variant["status_counts"].values()) == 40
        assert set(variant["status_counts"]) == {"200", "413", "422"}
        assert variant["peak_rss_mib"] > 0
    assert results["variants"]["no-batching"]["mean_batch_size"] == 1.0
    table = out.with_suffix(".md").read_text()
    assert "| no-batching |" in table and "| micro-batching |" in table


def test_an_exported_onnx_file_is_served_predicted_and_evaluated_alone(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The .onnx file that `resnetkit export` writes is enough to deploy: its classes and
    preprocessing travel inside it."""
    from resnetkit.models.loading import load_model

    onnx_file = tmp_path / "model.onnx"
    assert main(["export", "--model", str(model_dir), "--format", "onnx", "--dynamic-batch",
                 "--out", str(onnx_file)]) == 0  # fmt: skip
    capsys.readouterr()
    torch_app, file_app = create_app(model_dir), create_app(onnx_file)  # backend "torch" asked

    async def scenario(c: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        response = await c.post("/predict?top_k=10", **multipart("cat.png", "ship.png"))
        return response.json(), (await c.get("/metadata")).json()

    (want, want_meta), (got, meta) = serve(torch_app, scenario), serve(file_app, scenario)
    assert meta["backend"] == got["backend"] == "onnx" and meta["classes"] == CLASSES
    assert meta["preprocessing"] == want_meta["preprocessing"]
    assert meta["model"]["name"] == "resnet20" and meta["model"]["source"] == str(onnx_file)
    for g, w in zip(got["predictions"], want["predictions"], strict=True):
        g_probs = {t["class"]: t["probability"] for t in g["top_k"]}
        w_probs = {t["class"]: t["probability"] for t in w["top_k"]}
        assert g_probs == pytest.approx(w_probs, abs=1e-4)
    with pytest.raises(ValueError, match="an ONNX file runs in ONNX Runtime"):
        create_app(onnx_file, backend="optimized")
    # predict and evaluate take the file too, and agree with the model it came from
    from_file, from_model = predict(onnx_file, ASSETS), predict(load_model(model_dir), ASSETS)
    for g, w in zip(from_file.predictions, from_model.predictions, strict=True):
        assert g["top_k"][0]["class"] == w["top_k"][0]["class"]
    argv = ["evaluate", "--dataset", "cifar10-sample", "--json", "--model"]
    assert main([*argv, str(onnx_file)]) == 0
    assert main([*argv, str(model_dir)]) == 0
    file_scores, model_scores = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert file_scores["top1"] == model_scores["top1"] and file_scores["count"] == 500
    # exported without --dynamic-batch: batches of 1 only, so a batch runs one image at a time
    static = tmp_path / "static.onnx"
    assert (
        main(["export", "--model", str(model_dir), "--format", "onnx", "--out", str(static)]) == 0
    )
    one_by_one = predict(static, ASSETS, batch_size=3)
    for g, w in zip(one_by_one.predictions, from_file.predictions, strict=True):
        assert [t["index"] for t in g["top_k"]] == [t["index"] for t in w["top_k"]]
        probs = [t["probability"] for t in g["top_k"]]
        assert probs == pytest.approx([t["probability"] for t in w["top_k"]], abs=1e-4)
    # an ONNX file from elsewhere cannot say how to prepare its input: refused, with the fix
    import onnx

    bare = onnx.load(str(onnx_file))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="carries no class names or preprocessing"):
        predict(tmp_path / "bare.onnx", ASSETS)


def test_json_base64_inputs_predict_as_uploads_do(model_dir: Path) -> None:
    """Every JSON form (one image, a list with names, KServe/TF Serving instances, a data URL,
    URL-safe base64 without padding and with line breaks) gives the uploads' answers."""
    car = ASSETS[1].read_bytes()
    car_b64 = base64.b64encode(car).decode()
    urlsafe = base64.urlsafe_b64encode(car).decode().rstrip("=")
    assert car_b64.endswith("==") and ("-" in urlsafe or "_" in urlsafe)  # both paths taken
    wrapped = "\n".join(car_b64[i : i + 76] for i in range(0, len(car_b64), 76))
    app = create_app(model_dir)
    bodies = [
        {"image": B64},
        {"images": [B64, {"name": "automobile.png", "data": car_b64}]},
        {"instances": [{"b64": B64}, {"b64": urlsafe}]},
        {"images": ["data:image/png;base64," + B64, wrapped]},
    ]

    async def scenario(c: httpx.AsyncClient) -> tuple[dict[str, Any], list[httpx.Response]]:
        uploads = await c.post("/predict?top_k=3", **multipart("cat.png", "automobile.png"))
        return uploads.json(), [await c.post("/predict?top_k=3", json=body) for body in bodies]

    uploads, responses = serve(app, scenario)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    cat, car_pred = (p["top_k"] for p in uploads["predictions"])
    got = [r.json()["predictions"] for r in responses]
    assert [len(g) for g in got] == [1, 2, 2, 2]
    assert got[1][1]["file"] == "automobile.png" and got[1][0]["file"] is None
    for predictions in got:
        for pred, want in zip(predictions, (cat, car_pred), strict=False):
            assert [t["class"] for t in pred["top_k"]] == [t["class"] for t in want]
            assert [t["probability"] for t in pred["top_k"]] == pytest.approx(
                [t["probability"] for t in want], abs=1e-6
            )


def test_embed_returns_the_pooled_features_resnetkit_embed_gives(
    model_dir: Path, tmp_path: Path
) -> None:
    from resnetkit.explain import embed
    from resnetkit.models.loading import load_model

    reference = embed(load_model(model_dir), ASSETS)
    app = create_app(model_dir, max_wait_ms=0)

    async def scenario(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, str]:
        plain = await c.post("/embed", **multipart("cat.png", "automobile.png", "ship.png"))
        unit = await c.post("/embed?normalize=true", json={"image": B64})
        return plain, unit, (await c.get("/metrics")).text

    plain, unit, metrics = serve(app, scenario)
    assert plain.status_code == 200 and unit.status_code == 200
    body = plain.json()
    assert body["dim"] == 64 and body["model"] == "resnet20"
    assert [e["file"] for e in body["embeddings"]] == ["cat.png", "automobile.png", "ship.png"]
    vectors = np.array([e["embedding"] for e in body["embeddings"]])
    np.testing.assert_allclose(vectors, reference.vectors, atol=1e-5)
    cat = np.array(unit.json()["embeddings"][0]["embedding"])
    assert np.linalg.norm(cat) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(cat, vectors[0] / np.linalg.norm(vectors[0]), atol=1e-5)
    assert "resnetkit_images_embedded_total 4.0" in metrics
    assert 'resnetkit_requests_total{endpoint="/embed",status="200"} 2.0' in metrics
    assert app.state.service._feature_batcher is None  # the shutdown stopped its worker


def test_embed_works_for_torchvision_models_and_not_for_an_onnx_file(
    model_dir: Path, tmp_path: Path
) -> None:
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=4).eval()
    tv.pretrained_cfg = {"input_size": 32, "classes": list("abcd")}  # type: ignore[assignment]
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", "--model", str(model_dir), "--format", "onnx",
                 "--out", str(onnx_file)]) == 0  # fmt: skip

    async def scenario(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/embed", content=CAT, headers=PNG)

    got = serve(create_app(tv), scenario)
    assert got.status_code == 200 and got.json()["dim"] == 512
    x = create_app(tv).state.service.preprocess([None], [CAT])
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(tv.children())[:-1])
        want = trunk(x).flatten(1)[0]
    np.testing.assert_allclose(got.json()["embeddings"][0]["embedding"], want.numpy(), atol=1e-5)
    refused = serve(create_app(onnx_file), scenario)
    assert refused.status_code == 501 and refused.json()["error"] == "embeddings_unavailable"
    assert "serve the model directory" in refused.json()["detail"]


def test_embed_and_predict_at_once_on_a_torchvision_model() -> None:
    """Two worker threads share the model: neither may see the other's batches."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=4).eval()
    tv.pretrained_cfg = {"input_size": 32, "classes": list("abcd")}  # type: ignore[assignment]
    app = create_app(tv, max_wait_ms=20)
    x = app.state.service.preprocess([None], [CAT])
    with torch.no_grad():
        want_vec = torch.nn.Sequential(*list(tv.children())[:-1])(x).flatten(1)[0]
        want_probs = tv(x).softmax(1)[0]

    async def scenario(c: httpx.AsyncClient) -> list[httpx.Response]:
        calls = [c.post("/embed", content=CAT, headers=PNG) for _ in range(6)]
        calls += [c.post("/predict?top_k=4", content=CAT, headers=PNG) for _ in range(6)]
        return list(await asyncio.gather(*calls))

    responses = serve(app, scenario)
    assert [r.status_code for r in responses] == [200] * 12
    for r in responses[:6]:
        np.testing.assert_allclose(r.json()["embeddings"][0]["embedding"], want_vec, atol=1e-5)
    for r in responses[6:]:
        got = {t["index"]: t["probability"] for t in r.json()["predictions"][0]["top_k"]}
        assert got == pytest.approx(dict(enumerate(want_probs.tolist())), abs=1e-5)


KEY = "k3y-0f-at-least-16-chars"


def test_an_api_key_guards_predict_and_embed(model_dir: Path) -> None:
    app = create_app(model_dir, api_key=KEY)

    async def scenario(c: httpx.AsyncClient) -> dict[str, httpx.Response]:
        return {
            "none": await c.post("/predict", content=CAT, headers=PNG),
            "wrong": await c.post("/predict", content=CAT, headers={**PNG, "X-API-Key": "x" * 24}),
            "bearer": await c.post(
                "/predict", content=CAT, headers={**PNG, "Authorization": f"Bearer {KEY}"}
            ),
            "header": await c.post("/embed", content=CAT, headers={**PNG, "X-API-Key": KEY}),
            "embed": await c.post("/embed", content=CAT, headers=PNG),
            "health": await c.get("/health"),
            "metadata": await c.get("/metadata"),
            "metrics": await c.get("/metrics"),
        }

    r = serve(app, scenario)
    for name in ("none", "wrong", "embed"):
        assert r[name].status_code == 401 and r[name].json()["error"] == "unauthorized"
        assert r[name].headers["WWW-Authenticate"] == "Bearer"
        assert KEY not in r[name].text
    assert r["bearer"].status_code == 200 and r["header"].status_code == 200
    assert [r[n].status_code for n in ("health", "metadata", "metrics")] == [200] * 3
    assert r["metadata"].json()["auth"] is True
    assert 'resnetkit_rejected_inputs_total{reason="unauthorized"} 3.0' in r["metrics"].text
    assert KEY not in repr(app.state.service.config)
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_app(model_dir, api_key="short")


def test_cli_reads_the_api_key_from_the_environment(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: seen.update(app=app))
    argv = ["serve", "--model", str(model_dir), "--api-key-env", "RESNETKIT_TEST_KEY"]
    monkeypatch.delenv("RESNETKIT_TEST_KEY", raising=False)
    assert main(argv) == 2
    assert "RESNETKIT_TEST_KEY: the variable is not set" in capsys.readouterr().err
    monkeypatch.setenv("RESNETKIT_TEST_KEY", KEY)
    assert main(argv) == 0
    assert seen["app"].state.service.config.api_key == KEY
