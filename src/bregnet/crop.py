"""Face crops: how a face box becomes the model's input, one implementation for every caller.

The readers (AffectNet's and the CSV list's face boxes), the prepared cache that stores their
crops and the predictor (detector boxes) all call :func:`crop_face` with a
:class:`~bregnet.preprocess.CropPolicy`, so a model sees at inference exactly the crop it was
trained on:

1. the box ``(x, y, w, h)`` is made square around its centre with the longest side when
   ``policy.square``, then enlarged by ``policy.margin`` times its side on every side
   (:func:`expand_box`);
2. without rotation the box is rounded to whole pixels (half up) and the part outside the image
   is cut off (``border="clamp"``: a box at the border gives a smaller crop) or filled, black
   (``"constant"``) or with the edge pixels (``"replicate"``), which keeps the box's shape;
   the result is resized with ``cv2.INTER_AREA`` when shrinking and ``cv2.INTER_LINEAR`` when
   enlarging;
3. with ``policy.align`` and eye landmarks, the crop is instead rotated about the box centre so
   that the eyes are level (large faces are first reduced with area averaging, then rotated and
   resampled bilinearly); pixels outside the image are black (edge pixels with ``"replicate"``).

Memory stays bounded by the image and the output whatever the box: a box far larger than the
image (a 60000 x 1 image taken whole as a square face) is resized before it is padded, never
padded at full size.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from .data.image_io import resize_image
from .errors import DataError
from .limits import MAX_CROP_SIDE, MAX_IMAGE_PIXELS
from .preprocess import CropPolicy

__all__ = ["clamp_box", "crop_face", "expand_box", "eye_angle"]

# A padded crop up to this many pixels is built exactly (pad, then resize); a larger one is
# resized first and padded at output size (the same picture up to the rounding of the seam).
_EXACT_PAD_PIXELS = 1 << 24


def _fmt_box(box: Sequence[float]) -> str:
    try:
        return "(" + ", ".join(f"{float(v):g}" for v in box) + ")"
    except (TypeError, ValueError):
        return repr(box)


def _box_values(box: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DataError(f"face box {_fmt_box(box)} is not four numbers (x, y, w, h)") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DataError(f"face box {_fmt_box(box)} is not finite")
    return x, y, w, h


def expand_box(box: Sequence[float], margin: float = 0.0, square: bool = False
               ) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` -> corners ``(x0, y0, x1, y1)`` after the square and margin policy (not
    clamped). ``square`` makes the box square around its centre with the longest side;
    ``margin`` adds this fraction of the side on every side (``w * (1 + 2 * margin)``)."""
    x, y, w, h = _box_values(box)
    cx, cy = x + w / 2.0, y + h / 2.0
    if square:
        w = h = max(w, h)
    w *= 1.0 + 2.0 * margin
    h *= 1.0 + 2.0 * margin
    return cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0


def _round_half_up(v: float) -> int:
    # not round(): banker's rounding would make a box's pixel size depend on its position
    return int(math.floor(v + 0.5))


