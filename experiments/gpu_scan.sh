#!/usr/bin/env bash
# Issue #20's measurement in one GPU call, about 5 minutes on one H100, every phase under a timeout:
#   1. correctness of v1 and v2 on the GPU (check_scan_gpu.py --quick), with the Triton compilation of phases 2-3
#      in parallel processes (bench_scan.py --warm-only, a short bench_model.py run);
#   2. the scans against mamba_ssm's CUDA kernel, same run, the issue's four shapes, fwd and fwd+bwd and peak memory,
#      in the (b, d, l) and the model's own layouts (bench_scan.py), two interleaved rounds;
#   3. the 3.5M "base" model, one training step, tokens/s at 2^16 and 2^18 plain and 2^20 chunked (2^16 chunks),
#      with scan_kernel v2 and the PyTorch or Triton conv and norm, each pair, and 2^20 in 2^18 chunks with the
#      Triton ones (bench_model.py);
#      then the conv alone, PyTorch's against conv_triton.py's launch variants (bench_conv.py);
#   4. that step at 2^16 and 2^18 by kernel group (profile_model.py: the scan, conv, matmuls, norm, optimizer, ...),
#      with the PyTorch conv and norm and with the Triton ones;
#   5. v2's _fwd_scan and _bwd_scan under Nsight Compute (ncu_scan.py): stall reasons, issue and memory rates, in
#      details.tgz (ncu_scan_*.txt).
#
# Stage mamba_ssm's kernel on this machine first, from the project root (it ships prebuilt for torch 2.11.0+cu130):
#   ../shared/anchors/mamba_ssm/stage.sh .anchors && echo /.anchors/ >> .git/info/exclude
# then run on the GPU machine with carry [".anchors"], the commit written into the command (the tree arrives there
# without .git):
#   COMMIT=<git rev-parse HEAD> bash experiments/gpu_scan.sh
# Results in $OUT (at most 8 files come back from the device tool): see WORK below.
# Knobs (environment): BUDGET_S (default 330, the whole script's wall clock: later phases get what is left, each at
# least a few seconds), V2_CONFIGS (JSON list of scan_v2.plan keywords: extra v2 variants timed beside the default),
# MODEL_CHUNK_BP (phase 3's longer chunk, default 262144; empty skips it).
# `bash experiments/gpu_scan.sh --cpu-smoke` runs the same steps at tiny sizes in Triton's interpreter (CI).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=""
[ "${1:-}" = "--cpu-smoke" ] && SMOKE="--cpu-smoke"
# Every phase writes into WORK; what comes back through the device tool (at most 8 files in $OUT) is copied to OUT as
# soon as it exists (a call cut at its limit keeps it): env.txt, bench_scan.{json,log}, model_{plain,chunked}.json,
# gpu_scan.log (this script's output, each check's closing line in it) and, at the end, details.tgz (every log).
FINAL=${OUT:-/tmp/gpu_scan}
OUT=${SCAN_WORK:-/tmp/gpu_scan_work}  # scratch, emptied first
BUDGET_S=${BUDGET_S:-330}
# v2 launch variants are timed beside v2's default in the same run. The 12-06 run (experiments/results/gpu_scan/)
# compared stop_summaries (chunk summaries stopped once the decay makes every further term vanish in fp32; exact to
# rounding), the same with sm_warps 32, sm_warps 8 and full_warps 2; the GPU check runs v2's default and, as
# check_v2full_*, the full summary walk that is no longer the default.
# The 12-06 run made {"stop_summaries": true, "sm_warps": 32} v2's default (the old launch is timed with
# V2_CONFIGS='[{"stop_summaries": false, "sm_warps": 16}]'). The 12-07 H100 run timed the opt-in `lanes` launches:
# lanes 4 failed the GPU check (dB/dC wrong; exact in the interpreter), lanes 8 passed at twice v2's time
# (experiments/results/gpu_scan_h100_2026-12-07/). So no variant by default: all four shapes get the time.
V2_CONFIGS=${V2_CONFIGS:-'[]'}
export COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)
rm -rf "$OUT"  # scratch: an earlier run's files must not reach details.tgz
mkdir -p "$OUT" "$FINAL"
keep() { for f in "$@"; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$FINAL/"; done; return 0; }
start=$(date +%s)
# seconds for the next phase: `want`, or less so that `reserve` seconds stay for the phases after it
cap() { local l=$(( BUDGET_S - ($(date +%s) - start) - $2 )); (( l < $1 )) && set -- "$l"; (( $1 < 5 )) && set -- 5; echo "$1"; }
stamp() { echo "== $* ($(( $(date +%s) - start )) s)"; }
pids=()
bg() { "$@" & pids+=($!); }  # a phase-1 job

main() {
{
  echo "date $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit $COMMIT"
  echo "kernels sha256 $(LC_ALL=C; cat mambadna/kernels/*.py | sha256sum | cut -c1-16)"  # C: one glob order
  [ -z "$SMOKE" ] && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu \
    --format=csv,noheader
  "$PY" -c "import platform, torch, triton; print('python', platform.python_version(), 'torch', torch.__version__, \
'triton', triton.__version__)"
  echo "V2_CONFIGS $V2_CONFIGS"
} | tee "$OUT/env.txt"
keep env.txt

MAMBA=""
if [ -z "$SMOKE" ] && [ -f .anchors/selective_scan_cuda.so.xz ]; then
  [ -f .anchors/selective_scan_cuda.so ] || xz -dc .anchors/selective_scan_cuda.so.xz > .anchors/selective_scan_cuda.so
  export PYTHONPATH=$PYTHONPATH:$PWD/.anchors
  if ! "$PY" -c "import torch, selective_scan_cuda" 2>"$OUT/anchor.err"; then
    echo "mamba_ssm's kernel does not import here (see anchor.err; rebuilding takes ~160 s, over this budget):" \
         "no mamba_ssm rows"
    MAMBA="--no-mamba"
  fi
elif [ -z "$SMOKE" ]; then
  echo "no .anchors/selective_scan_cuda.so.xz (stage it, carry .anchors): no mamba_ssm rows"
  MAMBA="--no-mamba"
fi

stamp "1. correctness (check_scan_gpu.py --quick) and compilation, in parallel"
T1=$(cap 150 150)
if [ -n "$SMOKE" ]; then
  bg timeout "$T1" "$PY" experiments/check_scan_gpu.py --cpu-smoke --versions 1 2 --json "$OUT/check_v2_0.json" \
    > "$OUT/check_v2_0.log" 2>&1
  bg timeout "$T1" "$PY" experiments/check_scan_gpu.py --cpu-smoke --versions 2 --v2-launch \
    '{"stop_summaries": false, "chunk": 16}' --json "$OUT/check_v2full_0.json" > "$OUT/check_v2full_0.log" 2>&1
else
  for i in 0 1 2 3; do
    bg timeout "$T1" "$PY" experiments/check_scan_gpu.py --versions 2 --quick --part $i/4 --json "$OUT/check_v2_$i.json" \
      > "$OUT/check_v2_$i.log" 2>&1
  done
  for i in 0 1 2; do
    bg timeout "$T1" "$PY" experiments/check_scan_gpu.py --versions 1 --quick --part $i/3 --json "$OUT/check_v1_$i.json" \
      > "$OUT/check_v1_$i.log" 2>&1
  done
  for i in 0 1; do  # the full summary walk, no longer the default, keeps its own check
    bg timeout "$T1" "$PY" experiments/check_scan_gpu.py --versions 2 --quick --part $i/2 --v2-launch \
      '{"stop_summaries": false}' --json "$OUT/check_v2full_$i.json" > "$OUT/check_v2full_$i.log" 2>&1
  done
  # every timed variant is checked too (a new launch such as lanes must be exact on the GPU before its time counts),
  # in parts as the default is: in one process a variant's check ran out of phase 1's time (12-07 16:28 and 19:47)
  nv=$("$PY" -c "import json, sys; print(len(json.loads(sys.argv[1])))" "$V2_CONFIGS")
  for j in $(seq 0 $(( nv - 1 ))); do
    cfg=$("$PY" -c "import json, sys; print(json.dumps(json.loads(sys.argv[1])[int(sys.argv[2])]))" "$V2_CONFIGS" "$j")
    for i in 0 1 2; do
      bg timeout "$T1" "$PY" experiments/check_scan_gpu.py --versions 2 --quick --part $i/3 --v2-launch "$cfg" \
        --json "$OUT/check_v2cfg${j}_$i.json" > "$OUT/check_v2cfg${j}_$i.log" 2>&1
    done
  done
  groups=$(( 2 * (2 + nv) ))
  for i in $(seq 0 $(( groups - 1 ))); do
    bg timeout "$T1" "$PY" experiments/bench_scan.py --warm-only --part "$i/$groups" --v2-configs "$V2_CONFIGS" \
      > "$OUT/warm_scan_$i.log" 2>&1
  done
  # the model's own layouts and the chunked mode's initial state, at lengths whose launch plans match phase 3's
  bg timeout "$T1" "$PY" experiments/bench_model.py --out "$OUT/warm_model" --sections train --models base \
    --modes plain,chunked --scan-kernels v1,v2 --conv-backends torch,triton --norm-backends torch,triton \
    --log2-lengths 15 --chunk-bp 16384 > "$OUT/warm_model.log" 2>&1
  # the Triton conv and norm on the GPU: the model with each against the PyTorch ops, chunked against whole, fp32
  bg timeout "$T1" "$PY" experiments/bench_model.py --out "$OUT/exact_model" --json-name exact --sections exact \
    --models base --conv-backends torch,triton --norm-backends torch,triton > "$OUT/exact_model.log" 2>&1
fi
wait "${pids[@]}"
for f in "$OUT"/check_v*.log; do echo "$(basename "$f"): $(tail -n 1 "$f")"; done
grep -h "FAIL\|NaN" "$OUT"/check_v*.log
[ -z "$SMOKE" ] && grep -h "exactness" "$OUT/exact_model.log"

stamp "2. scans against mamba_ssm (bench_scan.py)"
if [ -n "$SMOKE" ]; then
  timeout "$(cap 100 60)" "$PY" experiments/bench_scan.py --cpu-smoke --out "$OUT/bench_scan.json" \
    > "$OUT/bench_scan.log" 2>&1
else
  timeout "$(cap 110 70)" "$PY" experiments/bench_scan.py --out "$OUT/bench_scan.json" --rounds 2 --rep 100 \
    --profile --flash --v2-configs "$V2_CONFIGS" $MAMBA > "$OUT/bench_scan.log" 2>&1
fi
echo "bench_scan exit $?"
keep bench_scan.json bench_scan.log

stamp "3. the 3.5M model, one training step, scan_kernel v1 / v2, conv and norm torch / triton (bench_model.py)"
if [ -n "$SMOKE" ]; then
  PLAIN=(--log2-lengths 8) CHUNKED=(--log2-lengths 9)
else
  PLAIN=(--log2-lengths 16,18) CHUNKED=(--log2-lengths 20 --chunk-bp 65536)
fi
# v2 with the PyTorch conv and norm (the defaults until 12-07; auto, the default since, runs the Triton ones on CUDA),
# with each Triton kernel, and with both (v1: phase 2 has it)
SERIES=(--scan-kernels v2 --conv-backends torch,triton --norm-backends torch,triton)
timeout "$(cap 50 65)" "$PY" experiments/bench_model.py $SMOKE --out "$OUT" --json-name model_plain --sections train \
  --models base --modes plain "${SERIES[@]}" "${PLAIN[@]}" > "$OUT/model_plain.log" 2>&1
echo "bench_model plain exit $?"
timeout "$(cap 60 30)" "$PY" experiments/bench_model.py $SMOKE --out "$OUT" --json-name model_chunked --sections train \
  --models base --modes chunked "${SERIES[@]}" "${CHUNKED[@]}" > "$OUT/model_chunked.log" 2>&1
echo "bench_model chunked exit $?"
keep model_plain.json model_chunked.json
# the chunked mode at the package's default backends in longer chunks (MODEL_CHUNK_BP, 2^18 by default; plain 2^18
# fits in 18 GiB): fewer chunks, each nearer plain's rate (details.tgz, model_chunked_long.json)
if [ -z "$SMOKE" ] && [ -n "${MODEL_CHUNK_BP-262144}" ]; then
  timeout "$(cap 40 60)" "$PY" experiments/bench_model.py --out "$OUT" --json-name model_chunked_long --sections train \
    --models base --modes chunked --scan-kernels v2 --conv-backends triton --norm-backends triton --log2-lengths 20 \
    --chunk-bp "${MODEL_CHUNK_BP-262144}" > "$OUT/model_chunked_long.log" 2>&1
  echo "bench_model chunked ${MODEL_CHUNK_BP-262144} exit $?"
  grep -h "^| mamba-base" "$OUT/model_chunked_long.md" 2>/dev/null
fi
# the conv alone: PyTorch's against the Triton kernel's launch variants (bench_conv.py; in details.tgz)
timeout "$(cap 40 100)" "$PY" experiments/bench_conv.py $SMOKE --out "$OUT" > "$OUT/bench_conv.log" 2>&1
echo "bench_conv exit $?"
grep -h "^l=" "$OUT/bench_conv.log"

stamp "4. where the model's step goes, kernel by kernel (profile_model.py)"
timeout "$(cap 45 85)" "$PY" experiments/profile_model.py $SMOKE --out "$OUT" > "$OUT/profile_model.log" 2>&1
echo "profile_model exit $?"
keep profile_model.json
# the same step with the Triton conv and norm (in details.tgz: the eight files that come back are taken), and the
# chunked step at 2^20 (2^16 chunks; the smoke: 2^10 in 2^7), whose wall time against its kernel time is the chunk
# loop's cost on the host
timeout "$(cap 75 60)" "$PY" experiments/profile_model.py $SMOKE --out "$OUT" --json-name profile_model_fused \
  --conv-backend triton --norm-backend triton --chunked-log2 "$([ -n "$SMOKE" ] && echo 10 || echo 20)" \
  > "$OUT/profile_model_fused.log" 2>&1
echo "profile_model fused exit $?"

stamp "5. inside the scan kernels: Nsight Compute's stall reasons, issue and memory rates (ncu_scan.py)"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
if [ -z "$SMOKE" ] && [ -n "$NCU" ]; then
  for shape in 1,512,262144,16 8,1536,4096,16; do
    timeout "$(cap 40 0)" "$NCU" --clock-control none -k 'regex:_bwd_scan|_fwd_scan' --launch-skip 2 \
      --launch-count 2 --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
      --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section InstructionStats --section SourceCounters \
      "$PY" experiments/ncu_scan.py --shape "$shape" > "$OUT/ncu_scan_${shape//,/x}.txt" 2>&1
    echo "ncu $shape exit $?: $(grep -c 'Warp Cycles Per Issued Instruction' "$OUT/ncu_scan_${shape//,/x}.txt") kernels"
  done
elif [ -z "$SMOKE" ]; then
  echo "no ncu on this machine: phase 5 skipped"
fi
tar czf "$FINAL/details.tgz" -C "$OUT" . 2>/dev/null

stamp "summary"
cat "$OUT/env.txt"
[ -z "$SMOKE" ] && nvidia-smi --query-gpu=clocks.sm,temperature.gpu --format=csv,noheader
sed -n '/^(.*auto=v/p' "$OUT/bench_scan.log"
grep -hE "^\| mamba-base.*\| (ok|OOM|skipped[^|]*) \|" "$OUT"/model_plain.md "$OUT"/model_chunked.md 2>/dev/null
grep -hE "^## l = |^\| [a-z/ -]+ \| [0-9.]+ \| [0-9]+% \|$" "$OUT"/profile_model.md "$OUT"/profile_model_fused.md 2>/dev/null
stamp "done"
}

main 2>&1 | tee -a "$FINAL/gpu_scan.log"
