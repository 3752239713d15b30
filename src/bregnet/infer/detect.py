"""Offline face detection behind one small interface.

``FaceDetector.detect(rgb) -> list[Detection]`` for an RGB uint8 image (H, W, 3). Boxes are
``(x, y, w, h)`` in pixels of the image given (large images are downscaled for detection and the
boxes mapped back), ``score`` is in [0, 1], ``landmarks`` is ``(5, 2)`` or ``None``.

Detectors, all offline (nothing is downloaded):

* ``yunet`` (default): YuNet, the libfacedetection CNN compiled into the ``yuface`` package, run
  by ONNX Runtime with the library's weights when it is installed (:mod:`bregnet.infer.yunet`),
  else by the library itself. Gives five landmarks in image order: the eye on the image's left, the eye on the image's right, the
  nose tip, the mouth corner on the image's left, the mouth corner on the image's right.
* ``haar``: OpenCV's frontal-face Haar cascade shipped in ``cv2.data.haarcascades``. No landmarks;
  its score is a logistic squash of the cascade's level weight (monotone, not calibrated).
* ``none``: the whole image is the face (inputs that already are face crops).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UsageError

__all__ = [
    "DETECTORS",
    "Detection",
    "FaceDetector",
    "HaarDetector",
    "NoDetector",
    "YUNET_BACKENDS",
    "YuNetDetector",
    "make_detector",
]


@dataclass
class Detection:
    """One face: box ``(x, y, w, h)`` in pixels, ``score`` in [0, 1], ``landmarks`` (5, 2) or None."""

    box: tuple[float, float, float, float]
    score: float = 1.0
    landmarks: np.ndarray | None = field(default=None, repr=False)

    def scaled(self, factor: float) -> "Detection":
        """The same detection with coordinates multiplied by ``factor``."""
        x, y, w, h = self.box
        lm = None if self.landmarks is None else self.landmarks * factor
        return Detection((x * factor, y * factor, w * factor, h * factor), self.score, lm)


def _check_image(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise UsageError(f"expected an RGB image of shape (H, W, 3), got {shape}")
    if rgb.dtype != np.uint8:
        raise UsageError(f"expected a uint8 image, got {rgb.dtype}")
    return rgb


class FaceDetector:
    """Base class: downscales images whose longest side exceeds ``max_side``, calls
    :meth:`_detect` and maps the boxes back. Subclasses implement ``_detect(rgb)``."""

    name = "base"

    def __init__(self, score_threshold: float = 0.5, max_side: int | None = 640,
                 min_size: int = 0) -> None:
        if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)) \
                or not 0.0 <= score_threshold <= 1.0:  # also refuses NaN
            raise UsageError(f"detection score threshold must be a number in [0, 1], got {score_threshold!r}")
        for name, value, lo in (("max_side", max_side, 1), ("min_size", min_size, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
                raise UsageError(f"detector {name} must be an integer >= {lo}, got {value!r}")
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side) if max_side else None
        self.min_size = int(min_size)

    def _detect(self, rgb: np.ndarray) -> list[Detection]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, sorted left to right (then top to bottom). ``max_side``
        overrides the detector's own for this call (detection on a smaller copy; never more than
        the detector's limit); boxes, landmarks and the minimum face size are in pixels of
        ``rgb``."""
        import cv2

        rgb = _check_image(rgb)
        h, w = rgb.shape[:2]
        scale = 1.0
        small = rgb
        limit = self.max_side if max_side is None else (
            min(int(max_side), self.max_side) if self.max_side else int(max_side))
        if limit and max(h, w) > limit:
            scale = limit / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        dets = self._detect(np.ascontiguousarray(small))
        if scale != 1.0:
            dets = [d.scaled(1.0 / scale) for d in dets]
        out = []
        for d in dets:
            if d.score < self.score_threshold:
                continue
            x, y, bw, bh = d.box
            # Clip to the image (a detector may overshoot the border a little).
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(w), x + bw), min(float(h), y + bh)
            if x1 - x0 < 1 or y1 - y0 < 1 or min(x1 - x0, y1 - y0) < self.min_size:
                continue
            out.append(Detection((x0, y0, x1 - x0, y1 - y0), float(d.score), d.landmarks))
        out.sort(key=lambda d: (d.box[0], d.box[1]))
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(score_threshold={self.score_threshold}, "
                f"max_side={self.max_side})")


