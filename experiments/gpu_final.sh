#!/usr/bin/env bash
# The session's last GPU call (carry .whl and .sweepdata): decode speed again with the final decoder, the whole
# model's training throughput with the scan in the tree, and a 2^20-base classifier fine-tune on real genomes.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
start=$(date +%s)
echo "== decode (check + generation)"
python3 experiments/bench_serving.py --out "$OUT/serving" --sections check,generation 2>&1 | tee "$OUT/serving.log"
echo "== model training throughput ($(( $(date +%s) - start )) s)"
python3 experiments/bench_model.py --out "$OUT/model" --sections train --models base,transformer \
  --log2-lengths "${MODEL_LENGTHS:-14,16,18,20}" --budget-s "${MODEL_BUDGET_S:-120}" 2>&1 | tee "$OUT/model.log"
echo "== 2^20-base species classifier on the great apes chr22 alignment, --chunk-bp 65536 ($(( $(date +%s) - start )) s)"
python3 -m mambadna finetune --manifest .sweepdata/great_apes/manifest.tsv --out /tmp/ft1m --model small \
  --window-bp 1048576 --batch-size 1 --chunk-bp 65536 --steps "${FT_STEPS:-24}" --precision bf16-mixed \
  --set data.val_windows=4 --set data.test_windows=16 --set train.val_every_n_steps=1000 \
  --set train.log_every_n_steps=4 --no-progress 2>&1 | tee "$OUT/finetune_1m.log"
cp /tmp/ft1m/summary.json "$OUT/finetune_1m_summary.json" 2>/dev/null
echo "total $(( $(date +%s) - start )) s"
