#!/usr/bin/env bash
# One prepared GPU check for issue 10 (docs/scale.md): the CUDA-only tests, then the GPU goals.
# ~3-5 minutes on one H100/H200. Usage: bash bench/gpu_check.sh [OUTDIR]   (default bench/out)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-bench/out}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
# the fast paths against eager on the GPU (CUDA graphs of Langevin and Euler-Maruyama blocks)
"$PY" -m pytest -q -rs tests/test_fast_path.py 2>&1 | tee "$OUT/tests.txt"
# the goals: LPC batch at T = 300 (CIFAR-10 decoder) eager / fused / graphs, circuit steps/s, vs torchsde
"$PY" bench/bench_gpu.py --repeats 5 --out "$OUT/gpu.json" 2>&1 | tee "$OUT/bench_gpu.txt"