class _FaceDetectCNN:
    """libfacedetection's ``facedetect_cnn`` called directly (ctypes) from the library that
    ``yuface`` ships, with one reusable result buffer per thread.

    ``yuface.c_detect`` allocates libfacedetection's 36,864-byte result buffer on every call and
    never frees it (measured: +36 KB of resident memory per call, whatever the image), and holds
    Python's GIL while the network runs. The same function called through ctypes leaks nothing and
    releases the GIL, so detections in several threads (``bregnet serve``) run in parallel. The
    rows are the same as ``c_detect``'s. ``get()`` is None when the library or its symbol is not
    found (another platform's wheel); the caller then falls back to ``c_detect``.
    """

    BUFFER_BYTES = 0x9000          # DETECT_BUFFER_SIZE of libfacedetection's examples
    _instance: "_FaceDetectCNN | None | bool" = False
    _lock = threading.Lock()

    def __init__(self, fn: Any) -> None:
        self._fn = fn
        self._local = threading.local()
        self._warm = False

    @classmethod
    def get(cls) -> "_FaceDetectCNN | None":
        if cls._instance is False:
            with cls._lock:
                if cls._instance is False:
                    cls._instance = cls._load()
        return cls._instance  # type: ignore[return-value]

    @classmethod
    def _load(cls) -> "_FaceDetectCNN | None":
        import ctypes

        from .yunet import libfacedetection

        lib = libfacedetection()
        try:
            fn = lib._Z14facedetect_cnnPhS_iii if lib is not None else None
        except AttributeError:  # pragma: no cover - another build of the library
            fn = None
        if fn is None:
            return None
        fn.restype = ctypes.POINTER(ctypes.c_int)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        return cls(fn)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """``(N, 16)`` int16 rows for a contiguous BGR uint8 image."""
        buf = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = np.zeros(self.BUFFER_BYTES, np.uint8)
        h, w = bgr.shape[:2]
        args = (buf.ctypes.data, bgr.ctypes.data, int(w), int(h), int(bgr.strides[0]))
        if not self._warm:
            with self._lock:    # the first call initialises the network's weights
                result = self._fn(*args)
                self._warm = True
        else:
            result = self._fn(*args)
        n = int(result[0]) if result else 0
        n = max(0, min(n, (self.BUFFER_BYTES - 4) // 32))
        return buf[4:4 + 32 * n].view(np.int16).reshape(n, 16).copy()


def _with_omp_threads(n: int | None, fn, *args):
    """Run ``fn(*args)`` with the OpenMP thread count set to ``n`` for the calling thread.

    ``yuface`` parallelises with OpenMP; once PyTorch is loaded (it loads its ``libgomp`` globally)
    yuface's OpenMP calls go to PyTorch's runtime, so ``torch.set_num_threads`` governs both.
    """
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        return fn(*args)
    prev = torch.get_num_threads()
    if prev == n:
        return fn(*args)
    torch.set_num_threads(n)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(prev)


#: YuNet's implementations: ``onnxruntime`` (the library's weights in an ONNX Runtime graph,
#: :mod:`bregnet.infer.yunet`; about 6x faster here) and ``libfacedetection`` (the library's own C
#: code, as compiled into the yuface wheel). ``auto``: the first available.
YUNET_BACKENDS = ("auto", "onnxruntime", "libfacedetection")


class YuNetDetector(FaceDetector):
    """YuNet (libfacedetection, through ``yuface``): boxes, confidences and five landmarks.

    ``threads`` (default 1) is the number of threads for the detector; the default keeps the
    detector and the model from fighting over the cores of a small or busy machine (on a busy
    2-core machine two threads made detection up to 8x slower, on an idle one they gain ~15%).
    ``None`` leaves the process setting. ``backend`` (one of :data:`YUNET_BACKENDS`; default
    ``auto``, or the environment variable ``BREGNET_YUNET_BACKEND``) chooses who runs the
    network: the same weights and decoding either way; ONNX Runtime keeps the boxes' fractions
    where the library truncates them to whole pixels.
    """

    name = "yunet"

    def __init__(self, score_threshold: float = 0.5, max_side: int | None = 640,
                 min_size: int = 0, threads: int | None = 1, backend: str | None = None) -> None:
        self.threads = threads
        # yuface itself warns (and degrades) above 960 pixels; never give it more.
        max_side = min(int(max_side or 960), 960)
        super().__init__(score_threshold, max_side, min_size)
        backend = (backend or os.environ.get("BREGNET_YUNET_BACKEND") or "auto").lower()
        if backend not in YUNET_BACKENDS:
            raise UsageError(f"unknown YuNet backend {backend!r}; choose one of "
                             f"{', '.join(YUNET_BACKENDS)}")
        if "yuface" not in sys.modules:
            # yuface brings its own OpenMP runtime; its default busy-waiting fights with PyTorch's
            # threads between calls (several times slower detection on a busy machine). Passive
            # waiting costs nothing measurable; a value set by the user wins.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import yuface
        except ImportError as exc:  # pragma: no cover - yuface is a core dependency
            raise UsageError(f"the yunet detector needs the 'yuface' package ({exc})") from None
        self._runtime = None
        if backend != "libfacedetection":
            from .yunet import YuNetRuntime

            self._runtime = YuNetRuntime.get(threads)
            if self._runtime is None and backend == "onnxruntime":
                raise UsageError("the onnxruntime YuNet backend needs the 'onnxruntime' package "
                                 "(pip install 'bregnet[onnx]') and yuface's libfacedetection")
        self.backend = "onnxruntime" if self._runtime is not None else "libfacedetection"
        self._detect_raw = _FaceDetectCNN.get() or yuface.c_detect

    def _detect(self, rgb: np.ndarray) -> list[Detection]:
        if self._runtime is not None:
            # rows: score (0-1), x, y, w, h, 5 landmark (x, y) pairs (float32)
            raw = self._runtime(rgb, self.score_threshold)
            return [Detection((float(r[1]), float(r[2]), float(r[3]), float(r[4])), float(r[0]),
                              r[5:15].reshape(5, 2).copy()) for r in raw]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        # Rows: confidence (0-100), x, y, w, h, 5 landmark (x, y) pairs, -1 (int16).
        raw = np.asarray(_with_omp_threads(self.threads, self._detect_raw, bgr))
        raw = raw.reshape(-1, 16).astype(np.float32)
        return [Detection((float(r[1]), float(r[2]), float(r[3]), float(r[4])),
                          float(r[0]) / 100.0, r[5:15].reshape(5, 2).copy())
                for r in raw]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(score_threshold={self.score_threshold}, "
                f"max_side={self.max_side}, backend={self.backend!r})")


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (no landmarks); a fallback when YuNet is unavailable."""

    name = "haar"

    def __init__(self, score_threshold: float = 0.5, max_side: int | None = 640,
                 min_size: int = 24, cascade: str = "haarcascade_frontalface_default.xml",
                 scale_factor: float = 1.1, min_neighbors: int = 5) -> None:
        super().__init__(score_threshold, max_side, min_size)
        import cv2

        path = Path(cascade)
        if not path.is_file():
            base = getattr(getattr(cv2, "data", None), "haarcascades", None)
            if base is None:
                raise UsageError("this OpenCV build ships no Haar cascades (cv2.data); "
                                   "install opencv-python-headless<5 or use --detector yunet")
            path = Path(base) / cascade
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise DataError(f"cannot load Haar cascade {path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def _detect(self, rgb: np.ndarray) -> list[Detection]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(max(1, self.min_size), max(1, self.min_size)), outputRejectLevels=True)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        out = []
        for i, (x, y, w, h) in enumerate(np.asarray(boxes).reshape(-1, 4)):
            wt = float(weights[i]) if i < len(weights) else 1.0
            out.append(Detection((float(x), float(y), float(w), float(h)),
                                 1.0 / (1.0 + math.exp(-wt))))
        return out


class NoDetector(FaceDetector):
    """The whole image is one face (for inputs that already are face crops)."""

    name = "none"

    def __init__(self, **_: Any) -> None:
        super().__init__(score_threshold=0.0, max_side=None)

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Detection]:
        rgb = _check_image(rgb)
        h, w = rgb.shape[:2]
        return [Detection((0.0, 0.0, float(w), float(h)), 1.0, None)]


DETECTORS: dict[str, type[FaceDetector]] = {
    "yunet": YuNetDetector,
    "haar": HaarDetector,
    "none": NoDetector,
}


def make_detector(name: str | FaceDetector = "yunet", **kwargs: Any) -> FaceDetector:
    """A detector by name (``yunet`` | ``haar`` | ``none``); an instance is returned unchanged.

    Keyword arguments (``score_threshold``, ``max_side``, ``min_size``) go to the constructor;
    ``None`` values are dropped so callers can pass CLI options through unchanged.
    """
    if isinstance(name, FaceDetector):
        return name
    key = str(name).lower()
    if key not in DETECTORS:
        raise UsageError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return DETECTORS[key](**kwargs)
