#!/usr/bin/env bash
# The GPU benchmarks as one script, for the day a GPU machine is available.
#   bash benchmarks/gpu_suite.sh [PEAK_TFLOPS]      (H100 SXM bf16 dense: 989; H200: 989)
# Needs a CUDA build of torch in .venv (see README, "Installing for a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PEAK=${1:-989}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
echo "== shortcut cost on the GPU (fp32)"
$PY benchmarks/bench_shortcut.py --device cuda --rounds 5 --iters 20 --batch 64
echo "== training throughput, bregnext50"
$PY benchmarks/bench_train.py --device cuda --models bregnext50 --steps 100 --warmup 20 \
    --variants fp32 amp amp+cl amp+cl+compile --batch 64 256 --peak-tflops "$PEAK"
