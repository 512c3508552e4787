import copy
import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.repo.adapt import AdaptConfig, adapt_encoder, embed_replay, paired_embedding_error, split_pairs
from agents.repo.agent import RePoAgent, run_episode
from agents.repo.behavior import BehaviorConfig, lambda_returns
from agents.repo.networks import preprocess
from agents.repo.policy import RePoPolicy
from agents.repo.world_model import WorldModel, WorldModelConfig
from embodied.checkpoint import load_checkpoint
from embodied.errors import EmbodiedError
from embodied.cli import main as cli_main
from embodied.make import make_env
from embodied.nets import mixed_precision
from embodied.policies import load_policy_module, make_policy, save_policy
from embodied.data.collect import rollout
from embodied.video import record_episode
from embodied.replay import SequenceReplay
from envs.wrappers import ActionRepeat


def test_dual_variable_rises_above_budget_and_falls_below():
    model = WorldModel(4, WorldModelConfig(target_kl=3.0))
    start = model.log_beta.item()
    for _ in range(20):
        model.dual_update(kl=5.0)
    assert model.log_beta.item() > start
    high = model.log_beta.item()
    for _ in range(40):
        model.dual_update(kl=1.0)
    assert model.log_beta.item() < high


def _batch(rng, batch=3, length=6):
    obs = rng.integers(0, 255, size=(batch, length + 1, 64, 64, 3), dtype=np.uint8)
    return (
        torch.as_tensor(obs),
        torch.as_tensor(rng.uniform(-1, 1, (batch, length, 4)).astype(np.float32)),
        torch.as_tensor(rng.normal(size=(batch, length)).astype(np.float32)),
    )


