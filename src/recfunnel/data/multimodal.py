"""Items that look one way and are clicked another: the data of the multi-modal chapter.

QARM's starting point is that a multi-modal model describes what an item *looks like*,
while users click for reasons the content shows only weakly. ``make_multimodal`` builds
a world with that gap and with its answer known:

* every item has a **behaviour factor** beta_i in R^{k_b} (drawn around one of C topic
  centres: what users respond to) and a **style factor** s_i in R^{k_s} (drawn around one of
  G style centres, independent of the topic: what the content looks like, which users do
  not care about);
* three modalities (image, text, audio) are fixed random linear maps of the two, with
  behaviour scaled down by rho < 1 ("behaviour_in_content") and noise added:
  x^m_i = A_m [rho beta_i ; s_i] + sigma eps. Content similarity is therefore mostly style
  similarity: the *unmatching* that alignment has to fix;
* **look-alikes**: a share of items copy the style of an item of another topic, so their
  nearest neighbour by content is an item users treat differently;
* users have preferences p_u (a Dirichlet mixture of topic centres); an impression of item
  i to user u is clicked with probability sigmoid(a z_ui + q_i + c), z_ui the standardised
  p_u . beta_i, q_i an item quality that no content shows, c calibrated to the click rate;
* exposure follows a Zipf popularity and, more weakly, relevance (a recommender chose what
  to show), so there is a long tail of rarely shown items;
* **cold items** (a share of the catalogue) are never shown before the test day; on the
  test day they take a fixed share of the traffic, as new items do under a fresh-item boost.

Impressions carry the user's last ``history`` clicked items before them (most recent
last, padded with the id ``n_items``: item ids start at 0 here), and split by day: the last
day is the test set and the day before it validation. ``rank_batch`` gives the rankers
their batch, with item ids shifted by one so that 0 pads, as in every ranker batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recfunnel.data.ranking import RankBatch
from recfunnel.data.world import calibrate_intercept, sigmoid


@dataclass(frozen=True)
class MultiModalConfig:
    """Sizes of the multi-modal world (``cpu``: 3,000 users, 2,000 items, 150k impressions)."""

    n_users: int = 3_000
    n_items: int = 2_000
    n_impressions: int = 150_000
    n_days: int = 8  # the last day is the test set, the day before validation
    n_topics: int = 24  # C: behaviour topics
    n_styles: int = 12  # G: looks, independent of the topics
    d_behaviour: int = 8  # k_b
    d_style: int = 8  # k_s
    modality_dims: tuple[tuple[str, int], ...] = (("image", 64), ("text", 64), ("audio", 64))
    behaviour_in_content: float = 0.3  # rho [proposed]
    content_noise: float = 0.5  # sigma, relative to the signal's scale
    lookalike_share: float = 0.15
    cold_share: float = 0.10  # items first shown on the test day
    cold_traffic: float = 0.15  # share of the test day's impressions that go to cold items
    popularity_exponent: float = 0.8  # exposure ~ rank^-alpha (Zipf)
    exposure_relevance: float = 1.0  # how strongly exposure follows z_ui
    click_slope: float = 1.5  # a
    quality_scale: float = 0.5  # std of q_i
    click_rate: float = 0.20
    history: int = 20  # L: clicked items kept per impression
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.behaviour_in_content <= 1:
            raise ValueError("behaviour_in_content must lie in [0, 1]")
        for name in ("lookalike_share", "cold_share", "cold_traffic"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1)")
        if self.n_days < 3:
            raise ValueError("need at least one training, one validation and one test day")
        if not 0 < self.click_rate < 1:
            raise ValueError("click_rate must lie in (0, 1)")
        if self.n_items < 10 or self.n_users < 2:
            raise ValueError("need at least 10 items and 2 users")


@dataclass
class MultiModalData:
    """The truth of the items and users, their content, and the click log.

    Items: topic [I], style [I], behaviour [I, k_b], quality [I], lookalike_of [I] (the item
    whose look an item copies, -1 if none), is_cold [I], modalities {name: [I, d_m]}.
    Impressions (time-ordered per user): users, items, days, labels (clicked), truth (the
    click probability) [N] each, and history [N, L] (pad id = n_items)."""

    cfg: MultiModalConfig
    item_topic: np.ndarray
    item_style: np.ndarray
    item_behaviour: np.ndarray
    item_quality: np.ndarray
    lookalike_of: np.ndarray
    is_cold: np.ndarray
    modalities: dict[str, np.ndarray]
    user_preference: np.ndarray
    users: np.ndarray
    items: np.ndarray
    days: np.ndarray
    labels: np.ndarray
    truth: np.ndarray
    history: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_topic)

    @property
    def n_users(self) -> int:
        return len(self.user_preference)

    @property
    def pad(self) -> int:
        return self.n_items

    def content(self) -> np.ndarray:
        """[I, sum d_m] the modalities side by side, each standardised: the raw input of a
        multi-modal encoder."""
        parts = [(x - x.mean(0)) / x.std(0) for x in self.modalities.values()]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boolean masks over impressions: (train, validation, test) by day."""
        last = self.cfg.n_days - 1
        return self.days < last - 1, self.days == last - 1, self.days == last

    def train_popularity(self) -> np.ndarray:
        """[I] training impressions per item (0 for cold items)."""
        train, _, _ = self.split()
        return np.bincount(self.items[train], minlength=self.n_items)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_multimodal(cfg: MultiModalConfig | None = None, **overrides) -> MultiModalData:
    """Build the world and simulate its impressions; deterministic under ``cfg.seed``."""
    if cfg is None:
        cfg = MultiModalConfig(**overrides)
    elif overrides:
        raise ValueError("pass either a config or keyword overrides, not both")
    items_rng, modal_rng, users_rng, log_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(4))
    I, U, C, G = cfg.n_items, cfg.n_users, cfg.n_topics, cfg.n_styles  # noqa: E741
    kb, ks = cfg.d_behaviour, cfg.d_style

    # items: behaviour around topic centres, style around style centres (independent)
    topic_centres = _unit_rows(items_rng.normal(size=(C, kb))) * np.sqrt(kb)
    style_centres = _unit_rows(items_rng.normal(size=(G, ks))) * np.sqrt(ks)
    topic = items_rng.integers(0, C, I)
    style = items_rng.integers(0, G, I)
    behaviour = topic_centres[topic] + 0.5 * items_rng.normal(size=(I, kb))
    looks = style_centres[style] + 0.3 * items_rng.normal(size=(I, ks))
    lookalike_of = np.full(I, -1)
    copiers = items_rng.choice(I, int(cfg.lookalike_share * I), replace=False)
    originals = np.ones(I, dtype=bool)
    originals[copiers] = False
    for item in copiers:  # copy the look of an (original) item users treat differently
        other = items_rng.choice(np.flatnonzero(originals & (topic != topic[item])))
        lookalike_of[item], style[item] = other, style[other]
        looks[item] = looks[other] + 0.05 * items_rng.normal(size=ks)
    quality = cfg.quality_scale * items_rng.normal(size=I)
    is_cold = np.zeros(I, dtype=bool)
    is_cold[items_rng.choice(I, int(cfg.cold_share * I), replace=False)] = True
    popularity = np.empty(I)
    popularity[items_rng.permutation(I)] = np.arange(1, I + 1) ** -cfg.popularity_exponent

    # content: x^m = A_m [rho beta ; s] + sigma eps, per modality
    latent = np.concatenate([cfg.behaviour_in_content * behaviour, looks], axis=1)
    modalities = {}
    for name, dim in cfg.modality_dims:
        signal = latent @ (modal_rng.normal(size=(kb + ks, dim)) / np.sqrt(kb + ks))
        noise = cfg.content_noise * signal.std() * modal_rng.normal(size=(I, dim))
        modalities[name] = (signal + noise).astype(np.float32)

    # users: a few favourite topics each
    interests = users_rng.dirichlet(np.full(C, 0.3), size=U)
    preference = interests @ topic_centres + 0.3 * users_rng.normal(size=(U, kb))
    sample = preference[:1_000] @ behaviour.T  # the scale of p_u . beta_i, from a sample
    scale = (float(sample.mean()), float(sample.std()))

    def relevance(u: np.ndarray, i: np.ndarray | slice = slice(None)) -> np.ndarray:
        """z_ui, the standardised p_u . beta_i: [n] for paired ids, [n, I] for users only."""
        if isinstance(i, slice):
            return (preference[u] @ behaviour.T - scale[0]) / scale[1]
        return ((preference[u] * behaviour[i]).sum(1) - scale[0]) / scale[1]

    users, items, days = _expose(cfg, log_rng, relevance, popularity, is_cold)
    logits = cfg.click_slope * relevance(users, items) + quality[items]
    train_rows = days < cfg.n_days - 2
    intercept = calibrate_intercept(logits[train_rows], cfg.click_rate)
    truth = sigmoid(logits + intercept)
    labels = (log_rng.random(len(truth)) < truth).astype(np.int8)
    history = _click_histories(users, items, labels, cfg.history, pad=I)
    return MultiModalData(
        cfg=cfg, item_topic=topic, item_style=style, item_behaviour=behaviour.astype(np.float32),
        item_quality=quality, lookalike_of=lookalike_of, is_cold=is_cold, modalities=modalities,
        user_preference=preference.astype(np.float32), users=users, items=items, days=days,
        labels=labels, truth=truth, history=history)


