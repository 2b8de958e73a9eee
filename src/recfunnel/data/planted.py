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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recfunnel.data.world import World, WorldConfig


def planted_world(n_users: int, n_items: int, n_topics: int, seed: int = 0) -> WorldConfig:
    """A short-video-only world config of the given size (no live streams, one day)."""
    if n_items < 10 * n_topics:
        raise ValueError(f"{n_items} items for {n_topics} topics: want at least 10 per topic")
    return WorldConfig(n_users=n_users, n_videos=n_items, n_live=0,
                       n_creators=max(n_items // 10, n_topics), n_topics=n_topics, n_days=1,
                       pool_size=n_items, funnel=(n_items // 2, n_items // 4, 60, 25, 10),
                       seed=seed)


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
    d = world.cfg.d_latent
    members = [np.flatnonzero(world.item_topic == t) for t in range(world.cfg.n_topics)]
    u_vectors = world.user_vectors(0)
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
            if not len(where):
                continue
            pool = members[topic]
            logits = taste * world.item_latent[pool] @ u_vectors[u] / np.sqrt(d)
            logits = logits + world.item_bias[pool]
            p = np.exp(logits - logits.max())
            watch[where] = rng.choice(pool, len(where), p=p / p.sum())
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