@pytest.mark.parametrize("mode, reaches", [("repo", False), ("dreamer", True)])
def test_reconstruction_gradient_reaches_encoder_only_in_dreamer_mode(mode, reaches, rng):
    torch.manual_seed(0)
    model = WorldModel(4, WorldModelConfig(mode=mode, probe_decoder=True))
    terms, _ = model.losses(*_batch(rng))
    terms["recon"].backward()
    grads = [p.grad for p in model.encoder.parameters()]
    reached = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert reached == reaches
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def test_repo_train_step_never_feeds_the_probe_loss_to_the_model(rng):
    """The encoder's gradient in a full training step equals that of RePo's loss without the probe."""
    import copy

    torch.manual_seed(0)
    model = WorldModel(4, WorldModelConfig(mode="repo", probe_decoder=True))
    reference = copy.deepcopy(model)
    obs, act, rew = _batch(rng)
    torch.manual_seed(1)
    terms, _ = reference.losses(obs, act, rew)
    reference.model_loss(terms).backward()
    torch.nn.utils.clip_grad_norm_(reference.model_params, reference.cfg.grad_clip)
    torch.manual_seed(1)
    model.train_step(obs, act, rew)
    for p, q in zip(model.encoder.parameters(), reference.encoder.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert any(p.grad.abs().sum() > 0 for p in model.decoder.parameters()), "the probe itself does learn"


def test_lambda_returns_match_a_hand_computation():
    rewards = torch.tensor([[1.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [3.0]])
    out = lambda_returns(rewards, values, gamma=0.9, lam=0.5)
    last = 2.0 + 0.9 * (0.5 * 3.0 + 0.5 * 3.0)
    first = 1.0 + 0.9 * (0.5 * 1.0 + 0.5 * last)
    torch.testing.assert_close(out[:, 0], torch.tensor([first, last]))


@pytest.fixture(scope="module")
def reach_replay():
    env = ActionRepeat(make_env("embodied/reach-pixels-v3", max_episode_steps=120), 2)
    agent = RePoAgent(4)
    replay = SequenceReplay()
    rng = np.random.default_rng(0)
    for i in range(4):
        replay.add_episode(*run_episode(env, agent, seed=i, explore=True, rng=rng, random_policy=True)[:3])
    return replay


def test_short_training_lowers_the_reward_loss(reach_replay):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    agent = RePoAgent(4, WorldModelConfig(probe_decoder=False, reward_scale=1.0), BehaviorConfig(horizon=5))
    batch = reach_replay.sample(8, 16, rng)
    t = lambda x: torch.as_tensor(x)  # noqa: E731
    first = agent.model.losses(t(batch[0]), t(batch[1]), t(batch[2]))[0]["reward_nll"].item()
    for _ in range(60):
        agent.train_step(*reach_replay.sample(8, 16, rng))
    last = agent.model.losses(t(batch[0]), t(batch[1]), t(batch[2]))[0]["reward_nll"].item()
    assert last < 0.5 * first, (first, last)


def test_adaptation_changes_only_the_encoder(reach_replay):
    torch.manual_seed(0)
    agent = RePoAgent(4, WorldModelConfig(probe_decoder=True), BehaviorConfig(horizon=5))
    before = {
        name: p.detach().clone()
        for name, p in list(agent.model.named_parameters())
        + [("behavior." + n, p) for n, p in agent.behavior.named_parameters()]
    }
    target = SequenceReplay()
    env = ActionRepeat(make_env("embodied/reach-distractor-v3", max_episode_steps=80), 2)
    for i in range(2):
        obs, act, _, _ = run_episode(env, agent, seed=100 + i, explore=True)
        target.add_episode(obs, act, np.zeros(len(act), np.float32))
    adapt_encoder(agent, reach_replay, target, AdaptConfig(steps=5, batch_size=4, seq_len=8), np.random.default_rng(0))
    after = dict(
        list(agent.model.named_parameters()) + [("behavior." + n, p) for n, p in agent.behavior.named_parameters()]
    )
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("encoder.") for name in changed), changed


def test_embedded_replay_samples_the_embeddings_of_the_same_windows(reach_replay):
    """The adaptation encodes the source replay once: with the same generator, its windows are the
    encoder's embeddings of the windows the frame replay gives."""
    torch.manual_seed(0)
    encoder = RePoAgent(4).model.encoder
    embedded = embed_replay(encoder, reach_replay, "cpu")
    frames, act, rew = reach_replay.sample(3, 8, np.random.default_rng(5))
    emb, emb_act, emb_rew = embedded.sample(3, 8, np.random.default_rng(5))
    np.testing.assert_array_equal(emb_act, act)
    np.testing.assert_array_equal(emb_rew, rew)
    with torch.no_grad():
        expected = encoder(preprocess(torch.as_tensor(frames)))
    torch.testing.assert_close(torch.as_tensor(emb), expected, rtol=1e-4, atol=1e-5)


def test_evaluations_along_the_adaptation_leave_it_unchanged(reach_replay):
    """--eval-every: the callback runs after every N steps but the last, and even one that draws from
    torch's random stream (as acting does) leaves the adapted encoder exactly as without it."""
    cfg = AdaptConfig(steps=7, batch_size=2, seq_len=8, eval_every=3)
    encoders, calls = [], []

    def evaluate(step):
        calls.append(step)
        torch.randn(1000)

    for callback in (None, evaluate):
        torch.manual_seed(0)
        agent = RePoAgent(4, WorldModelConfig(), BehaviorConfig(horizon=5))
        adapt_encoder(agent, reach_replay, reach_replay, cfg, np.random.default_rng(0), evaluate=callback)
        encoders.append(agent.model.encoder.state_dict())
    assert calls == [3, 6]
    for name, value in encoders[0].items():
        torch.testing.assert_close(encoders[1][name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="eval_every"):
        AdaptConfig(eval_every=-1)


def test_calibration_pairs_pull_distracted_embeddings_to_the_clean_ones(rng):
    """The calibration term makes the encoder more invariant to the distractors in an episode it never saw
    (another background video): measured 19.2 -> 11.0, and 53 without the term."""
    torch.manual_seed(0)
    agent = RePoAgent(4, WorldModelConfig(), BehaviorConfig(horizon=5))
    env = ActionRepeat(make_env("embodied/reach-distractor-v3", max_episode_steps=80), 2)
    target, distracted, clean = SequenceReplay(), [], []
    for i in range(2):
        pairs = []
        obs, act, _, _ = run_episode(env, agent, seed=100 + i, explore=True, clean=pairs)
        target.add_episode(obs, act, np.zeros(len(act), np.float32))
        distracted.append(obs)
        clean.append(np.stack(pairs))
    calib, probe = split_pairs([len(x) for x in distracted], 30, 100, rng)
    distracted, clean = np.concatenate(distracted), np.concatenate(clean)
    assert distracted.shape == clean.shape and (distracted != clean).mean() > 0.3
    assert calib.max() < 41 <= probe.min(), "calibration from the first episode, the probe from the second"
    source = copy.deepcopy(agent.model.encoder)
    cfg = AdaptConfig(steps=30, batch_size=2, seq_len=8, encoder_lr=1e-3)
    errors = {}
    for name, pairs in (("without", None), ("with", (distracted[calib], clean[calib]))):
        agent.model.encoder.load_state_dict(source.state_dict())
        adapt_encoder(agent, target, target, cfg, np.random.default_rng(0), calibration=pairs, source_encoder=source)
        errors[name] = paired_embedding_error(agent.model.encoder, source, distracted[probe], clean[probe], "cpu")
    start = paired_embedding_error(source, source, distracted[probe], clean[probe], "cpu")
    assert errors["with"] < 0.75 * start and errors["with"] < 0.5 * errors["without"], (start, errors)
    with pytest.raises(ValueError, match="calibration needs"):
        adapt_encoder(agent, target, target, cfg, np.random.default_rng(0), calibration=(distracted[:2], clean[:0]))


def test_calibration_and_probe_frames_come_from_different_episodes(rng):
    calib, probe = split_pairs([101] * 10, 150, 512, rng)
    assert len(calib) == 150 and calib.max() < 202 and probe.min() >= 202 and len(probe) == 512
    assert len(set(probe)) == 512
    calib, probe = split_pairs([101] * 10, 0, 5000, rng)
    assert len(calib) == 0 and len(probe) == 1010
    with pytest.raises(EmbodiedError, match="collect more episodes"):
        split_pairs([10, 10], 15, 5, rng)


def test_sequence_replay_samples_windows_inside_episodes(rng):
    replay = SequenceReplay()
    for length in (5, 20):
        obs = np.arange(length + 1)[:, None].repeat(2, 1)
        replay.add_episode(obs, np.zeros((length, 1)), np.arange(length, dtype=np.float32))
    obs, act, rew = replay.sample(50, 8, rng)
    assert obs.shape == (50, 9, 2) and act.shape == (50, 8, 1)
    assert np.all(np.diff(obs[:, :, 0], axis=1) == 1), "windows are contiguous and from the long episode only"
    np.testing.assert_array_equal(obs[:, :-1, 0], rew)
    with pytest.raises(ValueError, match="disagree"):
        replay.add_episode(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3))


def test_train_loop_and_resume(tmp_path):
    args = [
        "train",
        "repo",
        "--total-steps",
        "240",
        "--max-episode-steps",
        "80",
        "--prefill",
        "80",
        "--train-every",
        "80",
        "--train-steps",
        "1",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--eval-every",
        "160",
        "--eval-episodes",
        "1",
        "--checkpoint-every",
        "80",
        "--no-video",
        "--run-dir",
        str(tmp_path),
        "--run-name",
        "r",
    ]
    assert cli_main(args[:3] + ["160"] + args[4:]) == 0
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert state["step"] == 160 and state["updates"] == 2 and len(state["replay"]["episodes"]) == 2
    assert cli_main(args + ["--resume"]) == 0
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert state["step"] == 240 and state["updates"] == 3
    make_policy(str(tmp_path / "r" / "policy.pt"), make_env("embodied/reach-pixels-v3"))  # what eval and video load


def test_the_policy_file_acts_on_the_plain_pixel_env_as_the_agent_does_under_action_repeat(tmp_path):
    """What lets embodied eval, video and collect run a RePo agent: the file holds encoder, RSSM and actor, holds
    each action for the run's action repeat, and forgets its latent state when an episode starts."""
    torch.manual_seed(0)
    agent = RePoAgent(4, WorldModelConfig(deter=32, stoch=8, hidden=32), BehaviorConfig(hidden=32))
    save_policy(tmp_path / "policy.pt", *RePoPolicy.from_agent(agent, action_repeat=2))
    env = make_env("embodied/reach-pixels-v3", max_episode_steps=31)  # odd: the last repeat is cut short
    repeated = ActionRepeat(make_env("embodied/reach-pixels-v3", max_episode_steps=31), 2)
    video_env = make_env("embodied/reach-pixels-v3", max_episode_steps=31, render_mode="rgb_array", render_width=64)
    policy = make_policy(str(tmp_path / "policy.pt"), env)
    for seed in (0, 1, 2):  # the second and third start with the memory of the one before
        torch.manual_seed(seed)  # the latent state is a sample: the same draws for both
        _, actions, rewards, _ = run_episode(repeated, agent, seed=seed, explore=False)
        torch.manual_seed(seed)
        episode = rollout(env, policy, seed)
        assert len(episode.actions) == 31 and np.abs(actions).max() > 0
        np.testing.assert_allclose(episode.actions[::2], actions, atol=1e-6)
        np.testing.assert_allclose(episode.actions[1::2], actions[: len(episode.actions[1::2])], atol=1e-6)
        assert episode.rewards.sum() == pytest.approx(float(rewards.sum()), rel=1e-5)
        torch.manual_seed(seed)
        _, video_return, _ = record_episode(video_env, policy, seed, annotate=False)
        assert video_return == pytest.approx(float(rewards.sum()), rel=1e-5)
    with pytest.raises(EmbodiedError, match=r"observations of shape \(64, 64, 3\)"):
        make_policy(str(tmp_path / "policy.pt"), make_env("embodied/reach-v3"))


@pytest.mark.parametrize(
    "options, message",
    [
        (["--batch-size", "100000000"], "--batch-size 100000000, --seq-len 50 and --behavior.horizon 15: a training"),
        (["--behavior.horizon", "100000000"], "--batch-size 50, --seq-len 50 and --behavior.horizon 100000000: a"),
        (["--max-episode-steps", "100000000"], "--max-episode-steps 100000000: an episode's frames would hold"),
        (["--wm.hidden", "200000"], "--wm.deter 200, --wm.stoch 30, --wm.hidden 200000 and --behavior.hidden 200: the"),
        (["--wm.deter", "1000000000"], "--wm.deter 1000000000, --wm.stoch 30"),  # too large for torch to describe
    ],
)
def test_sizes_that_cannot_fit_in_memory_are_refused_before_the_run_directory(tmp_path, capsys, options, message):
    """Each grew until the machine ran out (a batch of 1e8 sequences, an episode of 1e8 frames), or, for the
    networks, failed to allocate after the run directory existed."""
    runs = tmp_path / "runs"
    assert cli_main(["train", "repo", *options, "--run-dir", str(runs)]) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not runs.exists()


def test_evaluation_holds_one_episode_at_a_time(monkeypatch):
    """--eval-episodes N kept every frame of all N episodes until it summed their returns."""
    import gc
    import weakref

    import agents.repo.agent as repo_agent

    alive: list = []
    real = repo_agent.run_episode

    def tracked(*args, **kwargs):
        gc.collect()
        assert sum(ref() is not None for ref in alive) <= 1
        episode = real(*args, **kwargs)
        alive.append(weakref.ref(episode[0]))  # its frames
        return episode

    monkeypatch.setattr(repo_agent, "run_episode", tracked)
    env = ActionRepeat(make_env("embodied/reach-pixels-v3", max_episode_steps=6), 2)
    agent = RePoAgent(4, WorldModelConfig(deter=16, stoch=4, hidden=16), BehaviorConfig(hidden=16))
    result = repo_agent.evaluate_agent(env, agent, 4, seed=0)
    assert len(alive) == 4 and set(result) == {"return_mean", "success_rate", "success_final"}


def test_adaptation_run_logs_its_curve_and_the_study_reports_it(tmp_path, capsys):
    """run_adapt end to end on a tiny pixel source: the curve (before, every --eval-every steps, the end)
    is in summary.json and, with the ceiling, in metrics.jsonl; bench/repo_adapt_study.py's report reads
    it from metrics.jsonl, a run without summary.json (stopped early) included and counted."""
    from agents.repo.adapt import run_adapt

    assert (
        cli_main(
            [
                "train",
                "repo",
                "--total-steps",
                "80",
                "--max-episode-steps",
                "40",
                "--prefill",
                "80",
                "--train-every",
                "80",
                "--train-steps",
                "1",
                "--batch-size",
                "2",
                "--seq-len",
                "8",
                "--eval-every",
                "80",
                "--eval-episodes",
                "1",
                "--checkpoint-every",
                "80",
                "--no-video",
                "--threads",
                "1",
                "--run-dir",
                str(tmp_path),
                "--run-name",
                "source",
            ]
        )
        == 0
    )
    out = tmp_path / "adapt"
    summary = run_adapt(
        AdaptConfig(
            source_run=tmp_path / "source",
            collect_episodes=2,
            steps=5,
            batch_size=2,
            seq_len=8,
            probe_pairs=8,
            eval_episodes=1,
            eval_every=2,
            device="cpu",
            threads=1,
            run_dir=out,
            run_name="calib0-s0",
            axes="color",
        )
    )
    said = capsys.readouterr().out  # both variants named with their distractions, not "distractor" alone
    assert "on pixels (ceiling)" in said and "distractor-color before adaptation" in said
    curve = summary["curve"]
    assert [p["step"] for p in curve] == [0, 2, 4, 5]
    assert curve[0]["return_mean"] == summary["before"]["return_mean"]
    assert curve[0]["gap_closed"] == 0 or np.isnan(curve[0]["gap_closed"])  # NaN: no gap to close
    assert curve[-1]["return_mean"] == summary["after"]["return_mean"]
    assert curve[-1]["embedding_error"] == summary["embedding_error_after"]
    rows = [json.loads(line) for line in (out / "calib0-s0" / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/return_mean" in row]
    assert [row["step"] for row in evals] == [0, 2, 4, 5]
    assert all(row["eval/ceiling_return"] == summary["ceiling"]["return_mean"] for row in evals)
    assert [row["eval/return_mean"] for row in evals] == [p["return_mean"] for p in curve]
    assert any("adapt/disc_accuracy" in row for row in rows)
    encoder = load_checkpoint(out / "calib0-s0" / "encoder.pt")  # weights only
    adapted = load_policy_module(out / "calib0-s0" / "policy.pt")  # the adapted agent, for eval and video
    assert all(torch.equal(adapted.encoder.state_dict()[k], v) for k, v in encoder.items())

    study = runpy.run_path(str(Path(__file__).parents[1] / "bench" / "repo_adapt_study.py"))
    stopped = out / "calib0-s1"
    shutil.copytree(out / "calib0-s0", stopped)
    (stopped / "summary.json").unlink()
    capsys.readouterr()
    study["report"](out)
    text = capsys.readouterr().out
    assert "| 0 pairs, 5 steps | 1 |" in text  # the finished run's before / after table
    assert "runs not finished included: 0 pairs: 1" in text
    steps = [line.split("|")[2:4] for line in text.splitlines() if line.startswith("| 0 pairs |")]
    assert [(int(step), int(seeds)) for step, seeds in steps] == [(0, 2), (2, 2), (4, 2), (5, 2)]

    refused = tmp_path / "refused"  # a sequence longer than the source's episodes: was a traceback after collecting
    source = str(tmp_path / "source")
    assert cli_main(["adapt", "--source-run", source, "--seq-len", "21", "--run-dir", str(refused)]) == 2
    assert "exceeds" in capsys.readouterr().err and not refused.exists()
    for option, message in [  # grew until the machine ran out
        ("--collect-episodes", "--collect-episodes 100000000: the collected target episodes"),
        ("--batch-size", "--batch-size 100000000 and --seq-len 8: an adaptation batch"),
    ]:
        argv = ["adapt", "--source-run", source, "--seq-len", "8", option, "100000000", "--run-dir", str(refused)]
        assert cli_main(argv) == 2
        assert f"error: {message}" in capsys.readouterr().err and not refused.exists()
    small = ["--collect-episodes", "1", "--steps", "3", "--batch-size", "2", "--seq-len", "8", "--eval-episodes", "1"]
    assert cli_main(["adapt", "--source-run", source, *small, "--encoder-lr", "1e9", "--run-dir", str(refused)]) == 2
    assert "error: the adaptation diverged: " in capsys.readouterr().err  # a NaN action's traceback before
    baseline = tmp_path / "baseline"  # --steps 0: the source encoder on the target as it is (was an UnboundLocalError)
    assert cli_main(["adapt", "--source-run", source, *small, "--steps", "0", "--run-dir", str(baseline)]) == 0
    summary = json.loads(next(baseline.glob("*/summary.json")).read_text())
    assert summary["embedding_error_after"] == summary["embedding_error_before"] and summary["disc_accuracy"] is None


def test_adaptation_report_pairs_the_arms_seed_by_seed(tmp_path, capsys):
    """The report's calibrated-minus-pair-free table: differences taken within a seed, only at steps both
    arms reached, and a seed whose arms scored different ceilings (another source) left out and named."""

    def run(pairs, seed, ceiling, returns):  # returns: {step: distractor return}, before = returns[0]
        directory = tmp_path / f"calib{pairs}-s{seed}"
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps({"calibration_pairs": pairs, "seed": seed}))
        rows = [
            {
                "step": step,
                "eval/ceiling_return": ceiling,
                "eval/return_mean": ret,
                "eval/success_rate": 0.0,
                "eval/gap_closed": (ret - returns[0]) / (ceiling - returns[0]),
                "eval/embedding_error": 1.0,
            }
            for step, ret in returns.items()
        ]
        (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))

    run(0, 0, 700, {0: 200, 500: 450, 1000: 300})  # gap closed 0.5 at 500
    run(200, 0, 700, {0: 200, 500: 650})  # 0.9 at 500, never reached 1000
    run(0, 1, 700, {0: 200, 500: 300, 1000: 400})  # 0.2
    run(200, 1, 700, {0: 200, 500: 600, 1000: 700})  # 0.8; 1.0 at 1000
    run(0, 2, 700, {0: 200, 500: 200})
    run(200, 2, 800, {0: 200, 500: 800})  # another ceiling: not paired
    study = runpy.run_path(str(Path(__file__).parents[1] / "bench" / "repo_adapt_study.py"))
    capsys.readouterr()
    study["report"](tmp_path)
    text = capsys.readouterr().out
    assert "left out, their ceilings differ or are not logged: seed 2 (200 pairs)" in text
    rows = {
        int(line.split("|")[2]): [c.strip() for c in line.split("|")[3:6]]
        for line in text.splitlines()
        if line.startswith("| 200 pairs - 0 pairs |")
    }
    assert sorted(rows) == [500, 1000]
    assert rows[500][0] == "2" and rows[500][1].startswith("250.00 [") and rows[500][2].startswith("0.50 [")
    assert rows[1000] == ["1", "300.00", "0.60"]  # seed 1 alone: 700 - 400, 1.0 - 0.4


def test_mixed_precision_step_keeps_losses_finite_and_in_float32(rng):
    """bfloat16 autocast (the GPU option) runs the same code; distributions and losses stay float32."""
    torch.manual_seed(0)
    agent = RePoAgent(4, WorldModelConfig(amp=True), BehaviorConfig(horizon=3))
    obs, act, rew = _batch(rng, batch=2, length=4)
    with mixed_precision(agent.model, True):
        terms, _ = agent.model.losses(obs, act, rew)
    assert all(v.dtype == torch.float32 for v in terms.values())
    metrics = agent.train_step(obs.numpy(), act.numpy(), rew.numpy())
    assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_reward_scale_is_what_the_reward_head_learns(rng):
    obs, act, rew = _batch(rng)
    losses = []
    for scale, target in ((0.5, rew), (1.0, 0.5 * rew)):
        torch.manual_seed(0)
        model = WorldModel(4, WorldModelConfig(reward_scale=scale))
        torch.manual_seed(1)
        losses.append(model.losses(obs, act, target)[0]["reward_nll"])
    torch.testing.assert_close(losses[0], losses[1])


def test_repo_config_rejects_negative_noise_and_zero_reward_scale():
    from agents.repo.train import RePoConfig

    with pytest.raises(ValueError, match="expl_noise"):
        RePoConfig(expl_noise=-0.1)
    with pytest.raises(ValueError, match="wm.reward_scale"):
        RePoConfig(wm=WorldModelConfig(reward_scale=0.0))
    with pytest.raises(ValueError, match="action_repeat 30 exceeds max_episode_steps 20"):  # blamed seq_len
        RePoConfig(max_episode_steps=20, action_repeat=30, seq_len=4)


def test_repo_trains_on_chosen_distraction_axes_and_checks_them_before_the_run(tmp_path, capsys):
    from agents.repo.train import RePoConfig

    args = [
        "train",
        "repo",
        "--variant",
        "distractor",
        "--axes",
        "camera,color",
        "--difficulty",
        "0.5",
        "--total-steps",
        "160",
        "--max-episode-steps",
        "80",
        "--prefill",
        "80",
        "--train-every",
        "80",
        "--train-steps",
        "1",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--eval-every",
        "160",
        "--eval-episodes",
        "1",
        "--no-video",
        "--run-dir",
        str(tmp_path),
    ]
    assert cli_main(args) == 0
    run = tmp_path / "repo-reach-v3-distractor-color+camera-d0.5-repo-s0"  # canonical axis order in the name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["axes"] == "color,camera" and summary["difficulty"] == 0.5 and summary["episode_steps"] == 80
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "eval/return" in line]
    assert evals and {"eval/success_rate", "eval/success_final"} <= set(evals[-1])  # any step and last step
    with pytest.raises(ValueError, match="apply to the distractor variant"):
        RePoConfig(variant="pixels", axes="color")
    for bad in (["--axes", "colour"], ["--difficulty", "2"], ["--background", "video"]):
        assert cli_main(args + bad + ["--run-name", "bad"]) != 0
    assert not (tmp_path / "bad").exists(), "a bad option is refused before the run directory exists"


