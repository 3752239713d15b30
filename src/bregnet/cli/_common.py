"""Argument helpers shared by the sub-commands.

Argument *types* check each value when argparse reads it, so a wrong type or range is reported by
argparse itself (one line, exit code 2) before any work starts. Values given on the command line
are strings and stay strings unless a type converts them: paths and names are never re-parsed
as YAML; only ``--option KEY=VALUE`` values are read as YAML scalars, by the one parser that also
reads ``section.key=value`` overrides (:func:`bregnet.engine.config.parse_scalar`).
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Iterable

from ..device import check_device_name
from ..errors import UsageError

__all__ = [
    "add_data_args",
    "data_overrides",
    "device_arg",
    "float_range",
    "int_range",
    "key_value",
    "non_negative_int",
    "positive_int",
    "reader_options",
]


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer with ``lo <= value <= hi`` (either bound optional)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the range (open or closed at each end)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def device_arg(text: str) -> str:
    """An argparse type for ``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    Only the spelling is checked here; whether the device exists is checked, before any work, by
    :func:`bregnet.device.resolve_device` in the library call."""
    try:
        return check_device_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def key_value(text: str) -> tuple[str, str]:
    """An argparse type for ``KEY=VALUE``: the key stripped (``-`` read as ``_``), the value kept
    as given (text; :func:`reader_options` reads it as a YAML scalar)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} must look like key=value")
    key, value = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key:
        raise argparse.ArgumentTypeError(f"{text!r} has an empty key")
    return key, value


def reader_options(pairs: Iterable[tuple[str, str]] | None) -> dict[str, Any]:
    """``--option`` pairs -> reader options, each value read by
    :func:`bregnet.engine.config.parse_scalar` (the rule of ``section.key=value`` overrides)."""
    from ..engine.config import parse_scalar

    return {key: parse_scalar(value) for key, value in pairs or ()}


def add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--data / --root / --cache / --option, mapping onto the config's ``data`` section."""
    p.add_argument("--data", required=required, help="data set name (synthetic, fer2013, ferplus, affectnet, "
                   "rafdb, affwild2, folder, csv)")
    p.add_argument("--root", help="folder holding the data set's files")
    p.add_argument("--cache", help="prepared cache folder (built on first use)")
    p.add_argument("--option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="reader option, e.g. --option num_classes=7 (repeatable)")


def data_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """Data arguments -> typed ``("data.<key>", value)`` config overrides: paths and names stay
    the strings given (``--root 2013`` is the folder "2013", never the number)."""
    out: list[tuple[str, Any]] = []
    if getattr(args, "data", None):
        out.append(("data.name", args.data))
    if getattr(args, "root", None):
        out.append(("data.root", args.root))
    if getattr(args, "cache", None):
        out.append(("data.cache", args.cache))
    for key, value in reader_options(getattr(args, "option", None)).items():
        out.append((f"data.options.{key}", value))
    return out
