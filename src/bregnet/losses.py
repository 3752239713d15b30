"""Training losses: class-weighted cross-entropy, focal losses, valence/arousal loss, multi-task sum.

The trainer builds its loss with :func:`build_loss` and calls it as
``loss_fn(outputs, labels, va_targets) -> scalar tensor`` whatever the task (see there).

Conventions shared by every loss here:

* Class labels are ``(N,)`` integers; ``-1`` (``IGNORE_INDEX``) marks a sample without a category
  and contributes nothing. Categorical losses also accept soft targets ``(N, K)`` (for instance
  FERPlus vote distributions): each row is normalised to sum to 1; a row that sums to 0 or holds a
  NaN is ignored.
* Valence/arousal targets are ``(N, 2)`` floats with NaN where the annotation is missing (readers
  map the data sets' own markers such as AffectNet's -2 or Aff-Wild2's -5 to NaN).
* A batch in which nothing is labelled gives a loss of exactly 0 that is still attached to the graph
  (it has a ``grad_fn`` and back-propagates zeros), never NaN, so a trainer needs no special case.
* Logits are upcast to float32 before the softmax, so the losses are safe under autocast.
* No data-dependent Python branching on tensor values: nothing forces a device synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.network import split_outputs

__all__ = [
    "IGNORE_INDEX",
    "FocalLoss",
    "MultiTaskLoss",
    "OfficialFocalLoss",
    "VALoss",
    "WeightedCrossEntropy",
    "build_loss",
    "class_weights",
]

IGNORE_INDEX = -1
"""Class label that marks a sample without a category."""

WeightScheme = Literal["none", "inverse", "sqrt", "effective"]
WEIGHT_SCHEMES: tuple[str, ...] = ("none", "inverse", "sqrt", "effective")
VA_KINDS: tuple[str, ...] = ("mse", "ccc", "mse+ccc")
TASKS: tuple[str, ...] = ("categorical", "dimensional", "multitask")
CLS_LOSSES: tuple[str, ...] = ("ce", "focal", "focal-official")

_TINY = torch.finfo(torch.float32).tiny


def _zero_like(x: Tensor) -> Tensor:
    """A scalar 0 connected to ``x``'s graph (zero gradient), finite even if ``x`` is not."""
    return x.reshape(-1)[:0].sum()


# --------------------------------------------------------------------------------------------------
# class weights


def class_weights(
    counts: Sequence[int] | np.ndarray | Tensor,
    scheme: WeightScheme | str = "inverse",
    beta: float = 0.999,
) -> Tensor:
    """Per-class loss weights (float32, shape (K,)) from the training-set class counts ``N_c``.

    Schemes:

    * ``"none"``: all ones.
    * ``"inverse"`` (default, the paper's reading): ``w_c ∝ 1 / N_c``.
    * ``"sqrt"``: ``w_c ∝ 1 / sqrt(N_c)``, a milder re-balancing.
    * ``"effective"``: Cui et al. (CVPR 2019), ``w_c ∝ (1 - beta) / (1 - beta^N_c)``, the inverse of
      the "effective number of samples"; ``beta -> 0`` gives all ones, ``beta -> 1`` gives inverse.

    Every scheme except ``"none"`` is normalised so that the sample-weighted mean weight is 1,
    ``sum_c N_c w_c / sum_c N_c == 1``: the average training sample keeps weight 1, so the loss and
    the learning rate keep the scale they have without weights. For ``"inverse"`` this gives
    ``w_c = N / (K' N_c)`` with ``K'`` the number of classes that occur (scikit-learn's "balanced").

    A class with zero count gets weight 0 (it never occurs, so its weight never matters; 0 avoids
    inf/NaN). Counts must be finite, non-negative, and not all zero.
    """
    n = torch.as_tensor(counts).detach().to("cpu", torch.float64).reshape(-1)
    if n.numel() == 0:
        raise ValueError("class counts are empty")
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
        raise ValueError(f"class counts must be finite and non-negative, got {n.tolist()}")
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown class weighting {scheme!r}; choose one of "
                         f"{list(WEIGHT_SCHEMES)}")
    if scheme == "none":
        return torch.ones(n.numel(), dtype=torch.float32)
    if float(n.sum()) == 0:
        raise ValueError("class counts are all zero: cannot compute class weights")
    present = n > 0
    safe = torch.where(present, n, torch.ones_like(n))
    if scheme == "inverse":
        raw = 1.0 / safe
    elif scheme == "sqrt":
        raw = 1.0 / torch.sqrt(safe)
    else:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1) for effective-number weights, got {beta}")
        raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), safe))
    raw = torch.where(present, raw, torch.zeros_like(raw))
    w = raw * n.sum() / torch.sum(n * raw)
    return w.to(torch.float32)


