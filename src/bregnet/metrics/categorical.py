"""Categorical (expression class) metrics as pure functions of numpy arrays.

Every function takes plain arrays and returns plain Python floats (or numpy arrays for the per-class
helpers); nothing here depends on torch or scikit-learn. The definitions match scikit-learn's where
scikit-learn defines them, which the tests check to 1e-9 on random data:

* ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in the ground truth, as
  ``sklearn.metrics.balanced_accuracy_score``);
* per-class precision (PPV), recall and F1, their macro means and the support-weighted F1, as
  ``precision_recall_fscore_support(..., labels=range(K), zero_division=np.nan)``;
* Cohen's kappa (``cohen_kappa_score``), the multiclass Matthews correlation (Gorodkin's R_K, as
  ``matthews_corrcoef``);
* Krippendorff's alpha, nominal, between the ground truth and the prediction taken as two coders
  (as the ``krippendorff`` package);
* one-vs-rest AUC-ROC (rank statistic with average ranks for ties, identical to scikit-learn's
  trapezoidal ROC AUC) and AUC-PR as scikit-learn's step-wise ``average_precision_score``.

Conventions
-----------
* Labels are integers ``0..K-1``; a ground-truth label of ``-1`` marks a sample without a category
  and is dropped before anything is computed.
* Undefined values are ``NaN``, never a made-up 0 or 1, and a :class:`MetricWarning` says why:
  recall and AUCs of a class absent from the ground truth, precision of a class never predicted,
  F1 of a class absent from both, AUCs of a class that is the only one present, kappa when both
  coders use the same single class, alpha when only one class occurs at all, everything on empty
  input. Macro means average the classes whose value is defined; they are ``NaN`` only when no class
  is defined.
* Where scikit-learn returns a defined value for a degenerate case we return the same: MCC is 0 when
  either the truth or the prediction is constant (the correlation of a constant is taken as 0).
* Malformed input (wrong shapes, labels outside ``-1..K-1``, non-finite scores) raises
  :class:`ValueError` with a one-line message.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "MetricWarning",
    "accuracy",
    "average_precision_binary",
    "average_precision_ovr",
    "average_precision_per_class",
    "balanced_accuracy",
    "categorical_metrics",
    "cohen_kappa",
    "confusion_matrix",
    "f1_macro",
    "f1_weighted",
    "krippendorff_alpha_nominal",
    "matthews_corrcoef",
    "precision_macro",
    "precision_recall_f1",
    "recall_macro",
    "roc_auc_binary",
    "roc_auc_ovr",
    "roc_auc_per_class",
]

IGNORE_LABEL = -1
"""Ground-truth label value that marks a sample without a category (dropped by every metric)."""


class MetricWarning(UserWarning):
    """A metric is undefined for the given data (reported as NaN), or the input looks wrong."""


# --------------------------------------------------------------------------------------------------
# input handling


def _emit(notes: list[str], stacklevel: int = 3) -> None:
    """Issue one :class:`MetricWarning` for the collected notes (duplicates removed, order kept).

    The default ``stacklevel`` points at the caller of the public function that calls ``_emit``.
    """
    if notes:
        unique = list(dict.fromkeys(notes))
        warnings.warn("; ".join(unique), MetricWarning, stacklevel=stacklevel)


def _as_labels(a: npt.ArrayLike, what: str) -> np.ndarray:
    """A 1-D int64 array of labels; float input must be integer-valued."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D (N,), got shape {arr.shape}")
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
            raise ValueError(f"{what} must hold integer class indices, got non-integer values")
        return arr.astype(np.int64)
    raise ValueError(f"{what} must hold integer class indices, got dtype {arr.dtype}")


def _infer_num_classes(*label_arrays: np.ndarray) -> int:
    top = max((int(a.max()) for a in label_arrays if a.size), default=-1)
    return top + 1


