"""Gradient-flow study: how the gradient of the loss travels back through the residual units.

The BReG-Net paper's claim (its introduction): with an identity shortcut ``y = F(x) + x`` the backward
signal ``dL/dx = dL/dy (1 + dF/dx)`` keeps the full shortcut term in every unit, so it passes
unchanged (or grows) through the whole depth; a bounded shortcut ``g`` with ``0 < g' <= 1``
damps the shortcut term in every unit, so the gradient can neither explode nor flow through
unchanged. This module measures it:

* :func:`measure_gradients` - one forward/backward pass: the gradient norm at the input of every
  residual unit, at the network input, per-unit parameter-gradient norms, the RMS of every unit's
  input activation and the mean shortcut slope ``g'(x)`` over that input.
* :func:`unit_gradient_norms` - just the per-unit input-gradient norms.
* :func:`gradient_study` - the study over shortcuts x depths, at initialisation and after N Adam
  steps, as a JSON-ready dict; :func:`plot_gradient_study` draws it;
  :func:`format_study_table` prints it.

All norms are L2 (Frobenius) norms over the whole batch tensor of the gradient of the
batch-mean cross-entropy. Models are measured in training mode (batch statistics), as in training.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

__all__ = [
    "DEFAULT_DEPTHS",
    "DEFAULT_SHORTCUTS",
    "format_study_table",
    "gradient_study",
    "make_probe_data",
    "measure_gradients",
    "plot_gradient_study",
    "unit_gradient_norms",
]

DEFAULT_DEPTHS: tuple[int, ...] = (32, 56, 110)
DEFAULT_SHORTCUTS: tuple[str, ...] = ("identity", "arctan", "adaptive")
_VALID_DEPTHS = (32, 56, 110)


def _logits(output: Any) -> torch.Tensor:
    """Categorical logits from a model output (a tensor, or ``(logits, va)`` for multi-task)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output


def _units(model: nn.Module) -> list[nn.Module]:
    units = getattr(model, "units", None)
    if units is None:
        raise UsageError("model has no `units` attribute listing its residual units")
    return list(units)


def _norm(t: torch.Tensor | None) -> float:
    return 0.0 if t is None else float(torch.linalg.vector_norm(t.detach().double()))


def measure_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """One forward/backward pass of ``loss_fn(logits, labels)`` (default: mean cross-entropy).

    ``images`` is the normalised float input (N, 3, H, W). Nothing is written to the parameters'
    ``.grad`` (``torch.autograd.grad`` is used) and the model's train/eval mode is left as is.
    Returns a dict of plain floats / lists (one entry per residual unit, in forward order):

    ``loss``, ``input_grad_norm`` (at the image), ``unit_grad_norms`` (dL/d unit input),
    ``unit_param_grad_norms`` (all parameters of the unit together), ``unit_input_rms``
    (RMS of the unit input activation) and ``shortcut_slope_mean`` (mean of g'(x) over the unit
    input's elements: 1 for the identity, < 1 for a bounded shortcut).
    """
    loss_fn = loss_fn or F.cross_entropy
    units = _units(model)
    captured: list[torch.Tensor | None] = [None] * len(units)

    def make_hook(i: int):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured[i] = inputs[0]

        return hook

    handles = [u.register_forward_pre_hook(make_hook(i)) for i, u in enumerate(units)]
    try:
        x = images.detach().to(torch.float32).clone().requires_grad_(True)
        loss = loss_fn(_logits(model(x)), labels)
    finally:
        for h in handles:
            h.remove()
    if any(t is None for t in captured):
        raise RuntimeError("some residual units were not called in the forward pass")
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)} in the gradient measurement")

    unit_params = [[p for p in u.parameters() if p.requires_grad] for u in units]
    flat_params = [p for ps in unit_params for p in ps]
    wrt = [x] + [t for t in captured] + flat_params  # type: ignore[misc]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    g_input, g_units = grads[0], grads[1 : 1 + len(units)]
    g_params = list(grads[1 + len(units) :])

    param_norms: list[float] = []
    k = 0
    for ps in unit_params:
        sq = sum(_norm(g) ** 2 for g in g_params[k : k + len(ps)])
        param_norms.append(math.sqrt(sq))
        k += len(ps)

    rms: list[float] = []
    slopes: list[float] = []
    with torch.enable_grad():
        for u, t in zip(units, captured):
            t = t.detach()  # type: ignore[union-attr]
            rms.append(float(t.double().pow(2).mean().sqrt()))
            probe = t.clone().requires_grad_(True)
            out = u.shortcut(probe)
            (slope,) = torch.autograd.grad(out.sum(), probe)  # element-wise g'(x)
            slopes.append(float(slope.double().mean()))

    return {
        "loss": float(loss.detach()),
        "input_grad_norm": _norm(g_input),
        "unit_grad_norms": [_norm(g) for g in g_units],
        "unit_param_grad_norms": param_norms,
        "unit_input_rms": rms,
        "shortcut_slope_mean": slopes,
    }


