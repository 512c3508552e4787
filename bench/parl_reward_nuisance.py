"""Does PARL/PEBBLE's reward model find the goal from preferences? With and without per-episode irrelevant features.

    python bench/parl_reward_nuisance.py --seeds 0-4 --out bench/results/parl_reward_nuisance.jsonl   # fits
    python bench/parl_reward_nuisance.py --report bench/results/parl_reward_nuisance.jsonl              # the table

No RL: the reward learner alone, on data that covers the task. Per seed and setting, episodes of the point-hold
task (``envs/point_hold.py``, 10 or 0 irrelevant per-episode features) in which a scripted hand visits
three random targets, ten steps each, with noise, so that every part of the square is visited; ``labels`` pairs of
10-step segments labelled by the scripted teacher, the two segments of a pair from two episodes (``across``) or
from one (``within``: the features are the same on both sides, so they cannot tell the pair apart by which
episode a segment came from); one ``RewardModel`` of the state
(PARL's default, 2 x 256, 50 epochs, AdamW weight decay 1e-4; across pairs also with 1 and 10, the usual remedy
for inputs that do not matter). Measured on fresh episodes and a 41 x 41 grid of hand positions (with fresh
features): preference accuracy on held-out pairs, on the training pairs, the grid rank correlation with the true
reward, and where the learned reward is highest -- its distance from the goal (the true reward is flat within 0.1
of it, so anything above 0.1 is a wrong optimum for a policy to find).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

DEFAULT_DECAY = 1e-4  # RewardTrainConfig's weight decay, what the runs use
SETTINGS = [
    (nuisance, labels, pairs, DEFAULT_DECAY)
    for pairs in ("across", "within")
    for nuisance in (0, 10)
    for labels in (300, 1000, 3000)
] + [  # the usual remedy for an input that does not matter: a smaller function (AdamW's decoupled weight decay)
    (nuisance, labels, "across", decay) for decay in (1.0, 10.0) for nuisance in (0, 10) for labels in (300, 3000)
]


def episode(env, rng: np.random.Generator) -> tuple[list, list]:
    """One 30-step episode in which the hand visits three random targets: observations and true rewards."""
    env.reset(seed=int(rng.integers(2**31)))
    observations, rewards = [], []
    for t in range(30):
        if t % 10 == 0:
            target = rng.uniform(-1, 1, 2)
        action = np.clip((target - env.hand) / 0.2, -1, 1) + 0.3 * rng.normal(size=2)
        obs, reward, *_ = env.step(np.concatenate([action, np.zeros(2)]).astype(np.float32))
        observations.append(obs)
        rewards.append(reward)
    return observations, rewards


def segments(nuisance: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 10-step segments, one per fresh episode: observations ``(N, 10, 2 + nuisance)``, true rewards."""
    from envs.point_hold import PointHoldEnv

    env = PointHoldEnv(nuisance)
    obs_out, rew_out = [], []
    for _ in range(count):
        observations, rewards = episode(env, rng)
        start = rng.integers(0, 21)
        obs_out.append(np.stack(observations[start : start + 10]))
        rew_out.append(np.asarray(rewards[start : start + 10], np.float32))
    return np.stack(obs_out), np.stack(rew_out)


