"""Worker for test_distributed.py, launched by torchrun with 2 processes (gloo, CPU).

Each rank trains on the same synthetic data with DDP, records the sample indices it saw and the
per-step losses, and saves its final weights, so the test can compare the ranks.
"""

import json
import os
import sys

import torch

from bregnet.data.synthetic import make_synthetic
from bregnet.engine.config import load_config
from bregnet.engine.distributed import cleanup
from bregnet.engine.trainer import Trainer


class Recorder:
    def __init__(self):
        self.indices, self.losses = [], []

    def on_step(self, trainer, indices, loss):
        self.indices.extend(int(i) for i in indices)
        self.losses.append(loss)


def main(out: str) -> None:
    torch.set_num_threads(1)
    cfg = load_config("demo", [
        "model.name=bregnext32", "model.args={stages: [[1, 8], [1, 16], [1, 16]], stem_width: 8}",
        "task=categorical", "train.max_time_s=null", "train.epochs=3", "train.batch_size=32",
        "train.lr=3e-3", "train.augment=false", "train.log_tensorboard=false",
    ])
    train = make_synthetic(128, seed=3, split="train", imbalance="none")
    rec = Recorder()
    trainer = Trainer(cfg, os.path.join(out, "run"), train, None, device="cpu", progress=False, callbacks=[rec])
    trainer.fit()
    rank = trainer.dist.rank
    torch.save(trainer.model.state_dict(), os.path.join(out, f"weights{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"indices": rec.indices, "losses": rec.losses, "world": trainer.dist.world_size,
                   "steps": trainer.step, "epochs": trainer.epoch}, f)
    cleanup(trainer.dist)


if __name__ == "__main__":
    main(sys.argv[1])
