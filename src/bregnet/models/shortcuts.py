"""Shortcut mappings g(x) for residual units.

A plain ResNet adds the identity ``x`` to the residual branch. BReG-Net replaces it by an
element-wise function with a bounded derivative; BReG-NeXt makes that function trainable:

    g(x; a, c) = arctan(a x / sqrt(c^2 + 1)) / (a sqrt(c^2 + 1)),   0 < g'(x) <= 1 / (1 + c^2)

Every mapping is an ``nn.Module`` so a unit owns its own parameters (a, c for the adaptive one).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import _fused

__all__ = [
    "SHORTCUTS",
    "Shortcut",
    "AdaptiveArctanShortcut",
    "ArctanShortcut",
    "IdentityShortcut",
    "SoftsignShortcut",
    "TanhShortcut",
    "atan_ratio",
    "make_shortcut",
]

# Below this |u * x| the Taylor series of arctan(u x) / u is used: its truncation error
# (u x)^6 / 7 is then < 2e-13, far under float32 resolution, and it avoids the cancellation
# that makes d/du [arctan(u x) / u] inaccurate for small u.
_SERIES_LIMIT_SQ = 1e-4
# Scalar floor for the divisor so that u == 0 never divides by zero.
_TINY = 1e-20


def atan_ratio(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return ``arctan(u * x) / u`` element-wise, continuous at ``u = 0`` (where it equals ``x``).

    ``u`` is a scalar tensor (a trainable parameter); gradients for ``u`` and ``x`` stay finite
    and accurate for every ``u``, including exactly zero.
    """
    z = u * x
    z2 = z * z
    series = x * (1.0 - z2 * (1.0 / 3.0 - z2 * 0.2))
    u_safe = torch.where(u.abs() < _TINY, torch.ones_like(u), u)
    exact = torch.atan(z) / u_safe
    return torch.where(z2 < _SERIES_LIMIT_SQ, series, exact)


