import json

import numpy as np
import pytest
import torch

from agents.pearl.cpa import (
    GWConfig,
    cost_matrix,
    cross_task_transfer,
    label_accuracy,
    segment_features,
    transfer_labels,
)
from agents.pearl.iql import IQL, IQLConfig, TransitionBuffer
from agents.pearl.train import best_episodes, episode_credit, load_trained_reward
from embodied.checkpoint import load_checkpoint, save_checkpoint
from embodied.reward_models import (
    GaussianRewardModel,
    RewardEnsemble,
    RewardModel,
    RewardTrainConfig,
    preference_accuracy,
    train_reward_model,
)
from embodied.cli import main as cli_main
from embodied.data import NoiseSchedule, collect, sample_segments
from embodied.errors import EmbodiedError
from embodied.make import make_env
from embodied.policies import load_policy_module
from embodied.teacher import Preferences, ScriptedTeacher, sample_pairs
from envs.experts import scripted_expert

NOISE = NoiseSchedule((0.0, 0.3, 1.0, 3.0), (0.0, 0.1, 0.5, 1.0))


def _episodes(task, n, seed, steps=100):
    env = make_env(f"embodied/{task}")
    return collect(env, scripted_expert(env), n, NOISE, seed=seed, max_steps=steps)


@pytest.fixture(scope="module")
def button_pair():
    return _episodes("button-press-v3", 12, 0), _episodes("button-press-wall-v3", 12, 100)


def test_same_data_reproduces_labels_exactly(rng):
    env = make_env("embodied/reach-v3")
    episodes = collect(env, scripted_expert(env), 4, NoiseSchedule((0.5,), (0.5,)), max_steps=60)
    seg = sample_segments(episodes, 10, 60, rng)
    _, unique = np.unique(np.stack([seg.episode, seg.start]), axis=1, return_index=True)
    seg = seg.subset(unique[:40])  # distinct windows: GW's optimum on identical data is then the identity
    first, second = sample_pairs(40, 300, rng)
    prefs = ScriptedTeacher().label(seg.rewards, first, second)
    result = cross_task_transfer(seg, prefs, seg, first, second, GWConfig(method="exact"))
    np.testing.assert_allclose(result.labels, prefs.label, atol=1e-9)
    # with T = I/n the normalised formula is the identity on labelled pairs
    identity = torch.eye(40, dtype=torch.float64) / 40
    labels, mass = transfer_labels(identity, prefs, first, second)
    np.testing.assert_allclose(labels, prefs.label)
    np.testing.assert_allclose(mass, 1 / 40**2 * np.ones(300) * _multiplicity(first, second), rtol=1e-9)


def _multiplicity(first, second):
    pairs = list(zip(first, second))
    both = pairs + [(b, a) for a, b in pairs]
    return np.array([both.count(p) for p in pairs])


def test_cpa_accuracy_well_above_chance_on_a_real_pair(button_pair, rng):
    src_eps, tgt_eps = button_pair
    src = sample_segments(src_eps, 25, 250, rng)
    tgt = sample_segments(tgt_eps, 25, 250, rng)
    teacher = ScriptedTeacher()
    s_first, s_second = sample_pairs(250, 2000, rng)
    t_first, t_second = sample_pairs(250, 1000, rng)
    truth = teacher.label(tgt.rewards, t_first, t_second).label
    result = cross_task_transfer(src, teacher.label(src.rewards, s_first, s_second), tgt, t_first, t_second)
    accuracy = label_accuracy(result.labels, truth)
    assert accuracy > 0.65, accuracy
    assert np.all((result.labels >= 0) & (result.labels <= 1))


