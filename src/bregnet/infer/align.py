"""Face crops the way the model was trained: margin, square box, eyes levelled, resized.

The crop policy (``CropPolicy`` in the checkpoint's preprocessing) says how a detector box becomes
the model input: the box is enlarged by ``margin`` times its side on every side, made square around
its centre (``square``), and, when eye landmarks are known and ``align`` is set, rotated about the
box centre so that the eyes are level. Pixels outside the image are black.

Without rotation the crop is exactly the data pipeline's
(:func:`bregnet.data.image_io.crop_face` with a black border: integer box, area-averaged resize),
so a model sees at inference what it saw in training.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..preprocess import CropPolicy

__all__ = ["crop_face", "eye_angle", "expand_box"]


def expand_box(box: Sequence[float], margin: float, square: bool) -> tuple[float, float, float, float]:
    """``(cx, cy, crop_w, crop_h)`` of the crop region for box ``(x, y, w, h)``."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2.0, y + h / 2.0
    cw, ch = w * (1.0 + 2.0 * margin), h * (1.0 + 2.0 * margin)
    if square:
        cw = ch = max(cw, ch)
    return cx, cy, max(cw, 1.0), max(ch, 1.0)


def eye_angle(landmarks: np.ndarray | None) -> float:
    """Angle in degrees of the line from the image-left eye to the image-right eye (0 if unknown)."""
    if landmarks is None:
        return 0.0
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if lm.shape[0] < 2 or not np.all(np.isfinite(lm[:2])):
        return 0.0
    (x0, y0), (x1, y1) = lm[0], lm[1]
    if x1 < x0:  # keep the angle in (-90, 90): order the eyes left to right
        x0, y0, x1, y1 = x1, y1, x0, y0
    if abs(x1 - x0) + abs(y1 - y0) < 1e-6:
        return 0.0
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def crop_face(
    rgb: np.ndarray,
    box: Sequence[float],
    size: int = 64,
    policy: CropPolicy | None = None,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """Crop one face from an RGB uint8 image as a ``(size, size, 3)`` uint8 array.

    Without rotation: the data pipeline's crop (integer box, black outside, area-averaged
    resize). With rotation: large faces are first reduced with area averaging (no aliasing), then
    rotated about the box centre and resampled bilinearly into the output.
    """
    import cv2

    policy = policy or CropPolicy()
    angle = eye_angle(landmarks) if policy.align else 0.0
    if angle == 0.0:
        from ..data.image_io import crop_face as plain_crop

        try:
            return plain_crop(rgb, box, policy.margin, policy.square, size, border="constant")
        except ValueError:  # box empty or entirely outside the image
            return np.zeros((size, size, 3), np.uint8)
    cx, cy, cw, ch = expand_box(box, policy.margin, policy.square)
    sx, sy = size / cw, size / ch  # output pixels per source pixel
    H, W = rgb.shape[:2]

    # 1) the axis-aligned source region that covers the (possibly rotated) crop, padded by 2 px
    rad = math.radians(angle)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    half_w = (cw * cos + ch * sin) / 2.0 + 2.0
    half_h = (cw * sin + ch * cos) / 2.0 + 2.0
    x0, x1 = int(math.floor(cx - half_w)), int(math.ceil(cx + half_w))
    y0, y1 = int(math.floor(cy - half_h)), int(math.ceil(cy + half_h))
    region = rgb[max(y0, 0):min(y1, H), max(x0, 0):min(x1, W)]
    pad = (max(0, -y0), max(0, y1 - H), max(0, -x0), max(0, x1 - W))
    if region.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    if any(pad):
        region = cv2.copyMakeBorder(region, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    ocx, ocy = cx - x0, cy - y0  # crop centre inside the region

    # 2) shrink big regions with area averaging so the final warp only resamples near scale 1
    pre = min(sx, sy)
    if pre < 1.0:
        rh, rw = region.shape[:2]
        nw, nh = max(1, round(rw * pre)), max(1, round(rh * pre))
        region = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / rw, nh / rh
        ocx, ocy, sx, sy = ocx * fx, ocy * fy, sx / fx, sy / fy

    # 3) rotate about the crop centre and scale into the output square
    # dst = S R(-angle) (src - c) + (size/2): levels the eyes.
    c, s = math.cos(rad), math.sin(rad)
    m = np.array([[sx * c, sx * s, 0.0], [-sy * s, sy * c, 0.0]], dtype=np.float64)
    m[:, 2] = np.array([size / 2.0, size / 2.0]) - m[:, :2] @ np.array([ocx, ocy])
    # pixel-centre convention: OpenCV maps pixel centres at integer coordinates
    m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
