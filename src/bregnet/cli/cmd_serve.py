"""``bregnet serve``: the model as an HTTP service (JSON API, Prometheus metrics, a web page)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._common import device_arg, float_range, int_range, positive_int

EPILOG = """\
examples:
  bregnet serve runs/affectnet/best.safetensors                 # http://127.0.0.1:8000/
  BREGNET_API_KEY=secret bregnet serve model.onnx --host 0.0.0.0 --port 8080
  curl -s --data-binary @photo.jpg http://127.0.0.1:8000/v1/predict
  curl -s -F file=@clip.mp4 'http://127.0.0.1:8000/v1/predict/video?fps=5'

Endpoints: POST /v1/predict (one image -> JSON), POST /v1/predict/video (JSON Lines stream),
GET /v1/model, GET /healthz, GET /metrics (Prometheus), GET / (the page). With an API key,
/v1/* needs 'Authorization: Bearer KEY'. SIGTERM finishes the requests in flight, then exits.
"""

MB = 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run a model as an HTTP service with a web page",
        description="Load MODEL once and answer HTTP requests: images and videos in, faces with "
                    "emotion probabilities and valence/arousal out (JSON), with dynamic batching "
                    "of faces across requests, limits on every input, Prometheus metrics and a "
                    "page for the browser (file or webcam).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="a .safetensors checkpoint, a run folder, an exported .onnx, or a weights "
                        "name")
    g = p.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int_range(0, 65535), default=8000,
                   help="TCP port (default 8000; 0 = any free port)")
    g.add_argument("--api-key", metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: the "
                        "BREGNET_API_KEY environment variable; prefer it, a command line is "
                        "visible to other users)")
    g.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from ORIGIN, e.g. https://app.example.com "
                        "(repeatable; default: none)")
    g.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"),
                   default="info")
    g.add_argument("--no-access-log", action="store_true", help="do not log every request")
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="PyTorch or ONNX Runtime (an .onnx file always uses ONNX Runtime)")
    g.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:1 ...")
    g.add_argument("--threads", type=positive_int, help="CPU threads for the model")
    g = p.add_argument_group("faces")
    g.add_argument("--detector", choices=("yunet", "haar", "none"), default="yunet",
                   help="face detector (none: every upload is one face crop)")
    g.add_argument("--det-threshold", type=float_range(0.0, 1.0), default=0.5,
                   help="default minimum detection score; requests may ask for another "
                        "(default 0.5)")
    g.add_argument("--det-max-side", type=positive_int,
                   help="downscale images whose longest side exceeds this for detection "
                        "(default 640)")
    g.add_argument("--min-face", type=int_range(0), help="ignore faces smaller than this")
    g.add_argument("--no-align", action="store_true",
                   help="do not level the eyes even if the checkpoint's crop policy says so")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch", type=positive_int, default=32,
                   help="most faces per model call (default 32)")
    g.add_argument("--max-wait-ms", type=float_range(0.0, 10_000.0), default=5.0,
                   help="longest time a request waits for others to share its batch "
                        "(default 5 ms)")
    g.add_argument("--max-queue", type=positive_int, default=64,
                   help="requests waiting for the model at most; more get 503 (default 64)")
    g.add_argument("--workers", type=int_range(1, 64), default=2,
                   help="threads decoding, detecting and cropping (default 2)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float_range(0.0, 10_000.0, lo_open=True), default=20.0,
                   help="largest image upload in MiB (default 20)")
    g.add_argument("--max-video-mb", type=float_range(0.0, 100_000.0, lo_open=True),
                   default=200.0, help="largest video upload in MiB (default 200)")
    g.add_argument("--max-pixels", type=positive_int, default=50_000_000,
                   help="largest image or video frame, width x height (default 50,000,000)")
    g.add_argument("--max-faces", type=int_range(1, 1000), default=32,
                   help="most faces answered per image or frame (default 32)")
    g.add_argument("--max-video-frames", type=positive_int, default=10_000,
                   help="most sampled frames processed per video (default 10,000)")
    g.add_argument("--max-videos", type=positive_int, default=2,
                   help="videos processed at once; more get 503 (default 2)")
    g.add_argument("--timeout", type=float_range(0.0, 3600.0, lo_open=True), default=30.0,
                   help="seconds for an image request, upload included (default 30)")
    g.add_argument("--video-timeout", type=float_range(0.0, 86_400.0, lo_open=True),
                   default=600.0, help="seconds for a video request (default 600)")
    p.set_defaults(func=run)


def _source(model: str) -> dict[str, str]:
    """What MODEL names, for GET /v1/model (file names only: no server paths are revealed)."""
    path = Path(model)
    if path.suffix.lower() == ".onnx" and path.is_file():
        return {"kind": "onnx", "name": path.name}
    if path.is_file():
        return {"kind": "checkpoint", "name": path.name}
    if path.is_dir():
        return {"kind": "run", "name": path.name}
    return {"kind": "weights", "name": model}


def run(args: argparse.Namespace) -> int:
    from ..errors import BregnetError
    from ..serve import missing_dependencies

    missing = missing_dependencies()
    if missing:
        raise BregnetError(f"the service needs {', '.join(missing)}: pip install 'bregnet[serve]'")

    from ..infer.predictor import Predictor
    from ..serve.app import ServeSettings, create_app
    from ..serve.limits import Limits
    from ..serve.server import bind_socket, is_loopback, serve

    api_key = args.api_key or os.environ.get("BREGNET_API_KEY") or None
    detector_options = {"score_threshold": args.det_threshold, "max_side": args.det_max_side,
                        "min_size": args.min_face}
    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * MB), max_video_bytes=int(args.max_video_mb * MB),
        max_pixels=args.max_pixels, max_faces=args.max_faces,
        max_video_frames=args.max_video_frames, request_timeout_s=args.timeout,
        video_timeout_s=args.video_timeout, max_concurrent_videos=args.max_videos)
    settings = ServeSettings(
        detector=args.detector, detector_options=detector_options, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, workers=args.workers,
        limits=limits, api_key=api_key, cors_origins=tuple(args.cors),
        model_threads=args.threads, source=_source(args.model))
    # bind first: a port in use is a one-line error before the model is loaded
    sock = bind_socket(args.host, args.port)
    try:
        predictor = Predictor.from_checkpoint(
            args.model, detector=args.detector, device=args.device, backend=args.backend,
            batch_size=args.max_batch, threads=args.threads,
            align=False if args.no_align else None,
            detector_options=None if args.detector == "none" else detector_options)
        app = create_app(predictor, settings)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"bregnet serve: {predictor.meta.model_name} ({len(predictor.labels)} classes"
              f"{', valence/arousal' if predictor.has_va else ''}) on http://{shown}:{port}/ "
              f"(API key {'required' if api_key else 'off'})", file=sys.stderr, flush=True)
        if not is_loopback(args.host) and not api_key:
            print("bregnet serve: warning: listening beyond this machine without an API key "
                  "(--api-key or BREGNET_API_KEY)", file=sys.stderr, flush=True)
        started = serve(app, sock, log_level=args.log_level, access_log=not args.no_access_log)
    finally:
        sock.close()
    return 0 if started else 1
