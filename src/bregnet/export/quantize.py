"""int8 ONNX models: static quantization calibrated on face crops, with a parity gate.

:func:`export_int8` exports a checkpoint to ONNX (simplified: :func:`bregnet.export.onnx.simplify_graph`),
quantizes it with ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``:
QDQ format, uint8 activations calibrated on face crops, int8 weights per output channel, the
convolutions quantized but the stem's; element-wise work - ELU, the bounded shortcut, the
batch norms that follow a sum - and the heads stay in float32), then compares the int8 model with the fp32 one
on held-out crops: top-1 label agreement and the largest probability (and valence/arousal)
difference. The int8 model is written only when the agreement reaches the gate (default 99%);
otherwise the fp32 model is written and the result says why. Either way a parity report (JSON) is
written beside the model (``<name>.parity.json``), and an int8 model carries the same report in
its ``metadata_props`` (key ``bregnet_quantization``) besides the checkpoint metadata, so
``Predictor.from_checkpoint("model.int8.onnx")`` runs it like any exported model.

Calibration crops (:func:`calibration_crops`), unless the user gives their own data: synthetic faces
(:mod:`bregnet.data.synthetic`, all 8 expressions), crops of scikit-image's astronaut photo (the
face found by YuNet, with jittered boxes, mirrored, brighter and darker) and the 100 faces of
scikit-image's LFW subset, when scikit-image is installed (it is part of ``bregnet[onnx]``). Each
source is split in two: one part calibrates, the other (never seen by the calibration) measures
parity.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BregnetError, DataError, UsageError
from ..fileio import atomic_write_bytes, check_output_file, json_text, write_json

__all__ = ["CalibrationSet", "Int8Result", "calibration_crops", "export_int8", "parity",
           "parity_report_path", "quantize_onnx"]

#: default top-1 label agreement an int8 model must reach against its fp32 model
DEFAULT_MIN_AGREEMENT = 0.99
#: default largest valence/arousal difference accepted for a model with that head
DEFAULT_VA_TOLERANCE = 0.1
#: the operators quantized: the convolutions are all the work; the heads (Gemm) stay in float
QUANTIZED_OPS = ("Conv",)


@dataclass
class CalibrationSet:
    """Face crops ``(N, S, S, 3)`` uint8 RGB for calibration and, disjoint, for parity."""

    calibrate: np.ndarray
    check: np.ndarray
    sources: dict[str, int] = field(default_factory=dict)   # source -> crops taken from it


@dataclass
class Int8Result:
    path: Path
    int8: bool                      # False: the gate failed and the fp32 model was written
    report: dict[str, Any]
    report_path: Path
    reason: str = ""


def parity_report_path(path: str | os.PathLike) -> Path:
    """Where the parity report of the model at ``path`` goes: ``<stem>.parity.json`` beside it."""
    p = Path(path)
    return p.with_name(p.stem + ".parity.json")


# ------------------------------------------------------------------------------ calibration data
def _split(crops: np.ndarray, n_cal: int) -> tuple[np.ndarray, np.ndarray]:
    return crops[:n_cal], crops[n_cal:]


def _synthetic(n: int, size: int, seed: int) -> np.ndarray:
    from ..data.synthetic import synthetic_sample

    labels = np.arange(n) % 8   # every expression, in turn
    return np.stack([synthetic_sample(i, int(k), seed=seed, size=size, split="test").image
                     for i, k in enumerate(labels)]).astype(np.uint8)


def _astronaut(n: int, size: int, policy: Any, seed: int) -> np.ndarray | None:
    try:
        from skimage import data as skdata
    except ImportError:
        return None
    from ..crop import crop_face
    from ..infer.detect import YuNetDetector

    rgb = np.ascontiguousarray(skdata.astronaut())
    dets = YuNetDetector().detect(rgb)
    if not dets:  # pragma: no cover - the photo has one clear face
        return None
    det = max(dets, key=lambda d: d.box[2] * d.box[3])
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img, lm = rgb, det.landmarks
        x, y, w, h = det.box
        if i % 2:  # mirrored: the landmarks swap sides too
            img = np.ascontiguousarray(rgb[:, ::-1])
            x = rgb.shape[1] - x - w
            if lm is not None:
                lm = lm.copy()
                lm[:, 0] = rgb.shape[1] - 1 - lm[:, 0]
                lm = lm[[1, 0, 2, 4, 3]]
        s = 1.0 + rng.uniform(-0.12, 0.12)
        dx, dy = rng.uniform(-0.08, 0.08, 2) * w
        box = (x + dx - (s - 1) * w / 2, y + dy - (s - 1) * h / 2, w * s, h * s)
        if lm is not None:
            lm = lm + np.array([dx, dy], np.float32)
        crop = crop_face(img, box, policy, size, lm).astype(np.float32)
        gain, offset = 1.0 + rng.uniform(-0.25, 0.25), rng.uniform(-25, 25)
        out.append(np.clip(crop * gain + offset, 0, 255).astype(np.uint8))
    return np.stack(out)


def _lfw(size: int) -> np.ndarray | None:
    try:
        from skimage import data as skdata
    except ImportError:
        return None
    import cv2

    faces = skdata.lfw_subset()[:100]   # the first 100 of the 200 are faces, the rest are not
    out = [cv2.cvtColor(cv2.resize((f * 255).astype(np.uint8), (size, size),
                                   interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
           for f in faces]
    return np.stack(out)


def _user_crops(data: str | os.PathLike, size: int, policy: Any, limit: int) -> np.ndarray:
    """Crops from a folder of photos (faces detected and cropped with the model's policy; an
    image in which no face is found is taken whole, as a crop) or a prepared cache."""
    import cv2

    p = Path(data)
    if not p.exists():
        raise DataError(f"calibration data not found: {p}")
    from ..data.cache import cache_splits, open_cache

    if (p / "meta.json").exists() or cache_splits(p):
        splits = cache_splits(p)
        split = None if (p / "meta.json").exists() else ("train" if "train" in splits else splits[0])
        images = open_cache(p, split).images
        idx = np.linspace(0, len(images) - 1, min(limit, len(images))).round().astype(int) \
            if len(images) else np.zeros(0, int)
        crops = [np.asarray(images[i]) for i in np.unique(idx)]
        crops = [c if c.shape[:2] == (size, size) else
                 cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]
        return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)

    from ..crop import crop_face
    from ..data.image_io import read_image
    from ..infer.detect import YuNetDetector
    from ..infer.predictor import expand_inputs

    files = [f for f, _ in expand_inputs([p])]
    if not files:
        raise DataError(f"no images in the calibration data {p}")
    detector = YuNetDetector()
    crops: list[np.ndarray] = []
    for f in files:
        if len(crops) >= limit:
            break
        try:
            rgb = read_image(f, apply_exif=True)
        except BregnetError:
            continue
        dets = detector.detect(rgb)
        if dets:
            crops += [crop_face(rgb, d.box, policy, size, d.landmarks) for d in dets]
        else:
            crops.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(crops[:limit]) if crops else np.zeros((0, size, size, 3), np.uint8)


def calibration_crops(meta: Any, data: str | os.PathLike | None = None, count: int = 600,
                      seed: int = 0) -> CalibrationSet:
    """Face crops for calibrating an int8 model and, separately, for checking it.

    Without ``data``: ``count`` crops, about 3/4 synthetic faces (every expression), the rest
    astronaut crops and LFW faces (when scikit-image is installed); of each source 40% calibrate
    and 60% check. With ``data`` (a folder of photos or a prepared cache): up to ``count`` crops
    from it, split the same way. DataError when fewer than 16 crops come out.
    """
    size = int(meta.preprocess.input_size)
    policy = meta.preprocess.crop
    parts: list[tuple[str, np.ndarray]] = []
    if data is not None:
        parts.append((str(data), _user_crops(data, size, policy, count)))
    else:
        n_real = max(8, count // 4)
        lfw = _lfw(size)
        if lfw is not None:
            lfw = lfw[:max(4, n_real // 2)]
            parts.append(("scikit-image LFW subset faces", lfw))
        astro = _astronaut(max(4, n_real - (0 if lfw is None else len(lfw))), size, policy, seed)
        if astro is not None:
            parts.append(("scikit-image astronaut (jittered, mirrored, relit)", astro))
        n_syn = max(8, count - sum(len(c) for _, c in parts))
        parts.insert(0, ("bregnet synthetic faces (8 expressions)", _synthetic(n_syn, size, seed)))
    cal, chk, sources = [], [], {}
    for name, crops in parts:
        if not len(crops):
            continue
        n_cal = max(1, int(round(0.4 * len(crops))))
        a, b = _split(crops, n_cal)
        cal.append(a)
        chk.append(b)
        sources[name] = int(len(crops))
    total = sum(sources.values())
    if total < 16 or not chk or sum(len(c) for c in chk) == 0:
        raise DataError(f"too few calibration crops ({total}) from "
                        f"{data if data is not None else 'the built-in sources'}; need at least 16")
    return CalibrationSet(np.concatenate(cal), np.concatenate(chk), sources)


# --------------------------------------------------------------------------------- quantization
class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over normalised crops, in batches."""

    def __init__(self, inputs: np.ndarray, batch: int = 8) -> None:
        self._batches = iter([inputs[i:i + batch] for i in range(0, len(inputs), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {"input": np.ascontiguousarray(x, np.float32)}

    def __iter__(self):  # the newer readers are also iterated
        while (item := self.get_next()) is not None:
            yield item


def quantize_onnx(fp32_model: bytes, calib_inputs: np.ndarray, method: str = "minmax") -> bytes:
    """Static int8 quantization of an ONNX model (bytes) with ONNX Runtime: QDQ format, uint8
    activations calibrated on ``calib_inputs`` (normalised NCHW float32), int8 weights per output
    channel; the convolutions are quantized, but the stem's. ``method``: ``minmax`` or
    ``percentile`` (99.999th). Returns the int8 model as bytes."""
    try:
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError:
        raise BregnetError("int8 export needs onnxruntime: pip install 'bregnet[onnx]'") from None
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise UsageError(f"unknown calibration method {method!r}; choose {' or '.join(methods)}")
    import onnx

    proto = onnx.load_from_string(fp32_model)
    graph_inputs = {i.name for i in proto.graph.input}
    # the stem (3 input channels: ~0.1% of the work) reads the image itself: kept in float
    exclude = [n.name for n in proto.graph.node if n.op_type == "Conv" and n.input[0] in graph_inputs]
    with tempfile.TemporaryDirectory(prefix="bregnet-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_model)
        extra = {"CalibMaxIntermediateOutputs": 4, "CalibTensorRangeSymmetric": False}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        quantize_static(str(src), str(dst), _Reader(calib_inputs), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=exclude,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        extra_options=extra)
        return dst.read_bytes()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def parity(reference: Any, candidate: Any, inputs: np.ndarray, batch: int = 16) -> dict[str, Any]:
    """Compare two backends (``run(x) -> (logits, va)``) on normalised inputs: top-1 label
    agreement and the largest / mean absolute difference of the class probabilities and of
    valence/arousal (keys absent for a head the model lacks)."""
    ref_l, ref_v, got_l, got_v = [], [], [], []
    for i in range(0, len(inputs), batch):
        x = np.ascontiguousarray(inputs[i:i + batch], np.float32)
        (rl, rv), (gl, gv) = reference.run(x), candidate.run(x)
        if rl is not None:
            ref_l.append(rl)
            got_l.append(gl)
        if rv is not None:
            ref_v.append(rv)
            got_v.append(gv)
    out: dict[str, Any] = {"crops": int(len(inputs))}
    if ref_l:
        pr, pg = _softmax(np.concatenate(ref_l)), _softmax(np.concatenate(got_l))
        agree = pr.argmax(1) == pg.argmax(1)
        diff = np.abs(pr - pg)
        out.update(label_agreement=float(agree.mean()), label_disagreements=int((~agree).sum()),
                   max_prob_diff=float(diff.max()), mean_prob_diff=float(diff.mean()),
                   reference_labels=np.bincount(pr.argmax(1), minlength=pr.shape[1]).tolist())
    if ref_v:
        d = np.abs(np.concatenate(ref_v) - np.concatenate(got_v))
        out.update(max_va_diff=float(d.max()), mean_va_diff=float(d.mean()))
    return out


def export_int8(
    source: Any,
    path: str | os.PathLike,
    meta: Any = None,
    calibrate: str | os.PathLike | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    va_tolerance: float = DEFAULT_VA_TOLERANCE,
    count: int = 600,
    method: str = "minmax",
    opset: int = 18,
    exporter: str = "auto",
    overwrite: bool = True,
) -> Int8Result:
    """Export ``source`` (a checkpoint path, or a model with ``meta``) as an int8 ONNX model at
    ``path``, gated on parity with the fp32 model (see the module docstring).

    The int8 model is written when its top-1 label agreement with the fp32 model on the held-out
    crops is at least ``min_agreement`` (and, with a valence/arousal head, its largest difference
    there at most ``va_tolerance``); otherwise the fp32 model is written and ``result.int8`` is
    False with ``result.reason``. The parity report goes to :func:`parity_report_path`.
    """
    from .onnx import QUANTIZATION_KEY, OnnxBackend, check_export, export_onnx

    if not 0.0 <= float(min_agreement) <= 1.0:
        raise UsageError(f"the label agreement gate must be in [0, 1], got {min_agreement!r}")
    out, _ = check_export(path, opset, exporter, inputs=[source] if isinstance(
        source, (str, os.PathLike)) else [])
    report_path = parity_report_path(out)
    check_output_file(report_path, inputs=[out], overwrite=overwrite, what="parity report")
    if isinstance(source, (str, os.PathLike)):
        from ..engine.checkpoint import load_checkpoint

        model, meta = load_checkpoint(source)
    else:
        model = source
        if meta is None:
            raise UsageError("export_int8 needs the checkpoint metadata (meta=) for a model")
    import onnx

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bregnet-int8-") as tmp:
        fp32_path = export_onnx(model, Path(tmp) / "fp32.onnx", opset=opset, meta=meta,
                                exporter=exporter)
        fp32_bytes = fp32_path.read_bytes()
    export_s = time.perf_counter() - t0
    crops = calibration_crops(meta, calibrate, count=count)
    inputs = meta.preprocess.normalize_numpy   # in the model's colours and normalisation

    t1 = time.perf_counter()
    int8_bytes = quantize_onnx(fp32_bytes, inputs(crops.calibrate), method=method)
    quant_s = time.perf_counter() - t1
    fp32_run, int8_run = OnnxBackend(fp32_bytes), OnnxBackend(int8_bytes)
    t2 = time.perf_counter()
    result = parity(fp32_run, int8_run, inputs(crops.check))
    parity_s = time.perf_counter() - t2
    failures = []
    if "label_agreement" in result and result["label_agreement"] < min_agreement:
        failures.append(f"top-1 label agreement {100 * result['label_agreement']:.1f}% < "
                        f"{100 * min_agreement:g}%")
    if "max_va_diff" in result and result["max_va_diff"] > va_tolerance:
        failures.append(f"largest valence/arousal difference {result['max_va_diff']:.3g} > "
                        f"{va_tolerance:g}")
    passed = not failures
    report: dict[str, Any] = {
        "model": meta.model_name,
        "written": "int8" if passed else "fp32",
        "gate": {"min_label_agreement": float(min_agreement), "max_va_diff": float(va_tolerance),
                 "passed": passed, "failures": failures},
        "quantization": {"format": "QDQ (onnxruntime.quantization.quantize_static)",
                         "activations": "uint8, per tensor", "weights": "int8, per channel",
                         "quantized_ops": "Conv (but the stem's)", "calibration": method},
        "calibration": {"data": str(calibrate) if calibrate is not None else "built-in",
                        "sources": crops.sources, "calibration_crops": int(len(crops.calibrate)),
                        "check_crops": int(len(crops.check))},
        "parity": result,
        "seconds": {"export": round(export_s, 2), "quantize": round(quant_s, 2),
                    "parity": round(parity_s, 2)},
    }
    if passed:
        proto = onnx.load_from_string(int8_bytes)
        entry = proto.metadata_props.add()
        entry.key, entry.value = QUANTIZATION_KEY, json_text(report, indent=None, sort_keys=True)
        blob = proto.SerializeToString()
    else:
        blob = fp32_bytes
    atomic_write_bytes(out, blob)
    write_json(report, report_path)
    return Int8Result(out, passed, report, report_path, "; ".join(failures))
