"""A large learnable memory read sparsely through product keys (Lample et al. 2019,
bibkey lample2019pkm).

The memory holds N = n_sub^2 value vectors. Its keys are never stored one by one: key
(a, b) is the concatenation of sub-key a of a first half-table and sub-key b of a second,
so a query's score with key (a, b) is ``q1 . K1[a] + q2 . K2[b]``. The exact top-k over
all N keys is then found by keeping the top-c sub-keys of each half (2 n_sub scores) and
the top-k of their c^2 sums: the search costs O(sqrt(N)) instead of O(N), and only the k
selected values (and the sub-keys that chose them) receive gradients.

ELASTIC (chapter 3) draws each user's interest experts from such a memory; the
ranking chapters can reuse it as a sparse feature memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MemoryRead:
    """What one read returns: slot ids [B, k] (into the N values), their scores [B, k]
    (sum of the two sub-key scores, differentiable) and the values [B, k, D_v]."""

    slots: torch.Tensor
    scores: torch.Tensor
    values: torch.Tensor


class ProductKeyMemory(nn.Module):
    """N = n_slots values of width d_value, searched by queries of width d_query (even)."""

    def __init__(self, n_slots: int, d_query: int, d_value: int, top_c: int, top_k: int):
        super().__init__()
        n_sub = math.isqrt(n_slots)
        if n_sub * n_sub != n_slots:
            raise ValueError(f"n_slots must be a square (product keys), got {n_slots}")
        if d_query % 2:
            raise ValueError(f"d_query must be even (two half-keys), got {d_query}")
        if not 1 <= top_k <= top_c * top_c or top_c > n_sub:
            raise ValueError(f"need top_k <= top_c^2 and top_c <= sqrt(n_slots) = {n_sub}, "
                             f"got top_k={top_k}, top_c={top_c}")
        self.n_slots, self.n_sub, self.top_c, self.top_k = n_slots, n_sub, top_c, top_k
        self.sub_keys = nn.Parameter(torch.randn(2, n_sub, d_query // 2) / math.sqrt(d_query))
        self.values = nn.Embedding(n_slots, d_value)
        nn.init.normal_(self.values.weight, std=d_value ** -0.5)

    def forward(self, query: torch.Tensor) -> MemoryRead:
        """query [B, d_query] -> the top-k slots of the memory."""
        q1, q2 = query.chunk(2, dim=-1)  # [B, d_query / 2] each
        s1, s2 = q1 @ self.sub_keys[0].T, q2 @ self.sub_keys[1].T  # [B, n_sub] each
        top1, idx1 = s1.topk(self.top_c, dim=-1)  # [B, c]
        top2, idx2 = s2.topk(self.top_c, dim=-1)
        pair_scores = (top1[:, :, None] + top2[:, None, :]).flatten(1)  # [B, c^2]
        scores, pair = pair_scores.topk(self.top_k, dim=-1)  # [B, k]
        a = idx1.gather(1, pair // self.top_c)  # sub-key of the first half, [B, k]
        b = idx2.gather(1, pair % self.top_c)
        slots = a * self.n_sub + b  # [B, k] ids in 0..N-1
        return MemoryRead(slots, scores, self.values(slots))

    def score_count(self) -> int:
        """Key scores computed per query: 2 sqrt(N) + c^2 (an exhaustive search needs N)."""
        return 2 * self.n_sub + self.top_c ** 2


def slot_usage(slots: torch.Tensor, n_slots: int) -> dict[str, float]:
    """How evenly reads spread over the memory: ``slots`` [B, k] ids of a batch of reads.

    * ``used``: share of the N slots read at least once;
    * ``entropy``: entropy of the read frequencies over log N (1: perfectly even);
    * ``top1_share``: share of all reads that went to the most-read slot."""
    counts = torch.bincount(slots.flatten().cpu(), minlength=n_slots).double()
    freq = counts / counts.sum()
    nonzero = freq[freq > 0]
    entropy = float(-(nonzero * nonzero.log()).sum() / math.log(n_slots)) if n_slots > 1 else 1.0
    return {"used": float((counts > 0).double().mean()), "entropy": entropy,
            "top1_share": float(freq.max())}
