"""MARM's invariants: the cached computation equals the full causal recomputation, its cost
grows with n where recomputation grows with n^2, the cache refuses to read the future and
holds constants, and the exposure streams carry the two-hop pattern they promise."""

import numpy as np
import pytest
import torch
from refusals import refused

from recfunnel.cost import scaling_exponent
from recfunnel.data.exposures import ExposureConfig, make_exposures
from recfunnel.metrics import auc
from recfunnel.models.marm import (
    MARM,
    ExposureCache,
    MARMConfig,
    recompute_request,
    request,
    serving_flops,
)


def small(**changes):
    return MARMConfig(n_items=40, n_topics=5, d_model=16, **changes)


def recomputed(model, items, topics, feedback):
    with torch.no_grad():
        return model.recompute(items, topics, feedback)[0]


def randomised(cfg, dtype=torch.float64, seed=0):
    """A model whose every parameter (recency biases and feedback included) is random."""
    torch.manual_seed(seed)
    model = MARM(cfg).to(dtype).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    return model


def streams(users=3, length=120, n_items=40, n_topics=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items, (users, length), generator=g)
    return items, items % n_topics, torch.randint(0, 3, (users, length), generator=g)


def served(model, items, topics, feedback, dtype=torch.float64):
    users = torch.arange(len(items))
    cache = ExposureCache.for_model(model, len(items), items.shape[1], dtype)
    with torch.no_grad():
        logits = [request(model, cache, items, topics, feedback, users, t)[0]
                  for t in range(items.shape[1])]
    return torch.stack(logits, dim=1), cache


@pytest.mark.parametrize("cache_kind", ["hidden", "kv"])
@pytest.mark.parametrize("n_layers", [1, 2, 4])
def test_the_cache_equals_the_full_causal_recomputation(n_layers, cache_kind):
    cfg = small(n_layers=n_layers, window=64,
                     cache=cache_kind)
    model = randomised(cfg)
    items, topics, feedback = streams(length=160)  # longer than the window: it binds
    cached, cache = served(model, items, topics, feedback)
    full = recomputed(model, items, topics, feedback)
    assert (cached - full).abs().max() < 1e-10
    assert cache.miss_rate == 0.0
    single = model.float()
    cached32, _ = served(single, items, topics, feedback, torch.float32)
    full32 = recomputed(single, items, topics, feedback)
    assert (cached32 - full32).abs().max() < 1e-4


def test_recomputing_the_receptive_field_gives_the_cached_output():
    cfg = small(n_layers=2, window=8)
    model = randomised(cfg)
    items, topics, feedback = streams(length=60)
    cached, _ = served(model, items, topics, feedback)
    with torch.no_grad():
        again = torch.stack([recompute_request(model, items, topics, feedback, t)
                             for t in range(60)], dim=1)
    assert (again - cached).abs().max() < 1e-10


def test_the_recomputation_breaks_when_the_window_is_ignored():
    # the exactness test can fail: a different window gives different outputs
    cfg = small(n_layers=2, window=8)
    model = randomised(cfg)
    items, topics, feedback = streams(length=40)
    cached, _ = served(model, items, topics, feedback)
    wider = MARM(small(n_layers=2, window=16))
    wider.load_state_dict({k: v if "recency" not in k else torch.cat(
        [v, v[:, -1:].repeat(1, 8)], dim=1) for k, v in model.state_dict().items()})
    with torch.no_grad():
        full, _ = wider.double().recompute(items, topics, feedback)
    assert (cached - full).abs().max() > 1e-3


def test_layer0_history_ignores_the_deeper_cached_states():
    cfg = small(n_layers=2, window=16,
                     history="layer0")
    model = randomised(cfg)
    items, topics, feedback = streams(length=50)
    cached, cache = served(model, items, topics, feedback)
    cache.values[:, :, 1] = 1e3  # whatever the deeper slots hold, layer0 never reads them
    full = recomputed(model, items, topics, feedback)
    assert (cached - full).abs().max() < 1e-10


def test_a_cache_miss_falls_back_to_the_embedding_and_is_counted():
    cfg = small(n_layers=2, window=4)
    model = randomised(cfg)
    items, topics, feedback = streams(users=2, length=10)
    cache = ExposureCache.for_model(model, 2, 10, torch.float64)
    users = torch.arange(2)
    with torch.no_grad():
        for t in range(5):
            request(model, cache, items, topics, feedback, users, t)
        cache.written_at[0, 3] = -1  # user 0's exposure 3 was never stored
        request(model, cache, items, topics, feedback, users, 5)
    assert cache.misses == 1 and 0 < cache.miss_rate < 1


