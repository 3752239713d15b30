"""The adaptive shortcut's fused kernels (issue 13): same values and gradients as the reference
formulas, on every layout and range, and a clean fallback when compilation is unavailable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bregnet.models import _fused, create_model
from bregnet.models.shortcuts import AdaptiveArctanShortcut, _adaptive_scalars, atan_ratio

# Just large enough for the fused kernels (MIN_NUMEL values).
SHAPE = (4, 16, 64, 64)


@pytest.fixture(autouse=True)
def _fused_state():
    """Every test starts and ends with the kernels in their default state (on)."""
    _fused.set_fused(None)
    yield
    _fused.set_fused(None)


def _run(g: AdaptiveArctanShortcut, x: torch.Tensor, r: torch.Tensor | None, w: torch.Tensor,
         fused: bool):
    """Output and the gradients (x, r, a, c) of sum(w * out) with the kernels on or off."""
    _fused.set_fused(fused)
    g.zero_grad(set_to_none=True)
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    r = None if r is None else r.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    out = g(x) if r is None else g.residual(r, x)
    (out * w).sum().backward()
    return (out.detach(), x.grad, None if r is None else r.grad, g.a.grad.clone(), g.c.grad.clone())


def _reference(a: float, c: float, x: torch.Tensor, r: torch.Tensor | None, w: torch.Tensor):
    """float64 autograd through the plain formula atan_ratio(u, x) / s2 (+ r), with the
    per-element parameter contributions (for the sums' float32 rounding scale)."""
    x64 = x.detach().double().requires_grad_(True)
    shape = x.shape
    a64 = torch.full(shape, float(torch.tensor(a)), dtype=torch.float64, requires_grad=True)
    c64 = torch.full(shape, float(torch.tensor(c)), dtype=torch.float64, requires_grad=True)
    s2 = 1.0 + c64 * c64
    u = a64 / s2.sqrt()
    z = u * x64
    # atan_ratio takes a scalar u; element-wise here, so the same expression inline
    g = torch.where(z * z < 1e-4, x64 * (1.0 - z * z * (1.0 / 3.0 - z * z * 0.2)),
                    torch.atan(z) / torch.where(u == 0, torch.ones_like(u), u)) / s2
    out = g if r is None else g + r.double()
    (out * w.double()).sum().backward()
    return out.detach(), x64.grad, a64.grad, c64.grad


def _check_against_reference(a: float, c: float, x: torch.Tensor, r: torch.Tensor | None):
    torch.manual_seed(1)
    w = torch.randn(x.shape).to(memory_format=torch.channels_last
                                if x.is_contiguous(memory_format=torch.channels_last) and
                                not x.is_contiguous() else torch.contiguous_format)
    g = AdaptiveArctanShortcut(a=a, c=c)
    fast = _run(g, x, r, w, fused=True)
    assert _fused.fused_enabled(), _fused._state.reason
    out64, gx64, ga64, gc64 = _reference(a, c, x, r, w)
    out, gx, gr, ga, gc = fast
    eps = torch.finfo(torch.float32).eps
    # element-wise results: a few float32 roundings of the float64 value (a residual sum may
    # cancel, so its error is relative to the largest value)
    atol = 8 * eps * out64.abs().max().item() if r is not None else 1e-37
    torch.testing.assert_close(out.double(), out64, rtol=8 * eps, atol=atol)
    torch.testing.assert_close(gx.double(), gx64, rtol=16 * eps, atol=1e-37)
    if r is not None:
        assert torch.equal(gr, w)

    def close_sum(got: torch.Tensor, per_elem: torch.Tensor) -> None:
        # a sum over 262k values in float32: within 1e-6 of the sum of |terms| (measured: at
        # most 3e-8, while the sums themselves are 0.2-0.7% of it, so this is still tight)
        scale = per_elem.abs().sum().item()
        assert abs(got.item() - per_elem.sum().item()) <= 1e-6 * scale + 1e-37, (got, per_elem.sum())

    close_sum(ga, ga64)
    close_sum(gc, gc64)
    # and the fast path equals the eager path (the hand-written gradients, BLAS sums)
    slow = _run(g, x, r, w, fused=False)
    for f, s in zip(fast[:3], slow[:3]):
        if f is not None:
            torch.testing.assert_close(f, s, rtol=1e-5, atol=1e-6 * max(1.0, s.abs().max().item()))
    close_sum(slow[3], ga64)
    close_sum(slow[4], gc64)


@pytest.mark.parametrize("a,c", [(1.0, 1.0), (0.8, -0.4), (1e-3, 0.2), (1e-8, 1e-8), (0.0, 0.5)])
def test_fused_gradients_equal_reference_including_a_near_zero(a, c):
    torch.manual_seed(0)
    x = torch.randn(SHAPE) * 3
    r = torch.randn(SHAPE)
    _check_against_reference(a, c, x, r)   # residual unit r + g(x)
    _check_against_reference(a, c, x, None)  # g(x) alone (strided units)


def test_fused_gradients_with_inputs_up_to_1e6_and_channels_last():
    torch.manual_seed(0)
    # log-uniform magnitudes from 1e-8 to 1e6, both signs, plus exact zeros
    mag = 10 ** (torch.rand(SHAPE) * 14 - 8)
    x = mag * torch.randn(SHAPE).sign()
    x.view(-1)[::997] = 0.0
    r = torch.randn(SHAPE)
    cl = torch.channels_last
    _check_against_reference(1.3, 0.7, x.contiguous(memory_format=cl), r.contiguous(memory_format=cl))
    _check_against_reference(1e-3, 0.1, x.contiguous(memory_format=cl), None)
    _check_against_reference(0.9, 0.3, x, None)


def test_fused_keeps_channels_last_and_accepts_other_layouts():
    g = AdaptiveArctanShortcut(a=0.7, c=0.2)
    x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = g(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()  # an expanded (stride 0) gradient: copied into x's layout
    expected = 1.0 / (1.0 + g.c.detach() ** 2 + g.a.detach() ** 2 * x.detach() ** 2)
    torch.testing.assert_close(x.grad, expected, rtol=2e-6, atol=1e-7)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    # r in another layout than x: still r + g(x)
    r = torch.randn(SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(g.residual(r, x.detach()), r + g(x.detach()), rtol=1e-6, atol=1e-6)
    # a non-dense input (every other column) takes the eager path
    wide = torch.randn(4, 16, 64, 128)[..., ::2]
    with torch.no_grad():
        torch.testing.assert_close(g(wide), torch.atan(wide * 0.7 / math.sqrt(1.04)) / (0.7 * math.sqrt(1.04)),
                                   rtol=1e-6, atol=1e-6)


def test_fused_forward_equals_torch_atan_over_the_whole_float_range():
    """a = 1, c = 0 makes g = arctan: the kernel against torch.atan on every kind of float32."""
    g = AdaptiveArctanShortcut(a=1.0, c=0.0)
    u, s2 = _adaptive_scalars(g.a, g.c)
    assert u.item() == 1.0 and s2.item() == 1.0
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-(2**31), 2**31 - 1, (1 << 18,), generator=gen, dtype=torch.int64)
    x = bits.to(torch.int32).view(torch.float32).clone()  # uniform over bit patterns: all exponents
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e6, -1e6, 1e30,
                            -1e30, 3.4028235e38, -3.4028235e38, 1.4e-45, -1.4e-45, 1.1754944e-38,
                            1e-20, 0.5, 1.0, -1.0, 2.0])
    x[: special.numel()] = special
    with torch.no_grad():
        got = g(x)
    expected = torch.atan(x.double()).float()  # correctly rounded-ish reference
    finite = torch.isfinite(x)
    assert torch.equal(torch.isnan(got), torch.isnan(x))
    assert torch.equal(got[~finite & ~torch.isnan(x)], torch.atan(x[~finite & ~torch.isnan(x)]))
    assert torch.equal(torch.signbit(got[x == 0]), torch.signbit(x[x == 0]))  # -0.0 stays -0.0
    ulp = (got[finite].view(torch.int32).long() - expected[finite].view(torch.int32).long()).abs()
    assert ulp.max().item() <= 1, ulp.max()  # from the rounded reference (real error: <= 1.4 ulp)
    # and the same as eager torch.atan to within its own error
    assert (got[finite] - torch.atan(x[finite])).abs().max().item() <= 2.5e-7


