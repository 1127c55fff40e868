#!/usr/bin/env bash
# Issue 19's two experiments on one GPU in one call (about 9 minutes): chrX pretraining against window length and
# species classification of held-out strains against train and test length, side by side on the GPU, the k-mer
# baseline on the CPU cores beside them. Everything lands in $OUT as it happens (at most 8 files come back from the
# device tool, and a call cut at its limit keeps the rows finished by then):
#   chrx.jsonl species.jsonl species_lr*.jsonl species_kmer.jsonl   one JSON row a finished run (report.py)
#   chrx_env.json species_env.json                 card, date, versions, commit, the scale
#   logs.tgz                                       each experiment's output
#   runs.tgz                                       every run's config, summary, metrics, curves (no checkpoints)
#
#   COMMIT=<sha> OUT=/some/dir experiments/long_context/gpu_run.sh   (repository root; carry .lcdata
#   and .whl; <sha>: `git rev-parse HEAD` where the tree was made, because the GPU machine's copy of .git is stale)
# Needs .lcdata/ from `python data/prepare_long_context.py --out .lcdata` and .whl/ with pyfaidx and biopython
# wheels for the GPU image's Python (experiments/context_sweep/pack_data.sh fetches them).
# A third GPU process fine-tunes a variant beside finetune's defaults: VARIANT_ARGS (run.py arguments; default
# "--windows 13 --species-lr 0.008", e.g. "--windows 20 --first-fraction 0.75"); VARIANT2_ARGS, if set, a fourth
# (e.g. "--windows 20,13 --pretrain-window 13"); SPECIES_ARGS, run.py arguments of the first process (default none:
# finetune's defaults; e.g. "--seed 3" or "--set segment_bp=1024 --tag seg1024"). Knobs: DEADLINE_S (default 420: no
# run starts later), CHRX_WINDOWS, SPECIES_WINDOWS, TEST_WINDOWS, CHRX_EVAL_WINDOWS (every chrX model also scored
# there) (log2, comma-separated), CHRX_STEPS, SPECIES_STEPS; SPECIES=0 runs chrX alone, CHRX=0 the species
# alone; MICRO_BP (log2, default 19) caps the bases of a micro-batch of every run, for more runs on one GPU (four
# chrX processes fitted at 19 on an H100 on 12-07; seven processes, four chrX and three fine-tunes, did not).
#
# Runs longer than one call go in pieces (experiments/long_context/pieces.py): PAUSE_AFTER_S (default none) stops
# every chrX run still training that many seconds after its run.py started, after the step in progress, with a
# checkpoint (its row says "paused"), and each paused run folder comes back as piece_<run folder>.tgz (its run
# config, newest checkpoint, best model so far and logs; about 10 MiB for the small model; a piece over 16 MiB cannot
# come back, said with "!!!"). CHRX_PIECES=<folder in the repository, carried> unpacks its *.tgz into $WORK first;
# the same chrX arguments then continue those runs to their train.max_steps (other settings are refused), and score
# them once they finish. E.g. 1024 steps of a 2^20 window (about 25 minutes) over three calls, with .pieces/ (ignored
# by git) carried beside .lcdata and .whl:
#   call 1: SPECIES=0 CHRX_WINDOWS=20 CHRX_STEPS=1024 PAUSE_AFTER_S=520 COMMIT=<sha> OUT=$OUT \
#             bash experiments/long_context/gpu_run.sh      -> chrx.jsonl: {"status": "paused", "step": k, ...};
#           $OUT/piece_chrx_L20.tgz; then here: mkdir -p .pieces && cp <files_at>/piece_chrx_L20.tgz .pieces/
#   call 2: the same with CHRX_PIECES=.pieces                 -> "continuing the paused run from step k of 1024" in
#           logs.tgz's chrx.log; paused again: copy its piece_chrx_L20.tgz over .pieces/'s
#   call 3: the same again                                    -> step 1024, scored: chrx.jsonl's "ok" row, with its
#           "pieces" (steps, seconds, card of each); if the row says paused still, a fourth call the same way
# PAUSE_AFTER_S=520 leaves the call time to save, pack and copy back the piece, or to score a run that finished. A call
# returns at most 8 files: SPECIES=0 leaves room for a piece per chrX group.
set -uo pipefail
OUT=${OUT:?set OUT to the output folder}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${LC_WORK:-/tmp/long_context}
DEADLINE_S=${DEADLINE_S:-420}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$ROOT"/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
RUN=experiments/long_context/run.py
PIECES=experiments/long_context/pieces.py
opt() { [ -n "${2:-}" ] && echo "$1 $2"; }
if [ -n "${CHRX_PIECES:-}" ]; then
  python3 $PIECES unpack "$CHRX_PIECES" "$WORK" || exit 1
