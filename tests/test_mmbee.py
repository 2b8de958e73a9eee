"""Chapter 8's pieces: the live-gifting world, Swing and the metapath expansion, MFQ's
projection and masks, the per-user AUCs, KuaiLive's reader, and MMBee against its
ablations on a small world."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from recfunnel.checks import InvalidInputError
from recfunnel.data.kuailive import FILES, gift_impressions, read_kuailive
from recfunnel.data.live import LIVE_PRESETS, LiveConfig, build_live_world, live_world
from recfunnel.layers.graph import cap_per_column, interaction_matrix, swing, top_k_rows
from recfunnel.metrics import gauc, user_aucs
from recfunnel.models.mmbee import MFQ, GiftBatch, MMBee, MMBeeConfig, orthogonal_projection
from recfunnel.models.mmbee_graph import GiftGraph, pretrain_nodes
from recfunnel.profiles import profile_for
from recfunnel.recipes import mmbee as recipe


@pytest.fixture(scope="module")
def smoke_world():
    return live_world("smoke")


# --------------------------------------------------------------------------- the world


def test_the_world_hits_its_gift_rate_and_sparsity(smoke_world):
    w = smoke_world
    assert w.gift.mean() == pytest.approx(LIVE_PRESETS["smoke"].gift_rate, rel=0.15)
    past = w.past_gifts()
    assert (past <= 2).mean() >= 0.6  # most viewers have at most two past gifts
    assert past.max() >= 10  # ... and a few whales many
    gifts_per_user = np.bincount(w.user[w.gift == 1], minlength=w.n_users)
    top = np.sort(gifts_per_user)[::-1]
    assert top[: w.n_users // 20].sum() > 0.2 * top.sum()  # 5 % of viewers: > 20 % of gifts
    highlights = np.isin(w.state, [w.config.n_states - 3, w.config.n_states - 2,
                                   w.config.n_states - 1])
    assert highlights.mean() < 3 / 8  # highlight states are rarer than their share


def test_the_world_is_deterministic_and_time_ordered():
    cfg = dataclasses.replace(LIVE_PRESETS["smoke"], n_users=200)
    a, b = build_live_world(cfg), build_live_world(cfg)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.gift, b.gift)
    assert np.all(np.diff(a.segment) >= 0)
    other = build_live_world(dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(a.gift, other.gift)
    assert np.array_equal(a.period(), (a.segment >= cfg.train_start).astype(int)
                          + (a.segment >= cfg.test_start))


def test_an_impression_sees_only_its_rooms_segments_up_to_its_own(smoke_world):
    w = smoke_world
    times, live = w.window_segments(w.streamer, w.segment)
    assert np.all(times <= w.segment[:, None])  # never a later segment
    assert np.array_equal(times[:, -1], w.segment) and live[:, -1].all()
    rooms_then = w.room[w.streamer[:, None], times]
    same_room = rooms_then == w.room[w.streamer, w.segment][:, None]
    assert np.array_equal(live, same_room & (w.segment[:, None] - times
                                             == np.arange(w.config.window - 1, -1, -1)))
    assert (~live).any()  # rooms do start inside some windows


def test_the_world_refuses_bad_configs():
    with pytest.raises(InvalidInputError, match="gift_rate"):
        LiveConfig(gift_rate=0.0)
    with pytest.raises(InvalidInputError, match="burn_in"):
        LiveConfig(burn_in=0.6, test_share=0.5)
    with pytest.raises(InvalidInputError, match="comment_vectors"):
        LiveConfig(comment_vectors="bert")


def test_unavailable_comment_text_falls_back_to_synthetic_vectors(monkeypatch, tmp_path):
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("RECFUNNEL_MINILM", str(tmp_path / "absent"))
    cfg = dataclasses.replace(LIVE_PRESETS["smoke"], n_users=100, comment_vectors="minilm")
    with pytest.warns(UserWarning, match="falls back to synthetic"):
        world = build_live_world(cfg)
    synthetic = build_live_world(dataclasses.replace(cfg, comment_vectors="synthetic"))
    assert world.tokens.shape == synthetic.tokens.shape
    assert not world.comment_text and not synthetic.comment_text


def test_comment_text_is_read_by_the_encoder_when_it_is_installed():
    pytest.importorskip("sentence_transformers")
    from recfunnel.data.text import TextEncoderUnavailableError, encode_texts

    try:
        encode_texts(["hello"], encoder="minilm")
    except TextEncoderUnavailableError as error:
        pytest.skip(f"all-MiniLM-L6-v2 is not installed here: {error}")
    cfg = dataclasses.replace(LIVE_PRESETS["smoke"], n_users=100, comment_vectors="minilm")
    assert build_live_world(cfg).comment_text


# --------------------------------------------------------------------------- graphs


def test_swing_matches_a_hand_computation():
    # users 0 and 2 gifted streamers {0, 1, 2}, user 1 gifted {0, 1}
    M = interaction_matrix(np.array([0, 0, 0, 1, 1, 2, 2, 2]),
                           np.array([0, 1, 2, 0, 1, 0, 1, 2]), (3, 3))
    # pairs: (0,1) share {0,1}: 1/(1+2); (0,2) share {0,1,2}: 1/(1+3); (1,2) share {0,1}
    s01 = 2 * (1 / 3 + 1 / 4 + 1 / 3)  # ordered pairs count twice
    s02 = s12 = 2 * (1 / 4)
    expected = np.array([[0, s01, s02], [s01, 0, s12], [s02, s12, 0]])
    assert np.allclose(swing(M).toarray(), expected)
    assert np.allclose(swing(M, alpha=2.0).toarray()[0, 2], 2 * (1 / 5))
    assert top_k_rows(swing(M), 1).ravel().tolist() == [2, 1, 1]  # 1-based, ties: lower id


def test_the_gifter_cap_keeps_the_most_recent_gifters():
    M = interaction_matrix(np.arange(4), np.zeros(4, int), (4, 1))
    times = interaction_matrix(np.arange(4), np.zeros(4, int), (4, 1),
                               weights=np.array([5.0, 1.0, 9.0, 3.0]))
    assert cap_per_column(M, times, 2).tocoo().row.tolist() == [0, 2]


def test_top_k_rows_skips_excluded_columns_and_pads():
    scores = interaction_matrix(np.array([0, 0, 0]), np.array([0, 1, 2]), (2, 3),
                                weights=np.array([3.0, 2.0, 1.0]))
    exclude = interaction_matrix(np.array([0]), np.array([0]), (2, 3))
    assert top_k_rows(scores, 3, exclude).tolist() == [[2, 3, 0], [0, 0, 0]]


def test_the_expansion_uses_only_gifts_before_the_cut():
    # viewers 0, 1 gifted streamers {0, 1}; viewers 2, 3 gifted {1, 2}; viewer 4 only {0}
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])
    streamers = np.array([0, 1, 0, 1, 1, 2, 1, 2, 0])
    times = np.arange(9)
    before = GiftGraph.build(users, streamers, times, 6, 3, before=10)
    # planted test-period gifts: viewer 5 -> streamer 2, viewer 4 -> streamer 1
    planted = GiftGraph.build(np.r_[users, 5, 4], np.r_[streamers, 2, 1],
                              np.r_[times, 12, 11], 6, 3, before=10)
    for name, table in planted.paths(3, 3).items():
        assert np.array_equal(table, before.paths(3, 3)[name]), name
    assert planted.gifts[5].nnz == 0 and planted.gifts[4, 1] == 0
    paths = before.paths(3, 3)
    assert paths["U->A"][4].tolist() == [1, 0, 0]  # viewer 4 gifted streamer 0
    assert paths["U->A->A"][4].tolist() == [2, 0, 0]  # ... whose Swing neighbour is 1
    # streamer 0's similar streamer 1 was gifted by 0-3; 0 and 1 already gifted streamer 0
    assert paths["A->A->U"][0].tolist() == [3, 4, 0]
    assert paths["A->U"][0].tolist() == [1, 2, 5]


def test_graphcl_places_co_gifted_streamers_together(smoke_world):
    w = smoke_world
    data = recipe.prepare(w, profile_for("mmbee", "smoke"))
    _, streamers = pretrain_nodes(data.graph, data.content, seed=0)
    z = torch.nn.functional.normalize(streamers, dim=1)
    sim = (z @ z.T).fill_diagonal_(-2.0)
    nearest = sim.argmax(1).numpy()
    assert (w.cluster[nearest] == w.cluster).mean() > 2.0 / w.config.n_clusters


# --------------------------------------------------------------------------- MFQ


def test_the_projection_removes_a_planted_shared_direction():
    torch.manual_seed(0)
    d = 6
    shared = torch.zeros(d)
    shared[0] = 1.0
    signal = torch.randn(1, 5, d)
    signal[..., 0] = 0.0  # modality 0's own content, orthogonal to the shared direction
    x = torch.stack([signal + 3.0 * shared, 2.0 * shared.expand(1, 5, d),
                     -1.5 * shared.expand(1, 5, d)], dim=1)  # [1, M=3, L=5, d]
    pad = torch.zeros(1, 5, dtype=torch.bool)
    projected = orthogonal_projection(x, pad)
    assert torch.allclose(projected[:, 0], signal, atol=1e-5)
    assert torch.allclose(projected[:, 1:], torch.zeros_like(projected[:, 1:]), atol=1e-5)


def test_the_projection_removes_each_segments_own_shared_direction():
    """A window of two segments, each with its own nuisance: projecting the window as one
    would remove the mean of the two and leave most of each."""
    torch.manual_seed(0)
    d, n = 8, 4
    nuisance = torch.eye(d)[:2]  # segment 0's and segment 1's shared directions
    content = 0.5 * torch.randn(1, 3, 2, n, d)
    content[..., :2] = 0.0  # every modality's content, orthogonal to both nuisances
    x = content + 4.0 * nuisance[None, None, :, None, :]  # [1, M, W, n, d]
    x = x.reshape(1, 3, 2 * n, d)
    pad = torch.zeros(1, 2 * n, dtype=torch.bool)
    per_segment = orthogonal_projection(x, pad, window=2)
    assert per_segment[..., :2].abs().max() < 0.1 * 4.0
    as_one = orthogonal_projection(x, pad, window=1)
    assert as_one[..., :2].abs().max() > 1.0  # the window's mean direction is not enough
    with pytest.raises(InvalidInputError, match="window"):
        orthogonal_projection(x, pad, window=3)


def _mfq_inputs(pad_last: int = 3):
    torch.manual_seed(0)
    cfg = MMBeeConfig(n_users=4, n_streamers=3, d_token=8, d_model=16, n_queries=2, heads=2)
    tokens = torch.randn(2, 3, 6, 8)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[:, -pad_last:] = True
    return cfg, tokens, pad, torch.tensor([[0, 0], [2, 0]])


def test_queries_attend_only_to_live_segments():
    cfg, tokens, pad, streamer = _mfq_inputs()
    mfq = MFQ(cfg).eval()
    weights = mfq.attention(tokens, pad, streamer)  # [B, H, n_q, M L]
    assert torch.all(weights[..., pad.repeat(1, 3)] == 0)
    assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    garbage = tokens.clone()
    garbage[:, :, -3:] = 1e4  # what was not live cannot move the segment's vector
    assert torch.allclose(mfq(tokens, pad, streamer), mfq(garbage, pad, streamer), atol=1e-5)


def test_streamer_aware_queries_depend_on_the_streamer_and_shared_ones_do_not():
    cfg, tokens, pad, _ = _mfq_inputs()
    same = tokens[:1].expand(2, -1, -1, -1)
    for aware in (True, False):
        mfq = MFQ(dataclasses.replace(cfg, streamer_aware=aware)).eval()
        out = mfq(same, pad, torch.tensor([[0, 0], [2, 0]]))
        assert torch.allclose(out[0], out[1]) != aware


def test_a_gift_batch_refuses_rows_that_do_not_line_up():
    with pytest.raises(InvalidInputError, match="tokens"):
        GiftBatch(features=torch.zeros(3, 2, dtype=torch.long),
                  tokens=torch.zeros(2, 3, 4, 8), token_pad=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(InvalidInputError, match="token_pad"):
        GiftBatch(features=torch.zeros(2, 2, dtype=torch.long), tokens=torch.zeros(2, 3, 4, 8))
    with pytest.raises(InvalidInputError, match="nodes"):
        MMBee(MMBeeConfig(n_users=2, n_streamers=2))


# --------------------------------------------------------------------------- metrics


def test_gauc_and_uauc_on_hand_built_cases():
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 0, 0])
    scores = np.array([.9, .1, .2, .3, .8, .5, .4, .6, .1, .2])
    users = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])  # user 3: negatives only
    per_user = user_aucs(labels, scores, users)
    assert per_user.groups.tolist() == [0, 1, 2] and per_user.dropped == 1
    assert per_user.auc.tolist() == [1.0, 0.0, 0.5]
    assert per_user.uauc == pytest.approx(0.5)  # plain mean
    assert per_user.gauc == pytest.approx((3 * 1.0 + 2 * 0.0 + 3 * 0.5) / 8)  # by impressions
    assert gauc(labels, scores, users) == pytest.approx(per_user.gauc)
    with pytest.raises(ValueError, match="both positive and negative"):
        user_aucs(np.zeros(3), np.ones(3), np.arange(3))


# --------------------------------------------------------------------------- KuaiLive


def write_kuailive(folder, seed=0):
    """The seven tables of KuaiLive in the published layout (a few rows each)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = 1_746_374_400_000
    pd.DataFrame({"p_date": 20250505, "live_id": [11, 12, 13], "streamer_id": [501, 502, 501],
                  "live_type": 1, "start_timestamp": [start, start, start + 5_000_000],
                  "end_timestamp": [start + 4_000_000, start + 9_000_000, start + 9_000_000],
                  "live_content_category": "chat", "live_name_id": 0}).to_csv(
        folder / "room.csv", index=False)
    clicks = pd.DataFrame({"user_id": [1, 1, 2, 3, 2], "live_id": [11, 12, 11, 13, 12],
                           "streamer_id": [501, 502, 501, 501, 502],
                           "timestamp": start + np.array([10, 20, 30, 5_000_100, 40]) * 1000,
                           "watch_live_time": rng.integers(1_000, 90_000, 5)})
    clicks.to_csv(folder / "click.csv", index=False)
    for name in ("comment", "like"):
        clicks[["user_id", "live_id", "streamer_id", "timestamp"]].to_csv(
            folder / f"{name}.csv", index=False)
    # user 1 gifts in room 11 after the click; user 2 gifts in room 12 *before* clicking it
    # (a gift from another session), and user 3 in room 13 after the room ended
    pd.DataFrame({"user_id": [1, 2, 3], "live_id": [11, 12, 13],
                  "streamer_id": [501, 502, 501],
                  "timestamp": start + np.array([15_000, 35_000, 9_500_000]),
                  "gift_price": [2, 10, 1]}).to_csv(folder / "gift.csv", index=False)
    pd.DataFrame({"user_id": [1, 2, 3], "age": "18-23", "gender": "M"}).to_csv(
        folder / "user.csv", index=False)
    pd.DataFrame({"streamer_id": [501, 502], "gender": "F"}).to_csv(
        folder / "streamer.csv", index=False)
    return folder


