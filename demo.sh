#!/usr/bin/env bash
# Set up (first run only) and run the main demo: PEARL end to end on a CPU in a few minutes.
# Collect mixed-quality data on window-open (source) and window-close (target), label
# source pairs with the scripted teacher, transfer labels to the target by Gromov-Wasserstein,
# learn a Gaussian reward model, train IQL, evaluate, and export a video. Outputs: demo_out/.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup
. .venv/bin/activate
export MUJOCO_GL=egl
embodied train pearl --source-task window-open-v3 --target-task window-close-v3 \
    --episodes 30 --segments 500 --source-queries 2500 --target-queries 2500 \
    --iql-steps 5000 --eval-every 5000 --eval-episodes 10 \
    --run-dir demo_out --run-name pearl --resume
embodied video --env embodied/window-close-v3 --policy demo_out/pearl/policy.pt --episodes 4 \
    --max-steps 200 --out demo_out/pearl-policy.mp4
echo "demo outputs in demo_out/pearl (labels, reward model, policy, metrics, videos/eval.mp4) and demo_out/pearl-policy.mp4"
