"""``bregnet prepare``: convert a data set into the prepared (memory-mapped) cache training reads."""

from __future__ import annotations

import argparse

from ._common import key_value, positive_int, reader_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", help="convert a data set into the fast prepared cache",
        description="Decode, crop and store a data set as 64x64 uint8 arrays (memory-mapped) with "
                    "labels, valence/arousal and metadata. Resumable: rerun the same command after an "
                    "interruption. Unreadable images are skipped and listed in <out>/<split>/skipped.txt. "
                    "'--data synthetic' needs no --root (options n, seed, imbalance, difficulty, size).",
    )
    p.add_argument("--data", required=True, metavar="NAME",
                   help="data set name (synthetic, fer2013, ferplus, affectnet, rafdb, affwild2, folder, csv)")
    p.add_argument("--root", default=None, metavar="PATH", help="where the data set is stored")
    p.add_argument("--out", required=True, metavar="DIR", help="cache directory (one sub-folder per split)")
    p.add_argument("--split", action="append", metavar="SPLIT",
                   help="split to prepare (repeatable; default: all splits of the data set)")
    p.add_argument("--option", action="append", type=key_value, metavar="KEY=VALUE",
                   help="reader option (repeatable); the value is read as a YAML scalar: 7, 0.1, true")
    p.add_argument("--overwrite", action="store_true", help="rebuild splits that are already prepared")
    p.add_argument("--checkpoint-every", type=positive_int, default=1000, metavar="K",
                   help="save resumable progress every K items (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.cache import prepare_cache

    splits = [s for item in args.split for s in item.split(",") if s] if args.split else None
    report = prepare_cache(args.data, args.root, args.out, splits=splits, progress=not args.no_progress,
                           overwrite=args.overwrite, checkpoint_every=args.checkpoint_every,
                           **reader_options(args.option))
    print(report.summary())
    return 0
