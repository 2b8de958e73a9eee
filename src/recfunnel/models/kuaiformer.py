"""KuaiFormer: Transformer-based retrieval at Kuaishou (Liu et al. 2024, bibkey
liu2024kuaiformer, arXiv 2411.10057).

A causal Transformer reads the user's recent positive items (each token an item id plus
bucketised side features, Eqs. 3-5), older items squashed group by group by a small
bidirectional Transformer (adaptive item compression, Section 3.4, Eq. 7), followed by k
learnable query tokens whose outputs are the user's k interests (Eq. 8). An item's score
is its best dot product over the interests (Eq. 9). Training is next-item prediction with
an in-batch softmax, logQ correction and label smoothing (Eqs. 10-11). Serving searches
the item table with ``recfunnel.retrieval`` (exact or FAISS).

What the paper leaves open is marked [proposed]: our choice, explained in chapter 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.data.sequences import SeqBatch
from recfunnel.layers.attention import LlamaBlock, RMSNorm


@dataclass(frozen=True)
class KuaiFormerConfig:
    n_items: int  # V, including the padding id 0
    side_buckets: tuple[int, ...] = ()  # F fields: buckets per field, 0 = padding
    d_model: int = 64  # D [proposed]: not reported
    n_heads: int = 2  # H [proposed]
    n_layers: int = 2  # causal layers; the paper finds 4-5 best at its scale
    d_ffn: int = 256  # SwiGLU hidden width [proposed]
    n_interests: int = 4  # k query tokens; Fig. 1 shows 4, the sensitivity study picks 6
    # adaptive compression, oldest first: (number of groups, items per group); the paper's
    # n = 256 scheme is ((2, 64), (5, 16)) with 48 raw items -> 55 tokens
    compression: tuple[tuple[int, int], ...] = ((1, 64), (2, 16))
    n_raw: int = 32  # newest items kept as raw tokens
    p_dropout: float = 0.1  # [proposed]
    smoothing: float = 0.1  # alpha of the label smoothing [proposed]: not reported
    # [proposed, not in the paper] weight of an auxiliary next-item loss at every raw
    # position (SASRec-style), scored against the same in-batch negatives; 0 switches it off
    aux_weight: float = 0.0
    log_q: bool = True  # subtract log Q(i) from in-batch logits (Eq. 10); False: the ablation
    # "in_batch": the paper's softmax over the batch's targets (Eqs. 10-11); "full"
    # [proposed, not in the paper]: a softmax over the whole catalogue, affordable when it
    # holds thousands of items, not billions (no sampling, so no logQ)
    loss: str = "in_batch"

    def __post_init__(self) -> None:
        if self.loss not in ("in_batch", "full"):
            raise ValueError(f"loss must be 'in_batch' or 'full', got {self.loss!r}")

    @property
    def max_len(self) -> int:
        """n: raw items the model reads."""
        return sum(groups * size for groups, size in self.compression) + self.n_raw

    @property
    def n_tokens(self) -> int:
        """Tokens the causal Transformer reads before the query tokens (55 in the paper)."""
        return sum(groups for groups, _ in self.compression) + self.n_raw

    @property
    def attention_pairs(self) -> int:
        """Query-key pairs per head and sequence: the causal layers over the tokens and the
        k query tokens, plus the compressor's bidirectional groups (its cost model)."""
        tokens = self.n_tokens + self.n_interests
        causal = self.n_layers * tokens * (tokens + 1) // 2
        return causal + sum(groups * size ** 2 for groups, size in self.compression)


