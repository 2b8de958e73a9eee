"""Metrics against hand-computed cases and against scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from recfunnel.metrics import auc, evaluate_ranking, gauc, log_loss, ranking_metrics


def test_single_target_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.2],  # target 3 ranked 3rd
                           [0.1, 0.9, 0.2, 0.3, 0.4]])  # target 0 ranked 5th
    out = ranking_metrics(scores, torch.tensor([3, 0]), ks=(2, 3, 5), reduce=False)
    torch.testing.assert_close(out["recall@2"], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(out["hr@3"], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out["ndcg@3"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(out["ndcg@5"], torch.tensor([0.5, 1 / math.log2(6)]))
    torch.testing.assert_close(out["mrr@5"], torch.tensor([1 / 3, 1 / 5]))


def test_multiple_targets_recall_and_ndcg_by_hand():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    relevant = torch.tensor([[False, True, False, True, True]])  # ranks 2, 4, 5
    out = ranking_metrics(scores, relevant, ks=(4,))
    assert out["recall@4"] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert out["ndcg@4"] == pytest.approx(dcg / ideal)
    assert out["mrr@4"] == pytest.approx(0.5)


def test_seen_items_are_removed_from_the_ranking():
    scores = torch.tensor([[0.9, 0.8, 0.1]])
    assert ranking_metrics(scores, torch.tensor([1]), ks=(1,))["hr@1"] == 0.0
    as_list = ranking_metrics(scores, torch.tensor([1]), ks=(1,), seen=[[0]])
    as_mask = ranking_metrics(scores, torch.tensor([1]), ks=(1,),
                              seen=torch.tensor([[True, False, False]]))
    assert as_list["hr@1"] == as_mask["hr@1"] == 1.0


def test_chunked_evaluation_equals_one_pass():
    torch.manual_seed(0)
    scores = torch.randn(50, 30)
    targets = torch.randint(0, 30, (50,))
    seen = [[(t.item() + 1) % 30] for t in targets]
    one_pass = ranking_metrics(scores, targets, ks=(5, 10), seen=seen)
    chunked = evaluate_ranking(lambda u: scores[u], torch.arange(50), targets, seen,
                               ks=(5, 10), batch_size=7)
    assert chunked == pytest.approx(one_pass)


def test_ranking_rejects_bad_input():
    with pytest.raises(IndexError, match="target ids"):
        ranking_metrics(torch.zeros(2, 4), torch.tensor([0, 4]), ks=(2,))
    with pytest.raises(ValueError, match="K must lie"):
        ranking_metrics(torch.zeros(2, 4), torch.tensor([0, 1]), ks=(5,))
    with pytest.raises(ValueError, match="row 1 has no relevant"):
        ranking_metrics(torch.zeros(2, 4), torch.tensor([[True] * 4, [False] * 4]), ks=(2,))


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + labels, 1)  # rounding makes many ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert auc(torch.tensor(labels), torch.tensor(scores)) == pytest.approx(
        roc_auc_score(labels, scores))


def test_auc_by_hand_and_errors():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one positive"):
        auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        auc([0, 2], [0.2, 0.3])


def test_gauc_weights_users_by_impressions_and_skips_one_class_users():
    labels = [1, 0, 1, 0, 0, 1, 1]
    scores = [0.9, 0.1, 0.2, 0.8, 0.3, 0.5, 0.6]
    users = [7, 7, 3, 3, 3, 9, 9]  # user 9 has only positives: no AUC
    user7 = 1.0
    user3 = roc_auc_score([1, 0, 0], [0.2, 0.8, 0.3])  # 0.0
    assert gauc(labels, scores, users) == pytest.approx((2 * user7 + 3 * user3) / 5)


def test_gauc_equals_auc_for_a_single_user():
    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 2, 100), rng.normal(size=100)
    assert gauc(labels, scores, np.zeros(100)) == pytest.approx(roc_auc_score(labels, scores))


def test_log_loss_matches_sklearn():
    rng = np.random.default_rng(2)
    labels, probs = rng.integers(0, 2, 200), rng.uniform(0.01, 0.99, 200)
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs))
    with pytest.raises(ValueError, match="sigmoid"):
        log_loss([0, 1], [-1.0, 2.0])


def test_paired_difference():
    from recfunnel.metrics import paired_difference

    gap, se = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 4.0])
    assert gap == pytest.approx(0.75) and se == pytest.approx(0.25)
    with pytest.raises(ValueError, match="1-D"):
        paired_difference([1.0], [2.0])


def test_neighbour_agreement_and_cluster_purity_on_known_layouts():
    from recfunnel.metrics import cluster_purity, neighbour_agreement

    # two tight pairs far apart: each point's nearest other shares its label
    vectors = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    assert neighbour_agreement(vectors, [0, 0, 1, 1]) == 1.0
    assert neighbour_agreement(vectors, [0, 1, 0, 1]) == 0.0  # never itself
    assert cluster_purity([0, 0, 0, 1], [2, 2, 3, 3]) == 0.75
    assert cluster_purity([5, 5, 7, 7], [1, 1, 0, 0]) == 1.0
