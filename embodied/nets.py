"""Small network builders shared by the agents."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from embodied.errors import TrainingDiverged


def mlp(inp: int, out: int, hidden: int = 256, layers: int = 3, act=nn.ReLU) -> nn.Sequential:
    dims = [inp] + [hidden] * (layers - 1)
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(a, b), act()]
    mods.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*mods)


class TwinQ(nn.Module):
    """Two Q-networks on (s, a) (clipped double-Q, as SAC and IQL use): ``(B, D), (B, A) -> (B,), (B,)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, layers=3)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, layers=3)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def actor_critic_bytes(obs_dim: int, act_dim: int, hidden: int, batch: int) -> tuple[int, int]:
    """Lower bounds of what an MLP actor-critic of ``mlp`` layers (SAC's, IQL's: an actor, twin Q-networks, their
    targets and a value network) holds: its parameters with gradients and Adam's two moments, and one batch with
    the networks' activations (about 16 ``hidden``-wide layers of them a sample)."""

    def net(inp: int, out: int) -> int:
        return (inp + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * out

    params = net(obs_dim, 2 * act_dim) + 4 * net(obs_dim + act_dim, 1) + net(obs_dim, 1)
    return params * 4 * 4, batch * (2 * obs_dim + act_dim + 2 + 16 * hidden) * 4


def mixed_precision(module: nn.Module, enabled: bool):
    """bfloat16 autocast on the device of ``module``'s parameters (no loss scaling needed, unlike float16).

    Wrap forward passes only; backward runs outside. Disabled, it is a no-op context. While a CUDA graph
    is being captured, autocast's weight-cast cache is off (PyTorch requires it: cached casts would be
    freed between replays).
    """
    device_type = next(module.parameters()).device.type
    capturing = device_type == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=not capturing)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging of target-network parameters toward ``source``."""
    for p, pt in zip(source.parameters(), target.parameters()):
        pt.lerp_(p, tau)


def check_finite(what: str, hint: str, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Raise ``TrainingDiverged`` naming the first NaN or infinite tensor of ``named``.

    Called after updates: a diverged update leaves such parameters, and what is computed from them fails far
    from the cause (an action the env refuses, a distribution that refuses its arguments) or trains on NaN.
    The common case costs one fused norm and one device sync (~0.1 ms for SAC's networks on a CPU core).
    """
    named = list(named)
    if torch.isfinite(torch.nn.utils.get_total_norm([tensor for _, tensor in named])):
        return
    for name, tensor in named:
        if not torch.isfinite(tensor).all():
            raise TrainingDiverged(f"{what} diverged: {name} is NaN or infinite after an update; {hint}")
    name, tensor = max(named, key=lambda item: float(item[1].abs().max()))  # finite, but its norm overflows
    raise TrainingDiverged(
        f"{what} diverged: {name} holds {float(tensor.abs().max()):.1e} after an update (its norm overflows); {hint}"
    )
