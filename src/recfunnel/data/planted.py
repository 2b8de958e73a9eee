"""Watch histories with planted interests, drawn from the synthetic world's truth.

The retrieval chapters need users whose interests are known, so that a model's interest
vectors can be checked against them. Each user gets a few of the world's topics (their
*planted interests*) with Dirichlet weights, and watches a long sequence of videos:

* the topic of the next watch stays with the current one with probability ``stickiness``
  (sessions of one interest), else it is drawn afresh from the user's weights;
* within a topic, video i is chosen with probability proportional to
  ``exp(taste * <u, v_i> / sqrt(d) + b_i)``: the world's user vector u gives a personal
  taste inside each topic, the item bias b_i a popularity skew (what logQ corrects).

Every watch is a positive, as in KuaiFormer's input (Section 3.1 of its paper). The
histories come back in the MovieLens layout (user_id, item_id, timestamp, ids from 1), so
``SequentialSplit`` gives them the same leave-one-out protocol as the real data.

    world = World.build(planted_world(n_items=3_000, n_topics=32, n_users=2_000))
    data = plant_interests(world, length=258)

Chapter 3 needs the opposite of a session: ``plant_returning_interests`` builds histories
whose next item returns to an interest that has not been watched for at least ``gap``
items, so only a model that reads far back can tell which interest returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recfunnel import checks
from recfunnel.data.sequences import SeqBatch
from recfunnel.data.world import World, WorldConfig


def planted_world(n_users: int, n_items: int, n_topics: int, seed: int = 0) -> WorldConfig:
    """A short-video-only world config of the given size (no live streams, one day)."""
    checks.positive_int("n_users", n_users)
    checks.positive_int("n_topics", n_topics)
    if checks.positive_int("n_items", n_items) < 10 * n_topics:
        raise checks.InvalidInputError(f"n_items: {n_items} items for {n_topics} topics; want "
                                       "at least 10 per topic")
    # the funnel is never simulated on planted worlds; its sizes only need to be valid
    funnel = (max(n_items // 2, 10), max(n_items // 4, 10))
    funnel += (min(60, funnel[1]), min(25, funnel[1]), 10)
    return WorldConfig(n_users=n_users, n_videos=n_items, n_live=0,
                       n_creators=max(n_items // 10, n_topics), n_topics=n_topics, n_days=1,
                       pool_size=n_items, funnel=funnel, seed=seed)


@dataclass
class PlantedHistories:
    """The watch log and the truth that generated it."""

    interactions: pd.DataFrame  # user_id, item_id (world id + 1), timestamp, topic
    user_topics: list[np.ndarray]  # per user: the planted topics
    user_weights: list[np.ndarray]  # per user: their Dirichlet weights (sum to 1)
    item_topic: np.ndarray  # [V] topic of each item id; -1 for the padding id 0

    @property
    def n_items(self) -> int:
        """V: vocabulary size including the padding id 0."""
        return len(self.item_topic)


def _item_drawer(world: World, taste: float, rng: np.random.Generator):
    """draw(user, topic, n) -> n world item ids of ``topic``, chosen with probability
    proportional to exp(taste <u, v_i> / sqrt(d) + b_i)."""
    members = [np.flatnonzero(world.item_topic == t) for t in range(world.cfg.n_topics)]
    u_vectors = world.user_vectors(0)
    scale = taste / np.sqrt(world.cfg.d_latent)

    def draw(user: int, topic: int, n: int) -> np.ndarray:
        pool = members[topic]
        logits = scale * world.item_latent[pool] @ u_vectors[user] + world.item_bias[pool]
        p = np.exp(logits - logits.max())
        return rng.choice(pool, n, p=p / p.sum()) if n else pool[:0]

    return draw


def plant_interests(world: World, length: int, interests: tuple[int, int] = (2, 5),
                    stickiness: float = 0.6, taste: float = 1.0, concentration: float = 1.0,
                    seed: int = 0) -> PlantedHistories:
    """``length`` watches for every user of ``world``, each user with between
    ``interests[0]`` and ``interests[1]`` planted topics (inclusive)."""
    low, high = interests
    if not 1 <= low <= high <= world.cfg.n_topics:
        raise ValueError(f"interests must satisfy 1 <= low <= high <= n_topics, got {interests}")
    if not 0 <= stickiness < 1:
        raise ValueError(f"stickiness must lie in [0, 1), got {stickiness}")
    if length < 3:
        raise ValueError("length must be at least 3 (train, validation and test targets)")
    rng = np.random.default_rng(seed)
    draw = _item_drawer(world, taste, rng)
    users, items, topics_out, all_topics, all_weights = [], [], [], [], []
    for u in range(world.cfg.n_users):
        m = rng.integers(low, high + 1)
        topics = rng.choice(world.cfg.n_topics, m, replace=False)
        weights = rng.dirichlet(np.full(m, concentration))
        # the topic of each watch: sessions of one interest
        switch = rng.random(length) >= stickiness
        switch[0] = True
        fresh = rng.choice(m, length, p=weights)
        session = np.maximum.accumulate(np.where(switch, np.arange(length), 0))
        chosen = fresh[session]  # [length] index into topics
        watch = np.empty(length, dtype=np.int64)
        for j, topic in enumerate(topics):
            where = np.flatnonzero(chosen == j)
            watch[where] = draw(u, topic, len(where))
        users.append(np.full(length, u + 1))
        items.append(watch + 1)  # id 0 is padding
        topics_out.append(topics[chosen])
        all_topics.append(topics)
        all_weights.append(weights)
    frame = pd.DataFrame({
        "user_id": np.concatenate(users), "item_id": np.concatenate(items),
        "timestamp": np.tile(np.arange(length, dtype=np.int64), world.cfg.n_users),
        "topic": np.concatenate(topics_out),
    })
    item_topic = np.concatenate([[-1], world.item_topic]).astype(np.int64)
    return PlantedHistories(frame, all_topics, all_weights, item_topic)


@dataclass
class ReturningInterests:
    """Histories whose next item returns to an interest last seen long ago.

    histories [U, length] item ids oldest first, left-padded with 0 (lengths vary);
    targets [U] the next item; return_topic [U] its topic; item_topic [V] as above;
    last_seen [U] how many positions before the target the return topic was last watched."""

    histories: np.ndarray
    targets: np.ndarray
    return_topic: np.ndarray
    last_seen: np.ndarray
    item_topic: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_topic)

    def batch(self, rows: np.ndarray | slice = slice(None)) -> SeqBatch:
        """The users ``rows`` as a ``SeqBatch`` (user ids are row numbers + 1)."""
        index = np.arange(len(self.targets))[rows]
        user_seq = torch.as_tensor(self.histories[index])
        return SeqBatch(torch.as_tensor(index + 1), user_seq, user_seq == 0,
                        torch.as_tensor(self.targets[index]))

    def split(self, valid: float = 0.1, test: float = 0.1) -> tuple[SeqBatch, SeqBatch,
                                                                     SeqBatch]:
        """(train, valid, test) batches of disjoint users, in row order."""
        n = len(self.targets)
        n_valid, n_test = int(round(valid * n)), int(round(test * n))
        n_train = n - n_valid - n_test
        if min(n_train, n_valid, n_test) < 1:
            raise ValueError(f"{n} users are too few for this split")
        return (self.batch(slice(0, n_train)), self.batch(slice(n_train, n_train + n_valid)),
                self.batch(slice(n_train + n_valid, n)))


def plant_returning_interests(world: World, length: int, gap: int,
                              interests: tuple[int, int] = (2, 4), old_share: float = 0.7,
                              stickiness: float = 0.8, taste: float = 2.0, seed: int = 0
                              ) -> ReturningInterests:
    """One history per world user, of between ``gap + 16`` and ``length`` watches:

    * the user has ``interests`` planted topics; one of them is the *returning* topic;
    * the old part of the history is sessions of the returning topic (share ``old_share``)
      and the others; the newest ``gap`` watches are sessions of the others only;
    * the next item, the target, is a watch of the returning topic.

    A model that reads fewer than ``gap`` items cannot know which topic returns."""
    low, high = interests
    if not 2 <= low <= high <= world.cfg.n_topics:
        raise ValueError(f"interests must satisfy 2 <= low <= high <= n_topics, got {interests}")
    if not 1 <= gap <= length - 16:
        raise ValueError(f"gap must lie in [1, length - 16], got gap={gap}, length={length}")
    if not 0 < old_share < 1 or not 0 <= stickiness < 1:
        raise ValueError("old_share must lie in (0, 1) and stickiness in [0, 1)")
    rng = np.random.default_rng(seed)
    draw = _item_drawer(world, taste, rng)

    def sessions(n: int, weights: np.ndarray) -> np.ndarray:
        """n topic indices (into the user's topics) in sessions of one topic."""
        switch = rng.random(n) >= stickiness
        switch[0] = True
        fresh = rng.choice(len(weights), n, p=weights)
        return fresh[np.maximum.accumulate(np.where(switch, np.arange(n), 0))]

    n_users = world.cfg.n_users
    histories = np.zeros((n_users, length), dtype=np.int64)
    targets, returning, last_seen = (np.zeros(n_users, dtype=np.int64) for _ in range(3))
    for u in range(n_users):
        topics = rng.choice(world.cfg.n_topics, rng.integers(low, high + 1), replace=False)
        m = len(topics)  # topics[0] returns
        n_old = rng.integers(16, length - gap + 1)
        old_weights = np.r_[old_share, np.full(m - 1, (1 - old_share) / (m - 1))]
        chosen = np.r_[sessions(n_old, old_weights),
                       1 + sessions(gap, np.full(m - 1, 1 / (m - 1)))]
        if not (chosen == 0).any():  # the returning topic must have been seen
            chosen[0] = 0
        watch = np.empty(len(chosen), dtype=np.int64)
        for j, topic in enumerate(topics):
            where = np.flatnonzero(chosen == j)
            watch[where] = draw(u, topic, len(where))
        histories[u, length - len(watch):] = watch + 1  # id 0 is padding
        targets[u] = draw(u, topics[0], 1)[0] + 1
        returning[u] = topics[0]
        last_seen[u] = len(chosen) - np.flatnonzero(chosen == 0)[-1]
    item_topic = np.concatenate([[-1], world.item_topic]).astype(np.int64)
    return ReturningInterests(histories, targets, returning, last_seen, item_topic)
