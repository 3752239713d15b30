"""Shared helpers for the inference tests: tiny checkpoints, real face images, test videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
TINY = ((1, 32), (1, 64), (1, 128))


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # 512x512 RGB, exactly one face


def face_patch() -> np.ndarray:
    """Head and shoulders of the astronaut (190x220)."""
    return astronaut()[20:240, 130:320].copy()


def no_face_image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee())  # a cup of coffee, no face


def multi_face_image(rows: int = 2, cols: int = 3) -> np.ndarray:
    return np.ascontiguousarray(np.tile(astronaut(), (rows, cols, 1)))


MICRO = ((1, 8), (1, 16), (1, 16))


def make_model(num_classes: int = 8, va: bool = True, seed: int = 0, micro: bool = False):
    """A tiny BReG-NeXt with non-trivial batch-norm statistics (random weights); ``micro`` is an
    even smaller one (8/16/16 channels) for tests that run it on hundreds of frames."""
    import torch

    from bregnet import create_model

    torch.manual_seed(seed)
    model = create_model("bregnext32", num_classes=num_classes, va=va,
                         stages=MICRO if micro else TINY, stem_width=8 if micro else 32)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    if model.fc is not None:  # spread the logits so that probabilities differ between faces
        torch.nn.init.normal_(model.fc.weight, std=0.5)
    return model.eval()


def make_checkpoint(path: Path, num_classes: int = 8, va: bool = True, seed: int = 0,
                    micro: bool = False) -> Path:
    """A checkpoint of :func:`make_model`; ``micro`` also takes 32x32 inputs."""
    from bregnet.engine.checkpoint import CheckpointMeta, save_checkpoint
    from bregnet.preprocess import Preprocess

    model = make_model(num_classes, va, seed, micro)
    labels = LABELS[:num_classes]
    meta = CheckpointMeta.for_model(model, labels,
                                    preprocess=Preprocess(input_size=32 if micro else 64))
    return save_checkpoint(path, model, meta, write_json=False)


def make_video(path: Path, frames: int, size: tuple[int, int] = (320, 240), fps: float = 20.0,
               faces: int = 1, fourcc: str = "MJPG") -> Path:
    """A video of the astronaut's face moving left to right and scaling (one or two faces; the
    second moves right to left in the other half)."""
    import cv2

    W, H = size
    patch = face_patch()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    bg = np.full((H, W, 3), 200, np.uint8)
    for i in range(frames):
        frame = bg.copy()
        t = i / max(frames - 1, 1)
        s = (0.5 + 0.12 * np.sin(2 * np.pi * t)) * H / patch.shape[0]
        ph, pw = int(patch.shape[0] * s), int(patch.shape[1] * s)
        p = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
        lane = W // faces
        for k in range(faces):
            travel = max(0, lane - pw - 20)
            x = int(10 + t * travel) if k == 0 else int(W - pw - 10 - t * travel)
            y = (H - ph) // 2
            frame[y:y + ph, x:x + pw] = p
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path
