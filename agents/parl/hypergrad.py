"""Implicit differentiation through the lower level of a bilevel problem (PARL's hypergradient).

Bilevel problem: min_nu U(theta*(nu), nu)  s.t.  theta*(nu) = argmin_theta g(theta, nu).
At the lower optimum grad_theta g = 0, so by the implicit function theorem

    d theta*/d nu = -H^-1 grad^2_{theta nu} g,      H = grad^2_{theta theta} g,
    dU/dnu        = grad_nu U  -  (grad^2_{nu theta} g) H^-1 grad_theta U.

H^-1 v is never formed: it is approximated from Hessian-vector products by conjugate gradient
or a damped Neumann series, or replaced by I / damping (the cheap ablation).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Params = Sequence[torch.Tensor]
SOLVERS = ("cg", "neumann", "identity")


def flat(tensors: Sequence[torch.Tensor | None], like: Params) -> torch.Tensor:
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like)])


def unflat(vector: torch.Tensor, like: Params) -> list[torch.Tensor]:
    out, i = [], 0
    for p in like:
        out.append(vector[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


def hessian_vector_product(loss_fn: Callable[[], torch.Tensor], params: Params, vector: torch.Tensor) -> torch.Tensor:
    """``(d^2 loss / d params^2) @ vector`` by double backpropagation; ``vector`` is flat."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    g = flat(grads, params)
    hv = torch.autograd.grad(g @ vector.detach(), params, allow_unused=True)
    return flat(hv, params).detach()


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10, tol: float = 1e-10
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric ``A``; stops early on negative curvature."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r @ r
    for _ in range(iters):
        ap = matvec(p)
        curvature = p @ ap
        if curvature <= 0:  # A is not positive definite along p: keep what we have
            break
        step = rs / curvature
        x = x + step * p
        r = r - step * ap
        rs_new = r @ r
        if rs_new < tol:
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def neumann_inverse(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 20, alpha: float = 0.1
) -> torch.Tensor:
    """``A^-1 b ~ alpha * sum_k (I - alpha A)^k b``; converges when ``0 < alpha < 2 / lambda_max(A)``."""
    term = b.clone()
    total = b.clone()
    for _ in range(iters):
        term = term - alpha * matvec(term)
        total = total + term
    return alpha * total


def inverse_hvp(
    lower_loss: Callable[[], torch.Tensor],
    theta: Params,
    vector: torch.Tensor,
    solver: str = "cg",
    damping: float = 0.0,
    iters: int = 10,
    alpha: float = 0.1,
) -> torch.Tensor:
    """``(H + damping I)^-1 vector`` with ``H`` the Hessian of ``lower_loss`` in ``theta``."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if solver == "identity":
        if damping <= 0:
            raise ValueError("the identity approximation needs damping > 0 (H^-1 ~ I / damping)")
        return vector / damping

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return hessian_vector_product(lower_loss, theta, v) + damping * v

    if solver == "cg":
        return conjugate_gradient(matvec, vector, iters)
    return neumann_inverse(matvec, vector, iters, alpha)


def implicit_term(
    lower_loss: Callable[[], torch.Tensor],
    theta: Params,
    nu: Params,
    upper_grad_theta: torch.Tensor,
    solver: str = "cg",
    damping: float = 0.0,
    iters: int = 10,
    alpha: float = 0.1,
    curvature_loss: Callable[[], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The indirect part of dU/dnu: ``-(grad^2_{nu theta} g) (H + damping I)^-1 grad_theta U``, per ``nu`` tensor.

    ``H`` is the Hessian of ``curvature_loss`` (default: ``lower_loss`` itself); pass a loss whose
    Hessian is a positive semi-definite stand-in (e.g. a KL, giving the Fisher matrix) when the
    lower objective's own Hessian is indefinite where it is estimated.
    """
    v = inverse_hvp(curvature_loss or lower_loss, theta, upper_grad_theta, solver, damping, iters, alpha)
    grads = torch.autograd.grad(lower_loss(), theta, create_graph=True, allow_unused=True)
    mixed = torch.autograd.grad(flat(grads, theta) @ v.detach(), nu, allow_unused=True)
    return [-(m if m is not None else torch.zeros_like(p)) for m, p in zip(mixed, nu)]


def hypergradient(
    upper_loss: Callable[[], torch.Tensor],
    lower_loss: Callable[[], torch.Tensor],
    theta: Params,
    nu: Params,
    solver: str = "cg",
    damping: float = 0.0,
    iters: int = 10,
    alpha: float = 0.1,
) -> list[torch.Tensor]:
    """Total derivative dU/dnu at the current (assumed lower-optimal) theta: direct + implicit term."""
    upper = upper_loss()
    direct = torch.autograd.grad(upper, nu, retain_graph=True, allow_unused=True)
    g_theta = flat(torch.autograd.grad(upper, theta, allow_unused=True), theta)
    indirect = implicit_term(lower_loss, theta, nu, g_theta, solver, damping, iters, alpha)
    return [(d if d is not None else torch.zeros_like(p)) + i for d, i, p in zip(direct, indirect, nu)]
