"""A synthetic Kuaishou-like world with a known truth, the data source of the whole course.

What no offline dataset has, this world provides: users whose several interests drift from
day to day; short videos and live streams from creators; visual, text and audio vectors per
item generated from its topic plus noise; live streams whose appeal changes minute by
minute; multi-behaviour feedback (effective view, long view, like, follow, comment,
forward, and gifts on live streams) at configurable rates; and a request-level six-stage
funnel whose stage models grow more precise downstream, logged exactly as RecFlow logs it.

Everything derives from latent factors that stay available (``World``), so a chapter can
measure how much of the truth a model recovers. The design follows the RecFlow paper card's
generator proposal (its sections 10.1-10.5); choices it leaves open are marked [proposed].

    world = World.build(WORLD_PRESETS["smoke"])      # latent users, items, creators
    log = simulate(world)                            # requests, funnel, feedback, histories
    log.write_recflow(folder)                        # the RecFlow layout, read by RecFlow()

The same seed gives byte-identical files; only ``numpy.random.Generator`` streams spawned
from one ``SeedSequence`` are used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recfunnel.data import recflow

BEHAVIOURS = ("effective_view", "long_view", "like", "follow", "comment", "forward", "gift")
# [proposed] how strongly each behaviour follows the standardised relevance z: the
# probability of a behaviour is sigmoid(slope * z + gamma), gamma calibrated to its rate
ENGAGEMENT_SLOPES = (("effective_view", 1.2), ("long_view", 1.2), ("like", 1.2),
                     ("follow", 1.0), ("comment", 1.0), ("forward", 1.0), ("gift", 2.0))
BEIJING = dt.timezone(dt.timedelta(hours=8))  # RecFlow's timestamps are Beijing time


@dataclass(frozen=True)
class WorldConfig:
    """Sizes, funnel shape and feedback rates of a world. The defaults are the paper card's
    ``small`` preset; ``WORLD_PRESETS`` holds the course's three sizes."""

    n_users: int = 1_500
    n_videos: int = 30_000  # short videos
    n_live: int = 600  # live streams (one per streaming creator)
    n_creators: int = 3_000
    n_topics: int = 32  # latent interest clusters; also the level-two categories
    d_latent: int = 16
    n_days: int = 8
    first_day: str = "2024-01-13"
    requests_per_user_day: float = 6.0  # Poisson mean, at least one request
    pool_size: int = 4_000  # items scored by retrieval per request (whole corpus if fewer)
    # items kept by retrieval, pre-ranking, coarse ranking, ranking and re-ranking
    funnel: tuple[int, ...] = (1_500, 600, 150, 50, 10)
    max_shown: int = 6  # exposures per request ~ clip(Binomial(6, 0.68), 1, 6)
    # logged samples per request: prerank_neg, coarse_neg, rank_pos, rank_neg, rerank_pos,
    # rerank_neg (RecFlow logs 40/40/10/10/10/10)
    logged: tuple[int, ...] = (10, 10, 10, 10, 10, 10)
    # noise of each stage's model, in units of the relevance's std: later stages see more
    # of the truth (retrieval, pre, coarse, rank, re-rank, exposure)
    stage_noise: tuple[float, ...] = (1.5, 1.0, 0.7, 0.4, 0.25, 0.15)
    interest_concentration: float = 0.3  # Dirichlet: small -> few dominant interests
    drift: float = 0.15  # daily random-walk step of user vectors
    popularity_scale: float = 0.8  # std of the item bias b_i (log-normal exposure tail)
    live_appeal_scale: float = 1.0  # size of the minute-by-minute appeal of live streams
    modality_dims: tuple[tuple[str, int], ...] = (("visual", 32), ("text", 24), ("audio", 16))
    modality_informativeness: float = 0.7  # 0: modalities are noise; 1: pure topic signal
    behaviour_in_content: float = 0.2  # share of an item's behaviour factor the content shows
    # target rates per exposure [proposed placeholders of the card, 10.3]; the gift rate is
    # per effective view of a live stream [proposed]
    rates: tuple[tuple[str, float], ...] = (
        ("effective_view", 0.40), ("long_view", 0.20), ("like", 0.02), ("follow", 0.003),
        ("comment", 0.003), ("forward", 0.002), ("gift", 0.02),
    )
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.funnel) != 5 or any(a < b for a, b in zip(self.funnel, self.funnel[1:],
                                                              strict=False)):
            raise ValueError(f"funnel must be 5 non-increasing sizes, got {self.funnel}")
        if self.funnel[-1] < self.max_shown:
            raise ValueError("re-ranking must keep at least max_shown items")
        if len(self.stage_noise) != 6 or len(self.logged) != 6:
            raise ValueError("stage_noise and logged need 6 entries each")
        if not 0 <= self.modality_informativeness <= 1:
            raise ValueError("modality_informativeness must lie in [0, 1]")
        videos_in_pool = min(self.n_videos, self.pool_size - min(self.n_live, self.pool_size // 4))
        if self.n_items > self.pool_size and videos_in_pool < self.funnel[0]:
            raise ValueError("the retrieval pool must hold more short videos than retrieval "
                             "keeps (live streams may be off air)")
        if self.n_items <= self.pool_size and self.n_videos < self.funnel[0]:
            raise ValueError("retrieval keeps more items than there are short videos")

    @property
    def n_items(self) -> int:
        return self.n_videos + self.n_live

    @property
    def days(self) -> list[str]:
        first = dt.date.fromisoformat(self.first_day)
        return [(first + dt.timedelta(days=d)).isoformat() for d in range(self.n_days)]


WORLD_PRESETS = {
    "smoke": WorldConfig(n_users=64, n_videos=1_900, n_live=100, n_creators=300, n_topics=16,
                         n_days=3, requests_per_user_day=3.0, pool_size=2_000,
                         funnel=(400, 150, 60, 25, 10), logged=(40, 40, 10, 10, 10, 10)),
    "cpu": WorldConfig(n_users=800, n_videos=20_000, n_live=400, n_creators=2_000, n_days=7,
                       requests_per_user_day=5.0),
    # [proposed] the paper's 42K users x 37 days (1.9B rows) does not fit in a Colab
    # session's memory; this keeps about 9M logged rows (about 27 s and 0.8 GB per
    # simulated day on 2 cores)
    "gpu": WorldConfig(n_users=4_000, n_videos=80_000, n_live=800, n_creators=8_000,
                       n_topics=64, n_days=7, pool_size=8_000,
                       funnel=(3_000, 1_000, 300, 120, 10)),
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class World:
    """The latent truth: topics, users, creators, items, modalities and live schedules."""

    cfg: WorldConfig
    topic_centers: np.ndarray  # [n_topics, d]
    user_interests: np.ndarray  # [U, n_topics] mixture weights pi_u
    user_base: np.ndarray  # [U, d]  u = sum_k pi_k mu_k + eps
    user_steps: np.ndarray  # [n_days, U, d] daily drift steps (cumulated in user_vectors)
    user_live: np.ndarray  # [U] taste for live streams
    demographics: dict[str, np.ndarray]  # age, gender, province: [U] each
    item_topic: np.ndarray  # [I]
    item_creator: np.ndarray  # [I]
    item_is_live: np.ndarray  # [I] bool; live streams are the last n_live ids
    item_latent: np.ndarray  # [I, d] v_i = mu_topic + creator style + behaviour factor
    item_behaviour: np.ndarray  # [I, d] the part of v_i that content shows only weakly
    item_bias: np.ndarray  # [I] popularity b_i
    item_meta: dict[str, np.ndarray]  # duration_ms, upload_timestamp, upload_type, category
    modalities: dict[str, np.ndarray]  # name -> [I, d_m]
    live_windows: np.ndarray  # [n_days, n_live, 2] on-air minutes [start, end)
    live_moments: np.ndarray  # [n_days, n_live, 3, 2] bump centres (min) and heights
    relevance_std: float = field(default=1.0)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, cfg: WorldConfig) -> World:
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(6)]
        topics, users, items, modal, live, drift = rngs
        d, K, U, V = cfg.d_latent, cfg.n_topics, cfg.n_users, cfg.n_items
        centers = topics.normal(size=(K, d))
        centers *= np.sqrt(d) / np.linalg.norm(centers, axis=1, keepdims=True)  # |mu| = sqrt(d)

        interests = users.dirichlet(np.full(K, cfg.interest_concentration), size=U)
        user_base = interests @ centers + 0.5 * users.normal(size=(U, d))
        dominant = interests.argmax(axis=1)
        demographics = {  # weakly predictive of the dominant interest
            "age": (dominant % 7 + users.integers(0, 3, U)) % 7,
            "gender": ((dominant % 2) ^ (users.random(U) < 0.3)).astype(np.int64),
            "province": (dominant * 3 + users.integers(0, 6, U)) % 31,
        }

        creator_topic = items.integers(0, K, cfg.n_creators)
        creator_style = 0.5 * items.normal(size=(cfg.n_creators, d))
        creator_weight = 1.0 / np.arange(1, cfg.n_creators + 1) ** 0.9  # Zipf catalogue sizes
        video_creator = items.choice(cfg.n_creators, cfg.n_videos,
                                     p=creator_weight / creator_weight.sum())
        live_creator = items.choice(cfg.n_creators, cfg.n_live, replace=cfg.n_live >
                                    cfg.n_creators)
        creator = np.concatenate([video_creator, live_creator])
        off_topic = items.random(V) < 0.2
        topic = np.where(off_topic, items.integers(0, K, V), creator_topic[creator])
        behaviour = 0.6 * items.normal(size=(V, d))
        latent = centers[topic] + creator_style[creator] + behaviour
        bias = cfg.popularity_scale * items.normal(size=V)
        first_ms = _day_start_ms(cfg.days[0])
        meta = {
            "duration_ms": np.clip(np.exp(items.normal(np.log(30_000) + 0.1 * (topic % 5 - 2),
                                                        0.8)), 3_000, 600_000).astype(np.int64),
            "upload_timestamp": (first_ms // 1000 - items.integers(3_600, 60 * 86_400, V)),
            "upload_type": items.integers(0, 5, V),
            "category_level_two": topic.astype(np.int64),
            "category_level_one": (topic // 4).astype(np.int64),
        }
        modalities = {}
        for name, dim in cfg.modality_dims:
            projection = modal.normal(size=(d, dim)) / np.sqrt(d)
            signal = (centers[topic] + cfg.behaviour_in_content * behaviour) @ projection
            noise = modal.normal(size=(V, dim)) * signal.std()
            info = cfg.modality_informativeness
            modalities[name] = (np.sqrt(info) * signal + np.sqrt(1 - info) * noise
                                ).astype(np.float32)

        start = live.integers(8 * 60, 22 * 60, (cfg.n_days, cfg.n_live))  # evening-heavy
        length = live.integers(60, 240, (cfg.n_days, cfg.n_live))
        windows = np.stack([start, np.minimum(start + length, 24 * 60)], axis=-1)
        centres = start[..., None] + live.random((cfg.n_days, cfg.n_live, 3)) * length[..., None]
        heights = live.gamma(2.0, 0.5, (cfg.n_days, cfg.n_live, 3))
        moments = np.stack([centres, heights], axis=-1)

        world = cls(
            cfg=cfg, topic_centers=centers, user_interests=interests, user_base=user_base,
            user_steps=cfg.drift * drift.normal(size=(cfg.n_days, U, d)),
            user_live=0.7 * users.normal(size=U) - 0.5, demographics=demographics,
            item_topic=topic, item_creator=creator,
            item_is_live=np.arange(V) >= cfg.n_videos, item_latent=latent,
            item_behaviour=behaviour, item_bias=bias, item_meta=meta, modalities=modalities,
            live_windows=windows, live_moments=moments,
        )
        probe = world.relevance(np.arange(min(U, 256)), np.arange(cfg.n_videos)[:2_000],
                                day=0, minute=np.full(min(U, 256), 12 * 60))
        world.relevance_std = float(probe.std())
        return world

    # ------------------------------------------------------------------ the truth

    def user_vectors(self, day: int) -> np.ndarray:
        """[U, d] u_t: the base vector plus the random walk up to ``day``, rescaled to the
        base vector's length, so interests move without growing stronger over time."""
        cached = getattr(self, "_user_vectors", None)
        if cached is None or cached[0] != day:
            moved = self.user_base + self.user_steps[: day + 1].sum(axis=0)
            scale = np.linalg.norm(self.user_base, axis=1) / np.linalg.norm(moved, axis=1)
            cached = (day, moved * scale[:, None])
            self._user_vectors = cached
        return cached[1]

    def live_appeal(self, items: np.ndarray, day: int, minute: np.ndarray) -> np.ndarray:
        """[R, C] appeal of live items at each row's minute; -inf when off air, 0 for videos.
        Appeal is a sum of three Gaussian bumps ("moments") of 15 minutes' width."""
        R = len(minute)
        appeal = np.zeros((R, len(items)))
        is_live = self.item_is_live[items]
        if not is_live.any():
            return appeal
        stream = items[is_live] - self.cfg.n_videos
        window = self.live_windows[day, stream]  # [c, 2]
        moments = self.live_moments[day, stream]  # [c, 3, 2] centre (minute), height
        centres, heights = moments[..., 0], moments[..., 1]
        t = minute[:, None, None].astype(float)  # [R, 1, 1]
        bumps = heights[None] * np.exp(-0.5 * ((t - centres[None]) / 15.0) ** 2)  # [R, c, 3]
        live_part = self.cfg.live_appeal_scale * (bumps.sum(-1) - 0.5)
        on_air = (minute[:, None] >= window[None, :, 0]) & (minute[:, None] < window[None, :, 1])
        appeal[:, is_live] = np.where(on_air, live_part, -np.inf)
        return appeal

    def relevance(self, users: np.ndarray, items: np.ndarray, day: int,
                  minute: np.ndarray) -> np.ndarray:
        """[R, C] true relevance r(u, i, t) = <u_t, v_i> / sqrt(d) + b_i (+ live terms),
        divided by its std so that stage noise is in units of std(r)."""
        u = self.user_vectors(day)[users]  # [R, d]
        r = u @ self.item_latent[items].T / np.sqrt(self.cfg.d_latent) + self.item_bias[items]
        r = r + self.live_appeal(items, day, minute)
        r = r + np.where(self.item_is_live[items][None, :], self.user_live[users][:, None], 0.0)
        return r / self.relevance_std


# --------------------------------------------------------------------------- the log


@dataclass
class WorldLog:
    """Everything ``simulate`` produced: RecFlow rows per day (30 columns plus truth and
    extras), the three dictionaries per day, and the test-day files."""

    world: World
    rows: dict[str, pd.DataFrame]  # day -> rows (RecFlow columns + relevance, gift, ...)
    seqs: dict[str, dict]
    requests: dict[str, dict]
    ubm: dict[str, dict]
    calibration: dict[str, float]  # behaviour -> intercept gamma; z_mean, z_std

    def all_rows(self) -> pd.DataFrame:
        return pd.concat([self.rows[d].assign(day=d) for d in self.rows], ignore_index=True)

    def engagement_probability(self, relevance: np.ndarray,
                               behaviour: str = "effective_view") -> np.ndarray:
        """The chance an item of this true relevance would get ``behaviour`` if shown (for
        long view and the interactions: given an effective view), by the model that drew
        the labels. Defined for every logged item, shown or not."""
        if behaviour not in self.calibration:
            raise KeyError(f"unknown behaviour {behaviour!r}; known: {list(BEHAVIOURS)}")
        z = (np.asarray(relevance) - self.calibration["z_mean"]) / self.calibration["z_std"]
        return sigmoid(dict(ENGAGEMENT_SLOPES)[behaviour] * z + self.calibration[behaviour])

    def write_recflow(self, root: str | Path) -> Path:
        """Write the RecFlow layout (plus ``_truth/`` with each row's true relevance)."""
        root = Path(root)
        days = list(self.rows)
        exposed_so_far: list[np.ndarray] = []
        daily = {}
        for day in tqdm(days, desc="writing RecFlow files", leave=False):
            rows = self.rows[day]
            recflow.write_day(root, day, rows, self.seqs[day], self.requests[day],
                              self.ubm[day])
            recflow.write_table(root / "_truth" / f"{day}.feather",
                                rows.assign(relevance_e6=(rows["relevance"] * 1e6).round()
                                            .astype(np.int64)),
                                ("request_id", "video_id", "relevance_e6", "is_live", "gift"))
            exposed_so_far.append(rows.loc[rows["realshow"] == 1, "video_id"].to_numpy())
            daily[day] = np.unique(np.concatenate(exposed_so_far))
        last = self.rows[days[-1]]
        shown = last[last["realshow"] == 1]
        tests = {
            "retrieval": shown.groupby("request_id").head(recflow.TEST_CAPS["retrieval"]),
            "coarse_rank": last.groupby("request_id").head(recflow.TEST_CAPS["coarse_rank"]),
            "rank": last[(last["rank_index"] > 0) | (last["realshow"] == 1)]
            .groupby("request_id").head(recflow.TEST_CAPS["rank"]),
        }
        world = self.world
        id_cnt = {
            "user_id": world.cfg.n_users, "device_id": world.cfg.n_users, "age": 7,
            "gender": 2, "province": 31, "video_id": world.cfg.n_items,
            "author_id": world.cfg.n_creators, "category_level_one": world.cfg.n_topics // 4 + 1,
            "category_level_two": world.cfg.n_topics, "upload_type": 5,
        }
        recflow.write_others(root, id_cnt, tests, daily[days[-1]], daily)
        return root


def _day_start_ms(day: str) -> int:
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), BEIJING)
    return int(start.timestamp() * 1000)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, best first. [R, C] -> [R, k]"""
    k = min(k, scores.shape[1])
    if k == scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _sample_columns(rng: np.random.Generator, n_rows: int, n_cols: int, k: int) -> np.ndarray:
    """k distinct column indices per row, uniformly at random. -> [R, min(k, n_cols)]"""
    k = min(k, n_cols)
    if k == 0:
        return np.zeros((n_rows, 0), dtype=np.int64)
    return np.argpartition(rng.random((n_rows, n_cols)), k - 1, axis=1)[:, :k]


def calibrate_intercept(logits: np.ndarray, target: float) -> float:
    """The intercept gamma with mean(sigmoid(logits + gamma)) = target (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if sigmoid(logits + mid).mean() < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


# --------------------------------------------------------------------------- the funnel


def _run_funnel(world: World, rng: np.random.Generator, users: np.ndarray, day: int,
                minute: np.ndarray) -> dict[str, np.ndarray]:
    """One batch of requests through the six stages. Returns, per logged row: request row,
    item id, flags, stage positions, relevance."""
    cfg = world.cfg
    R = len(users)
    n_ret, n_pre, n_coarse, n_rank, n_rerank = cfg.funnel
    pre_neg, coarse_neg, rank_pos, rank_neg, rerank_pos, rerank_neg = cfg.logged
    noise = cfg.stage_noise
    if cfg.n_items <= cfg.pool_size:
        pool = np.arange(cfg.n_items)
    else:  # [proposed] one random pool per batch, plus every live stream (they are few)
        videos = rng.choice(cfg.n_videos, cfg.pool_size - min(cfg.n_live, cfg.pool_size // 4),
                            replace=False)
        live = cfg.n_videos + rng.choice(cfg.n_live, min(cfg.n_live, cfg.pool_size // 4),
                                         replace=False)
        pool = np.sort(np.concatenate([videos, live]))
    truth = world.relevance(users, pool, day, minute)  # [R, P]

    def stage(candidates: np.ndarray, sigma: float, keep: int):
        """Score candidates [R, C] (pool positions) with this stage's noisy model: the kept
        ones best first [R, keep], the dropped ones in no order [R, C - keep]."""
        noisy = np.take_along_axis(truth, candidates, axis=1)
        noisy = noisy + sigma * rng.normal(size=noisy.shape)
        if keep >= candidates.shape[1]:
            return np.take_along_axis(candidates, _top(noisy, keep), axis=1), candidates[:, :0]
        split = np.argpartition(-noisy, keep - 1, axis=1)
        kept, dropped = split[:, :keep], split[:, keep:]
        best_first = np.argsort(-np.take_along_axis(noisy, kept, axis=1), axis=1, kind="stable")
        kept = np.take_along_axis(kept, best_first, axis=1)
        return (np.take_along_axis(candidates, kept, axis=1),
                np.take_along_axis(candidates, dropped, axis=1))

    retrieved = _top(truth + noise[0] * rng.normal(size=truth.shape), n_ret)  # [R, n_ret]
    pre_kept, pre_dropped = stage(retrieved, noise[1], n_pre)
    coarse_kept, coarse_dropped = stage(pre_kept, noise[2], n_coarse)
    rank_order, _ = stage(coarse_kept, noise[3], n_coarse)  # ranking orders all its input
    rank_kept, rank_dropped = rank_order[:, :n_rank], rank_order[:, n_rank:]
    rerank_order, _ = stage(rank_kept, noise[4], n_rank)
    rerank_kept, rerank_dropped = rerank_order[:, :n_rerank], rerank_order[:, n_rerank:]
    edge_order, _ = stage(rerank_kept, noise[5], n_rerank)
    n_shown = np.clip(rng.binomial(cfg.max_shown, 0.68, R), 1, cfg.max_shown)

    # flags over the ranking stage's input (every item a later stage touched is in it)
    C = rank_order.shape[1]
    flags = {name: np.zeros((R, C), dtype=bool) for name in recflow.STAGE_FLAGS}
    rows_idx = np.arange(R)[:, None]
    position_in = {key: np.full((R, len(pool)), -1) for key in ("rank", "rerank")}
    position_in["rank"][rows_idx, rank_order] = np.arange(C)
    position_in["rerank"][rows_idx, rerank_order] = np.arange(rerank_order.shape[1])
    col_of = position_in["rank"]  # pool position -> column in rank_order

    def mark(name: str, items: np.ndarray) -> None:
        if items.size:
            flags[name][rows_idx, np.take_along_axis(col_of, items, axis=1)] = True

    mark("rank_pos", rank_order[:, :rank_pos])
    mark("rank_neg", np.take_along_axis(rank_dropped, _sample_columns(
        rng, R, rank_dropped.shape[1], rank_neg), axis=1))
    mark("rerank_pos", rerank_order[:, :rerank_pos])
    mark("rerank_neg", np.take_along_axis(rerank_dropped, _sample_columns(
        rng, R, rerank_dropped.shape[1], rerank_neg), axis=1))
    shown = edge_order[:, : cfg.max_shown]
    shown_mask = np.arange(cfg.max_shown)[None, :] < n_shown[:, None]
    flags["realshow"][rows_idx, np.take_along_axis(col_of, shown, axis=1)] |= shown_mask
    logged = np.zeros((R, C), dtype=bool)
    for name in ("rank_pos", "rank_neg", "rerank_pos", "rerank_neg", "realshow"):
        logged |= flags[name]
    rank_index = np.broadcast_to(np.arange(1, C + 1), (R, C))
    rerank_index = np.take_along_axis(position_in["rerank"], rank_order, axis=1) + 1  # 0: none

    r_idx, c_idx = np.nonzero(logged)
    out = {
        "row": r_idx, "pool_pos": rank_order[r_idx, c_idx],
        "rank_index": rank_index[r_idx, c_idx], "rerank_index": rerank_index[r_idx, c_idx],
        "edge_position": np.zeros(len(r_idx), dtype=np.int64),
        **{name: flags[name][r_idx, c_idx] for name in recflow.STAGE_FLAGS},
    }
    # pre-ranking and coarse-ranking negatives: sampled from what those stages dropped
    extra = []
    for name, dropped, k in (("prerank_neg", pre_dropped, pre_neg),
                             ("coarse_neg", coarse_dropped, coarse_neg)):
        picks = np.take_along_axis(dropped, _sample_columns(rng, R, dropped.shape[1], k), 1)
        extra.append((name, np.repeat(np.arange(R), picks.shape[1]), picks.ravel()))
    for name, rows, pool_pos in extra:
        n = len(rows)
        out["row"] = np.concatenate([out["row"], rows])
        out["pool_pos"] = np.concatenate([out["pool_pos"], pool_pos])
        for key in ("rank_index", "rerank_index", "edge_position"):
            out[key] = np.concatenate([out[key], np.zeros(n, dtype=np.int64)])
        for flag in recflow.STAGE_FLAGS:
            out[flag] = np.concatenate([out[flag], np.full(n, flag == name)])
    out["item"] = pool[out["pool_pos"]]
    out["relevance"] = truth[out["row"], out["pool_pos"]]
    out["priority"] = (6 * out["realshow"] + 4 * (out["rerank_pos"] | out["rank_pos"])
                       + 3 * (out["rerank_neg"] | out["rank_neg"]) + 2 * out["coarse_neg"]
                       + out["prerank_neg"])
    return out


def simulate(world: World, batch_requests: int = 512, progress: bool = True) -> WorldLog:
    """Run every day's requests through the funnel, draw feedback on the exposures, and
    build the histories. Deterministic given ``world.cfg.seed``."""
    cfg = world.cfg
    day_seeds = np.random.SeedSequence([cfg.seed, 1]).spawn(cfg.n_days)
    history: dict[int, list[np.ndarray]] = {u: [] for u in range(cfg.n_users)}
    rows_by_day, seqs_by_day, requests_by_day, ubm_by_day = {}, {}, {}, {}
    stage_arrays: dict[int, dict] = {}  # every request's stage arrays, for the UBM dicts
    next_request_id = 0
    rates = dict(cfg.rates)
    calibration: dict[str, float] = {}
    bar = tqdm(total=cfg.n_days, desc="simulating days", disable=not progress)
    for day_index, day in enumerate(cfg.days):
        rng = np.random.default_rng(day_seeds[day_index])
        counts = np.maximum(rng.poisson(cfg.requests_per_user_day, cfg.n_users), 1)
        users = np.repeat(np.arange(cfg.n_users), counts)
        # request times: activity rises through the day and peaks in the evening
        minute_weights = 0.3 + np.sin(np.linspace(0, np.pi, 24 * 60)) ** 2
        minute = rng.choice(24 * 60, len(users), p=minute_weights / minute_weights.sum())
        ms = minute * 60_000 + rng.integers(0, 60_000, len(users))
        order = np.lexsort((users, ms))
        users, minute, ms = users[order], minute[order], ms[order]
        step = np.arange(len(ms))  # make times strictly increasing (a few ms at most)
        ms = np.maximum.accumulate(ms - step) + step
        request_ids = next_request_id + np.arange(len(users))
        next_request_id += len(users)
        timestamps = _day_start_ms(day) + ms

        parts = []
        for start in range(0, len(users), batch_requests):
            batch = slice(start, start + batch_requests)
            out = _run_funnel(world, rng, users[batch], day_index, minute[batch])
            out["row"] = out["row"] + start
            parts.append(out)
        log = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        frame = _assemble_rows(world, log, users, request_ids, timestamps)
        frame, gammas = _feedback(world, rng, frame, rates, calibration if day_index else None)
        calibration.update(gammas)
        frame = frame.sort_values(["request_timestamp", "request_id", "priority", "rank_index",
                                   "video_id"], ascending=[True, True, False, True, True],
                                  kind="stable").reset_index(drop=True)
        rows_by_day[day], requests_by_day[day] = frame, _stage_dicts(frame)
        stage_arrays.update(requests_by_day[day])
        seqs_by_day[day] = _histories(frame, history)
        referenced = {int(r) for seq in seqs_by_day[day].values() for r in seq[seq[:, 7] > 0, 9]}
        ubm_by_day[day] = {r: stage_arrays[r] for r in sorted(referenced)}
        bar.update(1)
    bar.close()
    return WorldLog(world, rows_by_day, seqs_by_day, requests_by_day, ubm_by_day, calibration)


def _assemble_rows(world: World, log: dict, users: np.ndarray, request_ids: np.ndarray,
                   timestamps: np.ndarray) -> pd.DataFrame:
    item = log["item"]
    u = users[log["row"]]
    meta = world.item_meta
    frame = pd.DataFrame({
        "request_id": request_ids[log["row"]].astype(np.int64),
        "request_timestamp": timestamps[log["row"]].astype(np.int64),
        "user_id": u.astype(np.int64),
        "device_id": ((u * 7919) % world.cfg.n_users).astype(np.int64),  # a fixed permutation
        "age": world.demographics["age"][u].astype(np.int64),
        "gender": world.demographics["gender"][u].astype(np.int64),
        "province": world.demographics["province"][u].astype(np.int64),
        "video_id": item.astype(np.int64),
        "author_id": world.item_creator[item].astype(np.int64),
        "category_level_one": meta["category_level_one"][item],
        "category_level_two": meta["category_level_two"][item],
        "upload_type": meta["upload_type"][item],
        "upload_timestamp": meta["upload_timestamp"][item],
        "duration": meta["duration_ms"][item],
        **{flag: log[flag].astype(np.int64) for flag in recflow.STAGE_FLAGS},
        "rank_index": log["rank_index"].astype(np.int64),
        "rerank_index": log["rerank_index"].astype(np.int64),
        "relevance": log["relevance"],
        "priority": log["priority"].astype(np.int64),
        "is_live": world.item_is_live[item].astype(np.int64),
    })
    return frame


def _feedback(world: World, rng: np.random.Generator, frame: pd.DataFrame, rates: dict,
              gammas: dict | None) -> tuple[pd.DataFrame, dict]:
    """Watch time and the behaviours, on exposed rows only (the card's 10.2). Intercepts are
    calibrated by bisection on the first day to hit the target rates, then kept fixed."""
    shown = frame["realshow"].to_numpy() == 1
    found = dict(gammas or {})
    relevance = frame["relevance"].to_numpy()[shown]
    if "z_mean" not in found:  # standardise with the first day's exposures, then keep it
        found["z_mean"], found["z_std"] = float(relevance.mean()), float(relevance.std())
    z = (relevance - found["z_mean"]) / (found["z_std"] + 1e-9)
    slopes = dict(ENGAGEMENT_SLOPES)
    n = shown.sum()

    def draw(name: str, logits: np.ndarray, eligible: np.ndarray, share: float) -> np.ndarray:
        """Bernoulli draws for eligible rows, calibrated so the per-exposure rate is hit."""
        if name not in found:
            target = min(rates[name] / max(share, 1e-9), 0.999)
            found[name] = calibrate_intercept(logits[eligible], target) if eligible.any() else 0.0
        return eligible & (rng.random(len(logits)) < sigmoid(logits + found[name]))

    everyone = np.ones(n, dtype=bool)
    effective = draw("effective_view", slopes["effective_view"] * z, everyone, 1.0)
    long_view = draw("long_view", slopes["long_view"] * z, effective, effective.mean())
    duration = frame["duration"].to_numpy()[shown]
    watch = np.where(effective, 0.3 + 0.7 * rng.beta(2.0, 2.0, n), 0.3 * rng.beta(2.0, 3.0, n))
    watch = np.where(long_view, 1.0 + rng.exponential(0.3, n), np.minimum(watch, 0.999))
    playing = np.floor(watch * duration).astype(np.int64)
    # keep the labels consistent with the watch time at integer precision
    effective = 10 * playing >= 3 * duration
    long_view = long_view & effective & (playing >= duration)
    labels = {"effective_view": effective, "long_view": long_view}
    for name in ("like", "follow", "comment", "forward"):
        labels[name] = draw(name, slopes[name] * z, effective, effective.mean())
    is_live = frame["is_live"].to_numpy()[shown] == 1
    live_views = effective & is_live
    # the gift rate is per effective view of a live stream
    labels["gift"] = draw("gift", slopes["gift"] * z, live_views, 1.0)
    frame = frame.copy()
    frame["playing_time"] = 0
    frame.loc[shown, "playing_time"] = playing
    for name in BEHAVIOURS:
        frame[name] = 0
        frame.loc[shown, name] = labels[name].astype(np.int64)
    return frame, found


def _stage_dicts(frame: pd.DataFrame) -> dict[int, dict]:
    """request_id -> {stage: int64 [n, 8]} in the frame's order (RecFlow's request_id_dict);
    every request holds every stage key, empty when the stage logged nothing."""
    values = frame[list(recflow.STAGE_ARRAY_COLUMNS)].to_numpy(np.int64)
    flags = frame[list(recflow.STAGE_FLAGS)].to_numpy().astype(bool)
    request = frame["request_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]])
    ends = np.r_[starts[1:], len(request)]
    out = {}
    for s, e in zip(starts, ends, strict=True):
        out[int(request[s])] = {name: values[s:e][flags[s:e, j]]
                                for j, name in enumerate(recflow.STAGE_FLAGS)}
    return out


def _histories(frame: pd.DataFrame, history: dict[int, list[np.ndarray]]) -> dict[int, np.ndarray]:
    """Snapshot each request's last 50 effective views (strictly earlier requests only),
    then append the request's own effective views to its user's history."""
    columns = ["video_id", "author_id", "category_level_two", "category_level_one",
               "upload_type", "upload_timestamp", "duration", "request_timestamp",
               "playing_time", "request_id"]
    seqs: dict[int, np.ndarray] = {}
    viewed = frame[frame["effective_view"] == 1]  # rows of one request are contiguous
    values, request = viewed[columns].to_numpy(np.int64), viewed["request_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]]) if len(request) else []
    ends = np.r_[starts[1:], len(request)] if len(request) else []
    viewed_by_request = {int(request[s]): values[s:e] for s, e in zip(starts, ends,
                                                                     strict=True)}
    requests = frame.drop_duplicates("request_id")[["request_id", "user_id"]].to_numpy()
    for request_id, user in requests:
        past = history[int(user)]
        snapshot = np.zeros(recflow.SEQ_SHAPE, dtype=np.int64)
        if past:
            recent = np.concatenate(past[-50:])[-50:]
            snapshot[50 - len(recent):] = recent
        seqs[int(request_id)] = snapshot
        if int(request_id) in viewed_by_request:
            history[int(user)].append(viewed_by_request[int(request_id)])
    return seqs


def make_world(preset: str | WorldConfig = "smoke", **overrides) -> tuple[World, WorldLog]:
    """Build a world and simulate it: ``make_world("cpu", seed=3)``."""
    cfg = WORLD_PRESETS[preset] if isinstance(preset, str) else preset
    cfg = replace(cfg, **overrides) if overrides else cfg
    world = World.build(cfg)
    return world, simulate(world)
