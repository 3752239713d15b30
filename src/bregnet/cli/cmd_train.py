"""``bregnet train``: a YAML recipe plus overrides -> a run folder with checkpoints and history."""

from __future__ import annotations

import argparse

from ..errors import UsageError

from ._common import add_data_args, data_overrides, device_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a network from a recipe",
        description="Train with a shipped recipe (bregnet train --list) or a YAML file, plus "
                    "section.key=value overrides. Runs under torchrun for distributed training.",
        epilog="example: bregnet train bregnext50-fer2013 --root data/fer2013 --out runs/fer "
               "train.epochs=30 train.batch_size=128")
    p.add_argument("recipe", nargs="?", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4")
    p.add_argument("--out", help="run folder (default runs/<recipe name>)")
    add_data_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest complete checkpoint (the recipe must match)")
    p.add_argument("--force-config", action="store_true",
                   help="with --resume: continue with a deliberately changed schedule or budget (epochs, lr, "
                        "...); never a changed model, task, label set or data")
    p.add_argument("--device", type=device_arg, default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--evaluate-test", action="store_true",
                   help="after training, evaluate the best checkpoint on the test split")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.config import list_recipes, load_config
    from ..engine.runs import train_from_config

    if args.list:
        print("\n".join(list_recipes()))
        return 0
    if not args.recipe:
        raise UsageError("give a recipe name or YAML file (bregnet train --list shows the shipped ones)")
    cfg = load_config(args.recipe, [*data_overrides(args), *args.overrides])
    out = args.out or f"runs/{cfg['name']}"
    summary = train_from_config(cfg, out, device=args.device, resume=args.resume,
                                progress=not args.no_progress, evaluate_test=args.evaluate_test,
                                force_config=args.force_config)
    if summary.get("is_main", True):
        print(f"{summary['status']}: {summary['epoch']} epoch(s), {summary['step']} steps; best "
              f"{summary['select_metric']}={summary['best_value']} at epoch {summary['best_epoch']}; "
              f"run folder {out}")
    return 0
