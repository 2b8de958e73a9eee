"""The synthetic world: deterministic bytes, RecFlow's funnel shape and label rates, a truth
that stays available, and the knobs chapters rely on."""

import dataclasses
import hashlib

import numpy as np
import pytest

from recfunnel.data import recflow
from recfunnel.data.funnel import make_world
from recfunnel.data.world import WORLD_PRESETS, World, day_start_ms
from recfunnel.metrics import auc

SMOKE = WORLD_PRESETS["smoke"]


@pytest.fixture(scope="module")
def smoke():
    return make_world("smoke")


def digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_world(tmp_path, smoke):
    _, log = smoke
    first = digests(log.write_recflow(tmp_path / "a"))
    again = digests(make_world("smoke")[1].write_recflow(tmp_path / "b"))
    assert first == again and len(first) > 20
    other = digests(make_world("smoke", seed=1)[1].write_recflow(tmp_path / "c"))
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first if name.endswith(".feather")
               and "all_stage" in name)


def test_funnel_logs_the_configured_samples_per_request(smoke):
    _, log = smoke
    rows = log.all_rows()
    per_request = rows.groupby("request_id")[list(recflow.STAGE_FLAGS)].sum()
    logged = dict(zip(("prerank_neg", "coarse_neg", "rank_pos", "rank_neg", "rerank_pos",
                       "rerank_neg"), SMOKE.logged, strict=True))
    for flag, count in logged.items():
        assert (per_request[flag] == count).all(), flag
    shown = per_request["realshow"]
    assert shown.between(1, 6).all() and 3.8 < shown.mean() < 4.4  # RecFlow: about 4.1
    requests_per_user_day = rows.groupby(["day", "user_id"])["request_id"].nunique().mean()
    assert abs(requests_per_user_day - SMOKE.requests_per_user_day) < 0.6


def test_later_stages_see_more_of_the_truth(smoke):
    rows = smoke[1].all_rows()
    means = [rows.loc[rows[f] == 1, "relevance"].mean() for f in
             ("prerank_neg", "coarse_neg", "rank_neg", "rerank_neg", "rank_pos", "realshow")]
    assert means == sorted(means), means
    # adjacent stages are not trivially separable by the truth (the card's 0.6-0.85)
    pre = rows.loc[rows["prerank_neg"] == 1, "relevance"]
    coarse = rows.loc[rows["coarse_neg"] == 1, "relevance"]
    separation = auc(np.r_[np.zeros(len(pre)), np.ones(len(coarse))], np.r_[pre, coarse])
    assert 0.6 < separation < 0.9, separation


def test_label_rates_and_consistency(smoke):
    rows = smoke[1].all_rows()
    shown = rows[rows["realshow"] == 1]
    rates = dict(SMOKE.rates)
    for name, tolerance in (("effective_view", 0.1), ("long_view", 0.15), ("like", 0.6)):
        assert abs(shown[name].mean() / rates[name] - 1) < tolerance, name
    assert (shown["long_view"] <= shown["effective_view"]).all()
    np.testing.assert_array_equal(shown["effective_view"] == 1,
                                  10 * shown["playing_time"] >= 3 * shown["duration"])
    unexposed = rows[rows["realshow"] == 0]
    assert (unexposed[["effective_view", "long_view", "like", "follow", "comment", "forward",
                       "gift", "playing_time"]] == 0).all().all()
    assert (shown.loc[shown["is_live"] == 0, "gift"] == 0).all()  # gifts only on live streams
    # the truth predicts engagement about as well as a good production model
    assert 0.65 < auc(shown["effective_view"], shown["relevance"]) < 0.9


def test_histories_are_strictly_earlier_and_fill_up(smoke):
    _, log = smoke
    fill = []
    for day, rows in log.rows.items():
        times = dict(zip(rows["request_id"], rows["request_timestamp"], strict=False))
        n_valid = []
        for request_id, seq in log.seqs[day].items():
            valid = seq[:, 7] > 0
            assert (seq[valid, 7] < times[request_id]).all()
            assert set(seq[valid, 9]).issubset(log.ubm[day])
            n_valid.append(valid.sum())
        fill.append(np.mean(n_valid))
    assert fill == sorted(fill) and fill[0] < fill[-1]


def test_popularity_is_skewed_and_the_corpus_is_wider_than_exposure(smoke):
    rows = smoke[1].all_rows()
    exposures = np.sort(rows.loc[rows["realshow"] == 1, "video_id"].value_counts().to_numpy())
    cumulative = np.cumsum(exposures) / exposures.sum()
    gini = 1 - 2 * cumulative.mean() + 1 / len(exposures)
    assert gini > 0.3, gini
    assert rows["video_id"].nunique() > 2 * rows.loc[rows["realshow"] == 1, "video_id"].nunique()


def test_the_truth_is_exposed(smoke):
    """Every logged row's relevance is the world's r(u, i, t), recomputable by a chapter."""
    world, log = smoke
    rows = log.rows[SMOKE.days[1]].iloc[::97]
    minute = (rows["request_timestamp"].to_numpy() - day_start_ms(SMOKE.days[1])) // 60_000
    r = world.relevance(rows["user_id"].to_numpy(), rows["video_id"].to_numpy(), 1, minute)
    np.testing.assert_allclose(np.diag(r), rows["relevance"], rtol=1e-9)


def test_interests_drift_and_live_appeal_moves_by_the_minute(smoke):
    world, _ = smoke
    first, last = world.user_vectors(0), world.user_vectors(SMOKE.n_days - 1)
    assert 0 < np.linalg.norm(last - first, axis=1).mean() < np.linalg.norm(first, axis=1).mean()
    stream = SMOKE.n_videos  # the first live stream
    start, end = world.live_windows[0, 0]
    minutes = np.arange(start, end)
    appeal = world.live_appeal(np.array([stream]), 0, minutes)[:, 0]
    assert np.isfinite(appeal).all() and appeal.std() > 0.05
    assert np.isneginf(world.live_appeal(np.array([stream]), 0, np.array([end])))[0, 0]
    assert world.live_appeal(np.array([0]), 0, np.array([end]))[0, 0] == 0  # a short video


def nearest_centroid_accuracy(world, name):
    vectors, topics = world.modalities[name], world.item_topic
    half = len(topics) // 2
    centroids = np.stack([vectors[:half][topics[:half] == k].mean(0)
                          for k in range(world.cfg.n_topics)])
    guess = ((vectors[half:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    return (guess == topics[half:]).mean()


def test_modality_informativeness_knob():
    informative = World.build(dataclasses.replace(SMOKE, modality_informativeness=1.0))
    noise = World.build(dataclasses.replace(SMOKE, modality_informativeness=0.0))
    assert nearest_centroid_accuracy(informative, "visual") > 0.9
    assert nearest_centroid_accuracy(noise, "visual") < 2.5 / SMOKE.n_topics


def test_config_is_checked():
    with pytest.raises(ValueError, match="non-increasing"):
        dataclasses.replace(SMOKE, funnel=(10, 20, 5, 5, 5))
    with pytest.raises(ValueError, match="modality_informativeness"):
        dataclasses.replace(SMOKE, modality_informativeness=1.5)
