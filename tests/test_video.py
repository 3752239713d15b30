"""Video: streaming, sampling, tracking IDs, smoothing, annotation, bad files, constant memory."""

from __future__ import annotations

import csv
import gc
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregnet import Predictor
from bregnet.cli import main
from bregnet.infer.video import VideoReader
from bregnet.infer.writers import open_writer
from infer_helpers import LABELS, make_checkpoint, make_video

FPS = 20.0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "model.safetensors")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("vid") / "one.avi", 24, (256, 192), FPS)


def test_reader_sampling(video):
    r = VideoReader(video)
    frames = list(r)
    assert (r.frame_count, r.fps, r.width, r.height) == (24, FPS, 256, 192)
    assert [f.index for f in frames] == list(range(24)) and not r.problems
    assert frames[7].time_s == pytest.approx(7 / FPS) and frames[0].rgb.shape == (192, 256, 3)
    r = VideoReader(video, every=5)
    assert [f.index for f in r] == list(range(0, 24, 5)) and r.expected_frames == 5
    r = VideoReader(video, fps=5)
    assert [f.index for f in r] == list(range(0, 24, 4))
    r = VideoReader(video, fps=7)  # 20 -> 7 fps: the first frame of every 1/7 s slot
    idx = [f.index for f in r]
    assert len(idx) == r.expected_frames == 9 and idx[:5] == [0, 3, 6, 9, 12]
    assert [f.index for f in VideoReader(video, max_frames=5)] == [0, 1, 2, 3, 4]
    with pytest.raises(Exception, match="either"):
        VideoReader(video, every=2, fps=5)


def test_rows_and_stable_id_one_face(ckpt, video):
    p = Predictor.from_checkpoint(ckpt, batch_size=8)
    results = list(p.predict_video(video))
    assert [r.frame for r in results] == list(range(24))
    assert all(len(r.faces) == 1 for r in results)
    assert {f.face_id for r in results for f in r.faces} == {0}
    xs = [r.faces[0].box[0] for r in results]
    assert xs[-1] - xs[0] > 80                        # it moves across the frame
    ws = [r.faces[0].box[2] for r in results]
    assert max(ws) / min(ws) > 1.3                    # and scales
    assert results[10].time_s == pytest.approx(0.5) and not p.problems
    assert p.timings["detect"] > 0 and p.timings["model"] > 0 and p.timings["decode"] > 0


def test_two_faces_keep_their_ids_with_sparse_sampling(ckpt, tmp_path):
    v = make_video(tmp_path / "two.avi", 24, (480, 240), FPS, faces=2)
    p = Predictor.from_checkpoint(ckpt, batch_size=16)
    results = list(p.predict_video(v, every=3))
    assert len(results) == 8 and all(len(r.faces) == 2 for r in results)
    track: dict[int, list[float]] = {}
    for r in results:
        for f in r.faces:
            track.setdefault(f.face_id, []).append(f.box[0])
    assert set(track) == {0, 1}
    assert np.all(np.diff(track[0]) > 0) and np.all(np.diff(track[1]) < 0)
    assert max(track[0]) < min(track[1])


def test_smoothing_is_an_ema_of_the_raw_outputs(ckpt, tmp_path):
    v = make_video(tmp_path / "crop.avi", 12, (96, 96), FPS)
    p = Predictor.from_checkpoint(ckpt, detector="none", batch_size=5)
    raw = [r.faces[0] for r in p.predict_video(v)]
    sm = [r.faces[0] for r in p.predict_video(v, smooth=0.6)]
    ep, ev = raw[0].probs.astype(np.float64), raw[0].va.astype(np.float64)
    for a, b in zip(raw, sm):
        ep = 0.6 * ep + 0.4 * a.probs if a is not raw[0] else ep
        ev = 0.6 * ev + 0.4 * a.va if a is not raw[0] else ev
        np.testing.assert_allclose(b.probs, ep, atol=1e-5)
        np.testing.assert_allclose(b.va, ev, atol=1e-5)
        assert b.label == LABELS[int(np.argmax(b.probs))]
    spread = lambda fs: np.std([f.probs for f in fs], axis=0).max()  # noqa: E731
    assert spread(sm) < spread(raw)


def test_cli_video_csv_annotation_and_timeline(ckpt, video, tmp_path, capsys):
    out = tmp_path / "v.csv"
    ann = tmp_path / "ann"
    rc = main(["predict", str(ckpt), str(video), "--every", "2", "--smooth", "0.5", "-o", str(out),
               "--annotate", str(ann), "--batch-size", "4"])
    assert rc == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert [int(r["frame"]) for r in rows] == list(range(0, 24, 2))
    assert {r["face_id"] for r in rows} == {"0"}
    assert [float(r["time_s"]) for r in rows] == pytest.approx([i / FPS for i in range(0, 24, 2)])
    cap = cv2.VideoCapture(str(ann / "one_annotated.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (192, 256, 3)
    assert (ann / "one_timeline.png").stat().st_size > 5000


def test_truncated_video_yields_what_it_could(ckpt, video, tmp_path, capsys):
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "cut.csv"
    rc = main(["predict", str(ckpt), str(cut), "-o", str(out), "--keep-empty", "--detector",
               "none"])
    err = capsys.readouterr().err
    assert rc == 0
    rows = out.read_text().splitlines()[1:]
    assert 4 <= len(rows) < 24
    assert f"decoded {len(rows)} of 24 announced frames" in err


def _peak_bytes(predictor: Predictor, path: Path, out: Path) -> int:
    gc.collect()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    with open_writer(out, predictor.labels, predictor.has_va) as w:
        n = 0
        for res in predictor.predict_video(path):
            w.write(res)
            n += 1
    assert n > 0
    return tracemalloc.get_traced_memory()[1] - base


def test_memory_is_flat_in_video_length(tmp_path):
    short = make_video(tmp_path / "short.avi", 30, (160, 120), FPS)
    long = make_video(tmp_path / "long.avi", 300, (160, 120), FPS)
    micro = make_checkpoint(tmp_path / "micro.safetensors", micro=True)
    p = Predictor.from_checkpoint(micro, detector="none", batch_size=8)
    list(p.predict_video(short))  # warm-up
    tracemalloc.start()
    try:
        peak_short = _peak_bytes(p, short, tmp_path / "s.csv")
        peak_long = _peak_bytes(p, long, tmp_path / "l.csv")
    finally:
        tracemalloc.stop()
    assert len((tmp_path / "l.csv").read_text().splitlines()) == 301
    # ten times the frames, the same peak (within noise)
    print(f"traced peak: 30 frames {peak_short / 1e6:.2f} MB, 300 frames {peak_long / 1e6:.2f} MB")
    assert peak_long < 1.5 * peak_short + 256 * 1024, (peak_short, peak_long)
