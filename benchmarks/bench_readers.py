"""Reader benchmark: CPU time to parse a FER2013 CSV (the vectorised path and the csv-module path).

    python benchmarks/bench_readers.py              # 35,887 rows, the size of the real file
    python benchmarks/bench_readers.py --rows 5000

Writes a synthetic file in the published ``emotion,pixels,Usage`` format (random pixels) to a
temporary folder, then parses it with :func:`bregnet.data.readers.fer2013.parse_fer2013_csv`:
once as written (single spaces: the vectorised fast path) and once with every pixel field quoted
(which takes the csv-module path). Prints CPU seconds (``time.process_time``) and rows per second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bregnet.data.readers import fer2013


def write_csv(path: Path, rows: int, quoted: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    usage = ("Training", "PublicTest", "PrivateTest")
    q = '"' if quoted else ""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("emotion,pixels,Usage\n")
        for start in range(0, rows, 1000):
            block = rng.integers(0, 256, (min(1000, rows - start), 2304))
            for j, px in enumerate(block):
                i = start + j
                f.write(f"{i % 7},{q}{' '.join(map(str, px))}{q},{usage[i % 3]}\n")


def parse_seconds(path: Path) -> float:
    fer2013._cache.clear()  # the parsed file is cached by path: measure a cold parse
    t = time.process_time()
    table = fer2013.parse_fer2013_csv(path)
    seconds = time.process_time() - t
    assert len(table.labels) > 0
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=35887)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bregnet-bench-") as tmp:
        for quoted in (False, True):
            path = Path(tmp) / f"fer2013{'-quoted' if quoted else ''}.csv"
            write_csv(path, args.rows, quoted)
            s = parse_seconds(path)
            mb = path.stat().st_size / 1e6
            kind = "csv-module path (quoted fields)" if quoted else "vectorised path"
            print(f"FER2013 {args.rows:,} rows ({mb:.0f} MB), {kind}: {s:.2f} s CPU, "
                  f"{args.rows / max(s, 1e-9):,.0f} rows/s")


if __name__ == "__main__":
    main()
