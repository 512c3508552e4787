import pytest
import torch

from agents.parl.hypergrad import flat, hessian_vector_product, hypergradient, inverse_hvp


def test_hvp_matches_finite_differences_on_a_small_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    params = list(net.parameters())
    loss_fn = lambda: ((net(x) - y) ** 2).mean()  # noqa: E731
    v = torch.randn(sum(p.numel() for p in params))
    hv = hessian_vector_product(loss_fn, params, v)

    def grad_at(shift):
        with torch.no_grad():
            for p, d in zip(params, torch.split(shift, [p.numel() for p in params])):
                p.add_(d.view_as(p))
        g = flat(torch.autograd.grad(loss_fn(), params), params)
        with torch.no_grad():
            for p, d in zip(params, torch.split(shift, [p.numel() for p in params])):
                p.sub_(d.view_as(p))
        return g

    eps = 1e-3
    fd = (grad_at(eps * v) - grad_at(-eps * v)) / (2 * eps)
    torch.testing.assert_close(hv, fd, rtol=2e-2, atol=2e-4)


def _quadratic_problem():
    """g = 1/2 th'A th - th'B nu (theta* = A^-1 B nu); U = 1/2 |th - c|^2 + 1/2 |nu|^2."""
    torch.manual_seed(1)
    m = torch.randn(4, 4, dtype=torch.float64)
    a = m @ m.T + 4 * torch.eye(4, dtype=torch.float64)
    b = torch.randn(4, 3, dtype=torch.float64)
    c = torch.randn(4, dtype=torch.float64)
    nu = torch.randn(3, dtype=torch.float64, requires_grad=True)
    theta = torch.linalg.solve(a, b @ nu.detach()).requires_grad_(True)  # the lower optimum
    lower = lambda: 0.5 * theta @ a @ theta - theta @ (b @ nu)  # noqa: E731
    upper = lambda: 0.5 * ((theta - c) ** 2).sum() + 0.5 * (nu**2).sum()  # noqa: E731
    analytic = b.T @ torch.linalg.solve(a, theta.detach() - c) + nu.detach()
    return a, theta, nu, lower, upper, analytic


@pytest.mark.parametrize("solver, kwargs", [("cg", dict(iters=10)), ("neumann", dict(iters=400, alpha=None))])
def test_hypergradient_matches_closed_form(solver, kwargs):
    a, theta, nu, lower, upper, analytic = _quadratic_problem()
    if kwargs.get("alpha", 0) is None:
        kwargs["alpha"] = 1.0 / torch.linalg.eigvalsh(a).max().item()
    (grad,) = hypergradient(upper, lower, [theta], [nu], solver=solver, **kwargs)
    torch.testing.assert_close(grad, analytic, rtol=1e-6, atol=1e-6)
    (direct_only,) = torch.autograd.grad(upper(), [nu])
    assert not torch.allclose(direct_only, analytic), "the implicit term matters on this problem"


def test_identity_ablation_and_bad_solver():
    a, theta, nu, lower, upper, analytic = _quadratic_problem()
    v = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(inverse_hvp(lower, [theta], v, "identity", damping=2.0), v / 2)
    with pytest.raises(ValueError, match="damping"):
        inverse_hvp(lower, [theta], v, "identity")
    with pytest.raises(ValueError, match="unknown solver"):
        inverse_hvp(lower, [theta], v, "magic")
