#!/usr/bin/env bash
# Set up (first run only) and run the main demo. Outputs go to demo_out/.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup
. .venv/bin/activate
export MUJOCO_GL=egl
mkdir -p demo_out
embodied collect --env embodied/drawer-open-v3 --episodes 6 --noise 0,0.3,1.0 --epsilon 0,0.1,0.3 --out demo_out/drawer-open.hdf5
embodied video --env embodied/drawer-open-v3 --policy scripted --episodes 4 --max-steps 150 --out demo_out/drawer-open-expert.mp4
embodied video --env embodied/drawer-open-v3-distractor --policy scripted --episodes 1 --max-steps 150 --out demo_out/drawer-open-distractor.mp4
echo "demo outputs in demo_out/"
