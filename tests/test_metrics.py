"""Metrics against scikit-learn, scipy and the krippendorff package (to 1e-9), plus edge cases."""

from __future__ import annotations

import math
import warnings

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from bregnet.metrics import (
    METRICS,
    MetricWarning,
    accuracy,
    all_metrics,
    average_precision_binary,
    average_precision_ovr,
    categorical_metrics,
    ccc,
    cohen_kappa,
    confusion_matrix,
    dimensional_metrics,
    krippendorff_alpha_nominal,
    matthews_corrcoef,
    pearson,
    precision_recall_f1,
    rmse,
    roc_auc_binary,
    roc_auc_ovr,
    sagr,
)

TOL = 1e-9
K = 5
SCENARIOS = ("balanced", "imbalanced", "missing_class", "ties", "ignored", "tiny")


def make_data(scenario: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and probabilities (N, K), correlated so that metrics are far from chance."""
    rng = np.random.default_rng(seed)
    n = 12 if scenario == "tiny" else 300
    prior = np.ones(K) / K
    if scenario in ("imbalanced", "missing_class"):
        prior = np.array([0.55, 0.25, 0.12, 0.06, 0.02])
    if scenario == "missing_class":
        prior = np.r_[prior[:-1], 0.0] / prior[:-1].sum()
    y = rng.choice(K, size=n, p=prior)
    logits = rng.normal(size=(n, K))
    logits[np.arange(n), y] += rng.uniform(0.0, 2.5)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if scenario == "ties":  # coarse scores: many exact ties inside each column
        probs = np.round(probs, 1)
    if scenario == "ignored":
        y[rng.random(n) < 0.2] = -1
    return y, probs


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL


def assert_close(a: float, b: float, what: str = "") -> None:
    assert close(float(a), float(b)), f"{what}: {a!r} != {b!r}"


def sklearn_reference(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The same numbers from scikit-learn / krippendorff, in categorical_metrics' keys."""
    keep = y != -1
    y, probs = y[keep], probs[keep]
    pred = probs.argmax(axis=1)
    labels = list(range(K))
    ref: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref["accuracy"] = skm.accuracy_score(y, pred)
        ref["balanced_accuracy"] = skm.balanced_accuracy_score(y, pred)
        for avg in ("macro", "weighted"):
            ref[f"f1_{avg}"] = skm.f1_score(y, pred, labels=labels, average=avg,
                                           zero_division=np.nan)
        ref["precision_macro"] = skm.precision_score(y, pred, labels=labels, average="macro",
                                                     zero_division=np.nan)
        ref["recall_macro"] = skm.recall_score(y, pred, labels=labels, average="macro",
                                               zero_division=np.nan)
        ref["kappa"] = skm.cohen_kappa_score(y, pred)
        ref["mcc"] = skm.matthews_corrcoef(y, pred)
        ref["alpha"] = krippendorff.alpha(reliability_data=np.vstack([y, pred]).astype(float),
                                          level_of_measurement="nominal")
        p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels,
                                                         zero_division=np.nan)
        rocs, aps = [], []
        for c in labels:
            ref[f"precision/{c}"], ref[f"recall/{c}"], ref[f"f1/{c}"] = p[c], r[c], f[c]
            ref[f"support/{c}"] = s[c]
            pos = y == c
            defined_roc = 0 < pos.sum() < len(y)
            rocs.append(skm.roc_auc_score(pos, probs[:, c]) if defined_roc else np.nan)
            aps.append(skm.average_precision_score(pos, probs[:, c]) if pos.any() else np.nan)
            ref[f"auc_roc/{c}"], ref[f"auc_pr/{c}"] = rocs[-1], aps[-1]
        ref["auc_roc_macro"] = float(np.nanmean(rocs))
        ref["auc_pr_macro"] = float(np.nanmean(aps))
    ref["n"] = len(y)
    return ref


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_categorical_metrics_match_sklearn_and_krippendorff(scenario: str, seed: int) -> None:
    y, probs = make_data(scenario, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        got = categorical_metrics(y, probs)
    ref = sklearn_reference(y, probs)
    assert set(ref) == set(got)
    for key, value in ref.items():
        assert_close(got[key], value, f"{scenario}/{seed} {key}")


@pytest.mark.parametrize("seed", range(3))
def test_macro_aucs_match_sklearn_multiclass_calls(seed: int) -> None:
    y, probs = make_data("imbalanced", seed)
    assert set(np.unique(y)) == set(range(K))
    assert_close(roc_auc_ovr(y, probs),
                 skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), "roc")
    assert_close(average_precision_ovr(y, probs),
                 skm.average_precision_score(label_binarize(y, classes=range(K)), probs,
                                             average="macro"), "ap")


