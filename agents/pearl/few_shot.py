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

That linear weight is too flat at large K (K = 100: the transfer kept 0.45 of the mix on average while
the shots model was the better member by 0.07), so the default rule is now stacking: the transfer's
share is the posterior mean of the mixing weight under the shots' Bradley-Terry likelihood
(``stacking_weight``), still 0 for a transfer at or below chance on the shots. Same 10 pairs x 3 seeds,
both rules on the same members (`bench/results/pearl_fewshot_stacking.md`): K = 100 0.904 vs 0.891
(+0.013 [+0.007, +0.018]), never worse than the labels alone by more than 0.02 (was 10 of 30); K = 20
0.861 vs 0.862; K = 5 0.807 vs 0.806.

Session 12 replayed other rules on the same members (`bench/pearl_fewshot_rules.py`,
`bench/results/pearl_fewshot_rules.md`): a soft switch-off (``stacking-oriented``) +0.003 [-0.005, +0.014]
at K = 5 and nothing at K = 20 / 100; a prior on the share pooled from other pairs' shots, nothing. The best
share in hindsight would add 0.044 / 0.012 / 0.006 at K = 5 / 20 / 100: past K = 20 the weighting is within
about 0.01 of what any share of these two members could give. The default stays.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.stats
import torch

from embodied.reward_models import RewardEnsemble, RewardTrainConfig, preference_accuracy, train_reward_model
from embodied.teacher import Preferences

MEMBERS = ("transfer", "shots")  # the order of RewardEnsemble.members


def _folds(k: int, folds: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(k), folds)


def member_weight(accuracy: float) -> float:
    """How far above chance a member orders the shots (0 at or below chance, or when unknown)."""
    return 0.0 if np.isnan(accuracy) else max(2.0 * accuracy - 1.0, 0.0)


@torch.no_grad()
def standardised_returns(model: torch.nn.Module, obs: np.ndarray, act: np.ndarray, device) -> np.ndarray:
    """Segment returns of the model's reward standardised per step over all segments, as ``RewardEnsemble``
    scores them: differences of these are what the ensemble's weights mix."""
    model.to(device).eval()
    reward = model.mean_reward(
        torch.as_tensor(obs, dtype=torch.float32, device=device),
        torch.as_tensor(act, dtype=torch.float32, device=device),
    )
    return ((reward - reward.mean()) / reward.std().clamp_min(1e-8)).sum(-1).cpu().numpy()


SHARE_GRID = np.linspace(0.0, 1.0, 51)


