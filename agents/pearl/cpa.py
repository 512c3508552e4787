"""CPA, cross-task preference alignment (PEARL, Liu et al. 2024, Sec. 4.1).

Source segments carry preference labels, target segments none. Each task gets an intra-task cost
matrix (Euclidean distance between flattened state-action segments, each feature standardised
within its task, scaled to [0, 1]); the two
live in different spaces, so Gromov-Wasserstein optimal transport aligns them by structure. The
coupling ``T`` (n_src x n_tgt) turns source labels into target labels:

    z(y_i, y_j) = sum_{(k,l) labelled} T[k,i] T[l,j] z(x_k, x_l) / sum_{(k,l) labelled} T[k,i] T[l,j]

The denominator is the coupling mass on labelled source pairs, so identical tasks with
``T = I/n`` reproduce the labels exactly; it is also returned as a confidence per target pair.
(With every source pair labelled it equals v_i v_j, the normalisation the paper's revision uses.)

GW alone is blind to orientation: a task's structure and its mirror image (good segments where
bad ones are) can be equally good matches, and on some pairs plain GW picks the mirror (measured:
label accuracy 0.13-0.26 on drawer-open -> door-open, 0.24-0.42 on plate-slide -> plate-slide-back).
The default solver therefore adds a fused term: a cross-task cost on what every Meta-World task
shares, the arm, described without directions (hand speed, action magnitude, action change,
gripper command), which tells a purposeful segment from a flailing one in any task. Several
starts are solved and the lowest fused objective wins; how much the starts and the structure-only
solution agree is reported as the transfer's confidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import ot
import scipy.stats
import torch

from embodied.data.segments import Segments
from embodied.errors import EmbodiedError
from embodied.teacher import Preferences

from agents.pearl.gw import FactoredCost, GWDiverged, entropic_ot, fused_gw

GW_METHODS = ("lowrank", "entropic", "exact")


def segment_features(segments: Segments, standardise: bool = True) -> np.ndarray:
    """Flattened state-action sequence of each segment, ``(N, L, D), (N, L, A) -> (N, L*(D+A))``.

    Standardising each feature within the task (zero mean, unit std) lets every state dimension
    shape the distances; measured on three Meta-World pairs it gave the most accurate and the most
    stable transfer (raw features sometimes let GW align the tasks mirror-wise, good to bad).
    """
    feats = np.concatenate([segments.observations, segments.actions], axis=-1).reshape(len(segments), -1)
    if standardise:
        feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    return feats


def arm_features(segments: Segments) -> np.ndarray:
    """Direction-free arm features shared by all Meta-World tasks, ``(N, L * 4)``.

    Per step: hand speed (observation 0:3 vs the previous frame's hand at 18:21), the norm of the
    xyz action, the norm of the action's change, the gripper command's magnitude. Directions are
    left out on purpose: opposite tasks (open / close) move the same arm the other way.
    """
    obs, act = segments.observations, segments.actions
    if obs.shape[-1] != 39 or act.shape[-1] != 4:  # datasets of other tasks (checked for named tasks up front)
        raise EmbodiedError(
            f"arm features need Meta-World's 39-d observations and 4-d actions, got {obs.shape[-1]}-d "
            f"and {act.shape[-1]}-d; use --gw.alpha 1 (structure only) for other tasks"
        )
    speed = np.linalg.norm(obs[..., 0:3] - obs[..., 18:21], axis=-1)
    magnitude = np.linalg.norm(act[..., :3], axis=-1)
    change = np.linalg.norm(np.diff(act, axis=1, prepend=act[:, :1]), axis=-1)
    return np.stack([speed, magnitude, change, np.abs(act[..., 3])], -1).reshape(len(segments), -1)


def cost_matrix(features: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pairwise Euclidean distances, scaled so the largest is 1, float64 ``(N, N)``."""
    if not np.all(np.isfinite(features)):
        raise ValueError("segment features contain NaN or inf")
    x = torch.as_tensor(features, dtype=torch.float64, device=device)
    cost = torch.cdist(x, x)
    return cost / cost.max().clamp_min(1e-12)


def factored(cost: torch.Tensor, rank: int, seed: int = 0) -> FactoredCost:
    """Rank-``rank`` factors of a distance matrix by randomised SVD (O(n^2 rank)).

    Euclidean distance matrices of segment features are close to low rank: at rank 32 the
    transferred labels match the dense solver's (measured, see ``bench/cpa_scale.py``).
    """
    rank = min(rank, *cost.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(cost, q=rank, niter=3)
    return FactoredCost(u * s, v)


@dataclass
class GWConfig:
    """The Gromov-Wasserstein alignment of target segments with source segments (CPA's transfer)."""

    method: str = field(
        default="lowrank",
        metadata={
            "help": "Gromov-Wasserstein solver: lowrank (ours, fused, fast), entropic (POT, dense) or exact (POT)"
        },
    )
    epsilon: float = 5e-3  # entropic regularisation (POT's convention)
    alpha: float = 0.9  # weight of the structure (GW) term; 1 - alpha on the shared arm features (1: plain GW)
    rank: int = 32  # rank of the factored cost matrices (lowrank)
    max_iter: int = 100  # outer (GW linearisation) iterations
    tol: float = 1e-3  # stop when the plan changes less than this (L1; measured: labels settle by 1e-2)

    def __post_init__(self):
        if self.method not in GW_METHODS:
            raise ValueError(f"gw.method must be one of {GW_METHODS}, got {self.method!r}")
        for name in ("epsilon", "rank", "max_iter", "tol"):
            if getattr(self, name) <= 0:
                raise ValueError(f"gw.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"gw.alpha must be in (0, 1], got {self.alpha}")


def solve_fused(c_src: FactoredCost, c_tgt: FactoredCost, cross: FactoredCost | None, cfg: GWConfig) -> dict:
    """Fused GW from two starts, plain GW's optimum and the OT plan of the arm cost alone.

    (A third, the independent coupling, reached the same optimum as the arm start on every pair
    measured, at the same cost, so it is not run.)

    Returns ``{start name: FusedGWResult}``; plain GW's own optimum is under ``"structure"``.
    """
    kwargs = dict(eps=cfg.epsilon, max_iter=cfg.max_iter, tol=cfg.tol)
    out = {"structure": fused_gw(c_src, c_tgt, alpha=1.0, **kwargs)}
    if cross is None or cfg.alpha >= 1:
        return out
    out["from-structure"] = fused_gw(c_src, c_tgt, alpha=cfg.alpha, cross=cross, init=out["structure"].plan, **kwargs)
    out["from-arm"] = fused_gw(
        c_src, c_tgt, alpha=cfg.alpha, cross=cross, init=entropic_ot(cross, cfg.epsilon), **kwargs
    )
    return out


def zero_shot_start(objectives: dict) -> str:
    """The start CPA keeps without target labels: the lowest fused objective (plain GW if it is alone)."""
    candidates = [name for name in objectives if name != "structure"] or ["structure"]
    return min(candidates, key=objectives.__getitem__)


def gw_coupling(c_src: torch.Tensor, c_tgt: torch.Tensor, cfg: GWConfig = GWConfig()) -> torch.Tensor:
    """Gromov-Wasserstein coupling ``(n_src, n_tgt)`` with uniform marginals (structure only)."""
    if cfg.method == "lowrank":
        return fused_gw(
            factored(c_src, cfg.rank), factored(c_tgt, cfg.rank), cfg.epsilon, max_iter=cfg.max_iter, tol=cfg.tol
        ).plan
    n, m = c_src.shape[0], c_tgt.shape[0]
    p = torch.full((n,), 1.0 / n, dtype=torch.float64, device=c_src.device)
    q = torch.full((m,), 1.0 / m, dtype=torch.float64, device=c_tgt.device)
    if cfg.method == "exact":
        plan = ot.gromov.gromov_wasserstein(
            c_src.cpu().numpy(),
            c_tgt.cpu().numpy(),
            p.cpu().numpy(),
            q.cpu().numpy(),
            "square_loss",
            numItermaxEmd=max(100_000, 50 * n * m // 1000),
        )
        return torch.as_tensor(plan, device=c_src.device)
    plan = ot.gromov.entropic_gromov_wasserstein(
        c_src, c_tgt, p, q, "square_loss", epsilon=cfg.epsilon, max_iter=cfg.max_iter * 2, tol=1e-9, solver="PGD"
    )
    if not torch.all(torch.isfinite(plan)) or abs(float(plan.sum()) - 1.0) > 1e-2:  # POT returns zeros on failure
        raise GWDiverged(cfg.epsilon)
    return plan


def nearest_neighbour_coupling(src_features: np.ndarray, tgt_features: np.ndarray, k: int = 5) -> torch.Tensor:
    """Baseline: each target segment coupled to its ``k`` nearest source segments in feature space.

    Only meaningful when both tasks share an observation space (as Meta-World tasks do).
    """
    src = torch.as_tensor(src_features, dtype=torch.float64)  # raw features: a shared space is the point
    tgt = torch.as_tensor(tgt_features, dtype=torch.float64)
    nearest = torch.cdist(tgt, src).topk(k, dim=1, largest=False).indices  # (m, k)
    plan = torch.zeros(src.shape[0], tgt.shape[0], dtype=torch.float64)
    plan[nearest, torch.arange(tgt.shape[0])[:, None]] = 1.0 / (k * tgt.shape[0])
    return plan


def transfer_labels(
    plan: torch.Tensor, source: Preferences, first: np.ndarray, second: np.ndarray, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels and their coupling mass for target pairs ``(first[q], second[q])``.

    Each labelled source pair is used in both orders (z and 1 - z). Pairs with no mass get 0.5.
    Returns ``(labels, mass)``, both ``(Q,)``; cost O(Q * |source|), chunked over Q.
    """
    if len(source) == 0:
        raise ValueError("no source preference labels to transfer")
    if not np.all(np.isfinite(source.label)):
        raise ValueError("source labels contain NaN")
    plan = plan.to(torch.float64)
    k = torch.as_tensor(np.concatenate([source.first, source.second]), device=plan.device)
    l_ = torch.as_tensor(np.concatenate([source.second, source.first]), device=plan.device)
    z = torch.as_tensor(np.concatenate([source.label, 1.0 - source.label]), dtype=torch.float64, device=plan.device)
    rows_k, rows_l = plan[k], plan[l_]  # (2S, m)
    labels, masses = [], []
    for start in range(0, len(first), chunk):
        i = torch.as_tensor(first[start : start + chunk], device=plan.device)
        j = torch.as_tensor(second[start : start + chunk], device=plan.device)
        weight = rows_k[:, i] * rows_l[:, j]  # (2S, q)
        mass = weight.sum(0)
        num = (weight * z[:, None]).sum(0)
        label = torch.where(mass > 0, num / mass.clamp_min(1e-300), torch.full_like(mass, 0.5))
        labels.append(label.cpu().numpy())
        masses.append(mass.cpu().numpy())
    return np.concatenate(labels), np.concatenate(masses)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pairs on which two soft label sets pick the same side (0.5 against anything: half)."""
    same = np.where((a == 0.5) | (b == 0.5), 0.5, ((a > 0.5) == (b > 0.5)).astype(float))
    return float(same.mean()) if len(same) else float("nan")


def label_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Agreement of soft labels with teacher labels on pairs the teacher did not call equal.

    A predicted 0.5 counts as half right (it is a coin flip).
    """
    decided = truth != 0.5
    return agreement(predicted[decided], truth[decided])


@dataclass
class TransferResult:
    labels: np.ndarray
    mass: np.ndarray
    seconds: float
    confidence: dict  # agreement between starts / with plain GW / with few-shot labels (see cross_task_transfer)


def arm_cost(src_segments: Segments, tgt_segments: Segments, device: torch.device | str = "cpu") -> torch.Tensor:
    """Cross-task Euclidean cost on arm features standardised over both tasks together, scaled to [0, 1]."""
    xs, xt = arm_features(src_segments), arm_features(tgt_segments)
    both = np.concatenate([xs, xt])
    mu, sd = both.mean(0), both.std(0) + 1e-6
    cost = torch.cdist(
        torch.as_tensor((xs - mu) / sd, dtype=torch.float64, device=device),
        torch.as_tensor((xt - mu) / sd, dtype=torch.float64, device=device),
    )
    return cost / cost.max().clamp_min(1e-12)


def calibrate(
    labels: np.ndarray, predicted_on_shots: np.ndarray, shots: Preferences, flip_confidence: float = 0.95
) -> tuple[np.ndarray, float]:
    """Few-shot orientation and weighting of transferred labels by ``K`` true target labels.

    ``a`` = how often the transfer agrees with the shots (Laplace-smoothed, ties excluded). Labels are
    mapped to ``0.5 + |2a - 1| (z - 0.5)``, flattened towards 0.5 as the agreement nears chance, and
    flipped only when the shots make a mirrored transfer likely: the posterior of the agreement rate
    (uniform prior) puts more than ``flip_confidence`` below 0.5, i.e. at most 0 of 5, 6 of 20 or 41
    of 100 shots agree; the few-shot weighting (``few_shot.fit_few_shot``) switches off a transfer
    that orders the shots no better than chance. Flipping on any agreement below one half, as
    before, turned a right transfer (0.80 accurate) into a wrong one when 1 of 5 shots happened to
    agree (coffee-button, seed 2). Returns ``(labels, a)``.
    """
    decided = shots.label != 0.5
    agree = ((predicted_on_shots[decided] > 0.5) == (shots.label[decided] > 0.5)) & (predicted_on_shots[decided] != 0.5)
    hits, n = int(agree.sum()), int(decided.sum())
    a = (hits + 1.0) / (n + 2.0)
    mirrored = scipy.stats.beta.cdf(0.5, hits + 1, n - hits + 1) > flip_confidence
    return 0.5 + (-1.0 if mirrored else 1.0) * abs(2 * a - 1) * (labels - 0.5), float(a)


def cross_task_transfer(
    src_segments: Segments,
    source: Preferences,
    tgt_segments: Segments,
    first: np.ndarray,
    second: np.ndarray,
    cfg: GWConfig = GWConfig(),
    device: torch.device | str = "cpu",
    shots: Preferences | None = None,
) -> TransferResult:
    """The whole of CPA: features -> costs -> (fused) GW coupling -> transferred target labels.

    ``shots``: optional few-shot target labels; they pick among the starts (most agreement) and
    calibrate the labels (``calibrate``). ``confidence`` holds ``starts_agreement`` (every start on
    the same side; low: the optimum is ambiguous), ``structure_agreement`` (chosen plan vs plain GW;
    low: GW alone would have mirrored the tasks and the arm term decided), ``objective`` per start,
    and with shots ``shot_agreement`` (the calibration ``a``).
    """
    if src_segments.length != tgt_segments.length:
        raise ValueError(
            f"source segments have length {src_segments.length}, target {tgt_segments.length}; they must match"
        )
    start = time.perf_counter()
    c_src = cost_matrix(segment_features(src_segments), device)
    c_tgt = cost_matrix(segment_features(tgt_segments), device)
    has_shots = shots is not None and len(shots) > 0
    q_first, q_second = first, second
    if has_shots:
        q_first, q_second = np.concatenate([first, shots.first]), np.concatenate([second, shots.second])
    if cfg.method != "lowrank":
        plans = {"structure": gw_coupling(c_src, c_tgt, cfg)}
        objectives = {"structure": float("nan")}
    else:
        cross = factored(arm_cost(src_segments, tgt_segments, device), cfg.rank) if cfg.alpha < 1 else None
        results = solve_fused(factored(c_src, cfg.rank), factored(c_tgt, cfg.rank), cross, cfg)
        plans = {name: r.plan for name, r in results.items()}
        objectives = {name: r.objective for name, r in results.items()}
    labelled = {name: transfer_labels(plan, source, q_first, q_second) for name, plan in plans.items()}
    candidates = [n for n in plans if n != "structure"] or ["structure"]
    q = len(first)
    if has_shots:
        chosen = max(candidates, key=lambda n: (agreement(labelled[n][0][q:], shots.label), -objectives[n]))
    else:
        chosen = zero_shot_start(objectives)
    labels, mass = labelled[chosen][0][:q], labelled[chosen][1][:q]
    confidence = {
        "chosen_start": chosen,
        "objective": objectives,
        "starts_agreement": min(agreement(labels, labelled[n][0][:q]) for n in candidates),
        "structure_agreement": agreement(labels, labelled["structure"][0][:q]),
    }
    if has_shots:
        labels, confidence["shot_agreement"] = calibrate(labels, labelled[chosen][0][q:], shots)
    return TransferResult(labels, mass, time.perf_counter() - start, confidence)
