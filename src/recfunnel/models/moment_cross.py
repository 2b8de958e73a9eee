"""Moment&Cross: a real-time multi-task CTR model for live streams, reading the viewer's
short-video interests through search units.

Cao et al. 2024 (bibkey cao2024momentcross). The paper's tables could not be read; the
equations follow the card's sections 3.3-3.4 (read from a translation of the paper).

Base ranker (section 3.1): feature embeddings v -> CGC (one level of PLE; two levels is PLE)
-> one tower per task (click, long view, like, comment, gift). A per-room, per-task bias
table (``room_bias``, a one-dimensional room-ID embedding) is the part a trainer updates
with a much larger learning rate: without any real-time CTR feature, it is what lets the
model follow a room's moment.

Moment's loss (section 3.3), per sample and task, with ``mask`` and ``cancel`` from
``data.streams.Stream``:

    L = mean_b sum_t [ m_bt BCE(y_bt, p_bt) - c_bt BCE(0, p_bt) ]

which is the paper's L_moment for the 30 s stream (first positives and exit negatives),
L_fast for the fast sample, and L_slow = -[log p - log(1 - p)] for a slow sample (y = 1,
c = 1: the fast sample's false negative cancelled).

Cross (section 3.4). Five general search units (GSUs, ``SearchUnits``) pick L items from
the viewer's history as it stood when the impression was scored, by a frozen search
embedding learnt on short videos (pitfall 6) or by hard rules:

    short     the latest L short videos
    long      the L short videos closest to the candidate room (dot product)
    aidhard   the latest L short videos by the room's own author
    livelong  the L past live rooms closest to the candidate (dot product)
    mixed     the latest L long-viewed items, short videos and live rooms alike

Each list's items are embedded from their own domain's ID table (short videos and live
rooms have separate tables) plus a shared projection of their search embedding (the
paper's multi-modal tags), and an exact search unit pools it by target attention:

    V_x^ESU = softmax((V_live W_q)(V_x W_k)^T / sqrt(d)) V_x W_v        [B, d]

with V_live the candidate's features. The contrastive terms align each list's mean with
the mixed list's, other viewers in the batch as negatives (InfoNCE, tau = 0.1; pairs of
one viewer are masked, pitfall 7):

    L_cl^x = InfoNCE(l2(mean V_mixed), l2(mean V_x)),  x in {short, long, aidhard, livelong}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel import checks
from recfunnel.data.streams import TASKS, StreamWorld
from recfunnel.layers.features import masked_mean
from recfunnel.models.multitask import Tower
from recfunnel.models.multitask_baselines import PLE, PLEConfig

UNITS = ("short", "long", "aidhard", "livelong", "mixed")
SHORT_VIDEO_UNITS = ("short", "long", "aidhard")
ALIGNED_UNITS = ("short", "long", "aidhard", "livelong")  # each aligned to "mixed"


@dataclass(frozen=True)
class MomentCrossConfig:
    """The model; ``units=()`` is the base CGC ranker without any search unit."""

    units: tuple[str, ...] = UNITS
    contrastive: bool = True
    tags: bool = True  # items carry a shared projection of their search embedding
    d: int = 16
    length: int = 30  # L, items per search unit
    cl_weight: float = 0.1  # lambda (proposed)
    tau: float = 0.1
    levels: int = 1  # 1: CGC; 2: PLE
    n_shared: int = 2
    n_own: int = 1
    expert_hidden: tuple[int, ...] = (64, 32)
    tower_hidden: int = 16

    def __post_init__(self) -> None:
        for unit in self.units:
            checks.one_of("unit", unit, UNITS)
        if len(set(self.units)) != len(self.units):
            raise checks.InvalidInputError(f"units: a unit is listed twice in {self.units}")
        checks.positive_int("d", self.d)
        checks.positive_int("length", self.length)

    @property
    def aligned(self) -> tuple[str, ...]:
        """The units whose contrastive term is on (none without the mixed anchor)."""
        if not self.contrastive or "mixed" not in self.units:
            return ()
        return tuple(u for u in ALIGNED_UNITS if u in self.units)


class SearchList(NamedTuple):
    """A search unit's output: ``ids`` [B, L] (a live room where ``live``, else a short
    video), ``live`` [B, L] bool, ``pad`` [B, L] bool (True: no item)."""

    ids: torch.Tensor
    live: torch.Tensor
    pad: torch.Tensor


class Inputs(NamedTuple):
    """One batch: ``users``, ``rooms`` [B] and the search units' lists."""

    users: torch.Tensor
    rooms: torch.Tensor
    lists: dict[str, SearchList]


