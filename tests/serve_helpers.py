"""Shared helpers for the service tests: a tiny predictor, encoded photos, a server in a thread."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from infer_helpers import astronaut, make_checkpoint


def encode(rgb: np.ndarray, ext: str = ".png") -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return buf.tobytes()


def cameraman() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(np.repeat(data.camera()[:, :, None], 3, axis=2))


def group_photo() -> np.ndarray:
    """Four faces of two people (the astronaut and the cameraman, each also mirrored), 1024x1024."""
    a, c = astronaut(), cameraman()
    top = np.hstack([a, c])
    bottom = np.hstack([c[:, ::-1], a[:, ::-1]])
    return np.ascontiguousarray(np.vstack([top, bottom]))


def tiny_predictor(tmp: Path, **kwargs):
    from bregnet import Predictor

    ckpt = make_checkpoint(tmp / "tiny.safetensors")
    return Predictor.from_checkpoint(ckpt, batch_size=32, **kwargs)


class SlowBackend:
    """A backend that sleeps before every model call but the first (the server's warm-up), to fill
    the queue or miss a deadline."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.calls = 0

    def run(self, x):
        self.calls += 1
        if self.calls > 1:
            time.sleep(self.delay_s)
        return self.inner.run(x)


def slow_predictor(base, delay_s: float):
    from bregnet import Predictor

    return Predictor(SlowBackend(base.backend, delay_s), base.meta, batch_size=1)


def metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples named exactly ``name`` (any labels)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
