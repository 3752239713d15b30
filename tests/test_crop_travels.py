"""The crop travels from data to checkpoint to predictor (issue 9, item 4), and a prepared cache
records what it was made from and is refused when it does not match (issue 10, item 6).

Tiny models (``model.args.stages``), one training step, a handful of generated images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import bregnet.infer.predictor as predictor_module
from bregnet import Predictor
from bregnet.cli import main as cli_main
from bregnet.crop import crop_face
from bregnet.data.cache import open_cache, prepare_cache, signature_mismatch
from bregnet.data.registry import READERS, open_reader
from bregnet.engine.checkpoint import CHECKPOINT_FORMAT, read_metadata, validate_metadata
from bregnet.engine.config import load_config
from bregnet.engine.data import load_split
from bregnet.engine.trainer import build_trainer
from bregnet.errors import CheckpointError, DataError, UsageError
from bregnet.infer.detect import Detection
from bregnet.preprocess import CROP_RULES, CropPolicy, Preprocess
from test_readers import make_affwild2, make_folder, make_rafdb, write_ferplus

TINY = ["model.name=bregnext_custom", "model.args={stages: [[1, 8], [1, 8], [1, 8]], stem_width: 8}"]

# Boxes of the test image (90 x 70): inside, partly outside on the right and bottom, tall, wide.
BOXES = [(20, 10, 30, 40), (60, 40, 40, 40), (5, 5, 20, 50), (10, 30, 60, 20)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 0)  # smooth: resize differences would show


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def _affectnet(root: Path) -> tuple[str, Path, str]:
    lines = ["subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
             "expression,valence,arousal"]
    for i, (x, y, w, h) in enumerate(BOXES):
        _write(root / "Manually_Annotated_Images" / f"{i}.png", _image(i))
        lines.append(f"{i}.png,{x},{y},{w},{h},,{i % 2},0.1,-0.2")
    (root / "training.csv").write_text("\n".join(lines) + "\n")
    return "affectnet", root, "train"


def _csv(root: Path) -> tuple[str, Path, str]:
    lines = ["path,label,x,y,w,h"]
    for i, (x, y, w, h) in enumerate(BOXES):
        _write(root / f"{i}.png", _image(i))
        lines.append(f"{i}.png,{'ab'[i % 2]},{x},{y},{w},{h}")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return "csv", root / "list.csv", "all"


BOX_READERS = {"affectnet": _affectnet, "csv": _csv}


def _train(tmp: Path, name: str, root: Path | None, split: str, options: dict,
           cache: Path | None = None) -> Path:
    """One training step on ``name`` through the prepared cache; the checkpoint's path."""
    over = [*TINY, "task=categorical", f"data.name={name}", f"data.train_split={split}",
            "data.val_split=null", "data.test_split=null", "train.epochs=1", "train.max_time_s=null",
            "train.batch_size=4", "train.log_tensorboard=false",
            f"data.cache={cache or tmp / 'cache'}"]
    if root is not None:
        over.append(f"data.root={root}")
    cfg = load_config("demo", over)
    cfg["data"]["options"] = dict(options)
    cfg["data"]["sizes"] = {split: 8} if name == "synthetic" else {}
    trainer = build_trainer(cfg, tmp / "run", device="cpu", progress=False)
    trainer.fit()
    return tmp / "run" / "last.safetensors"


def test_every_reader_with_face_boxes_is_covered():
    with_boxes = {n for n, cls in READERS.items() if cls.OPTIONS and "margin" in cls.OPTIONS}
    assert with_boxes == set(BOX_READERS)