def clamp_box(corners: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """Round ``(x0, y0, x1, y1)`` to pixels (half up) and clamp to the image; None if nothing is left."""
    x0, y0, x1, y1 = (_round_half_up(v) for v in corners)
    x0, x1 = max(0, x0), min(int(width), x1)
    y0, y1 = max(0, y0), min(int(height), y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


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


def _pad(image: np.ndarray, pads: tuple[int, int, int, int], border: str) -> np.ndarray:
    """``copyMakeBorder`` keeping a trailing channel axis of 1."""
    if not any(pads):
        return image
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    squeeze = image.ndim == 3 and image.shape[2] == 1
    out = cv2.copyMakeBorder(np.ascontiguousarray(image), *pads, mode, value=0)
    if squeeze and out.ndim == 2:
        out = out[:, :, None]
    return out


def _padded_crop(img: np.ndarray, box: tuple[int, int, int, int], visible: tuple[int, int, int, int],
                 size: int | None, border: str) -> np.ndarray:
    """The integer ``box`` (may extend outside the image) filled outside by ``border``."""
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = visible
    bw, bh = x1 - x0, y1 - y0
    part = img[cy0:cy1, cx0:cx1]
    if size is None or bw * bh <= _EXACT_PAD_PIXELS:
        if size is None:
            MAX_IMAGE_PIXELS.check(bw * bh, f"face crop {bw} x {bh}")
        crop = _pad(part, (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1), border)
        return crop if size is None else resize_image(crop, size)
    # A huge box: resize the visible part to its place in the output, then pad at output size.
    sx, sy = size / bw, size / bh
    ox0, ox1 = min(size - 1, round((cx0 - x0) * sx)), round((cx1 - x0) * sx)
    oy0, oy1 = min(size - 1, round((cy0 - y0) * sy)), round((cy1 - y0) * sy)
    ox1, oy1 = min(size, max(ox1, ox0 + 1)), min(size, max(oy1, oy0 + 1))
    small = resize_image(part, (ox1 - ox0, oy1 - oy0))
    return _pad(small, (oy0, size - oy1, ox0, size - ox1), border)


def _rotated_crop(rgb: np.ndarray, corners: tuple[float, float, float, float], size: int,
                  angle: float, border: str) -> np.ndarray:
    """The crop rotated by ``angle`` degrees about the box centre (eyes levelled)."""
    x0f, y0f, x1f, y1f = corners
    cx, cy = (x0f + x1f) / 2.0, (y0f + y1f) / 2.0
    cw, ch = max(x1f - x0f, 1.0), max(y1f - y0f, 1.0)
    sx, sy = size / cw, size / ch  # output pixels per source pixel
    H, W = rgb.shape[:2]

    # 1) the axis-aligned source region that covers the rotated crop, padded by 2 px
    rad = math.radians(angle)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    half_w = (cw * cos + ch * sin) / 2.0 + 2.0
    half_h = (cw * sin + ch * cos) / 2.0 + 2.0
    x0, x1 = int(math.floor(cx - half_w)), int(math.ceil(cx + half_w))
    y0, y1 = int(math.floor(cy - half_h)), int(math.ceil(cy + half_h))
    vx0, vy0, vx1, vy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if vx1 <= vx0 or vy1 <= vy0:
        return np.zeros((size, size, 3), np.uint8)
    region = rgb[vy0:vy1, vx0:vx1]
    # 2) shrink big regions with area averaging *before* padding (bounded memory), so the final
    #    warp only resamples near scale 1
    fx = fy = pre = min(sx, sy, 1.0)
    if pre < 1.0:
        rh, rw = region.shape[:2]
        nw, nh = max(1, round(rw * pre)), max(1, round(rh * pre))
        region = cv2.resize(np.ascontiguousarray(region), (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / rw, nh / rh  # pre, but for a sliver of the image never below one pixel
    # the outside is scaled by pre, so the padded region stays about 1.5 x size whatever the box
    pads = (round((vy0 - y0) * pre), round((y1 - vy1) * pre), round((vx0 - x0) * pre), round((x1 - vx1) * pre))
    region = _pad(region, pads, "replicate" if border == "replicate" else "constant")
    ocx = (cx - vx0) * fx + pads[2]  # crop centre inside the padded region
    ocy = (cy - vy0) * fy + pads[0]
    sx, sy = sx / fx, sy / fy

    # 3) rotate about the crop centre and scale into the output square:
    #    dst = S R(-angle) (src - c) + (size/2) levels the eyes.
    c, s = math.cos(rad), math.sin(rad)
    m = np.array([[sx * c, sx * s, 0.0], [-sy * s, sy * c, 0.0]], dtype=np.float64)
    m[:, 2] = np.array([size / 2.0, size / 2.0]) - m[:, :2] @ np.array([ocx, ocy])
    # pixel-centre convention: OpenCV maps pixel centres at integer coordinates
    m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode,
                          borderValue=(0, 0, 0))


def crop_face(image: np.ndarray, box: Sequence[float] | None, policy: CropPolicy | None = None,
              size: int | None = 64, landmarks: np.ndarray | None = None) -> np.ndarray:
    """Crop the face ``box = (x, y, w, h)`` (pixels) out of ``image`` following ``policy`` (see
    the module doc) and resize it to ``size x size`` (``size=None``: no resize, no rotation).

    ``box=None`` takes the whole image. ``landmarks`` (5, 2) in image order (the eye on the
    image's left first) level the eyes when ``policy.align`` is set. Raises
    :class:`~bregnet.errors.DataError` when the box is not four finite numbers, has no area or
    lies entirely outside the image (callers add where the box came from).
    """
    policy = policy or CropPolicy()
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise DataError(f"not an image: array of shape {img.shape}")
    if size is not None:
        size = int(size)
        if size < 1:
            raise DataError(f"crop size must be at least 1, got {size}")
        MAX_CROP_SIDE.check(size, "face crop side")
    height, width = img.shape[:2]
    if box is None:
        return np.ascontiguousarray(img) if size is None else resize_image(img, size)
    x, y, w, h = _box_values(box)
    if w <= 0 or h <= 0:
        raise DataError(f"face box {_fmt_box(box)} has no area")
    corners = expand_box((x, y, w, h), policy.margin, policy.square)
    clamped = clamp_box(corners, width, height)
    if clamped is None:
        raise DataError(f"face box {_fmt_box(box)} lies outside the {width}x{height} image")
    angle = eye_angle(landmarks) if policy.align and size is not None else 0.0
    if angle != 0.0 and img.ndim == 3 and img.shape[2] == 3:
        return _rotated_crop(img, corners, size, angle, policy.border)
    if policy.border == "clamp":
        x0, y0, x1, y1 = clamped
        crop = img[y0:y1, x0:x1]
        return np.ascontiguousarray(crop) if size is None else resize_image(crop, size)
    rounded = tuple(_round_half_up(v) for v in corners)
    if rounded[2] <= rounded[0] or rounded[3] <= rounded[1]:
        raise DataError(f"face box {_fmt_box(box)} has no area")
    return _padded_crop(img, rounded, clamped, size, policy.border)  # type: ignore[arg-type]
