"""YuNet in ONNX Runtime (bregnet.infer.yunet) against libfacedetection's own C code, and the
protocol-buffer writer it is built with."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from infer_helpers import astronaut, multi_face_image, no_face_image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from bregnet.errors import UsageError  # noqa: E402
from bregnet.infer import _onnxproto as proto  # noqa: E402
from bregnet.infer.detect import YuNetDetector, _FaceDetectCNN  # noqa: E402
from bregnet.infer.yunet import (LIBRARY_THRESHOLD, YuNetRuntime, conv_layers,  # noqa: E402
                                 yunet_model_bytes)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the weights are read from the Linux wheel of yuface")


def _images() -> list[np.ndarray]:
    """Real faces at several sizes (none a multiple of 32 on both sides), several faces, none,
    mirrored, and gray LFW crops."""
    import cv2
    from skimage import data

    out = [astronaut(), cv2.resize(astronaut(), (640, 360)), multi_face_image(1, 2),
           no_face_image(), np.ascontiguousarray(astronaut()[:, ::-1]),
           cv2.resize(astronaut(), (101, 77))]
    for face in data.lfw_subset()[::10]:
        gray = cv2.resize((face * 255).astype(np.uint8), (100, 100))
        out.append(np.ascontiguousarray(np.stack([gray] * 3, -1)))
    return out


def test_graph_is_valid_onnx():
    layers = conv_layers()
    assert layers is not None and len(layers) == 53
    model = onnx.load_from_string(yunet_model_bytes(layers))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    assert len(model.graph.output) == 12
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, "height", "width", 3]


def test_same_faces_as_libfacedetection():
    """Same faces, boxes and landmarks as the library to its whole-pixel truncation, scores to
    its truncation to a percent, from the library's own candidate threshold up."""
    runtime = YuNetRuntime.get(1)
    native = _FaceDetectCNN.get()
    assert runtime is not None and native is not None
    found = 0
    for img in _images():
        want = native(np.ascontiguousarray(img[:, :, ::-1])).astype(np.float64)
        got = runtime(img, LIBRARY_THRESHOLD).astype(np.float64)
        assert got.shape == (len(want), 15), (img.shape, want[:, 0], got[:, 0])
        found += len(got)
        for w, g in zip(want, got):
            np.testing.assert_array_equal(np.trunc(g[1:15]), w[1:15])
            assert abs(np.trunc(g[0] * 100) - w[0]) <= 1
    assert found >= 8


def test_detector_uses_the_runtime_by_default_and_agrees(monkeypatch):
    monkeypatch.delenv("BREGNET_YUNET_BACKEND", raising=False)
    fast = YuNetDetector()
    slow = YuNetDetector(backend="libfacedetection")
    assert fast.backend == "onnxruntime" and slow.backend == "libfacedetection"
    assert "onnxruntime" in repr(fast)
    for img in _images()[:4]:
        a, b = fast.detect(img), slow.detect(img)
        assert len(a) == len(b)
        # the library's whole pixels, in the pixels of the copy detected (at most 640 wide)
        pixel = max(1.0, max(img.shape[:2]) / 640) + 1e-6
        for da, db in zip(a, b):
            assert np.abs(np.subtract(da.box, db.box)).max() < pixel
            assert abs(da.score - db.score) < 0.011
            assert np.abs(da.landmarks - db.landmarks).max() < pixel
    monkeypatch.setenv("BREGNET_YUNET_BACKEND", "libfacedetection")
    assert YuNetDetector().backend == "libfacedetection"
    with pytest.raises(UsageError, match="unknown YuNet backend"):
        YuNetDetector(backend="cuda")


def test_threshold_below_the_library_s():
    """The user's threshold is the candidate threshold (the library stops at 0.2)."""
    img = _images()[2]
    low = YuNetRuntime.get(1)(img, 0.05)
    high = YuNetRuntime.get(1)(img, 0.5)
    assert len(low) >= len(high) >= 2
    assert (low[:, 0] >= 0.05).all() and np.all(np.diff(low[:, 0]) <= 0)
    # what survives above 0.5 is the same either way (greedy NMS goes best first)
    np.testing.assert_allclose(low[low[:, 0] >= 0.5], high)


def test_concurrent_calls_give_the_same_rows():
    runtime = YuNetRuntime.get(1)
    imgs = _images()[:4]
    want = [runtime(img) for img in imgs]
    errors: list[str] = []

    def work() -> None:
        for _ in range(5):
            for img, w in zip(imgs, want):
                if not np.array_equal(runtime(img), w):
                    errors.append("differs")

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_falls_back_without_onnxruntime(monkeypatch):
    monkeypatch.delenv("BREGNET_YUNET_BACKEND", raising=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import fails
    monkeypatch.setattr(YuNetRuntime, "_cache", {})
    det = YuNetDetector()
    assert det.backend == "libfacedetection"
    assert len(det.detect(astronaut())) == 1
    with pytest.raises(UsageError, match="needs the 'onnxruntime' package"):
        YuNetDetector(backend="onnxruntime")


def test_protobuf_writer_round_trips_through_onnx():
    nodes = [proto.node("Add", ["x", "k"], ["s"]),
             proto.node("LeakyRelu", ["s"], ["y"], alpha=0.25),
             proto.node("Pad", ["y", "pads"], ["z"], name="pad")]
    inits = [proto.tensor("k", np.arange(6, dtype=np.float32).reshape(2, 3)),
             proto.tensor("pads", np.array([0, -1, 0, 2], np.int64))]
    inputs = [proto.value_info("x", np.float32, ["n", 3])]
    outputs = [proto.value_info("z", np.float32, ["n", 4])]
    data = proto.model(nodes, inits, inputs, outputs, name="g")
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.node[1].attribute[0].f == pytest.approx(0.25)
    assert list(onnx.numpy_helper.to_array(model.graph.initializer[1])) == [0, -1, 0, 2]
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.array([[-4.0, 1.0, 2.0], [0.5, -8.0, 3.0]], np.float32)
    (z,) = sess.run(None, {"x": x})
    s = x + np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.where(s > 0, s, 0.25 * s)[:, 1:]
    np.testing.assert_allclose(z, np.pad(y, ((0, 0), (0, 2))))
    with pytest.raises(ValueError, match="no ONNX type"):
        proto.tensor("b", np.zeros(2, np.float16))


def test_a_runtime_that_refuses_the_graph_falls_back(monkeypatch, capsys):
    class Refusing:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : opset 17 unsupported")

    monkeypatch.delenv("BREGNET_YUNET_BACKEND", raising=False)
    monkeypatch.setattr(ort, "InferenceSession", Refusing)
    monkeypatch.setattr(YuNetRuntime, "_cache", {})
    det = YuNetDetector()
    assert det.backend == "libfacedetection"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "YuNet in ONNX Runtime unavailable" in err[0] and "INVALID_GRAPH" in err[0]
    assert len(det.detect(astronaut())) == 1
