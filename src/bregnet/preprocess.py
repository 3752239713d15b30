"""The input contract: how a face crop becomes a network input, stored with every checkpoint.

Official BReG-NeXt preprocessing: 64x64 RGB, ``x / 255`` then the per-channel means subtracted
(no division by a standard deviation). A checkpoint may carry other values; readers of the
checkpoint always use :class:`Preprocess` from its metadata rather than these defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["PAPER_MEAN", "CropPolicy", "Preprocess"]

PAPER_MEAN: tuple[float, float, float] = (0.5727663, 0.44812188, 0.39362228)


@dataclass(frozen=True)
class CropPolicy:
    """How a face box becomes the square crop the model saw in training.

    ``margin`` enlarges the box by this fraction of its side on every side; ``square`` makes the
    box square around its centre (longest side); ``align`` rotates so that the eyes are level when
    eye landmarks are known.
    """

    margin: float = 0.1
    square: bool = True
    align: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CropPolicy":
        d = dict(d or {})
        return cls(**{k: d[k] for k in ("margin", "square", "align") if k in d})


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
