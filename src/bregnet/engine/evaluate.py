"""Evaluation, the one path from a model and a data split to every metric.

:func:`predict_arrays` runs a model over an :class:`~bregnet.data.base.ArrayDataset`;
:func:`score_predictions` turns predictions into the metrics table (plus the expected calibration
error); :func:`evaluate_split` is what the trainer validates with (metrics and the loss);
:func:`evaluate_model` scores a checkpoint's model on any data set, matching classes by name
across data sets; :func:`write_evaluation` writes the report (metrics.json, metrics.md, plots) and
:func:`evaluate_checkpoint` does all of it for a checkpoint file. The trainer depends on this
module, never the reverse.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.base import ArrayDataset
from ..errors import DataError
from ..fileio import atomic_write_text, check_output_dir, write_json
from ..metrics import all_metrics, expected_calibration_error
from ..models import split_outputs
from ..preprocess import Preprocess
from .checkpoint import CheckpointMeta, load_checkpoint
from .data import remap_to_model

__all__ = ["evaluate_checkpoint", "evaluate_model", "evaluate_split", "loss_from_predictions",
           "predict_arrays", "score_predictions", "write_evaluation"]


@torch.no_grad()
def predict_arrays(model: nn.Module, ds: ArrayDataset, preprocess: Preprocess, task: str,
                   batch_size: int = 256, device: torch.device | str = "cpu", tta_flip: bool = False,
                   amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Class probabilities (N, K) and valence/arousal (N, 2) for every image of ``ds``.

    ``task`` (categorical | dimensional | multitask) says which heads the model has;
    ``tta_flip`` averages the predictions of each image and its mirror image.
    """
    model.eval()
    device = torch.device(device)
    has_logits, has_va = task != "dimensional", task != "categorical"
    probs, vas = [], []
    for start in range(0, len(ds), batch_size):
        idx = np.arange(start, min(start + batch_size, len(ds)))
        images, _, _ = ds.batch(idx)
        x = preprocess.normalize(images.to(device, non_blocking=True))
        views = [x, x.flip(3)] if tta_flip else [x]
        p_sum, v_sum = None, None
        for view in views:
            ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with ctx:
                logits, va = split_outputs(model(view), has_logits, has_va)
            if logits is not None:
                p = torch.softmax(logits.float(), dim=1)
                p_sum = p if p_sum is None else p_sum + p
            if va is not None:
                v_sum = va.float() if v_sum is None else v_sum + va.float()
        if p_sum is not None:
            probs.append((p_sum / len(views)).cpu().numpy())
        if v_sum is not None:
            vas.append((v_sum / len(views)).cpu().numpy())
    p_all = np.concatenate(probs).astype(np.float64) if probs else None
    v_all = np.concatenate(vas).astype(np.float64) if vas else None
    return p_all, v_all


def score_predictions(labels: np.ndarray | None, probs: np.ndarray | None, va_true: np.ndarray | None,
                      va_pred: np.ndarray | None, class_names: list[str] | None = None) -> dict[str, Any]:
    """Every metric of the predictions (:func:`bregnet.metrics.all_metrics`) plus ``ece``, the
    expected calibration error of the class probabilities. Pass ``None`` for a half not scored."""
    metrics: dict[str, Any] = all_metrics(y_true=labels if probs is not None else None,
                                          probs=probs if labels is not None else None,
                                          va_true=va_true if va_pred is not None else None,
                                          va_pred=va_pred if va_true is not None else None,
                                          class_names=class_names or None)
    if probs is not None and labels is not None:
        metrics["ece"] = float(expected_calibration_error(probs, labels))
    return metrics


def loss_from_predictions(loss_fn: nn.Module, task: str, ds: ArrayDataset, probs: np.ndarray | None,
                          va_pred: np.ndarray | None) -> float:
    """The training loss of the predictions on ``ds`` (log-probabilities stand in for the logits,
    which softmax-based losses cannot tell apart); computed on the CPU with a copy of ``loss_fn``."""
    logits = torch.from_numpy(np.log(np.clip(probs, 1e-12, None))).float() if probs is not None else None
    va = torch.from_numpy(va_pred).float() if va_pred is not None else None
    out = {"categorical": logits, "dimensional": va, "multitask": (logits, va)}[task]
    cpu_loss = copy.deepcopy(loss_fn).to("cpu")
    with torch.no_grad():
        return float(cpu_loss(out, torch.from_numpy(ds.labels), torch.from_numpy(ds.va)))


