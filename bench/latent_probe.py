"""What a world model's latent keeps: linear probes for the task state and for the distractions.

    python bench/latent_probe.py --out bench/results/latent_probe            # the committed study
    python bench/latent_probe.py --updates 20 --train-episodes 4 --test-episodes 2 --seeds 0 --out /tmp/probe

One fixed dataset of distracted episodes (scripted expert with cycled action noise, every axis of
``envs.distractions`` on at once) trains each world model (RePo: no reconstruction, KL budget;
Dreamer: pixel reconstruction) for the same number of updates from the same seeds. Then the
posterior features ``[h, mean of z]`` of every step, filtered through whole episodes, are
regressed linearly (ridge, its strength chosen on training episodes) on

- the task state: hand position and goal position, from the state observation;
- each axis's own parameters (``MetaWorldEnv.distraction_params``): background quadrant colours,
  colour offsets, camera shift and turn, lighting gain/ambient/direction;

and R^2 is measured on held-out episodes. RePo's claim predicts high R^2 for the task and low for
the distractions; a reconstruction objective should keep more of the distractions. The untrained
(randomly initialised) model is the reference for what an encoder keeps without learning.
Each (model, seed) runs in its own process with one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

TASK_TARGETS = {"hand": slice(0, 3), "goal": slice(36, 39)}  # slices of the 39-d state observation
NOISE_CYCLE = (0.0, 0.3, 0.6, 1.0)  # Gaussian action-noise std per episode, cycled: states spread around the expert's


def collect_dataset(
    task: str, axes: str, difficulty: float, episodes: int, episode_steps: int, action_repeat: int, seed: int
) -> dict[str, np.ndarray]:
    """``episodes`` episodes -> obs (N, T+1, 64, 64, 3), act (N, T, 4), rew (N, T), state (N, T+1, 39),
    and one ``param/<axis>`` (N, T+1, k) per axis."""
    from embodied.make import make_env
    from embodied.policies import make_policy
    from envs.registry import env_id
    from envs.wrappers import ActionRepeat

    env = ActionRepeat(
        make_env(env_id(task, "distractor"), max_episode_steps=episode_steps, axes=axes, difficulty=difficulty),
        action_repeat,
    )
    inner = env.unwrapped
    policy = make_policy("scripted", env)
    rng = np.random.default_rng(seed)
    data: dict[str, list] = {"obs": [], "act": [], "rew": [], "state": []}
    for i in range(episodes):
        obs, _ = env.reset(seed=seed * 100_000 + i)
        std = NOISE_CYCLE[i % len(NOISE_CYCLE)]
        ep = {"obs": [obs], "act": [], "rew": [], "state": [inner.last_state.copy()]}
        params = [inner.distraction_params()]
        done = False
        while not done:
            action = np.clip(policy(obs) + rng.normal(0, std, 4), -1, 1).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            ep["obs"].append(obs)
            ep["act"].append(action)
            ep["rew"].append(reward)
            ep["state"].append(inner.last_state.copy())
            params.append(inner.distraction_params())
            done = terminated or truncated
        for key, values in ep.items():
            data[key].append(np.stack(values))
        for axis in params[0]:
            data.setdefault(f"param/{axis}", []).append(np.stack([p[axis] for p in params]))
    env.close()
    out = {k: np.stack(v) for k, v in data.items()}
    out["act"] = out["act"].astype(np.float32)
    out["rew"] = out["rew"].astype(np.float32)
    return out


def latent_features(model, obs: np.ndarray, act: np.ndarray, seed: int) -> np.ndarray:
    """``[h, posterior mean]`` for steps 1..T of each episode, filtered from its first frame: (N, T, feat)."""
    import torch

    from agents.repo.networks import preprocess

    torch.manual_seed(seed)
    feats = []
    with torch.no_grad():
        for o, a in zip(obs, act):
            states = model.rssm.observe(
                model.encoder(preprocess(torch.as_tensor(o[None, 1:]))), torch.as_tensor(a[None])
            )
            feats.append(torch.cat([states["h"], states["post_mean"]], -1)[0].numpy())
    return np.stack(feats)


def ridge_r2(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    alphas=(1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
) -> float:
    """Held-out R^2 (mean over target dimensions) of a ridge regression whose strength is chosen on the
    last fifth of the training rows (whole episodes: rows are in episode order)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xs_train, xs_test = (x_train - mean) / std, (x_test - mean) / std
    y_mean = y_train.mean(0)

    def fit(x, y, alpha):
        a = x.T @ x + alpha * len(x) * np.eye(x.shape[1])
        return np.linalg.solve(a, x.T @ (y - y_mean))

    def r2(x, y, w):
        pred = x @ w + y_mean
        ss_res = ((y - pred) ** 2).sum(0)
        ss_tot = ((y - y.mean(0)) ** 2).sum(0) + 1e-12
        return float(np.mean(1 - ss_res / ss_tot))

    split = int(0.8 * len(xs_train))
    best = max(alphas, key=lambda a: r2(xs_train[split:], y_train[split:], fit(xs_train[:split], y_train[:split], a)))
    return r2(xs_test, y_test, fit(xs_train, y_train, best))


