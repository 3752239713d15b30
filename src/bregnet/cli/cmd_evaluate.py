"""``bregnet evaluate``: any checkpoint on any split -> metrics.json, metrics.md and plots."""

from __future__ import annotations

import argparse

from ._common import add_data_args, data_overrides, device_arg, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a checkpoint with every metric",
        description="Evaluate a checkpoint on a data split; writes metrics.json, metrics.md and "
                    "plots (confusion matrix, per-class F1, reliability, valence/arousal).",
        epilog="example: bregnet evaluate runs/fer/best.safetensors --data fer2013 --root data/fer2013 "
               "--split test --out reports/fer-test")
    p.add_argument("checkpoint", help="a .safetensors checkpoint, a run folder or a downloaded "
                                      "weights name (bregnet weights list)")
    add_data_args(p)
    p.add_argument("--split", default=None, help="split to score (default: the recipe's test split)")
    p.add_argument("--out", help="report folder (default: <checkpoint folder>/eval-<split>)")
    p.add_argument("--tta-flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..analysis.report import metrics_markdown
    from ..engine.checkpoint import read_metadata
    from ..engine.config import DEFAULTS, apply_overrides, merge
    from ..engine.evaluate import evaluate_checkpoint

    meta = read_metadata(args.checkpoint)
    recipe_data = (meta.recipe or {}).get("data") or {}
    cfg = merge(DEFAULTS, {"data": {k: v for k, v in recipe_data.items() if k in DEFAULTS["data"]}})
    cfg = apply_overrides(cfg, data_overrides(args))
    split = args.split or cfg["data"].get("test_split") or "test"
    ckpt = Path(args.checkpoint)
    out = args.out or str((ckpt if ckpt.is_dir() else ckpt.parent) / f"eval-{split}")
    metrics = evaluate_checkpoint(args.checkpoint, cfg["data"], split, out, args.batch_size,
                                  args.device, args.tta_flip)
    classes = [k.split("/", 1)[1] for k in metrics if k.startswith("f1/")] or None
    print(metrics_markdown(metrics, classes))
    print(f"report written to {out}")
    return 0