def share_likelihood(
    transfer_diff: np.ndarray, shots_diff: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(w, log p(shots | w))`` on ``SHARE_GRID``: the shots' Bradley-Terry likelihood of the mix with transfer
    share ``w``, its temperature ``c`` integrated out under a log-uniform prior (``stacking_weight``)."""
    y = np.asarray(labels, float)
    w = SHARE_GRID[:, None, None]
    c = np.logspace(-3, 2, 61)[None, :, None]
    logit = c * (w * transfer_diff + (1.0 - w) * shots_diff)
    loglik = (y * -np.logaddexp(0.0, -logit) + (1.0 - y) * -np.logaddexp(0.0, logit)).sum(-1)  # (w, c)
    return SHARE_GRID, np.logaddexp.reduce(loglik, axis=1) - np.log(c.size)


def stacking_weight(
    transfer_diff: np.ndarray, shots_diff: np.ndarray, labels: np.ndarray, log_prior: np.ndarray | None = None
) -> float:
    """Posterior mean of the transfer's share ``w`` of the reward, given the shots.

    Each shot ``q`` is a Bradley-Terry observation of ``c * (w * transfer_diff[q] + (1 - w) * shots_diff[q])``
    (the members' standardised return differences on its two segments; the shots model's are out-of-fold,
    so it is never judged on a label it learnt). The prior is uniform on ``w`` and on ``log c`` (the
    temperature is integrated out). With few shots the posterior is broad and its mean stays near an even
    mix; with many it moves to the better member or to the best mix of the two, where ``2 acc - 1`` on
    both members' accuracies weights them nearly equally (measured at K = 100: 0.35-0.51 for a transfer
    member that was ~0.07 worse than the shots model).
    """
    w, marginal = share_likelihood(transfer_diff, shots_diff, labels)
    if log_prior is not None:  # on SHARE_GRID (bench/pearl_fewshot_rules.py: a prior pooled from other pairs)
        marginal = marginal + log_prior
    posterior = np.exp(marginal - marginal.max())
    return float((posterior * w).sum() / posterior.sum())


def ordered_right(transfer_diff: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """``(hits, n)``: how many of the ``n`` decided shots (label not 0.5) the transfer orders as they are."""
    labels = np.asarray(labels, float)
    decided = labels != 0.5
    return int(np.sum((np.asarray(transfer_diff)[decided] > 0) == (labels[decided] > 0.5))), int(decided.sum())


def orientation_probability(transfer_diff: np.ndarray, labels: np.ndarray) -> float:
    """Posterior probability that the transfer orders pairs better than chance, from how many of the decided
    shots it orders right (uniform prior on its accuracy): 0.98 for 5 of 5, 0.34 for 2 of 5, 0.02 for 0 of 5."""
    hits, n = ordered_right(transfer_diff, labels)
    return float(scipy.stats.beta.sf(0.5, hits + 1, n - hits + 1))


SHARE_RULES = ("stacking", "stacking-pure", "stacking-oriented")


def transfer_share(
    transfer_diff: np.ndarray, shots_diff: np.ndarray, labels: np.ndarray, rule: str = "stacking"
) -> float:
    """The transfer's share of the few-shot reward (>= 2 shots).

    ``stacking-pure``: ``stacking_weight`` alone. It leaves an inverted transfer 0.05-0.25 of the reward on the
    constructed mirror pair at K = 5-20 (the likelihood is flat wherever the mix still orders every shot right),
    0.008-0.052 below the shots alone (``bench/pearl_fewshot_mirror.py``). ``stacking``: the same, but 0 for a
    transfer that orders at most half of the shots right. ``stacking-oriented``: ``stacking_weight`` times
    ``orientation_probability``, the soft form of that switch (<= 0.004 there).
    """
    if rule not in SHARE_RULES:
        raise ValueError(f"unknown few-shot weighting rule {rule!r}; choose one of {SHARE_RULES}")
    if rule == "stacking":
        hits, n = ordered_right(transfer_diff, labels)
        if hits <= n / 2:
            return 0.0
    share = stacking_weight(transfer_diff, shots_diff, labels)
    return share * orientation_probability(transfer_diff, labels) if rule == "stacking-oriented" else share


def fit_few_shot(
    make_model: Callable[[], torch.nn.Module],
    obs: np.ndarray,
    act: np.ndarray,
    transferred: Preferences,
    shots: Preferences,
    cfg: RewardTrainConfig,
    shot_epochs: int = 200,
    folds: int = 5,
    device: torch.device | str = "cpu",
    seed: int = 0,
    log=None,
    rule: str = "stacking",
) -> tuple[RewardEnsemble, dict]:
    """The transfer model and the shots model, weighted by ``transfer_share(rule)`` (the accuracy rule, each
    member's ``2 acc - 1`` on the shots, where there is a single shot); returns ``(ensemble, scores)``: the
    ensemble standardised over the segments ``obs``, ``act``; ``scores`` holds both rules' transfer share and,
    under ``evidence``, each shot's label and both members' return differences on it (what a rule sees)."""
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
    shots_diff = np.full(len(shots), np.nan)  # the shots model's out-of-fold return difference on each shot
    if len(shots) >= 2:
        everything = np.arange(len(shots))
        scores = []
        for held in _folds(len(shots), min(folds, len(shots)), seed):
            fold_model = fit(shots.subset(np.setdiff1d(everything, held)), shot_cfg)
            scores.append(preference_accuracy(fold_model, obs, act, shots.subset(held), device))
            ret = standardised_returns(fold_model, obs, act, device)
            shots_diff[held] = ret[shots.first[held]] - ret[shots.second[held]]
        scores = [s for s in scores if not np.isnan(s)]
        accuracy["shots"] = float(np.mean(scores)) if scores else float("nan")
    ret = standardised_returns(transfer, obs, act, device)
    transfer_diff = ret[shots.first] - ret[shots.second]
    by_accuracy = [member_weight(accuracy[m]) for m in MEMBERS]
    if sum(by_accuracy) == 0:  # neither orders the shots better than chance: the true labels are all we trust
        by_accuracy = [0.0, 1.0]
    by_accuracy = [w / sum(by_accuracy) for w in by_accuracy]
    # one shot has no out-of-fold score: the accuracy rule decides
    stacked = transfer_share(transfer_diff, shots_diff, shots.label, rule) if len(shots) >= 2 else float("nan")
    weights = by_accuracy if np.isnan(stacked) else [stacked, 1.0 - stacked]
    ensemble = RewardEnsemble([transfer, fit(shots, shot_cfg)], weights).to(device).standardise(obs, act)
    evidence = {
        "transfer_diff": transfer_diff.tolist(),
        "shots_diff": shots_diff.tolist(),
        "label": shots.label.tolist(),
    }
    return ensemble, {
        **{f"accuracy_{m}": accuracy[m] for m in MEMBERS},
        **{f"weight_{m}": float(w) for m, w in zip(MEMBERS, ensemble.weights)},
        "stacking_transfer": stacked,
        "accuracy_rule_transfer": by_accuracy[0],
        "evidence": evidence,
    }
