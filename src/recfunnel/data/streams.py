"""A live-streaming world that runs in seconds, and the data streams a trainer reads from it.

Moment&Cross (Cao et al. 2024, bibkey cao2024momentcross) is as much data engineering as
modelling: a live stream's appeal changes minute by minute, and what a model can learn in
time depends on *when* each label reaches it. This module makes that a first-class object
(paper card section 7.1, this book's reading):

* ``stream_world``: rooms with a latent topic and a two-state highlight process (a Markov
  chain at the 30-second tick: normal for 15 minutes on average, highlight for 2); viewers'
  impressions arriving as a Poisson process; after a click, behaviours with delays: a long
  view at 60 s if still watching, a like (exponential delay), comments (a Poisson process,
  repeatable) and rare gifts (mean delay 20 minutes), all ending at the viewer's exit; a
  short-video domain in the same latent space, in which each room's author also owns
  videos and a viewer's favourite authors are both watched there and clicked live.
* ``EventLog``: what happened, time-ordered: impressions (with their exit) and every
  behaviour event (with repeats). Views still open at the horizon are *closed* there: the
  world ends, so the viewer leaves, and no behaviour after the horizon exists; their exit
  samples would be released after the last tick, so no trainer receives them.
* ``build_stream``: the samples a trainer receives from the log, each with the tick in
  which it is released and the impression (view) it belongs to, so that fast and slow
  samples of one view join. Four streams (``STREAMS``):

  - ``"fast/slow"``: a fast sample 5 minutes after the impression (what happened by then
    positive, the rest negative) and a slow sample at 1 hour for the behaviours first seen
    between the two, whose loss cancels the fast sample's negative (section 3.2);
  - ``"moment"``: the paper's 30 s stream: each behaviour's *first* occurrence is a positive
    of its own task only, released in the tick it happens; the tasks that never happened
    are negatives released when the viewer exits (section 3.3);
  - ``"naive 30s"``: one sample in the impression's tick with everything not yet seen
    negative;
  - ``"no first-only"``: the paper's stream, but every repeat of a behaviour is a positive.

A sample's loss on task t is ``mask * BCE(label) - cancel * BCE(0)`` (``Stream``): the slow
sample's -[log p - log(1 - p)] is a positive with ``cancel`` set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from recfunnel import checks
from recfunnel.data.live import _intercept
from recfunnel.data.world import sigmoid

TASKS = ("click", "long_view", "like", "comment", "gift")
CLICK, LONG_VIEW, LIKE, COMMENT, GIFT = range(len(TASKS))
STREAMS = ("fast/slow", "moment", "naive 30s", "no first-only")
TICK_S = 30.0  # the real-time stream's report interval (paper: 30 s)
FAST_S, SLOW_S = 300.0, 3_600.0  # the previous stream's windows (paper: 5 min, 1 h)
LONG_VIEW_S = 60.0  # a view this long is a long view (the paper does not say; proposed)


@dataclass(frozen=True)
class StreamConfig:
    """The sizes and the truth of a stream world (card section 7.3's presets)."""

    n_users: int = 3_000
    n_rooms: int = 24  # live rooms; room a is streamed by author a
    n_short: int = 2_000  # short videos
    extra_authors: int = 60  # authors with short videos only
    minutes: float = 240.0  # the simulated horizon
    impressions_per_tick: float = 400.0  # mean of the Poisson arrivals
    d_topic: int = 8
    ctr: float = 0.12  # mean click rate outside highlights (sets the intercept)
    affinity: float = 1.0  # weight of p_u . t_a in the click logit
    fan_boost: float = 1.0  # added to the click logit of a favourite author's room
    highlight_boost: float = 1.5  # kappa: added during a highlight
    normal_minutes: float = 15.0  # mean dwell in the normal state
    highlight_minutes: float = 2.0  # mean dwell in a highlight
    favourites: int = 3  # favourite authors per viewer (among the live ones)
    user_activity: float = 1.2  # sigma of the log-normal impression rate per viewer
    view_median_s: float = 90.0  # median view duration (log-normal)
    view_sigma: float = 1.3
    highlight_stay: float = 1.5  # views entered in a highlight last this much longer
    like_rate: float = 0.25  # P(a viewer likes) at zero affinity, before the exit cuts it
    like_delay_s: float = 120.0  # mean delay of the like
    comments_per_min: float = 0.15  # at zero affinity
    gift_rate: float = 0.10  # P(a viewer would gift) at zero affinity, for a fan x3
    gift_delay_s: float = 1_200.0
    short_history: int = 200  # short-video interactions per viewer
    short_days: float = 2.0  # they span this many days before the horizon, and the horizon
    favourite_share: float = 0.3  # share of a viewer's short videos by favourite authors
    d_search: int = 8  # width of the frozen search embedding (SVD of short-video views)
    warmup_minutes: float = 30.0  # prequential metrics skip this start
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_rooms", "n_short", "d_topic", "favourites",
                     "short_history", "d_search"):
            checks.positive_int(name, getattr(self, name))
        checks.positive_int("extra_authors", self.extra_authors, minimum=0)
        for name in ("minutes", "impressions_per_tick", "normal_minutes",
                     "highlight_minutes", "view_median_s", "like_delay_s", "gift_delay_s",
                     "short_days"):
            checks.real(name, getattr(self, name), low=0.0, low_open=True)
        checks.real("ctr", self.ctr, low=0.0, high=1.0, low_open=True, high_open=True)
        checks.real("warmup_minutes", self.warmup_minutes, low=0.0)
        if self.warmup_minutes >= self.minutes:
            raise checks.InvalidInputError(f"warmup_minutes ({self.warmup_minutes}) must be "
                                           f"shorter than the horizon ({self.minutes})")
        if self.n_short < self.n_rooms:
            raise checks.InvalidInputError("n_short: every room's author needs a short video"
                                           f" ({self.n_short} < {self.n_rooms} rooms)")
        if self.d_search >= min(self.n_users, self.n_short):
            raise checks.InvalidInputError("d_search must be below n_users and n_short")

    @property
    def ticks(self) -> int:
        return int(round(self.minutes * 60 / TICK_S))

    @property
    def horizon(self) -> float:
        return self.ticks * TICK_S

    @property
    def warmup_ticks(self) -> int:
        return int(round(self.warmup_minutes * 60 / TICK_S))


