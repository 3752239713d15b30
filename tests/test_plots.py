"""Plots, calibration, Markdown tables and JSON output of the report library."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bregnet.analysis import plots
from bregnet.metrics import expected_calibration_error, reliability_bins
from bregnet.analysis.report import ablation_markdown, metrics_markdown, write_json

CLASSES = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and p.stat().st_size > 2000 and p.read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def preds():
    rng = np.random.default_rng(0)
    n, k = 200, len(CLASSES)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 2.0
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return y, p


def test_confusion_matrix_png(tmp_path, preds):
    y, p = preds
    cm = np.zeros((8, 8), int)
    np.add.at(cm, (y, p.argmax(1)), 1)
    cm[7] = 0  # a class without samples must not break normalisation
    out = plots.plot_confusion_matrix(cm, CLASSES, tmp_path / "sub" / "cm.png")
    assert _is_png(out)
    assert _is_png(plots.plot_confusion_matrix(cm, CLASSES, tmp_path / "cm_counts.png", normalize=False))
    with pytest.raises(ValueError):
        plots.plot_confusion_matrix(np.zeros((2, 3)), CLASSES[:2], tmp_path / "bad.png")


def test_per_class_f1_png(tmp_path):
    f1 = {c: 0.1 * i for i, c in enumerate(CLASSES)}
    f1["Contempt"] = float("nan")
    assert _is_png(plots.plot_per_class_f1(f1, tmp_path / "f1.png"))


def test_va_png_scatter_and_histogram_with_nan(tmp_path):
    rng = np.random.default_rng(1)
    t = rng.uniform(-1, 1, (300, 2))
    p = np.clip(0.8 * t + rng.normal(0, 0.2, t.shape), -1, 1)
    t[:5, 1] = np.nan
    p[7, 0] = np.nan
    assert _is_png(plots.plot_va(t, p, tmp_path / "va.png"))
    big_t = rng.uniform(-1, 1, (5000, 2))
    assert _is_png(plots.plot_va(big_t, big_t * 0.5, tmp_path / "va_big.png", max_scatter=1000))
    all_nan = np.full((4, 2), np.nan)
    assert _is_png(plots.plot_va(all_nan, all_nan, tmp_path / "va_nan.png"))


def test_ece_hand_computed():
    # 2 bins: (0, .5] and (.5, 1]. Bin 1: conf .9 (right), .8 (wrong), .6 (right) -> acc 2/3,
    # mean conf 23/30, gap 0.1, weight 3/5. Bin 0: conf .4 (wrong), .45 (right) -> acc .5, conf .425,
    # gap .075, weight 2/5. ECE = 0.06 + 0.03 = 0.09. The unlabelled row (-1) is ignored.
    probs = np.array([
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.2, 0.6, 0.2],
        [0.4, 0.3, 0.3],
        [0.3, 0.45, 0.25],
        [0.1, 0.1, 0.8],
    ])
    labels = np.array([0, 1, 1, 2, 1, -1])
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.09)
    b = reliability_bins(probs, labels, n_bins=2)
    assert b["count"].tolist() == [2, 3]
    assert b["accuracy"].tolist() == pytest.approx([0.5, 2 / 3])
    # one bin: |accuracy - mean confidence| = |3/5 - 3.15/5| = 0.03
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.03)
    # a confidence of exactly 0.5 falls in the lower bin
    assert reliability_bins(np.array([[0.5, 0.5]]), np.array([0]), 2)["count"].tolist() == [1, 0]
    # perfectly confident and right: ECE 0
    assert expected_calibration_error(np.eye(3), np.arange(3), 15) == 0.0
    assert math.isnan(expected_calibration_error(np.eye(3), -np.ones(3, int), 15))


def test_reliability_png_returns_ece(tmp_path, preds):
    y, p = preds
    ece = plots.plot_reliability(p, y, tmp_path / "rel.png", n_bins=10)
    assert ece == pytest.approx(expected_calibration_error(p, y, 10))
    assert 0 < ece < 1
    assert _is_png(tmp_path / "rel.png")


def test_learning_curves_from_rows_and_csv(tmp_path):
    rows = [dict(epoch=e, train_loss=2 / e, val_loss=2.2 / e, train_accuracy=1 - 1 / (e + 1),
                 val_accuracy=0.9 - 1 / (e + 1), lr=1e-4 * 0.8 ** (e // 2)) for e in range(1, 8)]
    assert _is_png(plots.plot_learning_curves(rows, tmp_path / "lc.png"))
    csv_path = tmp_path / "history.csv"
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
    lines[3] = lines[3].replace(str(rows[2]["val_loss"]), "")  # a missing value
    csv_path.write_text("\n".join(lines) + "\n")
    assert _is_png(plots.plot_learning_curves(csv_path, tmp_path / "lc_csv.png"))
    with pytest.raises(ValueError):
        plots.plot_learning_curves([], tmp_path / "none.png")


def test_face_grid_png(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    true = rng.integers(0, 8, 10)
    pred = true.copy()
    pred[::3] = (pred[::3] + 1) % 8
    true[9] = -1  # unknown truth
    probs = rng.dirichlet(np.ones(8), 10)
    out = plots.plot_face_grid(images, true, pred, CLASSES, tmp_path / "faces.png", probs=probs, ncols=5)
    assert _is_png(out)


def test_plots_leave_no_pyplot_figures(tmp_path, preds):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    plots.plot_per_class_f1({"a": 0.5, "b": 0.7}, tmp_path / "x.png")
    assert len(plt.get_fignums()) == before


METRICS = {
    "accuracy": 0.8125, "balanced_accuracy": 0.75, "f1_macro": 0.7, "f1_weighted": 0.8,
    "precision_macro": 0.72, "recall_macro": 0.75, "kappa": 0.6543, "alpha": 0.65,
    "mcc": 0.66, "auc_roc_macro": 0.9, "auc_pr_macro": float("nan"),
    "precision/Neutral": 0.5, "recall/Neutral": 0.25, "f1/Neutral": 1 / 3, "support/Neutral": 40,
    "precision/Happy": 0.9, "recall/Happy": 0.8, "f1/Happy": 0.84706, "support/Happy": 120,
    "valence_rmse": 0.2577, "valence_corr": 0.8, "valence_sagr": 0.9, "valence_ccc": 0.75,
    "arousal_rmse": 0.3, "arousal_corr": 0.6, "arousal_sagr": 0.7, "arousal_ccc": 0.55,
    "ece": 0.0312,
}


def test_metrics_markdown_numbers():
    md = metrics_markdown(METRICS, ["Neutral", "Happy"])
    lines = md.splitlines()
    assert "| Accuracy | 0.8125 |" in lines
    assert "| Cohen's kappa | 0.6543 |" in lines
    assert "| AUC-PR (macro) | – |" in lines  # NaN
    assert "| ece | 0.0312 |" in lines
    assert "| Neutral | 0.5000 | 0.2500 | 0.3333 | 40 |" in lines
    assert "| Happy | 0.9000 | 0.8000 | 0.8471 | 120 |" in lines
    assert lines.index("| Neutral | 0.5000 | 0.2500 | 0.3333 | 40 |") < lines.index(
        "| Happy | 0.9000 | 0.8000 | 0.8471 | 120 |")
    assert "| Valence | 0.2577 | 0.8000 | 0.9000 | 0.7500 |" in lines
    assert "| Arousal | 0.3000 | 0.6000 | 0.7000 | 0.5500 |" in lines
    # sample counts and the mean row of bregnet.metrics.all_metrics go to the VA table
    md2 = metrics_markdown({**METRICS, "n_valence": 290, "n_arousal": 300, "va_ccc_mean": 0.65})
    assert "| Valence | 0.2577 | 0.8000 | 0.9000 | 0.7500 | 290 |" in md2.splitlines()
    assert "| Mean | – | – | – | 0.6500 | – |" in md2.splitlines()
    assert "n_valence" not in md2
    # categorical only: no VA section
    cat_only = {k: v for k, v in METRICS.items() if not k.startswith(("valence", "arousal"))}
    assert "Valence" not in metrics_markdown(cat_only, CLASSES)


def test_ablation_markdown_numbers():
    rows = [
        {"model": "resnet32", "shortcut": "identity", "depth": 32, "weighting": "plain",
         "accuracy": 0.5737, "f1_macro": 0.41, "kappa": 0.45678, "alpha": 0.4, "mcc": 0.46,
         "precision_macro": 0.5, "recall/Neutral": 0.9, "recall/Contempt": 0.0},
        {"model": "bregnet32", "shortcut": "arctan", "depth": 32, "weighted": True,
         "accuracy": 0.6402, "f1_macro": 0.55, "kappa": 0.58, "alpha": 0.57, "mcc": 0.59,
         "ppv": 0.6, "recall/Neutral": 0.7, "recall/Contempt": 0.35},
    ]
    md = ablation_markdown(rows, classes=["Neutral", "Contempt"])
    lines = md.strip().splitlines()
    assert lines[0].startswith("| Model | Shortcut | Depth | Weighting | Acc. % | Macro F1 % | Kappa")
    assert lines[0].endswith("| R Neutral % | R Contempt % |")
    assert len(lines) == 4
    assert lines[2] == ("| resnet32 | identity | 32 | plain | 57.37 | 41.00 | 0.457 | 0.400 | 0.460 "
                        "| 50.00 | 90.00 | 0.00 |")
    assert lines[3] == ("| bregnet32 | arctan | 32 | weighted | 64.02 | 55.00 | 0.580 | 0.570 | 0.590 "
                        "| 60.00 | 70.00 | 35.00 |")


def test_write_json_numpy_nan(tmp_path):
    obj = {"a": np.float32(0.5), "b": np.int64(3), "c": np.array([1.0, np.nan, np.inf]),
           "d": float("nan"), "e": (1, 2), "f": tmp_path, "g": np.bool_(True), 4: "four"}
    path = write_json(obj, tmp_path / "deep" / "out.json")
    text = Path(path).read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data == {"a": 0.5, "b": 3, "c": [1.0, None, None], "d": None, "e": [1, 2],
                    "f": str(tmp_path), "g": True, "4": "four"}
    with pytest.raises(TypeError):
        write_json({"x": object()}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