def _latest_or_best(keys: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keys [B, W] (-inf: not eligible) -> the positions of the ``length`` largest [B, L]
    and which of them are padding (fewer eligible items than L)."""
    if keys.shape[1] < length:
        keys = F.pad(keys, (0, length - keys.shape[1]), value=float("-inf"))
    values, index = keys.topk(length, dim=1)
    return index, torch.isinf(values) & (values < 0)


class SearchUnits:
    """The five GSUs over a world's histories (``data.streams.Histories``), as they stood
    at time ``now``: a short video is visible when it was watched before ``now``, a live
    room when its click (long view) reached the log by ``now``."""

    def __init__(self, world: StreamWorld, length: int, device: torch.device | str = "cpu"):
        h = world.histories

        def as_tensor(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

        self.length = length
        self.short = as_tensor(h.short, torch.long)  # [U, H]
        self.short_time = as_tensor(h.short_time, torch.float64)
        self.short_long = as_tensor(h.short_long, torch.bool)
        self.live_room = as_tensor(h.live_room, torch.long)  # [U, V]
        self.live_known = as_tensor(h.live_known, torch.float64)
        self.live_long_known = as_tensor(h.live_long_known, torch.float64)
        self.short_author = as_tensor(world.short_author, torch.long)
        # the frozen embeddings' dot products, once: video x room [S, R] and room x room
        self.video_to_room = as_tensor(world.short_search @ world.room_search.T, torch.float32)
        self.room_to_room = as_tensor(world.room_search @ world.room_search.T, torch.float32)

    def __call__(self, users: torch.Tensor, rooms: torch.Tensor, now: torch.Tensor,
                 units: tuple[str, ...]) -> dict[str, SearchList]:
        """users, rooms [B] int64, now [B] float64 seconds -> {unit: SearchList}."""
        L, out = self.length, {}
        short = self.short[users]  # [B, H]
        short_time = self.short_time[users]
        seen = short_time < now[:, None]
        never = torch.tensor(float("-inf"), dtype=torch.float64, device=short.device)
        no_live = torch.zeros(len(users), L, dtype=torch.bool, device=short.device)
        if "short" in units:  # the history is sorted by time: the last L seen
            index = seen.sum(1, keepdim=True) - L + torch.arange(L, device=short.device)
            out["short"] = SearchList(short.gather(1, index.clamp(min=0)), no_live, index < 0)
        if "long" in units:
            closeness = self.video_to_room[short, rooms[:, None]].double()  # [B, H]
            index, pad = _latest_or_best(torch.where(seen, closeness, never), L)
            out["long"] = SearchList(short.gather(1, index), no_live, pad)
        if "aidhard" in units:
            same = seen & (self.short_author[short] == rooms[:, None])
            index, pad = _latest_or_best(torch.where(same, short_time, never), L)
            out["aidhard"] = SearchList(short.gather(1, index), no_live, pad)
        live_room = self.live_room[users]  # [B, V], -1: padding
        if "livelong" in units:
            known = self.live_known[users] <= now[:, None]
            closeness = self.room_to_room[live_room.clamp(min=0), rooms[:, None]].double()
            index, pad = _latest_or_best(torch.where(known, closeness, never), L)
            out["livelong"] = SearchList(live_room.gather(1, index).clamp(min=0), ~no_live, pad)
        if "mixed" in units:
            long_live = self.live_long_known[users]
            keys = torch.cat([torch.where(seen & self.short_long[users], short_time, never),
                              torch.where(long_live <= now[:, None], long_live, never)], 1)
            index, pad = _latest_or_best(keys, L)
            ids = torch.cat([short, live_room.clamp(min=0)], 1).gather(1, index)
            out["mixed"] = SearchList(ids, index >= short.shape[1], pad)
        return out


class ExactSearchUnit(nn.Module):
    """Target attention of the candidate over one list: query [B, d_q], tokens [B, L, d],
    pad [B, L] -> [B, d]; a list with no item pools to zeros."""

    def __init__(self, d_query: int, d: int):
        super().__init__()
        self.q = nn.Linear(d_query, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, pad: torch.Tensor
                ) -> torch.Tensor:
        scores = (self.k(tokens) @ self.q(query).unsqueeze(-1)).squeeze(-1)  # [B, L]
        scores = scores.masked_fill(pad, float("-inf")) / math.sqrt(tokens.shape[-1])
        weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)
        return (weights.unsqueeze(-1) * self.v(tokens)).sum(1)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, users: torch.Tensor, tau: float
             ) -> torch.Tensor:
    """anchor, positive [B, d] (L2-normalised), users [B]: the InfoNCE of row b's pair
    against the other rows' positives, rows of the same viewer masked (card pitfall 7)."""
    logits = anchor @ positive.T / tau  # [B, B]
    same = (users[:, None] == users[None, :]) & ~torch.eye(len(users), dtype=torch.bool,
                                                          device=users.device)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(users), device=users.device))