STREAM_PRESETS = {
    "smoke": StreamConfig(n_users=300, n_rooms=6, n_short=400, extra_authors=20,
                          minutes=90.0, impressions_per_tick=60.0, short_history=300,
                          warmup_minutes=15.0),
    "cpu": StreamConfig(short_history=450),
    "gpu": StreamConfig(n_users=100_000, n_rooms=500, n_short=50_000, extra_authors=2_000,
                        minutes=24 * 60.0, impressions_per_tick=2_000.0,
                        short_history=1_000, d_search=16, warmup_minutes=120.0),
}


@dataclass(frozen=True)
class EventLog:
    """What happened. Impressions [N], time-ordered: ``user``, ``room``, ``time`` (s),
    ``clicked``, ``exit`` (s; the impression time when not clicked, at most the horizon).
    Behaviour events [E], ordered by time: ``event_impression``, ``event_task`` (index of
    ``TASKS``; a click is an event at the impression's time), ``event_time``."""

    user: np.ndarray
    room: np.ndarray
    time: np.ndarray
    clicked: np.ndarray
    exit: np.ndarray
    event_impression: np.ndarray
    event_task: np.ndarray
    event_time: np.ndarray
    n_users: int
    n_rooms: int
    horizon: float

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("room", "time", "clicked", "exit"):
            if len(getattr(self, name)) != n:
                raise checks.InvalidInputError(f"EventLog.{name} has {len(getattr(self, name))}"
                                               f" rows, user has {n}")
        if n and np.any(np.diff(self.time) < 0):
            raise checks.InvalidInputError("EventLog.time must be sorted (never shuffle a "
                                           "stream)")
        if np.any(self.exit < self.time):
            row = checks.first_bad(self.exit < self.time)
            raise checks.InvalidInputError(f"EventLog.exit: impression {row} exits before it "
                                           "starts")
        e = len(self.event_impression)
        if len(self.event_task) != e or len(self.event_time) != e:
            raise checks.InvalidInputError("EventLog: the event columns differ in length")
        if e:
            late = self.event_time > self.exit[self.event_impression] + 1e-9
            if late.any():
                raise checks.InvalidInputError(
                    f"EventLog.event_time: event {checks.first_bad(late)} happens after its "
                    "viewer left")
            early = self.event_time < self.time[self.event_impression] - 1e-9
            if early.any():
                raise checks.InvalidInputError(
                    f"EventLog.event_time: event {checks.first_bad(early)} happens before "
                    "its impression")

    @property
    def n_impressions(self) -> int:
        return len(self.user)

    @property
    def ticks(self) -> int:
        return int(np.ceil(self.horizon / TICK_S))

    @property
    def impression_tick(self) -> np.ndarray:
        return tick_of(self.time)

    def until(self, seconds: float) -> EventLog:
        """The log's first ``seconds`` (rounded up to a tick): later impressions and events
        dropped, views still open then closed there."""
        horizon = float(np.ceil(seconds / TICK_S) * TICK_S)
        keep = self.time < horizon
        events = self.event_time < horizon
        return EventLog(user=self.user[keep], room=self.room[keep], time=self.time[keep],
                        clicked=self.clicked[keep], exit=np.minimum(self.exit[keep], horizon),
                        event_impression=self.event_impression[events],
                        event_task=self.event_task[events], event_time=self.event_time[events],
                        n_users=self.n_users, n_rooms=self.n_rooms, horizon=horizon)

    def labels(self) -> np.ndarray:
        """[N, T] the final outcome of every impression: did each behaviour ever happen."""
        out = np.zeros((self.n_impressions, len(TASKS)), dtype=np.float32)
        out[self.event_impression, self.event_task] = 1.0
        return out

    def counts(self) -> np.ndarray:
        """[N, T] how often each behaviour happened (comments repeat)."""
        out = np.zeros((self.n_impressions, len(TASKS)), dtype=np.float32)
        np.add.at(out, (self.event_impression, self.event_task), 1.0)
        return out


