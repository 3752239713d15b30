"""Losses: class weights and weighted CE against hand-computed numbers, focal, VA masking, grads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bregnet.errors import UsageError
from bregnet.losses import (
    FocalLoss,
    MultiTaskLoss,
    OfficialFocalLoss,
    VALoss,
    WeightedCrossEntropy,
    build_loss,
    class_weights,
)
from bregnet.metrics import ccc

LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------------
# class weights


def test_inverse_weights_hand_example() -> None:
    # counts 10/30/60/0: raw 1/N = (1/10, 1/30, 1/60, 0), sum N * raw = 3, scale 100 / 3
    w = class_weights([10, 30, 60, 0], "inverse")
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx([10 / 3, 10 / 9, 5 / 9, 0.0], rel=1e-6)
    counts = torch.tensor([10.0, 30.0, 60.0, 0.0])
    assert float((counts * w).sum() / counts.sum()) == pytest.approx(1.0, rel=1e-6)


def test_sqrt_and_effective_weights_hand_example() -> None:
    counts = [4, 16, 0]
    # sqrt: raw (1/2, 1/4, 0); sum N raw = 2 + 4 = 6; scale 20 / 6
    assert class_weights(counts, "sqrt").tolist() == pytest.approx([5 / 3, 5 / 6, 0.0], rel=1e-6)
    beta = 0.9
    raw = [(1 - beta) / (1 - beta**4), (1 - beta) / (1 - beta**16)]
    scale = 20 / (4 * raw[0] + 16 * raw[1])
    got = class_weights(counts, "effective", beta=beta).tolist()
    assert got == pytest.approx([raw[0] * scale, raw[1] * scale, 0.0], rel=1e-6)
    # limits: beta = 0 gives equal weights; beta -> 1 approaches inverse frequency
    assert class_weights(counts, "effective", beta=0.0).tolist() == pytest.approx([1, 1, 0])
    near_inverse = class_weights(counts, "effective", beta=1 - 1e-9)
    assert near_inverse.tolist() == pytest.approx(class_weights(counts).tolist(), rel=1e-5)


def test_none_weights_and_bad_counts() -> None:
    assert class_weights([5, 0, 7], "none").tolist() == [1.0, 1.0, 1.0]
    assert torch.isfinite(class_weights(np.array([0, 1, 10**9]), "effective")).all()
    with pytest.raises(ValueError, match="all zero"):
        class_weights([0, 0], "inverse")
    with pytest.raises(ValueError, match="non-negative"):
        class_weights([3, -1], "inverse")
    with pytest.raises(ValueError, match="unknown class weighting"):
        class_weights([3, 1], "balanced")
    with pytest.raises(ValueError, match="beta"):
        class_weights([3, 1], "effective", beta=1.0)


# ------------------------------------------------------------------------------------------------
# weighted cross-entropy


def hand_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # p = (1/4, 1/2, 1/4) and (1/4, 1/4, 1/2); the third sample is unlabelled
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 2.0], [5.0, 1.0, 1.0]]))
    labels = torch.tensor([1, 0, -1])
    weights = torch.tensor([2.0, 1.0, 0.5])
    return logits, labels, weights


def test_weighted_ce_hand_computed() -> None:
    logits, labels, weights = hand_batch()
    # terms: w_1 * -ln(1/2) = ln 2 and w_0 * -ln(1/4) = 4 ln 2; weighted mean over w = 1 + 2
    loss = WeightedCrossEntropy(weights)(logits, labels)
    assert float(loss) == pytest.approx(5 * LN2 / 3, rel=1e-6)
    assert float(loss) != pytest.approx(5 * LN2 / 2, rel=1e-3)  # not the plain mean
    assert float(WeightedCrossEntropy()(logits, labels)) == pytest.approx(3 * LN2 / 2, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("seed", range(3))
def test_weighted_ce_equals_torch_for_hard_labels(smoothing: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(32, 6, generator=g) * 3
    labels = torch.randint(0, 6, (32,), generator=g)
    labels[::5] = -1
    w = class_weights(torch.randint(1, 500, (6,), generator=g))
    ours = WeightedCrossEntropy(w, label_smoothing=smoothing)(logits, labels)
    ref = F.cross_entropy(logits, labels, weight=w, ignore_index=-1, label_smoothing=smoothing)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_soft_targets() -> None:
    logits, labels, weights = hand_batch()
    ce = WeightedCrossEntropy(weights, label_smoothing=0.1)
    one_hot = F.one_hot(labels.clamp_min(0), 3).float()
    one_hot[2] = 0.0  # an all-zero row is ignored like label -1
    assert float(ce(logits, one_hot)) == pytest.approx(float(ce(logits, labels)), rel=1e-6)
    # vote counts are normalised: (0, 3, 3) on p = (1/4, 1/2, 1/4) and (2, 0, 0) on the second row
    votes = torch.tensor([[0.0, 3.0, 3.0], [2.0, 0.0, 0.0], [float("nan")] * 3])
    loss = WeightedCrossEntropy(weights)(logits, votes)
    num = (0.5 * 1.0 * LN2 + 0.5 * 0.5 * 2 * LN2) + 2.0 * 2 * LN2  # sum_k w_k q_k (-ln p_k)
    den = (0.5 * 1.0 + 0.5 * 0.5) + 2.0  # sum_k w_k q_k
    assert float(loss) == pytest.approx(num / den, rel=1e-6)


def test_all_ignored_batch_is_a_connected_zero() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    for loss_fn in (WeightedCrossEntropy(torch.ones(3)), FocalLoss()):
        loss = loss_fn(logits, torch.full((4,), -1))
        assert float(loss.detach()) == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert logits.grad is not None and torch.equal(logits.grad, torch.zeros(4, 3))
        logits.grad = None


def test_ce_shape_errors() -> None:
    ce = WeightedCrossEntropy(torch.ones(3))
    with pytest.raises(ValueError, match="class weights"):
        ce(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        ce(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        ce(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        WeightedCrossEntropy(label_smoothing=1.0)


# ------------------------------------------------------------------------------------------------
# focal loss


@pytest.mark.parametrize("seed", range(3))
def test_focal_reduces_to_ce(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(20, 5, generator=g) * 2
    labels = torch.randint(0, 5, (20,), generator=g)
    labels[3] = -1
    focal = FocalLoss(gamma=0.0, alpha=None)(logits, labels)
    assert float(focal) == pytest.approx(float(F.cross_entropy(logits, labels, ignore_index=-1)),
                                         rel=1e-6)


def test_focal_hand_computed() -> None:
    logits, labels, _ = hand_batch()
    # p_y = 1/2 and 1/4: 0.25 * ((1/2)^2 ln 2 + (3/4)^2 * 2 ln 2) / 2 labelled samples
    expected = 0.25 * (0.25 * LN2 + (9 / 16) * 2 * LN2) / 2
    assert float(FocalLoss(gamma=2.0, alpha=0.25)(logits, labels)) == pytest.approx(expected,
                                                                                 rel=1e-6)
    # per-class alpha (3, 1, 1): alpha_1 = 1 for the first sample, alpha_0 = 3 for the second
    per_class = FocalLoss(gamma=2.0, alpha=[3.0, 1.0, 1.0])(logits, labels)
    assert float(per_class) == pytest.approx((0.25 * LN2 + 3 * (9 / 16) * 2 * LN2) / 2, rel=1e-6)


def test_focal_down_weights_easy_examples_and_has_finite_grads() -> None:
    labels = torch.tensor([0, 0])
    easy_hard = torch.tensor([[6.0, 0.0], [0.0, 0.0]])
    terms = [float(FocalLoss(gamma=2.0, alpha=None)(easy_hard[i:i + 1], labels[:1]))
             for i in range(2)]
    ce_terms = [float(F.cross_entropy(easy_hard[i:i + 1], labels[:1])) for i in range(2)]
    assert terms[0] / terms[1] < ce_terms[0] / ce_terms[1] / 100
    extreme = torch.tensor([[80.0, -80.0, 0.0], [-50.0, 50.0, 0.0]], requires_grad=True)
    for gamma in (0.0, 0.5, 2.0):
        loss = FocalLoss(gamma=gamma)(extreme, torch.tensor([0, 0]))
        (grad,) = torch.autograd.grad(loss, extreme)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def _official_focal_numpy(logits: np.ndarray, onehot: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    """The official ``focal_loss2`` per sample, by hand in float64 (softmax, then both terms)."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    pos = -alpha * onehot * (1 - p) ** gamma * np.log(p)
    neg = -(1 - alpha) * (1 - onehot) * p ** gamma * np.log(1 - p)
    return (pos + neg).sum(1)


