"""Stable face identities across video frames, and temporal smoothing of the outputs.

:class:`IoUTracker` matches each frame's boxes to the live tracks greedily by intersection over
union (highest IoU first, at least ``iou_threshold``); unmatched boxes start new tracks with the next
integer ID (0, 1, 2, ...), and a track not seen for more than ``max_age`` processed frames ends.
IDs are never reused within a stream.

:class:`Smoother` keeps an exponential moving average per track:
``s_t = alpha * s_{t-1} + (1 - alpha) * x_t`` for the class probabilities and valence/arousal
(``alpha = 0`` turns smoothing off). A new track starts from its first observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UsageError

__all__ = ["IoUTracker", "Smoother", "iou_matrix"]


def iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """IoU between every box in ``a`` and every box in ``b`` (boxes as ``x, y, w, h``)."""
    A = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    B = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = A[:, 0:1], A[:, 1:2], A[:, 0:1] + A[:, 2:3], A[:, 1:2] + A[:, 3:4]
    bx0, by0, bx1, by1 = B[:, 0], B[:, 1], B[:, 0] + B[:, 2], B[:, 1] + B[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = (A[:, 2:3] * A[:, 3:4]) + (B[:, 2] * B[:, 3]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class _Track:
    track_id: int
    box: tuple[float, float, float, float]
    last_seen: int
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)   # centre shift per step

    def predicted(self, step: int) -> tuple[float, float, float, float]:
        x, y, w, h = self.box
        k = step - self.last_seen
        return (x + self.velocity[0] * k, y + self.velocity[1] * k, w, h)

    def update(self, box: tuple[float, float, float, float], step: int) -> None:
        k = max(1, step - self.last_seen)
        (x0, y0, w0, h0), (x1, y1, w1, h1) = self.box, box
        vx = ((x1 + w1 / 2) - (x0 + w0 / 2)) / k
        vy = ((y1 + h1 / 2) - (y0 + h0 / 2)) / k
        # light smoothing of the velocity; the first update takes it as measured
        a = 0.5 if self.hits > 1 else 0.0
        self.velocity = (a * self.velocity[0] + (1 - a) * vx, a * self.velocity[1] + (1 - a) * vy)
        self.box, self.last_seen = box, step
        self.hits += 1


def _distance_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre distance over the mean side, and the larger/smaller size ratio, for all pairs."""
    ca = a[:, None, :2] + a[:, None, 2:] / 2
    cb = b[None, :, :2] + b[None, :, 2:] / 2
    side_a = np.sqrt(np.maximum(a[:, 2] * a[:, 3], 1e-12))[:, None]
    side_b = np.sqrt(np.maximum(b[:, 2] * b[:, 3], 1e-12))[None, :]
    dist = np.linalg.norm(ca - cb, axis=2) / ((side_a + side_b) / 2)
    ratio = np.maximum(side_a, side_b) / np.minimum(side_a, side_b)
    return dist, ratio


class IoUTracker:
    """Greedy IoU tracker: ``update(boxes) -> ids`` (one ID per box, in the order given)."""

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 10,
                 max_distance: float = 0.75) -> None:
        self.iou_threshold = float(iou_threshold)
        self.max_distance = float(max_distance)
        self.max_age = int(max_age)
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._step = 0

    @property
    def active_ids(self) -> list[int]:
        return [t.track_id for t in self._tracks]

    def reset(self) -> None:
        self._tracks.clear()
        self._next_id = 0
        self._step = 0

    def update(self, boxes: Sequence[Sequence[float]]) -> list[int]:
        """Assign track IDs to this frame's ``boxes`` and advance one step."""
        self._step += 1
        boxes = [tuple(float(v) for v in b) for b in boxes]
        ids: list[int | None] = [None] * len(boxes)
        if boxes and self._tracks:
            pred = np.asarray([t.predicted(self._step) for t in self._tracks], np.float64)
            bx = np.asarray(boxes, np.float64)
            iou = iou_matrix(pred, bx)
            dist, ratio = _distance_matrix(pred, bx)
            used_t: set[int] = set()
            # pass 1: by IoU; pass 2: leftovers by centre distance
            for score, ok in ((iou, iou >= self.iou_threshold),
                              (-dist, (dist <= self.max_distance) & (ratio <= 2.0))):
                pairs = np.argwhere(ok)
                if not len(pairs):
                    continue
                order = np.argsort(-score[pairs[:, 0], pairs[:, 1]], kind="stable")
                for k in order:
                    ti, bi = (int(v) for v in pairs[k])
                    if ti in used_t or ids[bi] is not None:
                        continue
                    used_t.add(ti)
                    self._tracks[ti].update(boxes[bi], self._step)
                    ids[bi] = self._tracks[ti].track_id
        for bi, box in enumerate(boxes):
            if ids[bi] is None:
                track = _Track(self._next_id, box, self._step)
                self._next_id += 1
                self._tracks.append(track)
                ids[bi] = track.track_id
        self._tracks = [t for t in self._tracks if self._step - t.last_seen <= self.max_age]
        return [int(i) for i in ids]  # type: ignore[arg-type]


class Smoother:
    """Per-track exponential moving average of probabilities and valence/arousal."""

    def __init__(self, alpha: float = 0.0) -> None:
        if not 0.0 <= alpha < 1.0:  # also refuses NaN
            raise UsageError(f"smoothing factor must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self._state: dict[int, dict[str, np.ndarray]] = {}

    def __call__(self, track_id: int, **values: np.ndarray | None) -> dict[str, np.ndarray | None]:
        """Smoothed copies of ``values`` (e.g. ``probs=..., va=...``) for ``track_id``."""
        if self.alpha == 0.0:
            return dict(values)
        state = self._state.setdefault(int(track_id), {})
        out: dict[str, np.ndarray | None] = {}
        for key, val in values.items():
            if val is None:
                out[key] = None
                continue
            val = np.asarray(val, dtype=np.float64)
            prev = state.get(key)
            new = val if prev is None else self.alpha * prev + (1.0 - self.alpha) * val
            state[key] = new
            out[key] = new.astype(np.float32)
        return out

    def forget(self, keep_ids: Sequence[int]) -> None:
        """Drop the state of tracks not in ``keep_ids`` (ended tracks)."""
        keep = set(int(i) for i in keep_ids)
        for tid in list(self._state):
            if tid not in keep:
                del self._state[tid]
