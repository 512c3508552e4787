"""RePo's networks (sizes from Zhu et al. 2023 / Dreamer): conv encoder and decoder, RSSM, heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from embodied.nets import mlp


# Gaussian densities written out as torch.distributions computes them, without its argument checks: each
# check is a host synchronisation on a GPU, which a captured update (agents.repo.cuda_graph) may not contain.
HALF_LOG_2PI = math.log(math.sqrt(2 * math.pi))


def normal_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mean, std^2), elementwise."""
    log_std = math.log(std) if isinstance(std, (int, float)) else std.log()
    return -((x - mean) ** 2) / (2 * std**2) - log_std - HALF_LOG_2PI


def normal_kl(mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)), elementwise."""
    var_ratio = (std_p / std_q).pow(2)
    t1 = ((mean_p - mean_q) / std_q).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def preprocess(obs: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in [-1, 1]."""
    return obs.float().movedim(-1, -3) / 127.5 - 1.0


class ConvEncoder(nn.Module):
    """4 conv layers (32-64-128-256, kernel 4, stride 2) on 64x64 images: ``(..., 3, 64, 64) -> (..., 1024)``.

    Weights and activations are channels-last (NHWC, the layout ``preprocess`` already yields) and the
    ELUs work in place: on the CPU that makes the convolutions and their gradients ~1.3x faster.
    """

    def __init__(self, depth: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, depth, 4, 2),
            nn.ELU(inplace=True),
            nn.Conv2d(depth, 2 * depth, 4, 2),
            nn.ELU(inplace=True),
            nn.Conv2d(2 * depth, 4 * depth, 4, 2),
            nn.ELU(inplace=True),
            nn.Conv2d(4 * depth, 8 * depth, 4, 2),
            nn.ELU(inplace=True),
            nn.Flatten(),
        )
        self.net.to(memory_format=torch.channels_last)
        self.out_dim = 8 * depth * 2 * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:]).contiguous(memory_format=torch.channels_last)
        return self.net(x).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Features ``(..., F)`` -> image mean ``(..., 3, 64, 64)`` (Dreamer's transposed convs)."""

    def __init__(self, feat_dim: int, depth: int = 32):
        super().__init__()
        self.fc = nn.Linear(feat_dim, 32 * depth)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * depth, 4 * depth, 5, 2),
            nn.ELU(inplace=True),
            nn.ConvTranspose2d(4 * depth, 2 * depth, 5, 2),
            nn.ELU(inplace=True),
            nn.ConvTranspose2d(2 * depth, depth, 6, 2),
            nn.ELU(inplace=True),
            nn.ConvTranspose2d(depth, 3, 6, 2),
        )
        self.net.to(memory_format=torch.channels_last)  # as the encoder: faster on the CPU

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        lead = feat.shape[:-1]
        x = self.fc(feat.reshape(-1, feat.shape[-1]))
        # The first transposed conv sees a 1x1 input: it is a matrix product, ~4x faster as one on the CPU.
        first = self.net[0]
        x = F.linear(x, first.weight.flatten(1).t()).unflatten(1, first.weight.shape[1:]) + first.bias[:, None, None]
        return self.net[1:](x.contiguous(memory_format=torch.channels_last)).reshape(*lead, 3, 64, 64)


