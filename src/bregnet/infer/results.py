"""Result records of the predictor: one :class:`FaceResult` per face, grouped per image or frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FaceResult", "FrameResult", "prob_column", "record_columns"]


def prob_column(label: str) -> str:
    """Column name for a class probability: ``p_<label>`` with whitespace and commas as ``_``."""
    return "p_" + "".join("_" if (c.isspace() or c in ",;\"'") else c for c in str(label))


def record_columns(labels: list[str], has_va: bool) -> list[str]:
    """Columns of the per-face record (DESIGN.md): ``source, frame, time_s, face_id, x, y, w, h,
    det_score``, then ``label, p_<class>...`` for a categorical model, then ``valence, arousal``
    for a model with the valence/arousal head."""
    cols = ["source", "frame", "time_s", "face_id", "x", "y", "w", "h", "det_score"]
    if labels:
        cols += ["label"] + [prob_column(lab) for lab in labels]
    if has_va:
        cols += ["valence", "arousal"]
    return cols


@dataclass
class FaceResult:
    """One face in one image or frame.

    ``box`` is ``(x, y, w, h)`` in pixels of the full image; ``probs`` the softmax over the
    checkpoint's labels (None for a dimensional-only model); ``va`` is ``(valence, arousal)`` in
    [-1, 1] (None without that head). With smoothing on, ``probs``/``va``/``label`` are smoothed.
    """

    source: str
    frame: int
    time_s: float
    face_id: int
    box: tuple[float, float, float, float]
    det_score: float
    label: str | None = None
    probs: np.ndarray | None = None
    va: np.ndarray | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)

    @property
    def valence(self) -> float | None:
        return None if self.va is None else float(self.va[0])

    @property
    def arousal(self) -> float | None:
        return None if self.va is None else float(self.va[1])

    @property
    def confidence(self) -> float | None:
        """Probability of the predicted label."""
        return None if self.probs is None else float(np.max(self.probs))

    def record(self, labels: list[str], has_va: bool) -> dict[str, Any]:
        """The per-face record as an ordered dict of plain Python values."""
        x, y, w, h = self.box
        rec: dict[str, Any] = {
            "source": self.source,
            "frame": int(self.frame),
            "time_s": round(float(self.time_s), 4),
            "face_id": int(self.face_id),
            "x": int(round(x)), "y": int(round(y)), "w": int(round(w)), "h": int(round(h)),
            "det_score": round(float(self.det_score), 4),
        }
        if labels:
            rec["label"] = self.label
            probs = self.probs if self.probs is not None else [None] * len(labels)
            for lab, p in zip(labels, probs):
                rec[prob_column(lab)] = None if p is None else round(float(p), 6)
        if has_va:
            rec["valence"] = None if self.va is None else round(float(self.va[0]), 6)
            rec["arousal"] = None if self.va is None else round(float(self.va[1]), 6)
        return rec


@dataclass
class FrameResult:
    """All faces of one image or video frame. ``error`` is set (and ``faces`` empty) for an input
    that could not be read; ``image`` holds the RGB frame only when the caller asked to keep it."""

    source: str
    frame: int
    time_s: float
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    def empty_record(self, labels: list[str], has_va: bool) -> dict[str, Any]:
        """The record of a frame without faces: face fields empty (``None``)."""
        cols = record_columns(labels, has_va)
        rec: dict[str, Any] = {c: None for c in cols}
        rec.update(source=self.source, frame=int(self.frame), time_s=round(float(self.time_s), 4))
        return rec

    def records(self, labels: list[str], has_va: bool, keep_empty: bool = False
                ) -> list[dict[str, Any]]:
        if self.error is not None:
            return []
        if not self.faces:
            return [self.empty_record(labels, has_va)] if keep_empty else []
        return [f.record(labels, has_va) for f in self.faces]
