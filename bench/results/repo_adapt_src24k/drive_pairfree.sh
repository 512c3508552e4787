#!/usr/bin/env bash
# Pair-free arm (0 calibration pairs) on the same 24k source as the calibrated arm: 3 seeds, 2000 steps, curve every 500.
cd /work/main && . .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=runs/repo_adapt24
date
for seed in 0 1 2; do
  python bench/repo_adapt_study.py --source-run $OUT/source --seeds $seed --calibration 0 --steps ${STEPS:-2000} \
    --eval-every 500 --eval-episodes 10 --device cpu --threads 1 --out $OUT/adapt > $OUT/adapt-calib0-s$seed.log 2>&1 &
done
wait
date; python bench/repo_adapt_study.py --report $OUT/adapt
