"""Few-shot PEARL: K true target labels weight the transfer's reward model against their own.

Measured on 10 task pairs x 3 seeds at K = 20 (`bench/pearl_labels.py`): a reward model fit to the
transferred labels and one fit to the K labels alone are about equally good on average (0.83 and
0.85) but differ per pair by up to 0.1 either way, and picking one of them by cross-validation on
the K labels was a coin toss (a 20-label accuracy has a standard error of ~0.1): worse than the K
labels alone by more than 0.02 on 9 of 30 pair-seeds. Fine-tuning the transfer model on the shots
was worse still at K = 5 (it forgets the transfer: 0.92 -> 0.79 on window-close). Their errors are
nearly independent, so the reward is a weighted sum of the two, each standardised; a member's
weight is how far above chance it orders the shots, 2 * accuracy - 1 floored at 0 (the transfer
model is judged on all K shots, which it never saw; the shots model by k-fold cross-validation).
An inverted transfer (accuracy below 0.5) gets weight 0, so the shots alone decide. Same runs:
0.86 at K = 20, worse than the K labels alone by more than 0.02 on 3 of 30 (at most 0.027).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from embodied.reward_models import RewardEnsemble, RewardTrainConfig, preference_accuracy, train_reward_model
from embodied.teacher import Preferences

MEMBERS = ("transfer", "shots")  # the order of RewardEnsemble.members


def _folds(k: int, folds: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(k), folds)


def member_weight(accuracy: float) -> float:
    """How far above chance a member orders the shots (0 at or below chance, or when unknown)."""
    return 0.0 if np.isnan(accuracy) else max(2.0 * accuracy - 1.0, 0.0)


def fit_few_shot(make_model: Callable[[], torch.nn.Module], obs: np.ndarray, act: np.ndarray, transferred: Preferences,
                 shots: Preferences, cfg: RewardTrainConfig, shot_epochs: int = 200, folds: int = 5,
                 device: torch.device | str = "cpu", seed: int = 0, log=None) -> tuple[RewardEnsemble, dict]:
    """The transfer model and the shots model, weighted by their accuracy on ``shots``; returns
    ``(ensemble, scores)`` (the ensemble standardised over the segments ``obs``, ``act``)."""
    if len(shots) == 0:
        raise ValueError("few-shot reward fitting needs at least one target label")
    shot_cfg = RewardTrainConfig(**{**cfg.__dict__, "epochs": shot_epochs})

    def fit(prefs: Preferences, train_cfg: RewardTrainConfig, train_log=None) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = make_model()
        train_reward_model(model, obs, act, prefs, train_cfg, device, seed, log=train_log)
        return model

    transfer = fit(transferred, cfg, log)
    accuracy = {"transfer": preference_accuracy(transfer, obs, act, shots, device), "shots": float("nan")}
    if len(shots) >= 2:
        everything = np.arange(len(shots))
        scores = [preference_accuracy(fit(shots.subset(np.setdiff1d(everything, held)), shot_cfg), obs, act,
                                      shots.subset(held), device)
                  for held in _folds(len(shots), min(folds, len(shots)), seed) if len(held)]
        scores = [s for s in scores if not np.isnan(s)]
        accuracy["shots"] = float(np.mean(scores)) if scores else float("nan")
    weights = [member_weight(accuracy[m]) for m in MEMBERS]
    if sum(weights) == 0:  # neither orders the shots better than chance: the true labels are all we trust
        weights = [0.0, 1.0]
    ensemble = RewardEnsemble([transfer, fit(shots, shot_cfg)], weights).to(device).standardise(obs, act)
    return ensemble, {**{f"accuracy_{m}": accuracy[m] for m in MEMBERS},
                      **{f"weight_{m}": float(w) for m, w in zip(MEMBERS, ensemble.weights)}}
