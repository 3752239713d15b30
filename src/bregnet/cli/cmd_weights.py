"""``bregnet weights list | info | download | path | remove``: named pretrained weights."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from urllib.parse import urlsplit

from ..errors import UsageError
from ._common import float_range, non_negative_int

EPILOG = """\
examples:
  bregnet weights list
  bregnet weights download bregnext50.affectnet          # once: about 37 MB from the authors' repository
  bregnet predict bregnext50.affectnet photo.jpg         # a weights name works wherever a checkpoint does
  bregnet weights download bregnext50.affectnet --from ~/Downloads/bregnext   # files fetched by other means
  bregnet weights path bregnext50.affectnet

The cache folder is $BREGNET_HOME/weights (default: the user cache folder, e.g. ~/.cache/bregnet).
Only `download` touches the network, and only when run.
"""


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="named pretrained weights: list, info, download, path, remove",
                       description="Named pretrained weights: list them, show what an entry holds, "
                                   "download (verify, convert, cache), show the installed path, remove.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    acts = p.add_subparsers(dest="action", metavar="ACTION")

    a = acts.add_parser("list", help="the registered weights and whether they are downloaded")
    a.set_defaults(func=run_list)

    a = acts.add_parser("info", help="everything an entry holds: source, sizes, checks, labels, "
                                     "preprocessing, crop, licence, reported figures")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true", help="print the entry as JSON")
    a.set_defaults(func=run_info)

    a = acts.add_parser("download", help="fetch, verify, convert and cache weights (the only "
                                         "command that uses the network)",
                        description="Fetch the files of NAME (resuming an interrupted download), "
                                    "check every size and checksum, convert them and install the "
                                    "checkpoint in the cache. Nothing is installed unless every "
                                    "check passes.")
    a.add_argument("name", metavar="NAME")
    src = a.add_mutually_exclusive_group()
    src.add_argument("--from", dest="from_dir", metavar="DIR",
                     help="take the files from this folder instead of the network (fetched by "
                          "other means; they are verified the same way and left untouched)")
    src.add_argument("--mirror", type=_http_url, metavar="URL",
                     help="fetch the same repository paths from this base URL instead")
    a.add_argument("--force", action="store_true", help="download and install again even if installed")
    a.add_argument("--timeout", type=float_range(0, lo_open=True), default=30.0, metavar="SECONDS",
                   help="give up on a connection silent for this long (default 30)")
    a.add_argument("--retries", type=non_negative_int, default=3, metavar="N",
                   help="retries after a dropped connection, a timeout or HTTP 5xx; each resumes "
                        "(default 3)")
    a.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages")
    a.set_defaults(func=run_download)

    a = acts.add_parser("path", help="print the installed checkpoint file of NAME")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=run_path)

    a = acts.add_parser("remove", help="delete what bregnet put in the cache for NAME")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=run_remove)
    p.set_defaults(func=run_missing_action)


def run_missing_action(args: argparse.Namespace) -> int:
    raise UsageError("give an action: list, info NAME, download NAME, path NAME or remove NAME "
                     "(bregnet weights --help)")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run_list(args: argparse.Namespace) -> int:
    from ..weights import get_weights, is_installed, list_weights, weights_dir

    rows = []
    for name in list_weights():
        e = get_weights(name)
        reported = "; ".join(f"{r.metric} {r.value:.2f}% {r.dataset} (reported, not reproduced)"
                             for r in e.reported)
        rows.append((name, e.architecture, str(e.num_classes), _mb(e.source.total_size),
                     "installed" if is_installed(name) else "not downloaded", reported))
    head = ("name", "model", "classes", "download", "status", "reported")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    print(f"cache: {weights_dir()} (set BREGNET_HOME to move it)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..weights import checkpoint_file, get_weights, is_installed
    from ..weights.registry import integrity_summary

    e = get_weights(args.name)
    if args.json:
        doc = e.to_dict()
        doc["installed"] = str(checkpoint_file(e.name)) if is_installed(e.name) else None
        print(json.dumps(doc, indent=2))
        return 0
    wrap = lambda label, text: textwrap.fill(  # noqa: E731
        text, width=100, initial_indent=f"{label:<14}", subsequent_indent=" " * 14,
        break_long_words=False, break_on_hyphens=False)
    pp = e.preprocess
    crop = pp.crop
    lines = [
        wrap("name", f"{e.name}: {e.description}"),
        wrap("model", f"{e.architecture} {json.dumps(dict(e.arch_args))}"),
        wrap("labels", ", ".join(e.labels) + " (output order)"),
        wrap("input", f"{pp.input_size}x{pp.input_size} {pp.color}, x*{pp.scale:.6g} - mean "
                      f"{list(pp.mean)}, / std {list(pp.std)}"),
        wrap("crop", crop.describe() + (f": {e.metadata['crop']}" if "crop" in e.metadata else "")),
        wrap("source", f"{e.source.repository} at commit {e.source.commit}"
                       + (f" ({e.source.homepage})" if e.source.homepage else "")),
    ]
    for f in e.source.files:
        lines.append(wrap("  file", f"{f.name}: {f.size:,} bytes"
                                    + (f", SHA-256 {f.sha256}" if f.sha256 else "")
                                    + f" <{e.source.url(f)}>"))
    lines += [
        wrap("download", f"{_mb(e.source.total_size)} in total"),
        wrap("checks", integrity_summary(e)),
        wrap("provenance", e.provenance),
        wrap("licence", e.license),
    ]
    for r in e.reported:
        lines.append(wrap("reported", r.describe() + (f"; {r.source}" if r.source else "")))
    where = str(checkpoint_file(e.name)) if is_installed(e.name) else \
        f"not downloaded (bregnet weights download {e.name})"
    lines.append(wrap("installed", where))
    print("\n".join(lines))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..weights import download_weights

    def log(line: str) -> None:
        print(f"bregnet weights: {line}", file=sys.stderr)

    path = download_weights(args.name, from_dir=args.from_dir, mirror=args.mirror,
                            force=args.force, timeout=args.timeout, retries=args.retries,
                            progress=not args.quiet and sys.stderr.isatty(),
                            log=None if args.quiet else log)
    print(path)
    if not args.quiet:
        log(f"installed {args.name}; run it with: bregnet predict {args.name} photo.jpg")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from ..weights import WeightsError, checkpoint_file, get_weights, is_installed
    from ..weights.cache import not_downloaded_message

    entry = get_weights(args.name)
    if not is_installed(entry.name):
        raise WeightsError(not_downloaded_message(entry))
    print(checkpoint_file(entry.name))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..weights import remove_weights, weights_dir

    removed = remove_weights(args.name)
    if removed:
        print(f"removed {len(removed)} file(s) of {args.name} from {weights_dir()}")
    else:
        print(f"{args.name} is not in the cache {weights_dir()}; nothing removed")
    return 0
