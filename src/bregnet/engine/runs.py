"""Whole jobs built from the pieces: train from a config, the demo, the paper's ablation."""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import OutputError, UsageError
from ..fileio import atomic_write_text, check_output_dir, json_text
from ..models import FAMILIES
from .config import load_config, validate
from .data import load_split
from .runstate import GENERATION_FILES, RUN_FILES

__all__ = ["prepare_demo_folder", "run_ablation", "run_demo", "train_from_config"]


def train_from_config(cfg: dict[str, Any], out_dir: str | Path, device: str | None = "auto",
                      resume: bool = False, progress: bool = True, evaluate_test: bool = False,
                      callbacks: Sequence[Any] = (), force_config: bool = False) -> dict[str, Any]:
    """Load data, train (or resume), and optionally score the best checkpoint on the test split.

    A folder that already holds a run is only continued (``resume``), never trained over. The
    resumed run must match ``cfg``; ``force_config`` continues a changed schedule or budget
    (:meth:`~bregnet.engine.trainer.Trainer.resume`)."""
    from ..device import resolve_device
    from .runstate import find_resumable, has_run
    from .trainer import build_trainer

    if force_config and not resume:
        raise UsageError("--force-config only applies with --resume")
    out_dir = check_output_dir(out_dir, "run folder")
    resolve_device(device)  # a device this machine lacks is one line, before the data loads
    if not resume and has_run(out_dir):
        raise OutputError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume:
        find_resumable(out_dir)  # nothing to resume, or only damaged state: one line before the data loads
    trainer = build_trainer(cfg, out_dir, device=device, progress=progress, callbacks=callbacks)
    if resume:
        trainer.resume(force_config=force_config)
    summary = trainer.fit()
    summary["is_main"] = trainer.dist.is_main
    test_split = cfg["data"].get("test_split")
    if evaluate_test and test_split and trainer.dist.is_main and summary["status"] != "interrupted":
        from .evaluate import evaluate_checkpoint

        summary["test_metrics"] = evaluate_checkpoint(
            out_dir / "best.safetensors", cfg["data"], test_split, out_dir / f"eval-{test_split}",
            device=str(trainer.device), progress=progress)
    from .distributed import cleanup

    cleanup(trainer.dist)
    return summary


DEMO_MARKER = ".bregnet-demo.json"
_DEMO_FORMAT = "bregnet-demo/1"
# what a demo writes, by name: the report (top level) and the trainer's run folder ``run/``
_DEMO_REPORT = ("metrics.json", "metrics.md", "train_summary.json", "confusion_matrix.png", "per_class_f1.png",
                "reliability.png", "faces.png", "valence_arousal.png", "learning_curves.png")
_DEMO_NAMES = re.compile(
    r"^(?:(?:{rep})|\.(?:{rep})\.[A-Za-z0-9_]+\.tmp"
    r"|run/(?:\.(?:{run})\.[A-Za-z0-9_]+\.tmp|(?:{run}))"
    r"|run/checkpoints/\d{{6,}}-step-\d+/(?:\.(?:{gen})\.[A-Za-z0-9_]+\.tmp|(?:{gen}))"
    r"|run/tb/events\.out\.tfevents\.[^/]+)$".format(
        rep="|".join(map(re.escape, _DEMO_REPORT)), run="|".join(map(re.escape, RUN_FILES)),
        gen="|".join(map(re.escape, GENERATION_FILES))))


