#!/usr/bin/env bash
# A/B of kernel defaults inside the model, in one GPU call: bench_model.py's training step of the 3.5M "base" model
# (plain 2^16 and 2^18, chunked 2^20 in 2^16 chunks; scan v2, Triton conv and norm) with the package's defaults
# ("new") and with module defaults set back to what they replaced ("old", OLD below), in alternating rounds
# (ROUNDS, default 2), each round its own process. $OUT gets summary.txt (a line a run) and ab.tgz (every run's
# bench_model json, md and log).
#   COMMIT=<sha> OUT=/some/dir bash experiments/ab_kernel_defaults.sh
# OLD: Python statements run before bench_model.py (default: the conv backward's per-step dweight sums and the
# scan's forward on 4 lanes on channels-last u, the defaults before 12-07 16:28, and the backward's
# state loop unpipelined, the default before 12-07 21:43, with dB/dC as per-block partials, the default before 12-08
# 00:01); NEW: the same for the "new" side
# (default: none, the package's defaults). E.g. a candidate default against today's:
#   NEW="import mambadna.kernels.scan_v2 as s; s.BWD_STAGES = 2" OLD=pass COMMIT=<sha> OUT=... bash <this script>
set -uo pipefail
OUT=${OUT:?set OUT to the output folder}
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OLD=${OLD:-"import mambadna.kernels.conv_triton as c, mambadna.kernels.scan_v2 as s; c.DW_ROWS = False; s.FWD_LANES_CHANNELS_LAST = 4; s.BWD_STAGES = 1; s.BWD_ATOMIC = False"}
mkdir -p "$OUT"
exec > >(tee "$OUT/summary.txt") 2>&1
echo "commit ${COMMIT:-unknown} $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo cpu) $(date -u '+%F %T UTC')"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
ARGS=(--sections train --models base --scan-kernels v2 --conv-backends auto --norm-backends auto --budget-s 90)
[ "${1:-}" = --cpu-smoke ] && ARGS+=(--cpu-smoke)
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in new old; do
    pre=$([ $v = old ] && echo "$OLD" || echo "${NEW:-pass}")
    for mode in "plain --log2-lengths ${PLAIN_L:-16,18}" "chunked --log2-lengths ${CHUNKED_L:-20} --chunk-bp 65536"; do
      name=ab_${mode%% *}
      [ "${1:-}" = --cpu-smoke ] && mode="${mode%% *}"
      python3 - "${ARGS[@]}" --modes $mode --out "$WORK/${v}_$r" --json-name "$name" <<PY > "$WORK/${v}_${r}_$name.log" 2>&1
import runpy, sys
$pre
import mambadna.kernels.conv_triton as _c, mambadna.kernels.scan_v2 as _s
print("defaults: DW_ROWS", _c.DW_ROWS, "FWD_LANES_CHANNELS_LAST", _s.FWD_LANES_CHANNELS_LAST, "BWD_STAGES",
      _s.BWD_STAGES, flush=True)
sys.argv = ["bench_model.py", *sys.argv[1:]]
runpy.run_path("experiments/bench_model.py", run_name="__main__")
PY
      echo "$v round $r $name exit $?: $(grep -h '^defaults\|^| mamba' "$WORK/${v}_${r}_$name.log" | tr '\n' ' ')"
    done
  done
done
tar czf "$OUT/ab.tgz" -C "$WORK" --exclude='*.png' .
