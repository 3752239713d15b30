"""bregnet: facial affect computing with Bounded Residual Gradient Networks (BReG-Net, BReG-NeXt).

Nothing here downloads anything; heavy modules load lazily.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .models import create_model, list_models
from .preprocess import PAPER_MEAN, Preprocess

__all__ = ["PAPER_MEAN", "Predictor", "Preprocess", "__version__", "create_model", "get_weights",
           "list_models", "list_weights", "load_checkpoint", "register_weights"]

_WEIGHTS_API = ("get_weights", "list_weights", "register_weights")


def __getattr__(name: str) -> Any:
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
