"""Chapter 9: the data streams' label rules, the prequential pass's time order, the search
units' view of the past, the model's loss and attention, and KuaiLive's replay."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from recfunnel.checks import InvalidInputError
from recfunnel.data.kuailive import event_log, read_kuailive
from recfunnel.data.streams import (
    CLICK,
    COMMENT,
    GIFT,
    LIKE,
    LONG_VIEW,
    STREAMS,
    TASKS,
    EventLog,
    build_stream,
    stream_world,
    tick_of,
)
from recfunnel.models.moment_cross import (
    UNITS,
    ExactSearchUnit,
    MomentCrossConfig,
    SearchUnits,
    info_nce,
    stream_loss,
)
from recfunnel.profiles import profile_for
from recfunnel.recipes import moment_cross as recipe

SIZE = replace(profile_for("moment_cross", "smoke"), panel_rooms=4, panel_users=4)


def one_view_log(events: list[tuple[int, float]], stay: float = 600.0) -> EventLog:
    """Impression 0: viewer 0 clicks room 0 at t = 0 and stays ``stay`` seconds, with the
    given (task, time) behaviours; impression 1: viewer 1 scrolls past room 1 at t = 40."""
    tasks = [CLICK] + [task for task, _ in events]
    times = [0.0] + [at for _, at in events]
    order = np.argsort(times, kind="stable")
    return EventLog(user=np.array([0, 1]), room=np.array([0, 1]), time=np.array([0.0, 40.0]),
                    clicked=np.array([True, False]), exit=np.array([stay, 40.0]),
                    event_impression=np.zeros(len(tasks), dtype=np.int64),
                    event_task=np.array(tasks)[order], event_time=np.array(times)[order],
                    n_users=2, n_rooms=2, horizon=7_200.0)


def samples_of(stream, impression):
    rows = stream.impression == impression
    return stream.tick[rows], stream.labels[rows], stream.mask[rows], stream.cancel[rows]


def test_a_behaviour_is_a_positive_once_and_only_for_its_own_task():
    log = one_view_log([(LIKE, 45.0), (COMMENT, 50.0), (COMMENT, 200.0), (COMMENT, 400.0)])
    ticks, labels, mask, _ = samples_of(build_stream(log, "moment"), 0)
    positives = [(int(t), TASKS[int(np.flatnonzero(m)[0])]) for t, m, y in
                 zip(ticks, mask, labels, strict=True) if m.sum() == 1 and y[m].all()]
    # click in tick 0, like and the first comment in tick 1; the repeats are masked
    assert positives == [(0, "click"), (1, "like"), (1, "comment")]
    assert np.all(mask.sum(1)[:3] == 1)  # each positive sample trains its own task only
    repeats = build_stream(log, "no first-only")
    assert repeats.labels[repeats.impression == 0][:, COMMENT].sum() == 3


def test_an_exit_emits_the_negatives_of_the_tasks_that_never_happened():
    log = one_view_log([(LIKE, 45.0)], stay=600.0)
    ticks, labels, mask, _ = samples_of(build_stream(log, "moment"), 0)
    exit_rows = labels.sum(1) == 0
    assert ticks[exit_rows].tolist() == [tick_of(600.0)]
    assert [TASKS[t] for t in np.flatnonzero(mask[exit_rows][0])] == ["long_view", "comment",
                                                                      "gift"]
    # the long view happened at 60 s (the event list above has none): it is a negative here,
    # as the log says; the impression that was not clicked exits at once, all negative
    t, y, m, _ = samples_of(build_stream(log, "moment"), 1)
    assert t.tolist() == [tick_of(40.0)] and m.all() and y.sum() == 0


def test_the_naive_stream_reports_what_has_not_happened_yet_as_negative():
    log = one_view_log([(LONG_VIEW, 60.0), (LIKE, 120.0)])
    _, labels, mask, _ = samples_of(build_stream(log, "naive 30s"), 0)
    assert len(labels) == 1 and mask.all()
    assert labels[0, CLICK] == 1 and labels[0, LIKE] == 0 and labels[0, LONG_VIEW] == 0


def test_fast_and_slow_samples_of_one_view_cancel_as_the_loss_says():
    log = one_view_log([(LONG_VIEW, 60.0), (LIKE, 600.0), (GIFT, 1_000.0)], stay=1_200.0)
    stream = build_stream(log, "fast/slow")
    ticks, labels, mask, cancel = samples_of(stream, 0)
    assert ticks.tolist() == [tick_of(300.0), tick_of(3_600.0)]
    assert labels[0, LIKE] == 0 and labels[1, LIKE] == 1 and cancel[1, LIKE]
    logits = torch.randn(1, len(TASKS)).repeat(2, 1)  # the same view, the same prediction
    per_sample = [stream_loss(logits[i:i + 1], torch.as_tensor(labels[i:i + 1]),
                              torch.as_tensor(mask[i:i + 1], dtype=torch.float32),
                              torch.as_tensor(cancel[i:i + 1], dtype=torch.float32))
                  for i in range(2)]
    final = torch.as_tensor(log.labels()[:1])  # what the view finally did: one positive each
    once = stream_loss(logits[:1], final, torch.ones(1, len(TASKS)), torch.zeros(1, len(TASKS)))
    torch.testing.assert_close(per_sample[0] + per_sample[1], once)


def test_every_stream_gives_each_task_of_a_view_at_most_one_negative():
    log = stream_world("smoke").log
    for name in STREAMS:
        stream = build_stream(log, name)
        assert np.all(np.diff(stream.tick) >= 0) and stream.tick.max() < log.ticks
        negatives = np.zeros((log.n_impressions, len(TASKS)))
        np.add.at(negatives, stream.impression, stream.mask * (1 - stream.labels))
        assert negatives.max() == 1, name


def test_the_event_log_refuses_a_shuffled_log_and_events_after_the_exit():
    log = one_view_log([(LIKE, 45.0)])
    with pytest.raises(InvalidInputError, match="sorted"):
        replace(log, time=log.time[::-1].copy())
    with pytest.raises(InvalidInputError, match="event_time.*after its viewer left"):
        replace(log, event_time=np.array([0.0, 5_000.0]))
    with pytest.raises(InvalidInputError, match="stream"):
        build_stream(log, "hourly")


@pytest.fixture(scope="module")
def world():
    return stream_world("smoke", minutes=40.0, warmup_minutes=5.0)


def run_scores(world, stream, cfg):
    torch.manual_seed(0)
    return recipe.prequential(world.log, stream, cfg, SIZE, seed=0, world=world,
                              device="cpu", progress=False).scores


def test_nothing_from_a_later_tick_changes_a_score(world):
    """Plant a future: flip every label released in tick k and after. No score of tick k or
    before may change; later scores must (the model does learn from the stream)."""
    cfg = MomentCrossConfig(units=UNITS, d=8, length=5)
    stream = build_stream(world.log, "moment")
    k = world.log.ticks // 2
    planted = replace(stream, labels=np.where(stream.tick[:, None] >= k, 1 - stream.labels,
                                              stream.labels))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the two passes compute in the same order
    try:
        before, after = run_scores(world, stream, cfg), run_scores(world, planted, cfg)
    finally:
        torch.set_num_threads(threads)
    until_k = world.log.impression_tick <= k
    np.testing.assert_array_equal(before[until_k], after[until_k])
    assert np.abs(before[~until_k] - after[~until_k]).max() > 1e-3


def test_the_search_units_read_only_the_past(world):
    units = SearchUnits(world, length=20)
    rng = np.random.default_rng(0)
    users = torch.as_tensor(rng.integers(0, world.config.n_users, 64))
    rooms = torch.as_tensor(rng.integers(0, world.config.n_rooms, 64))
    now = torch.as_tensor(rng.uniform(0, world.log.horizon, 64), dtype=torch.float64)
    lists = units(users, rooms, now, UNITS)
    h = world.histories
    for name in ("short", "long", "aidhard"):
        ids, live, pad = (x.numpy() for x in lists[name])
        assert not live.any() and (~pad).any()
        for b, u in enumerate(users.tolist()):  # each returned view was watched before now
            earlier = h.short[u][h.short_time[u] < now[b].item()]
            returned, times = np.unique(ids[b][~pad[b]], return_counts=True)
            available = np.array([(earlier == video).sum() for video in returned])
            assert np.all(times <= available), name
    aid = lists["aidhard"]
    assert np.all(world.short_author[aid.ids.numpy()[~aid.pad.numpy()]]
                  == np.broadcast_to(rooms.numpy()[:, None], aid.ids.shape)[~aid.pad.numpy()])
    live = lists["livelong"]
    for b, u in enumerate(users.tolist()):
        known = h.live_known[u][h.live_known[u] <= now[b].item()]
        assert (~live.pad[b]).sum().item() == min(len(known), 20)


def test_target_attention_never_reads_padding_and_an_empty_list_pools_to_zero():
    torch.manual_seed(0)
    esu = ExactSearchUnit(4, 3)
    tokens, query = torch.randn(2, 5, 3), torch.randn(2, 4)
    pad = torch.tensor([[False, False, True, True, True], [True] * 5])
    changed = tokens.clone()
    changed[0, 2:] = 100.0
    torch.testing.assert_close(esu(query, tokens, pad), esu(query, changed, pad))
    assert torch.all(esu(query, tokens, pad)[1] == 0)


def test_info_nce_masks_the_pairs_of_one_viewer():
    """Two impressions of one viewer have the same lists: unmasked, each would be the
    other's negative and the loss could not fall below log 2 for them."""
    eye = torch.eye(3)
    vectors = torch.stack([eye[0], eye[0], eye[1], eye[2]])
    masked = info_nce(vectors, vectors, torch.tensor([0, 0, 1, 2]), tau=0.01)
    unmasked = info_nce(vectors, vectors, torch.tensor([0, 1, 2, 3]), tau=0.01)
    assert masked < 1e-3 and unmasked == pytest.approx(np.log(2) / 2, rel=1e-3)