# --------------------------------------------------------------------------------------------------
# categorical losses


def _soft_targets(target: Tensor) -> tuple[Tensor, Tensor]:
    """Soft (N, K) targets to ``(q, valid)``: rows normalised to sum 1, invalid rows all 0.

    A row is valid when its sum is finite and positive (vote counts work as well as distributions).
    """
    q = target.to(torch.float32)
    row = q.sum(dim=1)
    valid = torch.isfinite(row) & (row > 0)
    q = torch.where(valid[:, None], q / torch.where(valid, row, torch.ones_like(row))[:, None],
                    torch.zeros_like(q))
    return q, valid


def _check(logits: Tensor, target: Tensor, weight: Tensor | None, name: str) -> bool:
    """Validate shapes; return True for hard (index) targets, False for soft (N, K) targets."""
    if logits.ndim != 2:
        raise ValueError(f"{name}: logits must be (N, K), got shape {tuple(logits.shape)}")
    k = logits.shape[1]
    if weight is not None and weight.numel() != k:
        raise ValueError(f"{name}: {weight.numel()} class weights for {k} classes")
    if target.ndim == 1:
        if target.is_floating_point() or target.is_complex():
            raise ValueError(f"{name}: 1-D targets must be integer class indices, got "
                             f"{target.dtype}")
        if target.shape[0] != logits.shape[0]:
            raise ValueError(f"{name}: {target.shape[0]} targets for {logits.shape[0]} logits")
        return True
    if target.shape != logits.shape:
        raise ValueError(f"{name}: targets must be (N,) indices or (N, K) = {tuple(logits.shape)} "
                         f"distributions, got shape {tuple(target.shape)}")
    return False