def tick_of(seconds: np.ndarray) -> np.ndarray:
    """The 30-second tick in which a time falls (a sample is released at its tick's end)."""
    return np.floor(np.asarray(seconds, dtype=np.float64) / TICK_S).astype(np.int64)


@dataclass(frozen=True)
class Histories:
    """Every viewer's history, as the search units read it. Short videos [U, H]: ``short``
    (video ids), ``short_time`` (s; before the horizon or inside it), ``short_long`` (a
    long view), sorted by time. Live views [U, V]: ``live_room`` and ``live_known`` (the end
    of the tick of the click: when the click reached the log) and ``live_long_known`` (when
    the long view did; inf if none), padded with room -1 and time inf."""

    short: np.ndarray
    short_time: np.ndarray
    short_long: np.ndarray
    live_room: np.ndarray
    live_known: np.ndarray
    live_long_known: np.ndarray


@dataclass(frozen=True)
class StreamWorld:
    """A stream world: its log, its truth and its short-video domain."""

    config: StreamConfig
    log: EventLog
    histories: Histories
    highlight: np.ndarray  # [R, K] 1 during a highlight tick
    user_pref: np.ndarray  # [U, d] p_u
    room_topic: np.ndarray  # [R, d] t_a
    room_bias: np.ndarray  # [R]
    favourite: np.ndarray  # [U, F] favourite authors (rooms)
    intercept: float
    click_prob: np.ndarray  # [N] the truth of each impression's click
    short_author: np.ndarray  # [S] author of each short video (< R: a live author)
    short_search: np.ndarray  # [S, d_s] frozen search embeddings, learnt before the horizon
    room_search: np.ndarray  # [R, d_s] the mean of the author's videos' search embeddings

    @property
    def n_short(self) -> int:
        return len(self.short_author)

    def true_ctr(self, users: np.ndarray, rooms: np.ndarray, highlight: np.ndarray
                 ) -> np.ndarray:
        """P(click) of viewers ``users`` shown rooms ``rooms`` in state ``highlight``."""
        fan = (self.favourite[users] == rooms[:, None]).any(1)
        return sigmoid(self._logit(users, rooms, fan, highlight))

    def _logit(self, users, rooms, fan, highlight) -> np.ndarray:
        cfg = self.config
        affinity = np.einsum("nd,nd->n", self.user_pref[users], self.room_topic[rooms])
        return (self.intercept + self.room_bias[rooms] + cfg.affinity * affinity
                + cfg.fan_boost * fan + cfg.highlight_boost * highlight)

    def live_clicks(self) -> np.ndarray:
        """[U] each viewer's live clicks over the whole log (the activity bucket)."""
        return np.bincount(self.log.user[self.log.clicked], minlength=self.log.n_users)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-9)


