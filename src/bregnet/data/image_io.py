"""Robust image decoding, shared by the readers, the cache and inference.

* :func:`read_image` decodes a file to RGB uint8 ``(H, W, 3)`` whatever it holds: grayscale,
  grayscale + alpha, RGB, RGBA (alpha dropped, as ``PIL.Image.convert("RGB")`` does), 16-bit
  (scaled to 8 bits with rounding), float images (clipped to [0, 1]). The content decides the format,
  not the extension (AffectNet has PNGs named ``.jpg``). EXIF orientation is **not** applied by
  default, because data set annotations (face boxes) refer to the stored pixel grid; pass
  ``apply_exif=True`` for photos from a camera. Anything that cannot be decoded, and a JPEG cut
  short (no end-of-image marker after its last scan), raises :class:`~bregnet.errors.DataError`
  naming the path.
* Hostile files are refused before they cost memory: a path that is not a regular file (a FIFO,
  ``/dev/zero``) or a file over ``BREGNET_MAX_IMAGE_BYTES`` is never read, and the pixel count an
  image announces in its header is checked against ``BREGNET_MAX_IMAGE_PIXELS`` (50 MP by
  default, :mod:`bregnet.limits`) *before* it is decoded: :class:`~bregnet.errors.LimitError`.

Face crops are :func:`bregnet.crop.crop_face`.
"""

from __future__ import annotations

import io
import os
import warnings

import cv2
import numpy as np

from ..errors import DataError, UsageError
from ..fileio import check_input_file
from ..limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

__all__ = [
    "IMAGE_EXTENSIONS",
    "decode_image",
    "image_header_size",
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
        raise UsageError(f"not an image array: shape {arr.shape}")
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
        raise UsageError(f"unsupported image dtype {arr.dtype}")
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


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` an encoded image announces in its header, read without decoding the
    pixels (PIL's lazy open); None when PIL does not know the format."""
    from PIL import Image

    def size() -> tuple[int, int]:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])

    try:
        return size()
    except Image.DecompressionBombError:
        # PIL's own guard, lower than a limit the user raised: the real check is ours
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return size()
        except Exception:  # noqa: BLE001 - unreadable header: not identified
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    except Exception:  # noqa: BLE001 - any failure to read a header means "not identified"
        return None


def _check_pixels(data: bytes, name: str) -> None:
    """LimitError when the header announces more pixels than ``BREGNET_MAX_IMAGE_PIXELS``."""
    size = image_header_size(data)
    if size is not None:
        w, h = size
        MAX_IMAGE_PIXELS.check(w * h, f"{name}: image of {w} x {h}")


def _decode_with_pil(data: bytes) -> np.ndarray | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked before
            im = Image.open(io.BytesIO(data))
        with im:
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
    """Decode encoded image bytes to RGB uint8 ``(H, W, 3)``; DataError naming ``name`` if
    unusable, LimitError (before decoding) when its header announces too many pixels."""
    if not data:
        raise DataError(f"{name}: empty image file")
    if _jpeg_truncated(data):
        raise DataError(f"{name}: truncated JPEG (no end-of-image marker)")
    _check_pixels(data, name)
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
    MAX_IMAGE_PIXELS.check(int(arr.shape[0]) * int(arr.shape[1]),
                           f"{name}: image of {arr.shape[1]} x {arr.shape[0]}")
    try:
        rgb = to_rgb_uint8(arr, "BGR" if bgr else "RGB")
    except UsageError as exc:
        raise DataError(f"{name}: cannot decode image ({exc})") from None
    if apply_exif:
        rgb = _apply_orientation(rgb, _exif_orientation(data))
    return rgb


def read_image(path: str | os.PathLike, apply_exif: bool = False) -> np.ndarray:
    """Read an image file to RGB uint8 ``(H, W, 3)``: DataError naming the path if it is missing,
    not a regular file or not decodable; LimitError if the file or its pixel count is too large."""
    p = check_input_file(path, "image file", max_bytes=MAX_IMAGE_BYTES)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read image ({exc.strerror or exc})") from None
    return decode_image(data, str(p), apply_exif=apply_exif)


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