fi
MICRO=$(opt --micro-bp "${MICRO_BP:-}")
SPECIES_CMD=(species --data .lcdata/strains/manifest.tsv --out "$WORK" --rows "$OUT"
             $(opt --windows "${SPECIES_WINDOWS:-}") $(opt --test-windows "${TEST_WINDOWS:-}"))
KMER=""
if [ "${SPECIES:-1}" != 0 ]; then
  OMP_NUM_THREADS=4 python3 $RUN "${SPECIES_CMD[@]}" --part kmer > "$WORK/kmer.log" 2>&1 &
  KMER=$!
fi
# CHRX_WINDOWS groups separated by "/" run as that many processes side by side (e.g. "12,11/14,13/16,15/18,17");
# their rows go to the one chrx.jsonl (run.py locks it); CHRX_ARGS: more run.py arguments of every chrX process
# (e.g. --set data.num_workers=3); CHRX_GROUP_ARGS: "/"-separated run.py arguments of each group in turn, for variants
# side by side (e.g. CHRX_WINDOWS="20/20" CHRX_GROUP_ARGS="--first-fraction 0.5/--seed 1"; a variant's rows go to
# chrx_<variant>.jsonl)
CHRX_PIDS=()
IFS=/ read -r -a GROUPS_ <<< "${CHRX_WINDOWS:-}"
IFS=/ read -r -a GROUP_ARGS <<< "${CHRX_GROUP_ARGS:-}"
[ ${#GROUPS_[@]} -gt 0 ] || GROUPS_=("")
[ "${CHRX:-1}" != 0 ] || GROUPS_=()
for i in "${!GROUPS_[@]}"; do
  python3 $RUN chrx --data .lcdata/chrX/chrX.fa.gz --out "$WORK" --rows "$OUT" --deadline-s "$DEADLINE_S" $MICRO \
    $(opt --windows "${GROUPS_[$i]}") $(opt --steps "${CHRX_STEPS:-}") $(opt --eval-windows "${CHRX_EVAL_WINDOWS:-}") \
    $(opt --pause-after-s "${PAUSE_AFTER_S:-}") ${CHRX_ARGS:-} ${GROUP_ARGS[$i]:-} \
    > "$WORK/chrx$([ "$i" = 0 ] || echo "_$i").log" 2>&1 &
  CHRX_PIDS+=($!)
done
MODELS=""; LR=""; V2=""
if [ "${SPECIES:-1}" != 0 ]; then
  python3 $RUN "${SPECIES_CMD[@]}" --part models --deadline-s "$DEADLINE_S" ${SPECIES_ARGS:-} \
    $(opt --steps "${SPECIES_STEPS:-}") > "$WORK/species.log" 2>&1 &
  MODELS=$!
  python3 $RUN "${SPECIES_CMD[@]}" --part models --deadline-s "$DEADLINE_S" \
    ${VARIANT_ARGS:---windows 13 --species-lr 0.008} \
    $(opt --steps "${SPECIES_STEPS:-}") > "$WORK/species_lr.log" 2>&1 &
  LR=$!
  # a fourth process: a second variant (e.g. "--windows 13,20 --pretrain-window 13")
  if [ -n "${VARIANT2_ARGS:-}" ]; then
    python3 $RUN "${SPECIES_CMD[@]}" --part models --deadline-s "$DEADLINE_S" $VARIANT2_ARGS \
      $(opt --steps "${SPECIES_STEPS:-}") > "$WORK/species_v2.log" 2>&1 &
    V2=$!
  fi
fi
wait ${CHRX_PIDS[@]+"${CHRX_PIDS[@]}"} $MODELS $LR $V2
if [ -n "$KMER" ]; then sleep 1; kill $KMER 2>/dev/null; wait $KMER 2>/dev/null; fi
for f in $(cd "$WORK" && ls *.log); do
  echo "=== ${f%.log}"; grep -v -i "warn\|tip\|available:\|deprecat" "$WORK/$f" | tail -n 20
done
(cd "$WORK" && find . \( -name '*.json' -o -name '*.csv' -o -name '*.png' \) -not -path '*/checkpoints/*' -print0 \
   | tar czf "$OUT/runs.tgz" --null -T -)
tar czf "$OUT/logs.tgz" -C "$WORK" $(cd "$WORK" && ls *.log)
if [ -n "${PAUSE_AFTER_S:-}${CHRX_PIECES:-}" ]; then
  python3 $PIECES pack "$WORK" "$OUT" || echo "!!! a paused run's piece cannot come back (see above)"
fi
ls -la "$OUT"
