#!/usr/bin/env bash
# Issue #12's GPU measurements in one call on the H200 (carry .whl): the decoder checks, decode speed against the
# graph-captured Transformer, embedding throughput and fine-tuning memory. Results land in $OUT/serving.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 experiments/bench_serving.py --out "$OUT/serving" "$@" 2>&1 | tee "$OUT/serving.log"
