"""Real-time inference benchmark: ``bregnet predict`` end to end, whole process, per setting.

Builds (or takes with ``--checkpoint``) a ``bregnext50`` checkpoint, exports it to fp32 ONNX and
to int8 ONNX (``export_int8``, the gate's result is printed), writes a 640x360, 24 fps test video
of the astronaut's face (scikit-image) moving and scaling over a plain background, and a folder of
photos with several faces each. Then it runs the ``bregnet`` command itself, as a separate process,
once per setting (rounds alternate the settings; the best round of each is reported) and records:

* frames/s of the whole process (start-up included), and the start-up (command to first record)
  and the ms per frame of each stage (decode, detect, crop, model, post; wall and CPU) that
  ``bregnet predict --timings`` prints;
* the peak resident memory of the process;
* against the reference - the fp32 every-frame path (``--exact``, PyTorch) - the share of its faces
  whose top-1 label the setting reproduces (faces matched by frame and box overlap; a face missed
  counts as a disagreement) and the largest probability difference.

Optionally (``--fer-python``, a Python with the ``fer`` package installed elsewhere) the ``fer``
package's detector + classifier on the same video, also as a whole process.

    python benchmarks/bench_infer.py --checkpoint runs/x/best.safetensors --repeats 2 --json out.json

Wall-clock figures are only meaningful on an otherwise idle machine: the load average is printed
with every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABELS = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]


def _synthetic_faces(count: int, seed: int = 7) -> list[np.ndarray]:
    """``count`` drawn faces of bregnet's synthetic data set (its test split, all 8 expressions in
    turn, 192 pixels): faces whose expression a model trained on the synthetic set tells apart."""
    from bregnet.data.synthetic import synthetic_sample

    return [synthetic_sample(i, i % 8, seed=seed, size=192, split="test").image for i in range(count)]


def make_video(path: Path, frames: int, size=(640, 360), fps: float = 24.0,
               faces: str = "astronaut", segment: int = 48) -> Path:
    """The benchmark video: one face moving and scaling over a plain background. ``faces``:
    ``astronaut`` (scikit-image's photo, the whole video), or ``synthetic``: a new synthetic face
    (another expression) every ``segment`` frames, so that a model trained on the synthetic set
    gives labels that vary over the video and the label agreement of a setting means something."""
    import cv2
    from skimage import data

    W, H = size
    if faces == "synthetic":
        patches = _synthetic_faces(max(1, -(-frames // segment)))
    else:
        patches = [np.ascontiguousarray(data.astronaut()[20:240, 130:320])]
        segment = frames
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.stack([120 + 60 * xx / W, 140 + 40 * yy / H, 160 - 40 * xx / W], -1).astype(np.uint8)
    for i in range(frames):
        patch = patches[min(i // segment, len(patches) - 1)]
        t = i / max(frames - 1, 1)
        s = (0.55 + 0.15 * np.sin(2 * np.pi * t)) * H / patch.shape[0]
        ph, pw = int(patch.shape[0] * s), int(patch.shape[1] * s)
        p = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
        x, y = int(20 + t * (W - pw - 40)), (H - ph) // 2
        frame = bg.copy()
        frame[y:y + ph, x:x + pw] = p
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def make_photos(folder: Path, n: int, size=(960, 640), seed: int = 0) -> Path:
    """``n`` photos, each with 3 to 5 copies of the astronaut's face at different sizes."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    face = np.ascontiguousarray(data.astronaut()[20:240, 130:320])
    folder.mkdir(parents=True, exist_ok=True)
    W, H = size
    for i in range(n):
        img = np.full((H, W, 3), rng.integers(60, 200, 3), np.uint8)
        k = int(rng.integers(3, 6))
        for j in range(k):
            s = rng.uniform(0.45, 0.8)
            fh, fw = int(face.shape[0] * s), int(face.shape[1] * s)
            x = int(j * W / k + rng.uniform(0, max(1, W / k - fw)))
            y = int(rng.uniform(0, H - fh))
            img[y:y + fh, x:x + fw] = cv2.resize(face, (fw, fh), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"photo_{i:03d}.jpg"), img[:, :, ::-1])
    return folder


