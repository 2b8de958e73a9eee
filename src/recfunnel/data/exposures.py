"""Per-user exposure streams whose clicks follow a two-hop pattern (chapter 6, MARM).

MARM's claim is that depth over the history helps a ranker. That needs labels that depth
can read and one layer cannot. Card section 8's example: an item is liked when it matches
the topic of an item that followed an earlier liked one. Here a user is more likely to
click exposure x_t the more of the recent exposures of x_t's topic came *right after a
click*, and less likely the more came right after a skip; the signal is centred on the
click rate, so that counting the topic's recent exposures says little about it, and
their own clicks (an echo, through the momentum term below) less than their
predecessors' do. One target-attention layer finds the exposures of the candidate's topic
but cannot see what preceded each of them; a second layer, reading the states those
exposures reached when they were scored, can, provided each state says whether its own
predecessor was clicked. Under MARM's training no gradient reaches a cached state from
later requests, so a state learns to say so only if that helps its own exposure: the
momentum term (a click is likelier right after a click) makes it.

Each of ``n_users`` users of the synthetic world gets a time-ordered stream of ``length``
exposures: the topic of each is drawn from the user's world interests (or uniformly), the
item from the topic's items by popularity. Then, in time order,

    logit_click(t) = gamma + hop * two_hop(t) + momentum * click(t - 1) + taste * z(u, x_t)
    two_hop(t) = mean over j in [t - W, t - 2] with topic(x_{j+1}) = topic(x_t) of click_j,
                 minus the click rate (0 when there is no such j)
    long_view(t) = click(t) and Bernoulli(sigmoid(gamma_lv + hop * click(t - 1)))

with z the world's standardised relevance and gamma, gamma_lv calibrated to the target
rates. The probabilities are kept (``truth``: the best any model can do), and the streams
are split by time: the first ``train`` share of every stream trains, the next ``valid``
share validates, the rest tests. [proposed] every choice above; the paper's data is
Kuaishou's production log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recfunnel import checks
from recfunnel.data.impressions import Impressions
from recfunnel.data.planted import planted_world
from recfunnel.data.world import World, calibrate_intercept, sigmoid

FEEDBACK = ("no click", "click", "long view")  # the feedback class y_j a request reads


@dataclass(frozen=True)
class ExposureConfig:
    n_users: int = 2_000
    n_items: int = 400
    n_topics: int = 8
    length: int = 200  # exposures per user (the card: 200-500)
    hop_window: int = 8  # W: how far back the two-hop pattern reaches
    hop: float = 6.0  # weight of the two-hop signal (a share minus the click rate)
    momentum: float = 1.0  # logit added to a click right after a click (sessions)
    taste: float = 0.3  # weight of the world's relevance
    interest_share: float = 0.6  # exposures drawn from the user's interests, else uniform
    click_rate: float = 0.3
    long_view_rate: float = 0.4  # among clicks
    train: float = 0.7
    valid: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_topics", "hop_window"):
            checks.positive_int(f"ExposureConfig.{name}", getattr(self, name))
        checks.positive_int("ExposureConfig.length", self.length, minimum=10)
        checks.positive_int("ExposureConfig.n_items", self.n_items, minimum=10 * self.n_topics)
        checks.positive_int("ExposureConfig.seed", self.seed, minimum=0)
        for name in ("hop", "momentum", "taste"):
            checks.real(f"ExposureConfig.{name}", getattr(self, name), low=0.0)
        for name in ("interest_share", "train", "valid"):
            checks.real(f"ExposureConfig.{name}", getattr(self, name), low=0.0, high=1.0)
        for name in ("click_rate", "long_view_rate"):
            checks.real(f"ExposureConfig.{name}", getattr(self, name), low=0.0, high=1.0,
                        low_open=True, high_open=True)
        if not 0 < self.train < self.train + self.valid < 1:
            raise checks.InvalidInputError("ExposureConfig.train, valid: the three time "
                                           "periods must each be non-empty")


@dataclass
class ExposureStreams:
    """items, topics, clicks, long_views [U, T] (item ids start at 1; topics at 0); truth
    [U, T, 2] the probabilities of click and long view the labels were drawn from;
    two_hop [U, T] the two-hop signal; the time split at positions ``train_end`` and
    ``valid_end``."""

    cfg: ExposureConfig
    items: np.ndarray
    topics: np.ndarray
    clicks: np.ndarray
    long_views: np.ndarray
    truth: np.ndarray
    two_hop: np.ndarray
    train_end: int
    valid_end: int

    @property
    def n_users(self) -> int:
        return self.items.shape[0]

    @property
    def length(self) -> int:
        return self.items.shape[1]

    @property
    def labels(self) -> np.ndarray:
        """[U, T, 2] click and long view."""
        return np.stack([self.clicks, self.long_views], axis=-1)

    @property
    def feedback(self) -> np.ndarray:
        """[U, T] the class a later request reads: 0 no click, 1 click, 2 long view."""
        return (self.clicks + self.long_views).astype(np.int64)

    def period(self, name: str) -> slice:
        """The positions of ``"train"``, ``"valid"`` or ``"test"``."""
        checks.one_of("period", name, ("train", "valid", "test"))
        return {"train": slice(0, self.train_end), "valid": slice(self.train_end,
                self.valid_end), "test": slice(self.valid_end, self.length)}[name]

    def tensors(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """items, topics, feedback [U, T] long and labels [U, T, 2] float, on ``device``."""
        return {"items": torch.as_tensor(self.items, device=device),
                "topics": torch.as_tensor(self.topics, device=device),
                "feedback": torch.as_tensor(self.feedback, device=device),
                "labels": torch.as_tensor(self.labels, dtype=torch.float32, device=device)}


def make_exposures(cfg: ExposureConfig = ExposureConfig()) -> ExposureStreams:
    """Draw the streams and their labels (see the module docstring)."""
    world = World.build(planted_world(cfg.n_users, cfg.n_items, cfg.n_topics, seed=cfg.seed))
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 6]))
    U, T, K = cfg.n_users, cfg.length, cfg.n_topics
    interests = world.user_interests  # [U, K]
    from_interest = rng.random((U, T)) < cfg.interest_share
    cumulative = interests.cumsum(axis=1)
    drawn = (rng.random((U, T, 1)) > cumulative[:, None, :]).sum(-1).clip(max=K - 1)
    topics = np.where(from_interest, drawn, rng.integers(0, K, (U, T)))
    members = [np.flatnonzero(world.item_topic == k) for k in range(K)]
    weights = [np.exp(world.item_bias[m]) / np.exp(world.item_bias[m]).sum() for m in members]
    items = np.empty((U, T), dtype=np.int64)
    for k in range(K):
        where = topics == k
        items[where] = rng.choice(members[k], where.sum(), p=weights[k])
    relevance = (world.user_vectors(0)[:, None, :] * world.item_latent[items]).sum(-1)
    z = (relevance - relevance.mean()) / relevance.std()  # [U, T]

    noise = rng.random((U, T))
    # clicks feed back into later logits, so the rate is monotone in the intercept but not
    # a closed form: bisect on whole simulations
    low, high = -15.0, 15.0
    for _ in range(30):
        gamma = (low + high) / 2
        clicks, two_hop = _clicks_in_time_order(cfg, topics, z, noise, gamma)
        low, high = (gamma, high) if clicks.mean() < cfg.click_rate else (low, gamma)
    after_click = np.zeros(clicks.shape, dtype=bool)
    after_click[:, 1:] = clicks[:, :-1] == 1
    p_click = sigmoid(gamma + _click_logit(cfg, clicks, two_hop, z))
    gamma_lv = calibrate_intercept(cfg.hop * after_click[clicks == 1].astype(float),
                                   cfg.long_view_rate)
    p_long = sigmoid(gamma_lv + cfg.hop * after_click)
    long_views = ((clicks == 1) & (rng.random((U, T)) < p_long)).astype(np.int8)
    train_end = int(round(cfg.train * T))
    valid_end = int(round((cfg.train + cfg.valid) * T))
    return ExposureStreams(cfg, items + 1, topics.astype(np.int64), clicks, long_views,
                           np.stack([p_click, p_click * p_long], axis=-1).astype(np.float32),
                           two_hop, train_end, valid_end)


def _click_logit(cfg: ExposureConfig, clicks: np.ndarray, two_hop: np.ndarray,
                 z: np.ndarray) -> np.ndarray:
    """[U, T] the click logit without its intercept."""
    after_click = np.zeros(clicks.shape, dtype=bool)
    after_click[:, 1:] = clicks[:, :-1] == 1
    return cfg.hop * two_hop + cfg.momentum * after_click + cfg.taste * z


def _clicks_in_time_order(cfg: ExposureConfig, topics: np.ndarray, z: np.ndarray,
                          noise: np.ndarray, gamma: float
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Clicks [U, T] drawn position by position (each depends on the earlier ones), and
    the two-hop signal [U, T]: over the exposures j + 1 in the window that share x_t's
    topic, the share whose predecessor j was clicked, minus the click rate (0 if none)."""
    U, T = topics.shape
    clicks = np.zeros((U, T), dtype=np.int8)
    two_hop = np.zeros((U, T))
    for t in range(T):
        lo = max(0, t - cfg.hop_window)
        if t >= 2:  # exposures j + 1 of x_t's topic, for j in [lo, t - 2]
            matched = topics[:, lo + 1:t] == topics[:, t:t + 1]  # [U, t - 1 - lo]
            clicked = (clicks[:, lo:t - 1] == 1) & matched
            count = matched.sum(axis=1)
            share = clicked.sum(axis=1) / np.maximum(count, 1)
            two_hop[:, t] = np.where(count > 0, share - cfg.click_rate, 0.0)
        after_click = clicks[:, t - 1] == 1 if t else np.zeros(U, dtype=bool)
        p = sigmoid(gamma + cfg.hop * two_hop[:, t] + cfg.momentum * after_click
                    + cfg.taste * z[:, t])
        clicks[:, t] = noise[:, t] < p
    return clicks, two_hop


