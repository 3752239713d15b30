"""The ``bregnet`` command. Thin: each sub-command lives in ``cli/cmd_<name>.py`` and only parses
arguments and calls the library. Errors the user can fix print one line and exit with code 2."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Sequence

from .._version import __version__
from ..errors import BregnetError

# Order shown in --help. Each module defines ``register(subparsers)`` which adds its parser and
# sets ``func=run`` where ``run(args) -> int``.
COMMANDS = (
    "demo", "train", "evaluate", "predict", "export", "convert-tf", "gradients",
    "experiment", "prepare", "models",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("bregnet: interrupted", file=sys.stderr)
        return 130
    except (BregnetError, FileNotFoundError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"bregnet {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