def targets(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Probe targets for steps 1..T, flattened over episodes: ``task`` (hand and goal) and each axis."""
    state = data["state"][:, 1:]
    out = {"task": np.concatenate([state[..., s] for s in TASK_TARGETS.values()], -1)}
    out.update({name: state[..., s] for name, s in TASK_TARGETS.items()})
    out.update({k.removeprefix("param/"): v[:, 1:] for k, v in data.items() if k.startswith("param/")})
    return {k: v.reshape(-1, v.shape[-1]) for k, v in out.items()}


def pooled_pixels(obs: np.ndarray, block: int = 8) -> np.ndarray:
    """Frames 1..T of each episode, averaged over ``block`` x ``block`` pixel squares: (N * T, 3 * (64 / block)^2)."""
    frames = obs[:, 1:].astype(np.float32) / 255.0
    n, t, h, w, c = frames.shape
    pooled = frames.reshape(n, t, h // block, block, w // block, block, c).mean((3, 5))
    return pooled.reshape(n * t, -1)


def run_one(job: dict) -> dict:
    """Train one world model on the dataset file and probe it (one process, one torch thread); ``pixels``
    probes the frames themselves (8 x 8 averages), the reference for what is linearly visible at all."""
    import torch

    torch.set_num_threads(1)
    from agents.repo.world_model import WorldModel, WorldModelConfig

    train = dict(np.load(job["train"]))
    test = dict(np.load(job["test"]))
    if job["model"] == "pixels":
        y_train, y_test = targets(train), targets(test)
        x_train, x_test = pooled_pixels(train["obs"]), pooled_pixels(test["obs"])
        r2 = {name: ridge_r2(x_train, y_train[name], x_test, y_test[name]) for name in y_train}
        return {"model": "pixels", "seed": job["seed"], "updates": 0, "seconds": 0.0, "r2": r2, "final": {}}
    torch.manual_seed(job["seed"])
    rng = np.random.default_rng(job["seed"])
    mode = "repo" if job["model"] == "untrained" else job["model"]
    model = WorldModel(4, WorldModelConfig(mode=mode, reward_scale=0.1, beta_lr=job["beta_lr"]))
    n, t = train["act"].shape[:2]
    start, metrics = time.perf_counter(), {}
    updates = 0 if job["model"] == "untrained" else job["updates"]
    for _ in range(updates):
        ep = rng.integers(0, n, job["batch"])
        t0 = rng.integers(0, t - job["seq_len"] + 1, job["batch"])
        idx = t0[:, None] + np.arange(job["seq_len"] + 1)[None]
        obs = torch.as_tensor(train["obs"][ep[:, None], idx])
        act = torch.as_tensor(train["act"][ep[:, None], idx[:, :-1]])
        rew = torch.as_tensor(train["rew"][ep[:, None], idx[:, :-1]])
        metrics = model.train_step(obs, act, rew)[0]
    seconds = time.perf_counter() - start
    model.eval()
    f_train = latent_features(model, train["obs"], train["act"], job["seed"]).reshape(-1, model.rssm.feat_dim)
    f_test = latent_features(model, test["obs"], test["act"], job["seed"]).reshape(-1, model.rssm.feat_dim)
    y_train, y_test = targets(train), targets(test)
    r2 = {name: ridge_r2(f_train, y_train[name], f_test, y_test[name]) for name in y_train}
    return {
        "model": job["model"],
        "seed": job["seed"],
        "updates": updates,
        "seconds": round(seconds, 1),
        "r2": r2,
        "final": {k: round(v, 4) for k, v in metrics.items()},
    }


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval over seeds (few seeds: a bootstrap would be too narrow)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def report(records: list[dict], setup: dict) -> str:
    names = list(records[0]["r2"])
    models = [m for m in ("repo", "dreamer", "untrained", "pixels") if any(r["model"] == m for r in records)]
    lines = [
        "# Latent probe: what RePo's and Dreamer's latents keep",
        "",
        f"Reproduce: `{setup['command']}`",
        "",
        f"Dataset: {setup['task']}, distractor axes {setup['axes']} at difficulty {setup['difficulty']}, "
        f"{setup['train_episodes']} training and {setup['test_episodes']} held-out episodes of "
        f"{setup['episode_steps']} env steps (action repeat {setup['action_repeat']}), scripted expert with "
        f"action noise std cycled over {list(NOISE_CYCLE)}. Each world model: {setup['updates']} updates of "
        f"{setup['batch']} x {setup['seq_len']} sequences, seeds {setup['seeds']}, one torch thread per process. "
        "Linear (ridge) probes on `[h, posterior mean]`, R^2 on the held-out episodes (1: all of it "
        "linearly decodable; 0: no better than the mean). Mean over seeds with a 95 % Student-t interval. "
        "`untrained`: the world model at its random initialisation; `pixels`: the frames themselves averaged over "
        "8 x 8 squares (192 numbers, one fit), what is linearly visible at all.",
        "",
        "| target | " + " | ".join(models) + " |",
        "| --- | " + " | ".join("---:" for _ in models) + " |",
    ]
    for name in names:
        cells = []
        for m in models:
            mean, lo, hi = t_interval([r["r2"][name] for r in records if r["model"] == m])
            cells.append(f"{mean:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else f"{mean:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Final training losses (mean over seeds):", ""]
    for m in models:
        finals = [r["final"] for r in records if r["model"] == m and r["final"]]
        if finals:
            keys = sorted(finals[0])
            lines.append(
                f"- {m}: "
                + ", ".join(f"{k} {np.mean([f[k] for f in finals]):.3g}" for k in keys)
                + f"; {np.mean([r['seconds'] for r in records if r['model'] == m]):.0f} s of training"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--axes", default="background,color,camera,lighting")
    parser.add_argument("--difficulty", type=float, default=1.0)
    parser.add_argument("--train-episodes", type=int, default=60)
    parser.add_argument("--test-episodes", type=int, default=20)
    parser.add_argument("--episode-steps", type=int, default=200, help="env steps per episode (before action repeat)")
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--beta-lr", type=float, default=1e-2, help="RePo's dual step (a short run needs ~1e-2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["repo", "dreamer", "untrained", "pixels"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="folder for records.jsonl and report.md")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("runs/latent_probe_data"),
        help="where the collected episodes are kept (reused when present)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.data
    cache.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, episodes, seed in (("train", args.train_episodes, 1), ("test", args.test_episodes, 2)):
        files[split] = cache / (
            f"{split}-{args.task}-{args.axes.replace(',', '+')}-d{args.difficulty:g}-n{episodes}"
            f"-t{args.episode_steps}-r{args.action_repeat}.npz"
        )
        if not files[split].exists():
            start = time.perf_counter()
            data = collect_dataset(
                args.task, args.axes, args.difficulty, episodes, args.episode_steps, args.action_repeat, seed
            )
            tmp = files[split].with_suffix(".tmp.npz")
            np.savez(tmp, **data)
            os.replace(tmp, files[split])
            print(f"collected {split}: {episodes} episodes in {time.perf_counter() - start:.0f} s", flush=True)
    jobs = [
        dict(
            model=m,
            seed=s,
            train=str(files["train"]),
            test=str(files["test"]),
            updates=args.updates,
            batch=args.batch,
            seq_len=args.seq_len,
            beta_lr=args.beta_lr,
        )
        for s in args.seeds
        for m in args.models
        if m != "pixels" or s == args.seeds[0]  # the frames have no seed: one fit
    ]
    jobs.sort(key=lambda j: {"dreamer": 0, "repo": 1, "untrained": 2, "pixels": 3}[j["model"]])  # longest first
    records_path = args.out / "records.jsonl"
    records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    done = {(r["model"], r["seed"]) for r in records}  # a re-run continues: finished jobs are kept
    jobs = [j for j in jobs if (j["model"], j["seed"]) not in done]
    with ProcessPoolExecutor(args.workers) as pool, open(records_path, "a") as out:
        for record in pool.map(run_one, jobs):
            records.append(record)
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(json.dumps(record), flush=True)
    setup = dict(
        vars(args),
        seeds=args.seeds,
        command="python bench/latent_probe.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k == "out" or (k not in ("workers", "data") and v != parser.get_default(k))
        ),
    )
    text = report(records, setup)
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