def test_pcoc_per_viewer_averages_to_the_pcoc():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 500)
    labels = (rng.random(500) < 0.2).astype(float)
    probs = rng.random(500) * 0.4
    values = recipe.per_user_pcoc(labels, probs, users, 40)
    assert len(values) == len(np.unique(users))
    assert values.mean() == pytest.approx(probs.sum() / labels.sum())


def test_the_paper_stream_tracks_a_highlight_sooner_than_fast_and_slow():
    """The mechanism of claim C1 on a small world: the 30 s stream's lag is shorter."""
    world = stream_world("smoke", seed=3)
    size = profile_for("moment_cross", "smoke")
    lags = {name: recipe.train_variant(world, name, size, seed=0, device="cpu",
                                       progress=False)[1].metrics["lag_minutes"]
            for name in ("5-min fast + 1-h slow", recipe.MOMENT)}
    assert lags[recipe.MOMENT] < lags["5-min fast + 1-h slow"] - 1.0


def write_kuailive_events(folder):
    """A room, two viewers: viewer 1 clicks at 0 s, stays 5 min, likes at 30 s and comments
    twice; a comment of viewer 1 after the view ended; viewer 2 is shown the room only."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = 1_746_374_400_000
    pd.DataFrame({"live_id": [11], "streamer_id": [501], "start_timestamp": [t0 - 1],
                  "end_timestamp": [t0 + 3_600_000]}).to_csv(folder / "room.csv", index=False)
    keys = {"live_id": 11, "streamer_id": 501}
    pd.DataFrame({"user_id": [1], **keys, "timestamp": [t0], "watch_live_time": [300_000]}
                 ).to_csv(folder / "click.csv", index=False)
    pd.DataFrame({"user_id": [1], **keys, "timestamp": [t0 + 30_000]}).to_csv(
        folder / "like.csv", index=False)
    pd.DataFrame({"user_id": [1, 1, 1], **keys,
                  "timestamp": [t0 + 40_000, t0 + 90_000, t0 + 900_000]}).to_csv(
        folder / "comment.csv", index=False)
    pd.DataFrame({"user_id": [1], **keys, "timestamp": [t0 + 1_000_000],
                  "gift_price": [5]}).to_csv(folder / "gift.csv", index=False)
    pd.DataFrame({"user_id": [2], **keys, "timestamp": [t0 + 10_000]}).to_csv(
        folder / "negative.csv", index=False)
    pd.DataFrame({"user_id": [1, 2]}).to_csv(folder / "user.csv", index=False)
    pd.DataFrame({"streamer_id": [501]}).to_csv(folder / "streamer.csv", index=False)
    return folder


def test_kuailive_replays_as_an_event_log(tmp_path):
    log = event_log(read_kuailive(write_kuailive_events(tmp_path / "KuaiLive")))
    assert log.clicked.tolist() == [True, False] and log.exit.tolist() == [300.0, 10.0]
    counts = log.counts()
    # click, long view, like, two comments in the view; the late comment and gift are not
    assert counts[0].tolist() == [1, 1, 1, 2, 0] and counts[1].sum() == 0
    moment = build_stream(log, "moment")
    assert moment.labels[moment.impression == 0][:, COMMENT].sum() == 1


def test_kuailive_without_negatives_is_refused_by_name(tmp_path):
    folder = write_kuailive_events(tmp_path)
    (folder / "negative.csv").unlink()
    with pytest.raises(InvalidInputError, match="negative.csv"):
        event_log(read_kuailive(folder))
    pd.DataFrame({"user_id": [2], "live_id": [11]}).to_csv(folder / "negative.csv",
                                                            index=False)
    with pytest.raises(InvalidInputError, match="negative.csv.*streamer_id"):
        read_kuailive(folder)
