#!/usr/bin/env bash
# RePo vs Dreamer under distractors on one machine without Ray (a GPU machine with neither Ray nor network, whose
# commands may run at most ~10 minutes): RePo and the Dreamer baseline on reach's distractor variant, SEEDS each, all
# trials at once as processes under one wall-clock budget, at RePo's CPU scale (--preset cpu-small: 0.2 updates
# per env step, batch 16 x 32; evaluated every EVAL_EVERY=1000 env steps, no checkpoints). Each trial runs
# until STEPS or BUDGET_S; its metrics.jsonl is flushed per line, so a trial stopped by the budget keeps its
# curve, and the comparison is made at an env step every trial reached (`embodied report DIR --at-step N`).
#   DEVICE=cuda MPS=1 BUDGET_S=480 bash bench/repo_study_gpu.sh OUT     # then, here: embodied report OUT ...
# ARMS lists mode:variant pairs (default: MODES on VARIANT), e.g. ARMS="repo:distractor dreamer:distractor repo:pixels"
# for the clean-pixel reference beside them; CUDA_GRAPH=1 replays each update as a captured CUDA graph;
# TASK=<Meta-World task> (default reach-v3) for another task, into its own OUT.
# MPS=1 starts NVIDIA's multi-process service when the machine has it (kernels of the trials then share
# the GPU instead of taking turns: the update is launch-bound, see bench/results/gpu_check.md) and goes on
# without it if a CUDA context fails to open under it.
set -uo pipefail
. "$(dirname "$0")/env.sh"
OUT=${1:-runs/repo_study_gpu}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-480}
SEEDS=${SEEDS:-0 1 2}
MODES=${MODES:-repo dreamer}
VARIANT=${VARIANT:-distractor}
THREADS=${THREADS:-2}
ARMS=${ARMS:-$(for m in $MODES; do printf '%s:%s ' "$m" "$VARIANT"; done)}
GRAPH=(); [ "${CUDA_GRAPH:-0}" = 1 ] && GRAPH=(--cuda-graph)
mkdir -p "$OUT"
if [ "${MPS:-0}" = 1 ]; then
  mps=$(PATH=$PATH:/usr/local/nvidia/bin command -v nvidia-cuda-mps-control || true)
  if [ -n "$mps" ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p /tmp/mps-pipe /tmp/mps-log
    if "$mps" -d && timeout 60 python -c 'import torch; assert torch.ones(2, device="cuda").sum().item() == 2'; then
      echo "MPS: on ($mps)"
    else
      echo quit | "$mps" 2>/dev/null; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      echo "MPS: failed to start or to serve a context; trials take turns on the GPU"
    fi
  else
    echo "MPS: nvidia-cuda-mps-control not found; trials take turns on the GPU"
  fi
fi
SCALE=(--preset cpu-small --total-steps "${STEPS:-30000}" --prefill "${PREFILL:-2000}" --eval-every "${EVAL_EVERY:-1000}"
       --checkpoint-every 1000000000)
COMMON=(--task "${TASK:-reach-v3}" "${SCALE[@]}" --device "$DEVICE" --no-video --threads "$THREADS" --run-dir "$OUT" "${GRAPH[@]}")
smi=
command -v nvidia-smi >/dev/null && { nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 20 > "$OUT/gpu_use.csv" 2>&1 & smi=$!; }
start=$(date +%s)
pids=()
for seed in $SEEDS; do
  for arm in $ARMS; do
    mode=${arm%%:*} variant=${arm#*:}
    name="repo-mode=$mode-variant=$variant-s$seed"  # embodied sweep's trial name
    OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS timeout "$BUDGET_S" \
      python -m embodied.cli train repo "${COMMON[@]}" --variant "$variant" --mode "$mode" --seed "$seed" --run-name "$name" \
      > "$OUT/$name.log" 2>&1 &
    pids+=($!)
  done
done
wait "${pids[@]}"
[ -n "$smi" ] && kill "$smi"
echo "trials ran $(( $(date +%s) - start )) s (budget $BUDGET_S s)"
python - "$OUT" <<'PY'
import json, pathlib, sys
import numpy as np
root = pathlib.Path(sys.argv[1])
print("| trial | env steps | last eval step | eval return | eval success | updates/s (mean) |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for run in sorted(p.parent for p in root.glob("*/metrics.jsonl")):
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if line.strip()]
    evals = [r for r in rows if "eval/return" in r]
    ups = [r["perf/updates_per_second"] for r in rows if "perf/updates_per_second" in r]
    last = evals[-1] if evals else {}
    print(f"| {run.name} | {max((r['step'] for r in rows), default=0)} | {last.get('step', '-')} | "
          f"{last.get('eval/return', float('nan')):.1f} | {last.get('eval/success_rate', float('nan')):.2f} | "
          f"{np.mean(ups) if ups else float('nan'):.2f} |")
PY
