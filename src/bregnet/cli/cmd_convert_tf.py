"""``bregnet convert-tf``: turn the authors' TensorFlow checkpoint into a bregnet checkpoint."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-tf",
        help="convert the official BReG-NeXt-50 TensorFlow checkpoint",
        description="Convert the official BReG-NeXt-50 TensorFlow checkpoint (trained on AffectNet "
                    "by the authors) into a bregnet checkpoint, without TensorFlow. PREFIX is the "
                    "checkpoint prefix (e.g. .../categorical_attempt_1/checkpoints), its .index "
                    "file, or the folder holding checkpoints.index and "
                    "checkpoints.data-00000-of-00001.",
    )
    p.add_argument("prefix", metavar="PREFIX", help="TF checkpoint prefix, .index file or folder")
    p.add_argument("--out", "-o", metavar="DIR_OR_FILE",
                   help="output folder (gets model.safetensors) or .safetensors file")
    p.add_argument("--labels", metavar="A,B,...",
                   help="class names in output order (default: AffectNet's 8 categories)")
    p.add_argument("--list", action="store_true",
                   help="only list the checkpoint's variables (name, dtype, shape) and exit")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the CRC32C check of the tensor bytes (not recommended)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..export.convert_tf import convert_tf_checkpoint, is_skipped_variable
    from ..export.tf_bundle import TensorBundle

    if args.list:
        bundle = TensorBundle(args.prefix)
        try:
            for name in bundle.names():
                e = bundle.entries[name]
                tag = "  (skipped)" if is_skipped_variable(name) else ""
                print(f"{name}\t{e.dtype}\t{list(e.shape)}{tag}")
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. piped into `head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if not args.out:
        raise UsageError("--out is required (a folder or a .safetensors file)")
    labels = None
    if args.labels:
        labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    _path, report = convert_tf_checkpoint(args.prefix, args.out, labels=labels,
                                          verify=not args.no_verify)
    print(report.summary())
    return 0
