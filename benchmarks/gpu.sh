#!/usr/bin/env bash
# The GPU benchmark, one prepared call: the seed-paired benchmark table (tiny, 128 px, 3 seeds, every
# row, then robustness worlds until the deadline), then base-size training throughput at 512 px.
#
# Usage (on a CUDA machine, from the repository root): OUT=results-folder benchmarks/gpu.sh [deadline_s]
# A machine without rasterio, pydantic or boto3 gets them from wheels in .whl/ (see docs/benchmarks.md).
set -uo pipefail
OUT=${OUT:-outputs/benchmarks/gpu}
DEADLINE=${1:-390}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore CUBLAS_WORKSPACE_CONFIG=:4096:8
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, rasterio; print('torch', torch.__version__, 'rasterio', rasterio.__version__)" | tee -a "$OUT/gpu.txt"
# First the open question (the default against dual-stream, three seeds), then every row and world.
python3 benchmarks/bench_table.py --device cuda --parallel 12 --threads 1 --deadline "$DEADLINE" \
  --models CloudLULC-Net dual-stream "CloudLULC-Net + modality dropout" \
  --out /tmp/table --results "$OUT/results.jsonl" 2>&1 | grep -v -E "^\s*$" > "$OUT/table.log"
python3 benchmarks/bench_table.py --device cuda --parallel 12 --threads 1 --deadline "$DEADLINE" \
  --variants default "thick clouds" "SAR confusable" "few barren" \
  --out /tmp/table --results "$OUT/results.jsonl" 2>&1 | grep -v -E "^\s*$" >> "$OUT/table.log"
tail -n 5 "$OUT/table.log"
cp /tmp/table/table.md "$OUT/table.md" 2>/dev/null
CLOUDLULC_BENCH_OUT="$OUT" timeout 90 python3 benchmarks/bench_train.py --size base --crop 512 --batch 8 --steps 10 \
  --device cuda --amp --architectures cloudlulc_net dual_stream 2>&1 | tail -n 12 | tee "$OUT/base.log"
