"""PEARL end to end: collect -> source labels -> CPA transfer -> reward model -> IQL -> eval + video.

    python -m agents.pearl.train --source-task button-press-v3 --target-task button-press-wall-v3
    embodied train pearl --labels oracle --reward-model plain ...   # the comparison arms

Every stage writes its output into the run directory and is skipped when that output exists,
and IQL checkpoints periodically, so ``--resume`` continues a killed run where it stopped.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
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
from agents.pearl.few_shot import MEMBERS, SHARE_RULES, fit_few_shot
from agents.pearl.iql import IQL, IQLConfig, TransitionBuffer, transitions_from_episodes
from embodied.reward_models import (
    GaussianRewardModel,
    RewardEnsemble,
    RewardModel,
    RewardTrainConfig,
    preference_accuracy,
    train_reward_model,
)
from embodied.checkpoint import load_arrays, load_weights, save_arrays, save_checkpoint
from embodied.config import RunOptions, check_choice, check_positive, parse_config
from embodied.device import check_fits, memory_bytes, resolve_device
from embodied.data import NoiseSchedule, collect, load_episodes, sample_segments, write_dataset
from embodied.data.collect import collection_bytes
from embodied.errors import EmbodiedError
from embodied.evaluation import evaluate
from embodied.make import check_state_task, make_env
from embodied.nets import actor_critic_bytes
from embodied.policies import save_policy
from embodied.runs import Run, Stages, progress, start_run
from embodied.safe_io import load_json
from embodied.teacher import Preferences, ScriptedTeacher, check_teacher_options, sample_pairs
from embodied.video import record_episode, tile, write_mp4

LABEL_SOURCES = ("cpa", "nn", "oracle", "shots")
CONFIDENCE_KEYS = ("starts_agreement", "structure_agreement", "shot_agreement")
REWARD_MODELS = {"gaussian": GaussianRewardModel, "plain": RewardModel}  # --reward-model -> class
# How IQL learned before its flags existed (the paper's: all episodes, per-step reward, temperature 3):
# what a saved config or record without one of these keys did; run names mark departures from it.
ORIGINAL_IQL = {"iql_top": 1.0, "iql_temperature": 3.0, "iql_episode_credit": 0.0}


@dataclass
class PearlConfig(RunOptions):
    """PEARL: zero-shot cross-task preference transfer + robust reward learning + IQL."""

    source_task: str = "button-press-v3"  # Meta-World task with scripted (source) preference labels
    target_task: str = "button-press-wall-v3"  # Meta-World task whose labels are transferred (zero-shot)
    source_data: Path | None = field(
        default=None, metadata={"help": "dataset file for the source task (else collected)"}
    )
    target_data: Path | None = field(
        default=None, metadata={"help": "dataset file for the target task (else collected)"}
    )
    episodes: int = 60  # episodes collected per task when no dataset is given
    max_steps: int = 200  # steps per collected episode
    noise: tuple[float, ...] = field(
        default=(0.0, 0.3, 1.0, 3.0),
        metadata={"help": "Gaussian action-noise stds of the data collector, cycled over episodes"},
    )
    epsilon: tuple[float, ...] = field(
        default=(0.0, 0.1, 0.5, 1.0),
        metadata={"help": "random-action probabilities of the data collector, cycled over episodes"},
    )
    segment_length: int = 25  # steps per trajectory segment that the teacher compares
    segments: int = 1000  # segments cut per task
    source_queries: int = 5000  # labelled source segment pairs
    target_queries: int = 5000  # target segment pairs that receive transferred labels
    teacher_gamma: float = 1.0  # scripted teacher's discount over a segment (1: plain return; <1: myopic)
    teacher_flip_prob: float = 0.0  # probability that the scripted teacher flips a label (label noise)
    teacher_equal_threshold: float = 0.0  # return difference below which the teacher says 'equal' (0.5 label)
    labels: str = field(
        default="cpa",
        metadata={
            "help": (
                "target labels: cpa (transfer), nn (nearest-neighbour transfer), oracle (scripted target "
                "teacher), shots (the --few-shot-labels alone: the few-shot baseline)"
            )
        },
    )
    few_shot_labels: int = field(
        default=0,
        metadata={
            "help": (
                "K scripted target labels: they orient the transfer and weight its reward model against one fit "
                "to them (0: zero-shot)"
            )
        },
    )
    shot_epochs: int = field(
        default=200,
        metadata={
            "help": (
                "epochs of the reward model fit to the few-shot labels alone (the few-shot pair's second member, "
                "or --labels shots)"
            )
        },
    )
    few_shot_rule: str = field(
        default="stacking",
        metadata={
            "help": (
                "the transfer's share of the few-shot reward (agents/pearl/few_shot.py: stacking, stacking-pure, "
                "stacking-oriented)"
            )
        },
    )
    gw: GWConfig = field(default_factory=GWConfig)
    reward_model: str = field(default="gaussian", metadata={"help": "gaussian (RRL) or plain"})
    reward_epochs: int = 30  # epochs of reward-model training
    kl_weight: float = 0.01  # weight of the Gaussian reward model's KL term (RRL)
    iql_steps: int = 30000  # IQL gradient steps on the relabelled target data
    iql_temperature: float = field(
        default=3.0,
        metadata={
            "help": "IQL's advantage temperature (0: behaviour cloning of the data IQL learns from, %BC with --iql-top)"
        },
    )
    iql_top: float = field(
        default=1.0,
        metadata={
            "help": (
                "share of the target episodes, the best by learned return, that IQL learns from (1: all; 0.25: "
                "the top quarter, return-filtered as in %BC)"
            )
        },
    )
    iql_episode_credit: float = field(
        default=1.0,
        metadata={
            "help": (
                "share of each step's learned reward that IQL sees replaced by its episode's mean (1: each "
                "episode's learned return spread evenly over its steps, uniform return redistribution; 0: the "
                "learned reward per step, as in the paper)"
            )
        },
    )
    iql: IQLConfig = field(default_factory=IQLConfig)
    eval_every: int = 10000  # evaluate the policy every this many steps
    eval_episodes: int = 10  # episodes per evaluation
    checkpoint_every: int = 5000  # save a checkpoint every this many steps
    RESUMABLE = RunOptions.RESUMABLE + ("iql_steps", "eval_every", "eval_episodes", "checkpoint_every")
    LEGACY_DEFAULTS = ORIGINAL_IQL  # runs from before the IQL options learned like this
    RENAMED = {f"gw_{name}": f"gw.{name}" for name in ("method", "epsilon", "alpha", "rank")}  # now GWConfig's

    def __post_init__(self):
        for name in ("source_data", "target_data"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().exists():
                raise ValueError(f"--{name.replace('_', '-')} {path}: no such dataset file")  # before a run dir exists
        check_choice("labels", self.labels, LABEL_SOURCES)
        from envs.experts import has_scripted_expert
        from envs.metaworld_env import TASKS

        fused = self.labels == "cpa" and self.gw.method == "lowrank" and self.gw.alpha < 1  # with arm features
        for side in ("source", "target"):  # a task named without a dataset: its scripted expert collects one
            task = getattr(self, f"{side}_task")
            check_state_task(task, f"--{side}-task", "PEARL")  # its segments met in a traceback, after collecting
            if getattr(self, f"{side}_data") is not None:
                continue
            if not has_scripted_expert(f"embodied/{task}"):
                raise ValueError(
                    f"--{side}-task {task}: PEARL collects its data with the task's scripted expert, and {task} "
                    f"has none (Meta-World tasks and point-hold do); pass --{side}-data with a dataset of it"
                )
            if fused and task not in TASKS:
                raise ValueError(
                    f"--gw.alpha {self.gw.alpha} fuses the plan with arm features, which need Meta-World's "
                    f"39-d state observations, and --{side}-task {task} has others: use --gw.alpha 1 "
                    "(structure only)"
                )
        NoiseSchedule(self.noise, self.epsilon)  # its own checks, before the collection that would meet them
        check_choice("reward_model", self.reward_model, REWARD_MODELS)
        check_choice("few_shot_rule", self.few_shot_rule, SHARE_RULES)
        check_positive(
            self,
            "shot_epochs",
            "episodes",
            "max_steps",
            "segment_length",
            "segments",
            "source_queries",
            "target_queries",
            "reward_epochs",
            "eval_episodes",
            "checkpoint_every",
            "eval_every",
        )
        if self.segments < 2:
            raise ValueError(f"segments must be >= 2 (the teacher labels pairs of segments), got {self.segments}")
        if self.few_shot_labels < 0:
            raise ValueError(f"few_shot_labels must be >= 0, got {self.few_shot_labels}")
        if self.labels == "shots" and self.few_shot_labels < 1:
            raise ValueError("--labels shots learns from the few-shot labels alone: give --few-shot-labels K > 0")
        if not 0 < self.iql_top <= 1:
            raise ValueError(f"iql_top must be in (0, 1], got {self.iql_top}")
        if not 0 <= self.iql_episode_credit <= 1:
            raise ValueError(f"iql_episode_credit must be in [0, 1], got {self.iql_episode_credit}")
        if self.iql_temperature < 0:
            raise ValueError(f"iql_temperature must be >= 0, got {self.iql_temperature}")
        self.iql = dataclasses.replace(self.iql, temperature=self.iql_temperature)  # one option, --iql-temperature
        if self.iql_steps < 0:
            raise ValueError(f"iql_steps must be >= 0, got {self.iql_steps}")
        if self.segment_length > self.max_steps:
            raise ValueError(f"segment_length {self.segment_length} exceeds max_steps {self.max_steps}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
        check_teacher_options(self)


def run_pearl(cfg: PearlConfig) -> dict:
    check_transfer_fits(cfg)  # bad input first: what cannot run is refused before the run directory is made
    given = given_episodes(cfg)
    check_sizes_fit(cfg, given)
    shots = f"-k{cfg.few_shot_labels}" if cfg.few_shot_labels else ""
    run, device = start_run(
        cfg, f"pearl-{cfg.source_task}-to-{cfg.target_task}-{cfg.labels}{shots}-{cfg.reward_model}-s{cfg.seed}"
    )
    teacher = ScriptedTeacher(cfg.teacher_gamma, cfg.teacher_equal_threshold, cfg.teacher_flip_prob)

    src_eps = given.get("source") or _episodes(cfg, cfg.source_task, run, "source", seed=cfg.seed * 10_000)
    tgt_eps = given.get("target") or _episodes(cfg, cfg.target_task, run, "target", seed=cfg.seed * 10_000 + 5_000)
    src, tgt, rng = run_segments(src_eps, tgt_eps, cfg.segment_length, cfg.segments, cfg.seed)

    resumed = run.load() or {}  # global RNGs and metric rows as at the last checkpoint
    stages = Stages(run, resumed)  # finished stages: their outputs are reused, the others redone

    def make_labels() -> dict:
        print(f"labelling target pairs with {cfg.labels} ...")
        return target_labels(cfg, src, tgt, teacher, rng, device)

    lab = stages.output(
        "labels", run.path("labels.npz"), make_labels, save_arrays, lambda path: load_labels(path, len(tgt))
    )
    print(
        f"target label accuracy ({cfg.labels}): {float(lab['accuracy']):.3f}; {len(lab['label'])} labelled pairs "
        f"({cfg.few_shot_labels} few-shot)"
    )
    report_confidence(lab)
    stages.finish(
        "labels",
        {
            "labels/accuracy": float(lab["accuracy"]),
            "labels/seconds": float(lab["seconds"]),
            **{f"labels/{k}": float(lab[k]) for k in CONFIDENCE_KEYS if not np.isnan(lab[k])},
        },
    )
    prefs = Preferences(lab["first"], lab["second"], lab["label"])

    obs_dim, act_dim = tgt.observations.shape[-1], tgt.actions.shape[-1]
    reward = new_reward_model(cfg.reward_model, cfg.labels, cfg.few_shot_labels, obs_dim, act_dim)

    def load_reward(path: Path):
        reward.load_state_dict(load_weights(path))
        return reward

    reward = stages.output(
        "reward",
        run.path("reward.pt"),
        lambda: fit_reward(cfg, reward, tgt, prefs, run, device),
        lambda path, model: save_checkpoint(path, model.state_dict()),
        load_reward,
    )
    reward_acc = heldout_accuracy(
        reward,
        tgt_eps,
        cfg.segment_length,
        cfg.seed,
        ScriptedTeacher(cfg.teacher_gamma, cfg.teacher_equal_threshold),
        device,
    )
    print(f"reward model held-out preference accuracy vs target teacher: {reward_acc:.3f}")
    stages.finish("reward", {"reward/heldout_accuracy": reward_acc})

    policy_stats = train_iql(
        cfg, run, reward, tgt_eps, obs_dim, act_dim, device, resumed if "iql" in resumed else None, stages
    )
    summary = {
        "label_accuracy": float(lab["accuracy"]),
        "label_seconds": float(lab["seconds"]),
        **{f"transfer_{k}": float(lab[k]) for k in CONFIDENCE_KEYS if not np.isnan(lab[k])},
        "reward_heldout_accuracy": reward_acc,
        **policy_stats,
    }
    run.finish(summary)
    return summary


def load_labels(path: Path, segments: int) -> dict:
    """A finished labels stage's output, checked against the run's target segments."""
    lab = load_arrays(path, ("first", "second", "label", "accuracy", "seconds", *CONFIDENCE_KEYS))
    check_stored_labels(lab, segments)
    return lab


def fit_reward(cfg: PearlConfig, reward, tgt, prefs: Preferences, run: Run, device):
    """The reward stage: ``reward`` fit to the target labels, or with few-shot labels the weighted pair of a
    transfer model and a model of the K labels alone (``fit_few_shot``), which is returned instead."""
    print(f"training {cfg.reward_model} reward model ...")
    train_cfg = RewardTrainConfig(epochs=cfg.reward_epochs, kl_weight=cfg.kl_weight)
    log = lambda e, m: run.logger.log(e, m)  # noqa: E731
    k = cfg.few_shot_labels
    if not trains_few_shot_ensemble(cfg.labels, k):
        if cfg.labels == "shots":
            train_cfg.epochs = cfg.shot_epochs
        train_reward_model(reward, tgt.observations, tgt.actions, prefs, train_cfg, device, cfg.seed, log=log)
        return reward
    obs_dim, act_dim = tgt.observations.shape[-1], tgt.actions.shape[-1]
    fitted, scores = fit_few_shot(
        lambda: REWARD_MODELS[cfg.reward_model](obs_dim, act_dim),
        tgt.observations,
        tgt.actions,
        prefs.subset(slice(0, len(prefs) - k)),
        prefs.subset(slice(len(prefs) - k, None)),
        train_cfg,
        cfg.shot_epochs,
        device=device,
        seed=cfg.seed,
        log=log,
        rule=cfg.few_shot_rule,
    )
    print(
        f"few-shot reward: transfer model x {scores['weight_transfer']:.2f} + {k}-label model x "
        f"{scores['weight_shots']:.2f} (accuracy on the {k} labels: "
        f"transfer {scores['accuracy_transfer']:.2f}, "
        f"labels alone {scores['accuracy_shots']:.2f} cross-validated)"
    )
    run.logger.log(
        0, {f"reward/few_shot_{name}": v for name, v in scores.items() if isinstance(v, float) and not np.isnan(v)}
    )
    return fitted


TRANSFER_MATRICES = 4  # dense segments x segments float64 matrices the transfer holds at its peak, at least


def check_transfer_fits(cfg: PearlConfig) -> None:
    """Refuse a label transfer whose dense matrices cannot fit the device's memory (``--segments 100000`` asked
    for ~320 GB and failed deep in ``torch.cdist``, or swapped the machine), before anything runs."""
    if cfg.labels not in ("cpa", "nn"):  # the other label sources compare no segments across tasks
        return
    device = resolve_device(cfg.device)
    have = memory_bytes(device)
    need = TRANSFER_MATRICES * cfg.segments**2 * 8
    if need > have:
        raise EmbodiedError(
            f"--segments {cfg.segments}: the transfer holds {cfg.segments} x {cfg.segments} matrices, at least "
            f"{need / 2**30:.0f} GiB, more than the {have / 2**30:.0f} GiB of {device.type} memory here; use fewer "
            "segments (the studies use 1000)"
        )


PAIR_BYTES = 1024  # memory per labelled pair through labelling and reward training: ~630 measured at 3M pairs


def check_sizes_fit(cfg: PearlConfig, given: dict) -> None:
    """Refuse, before the run directory, sizes whose arrays cannot fit in memory: the episodes collected of each
    task (held until written, then trained on), the labelled pairs, IQL's networks and an IQL batch with its
    activations. At absurd values (``--target-queries 100000000``, ``--iql.batch-size 100000000``) each took every
    byte of the machine."""
    task_envs = {task: make_env(f"embodied/{task}") for task in (cfg.source_task, cfg.target_task)}
    collected = sum(
        collection_bytes(task_envs[task], cfg.episodes, cfg.max_steps)
        for side, task in (("source", cfg.source_task), ("target", cfg.target_task))
        if side not in given
    )
    target = task_envs[cfg.target_task]
    networks, batch = actor_critic_bytes(
        target.observation_space.shape[0], target.action_space.shape[0], cfg.iql.hidden, cfg.iql.batch_size
    )
    for env in task_envs.values():
        env.close()
    pairs = cfg.source_queries + cfg.target_queries + cfg.few_shot_labels
    device = resolve_device(cfg.device)
    check_fits(
        [
            (f"--episodes {cfg.episodes} (--max-steps {cfg.max_steps})", "the collected episodes", collected, "cpu"),
            (
                f"--source-queries {cfg.source_queries}, --target-queries {cfg.target_queries} and --few-shot-labels "
                f"{cfg.few_shot_labels}",
                f"{pairs} labelled pairs",
                pairs * PAIR_BYTES,
                "cpu",
            ),
            (f"--iql.hidden {cfg.iql.hidden}", "IQL's networks", networks, device),
            (f"--iql.batch-size {cfg.iql.batch_size}", "an IQL batch", batch, device),
        ]
    )


def given_episodes(cfg: PearlConfig) -> dict[str, list]:
    """The episodes of ``--source-data``/``--target-data`` by side, checked to be of their task and to hold a
    segment (vector observations, an episode of at least ``segment_length`` steps)."""
    given = {}
    for side, task, data in (
        ("source", cfg.source_task, cfg.source_data),
        ("target", cfg.target_task, cfg.target_data),
    ):
        if data is None:
            continue
        episodes = load_episodes(data, env_id=f"embodied/{task}")
        if not episodes or max(len(e) for e in episodes) < cfg.segment_length:
            longest = max((len(e) for e in episodes), default=0)
            raise EmbodiedError(
                f"--{side}-data {data}: no episode has --segment-length {cfg.segment_length} steps (longest {longest})"
            )
        if isinstance(episodes[0].observations, dict) or episodes[0].observations.ndim != 2:
            raise EmbodiedError(f"--{side}-data {data}: segments need vector (state) observations; these are not")
        given[side] = episodes
    return given


def _episodes(cfg: PearlConfig, task: str, run: Run, name: str, seed: int):
    """The run's own episodes of ``task`` (collected by the scripted expert, or as collected before a resume)."""
    env_id = f"embodied/{task}"
    path = run.path(f"{name}.hdf5")
    if path.exists():
        return load_episodes(path, env_id=env_id)
    from envs.experts import scripted_expert

    env = make_env(env_id)
    bar = progress(total=cfg.episodes, desc=f"collect {task}")
    episodes = collect(
        env,
        scripted_expert(env),
        cfg.episodes,
        NoiseSchedule(cfg.noise, cfg.epsilon),
        seed=seed,
        max_steps=cfg.max_steps,
        progress=lambda _: bar.update(1),
    )
    bar.close()
    write_dataset(
        path,
        episodes,
        env_id,
        env.observation_space,
        env.action_space,
        metadata={"noise": list(cfg.noise), "epsilon": list(cfg.epsilon), "max_steps": cfg.max_steps},
    )
    return episodes