def test_the_cache_refuses_to_read_a_slot_written_later():
    cfg = small(n_layers=2, window=8)
    model = randomised(cfg)
    items, topics, feedback = streams(users=2, length=30)
    cache = ExposureCache.for_model(model, 2, 30, torch.float64)
    users = torch.arange(2)
    with torch.no_grad():
        _, states = request(model, cache, items, topics, feedback, users, 20)
        # a replay stores exposure 20 again, at time 30: a request at time 25 must not see it
        cache.write(users, torch.full((2,), 20), model.to_cache(states), torch.full((2,), 30))
        refused(lambda: request(model, cache, items, topics, feedback, users, 25),
                "cache", "exposure 20", "written at time 30", "time order")


def test_cached_states_are_constants():
    cfg = small(n_layers=2, window=8)
    model = MARM(cfg)
    items, topics, feedback = streams(users=2, length=12)
    cache = ExposureCache.for_model(model, 2, 12)
    users = torch.arange(2)
    for t in range(12):
        logits, _ = request(model, cache, items, topics, feedback, users, t)
    assert not cache.values.requires_grad
    logits.sum().backward()  # only the last request's own path carries gradients
    assert model.layers[1].query.weight.grad is not None


@pytest.mark.parametrize("changes,name", [({"d_model": 30, "n_heads": 4}, "divisible"),
                                          ({"n_layers": 0}, "n_layers"),
                                          ({"window": 0}, "window"),
                                          ({"cache": "keys"}, "cache"),
                                          ({"history": "none"}, "history"),
                                          ({"cache": "kv", "history": "layer0"}, "layer-0")])
def test_bad_configurations_are_refused(changes, name):
    refused(lambda: MARMConfig(n_items=40, n_topics=5, **changes), name)


def test_cached_cost_grows_like_n_and_recomputation_like_n_squared():
    windows = [32, 64, 128, 256]
    cached = [serving_flops(MARMConfig(50, 5, window=n), "cached")["attention"]
              for n in windows]
    full = [serving_flops(MARMConfig(50, 5, window=n), "recompute")["attention"]
            for n in windows]
    assert 0.9 < scaling_exponent(windows, cached) < 1.1
    assert 1.9 < scaling_exponent(windows, full) < 2.1
    at256 = (serving_flops(MARMConfig(50, 5, window=256), "recompute"),
             serving_flops(MARMConfig(50, 5, window=256), "cached"))
    assert at256[0]["attention"] > 5 * at256[1]["attention"]
    assert at256[0]["total"] > at256[1]["total"] > at256[1]["attention"]


def test_kv_caching_saves_the_projections_of_the_history():
    hidden = serving_flops(MARMConfig(50, 5, window=128), "cached")
    kv = serving_flops(MARMConfig(50, 5, window=128, cache="kv"), "cached")
    assert kv["attention"] == hidden["attention"] and kv["total"] < hidden["total"]


def one_layer_view(data) -> np.ndarray:
    """[U, T] what one attention layer can read: the share of the window's exposures of the
    candidate's topic that were themselves clicked (not their predecessors)."""
    U, T = data.clicks.shape
    W = data.cfg.hop_window
    view = np.zeros((U, T))
    for t in range(2, T):
        matched = data.topics[:, max(0, t - W) + 1:t] == data.topics[:, t:t + 1]
        clicked = (data.clicks[:, max(0, t - W) + 1:t] * matched).sum(1)
        view[:, t] = clicked / np.maximum(matched.sum(1), 1)
    return view


def test_the_streams_carry_a_two_hop_pattern_that_one_hop_barely_sees():
    data = make_exposures(ExposureConfig(n_users=300, length=150))
    assert data.items.min() >= 1 and data.topics.max() < data.cfg.n_topics
    assert abs(data.clicks.mean() - data.cfg.click_rate) < 0.01  # the calibration holds
    clicks = data.clicks.ravel()
    two_hop_auc = auc(clicks, data.two_hop.ravel())
    assert two_hop_auc > 0.7  # the pattern drives the clicks
    assert auc(clicks, one_layer_view(data).ravel()) < two_hop_auc - 0.1
    assert (data.long_views <= data.clicks).all()
    again = make_exposures(ExposureConfig(n_users=300, length=150))
    assert np.array_equal(again.clicks, data.clicks)  # deterministic under the seed
    assert data.period("train").stop == data.period("valid").start


def test_the_cache_refuses_users_and_positions_outside_it():
    cache = ExposureCache(2, 10, 2, 4)
    refused(lambda: cache.read(torch.tensor([2]), torch.tensor([3]), 4, torch.tensor([3])),
            "users", "[0, 2)")
    refused(lambda: cache.read(torch.tensor([0]), torch.tensor([10]), 4, torch.tensor([10])),
            "positions", "[0, 10)")
    refused(lambda: ExposureCache(0, 10, 2, 4), "ExposureCache.n_users")


def test_a_kv_cache_miss_gives_what_a_hidden_cache_miss_gives():
    outputs = []
    for kind in ("hidden", "kv"):
        model = randomised(small(n_layers=2,
                                      window=4, cache=kind))
        items, topics, feedback = streams(users=2, length=10)
        cache = ExposureCache.for_model(model, 2, 10, torch.float64)
        users = torch.arange(2)
        with torch.no_grad():
            for t in range(5):
                request(model, cache, items, topics, feedback, users, t)
            cache.written_at[:, 3] = -1
            outputs.append(request(model, cache, items, topics, feedback, users, 5)[0])
    assert (outputs[0] - outputs[1]).abs().max() < 1e-10


