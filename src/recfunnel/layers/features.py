"""Categorical features as one vector: the input every ranking model of the course shares.

A ranker's input row is a handful of categorical fields (user id, item id, creator, topic,
duration bucket, ...). ``FieldEmbedding`` gives each field its own table and concatenates
the looked-up vectors, v = e_1(x_1) + ... + e_F(x_F) (concatenation), the "feature
embedding" that MMoE, PLE and HoME all read. ``masked_mean`` pools a padded sequence of
such vectors (a user's recent items) into one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FieldEmbedding(nn.Module):
    """x [B, F] int64 ids (field f below ``cardinalities[f]``) -> v [B, F * d]."""

    def __init__(self, cardinalities: Sequence[int], d: int, init_std: float = 0.05):
        super().__init__()
        if not cardinalities or min(cardinalities) < 1:
            raise ValueError("need at least one field, each with at least one id")
        self.tables = nn.ModuleList(nn.Embedding(n, d) for n in cardinalities)
        for table in self.tables:
            nn.init.normal_(table.weight, std=init_std)
        self.register_buffer("limits", torch.as_tensor(list(cardinalities)))
        self.d_out = len(cardinalities) * d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != len(self.tables):
            raise ValueError(f"expected ids [B, {len(self.tables)}], got {tuple(x.shape)}")
        bad = ((x < 0) | (x >= self.limits)).any(dim=0)
        if bad.any():
            raise IndexError(f"ids of field {int(bad.nonzero()[0])} lie outside its table")
        return torch.cat([table(x[:, f]) for f, table in enumerate(self.tables)], dim=-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B, L, d], mask [B, L] bool (True: a real position) -> [B, d], the mean over the
    real positions; zeros for a row without any."""
    weights = mask.to(x.dtype)
    return (x * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