def test_kuailive_reads_the_published_layout_and_labels_gifts(tmp_path):
    data = read_kuailive(write_kuailive(tmp_path / "KuaiLive").parent)
    assert set(data.logs) == {"click", "comment", "like", "gift"} and len(data.rooms) == 3
    log = gift_impressions(data)
    assert log.n_users == 3 and log.n_streamers == 2 and np.all(np.diff(log.time) >= 0)
    # clicks in time order: u1 room 11, u1 room 12, u2 room 11, u2 room 12, u3 room 13
    assert log.gift.tolist() == [1, 0, 0, 0, 0]


def test_kuailive_names_the_file_and_column_that_is_wrong(tmp_path):
    folder = write_kuailive(tmp_path)
    gifts = pd.read_csv(folder / "gift.csv").drop(columns="gift_price")
    gifts.to_csv(folder / "gift.csv", index=False)
    with pytest.raises(InvalidInputError, match="gift.csv.*gift_price"):
        read_kuailive(folder)
    folder = write_kuailive(tmp_path / "again")
    rooms = pd.read_csv(folder / "room.csv")
    rooms.loc[1, "end_timestamp"] = rooms.loc[1, "start_timestamp"] - 1
    rooms.to_csv(folder / "room.csv", index=False)
    with pytest.raises(InvalidInputError, match="room.csv.*row 1"):
        read_kuailive(folder)
    assert set(FILES) >= {"room.csv", "gift.csv", "click.csv"}


