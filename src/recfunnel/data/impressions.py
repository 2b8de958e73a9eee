"""Impressions with many binary feedback tasks, the data of the multi-task ranking chapter.

A ranking model at Kuaishou predicts, for every (user, video) impression, whether the user
will click, watch effectively, watch long, like, follow, comment, forward and collect. The
tasks share causes (a relevant video earns every behaviour), some causes are shared only
within a *group* of tasks (watch-time tasks depend on how watchable a video is for this
user; interaction tasks on how sociable the user and how engaging the video are), and a
few are a task's own. ``make_impressions`` draws such labels from the synthetic world:

    logit_t(u, i, day) = a_t s(u, i, day) + b_t c_{g(t)}(u, i) + e_t tau_t(u, i)
                         + kappa (k_t bait_i + l_t len_i) + gamma_t

* s: the world's standardised relevance (``World.relevance``: user drift, item topic,
  creator style, popularity), shared by all tasks;
* c_g: a factor of the task's group g in {watch, interaction}, a low-rank user-item
  product plus user and item biases (the watch factor also prefers short videos);
* tau_t: the task's own low-rank user-item product;
* the conflict between tasks, scaled by kappa (``conflict``): bait_i, an item's
  clickbait (a cover that promises more than the video keeps), raises clicks and lowers
  watch time and interactions (loadings k_t in ``CLICKBAIT``); len_i, the standardised log
  duration, raises interactions (l_t = 0.5) while the watch factor prefers short videos.
  With kappa = 0 every task pulls the same way, and sharing everything is hard to beat;
* gamma_t: calibrated so the task's positive rate matches ``TASK_RATES``.

All factors are standardised, so a_t, b_t, e_t say how much of each task's signal is shared
by all, shared by the group, or private. ``Impressions`` holds the categorical features a
ranker sees (ids, creator, topic, duration bucket, demographics), the labels, the user of
each row (for GAUC) and the day, and splits by day: the last days are the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from recfunnel import checks
from recfunnel.data.ranking import RankBatch
from recfunnel.data.world import World, WorldConfig, calibrate_intercept, sigmoid

# [proposed] tasks from dense to sparse, with their rates per impression
TASK_RATES = (("click", 0.30), ("effective_view", 0.20), ("long_view", 0.08), ("like", 0.03),
              ("follow", 0.01), ("comment", 0.008), ("forward", 0.005), ("collect", 0.005))
TASKS = tuple(task for task, _ in TASK_RATES)
# [proposed] HoME's two meta-categories: passive watch-time tasks, proactive interactions
TASK_GROUPS = {"watch": ("click", "effective_view", "long_view"),
               "interaction": ("like", "follow", "comment", "forward", "collect")}
# weights (a_t, b_t, e_t) of the shared, group and task factor in each task's logit
FACTOR_WEIGHTS = {"click": (1.0, 0.7, 0.4), "effective_view": (0.8, 1.0, 0.4),
                  "long_view": (0.7, 1.2, 0.5), "like": (0.8, 1.0, 0.6),
                  "follow": (0.7, 1.0, 0.9), "comment": (0.6, 1.1, 0.9),
                  "forward": (0.7, 1.0, 0.9), "collect": (0.7, 1.1, 0.9)}
# [proposed] how clickbait moves each task: more clicks, less watching and interacting
CLICKBAIT = {"click": 1.0, "effective_view": -0.5, "long_view": -1.0, "like": -0.5,
             "follow": -0.5, "comment": -0.5, "forward": -0.5, "collect": -0.5}
MIN_ITEMS = 10  # the world the impressions are drawn from shows up to 10 items per request
FIELDS = ("user_id", "item_id", "creator", "topic", "duration_bucket", "upload_type", "age",
          "gender", "province")


@dataclass(frozen=True)
class ImpressionConfig:
    """Sizes of the multi-task world: ~200k impressions, 2k users, 5k items at ``cpu``."""

    n_users: int = 2_000
    n_items: int = 5_000
    n_impressions: int = 200_000
    n_days: int = 10
    test_days: int = 2  # the last days are the test set, the day before is validation
    factor_rank: int = 8  # rank of the group factors' user-item products
    task_rank: int = 4  # rank of each task's own product
    duration_buckets: int = 10
    conflict: float = 1.0  # kappa [proposed]: 0 gives tasks that never pull apart
    rates: tuple[tuple[str, float], ...] = TASK_RATES
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_impressions", "n_days", "test_days", "factor_rank",
                     "task_rank"):
            checks.positive_int(f"ImpressionConfig.{name}", getattr(self, name))
        checks.positive_int("ImpressionConfig.n_items", self.n_items, minimum=MIN_ITEMS)
        checks.positive_int("ImpressionConfig.duration_buckets", self.duration_buckets,
                            minimum=2)
        checks.real("ImpressionConfig.conflict", self.conflict)
        checks.positive_int("ImpressionConfig.seed", self.seed, minimum=0)
        if self.n_days < self.test_days + 2:
            raise ValueError("need at least two training days besides validation and test")
        tasks = tuple(task for task, _ in self.rates)
        if tasks != TASKS:
            raise ValueError(f"rates must give the tasks {TASKS} in order, got {tasks}")
        if not all(0 < rate < 1 for _, rate in self.rates):
            raise ValueError("every rate must lie in (0, 1)")


@dataclass
class Impressions:
    """Rows of (features, labels): features [N, F] int64 (``fields``, with ``cardinalities``),
    labels [N, T] int8 (``tasks``), users [N] and days [N] int64; for synthetic data also
    ``truth`` [N, T], the probabilities the labels were drawn from (the best any model can
    predict)."""

    features: np.ndarray
    labels: np.ndarray
    users: np.ndarray
    days: np.ndarray
    fields: tuple[str, ...]
    cardinalities: tuple[int, ...]
    tasks: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    truth: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.features.shape != (n, len(self.fields)):
            raise ValueError(f"features must be [N, {len(self.fields)}], "
                             f"got {self.features.shape}")
        if self.labels.shape != (n, len(self.tasks)):
            raise ValueError(f"labels must be [{n}, {len(self.tasks)}], got {self.labels.shape}")
        if len(self.users) != n or len(self.days) != n:
            raise ValueError("users and days need one entry per row")
        too_big = self.features.max(axis=0) >= np.asarray(self.cardinalities) if n else []
        for field, bad in zip(self.fields, too_big, strict=False):
            if bad:
                raise ValueError(f"field {field!r} has ids beyond its cardinality")
        grouped = [task for members in self.groups.values() for task in members]
        if sorted(grouped) != sorted(self.tasks):
            raise ValueError("groups must assign every task to exactly one group")

    def __len__(self) -> int:
        return len(self.features)

    def rows(self, mask: np.ndarray) -> Impressions:
        return replace(self, features=self.features[mask], labels=self.labels[mask],
                       users=self.users[mask], days=self.days[mask],
                       truth=None if self.truth is None else self.truth[mask])

    def split(self, test_days: int = 2) -> tuple[Impressions, Impressions, Impressions]:
        """(train, validation, test) by day: the last ``test_days`` days are the test set and
        the day before them validation; the model never sees the future. The training part
        must keep at least one impression."""
        checks.not_empty(len(self), "impressions")
        checks.positive_int("test_days", test_days)
        last = int(self.days.max())
        if not (self.days < last - test_days).any():
            raise checks.InvalidInputError(
                f"test_days: {test_days} test days and a validation day leave no training "
                f"impression (days run from {int(self.days.min())} to {last})")
        test = self.days > last - test_days
        valid = self.days == last - test_days
        return self.rows(~test & ~valid), self.rows(valid), self.rows(test)

    def positive_rates(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.labels.mean(axis=0).astype(float), strict=True))

    def rank_batch(self) -> RankBatch:
        """Every impression as one ``RankBatch`` (features [N, F] long, labels [N, T]
        float); ``train.shuffled`` cuts it into an epoch's mini-batches."""
        return RankBatch(torch.from_numpy(self.features), torch.from_numpy(self.labels).float())


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def make_impressions(cfg: ImpressionConfig = ImpressionConfig()) -> Impressions:
    """Draw ``cfg.n_impressions`` impressions and their eight labels (see the module doc)."""
    world = World.build(WorldConfig(
        n_users=cfg.n_users, n_videos=cfg.n_items, n_live=0, n_creators=max(cfg.n_items // 10, 1),
        n_days=cfg.n_days, pool_size=cfg.n_items,  # the funnel is not simulated here
        funnel=tuple(min(size, cfg.n_items) for size in (1_500, 600, 150, 50, 10)),
        seed=cfg.seed))
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 5]))
    n, U, V = cfg.n_impressions, cfg.n_users, cfg.n_items

    # who sees what: active users see more; popular items are shown more
    activity = rng.gamma(2.0, 1.0, U)
    users = rng.choice(U, n, p=activity / activity.sum())
    exposure = np.exp(0.8 * world.item_bias)
    items = rng.choice(V, n, p=exposure / exposure.sum())
    days = rng.integers(0, cfg.n_days, n)

    shared = np.empty(n)
    for day in range(cfg.n_days):
        rows = days == day
        u = world.user_vectors(day)[users[rows]]
        shared[rows] = ((u * world.item_latent[items[rows]]).sum(1) / np.sqrt(
            world.cfg.d_latent) + world.item_bias[items[rows]])
    shared = _standardise(shared)

    def low_rank(rank: int) -> np.ndarray:
        p, q = rng.normal(size=(U, rank)), rng.normal(size=(V, rank))
        return (p[users] * q[items]).sum(1) / np.sqrt(rank)

    log_duration = np.log(world.item_meta["duration_ms"])
    group_factor = {
        "watch": _standardise(low_rank(cfg.factor_rank) + 0.7 * rng.normal(size=U)[users]
                              + 0.7 * _standardise(-log_duration)[items]),
        "interaction": _standardise(low_rank(cfg.factor_rank) + 0.8 * rng.normal(size=U)[users]
                                    + 0.6 * rng.normal(size=V)[items]),
    }
    group_of = {task: group for group, members in TASK_GROUPS.items() for task in members}
    bait = np.random.default_rng(np.random.SeedSequence([cfg.seed, 6])).normal(size=V)[items]
    length = _standardise(log_duration)[items]
    labels = np.empty((n, len(TASKS)), dtype=np.int8)
    truth = np.empty((n, len(TASKS)), dtype=np.float32)
    for t, (task, rate) in enumerate(cfg.rates):
        a, b, e = FACTOR_WEIGHTS[task]
        logit = a * shared + b * group_factor[group_of[task]] + e * _standardise(
            low_rank(cfg.task_rank)) + cfg.conflict * (
            CLICKBAIT[task] * bait + (0.5 * length if group_of[task] == "interaction" else 0))
        p = sigmoid(logit + calibrate_intercept(logit, rate))
        labels[:, t] = rng.random(n) < p
        truth[:, t] = p

    edges = np.quantile(log_duration, np.linspace(0, 1, cfg.duration_buckets + 1)[1:-1])
    columns = {
        "user_id": users, "item_id": items, "creator": world.item_creator[items],
        "topic": world.item_topic[items],
        "duration_bucket": np.digitize(log_duration, edges)[items],
        "upload_type": world.item_meta["upload_type"][items],
        "age": world.demographics["age"][users], "gender": world.demographics["gender"][users],
        "province": world.demographics["province"][users],
    }
    cardinalities = (U, V, world.cfg.n_creators, world.cfg.n_topics, cfg.duration_buckets, 5, 7,
                     2, 31)
    order = np.argsort(days, kind="stable")
    features = np.stack([columns[f] for f in FIELDS], axis=1).astype(np.int64)
    return Impressions(features=features[order], labels=labels[order], users=users[order],
                       days=days[order].astype(np.int64), fields=FIELDS,
                       cardinalities=cardinalities, tasks=TASKS, groups=TASK_GROUPS,
                       truth=truth[order])