def _highlights(cfg: StreamConfig, rng: np.random.Generator) -> np.ndarray:
    """[R, K] a two-state Markov chain per room at the tick, from its stationary law."""
    start = TICK_S / (cfg.normal_minutes * 60)  # P(normal -> highlight) per tick
    stop = TICK_S / (cfg.highlight_minutes * 60)
    state = np.zeros((cfg.n_rooms, cfg.ticks), dtype=np.int8)
    state[:, 0] = rng.random(cfg.n_rooms) < start / (start + stop)
    u = rng.random((cfg.n_rooms, cfg.ticks))
    for k in range(1, cfg.ticks):
        on = state[:, k - 1] == 1
        state[:, k] = np.where(on, u[:, k] >= stop, u[:, k] < start)
    return state


def _short_domain(cfg: StreamConfig, pref: np.ndarray, author_topic: np.ndarray,
                  favourite: np.ndarray, rng: np.random.Generator):
    """Short videos (author, topic) and every viewer's short-video history."""
    n_authors = len(author_topic)
    author = np.concatenate([np.arange(cfg.n_rooms),
                             rng.integers(0, n_authors, cfg.n_short - cfg.n_rooms)])
    noise = rng.normal(size=(cfg.n_short, cfg.d_topic)) / np.sqrt(cfg.d_topic)
    topic = _unit(author_topic[author] + 0.5 * noise)
    U, H = cfg.n_users, cfg.short_history
    videos = np.empty((U, H), dtype=np.int64)
    chunk = max(1, 20_000_000 // cfg.n_short)  # keeps [users, S] logits small at gpu scale
    for lo in range(0, U, chunk):
        rows = min(U, lo + chunk) - lo
        logits = 2.0 * pref[lo:lo + rows] @ topic.T  # [u, S]
        cdf = np.cumsum(np.exp(logits - logits.max(1, keepdims=True)), 1)
        cdf /= cdf[:, -1:]
        offset = np.arange(rows)[:, None]  # row r's cdf lives in [r, r + 1]: one search
        flat = np.searchsorted((cdf + offset).ravel(), (rng.random((rows, H)) + offset).ravel())
        videos[lo:lo + rows] = np.minimum(flat.reshape(rows, H) - offset * cfg.n_short,
                                          cfg.n_short - 1)
    # a share of the history comes from favourite authors' videos, uniformly among them
    by_author = np.argsort(author[: cfg.n_short], kind="stable")
    starts = np.searchsorted(author[by_author], np.arange(cfg.n_rooms))
    sizes = np.bincount(author, minlength=n_authors)[: cfg.n_rooms]
    fav_author = favourite[np.arange(U)[:, None], rng.integers(0, cfg.favourites, (U, H))]
    pick = by_author[starts[fav_author] + (rng.random((U, H)) * sizes[fav_author]).astype(int)]
    videos = np.where(rng.random((U, H)) < cfg.favourite_share, pick, videos)
    span = cfg.short_days * 86_400
    times = np.sort(rng.uniform(-span, cfg.horizon, (U, H)), axis=1)
    affinity = np.einsum("uhd,ud->uh", topic[videos], pref)
    fan = (author[videos][..., None] == favourite[:, None, :]).any(-1)
    long = rng.random((U, H)) < sigmoid(2 * affinity - 1 + 2 * fan)
    return author, topic, videos, times, long


def _search_embeddings(cfg: StreamConfig, videos: np.ndarray, times: np.ndarray,
                       author: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frozen search embeddings (card pitfall 6): a truncated SVD of the viewer x video
    matrix of short-video views *before the horizon*, so the search never reads the future.
    A room's embedding is the mean of its author's videos' (all are pre-horizon items)."""
    rows, cols = np.nonzero(times < 0)
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, videos[rows, cols])),
                           shape=(cfg.n_users, cfg.n_short))
    _, s, vt = svds(matrix.astype(np.float64), k=cfg.d_search, random_state=cfg.seed)
    items = _unit(vt.T * np.sqrt(s))  # [S, d_s]
    rooms = _unit(np.stack([items[author == a].mean(0) for a in range(cfg.n_rooms)]))
    return items.astype(np.float32), rooms.astype(np.float32)


