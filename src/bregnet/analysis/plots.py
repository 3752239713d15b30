"""Plots for evaluation reports: confusion matrix, per-class F1, valence/arousal, reliability,
learning curves and a grid of faces with true and predicted labels.

Every function draws on a bare :class:`matplotlib.figure.Figure` rendered by the Agg canvas, so
nothing touches pyplot's global state or needs a display (no ``plt.show``, safe on servers and in
threads). Each writes a PNG (parent folders are created), releases the figure and returns the path
(:func:`plot_reliability` returns the expected calibration error it drew).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..metrics import MetricWarning, ccc, expected_calibration_error, reliability_bins, rmse

__all__ = [
    "plot_confusion_matrix",
    "plot_face_grid",
    "plot_learning_curves",
    "plot_per_class_f1",
    "plot_reliability",
    "plot_va",
]

DPI = 120
_GREEN = "#1a7f37"
_RED = "#c62828"


# ---------------------------------------------------------------------------------------- helpers


def _figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _finish(fig, path: str | os.PathLike) -> str:
    """Save ``fig`` as a PNG at ``path`` atomically (folders created), release it, return the path."""
    import io

    from ..fileio import atomic_write_bytes

    path = os.fspath(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=DPI, format="png", facecolor="white")
    finally:
        fig.clear()
    atomic_write_bytes(path, buf.getvalue(), fsync=False)
    return path


def _class_names(classes: Sequence[str] | None, k: int) -> list[str]:
    names = list(classes) if classes is not None else []
    if len(names) < k:
        names += [str(i) for i in range(len(names), k)]
    return names[:k]


# ------------------------------------------------------------------------------ confusion matrix


def plot_confusion_matrix(
    cm: Any,
    classes: Sequence[str],
    path: str | os.PathLike,
    normalize: bool = True,
    title: str | None = None,
) -> str:
    """Confusion matrix, rows = true class, columns = predicted class.

    With ``normalize`` each row is divided by its support (so the diagonal is per-class recall)
    and cells show the fraction with the raw count below; rows without samples are left blank.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got {cm.shape}")
    k = cm.shape[0]
    names = _class_names(classes, k)
    support = cm.sum(axis=1)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            shown = cm / support[:, None]
        shown[support == 0] = np.nan
    else:
        shown = cm
    side = max(4.5, 0.75 * k + 2.5)
    fig = _figure((side + 1.0, side))
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(1.0, float(np.nanmax(shown)) if shown.size else 1.0)
    im = ax.imshow(np.ma.masked_invalid(shown), cmap="Blues", vmin=0.0, vmax=vmax)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cbar.set_label("fraction of the true class" if normalize else "count")
    small = k > 12
    for i in range(k):
        if normalize and support[i] == 0:
            ax.text((k - 1) / 2, i, "no samples of this class", ha="center", va="center",
                    color="0.45", fontsize=8, fontstyle="italic")
            continue
        for j in range(k):
            v = shown[i, j]
            if not np.isfinite(v):
                continue
            dark = v > 0.55 * vmax
            color = "white" if dark else "black"
            if normalize:
                text = f"{v:.2f}" if small else f"{v:.2f}\n({int(cm[i, j])})"
            else:
                text = f"{int(v)}"
            ax.text(j, i, text, ha="center", va="center", color=color,
                    fontsize=6 if small else 8, fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ylabels = [f"{n} (n={int(s)})" for n, s in zip(names, support)]
    ax.set_yticks(range(k), ylabels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = cm.sum()
    acc = np.trace(cm) / total if total else float("nan")
    default = ("Confusion matrix, row-normalised" if normalize else "Confusion matrix (counts)")
    ax.set_title(f"{title or default}\naccuracy {acc:.1%} on {int(total)} samples", fontsize=11)
    return _finish(fig, path)


# ------------------------------------------------------------------------------------ per-class F1


def plot_per_class_f1(
    per_class: Mapping[str, float],
    path: str | os.PathLike,
    title: str | None = None,
    support: Mapping[str, float] | None = None,
) -> str:
    """Horizontal bars of F1 per class (class order kept), the macro mean as a dashed line.

    NaN values (class never seen or predicted) are shown as "n/a". ``support`` (counts per class)
    is added to the labels when given.
    """
    names = list(per_class)
    vals = np.array([float(per_class[n]) if per_class[n] is not None else np.nan for n in names])
    if not names:
        raise ValueError("per_class is empty")
    fig = _figure((7.0, max(2.8, 0.42 * len(names) + 1.6)))
    ax = fig.subplots()
    y = np.arange(len(names))
    finite = np.isfinite(vals)
    cmap = _cmap("RdYlGn")
    colors = [cmap(0.15 + 0.7 * v) if f else "0.8" for v, f in zip(np.nan_to_num(vals), finite)]
    ax.barh(y, np.where(finite, vals, 0.0), color=colors, edgecolor="0.3", height=0.7)
    for yi, v, f in zip(y, vals, finite):
        ax.text((v if f else 0.0) + 0.01, yi, f"{v:.3f}" if f else "n/a", va="center", fontsize=9)
    labels = names
    if support is not None:
        labels = [f"{n} (n={int(support[n])})" if n in support else n for n in names]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.1)
    ax.set_xlabel("F1 score")
    macro = float(np.nanmean(vals)) if finite.any() else float("nan")
    if np.isfinite(macro):
        ax.axvline(macro, color="0.2", ls="--", lw=1.2, label=f"macro F1 = {macro:.3f}")
        ax.legend(loc="lower right", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title or "F1 score per class", fontsize=11)
    return _finish(fig, path)


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


# ------------------------------------------------------------------------------- valence/arousal


def plot_va(
    true: Any,
    pred: Any,
    path: str | os.PathLike,
    max_scatter: int = 2000,
    title: str | None = None,
) -> str:
    """Predicted vs true valence and arousal, one panel per dimension, with the identity line.

    Up to ``max_scatter`` valid points per dimension are drawn as a scatter; more as a 2D
    histogram (log colour scale). Rows where the truth or the prediction is NaN are dropped per
    dimension. Each title gives the concordance correlation (CCC), RMSE and number of points.
    """
    t = np.asarray(true, dtype=np.float64).reshape(-1, 2)
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    if t.shape != p.shape:
        raise ValueError(f"true and pred must have the same shape (N, 2), got {t.shape} and {p.shape}")
    fig = _figure((10.5, 5.0))
    axes = fig.subplots(1, 2)
    for d, (ax, name) in enumerate(zip(axes, ("valence", "arousal"))):
        ok = np.isfinite(t[:, d]) & np.isfinite(p[:, d])
        td, pd = t[ok, d], p[ok, d]
        lo = min(-1.0, float(td.min()) if len(td) else -1.0, float(pd.min()) if len(pd) else -1.0)
        hi = max(1.0, float(td.max()) if len(td) else 1.0, float(pd.max()) if len(pd) else 1.0)
        if len(td) == 0:
            ax.text(0.5, 0.5, f"no valid {name} values", ha="center", va="center",
                    transform=ax.transAxes, fontsize=11, color="0.4")
            head = f"{name}: no data"
        else:
            if len(td) <= max_scatter:
                alpha = 0.7 if len(td) < 300 else 0.35
                ax.scatter(td, pd, s=10 if len(td) > 300 else 18, alpha=alpha, color="#1f77b4",
                           edgecolors="none")
            else:
                from matplotlib.colors import LogNorm

                _, _, _, im = ax.hist2d(td, pd, bins=60, range=[[lo, hi], [lo, hi]],
                                        cmap="viridis", norm=LogNorm(), cmin=1)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="samples per cell")
            with warnings.catch_warnings():  # an undefined CCC shows as nan in the title
                warnings.simplefilter("ignore", MetricWarning)
                head = f"{name}: CCC {ccc(td, pd):.3f}, RMSE {rmse(td, pd):.3f} (n={len(td)})"
        ax.plot([lo, hi], [lo, hi], color=_RED, lw=1.2, ls="--", label="perfect prediction")
        ax.axhline(0, color="0.8", lw=0.6)
        ax.axvline(0, color="0.8", lw=0.6)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(head, fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(True, alpha=0.25)
    fig.suptitle(title or "Valence and arousal: predicted vs true", fontsize=11)
    return _finish(fig, path)


# ----------------------------------------------------------------------------------- calibration


def plot_reliability(
    probs: Any,
    labels: Any,
    path: str | os.PathLike,
    n_bins: int = 15,
    title: str | None = None,
) -> float:
    """Reliability diagram (accuracy per confidence bin against the diagonal, the gap shaded) over
    a histogram of confidences; writes the PNG and returns the expected calibration error."""
    b = reliability_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    edges = b["edges"]
    width = edges[1] - edges[0]
    centers = edges[:-1] + width / 2
    nz = b["count"] > 0
    fig = _figure((6.0, 6.6))
    ax, axh = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(centers[nz], b["accuracy"][nz], width=width * 0.95, color="#1f77b4", edgecolor="0.2",
           label="accuracy in bin")
    gap_lo = np.minimum(b["accuracy"][nz], b["confidence"][nz])
    gap_h = np.abs(b["accuracy"][nz] - b["confidence"][nz])
    ax.bar(centers[nz], gap_h, bottom=gap_lo, width=width * 0.95, facecolor="none",
           edgecolor=_RED, hatch="///", lw=1.0, label="gap to mean confidence in bin")
    ax.plot(centers[nz], b["confidence"][nz], "_", color=_RED, ms=14, mew=2)
    ax.plot([0, 1], [0, 1], "--", color="0.3", lw=1.2, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    ax.grid(True, alpha=0.25)
    n = int(b["count"].sum())
    ax.set_title(f"{title or 'Reliability diagram'}\nECE = {ece:.4f} ({n_bins} bins, n={n})",
                 fontsize=11)
    axh.bar(centers, b["count"], width=width * 0.95, color="0.55", edgecolor="0.3")
    axh.set_xlabel("confidence (top predicted probability)")
    axh.set_ylabel("samples")
    axh.grid(True, alpha=0.25)
    _finish(fig, path)
    return ece


# --------------------------------------------------------------------------------- learning curves


def _read_history(history: str | os.PathLike | Iterable[Mapping[str, Any]]) -> list[dict[str, float]]:
    if isinstance(history, (str, os.PathLike)):
        with open(history, newline="", encoding="utf-8") as fh:
            rows: list[Mapping[str, Any]] = list(csv.DictReader(fh))
    else:
        rows = list(history)
    out: list[dict[str, float]] = []
    for row in rows:
        clean: dict[str, float] = {}
        for k, v in row.items():
            if k is None:
                continue
            try:
                clean[k] = float(v) if v not in (None, "") else float("nan")
            except (TypeError, ValueError):
                continue
        out.append(clean)
    return out


_SKIP = {"epoch", "step", "lr", "time", "time_s", "seconds", "epoch_time", "images_per_s"}


def plot_learning_curves(
    history: str | os.PathLike | Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str | None = None,
) -> str:
    """Loss, metrics and learning rate per epoch from a history CSV (or a list of row dicts).

    Columns ending in ``loss`` share the first panel; other numeric columns (accuracy, F1, CCC ...)
    the second, ``train_*`` solid and ``val_*`` dashed in matching colours; ``lr`` the third (log
    scale). The x axis is ``epoch`` (else ``step``, else the row number). The best validation
    accuracy (or lowest validation loss) is marked.
    """
    rows = _read_history(history)
    if not rows:
        raise ValueError("learning-curve history is empty")
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    xkey = "epoch" if "epoch" in keys else ("step" if "step" in keys else None)
    x = np.array([r.get(xkey, np.nan) for r in rows]) if xkey else np.arange(1, len(rows) + 1)

    def col(k: str) -> np.ndarray:
        return np.array([r.get(k, np.nan) for r in rows], dtype=np.float64)

    numeric = [k for k in keys if k not in _SKIP and np.isfinite(col(k)).any()]
    loss_keys = [k for k in numeric if k.endswith("loss")]
    metric_keys = [k for k in numeric if k not in loss_keys]
    has_lr = "lr" in keys and np.isfinite(col("lr")).any()
    panels = [("loss", loss_keys)] if loss_keys else []
    if metric_keys:
        panels.append(("metric", metric_keys))
    if has_lr:
        panels.append(("learning rate", ["lr"]))
    if not panels:
        raise ValueError("learning-curve history has no numeric columns to plot")
    fig = _figure((5.0 * len(panels), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    palette = [_cmap("tab10")(i) for i in range(10)]

    def base(k: str) -> str:
        for pre in ("train_", "val_", "valid_", "test_"):
            if k.startswith(pre):
                return k[len(pre):]
        return k

    bases: list[str] = []
    for _, ks in panels:
        bases += [base(k) for k in ks if base(k) not in bases]
    colour = {b: palette[i % 10] for i, b in enumerate(bases)}
    marker = "o" if len(rows) <= 30 else None
    for ax, (name, ks) in zip(axes, panels):
        for k in ks:
            y = col(k)
            ok = np.isfinite(y) & np.isfinite(x)
            style = "--" if k.startswith(("val_", "valid_", "test_")) else "-"
            if name == "learning rate":
                ax.semilogy(x[ok], y[ok], "-", color="0.3", marker=marker, ms=3)
            else:
                ax.plot(x[ok], y[ok], style, color=colour[base(k)], marker=marker, ms=3,
                        lw=1.6, label=k)
        if name == "loss":
            best_key = "val_loss" if "val_loss" in ks else None
            if best_key is not None:
                y = col(best_key)
                if np.isfinite(y).any():
                    i = int(np.nanargmin(y))
                    ax.plot(x[i], y[i], "*", color="k", ms=12, label=f"lowest val_loss ({y[i]:.3f})")
        if name == "metric" and "val_accuracy" in ks:
            y = col("val_accuracy")
            if np.isfinite(y).any():
                i = int(np.nanargmax(y))
                ax.plot(x[i], y[i], "*", color="k", ms=12,
                        label=f"best val_accuracy ({y[i]:.3f}, {xkey or 'row'} {x[i]:g})")
        ax.set_xlabel(xkey or "row")
        ax.set_ylabel(name)
        ax.set_title({"loss": "Loss", "metric": "Metrics", "learning rate": "Learning rate"}[name])
        ax.grid(True, alpha=0.3)
        if name != "learning rate":
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or "Learning curves (solid: training, dashed: validation)", fontsize=11)
    return _finish(fig, path)


# ------------------------------------------------------------------------------------- face grid


def plot_face_grid(
    images: Any,
    true_labels: Any,
    pred_labels: Any,
    classes: Sequence[str],
    path: str | os.PathLike,
    probs: Any = None,
    ncols: int = 8,
    max_images: int = 64,
    title: str | None = None,
) -> str:
    """A grid of faces (N, H, W, 3) uint8 titled "true -> predicted" (with the predicted class's
    probability when ``probs`` is given): green when correct, red when wrong. A negative true label
    (unknown) is titled with the prediction only, in black. At most ``max_images`` are drawn."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None].repeat(3, axis=-1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
    n = min(len(images), int(max_images))
    if n == 0:
        raise ValueError("no images to draw")
    t = np.asarray(true_labels).reshape(-1)[:n]
    pl = np.asarray(pred_labels).reshape(-1)[:n]
    pr = None if probs is None else np.asarray(probs, dtype=np.float64)[:n]
    k = max(len(classes), int(max(t.max(initial=-1), pl.max(initial=-1))) + 1)
    names = _class_names(classes, k)
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    fig = _figure((1.55 * ncols, 1.85 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).reshape(-1)
    correct_n = 0
    known_n = 0
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        img = images[i]
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        ax.imshow(img if img.shape[-1] == 3 else img[..., 0], cmap=None if img.shape[-1] == 3 else "gray",
                  interpolation="nearest")
        p = int(pl[i])
        pname = names[p] if 0 <= p < len(names) else str(p)
        conf = f" {pr[i, p]:.2f}" if pr is not None and 0 <= p < pr.shape[1] else ""
        if int(t[i]) < 0:
            ax.set_title(f"pred: {pname}{conf}", fontsize=7.5, color="black")
            continue
        known_n += 1
        ok = int(t[i]) == p
        correct_n += ok
        tname = names[int(t[i])] if int(t[i]) < len(names) else str(int(t[i]))
        ax.set_title(f"true: {tname}\npred: {pname}{conf}", fontsize=7.5,
                     color=_GREEN if ok else _RED, fontweight="normal" if ok else "bold")
    summary = f"{correct_n}/{known_n} correct" if known_n else f"{n} faces"
    fig.suptitle(f"{title or 'Faces: true vs predicted label'} ({summary}; green = correct, red = wrong)",
                 fontsize=10)
    return _finish(fig, path)