def target_labels(cfg: PearlConfig, src, tgt, teacher: ScriptedTeacher, rng: np.random.Generator, device) -> dict:
    """Source labels, then target labels by the chosen method, with their accuracy against the teacher.

    With ``few_shot_labels = K``, K target pairs get scripted labels (the same teacher, noise
    included); they calibrate the transfer and are appended to the returned pairs. ``accuracy`` is
    measured on the transferred pairs only, so it compares across K.
    """
    s_first, s_second = sample_pairs(len(src), cfg.source_queries, rng)
    source = teacher.label(src.rewards, s_first, s_second, rng)
    t_first, t_second = sample_pairs(len(tgt), cfg.target_queries, rng)
    truth = (
        ScriptedTeacher(teacher.gamma, teacher.equal_threshold).label(tgt.rewards, t_first, t_second).label
    )  # reporting only
    shots = None
    if cfg.few_shot_labels:
        shots = teacher.label(tgt.rewards, *sample_pairs(len(tgt), cfg.few_shot_labels, rng), rng)
    seconds = 0.0
    confidence = {key: float("nan") for key in CONFIDENCE_KEYS}
    if cfg.labels == "oracle":
        labels = teacher.label(tgt.rewards, t_first, t_second, rng).label
    elif cfg.labels == "shots":
        t_first, t_second, labels, truth = t_first[:0], t_second[:0], np.zeros(0), np.zeros(0)
    elif cfg.labels == "nn":
        plan = nearest_neighbour_coupling(segment_features(src, False), segment_features(tgt, False))
        labels, _ = transfer_labels(plan, source, t_first, t_second)
    else:
        result = cross_task_transfer(src, source, tgt, t_first, t_second, cfg.gw, device, shots)
        labels, seconds = result.labels, result.seconds
        confidence.update({k: v for k, v in result.confidence.items() if k in CONFIDENCE_KEYS})
    accuracy = label_accuracy(labels, truth) if len(truth) else float("nan")
    if shots is not None:
        t_first, t_second = np.concatenate([t_first, shots.first]), np.concatenate([t_second, shots.second])
        labels = np.concatenate([labels, shots.label])
    return {
        "first": t_first,
        "second": t_second,
        "label": labels,
        "accuracy": accuracy,
        "seconds": seconds,
        **{k: np.float64(v) for k, v in confidence.items()},
    }


