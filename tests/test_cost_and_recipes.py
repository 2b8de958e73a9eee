"""The cost counters, KuaiFormer's cost model and logQ switch, and the recipes' readers of
committed benchmark reports."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from recfunnel.cost import attention_map_gib, count_flops, scaling_exponent
from recfunnel.data.sequences import SeqBatch
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.recipes.dimerec import seed_verdicts
from recfunnel.recipes.kuaiformer import PEER_KEYS, peer_summary, peer_verdicts
from recfunnel.study import Outcome, Run


def test_scaling_exponent_recovers_a_power_law():
    lengths = [256, 1_024, 4_096]
    assert scaling_exponent(lengths, [3 * n ** 2 for n in lengths]) == pytest.approx(2.0)
    assert scaling_exponent(lengths, [5 * n for n in lengths]) == pytest.approx(1.0)


def test_count_flops_on_meta_counts_a_matmul_exactly():
    layer = nn.Linear(64, 32, bias=False).to("meta")
    flops = count_flops(layer, torch.empty(10, 64, device="meta"))
    assert flops == 2 * 10 * 64 * 32  # one multiply and one add per weight and row


def test_attention_map_gib_is_four_bytes_a_score():
    assert attention_map_gib(2**30 / 4, users=1, heads=1, layers=1) == pytest.approx(1.0)
    assert attention_map_gib(50 * 50) == pytest.approx(4 * 2_500 * 256 * 2 * 2 / 2**30)


def test_kuaiformer_attention_pairs_by_hand():
    cfg = KuaiFormerConfig(n_items=10, n_layers=2, n_interests=3, compression=((1, 4), (2, 2)),
                           n_raw=3)
    tokens = 1 + 2 + 3 + 3  # groups, raw items, query tokens
    assert cfg.attention_pairs == 2 * tokens * (tokens + 1) // 2 + 1 * 16 + 2 * 4


def test_the_log_q_switch_changes_the_loss_only_through_item_frequencies():
    torch.manual_seed(0)
    cfg = KuaiFormerConfig(n_items=12, d_model=8, d_ffn=16, n_interests=2,
                           compression=(), n_raw=4, p_dropout=0.0)
    seq = torch.randint(1, 12, (6, 4))
    batch = SeqBatch(torch.arange(6), seq, seq == 0, torch.tensor([1, 2, 3, 4, 5, 6]))
    with_q, without_q = KuaiFormer(cfg), KuaiFormer(
        KuaiFormerConfig(**{**cfg.__dict__, "log_q": False}))
    without_q.load_state_dict(with_q.state_dict())
    assert torch.allclose(with_q(batch), without_q(batch))  # log Q = 0 until counts are set
    counts = torch.arange(12, dtype=torch.float32) ** 2
    with_q.set_item_frequencies(counts)
    without_q.set_item_frequencies(counts)
    assert not torch.allclose(with_q(batch), without_q(batch))


def peer_report(seeds=(0, 1)):
    def run(model, seed, ndcg):
        return {"model": model, "seed": seed, "epochs": 10, "wall_seconds": 100.0,
                "best_valid_ndcg@10": ndcg, "test_ndcg@10": ndcg, "test_recall@10": 2 * ndcg}
    runs = [run("RecBole 1.2.1 SASRec", 0, 0.040)]
    for seed in seeds:
        runs += [run("recfunnel SASRec", seed, 0.042), run("recfunnel KuaiFormer k=1", seed, 0.030),
                 run("recfunnel KuaiFormer k=4", seed, 0.021)]
    runs[1]["seconds_to_recbole_best_valid"] = 12.0
    return {"seeds": list(seeds), "runs": runs}


def test_peer_summary_quotes_what_the_report_holds():
    table, values = peer_summary(peer_report())
    assert set(values) == set(PEER_KEYS)
    assert values["parity_pct"] == "+5.0"  # 0.042 / 0.040 - 1
    assert values["kf_vs_sasrec"] == f"{100 * (0.030 / 0.042 - 1):+.1f}"
    assert values["recbole_epoch_s"] == 10 and values["seeds"] == "2 seeds"
    assert "after 12 s" in values["reached"] and values["commit"].startswith("not recorded")
    assert len(table) == 7


def test_peer_summary_counts_only_the_sweep_setting_that_validation_chose():
    report = peer_report()
    sweep = [{**report["runs"][1], "dropout": p, "separate_output": False, "chosen": False,
              "test_ndcg@10": 0.100} for p in (0.1, 0.5)]  # not chosen: never counted
    for run in report["runs"][1:]:
        if run["model"] == "recfunnel SASRec":
            run.update(dropout=0.2, separate_output=False, chosen=True)
    report["runs"][2:2] = sweep
    table, values = peer_summary(report)
    assert values["parity_pct"] == "+5.0" and "after 12 s" in values["reached"]
    assert values["kf_vs_sasrec"] == f"{100 * (0.030 / 0.042 - 1):+.1f}"
    assert len(table) == 9 and "dropout 0.2 (chosen)" in table.index.get_level_values("setting")


def ranked_peer_report(our_ranks, reached):
    """RecBole (wall 900 s) and our SASRec on three seeds with per-user test ranks."""
    rng = np.random.default_rng(0)
    theirs = rng.integers(1, 30, 2_000)
    runs = [{"model": "RecBole 1.2.1 SASRec", "seed": 0, "wall_seconds": 900.0,
             "test_ranks": theirs.tolist()}]
    runs += [{"model": "recfunnel SASRec", "seed": seed, "chosen": True,
              "test_ranks": our_ranks(theirs, rng).tolist(),
              "seconds_to_recbole_best_valid": seconds} for seed, seconds in enumerate(reached)]
    return {"runs": runs}


def test_peer_verdicts_pair_users_and_time_our_sasrec_against_recbole():
    def same(theirs, rng):  # the same ranks but for a few users moved by one place
        return np.where(rng.random(len(theirs)) < 0.05, theirs + 1, theirs)

    verdicts = peer_verdicts(ranked_peer_report(same, reached=(300.0, 320.0, 280.0)))
    assert verdicts["parity"].outcome is Outcome.NOT_WORSE
    assert verdicts["parity"].gap.n_users == 2_000 and verdicts["parity"].gap.n_seeds == 3
    assert verdicts["speed"].outcome is Outcome.HELD  # 900 / ~300 = 3 > 2 on every seed

    def worse(theirs, rng):  # every target pushed 20 places down
        return theirs + 20

    slow = peer_verdicts(ranked_peer_report(worse, reached=(600.0, None, 700.0)))
    assert slow["parity"].outcome is Outcome.NOT_HELD
    assert slow["speed"].outcome is not Outcome.HELD  # a seed that never reached counts 0


def test_peer_verdicts_need_recbole_and_per_user_ranks():
    assert peer_verdicts(peer_report()) == {}  # an older report: aggregate metrics only
    report = ranked_peer_report(lambda theirs, rng: theirs, reached=(1.0, 1.0, 1.0))
    assert peer_verdicts({"runs": report["runs"][1:]}) == {}  # RecBole skipped


def test_seed_verdicts_judge_what_ran_and_say_what_did_not():
    runs = [Run(model="m", variant=variant, seed=seed, profile="cpu", config={},
                metrics={"recall@20": base + 0.01 * seed}, per_user={"recall@20": [base] * 50},
                commit="x", version="0")
            for seed in range(3) for variant, base in (("DimeRec", 0.5), ("SASRec", 0.2))]
    table, judged = seed_verdicts(runs, {"vs_sasrec": ("DimeRec", "SASRec", "recall@20"),
                                         "vs_absent": ("DimeRec", "ComiRec-SA", "recall@20")})
    gap, verdict = judged["vs_sasrec"]
    assert gap.mean == pytest.approx(0.3) and verdict.outcome is Outcome.HELD
    gap, verdict = judged["vs_absent"]
    assert gap is None and verdict.outcome is Outcome.NOT_RESOLVED and verdict.reason
    assert table.loc["DimeRec minus ComiRec-SA", "gap"] == "not run"
    assert math.isfinite(judged["vs_sasrec"][0].se)


def test_genre_matrix_and_first_genres_follow_the_item_table():
    import pandas as pd

    from recfunnel.data.movielens import MovieLens, first_genres, genre_matrix, genre_names

    items = pd.DataFrame({"item_id": [2, 1, 3], "title": ["b", "a", "c"],
                          "year": [1990, 1991, 1992],
                          "genres": [("Drama", "Action"), ("Comedy",), ()]})
    data = MovieLens("tiny", pd.DataFrame(columns=["user_id", "item_id"]), items)
    assert genre_names(data) == ["Action", "Comedy", "Drama"]
    matrix = genre_matrix(data, n_items=4)
    assert matrix.tolist() == [[False, False, False], [False, True, False],
                               [True, False, True], [False, False, False]]  # row 0: padding
    # in item-id order: item 1 Comedy, item 2 Drama (its first genre), item 3 none -> 0
    assert first_genres(data).tolist() == [1, 2, 0]


def _capacity(memory_size: int, n_experts: int, level: float, users: int = 400):
    import numpy as np

    from recfunnel.recipes.elastic import Capacity

    noise = np.random.default_rng(memory_size + n_experts).normal(0, 0.01, (3, users))
    return Capacity(memory_size, n_experts, level + noise, encoder_gflop=0.01)


def test_capacity_verdicts_test_the_declared_points_not_the_best():
    from recfunnel.recipes.elastic import capacity_curves, expert_verdict, memory_verdict

    settings = [_capacity(1024, k, level) for k, level in ((2, 0.20), (8, 0.25), (16, 0.30))]
    settings += [_capacity(0, 8, 0.22), _capacity(4096, 8, 0.27)]
    banks, experts = capacity_curves(settings, memory_size=1024, n_experts=8)
    assert [s.memory_size for s in banks] == [0, 1024, 4096]
    assert [s.n_experts for s in experts] == [2, 8, 16]
    assert memory_verdict(banks).outcome is Outcome.HELD  # 4096 slots vs none
    # the middle count rises above the smallest but the largest is 20 % better still:
    # "then saturate" fails, although k=16 is the best point
    verdict = expert_verdict(experts, margin=0.05)
    assert [part.outcome for part in verdict.parts] == [Outcome.HELD, Outcome.NOT_HELD]
    assert verdict.outcome is Outcome.NOT_HELD
    assert memory_verdict(banks[1:]).outcome is Outcome.NOT_RESOLVED  # no "no memory" run
    assert expert_verdict(experts[:2], 0.05).reason == "no expert sweep"


def test_home_seed_report_pairs_models_seed_by_seed():
    from recfunnel.recipes.home import seed_report
    from recfunnel.study import compare

    def row(model, seed, auc):
        tasks = {t: {"auc": auc + (0.01 if t == "like" else 0.0), "gauc": auc}
                 for t in ("click", "like")}
        return {"model": model, "seed": seed, "tasks": tasks, "diagnostics": {},
                "parameters": 1, "seconds": 1.0, "best_epoch": 1}

    rows = [row("MMoE", s, 0.70 + 0.01 * s) for s in range(3)]
    rows += [row("HoME", s, 0.71 + 0.01 * s + 0.0005 * s) for s in range(3)]
    report = seed_report(rows, sparse=("like",), profile="smoke")
    assert report.per_task("HoME", "auc").shape == (3, 2)
    gap = compare(report.runs, "HoME", "MMoE", "sparse AUC")
    assert gap.mean == pytest.approx(0.0105)  # paired: the seeds' common shift cancels
    assert gap.se < 0.001
    summary = report.summary(["sparse AUC"])
    assert summary.loc["MMoE", ("sparse AUC", "mean")] == pytest.approx(0.72)


def test_capacity_configs_change_one_thing_each():
    from recfunnel.profiles import profile_for
    from recfunnel.recipes.elastic import capacity_configs

    size = profile_for("elastic", "smoke")
    base, *others = capacity_configs(size, n_items=50, banks=[0, 4096], experts=[2])
    assert base.max_len == size.long_len and base.memory_size == size.memory_size
    changed = [[f for f in base.__dataclass_fields__ if getattr(base, f) != getattr(cfg, f)]
               for cfg in others]
    assert changed == [["memory_size"], ["memory_size"], ["n_experts"]]
    assert others[0].memory_size is None  # 0 slots: the ablation without the memory
    assert (others[1].memory_size, others[2].n_experts) == (4096, 2)
