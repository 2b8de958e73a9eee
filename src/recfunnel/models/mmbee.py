"""MMBee: gift prediction from the live segment's content (MFQ) and from graph-expanded
gifting behaviour (GIE).

Deng et al., KDD 2024 (bibkey deng2024mmbee). The paper's full text could not be read: the
equations below are this book's reading of the card (section 3), each choice named.

MFQ, multi-modal fusion with learnable queries (section 3.1). The segment live at the
impression (and the room's earlier segments in the window) gives tokens X_m [B, L, d_tok]
per modality m (visual, speech, comment), padding where the room had not started:

    u_m'   = mean over live tokens of X_m', normalised      (each other modality's pooled
    X~_m   = X_m - X_m Q_m Q_m^T                              direction; Q_m its orthonormal
                                                             basis: the orthogonal projection,
                                                             segment by segment)
    H      = [X~_v W_v; X~_s W_s; X~_c W_c] + E_mod + E_seg    [B, M L, d] (E_seg: which
                                                             segment of the window)
    Q^(0)  = Q_0 + MLP(e_a + e_cat)                          [B, n_q, d] streamer-aware
    Q^(l+1) = FFN(SelfAttn(CrossAttn(Q^(l), H)))             pre-norm, residual
    h_seg  = [Q^(n_l)_1; ...; Q^(n_l)_{n_q}] W_o              [B, d] (the queries side by
                                                             side: a mean would blur what
                                                             each query learnt to find)

``fusion="mean"`` is the ablation that mean-pools each modality's live tokens and
concatenates them; ``projection="gate"`` the card's other reading (each token scaled by
1 - |cos| with every other modality's direction).

GIE, graph-guided interest expansion (section 3.2; ``models.mmbee_graph`` builds the lists
and pre-trains the node embeddings g): four expanded lists, each pooled by target
attention e^P = sum_j softmax_j(q^T W g_j) g_j, the candidate streamer's g_a reading the
viewer-side lists (U->A, U->A->A) and the viewer's g_u the streamer-side lists (A->U,
A->A->U).

The ranker (section 3.3): logit = MLP([e_u; e_a; e_cat; DIN(watched history); h_seg; g_u; g_a;
e^{U->A}; e^{U->A->A}; e^{A->U}; e^{A->A->U}]), trained with binary cross-entropy on the
gift label. The base model without MFQ and GIE is the DIN part alone (the paper builds on
SIM; at this book's history lengths SIM's search is the whole history).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from recfunnel import checks
from recfunnel.data.ranking import RankBatch
from recfunnel.layers.attention import CrossAttention, MultiHeadAttention, TargetAttentionPool

PATHS = ("gifted", "expanded", "gifters", "similar_gifters")  # U->A, U->A->A, A->U, A->A->U


@dataclass
class GiftBatch(RankBatch):
    """A ranker batch plus what MMBee reads: features [B, 3] (viewer, streamer, the
    streamer's category), history
    [B, H] watched streamers (id + 1, 0 = padding), labels [B, 1]; tokens [B, M, L, d_tok]
    the window's segment tokens per modality, token_pad [B, L] True where the segment was
    not live; the four expanded lists [B, k] (streamers for gifted / expanded, viewers for
    gifters / similar_gifters; id + 1, 0 = padding)."""

    tokens: torch.Tensor | None = None
    token_pad: torch.Tensor | None = None
    gifted: torch.Tensor | None = None
    expanded: torch.Tensor | None = None
    gifters: torch.Tensor | None = None
    similar_gifters: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        B = len(self.features)
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and len(value) != B:
                raise checks.InvalidInputError(f"{f.name}: {len(value)} rows, expected {B}")
        if self.tokens is not None and (self.token_pad is None or
                                        self.tokens.shape[2] != self.token_pad.shape[1]):
            raise checks.InvalidInputError(
                    "token_pad: needed, [B, L], with the L of tokens [B, M, L, d]")


@dataclass(frozen=True)
class MMBeeConfig:
    """Sizes and switches; every ablation of chapter 8 is one field."""

    n_users: int
    n_streamers: int
    n_categories: int = 1  # the streamers' categories (a side feature)
    n_modalities: int = 3
    window: int = 1  # segments per impression (tokens arrive oldest segment first)
    d_token: int = 16
    d_model: int = 32
    n_queries: int = 4
    fusion_layers: int = 1
    heads: int = 2
    fusion: str = "mfq"  # "mfq", "mean" (pool and concatenate), "none" (no content)
    projection: str = "orthogonal"  # "orthogonal", "gate", "none"
    streamer_aware: bool = True  # queries shifted by the streamer (else shared queries)
    graph: bool = True  # GIE's node embeddings and expanded lists
    hidden: tuple[int, ...] = (64, 32)

    def __post_init__(self) -> None:
        for name in ("n_users", "n_streamers", "n_categories", "n_modalities", "window",
                     "d_token", "d_model", "n_queries", "fusion_layers", "heads"):
            checks.positive_int(f"MMBeeConfig.{name}", getattr(self, name))
        checks.one_of("MMBeeConfig.fusion", self.fusion, ("mfq", "mean", "none"))
        checks.one_of("MMBeeConfig.projection", self.projection, ("orthogonal", "gate", "none"))
        if self.d_model % self.heads:
            raise checks.InvalidInputError(
                f"MMBeeConfig.heads: d_model {self.d_model} is not divisible by {self.heads}")


def _live_mean(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """x [B, M, L, d] averaged over the live tokens (pad [B, L] False) -> [B, M, d]."""
    live = (~pad).to(x.dtype)[:, None, :, None]  # [B, 1, L, 1]
    return (x * live).sum(2) / live.sum(2).clamp(min=1.0)


def _orthonormal_rows(v: torch.Tensor, tolerance: float = 1e-4) -> torch.Tensor:
    """Gram-Schmidt over the rows of v [B, k, d]: an orthonormal basis of their span, with
    a zero row wherever a vector adds nothing new (less than ``tolerance`` of its norm)."""
    basis: list[torch.Tensor] = []
    for i in range(v.shape[1]):
        r = v[:, i]
        for b in basis:
            r = r - (r * b).sum(-1, keepdim=True) * b
        norm = r.norm(dim=-1, keepdim=True)
        new = norm > tolerance * v[:, i].norm(dim=-1, keepdim=True).clamp(min=1e-12)
        basis.append(torch.where(new, r / norm.clamp(min=1e-12), torch.zeros_like(r)))
    return torch.stack(basis, dim=1)


def _by_segment(x: torch.Tensor, pad: torch.Tensor, window: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, M, W n, d] and pad [B, W n] -> one row per segment: [B W, M, n, d], [B W, n]."""
    B, M, L, d = x.shape
    if L % window:
        raise checks.InvalidInputError(f"window: {L} tokens do not split into {window} "
                                       "segments")
    n = L // window
    return (x.reshape(B, M, window, n, d).transpose(1, 2).reshape(B * window, M, n, d),
            pad.reshape(B * window, n))


def _by_window(x: torch.Tensor, window: int) -> torch.Tensor:
    """The inverse of ``_by_segment``: [B W, M, n, d] -> [B, M, W n, d]."""
    BW, M, n, d = x.shape
    return x.reshape(BW // window, window, M, n, d).transpose(1, 2).reshape(
        BW // window, M, window * n, d)


def orthogonal_projection(x: torch.Tensor, pad: torch.Tensor, window: int = 1
                          ) -> torch.Tensor:
    """MFQ's projection [this book's reading]: each modality's tokens x [B, M, L, d] minus
    their components in the span of the other modalities' pooled live directions, so what
    all modalities share (a nuisance common to them) is removed. Segment by segment: the
    L = ``window`` n tokens hold ``window`` segments of n tokens each, and what the
    modalities share (the lighting, the loudness) belongs to the moment. Padding is kept
    as is (a segment with no live token has no direction to remove)."""
    segments, live_pad = _by_segment(x, pad, window)  # [B W, M, n, d], [B W, n]
    pooled = _live_mean(segments, live_pad)  # [B W, M, d]
    M = x.shape[1]
    out = []
    for m in range(M):
        others = torch.cat([pooled[:, :m], pooled[:, m + 1:]], dim=1)  # [B W, M-1, d]
        basis = _orthonormal_rows(others)  # [B W, M-1, d]
        xm = segments[:, m]  # [B W, n, d]
        out.append(xm - (xm @ basis.transpose(1, 2)) @ basis)
    return _by_window(torch.stack(out, dim=1), window)


def cosine_gate(x: torch.Tensor, pad: torch.Tensor, window: int = 1) -> torch.Tensor:
    """The card's other reading: each token scaled by prod over the other modalities of
    1 - |cos(token, pooled direction)|, segment by segment as in the projection."""
    segments, live_pad = _by_segment(x, pad, window)
    pooled = F.normalize(_live_mean(segments, live_pad), dim=-1)  # [B W, M, d]
    cos = torch.einsum("bmld,bnd->bmln", F.normalize(segments, dim=-1), pooled).abs()
    own = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)[None, :, None, :]
    gate = torch.where(own, torch.ones_like(cos), 1.0 - cos).prod(-1, keepdim=True)
    return _by_window(segments * gate, window)  # [B, M, L, d]


class QueryFusionLayer(nn.Module):
    """One MFQ layer: queries read the tokens (cross-attention), then each other
    (self-attention), then a feed-forward; pre-norm, residual."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm_cross, self.norm_self, self.norm_ffn = (nn.LayerNorm(d) for _ in range(3))
        self.cross = CrossAttention(d, heads)
        self.self_attention = MultiHeadAttention(d, heads)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, q: torch.Tensor, h: torch.Tensor, h_pad: torch.Tensor) -> torch.Tensor:
        q = q + self.cross(self.norm_cross(q), h, h_pad)
        q = q + self.self_attention(self.norm_self(q))
        return q + self.ffn(self.norm_ffn(q))


class MFQ(nn.Module):
    """Multi-modal fusion with learnable queries: tokens [B, M, L, d_tok] -> h_seg [B, d]."""

    def __init__(self, cfg: MMBeeConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.to_model = nn.ModuleList(nn.Linear(cfg.d_token, d) for _ in range(cfg.n_modalities))
        self.modality = nn.Parameter(torch.zeros(cfg.n_modalities, d))  # E_mod
        self.age = nn.Parameter(torch.zeros(cfg.window, d))  # E_seg: which segment
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, d) * 0.1)  # Q_0
        self.streamer = nn.Embedding(cfg.n_streamers, d)
        self.category = nn.Embedding(cfg.n_categories, d)
        self.shift = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))  # MLP(e_a)
        self.layers = nn.ModuleList(QueryFusionLayer(d, cfg.heads)
                                    for _ in range(cfg.fusion_layers))
        self.readout = nn.Linear(cfg.n_queries * d, d)  # the queries side by side -> h_seg

    def tokens(self, tokens: torch.Tensor, pad: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """H [B, M L, d] and its padding [B, M L]: projected, mapped, typed by modality."""
        if self.cfg.projection == "orthogonal":
            tokens = orthogonal_projection(tokens, pad, self.cfg.window)
        elif self.cfg.projection == "gate":
            tokens = cosine_gate(tokens, pad, self.cfg.window)
        h = torch.stack([f(tokens[:, m]) for m, f in enumerate(self.to_model)], dim=1)
        B, M, L, d = h.shape
        age = torch.arange(L, device=h.device) // (L // self.cfg.window)  # [L] segment slot
        h = h + self.modality[None, :, None, :] + self.age[age][None, None]  # [B, M, L, d]
        return h.reshape(B, M * L, d), pad.repeat(1, M)

    def initial_queries(self, streamer: torch.Tensor) -> torch.Tensor:
        """streamer [B, 2] (id, category) -> Q^(0) [B, n_q, d]."""
        q = self.queries.expand(len(streamer), -1, -1)  # [B, n_q, d]
        if self.cfg.streamer_aware:
            e_a = self.streamer(streamer[:, 0]) + self.category(streamer[:, 1])
            q = q + self.shift(e_a)[:, None, :]
        return q

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor, streamer: torch.Tensor,
                return_queries: bool = False) -> torch.Tensor:
        """tokens [B, M, L, d_tok], pad [B, L], streamer [B, 2] (id, category)."""
        h, h_pad = self.tokens(tokens, pad)
        q = self.initial_queries(streamer)
        for layer in self.layers:
            q = layer(q, h, h_pad)
        return q if return_queries else self.readout(q.flatten(1))  # [B, n_q, d] or [B, d]

    @torch.no_grad()
    def attention(self, tokens: torch.Tensor, pad: torch.Tensor, streamer: torch.Tensor
                  ) -> torch.Tensor:
        """The first layer's cross-attention map [B, heads, n_q, M L] (for figures)."""
        h, h_pad = self.tokens(tokens, pad)
        q = self.layers[0].norm_cross(self.initial_queries(streamer))
        return self.layers[0].cross.weights(q, h, h_pad)


class MeanPoolFusion(nn.Module):
    """The ablation "w/o MFQ": each modality's live tokens averaged, concatenated, mapped."""

    def __init__(self, cfg: MMBeeConfig):
        super().__init__()
        self.cfg = cfg
        self.out = nn.Sequential(nn.Linear(cfg.n_modalities * cfg.d_token, cfg.d_model),
                                 nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model))

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor, streamer: torch.Tensor
                ) -> torch.Tensor:
        if self.cfg.projection == "orthogonal":
            tokens = orthogonal_projection(tokens, pad, self.cfg.window)
        elif self.cfg.projection == "gate":
            tokens = cosine_gate(tokens, pad, self.cfg.window)
        return self.out(_live_mean(tokens, pad).flatten(1))


