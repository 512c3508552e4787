"""Are CPA's confident labels the right ones, and does a reward trained on them alone come out truer?

    embodied study bench/studies/pearl_success.toml      # the runs (the committed records are of three of them)
    python bench/pearl_label_confidence.py runs/pearl_success/*plate-slide-back*labels=cpa*credit=1.0-s[01] \
        runs/pearl_success/*button-press-wall*labels=cpa*credit=1.0-s1 > bench/results/pearl_label_confidence.jsonl

For each finished CPA run (its config, datasets and ``labels.npz``; the run's segments are redrawn from its
seed exactly as the run drew them), optionally ``--variants soft,hard,soft@0.5,hard@0.5,hard@0.25``:
- label accuracy against the noise-free target teacher per quartile of confidence |z - 0.5|, and per
  quartile of the pair's true return gap;
- per variant, a reward model of the run's kind and budget trained on: ``soft`` the transferred labels
  as they are (what the run did), ``hard`` rounded to 0/1, ``X@f`` only the fraction f most confident
  pairs; then its held-out accuracy (as the run measures it) and the Spearman correlation of its
  per-transition reward with the true reward on all target data (as bench/pearl_reward_probe.py).
One JSON line per run and variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from agents.pearl.train import REWARD_MODELS, heldout_accuracy, load_run_config, relabel, run_segments
from embodied.data import load_episodes
from embodied.reward_models import RewardTrainConfig, rank_correlation, train_reward_model
from embodied.teacher import Preferences, ScriptedTeacher


def by_quartile(values: np.ndarray, correct: np.ndarray) -> list[float]:
    edges = np.quantile(values, [0, 0.25, 0.5, 0.75, 1])
    return [round(float(correct[(values >= lo) & (values <= hi)].mean()), 3) for lo, hi in zip(edges[:-1], edges[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--variants", default="soft,hard,soft@0.5,hard@0.5,hard@0.25")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        cfg = load_run_config(run)
        tgt_eps = load_episodes(cfg["target_data"])
        _, tgt, _ = run_segments(
            load_episodes(cfg["source_data"]),
            tgt_eps,
            cfg["segment_length"],
            cfg["segments"],
            cfg["seed"],
        )  # the run's own segments
        lab = np.load(run / "labels.npz")
        z, first, second = lab["label"], lab["first"], lab["second"]
        teacher = ScriptedTeacher(cfg["teacher_gamma"], cfg["teacher_equal_threshold"])  # noise-free
        truth = teacher.label(tgt.rewards, first, second).label
        decided = truth != 0.5
        correct = (z > 0.5) == (truth > 0.5)
        ret = tgt.rewards.sum(-1)
        print(
            json.dumps(
                {
                    "run": run.name,
                    "label_accuracy": round(float(correct[decided & (z != 0.5)].mean()), 3),
                    "accuracy_by_confidence_quartile": by_quartile(np.abs(z - 0.5)[decided], correct[decided]),
                    "accuracy_by_true_gap_quartile": by_quartile(
                        np.abs(ret[first] - ret[second])[decided], correct[decided]
                    ),
                }
            ),
            flush=True,
        )
        true = np.concatenate([ep.rewards for ep in tgt_eps])
        for variant in args.variants.split(","):
            start = time.perf_counter()
            kind, _, fraction = variant.partition("@")
            keep = np.ones(len(z), bool)
            if fraction:
                keep = np.abs(z - 0.5) >= np.quantile(np.abs(z - 0.5), 1 - float(fraction))
            labels = z
            if kind == "hard":
                labels, keep = (z > 0.5).astype(float), keep & (z != 0.5)
            model = REWARD_MODELS[cfg["reward_model"]](tgt.observations.shape[-1], tgt.actions.shape[-1])
            torch.manual_seed(cfg["seed"])
            train_reward_model(
                model,
                tgt.observations,
                tgt.actions,
                Preferences(first[keep], second[keep], labels[keep]),
                RewardTrainConfig(epochs=cfg["reward_epochs"], kl_weight=cfg["kl_weight"]),
                "cpu",
                cfg["seed"],
            )
            accuracy = heldout_accuracy(model, tgt_eps, cfg["segment_length"], cfg["seed"], teacher, "cpu")
            learned = np.concatenate(relabel(model.eval(), tgt_eps, "cpu"))
            print(
                json.dumps(
                    {
                        "run": run.name,
                        "variant": variant,
                        "pairs": int(keep.sum()),
                        "heldout_accuracy": round(accuracy, 3),
                        "rank_corr": round(rank_correlation(learned, true), 3),
                        "seconds": round(time.perf_counter() - start),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
