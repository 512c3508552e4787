"""Few-shot weighting rules replayed on recorded evidence: which transfer share gives the most accurate reward.

    python bench/pearl_fewshot_rules.py runs/pearl_labels.jsonl [more.jsonl ...]

``bench/pearl_labels.py`` records, per pair-seed and K, what a rule sees (``k*_evidence``: each shot's label and
both members' return differences on it, the shots model's out of fold) and the pair's accuracy on the 5000 test
pairs at every transfer share 0, 0.01, ..., 1 (``k*_mix_curve``). So every rule of
``agents.pearl.few_shot.SHARE_RULES`` is scored here on the same trained members without retraining, beside the
two members alone and the best share in hindsight (a ceiling no rule can know), and stacking with its uniform
prior on the share replaced by one pooled over the *other* task pairs' shots (empirical Bayes, leave one pair
out: what a prior learnt from other pairs would give). Differences to the default rule
are means over pair-seeds with 95 % bootstrap CIs (rliable, through ``embodied.report.aggregate``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import scipy.stats

from agents.pearl.few_shot import SHARE_GRID, SHARE_RULES, share_likelihood, stacking_weight, transfer_share
from embodied.report import aggregate

DEFAULT = "stacking"
POOLED = "stacking, prior pooled over the other pairs"
BETA_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # candidate Beta(a, b) priors on the transfer's share


def evidence(row: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ev = row[f"k{k}_evidence"]
    return tuple(np.asarray(ev[name], float) for name in ("transfer_diff", "shots_diff", "label"))


def beta_prior(a: float, b: float, w: np.ndarray) -> np.ndarray:
    log = scipy.stats.beta.logpdf(np.clip(w, 1e-3, 1 - 1e-3), a, b)
    return log - np.logaddexp.reduce(log)


def pooled_prior(rows: list[dict], k: int) -> tuple[float, float]:
    """Empirical Bayes: the Beta(a, b) prior on the share that makes the shots of ``rows`` most likely (each
    pair-seed's likelihood of its own shots, the prior shared); uses no test pairs."""
    liks = [share_likelihood(*evidence(r, k)) for r in rows]

    def log_evidence(ab):
        return sum(np.logaddexp.reduce(beta_prior(*ab, w) + lik) for w, lik in liks)

    return max(((a, b) for a in BETA_GRID for b in BETA_GRID), key=log_evidence)


def pair(row: dict) -> tuple[str, str]:
    return row["source"], row["target"]


def pooled_shares(rows: list[dict], k: int) -> tuple[list[float], dict[tuple[str, str], tuple[float, float]]]:
    """Each pair-seed's share under the prior pooled from the *other* pairs' shots (leave one pair out), with the
    default rule's switch-off (0 for a transfer that orders at most half of its shots right); and each left-out
    pair's prior."""
    priors = {p: pooled_prior([r for r in rows if pair(r) != p], k) for p in dict.fromkeys(map(pair, rows))}
    shares = [
        0.0
        if transfer_share(*evidence(row, k), "stacking") == 0.0
        else stacking_weight(*evidence(row, k), log_prior=beta_prior(*priors[pair(row)], SHARE_GRID))
        for row in rows
    ]
    return shares, priors


def scored(row: dict, k: int, pooled: float) -> dict[str, tuple[float, float]]:
    """``{arm: (transfer share, accuracy)}`` for one pair-seed at K shots (``pooled``: its pooled-prior share)."""
    curve = np.asarray(row[f"k{k}_mix_curve"])
    at = lambda share: float(curve[int(round(share * (len(curve) - 1)))])  # noqa: E731
    out = {rule: transfer_share(*evidence(row, k), rule) for rule in SHARE_RULES}
    out[POOLED] = pooled
    out = {rule: (share, at(share)) for rule, share in out.items()}
    out["labels alone (share 0)"] = (0.0, at(0.0))
    out["transfer member (share 1)"] = (1.0, at(1.0))
    best = int(np.argmax(curve))
    out["best share in hindsight"] = (best / (len(curve) - 1), float(curve[best]))
    return out


def ci(values: np.ndarray) -> str:
    stats = aggregate({"x": np.asarray(values, float)[:, None]})["x"]
    return f"{stats['mean']:+.3f} [{stats['mean_low']:+.3f}, {stats['mean_high']:+.3f}]"


def report(rows: list[dict]) -> None:
    shots = sorted({int(m[1]) for r in rows for key in r if (m := re.fullmatch(r"k(\d+)_mix_curve", key))})
    print(
        "Reward accuracy on the 5000 target test pairs, mean over pair-seeds; the transfer's share (mean [min, max]);"
        f" difference to `{DEFAULT}` (the default) with 95 % bootstrap CIs; how often worse than the labels alone by"
        " more than 0.02\n"
    )
    print("| K | arm | pair-seeds | accuracy | share | minus default | worse than alone by > 0.02 |")
    print("| ---: | --- | ---: | ---: | --- | --- | ---: |")
    for k in shots:
        have = [r for r in rows if f"k{k}_mix_curve" in r]
        shares, priors = pooled_shares(have, k)
        per = [scored(r, k, pooled) for r, pooled in zip(have, shares)]
        arms = list(per[0])
        alone = np.array([p["labels alone (share 0)"][1] for p in per])
        default = np.array([p[DEFAULT][1] for p in per])
        for arm in arms:
            share = np.array([p[arm][0] for p in per])
            acc = np.array([p[arm][1] for p in per])
            diff = "" if arm == DEFAULT else ci(acc - default)
            print(
                f"| {k} | {arm} | {len(per)} | {acc.mean():.3f} | {share.mean():.2f} [{share.min():.2f}, "
                f"{share.max():.2f}] | {diff} | {int(np.sum(acc < alone - 0.02))} |"
            )
        print(
            f"|  | pooled Beta(a, b) priors at K = {k}, one per left-out pair: "
            f"{sorted(set(priors.values()))} |  |  |  |  |  |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", type=Path, nargs="+", help="jsonl written by bench/pearl_labels.py")
    args = parser.parse_args()
    report([json.loads(line) for path in args.records for line in open(path) if line.strip()])


if __name__ == "__main__":
    main()
