"""Bad vectors, queries and exclusions for nearest-neighbour search: both backends refuse
the same inputs with the same message, and never return an excluded item."""

import pytest
import torch
from refusals import refused

from recfunnel.retrieval import ExactIndex, build_index

BACKENDS = ["exact", "faiss"]


def items(v=20, d=4):
    return torch.randn(v, d, generator=torch.Generator().manual_seed(0))


def with_value(tensor, row, value):
    tensor = tensor.clone()
    tensor[row, 1] = value
    return tensor


INDEX_CASES = {
    "a NaN item vector": (lambda: with_value(items(), 7, float("nan")), {}, ("item_vecs",
                                                                            "row 7")),
    "an infinite item vector": (lambda: with_value(items(), 3, float("inf")), {},
                                ("item_vecs", "row 3")),
    "1-D item vectors": (lambda: torch.randn(20), {}, ("item_vecs", "[V, D]")),
    "no items": (lambda: torch.randn(0, 4), {}, ("item_vecs", "V >= 1")),
    "not a tensor": (lambda: [[0.0, 1.0]], {}, ("item_vecs",)),
    "an unknown metric": (items, {"metric": "l2"}, ("metric", "'l2'")),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", INDEX_CASES)
def test_building_an_index_refuses(case, backend):
    make, kwargs, names = INDEX_CASES[case]
    refused(lambda: build_index(make(), backend, **kwargs), *names)


def exclude_all_but(n_allowed, rows=3, v=20):
    mask = torch.ones(rows, v, dtype=torch.bool)
    mask[:, :n_allowed] = False
    mask[0] = False  # the first row allows everything
    return mask


SEARCH_CASES = {
    "a NaN query": (lambda: with_value(torch.randn(3, 4), 2, float("nan")), 5, None,
                    ("queries", "row 2")),
    "a query of the wrong width": (lambda: torch.randn(3, 5), 5, None, ("queries", "D=4")),
    "a 4-D query": (lambda: torch.randn(3, 2, 2, 4), 5, None, ("queries",)),
    "k = 0": (lambda: torch.randn(3, 4), 0, None, ("k", "at least 1")),
    "k fractional": (lambda: torch.randn(3, 4), 2.5, None, ("k", "integer")),
    "k above the catalogue": (lambda: torch.randn(3, 4), 21, None, ("k", "[1, 20]")),
    "k above the allowed items": (lambda: torch.randn(3, 4), 5, exclude_all_but(3),
                                  ("exclude", "row 1", "only 3 items")),
    "an exclusion of the wrong shape": (lambda: torch.randn(3, 4), 5,
                                        torch.zeros(3, 19, dtype=torch.bool), ("exclude",
                                                                               "[3, 20]")),
    "an exclusion of integers": (lambda: torch.randn(3, 4), 5,
                                 torch.zeros(3, 20, dtype=torch.long), ("exclude",
                                                                        "BoolTensor")),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SEARCH_CASES)
def test_searching_refuses(case, backend):
    make, k, exclude, names = SEARCH_CASES[case]
    index = build_index(items(), backend)
    refused(lambda: index.search(make(), k, exclude=exclude), *names)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_queries_give_empty_results(backend):
    scores, ids = build_index(items(), backend).search(torch.randn(0, 4), 5)
    assert scores.shape == (0, 5) and ids.shape == (0, 5) and ids.dtype == torch.long


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_excluded_item_is_never_returned_when_k_equals_the_allowed(backend):
    exclude = exclude_all_but(5)
    _, ids = build_index(items(), backend).search(torch.randn(3, 2, 4), 5, exclude=exclude)
    assert not exclude.gather(1, ids).any()


def test_the_two_backends_agree_on_a_vector_that_was_refused_before():
    # before: ExactIndex returned a NaN item first for every query and FAISS never did
    bad = with_value(items(), 7, float("nan"))
    messages = set()
    for backend in BACKENDS:
        messages.add(str(refused(lambda b=backend: build_index(bad, b), "row 7")))
    assert len(messages) == 1


def test_an_unknown_backend_is_named():
    refused(lambda: build_index(items(), "annoy"), "backend", "'annoy'")


def test_cosine_of_a_zero_vector_is_allowed_and_scores_zero():
    vectors = items()
    vectors[4] = 0.0
    scores, ids = ExactIndex(vectors, metric="cosine").search(torch.randn(2, 4), 20)
    assert torch.isfinite(scores).all() and scores[ids == 4].abs().max() == 0
