"""``bregnet demo``: train a small BReG-NeXt on the synthetic faces, evaluate, write a report."""

from __future__ import annotations

import argparse

from ._common import float_range, non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train + evaluate on the embedded synthetic faces (a few minutes on a CPU)",
        description="Train a small multi-task BReG-NeXt on the embedded SYNTHETIC face data set "
                    "for a few minutes, evaluate it on held-out faces and write a report folder.")
    p.add_argument("--out", default="demo-report",
                   help="report folder (default demo-report): new, empty, or an earlier demo's, whose "
                        "outputs it replaces; a folder holding other files is refused")
    p.add_argument("--minutes", type=float_range(0.0, lo_open=True), default=2.5,
                   help="training time budget (default 2.5)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for the demo recipe")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.runs import run_demo

    m = run_demo(args.out, max_time_s=args.minutes * 60, seed=args.seed, progress=not args.no_progress,
                 overrides=args.overrides)
    print(f"test accuracy {m['accuracy']:.3f} (chance {m['chance_accuracy']:.3f}, majority class "
          f"{m['majority_class_accuracy']:.3f}), macro F1 {m['f1_macro']:.3f}, "
          f"valence CCC {m.get('valence_ccc', float('nan')):.3f}, arousal CCC {m.get('arousal_ccc', float('nan')):.3f}")
    print(f"{m['epochs']} epochs in {m['total_time_s']:.0f} s; report: {m['report']}/metrics.md")
    return 0