def _expose(cfg: MultiModalConfig, rng: np.random.Generator, relevance,
            popularity: np.ndarray, is_cold: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, days) [N] each, sorted by user and then time. Warm items are shown with
    probability ~ popularity * exp(lambda z_ui); on the test day a ``cold_traffic`` share of
    impressions goes to cold items, chosen by exp(lambda z_ui) alone."""
    U, test_day = cfg.n_users, cfg.n_days - 1
    activity = rng.lognormal(0.0, 0.5, U)
    counts = rng.multinomial(cfg.n_impressions, activity / activity.sum())
    users = np.repeat(np.arange(U), counts)
    days = rng.integers(0, cfg.n_days, len(users)) + rng.random(len(users))
    order = np.lexsort((days, users))  # by user, then time
    users, days = users[order], days[order].astype(np.int64)
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    warm = torch.from_numpy(np.where(is_cold, -np.inf, np.log(popularity)))
    cold = torch.from_numpy(np.where(is_cold, 0.0, -np.inf))
    items = np.empty(len(users), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for first in range(0, U, 512):  # a chunk of users at a time: [512, I] weights z_ui
        block = slice(first, min(first + 512, U))
        n_max = int(counts[block].max()) if counts[block].size else 0
        if n_max == 0:
            continue
        log_weight = torch.from_numpy(cfg.exposure_relevance * relevance(np.arange(U)[block]))
        draw = {name: torch.multinomial(torch.softmax(log_weight + bias, dim=1), n_max,
                                        replacement=True, generator=generator).numpy()
                for name, bias in (("warm", warm), ("cold", cold)) if torch.isfinite(bias).any()}
        for row, user in enumerate(range(block.start, block.stop)):
            rows = slice(starts[user], starts[user + 1])
            n = counts[user]
            chosen = draw["warm"][row, :n]
            if "cold" in draw:
                to_cold = (days[rows] == test_day) & (rng.random(n) < cfg.cold_traffic)
                chosen = np.where(to_cold, draw["cold"][row, :n], chosen)
            items[rows] = chosen
    return users, items, days


def _click_histories(users: np.ndarray, items: np.ndarray, labels: np.ndarray, length: int,
                     pad: int) -> np.ndarray:
    """[N, L]: for each impression (rows sorted by user and time), the user's last L clicked
    items strictly before it, most recent last, padded on the left with ``pad``."""
    history = np.full((len(users), length), pad, dtype=np.int64)
    bounds = np.flatnonzero(np.diff(users)) + 1
    for rows in np.split(np.arange(len(users)), bounds):
        if len(rows) == 0:
            continue
        clicked = items[rows][labels[rows] == 1]
        padded = np.concatenate([np.full(length, pad), clicked])
        windows = np.lib.stride_tricks.sliding_window_view(padded, length)  # [n_clicks+1, S]
        before = np.cumsum(labels[rows]) - labels[rows]  # clicks strictly before each row
        history[rows] = windows[before]
    return history


def rank_batch(data: MultiModalData, rows: np.ndarray) -> RankBatch:
    """The impressions ``rows`` (a mask or indices) as the rankers' batch: features [n, 2]
    (user id, item id + 1), history [n, L] (item ids + 1, 0 = padding, as in every ranker
    batch of the course) and labels [n, 1] (clicked)."""
    items = torch.from_numpy(data.items[rows]) + 1
    history = torch.from_numpy(data.history[rows]) + 1
    history[history == data.pad + 1] = 0
    return RankBatch(features=torch.stack([torch.from_numpy(data.users[rows]), items], dim=1),
                     labels=torch.from_numpy(data.labels[rows]).float()[:, None],
                     history=history)
