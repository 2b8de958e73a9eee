"""Baselines that several chapters compare against.

* ``Popularity``: score every item by how often it was interacted with in training; the
  floor any personalised model must clear.
* ``MatrixFactorization``: one vector per user and per item, score = dot product plus an
  item bias (Koren, Bell and Volinsky 2009, bibkey koren2009mf), trained here with a
  softmax over all items, the loss the retrieval chapters also use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class Popularity:
    """Rank items by their training interaction count (the same list for every user)."""

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.counts = torch.zeros(n_items)

    def fit(self, item_ids: torch.Tensor) -> Popularity:
        """item_ids: [N] every training interaction's item."""
        if item_ids.numel() and (item_ids.min() < 0 or item_ids.max() >= self.n_items):
            raise IndexError(f"item ids must lie in [0, {self.n_items})")
        self.counts = torch.bincount(item_ids.flatten().cpu(), minlength=self.n_items).float()
        return self

    def score_all(self, user_ids: torch.Tensor) -> torch.Tensor:
        """[B] -> [B, V]: every user gets the item counts."""
        return self.counts.expand(len(user_ids), -1)


@dataclass(frozen=True)
class MFConfig:
    n_users: int
    n_items: int
    d_model: int = 32  # D: width of the user and item vectors
    init_std: float = 0.1


class MatrixFactorization(nn.Module):
    """score(u, i) = p_u . q_i + b_i, trained with a softmax over all items.

    Paper -> code: p_u -> self.user_emb, q_i -> self.item_emb, b_i -> self.item_bias.
    The loss is -log softmax_i(score(u, .))[i+] for each observed pair (u, i+), i.e.
    cross-entropy over the whole catalogue (feasible at the course's catalogue sizes).
    """

    def __init__(self, cfg: MFConfig):
        super().__init__()
        self.cfg = cfg
        self.user_emb = nn.Embedding(cfg.n_users, cfg.d_model)
        self.item_emb = nn.Embedding(cfg.n_items, cfg.d_model)
        self.item_bias = nn.Parameter(torch.zeros(cfg.n_items))
        nn.init.normal_(self.user_emb.weight, std=cfg.init_std)
        nn.init.normal_(self.item_emb.weight, std=cfg.init_std)

    def score_all(self, user_ids: torch.Tensor) -> torch.Tensor:
        """[B] user ids -> [B, V] scores of every item."""
        user_vec = self.user_emb(user_ids)  # [B, D]
        return user_vec @ self.item_emb.weight.T + self.item_bias  # [B, V]

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """batch = (user_ids [B], item_ids [B]) observed pairs -> scalar loss."""
        user_ids, item_ids = batch
        return F.cross_entropy(self.score_all(user_ids), item_ids)