def test_actor_entropy_is_the_tanh_normals_and_falls_when_actions_saturate():
    from torch.distributions import Normal, TanhTransform, TransformedDistribution

    from agents.repo.networks import Actor

    torch.manual_seed(0)
    actor = Actor(8, 3)
    feat = torch.randn(256, 8)
    action, entropy = actor(feat)
    mean, std = actor.net(feat).chunk(2, -1)
    dist = TransformedDistribution(
        Normal(5 * torch.tanh(mean / 5), F.softplus(std + actor.raw_init_std) + 0.1), TanhTransform()
    )
    torch.testing.assert_close(entropy, -dist.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1), rtol=1e-3, atol=1e-3)
    assert 0.7 < (F.softplus(torch.zeros(()) + actor.raw_init_std) + 0.1).item() < 0.9, "initial std 0.8"
    with torch.no_grad():  # push every mean to saturation: the tanh-Normal's entropy must drop
        actor.net[-1].bias[:3] = 20.0
    assert actor(feat)[1].mean() < entropy.mean() - 3
    with pytest.raises(ValueError, match="min_std"):
        Actor(8, 3, min_std=0.5, init_std=0.4)


def test_return_scale_tracks_the_percentile_range_and_never_amplifies():
    from agents.repo.behavior import Behavior

    beh = Behavior(8, 2, BehaviorConfig(return_norm_decay=0.5))
    wide = torch.linspace(0, 100, 1001)
    assert beh.return_scale(wide).item() == pytest.approx(90.0, rel=1e-3)  # P95 - P5 of 0..100
    assert beh.return_scale(wide * 0).item() == pytest.approx(45.0, rel=1e-3)  # moving average, halfway
    for _ in range(30):
        scale = beh.return_scale(wide * 0.001)
    assert scale.item() == 1.0, "small returns are not scaled up"
    assert Behavior(8, 2, BehaviorConfig(return_norm=False)).return_scale(wide).item() == 1.0