def test_official_focal_hand_computed() -> None:
    logits, labels, _ = hand_batch()
    # sample 1: p = (1/4, 1/2, 1/4), y = 1; sample 2: p = (1/4, 1/4, 1/2), y = 0
    #   target terms 0.25 (1/2)^2 ln 2 and 0.25 (3/4)^2 2 ln 2, as the single-term form
    #   non-target terms 0.75 p^2 (-ln(1 - p)): p = 1/4 twice in sample 1, p = 1/4 and 1/2 in sample 2
    t1 = 0.25 * 0.25 * LN2 + 2 * 0.75 * (1 / 16) * -math.log(3 / 4)
    t2 = 0.25 * (9 / 16) * 2 * LN2 + 0.75 * ((1 / 16) * -math.log(3 / 4) + (1 / 4) * LN2)
    loss = OfficialFocalLoss(gamma=2.0, alpha=0.25)
    assert float(loss(logits, labels)) == pytest.approx((t1 + t2) / 2, rel=1e-6)
    assert float(OfficialFocalLoss(reduction="sum")(logits, labels)) == pytest.approx(t1 + t2, rel=1e-6)
    # the single-term form lacks the non-target terms
    assert float(FocalLoss(gamma=2.0, alpha=0.25)(logits, labels)) < float(loss(logits, labels)) - 0.05


