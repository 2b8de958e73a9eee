"""Baselines that several chapters compare against.

* ``Popularity``: score every item by how often it was interacted with in training; the
  floor any personalised model must clear.
* ``MatrixFactorization``: one vector per user and per item, score = dot product plus an
  item bias (Koren, Bell and Volinsky 2009, bibkey koren2009mf), trained here with a
  softmax over all items, the loss the retrieval chapters also use.
* ``SASRec``: self-attentive sequential recommendation (Kang and McAuley 2018, bibkey
  kang2018sasrec), the reference of the sequential retrieval chapters.

The multi-task rankers of the ranking chapters are in ``models.multitask_baselines``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.data.sequences import SeqBatch, WindowBatch
from recfunnel.layers.attention import PreNormBlock


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


@dataclass(frozen=True)
class SASRecConfig:
    """Defaults follow RecBole 1.2.1's SASRec, so the two can be compared on one split."""

    n_items: int  # V, including the padding id 0
    max_len: int = 50  # L: positions of the input window
    d_model: int = 64  # D
    n_heads: int = 2  # H
    n_layers: int = 2
    d_ffn: int = 256
    p_dropout: float = 0.5
    attn_dropout: float | None = None  # on the attention probabilities; None: p_dropout
    attention: str = "sdpa"  # "sdpa" (fused kernels) or "eager" (the [L, L] map in memory)
    # a second item table for the output (scoring) side instead of the shared input one;
    # the paper shares them (Section III-E), RecBole too
    separate_output: bool = False


class SASRec(nn.Module):
    """A causal Transformer over the item sequence; the output at position t predicts
    the item at t + 1 by a dot product with the (shared) item embeddings.

    Paper -> code (Kang and McAuley 2018, Sections III-A to III-E): M -> self.item_emb,
    P -> self.pos_emb, the self-attention blocks -> self.blocks (norms placed before each
    sub-layer), F_t -> encode(...)[:, t], r_{i,t} = F_t . M_i -> the logits.
    [proposed] Trained with a softmax over all items at every position (RecBole's "CE"
    loss) rather than the paper's one sampled negative per position.
    """

    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.dropout = nn.Dropout(cfg.p_dropout)
        self.blocks = nn.ModuleList(
            PreNormBlock(cfg.d_model, cfg.n_heads, cfg.d_ffn, cfg.p_dropout, cfg.attention,
                         cfg.attn_dropout)
            for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out_emb = (nn.Embedding(cfg.n_items, cfg.d_model, padding_idx=0)
                        if cfg.separate_output else None)
        for table in (self.item_emb, self.pos_emb, self.out_emb):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)

    def encode(self, user_seq: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """user_seq [B, L] (left-padded) -> hidden states [B, L, D]."""
        B, L = user_seq.shape
        positions = torch.arange(self.cfg.max_len - L, self.cfg.max_len,
                                 device=user_seq.device)  # the newest item sits at max_len-1
        x = self.item_emb(user_seq) * math.sqrt(self.cfg.d_model) + self.pos_emb(positions)
        x = self.dropout(x) * ~is_pad[..., None]  # [B, L, D], zero at padding
        for block in self.blocks:
            x = block(x, is_pad, causal=True)
        return self.norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., V] scores of every item; the padding id can never win."""
        logits = hidden @ self.item_vectors().T
        return logits.index_fill(-1, torch.tensor([0], device=logits.device), float("-inf"))

    def item_vectors(self) -> torch.Tensor:
        """[V, D] the item table an index holds (row 0 is padding): the output table when
        ``separate_output``, else the shared one."""
        return (self.item_emb if self.out_emb is None else self.out_emb).weight

    def query_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """[B, D] the last position's state after each user's newest max_len items."""
        batch = batch.newest(self.cfg.max_len)
        return self.encode(batch.user_seq, batch.is_pad)[:, -1]

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, V]: the next-item scores after each user's history (its newest max_len
        items)."""
        return self.item_logits(self.query_vectors(batch))

    def forward(self, batch: WindowBatch) -> torch.Tensor:
        """Cross-entropy over all items at every position that has a target."""
        hidden = self.encode(batch.user_seq, batch.is_pad)  # [B, L, D]
        has_target = batch.target_seq > 0
        logits = self.item_logits(hidden[has_target])  # [N, V]
        return F.cross_entropy(logits, batch.target_seq[has_target])
