"""Markdown tables and JSON output for evaluation reports and the paper's ablation.

Metric key conventions (those of :func:`bregnet.metrics.all_metrics`):

* overall: ``accuracy, balanced_accuracy, f1_macro, f1_weighted, precision_macro, recall_macro,
  kappa, alpha, mcc, auc_roc_macro, auc_pr_macro``;
* per class: ``precision/<class>, recall/<class>, f1/<class>, support/<class>``;
* valence/arousal: ``valence_rmse, valence_corr, valence_sagr, valence_ccc`` and ``arousal_*``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..fileio import json_ready, write_json  # noqa: F401  (the report's JSON: strict, atomic)

__all__ = [
    "ABLATION_COLUMNS",
    "OVERALL_METRICS",
    "ablation_markdown",
    "format_value",
    "json_ready",
    "metrics_markdown",
    "write_json",
]

OVERALL_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("f1_macro", "F1 (macro)"),
    ("f1_weighted", "F1 (weighted)"),
    ("precision_macro", "Precision / PPV (macro)"),
    ("recall_macro", "Recall (macro)"),
    ("kappa", "Cohen's kappa"),
    ("alpha", "Krippendorff's alpha"),
    ("mcc", "MCC"),
    ("auc_roc_macro", "AUC-ROC (macro)"),
    ("auc_pr_macro", "AUC-PR (macro)"),
)
_VA_METRICS = (("rmse", "RMSE"), ("corr", "CORR"), ("sagr", "SAGR"), ("ccc", "CCC"))
_PER_CLASS = ("precision", "recall", "f1", "support")
_NA = "–"


def _num(v: Any) -> float | None:
    """A finite-or-NaN float from a number-like value, None when absent or not a number."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def format_value(v: Any, digits: int = 4, percent: bool = False) -> str:
    """Format a metric for a table: ``digits`` decimals (of the percentage when ``percent``);
    missing or NaN values print as an en dash."""
    x = _num(v)
    if x is None or not math.isfinite(x):
        return _NA
    if percent:
        return f"{100.0 * x:.{digits}f}"
    return f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_markdown(metrics: Mapping[str, Any], classes: Sequence[str] | None = None,
                     digits: int = 4) -> str:
    """Markdown report of an evaluation's metrics dict.

    An overall table (known metrics in a fixed order, then any other scalar keys), a per-class
    table (precision, recall, F1, support; classes in ``classes`` order, else as found in the keys)
    and a valence/arousal table (RMSE, CORR, SAGR, CCC, plus ``n_valence`` / ``n_arousal`` and the
    ``va_<metric>_mean`` row when present) when those keys exist. Missing or NaN values show as "–".
    """
    parts: list[str] = []
    known = {k for k, _ in OVERALL_METRICS}
    overall = [(label, format_value(metrics[k], digits)) for k, label in OVERALL_METRICS if k in metrics]
    is_va = {f"{d}_{m}" for d in ("valence", "arousal") for m, _ in _VA_METRICS}
    is_va |= {f"va_{m}_mean" for m, _ in _VA_METRICS} | {"n_valence", "n_arousal"}
    extra = [
        (k, str(int(v)) if isinstance(v, (int, np.integer)) else format_value(v, digits))
        for k, v in metrics.items()
        if k not in known and k not in is_va and "/" not in k
        and not isinstance(v, (bool, np.bool_)) and _num(v) is not None
    ]
    if overall or extra:
        parts.append("### Overall\n\n" + _table(["Metric", "Value"], overall + extra))

    found = []
    for k in metrics:
        if "/" in k and k.split("/", 1)[0] in _PER_CLASS:
            c = k.split("/", 1)[1]
            if c not in found:
                found.append(c)
    names = [c for c in (classes or []) if any(f"{m}/{c}" in metrics for m in _PER_CLASS)]
    names += [c for c in found if c not in names]
    if names:
        rows = []
        for c in names:
            sup = _num(metrics.get(f"support/{c}"))
            rows.append([
                c,
                format_value(metrics.get(f"precision/{c}"), digits),
                format_value(metrics.get(f"recall/{c}"), digits),
                format_value(metrics.get(f"f1/{c}"), digits),
                str(int(sup)) if sup is not None and math.isfinite(sup) else _NA,
            ])
        parts.append("### Per class\n\n" + _table(["Class", "Precision", "Recall", "F1", "Support"], rows))

    va_rows = []
    with_n = any(k in metrics for k in ("n_valence", "n_arousal"))
    for dim in ("valence", "arousal"):
        if any(f"{dim}_{m}" in metrics for m, _ in _VA_METRICS):
            row = [dim.capitalize()] + [format_value(metrics.get(f"{dim}_{m}"), digits)
                                        for m, _ in _VA_METRICS]
            if with_n:
                n = _num(metrics.get(f"n_{dim}"))
                row.append(str(int(n)) if n is not None and math.isfinite(n) else _NA)
            va_rows.append(row)
    if va_rows and any(f"va_{m}_mean" in metrics for m, _ in _VA_METRICS):
        row = ["Mean"] + [format_value(metrics.get(f"va_{m}_mean"), digits) for m, _ in _VA_METRICS]
        va_rows.append(row + ([_NA] if with_n else []))
    if va_rows:
        header = ["Dimension"] + [label for _, label in _VA_METRICS] + (["n"] if with_n else [])
        parts.append("### Valence and arousal\n\n" + _table(header, va_rows))
    return "\n\n".join(parts) + "\n" if parts else "_no metrics_\n"