@pytest.mark.parametrize("seed", range(3))
def test_official_focal_matches_the_official_formula(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(12, 8, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 8, (12,), generator=g)
    onehot = np.eye(8)[labels.numpy()]
    ref = _official_focal_numpy(logits.numpy(), onehot, 2.0, 0.25)
    assert float(OfficialFocalLoss()(logits, labels)) == pytest.approx(ref.mean(), rel=1e-5)
    assert float(OfficialFocalLoss(reduction="sum")(logits, labels)) == pytest.approx(ref.sum(), rel=1e-5)
    # soft targets: a one-hot row is the hard label; class weights scale each sample by w_y
    soft = torch.from_numpy(onehot)
    assert float(OfficialFocalLoss()(logits, soft)) == pytest.approx(ref.mean(), rel=1e-5)
    w = torch.linspace(0.5, 2.0, 8)
    weighted = OfficialFocalLoss(weight=w)(logits, labels)
    assert float(weighted) == pytest.approx((ref * w.numpy()[labels.numpy()]).mean(), rel=1e-5)
    # ignored labels drop out
    part = labels.clone()
    part[:4] = -1
    assert float(OfficialFocalLoss()(logits, part)) == pytest.approx(ref[4:].mean(), rel=1e-5)
    # alpha None: both terms weighted 1
    both = _official_focal_numpy(logits.numpy(), onehot, 0.0, 0.5) * 2
    assert float(OfficialFocalLoss(gamma=0.0, alpha=None)(logits, labels)) == pytest.approx(both.mean(), rel=1e-5)


def test_official_focal_stays_finite_where_p_rounds_to_one() -> None:
    extreme = torch.tensor([[80.0, -80.0, 0.0], [-50.0, 50.0, 0.0]], requires_grad=True)
    loss = OfficialFocalLoss()(extreme, torch.tensor([0, 0]))  # sample 2: a wrong class with p = 1
    (grad,) = torch.autograd.grad(loss, extreme)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # sample 2: target term 0.25 * 100 (-log p_0 = 100) plus the wrong class with p_1 = 1 in float:
    # 0.75 * -log(1 - p_1) = 0.75 * 50, exact from the logits (log(1 - p) of the rounded p is inf)
    assert float(loss.detach()) == pytest.approx((0.25 * 100 + 0.75 * 50) / 2, rel=1e-4)


def test_build_loss_official_focal() -> None:
    counts = [10, 30, 60]
    loss = build_loss("categorical", class_counts=counts, loss="focal-official", weighting="inverse")
    assert isinstance(loss.cls_loss, OfficialFocalLoss) and loss.cls_loss.alpha == 0.25
    assert torch.allclose(loss.cls_loss.weight, class_weights(counts, "inverse"))
    with pytest.raises(ValueError, match="scalar"):
        build_loss("categorical", weighting="none", loss="focal-official", focal_alpha=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="alpha"):
        OfficialFocalLoss(alpha=1.5)


# ------------------------------------------------------------------------------------------------
# valence / arousal


def test_va_mse_masks_nan_targets() -> None:
    pred = torch.tensor([[0.1, 0.2], [0.3, -0.4], [0.5, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [0.5, -0.4], [float("nan"), float("nan")]])
    loss = VALoss("mse")(pred, target)
    assert float(loss.detach()) == pytest.approx((0.1**2 + 0.2**2 + 0.0**2) / 3, rel=1e-6)
    loss.backward()
    assert pred.grad is not None
    assert torch.equal(pred.grad[2], torch.zeros(2)) and float(pred.grad[0, 1]) == 0.0
    full = torch.rand(8, 2)
    full_pred = torch.rand(8, 2)
    assert float(VALoss("mse")(full_pred, full)) == pytest.approx(
        float(F.mse_loss(full_pred, full)), rel=1e-6)


@pytest.mark.parametrize("kind", ["mse", "ccc", "mse+ccc"])
def test_va_all_missing_is_a_connected_zero(kind: str) -> None:
    pred = torch.rand(5, 2, requires_grad=True)
    loss = VALoss(kind)(pred, torch.full((5, 2), float("nan")))
    assert float(loss.detach()) == 0.0 and loss.grad_fn is not None
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.equal(grad, torch.zeros(5, 2))


def test_va_ccc_loss_is_one_minus_ccc() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(40, 2, generator=g) * 2 - 1
    pred = (0.7 * target + 0.3 * torch.randn(40, 2, generator=g)).clamp(-1, 1)
    target[::7, 1] = float("nan")
    expected = np.mean([1 - ccc(target[:, j].numpy(), pred[:, j].numpy()) for j in range(2)])
    assert float(VALoss("ccc")(pred, target)) == pytest.approx(expected, abs=1e-5)
    both = VALoss("mse+ccc")(pred, target)
    assert float(both) == pytest.approx(float(VALoss("mse")(pred, target)) + expected, abs=1e-5)
    # a dimension with fewer than 2 targets is skipped, not turned into a constant 1
    target2 = target.clone()
    target2[1:, 1] = float("nan")
    assert float(VALoss("ccc")(pred, target2)) == pytest.approx(
        1 - ccc(target[:, 0].numpy(), pred[:, 0].numpy()), abs=1e-5)


def test_va_loss_errors() -> None:
    with pytest.raises(ValueError, match="unknown valence/arousal loss"):
        VALoss("l1")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        VALoss()(torch.zeros(3, 2), torch.zeros(3, 1))


# ------------------------------------------------------------------------------------------------
# task-level losses


def test_multitask_sum_and_components() -> None:
    logits, labels, weights = hand_batch()
    va = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.0, 0.0]])
    va_t = torch.tensor([[0.1, 0.0], [float("nan"), 0.4], [0.2, float("nan")]])
    mt = MultiTaskLoss(WeightedCrossEntropy(weights), VALoss("mse"), va_weight=0.5)
    parts = mt.components((logits, va), labels, va_t)
    assert float(parts["cls"]) == pytest.approx(5 * LN2 / 3, rel=1e-6)
    # four present targets, errors 0, 0.2, 0, -0.2
    assert float(parts["va"]) == pytest.approx((0.2**2 + 0.2**2) / 4, rel=1e-6)
    assert float(mt((logits, va), labels, va_t)) == pytest.approx(
        float(parts["cls"]) + 0.5 * float(parts["va"]), rel=1e-6)
    with pytest.raises(ValueError, match="needs valence/arousal targets"):
        mt((logits, va), labels, None)
    with pytest.raises(UsageError, match=r"\(logits, va\)"):  # the one output contract
        mt(logits, labels, va_t)


