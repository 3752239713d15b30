"""bregnet: facial affect computing with Bounded Residual Gradient Networks (BReG-Net, BReG-NeXt).

Nothing here downloads anything; heavy modules load lazily.
"""

from __future__ import annotations

import os
from typing import Any

# OpenCV's own decoder guard (read once, when cv2 loads): no larger than bregnet's default pixel
# limit, for the formats whose size bregnet cannot read from the header first (bregnet.limits).
_pixels = os.environ.get("BREGNET_MAX_IMAGE_PIXELS", "").strip().replace("_", "")
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", _pixels if _pixels.isdigit() else "50000000")

from ._version import __version__  # noqa: E402

__all__ = ["PAPER_MEAN", "Predictor", "Preprocess", "__version__", "create_model", "get_weights",
           "list_models", "list_weights", "load_checkpoint", "register_weights"]

_WEIGHTS_API = ("get_weights", "list_weights", "register_weights")


# Loaded on first use: ``import bregnet`` does not import torch (the ONNX Runtime inference path
# never needs it; importing torch alone takes about 2 s on a small machine).
_MODELS_API = ("create_model", "list_models")
_PREPROCESS_API = ("PAPER_MEAN", "Preprocess")


def __getattr__(name: str) -> Any:
    if name in _MODELS_API:
        from . import models

        return getattr(models, name)
    if name in _PREPROCESS_API:
        from . import preprocess

        return getattr(preprocess, name)
    if name == "Predictor":
        from .infer.predictor import Predictor

        return Predictor
    if name in _WEIGHTS_API:
        from . import weights

        return getattr(weights, name)
    if name == "load_checkpoint":
        from .engine.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'bregnet' has no attribute {name!r}")