def _impressions(cfg: StreamConfig, rng: np.random.Generator):
    per_tick = rng.poisson(cfg.impressions_per_tick, cfg.ticks)
    tick = np.repeat(np.arange(cfg.ticks), per_tick)
    time = (tick + rng.random(len(tick))) * TICK_S
    order = np.argsort(time, kind="stable")
    activity = rng.lognormal(0.0, cfg.user_activity, cfg.n_users)
    popularity = rng.lognormal(0.0, 0.5, cfg.n_rooms)
    user = rng.choice(cfg.n_users, len(tick), p=activity / activity.sum())
    room = rng.choice(cfg.n_rooms, len(tick), p=popularity / popularity.sum())
    return user, room, time[order]


def _behaviours(cfg: StreamConfig, rng: np.random.Generator, entry: np.ndarray,
                stay: np.ndarray, affinity: np.ndarray, fan: np.ndarray):
    """Every behaviour of the clicked impressions: (view index, task, time)."""
    n = len(entry)
    views, tasks, times = [np.arange(n)], [np.full(n, CLICK)], [entry]
    long = stay >= LONG_VIEW_S
    views.append(np.flatnonzero(long))
    tasks.append(np.full(long.sum(), LONG_VIEW))
    times.append(entry[long] + LONG_VIEW_S)
    likes = rng.random(n) < sigmoid(np.log(cfg.like_rate / (1 - cfg.like_rate)) + affinity)
    delay = rng.exponential(cfg.like_delay_s, n)
    liked = likes & (delay < stay)
    views.append(np.flatnonzero(liked))
    tasks.append(np.full(liked.sum(), LIKE))
    times.append(entry[liked] + delay[liked])
    rate = cfg.comments_per_min / 60 * np.exp(0.5 * affinity)  # per second
    n_comments = rng.poisson(rate * stay)
    owner = np.repeat(np.arange(n), n_comments)
    views.append(owner)
    tasks.append(np.full(len(owner), COMMENT))
    times.append(entry[owner] + rng.random(len(owner)) * stay[owner])
    would = rng.random(n) < sigmoid(np.log(cfg.gift_rate / 3) + affinity + np.log(3) * fan)
    delay = rng.exponential(cfg.gift_delay_s, n)
    gifted = would & (delay < stay)
    views.append(np.flatnonzero(gifted))
    tasks.append(np.full(gifted.sum(), GIFT))
    times.append(entry[gifted] + delay[gifted])
    return np.concatenate(views), np.concatenate(tasks), np.concatenate(times)


