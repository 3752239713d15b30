"""The predictor: detect faces, crop them the way the model was trained, run the model in batches.

>>> from bregnet import Predictor
>>> p = Predictor.from_checkpoint("runs/affectnet/best.safetensors")      # doctest: +SKIP
>>> for face in p.predict_image(rgb):                                      # doctest: +SKIP
...     print(face.face_id, face.box, face.label, face.va)

Everything the input needs comes from the checkpoint's metadata: label names (output order), input
size, normalisation and the face-crop policy (margin, square, align, border; the one the training
images were made with, or the named rule of a pre-cropped data set). Faces are batched across
images and video frames (``batch_size`` crops per model call); results come back in input order.
Video is streamed (:mod:`bregnet.infer.video`) so memory stays flat whatever its length; faces get
stable IDs across frames (:mod:`bregnet.infer.tracking`) and, optionally, exponentially smoothed
probabilities and valence/arousal.

Speed (see docs/inference.md): on video, ``det_every=k`` detects faces on the whole frame only
every k-th frame and refines the tracked boxes in small windows in between
(:mod:`bregnet.infer.schedule`); ``workers=N`` runs the model in N threads while one thread
decodes, detects and crops (a two-stage pipeline). Neither changes the order of the results, and
the pipeline gives exactly the records of the single-threaded path with the same settings.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..crop import crop_face
from ..errors import BregnetError, CheckpointError, DataError, UsageError
from ..preprocess import CropPolicy
from .detect import Detection, FaceDetector, NoDetector, make_detector
from .results import FaceResult, FrameResult, record_columns
from .schedule import DetectionSchedule
from .tracking import IoUTracker, Smoother
from .video import VideoReader, is_video_path

__all__ = ["Predictor", "TorchBackend", "expand_inputs", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _image_extensions() -> tuple[str, ...]:
    from ..data.image_io import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def expand_inputs(inputs: Sequence[str | os.PathLike], recursive: bool = True
                  ) -> list[tuple[Path, Path | None]]:
    """Files to process as ``(path, root)`` pairs, in order: a file stands for itself (root None);
    a folder for the images in it (and in its sub-folders when ``recursive``), sorted, with the
    folder as root. Raises DataError for a path that does not exist. A path that exists but is
    not a regular file (a device, a FIFO) is kept: reading it is refused, and reported, per
    input (:func:`bregnet.data.image_io.read_image`), so the other inputs go on."""
    exts = _image_extensions()
    out: list[tuple[Path, Path | None]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in it if f.is_file() and f.suffix.lower() in exts)
            out.extend((f, p) for f in files)
        elif p.exists():
            out.append((p, None))
        else:
            raise DataError(f"input not found: {p}")
    return out


class TorchBackend:
    """Runs the PyTorch model: ``run(x) -> (logits or None, va or None)`` on float32 NCHW numpy."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        from ..device import resolve_device

        self.device = resolve_device(str(device))
        self.model = model.to(self.device).eval()
        self.num_classes = int(getattr(model, "num_classes", 0))
        self.has_va = bool(getattr(model, "has_va", False))

    def run(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        import torch

        from ..models import split_outputs

        from ..models import _fused

        # no kernel compilation at inference unless BREGNET_FUSED=1 (see _fused.eager)
        with torch.inference_mode(), (contextlib.nullcontext() if _fused.fused_requested()
                                      else _fused.eager()):
            out = self.model(torch.from_numpy(x).to(self.device))
        logits, va = split_outputs(out, self.num_classes > 0, self.has_va)
        return tuple(None if t is None else t.float().cpu().numpy() for t in (logits, va))  # type: ignore[return-value]


def _is_whole_image(box: Any, rgb: np.ndarray) -> bool:
    """True when ``box`` is exactly ``(0, 0, width, height)`` of ``rgb``."""
    try:
        return tuple(float(v) for v in box) == (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
    except (TypeError, ValueError, IndexError):
        return False


@dataclass
class _Item:
    """One image or frame on its way to the model: its detections, track IDs and crops.
    ``keep_ids``: after this frame, smoothing state of tracks not in it is dropped (ended)."""

    result: FrameResult
    dets: list[Detection]
    ids: list[int]
    crops: list[np.ndarray]
    keep_ids: list[int] | None = None


_END = object()


class _Failure:
    """An exception of the pipeline's producer thread, handed to the consumer to raise."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Predictor:
    """Face detection + model + (for video) tracking and smoothing. See the module docstring.

    ``backend`` is an object with ``run(x) -> (logits, va)`` (:class:`TorchBackend` or
    :class:`bregnet.export.onnx.OnnxBackend`); ``meta`` the checkpoint's ``CheckpointMeta``.
    ``crop`` overrides the checkpoint's crop policy: a :class:`~bregnet.preprocess.CropPolicy`
    replaces it, a mapping of ``rule`` / ``margin`` / ``square`` / ``align`` / ``border`` changes it
    (:meth:`CropPolicy.with_overrides`); ``align`` then sets alignment alone (None keeps it).
    ``timings`` accumulates seconds per stage (decode, detect, crop, model, post) for profiling.
    ``cpu_timings`` the CPU time of the threads doing them (the two differ when stages overlap or
    wait for the CPU). ``workers``: 0 runs everything in the calling thread; N >= 1 runs the model
    in N threads while another thread decodes, detects and crops (same results, in the same order).
    """

    def __init__(
        self,
        backend: Any,
        meta: Any,
        detector: str | FaceDetector = "yunet",
        batch_size: int = 32,
        align: bool | None = None,
        detector_options: dict[str, Any] | None = None,
        crop: CropPolicy | Mapping[str, Any] | None = None,
        workers: int = 0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
        self.backend = backend
        self.meta = meta
        self.preprocess = meta.preprocess
        self.labels: list[str] = list(meta.labels) if int(meta.model_args.get(
            "num_classes", len(meta.labels))) > 0 else []
        self.has_va = bool(meta.va)
        self.detector = make_detector(detector, **(detector_options or {}))
        self.batch_size = int(batch_size)
        # the checkpoint's crop policy: the one its training images were made with
        policy = crop if isinstance(crop, CropPolicy) else self.preprocess.crop.with_overrides(**(crop or {}))
        self.crop_policy = policy.with_overrides(align=None if align is None else bool(align))
        self.input_size = int(self.preprocess.input_size)
        self.timings: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise UsageError(f"workers must be an integer >= 0, got {workers!r}")
        self.workers = int(workers)
        self.cpu_timings: dict[str, float] = defaultdict(float)
        self._timing_lock = threading.Lock()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        detector: str | FaceDetector = "yunet",
        device: str = "cpu",
        backend: str = "torch",
        batch_size: int = 32,
        threads: int | None = None,
        **kwargs: Any,
    ) -> "Predictor":
        """Load a ``.safetensors`` checkpoint (or a run folder holding one) or an ``.onnx`` file
        written by ``bregnet export``. ``backend`` is ``torch`` or ``onnx`` (an ``.onnx`` file
        always uses ONNX Runtime; a checkpoint with ``backend="onnx"`` is exported in memory
        first). ``path`` may also be a downloaded weights name. ``device`` and ``threads`` are
        checked before the model is loaded (:func:`bregnet.device.resolve_device`). Other keyword
        arguments go to the constructor."""
        from ..device import resolve_device
        from ..weights.cache import resolve_checkpoint

        p = resolve_checkpoint(path)
        if backend not in ("torch", "onnx"):
            raise UsageError(f"unknown backend {backend!r}; choose torch or onnx")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise UsageError(f"threads must be a positive integer, got {threads!r}")
        if p.suffix.lower() == ".onnx":
            # ONNX Runtime only: neither torch nor the onnx package is imported on this path
            from ..export.onnx import OnnxBackend, metadata_from_props, onnx_device

            device = onnx_device(device)
            from ..fileio import check_input_file
            from ..limits import MAX_MODEL_BYTES

            p = check_input_file(p, "ONNX model", max_bytes=MAX_MODEL_BYTES, error=CheckpointError)
            run = OnnxBackend(p, device=device, threads=threads)
            meta = metadata_from_props(run.metadata_props, p)
            if run.input_name != "input" or not set(run.output_names) <= {"logits", "va"}:
                raise CheckpointError(f"{p} does not have the inputs/outputs of a bregnet export")
            return cls(run, meta, detector=detector, batch_size=batch_size, **kwargs)

        device = str(resolve_device(device))
        from ..engine.checkpoint import load_checkpoint

        if p.is_file() and p.suffix.lower() not in (".safetensors", ".st"):
            raise CheckpointError(f"{p} is not a bregnet checkpoint (.safetensors or .onnx)")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        model, meta = load_checkpoint(p)
        if model.num_classes and len(meta.labels) != model.num_classes:
            raise CheckpointError(f"{p}: {len(meta.labels)} label names for a model with "
                                  f"{model.num_classes} classes")
        if backend == "onnx":
            from ..export.onnx import OnnxBackend

            run: Any = OnnxBackend.from_model(model, meta, device=device, threads=threads)
        else:
            run = TorchBackend(model, device)
        return cls(run, meta, detector=detector, batch_size=batch_size, **kwargs)

    # -- properties -----------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """Record columns this model produces (see :mod:`bregnet.infer.writers`)."""
        return record_columns(self.labels, self.has_va)

    @property
    def quantized(self) -> bool:
        """True for an int8 model (``bregnet export --int8``)."""
        return bool(getattr(self.backend, "quantized", False))

    def reset_timings(self) -> None:
        self.timings.clear()
        self.cpu_timings.clear()
        self.counts.clear()

    def _tick(self, stage: str, t0: float, c0: float) -> float:
        """Add the wall and thread-CPU seconds since ``t0`` / ``c0`` to ``stage``; returns now."""
        t, c = time.perf_counter(), time.thread_time()
        with self._timing_lock:
            self.timings[stage] += t - t0
            self.cpu_timings[stage] += c - c0
        return t

    # -- the model on crops ---------------------------------------------------------------
    def predict_crops(self, crops: np.ndarray | Sequence[np.ndarray]
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Face crops ``(N, S, S, 3)`` uint8 RGB (S = the checkpoint's input size) ->
        ``(probabilities (N, K) or None, valence/arousal (N, 2) or None)``."""
        n = len(crops)
        probs_out: list[np.ndarray] = []
        va_out: list[np.ndarray] = []
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(0, n, self.batch_size):
            batch = np.stack(crops[i:i + self.batch_size]) if not isinstance(crops, np.ndarray) \
                else crops[i:i + self.batch_size]
            if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
                raise UsageError(f"crops must be uint8 (N, H, W, 3), got {batch.dtype} {batch.shape}")
            x = self.preprocess.normalize_numpy(batch)
            logits, va = self.backend.run(x)
            if self.labels:
                if logits is None:
                    raise CheckpointError("the model returned no class scores")
                probs_out.append(softmax(logits))
            if self.has_va:
                if va is None:
                    raise CheckpointError("the model returned no valence/arousal")
                va_out.append(np.asarray(va, np.float32))
        self._tick("model", t0, c0)
        with self._timing_lock:
            self.counts["faces"] += n
        k = len(self.labels)
        probs = (np.concatenate(probs_out) if probs_out else np.zeros((0, k), np.float32)) \
            if self.labels else None
        va_arr = (np.concatenate(va_out) if va_out else np.zeros((0, 2), np.float32)) \
            if self.has_va else None
        return probs, va_arr

    def crop(self, rgb: np.ndarray, det: Detection) -> np.ndarray:
        """The model-input crop of one detection by the checkpoint's crop policy, with
        :func:`bregnet.crop.crop_face` as the readers and the cache (black when the box has no
        pixel in the image). For a model trained on pre-cropped images, a box that is the whole
        image (``--detector none``: the input already is a face crop) takes the image whole, as
        the reader took the training images."""
        box: Any = det.box
        if self.crop_policy.kind == "pre-cropped" and _is_whole_image(box, rgb):
            box = None
        try:
            return crop_face(rgb, box, self.crop_policy, self.input_size, det.landmarks)
        except DataError:  # box empty or entirely outside the image
            return np.zeros((self.input_size, self.input_size, 3), np.uint8)

    def _detect_and_crop(self, rgb: np.ndarray, detect: Callable[[np.ndarray], list[Detection]]
                         | None = None) -> tuple[list[Detection], list[np.ndarray]]:
        t0, c0 = time.perf_counter(), time.thread_time()
        dets = (detect or self.detector.detect)(rgb)
        t1, c1 = self._tick("detect", t0, c0), time.thread_time()
        crops = [self.crop(rgb, d) for d in dets]
        self._tick("crop", t1, c1)
        return dets, crops

    # -- batching -------------------------------------------------------------------------
    def _groups(self, items: Iterable[_Item], max_pending: int) -> Iterator[list[_Item]]:
        """Consecutive items whose crops go to the model together: at least ``batch_size``
        crops or ``max_pending`` items (the same grouping whichever thread runs the model)."""
        group: list[_Item] = []
        n = 0
        for item in items:
            group.append(item)
            n += len(item.crops)
            if n >= self.batch_size or len(group) >= max_pending:
                yield group
                group, n = [], 0
        if group:
            yield group

    def _finish(self, group: list[_Item], probs: np.ndarray | None, va: np.ndarray | None,
                smoother: Smoother | None) -> list[FrameResult]:
        """Results of one group from the model's outputs, in order (smoothing applied)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        k = 0
        out = []
        for item in group:
            res = item.result
            for j, det in enumerate(item.dets):
                p = None if probs is None else probs[k + j]
                v = None if va is None else va[k + j]
                if smoother is not None:
                    sm = smoother(item.ids[j], probs=p, va=v)
                    p, v = sm["probs"], sm["va"]
                label = self.labels[int(np.argmax(p))] if p is not None else None
                res.faces.append(FaceResult(res.source, res.frame, res.time_s, item.ids[j],
                                            tuple(float(c) for c in det.box), det.score,
                                            label, p, v, det.landmarks))
            k += len(item.crops)
            if smoother is not None and item.keep_ids is not None:
                smoother.forget(item.keep_ids)
            out.append(res)
        self._tick("post", t0, c0)
        return out

    def _run_group(self, group: list[_Item]) -> tuple[np.ndarray | None, np.ndarray | None]:
        crops = [c for item in group for c in item.crops]
        return self.predict_crops(crops) if crops else (None, None)

    def _batched(self, items: Iterable[_Item], max_pending: int,
                 smoother: Smoother | None = None) -> Iterator[FrameResult]:
        """Run the model over the crops of many frames at once; yield frames in order."""
        groups = self._groups(items, max_pending)
        if self.workers == 0:
            for group in groups:
                yield from self._finish(group, *self._run_group(group), smoother)
            return
        yield from self._pipelined(groups, smoother)

    def _pipelined(self, groups: Iterator[list[_Item]], smoother: Smoother | None
                   ) -> Iterator[FrameResult]:
        """The two-stage pipeline: a producer thread decodes, detects and crops (it drives
        ``groups``) and hands each group to a pool of ``workers`` model threads; this thread
        takes the results in order, smooths them and yields them. At most ``workers + 2``
        groups are in flight, so memory stays bounded. An exception in the producer or a model
        call is raised here; closing the generator (or Ctrl-C) stops the producer."""
        from concurrent.futures import ThreadPoolExecutor

        handoff: queue.Queue = queue.Queue(maxsize=self.workers)
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bregnet-model")

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for group in groups:
                    fut = pool.submit(self._run_group, group)
                    if not put((group, fut)):
                        return
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                put(_Failure(exc))
                return
            finally:
                groups.close()  # type: ignore[attr-defined]
            put(_END)

        producer = threading.Thread(target=produce, name="bregnet-decode-detect", daemon=True)
        producer.start()
        try:
            while True:
                item = handoff.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                group, fut = item
                yield from self._finish(group, *fut.result(), smoother)
        finally:
            stop.set()
            while producer.is_alive():
                try:  # let a producer blocked on a full queue see the stop
                    handoff.get(timeout=0.05)
                except queue.Empty:
                    pass
            producer.join()
            pool.shutdown(wait=True, cancel_futures=True)

    # -- images ---------------------------------------------------------------------------
    def predict_image(self, rgb: np.ndarray, source: str = "<image>") -> list[FaceResult]:
        """Faces in one RGB uint8 image, left to right; ``face_id`` is the index. No face: []."""
        dets, crops = self._detect_and_crop(rgb)
        item = _Item(FrameResult(source, 0, 0.0), dets, list(range(len(dets))), crops)
        return self._finish([item], *self._run_group([item]), None)[0].faces

    def _image_items(self, paths: Sequence[Path], keep_images: bool, bar: Any) -> Iterator[_Item]:
        from ..data.image_io import read_image

        for path in paths:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                rgb = read_image(path, apply_exif=True)
            except BregnetError as exc:  # unreadable, not a regular file, or over a limit
                self._tick("decode", t0, c0)
                msg = str(exc)
                self.problems.append(f"skipped: {msg}")
                if bar is not None:
                    bar.update(1)
                yield _Item(FrameResult(str(path), 0, 0.0, error=msg), [], [], [])
                continue
            self._tick("decode", t0, c0)
            self.counts["frames"] += 1
            dets, crops = self._detect_and_crop(rgb)
            res = FrameResult(str(path), 0, 0.0, image=rgb if keep_images else None)
            if bar is not None:
                bar.update(1)
            yield _Item(res, dets, list(range(len(dets))), crops)

    def predict_paths(
        self,
        inputs: Sequence[str | os.PathLike],
        recursive: bool = True,
        keep_images: bool = False,
        progress: bool = False,
        **video_options: Any,
    ) -> Iterator[FrameResult]:
        """Image files, folders (images inside, recursively) and video files, in the order given.

        Yields one :class:`FrameResult` per image (``frame`` 0, ``time_s`` 0) or sampled video
        frame. An unreadable image yields a result with ``error`` set (and is listed in
        :attr:`problems`); the rest go on. ``video_options`` go to :meth:`predict_video`.
        """
        files = expand_inputs(inputs, recursive)
        run: list[Path] = []

        def images(paths: list[Path]) -> Iterator[FrameResult]:
            from tqdm.auto import tqdm

            # kept images can be large photos: hold fewer of them while a batch fills
            kept = max(1, 4 // (self.workers + 2)) if self.workers else 4   # ~4 in flight
            pending = min(self.batch_size, kept) if keep_images else self.batch_size
            with tqdm(total=len(paths), unit="img", disable=not progress or len(paths) < 2,
                      desc="images", leave=False) as bar:
                yield from self._batched(self._image_items(paths, keep_images, bar),
                                         max_pending=pending)

        for path, root in files:
            if is_video_path(path):
                if run:
                    yield from images(run)
                    run = []
                video_options.setdefault("skip_unreadable", True)
                yield from self.predict_video(path, keep_frames=keep_images, progress=progress,
                                              **video_options)
            else:
                run.append(path)
        if run:
            yield from images(run)

    # -- video ----------------------------------------------------------------------------
    def predict_video(
        self,
        source: str | os.PathLike | int,
        every: int = 1,
        fps: float | None = None,
        max_frames: int | None = None,
        track: bool = True,
        smooth: float = 0.0,
        iou_threshold: float = 0.3,
        max_age: int | None = None,
        keep_frames: bool = False,
        progress: bool = False,
        max_pending: int | None = None,
        skip_unreadable: bool = False,
        det_every: int = 1,
        det_side: int | None = None,
    ) -> Iterator[FrameResult]:
        """Stream a video file or webcam (an int or ``"webcam:N"``): one :class:`FrameResult` per
        sampled frame, in order, with tracked face IDs (``track=False``: IDs are per-frame indices)
        and exponential smoothing ``smooth`` in [0, 1) of probabilities and valence/arousal.

        ``det_every=k`` detects on the whole frame every k-th sampled frame and refines the faces
        in small windows in between (:class:`~bregnet.infer.schedule.DetectionSchedule`);
        ``det_side`` is the longest side of the copy used for whole-frame detection (None: the
        detector's ``max_side``). Memory is bounded by ``max_pending`` frames (default:
        ``batch_size``; 1 for a webcam, so results are not delayed). Problems (a video ending
        early, undecodable frames) are added to :attr:`problems`; the reader is available as
        :attr:`last_reader` and the detection schedule as :attr:`last_schedule`. A file that
        cannot be opened raises BregnetError, or with ``skip_unreadable`` yields one result with
        ``error``.
        """
        from tqdm.auto import tqdm

        if isinstance(self.detector, NoDetector):
            det_every, det_side = 1, None   # the whole frame is the face: nothing to track
        schedule = DetectionSchedule(self.detector, every=det_every, det_side=det_side)
        try:
            reader = VideoReader(source, every=every, fps=fps, max_frames=max_frames)
        except BregnetError as exc:
            if not skip_unreadable or isinstance(source, int):
                raise
            self.problems.append(f"skipped: {exc}")
            yield FrameResult(str(source), 0, 0.0, error=str(exc))
            return
        self.last_reader = reader
        self.last_schedule = schedule
        if max_pending is None:
            # kept frames can be large: about 8 of them in flight, with the pipeline's groups
            kept = max(1, 8 // (self.workers + 2)) if self.workers else 8
            max_pending = 1 if reader.is_webcam else (
                min(self.batch_size, kept) if keep_frames else self.batch_size)
        if max_age is None:
            # about one second of sampled frames
            max_age = max(2, int(round(reader.output_fps))) if reader.output_fps else 10
        tracker = IoUTracker(iou_threshold, max_age) if track else None
        smoother = Smoother(smooth) if (smooth and track) else None
        decode_before = [0.0, 0.0]

        def add_decode() -> None:
            wall, cpu = reader.decode_seconds, reader.decode_cpu_seconds
            with self._timing_lock:
                self.timings["decode"] += wall - decode_before[0]
                self.cpu_timings["decode"] += cpu - decode_before[1]
            decode_before[:] = [wall, cpu]

        def items() -> Iterator[_Item]:
            with tqdm(total=reader.expected_frames, unit="frame", disable=not progress,
                      desc=Path(str(reader.name)).name, leave=False) as bar:
                for frame in reader:
                    add_decode()
                    self.counts["frames"] += 1
                    dets, crops = self._detect_and_crop(frame.rgb, schedule.detect)
                    t0, c0 = time.perf_counter(), time.thread_time()
                    keep = None
                    if tracker is not None:
                        ids = tracker.update([d.box for d in dets])
                        if smoother is not None and frame.index % 64 == 0:
                            keep = tracker.active_ids
                    else:
                        ids = list(range(len(dets)))
                    self._tick("post", t0, c0)
                    res = FrameResult(reader.name, frame.index, frame.time_s,
                                      image=frame.rgb if keep_frames else None)
                    bar.update(1)
                    yield _Item(res, dets, ids, crops, keep)
                add_decode()

        yield from self._batched(items(), max_pending=max_pending, smoother=smoother)
        self.problems.extend(reader.problems)
