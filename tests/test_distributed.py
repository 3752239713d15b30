"""Two-process DistributedDataParallel run with gloo on the CPU (training issue)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


def test_two_process_gloo_training(tmp_path):
    worker = Path(__file__).with_name("dist_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
           "127.0.0.1", "--master-port", "0" if False else str(29500 + os.getpid() % 1000),
           str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert r0["steps"] == r1["steps"] == 3 * 4  # 128 images / 2 ranks / 16 per rank -> 4 steps x 3 epochs
    # each epoch, the two ranks saw disjoint halves of the data that together cover it
    per_epoch = 64
    for e in range(3):
        a = set(r0["indices"][e * per_epoch:(e + 1) * per_epoch])
        b = set(r1["indices"][e * per_epoch:(e + 1) * per_epoch])
        assert len(a) == len(b) == 64 and not a & b and a | b == set(range(128))
    # identical weights on both ranks after training
    w0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    # the loss falls (mean of the first vs the last epoch, both ranks)
    losses = np.array(r0["losses"]) + np.array(r1["losses"])
    assert losses[-4:].mean() < losses[:4].mean()
    # rank 0 alone wrote the checkpoints
    assert (tmp_path / "run" / "last.safetensors").is_file()
