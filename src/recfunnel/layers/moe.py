"""Mixtures of experts for multi-task ranking, and the diagnostics of their failures.

MMoE (Ma et al. 2018, bibkey ma2018mmoe) gives each task a softmax gate over shared expert
MLPs; CGC/PLE (Tang et al. 2020, bibkey tang2020ple) adds task-specific experts. HoME
(Wang et al. 2024, bibkey wang2024home) names three ways such models fail at Kuaishou and
fixes each; its parts that are layers live here:

* ``Expert`` with an optional normalisation and Swish (HoME's expert normalisation);
* ``Gate`` with an optional mask (HoME's hierarchy mask: a task may only read some experts);
* ``FeatureGate``, the LoRA-style per-expert input gate 2 sigmoid(v B A), 1 at the start;
* ``SelfGate``, the gated residual over a group of expert outputs.

The diagnostics measure the three failures on recorded outputs: dead units and the spread of
expert output scales (collapse), the share of a shared expert's gate mass that one task takes
(degradation), and the gate mass a task puts on its own experts (underfitting).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU}
NORMS = {None: None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class Expert(nn.Sequential):
    """An MLP expert: per hidden layer Linear -> [norm] -> activation. ``norm="batch"`` with
    ``activation="swish"`` is HoME's normalised expert; ``None`` with ``"relu"`` is MMoE's."""

    def __init__(self, d_in: int, hidden: Sequence[int], activation: str = "relu",
                 norm: str | None = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
        if not hidden:
            raise ValueError("an expert needs at least one hidden layer")
        layers: list[nn.Module] = []
        for d_out in hidden:
            layers.append(nn.Linear(d_in, d_out))
            if norm is not None:
                layers.append(NORMS[norm](d_out))
            layers.append(ACTIVATIONS[activation]())
            d_in = d_out
        super().__init__(*layers)
        self.d_out = d_in


class Gate(nn.Module):
    """g = softmax(x W + M) [B, K]; ``allowed`` [K] booleans sets M = -inf where False, so a
    masked expert gets exactly zero weight and zero gradient."""

    def __init__(self, d_in: int, n_experts: int, allowed: torch.Tensor | None = None):
        super().__init__()
        self.proj = nn.Linear(d_in, n_experts)
        if allowed is None:
            allowed = torch.ones(n_experts, dtype=torch.bool)
        allowed = torch.as_tensor(allowed, dtype=torch.bool)
        if allowed.shape != (n_experts,) or not allowed.any():
            raise ValueError(f"allowed must be [{n_experts}] booleans with at least one True")
        self.register_buffer("allowed", allowed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x).masked_fill(~self.allowed, float("-inf"))
        return logits.softmax(dim=-1)


def mix(gates: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """sum_k g_k E_k: gates [B, K], outputs [B, K, d] -> [B, d]."""
    return torch.einsum("bk,bkd->bd", gates, outputs)


class FeatureGate(nn.Module):
    """v -> v * 2 sigmoid(v B A) (HoME's feature-gate): B [d, r], A [r, d] with A = 0 at the
    start, so the gate is exactly 1 and the expert first sees the plain input; the gate can
    then scale each feature anywhere in (0, 2)."""

    def __init__(self, d_in: int, rank: int):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.down = nn.Linear(d_in, rank, bias=False)  # B
        self.up = nn.Linear(rank, d_in, bias=False)  # A
        nn.init.zeros_(self.up.weight)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * 2 * torch.sigmoid(self.up(self.down(v)))


class SelfGate(nn.Module):
    """A gated sum over a group of expert outputs F_1..F_m [B, m, d]: with m = 1,
    sigmoid(F w) * F; with m > 1, sum_k softmax_k(F_k w) F_k (HoME's self-gate)."""

    def __init__(self, d: int):
        super().__init__()
        self.score = nn.Linear(d, 1)

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        scores = self.score(outputs)  # [B, m, 1]
        if outputs.shape[1] == 1:
            return (torch.sigmoid(scores) * outputs)[:, 0]
        return (scores.softmax(dim=1) * outputs).sum(dim=1)


# --------------------------------------------------------------------------- diagnostics


@torch.no_grad()
def dead_unit_fraction(activations: torch.Tensor, zero_share: float = 0.9,
                       eps: float = 1e-3) -> float:
    """Share of units [N, units] whose |output| is below ``eps`` on more than ``zero_share``
    of the N inputs: the collapse HoME reports for ReLU experts. Swish never outputs exact
    zeros, so one threshold for every model keeps the comparison fair."""
    if activations.dim() != 2:
        raise ValueError("activations must be [N, units]")
    zero = (activations.abs() <= eps).float().mean(dim=0)  # [units]
    return float((zero > zero_share).float().mean())


@torch.no_grad()
def expert_scales(outputs: torch.Tensor) -> torch.Tensor:
    """Mean L2 norm of each expert's output: outputs [N, K, d] -> [K]."""
    if outputs.dim() != 3:
        raise ValueError("outputs must be [N, K, d]")
    return outputs.norm(dim=-1).mean(dim=0)


def scale_spread(outputs: torch.Tensor) -> float:
    """Largest over smallest expert output scale (1: every expert on one scale)."""
    scales = expert_scales(outputs)
    return float(scales.max() / scales.min().clamp(min=1e-12))


@torch.no_grad()
def gate_mass(gates: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each task's mean gate weight on each expert: {task: [N, K]} -> [T, K] (task order)."""
    return torch.stack([g.float().mean(dim=0) for g in gates.values()])


def degradation(mass: torch.Tensor, shared: Sequence[int]) -> torch.Tensor:
    """For each shared expert, the share of its gate mass (summed over tasks) that its
    heaviest task takes: 1/T when all T tasks use it equally, 1 when one task owns it.
    mass [T, K] from ``gate_mass`` -> [len(shared)]."""
    columns = mass[:, list(shared)]  # [T, S]
    return columns.max(dim=0).values / columns.sum(dim=0).clamp(min=1e-12)


def own_expert_share(mass: torch.Tensor, own: Sequence[Sequence[int]]) -> torch.Tensor:
    """Gate mass each task puts on its own (task-specific) experts: mass [T, K], own[t] the
    expert indices of task t -> [T] (low for a sparse task: underfitting)."""
    if len(own) != len(mass):
        raise ValueError(f"need the own experts of each of the {len(mass)} tasks")
    return torch.stack([mass[t, list(idx)].sum() for t, idx in enumerate(own)])

