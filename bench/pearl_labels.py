"""PEARL's labels across many task pairs: zero-shot and few-shot accuracy, and RRL under label noise.

    python bench/pearl_labels.py --pairs bench/pearl_pairs.txt --seeds 0,1,2 --out runs/pearl_labels.jsonl
    python bench/pearl_labels.py --report runs/pearl_labels.jsonl

Per pair and seed (datasets as ``embodied train pearl`` collects them: 60 episodes of 200 steps,
1000 segments of 25 steps, 5000 source and 5000 target pairs), accuracy against the noise-free
target teacher of:
- zero-shot labels: CPA (fused GW, the default), plain GW (``alpha=1``), nearest-neighbour transfer;
- few-shot, K in --shots: the reward ``--few-shot-labels K`` trains (``agents/pearl/few_shot.py``: the
  transfer's model and the K labels' model, weighted by their accuracy on the K labels), its transfer
  member alone, and a reward model fit to the K labels alone (all judged on the same 5000 target pairs);
- label noise (--noise, flip probabilities): accuracy of the Gaussian (RRL) and the plain reward model
  fit to CPA labels transferred from flipped source labels, and fit to flipped target-teacher labels.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from agents.pearl.cpa import (
    GWConfig,
    cross_task_transfer,
    label_accuracy,
    nearest_neighbour_coupling,
    segment_features,
    transfer_labels,
)
from agents.pearl.few_shot import fit_few_shot, standardised_returns
from agents.pearl.train import PearlConfig
from embodied.data import NoiseSchedule, collect, load_episodes, sample_segments, write_dataset
from embodied.make import make_env
from embodied.reward_models import (
    GaussianRewardModel,
    RewardEnsemble,
    RewardModel,
    RewardTrainConfig,
    preference_accuracy,
    train_reward_model,
)
from embodied.teacher import Preferences, ScriptedTeacher, sample_pairs
from envs.experts import scripted_expert
from records import cell  # bench/records.py, the benches' shared helpers


DEFAULTS = PearlConfig()  # the data recipe of `embodied train pearl`


def dataset(task: str, seed: int, cache: Path):
    path = cache / f"{task}-s{seed}.hdf5"
    if not path.exists():
        env = make_env(f"embodied/{task}")
        episodes = collect(
            env,
            scripted_expert(env),
            DEFAULTS.episodes,
            NoiseSchedule(DEFAULTS.noise, DEFAULTS.epsilon),
            seed=seed,
            max_steps=DEFAULTS.max_steps,
        )
        write_dataset(path, episodes, f"embodied/{task}", env.observation_space, env.action_space, metadata={})
    return load_episodes(path)


def reward_accuracy(model_cls, segments, prefs: Preferences, truth: Preferences, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = model_cls(segments.observations.shape[-1], segments.actions.shape[-1])
    train_reward_model(
        model, segments.observations, segments.actions, prefs, RewardTrainConfig(epochs=epochs), seed=seed
    )
    return preference_accuracy(model, segments.observations, segments.actions, truth)


def run_pair(source: str, target: str, seed: int, args) -> dict:
    rng = np.random.default_rng(seed)
    length, count = DEFAULTS.segment_length, DEFAULTS.segments
    src = sample_segments(dataset(source, seed * 10_000, args.cache), length, count, rng)
    tgt = sample_segments(dataset(target, seed * 10_000 + 5_000, args.cache), length, count, rng)
    teacher = ScriptedTeacher()
    s_first, s_second = sample_pairs(len(src), DEFAULTS.source_queries, rng)
    source_labels = teacher.label(src.rewards, s_first, s_second)
    first, second = sample_pairs(len(tgt), DEFAULTS.target_queries, rng)
    truth = teacher.label(tgt.rewards, first, second)
    row: dict = {"source": source, "target": target, "seed": seed}
    start = time.perf_counter()
    cpa = cross_task_transfer(src, source_labels, tgt, first, second)
    row["seconds"] = time.perf_counter() - start  # not in the report: see bench/cpa_scale.py for timings
    row["cpa"] = label_accuracy(cpa.labels, truth.label)
    row.update({f"confidence_{k}": v for k, v in cpa.confidence.items() if k.endswith("agreement")})
    plain = cross_task_transfer(src, source_labels, tgt, first, second, GWConfig(alpha=1.0))
    row["plain_gw"] = label_accuracy(plain.labels, truth.label)
    nn = nearest_neighbour_coupling(segment_features(src, False), segment_features(tgt, False))
    row["nn"] = label_accuracy(transfer_labels(nn, source_labels, first, second)[0], truth.label)
    for k in args.shots:
        shots = teacher.label(tgt.rewards, *sample_pairs(len(tgt), k, np.random.default_rng(seed * 100 + k)))
        calibrated = cross_task_transfer(src, source_labels, tgt, first, second, shots=shots)
        model, scores = fit_few_shot(
            lambda: GaussianRewardModel(39, 4),
            tgt.observations,
            tgt.actions,
            Preferences(first, second, calibrated.labels),
            shots,
            RewardTrainConfig(epochs=args.epochs),
            shot_epochs=200,
            seed=seed,
        )
        row[f"k{k}_cpa_reward"] = preference_accuracy(model, tgt.observations, tgt.actions, truth)
        by_accuracy = RewardEnsemble(
            list(model.members),
            [
                scores["accuracy_rule_transfer"],  # same members
                1.0 - scores["accuracy_rule_transfer"],
            ],
        ).standardise(tgt.observations, tgt.actions)
        row[f"k{k}_accuracy_rule_reward"] = preference_accuracy(by_accuracy, tgt.observations, tgt.actions, truth)
        row[f"k{k}_transfer_reward"] = preference_accuracy(model.members[0], tgt.observations, tgt.actions, truth)
        row[f"k{k}_weights"] = f"{scores['weight_transfer']:.2f}/{scores['weight_shots']:.2f}"  # transfer/shots
        row[f"k{k}_accuracy_rule_weights"] = f"{scores['accuracy_rule_transfer']:.2f}"  # transfer's share
        row[f"k{k}_shot_agreement"] = calibrated.confidence["shot_agreement"]  # calibrate's a (Laplace-smoothed)
        row[f"k{k}_alone_reward"] = reward_accuracy(GaussianRewardModel, tgt, shots, truth, 200, seed)
        row[f"k{k}_evidence"] = scores[
            "evidence"
        ]  # what a weighting rule sees: pearl_fewshot_rules.py replays rules on it
        row[f"k{k}_mix_curve"] = mix_curve(model, tgt, truth)
    if args.noise:
        row["reward_epochs"] = args.epochs
    for flip in args.noise:
        if args.noise_on in ("both", "source"):
            noisy = ScriptedTeacher(flip_prob=flip).label(
                src.rewards, s_first, s_second, np.random.default_rng(seed + 1)
            )
            labels = Preferences(first, second, cross_task_transfer(src, noisy, tgt, first, second).labels)
            row[f"noise{flip}_label"] = label_accuracy(labels.label, truth.label)
            for name, cls in (("rrl", GaussianRewardModel), ("plain", RewardModel)):
                row[f"noise{flip}_{name}"] = reward_accuracy(cls, tgt, labels, truth, args.epochs, seed)
        if args.noise_on in ("both", "target"):
            # the same flips on the target labels themselves (B-Pref's noisy teacher, RRL's setting): the transfer
            # above averages the source flips over many source pairs, these reach the reward model unaveraged
            flipped = ScriptedTeacher(flip_prob=flip).label(tgt.rewards, first, second, np.random.default_rng(seed + 2))
            for name, cls in (("rrl", GaussianRewardModel), ("plain", RewardModel)):
                row[f"noise{flip}_target_{name}"] = reward_accuracy(cls, tgt, flipped, truth, args.epochs, seed)
    return row


def mix_curve(ensemble: RewardEnsemble, segments, truth: Preferences, points: int = 101) -> list[float]:
    """Accuracy of the few-shot pair at every transfer share ``w`` in ``linspace(0, 1, points)`` (the same two
    members, standardised as ``RewardEnsemble`` does), so any weighting rule can be scored without retraining."""
    returns = [standardised_returns(m, segments.observations, segments.actions, "cpu") for m in ensemble.members]
    decided = truth.label != 0.5
    first, second, right = truth.first[decided], truth.second[decided], truth.label[decided] > 0.5
    curve = []
    for w in np.linspace(0.0, 1.0, points):
        ret = w * returns[0] + (1.0 - w) * returns[1]
        curve.append(float(np.mean((ret[first] > ret[second]) == right)))
    return curve


def column_name(key: str, names: dict[str, str]) -> str:
    """``k20_alone_reward`` -> ``K=20 labels alone``, ``noise0.1_rrl`` -> ``flip 0.1 RRL``."""
    if m := re.fullmatch(r"k(\d+)_(cpa|alone|transfer|accuracy_rule)_reward", key):
        return (
            f"K={m[1]} "
            + {
                "cpa": "few-shot reward",
                "alone": "labels alone",
                "transfer": "transfer model",
                "accuracy_rule": "few-shot, 2acc-1 weights",
            }[m[2]]
        )
    if m := re.fullmatch(r"k(\d+)_shot_agreement", key):
        return f"K={m[1]} shot agreement"
    if m := re.fullmatch(r"noise([\d.]+)_(target_)?(label|rrl|plain)", key):
        return (
            f"{'target' if m[2] else 'source'} flip {m[1]} "
            + {"label": "CPA labels", "rrl": "RRL reward", "plain": "plain reward"}[m[3]]
        )
    return names.get(key, key.replace("_", " "))


def report(path: Path) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    pairs = list(dict.fromkeys((r["source"], r["target"]) for r in rows))
    keys = [
        k
        for k in dict.fromkeys(k for r in rows for k in r)  # later rows may carry more columns (K, noise)
        if k not in ("source", "target", "seed", "seconds")
        and not any(isinstance(r.get(k), (str, list, dict)) for r in rows)
    ]
    names = {
        "cpa": "CPA",
        "plain_gw": "plain GW",
        "nn": "NN",
        "confidence_starts_agreement": "starts agree",
        "confidence_structure_agreement": "plain GW agrees",
        "reward_epochs": "reward epochs",
    }

    print("mean [min, max] over seeds; label / reward accuracy against the noise-free target teacher\n")
    print("| source -> target | seeds | " + " | ".join(column_name(k, names) for k in keys) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in keys) + " |")
    for pair in pairs + [("all pairs", "")]:
        sel = [r for r in rows if (r["source"], r["target"]) == pair or pair[0] == "all pairs"]
        name = f"{pair[0][:-3]} -> {pair[1][:-3]}" if pair[1] else "**all pairs**"
        print(
            f"| {name} | {len(sel)} | "
            + " | ".join(cell([r[k] for r in sel if k in r]) if any(k in r for r in sel) else "" for k in keys)
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=Path("bench/pearl_pairs.txt"), help="lines SOURCE:TARGET")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shots", default="5,20,100", help="few-shot K values ('' for none)")
    parser.add_argument(
        "--noise",
        default="",
        help="flip probabilities of the source (then transferred) and of the target teacher, e.g. 0.1,0.2,0.3",
    )
    parser.add_argument(
        "--noise-on",
        choices=("both", "source", "target"),
        default="both",
        help="which teacher --noise flips: the source's (then transferred), the target's, or both",
    )
    parser.add_argument("--epochs", type=int, default=10, help="reward-model epochs (x20 for the K-alone models)")
    parser.add_argument("--cache", type=Path, default=Path("runs/pearl_data"))
    parser.add_argument("--out", type=Path, default=Path("runs/pearl_labels.jsonl"))
    parser.add_argument("--report", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    torch.set_num_threads(args.threads)
    args.shots = [int(k) for k in args.shots.split(",") if k]
    args.noise = [float(x) for x in args.noise.split(",") if x]
    args.cache.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {(r["source"], r["target"], r["seed"]) for r in map(json.loads, open(args.out)) if r}
    for line in args.pairs.read_text().split():
        source, target = line.split(":")
        for seed in (int(s) for s in args.seeds.split(",")):
            if (source, target, seed) in done:
                continue
            row = run_pair(source, target, seed, args)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
