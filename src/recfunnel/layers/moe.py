"""Mixtures of experts for multi-task ranking, and the diagnostics of their failures.

MMoE (Ma et al. 2018, bibkey ma2018mmoe) gives each task a softmax gate over shared expert
MLPs; CGC/PLE (Tang et al. 2020, bibkey tang2020ple) adds task-specific experts. HoME
(Wang et al. 2024, bibkey wang2024home) names three ways such models fail at Kuaishou and
fixes each; its parts that are layers live here:

* ``Expert`` with an optional normalisation and Swish (HoME's expert normalisation), and
  ``ExpertBank``, K such experts evaluated in one batched product per layer;
* ``Gate`` with an optional mask (HoME's hierarchy mask: a task may only read some experts);
* ``FeatureGate``, the LoRA-style per-expert input gate 2 sigmoid(v B A), 1 at the start;
* ``SelfGate``, the gated residual over a group of expert outputs.

The diagnostics measure the three failures on recorded outputs: dead units and the spread of
expert output scales (collapse), the share of a shared expert's gate mass that one task takes
(degradation), and the gate mass a task puts on its own experts (underfitting).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Activation(enum.Enum):
    """An expert's non-linearity: ReLU (MMoE's) or Swish, x sigmoid(x) (HoME's)."""

    RELU = "relu"
    SWISH = "swish"

    def module(self) -> nn.Module:
        return nn.ReLU() if self is Activation.RELU else nn.SiLU()


class Norm(enum.Enum):
    """The normalisation after each hidden Linear of an expert (HoME section 3.2)."""

    BATCH = "batch"
    LAYER = "layer"


class Expert(nn.Sequential):
    """An MLP expert: per hidden layer Linear -> [norm] -> activation. ``Norm.BATCH`` with
    ``Activation.SWISH`` is HoME's normalised expert; no norm with ReLU is MMoE's."""

    def __init__(self, d_in: int, hidden: Sequence[int],
                 activation: Activation = Activation.RELU, norm: Norm | None = None):
        _check_expert_args(activation, norm, hidden)
        layers: list[nn.Module] = []
        for d_out in hidden:
            layers.append(nn.Linear(d_in, d_out))
            if norm is Norm.BATCH:
                layers.append(nn.BatchNorm1d(d_out))
            elif norm is Norm.LAYER:
                layers.append(nn.LayerNorm(d_out))
            layers.append(activation.module())
            d_in = d_out
        super().__init__(*layers)
        self.d_out = d_in


def _check_expert_args(activation: Activation, norm: Norm | None, hidden: Sequence[int]
                       ) -> None:
    if not isinstance(activation, Activation):
        raise ValueError(f"activation must be an Activation ({[a.name for a in Activation]}), "
                         f"got {activation!r}")
    if norm is not None and not isinstance(norm, Norm):
        raise ValueError(f"norm must be None or a Norm ({[n.name for n in Norm]}), "
                         f"got {norm!r}")
    if not hidden:
        raise ValueError("an expert needs at least one hidden layer")


class ExpertBank(nn.Module):
    """K experts of one shape, each exactly an ``Expert`` (Linear -> [norm] -> activation
    per hidden layer, its own weights and norm parameters), computed as one batched matrix
    product per layer instead of K small ones: on the CPU the difference is several-fold.

    x [B, d_in] (every expert reads the same input) or [B, E, d_in] (each its own)
    -> [B, E, d_out]."""

    def __init__(self, n_experts: int, d_in: int, hidden: Sequence[int],
                 activation: Activation = Activation.RELU, norm: Norm | None = None):
        super().__init__()
        _check_expert_args(activation, norm, hidden)
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        self.n_experts, self.norm = n_experts, norm
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        self.norms = nn.ModuleList()
        for d_out in hidden:
            bound = 1 / math.sqrt(d_in)  # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(torch.empty(n_experts, d_in, d_out
                                                         ).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_experts, 1, d_out
                                                        ).uniform_(-bound, bound)))
            if norm is Norm.BATCH:  # per expert and unit: one BatchNorm over K * d_out features
                self.norms.append(nn.BatchNorm1d(n_experts * d_out))
            elif norm is Norm.LAYER:  # per expert: normalise over its d_out units, own gain
                self.norms.append(_BankLayerNorm(n_experts, d_out))
            d_in = d_out
        self.activation = activation.module()
        self.d_out = d_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = self.n_experts
        if x.dim() == 2:
            h = x.unsqueeze(0)  # [1, B, d_in], broadcast over the experts
        elif x.dim() == 3 and x.shape[1] == K:
            h = x.transpose(0, 1)  # [E, B, d_in]
        else:
            raise ValueError(f"expected [B, d_in] or [B, {K}, d_in], got {tuple(x.shape)}")
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.matmul(h, weight) + bias  # [E, B, d]
            if self.norm is Norm.BATCH:
                B, d = h.shape[1], h.shape[2]
                h = self.norms[layer](h.transpose(0, 1).reshape(B, K * d)
                                      ).reshape(B, K, d).transpose(0, 1)
            elif self.norm is Norm.LAYER:
                h = self.norms[layer](h)
            h = self.activation(h)
        return h.transpose(0, 1)  # [B, E, d_out]