def report_confidence(lab: dict) -> None:
    """One line on how far the transfer can be trusted (see ``cross_task_transfer``)."""
    starts, structure, shots = (float(lab[k]) for k in CONFIDENCE_KEYS)
    if np.isnan(starts):
        return
    line = f"transfer confidence: GW starts agree on {starts:.0%} of target pairs, plain GW on {structure:.0%}"
    if not np.isnan(shots):
        line += f"; transfer agrees with {shots:.0%} of the few-shot labels"
    if min(starts, structure) < 0.6:
        line += " (low: the tasks' structure alone is ambiguous here, the arm features decided the orientation)"
    print(line)


def check_stored_labels(lab: dict, segments: int) -> None:
    """``labels.npz`` as ``target_labels`` writes it (``ValueError`` otherwise): pairs of indices into the ``segments``
    target segments, a label in [0, 1] for each, and the reported numbers as scalars."""
    first, second, label = (np.asarray(lab[k]) for k in ("first", "second", "label"))
    if not (first.ndim == second.ndim == label.ndim == 1 and len(first) == len(second) == len(label)):
        raise ValueError(
            f"first, second and label are not three arrays of one length: {first.shape}, {second.shape}, {label.shape}"
        )
    if first.dtype.kind not in "iu" or second.dtype.kind not in "iu":
        raise ValueError(f"segment indices are {first.dtype} / {second.dtype}, not integers")
    if len(first) and (min(first.min(), second.min()) < 0 or max(first.max(), second.max()) >= segments):
        raise ValueError(f"segment indices outside [0, {segments})")
    if not np.all(np.isfinite(label)) or np.any((label < 0) | (label > 1)):
        raise ValueError("labels outside [0, 1]")
    if any(np.asarray(lab[k]).shape != () for k in ("accuracy", "seconds", *CONFIDENCE_KEYS)):
        raise ValueError("accuracy, seconds or a confidence entry is not a single number")


