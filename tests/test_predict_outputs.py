"""``bregnet predict`` never writes into or over an input and never loses a previous output
(issue 10, items 3 and 4): annotation targets are derived, outputs are replaced only by a
successful run, ``--no-overwrite`` refuses to replace them."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregnet.cli import main
from bregnet.infer.predictor import Predictor, expand_inputs
from bregnet.infer.results import FrameResult
from infer_helpers import astronaut, make_checkpoint, make_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "model.safetensors", micro=True)


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def _md5s(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _small_face() -> np.ndarray:
    return cv2.resize(astronaut(), (96, 96), interpolation=cv2.INTER_AREA)


FAST = ["--detector", "none", "--quiet"]


def test_annotate_into_the_input_folder_touches_no_input(ckpt, tmp_path):
    photos = tmp_path / "photos"
    _save(photos / "x.jpg", _small_face())
    _save(photos / "x_annotated.jpg", _small_face()[::-1])   # a name the first derivation takes
    _save(photos / "sub" / "y.png", _small_face()[:, ::-1])
    (photos / "notes.txt").write_text("not an image, not an input, not touched either")
    before = _md5s(photos)
    rc = main(["predict", str(ckpt), str(photos), "--annotate", str(photos),
               "-o", str(tmp_path / "faces.csv"), *FAST])
    assert rc == 0
    after = _md5s(photos)
    assert {k: after[k] for k in before} == before          # every input byte for byte
    new = sorted(set(after) - set(before))
    assert new == ["sub/y_annotated.png", "x_annotated_annotated.jpg", "x_jpg_annotated.jpg"]
    for name in ("sub/y_annotated.png", "x_jpg_annotated.jpg"):
        assert cv2.imread(str(photos / name)) is not None
    assert not [p for p in tmp_path.rglob("*.tmp*")]         # no temporary file left


def test_same_names_in_two_folders_and_two_containers(ckpt, tmp_path):
    a = _save(tmp_path / "a" / "x.jpg", _small_face())
    b = _save(tmp_path / "b" / "x.jpg", _small_face()[::-1])
    (tmp_path / "v").mkdir()
    mp4 = make_video(tmp_path / "v" / "clip.mp4", 3, size=(64, 48), fourcc="mp4v")
    mov = make_video(tmp_path / "v" / "clip.mov", 5, size=(64, 48), fourcc="mp4v")
    out = tmp_path / "ann"
    rc = main(["predict", str(ckpt), str(a), str(b), str(mp4), str(mov), "--annotate", str(out),
               *FAST])
    assert rc == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["a/x.jpg", "b/x.jpg", "v/clip_mov_annotated.mp4", "v/clip_mov_timeline.png",
                     "v/clip_mp4_annotated.mp4", "v/clip_mp4_timeline.png"]
    # each annotation is its own input's: the flipped face, the frame counts
    ia, ib = cv2.imread(str(out / "a" / "x.jpg")), cv2.imread(str(out / "b" / "x.jpg"))
    assert np.abs(ia.astype(int) - ib.astype(int)).mean() > 5
    counts = {n: int(cv2.VideoCapture(str(out / "v" / n)).get(cv2.CAP_PROP_FRAME_COUNT))
              for n in ("clip_mp4_annotated.mp4", "clip_mov_annotated.mp4")}
    assert counts == {"clip_mp4_annotated.mp4": 3, "clip_mov_annotated.mp4": 5}


def test_annotation_targets_plan(tmp_path):
    from bregnet.infer.pipeline import annotation_targets

    for rel in ("p/x.jpg", "p/x.gif", "p/sub/x.jpg", "q/x.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    files = expand_inputs([tmp_path / "p"]) + [(tmp_path / "q" / "x.jpg", None)]
    plan = annotation_targets(files, tmp_path / "p", reserved=[tmp_path / "p" / "x_annotated.jpg"])
    got = {Path(k).relative_to(tmp_path).as_posix(): [t.relative_to(tmp_path).as_posix() for t in v]
           for k, v in plan.items()}
    # the outputs go under p/ with the inputs' folders (p/, q/) kept; x.gif -> .png
    assert got == {"p/sub/x.jpg": ["p/p/sub/x.jpg"], "p/x.gif": ["p/p/x.png"],
                   "p/x.jpg": ["p/p/x.jpg"], "q/x.jpg": ["p/q/x.jpg"]}
    # annotating one folder into itself: derived names, never an input or a reserved path
    plan = annotation_targets(expand_inputs([tmp_path / "p"]), tmp_path / "p",
                              reserved=[tmp_path / "p" / "x_annotated.jpg"])
    names = sorted(t.relative_to(tmp_path / "p").as_posix() for v in plan.values() for t in v)
    assert names == ["sub/x_annotated.jpg", "x.png", "x_jpg_annotated.jpg"]   # x.png is no input


def _broken(path: Path) -> Path:
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


@pytest.mark.parametrize("how", ["no readable input", "missing webcam"])
def test_failed_run_leaves_previous_outputs_unchanged(ckpt, tmp_path, how, capsys):
    good = _save(tmp_path / "in" / "good.jpg", _small_face())
    prev_csv, prev_jsonl = tmp_path / "prev.csv", tmp_path / "prev.jsonl"
    assert main(["predict", str(ckpt), str(good), "-o", str(prev_csv), "-o", str(prev_jsonl),
                 "--annotate", str(tmp_path / "ann"), *FAST]) == 0
    snapshot = {p: p.read_bytes() for p in (prev_csv, prev_jsonl, tmp_path / "ann" / "good.jpg")}
    assert len(snapshot[prev_csv].splitlines()) == 2
    if how == "no readable input":
        argv = [str(_broken(tmp_path / "in" / "bad.jpg"))]
    else:   # the good image is processed (and annotated) first, then the camera is missing
        _save(good, _small_face()[::-1])
        argv = [str(good), "--webcam", "9999"]
    capsys.readouterr()
    rc = main(["predict", str(ckpt), *argv, "-o", str(prev_csv), "-o", str(prev_jsonl),
               "--annotate", str(tmp_path / "ann"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) >= 1 and "error" in err[-1]
    for p, data in snapshot.items():
        assert p.read_bytes() == data, p
    assert not [p for p in tmp_path.rglob("*.tmp*")]


def test_no_overwrite_refuses_existing_outputs(ckpt, tmp_path, capsys):
    good = _save(tmp_path / "good.jpg", _small_face())
    out = tmp_path / "faces.csv"
    out.write_text("mine\n")
    rc = main(["predict", str(ckpt), str(good), "-o", str(out), "--no-overwrite", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "already exists" in err[0]
    assert out.read_text() == "mine\n"
    # annotation targets too
    ann = tmp_path / "ann"
    _save(ann / "good.jpg", _small_face()[::-1])
    mine = (ann / "good.jpg").read_bytes()
    rc = main(["predict", str(ckpt), str(good), "-o", str(tmp_path / "new.csv"), "--annotate",
               str(ann), "--no-overwrite", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "already exists" in err[0]
    assert (ann / "good.jpg").read_bytes() == mine and not (tmp_path / "new.csv").exists()
    # nothing there yet: it runs
    assert main(["predict", str(ckpt), str(good), "-o", str(tmp_path / "new.csv"),
                 "--no-overwrite", *FAST]) == 0
    assert len((tmp_path / "new.csv").read_text().splitlines()) == 2


def test_webcam_stopped_with_ctrl_c_is_a_successful_run(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "cam.csv"
    out.write_text("previous\n")

    def fake_stream(self, source, **kwargs):
        assert source == 0
        for i in range(3):
            yield FrameResult("webcam:0", i, i / 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "predict_video", fake_stream)
    rc = main(["predict", str(ckpt), "--webcam", "0", "-o", str(out), "--keep-empty", *FAST])
    assert rc == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["frame"] for r in rows] == ["0", "1", "2"]
