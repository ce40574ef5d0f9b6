"""The model's one thread: requests are collected into batches and decoded together, scoring jobs in between.

Every forward pass of the served model runs on `Engine`'s thread (PyTorch modules are not for concurrent use, and a
CPU has no spare cores to give). Requests arrive from the event loop through a bounded queue (`Engine.submit`; a
full queue raises `Busy`, answered 503 with Retry-After). When the thread takes a request it waits up to
``window_ms`` for more, up to ``max_batch``, and decodes them as one batch (`personas.monitoring.monitored_decode`:
left-padded prompts, a key-value cache, the monitor's site read in the same forward). A batch runs until its last
answer ends; answers that end earlier are delivered at once (``on_done``), and a request whose client left is
stopped at the next token (its ``cancelled`` flag). Requests that waited while a batch ran form the next batch.
This is static batching: a request never joins a batch already running, which keeps one key-value cache per batch
and its positions exact; the price is that a short request may wait for a long batch to end.

Texts to score (``POST /v1/persona/score``) go through the same thread between batches (`Engine.run`), so they
are read by the same weights without racing the decoder. A batch that fails (an exception in the model) fails its
requests with the error, logged once, and the thread goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from personas.monitoring import GenerationRequest, monitored_decode
from personas.steering import decode_batch_limit

logger = logging.getLogger(__name__)

__all__ = ["Busy", "Engine", "Job"]


class Busy(Exception):
    """The queue is full: the request is refused (503 with Retry-After)."""


@dataclass
class Job:
    """A generation request and where its failure goes (``on_error``); ``cancelled`` stops it."""

    request: GenerationRequest
    on_error: Callable[[BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)


class Engine:
    """Batches generation requests on one thread (see the module docstring).

    ``monitor`` (a `personas.monitoring.Monitor`, or None to serve without one) brings the scorer and threshold;
    ``metrics`` (a `personas.serve.metrics.Metrics`) gets batch sizes and the queue depth.
    """

    def __init__(self, model: Any, monitor: Any = None, *, max_batch: int = 8, window_ms: float = 50.0,
                 max_queue: int = 64, metrics: Any = None) -> None:
        self.model, self.monitor, self.metrics = model, monitor, metrics
        hooks = [monitor.scorer.hook] if monitor is not None else []
        limit = decode_batch_limit(model, hooks)
        self.max_batch = max_batch if limit is None else min(max_batch, limit)
        self.window = window_ms / 1000.0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="personas-engine", daemon=True)
        self._working = threading.Event()  # set while a batch or a scoring job runs
        self.batches = 0

    def start(self) -> Engine:
        """Start the thread (idempotent)."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the batch in progress; waiting requests fail with an error."""
        self._stop.set()
        self._thread.join(timeout)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Job):
                item.on_error(RuntimeError("the server is shutting down"))
            elif isinstance(item, tuple):
                item[1].set_exception(RuntimeError("the server is shutting down"))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing waits and nothing runs; True when that happened within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._queue.qsize() or self._working.is_set():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    @property
    def depth(self) -> int:
        """Requests waiting for the model."""
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue a generation job; `Busy` when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy() from None
        self._gauge()

    def run(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the model's thread between batches; its result (or exception) in the returned future."""
        future: Future = Future()
        try:
            self._queue.put_nowait((fn, future))
        except queue.Full:
            raise Busy() from None
        self._gauge()
        return future

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._queue.qsize())

    def _loop(self) -> None:
        held: Any = None
        while not self._stop.is_set():
            if held is not None:
                item, held = held, None
            else:
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
            self._working.set()
            try:
                held = self._serve(item)
            finally:
                self._working.clear()

    def _serve(self, item: Any) -> Any:
        """Run one scoring job, or one batch started by ``item``; returns a scoring job met while collecting."""
        if isinstance(item, tuple):
            self._call(*item)
            self._gauge()
            return None
        held = None
        batch = [item]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(nxt, tuple):  # a scoring job waits for the next turn
                held = nxt
                break
            batch.append(nxt)
        self._gauge()
        self._decode([job for job in batch if not job.cancelled.is_set()], batch)
        return held

    def _call(self, fn: Callable[[], Any], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the caller, who answers with an error
            future.set_exception(exc)

    def _decode(self, jobs: list[Job], batch: list[Job]) -> None:
        for job in batch:
            if job.cancelled.is_set():
                job.on_error(ConnectionAbortedError("the client left before its request started"))
        if not jobs:
            return
        self.batches += 1
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(jobs))
        monitor = self.monitor
        try:
            monitored_decode(self.model, [job.request for job in jobs],
                             scorer=monitor.scorer if monitor is not None else None,
                             threshold=monitor.threshold if monitor is not None else 0.0)
        except Exception as exc:  # the model failed: these requests fail, the server goes on
            logger.exception("a batch of %d requests failed", len(jobs))
            for job in jobs:
                job.on_error(exc)