def test_fused_bfloat16_inputs_compute_in_float32():
    torch.manual_seed(0)
    g = AdaptiveArctanShortcut(a=0.9, c=0.5)
    x = (torch.randn(SHAPE) * 2).bfloat16()
    r = torch.randn(SHAPE).bfloat16()
    w = torch.randn(SHAPE).bfloat16()
    out, gx, gr, ga, gc = _run(g, x, r, w, fused=True)
    assert out.dtype == gx.dtype == torch.bfloat16 and ga.dtype == torch.float32
    u, s2 = _adaptive_scalars(g.a.detach().double(), g.c.detach().double())
    ref = r.double() + torch.atan(x.double() * u) / (u * s2)
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)  # bfloat16 output rounding
    ga_ref = _reference(0.9, 0.5, x.float(), r.float(), w.float())[2].sum().item()
    assert ga.item() == pytest.approx(ga_ref, rel=2e-3)


def test_model_gradients_fused_equal_eager(monkeypatch):
    """A tiny BReG-NeXt whose units are large enough for the kernels: every parameter's gradient."""
    ran = []
    real_call = _fused.fused_call
    monkeypatch.setattr(_fused, "fused_call", lambda *a: ran.append(a[0]) or real_call(*a))
    torch.manual_seed(0)
    model = create_model("bregnext32", stages=((1, 16), (1, 32)), stem_width=16).train()
    x = torch.randn(4, 3, 64, 64)
    y = torch.randint(0, 8, (4,))
    grads = {}
    for fused in (True, False):
        _fused.set_fused(fused)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        grads[fused] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert sorted(set(ran)) == ["add", "grad", "map"]  # both unit kinds ran fused
    for name, g_fused in grads[True].items():
        torch.testing.assert_close(g_fused, grads[False][name], rtol=1e-4, atol=1e-6, msg=name)


