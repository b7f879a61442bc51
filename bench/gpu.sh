#!/usr/bin/env bash
# One-shot check on a lent GPU machine, where PyTorch is installed but Jupyter is not: the benchmark
# on CUDA, then the full notebook as a plain script (fresh training), timed. At most a few files
# land in OUTDIR (the figures stay in /tmp). From the repository root:  bash bench/gpu.sh OUTDIR
set -euo pipefail
out=${1:?usage: bash bench/gpu.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"
} | tee "$out/gpu.txt"
python3 bench/bench.py --device cuda --rounds 3 --output "$out/results_gpu.md" 2>&1 | grep -v "epoch/s" \
  | tee "$out/bench.log"
start=$(date +%s)
LAB4_RETRAIN=1 LAB4_OUT_DIR=/tmp/lab4-gpu-figures LAB4_CKPT_DIR=/tmp/lab4-gpu-checkpoints \
  python3 scripts/run_as_script.py 2>&1 | grep -v "epoch/s" | tail -40 | tee "$out/full_run.log"
echo "full notebook as a script on the GPU: $(( $(date +%s) - start )) s (process start included)" | tee -a "$out/full_run.log"
cp /tmp/lab4-gpu-figures/results.json "$out/results_gpu.json"