def _live_histories(log: EventLog, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each viewer's live clicks [U, V] (the first ``cap``), with when the click and the
    long view reached the log (the end of their tick)."""
    clicks = np.flatnonzero(log.clicked)
    long_at = np.full(log.n_impressions, np.inf)
    is_long = log.event_task == LONG_VIEW
    long_at[log.event_impression[is_long]] = log.event_time[is_long]
    users = log.user[clicks]
    order = np.lexsort((log.time[clicks], users))
    clicks, users = clicks[order], users[order]
    rank = np.arange(len(clicks)) - np.searchsorted(users, users)
    keep = rank < cap
    width = max(1, int(rank[keep].max() + 1) if keep.any() else 1)
    room = np.full((log.n_users, width), -1, dtype=np.int64)
    known = np.full((log.n_users, width), np.inf)
    long_known = np.full((log.n_users, width), np.inf)
    u, r, c = users[keep], rank[keep], clicks[keep]
    room[u, r] = log.room[c]
    known[u, r] = (tick_of(log.time[c]) + 1) * TICK_S
    long_view = np.isfinite(long_at[c])
    long_known[u[long_view], r[long_view]] = (tick_of(long_at[c][long_view]) + 1) * TICK_S
    return room, known, long_known


def build_stream_world(cfg: StreamConfig) -> StreamWorld:
    """Draw a world from ``cfg`` (deterministic under ``cfg.seed``)."""
    rng = np.random.default_rng(cfg.seed)
    n_authors = cfg.n_rooms + cfg.extra_authors
    author_topic = _unit(rng.normal(size=(n_authors, cfg.d_topic)))
    pref = rng.normal(size=(cfg.n_users, cfg.d_topic))
    room_topic = author_topic[: cfg.n_rooms]
    taste = pref @ room_topic.T  # [U, R]
    gumbel = rng.gumbel(size=taste.shape)
    favourite = np.argsort(-(2 * taste + gumbel), axis=1)[:, : cfg.favourites]
    highlight = _highlights(cfg, rng)
    room_bias = 0.3 * rng.normal(size=cfg.n_rooms)

    user, room, time = _impressions(cfg, rng)
    fan = (favourite[user] == room[:, None]).any(1)
    affinity = np.einsum("nd,nd->n", pref[user], room_topic[room])
    in_highlight = highlight[room, tick_of(time)]
    logits = room_bias[room] + cfg.affinity * affinity + cfg.fan_boost * fan
    intercept = _intercept(logits[in_highlight == 0], cfg.ctr)
    click_prob = sigmoid(intercept + logits + cfg.highlight_boost * in_highlight)
    clicked = rng.random(len(user)) < click_prob

    entry = time[clicked]
    stay = rng.lognormal(np.log(cfg.view_median_s), cfg.view_sigma, len(entry))
    stay *= np.exp(0.5 * affinity[clicked]) * np.where(in_highlight[clicked],
                                                       cfg.highlight_stay, 1.0)
    stay = np.minimum(stay, cfg.horizon - entry)  # views open at the horizon close there
    view, task, ev_time = _behaviours(cfg, rng, entry, stay, affinity[clicked], fan[clicked])
    exit_time = time.copy()
    exit_time[clicked] = np.where(entry + stay >= cfg.horizon - 1e-6, cfg.horizon, entry + stay)
    clicked_rows = np.flatnonzero(clicked)
    ev_imp = clicked_rows[view]
    inside = ev_time < cfg.horizon
    order = np.argsort(ev_time[inside], kind="stable")
    log = EventLog(user=user, room=room, time=time, clicked=clicked, exit=exit_time,
                   event_impression=ev_imp[inside][order], event_task=task[inside][order],
                   event_time=ev_time[inside][order], n_users=cfg.n_users,
                   n_rooms=cfg.n_rooms, horizon=cfg.horizon)

    author, _, videos, short_time, short_long = _short_domain(cfg, pref, author_topic,
                                                              favourite, rng)
    short_search, room_search = _search_embeddings(cfg, videos, short_time, author)
    live_room, live_known, live_long = _live_histories(log, cap=4 * cfg.short_history)
    histories = Histories(short=videos, short_time=short_time, short_long=short_long,
                          live_room=live_room, live_known=live_known,
                          live_long_known=live_long)
    return StreamWorld(config=cfg, log=log, histories=histories, highlight=highlight,
                       user_pref=pref, room_topic=room_topic, room_bias=room_bias,
                       favourite=favourite, intercept=intercept, click_prob=click_prob,
                       short_author=author, short_search=short_search,
                       room_search=room_search)


def stream_world(preset: str = "cpu", **changes) -> StreamWorld:
    """The world of a named preset (``STREAM_PRESETS``), with fields changed by keyword."""
    checks.one_of("preset", preset, STREAM_PRESETS)
    return build_stream_world(replace(STREAM_PRESETS[preset], **changes))


# --------------------------------------------------------------------------- the streams


@dataclass(frozen=True)
class Stream:
    """Samples as a trainer receives them, ordered by ``tick`` (the tick whose end releases
    them): ``impression`` [M] (the view each belongs to), ``labels``, ``mask`` and
    ``cancel`` [M, T]. Task t of a sample adds ``mask * BCE(label) - cancel * BCE(0)``."""

    name: str
    impression: np.ndarray
    tick: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    cancel: np.ndarray

    def __len__(self) -> int:
        return len(self.impression)

    def bounds(self, n_ticks: int) -> np.ndarray:
        """[K + 1] offsets: tick k's samples are rows bounds[k]:bounds[k + 1]."""
        return np.searchsorted(self.tick, np.arange(n_ticks + 1))


def _samples(impression, tick, labels, mask, cancel=None) -> tuple:
    cancel = np.zeros_like(mask) if cancel is None else cancel
    return impression, tick, labels.astype(np.float32), mask, cancel


def _one_task(impression: np.ndarray, task: np.ndarray, time: np.ndarray) -> tuple:
    """A positive of task ``task`` only, released in the tick of ``time``."""
    n = len(impression)
    labels = np.zeros((n, len(TASKS)), dtype=np.float32)
    labels[np.arange(n), task] = 1.0
    return _samples(impression, tick_of(time), labels, labels.astype(bool))


def _exits(log: EventLog) -> tuple:
    """At each exit, a negative for every task that never happened in the view."""
    happened = log.labels().astype(bool)
    mask = ~happened
    keep = mask.any(1)
    rows = np.flatnonzero(keep)
    return _samples(rows, tick_of(log.exit[rows]), np.zeros((len(rows), len(TASKS))),
                    mask[rows])


def _first_events(log: EventLog) -> np.ndarray:
    """Indices of each (impression, task)'s first event."""
    order = np.lexsort((log.event_time, log.event_task, log.event_impression))
    key = log.event_impression[order] * len(TASKS) + log.event_task[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    return order[first]


def _seen_by(log: EventLog, deadline: np.ndarray) -> np.ndarray:
    """[N, T] 1 where the behaviour happened strictly before the impression's deadline."""
    seen = np.zeros((log.n_impressions, len(TASKS)), dtype=np.float32)
    early = log.event_time < deadline[log.event_impression]
    seen[log.event_impression[early], log.event_task[early]] = 1.0
    return seen


def build_stream(log: EventLog, name: str) -> Stream:
    """The samples of stream ``name`` (one of ``STREAMS``) from ``log``. Samples that would
    be released after the horizon never reach the trainer and are left out."""
    checks.one_of("stream", name, STREAMS)
    n = log.n_impressions
    rows = np.arange(n)
    parts = []
    if name == "fast/slow":
        fast = _seen_by(log, log.time + FAST_S)
        parts.append(_samples(rows, tick_of(log.time + FAST_S), fast,
                              np.ones_like(fast, dtype=bool)))
        late = (_seen_by(log, log.time + SLOW_S) - fast).astype(bool)  # first seen in 5m-1h
        slow = np.flatnonzero(late.any(1))
        parts.append(_samples(slow, tick_of(log.time[slow] + SLOW_S),
                              late[slow].astype(np.float32), late[slow], late[slow]))
    elif name == "naive 30s":
        deadline = (log.impression_tick + 1) * TICK_S
        seen = _seen_by(log, deadline)
        parts.append(_samples(rows, log.impression_tick, seen, np.ones_like(seen, dtype=bool)))
    else:
        events = (_first_events(log) if name == "moment"
                  else np.arange(len(log.event_impression)))
        parts.append(_one_task(log.event_impression[events], log.event_task[events],
                               log.event_time[events]))
        parts.append(_exits(log))
    impression, tick, labels, mask, cancel = (np.concatenate(cols) for cols in zip(*parts,
                                                                                   strict=True))
    arrived = tick < log.ticks
    order = np.argsort(tick[arrived], kind="stable")
    return Stream(name=name, impression=impression[arrived][order], tick=tick[arrived][order],
                  labels=labels[arrived][order], mask=mask[arrived][order],
                  cancel=cancel[arrived][order])
