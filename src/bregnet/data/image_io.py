"""Robust image decoding and face cropping, shared by the readers, the cache and inference.

* :func:`read_image` decodes a file to RGB uint8 ``(H, W, 3)`` whatever it holds: grayscale,
  grayscale + alpha, RGB, RGBA (alpha dropped, as ``PIL.Image.convert("RGB")`` does), 16-bit
  (scaled to 8 bits with rounding), float images (clipped to [0, 1]). The content decides the format,
  not the extension (AffectNet has PNGs named ``.jpg``). EXIF orientation is **not** applied by
  default, because data set annotations (face boxes) refer to the stored pixel grid; pass
  ``apply_exif=True`` for photos from a camera. Anything that cannot be decoded, and a JPEG cut
  short (no end-of-image marker after its last scan), raises :class:`~bregnet.errors.DataError`
  naming the path.
* :func:`crop_face` turns a face box into a ``size x size`` crop: optional square box around the
  centre (longest side), a margin as a fraction of the side on every side, then the box is clamped
  to the image (or padded, ``border="constant"|"replicate"``), and resized with ``cv2.INTER_AREA``
  when shrinking and ``cv2.INTER_LINEAR`` when enlarging. It follows
  :class:`bregnet.preprocess.CropPolicy` (margin, square), so inference crops the way training did.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "clamp_box",
    "crop_face",
    "decode_image",
    "expand_box",
    "read_image",
    "resize_image",
    "to_rgb_uint8",
]

#: File name suffixes treated as images when listing folders (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm",
                    ".ppm", ".pbm", ".pnm", ".jp2")

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


def to_rgb_uint8(image: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """Any decoded array -> contiguous RGB uint8 ``(H, W, 3)``.

    ``image`` may be ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)`` (gray + alpha), ``(H, W, 3)`` or
    ``(H, W, 4)`` (alpha dropped); uint8, uint16 (rounded ``v * 255 / 65535``), other integer types
    (clipped to 0..255), bool, or float (taken as [0, 1], clipped). ``channel_order`` is the order of
    the colour channels given (``"RGB"`` or ``"BGR"``, as OpenCV decodes).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"not an image array: shape {arr.shape}")
    # depth
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}")
    # channels
    c = arr.shape[2]
    if c in (1, 2):
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    else:
        arr = arr[:, :, :3]
        if channel_order.upper() == "BGR":
            arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def _jpeg_truncated(data: bytes) -> bool:
    """True for a JPEG whose last scan is not followed by an end-of-image marker."""
    if not data.startswith(_JPEG_SOI):
        return False
    last_sos = data.rfind(_JPEG_SOS)
    if last_sos < 0:
        return True
    # inside entropy-coded data 0xFF is always stuffed (FF00) or a restart marker, so an EOI after
    # the last SOS can only be the real end of the image
    return data.find(_JPEG_EOI, last_sos) < 0


def _decode_with_pil(data: bytes) -> np.ndarray | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode in ("I", "F"):
                arr = np.asarray(im)
                return np.clip(arr, 0, 255).astype(np.uint8) if im.mode == "I" else arr
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            return np.asarray(im)
    except Exception:  # noqa: BLE001 - any decoder failure means "not decodable"
        return None


def _exif_orientation(data: bytes) -> int:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001
        return 1


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return rgb if op is None else np.ascontiguousarray(op(rgb))


def decode_image(data: bytes, name: str = "<bytes>", apply_exif: bool = False) -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 ``(H, W, 3)``; DataError naming ``name`` if unusable."""
    if not data:
        raise DataError(f"{name}: empty image file")
    if _jpeg_truncated(data):
        raise DataError(f"{name}: truncated JPEG (no end-of-image marker)")
    buf = np.frombuffer(data, dtype=np.uint8)
    arr = None
    bgr = True
    try:
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    if arr is None or arr.size == 0:
        arr = _decode_with_pil(data)
        bgr = False
    if arr is None or arr.size == 0:
        raise DataError(f"{name}: cannot decode image (corrupt or unsupported format)")
    try:
        rgb = to_rgb_uint8(arr, "BGR" if bgr else "RGB")
    except ValueError as exc:
        raise DataError(f"{name}: cannot decode image ({exc})") from None
    if apply_exif:
        rgb = _apply_orientation(rgb, _exif_orientation(data))
    return rgb


def read_image(path: str | os.PathLike, apply_exif: bool = False) -> np.ndarray:
    """Read an image file to RGB uint8 ``(H, W, 3)``; DataError naming the path if unusable."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: image file not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, not an image") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read image ({exc.strerror or exc})") from None
    return decode_image(data, str(p), apply_exif=apply_exif)


