"""Bad scores, targets, ranks and gaps for the metrics and the verdict rule: refused naming
what is wrong, never a metric computed on a NaN or a verdict drawn from one."""

import math

import numpy as np
import pytest
import torch
from refusals import refused

from recfunnel import metrics
from recfunnel.study import Gap, Verdict, paired_gap, seed_gap


def scores(b=4, v=30):
    return torch.randn(b, v, generator=torch.Generator().manual_seed(0))


def with_value(tensor, row, col, value):
    tensor = tensor.clone()
    tensor[row, col] = value
    return tensor


TARGETS = torch.tensor([1, 2, 3, 4])

RANKING_CASES = {
    "a NaN score": (lambda: dict(scores=with_value(scores(), 2, 5, math.nan), targets=TARGETS),
                    ("scores", "row 2", "NaN")),
    "float relevance of 0.3": (lambda: dict(scores=scores(), targets=torch.full((4, 30), 0.3)),
                               ("targets", "0 or 1", "row 0")),
    "relevance of 2": (lambda: dict(scores=scores(), targets=with_value(
        torch.zeros(4, 30, dtype=torch.long), 3, 1, 2)), ("targets", "row 3")),
    "a negative seen id": (lambda: dict(scores=scores(), targets=TARGETS,
                                        seen=[[0], [5, -1], [], []]), ("seen[1]", "-1")),
    "a seen id beyond the items": (lambda: dict(scores=scores(), targets=TARGETS,
                                                seen=[[0], [], [30], []]), ("seen[2]", "30")),
    "a fractional seen id": (lambda: dict(scores=scores(), targets=TARGETS,
                                          seen=[[0.5], [], [], []]), ("seen[0]", "whole")),
    "a seen mask of the wrong shape": (lambda: dict(scores=scores(), targets=TARGETS,
                                                    seen=torch.zeros(4, 9, dtype=torch.bool)),
                                       ("seen mask",)),
    "no rows": (lambda: dict(scores=torch.zeros(0, 10), targets=torch.zeros(0, dtype=torch.long)),
                ("scores", "no rows")),
    "1-D scores": (lambda: dict(scores=torch.randn(10), targets=TARGETS), ("scores", "[B, V]")),
    "scores as a list": (lambda: dict(scores=[[0.1, 0.2]], targets=TARGETS), ("scores",)),
    "K = 0": (lambda: dict(scores=scores(), targets=TARGETS, ks=(0, 10)), ("ks",)),
    "no K": (lambda: dict(scores=scores(), targets=TARGETS, ks=()), ("ks",)),
    "K above the items": (lambda: dict(scores=scores(), targets=TARGETS, ks=(31,)), ("K",)),
    "fewer targets than rows": (lambda: dict(scores=scores(), targets=TARGETS[:3]),
                                ("targets", "3 rows")),
    "float target ids": (lambda: dict(scores=scores(), targets=TARGETS.float()),
                         ("target ids must be integers",)),
    "a row without a relevant item": (lambda: dict(scores=scores(), targets=torch.zeros(
        4, 30, dtype=torch.bool)), ("row 0", "no relevant")),
}


@pytest.mark.parametrize("case", RANKING_CASES)
def test_ranking_metrics_refuse(case):
    make, names = RANKING_CASES[case]
    refused(lambda: metrics.ranking_metrics(**make()), *names)


def test_minus_infinity_still_masks_an_item():
    masked = with_value(scores(), 0, 1, -math.inf)
    out = metrics.ranking_metrics(masked, TARGETS, ks=(30,), reduce=False)
    assert out["hr@30"][0] == 1.0  # ranked last, still inside the top 30 of 30


def test_a_target_id_out_of_range_is_named():
    with pytest.raises(IndexError, match=r"\[0, 30\)"):
        metrics.ranking_metrics(scores(), torch.tensor([1, 2, 3, 30]))


@pytest.mark.parametrize("ranks,names", [([1, float("nan"), 3], ("ranks", "row 1")),
                                         ([1, 2.5], ("ranks", "whole")),
                                         ([1, -2], ("ranks", "row 1")),
                                         ([[1, 2]], ("ranks", "1-D")),
                                         (["1", "2"], ("ranks", "integers"))])
def test_metrics_from_ranks_refuse(ranks, names):
    refused(lambda: metrics.metrics_from_ranks(ranks, ks=(10,)), *names)


def test_evaluate_ranking_refuses_no_users_and_a_zero_batch():
    def score_fn(users):
        return torch.zeros(len(users), 10)
    refused(lambda: metrics.evaluate_ranking(score_fn, torch.zeros(0, dtype=torch.long),
                                             torch.zeros(0, dtype=torch.long)), "user_ids")
    refused(lambda: metrics.evaluate_ranking(score_fn, torch.arange(3), torch.arange(3),
                                             batch_size=0), "batch_size")


