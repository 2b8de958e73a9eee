"""ELASTIC: Efficient Linear Attention for SequenTial Interest Compression (Deng et al.
2024, bibkey deng2024elastic).

A long behaviour sequence is read by a small, fixed number k of *interest experts*. Each
linear dispatcher attention (LDA) layer lets the experts read the behaviours (attention
map [k, L]) and the behaviours read the experts (map [L, k]), so a layer costs O(L k)
instead of self-attention's O(L^2). The experts are drawn per user from a large learnable
*interest memory* (IMR) through product keys: capacity grows with the memory size N while
the compute per user stays that of k experts.

The authors withdrew the preprint (v4, February 2025) and its method section could not be
read, so the layer equations below are this course's reconstruction from the abstract
(chapter 3 says so). The realisation:

* IMR (reconstructed Section 3.2): q = BN(W_q masked_mean(X0)); the top-k slots of a
  product-key memory; experts I0_j = k softmax(sigma)_j M[slot_j] + S_j, with learned slot
  embeddings S (so the k experts differ) and the softmax weights carrying the gradient to
  the keys. ``memory_size=None`` gives the ablation "no IMR": I0 = S, global experts.
* LDA (reconstructed Section 3.3), per layer, pre-norm:
  I~ = I + MHA(I, X) (aggregate: experts read behaviours, padding masked);
  X' = X + MHA(X, I~) (dispatch: behaviours read experts);
  X'' = X' + FFN(X'), I'' = I~ + FFN(I~).
* Causality (reconstructed Section 3.4, option a): the model predicts only the item after
  the newest one, trained on random cut points per user; the experts of a prefix never see
  a later item. Chunk-causal dispatching (option b) is an exercise of the chapter.
* Output (3.5): u = LN(X_L) at the newest position; scores u . e_i over all items, trained
  with a softmax over the whole catalogue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from recfunnel.data.sequences import (
    SeqBatch,
)
from recfunnel.layers.attention import CrossAttention
from recfunnel.layers.memory import MemoryRead, ProductKeyMemory


@dataclass(frozen=True)
class ElasticConfig:
    n_items: int  # V, including the padding id 0
    max_len: int = 200  # L: positions of the input window
    d_model: int = 64  # D
    n_heads: int = 2  # H
    n_layers: int = 2
    d_ffn: int = 128
    n_experts: int = 8  # k: interest experts per user
    memory_size: int | None = 1_024  # N slots of the interest memory (a square); None: no IMR
    top_c: int = 8  # product-key candidates kept per half-key
    p_dropout: float = 0.2
    balance_weight: float = 0.0  # weight of the slot-usage balancing loss [proposed]


class FeedForward(nn.Sequential):
    """Linear, GELU, dropout, linear."""

    def __init__(self, d_model: int, d_ffn: int, p_dropout: float):
        super().__init__(nn.Linear(d_model, d_ffn), nn.GELU(), nn.Dropout(p_dropout),
                         nn.Linear(d_ffn, d_model))


class InterestMemoryRetrieval(nn.Module):
    """IMR: a user's k initial experts, read from a product-key memory by a query pooled
    from the behaviour embeddings (or the k global slot embeddings alone without memory)."""

    def __init__(self, cfg: ElasticConfig):
        super().__init__()
        self.n_experts = cfg.n_experts
        self.slot_emb = nn.Parameter(torch.empty(cfg.n_experts, cfg.d_model))  # S [k, D]
        nn.init.orthogonal_(self.slot_emb)  # distinct experts from the start
        self.memory = None
        if cfg.memory_size is not None:
            self.query = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model),
                                       nn.BatchNorm1d(cfg.d_model))
            self.memory = ProductKeyMemory(cfg.memory_size, cfg.d_model, cfg.d_model,
                                           cfg.top_c, cfg.n_experts)

    def read(self, x: torch.Tensor, is_pad: torch.Tensor) -> MemoryRead:
        """x [B, L, D] behaviour embeddings -> the memory's top-k slots for each user."""
        real = (~is_pad).float()[..., None]  # [B, L, 1]
        pooled = (x * real).sum(1) / real.sum(1).clamp(min=1.0)  # masked mean, [B, D]
        return self.memory(self.query(pooled))

    def forward(self, x: torch.Tensor, is_pad: torch.Tensor
                ) -> tuple[torch.Tensor, MemoryRead | None]:
        """-> experts I0 [B, k, D] and the memory read (None without memory)."""
        slots = self.slot_emb.expand(len(x), -1, -1)  # [B, k, D]
        if self.memory is None:
            return slots, None
        read = self.read(x, is_pad)
        weights = read.scores.softmax(-1) * self.n_experts  # [B, k], mean 1
        return weights[..., None] * read.values + slots, read