def _fmt_box(box: Sequence[float]) -> str:
    try:
        return "(" + ", ".join(f"{float(v):g}" for v in box) + ")"
    except (TypeError, ValueError):
        return repr(box)


def expand_box(box: Sequence[float], margin: float = 0.0, square: bool = False) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` -> ``(x0, y0, x1, y1)`` after the square and margin policy (not clamped).

    ``square`` makes the box square around its centre with the longest side; ``margin`` adds this
    fraction of the side on every side (``w * (1 + 2 * margin)``). Negative margins shrink the box.
    """
    x, y, w, h = (float(v) for v in box)
    if not all(np.isfinite([x, y, w, h])):
        raise ValueError(f"face box {_fmt_box(box)} is not finite")
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


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` (int for square, or ``(width, height)``): INTER_AREA when the area shrinks,
    INTER_LINEAR when it grows; returned unchanged (as a contiguous array) when already that size."""
    out_w, out_h = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    h, w = image.shape[:2]
    if (w, h) == (out_w, out_h):
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if out_w * out_h < w * h else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(image), (out_w, out_h), interpolation=interp)
    if out.ndim == 2 and image.ndim == 3:
        out = out[:, :, None]
    return out


def crop_face(
    image: np.ndarray,
    box: Sequence[float] | None,
    margin: float = 0.0,
    square: bool = False,
    size: int | None = 64,
    border: str = "clamp",
) -> np.ndarray:
    """Crop the face ``box = (x, y, w, h)`` (pixels) out of ``image`` and resize it to ``size``.

    The box is made square (``square=True``) and enlarged by ``margin`` (:func:`expand_box`), then:
    ``border="clamp"`` (default) intersects it with the image (so a box at the border gives a
    smaller, possibly non-square crop); ``"constant"`` pads the outside with black and
    ``"replicate"`` with the edge pixels, which keeps the box's aspect ratio. ``box=None`` takes the
    whole image. ``size=None`` skips the resize. Raises :class:`ValueError` when the box is empty,
    not finite, or lies entirely outside the image (readers turn this into a DataError naming the
    line).
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"not an image array: shape {img.shape}")
    height, width = img.shape[:2]
    if box is None:
        crop = img
    else:
        if float(box[2]) <= 0 or float(box[3]) <= 0:
            raise ValueError(f"face box {_fmt_box(box)} has no area")
        corners = expand_box(box, margin, square)
        clamped = clamp_box(corners, width, height)
        if clamped is None:
            raise ValueError(f"face box {_fmt_box(box)} lies outside the {width}x{height} image")
        if border == "clamp":
            x0, y0, x1, y1 = clamped
            crop = img[y0:y1, x0:x1]
        elif border in ("constant", "replicate"):
            x0, y0, x1, y1 = (_round_half_up(v) for v in corners)
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"face box {_fmt_box(box)} has no area")
            cx0, cy0, cx1, cy1 = clamped
            crop = np.ascontiguousarray(img[cy0:cy1, cx0:cx1])
            pads = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
            if any(pads):
                mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
                squeeze = crop.ndim == 3 and crop.shape[2] == 1
                crop = cv2.copyMakeBorder(crop, *pads, mode, value=0)
                if squeeze and crop.ndim == 2:
                    crop = crop[:, :, None]
        else:
            raise ValueError(f"border must be 'clamp', 'constant' or 'replicate', not {border!r}")
    if size is None:
        return np.ascontiguousarray(crop)
    return resize_image(crop, int(size))