def stress_model(seed: int = 0):
    """A ``bregnext50`` with random weights made to behave like a confident, input-sensitive
    classifier: batch-norm statistics recalibrated on face crops (train-mode forward passes, no
    gradient) and the classifier scaled so that logits spread over about +-3 across faces. Its
    decision boundaries are arbitrary, so small changes of a crop flip its labels more easily than
    a trained model's: a stress test for the label-agreement gate, not a trained model."""
    import torch

    from bregnet import create_model
    from bregnet.engine.checkpoint import CheckpointMeta
    from bregnet.export.quantize import calibration_crops

    torch.manual_seed(seed)
    model = create_model("bregnext50", num_classes=8)
    meta = CheckpointMeta.for_model(model, LABELS)
    crops = calibration_crops(meta, count=256, seed=seed + 1)
    x = torch.from_numpy(meta.preprocess.normalize_numpy(np.concatenate([crops.calibrate,
                                                                         crops.check])))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None   # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 32):
            model(x[i:i + 32])
    model.eval()
    with torch.no_grad():
        logits = model(x[:128])
        model.fc.weight.mul_(3.0 / float(logits.std()))
        model.fc.bias.zero_()
    return model, meta


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("face_id")]


def _iou(a, b) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def agreement(ref: list[dict], got: list[dict]) -> dict:
    """Share of the reference's faces whose label the candidate reproduces (matched by source,
    frame and box IoU >= 0.3), the number missed, and the largest probability difference."""
    pcols = [c for c in (ref[0].keys() if ref else []) if c.startswith("p_")]
    by_frame: dict[tuple, list[dict]] = {}
    for r in got:
        by_frame.setdefault((r["source"], r["frame"]), []).append(r)
    same = missed = 0
    max_diff = 0.0
    for r in ref:
        box = tuple(float(r[c]) for c in "xywh")
        cands = by_frame.get((r["source"], r["frame"]), [])
        best = max(cands, key=lambda c: _iou(box, tuple(float(c[k]) for k in "xywh")), default=None)
        if best is None or _iou(box, tuple(float(best[k]) for k in "xywh")) < 0.3:
            missed += 1
            continue
        same += int(best["label"] == r["label"])
        if pcols:
            max_diff = max(max_diff, max(abs(float(r[c]) - float(best[c])) for c in pcols))
    n = max(1, len(ref))
    # how varied the reference's labels are: a model that gives one label to every face agrees
    # with anything, so the agreement means little unless the reference itself varies
    counts: dict[str, int] = {}
    for r in ref:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    return {"faces": len(ref), "label_agreement": same / n, "missed": missed,
            "max_prob_diff": max_diff, "reference_labels": counts}


def label_changes(rows: list[dict]) -> float | None:
    """Share of consecutive frames of one tracked face (same source and face_id) whose label
    differs from the frame before: how steady the labels are (None without video rows)."""
    last: dict[tuple, str] = {}
    pairs = changes = 0
    for r in sorted(rows, key=lambda r: (r["source"], int(r["frame"]))):
        key = (r["source"], r["face_id"])
        if key in last:
            pairs += 1
            changes += int(last[key] != r["label"])
        last[key] = r["label"]
    return changes / pairs if pairs else None


TIMING = re.compile(r"start-up \(command to first record\) ([\d.]+|unknown)(?: s)?; model load ([\d.]+) s")


