"""``bregnet predict``: per-face emotions and valence/arousal for images, folders, videos, a webcam."""

from __future__ import annotations

import argparse
import sys
import time

EPILOG = """\
examples:
  bregnet predict best.safetensors photo.jpg
  bregnet predict best.safetensors photos/ -o faces.csv -o faces.jsonl --annotate out/
  bregnet predict model.onnx clip.mp4 --fps 5 --smooth 0.6 -o clip.csv --annotate out/
  bregnet predict best.safetensors --webcam 0 --max-frames 300 -o cam.jsonl

Output columns: source, frame, time_s, face_id, x, y, w, h, det_score, label, p_<class>...,
valence, arousal (label/p_* only for a categorical model, valence/arousal only with that head).
Unreadable images are reported on stderr and skipped.

Speed: on video, faces are detected on the whole frame (a 320-pixel copy) every 5th frame and
refined in small windows in between, and the model runs in its own threads while frames are decoded
and detected; --exact gives the fp32 path that detects on every frame (at --det-max-side, 640).
An int8 model (bregnet export --onnx m.onnx --int8) is used like any .onnx file.

Files: outputs are written under temporary names and moved into place when the run succeeds (a
failed run leaves an existing output as it was); annotations never overwrite an input.
"""


from ..preprocess import CROP_RULES, MARGIN_RANGE
from ._common import device_arg, float_range, non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="run a model on images, folders, videos or a webcam",
        description="Detect faces, crop them as the model was trained (checkpoint metadata) and "
                    "write per-face emotion probabilities and valence/arousal as CSV/JSONL.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors checkpoint, a run folder, an exported .onnx, "
                                      "or a downloaded weights name (bregnet weights list)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, folders (searched recursively) and video files")
    p.add_argument("--webcam", type=non_negative_int, metavar="INDEX", help="read from this camera (0, 1, ...)")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", action="append", metavar="PATH",
                   help="write records to PATH (.csv or .jsonl; '-' = CSV on stdout); repeatable. "
                        "Default: CSV on stdout")
    g.add_argument("--keep-empty", action="store_true",
                   help="also write a row (empty face fields) for images/frames without a face")
    g.add_argument("--annotate", metavar="DIR",
                   help="write annotated images/videos (boxes, labels, valence/arousal marker) and "
                        "a timeline plot per video into DIR")
    g.add_argument("--no-overwrite", action="store_true",
                   help="refuse to replace an existing output or annotation file")
    g.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    g.add_argument("--timings", action="store_true",
                   help="also print the start-up time (command to first record) and the time "
                        "per image/frame of each stage, wall and CPU, on stderr")
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="PyTorch or ONNX Runtime (an .onnx file always uses ONNX Runtime)")
    g.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    g.add_argument("--batch-size", type=positive_int,
                   help="faces per model call, batched across images and frames (default 4 on "
                        "the CPU, where small batches stay in the cache and run fastest; 32 on a GPU)")
    g.add_argument("--threads", type=positive_int,
                   help="CPU threads per model call (default: 1 with several --workers)")
    g.add_argument("--workers", type=non_negative_int,
                   help="model threads running beside the thread that decodes and detects "
                        "(default: one per core, at most 2; 0 = everything in one thread)")
    g.add_argument("--exact", action="store_true",
                   help="the reference path: the video default (detection on every frame at "
                        "--det-max-side) with an fp32 model only (a checkpoint or fp32 .onnx)")
    g.add_argument("--fast", action="store_true",
                   help="video: detect on a 320-pixel copy every 5th frame and refine the tracked "
                        "faces in small windows in between (about 3x faster with an int8 model; "
                        "boxes differ slightly from every-frame detection, which changes the labels "
                        "of faces near a class boundary: see docs/inference.md, Speed)")
    g = p.add_argument_group("faces")
    g.add_argument("--detector", choices=("yunet", "haar", "none"), default="yunet",
                   help="yunet (default, 5 landmarks), haar (OpenCV cascade) or none (inputs are "
                        "face crops)")
    g.add_argument("--det-threshold", type=float_range(0.0, 1.0),
                   help="minimum detection score in [0, 1] (default 0.5)")
    g.add_argument("--det-max-side", type=positive_int,
                   help="downscale images whose longest side exceeds this for detection "
                        "(default 640; with --fast, 320 for the whole-frame detections in video)")
    g.add_argument("--min-face", type=non_negative_int, help="ignore faces smaller than this many pixels")
    g.add_argument("--no-align", action="store_true",
                   help="do not level the eyes even if the checkpoint's crop policy says so")
    g.add_argument("--crop-rule", choices=tuple(CROP_RULES), metavar="NAME",
                   help="crop detector boxes by this named rule instead of the checkpoint's policy "
                        f"({', '.join(CROP_RULES)}; see docs/inference.md)")
    g.add_argument("--crop-margin", type=float_range(*MARGIN_RANGE), metavar="M",
                   help="fraction of the box side added on every side, instead of the checkpoint's")
    g.add_argument("--crop-square", action=argparse.BooleanOptionalAction, default=None,
                   help="make the box square (or, --no-crop-square, keep its shape), instead of "
                        "the checkpoint's choice")
    g.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    g = p.add_argument_group("video")
    s = g.add_mutually_exclusive_group()
    s.add_argument("--every", type=positive_int, default=1, metavar="N", help="keep every N-th frame")
    s.add_argument("--fps", type=float_range(0.0, lo_open=True), help="keep about this many frames per second")
    g.add_argument("--max-frames", type=positive_int, help="stop after this many processed frames")
    g.add_argument("--det-every", type=positive_int, metavar="K",
                   help="detect on the whole frame every K-th processed frame, refining the "
                        "tracked faces in small windows in between (default 1: every frame; 5 "
                        "with --fast)")
    g.add_argument("--no-track", action="store_true",
                   help="no tracking: face_id is the index within each frame")
    g.add_argument("--smooth", type=float_range(0.0, 1.0, hi_open=True), default=0.0, metavar="A",
                   help="exponential smoothing per tracked face, s = A*s + (1-A)*x, 0 <= A < 1 "
                        "(default 0: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # before anything imports torch or another OpenMP user (see prepare_process)
    from ..infer.pipeline import VIDEO_SPEED, default_workers, prepare_process, process_age

    prepare_process()
    started = process_age()
    from ..errors import UsageError
    from ..infer.pipeline import check_outputs, run_predictions
    from ..infer.predictor import Predictor

    if not args.inputs and args.webcam is None:
        raise UsageError("give at least one INPUT (image, folder, video) or --webcam INDEX")
    if args.exact and (args.fast or args.det_every not in (None, 1)):
        raise UsageError("--exact detects on every frame: leave out --fast and --det-every")
    outputs = args.output or ["-"]
    overwrite = not args.no_overwrite
    check_outputs(outputs, args.annotate, args.inputs, overwrite=overwrite)  # before the model loads
    workers = default_workers() if args.workers is None else args.workers
    threads = args.threads if args.threads is not None else (1 if workers > 1 else None)
    t_load = time.perf_counter()
    predictor = Predictor.from_checkpoint(
        args.checkpoint, detector=args.detector, device=args.device, backend=args.backend,
        batch_size=args.batch_size or (4 if args.device == "cpu" else 32), threads=threads,
        align=False if args.no_align else None,
        crop={"rule": args.crop_rule, "margin": args.crop_margin, "square": args.crop_square},
        detector_options=None if args.detector == "none" else {
            "score_threshold": args.det_threshold, "max_side": args.det_max_side,
            "min_size": args.min_face},
        workers=workers,
    )
    load_s = time.perf_counter() - t_load
    if args.exact and predictor.quantized:
        raise UsageError(f"--exact runs the fp32 model, and {args.checkpoint} is an int8 model: "
                         "give the checkpoint or an fp32 .onnx")
    # Video detection: every frame at full size by default (the setting whose labels match the
    # reference); --fast trades that for speed (VIDEO_SPEED, measured in BENCHMARKS.md)
    fast = VIDEO_SPEED if args.fast else {"det_every": 1, "det_side": None}
    det_every = args.det_every or fast["det_every"]
    det_side = args.det_max_side or fast["det_side"]
    summary = run_predictions(
        predictor, args.inputs, outputs, webcam=args.webcam, keep_empty=args.keep_empty,
        annotate_dir=args.annotate, recursive=not args.no_recursive,
        progress=not args.quiet and sys.stderr.isatty(), overwrite=overwrite,
        reserved=[args.checkpoint],
        every=args.every, fps=args.fps, max_frames=args.max_frames, track=not args.no_track,
        smooth=args.smooth, det_every=det_every, det_side=det_side)
    if not args.quiet:
        where = ", ".join("stdout" if str(o) == "-" else str(o) for o in outputs)
        line = (f"bregnet predict: {summary.faces} face(s) in {summary.frames} image(s)/frame(s); "
                f"{summary.rows} row(s) to {where}")
        if summary.skipped:
            line += f"; {len(summary.skipped)} unreadable input(s) skipped"
        if args.annotate:
            line += f"; annotations in {args.annotate}"
        print(line, file=sys.stderr)
    if args.timings:
        first = summary.first_result_s
        startup = None if first is None or started is None else started + load_s + first
        print(f"bregnet predict: start-up (command to first record) "
              f"{'unknown' if startup is None else f'{startup:.2f} s'}; model load {load_s:.2f} s; "
              f"{summary.frames / summary.seconds if summary.seconds else 0:.1f} images/frames "
              f"per s after it; {summary.stage_line()}", file=sys.stderr)
    return 0
