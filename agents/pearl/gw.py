"""Entropic (fused) Gromov-Wasserstein on factored costs: O(n m r) per iteration instead of O(n^2 m).

A cost matrix given as ``C = L R^T`` (``L, R`` of width r: randomised-SVD factors of a distance
matrix, as CPA uses, or the exact rank-(d + 2) factors of a squared-Euclidean cost on
d-dimensional features, ``FactoredCost.squared_euclidean``). The square-loss GW gradient is
``constC - 2 C1 T C2^T``, and ``constC`` is a row term plus a column term, which entropic OT absorbs into
its dual potentials; so each outer iteration needs only ``C1 T C2^T = L1 (R1^T T R2) L2^T``, never an n x n x m product.
The fused term ``<M, T>`` (a cross-task cost, also factored) is added to the same linearisation.

Each outer iteration is Peyre et al.'s (2016) projected step ``T <- Sinkhorn(grad(T), eps)``, the
iteration of POT's ``entropic_gromov_wasserstein(..., solver="PGD")``. Sinkhorn is warm-started from
the previous dual potentials and stabilised by absorbing them into the kernel, so it converges in
a few scaling steps per outer iteration and never under- or overflows at small eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from embodied.errors import EmbodiedError


class GWDiverged(EmbodiedError, FloatingPointError):
    """The plan turned NaN, or POT returned an empty one: the entropic regularisation (every solver's, the low-rank
    one's inner problems included) is too small for the costs' scale (one error line at the command line, a
    ``FloatingPointError`` to numeric code)."""

    def __init__(self, eps: float):
        super().__init__(f"the GW plan diverged (NaN or empty) at --gw.epsilon {eps:g}; raise it")


@dataclass
class FactoredCost:
    """``C = left @ right.T`` without forming it until needed; ``left (n, r)``, ``right (m, r)``."""

    left: torch.Tensor
    right: torch.Tensor

    @staticmethod
    def squared_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> "FactoredCost":
        """``|x_i - y_j|^2`` (``y = x`` for an intra-task cost), rank ``d + 2``."""
        y = x if y is None else y
        sx, sy = (x * x).sum(1, keepdim=True), (y * y).sum(1, keepdim=True)
        return FactoredCost(torch.cat([sx, torch.ones_like(sx), -2 * x], 1), torch.cat([torch.ones_like(sy), sy, y], 1))

    def scaled(self, factor: float) -> "FactoredCost":
        return FactoredCost(self.left * factor, self.right)

    def dense(self) -> torch.Tensor:
        return self.left @ self.right.T

    def mean(self) -> float:
        return float(self.left.mean(0) @ self.right.mean(0))

    def squared_times(self, weights: torch.Tensor) -> torch.Tensor:
        """``(C * C) @ weights`` in O(n r^2): row i is ``l_i^T (sum_k w_k r_k r_k^T) l_i``."""
        gram = self.right.T @ (self.right * weights[:, None])
        return ((self.left @ gram) * self.left).sum(1)


def gw_gradient_factors(c1: FactoredCost, c2: FactoredCost, plan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, V)`` with ``U V^T = -4 C1 T C2^T``: the GW gradient without its row and column constants.

    (POT's convention, ``2 (constC - 2 C1 T C2^T)``, so ``eps`` means what it means in POT.)
    """
    core = c1.right.T @ plan @ c2.right  # (r1, r2)
    return -4 * c1.left @ core, c2.left


def gw_loss(c1: FactoredCost, c2: FactoredCost, plan: torch.Tensor) -> float:
    """Square-loss GW objective ``sum (C1_ik - C2_jl)^2 T_ij T_kl``, in O(n m r)."""
    p, q = plan.sum(1), plan.sum(0)
    const = p @ c1.squared_times(p) + q @ c2.squared_times(q)
    cross = ((c1.left.T @ plan @ c2.left) * (c1.right.T @ plan @ c2.right)).sum()
    return float(const - 2 * cross)


def linear_loss(cost: FactoredCost, plan: torch.Tensor) -> float:
    """``<M, T>`` for a factored M."""
    return float(((cost.left.T @ plan) * cost.right.T).sum())


@dataclass
class SinkhornState:
    """Dual potentials (cost units), reused as the warm start of the next solve."""

    f: torch.Tensor
    g: torch.Tensor


def sinkhorn(
    cost: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    eps: float,
    state: SinkhornState | None = None,
    max_iter: int = 1000,
    tol: float = 1e-5,
    absorb_every: int = 20,
) -> tuple[torch.Tensor, SinkhornState]:
    """Entropic OT plan (float32) for a dense float32 ``cost``, warm-started from ``state``.

    The kernel ``exp((f_i + g_j - C_ij) / eps)`` is built from the current potentials, so it is
    near the plan itself: nothing overflows and only negligible entries underflow. Without a warm
    start (or if the warm kernel has an empty or infinite row) one exact log-domain column and row
    update comes first. Scalings are absorbed into ``f, g`` every ``absorb_every`` steps.
    """
    log_p, log_q = p.log(), q.log()

    def kernel() -> torch.Tensor:
        return ((f[:, None] + g[None, :] - cost) / eps).exp_()

    def log_domain_update() -> tuple[torch.Tensor, torch.Tensor]:
        g_ = eps * (log_q - torch.logsumexp((f[:, None] - cost) / eps, 0))
        return eps * (log_p - torch.logsumexp((g_[None, :] - cost) / eps, 1)), g_

    if state is None:
        f, g = torch.zeros_like(p), torch.zeros_like(q)
        f, g = log_domain_update()
        k = kernel()
    else:
        f, g = state.f.clone(), state.g.clone()
        k = kernel()
        rows = k.sum(1)
        if not bool(torch.all(torch.isfinite(rows) & (rows > 0))):
            f, g = log_domain_update()
            k = kernel()
    u, v = torch.ones_like(p), torch.ones_like(q)
    for it in range(1, max_iter + 1):
        v = q / (k.T @ u).clamp_min(1e-30)
        u = p / (k @ v).clamp_min(1e-30)
        if it % 10 == 0:
            if float((v * (k.T @ u) - q).abs().sum()) < tol:
                break
        if it % absorb_every == 0:
            f, g = f + eps * u.log(), g + eps * v.log()
            k = kernel()
            u, v = torch.ones_like(p), torch.ones_like(q)
    return k.mul_(u[:, None]).mul_(v[None, :]), SinkhornState(f + eps * u.log(), g + eps * v.log())


def entropic_ot(cost: FactoredCost, eps: float) -> torch.Tensor:
    """Entropic OT plan of a linear cost alone, uniform marginals (float64 ``(n, m)``)."""
    dense = cost.left.to(torch.float32) @ cost.right.to(torch.float32).T
    n, m = dense.shape
    p = torch.full((n,), 1.0 / n, dtype=torch.float32, device=dense.device)
    q = torch.full((m,), 1.0 / m, dtype=torch.float32, device=dense.device)
    return sinkhorn(dense, p, q, eps)[0].to(cost.left.dtype)


@dataclass
class FusedGWResult:
    plan: torch.Tensor
    gw_loss: float  # structure term
    linear_loss: float  # cross-task term <M, T> (0 without M)
    objective: float  # alpha * gw_loss + (1 - alpha) * linear_loss
    iterations: int


def fused_gw(
    c1: FactoredCost,
    c2: FactoredCost,
    eps: float,
    alpha: float = 1.0,
    cross: FactoredCost | None = None,
    init: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
) -> FusedGWResult:
    """Entropic fused GW with uniform marginals: ``min alpha GW(T) + (1 - alpha) <M, T> - eps H(T)``.

    ``alpha = 1`` (or ``cross=None``) is plain entropic GW. ``init``: the starting plan (default the
    independent coupling ``p q^T``); different starts reach different local optima, compare them by
    ``objective``.
    """
    if cross is None:
        alpha = 1.0
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    n, m = c1.left.shape[0], c2.left.shape[0]
    work = torch.float32  # the O(n m) work; losses are computed in float64 at the end
    p = torch.full((n,), 1.0 / n, dtype=work, device=c1.left.device)
    q = torch.full((m,), 1.0 / m, dtype=work, device=c1.left.device)
    plan = torch.outer(p, q) if init is None else init.to(work)
    f1 = FactoredCost(c1.left.to(work), c1.right.to(work))
    f2 = FactoredCost(c2.left.to(work), c2.right.to(work))
    fixed = (1 - alpha) * (cross.left.to(work) @ cross.right.to(work).T) if alpha < 1 else None
    state = None
    it = 0
    inner_tol = 1e-2  # early plans are rough anyway: solve them loosely, tighten as the plan settles
    for it in range(1, max_iter + 1):
        u, v = gw_gradient_factors(f1, f2, plan)
        cost = (alpha * u) @ v.T
        if fixed is not None:
            cost += fixed
        new, state = sinkhorn(cost, p, q, eps, state, tol=inner_tol)
        change = float((new - plan).abs().sum())
        inner_tol = max(1e-5, min(inner_tol, 0.1 * change))
        plan = new
        if change < tol:
            break
    plan = plan.to(c1.left.dtype)
    if not torch.all(torch.isfinite(plan)):
        raise GWDiverged(eps)
    structure = gw_loss(c1, c2, plan)
    linear = linear_loss(cross, plan) if cross is not None else 0.0
    return FusedGWResult(plan, structure, linear, alpha * structure + (1 - alpha) * linear, it)
