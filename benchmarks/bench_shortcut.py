"""Cost of the bounded shortcut: bregnext50 (adaptive) vs the same layout with other shortcuts.

Forward (inference, no grad) and full training-step (forward + backward + Adam) throughput at
batch 64, 64x64, in one run. Rounds alternate between the variants so that machine noise hits
all of them alike; the median round is reported.

    python benchmarks/bench_shortcut.py [--rounds 5] [--batch 64] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bregnet.models import create_model


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=2, help="batches per timed round")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shortcuts", nargs="+", default=["identity", "adaptive", "arctan"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    x = torch.randn(args.batch, 3, 64, 64, device=dev)
    y = torch.randint(0, 8, (args.batch,), device=dev)
    models = {s: create_model("bregnext50", shortcut=s).to(dev) for s in args.shortcuts}
    opts = {s: torch.optim.Adam(m.parameters(), lr=1e-4) for s, m in models.items()}

    def forward(s):
        m = models[s].eval()
        with torch.no_grad():
            for _ in range(args.iters):
                m(x)

    def train_step(s):
        m = models[s].train()
        for _ in range(args.iters):
            opts[s].zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opts[s].step()

    for s in args.shortcuts:  # warm-up
        forward(s)
        train_step(s)
    fwd = {s: [] for s in args.shortcuts}
    trn = {s: [] for s in args.shortcuts}
    for _ in range(args.rounds):
        for s in args.shortcuts:
            fwd[s].append(args.iters * args.batch / timed(lambda: forward(s), dev))
            trn[s].append(args.iters * args.batch / timed(lambda: train_step(s), dev))
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} "
          f"rounds={args.rounds} torch={torch.__version__}")
    base_f = statistics.median(fwd["identity"]) if "identity" in fwd else None
    base_t = statistics.median(trn["identity"]) if "identity" in trn else None
    print(f"{'shortcut':<10} {'forward img/s':>14} {'train img/s':>12} {'fwd cost':>9} {'train cost':>10}")
    for s in args.shortcuts:
        f, t = statistics.median(fwd[s]), statistics.median(trn[s])
        fc = f"{base_f / f - 1:+.1%}" if base_f else "-"
        tc = f"{base_t / t - 1:+.1%}" if base_t else "-"
        print(f"{s:<10} {f:>14.1f} {t:>12.1f} {fc:>9} {tc:>10}")


if __name__ == "__main__":
    main()