@pytest.mark.parametrize("reader", sorted(BOX_READERS))
@pytest.mark.parametrize("options", [
    {},  # the readers' defaults: the box as given, clamped to the image
    {"margin": 0.25, "square": True, "border": "replicate"},
    {"margin": 0.1, "square": False, "border": "constant"},
])
def test_predictor_crops_a_box_exactly_as_the_cache(tmp_path, reader, options):
    name, root, split = BOX_READERS[reader](tmp_path / "data")
    ckpt = _train(tmp_path, name, root, split, options)
    policy = open_reader(name, root, split, **options).crop_policy
    assert policy.kind == "box" and policy.margin == options.get("margin", 0.0)
    # the checkpoint stores the reader's policy, the cache recorded it
    assert read_metadata(ckpt).preprocess.crop == policy
    cached = open_cache(tmp_path / "cache", split)
    assert CropPolicy.from_dict(cached.meta["crop"]) == policy
    # the predictor's 64x64 crop of each item's box is the cache's image, pixel for pixel
    pred = Predictor.from_checkpoint(ckpt, detector="none")
    assert pred.crop_policy == policy
    for i, box in enumerate(BOXES):
        crop = pred.crop(_image(i), Detection(tuple(float(v) for v in box), 0.9))
        assert crop.shape == (64, 64, 3)
        assert np.array_equal(crop, cached.images[i]), (box, options)


def _ferplus(root: Path):
    return "ferplus", write_ferplus(root), "train", {}


def _fer2013(root: Path):
    write_ferplus(root)
    return "fer2013", root / "fer2013.csv", "train", {}


PRECROPPED = {
    "fer2013": (_fer2013, "fer2013-like"),
    "ferplus": (_ferplus, "fer2013-like"),
    "rafdb": (lambda r: ("rafdb", make_rafdb(r), "test", {}), "rafdb-aligned"),
    "rafdb-original": (lambda r: ("rafdb", _rafdb_original(r), "train", {"aligned": False}), "face-crop"),
    "affwild2": (lambda r: ("affwild2", make_affwild2(r), "val", {}), "affwild2-aligned"),
    "folder": (lambda r: ("folder", make_folder(r, split_dirs=False), "all", {}), "face-crop"),
    "folder-rule": (lambda r: ("folder", make_folder(r, split_dirs=False), "all",
                               {"crop_rule": "rafdb-aligned"}), "rafdb-aligned"),
    "csv-crops": (lambda r: ("csv", _csv_without_boxes(r), "all", {}), "face-crop"),
    "synthetic": (lambda r: ("synthetic", None, "test", {"n": 4}), "synthetic"),
}


def _rafdb_original(root: Path) -> Path:
    make_rafdb(root)
    for name in ("train_00001", "train_00002", "train_00003"):
        _write(root / "basic" / "Image" / "original" / f"{name}.jpg", _image(1))
    return root


def _csv_without_boxes(root: Path) -> Path:
    for i in range(2):
        _write(root / f"{i}.png", _image(i))
    (root / "list.csv").write_text("path,label\n0.png,a\n1.png,b\n")
    return root / "list.csv"


@pytest.mark.parametrize("case", sorted(PRECROPPED))
def test_each_data_set_of_face_crops_states_its_named_rule(tmp_path, case):
    make, rule = PRECROPPED[case]
    name, root, split, options = make(tmp_path)
    policy = open_reader(name, root, split, **options).crop_policy
    assert policy == CROP_RULES[rule] and policy.kind == "pre-cropped" and policy.rule == rule
    ds = load_split({"name": name, "root": None if root is None else str(root), "options": options}, split,
                    progress=False)
    assert CropPolicy.from_dict(ds.meta["crop"]) == policy


def test_a_precropped_checkpoint_stores_its_rule_and_the_predictor_applies_it(tmp_path):
    root = make_folder(tmp_path / "faces", split_dirs=False)
    ckpt = _train(tmp_path, "folder", root, "all", {"crop_rule": "rafdb-aligned"})
    stored = read_metadata(ckpt).preprocess.crop
    assert stored == CROP_RULES["rafdb-aligned"] and stored.rule == "rafdb-aligned"
    pred = Predictor.from_checkpoint(ckpt, detector="none")
    img = _image(3)
    eyes = np.array([[30, 30], [52, 26], [41, 40], [33, 50], [50, 48]], np.float32)
    det = Detection((20.0, 12.0, 40.0, 45.0), 0.9, eyes)
    expected = crop_face(img, det.box, CROP_RULES["rafdb-aligned"], 64, eyes)
    assert np.array_equal(pred.crop(img, det), expected)
    assert not np.array_equal(expected, crop_face(img, det.box, CROP_RULES["face-crop"], 64))
    # a box that is the whole image (--detector none: the input is a face crop) takes it whole,
    # exactly as the reader took the training images
    whole = pred.crop(img, Detection((0.0, 0.0, 90.0, 70.0)))
    assert np.array_equal(whole, crop_face(img, None, size=64))