def _reference_losses(model: WorldModel, obs, act, rew):
    """RePo's loss terms as the code computed them before the CPU speed-ups (a2efaf1): NCHW convolutions
    with out-of-place ELUs on every frame, the posterior layer on ``cat([h, embed])`` step by step."""
    from torch.distributions import Normal, kl_divergence

    rssm = model.rssm
    images = obs.float().movedim(-1, -3) / 127.5 - 1.0
    x = images.reshape(-1, 3, 64, 64).contiguous()
    for layer in model.encoder.net:
        if isinstance(layer, torch.nn.Conv2d):
            x = F.conv2d(x, layer.weight.contiguous(), layer.bias, stride=2)
        elif isinstance(layer, torch.nn.ELU):
            x = F.elu(x)
    embeds = x.flatten(1).reshape(*images.shape[:2], -1)
    h, z = rssm.initial(embeds.shape[0], embeds.device)
    out = {k: [] for k in ("h", "z", "prior_mean", "prior_std", "post_mean", "post_std")}
    for t in range(act.shape[1]):
        h, _, prior_mean, prior_std = rssm.img_step(h, z, act[:, t])
        post_mean, post_std = rssm._gaussian(rssm.post_net(torch.cat([h, embeds[:, t + 1]], -1)))
        z = post_mean + post_std * torch.randn_like(post_std)
        for k, v in zip(out, (h, z, prior_mean, prior_std, post_mean, post_std)):
            out[k].append(v)
    states = {k: torch.stack(v, 1) for k, v in out.items()}
    rew = rew * model.cfg.reward_scale
    reward_pred = model.reward_head(torch.cat([states["h"], states["z"]], -1)).squeeze(-1)
    sg = lambda d: Normal(d.loc.detach(), d.scale.detach())  # noqa: E731
    post = Normal(states["post_mean"], states["post_std"])
    prior = Normal(states["prior_mean"], states["prior_std"])
    kl = (
        model.cfg.kl_balance * kl_divergence(sg(post), prior).sum(-1).mean()
        + (1 - model.cfg.kl_balance) * kl_divergence(post, sg(prior)).sum(-1).mean()
    )
    return {"reward_nll": -Normal(reward_pred, 1.0).log_prob(rew).mean(), "kl": kl}, states


