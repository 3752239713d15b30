#!/usr/bin/env bash
# The GPU benchmarks as one script, for the day a GPU machine is available (under 10 minutes:
# every step has its own time limit).
#   bash benchmarks/gpu_suite.sh [PEAK_TFLOPS]      (H100 SXM / H200 bf16 dense: 989)
# Needs a CUDA build of torch in .venv (see README, "Installing for a GPU").
# Dry run of the same commands on the CPU with tiny settings (checks the script, not the GPU):
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PEAK=${1:-989}
DEVICE=${DEVICE:-cuda}
if [[ "${QUICK:-0}" == 1 ]]; then
    SC="--rounds 1 --iters 1 --batch 8"; TR="--steps 1 --rounds 1 --warmup 1"; B="8"; BIG="8"; LIMIT=600
else
    SC="--rounds 5 --iters 20 --batch 64"; TR="--steps 30 --rounds 3 --warmup 10"; B="64 256"; BIG="256"; LIMIT=170
fi
if [[ "$DEVICE" == cuda ]]; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
    $PY -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if ok else 'NO CUDA DEVICE'); sys.exit(0 if ok else 1)"
fi
echo "== 1. shortcut cost: identity / arctan / adaptive (fused) / adaptive-eager, fp32 and bf16, NCHW and NHWC; the shortcut alone (--isolate)"
timeout $LIMIT $PY benchmarks/bench_shortcut.py --device "$DEVICE" $SC \
    --shortcuts identity arctan adaptive adaptive-eager --precisions fp32 bf16 --formats nchw nhwc \
    --isolate --isolate-repeats 10 \
    || echo "(step 1 failed or ran out of time: exit $?)"
echo "== 2. training throughput through the Trainer: bregnext50 vs the identity layout, eager"
timeout $LIMIT $PY benchmarks/bench_train.py --device "$DEVICE" $TR --models bregnext50 resnet-layout50 \
    --variants fp32 amp amp+cl --batch $B --peak-tflops "$PEAK" \
    || echo "(step 2 failed or ran out of time: exit $?)"
echo "== 3. the whole model under torch.compile (bregnext50, batch $BIG)"
timeout $LIMIT $PY benchmarks/bench_train.py --device "$DEVICE" $TR --models bregnext50 \
    --variants amp+cl amp+cl+compile --batch $BIG --peak-tflops "$PEAK" \
    || echo "(step 3 failed or ran out of time: exit $?)"