@pytest.mark.parametrize("seed", range(3))
def test_scalar_functions_and_table_agree_with_the_dict(seed: int) -> None:
    y, probs = make_data("imbalanced", seed)
    pred = probs.argmax(axis=1)
    full = categorical_metrics(y, probs)
    for name in ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro",
                 "recall_macro", "kappa", "alpha", "mcc"):
        assert_close(METRICS[name](y, pred), full[name], name)
    for name in ("auc_roc_macro", "auc_pr_macro"):
        assert_close(METRICS[name](y, probs), full[name], name)
    np.testing.assert_array_equal(confusion_matrix(y, pred, K),
                                  skm.confusion_matrix(y, pred, labels=list(range(K))))
    p, r, f, s = precision_recall_f1(y, pred, K)
    assert s.dtype == np.int64 and s.sum() == len(y)


def test_confusion_matrix_orientation_and_ignored_labels() -> None:
    cm = confusion_matrix([0, 0, 1, -1, 2], [1, 1, 1, 0, 2], num_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 1], expected[1, 1], expected[2, 2] = 2, 1, 1  # rows: truth, columns: prediction
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=2, max_size=40))
def test_binary_auc_and_ap_handle_ties_like_sklearn(pairs: list[tuple[bool, int]]) -> None:
    y = np.array([a for a, _ in pairs])
    score = np.array([b for _, b in pairs], dtype=float) / 4.0  # five levels: heavy ties
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if 0 < y.sum() < len(y):
            assert_close(roc_auc_binary(y, score), skm.roc_auc_score(y, score), "roc")
        else:
            assert math.isnan(roc_auc_binary(y, score))
        if y.any():
            assert_close(average_precision_binary(y, score),
                         skm.average_precision_score(y, score), "ap")
        else:
            assert math.isnan(average_precision_binary(y, score))


