"""PARL / A-PARL (Chakraborty et al., ICLR 2024) with PEBBLE and a SAC oracle in the same loop.

    embodied train parl --task button-press-v3 --method parl     # bilevel: direct + implicit term
    embodied train parl --method pebble                           # implicit term off
    embodied train parl --method sac                              # oracle: SAC on the true reward

Loop (A-PARL): random seed steps, then PEBBLE's unsupervised pre-training (SAC on a k-NN
state-entropy reward, ``--unsup-steps``; the critic is reset when it ends); then SAC steps on the
learned reward, warm-started throughout; every ``query_every`` steps, preferences on fresh segment
pairs (PARL: from the *current* policy's recent episodes; PEBBLE, as published: from its last 100
episodes of every kind, ``--query-episodes``); the reward ensemble is fit to all labels by
Bradley-Terry (the direct term, = PEBBLE); PARL then adds the term through the policy's trajectory
distribution,

    -(grad^2_{nu theta} g) H^-1 grad_theta U,

with U the BT loss on the fresh pairs (its theta-gradient by the score function, since the pairs
are sampled from pi_theta), g the lower-level policy-gradient surrogate -E[log pi(a|s) A_nu(s,a)]
on recent on-policy data (A_nu: reward-to-go under r_nu, minus its mean), and H^-1 by conjugate
gradient / Neumann series on Hessian-vector products, or I/damping. H defaults to the policy's
Fisher matrix (Hessian of the KL to the current policy, as natural-gradient methods use): the
surrogate's own Hessian, estimated from a few thousand samples, is indefinite and CG then stops
at its first step (measured). The implicit step moves the learned reward on the policy's recent
transitions by ``--implicit-ratio`` times as much as the session's direct update moved it (the raw
term's norm swings over orders of magnitude, and a step of a fixed parameter norm moved the reward
where the policy is by up to several times the direct update). Then the replay buffer is relabelled
with the new reward.

The learned reward is a function of the state alone by default (``--reward-input state``), as
Meta-World's true reward is: fit to segment preferences, an r(s, a) model also varies with the
action at a fixed state, about as much as over the states the policy visits, and SAC then collects
reward by its choice of action instead of by the task (``agents.parl.diagnostics`` logs what shows it).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from agents.parl.diagnostics import (
    cosine,
    preference_accuracy,
    recent_transitions,
    reward_agreement,
    session_shift,
)
from agents.parl.exploration import StateEntropyReward
from agents.parl.feedback import RecentEpisodes, merge, query
from agents.parl.hypergrad import SOLVERS, flat, implicit_term
from agents.parl.sac import SAC, ReplayBuffer, SACConfig
from embodied.checkpoint import load_module_state
from embodied.config import RunOptions, check_choice, check_intervals, check_positive, parse_config
from embodied.device import check_fits, resolve_device
from embodied.evaluation import evaluate
from embodied.make import check_state_task, make_env, task_name
from embodied.nets import actor_critic_bytes, check_finite
from embodied.policies import save_policy
from embodied.reward_models import RewardModel, RewardTrainConfig, train_reward_model
from embodied.runs import progress, start_run
from embodied.teacher import ScriptedTeacher, check_teacher_options
from embodied.video import record_episode, tile, write_mp4

METHODS = ("parl", "pebble", "sac")
# PEBBLE's reward model keeps the last 100 episodes of every kind and cuts its queries from them (B-Pref's
# RewardModel max_size); PARL's upper level is an expectation over the current policy's trajectories.
PEBBLE_QUERY_EPISODES = 100


@dataclass
class ParlConfig(RunOptions):
    """PARL: bilevel preference-based policy alignment on top of SAC (PEBBLE and SAC oracle as baselines)."""

    task: str = "button-press-v3"  # Meta-World task (without the embodied/ prefix)
    method: str = field(default="parl", metadata={"help": "parl, pebble, or sac (oracle on the true reward)"})
    total_steps: int = 100_000  # environment steps of the whole run
    max_episode_steps: int | None = field(
        default=None,
        metadata={"help": "steps per episode (None: the task's own limit, 500 on Meta-World, 30 on point-hold)"},
    )
    seed_steps: int = 1000  # random-action steps before learning starts
    unsup_steps: int = field(
        default=2000,
        metadata={
            "help": "PEBBLE's unsupervised pre-training: steps of SAC on a "
            "k-NN state-entropy reward after the seed steps, before the first query (parl and pebble; "
            "0: off)"
        },
    )
    unsup_k: int = 5  # k of the k-NN state-entropy estimate
    feedback_budget: int = 1000  # total preference labels the teacher gives
    queries_per_session: int = 50  # labels asked per feedback session
    query_every: int = 5000  # environment steps between feedback sessions
    segment_length: int = 50  # steps per segment that the teacher compares
    selection: str = field(default="disagreement", metadata={"help": "uniform or disagreement"})
    ensemble_size: int = 3  # reward models in the ensemble
    reward_input: str = field(
        default="state",
        metadata={
            "help": "state: r(s), as the true reward is (the default); "
            "state-action: r(s, a), as PEBBLE's code has it (the policy can exploit its action input)"
        },
    )
    reward_epochs: int = 50  # epochs of reward training per session
    reward_lr: float = 3e-4  # reward-model learning rate
    reward_stop_accuracy: float = field(
        default=0.0,
        metadata={
            "help": "end a session's reward training once a member orders more than this fraction of all labels "
            "as the teacher did (PEBBLE's code: 0.97, --reward-epochs then the most); 0: always --reward-epochs"
        },
    )
    recent_episodes: int = 10  # latest episodes: the current policy's (diagnostics, implicit term, PARL's queries)
    query_episodes: int = field(
        default=0,
        metadata={
            "help": "latest episodes the queries are cut from (0: the method's own: pebble the last "
            f"{PEBBLE_QUERY_EPISODES}, as PEBBLE's code keeps, random and pre-training episodes included; parl the "
            "current policy's, --recent-episodes)"
        },
    )
    hypergrad_solver: str = field(default="cg", metadata={"help": "cg, neumann or identity"})
    hypergrad_curvature: str = field(
        default="fisher",
        metadata={
            "help": "H for the inverse: fisher (PSD, Gauss-Newton) or surrogate (exact Hessian of g, often indefinite)"
        },
    )
    hypergrad_damping: float = 0.1  # damping added to the curvature before inversion
    hypergrad_iters: int = 10  # CG or Neumann iterations of the inverse-HVP
    hypergrad_samples: int = 2048  # on-policy samples for the lower-level surrogate
    implicit_ratio: float = field(
        default=0.25,
        metadata={
            "help": "size of PARL's implicit (hypergradient) step as a fraction of the same session's direct "
            "(Bradley-Terry) update, measured as --implicit-measure says"
        },
    )
    implicit_measure: str = field(
        default="reward",
        metadata={
            "help": "what --implicit-ratio compares: reward (how far each update moves the learned reward on the "
            "policy's recent transitions, mean absolute change) or parameters (the updates' parameter norms)"
        },
    )
    implicit_direction: str = field(
        default="hypergradient",
        metadata={
            "help": "hypergradient (PARL); random: a random direction of the same size, the control for whether the "
            "hypergradient's direction carries information"
        },
    )
    teacher_flip_prob: float = 0.0  # probability that the scripted teacher flips a label (label noise)
    teacher_gamma: float = 1.0  # scripted teacher's discount over a segment (1: plain return)
    teacher_equal_threshold: float = 0.0  # return difference below which the teacher says 'equal'
    sac: SACConfig = field(default_factory=SACConfig)
    eval_every: int = 10_000  # evaluate every this many environment steps
    eval_episodes: int = 10  # episodes per evaluation
    checkpoint_every: int = 10_000  # save a checkpoint every this many environment steps (at episode ends)
    RESUMABLE = RunOptions.RESUMABLE + ("total_steps", "eval_every", "eval_episodes", "checkpoint_every")
    RENAMED = {"sac_hidden": "sac.hidden", "batch_size": "sac.batch_size"}  # now SACConfig's
    # The studies' scales (bench/studies/parl*.toml): a Meta-World task in 10k env steps of 200-step episodes,
    # where the oracle solves drawer-close; point-hold in 4k env steps of its own 30-step episodes.
    PRESETS = {
        "cpu-small": dict(
            total_steps=10_000,
            max_episode_steps=200,
            seed_steps=1000,
            unsup_steps=1000,
            query_every=1000,
            queries_per_session=50,
            feedback_budget=400,
            reward_epochs=20,
            **{"sac.batch_size": 128},
            eval_every=1000,
            eval_episodes=5,
            checkpoint_every=2500,
        ),
        "point-hold": dict(
            task="point-hold-v0",  # the preset alone trains the task it is sized for; --task picks the variant
            total_steps=4000,
            seed_steps=300,
            unsup_steps=300,
            query_every=300,
            queries_per_session=30,
            feedback_budget=300,
            segment_length=10,
            reward_epochs=20,
            **{"sac.hidden": 128, "sac.batch_size": 128},
            eval_every=300,
            eval_episodes=5,
            checkpoint_every=1000,
        ),
    }
    # what runs from before an option existed did: a resume must keep it
    LEGACY_DEFAULTS = {"implicit_measure": "parameters", "reward_input": "state-action", "query_episodes": 10}

    def __post_init__(self):
        check_choice("method", self.method, METHODS)
        check_state_task(task_name(self.task), "--task", "PARL")  # SAC's networks failed on frames mid-run
        check_choice("hypergrad_solver", self.hypergrad_solver, SOLVERS)
        check_choice("hypergrad_curvature", self.hypergrad_curvature, ("fisher", "surrogate"))
        check_choice("selection", self.selection, ("uniform", "disagreement"))
        check_choice("reward_input", self.reward_input, ("state", "state-action"))
        if self.selection == "disagreement" and self.ensemble_size < 2 and self.method != "sac":
            # one member has no spread: every score was NaN and the pick arbitrary, with a warning per session
            raise ValueError("selection disagreement needs --ensemble-size of at least 2 (or --selection uniform)")
        check_choice("implicit_measure", self.implicit_measure, ("reward", "parameters"))
        check_choice("implicit_direction", self.implicit_direction, ("hypergradient", "random"))
        if self.implicit_ratio < 0:
            raise ValueError(f"implicit_ratio must be >= 0, got {self.implicit_ratio}")
        check_intervals(self, hypergrad_damping="[0, inf)")
        if self.hypergrad_solver == "identity" and self.hypergrad_damping == 0:  # failed at PARL's first session
            raise ValueError("hypergrad_solver identity takes H^-1 as I / hypergrad_damping: it needs a damping > 0")
        if not 0 <= self.reward_stop_accuracy <= 1:
            raise ValueError(f"reward_stop_accuracy must be in [0, 1] (0: off), got {self.reward_stop_accuracy}")
        if self.query_episodes < 0:
            raise ValueError(f"query_episodes must be >= 0 (0: the method's own), got {self.query_episodes}")
        if self.max_episode_steps is None:  # saved resolved, like query_episodes below
            self.max_episode_steps = gym.spec(f"embodied/{task_name(self.task)}").max_episode_steps
        if self.query_episodes == 0:  # saved resolved, so that config.json says what ran
            self.query_episodes = PEBBLE_QUERY_EPISODES if self.method == "pebble" else self.recent_episodes
        check_positive(
            self,
            "total_steps",
            "max_episode_steps",
            "queries_per_session",
            "query_every",
            "segment_length",
            "ensemble_size",
            "reward_epochs",
            "reward_lr",
            "recent_episodes",
            "hypergrad_iters",
            "hypergrad_samples",
            "eval_every",
            "eval_episodes",
            "checkpoint_every",
        )
        if self.seed_steps < 0 or self.feedback_budget < 0 or self.unsup_steps < 0:
            raise ValueError("seed_steps, unsup_steps and feedback_budget must be >= 0")
        check_positive(self, "unsup_k")
        if self.method != "sac" and self.unsup_steps > 0 and self.seed_steps <= self.unsup_k:
            raise ValueError(
                f"PEBBLE's pre-training measures each state's distance to its k-th nearest neighbour among the random "
                f"steps': seed_steps ({self.seed_steps}) must exceed unsup_k ({self.unsup_k}), or --unsup-steps 0"
            )
        check_teacher_options(self)
        if self.segment_length > self.max_episode_steps:
            hint = " (point-hold's: --preset point-hold sets its study's scale)" if "point-hold" in self.task else ""
            raise ValueError(
                f"segment_length {self.segment_length} exceeds max_episode_steps {self.max_episode_steps}{hint}"
            )


def run_parl(cfg: ParlConfig) -> dict:
    env = make_env(f"embodied/{cfg.task}", max_episode_steps=cfg.max_episode_steps)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    check_sizes_fit(cfg, obs_dim, act_dim)  # before the run directory
    run, device = start_run(cfg, f"parl-{cfg.task}-{cfg.method}-s{cfg.seed}")
    eval_env = make_env(f"embodied/{cfg.task}", max_episode_steps=cfg.max_episode_steps)
    env.action_space.seed(cfg.seed)
    sac = SAC(obs_dim, act_dim, cfg.sac, device)
    reward = LearnedReward(obs_dim, act_dim, cfg.ensemble_size, device, use_action=cfg.reward_input == "state-action")
    buffer = ReplayBuffer(obs_dim, act_dim, cfg.total_steps)
    history = RecentEpisodes(max(cfg.recent_episodes, cfg.query_episodes))  # the pool the queries are cut from
    teacher = ScriptedTeacher(cfg.teacher_gamma, cfg.teacher_equal_threshold, cfg.teacher_flip_prob)
    intrinsic = StateEntropyReward(cfg.unsup_k)
    rng = np.random.default_rng(cfg.seed)
    step, episode, feedback, store, curve = 0, 0, 0, None, []

    state = run.load()
    if state is not None:
        with run.restoring():
            sac.load_state_dict(state["sac"])
            reward.load_state_dict(state["reward"])
            buffer.load_state_dict(state["buffer"])
            history.load_state_dict(state["recent"], obs_dim, act_dim)
            if "intrinsic" in state:
                intrinsic.stats.load_state_dict(state["intrinsic"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            step, episode, feedback = (int(state[k]) for k in ("step", "episode", "feedback"))
            store, curve = state["store"], list(state["curve"])
            if store is not None and (store["obs"].shape[2:] != (obs_dim,) or store["act"].shape[2:] != (act_dim,)):
                raise ValueError(
                    f"its labelled segments have obs {store['obs'].shape} and act {store['act'].shape}, "
                    f"this task obs size {obs_dim}, act size {act_dim}"
                )
        print(f"resuming at env step {step} (episode {episode}, {feedback} labels used)")

    def checkpoint() -> None:
        run.save(
            {
                "sac": sac.state_dict(),
                "reward": reward.state_dict(),
                "buffer": buffer.state_dict(),
                "recent": history.state_dict(),
                "intrinsic": intrinsic.stats.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "episode": episode,
                "feedback": feedback,
                "store": store,
                "curve": curve,
            }
        )

    learned = cfg.method != "sac"
    learn_start = cfg.seed_steps + (cfg.unsup_steps if learned else 0)  # first query; PEBBLE's pre-training before
    obs, _ = env.reset(seed=cfg.seed * 100_000 + episode)
    ep_obs, ep_act, ep_rew = [obs], [], []
    next_checkpoint = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    bar = progress(total=cfg.total_steps, initial=step, desc=f"{cfg.method} {cfg.task}")
    while step < cfg.total_steps:
        run.stop(step, checkpoint)  # Ctrl-C: save and stop here
        action = env.action_space.sample() if step < cfg.seed_steps else sac.actor.act(obs, deterministic=False)
        next_obs, true_r, terminated, truncated, info = env.step(action)
        buffer.add(obs, action, true_r, next_obs, float(terminated), float(info.get("success", 0.0)))
        if learned:
            buffer.rew[(buffer.pos - 1) % buffer.capacity] = reward(obs[None], np.asarray(action, np.float32)[None])[0]
        ep_obs.append(next_obs)
        ep_act.append(action)
        ep_rew.append(true_r)
        obs = next_obs
        step += 1
        bar.update(1)

        if (
            learned
            and feedback < cfg.feedback_budget
            and step >= learn_start
            and len(history.episodes) > 0
            and (step - learn_start) % cfg.query_every == 0
        ):
            first_session = store is None
            num = min(cfg.queries_per_session, cfg.feedback_budget - feedback)
            store, metrics = feedback_session(cfg, sac, reward, buffer, history, teacher, store, num, rng)
            feedback += num
            if first_session and cfg.unsup_steps > 0:
                sac.reset_critic()  # PEBBLE: the Q-values of the intrinsic reward are of no use for the task
            run.logger.log(step, {"feedback/labels": feedback, **metrics})

        if step >= cfg.seed_steps:
            batch = buffer.sample(cfg.sac.batch_size, rng, device)
            if learned and step < learn_start:  # PEBBLE's unsupervised phase: state-entropy reward
                batch = (*batch[:2], intrinsic(batch[3], buffer.obs[: buffer.size], rng), *batch[3:])
            metrics = sac.update(*batch)
            if step % 1000 == 0 or step % cfg.eval_every == 0:
                run.logger.log(step, metrics)

        if step % cfg.eval_every == 0 or step == cfg.total_steps:
            result = evaluate(
                eval_env, sac.actor.act, cfg.eval_episodes, seed=10_000_000 + cfg.seed, max_steps=cfg.max_episode_steps
            )
            curve.append((step, result["success_rate"], result["return_mean"]))
            run.logger.log(
                step,
                {
                    "eval/success_rate": result["success_rate"],
                    "eval/success_final": result["success_final"],
                    "eval/return": result["return_mean"],
                },
            )  # success_rate: at any step (Meta-World's)
            if learned and store is not None and len(history.episodes) > 0:
                run.logger.log(step, reward_agreement(reward, buffer, history.latest(cfg.recent_episodes), rng))
            bar.write(
                f"step {step}: success {result['success_rate']:.2f} true return {result['return_mean']:.1f} "
                f"over {result['episode_steps']:.0f} steps, labels {feedback}"
            )

        if terminated or truncated:
            history.add(np.stack(ep_obs), np.stack(ep_act), np.asarray(ep_rew))
            run.logger.log(
                step, {"train/episode_true_return": float(np.sum(ep_rew)), "train/success": float(info["success"])}
            )
            episode += 1
            if step >= next_checkpoint:
                checkpoint()
                next_checkpoint += cfg.checkpoint_every
            obs, _ = env.reset(seed=cfg.seed * 100_000 + episode)
            ep_obs, ep_act, ep_rew = [obs], [], []
    bar.close()
    checkpoint()
    save_policy(run.path("policy.pt"), sac.actor, sac.actor_kwargs)
    if cfg.video:
        venv = make_env(
            f"embodied/{cfg.task}",
            render_mode="rgb_array",
            render_width=128,
            render_height=128,
            max_episode_steps=cfg.max_episode_steps,
        )
        frames = [record_episode(venv, sac.actor.act, seed=20_000_000 + i)[0] for i in range(4)]
        write_mp4(run.path("videos", "eval.mp4"), tile(frames), fps=30)
    summary = {
        "task": cfg.task,
        "method": cfg.method,
        "seed": cfg.seed,
        "feedback": feedback,
        "final_success_rate": curve[-1][1],
        "curve": curve,  # (env step, success rate, return over an episode of episode_steps steps)
        "episode_steps": cfg.max_episode_steps,
    }
    run.finish(summary)
    return summary


class LearnedReward:
    """The reward ensemble with a running standardisation, as SAC sees it."""

    def __init__(self, obs_dim: int, act_dim: int, size: int, device, use_action: bool = True):
        self.members = [RewardModel(obs_dim, act_dim, use_action=use_action).to(device) for _ in range(size)]
        self.device = device
        self.mean, self.std = 0.0, 1.0

    def params(self) -> list[torch.Tensor]:
        return [p for m in self.members for p in m.parameters()]

    def raw(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Ensemble-mean reward, differentiable in the members' parameters."""
        return torch.stack([m(obs, act) for m in self.members]).mean(0)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        out = self.raw(torch.as_tensor(obs, device=self.device), torch.as_tensor(act, device=self.device))
        return ((out - self.mean) / self.std).cpu().numpy()

    @torch.no_grad()
    def relabel(self, buffer: ReplayBuffer, chunk: int = 8192) -> None:
        """Recompute the standardisation on the buffer and rewrite every stored reward."""
        n = buffer.size
        raw = np.concatenate(
            [
                self.raw(
                    torch.as_tensor(buffer.obs[i : min(i + chunk, n)], device=self.device),
                    torch.as_tensor(buffer.act[i : min(i + chunk, n)], device=self.device),
                )
                .cpu()
                .numpy()
                for i in range(0, n, chunk)
            ]
        )
        self.standardise_by(raw)
        buffer.rew[:n] = (raw - self.mean) / self.std

    def standardise_by(self, raw: np.ndarray) -> None:
        """Rewards are shown to SAC in standard deviations of ``raw`` (the ensemble's rewards on some data)."""
        self.mean, self.std = float(raw.mean()), float(raw.std() + 1e-6)

    def state_dict(self) -> dict:
        return {"members": [m.state_dict() for m in self.members], "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        if len(state["members"]) != len(self.members):
            raise ValueError(f"the reward has {len(state['members'])} members, this run's ensemble {len(self.members)}")
        for m, s in zip(self.members, state["members"]):
            load_module_state(m, s)
        self.mean, self.std = float(state["mean"]), float(state["std"])
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"the reward's standardisation is mean {self.mean}, std {self.std}")