def unit_gradient_norms(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """L2 norm of d loss / d (input of unit i), for every residual unit in forward order."""
    return measure_gradients(model, images, labels, loss_fn)["unit_grad_norms"]


# ------------------------------------------------------------------------------------------ data


def make_probe_data(
    n: int,
    seed: int = 0,
    data: str = "auto",
    image_size: int = 64,
    num_classes: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, str, list[str]]:
    """``n`` normalised images (N, 3, S, S) float32 and labels for the study.

    ``data``: ``"synthetic"`` (the embedded synthetic faces, through the data set registry),
    ``"random"`` (seeded uniform noise images with random labels) or ``"auto"`` (the same as
    synthetic). Returns ``(images, labels, source, classes)``.
    """
    from ..preprocess import Preprocess

    if data not in ("auto", "synthetic", "random"):
        raise UsageError(f"unknown data {data!r}; choose auto, synthetic or random")
    source = "random" if data == "random" else "synthetic"
    classes: list[str] = [f"class{i}" for i in range(num_classes)]
    images_u8: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    if source == "synthetic":
        from ..data.registry import open_reader

        reader = open_reader("synthetic", None, "train", n=n, seed=seed, imbalance="none",
                             size=max(16, image_size))
        ds, _ = reader.to_arrays()
        images_u8, labels, _va = ds.batch(np.arange(n))
        classes = list(ds.classes)
    else:
        g = torch.Generator().manual_seed(seed)
        images_u8 = torch.randint(0, 256, (n, 3, image_size, image_size), generator=g,
                                  dtype=torch.uint8)
        labels = torch.randint(0, num_classes, (n,), generator=g)
    x = Preprocess().normalize(images_u8)
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True)
    return x.contiguous(), labels.long(), source, classes  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ study


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    g = m["unit_grad_norms"]
    first, last = g[0], g[-1]
    out = dict(m)
    out["first_unit_grad_norm"] = first
    out["last_unit_grad_norm"] = last
    out["first_last_ratio"] = first / last if last > 0 else float("inf")
    out["max_unit_grad_norm"] = max(g)
    out["min_unit_grad_norm"] = min(g)
    # Geometric-mean growth of the gradient per unit going backwards, from the last unit to the
    # second (> 1: it grows towards the input). Unit 1 is left out: its input is the stem output,
    # whose small scale makes unit 1's batch norm amplify the gradient whatever the shortcut.
    if len(g) > 2 and g[1] > 0 and last > 0:
        out["mean_unit_gain"] = (g[1] / last) ** (1.0 / (len(g) - 2))
    else:
        out["mean_unit_gain"] = float("nan")
    # The shortcut path alone: the product over units of the mean slope g'(x), as a log10.
    slopes = np.asarray(m["shortcut_slope_mean"], dtype=np.float64)
    out["log10_shortcut_path_gain"] = float(np.sum(np.log10(np.clip(slopes, 1e-300, None))))
    out["mean_shortcut_slope"] = float(np.mean(m["shortcut_slope_mean"]))
    return out