def parse_timings(stderr: str) -> dict:
    out: dict = {}
    for line in stderr.splitlines():
        m = TIMING.search(line)
        if not m:
            continue
        out["startup_s"] = None if m.group(1) == "unknown" else float(m.group(1))
        out["model_load_s"] = float(m.group(2))
        for kind, part in (("wall", r"\(wall\): (.*?); \(CPU\)"), ("cpu", r"\(CPU\): (.*)$")):
            seg = re.search(part, line)
            if seg:
                out[f"ms_{kind}"] = {k: float(v) for k, v in
                                     re.findall(r"(\w+) ([\d.]+)", seg.group(1))}
    return out


def run_cli(argv: list[str], out_csv: Path) -> dict:
    """Run ``bregnet predict ARGV -o out_csv --timings --quiet`` as a process; wall time, peak
    memory and the parsed timings."""
    cmd = [sys.executable, "-m", "bregnet", "predict", *argv, "-o", str(out_csv), "--timings",
           "--quiet"]
    # GNU time reports the peak memory of the command itself: a child started straight from this
    # (large) process would inherit this process's peak in its own (Linux keeps it across exec)
    mem_file = out_csv.with_suffix(".mem")
    timed = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(mem_file), *cmd]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(timed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    err = proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
    kib, user, sys_s = mem_file.read_text().split()[-3:]
    res = {"wall_s": wall, "peak_rss_mib": int(kib) / 1024, "load_before": load,
           "cpu_s": float(user) + float(sys_s)}
    res.update(parse_timings(err))
    return res


FER_DRIVER = r"""
import sys, time, csv
t0 = time.perf_counter()
import cv2
from fer.fer import FER
det = FER()   # OpenCV Haar cascade + the mini-Xception in TFLite (the package's defaults)
cap = cv2.VideoCapture(sys.argv[1])
n = faces = 0
with open(sys.argv[2], "w", newline="") as fh:
    w = csv.writer(fh)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        for f in det.detect_emotions(frame):
            w.writerow([n, *f["box"], max(f["emotions"], key=f["emotions"].get)])
            faces += 1
        n += 1
print(n, faces, time.perf_counter() - t0)
"""


def run_fer(python: str, video: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    proc = subprocess.run([python, "-c", FER_DRIVER, str(video), str(out)], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-800:])
    frames, faces, _ = proc.stdout.split()[-3:]
    return {"wall_s": wall, "frames": int(frames), "faces": int(faces), "load_before": load}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path,
                    help="a bregnext50 checkpoint (default: random weights, see --stress)")
    ap.add_argument("--stress", action="store_true",
                    help="without --checkpoint: random weights recalibrated to behave like a "
                         "confident, input-sensitive classifier (stress_model)")
    ap.add_argument("--frames", type=int, default=472)
    ap.add_argument("--video-faces", choices=["astronaut", "synthetic"], default="astronaut",
                    help="the video's face: scikit-image's astronaut throughout (default), or a new "
                         "synthetic face every 2 s (for the label agreement of a model trained on "
                         "the synthetic set)")
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--settings", default="all",
                    help="comma-separated names of the video settings to run (default: all)")
    ap.add_argument("--fer-python", help="a Python interpreter with the 'fer' package")
    ap.add_argument("--workdir", type=Path, help="keep the models and data here (default: a temp dir)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--prepare-only", action="store_true",
                    help="only export the models and write the data into --workdir")
    args = ap.parse_args(argv)

    from bregnet.engine.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
    from bregnet.export.onnx import export_onnx
    from bregnet.export.quantize import export_int8

    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-infer-") if args.workdir is None else None
    work = Path(tmp_ctx.name) if tmp_ctx else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    info: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                  "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import onnxruntime
        import torch

        info.update(torch=torch.__version__, onnxruntime=onnxruntime.__version__)
    except ImportError:
        pass
    ckpt = args.checkpoint
    if ckpt is None and args.stress:
        ckpt = work / "bregnext50-stress.safetensors"
        if not ckpt.exists():
            model, meta = stress_model()
            save_checkpoint(ckpt, model, meta, write_json=False)
        info["weights"] = "random, BN recalibrated on face crops, logits spread (stress_model)"
    elif ckpt is None:
        import torch

        from bregnet import create_model

        torch.manual_seed(0)
        model = create_model("bregnext50", num_classes=8).eval()
        ckpt = save_checkpoint(work / "bregnext50.safetensors", model,
                               CheckpointMeta.for_model(model, LABELS), write_json=False)
        info["weights"] = "random (speed only: the label agreement of random weights means little)"
    else:
        info["weights"] = str(ckpt)
    fp32 = work / "model.onnx"
    int8 = work / "model.int8.onnx"
    if not fp32.exists():
        t0 = time.perf_counter()
        export_onnx(ckpt, fp32)
        info["export_fp32_s"] = time.perf_counter() - t0
    if not int8.exists():
        model, meta = load_checkpoint(ckpt)
        t0 = time.perf_counter()
        r = export_int8(model, int8, meta=meta)
        info["export_int8_s"] = time.perf_counter() - t0
        info["int8_gate"] = r.report["gate"]
        info["int8_parity"] = r.report["parity"]
        if not r.int8:   # measure the int8 model anyway, marked as failing the gate
            r = export_int8(model, int8, meta=meta, min_agreement=0.0, va_tolerance=1e9)
            if not r.int8:
                raise SystemExit(f"could not write an int8 model: {r.reason}")
        info["int8_written"] = r.report.get("written")
    video = work / ("face_640x360_24fps.mp4" if args.video_faces == "astronaut"
                    else "synthetic_faces_640x360_24fps.mp4")
    if not video.exists():
        make_video(video, args.frames, faces=args.video_faces)
    photos = work / "photos"
    if not photos.exists():
        make_photos(photos, args.photos)
    n_photos = len(list(photos.glob("photo_*.jpg")))   # a kept --workdir may hold another count

    info_path = work / "info.json"
    if "export_int8_s" in info:   # exported in this run: keep the export figures for later runs
        info_path.write_text(json.dumps(info, indent=2))
    elif info_path.exists():
        info = {**json.loads(info_path.read_text()), **info}
    if args.prepare_only:
        print(json.dumps(info))
        return 0
    ck, f32, i8 = str(ckpt), str(fp32), str(int8)
    settings = {
        # name: argv for bregnet predict (after the model)
        "fp32 exact, PyTorch (reference)": [ck, "--exact"],
        "fp32 exact, ONNX Runtime": [f32, "--exact"],
        "fp32 --fast, PyTorch": [ck, "--fast"],
        "fp32 --fast, ONNX Runtime": [f32, "--fast"],
        "int8 default (detection every frame at 640)": [i8],
        "int8 --fast (det every 5 at 320)": [i8, "--fast"],
        "int8 --fast, det every 2": [i8, "--fast", "--det-every", "2"],
        "int8 --fast, det every 10": [i8, "--fast", "--det-every", "10"],
        "int8 --fast, det at 240": [i8, "--fast", "--det-max-side", "240"],
        "int8 --fast, batch 1": [i8, "--fast", "--batch-size", "1"],
        "int8 --fast, batch 32": [i8, "--fast", "--batch-size", "32"],
        "int8 --fast, one thread (--workers 0)": [i8, "--fast", "--workers", "0"],
        "int8 --fast, 1 worker x 2 threads": [i8, "--fast", "--workers", "1", "--threads", "2"],
    }
    if args.settings != "all":
        wanted = [s.strip() for s in args.settings.split(",")]
        settings = {k: v for k, v in settings.items() if any(w in k for w in wanted) or
                    k.startswith("fp32 exact, PyTorch")}
    photo_settings = {"photos fp32, PyTorch": [ck, str(photos)],
                      "photos fp32, ONNX Runtime": [f32, str(photos)],
                      "photos int8": [i8, str(photos)]}
    results: dict[str, list[dict]] = {k: [] for k in [*settings, *photo_settings]}
    fer_runs: list[dict] = []
    for rnd in range(args.repeats):
        for name, argv in settings.items():
            out = work / f"out_{abs(hash(name))}.csv"
            r = run_cli([*argv[:1], str(video), *argv[1:]], out)
            r["rows"] = read_rows(out)
            results[name].append(r)
            print(f"round {rnd}: {name}: {args.frames / r['wall_s']:.1f} frames/s "
                  f"(load {r['load_before']:.2f})", file=sys.stderr)
        for name, argv in photo_settings.items():
            out = work / f"out_{abs(hash(name))}.csv"
            r = run_cli(argv, out)
            r["rows"] = read_rows(out)
            results[name].append(r)
            print(f"round {rnd}: {name}: {n_photos / r['wall_s']:.2f} images/s", file=sys.stderr)
        if args.fer_python:
            fer_runs.append(run_fer(args.fer_python, video, work / "fer.csv"))
            print(f"round {rnd}: fer: {args.frames / fer_runs[-1]['wall_s']:.1f} frames/s",
                  file=sys.stderr)

    ref_name = "fp32 exact, PyTorch (reference)"
    ref_rows = min(results[ref_name], key=lambda r: r["wall_s"])["rows"]
    photo_ref = min(results["photos fp32, PyTorch"], key=lambda r: r["wall_s"])["rows"]
    table = []
    for name, runs in results.items():
        best = min(runs, key=lambda r: r["wall_s"])
        photo = name.startswith("photos")
        n = n_photos if photo else args.frames
        agree = agreement(photo_ref if photo else ref_rows, best["rows"])
        table.append({"setting": name, "per_s": n / best["wall_s"],
                      "per_s_rounds": [n / r["wall_s"] for r in runs],
                      "wall_s": best["wall_s"], "startup_s": best.get("startup_s"),
                      "peak_rss_mib": best["peak_rss_mib"], "cpu_s": best["cpu_s"],
                      "ms_wall": best.get("ms_wall", {}), "ms_cpu": best.get("ms_cpu", {}),
                      "load_before": [r["load_before"] for r in runs],
                      "label_changes": None if photo else label_changes(best["rows"]), **agree})
    if fer_runs:
        best = min(fer_runs, key=lambda r: r["wall_s"])
        table.append({"setting": "fer package (Haar + mini-Xception TFLite)",
                      "per_s": args.frames / best["wall_s"],
                      "per_s_rounds": [args.frames / r["wall_s"] for r in fer_runs],
                      "wall_s": best["wall_s"], "faces": best["faces"],
                      "load_before": [r["load_before"] for r in fer_runs]})
    print(json.dumps(info))
    print("reference labels (video): "
          f"{agreement(ref_rows, ref_rows)['reference_labels']}; (photos): "
          f"{agreement(photo_ref, photo_ref)['reference_labels']}")
    stages = ["decode", "detect", "crop", "model", "post"]
    print("| setting | frames/s (images/s) | start-up s | " + " | ".join(stages) +
          " | peak MiB | label agreement | max prob diff | label changes | load |")
    print("|---|---:|---:|" + "---:|" * len(stages) + "---:|---:|---:|---:|---:|")
    for row in table:
        ms = row.get("ms_cpu", {})
        agree = row.get("label_agreement")
        changes = "-" if row.get("label_changes") is None else f"{100 * row['label_changes']:.1f}%"
        print(f"| {row['setting']} | {row['per_s']:.1f} | "
              f"{row['startup_s'] if row.get('startup_s') is not None else '-'} | "
              + " | ".join(f"{ms.get(s, 0):.2f}" for s in stages) + " | "
              f"{row.get('peak_rss_mib', 0):.0f} | "
              f"{'-' if agree is None else f'{100 * agree:.2f}%'} | "
              f"{row.get('max_prob_diff', 0):.3f} | "
              f"{changes} | "
              f"{max(row['load_before']):.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "table": table}, indent=2))
    if tmp_ctx:
        tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