CLASSIFICATION_CASES = {
    "AUC on a NaN score": (lambda: metrics.auc([0, 1, 1], [0.1, math.nan, 0.3]),
                           ("scores", "NaN")),
    "AUC on a label of 0.5": (lambda: metrics.auc([0, 0.5, 1], [0.1, 0.2, 0.3]),
                              ("labels", "0 or 1")),
    "AUC on one class": (lambda: metrics.auc([1, 1], [0.1, 0.2]), ("positive", "negative")),
    "AUC on no rows": (lambda: metrics.auc([], []), ("AUC",)),
    "AUC on unequal lengths": (lambda: metrics.auc([0, 1], [0.1]), ("2 labels", "1 scores")),
    "GAUC on unequal lengths": (lambda: metrics.gauc([0, 1], [0.1, 0.2], [1]), ("lengths",)),
    "GAUC with no mixed group": (lambda: metrics.gauc([0, 1], [0.1, 0.2], [1, 2]),
                                 ("GAUC",)),
    "log-loss on a probability of 1.5": (lambda: metrics.log_loss([0, 1], [0.2, 1.5]),
                                         ("probs", "[0, 1]")),
    "log-loss on NaN": (lambda: metrics.log_loss([0, 1], [0.2, math.nan]), ("probs",)),
    "a probe on NaN features": (lambda: metrics.linear_probe(
        torch.tensor([[0.0], [math.nan], [1.0], [2.0]]), [0, 1, 0, 1], folds=2),
        ("features", "row 1")),
    "a probe on negative labels": (lambda: metrics.linear_probe(
        torch.randn(6, 2), [0, 1, -1, 0, 1, 0], folds=2), ("labels", "row 2")),
    "purity on negative labels": (lambda: metrics.cluster_purity([0, 0, 1], [1, -1, 0]),
                                  ("labels", "row 1")),
    "purity on unequal lengths": (lambda: metrics.cluster_purity([0, 1], [1]),
                                  ("clusters and labels",)),
    "a paired difference of one row": (lambda: metrics.paired_difference([1.0], [0.5]),
                                       ("two",)),
}


@pytest.mark.parametrize("case", CLASSIFICATION_CASES)
def test_classification_and_diversity_metrics_refuse(case):
    call, names = CLASSIFICATION_CASES[case]
    refused(call, *names)


# --------------------------------------------------------------------------- gaps, verdicts


def gap(mean=0.01, se=0.002):
    return Gap("a", "b", "ndcg@10", mean, se, n_users=100)


VERDICT_CASES = {
    "better on a NaN gap": (lambda: Verdict.better("a beats b", gap(mean=math.nan)),
                            ("'a beats b'", "nan")),
    "better on an infinite gap": (lambda: Verdict.better("c", gap(mean=math.inf)), ("'c'",)),
    "better with a NaN threshold": (lambda: Verdict.better("c", gap(), threshold=math.nan),
                                    ("threshold",)),
    "better with a negative error": (lambda: Verdict.better("c", gap(se=-0.1)),
                                     ("standard error",)),
    "better on no gap": (lambda: Verdict.better("c", 0.01), ("'c'", "Gap")),
    "not worse on a NaN gap": (lambda: Verdict.not_worse("c", gap(mean=math.nan), 0.01),
                               ("'c'",)),
    "not worse with margin 0": (lambda: Verdict.not_worse("c", gap(), 0.0), ("margin",)),
    "not worse with a NaN margin": (lambda: Verdict.not_worse("c", gap(), math.nan),
                                    ("margin",)),
    "not worse with an infinite margin": (lambda: Verdict.not_worse("c", gap(), math.inf),
                                          ("margin",)),
    "a paired gap with a NaN user": (lambda: paired_gap([0.1, math.nan, 0.3], [0.1, 0.2, 0.3],
                                                        a="x", b="y"), ("'x'", "row 1")),
    "a paired gap of unequal shapes": (lambda: paired_gap([0.1, 0.2], [0.1, 0.2, 0.3]),
                                       ("equal shapes",)),
    "a paired gap of one user": (lambda: paired_gap([0.1], [0.2]), ("two users",)),
    "a seed gap with a NaN seed": (lambda: seed_gap([0.1, math.nan], [0.1, 0.2], b="base"),
                                   ("'a'", "row 1")),
    "a seed gap of no seeds": (lambda: seed_gap([], []), ("one value per seed",)),
    "a composite of nothing": (lambda: Verdict.all_of("c", []), ("at least one part",)),
}


@pytest.mark.parametrize("case", VERDICT_CASES)
def test_the_verdict_rule_refuses(case):
    call, names = VERDICT_CASES[case]
    refused(call, *names)


def test_a_gap_whose_noise_was_not_measured_is_not_resolved():
    # documented behaviour: NaN standard error means "noise not measured", not an error
    assert Verdict.better("c", gap(se=math.nan)).text == "not resolved"


def test_the_verdict_rule_still_judges_sound_gaps():
    assert Verdict.better("c", gap(0.01, 0.002)).text == "held"
    assert Verdict.better("c", gap(-0.01, 0.002)).text == "did not hold"
    assert Verdict.better("c", gap(0.001, 0.002)).text == "not resolved"


def test_chunked_next_item_metrics_equal_the_whole_matrix():
    from recfunnel.data.sequences import SeqBatch, next_item_metrics

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(50, 30))

        def score_all(self, batch):
            return self.table[batch.user_ids]

    users = torch.arange(50)
    batch = SeqBatch(users, torch.ones(50, 4, dtype=torch.long),
                     torch.zeros(50, 4, dtype=torch.bool), users % 29 + 1)
    model = Scorer()
    whole = metrics.ranking_metrics(model.table.detach(), batch.target_ids, ks=(5, 10),
                                    reduce=False)
    for chunk in (1, 7, 50, 64):
        parts = next_item_metrics(model, batch, ks=(5, 10), chunk=chunk, reduce=False)
        for name, values in whole.items():
            assert torch.equal(parts[name], values)
    refused(lambda: next_item_metrics(model, batch, chunk=0), "chunk")
    assert np.isclose(next_item_metrics(model, batch, ks=(10,))["ndcg@10"],
                      whole["ndcg@10"].mean().item())