def test_build_loss_configurations() -> None:
    counts = [50, 20, 10, 20]
    loss = build_loss("categorical", class_counts=counts)
    assert isinstance(loss.cls_loss, WeightedCrossEntropy) and loss.va_loss is None
    assert torch.allclose(loss.cls_loss.weight, class_weights(counts))
    focal = build_loss("categorical", class_counts=counts, loss="focal", weighting="sqrt")
    assert isinstance(focal.cls_loss, FocalLoss)
    assert torch.allclose(focal.cls_loss.alpha, 0.25 * class_weights(counts, "sqrt"))
    plain_focal = build_loss("categorical", loss="focal", weighting="none", focal_alpha=None)
    assert plain_focal.cls_loss.alpha is None
    dim = build_loss("dimensional", va_loss="ccc")
    assert dim.cls_loss is None and dim.va_loss.kind == "ccc"
    with pytest.raises(ValueError, match="needs class_counts"):
        build_loss("categorical")
    with pytest.raises(ValueError, match="unknown task"):
        build_loss("regression")
    with pytest.raises(ValueError, match="unknown classification loss"):
        build_loss("categorical", weighting="none", loss="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        build_loss("categorical", weighting="none", loss="focal", label_smoothing=0.1)


@pytest.mark.parametrize("task", ["categorical", "dimensional", "multitask"])
@pytest.mark.parametrize("cls_loss", ["ce", "focal", "focal-official"])
def test_uniform_signature_and_gradients_flow(task: str, cls_loss: str) -> None:
    torch.manual_seed(0)
    n, k = 16, 4
    features = torch.randn(n, 8)
    head_cls = torch.nn.Linear(8, k)
    head_va = torch.nn.Linear(8, 2)
    labels = torch.randint(0, k, (n,))
    labels[:3] = -1
    va_targets = torch.rand(n, 2) * 2 - 1
    va_targets[5:9, 0] = float("nan")
    loss_fn = build_loss(task, class_counts=[40, 30, 20, 10], loss=cls_loss, va_loss="mse+ccc",
                         va_weight=0.5)
    logits, va = head_cls(features), torch.tanh(head_va(features))
    outputs = {"categorical": logits, "dimensional": va, "multitask": (logits, va)}[task]
    loss = loss_fn(outputs, labels if task != "dimensional" else None,
                   va_targets if task != "categorical" else None)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    used = {"categorical": [head_cls], "dimensional": [head_va],
            "multitask": [head_cls, head_va]}[task]
    for head in used:
        assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
        assert float(head.weight.grad.abs().sum()) > 0
    for head in {head_cls, head_va} - set(used):
        assert head.weight.grad is None


def test_losses_follow_the_module_device_and_state_dict() -> None:
    loss = build_loss("categorical", class_counts=[3, 1])
    state = loss.state_dict()
    assert "cls_loss.weight" in state  # weights travel with .to(device) and checkpoints
    assert loss.cls_loss.weight.dtype == torch.float32
