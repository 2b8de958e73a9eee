"""Planted-interest histories: the truth they claim is the truth they contain."""

import numpy as np
import pytest
import torch

from recfunnel.data.planted import plant_interests, plant_returning_interests, planted_world
from recfunnel.data.sequences import SequentialSplit
from recfunnel.data.world import World


@pytest.fixture(scope="module")
def world():
    return World.build(planted_world(n_users=200, n_items=800, n_topics=16, seed=3))


def test_same_seed_same_histories(world):
    a = plant_interests(world, length=40, seed=1)
    b = plant_interests(world, length=40, seed=1)
    c = plant_interests(world, length=40, seed=2)
    assert a.interactions.equals(b.interactions)
    assert not a.interactions.equals(c.interactions)


def test_users_watch_only_their_planted_topics(world):
    data = plant_interests(world, length=60, interests=(2, 4), seed=0)
    frame = data.interactions
    assert frame.item_id.min() >= 1  # 0 stays the padding id
    assert (data.item_topic[frame.item_id] == frame.topic).all()
    for user, rows in frame.groupby("user_id"):
        topics = data.user_topics[user - 1]
        assert 2 <= len(topics) <= 4
        assert np.isclose(data.user_weights[user - 1].sum(), 1.0)
        assert set(rows.topic) <= set(topics.tolist())


def test_sessions_follow_the_stickiness(world):
    """P(next topic = current) = s + (1 - s) * sum_j w_j^2 for a user with weights w."""
    stickiness = 0.7
    data = plant_interests(world, length=200, stickiness=stickiness, seed=0)
    topics = data.interactions.topic.to_numpy().reshape(world.cfg.n_users, -1)
    observed = (topics[:, 1:] == topics[:, :-1]).mean()
    expected = np.mean([stickiness + (1 - stickiness) * (w ** 2).sum()
                        for w in data.user_weights])
    assert abs(observed - expected) < 0.01


def test_popular_items_are_watched_more(world):
    data = plant_interests(world, length=100, taste=0.0, seed=0)
    counts = np.bincount(data.interactions.item_id - 1, minlength=world.cfg.n_items)
    watched = counts > 0
    bias = world.item_bias[watched]
    assert np.corrcoef(bias, np.log(counts[watched]))[0, 1] > 0.3


def test_histories_fit_the_sequential_protocol(world):
    data = plant_interests(world, length=30, seed=0)
    split = SequentialSplit(data.interactions, max_len=16)
    assert split.n_items == data.n_items == world.cfg.n_items + 1
    assert len(split.eval_batch("test")) == world.cfg.n_users


@pytest.mark.parametrize("kwargs, message", [
    ({"interests": (0, 2)}, "interests must satisfy"),
    ({"interests": (3, 2)}, "interests must satisfy"),
    ({"stickiness": 1.0}, "stickiness"),
    ({"length": 2}, "length"),
])
def test_bad_arguments_are_named(world, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plant_interests(world, **{"length": 20, **kwargs})


def test_world_size_is_checked():
    with pytest.raises(ValueError, match="at least 10 per topic"):
        planted_world(n_users=10, n_items=100, n_topics=32)


def test_returning_interests_hide_the_returning_topic_from_the_recent_window(world):
    gap = 30
    data = plant_returning_interests(world, length=80, gap=gap, seed=0)
    topics = data.item_topic[data.histories]  # [U, 80], -1 at padding
    returning = data.return_topic[:, None]
    assert not (topics[:, -gap:] == returning).any()  # never in the newest `gap` watches
    assert (topics == returning).any(axis=1).all()  # but seen before
    assert (data.item_topic[data.targets] == data.return_topic).all()
    assert (data.last_seen > gap).all()
    real = data.histories > 0
    assert (np.diff(real.astype(int), axis=1) >= 0).all()  # padding only in front
    lengths = real.sum(1)
    assert lengths.min() >= gap + 16 and lengths.max() <= 80 and len(set(lengths)) > 1
    again = plant_returning_interests(world, length=80, gap=gap, seed=0)
    assert np.array_equal(again.histories, data.histories)
    train, valid, test = data.split(valid=0.1, test=0.1)
    assert len(train) + len(valid) + len(test) == world.cfg.n_users
    assert torch.equal(test.user_seq[-1], torch.as_tensor(data.histories[-1]))


def test_returning_interests_name_bad_arguments(world):
    with pytest.raises(ValueError, match="gap"):
        plant_returning_interests(world, length=40, gap=30)
    with pytest.raises(ValueError, match="interests"):
        plant_returning_interests(world, length=80, gap=30, interests=(1, 3))