class WeightedCrossEntropy(nn.Module):
    """Softmax cross-entropy with per-class weights, label smoothing, soft targets and ignore label.

    Per sample ``i`` with target distribution ``q_i`` (one-hot for a hard label) and smoothed target
    ``q'_i = (1 - eps) q_i + eps / K``::

        l_i = - sum_k w_k q'_ik log p_ik          (the weighted loss term)
        s_i =   sum_k w_k q_ik                    (the sample weight; w_{y_i} for a hard label)
        loss = sum_i l_i / sum_i s_i              over the samples that have a target

    **Reduction: weighted mean** (PyTorch's convention for ``F.cross_entropy(weight=...)``), not the
    plain mean of weighted terms. Reasons: (1) it is the self-normalised estimate of the risk under
    the re-weighted (class-balanced) distribution, so the loss scale does not swing with how many
    rare-class samples a batch happens to hold (a batch of only rare samples does not produce a
    gradient many times the usual size); (2) it does not depend on the overall scale of ``w``;
    (3) for hard labels it equals ``F.cross_entropy(logits, y, weight=w, ignore_index=-1,
    label_smoothing=eps)`` exactly, so results compare with the rest of the ecosystem. With the
    normalisation of :func:`class_weights` (mean sample weight 1) both reductions agree in
    expectation; they differ per batch. For soft targets we use the same formula (PyTorch divides
    by N there instead); a one-hot soft target gives exactly the hard-label loss.

    Unlike PyTorch, a batch where every sample is ignored (or has weight 0) gives 0, not NaN.

    Parameters
    ----------
    weights:
        (K,) class weights (e.g. from :func:`class_weights`) or None for all ones.
    label_smoothing:
        ``eps`` in [0, 1).
    ignore_index:
        Hard label that marks a sample without a target (default -1).
    """

    weight: Tensor | None

    def __init__(self, weights: Sequence[float] | Tensor | None = None,
                 label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if w is not None and (not bool(torch.isfinite(w).all()) or bool((w < 0).any())):
            raise ValueError("class weights must be finite and non-negative")
        self.register_buffer("weight", w)
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        k = None if self.weight is None else self.weight.numel()
        return f"classes_weighted={k}, label_smoothing={self.label_smoothing}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of (N, K) logits against (N,) class indices or (N, K) target distributions."""
        hard = _check(logits, target, self.weight, "WeightedCrossEntropy")
        logp = F.log_softmax(logits.float(), dim=1)
        k = logp.shape[1]
        w = (torch.ones(k, device=logp.device, dtype=logp.dtype) if self.weight is None
             else self.weight.to(device=logp.device, dtype=logp.dtype))
        eps = self.label_smoothing
        if hard:
            valid = target != self.ignore_index
            idx = torch.where(valid, target, torch.zeros_like(target)).long()
            w_y = w[idx]
            nll = -w_y * logp.gather(1, idx[:, None]).squeeze(1)
            per = nll if eps == 0 else (1 - eps) * nll - (eps / k) * (logp * w).sum(dim=1)
            sample_w = w_y
        else:
            q, valid = _soft_targets(target)
            q_s = q if eps == 0 else (1 - eps) * q + eps / k
            per = -(w * q_s * logp).sum(dim=1)
            sample_w = (w * q).sum(dim=1)
        per = torch.where(valid, per, torch.zeros_like(per))
        sample_w = torch.where(valid, sample_w, torch.zeros_like(sample_w))
        return per.sum() / sample_w.sum().clamp_min(_TINY)


class FocalLoss(nn.Module):
    """Multiclass softmax focal loss (Lin et al. 2017), ``-alpha_y (1 - p_y)^gamma log p_y``.

    This is the common single-term softmax form. It is **not** the official BReG-NeXt code's
    ``focal_loss2``, which adds a second term over the non-target classes: that one is
    :class:`OfficialFocalLoss` (``train.loss: focal-official``).

    **Alpha convention.** A scalar ``alpha`` multiplies every class alike: with a softmax there is
    no positive/negative split, so unlike the binary sigmoid form (alpha for positives, 1 - alpha
    for negatives) it only scales the loss (``alpha=0.25`` acts like a 4x smaller learning rate
    with SGD; Adam hardly notices a constant factor). A sequence/tensor of K values gives
    per-class weights ``alpha_c`` (e.g. from :func:`class_weights`); ``None`` means 1 for every
    class.

    **Reduction: plain mean** over the samples that have a target, as Lin et al. (who normalise by
    the number of anchors, not by the sum of alphas): a weighted mean would cancel a scalar alpha.
    With ``gamma=0`` and ``alpha=None`` it equals unweighted cross-entropy.

    Soft (N, K) targets give ``-sum_k alpha_k q_k (1 - p_k)^gamma log p_k``. Labels ``-1`` (and
    soft rows summing to 0) are ignored; an all-ignored batch gives a connected 0.
    """

    alpha: Tensor | None

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | Tensor | None = 0.25,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        a = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        if a is not None and (not bool(torch.isfinite(a).all()) or bool((a < 0).any())):
            raise ValueError("focal alpha must be finite and non-negative")
        if a is not None and a.ndim > 1:
            raise ValueError(f"focal alpha must be a scalar or a (K,) vector, got {tuple(a.shape)}")
        self.register_buffer("alpha", a)
        self.gamma = float(gamma)
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        a = None if self.alpha is None else (float(self.alpha) if self.alpha.ndim == 0
                                             else f"({self.alpha.numel()},)")
        return f"gamma={self.gamma}, alpha={a}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of (N, K) logits against (N,) class indices or (N, K) target distributions."""
        alpha_vec = self.alpha if self.alpha is not None and self.alpha.ndim == 1 else None
        hard = _check(logits, target, alpha_vec, "FocalLoss")
        logp = F.log_softmax(logits.float(), dim=1)
        # 1 - p computed as -expm1(log p) for accuracy near p = 1; the tiny floor keeps the
        # gradient of (1 - p)^gamma finite for gamma < 1 (the clamp passes no gradient there).
        focal = (-torch.expm1(logp)).clamp_min(1e-30).pow(self.gamma)
        term = -focal * logp
        if self.alpha is not None:
            term = term * self.alpha.to(device=logp.device, dtype=logp.dtype)
        if hard:
            valid = target != self.ignore_index
            idx = torch.where(valid, target, torch.zeros_like(target)).long()
            per = term.gather(1, idx[:, None]).squeeze(1)
        else:
            q, valid = _soft_targets(target)
            per = (q * term).sum(dim=1)
        per = torch.where(valid, per, torch.zeros_like(per))
        return per.sum() / valid.sum().clamp_min(1).to(per.dtype)


class OfficialFocalLoss(nn.Module):
    """The official BReG-NeXt code's focal loss (``focal_loss2``, PAPER.md section 4), two terms
    summed over the classes ``k`` with one-hot targets ``y`` and softmax probabilities ``p``::

        l_i = sum_k [ -alpha y_k (1 - p_k)^gamma log p_k  -  (1 - alpha) (1 - y_k) p_k^gamma log(1 - p_k) ]

    The second term also pushes down the probability of every wrong class, like a per-class
    binary focal loss. ``alpha=None`` weights both terms 1. Soft (N, K) targets ``q`` (rows
    normalised) replace ``y``, which is the same formula for a one-hot row. ``log(1 - p_k)`` is
    computed as ``logsumexp`` of the other logits minus ``logsumexp`` of all, so it stays exact
    and finite where ``p_k`` rounds to 1.

    ``weight`` (K,) optional class weights scale each sample's loss by ``w_y`` (``sum_k w_k q_k``
    for soft targets). **Reduction**: ``"mean"`` (default) over the samples that have a target;
    ``"sum"`` sums over the batch as the official code does (``K.sum`` over batch and classes).
    The mean keeps training and validation losses comparable across batch sizes; Adam, the
    paper's optimiser, is nearly invariant to the constant factor between the two. Labels ``-1``
    (and soft rows summing to 0) are ignored; an all-ignored batch gives a connected 0.
    """

    weight: Tensor | None

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25,
                 weight: Sequence[float] | Tensor | None = None, reduction: str = "mean",
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"official focal alpha must lie in [0, 1], got {alpha}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).reshape(-1)
        if w is not None and (not bool(torch.isfinite(w).all()) or bool((w < 0).any())):
            raise ValueError("class weights must be finite and non-negative")
        self.register_buffer("weight", w)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)
        self.reduction = reduction
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        k = None if self.weight is None else self.weight.numel()
        return f"gamma={self.gamma}, alpha={self.alpha}, classes_weighted={k}, reduction={self.reduction!r}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of (N, K) logits against (N,) class indices or (N, K) target distributions."""
        hard = _check(logits, target, self.weight, "OfficialFocalLoss")
        z = logits.float()
        n, k = z.shape
        if k < 2:
            raise ValueError("OfficialFocalLoss needs at least 2 classes")
        lse = torch.logsumexp(z, dim=1, keepdim=True)
        logp = z - lse
        # log(1 - p_k) = log sum_{j != k} exp(z_j) - log sum_j exp(z_j)
        eye = torch.eye(k, dtype=torch.bool, device=z.device)
        others = z[:, None, :].expand(n, k, k).masked_fill(eye, float("-inf"))
        log1mp = torch.logsumexp(others, dim=2) - lse
        # (1 - p)^gamma and p^gamma from the logs; exp(0 * -inf) cannot occur: both logs are finite
        pos = -torch.exp(self.gamma * log1mp) * logp
        neg = -torch.exp(self.gamma * logp) * log1mp
        a_pos, a_neg = (1.0, 1.0) if self.alpha is None else (self.alpha, 1.0 - self.alpha)
        if hard:
            valid = target != self.ignore_index
            idx = torch.where(valid, target, torch.zeros_like(target)).long()
            q = F.one_hot(idx, k).to(z.dtype)
        else:
            q, valid = _soft_targets(target)
        per = (a_pos * q * pos + a_neg * (1.0 - q) * neg).sum(dim=1)
        if self.weight is not None:
            per = per * (q * self.weight.to(device=z.device, dtype=z.dtype)).sum(dim=1)
        per = torch.where(valid, per, torch.zeros_like(per))
        if self.reduction == "sum":
            return per.sum()
        return per.sum() / valid.sum().clamp_min(1).to(per.dtype)


