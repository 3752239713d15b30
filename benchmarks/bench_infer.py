"""End-to-end inference speed on a 640x360 video with one face, split into stages.

Builds ``bregnext50`` (8 classes, random weights: speed does not depend on them), saves it as a
checkpoint, exports it to ONNX, writes a test video of the astronaut's face (scikit-image) moving
and scaling over a plain background, then runs ``Predictor.predict_video`` + a CSV writer with the
PyTorch and the ONNX Runtime backends. Stages: decode (grab + BGR->RGB), detect (YuNet), crop,
model (normalise + forward + softmax), post (tracking, results), write (CSV). Also reports the
overhead of everything around the detector and the model:
``wall / (detect + model) - 1`` (target: <= 20%).

    python benchmarks/bench_infer.py --frames 150 --repeats 2 [--json out.json]

Backends run alternately (``--repeats`` rounds); the best round per backend is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_video(path: Path, frames: int, size=(640, 360), fps: float = 30.0) -> Path:
    import cv2
    from skimage import data

    W, H = size
    patch = np.ascontiguousarray(data.astronaut()[20:240, 130:320])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.stack([120 + 60 * xx / W, 140 + 40 * yy / H, 160 - 40 * xx / W], -1).astype(np.uint8)
    for i in range(frames):
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


def run_once(predictor, video: Path, out_csv: Path, batch_size: int) -> dict:
    from bregnet.infer.writers import open_writer

    predictor.reset_timings()
    predictor.batch_size = batch_size
    t0 = time.perf_counter()
    frames = faces = 0
    with open_writer(out_csv, predictor.labels, predictor.has_va) as w:
        for res in predictor.predict_video(video):
            w.write(res)
            frames += 1
            faces += len(res.faces)
    wall = time.perf_counter() - t0
    t = dict(predictor.timings)
    stages = {k: t.get(k, 0.0) for k in ("decode", "detect", "crop", "model", "post")}
    stages["write"] = w.seconds
    core = stages["detect"] + stages["model"]
    return {
        "frames": frames, "faces": faces, "wall_s": wall, "fps": frames / wall,
        "ms_per_frame": {k: 1000 * v / frames for k, v in stages.items()},
        "ms_per_frame_total": 1000 * wall / frames,
        "overhead_vs_detect_plus_model": wall / core - 1 if core else float("nan"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    from bregnet import Predictor, create_model
    from bregnet.engine.checkpoint import CheckpointMeta, save_checkpoint
    from bregnet.export.onnx import export_onnx

    labels = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = create_model("bregnext50", num_classes=8).eval()
        ckpt = save_checkpoint(tmp / "bregnext50.safetensors", model,
                               CheckpointMeta.for_model(model, labels), write_json=False)
        t0 = time.perf_counter()
        onnx_path = export_onnx(ckpt, tmp / "bregnext50.onnx")
        export_s = time.perf_counter() - t0
        video = make_video(tmp / "face_640x360.mp4", args.frames)
        preds = {}
        for b in args.backends.split(","):
            src = onnx_path if b == "onnx" else ckpt
            preds[b] = Predictor.from_checkpoint(src, backend=b, batch_size=args.batch_size,
                                                 threads=args.threads)
            # warm-up: a few frames through the whole path
            list(preds[b].predict_video(video, max_frames=8))
        results: dict[str, list[dict]] = {b: [] for b in preds}
        for _ in range(args.repeats):
            for b, p in preds.items():
                results[b].append(run_once(p, video, tmp / f"{b}.csv", args.batch_size))
        best = {b: min(r, key=lambda x: x["wall_s"]) for b, r in results.items()}

    info = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "frames": args.frames, "batch_size": args.batch_size, "onnx_export_s": export_s,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    print(json.dumps(info))
    cols = ["decode", "detect", "crop", "model", "post", "write"]
    print("| backend | fps | ms/frame | " + " | ".join(cols) + " | overhead |")
    print("|---|---:|---:|" + "---:|" * len(cols) + "---:|")
    for b, r in best.items():
        ms = r["ms_per_frame"]
        print(f"| {b} | {r['fps']:.1f} | {r['ms_per_frame_total']:.1f} | "
              + " | ".join(f"{ms[c]:.2f}" for c in cols)
              + f" | {100 * r['overhead_vs_detect_plus_model']:.1f}% |")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "best": best, "all": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