def test_the_synthetic_data_sets_checkpoint_stores_the_synthetic_rule(tmp_path):
    ckpt = _train(tmp_path, "synthetic", None, "train", {})
    assert read_metadata(ckpt).preprocess.crop == CROP_RULES["synthetic"]


def test_predict_crop_flags_override_the_checkpoints_policy(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "faces", split_dirs=False)
    ckpt = _train(tmp_path, "folder", root, "all", {})
    _write(tmp_path / "photo.png", _image(5))
    used: list[CropPolicy] = []
    real = predictor_module.crop_face
    monkeypatch.setattr(predictor_module, "crop_face", lambda *a, **k: used.append(a[2]) or real(*a, **k))

    def run(*flags: str) -> CropPolicy:
        used.clear()
        rc = cli_main(["predict", str(ckpt), str(tmp_path / "photo.png"), "--detector", "none",
                       "-o", str(tmp_path / "out.csv"), "--quiet", *flags])
        assert rc == 0 and used
        return used[0]

    assert run() == CROP_RULES["face-crop"]
    assert run("--crop-rule", "fer2013-like") == CROP_RULES["fer2013-like"]
    got = run("--crop-rule", "rafdb-aligned", "--crop-margin", "0.3", "--no-crop-square", "--no-align")
    assert (got.margin, got.square, got.align, got.border, got.rule) == (0.3, False, False, "replicate",
                                                                         "rafdb-aligned")
    assert run("--crop-square", "--crop-margin", "0").margin == 0.0


