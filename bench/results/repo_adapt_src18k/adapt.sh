#!/usr/bin/env bash
# Stop the clean source at STOP_AT (SIGINT: it saves checkpoints/last.pt), then adapt 3 seeds pair-free at once.
cd /work/main && . .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=runs/repo_adapt_cpu
# after the source's evaluation at 18k env steps (it had not learned at 12k), or at STOP_AT at the latest
until grep -q '"step": 18000, "time": [0-9.]*, "eval/return"' $OUT/source/metrics.jsonl || [ "$(date +%H%M)" -ge "${STOP_AT:-1255}" ]; do sleep 10; done
pid=$(pgrep -f "run-name source" | head -1)
[ -n "$pid" ] && kill -INT "$pid"
while pgrep -f "run-name source" > /dev/null; do sleep 2; done
date; tail -c 400 $OUT/source.log; ls -la $OUT/source/checkpoints
for seed in 0 1 2; do
  python bench/repo_adapt_study.py --source-run $OUT/source --seeds $seed --calibration 0 --steps ${STEPS:-1500} \
    --eval-every 500 --eval-episodes 10 --device cpu --threads 1 --out $OUT/adapt > $OUT/adapt-calib0-s$seed.log 2>&1 &
done
wait
date; python bench/repo_adapt_study.py --report $OUT/adapt