class _BankLayerNorm(nn.Module):
    """LayerNorm over the last dimension of [E, B, d], with a gain and bias per expert."""

    def __init__(self, n_experts: int, d: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(n_experts, 1, d))
        self.bias = nn.Parameter(torch.zeros(n_experts, 1, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h, h.shape[-1:]) * self.gain + self.bias


class Gate(nn.Module):
    """g = softmax(x W + M) [B, E]; ``allowed`` [E] booleans sets M = -inf where False, so a
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
    """sum_k g_k E_k: gates [B, E], outputs [B, E, d] -> [B, d]. A broadcast product, not
    einsum: on the CPU einsum turns this into B tiny matrix products, ~10x slower."""
    return (gates.unsqueeze(-1) * outputs).sum(dim=1)


class FeatureGate(nn.Module):
    """v -> v * 2 sigmoid(v B_k A_k) for each of ``n_experts`` experts k (HoME's
    feature-gate): B_k [d, r], A_k [r, d] with A_k = 0 at the start, so every gate is exactly
    1 and each expert first sees the plain input; a gate can then scale each feature
    anywhere in (0, 2). v [B, d] -> [B, n_experts, d], one gated copy per expert."""

    def __init__(self, d_in: int, rank: int, n_experts: int = 1):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.down = nn.Parameter(torch.randn(n_experts, d_in, rank) / math.sqrt(d_in))  # B
        self.up = nn.Parameter(torch.zeros(n_experts, rank, d_in))  # A

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        logits = torch.matmul(torch.matmul(v.unsqueeze(0), self.down), self.up)  # [E, B, d]
        return (v.unsqueeze(0) * 2 * torch.sigmoid(logits)).transpose(0, 1)


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
    """Mean L2 norm of each expert's output: outputs [N, E, d] -> [E]."""
    if outputs.dim() != 3:
        raise ValueError("outputs must be [N, E, d]")
    return outputs.norm(dim=-1).mean(dim=0)


def scale_spread(outputs: torch.Tensor) -> float:
    """Largest over smallest expert output scale (1: every expert on one scale)."""
    scales = expert_scales(outputs)
    return float(scales.max() / scales.min().clamp(min=1e-12))


@torch.no_grad()
def gate_mass(gates: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each task's mean gate weight on each expert: {task: [N, E]} -> [T, E] (task order)."""
    return torch.stack([g.float().mean(dim=0) for g in gates.values()])


def degradation(mass: torch.Tensor, shared: Sequence[int], relative: bool = False
                ) -> torch.Tensor:
    """For each shared expert, the share of its gate mass (summed over tasks) that its
    heaviest task takes: 1/n when the n tasks that read it use it equally, 1 when one task
    owns it. mass [T, E] from ``gate_mass`` -> [len(shared)].

    ``relative=True`` rescales to (share - 1/n) / (1 - 1/n), 0 for equal use and 1 for one
    owner, so experts read by different numbers of tasks compare (n counts the tasks with
    non-zero mass: a masked gate gives exactly zero; nan where n = 1)."""
    columns = mass[:, list(shared)]  # [T, S]
    share = columns.max(dim=0).values / columns.sum(dim=0).clamp(min=1e-12)
    if not relative:
        return share
    readers = (columns > 0).sum(dim=0).float()
    floor = 1 / readers
    return torch.where(readers > 1, (share - floor) / (1 - floor).clamp(min=1e-12),
                       torch.full_like(share, float("nan")))


def own_expert_share(mass: torch.Tensor, own: Sequence[Sequence[int]]) -> torch.Tensor:
    """Gate mass each task puts on its own (task-specific) experts: mass [T, E], own[t] the
    expert indices of task t -> [T] (low for a sparse task: underfitting)."""
    if len(own) != len(mass):
        raise ValueError(f"need the own experts of each of the {len(mass)} tasks")
    return torch.stack([mass[t, list(idx)].sum() for t, idx in enumerate(own)])

