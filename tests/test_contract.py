"""The error contract (issue 11, part A): bad input is one line and exit code 2, checked before any
work; anything else keeps its traceback.

Each case below was a traceback, a wrong exit code or a silent wrong result before: argument
types and ranges, devices, the ONNX opset, output paths, unreadable and tampered checkpoints,
command-line strings re-parsed as YAML, reader options leaking from one data set into another.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bregnet.cli import main
from bregnet.errors import BregnetError, CheckpointError, ConfigError, OutputError, UsageError
from infer_helpers import make_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "micro.safetensors", micro=True)


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "face.png"
    assert cv2.imwrite(str(path), np.full((40, 40, 3), 128, np.uint8))
    return path


def one_line(capsys, command: str) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"bregnet {command}: error:"), err
    return err[0]


def run_cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``bregnet ARGS`` in a fresh interpreter (for cases that could crash the test process)."""
    return subprocess.run([sys.executable, "-m", "bregnet.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": SRC, **env})


# ------------------------------------------------------------------------ arguments at parse time
@pytest.mark.parametrize("argv, word", [
    (["predict", "CK", "IMG", "--threads", "-1"], "--threads"),
    (["predict", "CK", "IMG", "--threads", "two"], "--threads"),
    (["predict", "CK", "IMG", "--det-threshold", "nan"], "--det-threshold"),
    (["predict", "CK", "IMG", "--det-threshold", "1.5"], "--det-threshold"),
    (["predict", "CK", "IMG", "--max-frames", "-1"], "--max-frames"),
    (["predict", "CK", "IMG", "--batch-size", "0"], "--batch-size"),
    (["predict", "CK", "IMG", "--every", "0"], "--every"),
    (["predict", "CK", "IMG", "--fps", "0"], "--fps"),
    (["predict", "CK", "IMG", "--smooth", "1"], "--smooth"),
    (["predict", "CK", "IMG", "--min-face", "-3"], "--min-face"),
    (["predict", "CK", "IMG", "--det-max-side", "0"], "--det-max-side"),
    (["predict", "CK", "IMG", "--device", "foo"], "--device"),
    (["evaluate", "CK", "--batch-size", "-2"], "--batch-size"),
    (["evaluate", "CK", "--device", "gpu"], "--device"),
    (["train", "demo", "--device", "cuda:x"], "--device"),
    (["export", "CK", "--onnx", "m.onnx", "--opset", "eighteen"], "--opset"),
    (["export", "CK", "--onnx", "m.onnx", "--tolerance", "inf"], "--tolerance"),
    (["prepare", "--data", "synthetic", "--out", "c", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["prepare", "--data", "synthetic", "--out", "c", "--option", "=3"], "--option"),
    (["demo", "--minutes", "nan"], "--minutes"),
    (["demo", "--seed", "-1"], "--seed"),
    (["experiment", "ablation", "--width-scale", "0"], "--width-scale"),
    (["models", "--num-classes", "0"], "--num-classes"),
])
def test_bad_arguments_are_refused_while_parsing(argv, word, ckpt, face, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(ckpt) if a == "CK" else str(face) if a == "IMG" else a for a in argv]
    assert main(argv) == 2
    line = one_line(capsys, argv[0])
    assert word in line
    assert not list(tmp_path.iterdir())  # nothing was written


def test_negative_webcam_index_never_reaches_opencv(ckpt):
    """A negative index made cv2.VideoCapture crash (exit 139); now it is refused first."""
    r = run_cli("predict", str(ckpt), "--webcam", "-1")
    assert r.returncode == 2, r.stderr
    assert "--webcam" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    lib = subprocess.run([sys.executable, "-c", "from bregnet.infer.video import VideoReader\n"
                          "VideoReader(-1)"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert lib.returncode == 1 and "UsageError" in lib.stderr and "webcam index" in lib.stderr


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_on_a_cpu_only_build_is_one_line(device, ckpt, face, tmp_path, capsys):
    from bregnet.device import resolve_device

    with pytest.raises(UsageError, match="not available"):
        resolve_device(device)
    for argv in (["predict", str(ckpt), str(face), "--device", device],
                 ["evaluate", str(ckpt), "--device", device, "--out", str(tmp_path / "ev")],
                 ["train", "demo", "--device", device, "--out", str(tmp_path / "run")]):
        assert main(argv) == 2
        assert "not available" in one_line(capsys, argv[0])
    assert not (tmp_path / "run").exists() and not (tmp_path / "ev").exists()


def test_device_names_resolve():
    from bregnet.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")


# ------------------------------------------------------------------------------------ ONNX opset
@pytest.mark.parametrize("opset", ["3", "999"])
def test_unsupported_opset_is_refused_not_replaced(opset, ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--opset", opset]) == 2
    line = one_line(capsys, "export")
    assert f"opset {opset}" in line and "support" in line
    assert not out.exists()


def test_exporter_specific_opset_ranges(ckpt, tmp_path):
    from bregnet.export.onnx import export_onnx, opset_range

    lo, hi = opset_range("dynamo")
    with pytest.raises(UsageError, match=f"dynamo exporter supports opsets {lo}..{hi}"):
        export_onnx(ckpt, tmp_path / "m.onnx", opset=lo - 1, exporter="dynamo")
    assert not (tmp_path / "m.onnx").exists()


def test_export_writes_exactly_the_opset_asked_for(ckpt, tmp_path, capsys):
    import onnx

    out = tmp_path / "m17.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--opset", "17", "--no-verify"]) == 0
    declared = {e.domain: e.version for e in onnx.load(str(out)).opset_import}
    assert declared.get("", declared.get("ai.onnx")) == 17


# --------------------------------------------------------------------------- output paths first
def _block(monkeypatch, target: str) -> None:
    """Make the command's first piece of real work fail loudly: outputs must be checked before."""
    def work_started(*args, **kwargs):
        raise AssertionError(f"{target} ran before the output path was checked")

    monkeypatch.setattr(target, work_started)


COMMANDS = {
    # name: (argv with OUT for the output path, the work that must not start, kind of output)
    "predict -o": (["predict", "CK", "IMG", "-o", "OUT"], "bregnet.infer.predictor.Predictor.from_checkpoint", "file"),
    "predict --annotate": (["predict", "CK", "IMG", "--annotate", "OUT"],
                           "bregnet.infer.predictor.Predictor.from_checkpoint", "dir"),
    "evaluate": (["evaluate", "CK", "--out", "OUT"], "bregnet.engine.evaluate.load_checkpoint", "dir"),
    "export": (["export", "CK", "--onnx", "OUT"], "bregnet.engine.checkpoint.load_checkpoint", "file"),
    "gradients": (["gradients", "--out", "OUT", "--depths", "32"], "bregnet.analysis.gradients.gradient_study", "dir"),
    "prepare": (["prepare", "--data", "synthetic", "--out", "OUT"], "bregnet.data.cache._open_reader", "dir"),
    "train": (["train", "demo", "--out", "OUT"], "bregnet.engine.trainer.build_trainer", "dir"),
    "demo": (["demo", "--out", "OUT"], "bregnet.engine.runs.load_split", "dir"),
}


def _argv(name: str, out: Path, ckpt: Path, face: Path) -> list[str]:
    argv, _, _ = COMMANDS[name]
    sub = {"CK": str(ckpt), "IMG": str(face), "OUT": str(out)}
    return [sub.get(a, a) for a in argv]


@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("problem", ["parent is a file", "target is a folder", "no permission"])
def test_output_paths_are_checked_before_work(name, problem, ckpt, face, tmp_path, capsys, monkeypatch):
    _, work, kind = COMMANDS[name]
    _block(monkeypatch, work)
    (tmp_path / "plain").write_text("x")
    if problem == "parent is a file":
        out = tmp_path / "plain" / ("out.csv" if name == "predict -o" else "out")
        expected = "is a file, not a folder"
    elif problem == "target is a folder":
        if kind == "dir":  # a folder output over an existing file
            out, expected = tmp_path / "plain", "is a file, not a folder"
        else:
            out = tmp_path / ("dir.csv" if name == "predict -o" else "dir.onnx")
            out.mkdir()
            expected = "is a folder"
    else:  # a folder the user may not write into (as root, os.access is what says no)
        locked = tmp_path / "locked"
        locked.mkdir()
        out = locked / ("out.csv" if name == "predict -o" else "out")
        real_access = os.access
        monkeypatch.setattr("bregnet.fileio.os.access", lambda p, mode: False if Path(p) == locked
                            else real_access(p, mode))
        expected = "no permission"
    monkeypatch.chdir(tmp_path)
    argv = _argv(name, out, ckpt, face)
    assert main(argv) == 2
    assert expected in one_line(capsys, argv[0])


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_as_an_unprivileged_user(ckpt, face, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["predict", str(ckpt), str(face), "-o", str(ro / "out.csv")]) == 2
        assert "no permission" in one_line(capsys, "predict")
    finally:
        ro.chmod(0o755)


def test_output_over_an_input_is_refused(ckpt, face, capsys):
    before = face.read_bytes()
    assert main(["predict", str(ckpt), str(face), "-o", str(face)]) == 2
    assert "one of the inputs" in one_line(capsys, "predict")
    assert main(["export", str(ckpt), "--onnx", str(ckpt)]) == 2
    assert "one of the inputs" in one_line(capsys, "export")
    assert face.read_bytes() == before


# ------------------------------------------------------------------------------------ checkpoints
def test_unreadable_checkpoint_is_called_unreadable(ckpt, face, tmp_path, capsys, monkeypatch):
    real_access = os.access
    monkeypatch.setattr("bregnet.fileio.os.access",
                        lambda p, mode: False if Path(p) == ckpt and mode & os.R_OK else real_access(p, mode))
    assert main(["predict", str(ckpt), str(face)]) == 2
    line = one_line(capsys, "predict")
    assert "no permission" in line and "not found" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_checkpoint_as_an_unprivileged_user(ckpt, face, tmp_path, capsys):
    locked = tmp_path / "locked.safetensors"
    locked.write_bytes(ckpt.read_bytes())
    locked.chmod(0)
    assert main(["predict", str(locked), str(face)]) == 2
    assert "no permission" in one_line(capsys, "predict")


def tamper(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint ``src`` whose metadata JSON is ``edit(doc)`` (text or a document)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        doc = json.loads(f.metadata()["bregnet"])
    new = edit(doc)
    text = new if isinstance(new, str) else json.dumps(doc if new is None else new)
    save_file(load_file(str(src)), str(dst), metadata={"bregnet": text})
    return dst


def _set(path: str, value):
    def edit(doc):
        *keys, last = path.split(".")
        d = doc
        for k in keys:
            d = d[k]
        d[last] = value

    return edit


TAMPERED = {
    "a JSON list": (lambda doc: [doc], "must be a JSON object"),
    "input_size=-5": (_set("preprocess.input_size", -5), "input_size"),
    "input_size huge": (_set("preprocess.input_size", 10 ** 6), "input_size"),
    "crop.margin=1e9": (_set("preprocess.crop.margin", 1e9), "margin"),
    "NaN mean": (_set("preprocess.mean", [float("nan")] * 3), "preprocess.mean"),
    "Infinity scale": (_set("preprocess.scale", float("inf")), "preprocess.scale"),
    "zero std": (_set("preprocess.std", [1.0, 0.0, 1.0]), "preprocess.std"),
    "colour": (_set("preprocess.color", "CMYK"), "preprocess.color"),
    "labels a string": (_set("labels", "Happy"), "labels"),
    "labels and classes disagree": (_set("labels", ["a", "b"]), "label names"),
    "model.args a list": (_set("model.args", [1, 2]), "model.args"),
    "unknown model argument": (_set("model.args.wobble", 1), "wobble"),
    "stage of floats": (_set("model.args.stages", [[1.5, 8]]), "stage 0"),
    "unknown model": (_set("model.name", "resnet9000"), "unknown model"),
    "not JSON": (lambda doc: "{not json", "corrupt metadata"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_metadata_is_one_checkpoint_error(case, ckpt, face, tmp_path, capsys):
    edit, needle = TAMPERED[case]
    bad = tamper(ckpt, tmp_path / "bad.safetensors", edit)
    from bregnet.engine.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(bad)
    for argv in (["predict", str(bad), str(face), "--detector", "none"],
                 ["evaluate", str(bad), "--out", str(tmp_path / "ev")],
                 ["export", str(bad), "--onnx", str(tmp_path / "m.onnx"), "--no-verify"]):
        assert main(argv) == 2
        assert needle in one_line(capsys, argv[0])
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_json_never_holds_bare_nan(tmp_path):
    from bregnet.engine.checkpoint import CheckpointMeta, read_metadata, save_checkpoint
    from infer_helpers import LABELS, make_model

    model = make_model(micro=True)
    meta = CheckpointMeta.for_model(model, LABELS, metrics={"va_ccc_mean": float("nan"),
                                                            "loss": float("inf"), "accuracy": 0.5})
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = strict(f.metadata()["bregnet"])
    side = strict(path.with_suffix(".json").read_text())
    assert header["metrics"] == side["metrics"] == {"va_ccc_mean": None, "loss": None, "accuracy": 0.5}
    assert read_metadata(path).metrics["accuracy"] == 0.5


def test_old_checkpoints_with_nan_metrics_and_no_crop_border_still_load(ckpt, tmp_path):
    from bregnet.engine.checkpoint import load_checkpoint

    def edit(doc):
        doc["metrics"] = {"va_ccc_mean": float("nan")}
        doc["preprocess"]["crop"].pop("border", None)

    old = tamper(ckpt, tmp_path / "old.safetensors", edit)
    _, meta = load_checkpoint(old)
    assert math.isnan(meta.metrics["va_ccc_mean"]) and meta.preprocess.crop.border == "constant"


# ------------------------------------------------------------------ CLI strings stay as typed
def test_cli_strings_are_never_reparsed_as_yaml():
    from bregnet.cli._common import data_overrides
    from bregnet.engine.config import load_config
    import argparse

    for root in ("2013", "a #1", "yes", "null", "[x]", "1e3"):
        args = argparse.Namespace(data="folder", root=root, cache=None, option=[("classes", "a,b")])
        cfg = load_config("demo", data_overrides(args))
        assert cfg["data"]["root"] == root and isinstance(cfg["data"]["root"], str)
        assert cfg["data"]["options"] == {"classes": "a,b"}


def test_override_values_are_yaml_scalars_without_comments():
    from bregnet.engine.config import apply_overrides, load_config, parse_scalar

    assert parse_scalar("3e-4") == 3e-4 and parse_scalar("true") is True and parse_scalar("7") == 7
    assert parse_scalar("[1, 2]") == [1, 2] and parse_scalar("{train: 512}") == {"train": 512}
    assert parse_scalar("a #1") == "a #1" and parse_scalar("'2013'") == "2013"
    assert parse_scalar("null") is None and parse_scalar("x: y") == "x: y"
    cfg = apply_overrides(load_config("demo"), ["data.root=photos #2", "train.lr=3e-4"])
    assert cfg["data"]["root"] == "photos #2" and cfg["train"]["lr"] == 3e-4


def _folder(root: Path, classes=("a", "b"), n: int = 4) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((24, 24, 3), 60 * (1 + classes.index(c)) + i, np.uint8)
            assert cv2.imwrite(str(root / c / f"{i}.png"), img)
    return root


def test_folder_named_2013_with_a_hash_trains(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "2013 #1")
    argv = ["train", "demo", "task=categorical", "train.max_steps=1", "data.val_split=null",
            "data.train_split=all", "model.args.stages=[[1, 8]]", "model.args.stem_width=8",
            "--data", "folder", "--root", "2013 #1", "--out", "run", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    import yaml

    data = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert data["root"] == "2013 #1" and data["options"] == {} and data["sizes"] == {}


# ------------------------------------------------------ reader options belong to their data set
def test_recipe_reader_options_do_not_leak_into_another_data_set():
    from bregnet.engine.config import load_config

    demo = load_config("demo")
    assert demo["data"]["options"] and demo["data"]["sizes"]  # the synthetic recipe's own
    cfg = load_config("demo", [("data.name", "folder"), ("data.root", "x")])
    assert cfg["data"]["options"] == {} and cfg["data"]["sizes"] == {} and cfg["data"]["split_options"] == {}
    cfg = load_config("demo", [("data.name", "folder"), "data.options.recursive=false"])
    assert cfg["data"]["options"] == {"recursive": False}
    same = load_config("demo", [("data.name", "synthetic"), "data.options.seed=3"])
    assert same["data"]["options"]["difficulty"] == 0.5 and same["data"]["options"]["seed"] == 3


def test_evaluate_a_synthetic_checkpoint_on_a_folder(tmp_path, capsys):
    """The checkpoint's recipe carries synthetic-only options (difficulty): not given to folder."""
    from bregnet.engine.checkpoint import CheckpointMeta, save_checkpoint
    from bregnet.engine.config import load_config
    from infer_helpers import make_model

    model = make_model(num_classes=2, va=False, micro=True)
    meta = CheckpointMeta.for_model(model, ["a", "b"], recipe=load_config("demo"))
    ck = save_checkpoint(tmp_path / "demo.safetensors", model, meta)
    _folder(tmp_path / "faces")
    argv = ["evaluate", str(ck), "--data", "folder", "--root", str(tmp_path / "faces"), "--split", "all",
            "--out", str(tmp_path / "ev")]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["dataset"] == "folder/all"


def test_sizes_are_for_generated_data_sets_only(tmp_path):
    from bregnet.engine.data import load_split

    _folder(tmp_path / "f")
    with pytest.raises(ConfigError, match="data.sizes"):
        load_split({"name": "folder", "root": str(tmp_path / "f"), "sizes": {"all": 3}}, "all", progress=False)
    ds = load_split({"name": "synthetic", "sizes": {"val": 5}}, "val", progress=False)
    assert len(ds) == 5 and ds.meta["synthetic"]


# ------------------------------------------------------------------- only our errors are one line
def test_a_bug_keeps_its_traceback(monkeypatch):
    import bregnet.cli.cmd_models as cmd

    def buggy(args):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(cmd, "run", buggy)
    with pytest.raises(ValueError, match="a bug"):
        main(["models"])


def test_library_faults_are_bregnet_errors():
    from bregnet import create_model
    from bregnet.preprocess import CropPolicy

    with pytest.raises(UsageError, match="no argument 'depth'"):
        create_model("bregnext32", depth=3)
    with pytest.raises(UsageError, match="stem_stride"):
        create_model("bregnext32", stem_stride=3)
    with pytest.raises(UsageError, match="margin"):
        CropPolicy(margin=float("nan"))
    with pytest.raises(UsageError, match="border"):
        CropPolicy(border="mirror")
    for exc in (UsageError, ConfigError, CheckpointError, OutputError):
        assert issubclass(exc, BregnetError) and not issubclass(exc, ValueError)


def test_evaluation_does_not_depend_on_the_trainer():
    code = ("import sys, bregnet.engine.evaluate\n"
            "assert 'bregnet.engine.trainer' not in sys.modules, 'evaluate imports the trainer'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": SRC})
    assert r.returncode == 0, r.stderr


def test_readers_cache_and_predictor_crop_with_the_one_crop_function(tmp_path, ckpt, monkeypatch):
    import bregnet.crop
    from bregnet import Predictor
    from bregnet.data.cache import open_cache, prepare_cache
    from bregnet.data.registry import open_reader
    from bregnet.infer.detect import Detection

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    (tmp_path / "list.csv").write_text("path,label,x,y,w,h\na.png,0,50,30,40,40\n")
    reader = open_reader("csv", tmp_path / "list.csv", "all", margin=0.2, square=True, border="constant")
    calls = []
    real = bregnet.crop.crop_face
    monkeypatch.setattr(bregnet.crop, "crop_face", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    expected = real(img, (50, 30, 40, 40), reader.crop_policy, 64)
    assert np.array_equal(reader.load(0).image, expected)
    prepare_cache(reader, out_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(open_cache(tmp_path / "cache", "all").images[0], expected)
    predictor = Predictor.from_checkpoint(ckpt, detector="none")
    crop = predictor.crop(img, Detection((50.0, 30.0, 40.0, 40.0)))
    assert np.array_equal(crop, real(img, (50, 30, 40, 40), predictor.crop_policy, 32))
    assert calls == [reader.crop_policy, reader.crop_policy]  # the reader's load, then the cache's
    import bregnet.infer.predictor

    assert bregnet.infer.predictor.crop_face is real
