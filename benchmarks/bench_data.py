"""Data loading benchmark: prepared cache (memory map) vs decoding image files, and synthetic
generation speed.

    python benchmarks/bench_data.py                 # full run (20,000 synthetic images)
    python benchmarks/bench_data.py --n 4000 --quick

Measures, single process:
  1. synthetic generation (make_synthetic) in images/s and the time for the --n images;
  2. writing the prepared cache from those images (prepare_cache's memmap path);
  3. cache loading: random batches of 64 through ArrayDataset.batch on the read-only memmap
     (page cache warm: the file was just written), plus the same followed by PaperAugment and
     normalisation (the whole CPU input pipeline of training, one torch thread);
  4. decoding the same 64x64 images from JPEG (quality 95) and PNG files with cv2.imread, random
     batches of 64; and 256x256 JPEGs decoded and resized to 64 (closer to real data sets whose
     images must be decoded, cropped and scaled).
Figures go to stdout; --json writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bregnet.data.base import ArrayDataset
from bregnet.data.cache import open_cache, prepare_cache
from bregnet.data.readers.base import FaceReader
from bregnet.data.synthetic import make_synthetic
from bregnet.data.transforms import PaperAugment, normalize


class _ArrayReader(FaceReader):
    """Serves an in-memory ArrayDataset through the reader interface (to time the cache writer alone)."""

    name = "synthetic"
    splits = ("train",)

    def __init__(self, root, split, ds: ArrayDataset | None = None, **options):
        super().__init__(root or ".", split)
        self.ds = ds

    @property
    def classes(self):
        return list(self.ds.classes)

    def __len__(self):
        return len(self.ds)

    def labels(self):
        return self.ds.labels

    def load(self, index):
        return self.ds.sample(index)


def _machine() -> str:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model}), python {platform.python_version()}, " \
           f"numpy {np.__version__}, opencv {cv2.__version__}, torch {torch.__version__}"


def _rate(fn, n_items_per_call: int, min_seconds: float, min_calls: int = 3) -> float:
    fn()  # warm-up
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and calls >= min_calls:
            return calls * n_items_per_call / dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="synthetic images to generate and cache")
    ap.add_argument("--files", type=int, default=2000, help="images written as JPEG/PNG files for decoding")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per measurement")
    ap.add_argument("--quick", action="store_true", help="1 s windows")
    ap.add_argument("--tmp", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    secs = 1.0 if args.quick else args.seconds
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    res: dict[str, float | str] = {"machine": _machine(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    print(res["machine"])

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        ds = make_synthetic(args.n, seed=0)
        gen_s = time.perf_counter() - t0
        res["synthetic_generate_seconds"] = gen_s
        res["synthetic_generate_img_s"] = args.n / gen_s
        print(f"synthetic generation      : {args.n} images in {gen_s:.1f} s = {args.n / gen_s:,.0f} img/s")

        t0 = time.perf_counter()
        prepare_cache(_ArrayReader, None, tmp_path / "cache", splits="train", progress=False, ds=ds)
        w_s = time.perf_counter() - t0
        res["cache_write_img_s"] = args.n / w_s
        print(f"cache writing (prepare)   : {args.n / w_s:,.0f} img/s")

        cache = open_cache(tmp_path / "cache", "train")
        rng = np.random.default_rng(0)
        n, b = len(cache), args.batch

        def load_batch():
            cache.batch(rng.integers(0, n, b))

        res["cache_load_img_s"] = _rate(load_batch, b, secs)
        print(f"cache loading, batch {b}   : {res['cache_load_img_s']:,.0f} img/s (memmap, random batches)")

        aug = PaperAugment()
        g = torch.Generator().manual_seed(0)

        def load_aug_batch():
            x, _, _ = cache.batch(rng.integers(0, n, b))
            normalize(aug(x, g))

        res["cache_load_augment_img_s"] = _rate(load_aug_batch, b, secs)
        print(f"  + PaperAugment + norm.  : {res['cache_load_augment_img_s']:,.0f} img/s (1 torch thread)")

        m = min(args.files, n)
        jpg_dir, png_dir, big_dir = tmp_path / "jpg", tmp_path / "png", tmp_path / "jpg256"
        for d in (jpg_dir, png_dir, big_dir):
            d.mkdir()
        for i in range(m):
            bgr = cv2.cvtColor(np.asarray(cache.images[i]), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(jpg_dir / f"{i:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(png_dir / f"{i:06d}.png"), bgr)
            big = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(big_dir / f"{i:06d}.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 95])

        def decode(directory: Path, ext: str, resize: bool):
            def run():
                out = np.empty((b, 64, 64, 3), np.uint8)
                for j, i in enumerate(rng.integers(0, m, b)):
                    img = cv2.imread(str(directory / f"{i:06d}.{ext}"), cv2.IMREAD_COLOR)
                    if resize:
                        img = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)
                    out[j] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                torch.from_numpy(out).permute(0, 3, 1, 2)
            return run

        for key, d, ext, rs, label in (
            ("decode_jpeg64_img_s", jpg_dir, "jpg", False, "decode JPEG 64x64"),
            ("decode_png64_img_s", png_dir, "png", False, "decode PNG 64x64"),
            ("decode_jpeg256_resize_img_s", big_dir, "jpg", True, "decode JPEG 256 + resize"),
        ):
            res[key] = _rate(decode(d, ext, rs), b, secs)
            print(f"{label:<26}: {res[key]:,.0f} img/s (cv2.imread, random batches of {b})")

    ratio = res["cache_load_img_s"] / res["decode_jpeg64_img_s"]
    res["cache_vs_jpeg64"] = ratio
    print(f"cache / JPEG-64 decoding  : {ratio:.0f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
