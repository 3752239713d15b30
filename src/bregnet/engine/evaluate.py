"""Evaluate a checkpoint on any split: every metric, a Markdown table and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.base import ArrayDataset
from ..errors import BregnetError
from ..metrics import all_metrics
from .checkpoint import CheckpointMeta, load_checkpoint
from .data import remap_to_model
from .trainer import predict_arrays

__all__ = ["evaluate_checkpoint", "evaluate_model", "write_evaluation"]


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
        raise BregnetError(f"nothing to score: the model predicts "
                           f"{'classes' if probs is not None else ''}{' and ' if probs is not None and va_pred is not None else ''}"
                           f"{'valence/arousal' if va_pred is not None else ''} but {ds.name}/{ds.split} "
                           f"has no matching annotations")
    metrics = all_metrics(y_true=labels if use_cls else None, probs=probs if use_cls else None,
                          va_true=ds.va if use_va else None, va_pred=va_pred if use_va else None,
                          class_names=classes if use_cls else None)
    if use_cls:
        from ..analysis.plots import expected_calibration_error

        valid = labels >= 0
        metrics["ece"] = float(expected_calibration_error(probs[valid], labels[valid]))
    arrays = {"labels": labels, "probs": probs if use_cls else None, "classes": classes,
              "va_true": ds.va if use_va else None, "va_pred": va_pred if use_va else None}
    return metrics, arrays


def write_evaluation(out_dir: str | Path, metrics: dict[str, Any], arrays: dict[str, Any],
                     title: str = "Evaluation", images: np.ndarray | None = None,
                     history: str | Path | None = None) -> dict[str, str]:
    """Write metrics.json, metrics.md and the plots a person would rather look at than read."""
    from ..analysis import plots
    from ..analysis.report import metrics_markdown, write_json
    from ..metrics import confusion_matrix

    out = Path(out_dir)
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
    (out / "metrics.md").write_text(md)
    files["metrics_md"] = str(out / "metrics.md")
    return files


def evaluate_checkpoint(checkpoint: str | Path, data_cfg: dict[str, Any], split: str,
                        out_dir: str | Path | None = None, batch_size: int = 256,
                        device: str = "cpu", tta_flip: bool = False, progress: bool = True
                        ) -> dict[str, Any]:
    """Load ``checkpoint``, score it on ``split`` of the configured data set, write the report."""
    from .data import load_split

    model, meta = load_checkpoint(checkpoint, map_location=device)
    ds = load_split(data_cfg, split, progress=progress)
    metrics, arrays = evaluate_model(model, meta, ds, batch_size, device, tta_flip)
    metrics["checkpoint"] = str(checkpoint)
    metrics["dataset"] = f"{ds.name}/{ds.split}"
    metrics["tta_flip"] = bool(tta_flip)
    if out_dir is not None:
        write_evaluation(out_dir, metrics, arrays, title=f"{meta.model_name} on {ds.name}/{ds.split}",
                         images=ds.images)
    return metrics
