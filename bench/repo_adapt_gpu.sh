#!/usr/bin/env bash
# RePo's adaptation beyond 1000 steps, on one machine (made for a GPU, where a source run takes minutes, not the
# CPU's hour): train RePo on clean pixels (reach-v3, --preset cpu-small, SOURCE_STEPS env
# steps, one checkpoint at the end), then adapt its encoder under distractors for ADAPT_STEPS steps, every seed
# and calibration arm at once as processes (bench/repo_adapt_study.py: clean ceiling, before, after, gap closed).
#   DEVICE=cuda CUDA_GRAPH=1 bash bench/repo_adapt_gpu.sh OUT        # then: python bench/repo_adapt_study.py --report OUT/adapt
# Knobs: SOURCE_STEPS (24000), PREFILL (2000), ADAPT_STEPS (3000), SEEDS ("0 1 2"; SEEDS= trains the source only), CALIB ("0 200"),
# EVAL_EPISODES (10), ADAPT_EVAL_EVERY (1000: the curve over the adaptation budget), THREADS (1 torch thread per
# adaptation process), SOURCE_THREADS (THREADS: the source trains alone, so it may take more).
# Re-running continues: a finished source (its summary.json) or adaptation is not redone, and a source stopped
# early (Ctrl-C saves its last.pt) is resumed from its checkpoint rather than adapted half-trained.
set -uo pipefail
. "$(dirname "$0")/env.sh"
OUT=${1:-runs/repo_adapt_gpu}
DEVICE=${DEVICE:-cuda}
THREADS=${THREADS:-1}
SOURCE_THREADS=${SOURCE_THREADS:-$THREADS}
SOURCE_STEPS=${SOURCE_STEPS:-24000}
GRAPH=(); [ "${CUDA_GRAPH:-0}" = 1 ] && GRAPH=(--cuda-graph)
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
start=$(date +%s)
if [ ! -f "$OUT/source/summary.json" ]; then  # a finished train run writes summary.json; a stopped one does not
  [ -f "$OUT/source/checkpoints/last.pt" ] && echo "resuming the source from $OUT/source/checkpoints/last.pt"
  SCALE=(--preset cpu-small --total-steps "$SOURCE_STEPS" --prefill "${PREFILL:-2000}" --checkpoint-every "$SOURCE_STEPS"
         --eval-every $((SOURCE_STEPS / 4)))
  # --resume continues a checkpoint, starts afresh in a new or never-checkpointed directory, and refuses a source
  # whose config.json differs in what a resume may not change
  OMP_NUM_THREADS=$SOURCE_THREADS MKL_NUM_THREADS=$SOURCE_THREADS python -m embodied.cli train repo --task reach-v3 \
    --variant pixels "${SCALE[@]}" --device "$DEVICE" --no-video --threads "$SOURCE_THREADS" --run-dir "$OUT" \
    --run-name source --resume "${GRAPH[@]}" >> "$OUT/source.log" 2>&1 \
    || { echo "source training failed: $OUT/source.log"; tail -n 5 "$OUT/source.log"; exit 1; }
fi
echo "source ready after $(( $(date +%s) - start )) s: $(tr '\r' '\n' < "$OUT/source.log" | grep -c '^step ') evaluations"
pids=()
for seed in ${SEEDS-0 1 2}; do
  for pairs in ${CALIB-0 200}; do
    python bench/repo_adapt_study.py --source-run "$OUT/source" --seeds "$seed" --calibration "$pairs" \
      --steps "${ADAPT_STEPS:-3000}" --eval-episodes "${EVAL_EPISODES:-10}" --eval-every "${ADAPT_EVAL_EVERY:-1000}" --device "$DEVICE" --threads "$THREADS" \
      --out "$OUT/adapt" > "$OUT/adapt-calib$pairs-s$seed.log" 2>&1 &
    pids+=($!)
  done
done
[ ${#pids[@]} -gt 0 ] || { echo "no seeds or arms: the source only"; exit 0; }
wait "${pids[@]}"
echo "adaptations done after $(( $(date +%s) - start )) s"
python bench/repo_adapt_study.py --report "$OUT/adapt"
