"""Model name registry in timm's style: ``create_model(name, **overrides)`` and ``list_models()``.

:data:`FAMILIES` maps each family name to its shortcut mapping (``resnet`` -> identity, ``bregnet``
-> arctan, ``bregnext`` -> adaptive): the one table the registry's names and the ablation use.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from ..errors import UsageError
from .network import BregNet
from .shortcuts import SHORTCUTS

__all__ = ["CUSTOM_SUFFIX", "FAMILIES", "create_model", "describing_name", "list_models", "model_info",
           "register_model"]

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


# Each registered name's family and default layout; a model built under a name with another
# layout is named ``{family}_custom`` (see :func:`create_model`), so that a checkpoint's model name
# always says what its network is.
_FAMILY_OF: dict[str, str] = {}
_LAYOUT_OF: dict[str, dict[str, Any]] = {}
CUSTOM_SUFFIX = "_custom"
_LAYOUT_KEYS = ("stages", "stem_width", "stem_stride")


def _layout(stages: Any, stem_width: int = 32, stem_stride: int = 1) -> dict[str, Any]:
    return {"stages": [list(map(int, s)) for s in stages], "stem_width": int(stem_width),
            "stem_stride": int(stem_stride)}


def _make_builder(family: str, depth: int) -> Callable[..., BregNet]:
    def build(**kwargs: Any) -> BregNet:
        kwargs.setdefault("shortcut", FAMILIES[family])
        kwargs.setdefault("stages", _cifar_stages(depth))
        return BregNet(**kwargs)

    build.__name__ = f"{family}{depth}"
    return build


def _make_custom_builder(family: str) -> Callable[..., BregNet]:
    def build(**kwargs: Any) -> BregNet:
        if "stages" not in kwargs:
            raise UsageError(f"{family}{CUSTOM_SUFFIX} needs stages, e.g. stages=[[1, 16], [1, 32], [1, 64]]")
        kwargs.setdefault("shortcut", FAMILIES[family])
        return BregNet(**kwargs)

    build.__name__ = f"{family}{CUSTOM_SUFFIX}"
    return build


for _family, _shortcut in FAMILIES.items():
    for _depth in (32, 56, 110):
        _name = f"{_family}{_depth}"
        register_model(
            _name,
            f"{_depth}-layer 6n+2 network (n={(_depth - 2) // 6}), widths 32/64/128, "
            f"{_shortcut} shortcut",
        )(_make_builder(_family, _depth))
        _FAMILY_OF[_name] = _family
        _LAYOUT_OF[_name] = _layout(_cifar_stages(_depth))
    register_model(
        f"{_family}{CUSTOM_SUFFIX}",
        f"any layout given by its stages (and stem_width, stem_stride) arguments, {_shortcut} shortcut",
    )(_make_custom_builder(_family))
    _FAMILY_OF[f"{_family}{CUSTOM_SUFFIX}"] = _family


@register_model("bregnext50", "official BReG-NeXt-50 layout (7@32, 9@64, 8@128), adaptive shortcut")
def bregnext50(**kwargs: Any) -> BregNet:
    kwargs.setdefault("shortcut", "adaptive")
    kwargs.setdefault("stages", BREGNEXT50_STAGES)
    return BregNet(**kwargs)


_FAMILY_OF["bregnext50"] = "bregnext"
_LAYOUT_OF["bregnext50"] = _layout(BREGNEXT50_STAGES)


def describing_name(name: str, model: BregNet) -> str:
    """The registry name that describes ``model`` built under ``name``.

    The family follows the model's shortcut where one family has it (identity: ``resnet``,
    arctan: ``bregnet``, adaptive: ``bregnext``), and the depth part stays only when the network
    has a registered layout (stages and stem) of that family; otherwise the name is
    ``{family}_custom``. So ``bregnext32`` with two-unit stages is a ``bregnext_custom`` and
    ``resnet32`` with the adaptive shortcut is a ``bregnext32``. Names outside the built-in
    families are kept.
    """
    family = _FAMILY_OF.get(name)
    if family is None:
        return name
    by_shortcut = {v: k for k, v in FAMILIES.items()}
    family = by_shortcut.get(model.config.get("shortcut"), family)
    actual = {k: model.config[k] for k in _LAYOUT_KEYS}
    for candidate, layout in _LAYOUT_OF.items():  # a registered name of that family and layout
        if layout == actual and _FAMILY_OF[candidate] == family:
            return candidate
    return f"{family}{CUSTOM_SUFFIX}"


_NETWORK_ARGS = {k for k in inspect.signature(BregNet.__init__).parameters if k != "self"}


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
    An unknown name or argument, or one out of range, is a :class:`~bregnet.errors.UsageError`;
    a network over the size limits a :class:`~bregnet.errors.LimitError`, raised before any
    tensor is allocated.
    The model's ``model_name`` is :func:`describing_name`: ``name``, or ``{family}_custom`` when
    ``overrides`` change the layout, so that the name and ``model.config`` always rebuild it.
    """
    if pretrained is not None:
        from ..weights import load_pretrained

        return load_pretrained(name, pretrained, num_classes=num_classes, shortcut=shortcut, va=va,
                               **overrides)
    num_classes = 8 if num_classes is None else num_classes
    va = bool(va)
    if not isinstance(name, str) or name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if shortcut is not None:
        if not isinstance(shortcut, str) or shortcut not in SHORTCUTS:
            raise UsageError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
        overrides["shortcut"] = shortcut
    unknown = sorted(set(overrides) - _NETWORK_ARGS)
    if unknown:
        raise UsageError(f"model {name!r} has no argument {unknown[0]!r}; valid: "
                         f"{', '.join(sorted(_NETWORK_ARGS - {'num_classes', 'va'}))}")
    model = _REGISTRY[name](num_classes=num_classes, va=va, **overrides)
    model.model_name = describing_name(name, model)
    return model
