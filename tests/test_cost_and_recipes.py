"""The cost counters, KuaiFormer's cost model and logQ switch, and the recipes' readers of
committed benchmark reports."""

import math

import pytest
import torch
from torch import nn

from recfunnel.cost import attention_map_gib, count_flops, scaling_exponent
from recfunnel.data.sequences import SeqBatch
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.recipes.dimerec import seed_verdicts
from recfunnel.recipes.kuaiformer import PEER_KEYS, peer_summary
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
    assert values["recbole_epoch_s"] == 10 and values["seeds"] == 2
    assert "after 12 s" in values["reached"] and values["commit"].startswith("not recorded")
    assert len(table) == 7


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
