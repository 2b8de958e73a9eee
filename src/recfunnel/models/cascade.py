"""The two stages of a cascade, as RecFlow's and LCRON's benchmarks build them.

* ``TwoTower`` (DSSM): a user tower over the user's fields and the mean of their recent
  items, an item tower over the item's fields, score = <u, v>. Cheap enough to score every
  candidate retrieval hands on, so it serves as retrieval in LCRON's two-stage task and as
  pre-ranking in chapter 11's funnel.
* ``DIN`` (Zhou et al., KDD 2018): the candidate attends over the user's recent items
  (target attention), and an MLP reads user, candidate and the attended history.

Both take a ``data.cascade.CascadeBatch`` and return logits [B, C], one per candidate.
Sizes follow LCRON's released settings: embeddings of 8, MLPs [128, 64, 32] (two-tower) and
[128, 128, 32, 1] (DIN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.data.cascade import CascadeBatch
from recfunnel.layers.attention import TargetAttentionPool
from recfunnel.layers.features import FieldEmbedding, masked_mean


@dataclass(frozen=True)
class CascadeConfig:
    user_cardinalities: tuple[int, ...]  # user, age, gender, province (+1: 0 is padding)
    item_cardinalities: tuple[int, ...]  # item, creator, topic (+1)
    d_emb: int = 8
    tower: tuple[int, ...] = (128, 64, 32)  # two-tower MLPs; the last is the vector size
    din: tuple[int, ...] = (128, 128, 32)  # DIN's hidden layers before its logit


def mlp(d_in: int, widths: Sequence[int], last_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers.append(nn.Linear(d_in, width))
        if i < len(widths) - 1 or last_activation:
            layers.append(nn.ReLU())
        d_in = width
    return nn.Sequential(*layers)


class CascadeEmbedding(nn.Module):
    """The users' fields -> [B, Fu * d]; items (candidates or history) [..., 3] -> [..., 3d]."""

    def __init__(self, cfg: CascadeConfig):
        super().__init__()
        self.user = FieldEmbedding(cfg.user_cardinalities, cfg.d_emb)
        self.item = FieldEmbedding(cfg.item_cardinalities, cfg.d_emb)
        self.d_user, self.d_item = self.user.d_out, self.item.d_out

    def items(self, ids: torch.Tensor) -> torch.Tensor:
        shape = ids.shape[:-1]
        return self.item(ids.reshape(-1, ids.shape[-1])).reshape(*shape, self.d_item)


class TwoTower(nn.Module):
    """DSSM: u = MLP_u([user fields; mean of history items]), v = MLP_v(item fields),
    logit = <u, v>. batch -> [B, C]."""

    def __init__(self, cfg: CascadeConfig):
        super().__init__()
        self.embed = CascadeEmbedding(cfg)
        self.user_tower = mlp(self.embed.d_user + self.embed.d_item, cfg.tower)
        self.item_tower = mlp(self.embed.d_item, cfg.tower)

    def user_vectors(self, batch: CascadeBatch) -> torch.Tensor:
        seen = batch.history[..., 0] > 0  # [B, L]
        history = masked_mean(self.embed.items(batch.history), seen)  # [B, 3d]
        return self.user_tower(torch.cat([self.embed.user(batch.users), history], -1))

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_tower(self.embed.items(items))  # [..., D]

    def forward(self, batch: CascadeBatch) -> torch.Tensor:
        u = self.user_vectors(batch)  # [B, D]
        v = self.item_vectors(batch.items)  # [B, C, D]
        return (v @ u.unsqueeze(-1)).squeeze(-1)  # [B, C]


class DIN(nn.Module):
    """logit = MLP([user; candidate; attention(candidate, history); candidate * attended])
    with DIN's target attention over the recent items. batch -> [B, C]."""

    def __init__(self, cfg: CascadeConfig):
        super().__init__()
        self.embed = CascadeEmbedding(cfg)
        d = self.embed.d_item
        self.attention = TargetAttentionPool(d, d)
        self.head = nn.Sequential(mlp(self.embed.d_user + 3 * d, cfg.din, last_activation=True),
                                  nn.Linear(cfg.din[-1], 1))

    def forward(self, batch: CascadeBatch) -> torch.Tensor:
        candidates = self.embed.items(batch.items)  # [B, C, d]
        history = self.embed.items(batch.history)  # [B, L, d]
        attended = self.attention(candidates, history, batch.history[..., 0] == 0)  # [B, C, d]
        user = self.embed.user(batch.users).unsqueeze(1).expand(-1, candidates.shape[1], -1)
        x = torch.cat([user, candidates, attended, candidates * attended], -1)
        return self.head(x).squeeze(-1)  # [B, C]
