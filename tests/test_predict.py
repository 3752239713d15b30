"""The predictor, the record writers and ``bregnet predict`` on images (issue: inference)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregnet import Predictor
from bregnet.cli import main
from bregnet.errors import BregnetError, CheckpointError
from bregnet.infer.results import record_columns
from infer_helpers import LABELS, astronaut, make_checkpoint, multi_face_image, no_face_image

PROB_COLS = [f"p_{c}" for c in LABELS]
HEAD = ["source", "frame", "time_s", "face_id", "x", "y", "w", "h", "det_score"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "model.safetensors")


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return Predictor.from_checkpoint(ckpt, batch_size=4)


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    img = astronaut()
    _save(root / "a_astronaut.png", img)
    _save(root / "b_flipped.jpg", np.ascontiguousarray(img[:, ::-1]))
    _save(root / "sub" / "c_small.png", cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA))
    _save(root / "sub" / "d_coffee.png", no_face_image())
    _save(root / "sub" / "e_dark.png", (img * 0.6).astype(np.uint8))
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_predict_image_one_face(predictor):
    faces = predictor.predict_image(astronaut(), source="astro")
    assert len(faces) == 1
    f = faces[0]
    assert f.face_id == 0 and f.source == "astro" and f.frame == 0
    x, y, w, h = f.box
    assert 160 < x < 200 and 50 < y < 80 and 70 < w < 110
    assert f.probs.shape == (8,) and abs(float(f.probs.sum()) - 1) < 1e-5
    assert f.label == LABELS[int(np.argmax(f.probs))]
    assert f.va.shape == (2,) and np.all(np.abs(f.va) <= 1)
    assert predictor.columns == HEAD + ["label"] + PROB_COLS + ["valence", "arousal"]


def test_multi_face_and_no_face(predictor):
    faces = predictor.predict_image(multi_face_image(2, 3))
    assert [f.face_id for f in faces] == list(range(6))
    tiles = {(int(f.box[1] // 512), int(f.box[0] // 512)) for f in faces}
    assert len(tiles) == 6
    probs = np.stack([f.probs for f in faces])
    assert probs.shape == (6, 8) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert predictor.predict_image(no_face_image()) == []


def test_batching_across_images_matches_one_by_one(predictor, folder):
    results = [r for r in predictor.predict_paths([folder]) if r.error is None]
    assert [Path(r.source).name for r in results] == [
        "a_astronaut.png", "b_flipped.jpg", "c_small.png", "d_coffee.png", "e_dark.png"]
    assert [len(r.faces) for r in results] == [1, 1, 1, 0, 1]
    from bregnet.data.image_io import read_image

    for r in results:
        single = predictor.predict_image(read_image(r.source), source=r.source)
        assert len(single) == len(r.faces)
        for a, b in zip(single, r.faces):
            assert a.box == b.box
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
            np.testing.assert_allclose(a.va, b.va, atol=1e-5)
    # outputs really differ between images (so a mix-up would be seen)
    assert np.abs(results[0].faces[0].probs - results[4].faces[0].probs).max() > 1e-3


def test_unreadable_image_is_reported_and_skipped(predictor, folder):
    predictor.problems.clear()
    results = list(predictor.predict_paths([folder]))
    errors = [r for r in results if r.error]
    assert len(results) == 6 and len(errors) == 1
    assert "broken.jpg" in errors[0].error and errors[0].faces == []
    assert any("broken.jpg" in p for p in predictor.problems)


def test_cli_csv_and_jsonl_schema(ckpt, folder, tmp_path, capsys):
    out_csv, out_jsonl = tmp_path / "faces.csv", tmp_path / "faces.jsonl"
    rc = main(["predict", str(ckpt), str(folder), "-o", str(out_csv), "-o", str(out_jsonl),
               "--keep-empty", "--annotate", str(tmp_path / "ann")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "skipped" in err
    columns = HEAD + ["label"] + PROB_COLS + ["valence", "arousal"]
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == columns
    assert len(rows) == 5  # four faces + one empty row for the coffee cup
    empty = [r for r in rows if r["face_id"] == ""]
    assert len(empty) == 1 and empty[0]["source"].endswith("d_coffee.png")
    assert all(empty[0][c] == "" for c in columns[3:])
    for r in rows:
        if r["face_id"]:
            p = np.array([float(r[c]) for c in PROB_COLS])
            assert abs(p.sum() - 1) < 1e-4 and r["label"] == LABELS[int(p.argmax())]
            assert -1 <= float(r["valence"]) <= 1 and -1 <= float(r["arousal"]) <= 1
            assert r["frame"] == "0" and int(r["w"]) > 0
    recs = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert len(recs) == 5 and all(list(r.keys()) == columns for r in recs)
    assert sum(r["face_id"] is None for r in recs) == 1
    for r, c in zip(recs, rows):
        assert r["source"] == c["source"] and (r["label"] or "") == c["label"]
    ann = sorted(p.relative_to(tmp_path / "ann").as_posix() for p in (tmp_path / "ann").rglob("*.*"))
    assert ann == ["a_astronaut.png", "b_flipped.jpg", "sub/c_small.png", "sub/d_coffee.png",
                   "sub/e_dark.png"]


@pytest.mark.parametrize("num_classes,va", [(8, False), (0, True)])
def test_columns_follow_the_heads(tmp_path, num_classes, va, capsys):
    ck = make_checkpoint(tmp_path / "m.safetensors", num_classes=num_classes, va=va)
    img = _save(tmp_path / "astro.png", astronaut())
    out = tmp_path / "o.csv"
    assert main(["predict", str(ck), str(img), "-o", str(out), "--quiet"]) == 0
    header = out.read_text().splitlines()[0].split(",")
    expected = record_columns(LABELS[:num_classes], va)
    assert header == expected
    assert ("label" in header) == bool(num_classes) and ("valence" in header) == va
    assert len(out.read_text().splitlines()) == 2


def test_stdout_default_and_detector_none(ckpt, tmp_path, capsys):
    crop = cv2.resize(astronaut()[60:180, 170:275], (64, 64), interpolation=cv2.INTER_AREA)
    img = _save(tmp_path / "crop.png", crop)
    assert main(["predict", str(ckpt), str(img), "--detector", "none"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("source,frame,time_s,face_id,x,y,w,h,det_score,label,p_Neutral")
    assert out[1].split(",")[4:8] == ["0", "0", "64", "64"]


def test_bad_checkpoints_and_inputs_give_one_line_errors(ckpt, tmp_path, capsys):
    img = _save(tmp_path / "astro.png", astronaut())
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    wrong = tmp_path / "state.pt"
    wrong.write_bytes(b"PK\x03\x04 a pickle, never loaded")
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2])
    for bad in (corrupt, wrong, truncated, tmp_path / "missing.safetensors"):
        rc = main(["predict", str(bad), str(img)])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and len(err.splitlines()) == 1 and err.startswith("bregnet predict: error")
        with pytest.raises(CheckpointError):
            Predictor.from_checkpoint(bad)
    # a missing webcam, a missing input, nothing to do
    for argv in (["--webcam", "97"], [str(tmp_path / "nope.jpg")], []):
        rc = main(["predict", str(ckpt), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc != 0 and err[-1].startswith("bregnet predict: error")
    # a folder of nothing but unreadable files
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    assert main(["predict", str(ckpt), str(tmp_path / "bad")]) != 0
    assert "could be read" in capsys.readouterr().err
    with pytest.raises(BregnetError):
        Predictor.from_checkpoint(ckpt, backend="tensorrt")