class MomentCross(nn.Module):
    """The real-time ranker with Cross's search units (``MomentCrossConfig.units``)."""

    def __init__(self, n_users: int, n_rooms: int, n_short: int, short_tags: np.ndarray,
                 room_tags: np.ndarray, cfg: MomentCrossConfig):
        super().__init__()
        self.cfg, d = cfg, cfg.d
        self.user = nn.Embedding(n_users, d)
        self.room = nn.Embedding(n_rooms, d)  # the live items' table
        self.short = nn.Embedding(n_short, d)  # the short videos' own table
        for table in (self.user, self.room, self.short):
            nn.init.normal_(table.weight, std=0.05)
        self.register_buffer("short_tags", torch.as_tensor(short_tags, dtype=torch.float32))
        self.register_buffer("room_tags", torch.as_tensor(room_tags, dtype=torch.float32))
        self.tag = nn.Linear(self.room_tags.shape[1], d)  # the frozen tags, projected
        self.room_bias = nn.Embedding(n_rooms, len(TASKS))  # the fresh parameters
        nn.init.zeros_(self.room_bias.weight)
        self.esu = nn.ModuleDict({unit: ExactSearchUnit(2 * d, d) for unit in cfg.units})
        d_v = 3 * d + d * len(cfg.units)  # user, room, room tags, one vector per unit
        self.mixer = PLE(d_v, TASKS, PLEConfig(n_shared=cfg.n_shared, n_own=cfg.n_own,
                                               levels=cfg.levels,
                                               expert_hidden=cfg.expert_hidden))
        self.towers = nn.ModuleList(Tower(self.mixer.d_out, cfg.tower_hidden) for _ in TASKS)

    def fresh_parameters(self) -> list[nn.Parameter]:
        """What a real-time trainer updates fastest: the room-ID bias table."""
        return [self.room_bias.weight]

    def tokens(self, seq: SearchList) -> torch.Tensor:
        """[B, L, d]: each item from its own domain's table plus (``cfg.tags``) its
        projected tags."""
        if not seq.live.any():  # short videos only
            ids, tags = self.short(seq.ids), self.short_tags[seq.ids]
        elif seq.live.all():  # live rooms only
            ids, tags = self.room(seq.ids), self.room_tags[seq.ids]
        else:
            rooms = seq.ids.clamp(max=self.room.num_embeddings - 1)
            videos = seq.ids.clamp(max=self.short.num_embeddings - 1)
            live = seq.live.unsqueeze(-1)
            ids = torch.where(live, self.room(rooms), self.short(videos))
            tags = torch.where(live, self.room_tags[rooms], self.short_tags[videos])
        return ids + self.tag(tags) if self.cfg.tags else ids

    def forward(self, x: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> logits [B, T] and the tokens of each list (for the contrastive terms)."""
        tags = self.tag(self.room_tags[x.rooms]) if self.cfg.tags else torch.zeros_like(
            self.room(x.rooms))
        room = torch.cat([self.room(x.rooms), tags], -1)  # [B, 2d]: the query V_live
        parts, tokens = [self.user(x.users), room], {}
        for unit in self.cfg.units:
            tokens[unit] = self.tokens(x.lists[unit])
            parts.append(self.esu[unit](room, tokens[unit], x.lists[unit].pad))
        reps = self.mixer(torch.cat(parts, -1))
        logits = torch.cat([tower(r) for tower, r in zip(self.towers, reps, strict=True)], 1)
        return logits + self.room_bias(x.rooms), tokens

    def loss(self, x: Inputs, labels: torch.Tensor, mask: torch.Tensor, cancel: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The stream's loss (module docstring) plus lambda * the contrastive terms."""
        logits, tokens = self(x)
        total = stream_loss(logits, labels, mask, cancel)
        logs = {"stream": float(total.detach())}
        for unit in self.cfg.aligned:
            anchor_seq, other = x.lists["mixed"], x.lists[unit]
            rows = ~anchor_seq.pad.all(1) & ~other.pad.all(1)
            if rows.sum() < 2:
                continue
            anchor = F.normalize(masked_mean(tokens["mixed"][rows], ~anchor_seq.pad[rows]), dim=-1)
            positive = F.normalize(masked_mean(tokens[unit][rows], ~other.pad[rows]), dim=-1)
            term = info_nce(anchor, positive, x.users[rows], self.cfg.tau)
            total = total + self.cfg.cl_weight * term
            logs[f"cl_{unit}"] = float(term.detach())
        return total, logs


def stream_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                cancel: torch.Tensor) -> torch.Tensor:
    """mean over samples of sum_t [mask BCE(label) - cancel BCE(0)] (logits [B, T])."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    negative_bce = F.softplus(logits)  # BCE(0, p) = -log(1 - p)
    return (mask * bce - cancel * negative_bce).sum(1).mean()


def ranking_score(probs: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """The online score prod_t (1 + p_t)^alpha_t (section 3.1): probs [B, T], exponents
    [T] -> [B]."""
    return torch.exp((torch.log1p(probs) * exponents).sum(-1))
