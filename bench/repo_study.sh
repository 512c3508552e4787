#!/usr/bin/env bash
# Issue #15's comparison: RePo vs the Dreamer baseline on the distractor variant of reach (3 seeds each,
# same env steps), with RePo on clean pixels as the reference, through `embodied sweep`, then
# `embodied report` (return and success, IQM/mean with 95 % bootstrap CIs, curves, P(RePo > Dreamer)).
# Settings are the CPU scale of bench/repo_scale.py (30k env steps, 0.2 updates per step, batch 16 x 32).
# Cost, measured on the 2-core CPU: ~1.1 RePo / ~0.5 Dreamer updates/s, i.e. ~1.6 h per RePo trial and
# ~3.3 h per Dreamer trial on one core each: a many-core machine (--address of a Ray cluster) or a GPU
# (DEVICE=cuda) is what this needs; on 2 cores it is ~14 h. Re-running continues where it stopped.
#   bash bench/repo_study.sh [OUT]   # env: SEEDS (0,1,2), DEVICE (auto), ADDRESS (Ray cluster), STEPS (30000),
#                                    # PREFILL (2000): a smoke test is STEPS=600 PREFILL=400 SEEDS=0 (run once
#                                    # on the 2-core CPU: 3 trials and both reports, 26 min beside other jobs)
set -euo pipefail
. "$(dirname "$0")/env.sh"
OUT=${1:-runs/repo_study}
SEEDS=${SEEDS:-0,1,2}
CLUSTER=()
[ -n "${ADDRESS:-}" ] && CLUSTER=(--address "$ADDRESS")
COMMON="--task reach-v3 $(python bench/repo_scale.py total_steps="${STEPS:-30000}" prefill="${PREFILL:-2000}")
        --device ${DEVICE:-auto} --no-video"
embodied sweep --agent repo --seeds "$SEEDS" --grid mode=repo,dreamer --grid variant=distractor --out "$OUT" \
  "${CLUSTER[@]}" -- $COMMON
embodied sweep --agent repo --seeds "$SEEDS" --grid mode=repo --grid variant=pixels --out "$OUT" "${CLUSTER[@]}" -- $COMMON
for metric in eval/return eval/success_rate; do
  embodied report "$OUT" --metric $metric --group-by mode variant \
    --compare "mode=repo,variant=distractor" "mode=dreamer,variant=distractor" \
    --out "$OUT/report-${metric#eval/}.md" || true
done