def _labels_pair(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a (truth, prediction) label pair, drop ignored samples, return (t, p, K)."""
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    keep = t != IGNORE_LABEL
    t, p = t[keep], p[keep]
    k = _infer_num_classes(t, p) if num_classes is None else int(num_classes)
    if k < 0:
        raise ValueError(f"num_classes must be >= 0, got {k}")
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"y_true labels must lie in -1..{k - 1}, got {t.min()}..{t.max()}")
    if p.size and (p.min() < 0 or p.max() >= k):
        raise ValueError(f"y_pred labels must lie in 0..{k - 1}, got {p.min()}..{p.max()}")
    return t, p, k


def _labels_scores(
    y_true: npt.ArrayLike, probs: npt.ArrayLike, notes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels (N,) and class scores (N, K), drop ignored samples."""
    t = _as_labels(y_true, "y_true")
    s = np.asarray(probs, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"probs must be 2-D (N, K) with K >= 1, got shape {s.shape}")
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"y_true and probs differ in length: {t.shape[0]} vs {s.shape[0]}")
    keep = t != IGNORE_LABEL
    t, s = t[keep], s[keep]
    k = s.shape[1]
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"y_true labels must lie in -1..{k - 1}, got {t.min()}..{t.max()}")
    if not np.all(np.isfinite(s)):
        raise ValueError("probs contains NaN or infinite values")
    if notes is not None and s.size:
        if s.min() < 0.0 or s.max() > 1.0 or not np.allclose(s.sum(axis=1), 1.0, atol=1e-3):
            notes.append("probs rows are not probability distributions (logits? apply softmax "
                         "first); AUCs rank by these raw scores")
    return t, s


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise num/den with NaN where den == 0 (no RuntimeWarning)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries, NaN (without a RuntimeWarning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


# --------------------------------------------------------------------------------------------------
# label-based metrics


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
                     num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix ``C`` (K, K), int64: ``C[i, j]`` counts truth ``i`` predicted as ``j``.

    Samples whose truth is -1 are dropped. ``num_classes`` defaults to ``max label + 1``.
    """
    t, p, k = _labels_pair(y_true, y_pred, num_classes)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _accuracy(cm: np.ndarray, notes: list[str]) -> float:
    n = cm.sum()
    if n == 0:
        notes.append("accuracy undefined on empty input")
        return float("nan")
    return float(np.trace(cm) / n)


def accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Fraction of samples whose predicted label equals the truth (NaN on empty input)."""
    notes: list[str] = []
    value = _accuracy(confusion_matrix(y_true, y_pred), notes)
    _emit(notes)
    return value


def _per_class(cm: np.ndarray,
               notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 (float arrays, NaN where undefined) and support (int) per class."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2.0 * tp, support + predicted)
    if cm.sum() > 0:
        absent = np.flatnonzero(support == 0)
        never = np.flatnonzero(predicted == 0)
        if absent.size:
            notes.append(f"classes {absent.tolist()} absent from the ground truth: their recall "
                         "and AUCs are NaN and macro means skip them")
        if never.size:
            notes.append(f"classes {never.tolist()} never predicted: their precision is NaN and "
                         "macro precision skips them")
    return precision, recall, f1, support.astype(np.int64)


def precision_recall_f1(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class ``(precision, recall, f1, support)``, each of shape (K,).

    Precision (PPV) = TP / predicted, recall = TP / support, F1 = 2 TP / (support + predicted);
    each is NaN where its denominator is 0 (scikit-learn's ``zero_division=np.nan``).
    """
    notes: list[str] = []
    out = _per_class(confusion_matrix(y_true, y_pred, num_classes), notes)
    _emit(notes)
    return out


def _macro(index: int, y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
           num_classes: int | None) -> float:
    notes: list[str] = []
    cm = confusion_matrix(y_true, y_pred, num_classes)
    if cm.sum() == 0:
        notes.append("metric undefined on empty input")
        value = float("nan")
    else:
        value = _nanmean(_per_class(cm, notes)[index])
    _emit(notes, stacklevel=4)
    return value


def precision_macro(y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
                    num_classes: int | None = None) -> float:
    """Macro precision (PPV) over the classes that were predicted at least once."""
    return _macro(0, y_true, y_pred, num_classes)


def recall_macro(y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
                 num_classes: int | None = None) -> float:
    """Macro recall over the classes present in the ground truth (= balanced accuracy)."""
    return _macro(1, y_true, y_pred, num_classes)


def balanced_accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
                      num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in the ground truth (scikit-learn's)."""
    return _macro(1, y_true, y_pred, num_classes)


def f1_macro(y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
             num_classes: int | None = None) -> float:
    """Macro F1 over the classes present in the truth or the prediction."""
    return _macro(2, y_true, y_pred, num_classes)


def _f1_weighted(cm: np.ndarray, notes: list[str]) -> float:
    if cm.sum() == 0:
        notes.append("metric undefined on empty input")
        return float("nan")
    _, _, f1, support = _per_class(cm, notes)
    defined = support > 0  # a class with support has a defined F1
    return float(np.sum(f1[defined] * support[defined]) / support.sum())


def f1_weighted(y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
                num_classes: int | None = None) -> float:
    """Per-class F1 averaged with the class supports (ground-truth counts) as weights."""
    notes: list[str] = []
    value = _f1_weighted(confusion_matrix(y_true, y_pred, num_classes), notes)
    _emit(notes)
    return value


def _kappa(cm: np.ndarray, notes: list[str]) -> float:
    n = cm.sum()
    if n == 0:
        notes.append("kappa undefined on empty input")
        return float("nan")
    cmf = cm.astype(np.float64)
    expected = np.outer(cmf.sum(axis=1), cmf.sum(axis=0)) / n
    off = ~np.eye(cm.shape[0], dtype=bool)
    den = expected[off].sum()
    if den == 0:
        notes.append("kappa undefined: truth and prediction are the same single class")
        return float("nan")
    return float(1.0 - cmf[off].sum() / den)


def cohen_kappa(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Cohen's kappa between truth and prediction: ``(p_o - p_e) / (1 - p_e)``.

    NaN when ``p_e == 1`` (both use the same single class), where it is 0/0.
    """
    notes: list[str] = []
    value = _kappa(confusion_matrix(y_true, y_pred), notes)
    _emit(notes)
    return value


def _alpha(cm: np.ndarray, notes: list[str]) -> float:
    n_units = cm.sum()
    if n_units == 0:
        notes.append("alpha undefined on empty input")
        return float("nan")
    # coincidence matrix of two coders who rated every unit: o = C + C^T, n = 2N pairable values
    o = (cm + cm.T).astype(np.float64)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    observed = o.sum() - np.trace(o)  # disagreeing pairs
    expected = n * n - np.sum(n_c * n_c)  # sum over c != k of n_c n_k
    if expected == 0:
        notes.append("alpha undefined: only one class occurs in truth and prediction")
        return float("nan")
    return float(1.0 - (n - 1.0) * observed / expected)


def krippendorff_alpha_nominal(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Krippendorff's alpha for nominal data with truth and prediction as two coders.

    ``alpha = 1 - (n - 1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k`` where ``o = C + C^T`` is the
    coincidence matrix and ``n = 2N``. NaN when only one class occurs (no expected disagreement).
    """
    notes: list[str] = []
    value = _alpha(confusion_matrix(y_true, y_pred), notes)
    _emit(notes)
    return value


def _mcc(cm: np.ndarray, notes: list[str]) -> float:
    s = float(cm.sum())
    if s == 0:
        notes.append("mcc undefined on empty input")
        return float("nan")
    cmf = cm.astype(np.float64)
    t = cmf.sum(axis=1)
    p = cmf.sum(axis=0)
    c = float(np.trace(cmf))
    cov_tp = c * s - float(t @ p)
    cov_pp = s * s - float(p @ p)
    cov_tt = s * s - float(t @ t)
    if cov_pp * cov_tt == 0:
        return 0.0  # a constant truth or prediction: scikit-learn's (and the usual) convention
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def matthews_corrcoef(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K), in [-1, 1].

    0 (not NaN) when the truth or the prediction is constant, as scikit-learn.
    """
    notes: list[str] = []
    value = _mcc(confusion_matrix(y_true, y_pred), notes)
    _emit(notes)
    return value


# --------------------------------------------------------------------------------------------------
# score-based metrics


def _rankdata_average(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy's ``rankdata(method='average')``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.size
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _roc_auc(is_pos: np.ndarray, score: np.ndarray) -> float:
    n_pos = int(is_pos.sum())
    n_neg = is_pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata_average(score)
    u = ranks[is_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc_binary(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve of a binary problem (``y_true`` truthy = positive).

    Computed as the Mann-Whitney statistic with average ranks for tied scores, which equals the
    trapezoidal area under scikit-learn's ROC curve. NaN (with a warning) without both positives and
    negatives.
    """
    pos = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if pos.ndim != 1 or s.shape != pos.shape:
        raise ValueError(f"y_true and score must be 1-D of equal length, got {pos.shape} and "
                         f"{s.shape}")
    value = _roc_auc(pos, s)
    if np.isnan(value):
        _emit(["ROC AUC undefined: needs both positive and negative samples"])
    return value


def _average_precision(is_pos: np.ndarray, score: np.ndarray) -> float:
    n_pos = int(is_pos.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    y = is_pos[order].astype(np.float64)
    # one threshold per distinct score: the last index of each run of equal scores
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision_binary(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Average precision: area under the step-wise precision-recall curve (scikit-learn's).

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, highest first. NaN (with
    a warning) when there is no positive sample.
    """
    pos = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if pos.ndim != 1 or s.shape != pos.shape:
        raise ValueError(f"y_true and score must be 1-D of equal length, got {pos.shape} and "
                         f"{s.shape}")
    value = _average_precision(pos, s)
    if np.isnan(value):
        _emit(["average precision undefined: no positive sample"])
    return value


def _auc_notes(t: np.ndarray, k: int, notes: list[str]) -> None:
    if t.size == 0:
        notes.append("AUCs undefined on empty input")
        return
    counts = np.bincount(t, minlength=k)
    absent = np.flatnonzero(counts == 0)
    alone = np.flatnonzero(counts == t.size)
    if absent.size:
        notes.append(f"classes {absent.tolist()} absent from the ground truth: their recall and "
                     "AUCs are NaN and macro means skip them")
    if alone.size:
        notes.append(f"class {alone.tolist()} is the only one in the ground truth: its ROC AUC is "
                     "NaN")


def _per_class_scores(t: np.ndarray, s: np.ndarray,
                      fn: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    return np.array([fn(t == c, s[:, c]) for c in range(s.shape[1])], dtype=np.float64)


def _ovr(y_true: npt.ArrayLike, probs: npt.ArrayLike,
         fn: Callable[[np.ndarray, np.ndarray], float], stacklevel: int) -> np.ndarray:
    notes: list[str] = []
    t, s = _labels_scores(y_true, probs, notes)
    _auc_notes(t, s.shape[1], notes)
    out = _per_class_scores(t, s, fn)
    _emit(notes, stacklevel=stacklevel)
    return out


def roc_auc_per_class(y_true: npt.ArrayLike, probs: npt.ArrayLike) -> np.ndarray:
    """One-vs-rest ROC AUC of each class (K,), scoring class ``c`` by ``probs[:, c]``."""
    return _ovr(y_true, probs, _roc_auc, stacklevel=4)


def average_precision_per_class(y_true: npt.ArrayLike, probs: npt.ArrayLike) -> np.ndarray:
    """One-vs-rest average precision (AUC-PR) of each class (K,)."""
    return _ovr(y_true, probs, _average_precision, stacklevel=4)


def roc_auc_ovr(y_true: npt.ArrayLike, probs: npt.ArrayLike) -> float:
    """Macro one-vs-rest ROC AUC: the mean of the per-class AUCs that are defined.

    Equals ``sklearn.metrics.roc_auc_score(y_true, probs, multi_class="ovr", average="macro")``
    when every class occurs; classes absent from the ground truth are skipped (with a warning)
    where scikit-learn raises.
    """
    return _nanmean(_ovr(y_true, probs, _roc_auc, stacklevel=4))


def average_precision_ovr(y_true: npt.ArrayLike, probs: npt.ArrayLike) -> float:
    """Macro one-vs-rest average precision (AUC-PR) over the classes present in the ground truth.

    Equals ``sklearn.metrics.average_precision_score(label_binarize(y_true), probs,
    average="macro")`` when every class occurs.
    """
    return _nanmean(_ovr(y_true, probs, _average_precision, stacklevel=4))


# --------------------------------------------------------------------------------------------------
# everything at once

SUMMARY_KEYS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro",
    "kappa", "alpha", "mcc", "auc_roc_macro", "auc_pr_macro", "n",
)
"""The scalar keys of :func:`categorical_metrics`, in output order."""

PER_CLASS_KEYS: tuple[str, ...] = ("precision", "recall", "f1", "auc_roc", "auc_pr", "support")
"""Per-class key prefixes of :func:`categorical_metrics`: ``f"{prefix}/{class_name}"``."""


def categorical_metrics(
    y_true: npt.ArrayLike,
    probs: npt.ArrayLike,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """All categorical metrics in one flat dict with stable key names.

    Parameters
    ----------
    y_true:
        (N,) integer labels in ``0..K-1``; ``-1`` marks a sample without a category (ignored).
    probs:
        (N, K) class **probabilities** (softmax outputs). The predicted label is the row's argmax
        (the first maximum on ties) and the AUCs rank samples by ``probs[:, c]``. Logits give the
        same label metrics but different AUCs, so they trigger a :class:`MetricWarning`.
    class_names:
        K names used in the per-class keys; default ``"0" .. "K-1"``.

    Returns
    -------
    dict
        ``accuracy, balanced_accuracy, f1_macro, f1_weighted, precision_macro, recall_macro,
        kappa, alpha, mcc, auc_roc_macro, auc_pr_macro`` (floats), ``n`` (int, samples used), then
        for each class ``precision/<name>, recall/<name>, f1/<name>, auc_roc/<name>,
        auc_pr/<name>`` (floats) and ``support/<name>`` (int). Undefined values are NaN, with one
        :class:`MetricWarning` listing the reasons.
    """
    notes: list[str] = []
    t, s = _labels_scores(y_true, probs, notes)
    k = s.shape[1]
    names = [str(c) for c in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but probs has {k} columns")
    if len(set(names)) != k:
        raise ValueError("class_names must be unique")
    p = s.argmax(axis=1) if s.shape[0] else np.zeros(0, dtype=np.int64)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    out: dict[str, float] = {}
    if t.size == 0:
        notes.append("empty input (no sample with a label): every metric is NaN")
        nan = float("nan")
        out.update({key: nan for key in SUMMARY_KEYS})
        out["n"] = 0
        for name in names:
            for prefix in PER_CLASS_KEYS:
                out[f"{prefix}/{name}"] = nan
            out[f"support/{name}"] = 0
        _emit(notes)
        return out

    precision, recall, f1, support = _per_class(cm, notes)
    _auc_notes(t, k, notes)
    auc_roc = _per_class_scores(t, s, _roc_auc)
    auc_pr = _per_class_scores(t, s, _average_precision)
    out["accuracy"] = _accuracy(cm, notes)
    out["balanced_accuracy"] = _nanmean(recall)
    out["f1_macro"] = _nanmean(f1)
    out["f1_weighted"] = _f1_weighted(cm, notes)
    out["precision_macro"] = _nanmean(precision)
    out["recall_macro"] = _nanmean(recall)
    out["kappa"] = _kappa(cm, notes)
    out["alpha"] = _alpha(cm, notes)
    out["mcc"] = _mcc(cm, notes)
    out["auc_roc_macro"] = _nanmean(auc_roc)
    out["auc_pr_macro"] = _nanmean(auc_pr)
    out["n"] = int(t.size)
    for c, name in enumerate(names):
        out[f"precision/{name}"] = float(precision[c])
        out[f"recall/{name}"] = float(recall[c])
        out[f"f1/{name}"] = float(f1[c])
        out[f"auc_roc/{name}"] = float(auc_roc[c])
        out[f"auc_pr/{name}"] = float(auc_pr[c])
        out[f"support/{name}"] = int(support[c])
    _emit(notes)
    return out
