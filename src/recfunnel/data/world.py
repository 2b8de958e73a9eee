"""A synthetic Kuaishou-like world with a known truth, the data source of the whole course.

What no offline dataset has, this world provides: users whose several interests drift from
day to day; short videos and live streams from creators; visual, text and audio vectors per
item generated from its topic plus noise; live streams whose appeal changes minute by
minute; and the relevance of every user-item pair, from latent factors that stay available
(``World``), so a chapter can measure how much of the truth a model recovers. The design
follows the generator this course designed for RecFlow's funnel; choices that RecFlow's
paper leaves open are marked [proposed].

Three modules, one concern each:

    world = World.build(WORLD_PRESETS["smoke"])  # data.world: latent users, items, creators
    log = simulate(world)                        # data.funnel: requests, stages, feedback
    write_recflow(log, folder)                   # data.world_export: RecFlow's layout

(``data.funnel.make_world`` does the first two; ``log.write_recflow(folder)`` the third.)
The same seed gives byte-identical files; only ``numpy.random.Generator`` streams spawned
from one ``SeedSequence`` are used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from recfunnel import checks

BEHAVIOURS = ("effective_view", "long_view", "like", "follow", "comment", "forward", "gift")
# [proposed] how strongly each behaviour follows the standardised relevance z: the
# probability of a behaviour is sigmoid(slope * z + gamma), gamma calibrated to its rate
ENGAGEMENT_SLOPES = (("effective_view", 1.2), ("long_view", 1.2), ("like", 1.2),
                     ("follow", 1.0), ("comment", 1.0), ("forward", 1.0), ("gift", 2.0))
BEIJING = dt.timezone(dt.timedelta(hours=8))  # RecFlow's timestamps are Beijing time


@dataclass(frozen=True)
class WorldConfig:
    """Sizes, funnel shape and feedback rates of a world. The defaults are the course's
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
    # target rates per exposure [proposed placeholders]; the gift rate is
    # per effective view of a live stream [proposed]
    rates: tuple[tuple[str, float], ...] = (
        ("effective_view", 0.40), ("long_view", 0.20), ("like", 0.02), ("follow", 0.003),
        ("comment", 0.003), ("forward", 0.002), ("gift", 0.02),
    )
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_videos", "n_creators", "n_topics", "d_latent", "n_days",
                     "pool_size", "max_shown"):
            checks.positive_int(f"WorldConfig.{name}", getattr(self, name))
        checks.positive_int("WorldConfig.n_live", self.n_live, minimum=0)
        checks.positive_int("WorldConfig.seed", self.seed, minimum=0)
        for name in ("requests_per_user_day", "interest_concentration"):
            checks.real(f"WorldConfig.{name}", getattr(self, name), low=0.0, low_open=True)
        for name in ("drift", "popularity_scale", "live_appeal_scale", "behaviour_in_content"):
            checks.real(f"WorldConfig.{name}", getattr(self, name), low=0.0)
        for size in self.funnel:
            checks.positive_int("WorldConfig.funnel", size)
        for count in self.logged:
            checks.positive_int("WorldConfig.logged", count, minimum=0)
        for sigma in self.stage_noise:
            checks.real("WorldConfig.stage_noise", sigma, low=0.0)
        for name, dim in self.modality_dims:
            checks.positive_int(f"WorldConfig.modality_dims[{name!r}]", dim)
        rates = dict(self.rates)
        if set(rates) != set(BEHAVIOURS):
            raise checks.InvalidInputError(f"WorldConfig.rates: must give a rate for each of "
                                           f"{list(BEHAVIOURS)}, got {list(rates)}")
        for name, rate in rates.items():
            checks.real(f"WorldConfig.rates[{name!r}]", rate, low=0.0, high=1.0,
                        low_open=True, high_open=True)
        try:
            dt.date.fromisoformat(self.first_day)
        except (TypeError, ValueError):
            raise checks.InvalidInputError(f"WorldConfig.first_day: must be a date YYYY-MM-DD, "
                                           f"got {self.first_day!r}") from None
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
        first_ms = day_start_ms(cfg.days[0])
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


def day_start_ms(day: str) -> int:
    """Midnight of ``day`` (YYYY-MM-DD) in Beijing time, in epoch milliseconds."""
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), BEIJING)
    return int(start.timestamp() * 1000)


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