class MMBee(nn.Module):
    """The gift ranker: ``forward(batch)`` -> logits [B, 1]. ``nodes`` are GIE's frozen
    viewer [U, d_g] and streamer [A, d_g] embeddings (required when ``cfg.graph``)."""

    def __init__(self, cfg: MMBeeConfig,
                 nodes: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.user = nn.Embedding(cfg.n_users, d)
        self.streamer = nn.Embedding(cfg.n_streamers + 1, d, padding_idx=0)  # id + 1
        self.category = nn.Embedding(cfg.n_categories, d)
        nn.init.normal_(self.user.weight, std=0.05)
        nn.init.normal_(self.streamer.weight, std=0.05)
        self.history = TargetAttentionPool(d, d)
        self.fusion = {"mfq": MFQ, "mean": MeanPoolFusion}.get(cfg.fusion, lambda _: None)(cfg)
        width = 4 * d + (d if self.fusion is not None else 0)
        if cfg.graph:
            if nodes is None:
                raise checks.InvalidInputError("nodes: GIE needs the pre-trained node "
                                               "embeddings (viewers, streamers)")
            g_user, g_streamer = nodes
            d_g = g_user.shape[1]
            pad = torch.zeros(1, d_g)
            self.register_buffer("g_user", torch.cat([pad, g_user.float()]))  # id + 1
            self.register_buffer("g_streamer", torch.cat([pad, g_streamer.float()]))
            self.paths = nn.ModuleList(TargetAttentionPool(d_g, d_g) for _ in PATHS)
            width += 6 * d_g
        layers, last = [], width
        for size in cfg.hidden:
            layers += [nn.Linear(last, size), nn.ReLU()]
            last = size
        self.head = nn.Sequential(*layers, nn.Linear(last, 1))

    def segment(self, batch: GiftBatch) -> torch.Tensor:
        """h_seg [B, d] of the batch's live segments."""
        return self.fusion(batch.tokens, batch.token_pad, batch.features[:, 1:3])

    def forward(self, batch: GiftBatch) -> torch.Tensor:
        user, streamer = batch.features[:, 0], batch.features[:, 1]
        e_u, e_a = self.user(user), self.streamer(streamer + 1)
        watched = self.streamer(batch.history)  # [B, H, d]
        parts = [e_u, e_a, self.category(batch.features[:, 2]),
                 self.history(e_a, watched, batch.history == 0)]
        if self.fusion is not None:
            parts.append(self.segment(batch))
        if self.cfg.graph:
            g_u, g_a = self.g_user[user + 1], self.g_streamer[streamer + 1]
            parts += [g_u, g_a]
            for name, pool in zip(PATHS, self.paths, strict=True):
                ids = getattr(batch, name)  # [B, k], id + 1
                is_streamer = name in ("gifted", "expanded")
                table, query = (self.g_streamer, g_a) if is_streamer else (self.g_user, g_u)
                parts.append(pool(query, table[ids], ids == 0))
        return self.head(torch.cat(parts, dim=-1))  # [B, 1]
