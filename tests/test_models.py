"""Networks, shortcut mappings and the registry (issue: foundation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bregnet.errors import UsageError
from bregnet.models import SHORTCUTS, create_model, list_models
from bregnet.models.shortcuts import AdaptiveArctanShortcut, atan_ratio, make_shortcut

ALL_NAMES = [
    "resnet32", "resnet56", "resnet110", "bregnet32", "bregnet56", "bregnet110",
    "bregnext32", "bregnext56", "bregnext110", "bregnext50",
]
CUSTOM_NAMES = ["resnet_custom", "bregnet_custom", "bregnext_custom"]
TINY = ((1, 32), (1, 64), (1, 128))


def _cifar(n: int, first: int = 32) -> list[list[int]]:
    return [[n, first], [n, 64], [n, 128]]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_registry_has_the_ten_names_and_the_custom_layouts():
    assert sorted(ALL_NAMES + CUSTOM_NAMES) == list_models()


def test_model_name_always_describes_the_network():
    """A checkpoint records ``model.model_name`` and ``model.config``: the name must say what the
    network is, and name + config must rebuild it (the demo's 4-unit net is no bregnext32)."""
    from bregnet.engine.checkpoint import CheckpointMeta

    custom = create_model("bregnext32", stages=TINY)  # the old way of writing a custom layout
    assert custom.model_name == "bregnext_custom"
    assert create_model("bregnext_custom", stages=TINY).model_name == "bregnext_custom"
    assert create_model("bregnext32").model_name == "bregnext32"
    assert create_model("resnet32", shortcut="adaptive").model_name == "bregnext32"  # same network
    assert create_model("bregnet32", stages=_cifar(9)).model_name == "bregnet56"
    assert create_model("bregnext50", shortcut="identity").model_name == "resnet_custom"
    assert create_model("bregnext32", shortcut="tanh").model_name == "bregnext32"  # no tanh family
    assert create_model("bregnext32", stem_width=16, stages=_cifar(5, 16)).model_name == "bregnext_custom"
    for model in (custom, create_model("bregnet_custom", stages=[[2, 8], [1, 16]], stem_width=8, stem_stride=2),
                  create_model("resnet110")):
        meta = CheckpointMeta.for_model(model, [str(i) for i in range(8)])
        rebuilt = create_model(meta.model_name, **meta.model_args)
        assert rebuilt.config == model.config and rebuilt.model_name == meta.model_name
        assert [k for k in rebuilt.state_dict()] == [k for k in model.state_dict()]
    with pytest.raises(UsageError, match="needs stages"):
        create_model("bregnext_custom")


def test_checkpoint_meta_never_guesses_a_model_name():
    from bregnet.engine.checkpoint import CheckpointMeta
    from bregnet.models import BregNet

    bare = BregNet(stages=TINY)
    with pytest.raises(ValueError, match="no registry name"):
        CheckpointMeta.for_model(bare, [str(i) for i in range(8)])
    bare.model_name = "bregnext99"
    with pytest.raises(ValueError, match="no registry name"):
        CheckpointMeta.for_model(bare, [str(i) for i in range(8)])
    bare.model_name = "bregnext50"  # a registered name on another layout is corrected, not trusted
    assert CheckpointMeta.for_model(bare, [str(i) for i in range(8)]).model_name == "bregnext_custom"


def test_old_checkpoint_with_a_depth_name_and_custom_stages_still_loads(tmp_path):
    """Checkpoints written before the custom names say ``bregnext32`` with stages in the args."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from bregnet.engine.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = create_model("bregnext32", num_classes=8, stages=TINY).eval()
    path = save_checkpoint(tmp_path / "new.safetensors", model,
                           CheckpointMeta.for_model(model, [str(i) for i in range(8)]), write_json=False)
    with safe_open(str(path), framework="pt") as f:
        doc = json.loads(f.metadata()["bregnet"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert doc["model"]["name"] == "bregnext_custom"
    doc["model"]["name"] = "bregnext32"  # what the old code wrote
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"bregnet": json.dumps(doc)})
    loaded, meta = load_checkpoint(tmp_path / "old.safetensors")
    assert meta.model_name == "bregnext32" and loaded.config == model.config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_bregnext50_parameter_count_matches_official_checkpoint():
    assert n_params(create_model("bregnext50", num_classes=8)) == 3_072_696


def test_bregnext50_layout_is_50_weight_layers():
    model = create_model("bregnext50")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(model.units) == 24
    assert len(convs) + len(linears) == 50
    assert [u.stride for u in model.units].count(2) == 2


@pytest.mark.parametrize("name,units", [("resnet32", 15), ("bregnet56", 27), ("bregnext110", 54)])
def test_cifar_template_depths(name, units):
    assert len(create_model(name).units) == units


def test_shortcut_families():
    assert isinstance(create_model("resnet32").units[0].shortcut, SHORTCUTS["identity"])
    assert isinstance(create_model("bregnet32").units[0].shortcut, SHORTCUTS["arctan"])
    assert isinstance(create_model("bregnext32").units[0].shortcut, SHORTCUTS["adaptive"])
    override = create_model("bregnext50", shortcut="tanh")
    assert all(isinstance(u.shortcut, SHORTCUTS["tanh"]) for u in override.units)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_output_shapes_every_model(name):
    x = torch.randn(2, 3, 64, 64)
    for mode in ("cat", "va", "multi"):
        kwargs = {"cat": dict(num_classes=7), "va": dict(num_classes=0, va=True),
                  "multi": dict(num_classes=8, va=True)}[mode]
        model = create_model(name, **kwargs).eval()
        with torch.no_grad():
            out = model(x)
        if mode == "cat":
            assert out.shape == (2, 7) and out.dtype == torch.float32
        elif mode == "va":
            assert out.shape == (2, 2) and out.dtype == torch.float32
        else:
            logits, va = out
            assert logits.shape == (2, 8) and va.shape == (2, 2)
        # one mode per model is enough for the deep ones (speed)
        if name.endswith("110"):
            break


def test_va_always_inside_unit_interval_even_for_extreme_inputs():
    model = create_model("bregnext32", num_classes=0, va=True, stages=TINY).eval()
    with torch.no_grad():
        model.va_head.weight.mul_(1e4)
        va = model(torch.randn(8, 3, 64, 64) * 100)
    assert va.abs().max() <= 1.0


def test_forward_features_and_head_compose():
    model = create_model("bregnext32", num_classes=8, stages=TINY).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (3, 128, 16, 16)
        assert torch.equal(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (3, 128)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(UsageError, match="unknown model"):
        create_model("resnet18")
    with pytest.raises(UsageError, match="unknown shortcut"):
        create_model("bregnet32", shortcut="relu")
    with pytest.raises(UsageError, match="num_classes"):
        create_model("bregnet32", num_classes=0)


# ---------------------------------------------------------------- shortcut mappings
GRID = torch.cat([torch.linspace(-1e4, 1e4, 2001), torch.linspace(-10, 10, 2001)]).double()


@pytest.mark.parametrize("name", ["identity", "arctan", "tanh", "softsign", "adaptive"])
def test_derivative_within_bound_on_grid_with_large_inputs(name):
    g = make_shortcut(name).double()
    x = GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g(x).sum(), x)
    assert torch.isfinite(grad).all()
    assert (grad >= 0).all()
    assert grad.max() <= 1.0 + 1e-12  # every mapping: 0 < g'(x) <= 1
    if name != "identity":
        assert grad[x.abs() > 100].max() < 1e-3  # bounded mappings saturate


def test_adaptive_derivative_formula_and_bound():
    g = AdaptiveArctanShortcut(a=1.7, c=0.6).double()
    x = GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g(x).sum(), x)
    a, c = g.a.detach(), g.c.detach()  # the float32-rounded values, now in float64
    expected = 1.0 / (1.0 + c**2 + a**2 * GRID**2)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-14)
    assert grad.max() <= 1.0 / (1.0 + c**2) + 1e-12
    assert math.isclose(g.slope_bound(), 1 / (1 + c.item() ** 2))


def test_adaptive_init_slope_half_and_matches_formula():
    g = AdaptiveArctanShortcut().double()
    x = torch.linspace(-5, 5, 101).double()
    s = math.sqrt(2.0)
    torch.testing.assert_close(g(x), torch.atan(x / s) / s, rtol=1e-12, atol=1e-12)
    x0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (d0,) = torch.autograd.grad(g(x0).sum(), x0)
    assert d0.item() == pytest.approx(0.5)


def test_adaptive_a1_c0_equals_arctan():
    g = AdaptiveArctanShortcut(a=1.0, c=0.0)
    x = torch.randn(1000) * 5
    torch.testing.assert_close(g(x), torch.atan(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("a,c", [(1e-3, 1e-3), (1e-8, 1e-8), (0.0, 0.0), (-1e-5, 1e-6)])
def test_adaptive_tends_to_identity_and_gradients_stay_finite(a, c):
    g = AdaptiveArctanShortcut(a=a, c=c)
    x = torch.randn(4096) * 3
    y = g(x)
    torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5)
    y.pow(2).sum().backward()
    assert torch.isfinite(g.a.grad) and torch.isfinite(g.c.grad)


def test_adaptive_parameter_gradients_accurate_for_small_a():
    """d/da and d/dc compared with float64 central differences, including small a."""
    for a in (1.0, 0.05, 1e-3):
        g = AdaptiveArctanShortcut(a=a, c=0.3)
        x = torch.linspace(-4, 4, 257)
        g(x).sum().backward()

        def f(a_, c_):
            a_t, c_t = torch.tensor(a_, dtype=torch.float64), torch.tensor(c_, dtype=torch.float64)
            s2 = 1 + c_t**2
            return (atan_ratio(a_t / s2.sqrt(), x.double()) / s2).sum().item()

        h = 1e-6
        da = (f(a + h, 0.3) - f(a - h, 0.3)) / (2 * h)
        dc = (f(a, 0.3 + h) - f(a, 0.3 - h)) / (2 * h)
        assert g.a.grad.item() == pytest.approx(da, rel=1e-3, abs=1e-4)
        assert g.c.grad.item() == pytest.approx(dc, rel=1e-3, abs=1e-4)


def test_atan_ratio_branches_agree_at_the_switch():
    u = torch.tensor(1e-3, dtype=torch.float64)
    x = torch.tensor([9.999e-0, 10.0, 10.001], dtype=torch.float64)  # |u x| around 1e-2
    torch.testing.assert_close(atan_ratio(u, x), torch.atan(u * x) / u, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- the unit
def test_identity_model_computes_exactly_a_preactivation_resnet():
    torch.manual_seed(0)
    model = create_model("resnet32", num_classes=5, stages=((2, 32), (1, 64), (1, 128))).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)

    def reference(x):
        h = F.conv2d(x, model.stem.weight, model.stem.bias, padding=1)
        for unit in model.units:
            r = F.elu(unit.bn1(h))
            r = F.conv2d(r, unit.conv1.weight, unit.conv1.bias, stride=unit.stride, padding=1)
            r = F.conv2d(F.elu(unit.bn2(r)), unit.conv2.weight, unit.conv2.bias, padding=1)
            s = h if unit.stride == 1 else F.avg_pool2d(h, 2)
            pad = (unit.out_channels - unit.in_channels) // 2
            s = F.pad(s, (0, 0, 0, 0, pad, pad))
            h = r + s
        h = F.elu(model.final_bn(h)).mean(dim=(2, 3))
        return F.linear(h, model.fc.weight, model.fc.bias)

    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)


def test_option_a_padding_places_input_channels_in_the_middle():
    model = create_model("bregnet32", stages=((1, 32), (1, 64), (1, 128)))
    unit = model.units[1]
    with torch.no_grad():
        for p in (unit.conv1.weight, unit.conv1.bias, unit.conv2.weight, unit.conv2.bias):
            p.zero_()
    x = torch.randn(1, 32, 8, 8)
    y = unit(x)
    expected = F.avg_pool2d(torch.atan(x), 2)
    assert torch.equal(y[:, :16], torch.zeros_like(y[:, :16]))
    assert torch.equal(y[:, 48:], torch.zeros_like(y[:, 48:]))
    torch.testing.assert_close(y[:, 16:48], expected)


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's documented 'SAME' padding along one axis: (before, after)."""
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _reference_unit(unit, x: torch.Tensor, tf_same: bool) -> torch.Tensor:
    """The unit's forward written from PAPER.md section 3 with explicit padding: TF 'SAME'
    (computed by :func:`_tf_same_pads`) or PyTorch's symmetric padding of 1."""
    def conv(t, layer, stride):
        if tf_same:
            (top, bottom), (left, right) = (_tf_same_pads(t.shape[2], 3, stride),
                                            _tf_same_pads(t.shape[3], 3, stride))
        else:
            top = bottom = left = right = 1
        return F.conv2d(F.pad(t, (left, right, top, bottom)), layer.weight, layer.bias, stride=stride)

    def bn(t, layer):
        return F.batch_norm(t, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                            training=False, eps=layer.eps)

    r = conv(F.elu(bn(x, unit.bn1)), unit.conv1, unit.stride)
    r = conv(F.elu(bn(r, unit.bn2)), unit.conv2, 1)
    s = unit.shortcut(x)
    if unit.stride > 1:
        s = F.avg_pool2d(s, unit.stride)
    grow = unit.out_channels - unit.in_channels
    s = F.pad(s, (0, 0, 0, 0, grow // 2, grow // 2))
    return r + s


def test_tf_same_padding_formula():
    assert _tf_same_pads(16, 3, 2) == (0, 1)  # even input, stride 2: all the padding after
    assert _tf_same_pads(15, 3, 2) == (1, 1)
    assert _tf_same_pads(16, 3, 1) == (1, 1)


@pytest.mark.parametrize("size", [(16, 16), (8, 12)])
def test_unit_forward_matches_reference_with_tf_same_and_torch_padding(size):
    torch.manual_seed(1)
    unit_tf = create_model("bregnext_custom", stages=TINY, tf_same_padding=True).units[1].eval()
    unit_pt = create_model("bregnext_custom", stages=TINY).units[1].eval()
    for m in unit_tf.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    unit_pt.load_state_dict(unit_tf.state_dict())
    assert unit_tf.stride == 2 and unit_tf.in_channels == 32 and unit_tf.out_channels == 64
    x = torch.randn(2, 32, *size)
    with torch.no_grad():
        ref_tf, ref_pt = _reference_unit(unit_tf, x, True), _reference_unit(unit_pt, x, False)
        torch.testing.assert_close(unit_tf(x), ref_tf, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(unit_pt(x), ref_pt, rtol=1e-5, atol=1e-5)
        assert (ref_tf - ref_pt).abs().max() > 1e-2  # the two paddings really differ


# ---------------------------------------------------------------- gradient flow
def _input_grad_norm(name: str, shortcut: str | None = None) -> float:
    torch.manual_seed(0)
    model = create_model(name, num_classes=8, shortcut=shortcut)
    model.train()
    x = torch.randn(8, 3, 64, 64, requires_grad=True)
    y = torch.randint(0, 8, (8,))
    F.cross_entropy(model(x), y).backward()
    return x.grad.norm().item()


def test_gradient_at_input_of_110_layer_networks_is_finite_and_bounded():
    """Input-gradient norm at init (seed 0, batch 8, 64x64, cross-entropy, train-mode BN),
    measured on torch 2.13 CPU with the resnet110 layout and each shortcut:

        identity 3.19e-3, arctan 1.57e-1, tanh 3.05e-1, softsign 1.99e-1, adaptive 1.01e-1

    (at depth 32: identity 2.7e-3, arctan 5.9e-3, adaptive 5.6e-3). With the identity shortcut
    the forward activations grow with depth and the normalisations downstream shrink the
    gradient; bounded shortcuts keep activations O(1), so the gradient reaching the input stays
    finite and of order 0.1 even through 54 units, 30-100x the identity's.

    Asserted: every value finite and within a factor 3 of its measured figure (windows that no
    longer overlap between identity and the bounded mappings), and the claim itself: every
    bounded shortcut's input gradient is more than 10x the identity shortcut's.
    """
    measured = {"identity": 3.19e-3, "arctan": 1.57e-1, "tanh": 3.05e-1, "softsign": 1.99e-1,
                "adaptive": 1.01e-1}
    values = {}
    for shortcut, figure in measured.items():
        value = _input_grad_norm("resnet110", shortcut)
        assert math.isfinite(value)
        assert figure / 3 < value < figure * 3, (shortcut, value)
        values[shortcut] = value
    bounded = [v for s, v in values.items() if s != "identity"]
    assert min(bounded) > 10 * values["identity"], values


@pytest.mark.parametrize("a,c", [(1.0, 1.0), (0.3, -0.7), (2.5, 0.0), (1e-3, 0.2)])
def test_adaptive_custom_gradient_passes_gradcheck(a, c):
    from bregnet.models.shortcuts import _AdaptiveArctanFn, _adaptive_scalars

    x = (torch.randn(64, dtype=torch.float64) * 3).requires_grad_(True)
    a_t = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    c_t = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, c: _AdaptiveArctanFn.apply(x, *_adaptive_scalars(a, c)),
                                    (x, a_t, c_t), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_adaptive_training_and_inference_paths_agree():
    g = AdaptiveArctanShortcut(a=0.8, c=0.4)
    x = torch.randn(2, 4, 8, 8) * 4
    with torch.no_grad():
        y_inf = g(x)
    y_train = g(x.requires_grad_(True))
    assert y_train.grad_fn is not None
    torch.testing.assert_close(y_train.detach(), y_inf, rtol=1e-6, atol=1e-7)
