"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse


def add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--data / --root / --cache / --option, mapping onto the config's ``data`` section."""
    p.add_argument("--data", required=required, help="data set name (synthetic, fer2013, ferplus, affectnet, "
                   "rafdb, affwild2, folder, csv)")
    p.add_argument("--root", help="folder holding the data set's files")
    p.add_argument("--cache", help="prepared cache folder (built on first use)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, e.g. --option num_classes=7 (repeatable)")


def data_overrides(args: argparse.Namespace) -> list[str]:
    """Turn data arguments into ``data.*=...`` config overrides."""
    out = []
    if getattr(args, "data", None):
        out.append(f"data.name={args.data}")
    if getattr(args, "root", None):
        out.append(f"data.root={args.root}")
    if getattr(args, "cache", None):
        out.append(f"data.cache={args.cache}")
    for item in getattr(args, "option", []) or []:
        if "=" not in item:
            raise ValueError(f"--option {item!r} must look like key=value")
        out.append(f"data.options.{item}")
    return out
