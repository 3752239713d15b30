"""Shortcut mappings, the residual unit, the network and the name registry."""

from .network import BregNet, BregUnit, estimate_parameters, split_outputs
from .registry import FAMILIES, create_model, list_models, model_info, register_model
from .shortcuts import SHORTCUTS, AdaptiveArctanShortcut, atan_ratio, make_shortcut

__all__ = [
    "FAMILIES",
    "SHORTCUTS",
    "AdaptiveArctanShortcut",
    "BregNet",
    "BregUnit",
    "atan_ratio",
    "create_model",
    "estimate_parameters",
    "list_models",
    "make_shortcut",
    "model_info",
    "register_model",
    "split_outputs",
]