def trains_few_shot_ensemble(labels: str, few_shot_labels: int) -> bool:
    """Whether a run's reward is ``fit_few_shot``'s weighted pair: few-shot labels beside a transfer."""
    return few_shot_labels > 0 and labels in ("cpa", "nn")


def new_reward_model(
    reward_model: str, labels: str, few_shot_labels: int, obs_dim: int, act_dim: int
) -> torch.nn.Module:
    """The (untrained) reward model a run with these settings trains and checkpoints, to load its ``reward.pt`` into."""
    cls = REWARD_MODELS[reward_model]
    if trains_few_shot_ensemble(labels, few_shot_labels):
        return RewardEnsemble([cls(obs_dim, act_dim) for _ in MEMBERS])
    return cls(obs_dim, act_dim)


def load_run_config(run_dir: Path) -> dict:
    """A finished run's config, its dataset paths resolved (shared data, else the run's own), for the benches
    that probe a run."""
    cfg = load_json(Path(run_dir) / "config.json", what="run config")
    if not isinstance(cfg, dict) or cfg.get("reward_model") not in REWARD_MODELS:
        raise ValueError(f"{run_dir}: config.json is not a PEARL run's config")
    for task in ("source", "target"):
        cfg[f"{task}_data"] = cfg.get(f"{task}_data") or str(Path(run_dir) / f"{task}.hdf5")
    return cfg