def exposures_from_impressions(impressions: Impressions, length: int,
                               topic_field: str = "upload_type", train: float = 0.7,
                               valid: float = 0.1) -> ExposureStreams:
    """Time-ordered exposure streams from a real log read into ``Impressions`` (rows in
    time order, as ``kuairand.read_kuairand`` gives them): every user with at least
    ``length`` impressions keeps the last ``length`` of them; the item is the video,
    ``topic_field`` stands in for the topic [proposed: KuaiRand has no topic label], the
    labels are click and long view (a long view without a click counts as a click's long
    view only when both flags are set). Nothing is known of the truth: ``truth`` and
    ``two_hop`` are NaN. Split by time within each stream, as the synthetic ones are."""
    checks.positive_int("length", length, minimum=10)
    for name in ("video_id", topic_field):
        if name not in impressions.fields:
            raise checks.InvalidInputError(f"impressions: no field {name!r}; the fields are "
                                           f"{list(impressions.fields)}")
    for task in ("click", "long_view"):
        if task not in impressions.tasks:
            raise checks.InvalidInputError(f"impressions: no task {task!r}")
    users = impressions.users
    counts = np.bincount(users)
    kept = np.flatnonzero(counts >= length)
    if not len(kept):
        raise checks.InvalidInputError(f"length: no user has {length} impressions (the most "
                                       f"is {int(counts.max()) if len(counts) else 0})")
    order = np.lexsort((np.arange(len(users)), users))  # by user, time order kept within
    starts = np.concatenate([[0], np.cumsum(counts)])
    rows = np.stack([order[starts[u + 1] - length:starts[u + 1]] for u in kept])  # [U, T]
    column = {name: impressions.features[:, impressions.fields.index(name)]
              for name in ("video_id", topic_field)}
    clicks = impressions.labels[:, impressions.tasks.index("click")][rows].astype(np.int8)
    long_views = (impressions.labels[:, impressions.tasks.index("long_view")][rows]
                  * clicks).astype(np.int8)
    n_topics = int(impressions.cardinalities[impressions.fields.index(topic_field)])
    n_items = int(impressions.cardinalities[impressions.fields.index("video_id")])
    cfg = ExposureConfig(n_users=len(kept), n_items=max(n_items, 10 * n_topics),
                         n_topics=n_topics, length=length, train=train, valid=valid)
    unknown = np.full(rows.shape, np.nan)
    return ExposureStreams(cfg, column["video_id"][rows] + 1, column[topic_field][rows],
                           clicks, long_views,
                           np.stack([unknown, unknown], axis=-1).astype(np.float32),
                           unknown, int(round(train * length)),
                           int(round((train + valid) * length)))
