"""The exact index, FAISS and the multi-interest rule return the same neighbours."""

import pytest
import torch

from recfunnel.retrieval import ExactIndex, build_index


@pytest.fixture
def vectors():
    torch.manual_seed(0)
    return torch.randn(500, 16), torch.randn(40, 16), torch.randn(40, 3, 16)


def test_exact_index_matches_brute_force(vectors):
    items, queries, _ = vectors
    scores, ids = ExactIndex(items, batch_size=7).search(queries, k=10)
    expected = (queries @ items.T).topk(10)
    torch.testing.assert_close(ids, expected.indices)
    torch.testing.assert_close(scores, expected.values)


def test_multi_interest_score_is_the_best_interest(vectors):
    items, _, interests = vectors
    scores, ids = ExactIndex(items).search(interests, k=10)
    best = torch.einsum("bkd,vd->bkv", interests, items).amax(dim=1)  # [B, V]
    torch.testing.assert_close(ids, best.topk(10).indices)


def test_exclusions_are_never_returned(vectors):
    items, queries, _ = vectors
    _, top = ExactIndex(items).search(queries, k=5)
    exclude = torch.zeros(40, 500, dtype=torch.bool)
    exclude[torch.arange(40)[:, None], top] = True  # forbid the first answers
    _, ids = ExactIndex(items).search(queries, k=5, exclude=exclude)
    assert not exclude.gather(1, ids).any()


@pytest.mark.parametrize("metric", ["ip", "cosine"])
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("with_exclusions", [False, True])
def test_faiss_returns_the_exact_neighbours(vectors, metric, multi, with_exclusions):
    pytest.importorskip("faiss")
    items, queries, interests = vectors
    q = interests if multi else queries
    exclude = None
    if with_exclusions:
        exclude = torch.rand(40, 500, generator=torch.Generator().manual_seed(1)) < 0.05
    exact = build_index(items, "exact", metric).search(q, k=20, exclude=exclude)
    approx = build_index(items, "faiss", metric).search(q, k=20, exclude=exclude)
    torch.testing.assert_close(approx[1], exact[1])
    torch.testing.assert_close(approx[0], exact[0], atol=1e-4, rtol=1e-4)


def test_bad_queries_are_named():
    index = ExactIndex(torch.randn(10, 4))
    with pytest.raises(ValueError, match="D=4"):
        index.search(torch.randn(3, 5), k=2)
    with pytest.raises(ValueError, match="k: must lie"):
        index.search(torch.randn(3, 4), k=11)
    with pytest.raises(ValueError, match="backend"):
        build_index(torch.randn(10, 4), backend="annoy")
