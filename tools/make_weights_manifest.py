"""Regenerate the manifest of the official BReG-NeXt-50 checkpoint shipped in the package.

    python tools/make_weights_manifest.py [INDEX] [--out PATH] [--check]

INDEX is the published ``checkpoints.index`` (default: ../shared/reference/
bregnext50_affectnet_checkpoints.index next to the repository); PATH defaults to
src/bregnet/weights/manifests/bregnext50.affectnet.json. ``--check`` only compares and exits 1 on
a difference. The index itself is never copied into the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bregnet.fileio import atomic_write_text
from bregnet.weights.manifest import dump_manifest
from bregnet.weights.official import OFFICIAL_MANIFEST, official_manifest_from_index

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INDEX = ROOT.parent / "shared/reference/bregnext50_affectnet_checkpoints.index"
DEFAULT_OUT = ROOT / "src/bregnet/weights/manifests" / OFFICIAL_MANIFEST


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", nargs="?", default=str(DEFAULT_INDEX))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 if different")
    args = ap.parse_args(argv)
    text = dump_manifest(official_manifest_from_index(args.index))
    out = Path(args.out)
    if args.check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out}: {'up to date' if same else 'differs from ' + args.index}")
        return 0 if same else 1
    atomic_write_text(out, text)
    print(f"wrote {out} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
