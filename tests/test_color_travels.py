"""The colour of the training images travels with the model like the crop does: a model trained
on gray faces (FER2013, FERPlus) is run on gray faces, whatever the photo.

Tiny models, one training step, a handful of generated images."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from bregnet import Predictor
from bregnet.data.base import ArrayDataset
from bregnet.engine.checkpoint import CHECKPOINT_FORMAT, read_metadata, validate_metadata
from bregnet.engine.data import color_of
from bregnet.errors import CheckpointError
from bregnet.preprocess import Preprocess
from test_crop_travels import _fer2013, _train
from test_readers import make_folder


def _colour_crops(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def _gray_of(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(rgb[..., :1], 3, axis=-1)


def _dataset(images: np.ndarray) -> ArrayDataset:
    n = len(images)
    return ArrayDataset(images=images, labels=np.zeros(n, np.int64), va=np.zeros((n, 2), np.float32),
                        classes=["a"])


def test_color_of_tells_gray_data_from_colour_data():
    crops = _colour_crops()
    assert color_of(_dataset(crops)) == "RGB"
    gray = _gray_of(crops)
    assert color_of(_dataset(gray)) == "GRAY"
    # one colour image among gray ones (within the sample) makes the set a colour set
    gray[3] = crops[3]
    assert color_of(_dataset(gray)) == "RGB"


def test_gray_preprocessing_is_bt601_luma_and_leaves_gray_images_unchanged():
    pre = Preprocess(color="GRAY")
    crops = _colour_crops()
    gray = pre.to_model_colors(crops)
    expected = np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in crops])
    assert gray.dtype == np.uint8 and gray.shape == crops.shape
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert np.abs(gray[..., 0].astype(int) - expected).max() <= 1   # OpenCV rounds in fixed point
    already = _gray_of(crops)
    assert np.array_equal(pre.to_model_colors(already), already)
    # the torch path (training, evaluation) and the numpy path (predictor, ONNX) agree exactly
    nchw = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    assert torch.equal(pre.normalize(nchw), torch.from_numpy(pre.normalize_numpy(crops)))
    bgr = Preprocess(color="BGR")
    assert torch.equal(bgr.normalize(nchw), torch.from_numpy(bgr.normalize_numpy(crops)))
    assert np.array_equal(bgr.normalize_numpy(crops), Preprocess().normalize_numpy(crops[..., ::-1].copy()))


def test_a_model_trained_on_fer2013_runs_on_gray_faces(tmp_path):
    name, root, split, options = _fer2013(tmp_path / "fer")
    ckpt = _train(tmp_path, name, root, split, options)
    assert read_metadata(ckpt).preprocess.color == "GRAY"
    pred = Predictor.from_checkpoint(ckpt, detector="none")
    crops = _colour_crops()
    as_gray = pred.preprocess.to_model_colors(crops)
    probs, _ = pred.predict_crops(crops)
    probs_gray, _ = pred.predict_crops(as_gray)
    assert np.array_equal(probs, probs_gray)
    as_rgb = replace(pred.meta, preprocess=replace(pred.preprocess, color="RGB"))
    probs_colour, _ = Predictor(pred.backend, as_rgb, detector="none").predict_crops(crops)
    assert not np.allclose(probs, probs_colour)   # the conversion does change what the model sees


def test_a_model_trained_on_colour_faces_stays_rgb(tmp_path):
    root = make_folder(tmp_path / "faces", split_dirs=False)
    ckpt = _train(tmp_path, "folder", root, "all", {})
    assert read_metadata(ckpt).preprocess.color == "RGB"


def test_checkpoint_colour_is_validated():
    doc = {"format": CHECKPOINT_FORMAT, "model": {"name": "bregnext_custom", "args": {
               "stages": [[1, 8]], "stem_width": 8, "num_classes": 2}}, "labels": ["a", "b"],
           "preprocess": {"input_size": 64, "color": "GRAY"}}
    assert validate_metadata(doc)["preprocess"].color == "GRAY"
    with pytest.raises(CheckpointError, match="preprocess.color"):
        validate_metadata({**doc, "preprocess": {"input_size": 64, "color": "CMYK"}})
