"""Calibration of class probabilities: reliability bins and the expected calibration error (ECE).

Pure functions of arrays like the rest of :mod:`bregnet.metrics`; the reliability diagram that
draws them is :func:`bregnet.analysis.plots.plot_reliability`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["expected_calibration_error", "reliability_bins"]


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins over (0, 1]: bin ``b`` holds confidences in
    ``(b / n_bins, (b + 1) / n_bins]`` (a confidence of exactly 0 goes to bin 0).

    Confidence is the top probability and the prediction its arg-max; samples with a negative
    label (absent) are ignored. Returns per-bin ``count``, ``accuracy``, ``confidence`` (NaN for
    empty bins) and the bin ``edges``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, K) aligned with labels (N,), got {probs.shape} and {labels.shape}")
    if int(n_bins) < 1:
        raise ValueError("n_bins must be at least 1")
    n_bins = int(n_bins)
    keep = labels >= 0
    probs, labels = probs[keep], labels[keep].astype(np.int64)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64) if len(probs) else np.zeros(0)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return {"count": count, "accuracy": acc, "confidence": mean_conf,
            "edges": np.linspace(0.0, 1.0, n_bins + 1)}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE = sum over bins of (n_b / N) * |accuracy_b - mean confidence_b| (see
    :func:`reliability_bins` for the binning). NaN when there are no labelled samples."""
    b = reliability_bins(probs, labels, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    nz = b["count"] > 0
    gap = np.abs(b["accuracy"][nz] - b["confidence"][nz])
    return float(np.sum(b["count"][nz] / n * gap))