def load_trained_reward(run_dir: Path) -> tuple[dict, list, torch.nn.Module]:
    """A finished run's config, its target episodes and its trained reward model (eval mode), for the
    benches that probe a run's reward."""
    cfg = load_run_config(run_dir)
    episodes = load_episodes(cfg["target_data"])
    reward = new_reward_model(
        cfg["reward_model"],
        cfg["labels"],
        cfg.get("few_shot_labels", 0),
        episodes[0].observations.shape[-1],
        episodes[0].actions.shape[-1],
    )
    reward.load_state_dict(load_weights(run_dir / "reward.pt"))
    return cfg, episodes, reward.eval()


def run_segments(src_eps, tgt_eps, segment_length: int, count: int, seed: int):
    """The source, then the target segments a run of ``seed`` cuts, and the generator that goes on to draw
    its label pairs (the benches redraw a finished run's segments with it)."""
    rng = np.random.default_rng(seed)
    src = sample_segments(src_eps, segment_length, count, rng)
    return src, sample_segments(tgt_eps, segment_length, count, rng), rng


def heldout_accuracy(
    reward: torch.nn.Module, tgt_eps, segment_length: int, seed: int, noise_free: ScriptedTeacher, device
) -> float:
    """The reward model's preference accuracy against the noise-free target teacher on fresh segments and
    pairs (500 and 2000, drawn from ``seed``), the same for every run of that seed."""
    held = sample_segments(tgt_eps, segment_length, 500, np.random.default_rng(seed + 1))
    first, second = sample_pairs(len(held), 2000, np.random.default_rng(seed + 2))
    return preference_accuracy(
        reward, held.observations, held.actions, noise_free.label(held.rewards, first, second), device
    )