def test_fast_world_model_matches_the_reference_losses_and_gradients(rng):
    """The channels-last encoder, skipping frame 0 and the split posterior layer change no number:
    same loss terms, same states and the same gradient on every parameter, to float tolerance."""
    import copy

    torch.manual_seed(0)
    model = WorldModel(4, WorldModelConfig(mode="repo", init_beta=0.5))
    reference = copy.deepcopy(model)
    obs, act, rew = _batch(rng, batch=4, length=8)
    torch.manual_seed(1)
    terms, states = model.losses(obs, act, rew)
    torch.manual_seed(1)
    ref_terms, ref_states = _reference_losses(reference, obs, act, rew)
    for key in ("reward_nll", "kl"):
        torch.testing.assert_close(terms[key], ref_terms[key], rtol=1e-5, atol=1e-6)
    for key in ref_states:
        torch.testing.assert_close(states[key], ref_states[key], rtol=1e-5, atol=1e-5)
    model.model_loss(terms).backward()
    (ref_terms["reward_nll"] + reference.log_beta.exp().detach() * (ref_terms["kl"] - 3.0)).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if p.requires_grad and name != "log_beta":
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.encoder.parameters() if p.dim() == 4)


def test_fast_decoder_equals_its_transposed_convolutions():
    """The decoder's first layer runs as a matrix product; the output is that of the layers themselves."""
    from agents.repo.networks import ConvDecoder

    torch.manual_seed(0)
    decoder = ConvDecoder(230)
    feat = torch.randn(2, 3, 230)
    x = decoder.fc(feat.reshape(6, 230))[:, :, None, None].contiguous()
    for layer in decoder.net:
        x = (
            F.conv_transpose2d(x, layer.weight.contiguous(), layer.bias, stride=2)
            if isinstance(layer, torch.nn.ConvTranspose2d)
            else F.elu(x)
        )
    torch.testing.assert_close(decoder(feat), x.reshape(2, 3, 3, 64, 64), rtol=1e-5, atol=1e-5)