# --------------------------------------------------------------------------- MMBee


@pytest.fixture(scope="module")
def trained(smoke_world):
    """MMBee, mean-pool fusion, no GIE and the base on the smoke world, one seed."""
    size = profile_for("mmbee", "smoke")
    data = recipe.prepare(smoke_world, size)
    nodes = recipe.node_embeddings(data, "graphcl", size, 0)
    runs = {name: recipe.train_variant(name, data, size, 0, device="cpu", nodes=nodes)[1]
            for name in ("MMBee", "mean-pool fusion", "no GIE", "base (DIN)")}
    return data, runs


def test_content_and_the_graph_each_lift_mmbee_above_its_base(trained):
    _, runs = trained
    uauc = {name: run.metrics["uauc"] for name, run in runs.items()}
    assert uauc["MMBee"] > uauc["base (DIN)"] + 0.02
    assert uauc["mean-pool fusion"] > uauc["base (DIN)"] + 0.02  # content, however fused
    # GIE raises the per-user AUC of the sparse gifters (at most two burn-in gifts)
    assert runs["MMBee"].metrics["uauc_sparse"] > runs["no GIE"].metrics["uauc_sparse"]
    kept = runs["MMBee"].metrics["users_kept"]
    dropped = runs["MMBee"].metrics["users_dropped"]
    assert kept == len(runs["MMBee"].per_user["uauc"]) == len(runs["MMBee"].extra["users"])
    assert dropped > 0.3 * (kept + dropped)  # at a 2 % gift rate many viewers never gift


