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


class AdaptiveArctanShortcut(nn.Module):
    """BReG-NeXt's adaptive complex mapping with trainable scalars ``a`` and ``c`` (both init 1).

    g(x) = arctan(a x / s) / (a s) with s = sqrt(1 + c^2); equivalently atan_ratio(a / s, x) / s^2.
    g'(x) = 1 / (1 + c^2 + a^2 x^2). a = 1, c = 0 gives arctan; a, c -> 0 gives the identity.
    """

    derivative_bound: float = 1.0

    def __init__(self, a: float = 1.0, c: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s2 = 1.0 + self.c * self.c
        u = self.a * torch.rsqrt(s2)
        return atan_ratio(u.to(x.dtype), x) / s2.to(x.dtype)

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