def _assert_same_training(a: RePoAgent, b: RePoAgent) -> None:
    for (name, p), q in zip(
        [*a.model.named_parameters(), *a.behavior.named_parameters()], [*b.model.parameters(), *b.behavior.parameters()]
    ):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_update_never_waits_for_the_device(rng, monkeypatch):
    """What a CUDA graph cannot capture, caught on the CPU: reading a device value on the host
    (.item(), bool(), float(), .tolist()) or making a tensor from host data inside the update.
    Adam's own step is exempt: on a GPU it runs capturable, without those (PyTorch's part)."""
    torch.manual_seed(0)
    agents = [
        RePoAgent(4, WorldModelConfig(mode="dreamer"), BehaviorConfig(horizon=3)),
        RePoAgent(4, WorldModelConfig(mode="repo", probe_decoder=True), BehaviorConfig(horizon=3)),
    ]
    batch = _batch(rng, batch=2, length=4)
    inside_adam = []

    def forbidden(name):
        real = getattr(torch.Tensor, name) if name != "tensor" else torch.tensor

        def check(*args, **kwargs):
            if not inside_adam:
                raise AssertionError(f"the update called {name}: it waits for the device or copies host data to it")
            return real(*args, **kwargs)

        return check

    real_step = torch.optim.Adam.step

    def adam_step(self, *args, **kwargs):
        inside_adam.append(1)
        try:
            return real_step(self, *args, **kwargs)
        finally:
            inside_adam.pop()

    monkeypatch.setattr(torch.optim.Adam, "step", adam_step)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    monkeypatch.setattr(torch, "tensor", forbidden("tensor"))
    for agent in agents:
        for _ in range(2):  # the second update also runs the return range's moving average
            metrics = agent._update(*batch)
        with pytest.raises(AssertionError, match="item"):  # the check itself bites
            agent.model.train_step(*batch)
    monkeypatch.undo()
    assert set(metrics) >= {"model/kl", "model/beta", "model/recon", "behavior/return_scale"}


