#!/usr/bin/env bash
# Trials per hour of a small RePo study on one GPU machine: one trial at a time (--gpus-per-trial 1)
# against four sharing the GPU (--gpus-per-trial 0.25, MPS where installed), each eager and with --cuda-graph.
#   bash bench/gpu_sweep_rate.sh OUT        # ~8 minutes on one H100-class GPU; prints a markdown table
#   SEEDS=0,1 STEPS=2000 bash bench/gpu_sweep_rate.sh OUT
# BACKEND=ray uses Ray's fractional GPUs instead of the sweep's own processes (the default, local, needs no Ray
# installed on the GPU machine).
set -uo pipefail
. "$(dirname "$0")/env.sh"
OUT=${1:?usage: bench/gpu_sweep_rate.sh OUT}
SEEDS=${SEEDS:-0,1,2,3}
STEPS=${STEPS:-3000}
CPUS=${CPUS:-2}
BACKEND=${BACKEND:-local}
mkdir -p "$OUT"
TRIAL=(--task reach-v3 --variant distractor --total-steps "$STEPS" --prefill 1000 --train-every 500 --train-steps 50
       --batch-size 50 --seq-len 50 --eval-every "$STEPS" --eval-episodes 2 --no-video)
echo "| trials per GPU | update | trials | wall s | trials/hour |"
echo "| ---: | --- | ---: | ---: | ---: |"
for share in 1 0.25; do
  for graph in "" "--cuda-graph"; do
    dir="$OUT/share$share${graph:+-graph}"
    start=$(date +%s.%N)
    timeout 600 embodied sweep --agent repo --seeds "$SEEDS" --out "$dir" --cpus-per-trial "$CPUS" \
      --gpus-per-trial "$share" --backend "$BACKEND" -- "${TRIAL[@]}" --device cuda $graph > "$dir.log" 2>&1
    rc=$?
    python - "$start" "$dir" "$share" "${graph:-eager}" "$rc" <<'PY'
import json, pathlib, sys, time
start, d, share, mode, rc = float(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
wall = time.time() - start
done = sum(1 for t in json.loads((d / "sweep.json").read_text())["trials"] if t["status"] == "finished") \
    if (d / "sweep.json").exists() else 0
print(f"| {1 / share:g} | {mode}{'' if rc == 0 else f' (exit {rc})'} | {done} | {wall:.0f} | {done / wall * 3600:.1f} |")
PY
  done
done
