"""The HTTP service: a Starlette application around one :class:`~bregnet.infer.Predictor`.

Endpoints (JSON schemas in ``docs/serve.md``):

* ``POST /v1/predict``: one image (raw body or ``multipart/form-data``) -> ``{"faces": [...]}``;
* ``POST /v1/predict/video``: one video -> the per-face records as JSON Lines, streamed while the
  frames are processed;
* ``GET /v1/model``: labels, preprocessing, crop policy, source, limits;
* ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /`` (the page).

How a request flows: the body is received under its size limit (:mod:`.limits`), its type and
pixel count are read from the header, then decoding, face detection and cropping run in a small
thread pool (never in the event loop), and the crops join the dynamic batcher (:mod:`.batching`),
whose single worker thread runs the model for the faces of many requests at once. Every refusal
is ``{"error": "..."}`` with a 4xx/5xx status; no endpoint takes a file path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import io
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import BregnetError
from ..infer.detect import Detection, FaceDetector, make_detector
from ..infer.predictor import Predictor
from .batching import Batcher, QueueFull
from .limits import VIDEO_CONTAINERS, HTTPError, Limits, Upload, receive_upload, sniff_image, sniff_video
from .memory import MemoryTrimmer
from .metrics import MetricsMiddleware, ServiceMetrics

__all__ = ["ServeSettings", "create_app"]

log = logging.getLogger("bregnet.serve")

ENDPOINTS = {"/", "/healthz", "/metrics", "/v1/model", "/v1/predict", "/v1/predict/video"}
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class ServeSettings:
    """How the service runs. ``detector``/``detector_options`` build the face detectors (one per
    worker thread; ``score_threshold`` is the default a request may override); ``max_batch``,
    ``max_wait_ms`` and ``max_queue`` drive the batcher; ``workers`` threads decode, detect and
    crop. ``api_key`` set: ``/v1/*`` needs ``Authorization: Bearer <api_key>``. ``cors_origins``:
    origins allowed to call the API from a browser (none by default). ``source`` describes the
    model for ``/v1/model``; ``spool_dir`` is where video uploads are spooled (the system's
    temporary folder by default). ``model_threads`` sets the model thread's CPU threads."""

    detector: str = "yunet"
    detector_options: dict[str, Any] = field(default_factory=dict)
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 64
    workers: int = 2
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    model_threads: int | None = None
    source: dict[str, Any] = field(default_factory=dict)
    spool_dir: str | None = None

    @property
    def default_threshold(self) -> float:
        value = self.detector_options.get("score_threshold")
        return 0.5 if value is None else float(value)


# -- face selection -----------------------------------------------------------------------------
class _Selected(FaceDetector):
    """A detector restricted to faces scoring at least ``threshold``; at most ``max_faces`` of them
    (the best scores), returned left to right."""

    name = "selected"

    def __init__(self, inner: FaceDetector, threshold: float, max_faces: int) -> None:
        self.inner = inner
        self.threshold = float(threshold)
        self.max_faces = int(max_faces)

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Detection]:
        dets = [d for d in self.inner.detect(rgb, max_side=max_side) if d.score >= self.threshold]
        if len(dets) > self.max_faces:
            dets = sorted(dets, key=lambda d: -d.score)[:self.max_faces]
            dets.sort(key=lambda d: (d.box[0], d.box[1]))
        return dets


class _QueuedPredictor(Predictor):
    """The predictor for one video stream: the same model, crop policy and labels, its own
    detector, and model calls that go through the batcher (so they share batches with images)."""

    def __init__(self, base: Predictor, batcher: Batcher, detector: FaceDetector,
                 deadline: float) -> None:
        super().__init__(base.backend, base.meta, detector=detector, batch_size=base.batch_size,
                         crop=base.crop_policy)
        self._batcher = batcher
        self._deadline = deadline

    def predict_crops(self, crops):  # type: ignore[override]
        wait = self._deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError("video request timed out")
        return self._batcher.run_blocking(list(crops), timeout=wait)


# -- query parameters ---------------------------------------------------------------------------
def _check_params(query: Any, known: tuple[str, ...]) -> None:
    unknown = sorted(set(query.keys()) - set(known))
    if unknown:
        raise HTTPError(400, f"unknown query parameter {unknown[0]!r}; known: {', '.join(known)}")


def _number(query: Any, name: str, default: Any, lo: float, hi: float, kind: type = float,
            hi_open: bool = False) -> Any:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        raise HTTPError(400, f"{name} must be {'an integer' if kind is int else 'a number'}, "
                             f"got {text[:40]!r}") from None
    if not np.isfinite(value) or value < lo or (value >= hi if hi_open else value > hi):
        raise HTTPError(400, f"{name} must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}, "
                             f"got {text[:40]!r}")
    return value


def _flag(query: Any, name: str, default: bool) -> bool:
    text = query.get(name)
    if text is None or text == "":
        return default
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise HTTPError(400, f"{name} must be true or false, got {text[:40]!r}")


def _clean_name(name: str | None) -> str:
    """A client's file name as a record's ``source``: printable, no folders, at most 200 chars."""
    if not name:
        return "upload"
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:200]
    return base or "upload"


# -- the service --------------------------------------------------------------------------------
class _Service:
    """State shared by the endpoints: predictor, batcher, thread pool, metrics."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor = predictor
        self.settings = settings
        self.limits = settings.limits
        self.labels = list(predictor.labels)
        self.has_va = bool(predictor.has_va)
        self.batcher = Batcher(predictor.predict_crops, max_batch=settings.max_batch,
                               max_wait_s=settings.max_wait_ms / 1000.0,
                               max_queue=settings.max_queue, setup=self._model_thread_setup,
                               on_idle=MemoryTrimmer())
        self.metrics = ServiceMetrics(lambda: self.batcher.queued, settings.max_queue)
        self.batcher.on_batch = self.metrics.observe_batch
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._videos = asyncio.Semaphore(max(1, self.limits.max_concurrent_videos))
        # check the detector settings now (a bad option fails at start, not per request)
        self._new_detector()

    # life cycle (called from a worker thread by the lifespan)
    def start(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.settings.workers), thread_name_prefix="bregnet-detect")
        # the detector's first call initialises its weights: do it once, before threads race
        self._new_detector().detect(np.zeros((64, 64, 3), np.uint8))
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def _model_thread_setup(self) -> None:
        if self.settings.model_threads:
            import torch

            torch.set_num_threads(int(self.settings.model_threads))
        size = self.predictor.input_size
        self.predictor.predict_crops(np.zeros((1, size, size, 3), np.uint8))  # warm-up

    # detection
    def _new_detector(self, threshold: float = 0.0) -> FaceDetector:
        opts = dict(self.settings.detector_options)
        opts["score_threshold"] = threshold
        if self.settings.detector == "none":
            return make_detector("none")
        return make_detector(self.settings.detector, **opts)

    def _thread_detector(self) -> FaceDetector:
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = self._new_detector()
        return det

    def analyse_image(self, data: bytes, threshold: float, max_faces: int
                      ) -> tuple[tuple[int, int], list[Detection], list[np.ndarray]]:
        """Decode, detect and crop (runs in the thread pool)."""
        from ..data.image_io import decode_image

        try:
            rgb = decode_image(data, "upload", apply_exif=True)
        except BregnetError as exc:
            raise HTTPError(422, str(exc)) from None
        dets = _Selected(self._thread_detector(), threshold, max_faces).detect(rgb)
        crops = [self.predictor.crop(rgb, d) for d in dets]
        return (int(rgb.shape[1]), int(rgb.shape[0])), dets, crops

    async def in_pool(self, fn: Callable, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    # answers
    def face_json(self, i: int, det: Detection, probs: np.ndarray | None,
                  va: np.ndarray | None) -> dict[str, Any]:
        x, y, w, h = det.box
        face: dict[str, Any] = {
            "face_id": i,
            "box": {"x": int(round(x)), "y": int(round(y)), "w": int(round(w)), "h": int(round(h))},
            "det_score": round(float(det.score), 4),
            "landmarks": None if det.landmarks is None else
            [[round(float(px), 1), round(float(py), 1)] for px, py in np.asarray(det.landmarks)],
        }
        if self.labels and probs is not None:
            face["label"] = self.labels[int(np.argmax(probs))]
            face["probabilities"] = {lab: round(float(p), 6) for lab, p in zip(self.labels, probs)}
        if self.has_va and va is not None:
            face["valence"] = round(float(va[0]), 6)
            face["arousal"] = round(float(va[1]), 6)
        return face

    def model_json(self) -> dict[str, Any]:
        meta = self.predictor.meta
        det = self.settings
        return {
            "model": meta.model_name,
            "model_args": meta.model_args,
            "labels": self.labels,
            "va": self.has_va,
            "preprocess": meta.preprocess.to_dict(),
            "crop": self.predictor.crop_policy.to_dict(),
            "input_size": self.predictor.input_size,
            "source": det.source,
            "dataset": meta.dataset,
            "library_version": meta.library_version,
            "backend": type(self.predictor.backend).__name__,
            "detector": {"name": det.detector, "score_threshold": det.default_threshold,
                         **{k: v for k, v in det.detector_options.items()
                            if k != "score_threshold" and v is not None}},
            "batching": {"max_batch": det.max_batch, "max_wait_ms": det.max_wait_ms,
                         "max_queue": det.max_queue},
            "limits": self.limits.to_dict(),
        }


def _busy(message: str) -> HTTPError:
    return HTTPError(503, message, {"Retry-After": str(RETRY_AFTER_S)})


# -- endpoints ----------------------------------------------------------------------------------
def _endpoints(svc: _Service) -> list[Route]:
    limits = svc.limits
    page = _page_bytes()

    async def predict(request: Request) -> Response:
        q = request.query_params
        _check_params(q, ("det_threshold", "max_faces"))
        threshold = _number(q, "det_threshold", svc.settings.default_threshold, 0.0, 1.0)
        max_faces = _number(q, "max_faces", limits.max_faces, 1, limits.max_faces, int)
        t_start = time.monotonic()
        deadline = t_start + limits.request_timeout_s
        try:
            with _fail_at(deadline):
                upload = await receive_upload(request.stream(), request.headers,
                                              limits.max_upload_bytes, drain_deadline=deadline)
        except TimeoutError:
            raise HTTPError(408, f"the upload did not arrive within {limits.request_timeout_s:g} s",
                            {"Connection": "close"}) from None
        except ClientDisconnect:
            raise HTTPError(400, "the client disconnected during the upload") from None
        assert upload.data is not None
        fmt, _, _ = sniff_image(upload.data, limits.max_pixels)
        if svc.batcher.full:
            raise _busy("too many requests are waiting for the model; retry shortly")
        try:
            with _fail_at(deadline):
                (width, height), dets, crops = await svc.in_pool(
                    svc.analyse_image, upload.data, threshold, max_faces)
                del upload
                probs = va = None
                if crops:
                    probs, va = await asyncio.wrap_future(svc.batcher.submit(crops))
        except TimeoutError:
            raise _busy(f"no answer within {limits.request_timeout_s:g} s "
                        "(the service is busy)") from None
        except QueueFull:
            raise _busy("too many requests are waiting for the model; retry shortly") from None
        faces = [svc.face_json(i, d, None if probs is None else probs[i],
                               None if va is None else va[i]) for i, d in enumerate(dets)]
        return JSONResponse({
            "model": svc.predictor.meta.model_name,
            "image": {"width": width, "height": height, "format": fmt},
            "faces": faces,
            "time_ms": round((time.monotonic() - t_start) * 1000.0, 1),
        })

    async def predict_video(request: Request) -> Response:
        q = request.query_params
        _check_params(q, ("every", "fps", "max_frames", "track", "smooth", "keep_empty",
                          "det_threshold", "max_faces"))
        every = _number(q, "every", 1, 1, 1_000_000, int)
        fps = _number(q, "fps", None, 1e-3, 1000.0)
        if fps is not None and q.get("every"):
            raise HTTPError(400, "give either every or fps, not both")
        max_frames = _number(q, "max_frames", limits.max_video_frames, 1,
                             limits.max_video_frames, int)
        track = _flag(q, "track", True)
        smooth = _number(q, "smooth", 0.0, 0.0, 1.0, hi_open=True)
        keep_empty = _flag(q, "keep_empty", False)
        threshold = _number(q, "det_threshold", svc.settings.default_threshold, 0.0, 1.0)
        max_faces = _number(q, "max_faces", limits.max_faces, 1, limits.max_faces, int)
        if svc._videos.locked():
            raise _busy(f"{limits.max_concurrent_videos} video(s) are being processed already")
        await svc._videos.acquire()
        job: _VideoJob | None = None
        try:
            deadline = time.monotonic() + limits.video_timeout_s
            spool = svc.settings.spool_dir or tempfile.gettempdir()
            try:
                with _fail_at(deadline):
                    upload = await receive_upload(request.stream(), request.headers,
                                                  limits.max_video_bytes, spool_dir=spool,
                                                  drain_deadline=deadline)
            except TimeoutError:
                raise HTTPError(408, "the upload did not arrive in time",
                                {"Connection": "close"}) from None
            except ClientDisconnect:
                raise HTTPError(400, "the client disconnected during the upload") from None
            job = _VideoJob(svc, upload, deadline)
            await job.open(dict(every=every, fps=fps, max_frames=max_frames, track=track,
                                smooth=smooth, keep_empty=keep_empty),
                           threshold, max_faces)
            first = await job.first_chunk()
        except BaseException:
            if job is not None:
                await job.close()
            svc._videos.release()
            raise
        return _ClosingStream(job.chunks(first), cleanup=job.close,
                              release=svc._videos.release, media_type="application/x-ndjson",
                              headers={"Cache-Control": "no-store"})

    async def model(request: Request) -> Response:
        return JSONResponse(svc.model_json())

    async def healthz(request: Request) -> Response:
        ok = svc.batcher.alive
        return JSONResponse({"status": "ok" if ok else "unavailable",
                             "model": svc.predictor.meta.model_name,
                             "queue": svc.batcher.queued, "queue_capacity": svc.batcher.max_queue},
                            status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        body, ctype = svc.metrics.render()
        return Response(body, media_type=ctype.split(";")[0],
                        headers={"Content-Type": ctype})

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html", headers={
            "Content-Security-Policy": (
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
            "Cache-Control": "no-cache"})

    return [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/predict/video", predict_video, methods=["POST"]),
    ]


@contextlib.contextmanager
def _fail_at(deadline: float):
    """Cancel the block at the monotonic time ``deadline`` (raises TimeoutError)."""
    with anyio.fail_after(max(0.0, deadline - time.monotonic())):
        yield


class _VideoJob:
    """One video request: the spooled upload, a predictor stream over it, its clean-up."""

    def __init__(self, svc: _Service, upload: Upload, deadline: float) -> None:
        self.svc = svc
        self.upload = upload
        self.deadline = deadline
        self.gen: Any = None
        self.source = _clean_name(upload.filename)
        self.buffer = io.StringIO()
        self.writer: Any = None
        self._step: asyncio.Future | None = None
        self._closed = False

    async def open(self, options: dict[str, Any], threshold: float, max_faces: int) -> None:
        from ..infer.video import VideoReader
        from ..infer.writers import JsonlWriter

        path = self.upload.path
        assert path is not None
        with open(path, "rb") as fh:
            head = fh.read(512)
        container = sniff_video(head)
        named = path.with_suffix(VIDEO_CONTAINERS[container])
        os.replace(path, named)
        self.upload.path = named

        def probe() -> tuple[int, int]:
            try:
                reader = VideoReader(named)
            except BregnetError:
                raise HTTPError(422, "cannot open the video (corrupt or unsupported codec)") from None
            with reader:
                return reader.width, reader.height

        width, height = await self.svc.in_pool(probe)
        if width * height > self.svc.limits.max_pixels:
            raise HTTPError(413, f"video frames of {width}x{height} pixels exceed the limit of "
                                 f"{self.svc.limits.max_pixels:,} pixels")
        keep_empty = options.pop("keep_empty")
        self.writer = JsonlWriter(self.buffer, self.svc.labels, self.svc.has_va,
                                  keep_empty=keep_empty)
        inner = _Selected(self.svc._new_detector(), threshold, max_faces)
        predictor = _QueuedPredictor(self.svc.predictor, self.svc.batcher, inner, self.deadline)
        self.gen = predictor.predict_video(named, max_pending=4, **options)

    def _next_chunk(self) -> str | None:
        """Records of the next processed frames as JSON Lines (in a pool thread); None at the end."""
        try:
            res = next(self.gen)
        except StopIteration:
            return None
        res.source = self.source
        for face in res.faces:
            face.source = self.source
        self.writer.write(res)
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text

    async def _step_once(self) -> str | None:
        self._step = asyncio.ensure_future(self.svc.in_pool(self._next_chunk))
        try:
            with _fail_at(self.deadline):
                return await asyncio.shield(self._step)
        except TimeoutError:
            raise TimeoutError(f"video request exceeded {self.svc.limits.video_timeout_s:g} s"
                               ) from None

    async def first_chunk(self) -> str | None:
        """The first frame's records, before the answer starts: problems found this early still
        get a proper status code."""
        try:
            return await self._step_once()
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise _busy("no frame processed in time (the service is busy)") from None
        except QueueFull:
            raise _busy("too many requests are waiting for the model; retry shortly") from None

    async def chunks(self, first: str | None) -> AsyncIterator[bytes]:
        text = first
        while text is not None:
            if text:
                yield text.encode("utf-8")
            try:
                text = await self._step_once()
            except (TimeoutError, concurrent.futures.TimeoutError, QueueFull,
                    BregnetError) as exc:
                yield (json.dumps({"error": str(exc)}) + "\n").encode("utf-8")
                return
            except Exception as exc:  # noqa: BLE001 - the stream ends with an error line
                log.exception("video stream failed")
                yield (json.dumps({"error": f"internal error ({type(exc).__name__})"})
                       + "\n").encode("utf-8")
                return

    async def close(self) -> None:
        """Wait for a frame still being processed, close the stream, delete the upload."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._step is not None:
                with contextlib.suppress(BaseException):
                    await self._step
            if self.gen is not None:
                with contextlib.suppress(Exception):
                    await self.svc.in_pool(self.gen.close)
            self.upload.discard()


class _ClosingStream(StreamingResponse):
    """A streamed answer that always runs its clean-up, even if the client leaves before the
    first byte."""

    def __init__(self, content: Any, cleanup: Callable, release: Callable, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._cleanup = cleanup
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._cleanup()
                finally:
                    self._release()


def _page_bytes() -> bytes:
    from importlib.resources import files

    return (files("bregnet.serve") / "static" / "index.html").read_bytes()


# -- middleware ---------------------------------------------------------------------------------
async def _send_json(send: Callable, status: int, payload: dict[str, Any],
                     headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _ApiKeyMiddleware:
    """``/v1/*`` needs ``Authorization: Bearer <key>`` (compared in constant time)."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode("utf-8")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith("/v1/") \
                and scope.get("method") != "OPTIONS":
            given = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    given = value
            if not hmac.compare_digest(given, self.expected):
                await _send_json(send, 401, {"error": "missing or wrong API key (send "
                                                      "'Authorization: Bearer <key>')"},
                                 {"WWW-Authenticate": 'Bearer realm="bregnet"'})
                return
        await self.app(scope, receive, send)


class _SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` on every answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, wrapped)


# -- the application ----------------------------------------------------------------------------
def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> Any:
    """The ASGI application serving ``predictor`` (run it with uvicorn; see
    :func:`bregnet.serve.server.serve`). The batcher and thread pool start with the server's
    lifespan and stop after the requests in flight are answered."""
    settings = settings or ServeSettings()
    svc = _Service(predictor, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(svc.stop)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPError)
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    async def starlette_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(exc).split()) or type(exc).__name__},
                            status_code=422)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal server error"}, status_code=500)

    middleware = [Middleware(MetricsMiddleware, metrics=svc.metrics, endpoints=ENDPOINTS),
                  Middleware(_SecurityHeaders)]
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"],
                                     max_age=600))
    if settings.api_key:
        middleware.append(Middleware(_ApiKeyMiddleware, api_key=settings.api_key))
    app = Starlette(routes=_endpoints(svc), middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPError: http_error, HTTPException: starlette_error,
                                        BregnetError: user_error, Exception: server_error})
    app.state.service = svc
    return app