def evaluate_split(model: nn.Module, ds: ArrayDataset, preprocess: Preprocess, task: str,
                   classes: list[str] | None = None, loss_fn: nn.Module | None = None,
                   batch_size: int = 256, device: torch.device | str = "cpu", tta_flip: bool = False,
                   amp_dtype: torch.dtype | None = None
                   ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Metrics of ``model`` on ``ds`` whose classes are the model's (the trainer's validation),
    with ``loss`` when ``loss_fn`` is given. Returns ``(metrics, probs, va_pred)``."""
    probs, va_pred = predict_arrays(model, ds, preprocess, task, batch_size, device, tta_flip, amp_dtype)
    metrics = score_predictions(ds.labels if probs is not None else None, probs,
                                ds.va if va_pred is not None else None, va_pred, classes)
    if loss_fn is not None:
        metrics["loss"] = loss_from_predictions(loss_fn, task, ds, probs, va_pred)
    return metrics, probs, va_pred


def _task(meta: CheckpointMeta) -> str:
    if meta.labels and meta.va:
        return "multitask"
    return "dimensional" if meta.va else "categorical"


def evaluate_model(model: torch.nn.Module, meta: CheckpointMeta, ds: ArrayDataset,
                   batch_size: int = 256, device: str = "cpu", tta_flip: bool = False
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of ``model`` on ``ds`` and the arrays behind them.

    When the model's label names differ from the data set's (cross-data-set evaluation), classes
    are matched by name and scored on the classes both know, in the data set's order.
    """
    task = _task(meta)
    probs, va_pred = predict_arrays(model, ds, meta.preprocess, task, batch_size, device, tta_flip)
    labels, classes = ds.labels, list(ds.classes)
    if probs is not None and ds.has_labels:
        labels, probs, classes = remap_to_model(meta.labels, list(ds.classes), ds.labels, probs)
    use_cls = probs is not None and ds.has_labels
    use_va = va_pred is not None and ds.has_va
    if not use_cls and not use_va:
        predicts = " and ".join(p for p, on in (("classes", probs is not None),
                                                ("valence/arousal", va_pred is not None)) if on)
        raise DataError(f"nothing to score: the model predicts {predicts} but {ds.name}/{ds.split} "
                        f"has no matching annotations")
    metrics = score_predictions(labels if use_cls else None, probs if use_cls else None,
                                ds.va if use_va else None, va_pred if use_va else None,
                                classes if use_cls else None)
    arrays = {"labels": labels, "probs": probs if use_cls else None, "classes": classes,
              "va_true": ds.va if use_va else None, "va_pred": va_pred if use_va else None}
    return metrics, arrays


def write_evaluation(out_dir: str | Path, metrics: dict[str, Any], arrays: dict[str, Any],
                     title: str = "Evaluation", images: np.ndarray | None = None,
                     history: str | Path | None = None) -> dict[str, str]:
    """Write metrics.json, metrics.md and the plots a person would rather look at than read."""
    from ..analysis import plots
    from ..analysis.report import metrics_markdown
    from ..metrics import confusion_matrix

    out = check_output_dir(out_dir, "report folder")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {"metrics_json": write_json(metrics, out / "metrics.json")}
    classes = arrays["classes"]
    if arrays.get("probs") is not None:
        labels, probs = arrays["labels"], arrays["probs"]
        valid = labels >= 0
        pred = probs.argmax(1)
        cm = confusion_matrix(labels[valid], pred[valid], len(classes))
        files["confusion"] = plots.plot_confusion_matrix(cm, classes, out / "confusion_matrix.png")
        files["per_class_f1"] = plots.plot_per_class_f1(
            {c: metrics.get(f"f1/{c}", float("nan")) for c in classes}, out / "per_class_f1.png")
        plots.plot_reliability(probs[valid], labels[valid], out / "reliability.png")
        files["reliability"] = str(out / "reliability.png")
        if images is not None:
            k = min(48, len(images))
            rng = np.random.default_rng(0)
            pick = np.sort(rng.choice(len(images), size=k, replace=False))
            files["faces"] = plots.plot_face_grid(np.asarray(images[pick]), labels[pick], pred[pick], classes,
                                                  out / "faces.png", probs=probs[pick])
    if arrays.get("va_pred") is not None:
        files["va"] = plots.plot_va(arrays["va_true"], arrays["va_pred"], out / "valence_arousal.png")
    if history is not None and Path(history).is_file():
        files["learning_curves"] = plots.plot_learning_curves(history, out / "learning_curves.png")
    md = f"# {title}\n\n" + metrics_markdown(metrics, classes if arrays.get("probs") is not None else None)
    pictures = [f"![{Path(v).stem}]({Path(v).name})" for k, v in files.items() if str(v).endswith(".png")]
    md += "\n\n" + "\n\n".join(pictures) + "\n"
    atomic_write_text(out / "metrics.md", md)
    files["metrics_md"] = str(out / "metrics.md")
    return files


def evaluate_checkpoint(checkpoint: str | Path, data_cfg: dict[str, Any], split: str,
                        out_dir: str | Path | None = None, batch_size: int = 256,
                        device: str = "cpu", tta_flip: bool = False, progress: bool = True
                        ) -> dict[str, Any]:
    """Load ``checkpoint``, score it on ``split`` of the configured data set, write the report.
    The report folder and the device are checked before anything is loaded."""
    from ..device import resolve_device
    from .data import load_split

    if out_dir is not None:
        check_output_dir(out_dir, "report folder")
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, map_location=dev)
    ds = load_split(data_cfg, split, progress=progress)
    metrics, arrays = evaluate_model(model, meta, ds, batch_size, dev, tta_flip)
    metrics["checkpoint"] = str(checkpoint)
    metrics["dataset"] = f"{ds.name}/{ds.split}"
    metrics["tta_flip"] = bool(tta_flip)
    if out_dir is not None:
        write_evaluation(out_dir, metrics, arrays, title=f"{meta.model_name} on {ds.name}/{ds.split}",
                         images=ds.images)
    return metrics
