"""Training throughput (images/s) through the real Trainer: data gather from the in-memory
arrays, the paper's augmentation, normalisation, forward, backward, Adam step.

CPU:  python benchmarks/bench_train.py --models bregnext50 demo --steps 6
GPU:  python benchmarks/bench_train.py --device cuda --models bregnext50 --steps 200 \
          --variants fp32 amp amp+cl amp+cl+compile --batch 64 256

Also prints forward FLOPs per image (counted with torch's FlopCounterMode) and, on a GPU with
--peak-tflops, the fraction of the GPU's peak that the training step reaches
(training ~ 3x forward FLOPs).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bregnet.data.synthetic import make_synthetic
from bregnet.engine.config import load_config
from bregnet.engine.trainer import Trainer
from bregnet.models import create_model

MODELS = {
    "bregnext50": ["model.name=bregnext50"],
    "resnet-layout50": ["model.name=bregnext50", "model.shortcut=identity"],
    "demo": ["model.name=bregnext32", "model.args={stages: [[1, 16], [1, 32], [1, 64]], stem_width: 16}"],
}
VARIANTS = {
    "fp32": ["train.amp=off", "train.channels_last=false"],
    "amp": ["train.amp=auto", "train.channels_last=false"],
    "amp+cl": ["train.amp=auto", "train.channels_last=true"],
    "amp+cl+compile": ["train.amp=auto", "train.channels_last=true", "train.compile=true"],
}


def forward_flops(overrides: list[str]) -> float:
    cfg = load_config("demo", overrides)
    model = create_model(cfg["model"]["name"], num_classes=8, shortcut=cfg["model"]["shortcut"],
                         **cfg["model"]["args"]).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    return float(counter.get_total_flops())


def bench(model_key: str, variant: str, batch: int, steps: int, warmup: int, device: str,
          data) -> float:
    items = [*MODELS[model_key], *VARIANTS[variant], "task=categorical", "train.max_time_s=null",
             f"train.batch_size={batch}", "train.epochs=1000000", "train.log_tensorboard=false",
             "data.name=synthetic"]
    cfg = load_config("demo", items)
    trainer = Trainer(cfg, "/tmp/bregnet-bench-train", data, None, device=device, progress=False)
    trainer.tcfg["max_steps"] = warmup
    trainer.fit()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.tcfg["max_steps"] = warmup + steps
    trainer.fit()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description="training throughput through the Trainer")
    ap.add_argument("--models", nargs="+", default=["bregnext50", "demo"], choices=list(MODELS))
    ap.add_argument("--variants", nargs="+", default=["fp32"], choices=list(VARIANTS))
    ap.add_argument("--batch", nargs="+", type=int, default=[64])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak for the dtype used (e.g. 989 for H100 SXM bf16)")
    args = ap.parse_args()
    n = max(args.batch) * (args.steps + args.warmup + 1)
    data = make_synthetic(min(n, 4096), seed=0, imbalance="none")
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device={dev_name} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'model':<16} {'variant':<16} {'batch':>5} {'img/s':>9} {'GFLOP/img fwd':>14} {'% peak':>7}")
    for model_key in args.models:
        flops = forward_flops(MODELS[model_key])
        for variant in args.variants:
            for batch in args.batch:
                ips = bench(model_key, variant, batch, args.steps, args.warmup, args.device, data)
                frac = (f"{100 * ips * 3 * flops / (args.peak_tflops * 1e12):.1f}"
                        if args.peak_tflops else "-")
                print(f"{model_key:<16} {variant:<16} {batch:>5} {ips:>9.1f} {flops / 1e9:>14.3f} {frac:>7}",
                      flush=True)


if __name__ == "__main__":
    main()
