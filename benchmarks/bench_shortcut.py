"""Cost of the bounded shortcut: bregnext50 (adaptive) vs the same layout with other shortcuts.

Forward (inference, no grad) and full training-step (forward + backward + Adam) throughput at
batch 64, 64x64, in one run, in float32 and/or bfloat16 autocast, in the NCHW and/or the
channels-last (NHWC) memory format. Rounds alternate between all the variants so that machine
noise hits them alike. Reported per variant: the median round's images/s; the cost against the
identity shortcut in the same precision and format, as the median over rounds of the paired
ratio (each round times the two back to back); and the speed-up over fp32 NCHW.
``adaptive-eager`` is the adaptive shortcut with the fused kernels turned off (what a machine
without a C++ compiler runs).

    python benchmarks/bench_shortcut.py [--rounds 5] [--iters 2] [--batch 64] [--threads N]
        [--device cpu|cuda] [--shortcuts identity arctan adaptive adaptive-eager]
        [--precisions fp32 bf16] [--formats nchw nhwc] [--cpu-time] [--profile]

``--isolate`` times the shortcut's own work on the unit shapes of a real step, apart from the
convolutions: every adaptive shortcut call of one bregnext50 step is replayed (forward of the
unit's output ``r + g(x)`` and its gradients for x, r, a and c, through the same autograd
function), against the identity's ``r + x``, as the minimum over repetitions of the whole set;
its cost is that difference over the identity network's fastest step. Minimums of short, many
times repeated timings are far steadier on a shared VM than the ratio of two step timings.

``--profile`` also runs one training step of every variant under ``torch.profiler`` and prints
where its time goes (convolutions, batch norm, ELU, the shortcut's fused kernels and their Python
wrapper, ...): the shortcut's share of a step measured inside one step, which machine noise
moves far less than the ratio of two timings.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from bregnet.engine.memory import keep_freed_memory
from bregnet.models import _fused, create_model

CLOCK = time.perf_counter
FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
# profiler event name (prefix) -> category, first match wins
CATEGORIES = [
    ("## Call CompiledFxGraph", "shortcut: fused kernels"),
    ("_AdaptiveArctanFn", "shortcut: autograd function (Python)"),
    ("Torch-Compiled Region", "shortcut: dynamo call overhead"),
    ("TorchDynamo Cache Lookup", "shortcut: dynamo call overhead"),
    ("Pregraph bytecode", "shortcut: dynamo call overhead"),
    ("aten::atan", "eager shortcut ops (atan, ...)"),
    ("aten::where", "eager shortcut ops (atan, ...)"),
    ("aten::dot", "eager shortcut ops (atan, ...)"),
    ("aten::reciprocal", "eager shortcut ops (atan, ...)"),
    ("aten::addcmul", "eager shortcut ops (atan, ...)"),
    ("aten::convolution_backward", "convolutions"),
    ("aten::mkldnn_convolution", "convolutions"),
    ("aten::_convolution", "convolutions"),
    ("aten::cudnn_convolution", "convolutions"),
    ("aten::native_batch_norm", "batch norm"),
    ("aten::cudnn_batch_norm", "batch norm"),
    ("aten::elu", "ELU"),
    ("aten::add", "adds (residual, gradient accumulation)"),
    ("aten::mul", "other element-wise"),
    ("aten::sub", "other element-wise"),
    ("aten::avg_pool2d", "pooling"),
    ("Optimizer", "optimiser"),
    ("aten::_foreach", "optimiser"),
]


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = CLOCK()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return CLOCK() - t0


def main() -> None:
    global CLOCK
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=2, help="batches per timed round")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shortcuts", nargs="+", default=["identity", "arctan", "adaptive"],
                    choices=["identity", "arctan", "tanh", "softsign", "adaptive", "adaptive-eager"])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--formats", nargs="+", default=["nchw"], choices=list(FORMATS))
    ap.add_argument("--skip-forward", action="store_true", help="time training steps only")
    ap.add_argument("--profile", action="store_true", help="where one training step's time goes")
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc's malloc as it is (the trainer keeps freed memory on the CPU: "
                         "bregnet.engine.memory)")
    ap.add_argument("--isolate", action="store_true",
                    help="the shortcut's own time on the unit shapes of a step (min of repeats)")
    ap.add_argument("--isolate-repeats", type=int, default=15)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time instead of the wall clock: steadier on "
                         "a machine shared with other jobs (use with --threads 1)")
    args = ap.parse_args()
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu" and not args.system_malloc:   # what Trainer.fit does on the CPU
        print(f"allocator: {keep_freed_memory()}")
    torch.manual_seed(0)
    dev = args.device
    y = torch.randint(0, 8, (args.batch,), device=dev)
    x0 = torch.randn(args.batch, 3, 64, 64, device=dev)
    inputs = {f: x0.contiguous(memory_format=FORMATS[f]) for f in args.formats}
    models, opts = {}, {}
    for s in args.shortcuts:
        base = create_model("bregnext50", shortcut=s.replace("-eager", "")).to(dev)
        for f in args.formats:
            m = create_model("bregnext50", shortcut=s.replace("-eager", "")).to(dev)
            m.load_state_dict(base.state_dict())  # the same weights in every format
            models[(s, f)] = m.to(memory_format=FORMATS[f])
            opts[(s, f)] = torch.optim.Adam(m.parameters(), lr=1e-4)
    variants = [(s, p, f) for f in args.formats for p in args.precisions for s in args.shortcuts]

    def context(s: str, p: str):
        _fused.set_fused(False if s.endswith("-eager") else None)
        if p == "bf16":
            return torch.autocast(torch.device(dev).type, dtype=torch.bfloat16)
        return nullcontext()

    def forward(s: str, p: str, f: str) -> None:
        m = models[(s, f)].eval()
        with torch.no_grad(), context(s, p):
            for _ in range(args.iters):
                m(inputs[f])

    def train_step(s: str, p: str, f: str) -> None:
        m, opt = models[(s, f)].train(), opts[(s, f)]
        for _ in range(args.iters):
            opt.zero_grad(set_to_none=True)
            with context(s, p):
                out = m(inputs[f])
            F.cross_entropy(out.float(), y).backward()
            opt.step()

    t0 = time.perf_counter()
    for v in variants:  # warm-up (and, for the adaptive shortcut, the kernels' compilation)
        if not args.skip_forward:
            forward(*v)
        train_step(*v)
    _fused.set_fused(None)
    state = "on" if _fused.fused_enabled() else f"off ({_fused._state.reason})"
    print(f"warm-up (incl. compiling the fused kernels) {time.perf_counter() - t0:.1f} s; fused kernels: {state}")
    fwd: dict = {v: [] for v in variants}
    trn: dict = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            if not args.skip_forward:
                fwd[v].append(args.iters * args.batch / timed(lambda: forward(*v), dev))
            trn[v].append(args.iters * args.batch / timed(lambda: train_step(*v), dev))
    _fused.set_fused(None)
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} rounds={args.rounds} "
          f"iters={args.iters} clock={'cpu' if args.cpu_time else 'wall'} torch={torch.__version__}")
    med = statistics.median

    def cost(series: dict, v: tuple) -> str:
        base = ("identity", v[1], v[2])
        if base not in series or not series[v]:
            return "-"
        return f"{med(b / a - 1 for a, b in zip(series[v], series[base])):+.1%}"

    def speedup(series: dict, v: tuple) -> str:
        ref = (v[0], "fp32", "nchw")
        if ref not in series or ref == v or not series[v]:
            return "-"
        return f"{med(series[v]) / med(series[ref]):.2f}"

    print(f"{'shortcut':<15} {'prec':<5} {'fmt':<5} {'fwd img/s':>10} {'train img/s':>12} "
          f"{'fwd cost':>9} {'train cost':>10} {'fwd x':>6} {'train x':>8}")
    for v in variants:
        f_ips = f"{med(fwd[v]):.1f}" if fwd[v] else "-"
        print(f"{v[0]:<15} {v[1]:<5} {v[2]:<5} {f_ips:>10} {med(trn[v]):>12.1f} {cost(fwd, v):>9} "
              f"{cost(trn, v):>10} {speedup(fwd, v):>6} {speedup(trn, v):>8}")
    if args.profile:
        profile_steps(variants, train_step)
    if args.isolate:
        isolate(args, trn, fwd, dev)
    print("cost = median over rounds of identity img/s / variant img/s - 1 (same precision, format); "
          "x = speed-up over fp32 nchw")
    for v in variants:  # the spread of the paired ratios says how far to trust the medians
        base = ("identity", v[1], v[2])
        if v[0] != "identity" and base in trn:
            print(f"  train cost per round, {' '.join(v)}: "
                  + " ".join(f"{b / a - 1:+.1%}" for a, b in zip(trn[v], trn[base])))
            if fwd[v]:
                print(f"  fwd cost per round,   {' '.join(v)}: "
                      + " ".join(f"{b / a - 1:+.1%}" for a, b in zip(fwd[v], fwd[base])))


def unit_calls(batch: int, dev: str) -> list[tuple[torch.Size, bool]]:
    """(input shape, has a residual r) of every adaptive shortcut call in one bregnext50
    forward at ``batch`` x 3 x 64 x 64."""
    from bregnet.models.shortcuts import AdaptiveArctanShortcut

    calls: list[tuple[torch.Size, bool]] = []
    original = AdaptiveArctanShortcut._map

    def record(self, x, r):
        calls.append((x.shape, r is not None))
        return original(self, x, r)

    AdaptiveArctanShortcut._map = record
    try:
        with torch.no_grad():
            create_model("bregnext50").to(dev).eval()(torch.randn(batch, 3, 64, 64, device=dev))
    finally:
        AdaptiveArctanShortcut._map = original
    return calls


def isolate(args, trn: dict, fwd: dict, dev: str) -> None:
    """Replay one step's shortcut calls alone: adaptive vs identity, train and inference."""
    from bregnet.models.shortcuts import AdaptiveArctanShortcut

    calls = unit_calls(args.batch, dev)
    sc = AdaptiveArctanShortcut().to(dev)
    print(f"isolated shortcut work: {len(calls)} calls per step "
          f"({sum(r for _, r in calls)} with the residual add), "
          f"{sum(torch.Size(s).numel() for s, _ in calls) / args.batch / 1e6:.2f} M values per image")
    for prec in args.precisions:
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        gen = torch.Generator(device=dev).manual_seed(0)
        data = [(torch.randn(s, device=dev, dtype=dtype, generator=gen).requires_grad_(),
                 torch.randn(s, device=dev, dtype=dtype, generator=gen).requires_grad_() if r else None,
                 torch.randn(s, device=dev, dtype=dtype, generator=gen)) for s, r in calls]

        def adaptive_train() -> None:
            for x, r, g in data:
                out = sc.residual(r, x) if r is not None else sc(x)
                wrt = (x, sc.a, sc.c) + ((r,) if r is not None else ())
                torch.autograd.grad(out, wrt, g)

        def identity_train() -> None:
            for x, r, g in data:
                if r is not None:   # the identity's map is x itself: no work at all
                    torch.autograd.grad(r + x, (x, r), g)

        def adaptive_infer() -> None:
            with torch.no_grad():
                for x, r, _ in data:
                    sc.residual(r, x) if r is not None else sc(x)

        def identity_infer() -> None:
            with torch.no_grad():
                for x, r, _ in data:
                    if r is not None:
                        r + x

        fns = {"adaptive train": adaptive_train, "identity train": identity_train,
               "adaptive infer": adaptive_infer, "identity infer": identity_infer}
        for fn in fns.values():
            fn()   # warm-up (compiles the kernels for this dtype if needed)
        times: dict = {name: [] for name in fns}
        for _ in range(args.isolate_repeats):   # interleaved, so that slow phases hit all alike
            for name, fn in fns.items():
                times[name].append(timed(fn, dev))
        best = {name: min(t) for name, t in times.items()}
        step = {"train": trn.get(("identity", prec, "nchw")), "infer": fwd.get(("identity", prec, "nchw"))}
        for kind in ("train", "infer"):
            extra = best[f"adaptive {kind}"] - best[f"identity {kind}"]
            line = (f"  {prec} {kind}: adaptive {1e3 * best[f'adaptive {kind}']:.1f} ms, identity "
                    f"{1e3 * best[f'identity {kind}']:.1f} ms per step: +{1e3 * extra:.1f} ms")
            if step[kind]:
                fastest = args.batch / max(step[kind])  # one batch of the fastest identity round
                line += (f" = {extra / fastest:+.1%} of the identity network's fastest "
                         f"{'step' if kind == 'train' else 'forward'} ({1e3 * fastest:.0f} ms)")
            print(line)


def profile_steps(variants: list, train_step) -> None:
    """One training step of each variant under the profiler: self time by category."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    for v in variants:
        with profile(activities=acts) as prof:
            train_step(*v)
        totals: dict = {}
        for ev in prof.key_averages():
            cat = next((c for prefix, c in CATEGORIES if ev.key.startswith(prefix)), "other")
            totals[cat] = totals.get(cat, 0.0) + ev.self_cpu_time_total / 1e3
        _fused.set_fused(None)
        whole = sum(totals.values())
        parts = ", ".join(f"{c} {ms:.0f} ms ({ms / whole:.1%})" for c, ms in
                          sorted(totals.items(), key=lambda kv: -kv[1]))
        print(f"profile {' '.join(v)}: step {whole:.0f} ms CPU: {parts}")


if __name__ == "__main__":
    main()