@pytest.mark.parametrize("flags, message", [
    (["--crop-rule", "nosuch"], "invalid choice"),
    (["--crop-margin", "9"], "must be <= 5"),
    (["--crop-margin", "nan"], "finite"),
])
def test_bad_crop_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    rc = cli_main(["predict", str(tmp_path / "none.safetensors"), "x.png", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_old_checkpoints_keep_loading_and_bad_kinds_are_refused():
    # before pre-cropped rules: a crop object without kind is a box policy, a missing one the default
    old = {"margin": 0.0, "square": False, "align": False, "border": "clamp"}
    assert CropPolicy.from_dict(old) == CropPolicy(0.0, False, False, "clamp", kind="box")
    assert Preprocess.from_dict({}).crop == CropPolicy()
    # a rule this version does not know is usable when it states its values
    future = {"kind": "pre-cropped", "rule": "future-rule", **old}
    assert CropPolicy.from_dict(future).rule == "future-rule"
    for bad in ({"kind": "pre-cropped", "rule": "future-rule"}, {"kind": "other"},
                {"kind": "box", "rule": "fer2013-like"}, {"kind": "pre-cropped", "rule": ""}):
        with pytest.raises(UsageError):
            CropPolicy.from_dict(bad)
    doc = {"format": CHECKPOINT_FORMAT, "model": {"name": "bregnext32", "args": {}},
           "preprocess": {"crop": {"kind": "nonsense"}}}
    with pytest.raises(CheckpointError, match="kind"):
        validate_metadata(doc)


# ------------------------------------------------------------------ item 6: the cache's source
def _folder_cache(tmp_path: Path) -> Path:
    root = make_folder(tmp_path / "faces", split_dirs=True)
    prepare_cache("folder", root, tmp_path / "C", splits=["train"], progress=False)
    return root


@pytest.mark.parametrize("argv, difference", [
    (["--data", "fer2013"], "data set is 'folder' in the cache, 'fer2013' asked"),
    (["--data", "folder", "--option", "crop_rule=rafdb-aligned"],
     "option crop_rule is 'face-crop' in the cache, 'rafdb-aligned' asked"),
    (["--data", "folder", "--root", "{other}"], "root is"),
])
def test_train_refuses_a_cache_made_from_other_data(tmp_path, capsys, argv, difference):
    _folder_cache(tmp_path)
    other = make_folder(tmp_path / "other", split_dirs=True)
    argv = [a.replace("{other}", str(other)) for a in argv]
    rc = cli_main(["train", "demo", *TINY, "task=categorical", "data.val_split=null", "data.test_split=null",
                   "train.epochs=1", "train.max_time_s=null", "--cache", str(tmp_path / "C"),
                   "--out", str(tmp_path / "run"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert difference in err and "bregnet prepare --overwrite" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_evaluate_refuses_a_cache_made_from_other_data(tmp_path, capsys):
    _folder_cache(tmp_path)
    from infer_helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.safetensors", num_classes=2, va=False)
    rc = cli_main(["evaluate", str(ckpt), "--data", "fer2013", "--cache", str(tmp_path / "C"),
                   "--split", "train", "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2 and "data set is 'folder' in the cache, 'fer2013' asked" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "ev").exists()


def test_a_matching_cache_is_used_with_or_without_its_root(tmp_path):
    root = _folder_cache(tmp_path)
    cfg = {"name": "folder", "root": str(root), "cache": str(tmp_path / "C"), "options": {}}
    assert len(load_split(cfg, "train", progress=False)) == 5
    # without a root the cache stands for the data: what the request says is compared
    assert len(load_split({**cfg, "root": None}, "train", progress=False)) == 5
    assert len(load_split({**cfg, "options": {"crop_rule": "face-crop"}}, "train", progress=False)) == 5
    # the data set changed since: one more image
    _write(root / "train" / "happy" / "new.png", _image(9))
    with pytest.raises(DataError, match="source items is 6 in the cache, 7 asked"):
        load_split(cfg, "train", progress=False)
    # prepare compares the same way
    with pytest.raises(DataError, match="source items is 6 in the cache, 7 asked.*--overwrite"):
        prepare_cache("folder", root, tmp_path / "C", splits=["train"], progress=False)


def test_a_cache_of_the_previous_format_is_refused_with_the_command_that_rebuilds_it(tmp_path):
    root = _folder_cache(tmp_path)
    meta_path = tmp_path / "C" / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for d in (meta, meta["signature"]):  # what version 1 wrote: no crop, no reader version
        d["version"] = 1
        d.pop("crop", None)
        d.pop("reader_version", None)
    meta_path.write_text(json.dumps(meta))
    cfg = {"name": "folder", "root": str(root), "cache": str(tmp_path / "C"), "options": {}}
    for root_given in (str(root), None):
        with pytest.raises(DataError, match=r"older bregnet \(cache format version 1.*prepare --overwrite"):
            load_split({**cfg, "root": root_given}, "train", progress=False)
    with pytest.raises(DataError, match="older bregnet.*--overwrite"):
        prepare_cache("folder", root, tmp_path / "C", splits=["train"], progress=False)
    rep = prepare_cache("folder", root, tmp_path / "C", splits=["train"], progress=False, overwrite=True)
    assert rep.splits[0].status == "prepared" and len(load_split(cfg, "train", progress=False)) == 5


def test_signature_mismatch_names_the_first_difference():
    sig = {"format": "bregnet-cache", "version": 2, "dataset": "csv", "split": "all",
           "options": {"margin": 0.0, "square": False}, "crop": CropPolicy(0.0, False, False, "clamp").to_dict()}
    assert signature_mismatch(sig, dict(sig)) is None
    assert signature_mismatch(sig, {**sig, "options": {"margin": 0.2, "square": False}}) == \
        "option margin is 0.0 in the cache, 0.2 asked"
    crop = CropPolicy.named("face-crop").to_dict()
    assert "pre-cropped, rule face-crop" in signature_mismatch(sig, {**sig, "crop": crop})
    assert "no signature" in signature_mismatch(None, sig)