def test_compilation_unavailable_falls_back_with_one_notice(monkeypatch, capsys):
    def no_compiler(fn):
        def fail(*args, **kwargs):
            raise RuntimeError("no working C++ compiler found (simulated)")
        return fail

    monkeypatch.setattr(_fused, "_compile", no_compiler)
    monkeypatch.setattr(_fused._state, "kernels", {})
    _fused.set_fused(None)
    g = AdaptiveArctanShortcut(a=0.6, c=0.3)
    x = torch.randn(SHAPE).requires_grad_(True)
    r = torch.randn(SHAPE)
    out = g.residual(r, x)
    out.square().sum().backward()
    with torch.no_grad():
        again = g.residual(r, x)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bregnet: note: fused shortcut kernel unavailable")
    assert "simulated" in err[0]
    assert not _fused.fused_enabled()
    u, s2 = _adaptive_scalars(g.a.detach(), g.c.detach())
    expected = r + torch.atan(x.detach() * u) / (u * s2)
    torch.testing.assert_close(out.detach(), expected)
    torch.testing.assert_close(again, expected)
    torch.testing.assert_close(x.grad, 2 * out.detach() / (s2 * (1 + (u * x.detach()) ** 2)))
    assert torch.isfinite(g.a.grad) and torch.isfinite(g.c.grad)


