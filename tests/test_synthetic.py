"""The synthetic default data set (issue: data, item 2)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from bregnet.data.base import ArrayDataset
from bregnet.data.synthetic import (
    AFFECTNET_CLASSES,
    SyntheticReader,
    class_proportions,
    make_synthetic,
    preview_grid,
    synthetic_labels,
)
from bregnet.errors import DataError


@pytest.fixture(scope="module")
def balanced() -> ArrayDataset:
    return make_synthetic(400, seed=5, imbalance="none", split="train")


def test_classes_are_affectnet_order():
    assert AFFECTNET_CLASSES == ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]


def test_default_proportions_are_affectnets():
    # AffectNet (thousands): Neutral 75, Happy 134, Sad 25, Surprise 14, Fear 6, Disgust 4, Anger 25, Contempt 4
    labels = synthetic_labels(28700, seed=0)
    counts = np.bincount(labels, minlength=8)
    assert counts.tolist() == [7500, 13400, 2500, 1400, 600, 400, 2500, 400]
    assert counts.sum() == 28700


def test_balanced_and_explicit_proportions():
    assert np.bincount(synthetic_labels(800, imbalance="none"), minlength=8).tolist() == [100] * 8
    w = [1, 0, 0, 0, 0, 0, 0, 3]
    assert np.bincount(synthetic_labels(40, imbalance=w), minlength=8).tolist() == [10, 0, 0, 0, 0, 0, 0, 30]
    assert class_proportions("affectnet").sum() == pytest.approx(1.0)


def test_small_n_still_has_every_class():
    counts = np.bincount(synthetic_labels(20, seed=1), minlength=8)
    assert counts.sum() == 20 and (counts >= 1).all()


def test_dataset_contract_and_naming(balanced):
    ds = balanced
    assert ds.name == "synthetic" and ds.meta["synthetic"] is True
    assert ds.images.shape == (400, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.classes == AFFECTNET_CLASSES
    assert ds.class_counts.tolist() == [50] * 8
    assert np.isfinite(ds.va).all() and (np.abs(ds.va) <= 1).all()
    # real images, not blanks: every image has contrast, and images differ from each other
    assert (ds.images.reshape(400, -1).std(1) > 10).all()
    assert len({hashlib.sha1(im.tobytes()).hexdigest() for im in ds.images}) == 400


def test_deterministic_by_seed_and_split():
    a = make_synthetic(24, seed=7)
    b = make_synthetic(24, seed=7)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.va, b.va)
    c = make_synthetic(24, seed=8)
    assert not np.array_equal(a.images, c.images)
    v = make_synthetic(24, seed=7, split="val")
    assert not np.array_equal(a.images, v.images)


def _digest(ds: ArrayDataset) -> str:
    h = hashlib.sha256()
    for arr in (ds.images, ds.labels, ds.va):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def test_deterministic_across_processes():
    code = ("import hashlib, numpy as np; from bregnet.data.synthetic import make_synthetic as m; "
            "d = m(12, seed=3, split='test'); h = hashlib.sha256(); "
            "[h.update(np.ascontiguousarray(a).tobytes()) for a in (d.images, d.labels, d.va)]; "
            "print(h.hexdigest())")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == _digest(make_synthetic(12, seed=3, split="test"))


def test_reader_load_equals_make_synthetic():
    ds = make_synthetic(30, seed=2, split="val", difficulty=0.3)
    reader = SyntheticReader(None, "val", n=30, seed=2, difficulty=0.3)
    assert len(reader) == 30 and reader.classes == AFFECTNET_CLASSES
    assert np.array_equal(reader.labels(), ds.labels)
    assert np.array_equal(reader.class_counts, ds.class_counts)
    for i in (0, 7, 29):
        s = reader.load(i)
        assert np.array_equal(s.image, ds.images[i])
        assert s.label == ds.labels[i]
        assert (s.valence, s.arousal) == pytest.approx(tuple(ds.va[i]))
    assert np.allclose(reader.va(), ds.va)
    with pytest.raises(IndexError):
        reader.load(30)


def test_reader_options_from_strings_and_defaults():
    r = SyntheticReader(None, "test", n="10", seed="4", difficulty="0.2", imbalance="none")
    assert len(r) == 10 and r.seed == 4 and r.difficulty == pytest.approx(0.2)
    assert r.options == {"n": 10, "seed": 4, "difficulty": 0.2, "size": 64, "imbalance": "none"}
    assert len(SyntheticReader(None, "train")) == 20000
    assert "synthetic" in r.source(3)


@pytest.mark.parametrize("kwargs, message", [
    ({"difficulty": 1.5}, "difficulty"),
    ({"difficulty": "hard"}, "difficulty"),
    ({"imbalance": "zipf"}, "imbalance"),
    ({"seed": -1}, "seed"),
    ({"n": -3}, "n must be"),
    ({"colour": 1}, "unknown option"),
])
def test_bad_options_are_data_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        SyntheticReader(None, "train", **{"n": 5, **kwargs})


def test_bad_split():
    with pytest.raises(DataError, match="split"):
        SyntheticReader(None, "validation")
    with pytest.raises(DataError, match="split"):
        make_synthetic(3, split="dev")


def test_registry_opens_synthetic_without_root():
    registry = pytest.importorskip("bregnet.data.registry")
    r = registry.open_reader("synthetic", None, "train", n=6)
    assert isinstance(r, SyntheticReader) and len(r) == 6


def test_valence_arousal_follow_the_circumplex():
    ds = make_synthetic(1600, seed=11, imbalance="none")
    v = {c: ds.va[ds.labels == i, 0].mean() for i, c in enumerate(AFFECTNET_CLASSES)}
    a = {c: ds.va[ds.labels == i, 1].mean() for i, c in enumerate(AFFECTNET_CLASSES)}
    assert abs(v["Neutral"]) < 0.05 and abs(a["Neutral"]) < 0.05
    assert v["Happy"] > 0.4
    assert v["Sad"] < -0.3 and a["Sad"] < -0.2
    assert a["Surprise"] > 0.4 and abs(v["Surprise"]) < 0.3
    assert v["Fear"] < -0.3 and a["Fear"] > 0.4
    assert v["Disgust"] < -0.4
    assert v["Anger"] < -0.3 and a["Anger"] > 0.3
    assert -0.35 < v["Contempt"] < -0.05
    # intensity is tied to VA: farther from the origin on average than Neutral, for every emotion
    r = np.hypot(ds.va[:, 0], ds.va[:, 1])
    for i in range(1, 8):
        assert r[ds.labels == i].mean() > 2 * r[ds.labels == 0].mean()


def test_difficulty_widens_variation():
    easy = make_synthetic(300, seed=1, imbalance="none", difficulty=0.0)
    hard = make_synthetic(300, seed=1, imbalance="none", difficulty=1.0)
    # VA spread within a class grows with difficulty
    def spread(ds):
        return np.mean([ds.va[ds.labels == c].std(0).mean() for c in range(1, 8)])
    assert spread(hard) > spread(easy)


def test_faces_are_centred_and_expressions_differ(balanced):
    ds = balanced
    gray = ds.images.astype(np.float32).mean(3)
    # mouth region (lower centre) of Happy/Surprise/Fear differs more from Neutral than Neutral from itself
    mouth = gray[:, 38:52, 22:42].reshape(len(ds), -1)
    edges = np.abs(np.diff(mouth.reshape(-1, 14, 20), axis=1)).mean((1, 2))
    assert edges[ds.labels == 3].mean() > edges[ds.labels == 0].mean()  # open mouth of surprise


def test_preview_grid_writes_png(tmp_path, balanced):
    path = preview_grid(balanced, tmp_path / "grid.png", per_class=4)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 8 * 64 and img.shape[1] > 4 * 64


def test_workers_give_the_same_result():
    a = make_synthetic(1100, seed=9, split="val", workers=1)
    b = make_synthetic(1100, seed=9, split="val", workers=2)
    assert _digest(a) == _digest(b)
