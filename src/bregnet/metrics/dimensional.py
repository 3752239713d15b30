"""Dimensional (valence / arousal) metrics as pure functions of numpy arrays.

Each scalar function takes a 1-D ground truth and a 1-D prediction of equal length. A NaN in the
ground truth marks a missing annotation: that pair is dropped (per dimension, so a sample may count
for valence and not for arousal). Predictions must be finite: a NaN prediction means a broken model,
and a metric silently computed around it would be wrong, so it raises :class:`ValueError`.

Definitions (population moments, i.e. divided by n):

* ``rmse = sqrt(mean((pred - true)^2))``;
* ``pearson`` (CORR) ``= cov(true, pred) / (std(true) std(pred))``; NaN when either is constant
  (the correlation is 0/0 there);
* ``sagr = mean(sign(true) == sign(pred))`` with numpy's sign (0 maps to 0), the AffectNet paper's
  Kronecker-delta form: an exact 0 agrees only with an exact 0, so a prediction of 0.01 for a true
  valence of 0.0 counts as a disagreement;
* ``ccc`` (Lin's concordance) ``= 2 cov / (var(true) + var(pred) + (mean(true) - mean(pred))^2)``;
  a constant prediction gives a defined 0 unless the truth is the same constant (0/0: NaN).

Undefined values (empty input after masking, a constant series for CORR, 0/0 for CCC) are NaN with a
:class:`~bregnet.metrics.categorical.MetricWarning`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from .categorical import MetricWarning, _emit

__all__ = ["MetricWarning", "ccc", "dimensional_metrics", "pearson", "rmse", "sagr"]

DIMENSION_SUFFIXES: tuple[str, ...] = ("rmse", "corr", "sagr", "ccc")
"""Per-dimension keys of :func:`dimensional_metrics`: ``f"{name}_{suffix}"``."""


def _pair(true: npt.ArrayLike, pred: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1-D (truth, prediction) pair and drop the pairs whose truth is NaN."""
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"true and pred must be 1-D, got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"true and pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    keep = ~np.isnan(t)
    t, p = t[keep], p[keep]
    if not np.all(np.isfinite(p)):
        raise ValueError("pred contains NaN or infinite values where the ground truth is present")
    if not np.all(np.isfinite(t)):
        raise ValueError("true contains infinite values")
    return t, p


def _rmse(t: np.ndarray, p: np.ndarray, notes: list[str]) -> float:
    if t.size == 0:
        notes.append("rmse undefined on empty input")
        return float("nan")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def _pearson(t: np.ndarray, p: np.ndarray, notes: list[str]) -> float:
    if t.size == 0:
        notes.append("correlation undefined on empty input")
        return float("nan")
    dt = t - t.mean()
    dp = p - p.mean()
    den = np.sqrt(np.sum(dt * dt) * np.sum(dp * dp))
    if den == 0:
        notes.append("correlation undefined: truth or prediction is constant")
        return float("nan")
    return float(np.clip(np.sum(dt * dp) / den, -1.0, 1.0))


def _sagr(t: np.ndarray, p: np.ndarray, notes: list[str]) -> float:
    if t.size == 0:
        notes.append("sagr undefined on empty input")
        return float("nan")
    return float(np.mean(np.sign(t) == np.sign(p)))


def _ccc(t: np.ndarray, p: np.ndarray, notes: list[str]) -> float:
    if t.size == 0:
        notes.append("ccc undefined on empty input")
        return float("nan")
    mt, mp = t.mean(), p.mean()
    cov = np.mean((t - mt) * (p - mp))
    den = np.var(t) + np.var(p) + (mt - mp) ** 2
    if den == 0:
        notes.append("ccc undefined: truth and prediction are the same constant")
        return float("nan")
    return float(2.0 * cov / den)


def _public(fn: Callable[[np.ndarray, np.ndarray, list[str]], float], true: npt.ArrayLike,
            pred: npt.ArrayLike) -> float:
    notes: list[str] = []
    value = fn(*_pair(true, pred), notes)
    _emit(notes, stacklevel=4)
    return value


def rmse(true: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Root mean squared error over the pairs whose truth is not NaN."""
    return _public(_rmse, true, pred)


def pearson(true: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Pearson correlation (CORR); NaN with a warning when either series is constant."""
    return _public(_pearson, true, pred)


def sagr(true: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Sign agreement ``mean(sign(true) == sign(pred))``; sign(0) = 0 agrees only with 0."""
    return _public(_sagr, true, pred)


def ccc(true: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Lin's concordance correlation coefficient (population moments), in [-1, 1]."""
    return _public(_ccc, true, pred)


def dimensional_metrics(
    true: npt.ArrayLike,
    pred: npt.ArrayLike,
    names: Sequence[str] = ("valence", "arousal"),
) -> dict[str, float]:
    """RMSE, CORR, SAGR and CCC per dimension in one flat dict with stable key names.

    Parameters
    ----------
    true:
        (N, D) ground truth, NaN where an annotation is missing (masked per dimension).
    pred:
        (N, D) finite predictions.
    names:
        D dimension names (default valence, arousal).

    Returns
    -------
    dict
        ``<name>_rmse, <name>_corr, <name>_sagr, <name>_ccc`` and ``n_<name>`` (int, pairs used) for
        each dimension, then ``va_rmse_mean`` and ``va_ccc_mean``: the mean over dimensions of the
        RMSE and the CCC, skipping undefined (NaN) dimensions; NaN when none is defined.
    """
    names = [str(n) for n in names]
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    d = len(names)
    if t.ndim != 2 or t.shape[1] != d:
        raise ValueError(f"true must have shape (N, {d}) for dimensions {names}, got {t.shape}")
    if p.shape != t.shape:
        raise ValueError(f"pred must have the shape of true {t.shape}, got {p.shape}")
    if len(set(names)) != d:
        raise ValueError("dimension names must be unique")
    notes: list[str] = []
    out: dict[str, float] = {}
    rmses, cccs = [], []
    for j, name in enumerate(names):
        tj, pj = _pair(t[:, j], p[:, j])
        if tj.size == 0:
            notes.append(f"no {name} annotation: its metrics are NaN")
        local: list[str] = []
        out[f"{name}_rmse"] = _rmse(tj, pj, local)
        out[f"{name}_corr"] = _pearson(tj, pj, local)
        out[f"{name}_sagr"] = _sagr(tj, pj, local)
        out[f"{name}_ccc"] = _ccc(tj, pj, local)
        if tj.size:
            notes.extend(f"{name}: {msg}" for msg in local)
        rmses.append(out[f"{name}_rmse"])
        cccs.append(out[f"{name}_ccc"])
    for name in names:
        out[f"n_{name}"] = int(np.sum(~np.isnan(t[:, names.index(name)])))
    out["va_rmse_mean"] = _nanmean(rmses)
    out["va_ccc_mean"] = _nanmean(cccs)
    _emit(notes)
    return out


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")