class KuaiFormerEmbedding(nn.Module):
    """t_i = MLP([LookUp(X, x_i), LookUp(F^1, f_i^1), ..., LookUp(F^F, f_i^F)]) (Eqs. 3-5).

    [proposed] The lookups are scaled by sqrt(D) (as in SASRec and the original
    Transformer) and the item's own embedding is added back after the MLP:
    t_i = sqrt(D) x_i + MLP(sqrt(D) [x_i, f_i]). With the small initial embeddings that a
    shared input/output item table needs, a bare MLP's biases swamp the item's identity and
    training stalls for many epochs; the chapter measures this.
    """

    def __init__(self, cfg: KuaiFormerConfig):
        super().__init__()
        D = cfg.d_model
        self.scale = math.sqrt(D)
        self.item_emb = nn.Embedding(cfg.n_items, D, padding_idx=0)  # X, also the targets
        self.side_embs = nn.ModuleList(nn.Embedding(n, D, padding_idx=0)
                                       for n in cfg.side_buckets)
        self.mlp = nn.Sequential(nn.Linear(D * (1 + len(cfg.side_buckets)), D), nn.SiLU(),
                                 nn.Linear(D, D))
        nn.init.normal_(self.item_emb.weight, std=0.02)
        for emb in self.side_embs:
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, user_seq: torch.Tensor, seq_feats: torch.Tensor | None) -> torch.Tensor:
        """user_seq [B, n], seq_feats [B, n, F] -> tokens [B, n, D]."""
        item = self.item_emb(user_seq) * self.scale  # [B, n, D]
        parts = [item]
        if self.side_embs:
            parts += [emb(seq_feats[..., j]) * self.scale
                      for j, emb in enumerate(self.side_embs)]
        return item + self.mlp(torch.cat(parts, dim=-1))


