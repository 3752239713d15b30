"""``bregnet gradients``: the gradient-flow study (identity vs bounded shortcuts, per-unit norms)."""

from __future__ import annotations

import argparse
import os
import sys


from ._common import float_range, int_range, non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradients",
        help="gradient-flow study: per-unit gradient norms, identity vs bounded shortcuts",
        description="Measure the norm of d loss / d (unit input) for every residual unit of the "
                    "6n+2 networks, for each shortcut and depth, at initialisation and after N Adam "
                    "steps. Writes gradients.json and gradients.png to --out and prints a table.",
    )
    p.add_argument("--depths", type=int, nargs="+", choices=[32, 56, 110], default=[32, 56, 110], metavar="D",
                   help="network depths, from 32 56 110 (default: all three)")
    p.add_argument("--shortcuts", nargs="+", default=["identity", "arctan", "adaptive"], metavar="S",
                   help="shortcut mappings: identity arctan tanh softsign adaptive "
                        "(default: identity arctan adaptive)")
    p.add_argument("--steps", type=non_negative_int, default=0,
                   help="Adam steps before the second measurement (default 0: initialisation only)")
    p.add_argument("--batch-size", type=int_range(2), default=8,
                   help="probe and training batch, at least 2 (batch norm needs a batch; default 8)")
    p.add_argument("--lr", type=float_range(0.0, lo_open=True), default=1e-4,
                   help="Adam learning rate (default 1e-4, the paper's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for weights and data (default 0)")
    p.add_argument("--data", choices=["auto", "synthetic", "random"], default="auto",
                   help="probe images: the synthetic faces (auto, when available) or seeded noise")
    p.add_argument("--image-size", type=int_range(16, 1024), default=64,
                   help="input side in pixels, a multiple of 4 (default 64; 32 is about 4x faster)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often faster for "
                        "small images on a busy machine)")
    p.add_argument("--out", default="gradients", metavar="DIR",
                   help="output folder (default ./gradients)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.gradients import format_study_table, gradient_study, plot_gradient_study
    from ..analysis.report import write_json
    from ..errors import UsageError
    from ..fileio import check_output_dir
    from ..models import SHORTCUTS

    bad_s = [s for s in args.shortcuts if s not in SHORTCUTS]
    if bad_s:
        raise UsageError(f"--shortcuts: unknown shortcut {bad_s[0]!r}; choose from {' '.join(SHORTCUTS)}")
    if args.image_size % 4:
        raise UsageError(f"--image-size must be a multiple of 4, got {args.image_size}")
    check_output_dir(args.out, "--out folder")  # before the study runs

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    result = gradient_study(
        depths=args.depths, shortcuts=args.shortcuts, steps=args.steps,
        batch_size=args.batch_size, seed=args.seed, lr=args.lr, data=args.data,
        image_size=args.image_size, progress=progress,
    )
    os.makedirs(args.out, exist_ok=True)
    json_path = write_json(result, os.path.join(args.out, "gradients.json"))
    png_path = plot_gradient_study(result, os.path.join(args.out, "gradients.png"))
    print(format_study_table(result))
    print(f"data: {result['config']['data']}; |dL/dx| = gradient norm at the image, "
          "first/last = first-unit over last-unit gradient norm")
    print(f"wrote {json_path} and {png_path}")
    return 0
