"""ONNX export: metadata inside, dynamic batch, parity with PyTorch, ONNX Runtime backend."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from bregnet import Predictor  # noqa: E402
from bregnet.cli import main  # noqa: E402
from bregnet.engine.checkpoint import load_checkpoint, read_metadata  # noqa: E402
from bregnet.errors import CheckpointError  # noqa: E402
from bregnet.export.onnx import (  # noqa: E402
    OnnxBackend,
    export_onnx,
    max_abs_diff,
    read_onnx_metadata,
)
from bregnet.crop import crop_face  # noqa: E402
from bregnet.infer.detect import make_detector  # noqa: E402
from infer_helpers import LABELS, astronaut, make_checkpoint, multi_face_image  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "model.safetensors")


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "model.onnx")  # default exporter


@pytest.fixture(scope="module")
def real_crops(ckpt) -> np.ndarray:
    """Normalised crops of real faces: the astronaut, its six tiles, flipped and darkened."""
    _, meta = load_checkpoint(ckpt)
    det = make_detector("yunet")
    crops = []
    for img in (astronaut(), multi_face_image(2, 3), astronaut()[:, ::-1].copy(),
                (astronaut() * 0.5).astype(np.uint8)):
        for d in det.detect(img):
            crops.append(crop_face(img, d.box, meta.preprocess.crop, 64, d.landmarks))
    assert len(crops) == 9
    return meta.preprocess.normalize_numpy(np.stack(crops))


def test_metadata_travels_in_the_onnx_file(ckpt, exported):
    meta = read_onnx_metadata(exported)
    ref = read_metadata(ckpt)
    assert meta.labels == LABELS and meta.va and meta.model_name == "bregnext_custom"  # tiny layout
    assert meta.preprocess == ref.preprocess and meta.model_args == ref.model_args
    proto = onnx.load(str(exported))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["labels"]) == LABELS
    assert json.loads(props["bregnet"])["preprocess"]["mean"] == list(ref.preprocess.mean)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits", "va"]
    assert not list(exported.parent.glob("*.data"))  # one self-contained file
    try:
        import onnxscript  # noqa: F401

        assert props["exporter"].endswith("dynamo")  # the default, torch.export-based exporter
    except ImportError:
        assert props["exporter"].endswith("legacy")


def test_parity_random_and_real_crops_dynamic_batch(ckpt, exported, real_crops):
    model, _ = load_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    for n in (1, 3, 16):  # the batch axis is dynamic
        x = rng.normal(0, 0.6, (n, 3, 64, 64)).astype(np.float32)
        assert max_abs_diff(model, exported, x) <= TOL
    assert max_abs_diff(model, exported, real_crops) <= TOL
    logits, va = OnnxBackend(exported).run(real_crops)
    assert logits.shape == (9, 8) and va.shape == (9, 2)


def test_legacy_exporter_static_batch_and_dimensional_model(tmp_path, real_crops):
    ck = make_checkpoint(tmp_path / "dim.safetensors", num_classes=0, va=True)
    path = export_onnx(ck, tmp_path / "dim.onnx", exporter="legacy", dynamic_batch=False, opset=17)
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["va"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    backend = OnnxBackend(path)
    assert backend.fixed_batch == 1
    logits, va = backend.run(real_crops)  # fed one row at a time
    model, _ = load_checkpoint(ck)
    with torch.inference_mode():
        ref = model(torch.from_numpy(real_crops)).numpy()
    assert logits is None and np.abs(va - ref).max() <= TOL


def test_predictor_onnx_backend_matches_torch(ckpt, exported):
    img = multi_face_image(1, 2)
    torch_faces = Predictor.from_checkpoint(ckpt).predict_image(img)
    onnx_faces = Predictor.from_checkpoint(exported).predict_image(img)
    assert len(torch_faces) == len(onnx_faces) == 2
    for a, b in zip(torch_faces, onnx_faces):
        assert a.box == b.box and a.label == b.label
        assert np.abs(a.probs - b.probs).max() <= TOL and np.abs(a.va - b.va).max() <= TOL


def test_cli_export_then_predict_with_onnx(ckpt, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--exporter", "legacy"]) == 0
    assert "parity with PyTorch" in capsys.readouterr().out
    img = tmp_path / "astro.png"
    import cv2

    cv2.imwrite(str(img), astronaut()[:, :, ::-1].copy())
    csv_torch, csv_onnx = tmp_path / "t.csv", tmp_path / "o.csv"
    assert main(["predict", str(ckpt), str(img), "-o", str(csv_torch), "--quiet"]) == 0
    assert main(["predict", str(out), str(img), "-o", str(csv_onnx), "--quiet"]) == 0
    t_rows = csv_torch.read_text().splitlines()
    o_rows = csv_onnx.read_text().splitlines()
    assert t_rows[0] == o_rows[0] and len(o_rows) == 2
    t = np.array([float(v) for v in t_rows[1].split(",")[10:]])
    o = np.array([float(v) for v in o_rows[1].split(",")[10:]])
    assert np.abs(t - o).max() <= 2e-6 + TOL


def test_bad_onnx_files(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 not a model")
    with pytest.raises(CheckpointError):
        Predictor.from_checkpoint(junk)
    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(foreign), dynamo=False)
    with pytest.raises(CheckpointError, match="without bregnet metadata"):
        read_onnx_metadata(foreign)
    rc = main(["predict", str(foreign), str(junk)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "bregnet metadata" in err[0]
