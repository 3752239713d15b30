"""Metrics as pure functions of numpy arrays (categorical and valence/arousal).

Use :func:`all_metrics` (or :func:`categorical_metrics` / :func:`dimensional_metrics`) for one flat
dict with stable key names, or call a single metric from :data:`METRICS` or by its function name::

    from bregnet.metrics import METRICS, all_metrics
    METRICS["kappa"](y_true, y_pred)           # labels vs predicted labels
    METRICS["auc_roc_macro"](y_true, probs)    # labels vs (N, K) class probabilities
    METRICS["ccc"](valence_true, valence_pred) # 1-D regression targets vs predictions
    all_metrics(y_true, probs, va_true, va_pred, class_names=names)

Undefined values are NaN with a :class:`MetricWarning`; malformed input raises ``ValueError``.
The conventions are spelled out in :mod:`bregnet.metrics.categorical` and
:mod:`bregnet.metrics.dimensional`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy.typing as npt

from .categorical import (
    MetricWarning,
    accuracy,
    average_precision_binary,
    average_precision_ovr,
    average_precision_per_class,
    balanced_accuracy,
    categorical_metrics,
    cohen_kappa,
    confusion_matrix,
    f1_macro,
    f1_weighted,
    krippendorff_alpha_nominal,
    matthews_corrcoef,
    precision_macro,
    precision_recall_f1,
    recall_macro,
    roc_auc_binary,
    roc_auc_ovr,
    roc_auc_per_class,
)
from .calibration import expected_calibration_error, reliability_bins
from .dimensional import ccc, dimensional_metrics, pearson, rmse, sagr

__all__ = [
    "CATEGORICAL_LABEL_METRICS",
    "CATEGORICAL_SCORE_METRICS",
    "DIMENSIONAL_METRICS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "MetricWarning",
    "accuracy",
    "all_metrics",
    "average_precision_binary",
    "average_precision_ovr",
    "average_precision_per_class",
    "balanced_accuracy",
    "categorical_metrics",
    "ccc",
    "cohen_kappa",
    "confusion_matrix",
    "dimensional_metrics",
    "expected_calibration_error",
    "f1_macro",
    "f1_weighted",
    "higher_is_better",
    "krippendorff_alpha_nominal",
    "matthews_corrcoef",
    "pearson",
    "precision_macro",
    "precision_recall_f1",
    "recall_macro",
    "reliability_bins",
    "rmse",
    "roc_auc_binary",
    "roc_auc_ovr",
    "roc_auc_per_class",
    "sagr",
    "selection_metrics",
]

CATEGORICAL_LABEL_METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "f1_macro": f1_macro,
    "f1_weighted": f1_weighted,
    "precision_macro": precision_macro,
    "recall_macro": recall_macro,
    "kappa": cohen_kappa,
    "alpha": krippendorff_alpha_nominal,
    "mcc": matthews_corrcoef,
}
"""Scalar metrics called as ``fn(y_true, y_pred)`` on (N,) integer labels (y_true -1: ignored)."""

CATEGORICAL_SCORE_METRICS: dict[str, Callable[..., float]] = {
    "auc_roc_macro": roc_auc_ovr,
    "auc_pr_macro": average_precision_ovr,
}
"""Scalar metrics called as ``fn(y_true, probs)`` with (N,) labels and (N, K) probabilities."""

DIMENSIONAL_METRICS: dict[str, Callable[..., float]] = {
    "rmse": rmse,
    "corr": pearson,
    "sagr": sagr,
    "ccc": ccc,
}
"""Scalar metrics called as ``fn(true, pred)`` on one dimension (N,); NaN in true is missing."""

METRICS: dict[str, Callable[..., float]] = {
    **CATEGORICAL_LABEL_METRICS,
    **CATEGORICAL_SCORE_METRICS,
    **DIMENSIONAL_METRICS,
}
"""Every scalar metric by the name it has in the :func:`all_metrics` dict (dimensional ones without
their ``valence_`` / ``arousal_`` prefix). See the three tables above for each one's inputs."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "balanced_accuracy": True,
    "f1_macro": True,
    "f1_weighted": True,
    "precision_macro": True,
    "recall_macro": True,
    "kappa": True,
    "alpha": True,
    "mcc": True,
    "auc_roc_macro": True,
    "auc_pr_macro": True,
    "rmse": False,
    "corr": True,
    "sagr": True,
    "ccc": True,
}
"""The direction of every metric of :data:`METRICS` (same names): True when a larger value is a
better model. Model selection and early stopping read it through :func:`selection_metrics`."""

LOSS_KEY = "loss"
"""The training loss on a split, which the trainer adds to the metrics (lower is better)."""

_DIMENSIONS = ("valence", "arousal")
_DIMENSIONAL_MEANS = {"va_rmse_mean": "rmse", "va_ccc_mean": "ccc"}


def selection_metrics(task: str) -> dict[str, bool]:
    """The scalar keys of :func:`all_metrics` (plus ``loss``) a model of ``task`` can be selected
    on, each mapped to its direction (True: higher is better).

    ``task`` is ``categorical``, ``dimensional`` or ``multitask`` (both sets).
    """
    if task not in ("categorical", "dimensional", "multitask"):
        raise ValueError(f"unknown task {task!r}")
    out: dict[str, bool] = {}
    if task in ("categorical", "multitask"):
        for name in (*CATEGORICAL_LABEL_METRICS, *CATEGORICAL_SCORE_METRICS):
            out[name] = HIGHER_IS_BETTER[name]
    if task in ("dimensional", "multitask"):
        for dim in _DIMENSIONS:
            for name in DIMENSIONAL_METRICS:
                out[f"{dim}_{name}"] = HIGHER_IS_BETTER[name]
        for key, base in _DIMENSIONAL_MEANS.items():
            out[key] = HIGHER_IS_BETTER[base]
    out[LOSS_KEY] = False
    return out


def higher_is_better(key: str, task: str = "multitask") -> bool:
    """Whether a larger value of metric ``key`` (a key of :func:`selection_metrics`) is better.

    Raises ``KeyError`` for a key that is not a selectable metric of ``task``.
    """
    table = selection_metrics(task)
    if key not in table:
        raise KeyError(f"{key!r} is not a metric of a {task} model; choose one of {', '.join(table)}")
    return table[key]


def all_metrics(
    y_true: npt.ArrayLike | None = None,
    probs: npt.ArrayLike | None = None,
    va_true: npt.ArrayLike | None = None,
    va_pred: npt.ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Categorical and/or dimensional metrics merged into one flat dict.

    Pass ``y_true`` (N,) and ``probs`` (N, K) for :func:`categorical_metrics`, ``va_true`` and
    ``va_pred`` (N, 2) for :func:`dimensional_metrics`, or both pairs for a multi-task model. The
    key sets are disjoint, so nothing is overwritten. Passing one half of a pair is a ``ValueError``.
    """
    if (y_true is None) != (probs is None):
        raise ValueError("pass both y_true and probs for categorical metrics, or neither")
    if (va_true is None) != (va_pred is None):
        raise ValueError("pass both va_true and va_pred for dimensional metrics, or neither")
    out: dict[str, float] = {}
    if y_true is not None and probs is not None:
        out.update(categorical_metrics(y_true, probs, class_names=class_names))
    if va_true is not None and va_pred is not None:
        out.update(dimensional_metrics(va_true, va_pred))
    return out
