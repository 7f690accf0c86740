"""The HTTP service: a FastAPI app that classifies uploaded images with one model.

Endpoints:

* ``POST /predict?top_k=5``: one or more images, as a multipart upload (fields ``file``
  and/or ``files``), as the raw body with an ``image/*`` or ``application/octet-stream``
  content type (the format is found from the bytes either way), or as JSON with base64
  data (``{"image": B64}``, ``{"images": [B64 | {"name", "data": B64}, ...]}``, or KServe's
  and TF Serving's ``{"instances": [{"b64": B64}, ...]}``; ``data:image/...;base64,`` URLs
  too). Answers ``{"model", "backend", "predictions": [{"file", "top_k": [{"class", "index",
  "probability"}]}]}`` in upload order. A multi-label model's predictions also have
  ``labels`` (every class whose sigmoid probability reaches ``threshold``, by default the
  model's own), as :func:`resnetkit.predict` gives; a model with a min confidence (``resnetkit
  calibrate --target-accuracy``, or ``?min_confidence=``) ``unsure``, whether the top class's
  probability is below it.
* ``POST /embed?normalize=false``: the same inputs; answers ``{"model", "dim", "embeddings":
  [{"file", "embedding": [...]}]}``, the pooled features the classifier reads (for search,
  deduplication, clustering), L2-normalised with ``normalize=true``. Always run by the PyTorch
  model (a served ``.onnx`` file has none: 501).
* ``GET /health``: ``{"status": "ok", ...}`` once the model is loaded.
* ``GET /metadata``: the model (name, version, metrics), its classes and preprocessing, the
  backend, the batching settings and the input limits.
* ``GET /metrics``: Prometheus text format.

Images are decoded with :func:`~resnetkit.data.images.load_image` and preprocessed exactly as
:func:`resnetkit.predict` does, so the service and the command line agree. Every bad request
(not an image, truncated, too many bytes or pixels, wrong content type, empty, too many images)
is answered with a 4xx and ``{"error": CODE, "detail": TEXT}`` and counted by ``CODE`` in
``resnetkit_rejected_inputs_total``; nothing a client sends stops the server. The status says
whose fault it is: 415 for a declared media type the service does not take (``text/plain``,
no Content-Type, a multipart part or data URL of another type), 422 for bytes sent as an image
that do not decode as one, whatever their first bytes (``not_an_image``, ``corrupt_image``;
the detail says how many bytes arrived, how they begin and which formats are read), 400 for an
empty image or a malformed body, 413 for too many bytes, pixels or images. Forward passes run
on one worker thread through a :class:`~resnetkit.serve.batcher.MicroBatcher`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from torch import Tensor, nn

from resnetkit.data.images import (
    REASON_CORRUPT,
    REASON_EMPTY,
    REASON_NOT_IMAGE,
    SERVE_MAX_PIXELS,
)
from resnetkit.predict import Preprocessing
from resnetkit.serve.backends import (
    features_forward,
    onnx_forward,
    optimized_forward,
    torch_forward,
    weights_version,
)
from resnetkit.serve.batcher import MAX_WAIT_MS, BatcherClosedError, MicroBatcher
from resnetkit.serve.inputs import (
    GENERIC_PART_TYPES,
    ApiError,
    describe_image,
    images_from_json,
    too_many_images,
)
from resnetkit.serve.metrics import Metrics, MetricsMiddleware

__all__ = ["ApiError", "Backend", "ServeConfig", "create_app"]

Backend = Literal["torch", "onnx", "optimized"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "optimized")
MiB = 1024 * 1024
#: Largest accepted width * height per image (25 megapixels).
DEFAULT_MAX_PIXELS = SERVE_MAX_PIXELS
#: Multipart fields that carry images.
IMAGE_FIELDS = ("file", "files")


@dataclass(frozen=True)
class ServeConfig:
    """How the service runs and what it accepts.

    Attributes:
        backend: "torch" (the model as loaded), "onnx" (exported once, run by ONNX Runtime) or
            "optimized" (:func:`~resnetkit.export.cpu.optimize_for_cpu`, batches padded to
            shapes compiled at startup).
        max_batch: most images per forward pass; 1 turns micro-batching off.
        max_wait_ms: how long a forward pass waits for more requests to join it.
        max_bytes: largest request body, checked against Content-Length and while reading.
        max_pixels: largest width * height of one image, checked before it is decoded.
        max_images_per_request: most images in one request.
        api_key: when set, ``/predict`` and ``/embed`` answer only requests that carry it
            (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``); others get a 401.
    """

    backend: Backend = "torch"
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_bytes: int = 10 * MiB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images_per_request: int = 16
    api_key: str | None = field(default=None, repr=False)  # kept out of logs and reprs

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")
        for name in ("max_batch", "max_bytes", "max_pixels", "max_images_per_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError(
                "api_key must be at least 16 characters (a guessable key guards little)"
            )
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:
            raise ValueError(f"max_wait_ms must be in [0, {MAX_WAIT_MS:g}], got {self.max_wait_ms}")


# How each load_image failure is answered: (status, error code). Content that does not decode
# is a 422 whether or not its format was recognised: the media type the client declared was
# accepted (415 is kept for that), it is the bytes that are not a usable image.
_DECODE_ERRORS: dict[str, tuple[int, str]] = {
    REASON_EMPTY: (400, "empty_image"),
    REASON_NOT_IMAGE: (422, "not_an_image"),
    REASON_CORRUPT: (422, "corrupt_image"),
}
#: What an undecodable image's error says the service reads.
READABLE_FORMATS = "JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF, PPM"


def _decode_error(reason: str) -> tuple[int, str]:
    if reason in _DECODE_ERRORS:
        return _DECODE_ERRORS[reason]
    too_many = ("image too large", "image too elongated", "refused as a possible decompression")
    if reason.startswith(too_many):
        return 413, "too_many_pixels"
    return 422, "undecodable_image"  # e.g. an unsupported mode, or no pixels at all


def create_app(
    model_or_path: nn.Module | str | Path,
    *,
    arch: str | None = None,
    backend: Backend = "torch",
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_bytes: int = 10 * MiB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_images_per_request: int = 16,
    api_key: str | None = None,
) -> FastAPI:
    """Build the service for one classifier.

    Args:
        model_or_path: a loaded classifier, or what
            :func:`~resnetkit.models.loading.load_model` accepts (model directory, packaged
            tag, or checkpoint file with ``arch``), or an ``.onnx`` file written by
            ``resnetkit export`` (served by ONNX Runtime, with the classes and preprocessing
            the file carries).
        arch: architecture of a bare checkpoint file.
        backend: "torch" runs the model itself; "onnx" exports it once (dynamic batch,
            verified against PyTorch) to a temporary file and runs that with ONNX Runtime on
            the CPU (needs ``resnetkit[export]``); "optimized" compiles a resnetkit ResNet with
            :func:`~resnetkit.export.cpu.optimize_for_cpu` (float32, CPU), which runs batches
            in chunks (4 images at 224x224); each batch is padded to a multiple of the chunk or,
            below it, to a power of two: shapes that are all compiled at startup.
        max_batch: most images per forward pass; 1 disables micro-batching.
        max_wait_ms: how long a forward pass may wait for more requests to join it.
        max_bytes: largest request body in bytes (default 10 MiB).
        max_pixels: largest width * height of an image, refused before decoding.
        max_images_per_request: most images in one request.
        api_key: require this key on ``/predict`` and ``/embed`` (``Authorization: Bearer``
            or ``X-API-Key``); ``/health``, ``/metadata`` and ``/metrics`` stay open.

    Returns:
        The app; serve it with uvicorn (``resnetkit serve`` does). The worker thread starts
        with the app (or on the first prediction) and stops when the app shuts down. The
        service's state is at ``app.state.service`` (a :class:`Service`).

    Raises:
        ValueError: a bad setting, or a model that is not a classifier or that
            ``load_model`` refuses.
    """
    config = ServeConfig(
        backend=backend,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_images_per_request=max_images_per_request,
        api_key=api_key,
    )
    service = Service(model_or_path, config, arch=arch)
    config = service.config  # an .onnx file runs on the onnx backend whatever was asked

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="resnetkit",
        summary=f"Image classification with {service.model_name}",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    _add_error_handlers(app, service.metrics)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_name, "backend": config.backend}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return service.metadata

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict")
    async def predict(
        request: Request,
        top_k: int = Query(5, ge=1, description="classes per image (at most all classes)"),
        threshold: float | None = Query(
            None, gt=0.0, lt=1.0, description="multi-label models: a class's least probability"
        ),
        min_confidence: float | None = Query(
            None,
            ge=0.0,
            lt=1.0,
            description="mark an answer unsure below this top-class probability (0: none)",
        ),
    ) -> dict[str, Any]:
        service.authorize(request)  # before the body is read
        _refuse_unknown_query(request, ("top_k", "threshold", "min_confidence"))
        if threshold is not None and service.threshold is None:
            raise ApiError(
                400,
                "not_multi_label",
                "threshold is for multi-label models; this one picks one class an image (top_k)",
            )
        if min_confidence and service.threshold is not None:  # 0 (none) is fine
            raise ApiError(
                400,
                "multi_label",
                "min_confidence is for models that pick one class an image; this one is "
                "multi-label (give threshold)",
            )
        names, images = await service.read_images(request)
        # Decoded a few requests at a time (one per core): 40 threads each decoding 16 large
        # images at once would hold gigabytes.
        batch = await anyio.to_thread.run_sync(
            service.preprocess, names, images, limiter=service.decode_limiter()
        )
        logits = await service.batcher.submit(batch)
        return {
            "model": service.model_name,
            "backend": config.backend,
            "predictions": service.top_k(names, logits, top_k, threshold, min_confidence),
        }

    @app.post("/embed")
    async def embed(
        request: Request,
        normalize: bool = Query(False, description="L2-normalise each vector (cosine search)"),
    ) -> dict[str, Any]:
        service.authorize(request)
        _refuse_unknown_query(request, ("normalize",))
        features = service.feature_batcher()  # before reading: a model without any is a 501
        names, images = await service.read_images(request)
        batch = await anyio.to_thread.run_sync(
            service.preprocess, names, images, limiter=service.decode_limiter()
        )
        vectors = await features.submit(batch)
        if normalize:
            vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
        service.metrics.embedded.inc(len(names))
        return {
            "model": service.model_name,
            "dim": int(vectors.shape[1]),
            "embeddings": [
                {"file": name, "embedding": row}
                for name, row in zip(names, vectors.tolist(), strict=True)
            ],
        }

    return app


def _body_too_large(what: str, limit: int) -> ApiError:
    """The 413 for a body over ``limit`` bytes, with what to do."""
    return ApiError(
        413,
        "payload_too_large",
        f"{what} exceeds the limit of {limit:,} bytes ({limit / MiB:g} MiB): send fewer or "
        "smaller images a request (base64 in JSON makes them a third larger), or start the "
        "service with a larger --max-body-mib",
    )


def _refuse_unknown_query(request: Request, known: tuple[str, ...]) -> None:
    """FastAPI ignores query parameters it does not know: ``?topk=1`` or ``?top-k=1`` got
    the default 5 classes, as if the client had not asked."""
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        raise ApiError(
            422,
            "invalid_parameter",
            f"unknown query parameter(s) {', '.join(map(repr, unknown))}: "
            f"{request.url.path} takes {', '.join(known)}",
        )


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def reply(status: int, error: str, detail: str) -> JSONResponse:
        if 400 <= status < 500 and status not in (404, 405):
            metrics.rejected.labels(error).inc()
        return JSONResponse({"error": error, "detail": detail}, status_code=status)

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        response = reply(exc.status, exc.error, exc.detail)
        if exc.status == 401:  # RFC 9110: say which scheme would be accepted
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def invalid_parameter(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(part) for part in err.get('loc', ())[1:])}: {err.get('msg', '')}"
            for err in exc.errors()
        ]
        return reply(422, "invalid_parameter", "; ".join(problems))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return reply(exc.status_code, error, str(exc.detail))

    async def shutting_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"error": "shutting_down", "detail": str(exc)},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette still re-raises it afterwards, so the server logs the traceback.
        return JSONResponse(
            {"error": "internal_error", "detail": f"{type(exc).__name__}: {exc}"}, status_code=500
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(BatcherClosedError, shutting_down)
    app.add_exception_handler(Exception, internal_error)


class Service:
    """The model, its preprocessing, the batcher and the metrics behind one app.

    Attributes:
        model: the PyTorch model (also kept for the ONNX backend: metadata, class names).
        config: the settings.
        classes: class names, in output order.
        preprocessing: as :func:`resnetkit.predict` applies it.
        metrics: the Prometheus metrics.
        batcher: runs the backend on the worker thread.
        metadata: what ``GET /metadata`` answers.
    """

    def __init__(
        self, model_or_path: nn.Module | str | Path, config: ServeConfig, *, arch: str | None
    ) -> None:
        from resnetkit.data.multilabel import model_threshold
        from resnetkit.evaluate.selective import model_min_confidence
        from resnetkit.export.runtime import OrtClassifier
        from resnetkit.models.loading import load_classifier, preprocessing_of
        from resnetkit.predict import class_names, unwrap

        if isinstance(model_or_path, nn.Module):
            model = model_or_path.eval()
            source = None
        else:
            model = load_classifier(model_or_path, arch=arch)
            source = str(model_or_path)
        exported = isinstance(model, OrtClassifier)  # an .onnx file: ONNX Runtime runs it
        if exported and config.backend == "optimized":
            raise ValueError(
                f"{source}: an ONNX file runs in ONNX Runtime (backend onnx); the optimized "
                "backend compiles a PyTorch model: give it the model directory instead"
            )
        if exported:
            config = replace(config, backend="onnx")
        if not exported:
            model = unwrap(model)  # DDP / EMA wrappers: the inner model's preprocessing
        self.model = model
        self.config = config
        self.classes = class_names(model)
        self.threshold = model_threshold(model)  # None: one class an image (softmax)
        # answers below it are marked unsure (None: none are)
        self.min_confidence = model_min_confidence(model) if self.threshold is None else None
        self.preprocessing = Preprocessing.of(model)
        self.model_name = str(getattr(model, "name", type(model).__name__))
        self.metrics = Metrics()
        if exported:
            forward = torch_forward(model)  # its forward is the ONNX Runtime session
        elif config.backend == "onnx":
            forward = onnx_forward(model)
        elif config.backend == "optimized":
            forward = optimized_forward(model, self.preprocessing.image_size, config.max_batch)
        else:
            forward = torch_forward(model)
        self._forward = forward
        self.batcher = self._new_batcher()
        # Embeddings: the PyTorch model's pooled features, on a worker thread of their own,
        # made on the first /embed request (most services never get one).
        self._features_forward = None if exported else features_forward(model)
        self._feature_batcher: MicroBatcher | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._transform = self.preprocessing.transform()
        cfg = preprocessing_of(model)
        prep = self.preprocessing
        self.metadata: dict[str, Any] = {
            "model": {
                "name": self.model_name,
                "tag": cfg.get("tag"),
                "version": weights_version(model),
                "source": source,
                "num_classes": len(self.classes),
                "metrics": dict(cfg.get("metrics") or {}),
            },
            "classes": list(self.classes),
            "multi_label": self.threshold is not None,
            "threshold": self.threshold,
            "min_confidence": self.min_confidence,
            "preprocessing": {
                "image_size": prep.image_size,
                "resize": prep.resize,
                "interpolation": prep.interpolation,
                "mean": list(prep.mean),
                "std": list(prep.std),
                "pixel_mean": prep.pixel_mean is not None,
            },
            "backend": config.backend,
            "batching": {"max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms},
            "auth": config.api_key is not None,
            "limits": {
                "max_bytes": config.max_bytes,
                "max_pixels": config.max_pixels,
                "max_images_per_request": config.max_images_per_request,
            },
        }

    # --- reading requests ---------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        """Refuse a request without the service's key (when it has one), in constant time.

        Raises:
            ApiError: 401, naming the headers that carry the key (never the key).
        """
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("x-api-key", "")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = given or token.strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "this service needs its API key: send 'Authorization: Bearer KEY' or "
                "'X-API-Key: KEY'",
            )

    async def read_images(self, request: Request) -> tuple[list[str | None], list[bytes]]:
        """The encoded images of a request and their file names (``None`` for a raw body).

        Raises:
            ApiError: wrong content type, empty body, too many bytes or images, bad multipart.
        """
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "multipart/form-data":
            body = await self._read_body(request)
            return await self._read_multipart(request, body)
        if media_type.startswith("image/") or media_type in GENERIC_PART_TYPES:
            # application/octet-stream (curl --data-binary with -H, most HTTP clients' default
            # for bytes): the format is found from the bytes, as it is for image/*
            body = await self._read_body(request)
            if not body:
                raise ApiError(400, "empty_body", "the request body is empty: send an image")
            return [None], [body]
        if media_type == "application/json" or media_type.endswith("+json"):
            body = await self._read_body(request)
            # Parsing and base64-decoding megabytes is CPU work: off the event loop.
            return await anyio.to_thread.run_sync(self._read_json, body)
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media_type or '(none)'!r} is not accepted: send one image as the "
            "body with an image/* Content-Type (e.g. image/png) or application/octet-stream, "
            "multipart/form-data with "
            f"the images in fields {' or '.join(repr(f) for f in IMAGE_FIELDS)}, or "
            'application/json with base64 images ({"images": ["<base64>", ...]})',
        )

    def _read_json(self, body: bytes) -> tuple[list[str | None], list[bytes]]:
        """The images of a JSON body, base64-decoded (see :func:`images_from_json`)."""
        return images_from_json(body, self.config.max_images_per_request)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise ApiError(400, "bad_content_length", f"Content-Length {declared!r}") from None
            if length > limit:
                raise _body_too_large(f"Content-Length {length:,} bytes", limit)
        # Content-Length may be absent (chunked) or wrong: count what actually arrives too.
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _body_too_large("the request body", limit)
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(
                400, "incomplete_body", "the client disconnected before sending the whole body"
            ) from None
        return b"".join(chunks)

    async def _read_multipart(
        self, request: Request, body: bytes
    ) -> tuple[list[str | None], list[bytes]]:
        if not body:
            raise ApiError(400, "empty_body", "the request body is empty: send an image")
        boundary = _boundary(request.headers.get("content-type", ""))
        if boundary and not body.rstrip().endswith(b"--" + boundary + b"--"):
            # The parser would drop the unfinished last part without a word (an image lost).
            raise ApiError(
                400,
                "bad_multipart",
                f"the multipart body ends before its closing boundary --{boundary.decode()}--: "
                "send the whole body",
            )

        async def stream() -> AsyncGenerator[bytes, None]:
            yield body

        # The body is already within max_bytes; the part limit only applies to text fields.
        parser = MultiPartParser(request.headers, stream(), max_part_size=self.config.max_bytes)
        try:
            form = await parser.parse()
        except MultiPartException as err:
            raise ApiError(400, "bad_multipart", f"unreadable multipart body: {err}") from None
        try:
            uploads = [
                (field, value)
                for field, value in form.multi_items()
                if isinstance(value, UploadFile)
            ]
            images = [upload for field, upload in uploads if field in IMAGE_FIELDS]
            if not images:
                texts = sorted(
                    {f for f, v in form.multi_items() if f in IMAGE_FIELDS and isinstance(v, str)}
                )
                if texts:  # curl -F 'file=<cat.png' sends the bytes without a filename
                    raise ApiError(
                        400,
                        "no_image",
                        f"field {texts[0]!r} has no filename, so it arrived as text, not as a "
                        "file: send it as a file part (curl -F 'file=@cat.png')",
                    )
                others = sorted({field for field, _ in uploads})
                found = f"; found file fields {others}" if others else ""
                raise ApiError(
                    400,
                    "no_image",
                    "no image in the multipart body: put the images in fields "
                    f"{' or '.join(repr(f) for f in IMAGE_FIELDS)}{found}",
                )
            if len(images) > self.config.max_images_per_request:
                raise too_many_images(len(images), self.config.max_images_per_request)
            names: list[str | None] = []
            data: list[bytes] = []
            for i, upload in enumerate(images):
                part_type = (upload.content_type or "").split(";")[0].strip().lower()
                if part_type and not part_type.startswith("image/"):
                    if part_type not in GENERIC_PART_TYPES:
                        raise ApiError(
                            415,
                            "unsupported_media_type",
                            f"{describe_image(upload.filename, i, len(images))} has Content-Type "
                            f"{part_type!r}; expected image/* or application/octet-stream",
                        )
                names.append(upload.filename)
                data.append(await upload.read())
        finally:
            await form.close()
        return names, data

    # --- decoding and predicting --------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread; after a shutdown, a new batcher (an app can start again)."""
        if self.batcher.closed:
            self.batcher = self._new_batcher()
        self.batcher.start()
        self._limiter = None  # made in this lifespan's event loop, on first use

    def close(self) -> None:
        """Stop the worker threads (queued requests are answered 503)."""
        self.batcher.close()
        if self._feature_batcher is not None:
            self._feature_batcher.close()
            self._feature_batcher = None

    def feature_batcher(self) -> MicroBatcher:
        """The batcher of ``/embed`` (started on first use).

        Raises:
            ApiError: 501 when the model gives no pooled features (an ``.onnx`` file served
                alone, or a model without ``forward_head(pre_logits=True)``).
        """
        if self._features_forward is None:
            raise ApiError(
                501,
                "embeddings_unavailable",
                f"{self.model_name} served from an ONNX file (or a model without "
                "forward_features/forward_head) has no feature output: serve the model "
                "directory or checkpoint to get /embed",
            )
        if self._feature_batcher is None:
            self._feature_batcher = MicroBatcher(
                self._features_forward,
                max_batch=self.config.max_batch,
                max_wait_ms=self.config.max_wait_ms,
            )
            self._feature_batcher.start()
        return self._feature_batcher

    def decode_limiter(self) -> anyio.CapacityLimiter:
        """How many requests decode their images at once: one per core."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        return self._limiter

    def _new_batcher(self) -> MicroBatcher:
        return MicroBatcher(
            self._forward,
            max_batch=self.config.max_batch,
            max_wait_ms=self.config.max_wait_ms,
            on_batch=self.metrics.batch_size.observe,
        )

    def preprocess(self, names: list[str | None], images: list[bytes]) -> Tensor:
        """Decode and preprocess every image (on a thread: this is CPU work).

        Raises:
            ApiError: for the first image that cannot be used, naming it and why.
        """
        from resnetkit.data.images import ImageDecodeError, load_image

        prep = self.preprocessing
        tensors = []
        for i, (name, data) in enumerate(zip(names, images, strict=True)):
            try:
                # JPEGs may decode straight at a reduced scale, never below the resize target.
                image = load_image(data, max_pixels=self.config.max_pixels, draft_size=prep.resize)
            except ImageDecodeError as err:
                status, error = _decode_error(err.reason)
                detail = f"{describe_image(name, i, len(images))}: {err.reason}"
                if error in ("not_an_image", "corrupt_image"):
                    detail += (
                        f"; received {_received(data)}; send the bytes of an image file "
                        f"({READABLE_FORMATS})"
                    )
                elif error == "too_many_pixels":
                    smaller = (
                        "crop it nearer to a square"
                        if err.reason.startswith("image too elongated")
                        else f"scale it down (the model sees {prep.image_size} pixels a side)"
                    )
                    detail += f"; {smaller}, or start the service with a larger --max-megapixels"
                raise ApiError(status, error, detail) from None
            tensors.append(self._transform(image))
        return torch.stack(tensors)

    def top_k(
        self,
        names: list[str | None],
        logits: Tensor,
        k: int,
        threshold: float | None = None,
        min_confidence: float | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` most probable classes of every image (and a multi-label model's classes
        at ``threshold``, default its own; whether an answer is unsure, below
        ``min_confidence``, default the model's own, 0 for none), as
        :func:`resnetkit.predict` gives."""
        from resnetkit.predict import rank_classes

        if self.threshold is None:
            probs, cut = logits.float().softmax(dim=1), None
        else:
            probs, cut = logits.float().sigmoid(), threshold or self.threshold
        floor = self.min_confidence if min_confidence is None else min_confidence
        self.metrics.images.inc(len(names))
        ranked = rank_classes(probs, self.classes, k, cut, min_confidence=floor or None)
        if self.min_confidence is not None:  # by the model's own threshold, whatever was asked
            top = probs.amax(dim=1).double()
            self.metrics.unsure.inc(int((top < self.min_confidence).sum()))
        return [{"file": name, **ranking} for name, ranking in zip(names, ranked, strict=True)]


def _received(data: bytes) -> str:
    """What a client sent as an image, in words: its size and how it begins (printable
    characters as they are, as most mistakes are text: JSON, HTML, a file path, an error
    page; else the first bytes in hex)."""
    head = data[:16]
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        begins = repr(head.decode("ascii"))
    else:
        begins = head.hex(" ")
    return f"{len(data):,} bytes beginning {begins}{'...' if len(data) > len(head) else ''}"


def _boundary(content_type: str) -> bytes:
    """The boundary a multipart Content-Type names (b"" when it names none)."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            return value.strip().strip('"').encode("latin-1", "replace")
    return b""
