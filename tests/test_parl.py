import json

import numpy as np
import pytest
import torch

from agents.parl.feedback import RecentEpisodes, merge, query
from agents.parl.sac import SAC, ReplayBuffer, TanhGaussianActor
from agents.parl.train import LearnedReward
from embodied.cli import main as cli_main
from embodied.data import NoiseSchedule, collect, sample_segments
from embodied.make import make_env
from embodied.policies import load_policy_module
from embodied.reward_models import RewardModel, RewardTrainConfig, preference_accuracy, train_reward_model
from embodied.teacher import ScriptedTeacher, sample_pairs
from envs.experts import scripted_expert


def test_actor_log_prob_matches_sampling_density():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, hidden=16)
    obs = torch.randn(64, 3)
    action, logp = actor.sample(obs)
    torch.testing.assert_close(actor.log_prob(obs, action), logp, rtol=1e-3, atol=1e-3)


def test_reward_trained_on_teacher_labels_of_policy_segments_ranks_held_out_segments(rng):
    env = make_env("embodied/door-open-v3")
    episodes = collect(env, scripted_expert(env), 8, NoiseSchedule((0.0, 0.5, 2.0), (0.0, 0.3, 1.0)), max_steps=120)
    recent = RecentEpisodes(capacity=8)
    for ep in episodes:
        recent.add(ep.observations, ep.actions, ep.rewards)
    teacher = ScriptedTeacher()
    torch.manual_seed(0)
    ensemble = [RewardModel(39, 4, hidden=64) for _ in range(3)]
    store = None
    for _ in range(3):  # three query sessions, disagreement-based
        obs, act, prefs = query(recent, teacher, ensemble, 100, 25, "disagreement", rng, "cpu")
        store = merge(store, obs, act, prefs)
        for member in ensemble:
            train_reward_model(member, store["obs"], store["act"], store["prefs"], RewardTrainConfig(epochs=10))
    assert len(store["prefs"]) == 300 and store["obs"].shape == (600, 25, 39)
    held = sample_segments(episodes, 25, 300, np.random.default_rng(7))
    held_prefs = teacher.label(held.rewards, *sample_pairs(300, 1000, rng))
    accuracy = np.mean([preference_accuracy(m, held.observations, held.actions, held_prefs) for m in ensemble])
    assert accuracy > 0.75, accuracy


def test_relabel_rewrites_the_buffer_with_standardised_learned_reward(rng):
    buffer = ReplayBuffer(39, 4, capacity=100)
    for _ in range(60):
        buffer.add(rng.normal(size=39), rng.uniform(-1, 1, 4), 5.0, rng.normal(size=39), 0.0)
    reward = LearnedReward(39, 4, 2, "cpu")
    reward.relabel(buffer)
    assert abs(buffer.rew[:60].mean()) < 1e-4 and abs(buffer.rew[:60].std() - 1) < 1e-2
    assert np.all(buffer.true_rew[:60] == 5.0) and np.all(buffer.rew[60:] == 0)


def test_sac_learns_a_one_step_problem():
    """Reward -|a - target(s)|^2 with terminal transitions: SAC's actor must move toward the target."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sac = SAC(2, 1)
    buffer = ReplayBuffer(2, 1, 5000)
    obs = rng.normal(size=(5000, 2)).astype(np.float32)
    target = np.tanh(obs[:, :1] - obs[:, 1:])
    act = rng.uniform(-1, 1, size=(5000, 1)).astype(np.float32)
    for o, a, t in zip(obs, act, target):
        buffer.add(o, a, -float(((a - t) ** 2).sum()), o, 1.0)
    for _ in range(600):
        sac.update(*buffer.sample(256, rng, "cpu"))
    test = rng.normal(size=(200, 2)).astype(np.float32)
    err = np.abs(sac.actor.act(test) - np.tanh(test[:, :1] - test[:, 1:])).mean()
    assert err < 0.25, err


TOY = ["--task", "reach-v3", "--total-steps", "600", "--max-episode-steps", "100", "--seed-steps", "200",
       "--query-every", "200", "--queries-per-session", "10", "--segment-length", "20", "--reward-epochs", "3",
       "--eval-every", "300", "--eval-episodes", "1", "--checkpoint-every", "200", "--sac-hidden", "64",
       "--batch-size", "64", "--no-video"]


@pytest.mark.parametrize("method", ["parl", "pebble", "sac"])
def test_loop_runs_end_to_end(method, tmp_path):
    assert cli_main(["train", "parl", *TOY, "--method", method, "--run-dir", str(tmp_path), "--run-name", "r"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["feedback"] == (0 if method == "sac" else 30)
    assert [c[0] for c in summary["curve"]] == [300, 600]
    assert load_policy_module(tmp_path / "r" / "policy.pt").act(np.zeros(39, np.float32)).shape == (4,)
    if method == "parl":
        logs = [json.loads(l) for l in open(tmp_path / "r" / "metrics.jsonl")]
        norms = [r["parl/indirect_norm"] for r in logs if "parl/indirect_norm" in r]
        assert len(norms) == 3 and all(n > 0 for n in norms), "the implicit term is computed at every session"


def test_resume_continues_from_checkpoint(tmp_path):
    assert cli_main(["train", "parl", *TOY, "--method", "pebble", "--total-steps", "300", "--run-dir", str(tmp_path),
                     "--run-name", "r"]) == 0
    assert cli_main(["train", "parl", *TOY, "--method", "pebble", "--run-dir", str(tmp_path), "--run-name", "r",
                     "--resume"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["feedback"] == 30 and summary["curve"][-1][0] == 600
