#!/usr/bin/env bash
# Issue 18's GPU figures in one call (under 8 minutes on one H100/H200): a full Sentinel-2 tile mapped
# in-process with the PyTorch model (bf16, channels-last) end to end and with one call in flight
# (GPU-only), then base-size training images per second in bf16.
#
# Usage (on a CUDA machine, from the repository root): OUT=results-folder benchmarks/gpu/run.sh
# A machine without rasterio, pydantic or boto3 gets them from wheels in .whl/ (see docs/benchmarks.md).
set -uo pipefail
OUT=${OUT:-outputs/benchmarks/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 200 python3 benchmarks/gpu/map_full_tile.py --device cuda --batch 16 --in-flight 2 --out "$OUT/end-to-end" \
  2>&1 | tail -n 20 | tee "$OUT/full_tile.log"
timeout 150 python3 benchmarks/gpu/map_full_tile.py --device cuda --batch 16 --in-flight 1 --out "$OUT/gpu-only" \
  2>&1 | tail -n 20 | tee -a "$OUT/full_tile.log"
CLOUDLULC_BENCH_OUT="$OUT" timeout 90 python3 benchmarks/bench_train.py --size base --crop 512 --batch 8 --steps 10 \
  --device cuda --amp --architectures cloudlulc_net 2>&1 | tail -n 12 | tee "$OUT/base_train.log"