def test_bad_input_is_rejected(button_pair, rng):
    src_eps, tgt_eps = button_pair
    src = sample_segments(src_eps, 10, 20, rng)
    tgt = sample_segments(tgt_eps, 12, 20, rng)
    prefs = ScriptedTeacher().label(src.rewards, *sample_pairs(20, 30, rng))
    with pytest.raises(ValueError, match="length"):
        cross_task_transfer(src, prefs, tgt, np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="no source preference"):
        transfer_labels(torch.eye(20, dtype=torch.float64), prefs.subset(slice(0, 0)), np.array([0]), np.array([1]))
    bad = segment_features(src)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cost_matrix(bad)
    with pytest.raises(ValueError, match="gw.method must be one of"):
        GWConfig(method="magic")


def test_label_accuracy_counts_coin_flips_as_half():
    assert label_accuracy(np.array([0.9, 0.1, 0.5, 0.7]), np.array([1.0, 1.0, 0.0, 0.5])) == pytest.approx(0.5)


@pytest.mark.parametrize("model_cls", [GaussianRewardModel, RewardModel])
def test_reward_model_loss_falls_and_ranks_held_out_segments(model_cls, button_pair, rng):
    _, episodes = button_pair
    train = sample_segments(episodes, 25, 300, rng)
    held = sample_segments(episodes, 25, 200, np.random.default_rng(99))
    teacher = ScriptedTeacher()
    prefs = teacher.label(train.rewards, *sample_pairs(300, 1500, rng))
    held_prefs = teacher.label(held.rewards, *sample_pairs(200, 800, rng))
    torch.manual_seed(0)
    model = model_cls(39, 4, hidden=64)
    before = preference_accuracy(model, held.observations, held.actions, held_prefs)
    losses = train_reward_model(model, train.observations, train.actions, prefs, RewardTrainConfig(epochs=15))
    after = preference_accuracy(model, held.observations, held.actions, held_prefs)
    assert losses[-1] < 0.7 * losses[0]
    assert after > 0.75 and after > before
    with pytest.raises(ValueError, match="empty"):
        train_reward_model(model, train.observations, train.actions, prefs.subset(slice(0, 0)))


def test_gaussian_model_keeps_uncertainty_under_noisy_labels(button_pair, rng):
    _, episodes = button_pair
    seg = sample_segments(episodes, 25, 200, rng)
    first, second = sample_pairs(200, 1000, rng)
    noisy = Preferences(first, second, np.full(1000, 0.5))  # uninformative labels
    torch.manual_seed(0)
    model = GaussianRewardModel(39, 4, hidden=64)
    train_reward_model(model, seg.observations, seg.actions, noisy, RewardTrainConfig(epochs=10, kl_weight=0.1))
    _, std = model(torch.as_tensor(seg.observations), torch.as_tensor(seg.actions))
    assert std.mean() > 0.3, "the KL term keeps per-step std near the prior instead of collapsing"


def test_iql_improves_on_a_tiny_offline_problem():
    """A one-step problem: reward -||a - tanh(W s)||^2, data from a uniformly random behaviour policy."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    w = torch.randn(4, 3, generator=gen)
    obs = torch.randn(5000, 3, generator=gen)
    best = torch.tanh(obs @ w.T)
    act = torch.rand(5000, 4, generator=gen) * 2 - 1
    rew = -((act - best) ** 2).sum(-1)
    buffer = TransitionBuffer(obs, act, rew, obs, torch.ones(5000), "cpu")
    agent = IQL(3, 4, IQLConfig(hidden=64, batch_size=256))
    for _ in range(1500):
        agent.update(*buffer.sample(256, gen))
    test_obs = torch.randn(500, 3, generator=gen)
    policy_reward = -((torch.as_tensor(agent.policy.act(test_obs.numpy())) - torch.tanh(test_obs @ w.T)) ** 2).sum(-1)
    assert policy_reward.mean() > rew.mean() + 0.8, (policy_reward.mean(), rew.mean())


def test_iql_at_temperature_zero_clones_the_behaviour_whatever_the_reward():
    """%BC's policy step: with temperature 0 every advantage weight is 1, so the policy fits the data's
    actions (here a fixed linear behaviour plus noise) and ignores a reward that prefers other actions."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    obs = torch.randn(4000, 3, generator=gen)
    behaviour = torch.tanh(obs @ torch.randn(3, 2, generator=gen))
    act = (behaviour + 0.3 * torch.randn(4000, 2, generator=gen)).clamp(-1, 1)
    rew = -((act + behaviour) ** 2).sum(-1)  # best action: the behaviour's opposite
    buffer = TransitionBuffer(obs, act, rew, obs, torch.ones(4000), "cpu")
    agents = {t: IQL(3, 2, IQLConfig(hidden=64, temperature=t)) for t in (0.0, 3.0)}
    for agent in agents.values():
        for _ in range(800):
            agent.update(*buffer.sample(256, gen))
    error = {
        t: float(((torch.as_tensor(a.policy.act(obs[:500].numpy())) - behaviour[:500]) ** 2).sum(-1).mean())
        for t, a in agents.items()
    }
    assert error[0.0] < 0.02 and error[3.0] > 5 * error[0.0], error


