"""Training throughput (images/s) through the real Trainer step: batch gather from the in-memory
arrays, the paper's augmentation, normalisation, forward, backward, Adam step.

Every (model, variant, batch) gets its own Trainer; timed rounds of ``--steps`` steps alternate
between them so that machine noise hits all alike, and the median round is reported, with the
speed-up over the first variant of the same model and batch.

CPU:  python benchmarks/bench_train.py --models bregnext50 resnet-layout50 demo \
          --variants fp32 fp32+cl bf16 bf16+cl --steps 2 --rounds 3
GPU:  python benchmarks/bench_train.py --device cuda --models bregnext50 --steps 50 \
          --variants fp32 amp amp+cl amp+cl+compile --batch 64 256

``amp`` is ``train.amp=auto`` (bf16 on a GPU that has it, else fp16; bf16 on a CPU with
AVX512-BF16/AMX, else fp32); ``bf16`` forces it; ``+cl`` is channels-last, ``+compile`` the whole
model under ``torch.compile``. Also prints forward FLOPs per image (torch's FlopCounterMode) and,
with --peak-tflops, the fraction of the device's peak the training step reaches (training ~ 3x
forward FLOPs).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bregnet.data.synthetic import make_synthetic
from bregnet.engine.config import load_config
from bregnet.engine.memory import keep_freed_memory
from bregnet.engine.trainer import Trainer
from bregnet.models import create_model

# (recipe, overrides): bregnext50 from the defaults (the paper's layout), the demo's own model
MODELS = {
    "bregnext50": (None, ["model.name=bregnext50", "task=categorical"]),
    "resnet-layout50": (None, ["model.name=bregnext50", "model.shortcut=identity", "task=categorical"]),
    "demo": ("demo", []),  # 4 units, widths 16-128, stride-2 stem, multi-task
    "demo-identity": ("demo", ["model.shortcut=identity"]),
}
VARIANTS = {
    "fp32": ["train.amp=off", "train.channels_last=false"],
    "fp32+cl": ["train.amp=off", "train.channels_last=true"],
    "bf16": ["train.amp=bf16", "train.channels_last=false"],
    "bf16+cl": ["train.amp=bf16", "train.channels_last=true"],
    "auto": ["train.amp=auto", "train.channels_last=auto"],  # what a plain run uses here
    "amp": ["train.amp=auto", "train.channels_last=false"],
    "amp+cl": ["train.amp=auto", "train.channels_last=true"],
    "amp+cl+compile": ["train.amp=auto", "train.channels_last=true", "train.compile=true"],
}


def config(model_key: str, variant: str, batch: int) -> dict:
    recipe, overrides = MODELS[model_key]
    items = [*overrides, *VARIANTS[variant], "train.max_time_s=null", f"train.batch_size={batch}",
             "train.log_tensorboard=false", "data.name=synthetic"]
    return load_config(recipe, items)


def forward_flops(cfg: dict) -> float:
    model = create_model(cfg["model"]["name"], num_classes=8, shortcut=cfg["model"]["shortcut"],
                         va=cfg["task"] != "categorical", **cfg["model"]["args"]).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description="training throughput through the Trainer")
    ap.add_argument("--models", nargs="+", default=["bregnext50", "demo"], choices=list(MODELS))
    ap.add_argument("--variants", nargs="+", default=["fp32", "auto"], choices=list(VARIANTS))
    ap.add_argument("--batch", nargs="+", type=int, default=[64])
    ap.add_argument("--steps", type=int, default=4, help="training steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time instead of the wall clock: steadier on "
                         "a machine shared with other jobs (use with --threads 1)")
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc's malloc as it is (the trainer keeps freed memory on the CPU: "
                         "bregnet.engine.memory)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak for the dtype used (e.g. 989 for H100/H200 bf16)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu" and not args.system_malloc:   # what Trainer.fit does on the CPU
        print(f"allocator: {keep_freed_memory()}")
    clock = time.process_time if args.cpu_time else time.perf_counter
    n = max(args.batch) * max(args.steps, args.warmup)
    data = make_synthetic(min(n, 4096), seed=0, imbalance="none")
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device={dev_name} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"steps/round={args.steps} rounds={args.rounds} clock={'cpu' if args.cpu_time else 'wall'}")
    keys = [(m, v, b) for m in args.models for b in args.batch for v in args.variants]
    trainers, order, flops, step_no = {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bregnet-bench-train-") as tmp:
        for key in keys:
            cfg = config(*key)
            flops.setdefault(key[0], forward_flops(cfg))
            tr = Trainer(cfg, f"{tmp}/{'-'.join(map(str, key))}", data, None, device=args.device,
                         progress=False)
            trainers[key] = tr
            order[key] = tr.epoch_order(0)
            step_no[key] = 0

        def run(key, steps: int) -> None:
            tr, bsz = trainers[key], key[2]
            tr.net.train()
            for _ in range(steps):
                start = (step_no[key] * bsz) % max(1, len(order[key]) - bsz + 1)
                tr._train_step(order[key][start:start + bsz])
                step_no[key] += 1

        def sync() -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        t0 = time.perf_counter()
        for key in keys:
            run(key, args.warmup)
        sync()
        print(f"warm-up {time.perf_counter() - t0:.1f} s (includes compiling kernels)")
        times: dict = {k: [] for k in keys}
        faults: dict = {k: [] for k in keys}   # minor page faults and system CPU s per step
        for _ in range(args.rounds):
            for key in keys:
                sync()
                r0, t1 = resource.getrusage(resource.RUSAGE_SELF), clock()
                run(key, args.steps)
                sync()
                times[key].append(args.steps * key[2] / (clock() - t1))
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                faults[key].append(((r1.ru_minflt - r0.ru_minflt) / args.steps,
                                    (r1.ru_stime - r0.ru_stime) / args.steps))
    print(f"{'model':<16} {'variant':<15} {'batch':>5} {'img/s':>8} {'x first':>8} "
          f"{'GFLOP/img fwd':>14} {'% peak':>7} {'faults/step':>11} {'sys s/step':>10}  resolved")
    for key in keys:
        m, v, b = key
        ips = statistics.median(times[key])
        first = (m, args.variants[0], b)
        ratio = statistics.median(a / c for a, c in zip(times[key], times[first]))
        frac = f"{100 * ips * 3 * flops[m] / (args.peak_tflops * 1e12):.1f}" if args.peak_tflops else "-"
        tr = trainers[key]
        resolved = f"amp={tr.amp_dtype} channels_last={tr.channels_last}"
        flt = statistics.median(f for f, _ in faults[key])
        sys_s = statistics.median(t for _, t in faults[key])
        print(f"{m:<16} {v:<15} {b:>5} {ips:>8.1f} {ratio:>8.2f} {flops[m] / 1e9:>14.3f} {frac:>7} "
              f"{flt:>11.0f} {sys_s:>10.2f}  {resolved}", flush=True)


if __name__ == "__main__":
    main()
