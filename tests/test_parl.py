import json

import numpy as np
import pytest
import torch

from agents.parl.feedback import RecentEpisodes, merge, query
from agents.parl.sac import SAC, ReplayBuffer, SACConfig, TanhGaussianActor, train_on_fixed_reward
from agents.parl.train import LearnedReward, ParlConfig
from embodied.cli import main as cli_main
from embodied.data import NoiseSchedule, collect, sample_segments
from embodied.make import make_env
from embodied.policies import load_policy_module
from embodied.reward_models import RewardModel, RewardTrainConfig, preference_accuracy, train_reward_model
from embodied.teacher import ScriptedTeacher, sample_pairs
from envs.experts import scripted_expert
from envs.point_hold import reward_optimal_path


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


def test_reward_training_stops_once_it_orders_enough_labels_as_pebble_does(rng):
    """PEBBLE's rule: train until the model orders more than 97 % of its labels right, then stop."""
    obs = rng.normal(size=(200, 5, 3)).astype(np.float32)
    act = np.zeros((200, 5, 2), np.float32)
    prefs = ScriptedTeacher().label(obs[..., 0], *sample_pairs(200, 300, rng))  # true reward: the first feature
    runs, accuracy = {}, {}
    for stop in (0.0, 0.97):
        torch.manual_seed(0)
        model = RewardModel(3, 2, hidden=32, use_action=False)
        runs[stop] = train_reward_model(
            model, obs, act, prefs, RewardTrainConfig(epochs=100, lr=3e-3, stop_accuracy=stop)
        )
        accuracy[stop] = preference_accuracy(model, obs, act, prefs)
    assert accuracy[0.97] > 0.97, accuracy
    assert len(runs[0.0]) == 100 and len(runs[0.97]) < 50, (len(runs[0.0]), len(runs[0.97]))
    assert runs[0.97] == runs[0.0][: len(runs[0.97])], "the same training, only shorter"


def test_a_session_logs_how_many_reward_epochs_the_stop_rule_left(tmp_path):
    for stop, name in ((0.0, "full"), (0.5, "stopped")):
        argv = [*TOY, "--method", "pebble", "--reward-epochs", "20", "--reward-stop-accuracy", str(stop)]
        assert cli_main(["train", "parl", *argv, "--run-dir", str(tmp_path), "--run-name", name]) == 0
    epochs = {
        name: [
            r["reward/epochs"] for r in map(json.loads, open(tmp_path / name / "metrics.jsonl")) if "reward/epochs" in r
        ]
        for name in ("full", "stopped")
    }
    assert epochs["full"] == [20.0, 20.0, 20.0] and max(epochs["stopped"]) < 20, epochs


def test_relabel_rewrites_the_buffer_with_standardised_learned_reward(rng):
    buffer = ReplayBuffer(39, 4, capacity=100)
    for _ in range(60):
        buffer.add(rng.normal(size=39), rng.uniform(-1, 1, 4), 5.0, rng.normal(size=39), 0.0)
    reward = LearnedReward(39, 4, 2, "cpu")
    reward.relabel(buffer)
    assert abs(buffer.rew[:60].mean()) < 1e-4 and abs(buffer.rew[:60].std() - 1) < 1e-2
    assert np.all(buffer.true_rew[:60] == 5.0) and np.all(buffer.rew[60:] == 0)


def test_a_restored_buffer_checks_its_position_and_keeps_writing_in_range(rng):
    """Size and position come from a file: out of range they were used as they were (an IndexError at the next
    step, mid-run). A buffer of 5 not yet full, restored into one of capacity 5, writes next at slot 0."""
    small = ReplayBuffer(2, 1, capacity=8)
    for _ in range(5):
        small.add(rng.normal(size=2), [0.5], 1.0, rng.normal(size=2), 0.0)
    exact = ReplayBuffer(2, 1, capacity=5)
    exact.load_state_dict(small.state_dict())
    assert (exact.size, exact.pos) == (5, 0)
    exact.add(np.zeros(2), [0.0], 2.0, np.zeros(2), 0.0)
    assert exact.true_rew[0] == 2.0 and exact.pos == 1
    for size, pos in ((5, 9), (-1, 0), (5, -1), (5.0, 0), (3, 4)):
        with pytest.raises(ValueError, match="size .* and position"):
            ReplayBuffer(2, 1, capacity=8).load_state_dict({**small.state_dict(), "size": size, "pos": pos})


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