def test_auc_hand_example_with_ties() -> None:
    # positives score 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4 -> 1/2,
    # 0.4>0.1) give AUC = 3.5 / 4
    assert roc_auc_binary([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875, abs=1e-12)
    # thresholds 0.8 (P=1, R=1/2) and 0.4 (P=2/3, R=1): AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision_binary([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(
        5 / 6, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_alpha_matches_krippendorff_with_absent_classes(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y = rng.choice([0, 2, 5], size=80, p=[0.7, 0.2, 0.1])
    pred = np.where(rng.random(80) < 0.6, y, rng.choice([0, 1, 2, 5], size=80))
    ref = krippendorff.alpha(np.vstack([y, pred]).astype(float), level_of_measurement="nominal")
    assert_close(krippendorff_alpha_nominal(y, pred), ref, "alpha")


def test_stable_key_names_and_class_names() -> None:
    y, probs = make_data("balanced", 0)
    names = ["neutral", "happy", "sad", "surprise", "fear"]
    got = categorical_metrics(y, probs, class_names=names)
    summary = ["accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro",
               "recall_macro", "kappa", "alpha", "mcc", "auc_roc_macro", "auc_pr_macro", "n"]
    per_class = [f"{p}/{c}" for c in names
                 for p in ("precision", "recall", "f1", "auc_roc", "auc_pr", "support")]
    assert list(got) == summary + per_class
    assert isinstance(got["n"], int) and isinstance(got["support/happy"], int)
    assert all(isinstance(v, (int, float)) for v in got.values())


# ------------------------------------------------------------------------------------------------
# degenerate categorical input


def test_missing_class_gives_nan_and_warns() -> None:
    y, probs = make_data("missing_class", 1)
    with pytest.warns(MetricWarning, match=r"classes \[4\] absent from the ground truth"):
        got = categorical_metrics(y, probs)
    assert math.isnan(got["recall/4"]) and math.isnan(got["auc_roc/4"])
    assert math.isnan(got["auc_pr/4"]) and got["support/4"] == 0
    defined = [got[f"recall/{c}"] for c in range(4)]
    assert_close(got["recall_macro"], float(np.mean(defined)), "macro over defined classes")
    assert not math.isnan(got["auc_roc_macro"])


def test_constant_predictions() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    probs = np.tile([0.6, 0.3, 0.1], (len(y), 1))  # always class 0, every score tied
    with pytest.warns(MetricWarning, match="never predicted"):
        got = categorical_metrics(y, probs)
    assert got["mcc"] == 0.0 == skm.matthews_corrcoef(y, np.zeros_like(y))
    assert_close(got["kappa"], skm.cohen_kappa_score(y, np.zeros_like(y)), "kappa")
    assert math.isnan(got["precision/1"]) and got["recall/1"] == 0.0
    assert got["auc_roc_macro"] == 0.5  # a constant score ranks nothing
    assert got["accuracy"] == pytest.approx(3 / 7)


def test_single_class_everywhere() -> None:
    y = np.zeros(6, dtype=int)
    probs = np.tile([0.9, 0.1], (6, 1))
    with pytest.warns(MetricWarning) as record:
        got = categorical_metrics(y, probs)
    message = str(record[0].message)
    assert "kappa undefined" in message and "alpha undefined" in message
    assert math.isnan(got["kappa"]) and math.isnan(got["alpha"])
    assert math.isnan(got["auc_roc/0"]) and got["auc_pr/0"] == 1.0
    assert got["accuracy"] == 1.0 and got["mcc"] == 0.0
    assert len(record) == 1  # one warning listing every reason, not one per metric


@pytest.mark.parametrize("y", [np.zeros(0, dtype=int), np.full(4, -1)])
def test_empty_input_is_all_nan_with_a_warning(y: np.ndarray) -> None:
    probs = np.full((len(y), 3), 1 / 3)
    with pytest.warns(MetricWarning, match="empty"):
        got = categorical_metrics(y, probs, class_names=["a", "b", "c"])
    assert got["n"] == 0 and got["support/a"] == 0
    assert all(math.isnan(v) for k, v in got.items() if k != "n" and not k.startswith("support"))
    with pytest.warns(MetricWarning):
        assert math.isnan(accuracy([], []))
    with pytest.warns(MetricWarning):
        assert math.isnan(cohen_kappa([], []))
    with pytest.warns(MetricWarning):
        assert math.isnan(matthews_corrcoef([-1], [0]))


def test_logits_trigger_a_warning() -> None:
    y, probs = make_data("balanced", 0)
    with pytest.warns(MetricWarning, match="logits"):
        categorical_metrics(y, np.log(probs))


@pytest.mark.parametrize(
    ("y", "probs", "kwargs", "match"),
    [
        (np.zeros(3, int), np.full((4, 2), 0.5), {}, "differ in length"),
        (np.zeros((3, 1), int), np.full((3, 2), 0.5), {}, "1-D"),
        (np.zeros(3, int), np.full(3, 0.5), {}, "2-D"),
        (np.array([0, 2, 1]), np.full((3, 2), 0.5), {}, "must lie in"),
        (np.array([0, -2, 1]), np.full((3, 2), 0.5), {}, "must lie in"),
        (np.array([0.5, 1, 0]), np.full((3, 2), 0.5), {}, "integer"),
        (np.zeros(3, int), np.array([[np.nan, 1], [0, 1], [0, 1]]), {}, "NaN"),
        (np.zeros(3, int), np.full((3, 2), 0.5), {"class_names": ["a"]}, "class_names"),
    ],
)
def test_malformed_categorical_input_raises(y: np.ndarray, probs: np.ndarray, kwargs: dict,
                                            match: str) -> None:
    with pytest.raises(ValueError, match=match):
        categorical_metrics(y, probs, **kwargs)


def test_label_function_shape_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        cohen_kappa([0, 1], [0])
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix([0, 1], [0, 3], num_classes=2)


# ------------------------------------------------------------------------------------------------
# dimensional


def direct_ccc(t: np.ndarray, p: np.ndarray) -> float:
    """Lin (1989): 2 s_tp / (s_t^2 + s_p^2 + (mean_t - mean_p)^2), moments divided by n."""
    n = len(t)
    mt, mp = sum(t) / n, sum(p) / n
    s_tp = sum((a - mt) * (b - mp) for a, b in zip(t, p)) / n
    s_t = sum((a - mt) ** 2 for a in t) / n
    s_p = sum((b - mp) ** 2 for b in p) / n
    return 2 * s_tp / (s_t + s_p + (mt - mp) ** 2)


def direct_sagr(t: np.ndarray, p: np.ndarray) -> float:
    def sign(v: float) -> int:
        return int(v > 0) - int(v < 0)

    return sum(sign(a) == sign(b) for a, b in zip(t, p)) / len(t)


@pytest.mark.parametrize("seed", range(4))
def test_dimensional_metrics_against_references(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    true = np.clip(rng.normal(0.1, 0.4, size=(n, 2)), -1, 1)
    pred = np.clip(0.6 * true + rng.normal(0.05, 0.25, size=(n, 2)), -1, 1)
    true[:5, 0] = 0.0  # exact zeros exercise the sign convention
    pred[:3, 0] = 0.0
    true[rng.random(n) < 0.1, 0] = np.nan  # missing valence
    true[rng.random(n) < 0.3, 1] = np.nan  # missing arousal (more often)
    got = dimensional_metrics(true, pred)
    for j, name in enumerate(("valence", "arousal")):
        keep = ~np.isnan(true[:, j])
        t, p = true[keep, j], pred[keep, j]
        assert got[f"n_{name}"] == keep.sum()
        assert_close(got[f"{name}_rmse"], math.sqrt(skm.mean_squared_error(t, p)), "rmse")
        assert_close(got[f"{name}_corr"], stats.pearsonr(t, p)[0], "corr")
        assert_close(got[f"{name}_ccc"], direct_ccc(t, p), "ccc")
        assert_close(got[f"{name}_sagr"], direct_sagr(t, p), "sagr")
        assert_close(rmse(true[:, j], pred[:, j]), got[f"{name}_rmse"], "rmse fn")
        assert_close(METRICS["ccc"](true[:, j], pred[:, j]), got[f"{name}_ccc"], "ccc fn")
    assert_close(got["va_rmse_mean"], (got["valence_rmse"] + got["arousal_rmse"]) / 2, "mean")
    assert_close(got["va_ccc_mean"], (got["valence_ccc"] + got["arousal_ccc"]) / 2, "mean")
    assert list(got) == ["valence_rmse", "valence_corr", "valence_sagr", "valence_ccc",
                         "arousal_rmse", "arousal_corr", "arousal_sagr", "arousal_ccc",
                         "n_valence", "n_arousal", "va_rmse_mean", "va_ccc_mean"]


def test_sagr_zero_convention_and_ccc_hand_values() -> None:
    assert sagr([0.0, 0.5, -0.5, 0.0], [0.0, 0.1, 0.2, 0.01]) == 0.5
    assert ccc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    # t = (-1, 1), p = (1, -1): cov -1, variances 1 -> CCC = -2 / 2
    assert ccc([-1.0, 1.0], [1.0, -1.0]) == pytest.approx(-1.0)
    # a shift lowers CCC but not Pearson: t = (0, 1), p = t + 1: 2*0.25 / (0.25 + 0.25 + 1)
    assert ccc([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1 / 3)
    assert pearson([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1.0)


def test_dimensional_degenerate_cases() -> None:
    t = np.array([0.1, -0.2, 0.3, 0.4])
    with pytest.warns(MetricWarning, match="constant"):
        assert math.isnan(pearson(t, np.full(4, 0.2)))
    assert ccc(t, np.full(4, 0.2)) == 0.0  # defined: zero covariance over a positive denominator
    with pytest.warns(MetricWarning, match="same constant"):
        assert math.isnan(ccc(np.full(3, 0.5), np.full(3, 0.5)))
    with pytest.warns(MetricWarning, match="empty"):
        assert math.isnan(rmse([np.nan, np.nan], [0.1, 0.2]))
    va_true = np.array([[0.1, np.nan], [0.3, np.nan], [-0.5, np.nan]])
    with pytest.warns(MetricWarning, match="no arousal annotation"):
        got = dimensional_metrics(va_true, np.zeros((3, 2)))
    assert got["n_arousal"] == 0 and math.isnan(got["arousal_rmse"])
    assert got["va_rmse_mean"] == got["valence_rmse"]  # mean over the defined dimensions
    with pytest.warns(MetricWarning):
        empty = dimensional_metrics(np.zeros((0, 2)), np.zeros((0, 2)))
    assert all(math.isnan(v) for k, v in empty.items() if not k.startswith("n_"))


def test_dimensional_shape_and_value_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        dimensional_metrics(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape of true"):
        dimensional_metrics(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        dimensional_metrics(np.zeros((2, 2)), np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="differ in length"):
        rmse([0.0, 1.0], [0.0])


def test_all_metrics_merges_both_and_checks_pairs() -> None:
    y, probs = make_data("balanced", 3)
    rng = np.random.default_rng(3)
    va = rng.uniform(-1, 1, size=(len(y), 2))
    merged = all_metrics(y, probs, va, va * 0.5, class_names=list("abcde"))
    assert set(merged) == (set(categorical_metrics(y, probs, list("abcde")))
                           | set(dimensional_metrics(va, va * 0.5)))
    assert all_metrics(va_true=va, va_pred=va)["valence_ccc"] == pytest.approx(1.0)
    assert all_metrics() == {}
    with pytest.raises(ValueError, match="both y_true and probs"):
        all_metrics(y_true=y)
    with pytest.raises(ValueError, match="both va_true and va_pred"):
        all_metrics(va_pred=va)
