#!/usr/bin/env bash
# Pretrain + fine-tune on the bundled data on one GPU (sized for ~3 minutes on an H100; bf16, Triton scan chosen
# automatically on CUDA), then the CPU-sized demo for comparison. Logs, plots and models go under $1.
#
#   experiments/gpu_train_run.sh OUT_DIR            (from the repository root; no network needed)
#
# Needs torch, triton, pytorch-lightning, numpy, scikit-learn, matplotlib, safetensors (+ pyfaidx, biopython on
# PYTHONPATH). Knobs: PRETRAIN_STEPS, FINETUNE_STEPS (defaults from the recipes), DEVICES (default 1).
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
EXTRA_PRE=(); EXTRA_FT=()
[[ -n "${PRETRAIN_STEPS:-}" ]] && EXTRA_PRE=(--steps "$PRETRAIN_STEPS")
[[ -n "${FINETUNE_STEPS:-}" ]] && EXTRA_FT=(--steps "$FINETUNE_STEPS")
DEVICES=${DEVICES:-1}

{
  echo "== environment"; date; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, 'cuda', torch.cuda.is_available())"
  python -c "from mambadna.kernels import available_backends; print('scan backends:', available_backends())"

  echo "== pretrain (great-apes human chr22 subset, 256 -> 1024 bp warmup)"
  start=$(date +%s)
  python -m mambadna pretrain --recipe "$ROOT/experiments/recipes/gpu_pretrain.toml" \
    --genome "$ROOT/data/great_apes/human.fa" --out "$OUT/pretrain" --devices "$DEVICES" --no-progress "${EXTRA_PRE[@]}"
  echo "pretrain seconds: $(( $(date +%s) - start ))"

  echo "== finetune (great-apes species, 1 kb windows)"
  start=$(date +%s)
  python -m mambadna finetune --recipe "$ROOT/experiments/recipes/gpu_finetune.toml" \
    --pretrained "$OUT/pretrain/model" --manifest "$ROOT/data/great_apes/manifest.tsv" --out "$OUT/finetune" \
    --devices "$DEVICES" --no-progress "${EXTRA_FT[@]}"
  echo "finetune seconds: $(( $(date +%s) - start ))"

  echo "== demo (bundled 4-genome task, CPU-sized settings, on this machine)"
  start=$(date +%s)
  python -m mambadna demo --out "$OUT/demo" --no-progress
  echo "demo seconds: $(( $(date +%s) - start ))"
} 2>&1 | tee "$OUT/run.log"
echo "logs and plots under $OUT: run.log, pretrain/{curves.png,logs/metrics.csv}, finetune/{curves.png,confusion_matrix.png}, demo/"
