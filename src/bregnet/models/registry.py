"""Model name registry in timm's style: ``create_model(name, **overrides)`` and ``list_models()``."""

from __future__ import annotations

import os
from typing import Any, Callable

from .network import BregNet
from .shortcuts import SHORTCUTS

__all__ = ["create_model", "list_models", "model_info", "register_model"]

_REGISTRY: dict[str, Callable[..., BregNet]] = {}
_INFO: dict[str, str] = {}

# BReG-NeXt-50 as in the official code: 7@32, then 1+8@64, then 1+7@128 (24 units, 50 layers).
BREGNEXT50_STAGES = ((7, 32), (9, 64), (8, 128))
WIDTHS = (32, 64, 128)  # BReG-Net's widths are not recoverable; we use BReG-NeXt's (documented).
FAMILIES = {"resnet": "identity", "bregnet": "arctan", "bregnext": "adaptive"}


def register_model(name: str, description: str) -> Callable:
    """Decorator adding a builder ``fn(**kwargs) -> BregNet`` to the registry under ``name``."""

    def wrap(fn: Callable[..., BregNet]) -> Callable[..., BregNet]:
        _REGISTRY[name] = fn
        _INFO[name] = description
        return fn

    return wrap


def _cifar_stages(depth: int) -> tuple[tuple[int, int], ...]:
    """The 6n+2 template: three stages of n units at widths 32/64/128."""
    n = (depth - 2) // 6
    return tuple((n, w) for w in WIDTHS)


def _make_builder(family: str, depth: int) -> Callable[..., BregNet]:
    def build(**kwargs: Any) -> BregNet:
        kwargs.setdefault("shortcut", FAMILIES[family])
        kwargs.setdefault("stages", _cifar_stages(depth))
        return BregNet(**kwargs)

    build.__name__ = f"{family}{depth}"
    return build


for _family, _shortcut in FAMILIES.items():
    for _depth in (32, 56, 110):
        register_model(
            f"{_family}{_depth}",
            f"{_depth}-layer 6n+2 network (n={(_depth - 2) // 6}), widths 32/64/128, "
            f"{_shortcut} shortcut",
        )(_make_builder(_family, _depth))


@register_model("bregnext50", "official BReG-NeXt-50 layout (7@32, 9@64, 8@128), adaptive shortcut")
def bregnext50(**kwargs: Any) -> BregNet:
    kwargs.setdefault("shortcut", "adaptive")
    kwargs.setdefault("stages", BREGNEXT50_STAGES)
    return BregNet(**kwargs)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def model_info(name: str) -> str:
    """One-line description of a registered model."""
    return _INFO[name]


def create_model(
    name: str,
    num_classes: int | None = None,
    shortcut: str | None = None,
    va: bool | None = None,
    pretrained: str | os.PathLike | None = None,
    **overrides: Any,
) -> BregNet:
    """Build a registered network.

    ``shortcut`` overrides the family's mapping (identity | arctan | tanh | softsign | adaptive);
    ``va=True`` adds the valence/arousal head; ``num_classes=0`` with ``va=True`` is dimensional only
    (defaults: 8 classes, no va head). ``pretrained`` (a weights name such as
    ``"bregnext50.affectnet"``, or a checkpoint path) loads those weights, whose arguments then
    apply (any given here must agree); nothing is downloaded (``bregnet weights download``).
    """
    if pretrained is not None:
        from ..weights import load_pretrained

        return load_pretrained(name, pretrained, num_classes=num_classes, shortcut=shortcut, va=va,
                               **overrides)
    num_classes = 8 if num_classes is None else num_classes
    va = bool(va)
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if shortcut is not None:
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
        overrides["shortcut"] = shortcut
    model = _REGISTRY[name](num_classes=num_classes, va=va, **overrides)
    model.model_name = name
    return model