def gradient_study(
    depths: Sequence[int] = DEFAULT_DEPTHS,
    shortcuts: Sequence[str] = DEFAULT_SHORTCUTS,
    steps: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    lr: float = 1e-4,
    data: str = "auto",
    image_size: int = 64,
    num_classes: int = 8,
    pool_batches: int = 4,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per-unit gradient norms for every (shortcut, depth), at init and after ``steps`` Adam steps.

    Each network is the 6n+2 template (``resnet{depth}`` with the shortcut overridden), built with
    the same seed, so the convolution weights are identical across shortcuts and only the shortcut
    differs. The gradient is measured on a fixed probe batch (the first ``batch_size`` samples);
    training draws seeded batches of ``batch_size`` from a pool of ``pool_batches * batch_size``
    samples (the probe batch included) with Adam at ``lr`` (the paper's 1e-4).

    Returns a dict for :func:`bregnet.analysis.report.write_json` (plain floats and lists; a
    ratio can be inf/NaN only in degenerate cases, which ``write_json`` stores as null):

    * ``config``: the arguments, the data source actually used, torch version;
    * ``runs``: one entry per (shortcut, depth) with ``num_units``, ``seconds``, ``init`` and,
      when ``steps > 0``, ``trained`` measurements (see :func:`measure_gradients`) plus
      ``train_losses`` and, for the adaptive shortcut, the learned ``a``/``c`` per unit. Each
      measurement adds ``first_unit_grad_norm``, ``last_unit_grad_norm``, ``first_last_ratio``
      (> 1: the gradient grows towards the input), ``min/max_unit_grad_norm``,
      ``mean_unit_gain`` (geometric-mean backward growth per unit from the last unit to the
      second), ``mean_shortcut_slope`` and ``log10_shortcut_path_gain`` (log10 of the product of
      the mean shortcut slopes: what the shortcut path alone would keep of the gradient);
    * ``summary``: ``"<shortcut>/<depth>"`` -> the headline numbers.
    """
    from ..models import SHORTCUTS, create_model

    depths = [int(d) for d in depths]
    shortcuts = list(shortcuts)
    if not depths or not shortcuts:
        raise UsageError("need at least one depth and one shortcut")
    bad = [d for d in depths if d not in _VALID_DEPTHS]
    if bad:
        raise UsageError(f"unsupported depth {bad[0]}; choose from {', '.join(map(str, _VALID_DEPTHS))}")
    bad_s = [s for s in shortcuts if s not in SHORTCUTS]
    if bad_s:
        raise UsageError(f"unknown shortcut {bad_s[0]!r}; choose from {', '.join(SHORTCUTS)}")
    if steps < 0:
        raise UsageError("steps must be >= 0")
    if batch_size < 2:
        raise UsageError("batch size must be at least 2 (batch norm needs a batch)")
    if image_size < 8 or image_size % 4:
        raise UsageError("image size must be a multiple of 4, at least 8")
    if not lr > 0:
        raise UsageError("learning rate must be positive")

    pool_n = batch_size * (max(1, pool_batches) if steps > 0 else 1)
    images, labels, source, classes = make_probe_data(pool_n, seed, data, image_size, num_classes)
    probe_x, probe_y = images[:batch_size], labels[:batch_size]

    runs: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for depth in depths:
        for shortcut in shortcuts:
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            model = create_model(f"resnet{depth}", num_classes=len(classes), shortcut=shortcut)
            model.train()
            run: dict[str, Any] = {
                "shortcut": shortcut,
                "depth": depth,
                "num_units": len(model.units),
                "init": _summary(measure_gradients(model, probe_x, probe_y)),
            }
            if steps > 0:
                opt = torch.optim.Adam(model.parameters(), lr=lr)
                gen = torch.Generator().manual_seed(seed + 1)
                losses = []
                for _ in range(steps):
                    idx = torch.randperm(pool_n, generator=gen)[:batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(_logits(model(images[idx])), labels[idx])
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss while training {shortcut}/{depth}")
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                run["train_losses"] = losses
                run["trained"] = _summary(measure_gradients(model, probe_x, probe_y))
                if shortcut == "adaptive":
                    run["adaptive_params"] = [
                        {"a": float(u.shortcut.a.detach()), "c": float(u.shortcut.c.detach())}
                        for u in model.units
                    ]
            run["seconds"] = round(time.perf_counter() - t0, 3)
            runs.append(run)
            head = {
                "input_grad_norm_init": run["init"]["input_grad_norm"],
                "first_unit_grad_norm_init": run["init"]["first_unit_grad_norm"],
                "last_unit_grad_norm_init": run["init"]["last_unit_grad_norm"],
                "first_last_ratio_init": run["init"]["first_last_ratio"],
                "mean_unit_gain_init": run["init"]["mean_unit_gain"],
                "mean_shortcut_slope_init": run["init"]["mean_shortcut_slope"],
                "log10_shortcut_path_gain_init": run["init"]["log10_shortcut_path_gain"],
                "mean_unit_input_rms_init": float(np.mean(run["init"]["unit_input_rms"][1:] or [0.0])),
                "loss_init": run["init"]["loss"],
            }
            if steps > 0:
                head.update({
                    "input_grad_norm_trained": run["trained"]["input_grad_norm"],
                    "first_last_ratio_trained": run["trained"]["first_last_ratio"],
                    "mean_unit_gain_trained": run["trained"]["mean_unit_gain"],
                    "loss_trained": run["trained"]["loss"],
                })
            summary[f"{shortcut}/{depth}"] = head
            if progress is not None:
                progress(f"{shortcut:>9} depth {depth:>3}: {run['seconds']:.1f} s")
            del model

    return {
        "config": {
            "depths": depths,
            "shortcuts": shortcuts,
            "steps": int(steps),
            "batch_size": int(batch_size),
            "seed": int(seed),
            "lr": float(lr),
            "optimizer": "Adam",
            "loss": "cross-entropy (batch mean)",
            "data": source,
            "image_size": int(image_size),
            "num_classes": len(classes),
            "classes": classes,
            "norm": "L2 norm over the whole batch tensor, model in training mode",
            "torch": torch.__version__,
        },
        "runs": runs,
        "summary": summary,
    }


def format_study_table(result: dict[str, Any]) -> str:
    """A short plain-text table of the study's headline numbers."""
    trained = result["config"]["steps"] > 0
    head = f"{'shortcut':<9} {'depth':>5} {'|dL/dx|':>10} {'first unit':>11} {'last unit':>10} {'first/last':>10} {'loss':>7}"
    if trained:
        head += f" | {'|dL/dx| N':>10} {'first/last N':>12} {'loss N':>7}"
    lines = [head, "-" * len(head)]
    for run in result["runs"]:
        i = run["init"]
        line = (f"{run['shortcut']:<9} {run['depth']:>5} {i['input_grad_norm']:>10.3g} "
                f"{i['first_unit_grad_norm']:>11.3g} {i['last_unit_grad_norm']:>10.3g} "
                f"{i['first_last_ratio']:>10.3g} {i['loss']:>7.3f}")
        if trained:
            t = run["trained"]
            line += (f" | {t['input_grad_norm']:>10.3g} {t['first_last_ratio']:>12.3g} "
                     f"{t['loss']:>7.3f}")
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ plot

_COLORS = {"identity": "#d62728", "arctan": "#1f77b4", "adaptive": "#2ca02c",
           "tanh": "#9467bd", "softsign": "#ff7f0e"}


def plot_gradient_study(result: dict[str, Any], path: str) -> str:
    """Draw a :func:`gradient_study` result and write a PNG; returns its path.

    Top row: per-unit gradient norm ``||dL / d unit input||`` vs unit index (log y), one panel per
    depth, one colour per shortcut, solid at initialisation and dashed after training. Bottom row:
    the RMS of each unit's input activation (what the bounded shortcut keeps small), same styles.
    """
    from .plots import _figure, _finish

    cfg = result["config"]
    depths = list(cfg["depths"])
    fig = _figure((5.2 * len(depths), 7.6))
    axes = fig.subplots(2, len(depths), squeeze=False, height_ratios=[3, 2])
    phases = (("init", "-", "init"), ("trained", "--", f"after {cfg['steps']} steps"))
    for col, depth in enumerate(depths):
        ax, axr = axes[0, col], axes[1, col]
        runs = [r for r in result["runs"] if r["depth"] == depth]
        for run in runs:
            color = _COLORS.get(run["shortcut"])
            for key, style, tag in phases:
                if key not in run:
                    continue
                g = run[key]["unit_grad_norms"]
                units = np.arange(1, len(g) + 1)
                ax.semilogy(units, g, style, color=color, lw=1.6,
                            label=f"{run['shortcut']} ({tag}): |dL/dx| {run[key]['input_grad_norm']:.2g}")
                axr.plot(units, run[key]["unit_input_rms"], style, color=color, lw=1.4,
                         label=f"{run['shortcut']} ({tag})")
        n_units = runs[0]["num_units"] if runs else 0
        per_stage = n_units // 3
        for a_ in (ax, axr):
            for b in (per_stage + 0.5, 2 * per_stage + 0.5):
                a_.axvline(b, color="0.6", lw=0.8, ls=":")
            a_.grid(True, which="both", alpha=0.25)
        ax.set_title(f"{depth} layers ({n_units} units)")
        ax.set_ylabel("gradient norm at unit input (log)")
        ax.legend(fontsize=7.5, loc="upper right", title="|dL/dx| = norm at the image",
                  title_fontsize=7.5)
        axr.set_xlabel("residual unit (1 = nearest the input; dotted = stage boundary)")
        axr.set_ylabel("RMS of unit input")
        axr.set_ylim(bottom=0)
    fig.suptitle(
        "Gradient flow: identity vs bounded shortcuts "
        f"(batch {cfg['batch_size']}, {cfg.get('data', '?')} data, {cfg.get('image_size', 64)} px)",
        fontsize=11)
    return _finish(fig, path)
