# Sourced by the bench shell scripts: run from the repository root, with EGL rendering unless MUJOCO_GL
# says otherwise, in the project's venv (set up by .ci/setup if missing), or in the active Python when
# there is no venv and that Python already has the project's dependencies (a prepared GPU machine).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -x .venv/bin/python ]; then
  . .venv/bin/activate
elif ! python -c "import torch, mujoco, metaworld, ot, gymnasium, embodied" 2>/dev/null; then
  bash .ci/setup && . .venv/bin/activate
fi
export MUJOCO_GL=${MUJOCO_GL:-egl}