def test_the_expansion_recalls_first_time_gift_streamers_better_than_history():
    size = profile_for("mmbee", "smoke")
    pooled: dict[str, list[np.ndarray]] = {"expansion": [], "history": [], "popularity": []}
    for seed in range(3):  # three worlds: one alone is too few viewers to be sure of
        world = live_world("smoke", seed=seed)
        data = recipe.prepare(world, size)
        recall = recipe.expansion_recall(world.log(), data.graph, data.rows["test"])
        assert len(recall["users"]) > 300
        for name in pooled:
            pooled[name].append(recall[name])
    mean = {name: np.concatenate(values).mean() for name, values in pooled.items()}
    assert mean["expansion"] > mean["history"] + 0.02
    assert mean["expansion"] > mean["popularity"] + 0.05


def test_the_state_probe_reads_test_period_segments_and_refuses_unknown_fusions():
    world = build_live_world(dataclasses.replace(LIVE_PRESETS["smoke"], n_users=100,
                                                 n_streamers=12, segments=20))
    size = dataclasses.replace(profile_for("mmbee", "smoke"), probe_epochs=1)
    hits = recipe.state_probe(world, size, "mean", seed=0, device="cpu")
    test_segments = world.config.segments - world.config.test_start
    assert hits.shape == (12 * test_segments,) and set(np.unique(hits)) <= {0.0, 1.0}
    assert np.array_equal(hits, recipe.state_probe(world, size, "mean", seed=0,
                                                   device="cpu"))
    with pytest.raises(InvalidInputError, match="fusion"):
        recipe.state_probe(world, size, "max", seed=0)


