"""YuNet, the libfacedetection face detector, run by ONNX Runtime with the weights ``yuface`` ships.

Why: the ``yuface`` wheel's ``libfacedetection`` is compiled without its AVX2 / AVX-512 kernels
(its convolutions are plain C loops), so a 640x360 frame costs about 60 ms on one core of the
2-core dev machines, more than the expression network itself. The same network, with the same
weights read out of that library (``param_pConvInfo``: 53 convolutions), run by ONNX Runtime's
vectorised kernels costs about 9 ms, and releases the GIL while it runs. Nothing is downloaded
and no file is written: the graph is assembled in memory at start-up (:mod:`._onnxproto`) from
the installed library.

The network and its decoding follow libfacedetection's ``objectdetect_cnn`` (v0.0.3, the version
in ``yuface`` 2023.5): the image padded with zeros to a multiple of 32 on the bottom and right, a
3x3 stride-2 head convolution, depthwise-separable units (1x1 pointwise, then 3x3 depthwise, ReLU)
with 2x2 max pooling, a three-level feature pyramid (strides 8, 16, 32; nearest upsampling and
addition), per level four heads (class, objectness, box, five landmarks). Priors sit at
``(col * stride, row * stride)``; box centre ``= prior + delta * stride``, size
``= exp(delta) * stride``; landmarks ``= prior + delta * stride``; score
``= sqrt(sigmoid(class) * sigmoid(objectness))``; then greedy NMS at IoU 0.45 over the 1000 best
candidates, at most 100 faces. (The constants were read off the library's output: on 320 crops
of real faces at sizes from 40 to 640 pixels, candidates from 0.2 and NMS at 0.45 reproduce its
faces exactly, 0.15 / 0.25 or 0.4 / 0.5 do not.) The only difference from the library's own output: boxes and
landmarks keep their fractions (the library truncates them to integers) and the score is not
rounded to a percent. ``tests/test_yunet.py`` checks the two against each other.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _onnxproto as proto

__all__ = ["YuNetRuntime", "conv_layers", "libfacedetection", "yunet_model_bytes"]

#: libfacedetection's decoding constants (``objectdetect_cnn`` in yuface 2023.5); the library
#: reports faces from LIBRARY_THRESHOLD up, this module from the threshold it is given.
LIBRARY_THRESHOLD = 0.2
NMS_IOU = 0.45
TOP_K = 1000
KEEP_TOP_K = 100
STRIDES = (8, 16, 32)

_LIB_LOCK = threading.Lock()
_LIB: "ctypes.CDLL | None | bool" = False


def libfacedetection() -> "ctypes.CDLL | None":
    """The ``libfacedetection`` shared library inside the installed ``yuface`` package, or None
    (no yuface, or a wheel whose library cannot be loaded)."""
    global _LIB
    if _LIB is False:
        with _LIB_LOCK:
            if _LIB is False:
                _LIB = _load_library()
    return _LIB  # type: ignore[return-value]


def _load_library() -> "ctypes.CDLL | None":
    try:
        import yuface
    except ImportError:  # pragma: no cover - yuface is a core dependency
        return None
    folder = Path(yuface.__file__).parent
    for lib in sorted(folder.glob("libfacedetection*.so*"), key=lambda p: -len(p.name)):
        try:
            return ctypes.CDLL(str(lib))
        except OSError:  # pragma: no cover - another platform's wheel
            continue
    return None  # pragma: no cover


class _ConvInfo(ctypes.Structure):
    """libfacedetection's ``ConvInfoStruct``."""

    _fields_ = [("channels", ctypes.c_int), ("num_filters", ctypes.c_int),
                ("is_depthwise", ctypes.c_bool), ("is_pointwise", ctypes.c_bool),
                ("with_relu", ctypes.c_bool), ("weights", ctypes.POINTER(ctypes.c_float)),
                ("biases", ctypes.POINTER(ctypes.c_float))]


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of the library: ``weight`` in ONNX layout (out, in/groups, k, k)."""

    weight: np.ndarray
    bias: np.ndarray
    depthwise: bool
    relu: bool


#: (channels, filters, depthwise) of the 53 convolutions, in the library's order.
_LAYOUT: tuple[tuple[int, int, bool], ...] = (
    ((32, 16, False), (16, 16, False), (16, 16, True), (16, 16, False), (16, 16, True),
     (16, 32, False), (32, 32, True), (32, 32, False), (32, 32, True), (32, 64, False),
     (64, 64, True))
    + ((64, 64, False), (64, 64, True)) * 9
    + ((64, 1, False), (1, 1, True)) * 3 + ((64, 4, False), (4, 4, True)) * 3
    + ((64, 1, False), (1, 1, True)) * 3 + ((64, 10, False), (10, 10, True)) * 3)


def conv_layers(lib: "ctypes.CDLL | None" = None) -> list[ConvLayer] | None:
    """The 53 convolutions of the library's YuNet, copied out of ``param_pConvInfo``; None when
    the library is missing or its table is not the layout this module knows."""
    lib = libfacedetection() if lib is None else lib
    if lib is None:
        return None
    try:
        table = (_ConvInfo * len(_LAYOUT)).in_dll(lib, "param_pConvInfo")
    except ValueError:  # pragma: no cover - another build of the library
        return None
    layers = []
    for i, (info, (channels, filters, depthwise)) in enumerate(zip(table, _LAYOUT)):
        if (info.channels, info.num_filters, bool(info.is_depthwise)) != (channels, filters, depthwise) \
                or bool(info.is_pointwise) == depthwise or not info.weights or not info.biases:
            return None
        count = channels * 9 if depthwise else channels * filters
        weights = np.ctypeslib.as_array(info.weights, shape=(count,)).astype(np.float32)
        bias = np.ctypeslib.as_array(info.biases, shape=(filters,)).astype(np.float32)
        if depthwise:
            # stored tap-major: 9 taps (row-major 3x3), each a vector over the channels
            weight = weights.reshape(3, 3, channels).transpose(2, 0, 1)[:, None]
        elif i == 0:
            # the head: a 3x3 stride-2 convolution stored as a 1x1 over the 27 values of each
            # 3x3 window (tap-major, then the image's 3 channels, as the library lays them out),
            # padded to 32; the library is fed BGR, this graph RGB: channel order reversed.
            weight = weights.reshape(filters, channels)[:, :27].reshape(filters, 3, 3, 3)
            weight = weight.transpose(0, 3, 1, 2)[:, ::-1]
        else:
            weight = weights.reshape(filters, channels, 1, 1)
        layers.append(ConvLayer(np.ascontiguousarray(weight), bias, depthwise, bool(info.with_relu)))
    return layers


class _GraphBuilder:
    """Nodes and initializers of the detector graph, with unique tensor names."""

    def __init__(self, layers: list[ConvLayer]) -> None:
        self.layers = layers
        self.nodes: list[bytes] = []
        self.inits: list[bytes] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(proto.node(op_type, inputs, [out], **attrs))
        return out

    def const(self, array: np.ndarray) -> str:
        name = self.name("c")
        self.inits.append(proto.tensor(name, array))
        return name

    def conv(self, x: str, index: int, relu: bool | None = None, stride: int = 1) -> str:
        layer = self.layers[index]
        k = layer.weight.shape[-1]
        y = self.op("Conv", [x, self.const(layer.weight), self.const(layer.bias)],
                    kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                    group=layer.weight.shape[0] if layer.depthwise else 1)
        return self.op("Relu", [y]) if (layer.relu if relu is None else relu) else y

    def separable(self, x: str, first: int, relu: bool = True) -> str:
        """Pointwise (no ReLU) then depthwise convolution ``first``, ``first + 1``."""
        return self.conv(self.conv(x, first, relu=False), first + 1, relu=relu)

    def unit(self, x: str, first: int) -> str:
        return self.separable(self.separable(x, first), first + 2)

    def pool(self, x: str) -> str:
        return self.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def upsample_add(self, coarse: str, fine: str) -> str:
        """``fine + nearest_upsample_x2(coarse)``."""
        up = self.name("resize")
        scales = self.const(np.array([1, 1, 2, 2], np.float32))
        self.nodes.append(proto.node("Resize", [coarse, "", scales], [up]))  # default: nearest
        return self.op("Add", [up, fine])


def yunet_model_bytes(layers: list[ConvLayer]) -> bytes:
    """The serialized ONNX model: input ``image`` uint8 (1, H, W, 3) RGB with H and W multiples
    of 32; outputs ``cls{l}``, ``box{l}``, ``obj{l}``, ``kps{l}`` for the levels l = 0, 1, 2
    (strides 8, 16, 32), each (1, C, H / stride, W / stride)."""
    g = _GraphBuilder(layers)
    x = g.op("Cast", ["image"], to=1)
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.conv(x, 0, stride=2)
    x = g.pool(g.separable(x, 1))
    x = g.unit(g.unit(x, 3), 7)
    p3 = g.unit(g.pool(x), 11)
    p4 = g.unit(g.pool(p3), 15)
    p5 = g.unit(g.pool(p4), 19)
    p5 = g.separable(p5, 27)
    p4 = g.separable(g.upsample_add(p5, p4), 25)
    p3 = g.separable(g.upsample_add(p4, p3), 23)
    outputs = []
    # heads: class 29-34, box 35-40, objectness 41-46, landmarks 47-52; two layers per level
    for level, feature in enumerate((p3, p4, p5)):
        for head, first in (("cls", 29), ("box", 35), ("obj", 41), ("kps", 47)):
            y = g.separable(feature, first + 2 * level, relu=False)
            name = f"{head}{level}"
            g.nodes.append(proto.node("Identity", [y], [name]))
            outputs.append(proto.value_info(name, np.float32, [1, head + "_c", "h", "w"]))
    inputs = [proto.value_info("image", np.uint8, [1, "height", "width", 3])]
    return proto.model(g.nodes, g.inits, inputs, outputs, name="yunet")


@functools.lru_cache(maxsize=32)
def _priors(rows: int, cols: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Prior centres ``(col * stride, row * stride)`` of a level, row-major (read-only)."""
    ys, xs = np.mgrid[0:rows, 0:cols]
    px = (xs * stride).reshape(-1).astype(np.float32)
    py = (ys * stride).reshape(-1).astype(np.float32)
    px.flags.writeable = py.flags.writeable = False
    return px, py


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(v, -88.3762626647949, 88.3762626647949)))