# ------------------------------------------------------------------------------------- ablation

# (column header, accepted row keys in order, kind): kind "text" is printed as is, "pct" as a
# percentage with 2 decimals, "num" with 3 decimals.
ABLATION_COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Model", ("model", "name"), "text"),
    ("Shortcut", ("shortcut",), "text"),
    ("Depth", ("depth",), "text"),
    ("Weighting", ("weighting", "loss_weighting", "weighted"), "text"),
    ("Acc. %", ("accuracy",), "pct"),
    ("Macro F1 %", ("f1_macro",), "pct"),
    ("Kappa", ("kappa",), "num"),
    ("Alpha", ("alpha",), "num"),
    ("MCC", ("mcc",), "num"),
    ("PPV %", ("precision_macro", "ppv"), "pct"),
)


def _first(row: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    return None


def _text(v: Any) -> str:
    if v is None:
        return _NA
    if isinstance(v, bool):
        return "weighted" if v else "plain"
    if isinstance(v, float) and not math.isfinite(v):
        return _NA
    return str(v).replace("|", "\\|")


def ablation_markdown(rows: Sequence[Mapping[str, Any]], classes: Sequence[str] | None = None) -> str:
    """The paper-style ablation table, one line per trained configuration.

    Each row is a dict with ``model, shortcut, depth, weighting`` (a string, or a bool
    ``weighted``) and metric keys ``accuracy, f1_macro, kappa, alpha, mcc, precision_macro`` (PPV)
    and ``recall/<class>``. Accuracy, macro F1, PPV and the per-class recalls print as percentages
    with 2 decimals, kappa / alpha / MCC with 3 decimals; a recall column is added per class (in
    ``classes`` order, else first-seen order) so the effect of weighting on rare classes shows.
    Extra keys are ignored; missing values print as "–".
    """
    rows = list(rows)
    if not rows:
        return "_no ablation results_\n"
    recall_classes: list[str] = list(classes or [])
    for r in rows:
        for k in r:
            if k.startswith("recall/") and k[len("recall/"):] not in recall_classes:
                recall_classes.append(k[len("recall/"):])
    recall_classes = [c for c in recall_classes if any(f"recall/{c}" in r for r in rows)]
    header = [h for h, _, _ in ABLATION_COLUMNS] + [f"R {c} %" for c in recall_classes]
    align = ["l", "l", "r", "l"] + ["r"] * (len(header) - 4)
    body = []
    for r in rows:
        line = []
        for _, keys, kind in ABLATION_COLUMNS:
            v = _first(r, keys)
            if kind == "text":
                line.append(_text(v))
            elif kind == "pct":
                line.append(format_value(v, 2, percent=True))
            else:
                line.append(format_value(v, 3))
        line += [format_value(r.get(f"recall/{c}"), 2, percent=True) for c in recall_classes]
        body.append(line)
    return _table(header, body, align) + "\n"
