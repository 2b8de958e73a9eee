"""Self-attention blocks shared by the sequential models (SASRec, KuaiFormer, ELASTIC's
baselines, DimeRec's encoders).

* ``MultiHeadAttention``: scaled dot-product attention (Vaswani et al. 2017, bibkey
  vaswani2017attention) over ``[B, L, D]`` with an optional causal mask, key padding and
  rotary positions; computed with ``torch.nn.functional.scaled_dot_product_attention``.
* ``PreNormBlock``: LayerNorm, attention, LayerNorm, a ReLU feed-forward; SASRec's block
  (Kang and McAuley 2018, bibkey kang2018sasrec), with the norms before each sub-layer.
* ``LlamaBlock``: RMSNorm, attention with rotary positions, RMSNorm, a SwiGLU feed-forward;
  the "Llama-style" block KuaiFormer names.

Masks use one convention: a boolean ``is_pad`` [B, L] is True at padding (keys there are
ignored), and ``causal=True`` lets position i attend to positions <= i only.
"""

from __future__ import annotations

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
                 rotary: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads, self.p_dropout, self.rotary = n_heads, p_dropout, rotary
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
        mask = attention_mask(is_pad, causal, L, x.device)  # [B|1, 1, L, L]
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.p_dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(B, L, D))  # [B, L, D]


class PreNormBlock(nn.Module):
    """x + Attn(LN(x)), then x + FFN(LN(x)) with a ReLU feed-forward (SASRec's block)."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, p_dropout: float = 0.0):
        super().__init__()
        self.norm_attn, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, p_dropout)
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