def relabel(reward: torch.nn.Module, episodes, device) -> list[np.ndarray]:
    """Learned mean reward for every transition, standardised over the dataset."""
    reward.to(device).eval()
    out = []
    for ep in episodes:
        obs = torch.as_tensor(ep.observations[:-1], dtype=torch.float32, device=device)
        act = torch.as_tensor(ep.actions, dtype=torch.float32, device=device)
        out.append(reward.mean_reward(obs, act).cpu().numpy())
    return standardise(out)


def standardise(rewards: list[np.ndarray]) -> list[np.ndarray]:
    flat = np.concatenate(rewards)
    return [(r - flat.mean()) / (flat.std() + 1e-8) for r in rewards]


def episode_credit(rewards: list[np.ndarray], share: float) -> list[np.ndarray]:
    """Each step's reward moved the ``share`` of the way to its episode's mean reward (episode sums kept).

    Why: a preference-trained reward ranks whole episodes far better than single steps (see
    ``best_episodes``); spreading the episode's learned return evenly over its steps (uniform return
    redistribution, as in IRCR, Gangwani et al. 2020) gives IQL that trustworthy signal on every step
    while it still learns from all the data, where ``best_episodes`` drops the rest.
    """
    return [(1 - share) * r + share * r.mean() for r in rewards]


