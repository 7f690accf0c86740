"""Dynamic micro-batching: requests that arrive together run through the model together.

One worker thread owns the model. Each request puts its images (an ``(n, C, H, W)`` tensor) on a
queue and awaits a future. The worker takes the first waiting request, then keeps collecting
until the batch holds ``max_batch`` images or ``max_wait_ms`` have passed since it took the
first, runs one forward pass over everything collected and hands each request its own rows.
Under load this turns many small forward passes into a few large ones, which is where a CNN on
a CPU or GPU gets its throughput; an idle server adds at most ``max_wait_ms`` of latency.
``max_batch=1`` runs every image on its own (no waiting), the baseline to compare against.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BatcherClosedError", "MicroBatcher"]

#: Turns a float32 batch ``(N, C, H, W)`` into outputs ``(N, ...)``; runs on the worker thread.
BatchFn = Callable[[Tensor], Tensor]


class BatcherClosedError(RuntimeError):
    """The batcher was closed before (or while) the request was served."""


@dataclass
class _Job:
    inputs: Tensor
    future: Future[Tensor]


_STOP = object()  # queue sentinel: the worker drains what it has, then exits
#: The longest a forward pass may wait for more requests (a minute: far past any use).
MAX_WAIT_MS = 60_000.0


class MicroBatcher:
    """Queue requests and run them through ``fn`` in batches, on one worker thread.

    Args:
        fn: the model call; it receives at most ``max_batch`` rows at a time.
        max_batch: most images per forward pass; 1 disables batching.
        max_wait_ms: how long the worker waits for more requests once it holds one.
        on_batch: called on the worker thread with the size of every forward pass (metrics).

    A request with more images than ``max_batch`` is split across several forward passes.
    The worker thread starts on :meth:`start` or on the first :meth:`submit`.
    """

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int], object] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if not 0 <= max_wait_ms <= MAX_WAIT_MS:  # inf or 1e300 would kill the worker thread
            raise ValueError(f"max_wait_ms must be in [0, {MAX_WAIT_MS:g}], got {max_wait_ms}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0 if max_batch > 1 else 0.0
        self.on_batch = on_batch
        #: Forward passes run so far, and the images they held.
        self.calls = 0
        self.images = 0
        self._queue: queue.Queue[_Job | object] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: the batcher takes no more requests."""
        return self._closed

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._lock:
            self._start_locked()

    def close(self, timeout: float | None = 10.0) -> None:
        """Serve what is queued, stop the worker, and refuse further requests."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(_STOP)  # under the lock: every accepted job is queued before it
        if thread is not None:
            thread.join(timeout)
        else:  # never started: nobody will serve what is queued
            self._fail_queued()

    def submit_nowait(self, inputs: Tensor) -> Future[Tensor]:
        """Queue ``inputs`` (``(n, C, H, W)``, n >= 1); the future gets the ``n`` output rows.

        Raises:
            BatcherClosedError: after :meth:`close`.
        """
        if inputs.dim() < 1 or inputs.shape[0] < 1:
            raise ValueError(f"expected a non-empty batch, got shape {tuple(inputs.shape)}")
        job = _Job(inputs, Future())
        with self._lock:
            self._start_locked()
            self._queue.put(job)
        return job.future

    async def submit(self, inputs: Tensor) -> Tensor:
        """Queue ``inputs`` and wait, without blocking the event loop, for their outputs."""
        return await asyncio.wrap_future(self.submit_nowait(inputs))

    def __call__(self, inputs: Tensor) -> Tensor:
        """Blocking form of :meth:`submit`, for callers outside an event loop."""
        return self.submit_nowait(inputs).result()

    # --- worker thread ------------------------------------------------------------------------

    def _start_locked(self) -> None:
        if self._closed:
            raise BatcherClosedError("the batcher is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="resnetkit-batcher", daemon=True
            )
            self._thread.start()

    def _work(self) -> None:
        try:
            self._serve()
        except BaseException:  # a bug: every waiting request gets an error, not silence
            with self._lock:
                self._closed = True
            self._fail_queued()
            raise

    def _serve(self) -> None:
        carry: _Job | None = None  # a job that did not fit into the previous batch
        stopping = False
        while True:
            if carry is not None:
                first: _Job | object = carry
                carry = None
            elif stopping:
                self._fail_queued()
                return
            else:
                first = self._queue.get()
            if first is _STOP:
                stopping = True
                continue
            assert isinstance(first, _Job)
            jobs = [first]
            rows = first.inputs.shape[0]
            deadline = time.monotonic() + self.max_wait_s
            while rows < self.max_batch and not stopping:
                remaining = deadline - time.monotonic()
                try:
                    # Past the deadline, still take what is already waiting.
                    if remaining > 0:
                        nxt = self._queue.get(timeout=remaining)
                    else:
                        nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                assert isinstance(nxt, _Job)
                if rows + nxt.inputs.shape[0] > self.max_batch:
                    carry = nxt  # keeps its place: first in the next batch
                    break
                jobs.append(nxt)
                rows += nxt.inputs.shape[0]
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            batch = torch.cat([job.inputs for job in live])
            outputs = torch.cat([self._forward(chunk) for chunk in batch.split(self.max_batch)])
        except Exception as err:  # the requests get the error; the worker keeps serving
            for job in live:
                job.future.set_exception(err)
            return
        start = 0
        for job in live:
            n = job.inputs.shape[0]
            job.future.set_result(outputs[start : start + n])
            start += n

    def _forward(self, chunk: Tensor) -> Tensor:
        out = self.fn(chunk)
        self.calls += 1
        self.images += chunk.shape[0]
        if self.on_batch is not None:
            self.on_batch(chunk.shape[0])
        return out

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job) and job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosedError("the server is shutting down"))