class RSSM(nn.Module):
    """Recurrent state-space model: deterministic GRU state ``h`` (200) and Gaussian stochastic ``z`` (30)."""

    def __init__(
        self, embed_dim: int, act_dim: int, deter: int = 200, stoch: int = 30, hidden: int = 200, min_std: float = 0.1
    ):
        super().__init__()
        self.deter, self.stoch, self.min_std = deter, stoch, min_std
        self.inp = nn.Sequential(nn.Linear(stoch + act_dim, hidden), nn.ELU())
        self.gru = nn.GRUCell(hidden, deter)
        self.prior_net = nn.Sequential(nn.Linear(deter, hidden), nn.ELU(), nn.Linear(hidden, 2 * stoch))
        self.post_net = nn.Sequential(nn.Linear(deter + embed_dim, hidden), nn.ELU(), nn.Linear(hidden, 2 * stoch))

    @property
    def feat_dim(self) -> int:
        return self.deter + self.stoch

    def initial(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(batch, self.deter, device=device), torch.zeros(batch, self.stoch, device=device)

    def _gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = x.float().chunk(2, -1)  # distributions in float32 under mixed precision
        return mean, F.softplus(std) + self.min_std

    def img_step(self, h, z, action):
        """Prior transition: ``h' = GRU(h, [z, a])``, ``z' ~ p(z'|h')``. Returns h', z', mean, std."""
        h = self.gru(self.inp(torch.cat([z, action], -1)), h)
        mean, std = self._gaussian(self.prior_net(h))
        return h, mean + std * torch.randn_like(std), mean, std

    def observe(self, embeds: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Filter a sequence: ``actions (B, L, A)`` and ``embeds (B, L, E)`` of the observation each action
        led to (frames 1..L; frame 0 only starts the episode) -> states for steps 1..L.

        Returns ``h, z`` (posterior samples) and prior/posterior ``mean, std``, each ``(B, L, .)``.
        The posterior's first layer on ``[h, embed]`` is split: its embedding half runs as one matrix
        product over all steps instead of L small ones (same function, ~2x fewer ops in the loop).
        """
        h, z = self.initial(embeds.shape[0], embeds.device)
        first, rest = self.post_net[0], self.post_net[1:]
        embed_part = F.linear(embeds, first.weight[:, self.deter :], first.bias)
        h_weight = first.weight[:, : self.deter]
        out = {k: [] for k in ("h", "z", "prior_mean", "prior_std", "post_mean", "post_std")}
        for t in range(actions.shape[1]):
            h, _, prior_mean, prior_std = self.img_step(h, z, actions[:, t])
            post_mean, post_std = self._gaussian(rest(torch.addmm(embed_part[:, t], h, h_weight.t())))
            z = post_mean + post_std * torch.randn_like(post_std)
            for k, v in zip(out, (h, z, prior_mean, prior_std, post_mean, post_std)):
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    def filter_step(self, h, z, action, embed):
        """One online posterior update (acting in the environment)."""
        h, _, _, _ = self.img_step(h, z, action)
        mean, std = self._gaussian(self.post_net(torch.cat([h, embed], -1)))
        return h, mean + std * torch.randn_like(std)


class Actor(nn.Module):
    """tanh-Normal policy on latent features (4 x 200 ELU), as in the authors' code: std floor 0.1 and
    std 0.8 at initialisation keep it stochastic (Dreamer v1's floor 1e-4 let it collapse to bang-bang)."""

    def __init__(self, feat_dim: int, act_dim: int, hidden: int = 200, min_std: float = 0.1, init_std: float = 0.8):
        super().__init__()
        if not 0 < min_std < init_std:
            raise ValueError(f"need 0 < min_std < init_std, got min_std {min_std}, init_std {init_std}")
        self.net = mlp(feat_dim, 2 * act_dim, hidden, layers=5, act=nn.ELU)
        self.min_std = min_std
        self.raw_init_std = math.log(math.expm1(init_std - min_std))  # softplus(raw) + min_std = init_std

    def forward(self, feat: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Action ``(..., A)`` (reparameterised) and a one-sample estimate of its entropy ``(...)``.

        The entropy is the tanh-Normal's, -log pi(a): the Gaussian's plus log|d tanh(u)/du|, so
        saturating the action lowers it.
        """
        mean, std = self.net(feat).float().chunk(2, -1)
        mean = 5 * torch.tanh(mean / 5)
        std = F.softplus(std + self.raw_init_std) + self.min_std
        u = mean if deterministic else mean + torch.empty_like(mean).normal_() * std  # Normal.rsample's draw
        log_det = 2 * (math.log(2) - u - F.softplus(-2 * u))  # log(1 - tanh(u)^2), stable
        return torch.tanh(u), -(normal_log_prob(u, mean, std) - log_det).sum(-1)
