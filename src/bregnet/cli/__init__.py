"""The ``bregnet`` command. Thin: each sub-command lives in ``cli/cmd_<name>.py`` and only parses
arguments and calls the library.

Error contract: a :class:`~bregnet.errors.BregnetError` (a fault the user can fix) and the
operating system's file errors (:class:`OSError`: no permission, disk full, no such file) print one
line and exit with code 2; so does an argument of the wrong type or range, which argparse finds
while parsing (the parser prints the one line ``bregnet <command>: error: ...`` instead of its
usage block; ``--help`` shows the usage). Any other exception is a bug: it keeps its traceback."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Sequence

from .._version import __version__
from ..errors import BregnetError

# Order shown in --help. Each module defines ``register(subparsers)`` which adds its parser and
# sets ``func=run`` where ``run(args) -> int``.
COMMANDS = (
    "demo", "train", "evaluate", "predict", "export", "convert-tf", "gradients",
    "experiment", "prepare", "models", "weights", "serve",
)


class _ArgumentError(Exception):
    """An argument argparse refused: ``prog`` and the one-line ``message``."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, reporting a bad argument as one line (no usage block) with exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        raise _ArgumentError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bregnet",
        description="Facial affect computing with Bounded Residual Gradient Networks "
                    "(BReG-Net, BReG-NeXt): train, evaluate, run and export.",
    )
    parser.add_argument("--version", action="version", version=f"bregnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"{__name__}.cmd_{name.replace('-', '_')}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        print(f"{exc.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("bregnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BregnetError as exc:
        print(f"bregnet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the OS's file errors: permission, full disk, missing file...
        print(f"bregnet {args.command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split()) if text else type(exc).__name__


def _os_error_line(exc: OSError) -> str:
    """``path: reason`` for an OSError (e.g. "/ro/out.csv: Permission denied")."""
    reason = exc.strerror or _one_line(exc)
    if exc.filename is not None:
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{where}: {reason}"
    return reason


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
