"""``bregnet experiment ablation``: the BReG-Net ablation as one command."""

from __future__ import annotations

import argparse

from ._common import add_data_args, data_overrides, device_arg, float_range, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment", help="run the paper's experiments (ablation)",
        description="ResNet vs BReG-Net vs BReG-NeXt at depths 32/56/110, weighted vs plain loss, "
                    "on any data set; prints and writes the paper-style table.",
        epilog="example (the reduced run in BENCHMARKS.md; overrides go before the options): "
               "bregnet experiment ablation task=categorical train.max_time_s=null train.epochs=4 "
               "'data.sizes={train: 10000, val: 1000, test: 2000}' --recipe demo --depths 10 18 "
               "--out results/ablation-synthetic")
    p.add_argument("name", choices=["ablation"], help="experiment to run")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--recipe", default="bregnext50-fer2013", help="base recipe (data and training settings)")
    add_data_args(p)
    p.add_argument("--depths", nargs="+", type=positive_int, default=[32, 56, 110])
    p.add_argument("--families", nargs="+", default=["resnet", "bregnet", "bregnext"])
    p.add_argument("--weightings", nargs="+", default=["inverse", "none"])
    p.add_argument("--width-scale", type=float_range(0.0, 16.0, lo_open=True), default=1.0,
                   help="scale the 32/64/128 widths")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--device", type=device_arg, default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..engine.runs import run_ablation

    run_ablation(args.recipe, args.out, args.depths, args.families, args.weightings,
                 [*data_overrides(args), *args.overrides], args.width_scale,
                 progress=not args.no_progress, device=args.device)
    print((Path(args.out) / "ablation.md").read_text())
    return 0
