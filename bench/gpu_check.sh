#!/usr/bin/env bash
# One-command GPU check: on one CUDA GPU, within ~10 minutes, a short training of every
# agent on --device cuda, then RePo's throughput with and without --amp, --compile and --cuda-graph; one table.
# Measured on one H100 (bench/results/gpu_check.md): ~4 minutes in all (the four trainings 25-34 s each).
#   bash bench/gpu_check.sh            # DEVICE=cpu bash bench/gpu_check.sh: the same, as a smoke test
#   RUNS="pearl repo throughput" bash bench/gpu_check.sh   # a subset (rows: pearl parl repo walle, throughput, sweep)
# Each row: what ran, its exit status, seconds, and its final metric (from the run's summary.json).
set -uo pipefail
. "$(dirname "$0")/env.sh"
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-pearl parl repo walle throughput}
LOGS=${LOGS:-$(mktemp -d /tmp/gpu_check.XXXX)}
python - <<PY
import torch, sys
dev = "$DEVICE"
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("error: DEVICE=$DEVICE but torch sees no CUDA GPU (torch " + torch.__version__ + ")")
print(f"torch {torch.__version__}, device {dev}" + (f" ({torch.cuda.get_device_name(0)})" if dev.startswith("cuda") else ""))
PY
[ $? -eq 0 ] || exit 1
ROWS=()
run() {  # name, command...
  local name=$1; shift
  [[ " $RUNS " == *" $name "* ]] || return 0
  local start=$(date +%s.%N)
  timeout 240 "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  local secs=$(python -c "print(f'{$(date +%s.%N) - $start:.0f}')")
  local metric=$(python - "$LOGS/$name" <<'PY'
import json, sys, pathlib
p = pathlib.Path(sys.argv[1]) / "summary.json"
s = json.loads(p.read_text()) if p.exists() else {}
for k in ("final_success_rate", "success_rate", "final_return"):
    if isinstance(s.get(k), (int, float)):
        print(f"{k} = {s[k]:.3f}"); break
PY
)
  ROWS+=("| $name | $rc | $secs | $metric |")
}
COMMON=(--device "$DEVICE" --run-dir "$LOGS" --no-video)
run pearl embodied train pearl "${COMMON[@]}" --run-name pearl --source-task reach-v3 --target-task reach-wall-v3 \
    --episodes 10 --max-steps 100 --segments 200 --source-queries 1000 --target-queries 1000 --reward-epochs 5 \
    --iql-steps 2000 --eval-every 2000 --eval-episodes 5
run parl embodied train parl "${COMMON[@]}" --run-name parl --task reach-v3 --total-steps 3000 --max-episode-steps 200 \
    --seed-steps 500 --query-every 500 --queries-per-session 20 --feedback-budget 100 --eval-every 3000 --eval-episodes 5
run repo embodied train repo "${COMMON[@]}" --run-name repo --total-steps 4000 --prefill 1000 --train-every 500 \
    --train-steps 20 --batch-size 16 --seq-len 32 --eval-every 4000 --eval-episodes 2
run walle embodied train walle "${COMMON[@]}" --run-name walle --tasks retrieve --iterations 1 --episodes-per-task 1 \
    --max-decisions 20
echo
echo "| run | exit | seconds | final metric |"
echo "| --- | ---: | ---: | --- |"
printf '%s\n' "${ROWS[@]}"
echo
# Throughput at 50 x 50: eager vs captured (CUDA graph) vs compiled, fp32 vs TF32 vs bf16; FLOPs and share of peak
[[ " $RUNS " == *" throughput "* ]] && for flags in "" "--tf32" "--amp" "--compile" "--cuda-graph" "--cuda-graph --tf32" \
    "--cuda-graph --amp"; do
  timeout 240 python bench/repo_throughput.py --device "$DEVICE" --updates 10 $flags 2>/dev/null | tail -n +3 \
    | sed "s/^/| ${flags:-eager} /" || echo "| ${flags:-eager} | failed or past 240 s |"
done | { echo "| flags | code | device | threads | mode | precision | batch x seq | updates/s | GFLOP/update | TFLOP/s | share of peak | losses: kl / actor / critic | env steps/s |"
         echo "| --- | --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |"; cat; }
# Trials per hour on this GPU machine: one RePo trial at a time against four sharing the GPU, eager and captured
[[ " $RUNS " == *" sweep "* ]] && bash bench/gpu_sweep_rate.sh "$LOGS/sweep"
echo "logs and runs in $LOGS"
