"""Small network builders shared by the agents."""

from __future__ import annotations

from torch import nn


def mlp(inp: int, out: int, hidden: int = 256, layers: int = 3, act=nn.ReLU) -> nn.Sequential:
    dims = [inp] + [hidden] * (layers - 1)
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(a, b), act()]
    mods.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*mods)