def test_the_linear_read_out_finds_a_planted_state_and_needs_both_halves():
    rng = np.random.default_rng(0)
    state = rng.integers(4, size=400)
    vectors = np.eye(4)[state] * 3.0 + rng.normal(size=(400, 4))
    fit = np.arange(400) < 200
    assert recipe.linear_state_accuracy(vectors, state, fit) > 0.85
    assert recipe.linear_state_accuracy(rng.normal(size=(400, 4)), state, fit) < 0.4
    with pytest.raises(InvalidInputError, match="fit"):
        recipe.linear_state_accuracy(vectors, state, np.ones(400, dtype=bool))


def test_a_log_without_content_trains_the_content_free_variants(smoke_world, tmp_path):
    size = profile_for("mmbee", "smoke")
    cfg = smoke_world.config
    logged = recipe.prepare_log(smoke_world.log(), size, cfg.train_start, cfg.test_start)
    full = recipe.prepare(smoke_world, size)
    for name in ("train", "test"):  # the same split and the same graph as the world's
        assert np.array_equal(logged.rows[name], full.rows[name])
    assert (logged.graph.gifts != full.graph.gifts).nnz == 0
    assert logged.n_categories == 1 and logged.world is None
    nodes = recipe.node_embeddings(logged, "graphcl", size, 0)
    runs = {name: recipe.train_variant(name, logged, size, 0, device="cpu", nodes=nodes)[1]
            for name in recipe.LOG_VARIANTS}
    assert (runs["GIE, no content"].metrics["uauc_sparse"]
            > runs["base (DIN)"].metrics["uauc_sparse"])
    with pytest.raises(InvalidInputError, match="variant.*content"):
        recipe.train_variant("MMBee", logged, size, 0, device="cpu", nodes=nodes)
    with pytest.raises(InvalidInputError, match="cut"):
        recipe.prepare_log(smoke_world.log(), size, cfg.test_start, cfg.train_start)
    # KuaiLive's layout, read and prepared: batches carry no segment tokens
    live = gift_impressions(read_kuailive(write_kuailive(tmp_path / "KuaiLive")))
    tiny = recipe.prepare_log(live, size, np.quantile(live.time, 0.3),
                              np.quantile(live.time, 0.6))
    batch = next(recipe.batches(tiny, np.arange(len(live.user)), 8))
    assert batch.tokens is None and batch.features.shape == (len(live.user), 3)