def _nms(boxes: np.ndarray, order: np.ndarray, iou: float, keep_top: int) -> list[int]:
    """Greedy NMS: a candidate is kept when no kept one overlaps it by more than ``iou``."""
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    keep: list[int] = []
    while order.size and len(keep) < keep_top:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])
        ih = np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, np.finfo(np.float32).tiny)
        order = rest[overlap <= iou]
    return keep


class YuNetRuntime:
    """The detector graph in an ONNX Runtime session: ``runtime(rgb, threshold)`` gives the
    faces of an RGB uint8 image as float rows ``score, x, y, w, h, 5 x (x, y)`` (score in [0, 1],
    best first), like the library's own rows. Sessions are shared per thread count; ``run`` is
    safe to call from several threads at once."""

    _cache: dict[int, "YuNetRuntime | None"] = {}
    _lock = threading.Lock()

    def __init__(self, session: Any) -> None:
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]

    @classmethod
    def get(cls, threads: int | None = 1) -> "YuNetRuntime | None":
        """The shared runtime for ``threads`` intra-op threads (None: ONNX Runtime's default),
        or None when ONNX Runtime or the library's weights are not available."""
        key = 0 if threads is None else int(threads)
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = cls._create(key)
            return cls._cache[key]

    @classmethod
    def _create(cls, threads: int) -> "YuNetRuntime | None":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        layers = conv_layers()
        if layers is None:
            return None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads must not spin: they would take the core the model runs on
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(yunet_model_bytes(layers), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # an ONNX Runtime that refuses the graph: the library instead
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            print(f"bregnet: note: YuNet in ONNX Runtime unavailable ({type(exc).__name__}: "
                  f"{first}); using libfacedetection's own code", file=sys.stderr, flush=True)
            return None
        return cls(session)

    def __call__(self, rgb: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        if (ph, pw) == (h, w) and rgb.flags.c_contiguous:
            image = rgb[None]
        else:
            image = np.zeros((1, ph, pw, 3), np.uint8)
            image[0, :h, :w] = rgb
        res = dict(zip(self._outputs, self._session.run(self._outputs, {"image": image})))
        scores, boxes, marks = [], [], []
        for level, stride in enumerate(STRIDES):
            cls = res[f"cls{level}"][0]
            px, py = _priors(*cls.shape[1:], stride)
            box = res[f"box{level}"][0].reshape(4, -1)
            cx, cy = box[0] * stride + px, box[1] * stride + py
            bw, bh = np.exp(box[2]) * stride, np.exp(box[3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
            kps = res[f"kps{level}"][0].reshape(5, 2, -1) * stride
            marks.append((kps + np.stack([px, py])[None]).transpose(2, 0, 1).reshape(-1, 10))
            scores.append(np.sqrt(_sigmoid(cls.reshape(-1))
                                  * _sigmoid(res[f"obj{level}"][0].reshape(-1))))
        score = np.concatenate(scores)
        box = np.concatenate(boxes)
        mark = np.concatenate(marks)
        candidates = np.nonzero(score >= threshold)[0]
        order = candidates[np.argsort(-score[candidates], kind="stable")][:TOP_K]
        keep = _nms(box, order, NMS_IOU, KEEP_TOP_K)
        out = np.empty((len(keep), 15), np.float32)
        if keep:
            k = np.asarray(keep)
            out[:, 0] = score[k]
            out[:, 1:3] = box[k, :2]
            out[:, 3:5] = box[k, 2:] - box[k, :2]
            out[:, 5:] = mark[k]
        return out