def test_restoring_the_training_state_undoes_updates_and_fresh_optimizer_states(rng):
    """A CUDA graph's warm-up runs real updates; putting the state back (parameters, buffers, optimizer
    moments and step counts, zeroed where the warm-up created them) must leave no trace of them."""
    from agents.repo.cuda_graph import _TrainingState

    obs, act, rew = (x.numpy() for x in _batch(rng, batch=2, length=4))
    torch.manual_seed(0)
    agent = RePoAgent(4, WorldModelConfig(mode="repo"), BehaviorConfig(horizon=3))
    fresh = copy.deepcopy(agent)
    saved = _TrainingState([agent.model, agent.behavior], agent.optimizers())
    for _ in range(2):
        agent.train_step(obs, act, rew)
    saved.restore()
    torch.manual_seed(1)
    a = agent.train_step(obs, act, rew)
    torch.manual_seed(1)
    b = fresh.train_step(obs, act, rew)
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    _assert_same_training(agent, fresh)
    saved = _TrainingState([agent.model, agent.behavior], agent.optimizers())  # now with existing moments
    agent.train_step(obs, act, rew)
    saved.restore()
    torch.manual_seed(2)
    agent.train_step(obs, act, rew)
    torch.manual_seed(2)
    fresh.train_step(obs, act, rew)
    _assert_same_training(agent, fresh)


