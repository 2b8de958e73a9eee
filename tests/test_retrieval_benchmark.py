"""The retrieval benchmark's shared recipe: ranks, training under a budget, the report's
table and the goal verdicts (``recipes.retrieval``)."""

import numpy as np
import pandas as pd
import pytest
import torch

from recfunnel.data.sequences import SequentialSplit, next_item_metrics
from recfunnel.metrics import metrics_from_ranks
from recfunnel.recipes import retrieval
from recfunnel.study import Outcome


def tiny_splits(n_users=40, n_items=30, length=20, seed=0) -> retrieval.Splits:
    """Users who walk a cycle of items from a random start: learnable next items."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        start = rng.integers(n_items)
        for t in range(length):
            item = 1 + (start + t) % n_items
            rows.append((user, item, float(1 + rng.integers(5)), t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    for column, buckets in zip(retrieval.SIDE_COLUMNS, (5, 3, 2), strict=True):
        frame[column] = 1 + frame["item_id"] % buckets
    return retrieval.Splits("tiny", SequentialSplit(frame, max_len=50),
                            SequentialSplit(frame, max_len=retrieval.KF_WINDOW,
                                            feature_columns=retrieval.SIDE_COLUMNS),
                            (6, 4, 3), frame)


@pytest.mark.parametrize("name", ["SASRec", "KuaiFormer k=4, full softmax", "ELASTIC"])
def test_trained_contenders_rank_targets_as_the_metrics_do(name):
    splits = tiny_splits()
    trained = retrieval.train(name, splits, seed=0, budget=60, epochs=2, progress=False)
    assert len(trained.history.epochs) <= 2 and trained.ranks.shape == (40,)
    split = splits.featured if name.startswith("KuaiFormer") else splits.plain
    expected = next_item_metrics(trained.model, split.eval_batch("test"), ks=(10,),
                                 reduce=False)["ndcg@10"].numpy()
    from_ranks = metrics_from_ranks(np.where(trained.ranks <= 10, trained.ranks, 0), [10])
    np.testing.assert_allclose(from_ranks["ndcg@10"], expected, atol=1e-6)
    assert trained.ranks.min() >= 1 and trained.ranks.max() <= split.n_items - 1


def test_ranks_count_ties_against_the_target():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def score_all(self, batch):
            scores = torch.tensor([[-float("inf"), 3.0, 1.0, 1.0, 0.5]]).repeat(len(batch), 1)
            return scores + self.w

    batch = tiny_splits(n_items=4).plain.eval_batch("test")[:3]
    ranks = retrieval.target_ranks(Fixed(), batch)
    by_target = {1: 1, 2: 3, 3: 3, 4: 4}  # items 2 and 3 tie: both count as rank 3
    assert ranks.tolist() == [by_target[int(t)] for t in batch.target_ids]


def report_of(ranks: dict[str, np.ndarray]) -> dict:
    return {"runs": [{"model": model, "dataset": "ml-1m", "seed": 0, "epochs": 3,
                      "budget_seconds": 600, "wall_seconds": 500.0, "test_ranks": r.tolist()}
                     for model, r in ranks.items()]}


def test_the_goal_needs_a_significant_five_percent_lead_over_the_best_peer():
    rng = np.random.default_rng(0)
    peer = rng.integers(1, 40, 6_000)
    weak_peer = peer + 30
    far_ahead = np.where(rng.random(6_000) < 0.3, 1, peer)  # many targets moved to rank 1
    level = peer.copy()
    report = report_of({"RecBole GRU4Rec": peer, "RecBole SASRec": weak_peer,
                        "DimeRec": far_ahead, "ELASTIC": level})
    assert retrieval.best_peer(report, "ml-1m") == "RecBole GRU4Rec"
    verdicts = retrieval.goal_verdicts(report)
    assert verdicts["DimeRec"].outcome is Outcome.HELD
    assert verdicts["ELASTIC"].outcome is not Outcome.HELD  # level is not 5 % ahead
    frame = retrieval.table(report, "ml-1m")
    assert list(frame.index) == ["RecBole GRU4Rec", "RecBole SASRec", "ELASTIC", "DimeRec"]
    assert frame.loc["ELASTIC", "ndcg@10"] == pytest.approx(frame.loc["RecBole GRU4Rec",
                                                                      "ndcg@10"])
    assert retrieval.goal_verdicts(report_of({"DimeRec": far_ahead})) == {}  # no peer ran


def test_the_catalogue_verdicts_say_where_each_softmax_stands():
    from recfunnel.recipes.kuaiformer import catalogue_verdicts

    rng = np.random.default_rng(1)
    base = rng.random(2_000) * 0.2
    record = {"400": {"in_batch": {"ndcg@10": (base * 0.7).tolist(), "seconds": 1.0},
                      "full": {"ndcg@10": base.tolist(), "seconds": 2.0}},
              "25600": {"in_batch": {"ndcg@10": base.tolist(), "seconds": 1.0},
                        "full": {"ndcg@10": (base + rng.normal(0, 1e-3, 2_000)).tolist(),
                                 "seconds": 9.0}}}
    table, wins, level = catalogue_verdicts(record)
    assert list(table.index) == [400, 25600]
    assert wins[400].outcome is Outcome.HELD and level[400].outcome is Outcome.NOT_HELD
    assert wins[25600].outcome is not Outcome.HELD
    assert level[25600].outcome is Outcome.NOT_WORSE
    assert table.loc[400, "full - in-batch"] == pytest.approx(0.3 * base.mean())


def test_the_chapters_say_how_the_best_peer_stopped_and_n_a_without_a_report():
    rng = np.random.default_rng(2)
    report = report_of({"RecBole GRU4Rec": rng.integers(1, 40, 500),
                        "ELASTIC": rng.integers(1, 40, 500)})
    report["runs"][0]["stopped_by_budget"] = True
    assert "stopped by the budget after 3 epochs" in retrieval.peer_training(report)
    report["runs"][0]["stopped_by_budget"] = False
    assert "stopped early after 3 epochs" in retrieval.peer_training(report)
    values = retrieval.chapter_values(report, "ELASTIC")
    assert values["peer"] == "RecBole GRU4Rec" and values["goal"] in ("did not hold",
                                                                       "not resolved")
    assert values["seeds"] == "1 seed" and values["users"] == "500"
    assert set(retrieval.chapter_values(report, "ELASTIC", "ml-100k").values()) == {"n/a"}
    assert set(retrieval.chapter_values(None, "ELASTIC").values()) == {"n/a"}


def test_still_rising_names_the_models_the_budget_stopped_at_their_best():
    report = report_of({"SASRec": np.arange(1, 50), "ELASTIC": np.arange(1, 50)})
    report["runs"][0].update(stopped_by_budget=True, valid_curve=[(1, 0.1), (2, 0.2)])
    report["runs"][1].update(stopped_by_budget=True, valid_curve=[(1, 0.3), (2, 0.2)])
    assert retrieval.still_rising(report) == ["SASRec"]
    report["runs"][0]["stopped_by_budget"] = False  # early stopping: not cut short
    assert retrieval.still_rising(report) == []