def paired_segments(nuisance: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``2 * pairs`` segments, segment ``i`` and ``i + pairs`` two disjoint thirds of one episode."""
    from envs.point_hold import PointHoldEnv

    env = PointHoldEnv(nuisance)
    first, second = [], []
    for _ in range(pairs):
        observations, rewards = episode(env, rng)
        for out, third in zip((first, second), sorted(rng.choice(3, 2, replace=False))):
            out.append((observations[10 * third : 10 * third + 10], rewards[10 * third : 10 * third + 10]))
    both = first + second
    return np.stack([np.stack(o) for o, _ in both]), np.stack([np.asarray(r, np.float32) for _, r in both])


def fit(seed: int, nuisance: int, labels: int, pairing: str = "across", weight_decay: float = DEFAULT_DECAY) -> dict:
    import torch

    from embodied.reward_models import (
        RewardModel,
        RewardTrainConfig,
        preference_accuracy,
        rank_correlation,
        train_reward_model,
    )
    from embodied.teacher import ScriptedTeacher

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    teacher = ScriptedTeacher()
    pairs = lambda n: (np.arange(n), np.arange(n, 2 * n))  # noqa: E731
    obs, rew = segments(nuisance, 2 * labels, rng) if pairing == "across" else paired_segments(nuisance, labels, rng)
    prefs = teacher.label(rew, *pairs(labels))
    act = np.zeros((*obs.shape[:2], 4), np.float32)
    model = RewardModel(obs.shape[-1], 4, use_action=False)
    train_reward_model(model, obs, act, prefs, RewardTrainConfig(epochs=50, weight_decay=weight_decay), seed=seed)
    test_obs, test_rew = segments(nuisance, 2000, rng)
    test_prefs = teacher.label(test_rew, *pairs(1000))
    test_act = np.zeros((*test_obs.shape[:2], 4), np.float32)

    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41)), -1).reshape(-1, 2)
    distance = np.linalg.norm(grid - 0.5, axis=1)
    argmax_distance, rank = [], []
    for _ in range(5):  # five fresh feature vectors: the optimum an episode's policy would be led to
        states = np.concatenate([grid, np.tile(rng.uniform(-1, 1, nuisance), (len(grid), 1))], 1).astype(np.float32)
        with torch.no_grad():
            learned = model(torch.as_tensor(states), None).numpy()
        argmax_distance.append(float(distance[learned.argmax()]))
        rank.append(rank_correlation(learned, -np.maximum(distance - 0.1, 0)))
    columns = model.net[0].weight.detach().norm(dim=0).numpy()  # how much the first layer reads each input
    return {
        "seed": seed,
        "nuisance": nuisance,
        "labels": labels,
        "pairs": pairing,
        "weight_decay": weight_decay,
        "input_weight_hand": float(columns[:2].mean()),
        "input_weight_features": float(columns[2:].mean()) if nuisance else None,
        "train_accuracy": preference_accuracy(model, obs, act, prefs),
        "heldout_accuracy": preference_accuracy(model, test_obs, test_act, test_prefs),
        "grid_rank_corr": float(np.mean(rank)),
        "argmax_distance": float(np.mean(argmax_distance)),
    }


def report(path: Path) -> str:
    from embodied.report import aggregate

    from records import read_records

    records = read_records(path)
    for r in records:
        r.setdefault("pairs", "across")
        r.setdefault("weight_decay", DEFAULT_DECAY)
    measures = ["heldout_accuracy", "train_accuracy", "grid_rank_corr", "argmax_distance"]
    weights = ["input_weight_hand", "input_weight_features"]
    out = [
        f"Seeds {sorted({r['seed'] for r in records})}; per setting, mean over seeds [95 % bootstrap CI] "
        "(`embodied.report.aggregate`). `argmax_distance`: distance from the goal of the learned reward's highest "
        "grid point, averaged over five fresh feature vectors (0.1 or less is on the goal). Pairs: the two "
        "segments of a training pair from two episodes (across) or from one (within); held-out pairs are across. "
        "Weight decay: AdamW's, 1e-4 as in the runs. `input_weight_*`: the mean norm of the first layer's weights "
        "reading a hand coordinate or a feature (how much the reward reads each; blank where not recorded).",
        "",
        "| pairs | irrelevant features | labels | weight decay | seeds | " + " | ".join(measures + weights) + " |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---" for _ in measures + weights) + " |",
    ]
    for nuisance, labels, pairs, decay in SETTINGS:
        setting = (nuisance, labels, pairs, decay)
        rows = [r for r in records if (r["nuisance"], r["labels"], r["pairs"], r["weight_decay"]) == setting]
        if not rows:
            continue
        cells = []
        for m in measures + weights:
            values = [np.nan if r.get(m) is None else r[m] for r in rows]
            if not np.all(np.isfinite(values)):
                cells.append("")
                continue
            st = aggregate({"x": np.array([[v] for v in values])})["x"]
            cells.append(f"{st['mean']:.3f} [{st['mean_low']:.3f}, {st['mean_high']:.3f}]")
        out.append(f"| {pairs} | {nuisance} | {labels} | {decay:g} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _job(args: tuple[int, int, int, str, float]) -> dict:
    return fit(*args)


def main() -> None:
    from records import study_args, study_parser

    parser = study_parser(__doc__, seeds="0-4", out="runs/parl_reward_nuisance.jsonl", jobs=2)
    args = study_args(parser, report)
    if args is None:
        return
    from records import run_jobs

    run_jobs(
        args.out,
        [(seed, *setting) for seed in args.seeds for setting in SETTINGS],
        _job,
        key=lambda r: (
            r["seed"],
            r["nuisance"],
            r["labels"],
            r.get("pairs", "across"),
            r.get("weight_decay", DEFAULT_DECAY),
        ),
        processes=args.jobs,
    )


if __name__ == "__main__":
    main()
