"""MARM: multi-layer target attention over a user's exposures, served from a cache.

Lv et al., CIKM 2025 (bibkey lv2025marm). A request scores one candidate x_t against the
user's n previous exposures. A single target-attention layer (DIN/SIM style) reads their
embeddings; MARM stacks L layers, and layer l reads the states its predecessors reached at
layer l-1, which were written to a cache when each of them was scored, so a request costs
O(L n d) instead of the O(L n^2 d) of recomputing a causal stack. The paper's own layer
equation could not be read; this is the course's reading (card section 3.2):

    h_t^(0) = e_t = E_item[x_t] + E_topic[c_t]
    m_j^(l-1) = hbar_j^(l-1) + F^(l)[y_j]         cached state of predecessor j, plus the
                                                  feedback y_j it received after it was scored
    g = h_t^(l-1) + TA^(l)(LN(h_t^(l-1)), [m_j^(l-1)]_{t-n <= j < t})
    h_t^(l) = g + FFN^(l)(LN(g))                  l = 1 .. L
    logits_t = Tower([h_t^(L); e_t]);  write back hbar_t^(0..L-1) = h_t^(0..L-1)

TA never attends to the target itself (only strictly earlier exposures), so with frozen
parameters the cached computation is exactly an L-layer strictly causal attention stack
with window n over the whole stream (``MARM.recompute``). Keys and values are linear in
m_j (no normalisation on the memory side), so the cache may hold the hidden states
(``cache="hidden"``, the default: the projections are paid at every read) or their K/V
projections (``cache="kv"``: cheaper reads, tied to the weights that wrote them).
``history="layer0"`` is the ablation that ignores the deeper cached states and reads every
predecessor's embedding at every layer. ``top_k`` is SIM's search over long histories,
which MARM runs once per layer (card section 3.4): each layer and head attends only to the
top_k predecessors by its own score [proposed: the paper's search unit is not known; SIM's
cheaper first-stage search would also save the scoring, which this one still pays].

Paper -> code: e_t -> ``embed``; F^(l) -> ``feedback[l-1]``; TA^(l), FFN^(l) ->
``layers[l-1]``; the cache -> ``ExposureCache`` (dense [users, positions, L, width]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from recfunnel import checks

CACHE_KINDS = ("hidden", "kv")
HISTORY_KINDS = ("cached", "layer0")


@dataclass(frozen=True)
class MARMConfig:
    n_items: int  # V, item ids 1..V-1 (0 is padding)
    n_topics: int  # topic ids 0..n_topics-1
    d_model: int = 32  # d
    n_layers: int = 2  # L: 1 is the single-layer target-attention baseline
    n_heads: int = 2
    window: int = 64  # n: predecessors read per request
    d_ffn: int = 64
    n_tasks: int = 2  # click, long view
    n_feedback: int = 3  # y_j: 0 no click, 1 click, 2 long view
    cache: str = "hidden"  # what is cached: hidden states or their K/V projections
    history: str = "cached"  # "layer0": every layer reads the predecessors' embeddings
    top_k: int | None = None  # SIM-style search: each layer attends to its top_k only

    def __post_init__(self) -> None:
        for name in ("n_items", "n_topics", "d_model", "n_layers", "n_heads", "window",
                     "d_ffn", "n_tasks", "n_feedback"):
            checks.positive_int(f"MARMConfig.{name}", getattr(self, name))
        if self.d_model % self.n_heads:
            raise checks.InvalidInputError(f"MARMConfig.d_model: {self.d_model} is not "
                                           f"divisible by n_heads={self.n_heads}")
        checks.one_of("MARMConfig.cache", self.cache, CACHE_KINDS)
        checks.one_of("MARMConfig.history", self.history, HISTORY_KINDS)
        if self.top_k is not None:
            checks.positive_int("MARMConfig.top_k", self.top_k)
            if self.top_k > self.window:
                raise checks.InvalidInputError(f"MARMConfig.top_k: {self.top_k} is more than "
                                               f"the window of {self.window} predecessors")
        if self.cache == "kv" and self.history == "layer0":
            raise checks.InvalidInputError("MARMConfig.cache: the layer-0 ablation caches "
                                           "nothing beyond embeddings; use cache='hidden'")

    @property
    def cache_width(self) -> int:
        """Numbers stored per exposure and layer: d (hidden) or 2d (K and V)."""
        return self.d_model * (2 if self.cache == "kv" else 1)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     allowed: torch.Tensor, bias: torch.Tensor | None = None,
                     top_k: int | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_h) + bias) v over allowed keys; a query with no allowed key
    gets 0. With ``top_k``, each query and head keeps only its top_k allowed keys by score
    (SIM's search, run by every layer on its own memory). q [B, H, Q, d_h], k and v
    [B, H, n, d_h], allowed [B|1, 1, Q, n], bias [B|1, H, Q, n] -> [B, H, Q, d_h]."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, Q, n]
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    if top_k is not None and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]  # [B, H, Q, 1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # rows without keys: all 0
    return weights @ v


class TargetAttentionLayer(nn.Module):
    """One MARM layer: g = h + TA(LN(h), M), then g + FFN(LN(g)); K, V = M W_K, M W_V.
    Each head adds a learned bias of the key's recency t - j (1..n) to its scores [proposed:
    the paper's positional scheme is not known; without one a state cannot tell its
    immediate predecessor from the others]."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, window: int,
                 top_k: int | None = None):
        super().__init__()
        self.n_heads = n_heads
        self.top_k = top_k
        self.recency_bias = nn.Parameter(torch.zeros(n_heads, window + 1))  # [H, n + 1]
        self.norm_query = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)  # M [.., d] -> [K; V] [.., 2d]
        self.out = nn.Linear(d_model, d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ffn), nn.GELU(), nn.Linear(d_ffn, d_model))

    def forward(self, h: torch.Tensor, kv: torch.Tensor, allowed: torch.Tensor,
                recency: torch.Tensor) -> torch.Tensor:
        """h [B, Q, d] queries (Q = 1 when serving), kv [B, n, 2d] keys and values of the
        memory, allowed [B|1, Q, n], recency [Q, n] each key's t - j (clamped to [0, n])
        -> h' [B, Q, d]."""
        B, Q, d = h.shape
        H = self.n_heads
        q = self.query(self.norm_query(h)).view(B, Q, H, d // H).transpose(1, 2)  # [B,H,Q,dh]
        k, v = kv.view(B, -1, 2, H, d // H).permute(2, 0, 3, 1, 4)  # [B, H, n, d_h] each
        bias = self.recency_bias[:, recency][None]  # [1, H, Q, n]
        attended = masked_attention(q, k, v, allowed[:, None], bias, self.top_k)  # [B,H,Q,dh]
        g = h + self.out(attended.transpose(1, 2).reshape(B, Q, d))
        return g + self.ffn(self.norm_ffn(g))


@dataclass
class Window:
    """What a request reads about its n predecessors (oldest first): their item and topic
    ids and feedback [B, n]; ``allowed`` [B, n] False before the stream starts; ``cached``
    [B, n, L, width] their cached states; ``missing`` [B, n] real predecessors the cache
    does not hold (they fall back to their embeddings at every layer), None for none."""

    items: torch.Tensor
    topics: torch.Tensor
    feedback: torch.Tensor
    allowed: torch.Tensor
    cached: torch.Tensor
    missing: torch.Tensor | None = None


class MARM(nn.Module):
    """The ranker of card section 3.2: serve one request per user from the cache
    (``serve``), or recompute a whole stream causally (``recompute``, the reference)."""

    def __init__(self, cfg: MARMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.item_embedding = nn.Embedding(cfg.n_items, d, padding_idx=0)
        self.topic_embedding = nn.Embedding(cfg.n_topics, d)
        self.feedback = nn.ModuleList(nn.Embedding(cfg.n_feedback, d)
                                      for _ in range(cfg.n_layers))
        self.layers = nn.ModuleList(TargetAttentionLayer(d, cfg.n_heads, cfg.d_ffn, cfg.window,
                                                         cfg.top_k)
                                    for _ in range(cfg.n_layers))
        self.tower = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, cfg.n_tasks))

    def embed(self, items: torch.Tensor, topics: torch.Tensor) -> torch.Tensor:
        """e = E_item[x] + E_topic[c]: [...] ids -> [..., d]."""
        return self.item_embedding(items) + self.topic_embedding(topics)

    def _memory_kv(self, layer: int, states: torch.Tensor, feedback: torch.Tensor,
                   from_cache_kv: bool) -> torch.Tensor:
        """K/V [B, n, 2d] of layer ``layer`` (0-based) from the predecessors' states at the
        layer below ([B, n, d] hidden, or [B, n, 2d] already projected) and feedback [B, n]."""
        attention = self.layers[layer]
        if from_cache_kv:  # (hbar W^T) + (F[y] W^T + b): the same K/V, fewer operations;
            # F W^T + b is projected once for the few feedback classes, then looked up
            return states + attention.key_value(self.feedback[layer].weight)[feedback]
        return attention.key_value(states + self.feedback[layer](feedback))

    def to_cache(self, states: torch.Tensor) -> torch.Tensor:
        """What the cache stores for exposures whose states h^(0..L-1) are [B, L, d]:
        the states themselves, or each one's K/V for the layer that will read it."""
        if self.cfg.cache == "hidden":
            return states
        weights = [layer.key_value.weight for layer in self.layers]  # [2d, d] each
        return torch.stack([states[:, i] @ w.T for i, w in enumerate(weights)], dim=1)

    def serve(self, items: torch.Tensor, topics: torch.Tensor, window: Window
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score B requests: candidate ids [B] and what they read (``Window``).
        -> logits [B, tasks] and the states h^(0..L-1) [B, L, d] to write back."""
        cfg = self.cfg
        e = self.embed(items, topics)  # [B, d]
        h, states = e[:, None], [e]  # h [B, 1, d]
        fallback = self.embed(window.items, window.topics)  # [B, n, d] (cache misses)
        allowed = window.allowed[:, None]  # [B, 1, n]
        n = window.items.shape[1]
        recency = torch.arange(n, 0, -1, device=items.device)[None]  # [1, n]: oldest is n
        for layer in range(cfg.n_layers):
            if cfg.history == "layer0":
                kv = self._memory_kv(layer, fallback, window.feedback, from_cache_kv=False)
            else:
                kv = self._cached_kv(layer, window, fallback)
            h = self.layers[layer](h, kv, allowed, recency)
            if layer < cfg.n_layers - 1:
                states.append(h[:, 0])
        logits = self.tower(torch.cat([h[:, 0], e], dim=-1))
        return logits, torch.stack(states, dim=1)

    def _cached_kv(self, layer: int, window: Window, fallback: torch.Tensor) -> torch.Tensor:
        """K/V of ``layer`` from the cached states of the layer below; a predecessor the
        cache misses falls back to its embedding e_j."""
        states = window.cached[:, :, layer]  # [B, n, width]
        kv_cache = self.cfg.cache == "kv"
        if window.missing is not None and bool(window.missing.any()):
            missing = window.missing
            fill = fallback[missing]  # [misses, d]
            if kv_cache:
                fill = fill @ self.layers[layer].key_value.weight.T  # [misses, 2d]
            states = states.clone()
            states[missing] = fill.to(states.dtype)
        return self._memory_kv(layer, states, window.feedback, from_cache_kv=kv_cache)

    def recompute(self, items: torch.Tensor, topics: torch.Tensor, feedback: torch.Tensor,
                  detach_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference: every position of whole streams at once, each attending at layer
        l to its n strictly earlier predecessors' layer l-1 states (a banded causal mask).
        items, topics, feedback [B, T] -> logits [B, T, tasks], states [B, T, L, d]."""
        cfg = self.cfg
        T = items.shape[1]
        e = self.embed(items, topics)  # [B, T, d]
        t = torch.arange(T, device=items.device)
        gap = t[:, None] - t[None, :]  # [T, T] query position minus key position
        allowed = ((gap >= 1) & (gap <= cfg.window))[None]  # [1, T, T]
        recency = gap.clamp(0, cfg.window)  # [T, T]
        h, states = e, [e]
        for layer in range(cfg.n_layers):
            below = e if cfg.history == "layer0" else h
            if detach_memory:
                below = below.detach()
            kv = self._memory_kv(layer, below, feedback, False)  # [B, T, 2d]
            h = self.layers[layer](h, kv, allowed, recency)
            if layer < cfg.n_layers - 1:
                states.append(h)
        logits = self.tower(torch.cat([h, e], dim=-1))
        return logits, torch.stack(states, dim=2)


class ExposureCache:
    """The cache of card section 3.2: dense tensors indexed by (user, exposure position,
    layer), ``values`` [U, T, L, width] and ``written_at`` [U, T] (-1: never written).

    Keyed by exposure, not by item, so two exposures of one item keep their own states.
    Writes are detached (no gradient ever flows into the past), and a read may only see
    slots written before the request's time: reading a slot written later is refused."""

    def __init__(self, n_users: int, length: int, n_slots: int, width: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        for name, value in (("n_users", n_users), ("length", length), ("n_slots", n_slots),
                            ("width", width)):
            checks.positive_int(f"ExposureCache.{name}", value)
        self.values = torch.zeros(n_users, length, n_slots, width, dtype=dtype, device=device)
        self.written_at = torch.full((n_users, length), -1, dtype=torch.long, device=device)
        self.reads = 0
        self.misses = 0

    @classmethod
    def for_model(cls, model: MARM, n_users: int, length: int,
                  dtype: torch.dtype = torch.float32) -> ExposureCache:
        device = next(model.parameters()).device
        return cls(n_users, length, model.cfg.n_layers, model.cfg.cache_width, dtype, device)

    @property
    def miss_rate(self) -> float:
        """Share of real predecessors read that the cache did not hold."""
        return self.misses / self.reads if self.reads else 0.0

    @property
    def n_bytes(self) -> int:
        return self.values.numel() * self.values.element_size()

    def _check(self, users: torch.Tensor, positions: torch.Tensor) -> None:
        U, T = self.written_at.shape
        if users.shape != positions.shape or users.dim() != 1:
            raise checks.InvalidInputError("users and positions must be [B] each")
        if len(users) and (users.min() < 0 or users.max() >= U):
            raise checks.InvalidInputError(f"users: ids must lie in [0, {U})")
        if len(positions) and (positions.min() < 0 or positions.max() >= T):
            raise checks.InvalidInputError(f"positions: must lie in [0, {T})")

    def read(self, users: torch.Tensor, positions: torch.Tensor, window: int, now: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``window`` exposures before each request (oldest first): their positions
        [B, n], ``allowed`` [B, n] (False before the stream starts), cached values
        [B, n, L, width] (constants) and ``missing`` [B, n]. ``now`` [B] is each request's
        time; a slot written at or after it is refused."""
        self._check(users, positions)
        offsets = torch.arange(-window, 0, device=positions.device)
        index = positions[:, None] + offsets  # [B, n]
        allowed = index >= 0
        safe = index.clamp(min=0)
        written = self.written_at[users[:, None], safe]  # [B, n]
        future = allowed & (written >= now[:, None])
        if future.any():
            row, col = (int(i) for i in future.nonzero()[0])
            raise checks.InvalidInputError(
                f"cache: the request of user {int(users[row])} at time {int(now[row])} reads "
                f"exposure {int(index[row, col])}, written at time {int(written[row, col])}: "
                "a request may only read states written before it (process in time order)")
        missing = allowed & (written < 0)
        self.reads += int(allowed.sum())
        self.misses += int(missing.sum())
        return index, allowed, self.values[users[:, None], safe], missing

    def write(self, users: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
              now: torch.Tensor) -> None:
        """Store each request's values [B, L, width] under (user, position) at time ``now``."""
        self._check(users, positions)
        self.values[users, positions] = values.detach().to(self.values.dtype)
        self.written_at[users, positions] = now


# --------------------------------------------------------------------------- serving


def request(model: MARM, cache: ExposureCache, items: torch.Tensor, topics: torch.Tensor,
            feedback: torch.Tensor, users: torch.Tensor, position: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Serve each of ``users``' exposure at ``position`` (its time) from the cache and
    write its states back: card section 3.2's four steps. items, topics, feedback [U, T]
    are the whole streams (a request reads feedback of earlier exposures only).
    -> logits [B, tasks] and the states h^(0..L-1) [B, L, d]."""
    positions = torch.full_like(users, position)
    index, allowed, cached, missing = cache.read(users, positions, model.cfg.window,
                                                 now=positions)
    rows, safe = users[:, None], index.clamp(min=0)
    window = Window(items[rows, safe], topics[rows, safe], feedback[rows, safe], allowed,
                    cached, missing)
    logits, states = model.serve(items[users, position], topics[users, position], window)
    cache.write(users, positions, model.to_cache(states), now=positions)
    return logits, states


def recompute_request(model: MARM, items: torch.Tensor, topics: torch.Tensor,
                      feedback: torch.Tensor, position: int) -> torch.Tensor:
    """Serving without a cache: recompute every layer over the L*n exposures that the
    target's output depends on (its receptive field), then read the target's logits.
    items, topics, feedback [B, T] -> logits [B, tasks], equal to the cached ones."""
    start = max(0, position - model.cfg.n_layers * model.cfg.window)
    span = slice(start, position + 1)
    logits, _ = model.recompute(items[:, span], topics[:, span], feedback[:, span])
    return logits[:, -1]


def serving_flops(cfg: MARMConfig, mode: str, batch: int = 1) -> dict[str, int]:
    """Floating-point operations of one batch of requests, counted on the meta device:
    ``"cached"`` (read n cached predecessors) or ``"recompute"`` (recompute the receptive
    field). ``attention`` counts the score and weighting matmuls (q k^T, w v), ``total``
    every operation (projections, FFN, towers)."""
    from torch.utils.flop_counter import FlopCounterMode

    checks.one_of("mode", mode, ("cached", "recompute"))
    model = MARM(cfg).to("meta")
    n, B = cfg.window, checks.positive_int("batch", batch)
    ids = torch.zeros(B, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        if mode == "cached":
            window = Window(*(torch.zeros(B, n, dtype=torch.long, device="meta")
                              for _ in range(3)),
                            torch.ones(B, n, dtype=torch.bool, device="meta"),
                            torch.zeros(B, n, cfg.n_layers, cfg.cache_width, device="meta"))
            model.serve(ids, ids, window)
        else:
            span = torch.zeros(B, cfg.n_layers * n + 1, dtype=torch.long, device="meta")
            model.recompute(span, span, span)
    counts = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in counts.items() if "bmm" in str(op))
    return {"attention": int(attention), "total": int(counter.get_total_flops())}