class AdaptiveCompressor(nn.Module):
    """Older items in groups, each group -> Mean(Bi_Transformer(group)) (Section 3.4).

    [proposed] one encoder per compression level (the paper does not say whether they
    share weights); the mean is over real items only, and an all-padding group becomes a
    padding token.
    """

    def __init__(self, cfg: KuaiFormerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleList(
            LlamaBlock(cfg.d_model, cfg.n_heads, cfg.d_ffn, cfg.p_dropout)
            for _ in cfg.compression)

    def forward(self, tokens: torch.Tensor, is_pad: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, n, D], is_pad [B, n] -> [B, L_c, D], [B, L_c] (L_c = cfg.n_tokens)."""
        B, n, D = tokens.shape
        if n != self.cfg.max_len:
            raise ValueError(f"expected {self.cfg.max_len} positions, got {n}")
        out, out_pad, start = [], [], 0
        for (n_groups, size), encoder in zip(self.cfg.compression, self.encoders,
                                             strict=True):
            end = start + n_groups * size
            groups = tokens[:, start:end].reshape(B * n_groups, size, D)
            group_pad = is_pad[:, start:end].reshape(B * n_groups, size)
            encoded = encoder(groups, group_pad, causal=False)  # bidirectional
            real = (~group_pad)[..., None].to(encoded.dtype)
            pooled = (encoded * real).sum(1) / real.sum(1).clamp(min=1)  # masked mean
            out.append(pooled.view(B, n_groups, D))
            out_pad.append(group_pad.all(dim=1).view(B, n_groups))
            start = end
        out.append(tokens[:, start:])  # the newest n_raw items stay raw
        out_pad.append(is_pad[:, start:])
        return torch.cat(out, dim=1), torch.cat(out_pad, dim=1)


def in_batch_logits(interests: torch.Tensor, target_emb: torch.Tensor,
                    target_ids: torch.Tensor, log_q: torch.Tensor | None) -> torch.Tensor:
    """[B, B] logits of every row's interests against every row's target (Eqs. 9-11).

    interests [B, K, D], target_emb [B, D], target_ids [B], log_q [B] log sampling
    probability of each target (None: no correction). Score = max_k x^T u_k (Eq. 9), minus
    log Q(x) (Eq. 11). [proposed] Another row's target equal to this row's own is an
    accidental hit, not a negative: its logit is set to -inf.
    """
    scores = torch.einsum("bkd,cd->bkc", interests, target_emb).amax(dim=1)  # [B, B]
    if log_q is not None:
        scores = scores - log_q[None, :]
    same = target_ids[None, :] == target_ids[:, None]
    accidental = same & ~torch.eye(len(target_ids), dtype=torch.bool, device=same.device)
    return scores.masked_fill(accidental, float("-inf"))


def smoothed_in_batch_loss(logits: torch.Tensor, smoothing: float,
                           positive: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's label-smoothed loss, read as the sum of its two lines:
    -(1 - a) log p(x+) + sum over the negatives of -(a / |N|) log(1 - p(x~)).
    [unclear] the paper writes log(1 - p) for the negatives, not label smoothing's usual
    log p; it is implemented as written. logits [B, C]; ``positive`` [B] the column of each
    row's positive (None: the diagonal, in-batch); -inf columns are not negatives."""
    rows = torch.arange(len(logits), device=logits.device)
    positive = rows if positive is None else positive
    log_p = logits.log_softmax(dim=1)  # [B, C]
    p = log_p.exp()
    negatives = torch.isfinite(logits)
    negatives[rows, positive] = False
    log_not_p = torch.log1p(-p.clamp(max=1 - 1e-6))
    negative_term = (log_not_p * negatives).sum(dim=1) / negatives.sum(dim=1).clamp(min=1)
    return (-(1 - smoothing) * log_p[rows, positive] - smoothing * negative_term).mean()


class KuaiFormer(nn.Module):
    """Embedding -> adaptive compression -> causal Llama blocks over [tokens, q_1..q_k]
    -> k interests (Eq. 8).

    Paper -> code: X -> self.embedding.item_emb; t_i -> self.embedding(...); the early and
    middle groups -> self.compressor; q_1..q_k -> self.queries; Causal_Transformer ->
    self.blocks; u_1..u_k -> interests(...); Q(x) -> the buffer self.log_q [V].
    The causal mask also orders the query tokens: q_j sees the sequence and q_1..q_{j-1}.
    """

    def __init__(self, cfg: KuaiFormerConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = KuaiFormerEmbedding(cfg)
        self.compressor = AdaptiveCompressor(cfg) if cfg.compression else None
        self.queries = nn.Parameter(0.02 * torch.randn(cfg.n_interests, cfg.d_model))
        self.blocks = nn.ModuleList(
            LlamaBlock(cfg.d_model, cfg.n_heads, cfg.d_ffn, cfg.p_dropout)
            for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        self.register_buffer("log_q", torch.zeros(cfg.n_items))  # no correction until set

    def set_item_frequencies(self, counts: torch.Tensor) -> None:
        """log Q(x) = log of x's share of training targets [proposed] (the paper does not
        say how Q is estimated); items never seen count once, also those beyond the end of
        ``counts`` (a split whose highest item ids were never watched)."""
        counts = torch.as_tensor(counts, dtype=torch.float32)
        V = self.cfg.n_items
        if counts.ndim != 1 or len(counts) > V:
            raise ValueError(f"counts must be a vector of at most {V} items, got "
                             f"{tuple(counts.shape)}")
        # items past the end of ``counts`` (never a training target) count once too
        counts = torch.nn.functional.pad(counts, (0, V - len(counts))).clamp(min=1.0)
        self.log_q.copy_((counts / counts[1:].sum()).log())

    def encode(self, user_seq: torch.Tensor, is_pad: torch.Tensor,
               seq_feats: torch.Tensor | None = None) -> torch.Tensor:
        """user_seq [B, n] left-padded -> top-layer outputs [B, L_c + K, D] of the
        compressed tokens followed by the k query tokens (Eq. 8)."""
        tokens = self.embedding(user_seq, seq_feats) * ~is_pad[..., None]  # [B, n, D]
        if self.compressor is not None:
            tokens, is_pad = self.compressor(tokens, is_pad)  # [B, L_c, D]
        B, K = len(tokens), self.cfg.n_interests
        x = torch.cat([tokens, self.queries.expand(B, K, -1)], dim=1)  # [B, L_c + K, D]
        pad = torch.cat([is_pad, is_pad.new_zeros(B, K)], dim=1)
        for block in self.blocks:
            x = block(x, pad, causal=True)
        return self.norm(x)

    def interests(self, user_seq: torch.Tensor, is_pad: torch.Tensor,
                  seq_feats: torch.Tensor | None = None) -> torch.Tensor:
        """user_seq [B, n] left-padded -> interests u_1..u_k [B, K, D]."""
        return self.encode(user_seq, is_pad, seq_feats)[:, -self.cfg.n_interests:]

    def item_vectors(self) -> torch.Tensor:
        """[V, D] the item table that serving searches (row 0 is padding)."""
        return self.embedding.item_emb.weight

    def query_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """[B, K, D] the K interests, one index query each (Eq. 9 takes the best)."""
        return self.interests(batch.user_seq, batch.is_pad, batch.seq_feats)

    def catalogue_logits(self, queries: torch.Tensor) -> torch.Tensor:
        """queries [..., D] -> [..., V] dot products with every item; padding is -inf."""
        logits = queries @ self.item_vectors().T
        return logits.index_fill(-1, torch.tensor([0], device=logits.device), float("-inf"))

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, V] best-interest score of every item (Eq. 9); padding can never win."""
        return self.catalogue_logits(self.query_vectors(batch)).amax(dim=1)  # [B, K, V] -> [B, V]

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """The label-smoothed softmax (Eq. 11) over the batch's targets with logQ correction
        (Eq. 10), or over the whole catalogue (``loss="full"``), plus ``aux_weight`` times
        the auxiliary next-item loss of the raw positions."""
        K = self.cfg.n_interests
        hidden = self.encode(batch.user_seq, batch.is_pad, batch.seq_feats)
        if self.cfg.loss == "full":
            logits = self.catalogue_logits(hidden[:, -K:]).amax(dim=1)  # [B, V], Eq. 9
            loss = smoothed_in_batch_loss(logits, self.cfg.smoothing, batch.target_ids)
        else:
            target_emb = self.embedding.item_emb(batch.target_ids)  # [B, D]
            log_q = self.log_q[batch.target_ids] if self.cfg.log_q else None
            logits = in_batch_logits(hidden[:, -K:], target_emb, batch.target_ids, log_q)
            loss = smoothed_in_batch_loss(logits, self.cfg.smoothing)
        if self.cfg.aux_weight > 0:
            raw = hidden[:, -K - self.cfg.n_raw:-K]  # [B, n_raw, D] outputs of raw items
            loss = loss + self.cfg.aux_weight * self.next_item_loss(raw, batch)
        return loss

    def next_item_loss(self, raw: torch.Tensor, batch: SeqBatch) -> torch.Tensor:
        """[proposed] Each raw position predicts the item after it (the last one the
        target): against the batch's targets as negatives, logQ-corrected, with accidental
        hits masked, or (``loss="full"``) against the whole catalogue, as SASRec's
        all-position loss. raw [B, n_raw, D] -> scalar."""
        n_raw = raw.shape[1]
        items = torch.cat([batch.user_seq[:, -n_raw:], batch.target_ids[:, None]], dim=1)
        current, following = items[:, :-1], items[:, 1:]  # [B, n_raw] each
        valid = (current != 0) & (following != 0)
        if self.cfg.loss == "full":
            log_p = self.catalogue_logits(raw).log_softmax(dim=-1)  # [B, n_raw, V]
            log_p = log_p.gather(-1, following[..., None])[..., 0]  # -inf where padding
            return -log_p.where(valid, 0.0).sum() / valid.sum().clamp(min=1)
        candidates = batch.target_ids  # [C = B]
        positive = (raw * self.embedding.item_emb(following)).sum(-1, keepdim=True)
        negative = raw @ self.embedding.item_emb(candidates).T  # [B, n_raw, C]
        if self.cfg.log_q:
            positive = positive - self.log_q[following][..., None]
            negative = negative - self.log_q[candidates]
        negative = negative.masked_fill(following[..., None] == candidates, float("-inf"))
        log_p = torch.cat([positive, negative], dim=-1).log_softmax(dim=-1)[..., 0]
        return -(log_p * valid).sum() / valid.sum().clamp(min=1)