# --------------------------------------------------------------------------------------------------
# valence / arousal


class VALoss(nn.Module):
    """Regression loss for (N, D) valence/arousal predictions; NaN targets are masked out.

    * ``"mse"``: mean squared error pooled over every (sample, dimension) whose target is present
      (equals ``F.mse_loss`` when nothing is missing).
    * ``"ccc"``: ``1 - CCC`` per dimension (Lin's concordance, population moments, computed over the
      batch's present targets), averaged over the dimensions with at least 2 present targets (CCC
      is a batch statistic and needs 2). ``eps`` in the denominator keeps a constant batch finite.
    * ``"mse+ccc"``: the sum of the two.

    A batch with no usable target gives a 0 that keeps a ``grad_fn``.
    """

    def __init__(self, kind: Literal["mse", "ccc", "mse+ccc"] | str = "mse",
                 eps: float = 1e-8) -> None:
        super().__init__()
        if kind not in VA_KINDS:
            raise ValueError(f"unknown valence/arousal loss {kind!r}; choose one of "
                             f"{list(VA_KINDS)}")
        self.kind = kind
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss of (N, D) predictions against (N, D) targets (NaN = missing)."""
        if pred.ndim != 2 or target.shape != pred.shape:
            raise ValueError(f"VALoss: pred and target must both be (N, D), got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        p = pred.float()
        mask = ~torch.isnan(target)
        m = mask.to(p.dtype)
        t = torch.where(mask, target.to(p.dtype), torch.zeros_like(p))
        loss = _zero_like(p)
        if self.kind in ("mse", "mse+ccc"):
            loss = loss + (((p - t) ** 2) * m).sum() / m.sum().clamp_min(1)
        if self.kind in ("ccc", "mse+ccc"):
            loss = loss + self._ccc_loss(p, t, m)
        return loss

    def _ccc_loss(self, p: Tensor, t: Tensor, m: Tensor) -> Tensor:
        n = m.sum(dim=0)
        used = (n >= 2).to(p.dtype)
        n1 = n.clamp_min(1)
        mu_t = (t * m).sum(dim=0) / n1
        mu_p = (p * m).sum(dim=0) / n1
        dt = (t - mu_t) * m
        dp = (p - mu_p) * m
        cov = (dt * dp).sum(dim=0) / n1
        var_t = (dt * dt).sum(dim=0) / n1
        var_p = (dp * dp).sum(dim=0) / n1
        ccc = 2 * cov / (var_t + var_p + (mu_t - mu_p) ** 2 + self.eps)
        return ((1 - ccc) * used).sum() / used.sum().clamp_min(1)


# --------------------------------------------------------------------------------------------------
# task-level loss


class MultiTaskLoss(nn.Module):
    """``cls_loss(logits, labels) + va_weight * va_loss(va, va_targets)``, the trainer's signature.

    Called as ``loss_fn(outputs, labels, va_targets)``:

    * both losses: ``outputs`` is the model's ``(logits, va)`` tuple;
    * only ``cls_loss`` (``va_loss=None``): ``outputs`` is the logits, ``va_targets`` is ignored
      and may be None;
    * only ``va_loss`` (``cls_loss=None``): ``outputs`` is the (N, 2) va tensor, ``labels`` is
      ignored and may be None.

    The outputs are taken apart by the one output contract, :func:`bregnet.models.split_outputs`.

    Samples missing one kind of target (label -1, NaN va) simply drop out of that term.
    :meth:`components` returns the parts for logging.
    """

    def __init__(self, cls_loss: nn.Module | None, va_loss: nn.Module | None,
                 va_weight: float = 1.0) -> None:
        super().__init__()
        if cls_loss is None and va_loss is None:
            raise ValueError("MultiTaskLoss needs a classification loss, a va loss, or both")
        if va_weight < 0:
            raise ValueError(f"va_weight must be >= 0, got {va_weight}")
        self.cls_loss = cls_loss
        self.va_loss = va_loss
        self.va_weight = float(va_weight)

    def extra_repr(self) -> str:
        return f"va_weight={self.va_weight}"

    def components(self, outputs: Tensor | Sequence[Tensor], labels: Tensor | None = None,
                   va_targets: Tensor | None = None) -> dict[str, Tensor]:
        """``{"cls": ..., "va": ..., "loss": total}`` (only the parts that exist)."""
        logits, va = split_outputs(outputs, self.cls_loss is not None, self.va_loss is not None)
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        if self.cls_loss is not None:
            if labels is None:
                raise ValueError("this loss needs class labels, got labels=None")
            parts["cls"] = self.cls_loss(logits, labels)
            total = parts["cls"]
        if self.va_loss is not None:
            if va_targets is None:
                raise ValueError("this loss needs valence/arousal targets, got va_targets=None")
            parts["va"] = self.va_loss(va, va_targets)
            weighted = self.va_weight * parts["va"]
            total = weighted if total is None else total + weighted
        assert total is not None
        parts["loss"] = total
        return parts

    def forward(self, outputs: Tensor | Sequence[Tensor], labels: Tensor | None = None,
                va_targets: Tensor | None = None) -> Tensor:
        """The scalar total loss."""
        return self.components(outputs, labels, va_targets)["loss"]


def build_loss(
    task: Literal["categorical", "dimensional", "multitask"] | str,
    class_counts: Sequence[int] | np.ndarray | Tensor | None = None,
    weighting: WeightScheme | str = "inverse",
    loss: Literal["ce", "focal", "focal-official"] | str = "ce",
    va_loss: Literal["mse", "ccc", "mse+ccc"] | str = "mse",
    va_weight: float = 1.0,
    focal_gamma: float = 2.0,
    focal_alpha: float | Sequence[float] | None = 0.25,
    beta: float = 0.999,
    label_smoothing: float = 0.0,
) -> MultiTaskLoss:
    """Build a task's training loss, called as ``loss_fn(outputs, labels, va_targets)``.

    Call signature of the returned module (a :class:`MultiTaskLoss`)::

        loss = loss_fn(outputs, labels, va_targets)   # scalar tensor, differentiable

    * ``task="categorical"``: ``outputs`` = logits (N, K); ``labels`` = (N,) int64 with -1 for
      unlabelled samples, or (N, K) soft targets; ``va_targets`` is ignored (pass None).
    * ``task="dimensional"``: ``outputs`` = (N, 2) valence/arousal; ``labels`` is ignored (None);
      ``va_targets`` = (N, 2) float with NaN for missing values.
    * ``task="multitask"``: ``outputs`` = ``(logits, va)``; both targets as above, total =
      ``cls + va_weight * va``. ``loss_fn.components(...)`` gives the parts for logging.

    Parameters
    ----------
    class_counts:
        Training-set count per class, in the model's output order. Required for categorical and
        multi-task losses unless ``weighting="none"``.
    weighting:
        ``none | inverse | sqrt | effective`` (see :func:`class_weights`; ``beta`` for effective).
    loss:
        ``"ce"``: :class:`WeightedCrossEntropy` with the class weights and ``label_smoothing``.
        ``"focal"``: :class:`FocalLoss` with ``focal_gamma``; its alpha is ``focal_alpha`` (scalar,
        per-class sequence or None) times the class weights when ``weighting`` is not "none".
        ``"focal-official"``: :class:`OfficialFocalLoss`, the official code's two-term form, with
        ``focal_gamma``, a scalar ``focal_alpha`` in [0, 1] (or None) and the class weights as
        per-sample weights.
    va_loss, va_weight:
        :class:`VALoss` kind and the weight of the va term in the multi-task sum.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    if loss not in CLS_LOSSES:
        raise ValueError(f"unknown classification loss {loss!r}; choose one of {list(CLS_LOSSES)}")
    if weighting not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown class weighting {weighting!r}; choose one of "
                         f"{list(WEIGHT_SCHEMES)}")
    cls: nn.Module | None = None
    if task in ("categorical", "multitask"):
        weights: Tensor | None = None
        if weighting != "none":
            if class_counts is None:
                raise ValueError(f"weighting={weighting!r} needs class_counts (the training "
                                 "set's count per class); pass them or use weighting='none'")
            weights = class_weights(class_counts, weighting, beta=beta)
        if loss == "ce":
            cls = WeightedCrossEntropy(weights, label_smoothing=label_smoothing)
        elif label_smoothing:
            raise ValueError("label_smoothing is only supported with loss='ce'")
        elif loss == "focal-official":
            if focal_alpha is not None and torch.as_tensor(focal_alpha).ndim != 0:
                raise ValueError("focal-official takes a scalar focal_alpha in [0, 1]")
            cls = OfficialFocalLoss(gamma=focal_gamma,
                                    alpha=None if focal_alpha is None else float(focal_alpha),  # type: ignore[arg-type]
                                    weight=weights)
        else:
            alpha: Tensor | None = None
            if focal_alpha is not None:
                alpha = torch.as_tensor(focal_alpha, dtype=torch.float32)
            if weights is not None:
                alpha = weights if alpha is None else alpha * weights
            cls = FocalLoss(gamma=focal_gamma, alpha=alpha)
    va = VALoss(va_loss) if task in ("dimensional", "multitask") else None
    return MultiTaskLoss(cls, va, va_weight=va_weight)
