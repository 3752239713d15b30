"""Model selection, early stopping, the balanced sampler, FERPlus soft labels, and the demo and
ablation jobs, on tiny models and data (issue 11, parts C and D)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bregnet.data.synthetic import make_synthetic
from bregnet.engine.checkpoint import read_metadata
from bregnet.engine.config import load_config
from bregnet.engine.data import load_split
from bregnet.engine.trainer import Trainer
from bregnet.errors import ConfigError

TINY = ["model.name=bregnext_custom", "model.args={stages: [[1, 8], [1, 16], [1, 16]], stem_width: 8}"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    train = make_synthetic(128, seed=3, split="train", imbalance="none")
    val = make_synthetic(48, seed=3, split="val", imbalance="none")
    return train, val


def cfg_for(task: str, *extra: str) -> dict:
    return load_config("demo", [*TINY, f"task={task}", "train.max_time_s=null", "train.batch_size=32",
                                "train.lr=3e-3", "train.eval_batch_size=64", "train.log_tensorboard=false",
                                *extra])


def fit(cfg: dict, out: Path, train, val) -> tuple[Trainer, dict]:
    trainer = Trainer(cfg, out, train, val, device="cpu", progress=False)
    return trainer, trainer.fit()


# ------------------------------------------------------------------ model selection
@pytest.mark.parametrize("metric, higher", [("va_rmse_mean", False), ("loss", False), ("va_ccc_mean", True)])
def test_select_metric_follows_the_metric_direction(tmp_path, data, metric, higher):
    train, val = data
    trainer, summary = fit(cfg_for("multitask", "train.epochs=3", f"train.select_metric={metric}"),
                           tmp_path, train, val)
    values = [row[f"val_{metric}"] for row in trainer.history]
    assert len(set(values)) == len(values) == 3, values  # distinct: argmin and argmax differ
    expected = int(np.argmax(values) if higher else np.argmin(values)) + 1
    assert summary["best_epoch"] == expected, (values, summary)
    assert summary["best_value"] == pytest.approx(values[expected - 1])
    saved = read_metadata(tmp_path / "best.safetensors")
    assert saved.metrics["epoch"] == expected and saved.extra["epoch"] == expected


def test_select_metric_accuracy_keeps_the_most_accurate_epoch(tmp_path, data):
    train, val = data
    trainer, summary = fit(cfg_for("categorical", "train.epochs=3"), tmp_path, train, val)
    acc = [row["val_accuracy"] for row in trainer.history]
    assert summary["select_metric"] == "accuracy"
    assert summary["best_epoch"] == int(np.argmax(acc)) + 1  # first of the best on a tie


def test_unknown_select_metric_is_refused_before_training(tmp_path, data):
    train, val = data
    cfg = cfg_for("categorical")
    cfg["train"]["select_metric"] = "acuracy"  # hand-edited config that skipped validate()
    with pytest.raises(ConfigError, match="train.select_metric 'acuracy'.*choose one of accuracy"):
        Trainer(cfg, tmp_path, train, val, device="cpu", progress=False)
    assert not (tmp_path / "best.safetensors").exists()


def test_best_checkpoint_exists_even_if_the_metric_is_never_finite(tmp_path, data):
    train, val = data
    one_class = val.subset(np.flatnonzero(val.labels == val.labels[0]))  # AUC undefined: NaN
    with pytest.warns(Warning):
        trainer, summary = fit(cfg_for("categorical", "train.epochs=2", "train.select_metric=auc_roc_macro"),
                               tmp_path, train, one_class)
    assert all(math.isnan(row["val_auc_roc_macro"]) for row in trainer.history)
    assert summary["best_epoch"] is None
    assert read_metadata(tmp_path / "best.safetensors").extra["epoch"] == 2  # the latest stands


# ------------------------------------------------------------------ early stopping
def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, data):
    train, val = data
    trainer, summary = fit(cfg_for("categorical", "train.epochs=8", "train.early_stopping=1"),
                           tmp_path, train, val)
    acc = [row["val_accuracy"] for row in trainer.history]
    # the rule replayed on the recorded history: stop at the first epoch that does not improve
    best, stop = -1.0, None
    for epoch, value in enumerate(acc, 1):
        if value > best:
            best = value
        else:
            stop = epoch
            break
    assert stop is not None and stop < 8, acc  # this seeded run does plateau
    assert summary["status"] == "early-stopped" and summary["epoch"] == stop == len(acc)
    # patience 2 runs longer on the same run (identical first epochs: deterministic on the CPU)
    longer, summary2 = fit(cfg_for("categorical", "train.epochs=8", "train.early_stopping=2"),
                           tmp_path / "p2", train, val)
    assert [r["val_accuracy"] for r in longer.history][:stop] == acc
    assert summary2["epoch"] > stop


def test_early_stopping_without_validation_never_triggers(tmp_path, data):
    train, _ = data
    cfg = cfg_for("categorical", "train.epochs=3", "train.early_stopping=1")
    _, summary = fit(cfg, tmp_path, train, None)
    assert summary["status"] == "finished" and summary["epoch"] == 3
    with pytest.raises(ConfigError, match="early_stopping needs a validation split"):
        load_config("demo", ["train.early_stopping=2", "data.val_split=null"])


# ------------------------------------------------------------------ balanced sampler
def test_balanced_sampler_balances_the_trainers_batches_deterministically(tmp_path):
    train = make_synthetic(400, seed=5, split="train", imbalance="affectnet")
    counts = train.class_counts
    assert counts.max() > 8 * counts.min()  # strongly imbalanced

    class Record:
        def __init__(self):
            self.batches = []

        def on_step(self, trainer, indices, loss):
            self.batches.append(np.asarray(indices).copy())

    def run(seed: int) -> list[np.ndarray]:
        rec = Record()
        cfg = cfg_for("categorical", "train.epochs=2", "train.balanced_sampler=true", "train.batch_size=50",
                      f"train.seed={seed}", "train.augment=false")
        trainer = Trainer(cfg, tmp_path / f"s{seed}-{len(list(tmp_path.iterdir()))}", train, None,
                          device="cpu", progress=False, callbacks=[rec])
        assert trainer.loss_fn.cls_loss.weight is None  # no class weights on top of the sampler
        trainer.fit()
        return rec.batches

    batches = run(0)
    assert len(batches) == 2 * 8  # 400 labelled samples per epoch, batch 50
    labels = train.labels[np.concatenate(batches)]
    freq = np.bincount(labels, minlength=8) / len(labels)
    assert np.abs(freq - 1 / 8).max() < 0.05, freq  # vs 0.006-0.36 in the data
    assert set(np.concatenate(batches).tolist()) > set(np.flatnonzero(train.labels == counts.argmin()))
    again = run(0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, run(1)))
    assert not np.array_equal(batches[0], batches[8])  # a new draw each epoch


# ------------------------------------------------------------------ FERPlus soft labels
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def write_ferplus(root: Path, n_train: int = 16, n_val: int = 8, seed: int = 0) -> Path:
    """fer2013.csv + fer2013new.csv, row-aligned, with random faces and spread-out votes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    fer, plus = ["emotion,pixels,Usage"], [FERPLUS_HEADER]
    for i in range(n_train + n_val):
        usage = "Training" if i < n_train else "PublicTest"
        pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
        fer.append(f"{i % 7},{pixels},{usage}")
        votes = rng.multinomial(10, [0.3, 0.25, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05])  # emotions only
        votes[i % 8] += 6  # a clear plurality, so every row is kept and every class occurs
        plus.append(",".join([usage, f"fer{i:07d}.png", *map(str, votes), "0", "0"]))
    (root / "fer2013.csv").write_text("\n".join(fer) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(plus) + "\n")
    return root


