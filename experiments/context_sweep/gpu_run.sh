#!/usr/bin/env bash
# The context sweep on one GPU (sized for an H200) in about 7 minutes of wall time, results under $OUT.
#
#   OUT=/some/dir experiments/context_sweep/gpu_run.sh          (from the repository root; no network needed)
#
# Needs, in the repository root (both git-ignored, both named in the device tool's `carry`):
#   .sweepdata/great_apes/{human,chimpanzee,gorilla,orangutan}.fa.gz + .blocks.bed + manifest.tsv
#   .sweepdata/bacteria/{ecoli_536,hpylori_f32,hpylori_gambia94_24,saureus_n315}.fa.gz + manifest.tsv
#       (made by experiments/context_sweep/pack_data.sh from data/prepare_great_apes.py and data/prepare_bacteria.py)
#   .whl/pyfaidx-*.whl            (the GPU image has no pyfaidx; pack_data.sh downloads it)
#
# What it does: the k-mer baseline on the CPU cores in the background; on the GPU, a short calibration
# (seconds per step at each length), then ONE step count for every length that fits MODEL_BUDGET_S seconds,
# pretraining once per dataset, and scratch + pretrained fine-tuning at 2^10..2^18 for both datasets. Rows that
# would pass the deadline are skipped and say so. Knobs: MODEL_BUDGET_S (default 270), DEADLINE_S (default 380,
# from the start), LENGTHS (default 10,12,14,16,18), SCALE (default gpu-h200).
set -uo pipefail
OUT=${OUT:?set OUT to the output folder}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${SWEEP_DATA:-$ROOT/.sweepdata}
WORK=${SWEEP_WORK:-/tmp/context_sweep}
START=$(date +%s)
MODEL_BUDGET_S=${MODEL_BUDGET_S:-270}
DEADLINE=$(( START + ${DEADLINE_S:-380} ))
LENGTHS=${LENGTHS:-10,12,14,16,18}
SCALE=${SCALE:-gpu-h200}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0

if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$ROOT"/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch, triton, pytorch_lightning as pl, pyfaidx, sklearn; print('torch', torch.__version__, \
'triton', triton.__version__, 'lightning', pl.__version__, 'pyfaidx', pyfaidx.__version__, 'sklearn', \
sklearn.__version__, 'cuda', torch.cuda.is_available())"
  python3 -c "from mambadna.kernels import available_backends; print('scan backends:', available_backends())"
  git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null || true
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

ARGS=(--out "$WORK" --scale "$SCALE" --lengths "$LENGTHS"
      --data "great_apes=$DATA/great_apes/manifest.tsv" --data "bacteria=$DATA/bacteria/manifest.tsv")
echo "== block splits ($(( $(date +%s) - START )) s)"
python3 experiments/context_sweep/run.py "${ARGS[@]}" --prepare-only || exit 1

echo "== k-mer baseline in the background, models on the GPU ($(( $(date +%s) - START )) s)"
OMP_NUM_THREADS=6 OPENBLAS_NUM_THREADS=6 MKL_NUM_THREADS=6 \
  python3 experiments/context_sweep/run.py "${ARGS[@]}" --parts kmer --no-report > "$OUT/kmer.log" 2>&1 &
KMER=$!
python3 experiments/context_sweep/run.py "${ARGS[@]}" --parts models --budget-s "$MODEL_BUDGET_S" \
  --deadline "$DEADLINE" --no-report 2>&1 | tee "$OUT/models.log"
echo "models done at $(( $(date +%s) - START )) s"

# give the k-mer half until 20 s past the deadline, then keep what it wrote
while kill -0 "$KMER" 2>/dev/null && [ "$(date +%s)" -lt $(( DEADLINE + 20 )) ]; do sleep 2; done
if kill -0 "$KMER" 2>/dev/null; then echo "k-mer baseline stopped at the deadline"; kill "$KMER"; fi
wait "$KMER" 2>/dev/null
tail -n 12 "$OUT/kmer.log"

python3 experiments/context_sweep/report.py "$WORK" --title "species accuracy against context ($(date -u +%F))"
cp "$WORK/RESULTS.md" "$WORK/results.json" "$OUT/" 2>/dev/null
cp "$WORK/accuracy_vs_context.png" "$OUT/" 2>/dev/null
# the small files of every run (configs, summaries, metrics, confusion matrices), no checkpoints or models
(cd "$WORK" && find . \( -name 'summary.json' -o -name 'run_config.json' -o -name 'metrics.csv' \
   -o -name 'confusion_matrix.csv' -o -name 'splits.json' -o -name '*.jsonl' -o -name 'plan.json' \
   -o -name 'sweep_*.json' -o -name 'manifest.tsv' \) -print0 | tar czf "$OUT/runs.tgz" --null -T -)
echo "total wall time: $(( $(date +%s) - START )) s; outputs in $OUT: $(ls "$OUT" | tr '\n' ' ')"
