# Sourced by the bench shell scripts: run from the repository root, in the project's venv (set up by
# .ci/setup if missing), with EGL rendering unless MUJOCO_GL says otherwise.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] || bash .ci/setup
. .venv/bin/activate
export MUJOCO_GL=${MUJOCO_GL:-egl}
