"""Training loop, resume, divergence guard, evaluation, recipes, CLI errors (training issue)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bregnet.cli import main
from bregnet.data.synthetic import make_synthetic
from bregnet.engine.checkpoint import load_checkpoint, read_metadata
from bregnet.engine.config import list_recipes, load_config
from bregnet.engine.data import label_mapping, remap_to_model
from bregnet.engine.evaluate import evaluate_checkpoint
from bregnet.engine.trainer import Trainer, TrainingDiverged, staircase_lr
from bregnet.errors import BregnetError

TINY = ["model.name=bregnext32", "model.args={stages: [[1, 8], [1, 16], [1, 16]], stem_width: 8}"]


@pytest.fixture(scope="module")
def data():
    train = make_synthetic(192, seed=1, split="train", imbalance="none")
    val = make_synthetic(64, seed=1, split="val", imbalance="none")
    return train, val


def cfg_for(task="categorical", *extra):
    return load_config("demo", [*TINY, f"task={task}", "train.max_time_s=null", "train.batch_size=32",
                                "train.lr=3e-3", "train.eval_batch_size=64", *extra])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_shipped_recipe_loads():
    names = list_recipes()
    for expected in ("bregnext50-affectnet", "bregnext50-affectnet-va", "bregnext50-fer2013",
                     "bregnext50-affectnet-multitask", "demo", *[f"{f}{d}-fer2013" for f in ("resnet", "bregnet")
                                                                  for d in (32, 56, 110)]):
        assert expected in names
    for name in names:
        cfg = load_config(name)
        assert cfg["train"]["batch_size"] >= 1
    assert load_config("resnet56-fer2013")["model"]["name"] == "resnet56"
    assert load_config("bregnext50-affectnet-va")["task"] == "dimensional"
    paper = load_config("bregnext50-affectnet")["train"]
    assert (paper["lr"], paper["lr_decay"], paper["lr_decay_steps"], paper["batch_size"]) == (1e-4, 0.8, 8000, 64)


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(BregnetError, match="unknown config key 'train.lr_rate'"):
        load_config("demo", ["train.lr_rate=1"])
    with pytest.raises(BregnetError, match="unknown recipe"):
        load_config("no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1,\n")
    with pytest.raises(BregnetError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(bad)
    with pytest.raises(BregnetError, match="train.optimizer"):
        load_config("demo", ["train.optimizer=sgd"])


def test_staircase_schedule():
    assert staircase_lr(1e-4, 7999, 0.8, 8000) == 1e-4
    assert staircase_lr(1e-4, 8000, 0.8, 8000) == pytest.approx(8e-5)
    assert staircase_lr(1e-4, 24000, 0.8, 8000) == pytest.approx(1e-4 * 0.8**3)


def test_short_training_lowers_the_loss_and_writes_checkpoints(tmp_path, data):
    train, val = data
    cfg = cfg_for("multitask", "train.epochs=4")
    trainer = Trainer(cfg, tmp_path, train, val, device="cpu", progress=False)
    summary = trainer.fit()
    assert summary["status"] == "finished" and summary["epoch"] == 4
    from bregnet.engine.memory import keep_freed_memory, malloc_plan
    assert trainer.allocator == keep_freed_memory()  # CPU training tuned the allocator
    if malloc_plan() is None and sys.platform.startswith("linux"):
        assert trainer.allocator.startswith("freed memory kept for reuse"), trainer.allocator
    losses = [row["train_loss"] for row in trainer.history]
    assert losses[-1] < losses[0] * 0.99, losses  # seen: 2.235 -> 2.173 (deterministic on CPU)
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "history.csv", "config.yaml"):
        assert (tmp_path / name).is_file(), name
    gens = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert gens == ["000003-step-18", "000004-step-24"], gens  # the newest two of 4 saves are kept
    for name in ("model.safetensors", "best.safetensors", "state.pt", "manifest.json"):
        assert (tmp_path / "checkpoints" / gens[-1] / name).is_file(), name
    assert sha(tmp_path / "last.safetensors") == sha(tmp_path / "checkpoints" / gens[-1] / "model.safetensors")
    meta = read_metadata(tmp_path / "best.safetensors")
    assert meta.labels == train.classes and meta.va
    assert meta.recipe["train"]["lr"] == 3e-3
    assert meta.dataset["synthetic"] is True
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "val_accuracy", "val_valence_ccc", "lr"} <= set(header)


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, indices, loss):
        if trainer.step == self.step:
            trainer.request_stop()


def test_interrupted_then_resumed_run_ends_with_identical_weights(tmp_path, data):
    train, val = data  # 192 images, batch 32 -> 6 steps per epoch; stop mid-epoch 2
    cfg = cfg_for("categorical", "train.epochs=2")
    full = Trainer(cfg, tmp_path / "full", train, val, device="cpu", progress=False)
    full.fit()
    part = Trainer(cfg, tmp_path / "part", train, val, device="cpu", progress=False, callbacks=[StopAt(8)])
    assert part.fit()["status"] == "interrupted"
    assert part.step == 8
    resumed = Trainer(cfg, tmp_path / "part", train, val, device="cpu", progress=False)
    resumed.resume()
    assert (resumed.step, resumed.epoch, resumed.step_in_epoch) == (8, 1, 2)
    assert resumed.fit()["status"] == "finished"
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert full.optimizer.state_dict()["state"][0]["step"] == resumed.optimizer.state_dict()["state"][0]["step"]
    assert [r["val_accuracy"] for r in full.history] == [r["val_accuracy"] for r in resumed.history]


class NaNAfter:
    """Pre-processing that returns NaN from the k-th batch on (a poisoned batch)."""

    def __init__(self, inner, k):
        self.inner, self.k, self.calls = inner, k, 0

    def normalize(self, images):
        self.calls += 1
        x = self.inner.normalize(images)
        return x * float("nan") if self.calls == self.k else x

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_nan_batch_stops_training_and_keeps_last_good_checkpoint(tmp_path, data):
    train, val = data
    cfg = cfg_for("categorical", "train.epochs=3")
    trainer = Trainer(cfg, tmp_path, train, val, device="cpu", progress=False)
    trainer.preprocess = NaNAfter(trainer.preprocess, k=6 + 3)  # 6 train steps + 1 val pass, then step 2 of epoch 2
    trainer.tcfg["epochs"] = 1
    trainer.fit()
    names = ("last.safetensors", "best.safetensors", "checkpoints/000001-step-6/state.pt")
    before = {n: sha(tmp_path / n) for n in names}
    trainer.tcfg["epochs"] = 3
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 7 .*newest finite checkpoint is "
                                               r".*000001-step-6 \(step 6, epoch 1\)"):
        trainer.fit()
    assert before == {n: sha(tmp_path / n) for n in before}
    model, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_evaluate_writes_every_metric_and_plot(tmp_path, data):
    train, val = data
    cfg = cfg_for("multitask", "train.epochs=1")
    Trainer(cfg, tmp_path / "run", train, val, device="cpu", progress=False).fit()
    data_cfg = dict(cfg["data"], sizes={"test": 96}, options={"seed": 1, "imbalance": "none"})
    metrics = evaluate_checkpoint(tmp_path / "run" / "best.safetensors", data_cfg, "test", tmp_path / "eval",
                                  progress=False)
    expected = {"accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro",
                "kappa", "alpha", "mcc", "auc_roc_macro", "auc_pr_macro", "ece",
                "valence_rmse", "valence_corr", "valence_sagr", "valence_ccc",
                "arousal_rmse", "arousal_corr", "arousal_sagr", "arousal_ccc"}
    assert expected <= set(metrics)
    for c in train.classes:
        assert f"recall/{c}" in metrics and f"f1/{c}" in metrics
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert expected <= set(saved)
    for png in ("confusion_matrix.png", "per_class_f1.png", "reliability.png", "valence_arousal.png", "faces.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 1000, png
    assert "| accuracy" in (tmp_path / "eval" / "metrics.md").read_text().lower()


def test_tta_flip_changes_predictions_but_not_the_keys(tmp_path, data):
    train, val = data
    cfg = cfg_for("categorical", "train.epochs=1")
    Trainer(cfg, tmp_path / "run", train, val, device="cpu", progress=False).fit()
    data_cfg = dict(cfg["data"], sizes={"val": 64}, options={"seed": 1, "imbalance": "none"})
    plain = evaluate_checkpoint(tmp_path / "run", data_cfg, "val", None, progress=False)
    flip = evaluate_checkpoint(tmp_path / "run", data_cfg, "val", None, tta_flip=True, progress=False)
    assert set(plain) == set(flip)
    assert plain["auc_roc_macro"] != flip["auc_roc_macro"]


def test_cross_dataset_label_mapping_by_name():
    affectnet = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
    fer = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert label_mapping(affectnet, fer).tolist() == [6, 5, 4, 1, 2, 3, 0]
    probs = np.full((2, 8), 0.05)
    probs[0, 6] = 0.65  # Anger
    probs[1, 7] = 0.65  # Contempt: not a FER class, renormalised away
    labels, p, classes = remap_to_model(affectnet, fer, np.array([0, 6]), probs)
    assert classes == fer and labels.tolist() == [0, 6]
    assert p.shape == (2, 7) and np.allclose(p.sum(1), 1)
    assert p[0].argmax() == 0


def test_training_refuses_missing_annotations(tmp_path, data):
    train, val = data
    no_va = make_synthetic(32, seed=2, split="train")
    no_va.va[:] = np.nan
    with pytest.raises(BregnetError, match="needs valence/arousal"):
        Trainer(cfg_for("dimensional"), tmp_path, no_va, None, device="cpu", progress=False)


@pytest.mark.parametrize("argv,needle", [
    (["train", "no-such-recipe"], "unknown recipe"),
    (["train", "demo", "train.lr=-1"], "train.lr"),
    (["train", "demo", "train.batch_size=0"], "train.batch_size"),
    (["train", "demo", "bogus"], "must look like"),
    (["evaluate", "missing.safetensors"], "checkpoint not found"),
    (["train", "bregnext50-fer2013"], "needs a root path"),
    (["demo", "--minutes", "0"], "--minutes"),
])
def test_cli_rejects_bad_arguments_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_cli_resume_without_a_run_fails_cleanly(tmp_path, capsys):
    code = main(["train", "demo", *TINY, "data.sizes={train: 64, val: 32}", "--out", str(tmp_path / "x"),
                 "--resume", "--no-progress"])
    assert code == 2
    assert "nothing to resume" in capsys.readouterr().err
