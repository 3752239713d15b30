"""Fused kernels for the adaptive shortcut: one pass over the unit's input forward, one backward.

Eager PyTorch evaluates the adaptive mapping g(x) = arctan(u x) / (u s2) and its gradients as a
chain of element-wise operations, each a full pass over the unit's input (1.77 M values per image
in bregnext50), and ``torch.atan`` alone is slow on the CPU build. ``torch.compile`` of just
these three small functions (not of the model) gives one vectorised loop each, C++ on the CPU and
Triton on a GPU:

* ``add``: the unit's output r + g(x) (the residual add fused in, so the forward moves no more
  memory than the identity shortcut's r + x);
* ``map``: g(x) alone (the strided units, which pool the shortcut afterwards);
* ``grad``: dg/dx and the two sums for the gradients of a and c, arctan recomputed rather than
  stored.

The same functions run eagerly when the kernels cannot be used: float64, tensors under
``MIN_NUMEL`` values (not worth the compilation), layouts other than contiguous or channels-last,
``BREGNET_FUSED=0`` in the environment, or when compilation is unavailable or fails (no C++
compiler, unsupported platform), which prints a one-line notice once per process.

Compilation happens on the first large call, once per process and dtype; inductor caches the
generated code on disk (``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temp folder),
so the first training step costs about 21 s the first time on a machine and 2.5-6 s in later
processes, against 1.2 s eagerly (2-core dev VM, torch 2.13 CPU; BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Callable

import torch

__all__ = ["MIN_NUMEL", "add_math", "atan", "eager", "fused_call", "fused_enabled", "fused_requested",
           "grad_math", "map_math", "set_fused"]

# Smallest tensor (values) for which the compiled kernels are used: single images at inference
# and the tiny test models stay on the eager path and never pay the compilation.
MIN_NUMEL = 1 << 18
_ENV = "BREGNET_FUSED"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Below |u x|^2 < this, d/du [arctan(u x) / u] uses its Taylor series (the direct difference
# z / (1 + z^2) - arctan z cancels there).
_SERIES_Z2 = 1e-2


# arctan on [0, 1] as s + s w P(w), w = s^2: P's coefficients (highest power first) are a
# near-minimax fit of the relative error (Lawson-weighted least squares in float64, rounded to
# float32): 1.7e-8 in exact arithmetic. With atan(s) = pi/2 - atan(1/s) above 1 and pi/2 split
# into a float32 head and tail, the compiled float32 evaluation is within 1.4 ulp of the correctly
# rounded arctan over the whole float range, 0.2-0.35 ulp on average (torch.atan, SLEEF's 1-ulp
# version: 0.83 ulp at most), measured on 64 M values of every exponent and densely around 1;
# it costs about a third of SLEEF's double-float evaluation.
_ATAN_P = (0.002922184532508254, -0.01637890562415123, 0.04323862865567207, -0.07555311918258667,
           0.10667887330055237, -0.14211654663085938, 0.19993862509727478, -0.3333315849304199)
_HALF_PI_HI = 1.5707963705062866  # float32(pi / 2)
_HALF_PI_LO = -4.371139006309477e-08  # pi / 2 - _HALF_PI_HI


def atan(z: torch.Tensor) -> torch.Tensor:
    """arctan: the polynomial above inside the compiled kernels, ``torch.atan`` eagerly (where
    the polynomial's dozen element-wise passes would cost more than it saves)."""
    if not torch.compiler.is_compiling():
        return torch.atan(z)
    # Signed throughout (arctan is odd, and so is s + s w P(w)): no abs / copysign pass, and
    # for |z| > 1 arctan z = +-pi/2 - arctan(1 / z). Bit-identical to evaluating on |z| and
    # copying the sign (negation commutes with rounding), except that -0.0 would come out as
    # +0.0 (s + s * (w * p) with w * p = -0.0), hence the last select; 11-16% faster than that
    # (a 4 M-value forward kernel: 1.87 -> 1.66 ms bfloat16, 1.59 -> 1.33 ms float32).
    inverted = z.abs() > 1.0
    s = torch.where(inverted, 1.0 / z, z)
    w = s * s
    p = torch.full_like(w, _ATAN_P[0])
    for coef in _ATAN_P[1:]:
        p = p * w + coef
    t = s + s * (w * p)
    negative = z < 0
    half_pi_lo = torch.where(negative, -_HALF_PI_LO, _HALF_PI_LO)
    half_pi_hi = torch.where(negative, -_HALF_PI_HI, _HALF_PI_HI)
    t = torch.where(inverted, (half_pi_lo - t) + half_pi_hi, t)
    return torch.where(z == 0, z, t)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum of a * b: one fused reduction when compiled, BLAS dot eagerly."""
    if torch.compiler.is_compiling():
        return (a * b).sum()
    return torch.dot(a.reshape(-1), b.reshape(-1))


def map_math(x: torch.Tensor, u: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """g(x) = arctan(u x) / (u s2), computed in ``u``'s dtype (float32 for bfloat16 inputs)."""
    t = atan(x.to(u.dtype) * u)
    return (t * (1.0 / (u * s2))).to(x.dtype)


def add_math(x: torch.Tensor, r: torch.Tensor, u: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """r + g(x), the residual unit's output, in one pass."""
    t = atan(x.to(u.dtype) * u)
    return torch.addcmul(r.to(u.dtype), t, 1.0 / (u * s2)).to(r.dtype)


def grad_math(grad: torch.Tensor, x: torch.Tensor, u: torch.Tensor, s2: torch.Tensor,
              t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dx, dL/du, dL/ds2) for g(x) = arctan(u x) / (u s2) given dL/dg = ``grad``.

    With z = u x and t = arctan z:  dg/dx = 1 / (s2 (1 + z^2)),  dg/du = r(z) / (u^2 s2) with
    r(z) = z / (1 + z^2) - t, which is evaluated by its Taylor series -2z^3/3 + 4z^5/5 - 6z^7/7
    where z^2 < 1e-2 (the direct difference loses digits there), and dg/ds2 = -t / (u s2^2).
    ``t`` may be passed when the forward stored it; otherwise it is recomputed.
    """
    g = grad.to(u.dtype)
    z = x.to(u.dtype) * u
    z2 = z * z
    inv = torch.reciprocal(z2 + 1.0)
    grad_x = (g * inv * (1.0 / s2)).to(x.dtype)
    if t is None:
        t = atan(z)
    else:
        t = t.to(u.dtype)
    series = z * z2 * (z2 * (0.8 - z2 * (6.0 / 7.0)) - 2.0 / 3.0)
    r = torch.where(z2 < _SERIES_Z2, series, z * inv - t)
    grad_u = _dot(g, r) / (u * u * s2)
    grad_s2 = -_dot(g, t) / (u * s2 * s2)
    return grad_x, grad_u, grad_s2


_MATH: dict[str, Callable] = {"map": map_math, "add": add_math, "grad": grad_math}


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kernels: dict[str, Callable] = {}
        self.enabled: bool | None = None  # None: not decided yet (read the environment)
        self.reason: str | None = None  # why the kernels were turned off

    def is_enabled(self) -> bool:
        if self.enabled is None:
            self.enabled = os.environ.get(_ENV, "1").strip().lower() not in ("0", "false", "off", "no")
            if not self.enabled:
                self.reason = f"{_ENV}=0"
        return self.enabled


_state = _State()


# Let the C++ compiler fuse a * b + c into one FMA instruction (inductor's default is off): the
# arctan polynomial's Horner steps then cost half, and round once instead of twice.
_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}


def _compile(fn: Callable) -> Callable:
    """The compiled kernel for ``fn`` (sizes are symbolic: one compilation serves every shape)."""
    return torch.compile(fn, dynamic=True, fullgraph=True, options=_OPTIONS)


def set_fused(enabled: bool | None) -> None:
    """Turn the fused kernels on or off for this process (``None``: back to the environment's
    ``BREGNET_FUSED``, default on). Benchmarks use it to compare the two paths."""
    with _state.lock:
        _state.enabled = enabled
        _state.reason = None if enabled is not False else "turned off"


_local = threading.local()


@contextlib.contextmanager
def eager():
    """In this block (in this thread) the adaptive shortcut runs the plain eager formulas and
    nothing is compiled. The predictor's PyTorch backend runs in it: compiling costs about 5 s per
    process (from inductor's cache; 20 s the first time), more than the fused forward saves on
    any clip shorter than a minute or two, and the fast inference path is ONNX Runtime anyway."""
    before = getattr(_local, "eager", False)
    _local.eager = True
    try:
        yield
    finally:
        _local.eager = before


def fused_requested() -> bool:
    """Whether ``BREGNET_FUSED=1`` asks for the fused kernels even where bregnet would not
    compile them by default (the predictor's PyTorch backend)."""
    return os.environ.get(_ENV, "").strip().lower() in ("1", "true", "on", "yes")


def fused_enabled() -> bool:
    """Whether the fused kernels are in use (not turned off and not failed)."""
    return _state.is_enabled()


def _disable(exc: BaseException) -> None:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    with _state.lock:
        if _state.enabled is False:
            return
        _state.enabled = False
        _state.reason = f"{type(exc).__name__}: {first}"[:200]
    print(f"bregnet: note: fused shortcut kernel unavailable ({_state.reason}); "
          "using the slower eager path", file=sys.stderr, flush=True)


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels apply to these tensors (all large, same device and dtype)."""
    x = tensors[0]
    if x.device.type not in ("cpu", "cuda") or x.dtype not in _DTYPES or x.numel() < MIN_NUMEL:
        return False
    if getattr(_local, "eager", False):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return all(t.dtype == x.dtype and t.device == x.device for t in tensors) and fused_enabled()


def layout(t: torch.Tensor) -> torch.memory_format | None:
    """contiguous_format or channels_last when ``t`` is dense in that order, else None."""
    if t.is_contiguous():
        return torch.contiguous_format
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return None


def flat(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``t`` as a 1-D tensor in memory order ``fmt``: a view when ``t`` is dense in that order,
    a copy otherwise (e.g. an expanded gradient)."""
    if fmt is torch.contiguous_format:
        return t.reshape(-1)
    return t.permute(0, 2, 3, 1).reshape(-1)


def unflat(v: torch.Tensor, like: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """Inverse of :func:`flat`: ``v`` viewed with ``like``'s shape in memory order ``fmt``."""
    if fmt is torch.contiguous_format:
        return v.view(like.shape)
    n, c, h, w = like.shape
    return v.view(n, h, w, c).permute(0, 3, 1, 2)


def fused_call(name: str, *args: torch.Tensor | None):
    """Run kernel ``name`` (``map`` | ``add`` | ``grad``) on flat tensors; None if unavailable."""
    if not fused_enabled():
        return None
    fn = _state.kernels.get(name)
    if fn is None:
        with _state.lock:
            fn = _state.kernels.setdefault(name, _compile(_MATH[name]))
    # Detached (no autograd flags, no view base whose strides dynamo would guard) and under the
    # same grad and autocast state on every call (the formulas fix their own dtypes): the
    # kernels compile once per dtype (and once more for inference-mode tensors), not once per
    # calling context.
    args = tuple(None if a is None else a.detach() for a in args)
    try:
        with torch.no_grad(), torch.autocast(args[0].device.type, enabled=False):
            return fn(*args)
    except Exception as exc:  # no compiler, unsupported platform, inductor failure: eager instead
        _disable(exc)
        return None