class DispatcherLayer(nn.Module):
    """One LDA layer: experts aggregate the behaviours, then dispatch back to them."""

    def __init__(self, cfg: ElasticConfig):
        super().__init__()
        D = cfg.d_model
        self.aggregate = CrossAttention(D, cfg.n_heads)  # experts read behaviours, [k, L]
        self.dispatch = CrossAttention(D, cfg.n_heads)  # behaviours read experts, [L, k]
        self.norm_experts, self.norm_behaviours = nn.LayerNorm(D), nn.LayerNorm(D)
        self.norm_experts_2, self.norm_behaviours_2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.norm_experts_ffn, self.norm_behaviours_ffn = nn.LayerNorm(D), nn.LayerNorm(D)
        self.ffn_experts = FeedForward(D, cfg.d_ffn, cfg.p_dropout)
        self.ffn_behaviours = FeedForward(D, cfg.d_ffn, cfg.p_dropout)
        self.dropout = nn.Dropout(cfg.p_dropout)

    def forward(self, x: torch.Tensor, experts: torch.Tensor, is_pad: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, D], experts [B, k, D] -> both updated."""
        experts = experts + self.dropout(self.aggregate(
            self.norm_experts(experts), self.norm_behaviours(x), is_pad))  # I~
        x = x + self.dropout(self.dispatch(
            self.norm_behaviours_2(x), self.norm_experts_2(experts)))  # X'
        x = x + self.dropout(self.ffn_behaviours(self.norm_behaviours_ffn(x)))  # X''
        experts = experts + self.dropout(self.ffn_experts(self.norm_experts_ffn(experts)))  # I''
        return x, experts


@dataclass
class ElasticOutput:
    """user [B, D] vectors; behaviours [B, L, D] and experts [B, k, D] after the last
    layer; the memory read of IMR (None without memory)."""

    user: torch.Tensor
    behaviours: torch.Tensor
    experts: torch.Tensor
    read: MemoryRead | None


class Elastic(nn.Module):
    """The sequence encoder and its next-item head (see the module docstring)."""

    def __init__(self, cfg: ElasticConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)  # counted from the newest
        self.imr = InterestMemoryRetrieval(cfg)
        self.layers = nn.ModuleList(DispatcherLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.p_dropout)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def embed(self, user_seq: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """X0 = sqrt(D) E[items] + P [B, L, D], positions counted from the newest item,
        zero at padding."""
        length, max_len = user_seq.shape[1], self.cfg.max_len
        if length > max_len:
            raise ValueError(f"sequence of {length} items is longer than max_len {max_len}")
        positions = torch.arange(max_len - length, max_len, device=user_seq.device)  # [L]
        x = self.item_emb(user_seq) * math.sqrt(self.cfg.d_model) + self.pos_emb(positions)
        return self.dropout(x) * ~is_pad[..., None]

    def encode(self, user_seq: torch.Tensor, is_pad: torch.Tensor) -> ElasticOutput:
        """user_seq [B, L] left-padded, L <= max_len -> the user's vector and states."""
        x = self.embed(user_seq, is_pad)  # X0 [B, L, D]
        experts, read = self.imr(x, is_pad)  # I0 [B, k, D]
        for layer in self.layers:
            x, experts = layer(x, experts, is_pad)
        return ElasticOutput(self.norm(x[:, -1]), x, experts, read)

    @torch.no_grad()
    def expert_attention(self, user_seq: torch.Tensor, is_pad: torch.Tensor
                         ) -> list[torch.Tensor]:
        """Where the experts look: the aggregation map [B, H, k, L] of every layer."""
        maps = []
        x = self.embed(user_seq, is_pad)
        experts, _ = self.imr(x, is_pad)
        for layer in self.layers:
            maps.append(layer.aggregate.weights(layer.norm_experts(experts),
                                                layer.norm_behaviours(x), is_pad))
            x, experts = layer(x, experts, is_pad)
        return maps

    def item_logits(self, user: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, V]; the padding id can never win."""
        logits = user @ self.item_emb.weight.T
        return logits.index_fill(-1, torch.tensor([0], device=logits.device), float("-inf"))

    def item_vectors(self) -> torch.Tensor:
        """[V, D] the item table an index holds (row 0 is padding)."""
        return self.item_emb.weight

    def query_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """[B, D] the user vector after each user's newest max_len items."""
        batch = batch.newest(self.cfg.max_len)
        return self.encode(batch.user_seq, batch.is_pad).user

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, V]: next-item scores after each user's history (its newest max_len items)."""
        return self.item_logits(self.query_vectors(batch))

    def forward(self, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Softmax cross-entropy over all items for the next item, plus the optional
        balancing term: minus the entropy of the batch's average slot weights."""
        batch = batch.newest(self.cfg.max_len)
        out = self.encode(batch.user_seq, batch.is_pad)
        loss = F.cross_entropy(self.item_logits(out.user), batch.target_ids)
        logs = {"next_item": float(loss.detach())}
        if out.read is not None and self.cfg.balance_weight > 0:
            usage = torch.zeros(self.cfg.memory_size, device=loss.device).index_add_(
                0, out.read.slots.flatten(), out.read.scores.softmax(-1).flatten())
            usage = usage / usage.sum()
            balance = (usage * usage.clamp(min=1e-12).log()).sum()  # -entropy
            loss = loss + self.cfg.balance_weight * balance
            logs["balance"] = float(balance.detach())
        return loss, logs


def encoder_gflop(cfg: ElasticConfig) -> float:
    """Forward operations (GFLOP) of the encoder for one user with a full history of
    ``cfg.max_len`` items, counted by ``torch.utils.flop_counter``."""
    model = Elastic(cfg).eval()
    seq = torch.ones(1, cfg.max_len, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model.encode(seq, seq == 0)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def expert_similarity(experts: torch.Tensor) -> torch.Tensor:
    """experts [B, k, D] -> [k, k] cosine similarity between experts, averaged over users
    (an expert collapse shows as off-diagonal values near 1)."""
    unit = F.normalize(experts.float(), dim=-1)
    return (unit @ unit.transpose(1, 2)).mean(0)


@torch.no_grad()
def encode_batches(model: Elastic, batch: SeqBatch, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Experts [B, k, D] and memory slots [B, k] (if any) of every user of ``batch``, on
    the CPU, ``chunk`` users at a time (for the diagnostics)."""
    device = next(model.parameters()).device
    model.eval()
    experts, slots = [], []
    for start in range(0, len(batch), chunk):
        rows = batch[start:start + chunk].to(device)
        out = model.encode(rows.user_seq, rows.is_pad)
        experts.append(out.experts.float().cpu())
        if out.read is not None:
            slots.append(out.read.slots.cpu())
    result = {"experts": torch.cat(experts)}
    if slots:
        result["slots"] = torch.cat(slots)
    return result