TOY = [
    "--source-task",
    "reach-v3",
    "--target-task",
    "reach-wall-v3",
    "--episodes",
    "4",
    "--max-steps",
    "40",
    "--segment-length",
    "10",
    "--segments",
    "60",
    "--source-queries",
    "200",
    "--target-queries",
    "200",
    "--reward-epochs",
    "3",
    "--eval-every",
    "1000",
    "--eval-episodes",
    "1",
    "--checkpoint-every",
    "50",
    "--no-video",
]


def test_pipeline_end_to_end_and_resume_matches_uninterrupted(tmp_path, monkeypatch):
    assert (
        cli_main(
            [
                "train",
                "pearl",
                *TOY,
                "--iql-steps",
                "100",
                "--eval-every",
                "25",
                "--run-dir",
                str(tmp_path),
                "--run-name",
                "full",
                "--video",
            ]
        )
        == 0
    )
    run = tmp_path / "full"
    for name in (
        "config.json",
        "metrics.jsonl",
        "labels.npz",
        "reward.pt",
        "policy.pt",
        "summary.json",
        "source.hdf5",
        "target.hdf5",
        "videos/eval.mp4",
    ):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["label_accuracy"] <= 1 and summary["iql_steps"] == 100
    assert summary["episode_steps"] == 40  # the evaluation episodes its return_mean sums over
    curve = summary["success_curve"]
    assert [step for step, _ in curve] == [25, 50, 75, 100]
    assert summary["success_late_mean"] == pytest.approx((curve[2][1] + curve[3][1]) / 2)
    # the benches that probe a finished run load it back: its datasets, and the reward that wrote its labels
    cfg, episodes, reward = load_trained_reward(run)
    assert cfg["source_data"] == str(run / "source.hdf5") and cfg["target_data"] == str(run / "target.hdf5")
    obs = torch.as_tensor(episodes[0].observations[:-1])
    saved = load_checkpoint(run / "reward.pt")
    assert not reward.training and all(torch.equal(saved[k], v) for k, v in reward.state_dict().items())
    assert reward.mean_reward(obs, torch.as_tensor(episodes[0].actions)).shape == (len(obs),)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"task": "reach-v3"}))
    with pytest.raises(ValueError, match="not a PEARL run's config"):
        load_trained_reward(tmp_path / "other")

    assert (
        cli_main(
            [
                "train",
                "pearl",
                *TOY,
                "--iql-steps",
                "50",
                "--eval-every",
                "25",
                "--run-dir",
                str(tmp_path),
                "--run-name",
                "cut",
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "train",
                "pearl",
                *TOY,
                "--iql-steps",
                "100",
                "--eval-every",
                "25",
                "--run-dir",
                str(tmp_path),
                "--run-name",
                "cut",
                "--resume",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["success_curve"] == curve  # evaluations survive
    a = load_policy_module(run / "policy.pt").state_dict()
    b = load_policy_module(tmp_path / "cut" / "policy.pt").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key])

    # stopped right after the reward stage's checkpoint: the resumed run builds its reward model and redoes the
    # held-out check, which draw random numbers; the IQL it then starts must still be the uninterrupted run's
    def stop(*args, **kwargs):
        raise EmbodiedError("stopped after the reward stage")

    full_args = ["train", "pearl", *TOY, "--iql-steps", "100", "--eval-every", "25", "--run-dir", str(tmp_path)]
    monkeypatch.setattr("agents.pearl.train.train_iql", stop)
    assert cli_main([*full_args, "--run-name", "at-reward"]) != 0
    monkeypatch.undo()
    assert cli_main([*full_args, "--run-name", "at-reward", "--resume"]) == 0
    assert json.loads((tmp_path / "at-reward" / "summary.json").read_text())["success_curve"] == curve
    b = load_policy_module(tmp_path / "at-reward" / "policy.pt").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_few_shot_run_weights_two_reward_models_and_resumes_from_them(tmp_path, capsys):
    def args(steps):
        return [
            "train",
            "pearl",
            *TOY,
            "--few-shot-labels",
            "6",
            "--iql-steps",
            str(steps),
            "--eval-every",
            "25",
            "--run-dir",
            str(tmp_path),
            "--run-name",
            "k6",
        ]

    assert cli_main(args(50)) == 0
    assert "few-shot reward: transfer model x" in capsys.readouterr().out
    held = json.loads((tmp_path / "k6" / "summary.json").read_text())["reward_heldout_accuracy"]
    assert cli_main([*args(75), "--resume"]) == 0  # the reward stage is reloaded, not refit
    out = capsys.readouterr().out
    assert "few-shot reward: transfer model x" not in out and "resuming IQL from step 50" in out
    assert json.loads((tmp_path / "k6" / "summary.json").read_text())["reward_heldout_accuracy"] == held


def test_pipeline_rejects_bad_config(tmp_path, capsys):
    assert cli_main(["train", "pearl", "--labels", "telepathy", "--run-dir", str(tmp_path)]) == 2
    assert "labels must be one of" in capsys.readouterr().err
    assert cli_main(["train", "pearl", "--iql-top", "0", "--run-dir", str(tmp_path)]) == 2
    assert "iql_top must be in (0, 1]" in capsys.readouterr().err
    assert cli_main(["train", "pearl", "--iql-temperature", "-1", "--run-dir", str(tmp_path)]) == 2
    assert "iql_temperature must be >= 0" in capsys.readouterr().err
    assert cli_main(["train", "pearl", "--iql-episode-credit", "1.5", "--run-dir", str(tmp_path)]) == 2
    assert "iql_episode_credit must be in [0, 1]" in capsys.readouterr().err
    assert cli_main(["train", "pearl", "--segments", "1", "--run-dir", str(tmp_path)]) == 2  # was a traceback
    assert "segments must be >= 2" in capsys.readouterr().err
    assert cli_main(["train", "pearl", "--target-task", "reach-pixels-v3", "--run-dir", str(tmp_path)]) == 2
    assert "PEARL learns from state observations" in capsys.readouterr().err  # a traceback after collecting
    assert not any(tmp_path.iterdir())


def test_a_dataset_that_cannot_be_used_is_refused_before_the_run_directory(tmp_path, capsys):
    """Another task's data and episodes shorter than a segment were found after the run directory was made (the
    second as a traceback)."""
    data = tmp_path / "hold.hdf5"
    assert cli_main(["collect", "--env", "embodied/point-hold-v0", "--episodes", "2", "--out", str(data)]) == 0
    runs = tmp_path / "runs"
    common = ["train", "pearl", "--run-dir", str(runs), "--target-task", "point-hold-v0", "--gw.alpha", "1"]
    capsys.readouterr()
    assert cli_main([*common, "--source-task", "reach-v3", "--source-data", str(data)]) == 2
    assert "recorded on 'embodied/point-hold-v0'" in capsys.readouterr().err
    assert cli_main([*common, "--segments", "1000000"]) == 2  # ~30 TiB of cost matrices: failed deep in cdist
    assert "--segments 1000000: the transfer holds" in capsys.readouterr().err
    assert cli_main([*common, "--episodes", "100000000"]) == 2  # held until written: grew until memory ran out
    assert "--episodes 100000000 (--max-steps 200): the collected episodes would hold" in capsys.readouterr().err
    assert cli_main([*common, "--target-queries", "100000000"]) == 2  # took every byte of the machine
    assert "100005000 labelled pairs would hold at least" in capsys.readouterr().err
    assert cli_main([*common, "--iql.batch-size", "100000000"]) == 2  # the kernel killed the process for memory
    assert "--iql.batch-size 100000000: an IQL batch would hold at least" in capsys.readouterr().err
    argv = [*common, "--source-task", "point-hold-v0", "--source-data", str(data), "--segment-length", "40"]
    assert cli_main([*argv, "--max-steps", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no episode has --segment-length 40 steps (longest 30)" in err[0], err
    assert not runs.exists()


def test_best_episodes_keeps_the_top_share_by_learned_return():
    rewards = [np.full(5, r) for r in (0.1, 3.0, -1.0, 2.0, 0.5, 2.0)]  # returns 0.5, 15, -5, 10, 2.5, 10
    assert best_episodes(rewards, 0.5).tolist() == [1, 3, 5]  # ties keep the dataset's order
    assert best_episodes(rewards, 1.0).tolist() == [1, 3, 5, 4, 0, 2]
    assert best_episodes(rewards, 0.01).tolist() == [1]  # never empty


def test_episode_credit_moves_step_rewards_to_their_episode_mean_keeping_returns():
    rewards = [np.array([0.0, 1.0, 5.0]), np.array([-2.0, 2.0])]
    half = episode_credit(rewards, 0.5)
    np.testing.assert_allclose(half[0], [1.0, 1.5, 3.5])
    np.testing.assert_allclose(half[1], [-1.0, 1.0])
    full = episode_credit(rewards, 1.0)
    np.testing.assert_allclose(full[0], [2.0, 2.0, 2.0])  # the return spread evenly
    for share in (0.0, 0.5, 1.0):  # the episode returns, which best_episodes ranks by, never change
        np.testing.assert_allclose([r.sum() for r in episode_credit(rewards, share)], [6.0, 0.0])
    np.testing.assert_allclose(episode_credit(rewards, 0.0)[0], rewards[0])


@pytest.fixture
def seen(monkeypatch) -> dict:
    """What a PEARL run hands IQL: ``seen["rew"]``, its buffer's rewards; ``seen["temperature"]``, IQL's."""
    import agents.pearl.train as pearl_train

    seen = {}

    class Buffer(TransitionBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["rew"] = self.rew.numpy().copy()

    class Agent(IQL):
        def __init__(self, obs_dim, act_dim, cfg, device):
            super().__init__(obs_dim, act_dim, cfg, device)
            seen["temperature"] = cfg.temperature

    monkeypatch.setattr(pearl_train, "TransitionBuffer", Buffer)
    monkeypatch.setattr(pearl_train, "IQL", Agent)
    return seen


def test_episode_credit_reaches_iqls_buffer(tmp_path, seen):
    for credit in ("0", "1"):
        assert (
            cli_main(
                [
                    "train",
                    "pearl",
                    *TOY,
                    "--iql-episode-credit",
                    credit,
                    "--iql-steps",
                    "5",
                    "--eval-every",
                    "5",
                    "--run-dir",
                    str(tmp_path),
                    "--run-name",
                    f"credit{credit}",
                ]
            )
            == 0
        )
        per_episode = seen["rew"].reshape(4, 40)  # 4 episodes x 40 steps
        spread = per_episode.std(axis=1)
        assert (spread < 1e-5).all() if credit == "1" else (spread > 1e-3).all(), spread
        assert abs(per_episode.mean()) < 1e-5  # standardised
        seen.setdefault("returns", []).append(per_episode.sum(axis=1))
    assert np.argsort(seen["returns"][0]).tolist() == np.argsort(seen["returns"][1]).tolist()  # same episode ranking


def test_return_filtered_run_trains_iql_on_the_kept_episodes_only(tmp_path, capsys, seen):
    assert (
        cli_main(
            [
                "train",
                "pearl",
                *TOY,
                "--iql-top",
                "0.5",
                "--iql-temperature",
                "0",
                "--iql-steps",
                "20",
                "--eval-every",
                "20",
                "--run-dir",
                str(tmp_path),
                "--run-name",
                "top",
            ]
        )
        == 0
    )
    assert "IQL learns from the best 2 of 4 episodes by learned return" in capsys.readouterr().out
    summary = json.loads((tmp_path / "top" / "summary.json").read_text())
    assert summary["iql_episodes"] == 2 and summary["iql_episodes_success"] in (0.0, 0.5, 1.0)
    logged = [json.loads(line) for line in (tmp_path / "top" / "metrics.jsonl").read_text().splitlines()]
    kept = next(row for row in logged if "iql/episodes_success" in row)  # where a study's records keep it
    assert kept["iql/episodes"] == 2 and kept["iql/episodes_success"] == summary["iql_episodes_success"]
    assert kept["iql/all_success"] == summary["iql_all_success"]
    assert len(seen["rew"]) == 2 * 40 and abs(seen["rew"].mean()) < 1e-5  # the kept episodes, restandardised
    assert seen["temperature"] == 0.0


def test_reward_ensemble_standardises_its_members_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    obs, act = torch.randn(50, 5, 39), torch.randn(50, 5, 4)
    small, large = RewardModel(39, 4, hidden=8), RewardModel(39, 4, hidden=8)
    with torch.no_grad():
        for p in large.parameters():
            p.mul_(100.0)
    ensemble = RewardEnsemble([small, large], [0.75, 0.25]).standardise(obs.numpy(), act.numpy())
    members = [
        (m.mean_reward(obs, act) - m.mean_reward(obs, act).mean()) / m.mean_reward(obs, act).std()
        for m in (small, large)
    ]
    torch.testing.assert_close(ensemble.mean_reward(obs, act), 0.75 * members[0] + 0.25 * members[1])
    save_checkpoint(tmp_path / "r.pt", ensemble.state_dict())
    again = RewardEnsemble([RewardModel(39, 4, hidden=8), RewardModel(39, 4, hidden=8)])
    again.load_state_dict(load_checkpoint(tmp_path / "r.pt"))
    torch.testing.assert_close(again.mean_reward(obs, act), ensemble.mean_reward(obs, act))
    with pytest.raises(ValueError, match="weight"):
        RewardEnsemble([small, large], [0.0, 0.0])


@pytest.mark.parametrize(
    "entry, value, message",
    [
        ("q_opt", "x", "not a dict of 'state' and 'param_groups'"),  # a traceback from torch's load_state_dict
        ("step", -5, "it is at IQL step -5"),
        ("evals", [["x", 1.0]], "invalid literal for int"),  # a traceback when the summary was written
        ("policy", float("nan"), "network entry net.0.weight holds NaN"),  # a distribution refused NaN arguments
    ],
)
def test_a_crafted_iql_checkpoint_is_one_error_line_on_resume(tmp_path, capsys, entry, value, message):
    def args(steps: int) -> list[str]:
        return ["train", "pearl", *TOY, "--iql-steps", str(steps), "--eval-every", "25"] + [
            "--run-dir",
            str(tmp_path),
            "--run-name",
            "r",
        ]

    assert cli_main(args(50)) == 0
    path = tmp_path / "r" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    if entry == "q_opt":
        state["iql"]["q_opt"] = value
    elif entry == "policy":
        state["iql"]["policy"]["net.0.weight"].fill_(value)
    else:
        state[entry] = value
    torch.save(state, path)
    capsys.readouterr()
    assert cli_main([*args(75), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this run" in err[0] and message in err[0], err