TOY = [
    "--task",
    "reach-v3",
    "--total-steps",
    "600",
    "--max-episode-steps",
    "100",
    "--seed-steps",
    "200",
    "--query-every",
    "200",
    "--queries-per-session",
    "10",
    "--segment-length",
    "20",
    "--reward-epochs",
    "3",
    "--eval-every",
    "300",
    "--eval-episodes",
    "1",
    "--checkpoint-every",
    "200",
    "--sac.hidden",
    "64",
    "--sac.batch-size",
    "64",
    "--unsup-steps",
    "0",
    "--no-video",
]


@pytest.mark.parametrize("method", ["parl", "pebble", "sac"])
def test_loop_runs_end_to_end(method, tmp_path):
    assert cli_main(["train", "parl", *TOY, "--method", method, "--run-dir", str(tmp_path), "--run-name", "r"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["feedback"] == (0 if method == "sac" else 30)
    assert [c[0] for c in summary["curve"]] == [300, 600]
    assert summary["episode_steps"] == 100  # what the curve's returns sum over
    assert load_policy_module(tmp_path / "r" / "policy.pt").act(np.zeros(39, np.float32)).shape == (4,)
    if method == "parl":
        logs = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
        norms = [r["parl/indirect_norm"] for r in logs if "parl/indirect_norm" in r]
        assert len(norms) == 3 and all(n > 0 for n in norms), "the implicit term is computed at every session"


def test_resume_continues_from_checkpoint(tmp_path):
    assert (
        cli_main(
            [
                "train",
                "parl",
                *TOY,
                "--method",
                "pebble",
                "--total-steps",
                "300",
                "--run-dir",
                str(tmp_path),
                "--run-name",
                "r",
            ]
        )
        == 0
    )
    assert (
        cli_main(
            ["train", "parl", *TOY, "--method", "pebble", "--run-dir", str(tmp_path), "--run-name", "r", "--resume"]
        )
        == 0
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["feedback"] == 30 and summary["curve"][-1][0] == 600


@pytest.mark.parametrize(
    "method, option, today, then",
    [("parl", "implicit_measure", "reward", "parameters"), ("pebble", "query_episodes", 100, 10)],
)
def test_a_run_from_before_an_option_resumes_only_with_what_it_ran_with(method, option, today, then, tmp_path, capsys):
    args = ["train", "parl", *TOY, "--method", method, "--run-dir", str(tmp_path), "--run-name", "r"]
    assert cli_main([*args, "--total-steps", "300"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    del config[option]  # as config.json was written before the option existed
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    flag = "--" + option.replace("_", "-")
    assert cli_main([*args, "--resume"]) != 0
    assert f"{flag} {today!r} (the run has {then!r})" in capsys.readouterr().err
    assert cli_main([*args, "--resume", flag, str(then)]) == 0


@pytest.mark.parametrize("method, pools", [("pebble", [1, 3, 5]), ("parl", [1, 2, 2])])
def test_pebble_cuts_its_queries_from_all_its_episodes_and_parl_from_the_current_policys(
    method, pools, tmp_path, monkeypatch
):
    """PEBBLE's reward model keeps the last 100 episodes, random ones included, and queries them; PARL's upper level
    is an expectation over the current policy's trajectories. The diagnostics look at the policy's for both."""
    import agents.parl.train as parl_train

    seen, agreement = [], parl_train.reward_agreement
    real_query = parl_train.query
    monkeypatch.setattr(
        parl_train, "query", lambda episodes, *a, **k: (seen.append(episodes), real_query(episodes, *a, **k))[1]
    )
    recents = []
    monkeypatch.setattr(
        parl_train,
        "reward_agreement",
        lambda r, b, recent, rng: (recents.append(len(recent.episodes)), agreement(r, b, recent, rng))[1],
    )
    argv = [*TOY, "--method", method, "--recent-episodes", "2", "--run-dir", str(tmp_path), "--run-name", "r"]
    assert cli_main(["train", "parl", *argv]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["query_episodes"] == (
        100 if method == "pebble" else 2
    )
    assert [len(e.episodes) for e in seen] == pools  # sessions at 200, 400, 600 env steps, after 1, 3, 5 episodes
    first = seen[-1].episodes[0][0][0]  # the oldest episode's first observation
    assert (first == seen[0].episodes[0][0][0]).all() == (method == "pebble"), "PEBBLE's pool still has the first"
    assert max(recents) == 2, "the diagnostics look at the last --recent-episodes only"


def test_knn_distance_and_running_std_on_known_values():
    from agents.parl.exploration import RunningStd, knn_distance

    reference = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    # k=1: the 2nd smallest distance (the state itself, when it is in the reference, is the 1st)
    assert knn_distance(torch.tensor([[1.0], [10.0]]), reference, k=1).tolist() == [1.0, 7.0]
    stats = RunningStd()
    data = np.random.default_rng(0).normal(3.0, 2.0, size=1000)
    for chunk in np.split(data, 10):
        stats.update(chunk)
    assert abs(stats.mean - data.mean()) < 1e-9 and abs(stats.std - data.std()) < 1e-6


def test_state_entropy_pretraining_covers_more_states_than_random_actions():
    """PEBBLE's unsupervised phase: SAC on the k-NN state-entropy reward spreads the hand further than random
    actions in the same number of steps (cells of 2 cm visited by the hand, reach-v3, 1,000 steps)."""
    from agents.parl.exploration import StateEntropyReward

    def cells_visited(explore: bool, steps: int = 1000, seed: int = 0) -> int:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        env = make_env("embodied/reach-v3", max_episode_steps=100)
        env.action_space.seed(seed)
        sac, buffer, entropy = (
            SAC(39, 4, SACConfig(hidden=64, batch_size=64)),
            ReplayBuffer(39, 4, steps),
            StateEntropyReward(),
        )
        obs, _ = env.reset(seed=seed)
        cells = set()
        for t in range(steps):
            act = sac.actor.act(obs, deterministic=False) if explore and t >= 200 else env.action_space.sample()
            nxt, r, term, trunc, _ = env.step(act)
            buffer.add(obs, act, r, nxt, 0.0)
            cells.add(tuple(np.floor(nxt[:3] / 0.02).astype(int)))
            obs = nxt
            if explore and t >= 200:
                o, a, _, n, d = buffer.sample(64, rng, "cpu")
                sac.update(o, a, entropy(n, buffer.obs[: buffer.size], rng), n, d)
            if term or trunc:
                obs, _ = env.reset(seed=seed + t)
        return len(cells)

    random_cells, explored_cells = cells_visited(False), cells_visited(True)
    assert explored_cells > 1.3 * random_cells, (explored_cells, random_cells)


def test_reward_diagnostics_on_a_constructed_case(rng):
    """Rank correlations, the success gap, preference accuracy and the session shift, where the right values are
    known."""
    from agents.parl.diagnostics import preference_accuracy, reward_agreement, session_shift
    from embodied.reward_models import rank_correlation
    from embodied.teacher import Preferences

    buffer = ReplayBuffer(3, 1, 200)
    recent = RecentEpisodes(2)
    for e in range(2):
        obs = rng.normal(size=(51, 3)).astype(np.float32)
        act = rng.uniform(-1, 1, (50, 1)).astype(np.float32)
        true = obs[:50, 0]
        for t in range(50):
            buffer.add(obs[t], act[t], true[t], obs[t + 1], 0.0, float(true[t] > 1.0))
        recent.add(obs, act, true)

    def same(o, a):
        return 2.0 * o[:, 0] + 5.0  # a monotone map of the true reward

    def reversed_(o, a):
        return -o[:, 0]

    agree = reward_agreement(same, buffer, recent, rng)
    assert agree["diag/rank_corr_recent"] == pytest.approx(1.0) and agree["diag/rank_corr_buffer"] == pytest.approx(1.0)
    succ = buffer.true_rew[:100] > 1.0
    assert agree["diag/reward_gap_success"] == pytest.approx(
        2 * (buffer.true_rew[:100][succ].mean() - buffer.true_rew[:100][~succ].mean()), rel=1e-5
    )
    assert agree["diag/success_fraction_buffer"] == pytest.approx(succ.mean())
    assert reward_agreement(reversed_, buffer, recent, rng)["diag/rank_corr_recent"] == pytest.approx(-1.0)
    segments = rng.normal(size=(6, 4, 3)).astype(np.float32)  # 6 segments of 4 steps
    seg_act = np.zeros((6, 4, 1), np.float32)
    returns = segments[..., 0].sum(1)
    prefs = Preferences(np.arange(3), np.arange(3, 6), (returns[:3] > returns[3:]).astype(float))
    assert preference_accuracy(same, segments, seg_act, prefs) == 1.0
    assert preference_accuracy(reversed_, segments, seg_act, prefs) == 0.0
    half = Preferences(prefs.first, prefs.second, np.array([prefs.label[0], 1 - prefs.label[1], 0.5]))
    assert preference_accuracy(same, segments, seg_act, half) == 0.5  # the tie is left out
    shift = session_shift(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5, 2.5]))
    assert shift == {"diag/session_shift": 0.5, "diag/session_rank_corr": pytest.approx(1.0)}
    assert np.isnan(rank_correlation(np.ones(5), np.arange(5)))


def test_every_session_logs_the_diagnostics(tmp_path):
    assert cli_main(["train", "parl", *TOY, "--method", "parl", "--run-dir", str(tmp_path), "--run-name", "r"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    sessions = [r for r in rows if "feedback/labels" in r]
    keys = {
        "diag/rank_corr_recent",
        "diag/rank_corr_buffer",
        "diag/reward_gap_success",
        "diag/session_shift",
        "diag/session_rank_corr",
        "diag/implicit_cos_direct",
        "diag/implicit_to_direct_norm",
        "diag/implicit_to_direct_move",
        "diag/pref_accuracy_new",
        "diag/pref_accuracy_train",
        "parl/indirect_norm",
    }
    assert len(sessions) == 3 and all(keys <= set(r) for r in sessions)
    assert sessions[0]["diag/pref_accuracy_new"] is None  # NaN: no reward had been fit before the first session
    assert (
        all(0 <= r["diag/pref_accuracy_train"] <= 1 for r in sessions)
        and 0 <= sessions[1]["diag/pref_accuracy_new"] <= 1
    )
    # the implicit step moves the reward on the policy's recent transitions a quarter as far as the direct one did
    assert all(r["diag/implicit_to_direct_move"] == pytest.approx(0.25, rel=0.05) for r in sessions)
    assert any("sac/q_mean" in r and "sac/alpha" in r and "sac/entropy" in r for r in rows)
    assert any(
        "diag/rank_corr_recent" in r and "eval/success_rate" not in r and "feedback/labels" not in r for r in rows
    ), "the agreement is also logged at each evaluation"


def test_the_implicit_step_can_be_sized_by_its_parameter_norm_instead(tmp_path):
    argv = ["train", "parl", *TOY, "--method", "parl", "--implicit-measure", "parameters"]
    assert cli_main([*argv, "--run-dir", str(tmp_path), "--run-name", "r"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    sessions = [r for r in rows if "feedback/labels" in r]
    assert len(sessions) == 3
    assert all(r["diag/implicit_to_direct_norm"] == pytest.approx(0.25, rel=1e-3) for r in sessions)
    # a step of that norm moves the reward where the policy is by far more than a quarter of the direct update
    assert max(r["diag/implicit_to_direct_move"] for r in sessions) > 1.0


def test_the_implicit_steps_control_takes_a_random_direction_of_the_same_size(tmp_path):
    """--implicit-direction random: the same session, the same step size where the policy is, another direction."""
    cos = {}
    for direction in ("hypergradient", "random"):
        argv = ["train", "parl", *TOY, "--method", "parl", "--implicit-direction", direction]
        assert cli_main([*argv, "--run-dir", str(tmp_path), "--run-name", direction]) == 0
        rows = [json.loads(line) for line in open(tmp_path / direction / "metrics.jsonl")]
        sessions = [r for r in rows if "feedback/labels" in r]
        assert all(r["diag/implicit_to_direct_move"] == pytest.approx(0.25, rel=0.15) for r in sessions)
        cos[direction] = [r["diag/implicit_cos_direct"] for r in sessions]
    # the first session's direct update is the same in both runs; a random direction in the reward ensemble's ~230k
    # parameters is all but orthogonal to it; the hypergradient here is not (measured: -0.06, +0.19, +0.30)
    assert cos["random"][0] != pytest.approx(cos["hypergradient"][0], abs=1e-3), cos
    assert all(abs(c) < 0.05 for c in cos["random"]), cos


def test_pretraining_runs_before_the_first_query_and_resets_the_critic(tmp_path, monkeypatch):
    resets, reset = [], SAC.reset_critic
    monkeypatch.setattr(SAC, "reset_critic", lambda self: (resets.append(1), reset(self)))
    argv = [*TOY, "--method", "pebble", "--unsup-steps", "200", "--run-dir", str(tmp_path), "--run-name", "r"]
    assert cli_main(["train", "parl", *argv]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "feedback/labels" in r] == [400, 600]  # seed 200 + unsup 200, then every 200
    assert len(resets) == 1, "the critic is reset once, when pre-training ends"


def test_a_state_action_reward_fit_to_preferences_pays_for_actions_the_true_reward_ignores(rng):
    """The cause of learned-reward runs losing the task: Meta-World's reward is a function of the state, but a
    reward model of (s, a) fit to segment preferences also varies with the action at a fixed state (spread of the
    order of its spread over states), so SAC can collect reward by its choice of action instead of by the task.
    The state-only model (PARL's and PEBBLE's default here) has no such channel and ranks segments as well."""
    env = make_env("embodied/drawer-close-v3")
    episodes = collect(env, scripted_expert(env), 8, NoiseSchedule((0.0, 0.5, 2.0), (0.0, 0.3, 1.0)), max_steps=100)
    train = sample_segments(episodes, 25, 400, np.random.default_rng(1))
    prefs = ScriptedTeacher().label(train.rewards, *sample_pairs(400, 800, rng))
    held = sample_segments(episodes, 25, 300, np.random.default_rng(7))
    held_prefs = ScriptedTeacher().label(held.rewards, *sample_pairs(300, 600, rng))
    obs = np.concatenate([e.observations[:-1] for e in episodes]).astype(np.float32)
    spread, accuracy = {}, {}
    for use_action in (True, False):
        torch.manual_seed(0)
        model = RewardModel(39, 4, hidden=64, use_action=use_action)
        train_reward_model(model, train.observations, train.actions, prefs, RewardTrainConfig(epochs=30))
        accuracy[use_action] = preference_accuracy(model, held.observations, held.actions, held_prefs)
        with torch.no_grad():
            o = torch.as_tensor(obs)
            over_actions = torch.stack(
                [model(o, torch.as_tensor(rng.uniform(-1, 1, (len(obs), 4)), dtype=torch.float32)) for _ in range(8)]
            )
            spread[use_action] = float(over_actions.std(0).mean() / over_actions.mean(0).std())
    assert spread[True] > 0.2, spread
    assert spread[False] == 0.0
    assert accuracy[False] > 0.7 and accuracy[False] >= accuracy[True] - 0.1, accuracy  # measured 0.79 vs 0.82


def test_the_policy_a_state_reward_makes_optimal_keeps_the_goal_that_a_state_action_reward_passes_through():
    """The fix for learned-reward runs that learn a task and then lose it, on a problem solved exactly: on
    point-hold (reach a goal and stay), r(s) and r(s, a) are fit to the same teacher labels on segments of noisy
    expert episodes (a policy on its way to the task), and the policy that maximises each is planned by value
    iteration. r(s)'s reaches the goal and stays; r(s, a)'s passes through it and leaves, still paid for the
    actions that led toward the goal (``bench/parl_reward_optimum.py`` measures it over 12 seeds)."""
    env = make_env("embodied/point-hold-clean-v0")
    kept = {True: 0, False: 0}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        episodes = collect(env, scripted_expert(env), 100, NoiseSchedule((0.3, 1.0, 3.0)), seed=seed, max_steps=30)
        train = sample_segments(episodes, 10, 1000, rng)
        prefs = ScriptedTeacher().label(train.rewards, *sample_pairs(1000, 1000, rng))
        for use_action in (True, False):
            torch.manual_seed(seed)
            model = RewardModel(2, 4, hidden=64, use_action=use_action)
            train_reward_model(model, train.observations, train.actions, prefs, RewardTrainConfig(epochs=30))
            with torch.no_grad():
                path = reward_optimal_path(lambda o, a: model(torch.as_tensor(o), torch.as_tensor(a)).numpy())
            distance = np.linalg.norm(path - env.unwrapped.goal, axis=1)
            assert distance.min() < 0.15, (seed, use_action)  # both lead to the goal
            kept[use_action] += distance[-1] < 0.15
    assert kept[False] == 3 and kept[True] <= 1, kept
    assert ParlConfig().reward_input == "state"  # the loop's default is the reward that keeps the task


def test_sac_on_a_fixed_reward_learns_what_that_reward_pays_for():
    """``train_on_fixed_reward`` trains on the reward it is given, not the env's: paid for moving left, away from
    point-hold's goal, the hand ends at the left wall."""
    env, eval_env = make_env("embodied/point-hold-clean-v0"), make_env("embodied/point-hold-clean-v0")
    torch.manual_seed(0)
    rows = train_on_fixed_reward(
        env,
        eval_env,
        lambda obs, act: -float(np.clip(act[0], -1, 1)),
        900,
        0,
        np.random.default_rng(0),
        SACConfig(hidden=64, batch_size=64),
        random_steps=300,
        eval_every=300,
        eval_episodes=2,
    )
    assert [r["step"] for r in rows] == [300, 600, 900] and rows[-1]["success_final"] == 0.0
    assert eval_env.unwrapped.hand[0] == -1.0  # where the last evaluation episode ended


def test_evaluations_log_success_at_any_step_and_at_the_last(tmp_path):
    assert cli_main(["train", "parl", *TOY, "--method", "sac", "--run-dir", str(tmp_path), "--run-name", "r"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    evals = [r for r in rows if "eval/success_rate" in r]
    assert len(evals) == 2 and all(
        "eval/success_final" in r and r["eval/success_final"] <= r["eval/success_rate"] for r in evals
    )


def test_an_episode_is_the_tasks_own_length_unless_set_and_the_presets_are_the_studies_scales():
    """A 500-step default turned point-hold's 30-step episodes into 500-step ones without a word."""
    from embodied.config import parse_config

    assert ParlConfig().max_episode_steps == 500  # Meta-World's limit, as before
    assert ParlConfig(task="point-hold-clean-v0", segment_length=10).max_episode_steps == 30
    assert ParlConfig(task="point-hold-v0", segment_length=10, max_episode_steps=60).max_episode_steps == 60
    hold = parse_config(ParlConfig, ["--task", "point-hold-clean-v0", "--preset", "point-hold"], prog="p")
    assert (hold.max_episode_steps, hold.segment_length, hold.total_steps, hold.sac.hidden) == (30, 10, 4000, 128)
    small = parse_config(ParlConfig, ["--task", "drawer-close-v3", "--preset", "cpu-small", "--total-steps", "20"])
    assert (small.max_episode_steps, small.sac.batch_size, small.total_steps) == (200, 128, 20)
    with pytest.raises(ValueError, match="--preset point-hold"):
        ParlConfig(task="point-hold-clean-v0")  # PEBBLE's 50-step segments do not fit a 30-step episode
    # the preset alone is the task it is sized for (it ran button-press with 500-step episodes)
    assert parse_config(ParlConfig, ["--preset", "point-hold"], prog="p").task == "point-hold-v0"


def test_a_pixel_task_is_refused_naming_its_state_task():
    """SAC's networks met 64x64x3 frames in a broadcasting traceback, after the run directory was made."""
    for task in ("reach-pixels-v3", "reach-distractor-v3"):
        with pytest.raises(ValueError, match=f"--task {task}: PARL learns from state observations.*use reach-v3"):
            ParlConfig(task=task)


@pytest.mark.parametrize(
    "option, value, what",
    [
        ("--ensemble-size", "100000000", "the reward models"),  # built member by member until memory ran out
        ("--sac.batch-size", "100000000", "a SAC batch"),  # gathered 31 GiB of transitions per update
        ("--sac.hidden", "10000000", "SAC's networks"),  # allocated tens of GiB before failing
        ("--total-steps", "10000000000", "the replay buffer"),  # preallocated, then copied into each checkpoint
    ],
)
def test_sizes_that_cannot_fit_in_memory_are_refused_before_the_run_directory(tmp_path, capsys, option, value, what):
    runs = tmp_path / "runs"
    assert cli_main(["train", "parl", "--task", "reach-v3", option, value, "--run-dir", str(runs)]) == 2
    assert f"error: {option} {value}: {what} would hold at least" in capsys.readouterr().err
    assert not runs.exists()


def test_the_identity_inverse_needs_a_damping_before_the_run_starts(tmp_path, capsys):
    """It divided by the damping at PARL's first feedback session: a traceback after the run directory was made."""
    runs = tmp_path / "runs"
    argv = ["train", "parl", "--task", "reach-v3", "--hypergrad-solver", "identity", "--hypergrad-damping", "0"]
    assert cli_main([*argv, "--run-dir", str(runs)]) == 2
    assert "error: invalid configuration: hypergrad_solver identity" in capsys.readouterr().err
    assert not runs.exists()
    ParlConfig(hypergrad_solver="identity", hypergrad_damping=0.1)
    ParlConfig(hypergrad_solver="cg", hypergrad_damping=0)  # CG on the Fisher matrix needs none


def test_pretraining_needs_more_random_states_than_its_k():
    """The k-NN entropy estimate failed at the first update, mid-run, when the random steps were <= k."""
    with pytest.raises(ValueError, match=r"seed_steps \(300\) must exceed unsup_k \(500\)"):
        ParlConfig(seed_steps=300, unsup_k=500)
    ParlConfig(seed_steps=300, unsup_k=500, unsup_steps=0)  # no pre-training: k is not used
    ParlConfig(seed_steps=0, unsup_k=500, method="sac")  # the oracle has no pre-training


def test_the_final_reward_ranking_reads_the_runs_reward_and_scores_both_policies_on_the_same_episodes(tmp_path):
    """bench/parl_final_reward.py on a tiny PEBBLE run: the expert solves reach in every episode, and the run's
    reward negated (last layer of every member and the standardisation's mean) ranks the two the other way by
    exactly as much, which holds only if the checkpoint's reward scores the same episodes both times."""
    import runpy
    from pathlib import Path

    from embodied.checkpoint import load_checkpoint, save_checkpoint

    argv = ["train", "parl", *TOY, "--method", "pebble", "--no-video", "--run-dir", str(tmp_path), "--run-name", "r"]
    assert cli_main(argv) == 0
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    for member in state["reward"]["members"]:
        last = max({k.rsplit(".", 1)[0] for k in member}, key=lambda layer: int(layer.split(".")[1]))
        member[f"{last}.weight"], member[f"{last}.bias"] = -member[f"{last}.weight"], -member[f"{last}.bias"]
    state["reward"]["mean"] = -state["reward"]["mean"]
    save_checkpoint(tmp_path / "negated.pt", state)

    script = runpy.run_path(str(Path(__file__).parents[1] / "bench" / "parl_final_reward.py"))
    job = {"task": "reach-v3", "max_steps": 100, "ensemble_size": 3, "use_action": False, "seed": 0, "episodes": 2}
    job["policy"] = str(tmp_path / "r" / "policy.pt")
    own = script["score_run"]({**job, "checkpoint": str(tmp_path / "r" / "checkpoints" / "last.pt")})
    negated = script["score_run"]({**job, "checkpoint": str(tmp_path / "negated.pt")})
    assert set(own["expert"]) == {"learned", "true", "success", "success_final"}
    assert own["expert"]["success"] == 1.0 and own["expert"]["true"] > own["policy"]["true"]
    gap = own["expert"]["learned"] - own["policy"]["learned"]
    assert abs(gap) > 1e-3
    assert negated["expert"]["learned"] - negated["policy"]["learned"] == pytest.approx(-gap, abs=1e-4)
    assert script["outcome"]({"reached": True, "kept": False}) == "reached, lost"
