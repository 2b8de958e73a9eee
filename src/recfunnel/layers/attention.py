"""Self-attention blocks shared by the sequential models (SASRec, KuaiFormer, ELASTIC's
baselines, DimeRec's encoders).

* ``attend``: softmax(Q K^T / sqrt(D_h)) V (Vaswani et al. 2017, bibkey
  vaswani2017attention), either ``"sdpa"`` (``torch.nn.functional.
  scaled_dot_product_attention``: fused kernels, Flash or memory-efficient where the device
  has them) or ``"eager"`` (the textbook three steps, which hold the [B, H, L_q, L_k] map in
  memory; chapter 3 measures the difference).
* ``MultiHeadAttention``: self-attention over ``[B, L, D]`` with an optional causal mask,
  key padding and rotary positions.
* ``CrossAttention``: queries from one sequence, keys and values from another (ELASTIC's
  experts reading behaviours and behaviours reading experts).
* ``PreNormBlock``: LayerNorm, attention, LayerNorm, a ReLU feed-forward; SASRec's block
  (Kang and McAuley 2018, bibkey kang2018sasrec), with the norms before each sub-layer.
* ``LlamaBlock``: RMSNorm, attention with rotary positions, RMSNorm, a SwiGLU feed-forward;
  the "Llama-style" block KuaiFormer names.

Masks use one convention: a boolean ``is_pad`` [B, L] is True at padding (keys there are
ignored), and ``causal=True`` lets position i attend to positions <= i only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """[L, L] boolean, True where attention is allowed (j <= i)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def attention_mask(is_pad: torch.Tensor | None, causal: bool, length: int,
                   device: torch.device) -> torch.Tensor | None:
    """[B, 1, L, L] boolean (True: may attend) from key padding and causality; a query
    whose every key is masked may attend to itself, so no row of the softmax is empty."""
    if is_pad is None and not causal:
        return None
    allowed = causal_mask(length, device) if causal else torch.ones(
        length, length, dtype=torch.bool, device=device)
    allowed = allowed[None, None]  # [1, 1, L, L]
    if is_pad is not None:
        allowed = allowed & ~is_pad[:, None, None, :]  # [B, 1, L, L] keys that are real
    return allowed | torch.eye(length, dtype=torch.bool, device=device)


