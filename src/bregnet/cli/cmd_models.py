"""``bregnet models``: list the registered networks with their parameter counts."""

from __future__ import annotations

import argparse

from ._common import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered networks",
                       description="List registered network names, their layout and parameters.")
    p.add_argument("--num-classes", type=positive_int, default=8, help="classes for the parameter count")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import create_model, list_models, model_info

    print(f"{'name':<12} {'params':>11}  description")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name:<12} {n:>11,}  {model_info(name)}")
    return 0
