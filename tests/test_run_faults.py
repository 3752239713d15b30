"""Checkpoints and users' files under faults (issue 10, items 1, 2, 5, 7): a kill at any instant
of a save, a real SIGKILL-like exit, a full disk, a diverging run, non-finite checkpoints, the
demo's folder, and resuming with another model, task, recipe or a damaged state."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bregnet.cli import main
from bregnet.data.synthetic import make_synthetic
from bregnet.engine.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from bregnet.engine.config import load_config
from bregnet.engine.runstate import find_resumable, remove_debris
from bregnet.engine.trainer import Trainer, TrainingDiverged
from bregnet.errors import CheckpointError, OutputError

TINY = ["model.name=bregnext_custom", "model.args={stages: [[1, 4], [1, 8]], stem_width: 4, stem_stride: 2}"]
BASE = [*TINY, "task=categorical", "train.max_time_s=null", "train.batch_size=16", "train.lr=3e-3",
        "train.eval_batch_size=64", "train.log_tensorboard=false"]
# the same kind of run through the CLI, on the recipe's synthetic data made small: 4 steps per epoch
CLI_RUN = ["demo", *BASE, "data.sizes={train: 64, val: 32, test: 32}", "data.options={seed: 1, imbalance: none}",
           "train.epochs=2"]


def train_argv(out: Path, *extra: str) -> list[str]:
    """``bregnet train`` of :data:`CLI_RUN` (plus overrides and flags) into ``out``."""
    overrides = [e for e in extra if not e.startswith("--")]
    flags = [e for e in extra if e.startswith("--")]
    return ["train", *CLI_RUN, *overrides, "--out", str(out), "--no-progress", *flags]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    """64 training faces (batch 16: 4 steps per epoch) and 32 validation faces."""
    return (make_synthetic(64, seed=1, split="train", imbalance="none"),
            make_synthetic(32, seed=1, split="val", imbalance="none"))


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch CLI run (8 steps, saves at steps 4 and 8)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_argv(out)) == 0
    return out


def cfg_for(*extra: str) -> dict:
    return load_config("demo", [*BASE, *extra])


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


def assert_clean(run: Path) -> None:
    """No temporary file left, and every generation folder complete."""
    assert not [p for p in run.rglob("*.tmp")], [str(p) for p in run.rglob("*.tmp")]
    for gen in (run / "checkpoints").iterdir():
        assert (gen / "manifest.json").is_file(), gen


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------ a kill at any instant
class Snapshots:
    """Copies of a run folder taken just before every file-system change inside it (rename,
    link, unlink, rmdir): each copy is the disk exactly as a process killed at that instant
    would leave it, temporary files included."""

    def __init__(self, live: Path, into: Path, monkeypatch) -> None:
        self.live, self.into, self.busy, self.active = str(live), into, False, True
        self.taken: list[Path] = []
        for name in ("replace", "link", "unlink", "rmdir"):
            monkeypatch.setattr(os, name, self._hook(getattr(os, name)))

    def _hook(self, real):
        def call(*args, **kwargs):
            if self.active and not self.busy and any(os.fspath(a).startswith(self.live) for a in args[:2]
                                                     if isinstance(a, (str, os.PathLike))):
                self.take()
            return real(*args, **kwargs)
        return call

    def take(self) -> None:
        self.busy = True
        try:
            dst = self.into / f"{len(self.taken):03d}"
            shutil.copytree(self.live, dst, symlinks=True)
            self.taken.append(dst)
        finally:
            self.busy = False


def test_a_run_killed_at_any_instant_of_its_saves_resumes_bit_identical(tmp_path, data, monkeypatch):
    train, val = data
    cfg = cfg_for("train.epochs=3", "train.batch_size=32")  # saves at steps 2, 4, 6; the third prunes the first
    full = Trainer(cfg, tmp_path / "full", train, val, device="cpu", progress=False)
    full.fit()
    final = full.model.state_dict()
    final_best = load_file(str(tmp_path / "full" / "best.safetensors"))

    snaps = Snapshots(tmp_path / "live", tmp_path / "crash", monkeypatch)
    Trainer(cfg, tmp_path / "live", train, val, device="cpu", progress=False).fit()
    snaps.active = False
    assert len(snaps.taken) > 30, len(snaps.taken)  # every rename/link/unlink of three saves

    resumed_from = set()
    before_first_save = []
    for snap in snaps.taken:
        for name in ("last.safetensors", "best.safetensors"):  # a whole checkpoint at every instant
            if (snap / name).exists():
                load_checkpoint(snap / name)
        try:
            found = find_resumable(snap)
        except CheckpointError as exc:  # killed before the first save was complete: refused, one line
            assert "nothing to resume" in str(exc) and "\n" not in str(exc)
            assert not list(snap.glob("checkpoints/*/manifest.json")), snap
            before_first_save.append(snap)
            continue
        resumed_from.add(found.where)
        trainer = Trainer(cfg, snap, train, val, device="cpu", progress=False)
        trainer.resume()
        assert trainer.fit()["status"] == "finished"
        assert_same_tensors(final, trainer.model.state_dict())
        assert_same_tensors(final, load_file(str(snap / "last.safetensors")))
        assert_same_tensors(final_best, load_file(str(snap / "best.safetensors")))
        assert [r["val_accuracy"] for r in trainer.history] == [r["val_accuracy"] for r in full.history]
        assert_clean(snap)
    for snap in before_first_save:  # a new run over the debris of an interrupted first save
        remove_debris(snap)
        assert not list(snap.rglob("*.tmp")) and not list(snap.glob("checkpoints/*"))
    trainer = Trainer(cfg, before_first_save[-1], train, val, device="cpu", progress=False)
    trainer.fit()
    assert_same_tensors(final, load_file(str(before_first_save[-1] / "last.safetensors")))
    assert len(before_first_save) > 5 and {"checkpoints/000001-step-2", "checkpoints/000002-step-4",
            "checkpoints/000003-step-6"} <= resumed_from, resumed_from


KILL_BETWEEN_WEIGHTS_AND_STATE = textwrap.dedent("""
    import os, sys
    real, seen = os.replace, []
    def replace(src, dst, *args, **kwargs):
        if os.fspath(dst).endswith("state.pt"):
            seen.append(dst)
            if len(seen) == 2:  # the second save: its weights are written, its state is not
                os._exit(9)
        return real(src, dst, *args, **kwargs)
    os.replace = replace
    from bregnet.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_process_killed_between_weights_and_state_resumes_from_the_cli(tmp_path, cli_reference):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_WEIGHTS_AND_STATE, *train_argv(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    gen2 = out / "checkpoints" / "000002-step-8"
    assert (gen2 / "model.safetensors").is_file() and not (gen2 / "manifest.json").exists()
    assert list(gen2.glob(".state.pt.*.tmp"))  # what the killed write left
    assert read_metadata(out / "last.safetensors").extra["step"] == 4  # published: the complete one
    assert main(train_argv(out, "--resume")) == 0
    assert_same_tensors(load_file(str(cli_reference / "last.safetensors")), load_file(str(out / "last.safetensors")))
    assert_same_tensors(load_file(str(cli_reference / "best.safetensors")), load_file(str(out / "best.safetensors")))
    assert_clean(out)


@pytest.mark.parametrize("writer", ["state", "weights"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_state(tmp_path, capsys, monkeypatch, cli_reference, writer):
    import safetensors.torch  # save_checkpoint imports save_file from it at call time

    calls = []
    real = torch.save if writer == "state" else safetensors.torch.save_file

    def full_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second save runs out of space half-way through the file
            Path(path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path, *args, **kwargs)

    if writer == "state":
        monkeypatch.setattr(torch, "save", full_disk)
    else:
        monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    out = tmp_path / "run"
    assert main(train_argv(out)) == 2
    err = one_line_error(capsys)
    assert "disk full" in err and "at step 8" in err and "000001-step-4 (step 4, epoch 1)" in err, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["000001-step-4"]
    assert read_metadata(out / "last.safetensors").extra["step"] == 4
    assert_clean(out)
    monkeypatch.undo()
    assert main(train_argv(out, "--resume")) == 0
    assert_same_tensors(load_file(str(cli_reference / "last.safetensors")), load_file(str(out / "last.safetensors")))


# ------------------------------------------------------------------ nothing non-finite is saved
def test_a_diverging_run_saves_nothing_non_finite_and_names_the_newest_finite_checkpoint(tmp_path, data, capsys):
    train, val = data
    out = tmp_path / "run"
    Trainer(cfg_for("train.epochs=1"), out, train, val, device="cpu", progress=False).fit()
    good = sha(out / "last.safetensors")
    blowing_up = Trainer(cfg_for("train.epochs=4", "train.lr=1e8"), out, train, val, device="cpu", progress=False)
    blowing_up.resume(force_config=True)
    with pytest.raises(TrainingDiverged, match=r"(non-finite by step|loss became).*newest finite checkpoint is "
                                               r".*000001-step-4 \(step 4, epoch 1\), left as it was"):
        blowing_up.fit()
    assert sha(out / "last.safetensors") == good
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["000001-step-4"]
    for path in out.rglob("*.safetensors"):
        load_checkpoint(path)  # every checkpoint written is finite

    fresh = tmp_path / "fresh"  # diverging from the first epoch: nothing is saved at all
    assert main(train_argv(fresh, "train.lr=1e8", "train.epochs=3")) == 2
    err = one_line_error(capsys)
    assert "non-finite" in err and "running_var" in err and "no checkpoint of this run was saved" in err, err
    assert not list(fresh.rglob("*.safetensors"))


def test_predict_evaluate_and_export_refuse_a_non_finite_checkpoint(tmp_path, capsys, cli_reference):
    model, meta = load_checkpoint(cli_reference / "best.safetensors")
    with torch.no_grad():
        model.final_bn.running_var[:3] = float("inf")
    bad = save_checkpoint(tmp_path / "bad.safetensors", model, meta)
    photo = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    for argv in (["predict", str(bad), str(photo)],
                 ["evaluate", str(bad), "--out", str(tmp_path / "eval")],
                 ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")]):
        assert main(argv) == 2, argv
        err = one_line_error(capsys)
        assert "non-finite weights (inf in 3 values of final_bn.running_var)" in err, err
    model, _ = load_checkpoint(bad, allow_nonfinite=True)  # for inspection only
    assert torch.isinf(model.final_bn.running_var).sum() == 3


# ------------------------------------------------------------------ the demo's folder
DEMO = ["model.args={stages: [[1, 4], [1, 8]], stem_width: 4, stem_stride: 2}",
        "data.sizes={train: 64, val: 32, test: 32}", "train.epochs=1", "train.batch_size=32",
        "train.eval_batch_size=32", "train.log_tensorboard=false"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_demo_never_deletes_a_file_it_did_not_write(tmp_path, capsys, monkeypatch):
    import bregnet.engine.evaluate as evaluate
    from bregnet.engine.runs import prepare_demo_folder, run_demo
    from bregnet.fileio import write_json

    def report_without_plots(out, metrics, arrays, **kwargs):  # the plots take seconds; not the point here
        return {"metrics_json": write_json(metrics, Path(out) / "metrics.json")}

    monkeypatch.setattr(evaluate, "write_evaluation", report_without_plots)

    out = tmp_path / "report"
    (out / "run").mkdir(parents=True)
    notes = out / "run" / "notes.txt"
    notes.write_text("my notes\n")
    (out / "run" / "last.state.pt").write_bytes(b"a run of mine")  # what made the old demo delete run/
    before = md5(notes)
    assert main(["demo", "--out", str(out), "--no-progress", *DEMO]) == 2
    assert "holds files the demo did not write" in one_line_error(capsys)
    assert md5(notes) == before and (out / "run" / "last.state.pt").read_bytes() == b"a run of mine"

    shutil.rmtree(out)  # an earlier demo's outputs are replaced; a file added since is not
    first_metrics = run_demo(out, seed=1, progress=False, overrides=DEMO)
    first = md5(out / "metrics.json")
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match=r"did not write or that changed since \(mine.txt\)"):
        run_demo(out, seed=1, progress=False, overrides=DEMO)
    assert (out / "mine.txt").read_text() == "keep me" and md5(out / "metrics.json") == first
    (out / "mine.txt").unlink()
    metrics = run_demo(out, seed=1, progress=False, overrides=DEMO)
    assert metrics["train_status"] == "finished" and metrics["accuracy"] == first_metrics["accuracy"]
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == ["000001-step-2"]

    # an interrupted demo: its marker says so; the files it writes by name are its own, others not
    marker = json.loads((out / ".bregnet-demo.json").read_text())
    (out / ".bregnet-demo.json").write_text(json.dumps({**marker, "complete": False, "files": {}}))
    (out / "run" / "checkpoints" / "000002-step-3").mkdir()
    (out / "run" / "checkpoints" / "000002-step-3" / ".state.pt.abc123.tmp").write_bytes(b"partial")
    (out / "run" / "other.bin").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"run/other.bin"):
        prepare_demo_folder(out)
    (out / "run" / "other.bin").unlink()
    removed = prepare_demo_folder(out)
    assert "metrics.json" in removed and "run/checkpoints/000002-step-3/.state.pt.abc123.tmp" in removed
    assert [p for p in out.rglob("*") if p.is_file()] == [out / ".bregnet-demo.json"]


# ------------------------------------------------------------------ resuming another run
@pytest.fixture()
def base_run(tmp_path, data) -> Path:
    train, val = data
    Trainer(cfg_for("train.epochs=1"), tmp_path / "run", train, val, device="cpu", progress=False).fit()
    return tmp_path / "run"


@pytest.mark.parametrize("overrides, force, message", [
    (["model.args={stages: [[1, 4], [1, 16]], stem_width: 4, stem_stride: 2}"], False,
     r"model bregnext_custom argument stages: saved \[\[1, 4\], \[1, 8\]\], asked \[\[1, 4\], \[1, 16\]\]: a run "
     r"continues with the model"),
    (["model.name=bregnet_custom"], True, r"model: saved bregnext_custom, asked bregnet_custom"),
    (["task=multitask"], True, r"task: saved categorical, asked multitask"),
    (["train.batch_size=32"], True, r"train.batch_size: saved 16, asked 32: a run continues"),
    (["train.lr=0.001", "train.epochs=3"], False,
     r"the recipe changed: train.epochs: saved 1, asked 3 \(and 1 more\); pass --force-config"),
])
def test_resume_refuses_another_model_task_or_recipe_naming_the_first_difference(base_run, data, overrides,
                                                                                  force, message):
    train, val = data
    trainer = Trainer(cfg_for("train.epochs=1", *overrides), base_run, train, val, device="cpu", progress=False)
    with pytest.raises(CheckpointError, match=message):
        trainer.resume(force_config=force)


def test_resume_refuses_another_label_set(base_run, data):
    train, val = data
    renamed = dataclasses.replace(train, classes=[c.upper() for c in train.classes])
    trainer = Trainer(cfg_for("train.epochs=1"), base_run, renamed, val, device="cpu", progress=False)
    with pytest.raises(CheckpointError, match=r"labels: saved \[.*Neutral.*\], asked \[.*NEUTRAL.*\]"):
        trainer.resume(force_config=True)


def test_force_config_continues_a_changed_schedule_and_says_so(base_run, data, capsys):
    train, val = data
    trainer = Trainer(cfg_for("train.epochs=2", "train.lr=0.001"), base_run, train, val, device="cpu", progress=False)
    trainer.resume(force_config=True)
    out = capsys.readouterr().out
    assert "--force-config: continuing" in out and "train.lr: saved 0.003, now 0.001" in out
    assert "train.epochs: saved 1, now 2" in out
    assert trainer.fit()["status"] == "finished" and trainer.step == 8
    assert read_metadata(base_run / "last.safetensors").recipe["train"]["lr"] == 0.001


def _rewrite_state(gen: Path, change) -> None:
    """Rewrite a generation's state.pt and its manifest entry (a state another writer got wrong)."""
    state = torch.load(gen / "state.pt", weights_only=True)
    change(state)
    torch.save(state, gen / "state.pt")
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["files"]["state.pt"] = {"size": (gen / "state.pt").stat().st_size, "sha256": sha(gen / "state.pt")}
    (gen / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("optimizer"), "training state has no 'optimizer'"),
    (lambda s: s.update(bad_epochs="x"), "training state 'bad_epochs' must be a non-negative integer, got str"),
    (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
     r"optimiser slot exp_avg of parameter 0 has shape \(3,\)"),
])
def test_a_damaged_training_state_is_one_line(tmp_path, capsys, cli_reference, change, message):
    out = tmp_path / "run"
    shutil.copytree(cli_reference, out)
    for gen in (out / "checkpoints").iterdir():
        _rewrite_state(gen, change)
    assert main(train_argv(out, "--resume")) == 2
    err = one_line_error(capsys)
    assert "000002-step-8/state.pt" in err and re.search(message, err), err


def test_an_older_runs_mismatched_pair_is_refused_and_a_matching_one_resumes(tmp_path, capsys, cli_reference):
    """The layout of earlier versions: last.safetensors + last.state.pt in the run folder."""
    out = tmp_path / "run"
    out.mkdir()
    gens = sorted((cli_reference / "checkpoints").iterdir())
    shutil.copy(gens[1] / "model.safetensors", out / "last.safetensors")  # weights at step 8
    shutil.copy(gens[0] / "state.pt", out / "last.state.pt")  # state at step 4: the pair
    assert main(train_argv(out, "--resume")) == 2
    err = one_line_error(capsys)
    assert "last.safetensors is at step 8 but last.state.pt at step 4" in err, err
    assert main(train_argv(out)) == 2  # nor is it trained over
    assert "already holds a run" in one_line_error(capsys)

    shutil.copy(gens[0] / "model.safetensors", out / "last.safetensors")
    shutil.copy(gens[0] / "best.safetensors", out / "best.safetensors")
    assert main(train_argv(out, "--resume")) == 0
    assert_same_tensors(load_file(str(cli_reference / "last.safetensors")), load_file(str(out / "last.safetensors")))
    assert not (out / "last.state.pt").exists()  # superseded by the complete generations
