"""Denoising diffusion, written once for every generative chapter.

The forward process of DDPM (Ho, Jain and Abbeel 2020, bibkey ho2020ddpm) adds Gaussian
noise in ``T`` steps, with the closed form
``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) s^2 I)``, ``abar_t = prod_{i<=t} (1 - beta_i)``
(``s`` is the noise scale: 1 in DDPM). A denoiser ``f(x_t, t) -> x0_hat`` learns to undo it.
Sampling walks back from pure noise; ``reverse_step`` is the DDIM update (Song, Meng and
Ermon 2021, bibkey song2021ddim), which with ``eta = 1`` on consecutive steps is DDPM's
posterior sample and with ``eta = 0`` is deterministic, so a few strided steps give a
repeatable sample. ``project`` (for example onto the unit sphere) is applied after every
step, DimeRec's approximation of a geodesic random walk.

Steps are numbered 1..T; ``alpha_bar[0] = 1`` stands for the clean sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, D], t [B]) -> x0_hat
Project = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoiseSchedule:
    """beta_1..beta_T as ``betas`` [T]; ``alpha_bar`` [T + 1] with ``alpha_bar[0] = 1``."""

    betas: torch.Tensor

    def __post_init__(self) -> None:
        if self.betas.dim() != 1 or len(self.betas) < 1:
            raise ValueError("betas must be a non-empty 1-D tensor")
        if (self.betas <= 0).any() or (self.betas >= 1).any():
            raise ValueError("every beta must lie in (0, 1)")

    @classmethod
    def linear(cls, steps: int, beta_start: float | None = None,
               beta_end: float | None = None) -> NoiseSchedule:
        """DDPM's schedule: beta rises linearly from ``beta_start`` to ``beta_end``. By
        default DDPM's 1e-4 and 0.02 for T = 1000, scaled by 1000 / T (Nichol and
        Dhariwal's rule), so that any T ends near pure noise; DDPM's raw values with T = 50
        would leave sqrt(abar_T) = 0.77 of the signal at the last step."""
        scale = 1000 / steps
        beta_start = 1e-4 * scale if beta_start is None else beta_start
        beta_end = min(0.02 * scale, 0.999) if beta_end is None else beta_end
        return cls(torch.linspace(beta_start, beta_end, steps, dtype=torch.float64))

    @classmethod
    def cosine(cls, steps: int, offset: float = 0.008) -> NoiseSchedule:
        """Nichol and Dhariwal's schedule: abar_t = cos^2(pi/2 (t/T + s)/(1 + s)), up to
        normalisation; betas capped at 0.999."""
        t = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
        return cls((1 - f[1:] / f[:-1]).clamp(max=0.999))

    @property
    def steps(self) -> int:
        return len(self.betas)

    @property
    def alpha_bar(self) -> torch.Tensor:
        """[T + 1] fraction of the clean signal's variance left at step t."""
        return torch.cat([torch.ones(1, dtype=self.betas.dtype), torch.cumprod(1 - self.betas, 0)])

    def coefficients(self, t: torch.Tensor, like: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t), sqrt(1 - abar_t) for steps ``t`` [B], shaped [B, 1] like ``like``."""
        abar = self.alpha_bar.to(like.device)[t].to(like.dtype)[:, None]
        return abar.sqrt(), (1 - abar).sqrt()


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (the forward closed form).
    x0 [B, D], t [B] in 1..T, noise [B, D] (its scale is the caller's choice)."""
    if t.min() < 0 or t.max() > schedule.steps:
        raise ValueError(f"steps must lie in [0, {schedule.steps}]")
    signal, spread = schedule.coefficients(t, x0)
    return signal * x0 + spread * noise


def reverse_step(schedule: NoiseSchedule, x_t: torch.Tensor, x0_hat: torch.Tensor,
                 t: int, t_prev: int, eta: float, noise: torch.Tensor) -> torch.Tensor:
    """One step from t to t_prev < t given the denoiser's x0_hat (DDIM, Eq. 12 of Song et
    al.): x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
    eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t),
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).
    ``noise`` is z, already at the caller's noise scale."""
    abar = schedule.alpha_bar
    a_t, a_prev = float(abar[t]), float(abar[t_prev])
    eps_hat = (x_t - math.sqrt(a_t) * x0_hat) / math.sqrt(1 - a_t)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    direction = math.sqrt(max(1 - a_prev - sigma**2, 0.0))
    return math.sqrt(a_prev) * x0_hat + direction * eps_hat + sigma * noise


def sampling_steps(total: int, steps: int | None) -> list[int]:
    """The decreasing steps a sampler visits: all of T..1, or ``steps`` of them evenly
    strided (DDIM's few-step option), always starting at T."""
    if steps is None or steps >= total:
        return list(range(total, 0, -1))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    visited = torch.linspace(total, 1, steps).round().long().unique().flip(0)
    return [int(t) for t in visited]


@torch.no_grad()
def sample(denoise: Denoise, shape: tuple[int, int], schedule: NoiseSchedule,
           steps: int | None = None, eta: float = 0.0, noise_scale: float = 1.0,
           project: Project | None = None, generator: torch.Generator | None = None,
           device: torch.device | str = "cpu", trajectory: list | None = None
           ) -> torch.Tensor:
    """Generate ``shape`` = [B, D] samples: start from x_T = project(noise), at each visited
    step predict x0_hat = project(denoise(x_t, t)) and move to the next visited step;
    return the last x0_hat. Deterministic for ``eta = 0`` given ``generator``.
    ``trajectory``, when a list, receives (t, x_t, x0_hat) at every step (for figures)."""
    project = project or (lambda x: x)

    def draw() -> torch.Tensor:
        return noise_scale * torch.randn(shape, generator=generator, device=device)

    visited = sampling_steps(schedule.steps, steps)
    x = project(draw())
    x0_hat = x
    for i, t in enumerate(visited):
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0_hat = project(denoise(x, t_batch))
        if trajectory is not None:
            trajectory.append((t, x.clone(), x0_hat.clone()))
        if i + 1 < len(visited):
            x = project(reverse_step(schedule, x, x0_hat, t, visited[i + 1], eta, draw()))
    return x0_hat


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0
                         ) -> torch.Tensor:
    """t [B] -> [B, dim]: cos and sin of t at geometrically spaced frequencies (the
    Transformer's position code, used by DDPM for the step)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class StepEmbedding(nn.Module):
    """The step t -> a learned [B, dim] vector: sinusoidal code -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))