def test_detached_memory_keeps_the_values_and_blocks_gradients_into_the_past():
    model = randomised(small(n_layers=2, window=8), dtype=torch.float32)
    items, topics, feedback = streams(users=2, length=20)
    plain, _ = model.recompute(items, topics, feedback)
    detached, _ = model.recompute(items, topics, feedback, detach_memory=True)
    assert torch.equal(plain, detached)  # the forward pass is the same computation
    # the last position's loss: with detached memory the embeddings of the earlier items
    # get gradient only through their own path, which the last position does not use
    for detach, expect_past_gradient in ((False, True), (True, False)):
        model.zero_grad()
        logits, _ = model.recompute(items, topics, feedback, detach_memory=detach)
        logits[:, -1].sum().backward()
        grad = model.item_embedding.weight.grad
        past_only = set(items[:, :-1].flatten().tolist()) - set(items[:, -1].tolist())
        reached = any(float(grad[i].abs().sum()) > 0 for i in past_only)
        assert reached == expect_past_gradient


def test_a_cold_cache_counts_its_misses_and_a_warm_one_has_none():
    from recfunnel.recipes.marm import stream_logits

    data = make_exposures(ExposureConfig(n_users=20, n_items=100, n_topics=4, length=40))
    model = MARM(MARMConfig(data.cfg.n_items + 1, data.cfg.n_topics, d_model=8, window=4))
    warm = ExposureCache.for_model(model, data.n_users, data.length)
    full = stream_logits(model, data, cache=warm)
    assert warm.miss_rate == 0
    cold = ExposureCache.for_model(model, data.n_users, data.length)
    late = stream_logits(model, data, start=30, cache=cold)
    # the first 4 requests from position 30 miss 4, 3, 2, 1 of their 4 predecessors
    assert cold.miss_rate == pytest.approx(10 / (10 * 4))
    assert (late[:, :30] == 0).all()
    np.testing.assert_allclose(late[:, 34:], full[:, 34:], atol=1e-6)  # refilled
    assert not np.allclose(late[:, 30], full[:, 30])  # the fallback differs


def test_top_k_search_keeps_the_cache_exact_and_attends_to_k_keys_only():
    items, topics, feedback = streams(users=2, length=40)
    full = randomised(small(n_layers=2, window=8))
    same = randomised(small(n_layers=2, window=8, top_k=8))
    torch.testing.assert_close(recomputed(full, items, topics, feedback),
                               recomputed(same, items, topics, feedback), rtol=0, atol=0)
    searched = randomised(small(n_layers=2, window=8, top_k=3))
    logits, _ = served(searched, items, topics, feedback)
    assert (logits - recomputed(searched, items, topics, feedback)).abs().max() < 1e-10
    assert (logits - recomputed(full, items, topics, feedback)).abs().max() > 1e-3
    # one query, five keys: top_k = 1 returns exactly the best key's value
    from recfunnel.models.marm import masked_attention

    q, k, v = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    allowed = torch.ones(1, 1, 1, 5, dtype=torch.bool)
    best = int((q @ k.transpose(-2, -1)).argmax())
    torch.testing.assert_close(masked_attention(q, k, v, allowed, top_k=1)[0, 0, 0],
                               v[0, 0, best])
    refused(lambda: small(window=8, top_k=9), "MARMConfig.top_k", "window")
    refused(lambda: small(window=8, top_k=0), "MARMConfig.top_k")


def test_kuairand_impressions_become_time_ordered_exposure_streams(tmp_path):
    from real_formats import write_kuairand

    from recfunnel.data.exposures import exposures_from_impressions
    from recfunnel.data.kuairand import read_kuairand

    write_kuairand(tmp_path)
    log = read_kuairand(tmp_path)
    data = exposures_from_impressions(log, length=12)
    counts = np.bincount(log.users)
    assert data.n_users == (counts >= 12).sum() and data.length == 12
    # each stream is its user's last 12 impressions, in time order
    user = int(np.flatnonzero(counts >= 12)[0])
    rows = np.flatnonzero(log.users == user)[-12:]
    video = log.features[:, log.fields.index("video_id")]
    assert np.array_equal(data.items[0], video[rows] + 1)
    assert np.array_equal(data.clicks[0], log.labels[rows, log.tasks.index("click")])
    assert (data.long_views <= data.clicks).all() and np.isnan(data.truth).all()
    assert data.period("test").stop == 12
    refused(lambda: exposures_from_impressions(log, length=10_000), "length",
            "no user has 10000")
    refused(lambda: exposures_from_impressions(log, length=12, topic_field="genre"),
            "no field 'genre'")