def bt_losses(reward: LearnedReward, obs: torch.Tensor, act: torch.Tensor, prefs) -> torch.Tensor:
    """Per-pair Bradley-Terry loss of the ensemble mean reward ``(Q,)``."""
    first, second = torch.as_tensor(prefs.first), torch.as_tensor(prefs.second)
    ret = reward.raw(obs, act).sum(-1)
    logits = ret[first] - ret[second]
    label = torch.as_tensor(prefs.label, dtype=torch.float32, device=logits.device)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, label, reduction="none")


def implicit_step(
    cfg: ParlConfig,
    sac: SAC,
    reward: LearnedReward,
    recent: RecentEpisodes,
    obs_q: np.ndarray,
    act_q: np.ndarray,
    prefs,
    rng: np.random.Generator,
    direct_norm: float,
    direct_move: float,
    on_policy: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[torch.Tensor, dict[str, float]]:
    """PARL's extra upper-level step: the hypergradient term through the policy's trajectory distribution.

    Its size is ``cfg.implicit_ratio`` times the session's Bradley-Terry update: of ``direct_move``, how far
    that update moved the reward on the policy's recent transitions (``implicit_measure`` "reward"), or of its
    parameter norm ``direct_norm`` ("parameters"). ``on_policy``: those transitions' observations and actions,
    and the reward on them after the direct update. Returns the update applied to the reward parameters (flat)
    and its metrics.
    """
    device = sac.device
    theta = list(sac.actor.parameters())
    nu = reward.params()
    obs_t = torch.as_tensor(obs_q, device=device)
    act_t = torch.as_tensor(act_q, device=device)

    # grad_theta U by the score function: the query pairs were sampled from pi_theta
    with torch.no_grad():
        losses = bt_losses(reward, obs_t, act_t, prefs)
    weight = losses - losses.mean()
    n, length = obs_t.shape[:2]
    seg_logp = sac.actor.log_prob(obs_t.reshape(n * length, -1), act_t.reshape(n * length, -1)).view(n, length).sum(-1)
    pair_logp = seg_logp[torch.as_tensor(prefs.first)] + seg_logp[torch.as_tensor(prefs.second)]
    upper_grad_theta = flat(torch.autograd.grad((weight * pair_logp).mean(), theta), theta).detach()

    # lower-level surrogate on recent on-policy data: -E[log pi(a|s) * A_nu(s, a)]
    obs_l, act_l, discount = [], [], []
    for obs, act, _ in recent.episodes:
        obs_l.append(obs[: len(act)])
        act_l.append(act)
        t = np.arange(len(act))
        discount.append(np.triu(0.99 ** (t[None, :] - t[:, None]).clip(min=0)))
    pick = [
        rng.choice(len(a), size=min(len(a), max(1, cfg.hypergrad_samples // len(act_l))), replace=False) for a in act_l
    ]

    def lower() -> torch.Tensor:
        terms = []
        for obs, act, disc, idx in zip(obs_l, act_l, discount, pick):
            o, a = torch.as_tensor(obs, device=device), torch.as_tensor(act, device=device)
            r = reward.raw(o, a)
            to_go = torch.as_tensor(disc, dtype=r.dtype, device=device)[idx] @ r  # reward-to-go at sampled steps
            terms.append((sac.actor.log_prob(o[idx], a[idx]), to_go))
        logp = torch.cat([t[0] for t in terms])
        adv = torch.cat([t[1] for t in terms])
        adv = (adv - adv.mean()) / (adv.detach().std() + 1e-6)
        return -(logp * adv).mean()

    curvature = None
    if cfg.hypergrad_curvature == "fisher":
        states = torch.as_tensor(np.concatenate([o[i] for o, i in zip(obs_l, pick)]), device=device)
        with torch.no_grad():
            mean_old, std_old = sac.actor._dist(states)
        curvature = lambda: sac.actor.kl_from(states, mean_old, std_old)  # noqa: E731
    indirect = implicit_term(
        lower,
        theta,
        nu,
        upper_grad_theta,
        cfg.hypergrad_solver,
        cfg.hypergrad_damping,
        cfg.hypergrad_iters,
        curvature_loss=curvature,
    )
    # The raw term's norm swings over orders of magnitude between sessions (the inverse curvature is
    # ill-conditioned); its direction is what the hypergradient adds. Its step is a fixed fraction of
    # the direct update, so the two parts of the upper-level step keep comparable weight.
    norm = step_norm = torch.sqrt(sum((g**2).sum() for g in indirect)).item()
    if cfg.implicit_direction == "random":  # the control: sized below as the hypergradient's step would be
        indirect = [
            torch.as_tensor(rng.standard_normal(tuple(g.shape)), dtype=g.dtype, device=g.device) for g in indirect
        ]
        step_norm = torch.sqrt(sum((g**2).sum() for g in indirect)).item()
    scale = cfg.implicit_ratio * direct_norm / (step_norm + 1e-12)
    obs_r, act_r, start = on_policy
    origin = [p.detach().clone() for p in nu]

    def step(size: float) -> float:
        """Set the reward to start + size * (-indirect); how far that moved it on the recent transitions."""
        with torch.no_grad():
            for p, g, p0 in zip(nu, indirect, origin):
                p.copy_(p0 - size * g)
        return float(np.mean(np.abs(reward(obs_r, act_r) - start)))

    move = step(scale)
    if cfg.implicit_measure == "reward":
        # A parameter step of a given norm can move the reward where the policy is by much more than the direct
        # update did (measured: PARL's sessions moved it up to 3x as far as PEBBLE's): bound it where it matters.
        # The move is nearly linear in the step; two secant corrections land within a few percent of the target.
        target = cfg.implicit_ratio * direct_move
        for _ in range(3):
            if move <= 0 or target <= 0 or abs(move - target) <= 0.02 * target:
                break
            scale *= target / move
            move = step(scale)
        if target <= 0:
            scale, move = 0.0, step(0.0)
    applied = -scale * flat(indirect, nu)
    return applied, {
        "parl/indirect_norm": norm,
        "parl/upper_grad_theta_norm": upper_grad_theta.norm().item(),
        "diag/implicit_to_direct_move": move / direct_move if direct_move > 0 else float("nan"),
    }


def feedback_session(
    cfg: ParlConfig,
    sac: SAC,
    reward: LearnedReward,
    buffer: ReplayBuffer,
    history: RecentEpisodes,
    teacher: ScriptedTeacher,
    store: dict | None,
    num: int,
    rng: np.random.Generator,
):
    """Query ``num`` labels on segments of the last ``query_episodes`` episodes, refit the reward (PARL: plus the
    implicit term), relabel the buffer. Returns the grown label store and the session's diagnostics."""
    device = sac.device
    recent = history.latest(cfg.recent_episodes)  # the current policy's
    pool = history.latest(cfg.query_episodes)
    obs_r, act_r, _ = recent_transitions(recent)
    before = reward(obs_r, act_r)
    nu_before = flat(reward.params(), reward.params()).detach().clone()
    obs_q, act_q, prefs = query(pool, teacher, reward.members, num, cfg.segment_length, cfg.selection, rng, device)
    new_accuracy = preference_accuracy(reward, obs_q, act_q, prefs) if store is not None else np.nan  # unseen pairs
    metrics = {"diag/pref_accuracy_new": new_accuracy}
    store = merge(store, obs_q, act_q, prefs)
    labels = len(store["prefs"])
    epochs = []
    for i, member in enumerate(reward.members):
        losses = train_reward_model(
            member,
            store["obs"],
            store["act"],
            store["prefs"],
            RewardTrainConfig(epochs=cfg.reward_epochs, lr=cfg.reward_lr, stop_accuracy=cfg.reward_stop_accuracy),
            device,
            seed=cfg.seed * 100 + i + labels,
        )
        epochs.append(len(losses))
    metrics["reward/epochs"] = float(np.mean(epochs))  # fewer than --reward-epochs where the stop rule ended it
    check_finite("the learned reward", "lower --reward-lr", reward_parameters(reward))  # not SAC's fault later
    if cfg.method == "parl":
        direct = flat(reward.params(), reward.params()).detach() - nu_before
        after_direct = reward(obs_r, act_r)
        direct_move = float(np.mean(np.abs(after_direct - before)))  # in the same (old) standardisation
        applied, implicit = implicit_step(
            cfg,
            sac,
            reward,
            recent,
            obs_q,
            act_q,
            prefs,
            rng,
            direct.norm().item(),
            direct_move,
            (obs_r, act_r, after_direct),
        )
        # the implicit step is sized by the direct one, so a --reward-lr that nearly diverges makes it diverge
        check_finite("the learned reward", "lower --implicit-ratio or --reward-lr", reward_parameters(reward))
        metrics.update(implicit)
        metrics["diag/implicit_cos_direct"] = cosine(applied, direct)
        metrics["diag/implicit_to_direct_norm"] = float(applied.norm() / (direct.norm() + 1e-12))
    reward.relabel(buffer)
    metrics["diag/pref_accuracy_train"] = preference_accuracy(reward, store["obs"], store["act"], store["prefs"])
    metrics.update(session_shift(before, reward(obs_r, act_r)))
    metrics.update(reward_agreement(reward, buffer, recent, rng))
    return store, metrics


def check_sizes_fit(cfg: ParlConfig, obs_dim: int, act_dim: int) -> None:
    """Refuse sizes whose arrays cannot fit in memory, before anything runs: the replay buffer (``--total-steps``,
    preallocated and copied into each checkpoint), the reward ensemble (``--ensemble-size``), SAC's networks
    (``--sac.hidden``) and a SAC batch with its activations (``--sac.batch-size``)."""
    with torch.device("meta"):  # shapes only
        member = sum(p.numel() for p in RewardModel(obs_dim, act_dim).parameters())
    networks, batch = actor_critic_bytes(obs_dim, act_dim, cfg.sac.hidden, cfg.sac.batch_size)
    buffer = 2 * cfg.total_steps * (2 * obs_dim + act_dim + 4) * 4  # float32 arrays, and each checkpoint's copy
    device = resolve_device(cfg.device)
    check_fits(
        [
            (f"--total-steps {cfg.total_steps}", "the replay buffer", buffer, "cpu"),
            (f"--ensemble-size {cfg.ensemble_size}", "the reward models", cfg.ensemble_size * member * 4 * 4, device),
            (f"--sac.hidden {cfg.sac.hidden}", "SAC's networks", networks, device),
            (f"--sac.batch-size {cfg.sac.batch_size}", "a SAC batch", batch, device),
        ]
    )


def reward_parameters(reward) -> list[tuple[str, torch.Tensor]]:
    """The ensemble's parameters by name (``member0.net.0.weight``, ...)."""
    return [(f"member{i}.{name}", p) for i, m in enumerate(reward.members) for name, p in m.named_parameters()]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(ParlConfig, sys.argv[1:] if argv is None else argv, prog="embodied train parl")
    run_parl(cfg)
    return 0


if __name__ == "__main__":
    from embodied.cli import main as cli_main

    sys.exit(cli_main(["train", "parl", *sys.argv[1:]]))