def _demo_files(out: Path) -> dict[str, int]:
    """Every file (or link) under ``out`` but the marker: relative POSIX path -> size."""
    found = {}
    for p in sorted(out.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(out).as_posix()
        if rel != DEMO_MARKER:
            found[rel] = p.lstat().st_size
    return found


def _write_demo_marker(out: Path, files: dict[str, int], complete: bool) -> None:
    doc = {"format": _DEMO_FORMAT, "complete": complete, "files": files}
    atomic_write_text(out / DEMO_MARKER, json_text(doc, indent=1) + "\n")


def prepare_demo_folder(out: str | Path) -> list[str]:
    """Make ``out`` ready for a demo: refuse (OutputError, one line) a folder holding any file the
    demo did not write, else delete the demo's own earlier outputs there (those its marker
    ``.bregnet-demo.json`` lists, unchanged in size; after an interrupted demo, also the files
    it writes by name). Returns the files removed."""
    out = Path(out)
    if not out.is_dir():
        return []
    present = _demo_files(out)
    if not present:
        return []
    doc: Any = None
    marker = out / DEMO_MARKER
    if marker.is_file():
        try:
            doc = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            doc = None  # unreadable: nothing here is known to be the demo's
    if not (isinstance(doc, dict) and doc.get("format") == _DEMO_FORMAT and isinstance(doc.get("files"), dict)):
        first = next(iter(present))
        raise OutputError(f"{out} holds files the demo did not write ({first}{_more(present)}); "
                          "choose a new or empty --out folder")
    listed, complete = doc["files"], doc.get("complete") is True

    def ours(rel: str, size: int) -> bool:
        return listed.get(rel) == size or (not complete and _DEMO_NAMES.match(rel) is not None)

    foreign = [rel for rel, size in present.items() if not ours(rel, size)]
    if foreign:
        raise OutputError(f"{out} holds files the demo did not write or that changed since "
                          f"({foreign[0]}{_more(foreign)}); choose a new or empty --out folder")
    for rel in present:
        with contextlib.suppress(FileNotFoundError):
            (out / rel).unlink()
    checkpoints = out / "run" / "checkpoints"  # the folders the trainer made, now empty
    for d in [*(checkpoints.glob("*-step-*") if checkpoints.is_dir() else ()), checkpoints, out / "run" / "tb"]:
        with contextlib.suppress(OSError):
            d.rmdir()
    return list(present)


def _more(items: Any) -> str:
    return f" and {len(items) - 1} more" if len(items) > 1 else ""


def run_demo(out_dir: str | Path = "demo-report", max_time_s: float | None = None, seed: int = 0,
             progress: bool = True, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train the demo recipe on the synthetic faces, evaluate it on held-out faces, write a report.

    Returns the test metrics; the report folder holds metrics.json / metrics.md, the confusion
    matrix, per-class F1, reliability diagram, valence/arousal scatter, learning curves and a grid
    of held-out faces with true and predicted labels.
    """
    from ..analysis.report import write_json
    from .evaluate import evaluate_model, write_evaluation
    from .checkpoint import load_checkpoint
    from .trainer import Trainer

    out = check_output_dir(out_dir, "report folder")
    t0 = time.perf_counter()
    items = [f"train.seed={seed}", f"data.options.seed={seed}", *overrides]
    if max_time_s is not None:
        items.append(f"train.max_time_s={max_time_s}")
    cfg = load_config("demo", items)
    prepare_demo_folder(out)  # only the demo's own earlier outputs are ever replaced
    out.mkdir(parents=True, exist_ok=True)
    _write_demo_marker(out, {}, complete=False)
    run_dir = out / "run"
    data = cfg["data"]
    train_ds = load_split(data, "train", progress=progress)
    val_ds = load_split(data, "val", progress=progress)
    test_ds = load_split(data, "test", progress=progress)
    gen_s = time.perf_counter() - t0
    trainer = Trainer(cfg, run_dir, train_ds, val_ds, device="cpu", progress=progress)
    summary = trainer.fit()
    model, meta = load_checkpoint(run_dir / "best.safetensors")
    metrics, arrays = evaluate_model(model, meta, test_ds, batch_size=400)
    metrics.update({"dataset": "synthetic/test (SYNTHETIC drawn faces)", "train_status": summary["status"],
                    "epochs": summary["epoch"], "steps": summary["step"],
                    "data_generation_s": round(gen_s, 1),
                    "total_time_s": round(time.perf_counter() - t0, 1),
                    "chance_accuracy": float(1 / len(test_ds.classes)),
                    "majority_class_accuracy": float(np.bincount(test_ds.labels).max() / len(test_ds))})
    files = write_evaluation(out, metrics, arrays, title="bregnet demo: BReG-NeXt on synthetic faces",
                             images=test_ds.images, history=run_dir / "history.csv")
    write_json(summary, out / "train_summary.json")
    _write_demo_marker(out, _demo_files(out), complete=True)
    metrics["report"] = str(out)
    metrics["files"] = files
    return metrics


def run_ablation(base_recipe: str, out_dir: str | Path, depths: Sequence[int] = (32, 56, 110),
                 families: Sequence[str] = ("resnet", "bregnet", "bregnext"),
                 weightings: Sequence[str] = ("inverse", "none"), overrides: Sequence[str] = (),
                 width_scale: float = 1.0, progress: bool = True, device: str | None = "auto"
                 ) -> list[dict[str, Any]]:
    """The BReG-Net ablation: every family x depth x weighting trained with the same recipe and
    data, each scored on the test split. Writes ablation.json and ablation.md; returns the rows.

    Depths follow the 6n+2 template (n units in each of three stages at widths 32/64/128, scaled
    by ``width_scale``). If the base recipe's model defines its own ``stages`` (e.g. the demo's
    four-stage CPU layout), ``depth`` instead means 2 x (units) + 2 with the units spread evenly
    over those stages, and the recipe's other model arguments (stem) are kept.
    """
    from ..analysis.report import ablation_markdown, write_json
    from .checkpoint import load_checkpoint
    from .evaluate import evaluate_model
    from .trainer import Trainer

    for f in families:
        if f not in FAMILIES:
            raise UsageError(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    check_output_dir(out_dir, "ablation folder")
    cfg0 = load_config(base_recipe, overrides)
    base_args = dict(cfg0["model"].get("args") or {})
    base_stages = base_args.pop("stages", None)
    n_stages = len(base_stages) if base_stages else 3
    for d in depths:
        if d < 2 * n_stages + 2 or (d - 2) % (2 * n_stages):
            raise UsageError(f"depth {d} is not of the form {2 * n_stages}n+2 for a {n_stages}-stage layout")
    data = cfg0["data"]
    train_ds = load_split(data, data["train_split"], progress=progress)
    val_ds = load_split(data, data["val_split"], progress=progress)
    test_ds = load_split(data, data["test_split"], progress=progress)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    base_widths = [w for _, w in base_stages] if base_stages else [32, 64, 128]
    widths = [max(2, int(round(w * width_scale / 2)) * 2) for w in base_widths]
    for depth, family, weighting in itertools.product(depths, families, weightings):
        name = f"{family}{depth}-{weighting}"
        cfg = copy.deepcopy(cfg0)
        n = (depth - 2) // (2 * n_stages)
        registered = base_stages is None and depth in (32, 56, 110) and widths == [32, 64, 128]
        args = {} if registered else {**base_args, "stages": [[n, w] for w in widths], "stem_width": widths[0]}
        # a registered name only for its own layout; any other layout is the family's custom model
        cfg["model"] = {"name": f"{family}{depth}" if registered else f"{family}_custom",
                        "shortcut": FAMILIES[family], "args": args}
        cfg["train"]["weighting"] = weighting
        cfg["name"] = name
        validate(cfg)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, out / name, train_ds, val_ds, device=device, progress=progress)
        summary = trainer.fit()
        model, meta = load_checkpoint(out / name / "best.safetensors")
        metrics, _ = evaluate_model(model, meta, test_ds, batch_size=cfg["train"]["eval_batch_size"])
        row = {"model": f"{family}{depth}", "shortcut": FAMILIES[family], "depth": depth,
               "layout": "x".join(str(w) for w in widths) + f" n={n}", "weighting": weighting,
               "epochs": summary["epoch"], "steps": summary["step"],
               "train_time_s": round(time.perf_counter() - t0, 1), **metrics}
        rows.append(row)
        write_json(rows, out / "ablation.json")
        atomic_write_text(out / "ablation.md", ablation_markdown(rows, list(test_ds.classes)))
        if progress:
            print(f"{name}: accuracy {metrics.get('accuracy', float('nan')):.4f} "
                  f"macro-F1 {metrics.get('f1_macro', float('nan')):.4f}", flush=True)
    return rows
