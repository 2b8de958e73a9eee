"""Differentiable sorting and the relaxed "is this item among the top m?" it gives.

NeuralSort (Grover et al., ICLR 2019) relaxes the permutation matrix that sorts scores s
(n of them) in descending order: row r of

    P_hat[r, :] = softmax(((n + 1 - 2r) s - A_s 1) / tau),   A_s[i, j] = |s_i - s_j|,

is a distribution over the items for rank r; as tau -> 0 it becomes the hard permutation
(row r a one-hot on the r-th largest score). Summing rows 1..m gives each item's chance of
being selected in the top m, which the cascade losses of chapter 11 (ARF, LCRON) train.
Written once here; no maintained package (torchsort, diffsort) installs on every platform the
course supports, and NeuralSort is a few lines.
"""

from __future__ import annotations

import torch


def neural_sort(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """scores [B, n] -> P_hat [B, n, n]: row r is the relaxed one-hot of the item ranked r
    (0-based, descending) at temperature ``tau``."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    n = scores.shape[-1]
    s = scores.unsqueeze(-1)  # [B, n, 1]
    pairwise = (s - s.transpose(1, 2)).abs().sum(-1, keepdim=True)  # A_s 1: [B, n, 1]
    scale = (n + 1 - 2 * torch.arange(1, n + 1, device=scores.device, dtype=scores.dtype))
    logits = scale.view(1, n, 1) * s.transpose(1, 2) - pairwise.transpose(1, 2)  # [B, n, n]
    return torch.softmax(logits / tau, dim=-1)


def top_m_probability(permutation: torch.Tensor, m: int, mask: torch.Tensor | None = None,
                      detach_total: bool = False) -> torch.Tensor:
    """permutation [B, n, n] (``neural_sort``) -> [B, n]: each item's relaxed probability of
    being among the top ``m``, its mass in rows 0..m-1 over its mass in all rows (NeuralSort's
    rows are distributions, its columns are not). ``mask`` [B, n] (1: a real candidate)
    removes padding from both. ``detach_total``: treat the column sum as a constant, as
    LCRON's released code does; the gradient is then no longer the loss's gradient, and on
    free scores (``tests/test_lcron.py``) training drifts away from the optimum it first
    approaches."""
    if mask is not None:
        pair = mask.unsqueeze(1) * mask.unsqueeze(2)  # [B, n, n]
        permutation = permutation * pair
    total = permutation.sum(1)  # [B, n]
    if detach_total:
        total = total.detach()
    return permutation[:, :m].sum(1) / (total + 1e-6)


def selection_loss(p_selected: torch.Tensor, is_target: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
    """The set-selection cross-entropy: -log p for targets and -log(1 - p) for the others,
    averaged over every slot of a request (padding counts zero), then over requests.
    p_selected, is_target, mask [B, n] -> scalar."""
    target = is_target.float() * mask
    other = (1 - is_target.float()) * mask
    loss = -(torch.log(p_selected + 1e-6) * target + torch.log(1 - p_selected + 1e-6) * other)
    return loss.mean()