ATTENTION_IMPLS = ("sdpa", "eager")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
           impl: str = "sdpa", p_dropout: float = 0.0, is_causal: bool = False
           ) -> torch.Tensor:
    """q [B, H, L_q, D_h], k and v [B, H, L_k, D_h], mask broadcastable to [B, H, L_q, L_k]
    (True: may attend) or ``is_causal`` (L_q = L_k, no mask) -> [B, H, L_q, D_h]."""
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_dropout,
                                              is_causal=is_causal)
    if impl != "eager":
        raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, L_q, L_k]
    if is_causal:
        mask = causal_mask(q.shape[-2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1)
    return (F.dropout(probs, p_dropout) if p_dropout else probs) @ v


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g (Zhang and Sennrich 2019), Llama's normalisation."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of x [B, H, L, D_h] at positions [L]:
    each pair of channels is rotated by an angle proportional to the position, so the dot
    product of a query and a key depends on their distance."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None, :]  # [L, D_h / 2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention over [B, L, D]; heads H, D_h = D / H."""

    def __init__(self, d_model: int, n_heads: int, p_dropout: float = 0.0,
                 rotary: bool = False, impl: str = "sdpa"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.n_heads, self.p_dropout, self.rotary, self.impl = n_heads, p_dropout, rotary, impl
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, is_pad: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        B, L, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)  # [B, H, L, D_h]
        if self.rotary:
            positions = torch.arange(L, device=x.device)
            q, k = rotate(q, positions), rotate(k, positions)
        p_dropout = self.p_dropout if self.training else 0.0
        if causal and (is_pad is None or not is_pad.any()):  # no [L, L] mask: fused kernels
            attended = attend(q, k, v, None, self.impl, p_dropout, is_causal=True)
        else:
            mask = attention_mask(is_pad, causal, L, x.device)  # [B|1, 1, L, L]
            attended = attend(q, k, v, mask, self.impl, p_dropout)
        return self.out(attended.transpose(1, 2).reshape(B, L, D))  # [B, L, D]


class CrossAttention(nn.Module):
    """Multi-head attention of queries x [B, L_q, D] over a context [B, L_k, D]; keys where
    ``context_pad`` [B, L_k] is True are ignored (every query needs one real key)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def heads(self, x: torch.Tensor, context: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, H, L_q, D_h], k and v [B, H, L_k, D_h]."""
        B, L_q, D = x.shape
        H = self.n_heads
        q = self.query(x).view(B, L_q, H, D // H).transpose(1, 2)
        k, v = self.key_value(context).view(B, -1, 2, H, D // H).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_pad: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.heads(x, context)
        mask = None
        if context_pad is not None and context_pad.any():
            mask = ~context_pad[:, None, None, :]  # [B, 1, 1, L_k]
        attended = attend(q, k, v, mask)  # [B, H, L_q, D_h]
        return self.out(attended.transpose(1, 2).flatten(2))  # [B, L_q, D]

    @torch.no_grad()
    def weights(self, x: torch.Tensor, context: torch.Tensor,
                context_pad: torch.Tensor | None = None) -> torch.Tensor:
        """The attention map [B, H, L_q, L_k] of ``forward`` (for diagnostics and figures)."""
        q, k, _ = self.heads(x, context)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if context_pad is not None:
            scores = scores.masked_fill(context_pad[:, None, None, :], float("-inf"))
        return scores.softmax(-1)


class PreNormBlock(nn.Module):
    """x + Attn(LN(x)), then x + FFN(LN(x)) with a ReLU feed-forward (SASRec's block).
    ``attn_dropout`` (default: ``p_dropout``) drops attention probabilities; drawing that
    [B, H, L, L] mask dominates a CPU step at a few hundred positions."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, p_dropout: float = 0.0,
                 impl: str = "sdpa", attn_dropout: float | None = None):
        super().__init__()
        self.norm_attn, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        attn_dropout = p_dropout if attn_dropout is None else attn_dropout
        self.attn = MultiHeadAttention(d_model, n_heads, attn_dropout, impl=impl)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ffn), nn.ReLU(), nn.Dropout(p_dropout),
                                 nn.Linear(d_ffn, d_model))
        self.dropout = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, is_pad: torch.Tensor | None = None,
                causal: bool = True) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_attn(x), is_pad, causal))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class SwiGLU(nn.Module):
    """FFN(x) = W_2 (SiLU(W_1 x) * W_3 x), Llama's feed-forward (Shazeer 2020)."""

    def __init__(self, d_model: int, d_ffn: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ffn, bias=False)
        self.up = nn.Linear(d_model, d_ffn, bias=False)
        self.down = nn.Linear(d_ffn, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class LlamaBlock(nn.Module):
    """x + Attn(RMSNorm(x)) with rotary positions, then x + SwiGLU(RMSNorm(x)).

    ``p_dropout`` drops the two residual branches only; like Llama, no dropout on the
    attention probabilities (on a CPU, drawing that [B, H, L, L] mask cost more than the
    attention itself)."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, p_dropout: float = 0.0,
                 rotary: bool = True):
        super().__init__()
        self.norm_attn, self.norm_ffn = RMSNorm(d_model), RMSNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, rotary=rotary)
        self.ffn = SwiGLU(d_model, d_ffn)
        self.dropout = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, is_pad: torch.Tensor | None = None,
                causal: bool = True) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_attn(x), is_pad, causal))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class TargetAttentionPool(nn.Module):
    """DIN-style target attention (Zhou et al. 2018): a sequence g [B, L, D_k] pooled by
    softmax_j(q^T W g_j) with the candidate q [B, D_q], or with each of C candidates
    q [B, C, D_q] (-> [B, C, D_k], the sequence read once for all of them); padding
    (``is_pad`` [B, L] True) gets no weight, and a row with no real entry pools to zeros."""

    def __init__(self, d_query: int, d_key: int):
        super().__init__()
        self.bilinear = nn.Linear(d_key, d_query, bias=False)  # W

    def forward(self, query: torch.Tensor, keys: torch.Tensor, is_pad: torch.Tensor
                ) -> torch.Tensor:
        single = query.dim() == 2
        queries = query.unsqueeze(1) if single else query  # [B, C, D_q]
        scores = queries @ self.bilinear(keys).transpose(1, 2)  # [B, C, L]
        scores = scores.masked_fill(is_pad.unsqueeze(1), float("-inf"))
        weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # all-pad rows: 0
        pooled = weights @ keys  # [B, C, D_k]
        return pooled.squeeze(1) if single else pooled
