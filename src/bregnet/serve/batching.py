"""Dynamic batching: faces from concurrent requests go through the model together.

Requests put their face crops on a bounded queue (:meth:`Batcher.submit`; a full queue raises
:class:`QueueFull` at once, which the service answers with 503 + ``Retry-After``). One dedicated
worker thread takes the oldest job, then keeps adding jobs until the batch holds ``max_batch``
faces or the oldest job has waited ``max_wait_s``, and calls ``predict_crops`` once for all of
them; each job gets its own rows back. The model therefore never runs in the event loop's thread,
and requests arriving together share one forward pass. A job cancelled while it waits (its
request timed out or its client left) is skipped.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["Batcher", "QueueFull"]

log = logging.getLogger("bregnet.serve")

Result = tuple[np.ndarray | None, np.ndarray | None]


class QueueFull(Exception):
    """The batching queue holds ``max_queue`` jobs already."""


@dataclass
class _Job:
    crops: Sequence[np.ndarray]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    queued_at: float = field(default_factory=time.monotonic)


_STOP = object()


class Batcher:
    """Runs ``predict(crops) -> (probs or None, va or None)`` on merged crops in one worker thread.

    ``max_batch``: most faces per model call (a single job with more faces is run alone; the
    predictor splits it by its own ``batch_size``). ``max_wait_s``: how long the oldest job may wait
    for company. ``max_queue``: jobs waiting at most. ``on_batch(faces, seconds)`` is called after
    each model call (metrics); ``setup()`` runs once in the worker thread before the first job
    (thread settings, a warm-up call); ``on_idle()`` after a batch that left the queue empty.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], Result],
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
        setup: Callable[[], None] | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_s >= 0")
        self.predict = predict
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.max_queue = int(max_queue)
        self.on_batch = on_batch
        self.on_idle = on_idle
        self._setup = setup
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_queue)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._setup_error: BaseException | None = None
        self.batches = 0
        self.faces = 0

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float | None = 120.0) -> None:
        """Start the worker thread and wait until its ``setup`` has run (re-raising its error)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="bregnet-batcher", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self._setup_error is not None:
            raise self._setup_error

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the jobs already queued, then end the worker thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Jobs waiting (not counting the batch being run)."""
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        return self._queue.full()

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, crops: Sequence[np.ndarray]) -> concurrent.futures.Future:
        """Queue one request's crops; a Future of ``(probs, va)`` rows for exactly these crops.
        Raises QueueFull at once when the queue has no room."""
        job = _Job(crops)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.max_queue} requests are waiting for the model") from None
        return job.future

    def run_blocking(self, crops: Sequence[np.ndarray], timeout: float | None = None) -> Result:
        """Submit from a worker thread and wait (for a video stream: waits for room in the queue
        instead of failing, up to ``timeout`` seconds)."""
        job = _Job(crops)
        try:
            self._queue.put(job, timeout=timeout)
        except queue.Full:
            raise QueueFull(f"{self.max_queue} requests are waiting for the model") from None
        return job.future.result(timeout)

    # -- the worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._setup is not None:
                self._setup()
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._setup_error = exc
            self._ready.set()
            return
        self._ready.set()
        carry: Any = None
        while True:
            job = carry if carry is not None else self._queue.get()
            carry = None
            if job is _STOP:
                break
            batch: list[_Job] = []
            n = 0
            if job.future.set_running_or_notify_cancel():
                batch.append(job)
                n = len(job.crops)
            deadline = job.queued_at + self.max_wait_s
            stop = False
            while n < self.max_batch:
                wait = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                if n and n + len(nxt.crops) > self.max_batch:
                    carry = nxt          # runs first in the next batch
                    break
                if nxt.future.set_running_or_notify_cancel():
                    batch.append(nxt)
                    n += len(nxt.crops)
            if batch:
                self._run_batch(batch, n)
            if self.on_idle is not None and carry is None and self._queue.empty():
                try:
                    self.on_idle()
                except Exception:  # noqa: BLE001 - housekeeping must not break serving
                    log.exception("idle callback failed")
            if stop:
                # everything queued before the stop has been taken; run the one held over
                if carry is not None and carry.future.set_running_or_notify_cancel():
                    self._run_batch([carry], len(carry.crops))
                break
        # jobs that raced with stop() are refused rather than left waiting forever
        while True:
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                return
            if late is not _STOP and late.future.set_running_or_notify_cancel():
                late.future.set_exception(QueueFull("the service is shutting down"))

    def _run_batch(self, batch: list[_Job], n: int) -> None:
        t0 = time.perf_counter()
        try:
            crops = np.stack([c for job in batch for c in job.crops])
            probs, va = self.predict(crops)
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
            log.exception("model call failed for %d face(s)", n)
            for job in batch:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - t0
        self.batches += 1
        self.faces += n
        k = 0
        for job in batch:
            m = len(job.crops)
            job.future.set_result((None if probs is None else probs[k:k + m],
                                   None if va is None else va[k:k + m]))
            k += m
        if self.on_batch is not None:
            try:
                self.on_batch(n, seconds)
            except Exception:  # noqa: BLE001 - metrics must not break serving
                log.exception("batch metrics callback failed")