def test_cuda_graph_option_names_its_need_and_checkpoints_move_between_modes(rng, tmp_path, capsys):
    from agents.repo.cuda_graph import GraphedUpdate, set_capturable

    assert cli_main(["train", "repo", "--cuda-graph", "--device", "cpu", "--run-dir", str(tmp_path / "runs")]) != 0
    assert "--cuda-graph needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was made
    assert cli_main(["train", "repo", "--cuda-graph", "--compile", "--run-dir", str(tmp_path / "runs")]) != 0
    assert "choose --cuda-graph or --compile" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--cuda-graph needs a CUDA device"):
        RePoAgent(4, device="cpu", cuda_graph=True)
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedUpdate(lambda: {}, [], [], torch.device("cpu"))
    obs, act, rew = (x.numpy() for x in _batch(rng, batch=2, length=4))
    agent = RePoAgent(4, beh_cfg=BehaviorConfig(horizon=3))
    agent.train_step(obs, act, rew)
    set_capturable(agent.optimizers(), True)  # as a captured run saves them
    state = agent.state_dict()
    assert all(g["capturable"] for g in state["model_opt"]["param_groups"])
    other = RePoAgent(4, beh_cfg=BehaviorConfig(horizon=3))
    other.load_state_dict(state)
    assert not any(g["capturable"] for opt in other.optimizers() for g in opt.param_groups)
    assert all(s["step"].device.type == "cpu" for opt in other.optimizers() for s in opt.state.values())
    assert np.isfinite(list(other.train_step(obs, act, rew).values())).all()


def test_compiled_update_equals_the_eager_one_on_the_cpu(rng):
    """--compile (the encoder through torch.compile's inductor, the path a CPU can run) gives the eager update's
    metrics and parameters after three updates, to float32 rounding (kernels fuse and reorder sums)."""
    obs, act, rew = (x.numpy() for x in _batch(rng, batch=2, length=4))
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        agent = RePoAgent(4, beh_cfg=BehaviorConfig(horizon=3))
        if compiled:
            agent.model.encoder = torch.compile(agent.model.encoder)
        metrics = [agent.train_step(obs, act, rew) for _ in range(3)]
        runs.append((metrics, torch.cat([p.detach().flatten() for p in agent.model.parameters()])))
    (eager_metrics, eager_params), (compiled_metrics, compiled_params) = runs
    for m, n in zip(eager_metrics, compiled_metrics):
        assert m == pytest.approx(n, rel=1e-5, abs=1e-6)
    assert (eager_params - compiled_params).abs().max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["repo", "dreamer"])
def test_cuda_graph_updates_equal_eager_ones(mode, rng):
    """On a GPU: three replayed updates give the eager updates' metrics, and move the parameters as they do.

    Not bit for bit: cuDNN's convolution gradients are not deterministic, and Adam turns a tiny gradient
    difference on a near-zero gradient into a step of up to its learning rate (on an H100 the encoder's first
    weights differed by more than 1e-5 while every metric agreed to 1e-4). So the parameters' changes are
    compared as vectors: same direction, same length."""
    obs, act, rew = (x.numpy() for x in _batch(rng, batch=4, length=8))
    runs = []
    for graph in (False, True):
        torch.manual_seed(0)
        agent = RePoAgent(4, WorldModelConfig(mode=mode), BehaviorConfig(horizon=5), device="cuda", cuda_graph=graph)
        start = torch.cat([p.detach().flatten().clone() for p in agent.model.parameters()])
        metrics = [agent.train_step(obs, act, rew) for _ in range(3)]
        moved = torch.cat([p.detach().flatten() for p in agent.model.parameters()]) - start
        runs.append((metrics, moved))
    (eager_metrics, eager_moved), (graph_metrics, graph_moved) = runs
    for m, n in zip(eager_metrics, graph_metrics):
        assert m == pytest.approx(n, rel=1e-4, abs=1e-5)
    assert eager_moved.norm() > 0
    assert F.cosine_similarity(graph_moved, eager_moved, dim=0) > 0.99
    assert graph_moved.norm() / eager_moved.norm() == pytest.approx(1.0, abs=0.02)
