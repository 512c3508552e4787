#!/usr/bin/env bash
# The RePo-vs-Dreamer study (bench/repo_study_gpu.sh) on a GPU machine without network whose commands may run
# at most 10 minutes each, across two calls: pack here first with `GGUF=0 bash bench/gpu_pack.sh` (no LLM needed), then
#   call 1 (carry .gpu .gl):  SNAPSHOT_AT=560 bash bench/gpu_study_lease.sh start
#   call 2, on the same warm machine (within its 30 s idle):  WAIT=150 bash bench/gpu_study_lease.sh collect
# `start` unpacks the packages, runs the CUDA-graph tests (a captured update equals the eager one), measures
# eager and captured updates, starts bench/repo_study_gpu.sh detached (setsid: it outlives the call; with
# --cuda-graph only if the tests passed) and copies a snapshot of its runs to $OUT at SNAPSHOT_AT seconds.
# `collect` waits up to WAIT seconds (less if the study ends) and copies the runs again. Here, afterwards:
#   tar xzf study.tgz -C DIR && embodied report DIR/study --unfinished --at-step N ...
# JOB=adapt runs bench/repo_adapt_gpu.sh instead (clean source, then adaptation beyond 1000 steps; knobs in its
# header, e.g. SOURCE_STEPS, ADAPT_STEPS): python bench/repo_adapt_study.py --report DIR/study/adapt afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
STUDY=/tmp/study

snapshot() {  # the runs' configs, metrics, logs and summaries (no checkpoints), and the job's own log
  tar czf "$OUT/study.tgz" --exclude=checkpoints --exclude=tb -C /tmp study study.log 2>/dev/null
  grep -h "step .*: return" "$STUDY"/*.log 2>/dev/null | tail -n 3
  echo "snapshot at $(( $(date +%s) - t0 )) s: $(ls "$STUDY" 2>/dev/null | grep -c '^repo-') runs; $(grep -c . "$STUDY"/*/metrics.jsonl 2>/dev/null | tr '\n' ' ')"
}

case "${1:-}" in
start)
  rm -rf .venv  # a venv made elsewhere does not run here
  [ -f .gpu/setup.sh ] && . .gpu/setup.sh || { echo "no packages: run GGUF=0 bash bench/gpu_pack.sh here and carry .gpu .gl"; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 150 python -m pytest -q -p no:cacheprovider tests/test_repo.py -k "cuda_graph or wait or restoring" 2>&1 \
    | tee "$OUT/graph_tests.log" | tail -n 4
  tests=${PIPESTATUS[0]}
  grep -q "5 passed" "$OUT/graph_tests.log" || tests="${tests}, not 5 passed (GPU tests skipped?)"
  for flags in "" "--cuda-graph"; do
    timeout 100 python bench/repo_throughput.py --device cuda --batch 16 --seq-len 32 --updates 30 --threads 1 $flags
  done 2>&1 | grep "^|" | awk 'NR <= 2 || !/^\| code/' | tee "$OUT/throughput.md"
  graph=0; [ "$tests" = 0 ] && graph=1
  job=bench/repo_study_gpu.sh; [ "${JOB:-study}" = adapt ] && job=bench/repo_adapt_gpu.sh
  echo "CUDA graph tests exit $tests: $job with CUDA_GRAPH=$graph, started at $(( $(date +%s) - t0 )) s"
  rm -f /tmp/study.done
  setsid nohup env CUDA_GRAPH=$graph DEVICE=cuda MPS=1 BUDGET_S=${BUDGET_S:-1500} THREADS=1 EVAL_EVERY=2000 \
    STEPS=${STEPS:-30000} TASK=${TASK:-reach-v3} ARMS="${ARMS:-repo:distractor dreamer:distractor repo:pixels}" \
    bash -c "bash $job $STUDY; touch /tmp/study.done" > /tmp/study.log 2>&1 < /dev/null &
  while [ $(( $(date +%s) - t0 )) -lt "${SNAPSHOT_AT:-560}" ] && [ ! -f /tmp/study.done ]; do sleep 5; done
  snapshot
  ;;
collect)
  [ -d "$STUDY" ] || { echo "no study on this machine (a fresh one?)"; exit 1; }
  while [ $(( $(date +%s) - t0 )) -lt "${WAIT:-150}" ] && [ ! -f /tmp/study.done ]; do sleep 5; done
  snapshot
  tail -n 15 /tmp/study.log
  ;;
*)
  echo "usage: bash bench/gpu_study_lease.sh start|collect"; exit 2
  ;;
esac