def best_episodes(rewards: list[np.ndarray], share: float) -> np.ndarray:
    """Indices of the ``share`` of episodes with the highest learned return (at least one), best first.

    Why: a learned reward that orders whole episodes well can still be wrong step by step (the
    preference loss only fixes segment sums, and transferred labels are near coin flips on close
    pairs), and IQL's advantages read it step by step; the episode sums average those errors out.
    """
    returns = np.array([r.sum() for r in rewards])
    keep = max(1, int(round(share * len(rewards))))
    return np.argsort(-returns, kind="stable")[:keep]


def iql_dataset(reward: torch.nn.Module, episodes, device, top: float = 1.0, credit: float = 0.0):
    """The episodes IQL learns from and their rewards as it sees them: the learned reward (``relabel``),
    moved the share ``credit`` toward each episode's mean (``episode_credit``), then the share ``top``
    of the episodes with the highest learned return (``best_episodes``), restandardised."""
    rewards = relabel(reward, episodes, device)
    if credit > 0:
        rewards = standardise(episode_credit(rewards, credit))
    if top < 1:
        keep = best_episodes(rewards, top)
        episodes, rewards = [episodes[i] for i in keep], standardise([rewards[i] for i in keep])
    return episodes, rewards


def train_iql(
    cfg: PearlConfig,
    run: Run,
    reward,
    episodes,
    obs_dim: int,
    act_dim: int,
    device,
    state: dict | None,
    stages: Stages,
) -> dict:
    """IQL on what ``iql_dataset`` makes of the target data under ``cfg``'s ``iql_top`` and
    ``iql_episode_credit``; ``state``: the checkpoint to continue from (None: start)."""
    everything = episodes
    episodes, rewards = iql_dataset(reward, episodes, device, cfg.iql_top, cfg.iql_episode_credit)
    kept: dict = {}
    if cfg.iql_top < 1:
        kept = {
            "iql_episodes": len(episodes),
            "iql_episodes_success": float(np.mean([bool(e.success) for e in episodes])),
            "iql_all_success": float(np.mean([bool(e.success) for e in everything])),
        }  # reporting only, in the summary and (once) in metrics.jsonl, where study records keep it
        if state is None:
            run.logger.log(0, {f"iql/{key.removeprefix('iql_')}": value for key, value in kept.items()})
        print(
            f"IQL learns from the best {len(episodes)} of {len(everything)} episodes by learned return "
            f"(their true success rate: {kept['iql_episodes_success']:.2f}; all episodes: "
            f"{kept['iql_all_success']:.2f})"
        )
    buffer = TransitionBuffer(*transitions_from_episodes(episodes, rewards), device)
    agent = IQL(obs_dim, act_dim, cfg.iql, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, evals = 0, []  # evals: (step, success rate) of every evaluation so far
    if state is not None:
        with run.restoring():  # what does not fit is one error line naming the checkpoint
            agent.load_state_dict(state["iql"])
            gen.set_state(state["generator"])
            step, evals = int(state["step"]), [(int(s), float(rate)) for s, rate in state.get("evals", [])]
            if step < 0:
                raise ValueError(f"it is at IQL step {step}")
        run.restore_rngs()  # the IQL built above drew from them
        print(f"resuming IQL from step {step}")
    env = make_env(f"embodied/{cfg.target_task}")
    policy = agent.policy
    last_eval: dict = {}
    bar = progress(total=cfg.iql_steps, initial=step, desc="IQL")

    def checkpoint() -> None:
        run.save(
            {
                "iql": agent.state_dict(),
                "generator": gen.get_state(),
                "step": step,
                "evals": evals,
                "stages": stages.finished,
            }
        )

    while step < cfg.iql_steps:
        run.stop(step, checkpoint)
        metrics = agent.update(*buffer.sample(agent.cfg.batch_size, gen))
        step += 1
        bar.update(1)
        if step % 1000 == 0:
            run.logger.log(step, metrics)
        if step % cfg.eval_every == 0 or step == cfg.iql_steps:
            last_eval = evaluate(env, policy.act, cfg.eval_episodes, seed=10_000 + cfg.seed, max_steps=cfg.max_steps)
            run.logger.log(
                step,
                {
                    "eval/success_rate": last_eval["success_rate"],  # at any step (Meta-World's)
                    "eval/success_final": last_eval["success_final"],
                    "eval/return": last_eval["return_mean"],
                },
            )
            evals.append((step, float(last_eval["success_rate"])))
            bar.write(
                f"step {step}: success {last_eval['success_rate']:.2f} return {last_eval['return_mean']:.1f} "
                f"over {last_eval['episode_steps']:.0f} steps"
            )
        if step % cfg.checkpoint_every == 0 or step == cfg.iql_steps:
            checkpoint()
    bar.close()
    if not last_eval:
        last_eval = evaluate(env, policy.act, cfg.eval_episodes, seed=10_000 + cfg.seed, max_steps=cfg.max_steps)
    save_policy(run.path("policy.pt"), policy.cpu(), agent.policy_kwargs)
    policy.to(device)
    if cfg.video:
        venv = make_env(f"embodied/{cfg.target_task}", render_mode="rgb_array", render_width=128, render_height=128)
        frames = [record_episode(venv, policy.act, seed=20_000 + i, max_steps=cfg.max_steps)[0] for i in range(4)]
        write_mp4(run.path("videos", "eval.mp4"), tile(frames), fps=30)
    return {
        **kept,
        "success_rate": last_eval["success_rate"],
        "return_mean": last_eval["return_mean"],
        "episode_steps": last_eval["episode_steps"],  # what return_mean sums over
        "iql_steps": step,
        "success_late_mean": late_mean(evals, cfg.iql_steps, last_eval["success_rate"]),
        "success_curve": [list(e) for e in evals],
    }


def late_mean(evals: list[tuple[int, float]], steps: int, fallback: float) -> float:
    """Mean success of the evaluations in the second half of ``steps`` (``fallback`` if there are none): one
    evaluation swings with IQL's seed and the step it lands on; the second half's mean is steadier."""
    late = [s for at, s in evals if at > steps / 2]
    return float(np.mean(late)) if late else float(fallback)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_config(PearlConfig, argv, prog="embodied train pearl")
    run_pearl(cfg)
    return 0


if __name__ == "__main__":
    from embodied.cli import main as cli_main

    sys.exit(cli_main(["train", "pearl", *sys.argv[1:]]))