def test_environment_turns_the_kernels_off(monkeypatch, capsys):
    monkeypatch.setenv("BREGNET_FUSED", "0")
    _fused.set_fused(None)
    calls = []
    monkeypatch.setattr(_fused, "_compile", lambda fn: calls.append(fn) or fn)
    monkeypatch.setattr(_fused._state, "kernels", {})
    g = AdaptiveArctanShortcut()
    x = torch.randn(SHAPE).requires_grad_(True)
    g(x).sum().backward()
    assert not _fused.fused_enabled() and not calls
    assert capsys.readouterr().err == ""


def test_small_and_float64_inputs_stay_eager(monkeypatch):
    calls = []
    monkeypatch.setattr(_fused, "_compile", lambda fn: calls.append(fn) or fn)
    monkeypatch.setattr(_fused._state, "kernels", {})
    g = AdaptiveArctanShortcut()
    g(torch.randn(2, 4, 8, 8, requires_grad=True)).sum().backward()
    g.double()(torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)).sum().backward()
    assert not calls


def test_atan_ratio_reference_is_the_plain_formula():
    u = torch.tensor(0.37, dtype=torch.float64)
    x = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    torch.testing.assert_close(atan_ratio(u, x), torch.atan(u * x) / u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_onnx_export_holds_the_plain_formula(tmp_path, exporter):
    """Export sees arctan as a standard ONNX op (no custom function, no compiled kernel), and the
    exported model equals the PyTorch model, whose units here are large enough for the kernels."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from bregnet.export.onnx import export_onnx

    torch.manual_seed(0)
    model = create_model("bregnext32", stages=((1, 32), (1, 64)), stem_width=32).eval()
    for unit in model.units:  # non-default a, c so that a wrong formula would show
        unit.shortcut.a.data.fill_(0.7)
        unit.shortcut.c.data.fill_(0.4)
    path = export_onnx(model, tmp_path / "m.onnx", exporter=exporter)
    graph = onnx.load(str(path)).graph
    ops = {(n.domain or "ai.onnx", n.op_type) for n in graph.node}
    assert ("ai.onnx", "Atan") in ops
    assert {d for d, _ in ops} <= {"ai.onnx", ""}, ops
    x = torch.randn(2, 3, 64, 64)
    ran = []
    real_call = _fused.fused_call
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_fused, "fused_call", lambda *a: ran.append(a[0]) or real_call(*a))
        with torch.no_grad():
            expected = model(x).numpy()
    assert ran  # the PyTorch side ran the fused kernels
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() < 1e-4


def test_the_predictors_pytorch_backend_compiles_nothing_unless_asked(monkeypatch):
    """Compiling costs seconds per process, more than the fused forward saves on a short clip:
    the predictor runs the eager formulas (same outputs) unless BREGNET_FUSED=1."""
    from bregnet.infer.predictor import TorchBackend

    ran = []
    real_call = _fused.fused_call
    monkeypatch.setattr(_fused, "fused_call", lambda *a: ran.append(a[0]) or real_call(*a))
    monkeypatch.delenv("BREGNET_FUSED", raising=False)
    _fused.set_fused(None)
    torch.manual_seed(0)
    model = create_model("bregnext32", stages=((1, 16), (1, 32)), stem_width=16).eval()
    backend = TorchBackend(model)
    x = torch.randn(4, 3, 64, 64).numpy()   # units of 4 x 16 x 64 x 64 = 2^18 values
    eager_logits, _ = backend.run(x)
    assert ran == []
    with _fused.eager():            # nested and restored
        with _fused.eager():
            pass
        assert not _fused.usable(torch.randn(SHAPE))
    assert _fused.usable(torch.randn(SHAPE))
    monkeypatch.setenv("BREGNET_FUSED", "1")
    fused_logits, _ = backend.run(x)
    assert "add" in ran
    np.testing.assert_allclose(fused_logits, eager_logits, rtol=1e-4, atol=1e-5)
