#!/usr/bin/env bash
# Resume the session-16 clean source (18.2k env steps) to 24k, then adapt 3 seeds with 200 calibration pairs for 2000 steps.
cd /work/main && . .venv/bin/activate
export MUJOCO_GL=egl
OUT=runs/repo_adapt24
date
OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 python -m embodied.cli train repo --task reach-v3 --variant pixels \
  --total-steps 24000 --max-episode-steps 200 --action-repeat 2 --prefill 2000 --train-every 200 --train-steps 40 \
  --batch-size 16 --seq-len 32 --beta-lr 0.01 --eval-every 6000 --eval-episodes 5 --checkpoint-every 24000 \
  --device cpu --no-video --threads 2 --run-dir $OUT --run-name source --resume > $OUT/source.log 2>&1 || { echo source failed; exit 1; }
date; tail -3 $OUT/source/metrics.jsonl | cut -c1-200; ls -la $OUT/source/checkpoints
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for seed in 0 1 2; do
  python bench/repo_adapt_study.py --source-run $OUT/source --seeds $seed --calibration 200 --steps ${STEPS:-2000} \
    --eval-every 500 --eval-episodes 10 --device cpu --threads 1 --out $OUT/adapt > $OUT/adapt-calib200-s$seed.log 2>&1 &
done
wait
date; python bench/repo_adapt_study.py --report $OUT/adapt