class Shortcut(nn.Module):
    """Base of the shortcut mappings: ``forward(x)`` is g(x), ``residual(r, x)`` the unit's
    output r + g(x), which a mapping may compute in one fused pass."""

    def residual(self, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The residual unit's output ``r + g(x)``."""
        return r + self(x)


class IdentityShortcut(Shortcut):
    """g(x) = x: the plain ResNet shortcut (derivative 1, unbounded gradient path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ArctanShortcut(Shortcut):
    """g(x) = arctan(x): BReG-Net's fixed bounded shortcut, g'(x) = 1 / (1 + x^2) in (0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(x)


class TanhShortcut(Shortcut):
    """g(x) = tanh(x), g'(x) = 1 - tanh(x)^2 in (0, 1]; a documented alternative to arctan."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


class SoftsignShortcut(Shortcut):
    """g(x) = x / (1 + |x|), g'(x) = 1 / (1 + |x|)^2 in (0, 1]; a documented alternative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1.0 + x.abs())


def _adaptive_scalars(a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, s2) with s2 = 1 + c^2 and u = a / sqrt(s2), u kept away from exactly zero."""
    s2 = 1.0 + c * c
    u = a * torch.rsqrt(s2)
    u = torch.where(u.abs() < _TINY, torch.full_like(u, _TINY), u)
    return u, s2


def _fused_forward(x: torch.Tensor, u: torch.Tensor, s2: torch.Tensor, r: torch.Tensor | None
                   ) -> tuple[torch.Tensor | None, torch.memory_format | None]:
    """``r + g(x)`` (``g(x)`` when ``r`` is None) through the fused kernels, with the memory
    format they ran in; ``(None, None)`` where they do not apply (then the caller runs eagerly)."""
    if not _fused.usable(x, *(() if r is None else (r,))):
        return None, None
    fmt = _fused.layout(x)
    if fmt is None:
        return None, None
    xf = _fused.flat(x, fmt)
    out = (_fused.fused_call("map", xf, u, s2) if r is None
           else _fused.fused_call("add", xf, _fused.flat(r, fmt), u, s2))
    return (None, None) if out is None else (_fused.unflat(out, x, fmt), fmt)


class _AdaptiveArctanFn(torch.autograd.Function):
    """g(x) = arctan(u x) / (u s2), or the unit output r + g(x) when ``r`` is given, with
    hand-written, cancellation-free gradients (:func:`bregnet.models._fused.grad_math`).

    Large float32 / bfloat16 / float16 tensors go through the fused kernels of
    :mod:`bregnet.models._fused` (one pass forward, one backward, arctan recomputed in the
    backward instead of stored); everything else runs the same formulas eagerly (about 19
    element-wise passes instead of ~70 for autograd through :func:`atan_ratio`), storing arctan.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, u: torch.Tensor, s2: torch.Tensor,  # type: ignore[override]
                r: torch.Tensor | None = None) -> torch.Tensor:
        out, ctx.fmt = _fused_forward(x, u, s2, r)
        if out is None:
            t = torch.atan(x.to(u.dtype) * u)
            k = 1.0 / (u * s2)
            if r is None:
                out = (t * k).to(x.dtype)
            else:
                out = torch.addcmul(r, t, k).to(torch.promote_types(r.dtype, x.dtype))
            ctx.save_for_backward(x, u, s2, t)
        else:
            ctx.save_for_backward(x, u, s2)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, u, s2, *stored = ctx.saved_tensors
        grad_r = grad if len(ctx.needs_input_grad) > 3 and ctx.needs_input_grad[3] else None
        result = None
        fmt = ctx.fmt
        if fmt is not None and grad.dtype == x.dtype:
            result = _fused.fused_call("grad", _fused.flat(grad, fmt), _fused.flat(x, fmt), u, s2)
            if result is not None:
                result = (_fused.unflat(result[0], x, fmt), result[1], result[2])
        if result is None:
            result = _fused.grad_math(grad, x, u, s2, stored[0] if stored else None)
        grad_x, grad_u, grad_s2 = result
        return (grad_x if ctx.needs_input_grad[0] else None,
                grad_u if ctx.needs_input_grad[1] else None,
                grad_s2 if ctx.needs_input_grad[2] else None, grad_r)


class AdaptiveArctanShortcut(Shortcut):
    """BReG-NeXt's adaptive complex mapping with trainable scalars ``a`` and ``c`` (both init 1).

    g(x) = arctan(a x / s) / (a s) with s = sqrt(1 + c^2); equivalently atan_ratio(a / s, x) / s^2.
    g'(x) = 1 / (1 + c^2 + a^2 x^2), at most :meth:`slope_bound`. a = 1, c = 0 gives arctan;
    a, c -> 0 gives the identity. Training uses a custom autograd function (exact, cheap
    gradients, fused kernels for large inputs); inference uses the fused kernels or plain tensor
    operations; tracing and export (ONNX) see the plain formula.
    """

    def __init__(self, a: float = 1.0, c: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._map(x, None)

    def residual(self, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``r + g(x)`` in one fused pass where the kernels apply."""
        return self._map(x, r)

    def _map(self, x: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        # Scalars in at least float32: bfloat16 activations (CPU autocast) keep exact a and c.
        dtype = torch.promote_types(x.dtype, self.a.dtype)
        u, s2 = _adaptive_scalars(self.a.to(dtype), self.c.to(dtype))
        plain = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or self.a.requires_grad or self.c.requires_grad
            or (r is not None and r.requires_grad))
        if needs_grad and not plain:
            return _AdaptiveArctanFn.apply(x, u, s2, r)
        if not plain:
            out, _ = _fused_forward(x, u, s2, r)
            if out is not None:
                return out
        g = torch.atan(x * u.to(x.dtype)) * (1.0 / (u * s2)).to(x.dtype)  # the plain formula
        return g if r is None else r + g

    def slope_bound(self) -> float:
        """Current upper bound 1 / (1 + c^2) of g'(x)."""
        return 1.0 / (1.0 + float(self.c.detach()) ** 2)

    def extra_repr(self) -> str:
        return f"a={float(self.a.detach()):.4g}, c={float(self.c.detach()):.4g}"


SHORTCUTS: dict[str, Callable[[], Shortcut]] = {
    "identity": IdentityShortcut,
    "arctan": ArctanShortcut,
    "tanh": TanhShortcut,
    "softsign": SoftsignShortcut,
    "adaptive": AdaptiveArctanShortcut,
}


def make_shortcut(name: str) -> Shortcut:
    """Build a fresh shortcut mapping by name (identity | arctan | tanh | softsign | adaptive)."""
    try:
        return SHORTCUTS[name]()
    except KeyError:
        raise ValueError(
            f"unknown shortcut {name!r}; choose one of {', '.join(SHORTCUTS)}"
        ) from None


