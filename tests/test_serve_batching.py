"""The dynamic batcher on its own: merging, carrying over, cancellation, a full queue, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bregnet.serve.batching import Batcher, QueueFull
from bregnet.serve.memory import MemoryTrimmer


class FakeModel:
    """Records the batches it is given; row i of the answer is the crop's first pixel value."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.fail = fail

    def __call__(self, crops: np.ndarray):
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append([int(c[0, 0, 0]) for c in crops])
        if self.fail:
            raise RuntimeError("model broke")
        ids = crops[:, 0, 0, 0].astype(np.float32)
        return np.stack([ids, -ids], axis=1), None


def crops(*ids: int) -> list[np.ndarray]:
    return [np.full((4, 4, 3), i, np.uint8) for i in ids]


def test_jobs_are_merged_split_per_request_and_carried_over():
    gate = threading.Event()
    model = FakeModel(gate)
    b = Batcher(model, max_batch=4, max_wait_s=0.0, max_queue=16)
    b.start()
    try:
        first = b.submit(crops(1))              # run at once (no wait); the model waits at the gate
        time.sleep(0.2)
        futures = [b.submit(crops(10, 11)), b.submit(crops(20)), b.submit(crops(30, 31, 32))]
        gate.set()
        for fut, want in zip([first, *futures], [[1], [10, 11], [20], [30, 31, 32]]):
            probs, va = fut.result(10)
            assert va is None
            assert probs[:, 0].tolist() == want           # each request gets its own rows
    finally:
        b.stop()
    assert model.batches[0] == [1]
    # 10, 11 and 20 fit in 4 faces; 30-32 would not: carried over to the next batch
    assert model.batches[1:] == [[10, 11, 20], [30, 31, 32]]
    assert b.faces == 7


def test_full_queue_cancelled_jobs_and_errors():
    gate = threading.Event()
    model = FakeModel(gate)
    b = Batcher(model, max_batch=8, max_wait_s=0.0, max_queue=2)
    b.start()
    try:
        running = b.submit(crops(1))
        time.sleep(0.2)                          # taken by the worker: the queue is empty again
        waiting = b.submit(crops(2))
        cancelled = b.submit(crops(3))
        assert b.full
        with pytest.raises(QueueFull):
            b.submit(crops(4))
        assert cancelled.cancel()
        gate.set()
        assert running.result(10)[0][:, 0].tolist() == [1]
        assert waiting.result(10)[0][:, 0].tolist() == [2]
    finally:
        b.stop()
    assert [3] not in model.batches and all(3 not in batch for batch in model.batches)

    broken = Batcher(FakeModel(fail=True), max_batch=8, max_wait_s=0.0)
    broken.start()
    try:
        with pytest.raises(RuntimeError, match="model broke"):
            broken.submit(crops(5)).result(10)
        assert broken.alive                      # one failure does not end the worker
    finally:
        broken.stop()


def test_waiting_merges_and_idle_hook_runs():
    idle = []
    model = FakeModel()
    b = Batcher(model, max_batch=3, max_wait_s=0.5, on_idle=lambda: idle.append(1))
    b.start()
    try:
        futures = [b.submit(crops(i)) for i in range(3)]
        assert [f.result(10)[0][0, 0] for f in futures] == [0, 1, 2]
        assert model.batches == [[0, 1, 2]]       # the oldest waited for company, up to 3 faces
        t_end = time.monotonic() + 5
        while not idle and time.monotonic() < t_end:
            time.sleep(0.01)
        assert idle                               # the queue ran empty after the batch
    finally:
        b.stop()


def test_stop_finishes_the_queued_jobs():
    gate = threading.Event()
    b = Batcher(FakeModel(gate), max_batch=2, max_wait_s=0.0)
    b.start()
    futures = [b.submit(crops(i)) for i in range(6)]
    stopper = threading.Thread(target=b.stop)
    stopper.start()
    time.sleep(0.1)
    assert not any(f.done() for f in futures)
    gate.set()
    stopper.join(10)
    assert [f.result(0)[0][0, 0] for f in futures] == [0, 1, 2, 3, 4, 5]
    assert not b.alive


def test_setup_error_reaches_start():
    def bad_setup():
        raise RuntimeError("no model")

    with pytest.raises(RuntimeError, match="no model"):
        Batcher(FakeModel(), setup=bad_setup).start()


def test_memory_trimmer_is_rate_limited():
    trim = MemoryTrimmer(interval_s=60.0)
    trim()
    trim()
    assert trim.trims in (0, 1)                  # 0 where glibc's malloc_trim is unavailable
