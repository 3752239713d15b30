"""The input contract: how a face crop becomes a network input, stored with every checkpoint.

Official BReG-NeXt preprocessing: 64x64 RGB, ``x / 255`` then the per-channel means subtracted
(no division by a standard deviation). A checkpoint may carry other values; readers of the
checkpoint always use :class:`Preprocess` from its metadata rather than these defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:  # torch is imported where it is used: the ONNX Runtime path never loads it
    import torch

__all__ = ["BORDERS", "MARGIN_RANGE", "PAPER_MEAN", "CropPolicy", "Preprocess"]

PAPER_MEAN: tuple[float, float, float] = (0.5727663, 0.44812188, 0.39362228)
#: How pixels outside the image are handled (see :func:`bregnet.crop.crop_face`).
BORDERS = ("clamp", "constant", "replicate")
#: Accepted margins: below -0.45 the box all but vanishes, above 5 it is 11 times the face.
MARGIN_RANGE = (-0.45, 5.0)


@dataclass(frozen=True)
class CropPolicy:
    """How a face box becomes the square crop the model saw in training
    (applied by :func:`bregnet.crop.crop_face`).

    ``margin`` enlarges the box by this fraction of its side on every side; ``square`` makes the
    box square around its centre (longest side); ``align`` rotates so that the eyes are level when
    eye landmarks are known; ``border`` says what fills the part of the box outside the image:
    ``"constant"`` (black), ``"replicate"`` (edge pixels) or ``"clamp"`` (nothing: the box is cut
    to the image). Out-of-range values are a :class:`~bregnet.errors.UsageError`.
    """

    margin: float = 0.1
    square: bool = True
    align: bool = True
    border: str = "constant"

    def __post_init__(self) -> None:
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) \
                or not math.isfinite(self.margin):
            raise UsageError(f"crop margin must be a finite number, got {self.margin!r}")
        lo, hi = MARGIN_RANGE
        if not lo <= self.margin <= hi:
            raise UsageError(f"crop margin {self.margin:g} is out of range [{lo:g}, {hi:g}]")
        for key in ("square", "align"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                raise UsageError(f"crop {key} must be true or false, got {getattr(self, key)!r}")
        if self.border not in BORDERS:
            raise UsageError(f"crop border must be one of {', '.join(BORDERS)}, got {self.border!r}")
        object.__setattr__(self, "margin", float(self.margin))
        object.__setattr__(self, "square", bool(self.square))
        object.__setattr__(self, "align", bool(self.align))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CropPolicy":
        d = dict(d or {})
        return cls(**{k: d[k] for k in ("margin", "square", "align", "border") if k in d})


@dataclass(frozen=True)
class Preprocess:
    """Input size, colour order and normalisation ``(x * scale - mean) / std`` per channel."""

    input_size: int = 64
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = PAPER_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop: CropPolicy = field(default_factory=CropPolicy)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Preprocess":
        d = dict(d or {})
        kwargs: dict[str, Any] = {}
        for key in ("input_size", "color", "scale"):
            if key in d:
                kwargs[key] = d[key]
        for key in ("mean", "std"):
            if key in d:
                kwargs[key] = tuple(float(v) for v in d[key])
        kwargs["crop"] = CropPolicy.from_dict(d.get("crop"))
        return cls(**kwargs)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float batch (N, 3, H, W) in [0, 255] -> float32 network input."""
        import torch

        x = images.to(torch.float32) * self.scale
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        if all(s == 1.0 for s in self.std):
            return x - mean
        return (x - mean) / std

    def normalize_numpy(self, images_hwc: np.ndarray) -> np.ndarray:
        """uint8 batch (N, H, W, 3) -> float32 NCHW input, for ONNX Runtime and other numpy paths."""
        x = images_hwc.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