class LossSpy:
    """Wraps the trainer's loss: records the targets each call gets."""

    def __init__(self, inner):
        self.inner, self.targets = inner, []

    def __call__(self, out, targets, va):
        self.targets.append(targets.detach().clone())
        return self.inner(out, targets, va)

    def __getattr__(self, name):
        if name == "inner":  # not set yet (copy.deepcopy builds the object without __init__)
            raise AttributeError(name)
        return getattr(self.inner, name)


@pytest.mark.parametrize("setting", ["auto", "true", "false"])
def test_ferplus_trains_on_the_vote_distributions(tmp_path, setting):
    root = write_ferplus(tmp_path / "ferplus")
    cfg = load_config("bregnext50-fer2013", [
        *TINY, "data.name=ferplus", f"data.root={root}", "train.epochs=1", "train.batch_size=16",
        "train.weighting=none", "train.augment=false", f"train.soft_labels={setting}",
        "train.log_tensorboard=false", "train.eval_batch_size=16", "train.amp=off"])
    train, val = load_split(cfg["data"], "train", progress=False), load_split(cfg["data"], "val", progress=False)
    assert train.has_soft_labels and len(train) == 16 and (train.class_counts > 0).all()
    trainer = Trainer(cfg, tmp_path / "run", train, val, device="cpu", progress=False)
    torch.nn.init.normal_(trainer.model.fc.weight, std=1.0)  # spread the logits (init: near uniform)
    before = copy.deepcopy(trainer.model)  # the weights the single step sees
    spy = LossSpy(trainer.loss_fn)
    trainer.loss_fn = spy
    losses: list[float] = []
    indices: list[np.ndarray] = []

    class Record:
        def on_step(self, tr, idx, loss):
            indices.append(np.asarray(idx).copy())
            losses.append(loss)

    trainer.callbacks.append(Record())
    trainer.fit()
    assert len(losses) == 1
    idx = indices[0]
    images, hard, _ = train.batch(idx)
    votes = torch.from_numpy(train.soft_labels[idx])
    with torch.no_grad():
        logits = before.train()(trainer.preprocess.normalize(images))
    soft_ce = float(-(votes / votes.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean())
    hard_ce = float(F.cross_entropy(logits, hard))
    assert abs(soft_ce - hard_ce) > 1e-3  # the two targets give different losses
    if setting == "false":
        assert spy.targets[0].ndim == 1 and torch.equal(spy.targets[0], hard)
        assert losses[0] == pytest.approx(hard_ce, rel=1e-5)
    else:
        assert spy.targets[0].shape == (16, 8)
        torch.testing.assert_close(spy.targets[0], votes)
        assert losses[0] == pytest.approx(soft_ce, rel=1e-5)
    # evaluation stays on the hard labels
    assert "val_accuracy" in trainer.history[0]


def test_soft_labels_true_without_distributions_is_a_config_error(tmp_path, data):
    train, val = data
    with pytest.raises(ConfigError, match="soft_labels=true but synthetic/train has no label distributions"):
        Trainer(cfg_for("categorical", "train.soft_labels=true"), tmp_path, train, val, device="cpu",
                progress=False)


# ------------------------------------------------------------------ demo and ablation jobs
SMALL_DATA = ["data.sizes={train: 96, val: 32, test: 32}", "train.epochs=1", "train.batch_size=32",
              "train.eval_batch_size=32", "train.log_tensorboard=false"]


def test_run_demo_tiny(tmp_path):
    from bregnet.engine.runs import run_demo

    out = tmp_path / "demo"
    metrics = run_demo(out, seed=2, progress=False,
                       overrides=["model.args={stages: [[1, 8], [1, 16], [1, 16], [1, 16]], stem_width: 8}",
                                  *SMALL_DATA])
    assert metrics["train_status"] == "finished" and metrics["epochs"] == 1 and metrics["steps"] == 3
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["valence_rmse"])
    assert metrics["chance_accuracy"] == pytest.approx(1 / 8)
    for name in ("metrics.json", "metrics.md", "train_summary.json", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    meta = read_metadata(out / "run" / "best.safetensors")
    assert meta.model_name == "bregnext_custom"  # the demo's network has its own name
    assert meta.model_args["stages"] == [[1, 8], [1, 16], [1, 16], [1, 16]]
    assert meta.dataset["synthetic"] is True and meta.recipe["data"]["options"]["seed"] == 2


def test_run_ablation_tiny_names_each_network_by_what_it_is(tmp_path):
    from bregnet.engine.runs import run_ablation

    out = tmp_path / "abl"
    rows = run_ablation("demo", out, depths=(10,), families=("resnet", "bregnext"), weightings=("none",),
                        overrides=["model.args={stages: [[1, 8], [1, 16], [1, 16], [1, 16]], stem_width: 8}",
                                   *SMALL_DATA],
                        width_scale=0.5, progress=False, device="cpu")
    assert [(r["model"], r["weighting"], r["shortcut"]) for r in rows] == [
        ("resnet10", "none", "identity"), ("bregnext10", "none", "adaptive")]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["steps"] == 3 for r in rows)
    assert rows[0]["layout"] == "4x8x8x8 n=1"
    table = json.loads((out / "ablation.json").read_text())
    assert [r["model"] for r in table] == ["resnet10", "bregnext10"]
    assert "resnet10" in (out / "ablation.md").read_text()
    for family, shortcut in (("resnet", "identity"), ("bregnext", "adaptive")):
        meta = read_metadata(out / f"{family}10-none" / "best.safetensors")
        assert meta.model_name == f"{family}_custom"  # never "{family}32" for a 4-unit network
        assert meta.model_args["stages"] == [[1, 4], [1, 8], [1, 8], [1, 8]]
        assert meta.model_args["shortcut"] == shortcut and meta.model_args["stem_stride"] == 2
