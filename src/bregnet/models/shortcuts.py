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

__all__ = [
    "SHORTCUTS",
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


class IdentityShortcut(nn.Module):
    """g(x) = x: the plain ResNet shortcut (derivative 1, unbounded gradient path)."""

    derivative_bound: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ArctanShortcut(nn.Module):
    """g(x) = arctan(x): BReG-Net's fixed bounded shortcut, g'(x) = 1 / (1 + x^2) in (0, 1]."""

    derivative_bound: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(x)


class TanhShortcut(nn.Module):
    """g(x) = tanh(x), g'(x) = 1 - tanh(x)^2 in (0, 1]; a documented alternative to arctan."""

    derivative_bound: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


class SoftsignShortcut(nn.Module):
    """g(x) = x / (1 + |x|), g'(x) = 1 / (1 + |x|)^2 in (0, 1]; a documented alternative."""

    derivative_bound: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1.0 + x.abs())


def _adaptive_scalars(a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, s2) with s2 = 1 + c^2 and u = a / sqrt(s2), u kept away from exactly zero."""
    s2 = 1.0 + c * c
    u = a * torch.rsqrt(s2)
    u = torch.where(u.abs() < _TINY, torch.full_like(u, _TINY), u)
    return u, s2


class _AdaptiveArctanFn(torch.autograd.Function):
    """g(x) = arctan(u x) / (u s2) with hand-written, cancellation-free gradients.

    With z = u x and t = arctan z:  dg/dx = 1 / (s2 (1 + z^2)),
    dg/du = r(z) / (u^2 s2) with r(z) = z / (1 + z^2) - t, evaluated by its Taylor series
    -2z^3/3 + 4z^5/5 - 6z^7/7 where |z| < 0.1 (the direct difference loses digits there), and
    dg/ds2 = -g / s2. About 19 element-wise passes instead of ~70 for autograd through
    :func:`atan_ratio`, which matters on CPUs.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, u: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = torch.atan(x * u)
        ctx.save_for_backward(x, t, u, s2)
        return t * (1.0 / (u * s2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, t, u, s2 = ctx.saved_tensors
        z = x * u
        z2 = z * z
        inv = torch.reciprocal(z2 + 1.0)
        grad_x = grad * inv * (1.0 / s2) if ctx.needs_input_grad[0] else None
        grad_u = grad_s2 = None
        g = grad.reshape(-1)
        if ctx.needs_input_grad[1]:
            series = z * z2 * (z2 * (0.8 - z2 * (6.0 / 7.0)) - 2.0 / 3.0)
            r = torch.where(z2 < 1e-2, series, z * inv - t)
            grad_u = torch.dot(g, r.reshape(-1)) / (u * u * s2)
        if ctx.needs_input_grad[2]:
            grad_s2 = -torch.dot(g, t.reshape(-1)) / (u * s2 * s2)
        return grad_x, grad_u, grad_s2


class AdaptiveArctanShortcut(nn.Module):
    """BReG-NeXt's adaptive complex mapping with trainable scalars ``a`` and ``c`` (both init 1).

    g(x) = arctan(a x / s) / (a s) with s = sqrt(1 + c^2); equivalently atan_ratio(a / s, x) / s^2.
    g'(x) = 1 / (1 + c^2 + a^2 x^2). a = 1, c = 0 gives arctan; a, c -> 0 gives the identity.
    Training uses a custom autograd function (exact, cheap gradients); inference, tracing and
    export use plain tensor operations.
    """

    derivative_bound: float = 1.0

    def __init__(self, a: float = 1.0, c: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, s2 = _adaptive_scalars(self.a.to(x.dtype), self.c.to(x.dtype))
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.a.requires_grad or self.c.requires_grad)
        if needs_grad and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            return _AdaptiveArctanFn.apply(x, u, s2)
        return torch.atan(x * u) * (1.0 / (u * s2))

    def slope_bound(self) -> float:
        """Current upper bound 1 / (1 + c^2) of g'(x)."""
        return 1.0 / (1.0 + float(self.c.detach()) ** 2)

    def extra_repr(self) -> str:
        return f"a={float(self.a.detach()):.4g}, c={float(self.c.detach()):.4g}"


SHORTCUTS: dict[str, Callable[[], nn.Module]] = {
    "identity": IdentityShortcut,
    "arctan": ArctanShortcut,
    "tanh": TanhShortcut,
    "softsign": SoftsignShortcut,
    "adaptive": AdaptiveArctanShortcut,
}


def make_shortcut(name: str) -> nn.Module:
    """Build a fresh shortcut mapping by name (identity | arctan | tanh | softsign | adaptive)."""
    try:
        return SHORTCUTS[name]()
    except KeyError:
        raise ValueError(
            f"unknown shortcut {name!r}; choose one of {', '.join(SHORTCUTS)}"
        ) from None


