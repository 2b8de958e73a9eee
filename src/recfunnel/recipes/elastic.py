"""Chapter 3's experiments: ELASTIC at a profile's size, SASRec and KuaiFormer beside it on
MovieLens-100K, the returning-interest runs (which ``benchmarks/elastic_capacity.py``
repeats over seeds and capacities) and the readings of ``benchmarks/long_sequence.py``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from recfunnel.data.planted import ReturningInterests
from recfunnel.data.sequences import (
    SequentialSplit,
    WindowBatch,
    cut_points,
    next_item_metrics,
)
from recfunnel.layers.memory import slot_usage
from recfunnel.metrics import ranking_metrics
from recfunnel.models.baselines import SASRec
from recfunnel.models.elastic import (
    Elastic,
    ElasticConfig,
    encode_batches,
    encoder_gflop,
    expert_similarity,
)
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.profiles import ElasticSize
from recfunnel.recipes import NEXT_ITEM, fit_next_item, fit_recbole_sasrec
from recfunnel.recipes.kuaiformer import fit_kuaiformer
from recfunnel.runtime import set_seed
from recfunnel.study import Verdict, paired_gap
from recfunnel.train import History, TrainConfig, shuffled


def elastic_config(size: ElasticSize, n_items: int, max_len: int, **changes) -> ElasticConfig:
    """Chapter 3's ELASTIC at a profile's size (``changes``: a sweep's setting)."""
    base = ElasticConfig(n_items=n_items, max_len=max_len, d_model=size.d_model,
                         d_ffn=2 * size.d_model, n_experts=size.n_experts,
                         memory_size=size.memory_size, top_c=size.top_c, p_dropout=0.1)
    return dataclasses.replace(base, **changes)


# --------------------------------------------------------------------------- MovieLens-100K

ML_MODELS = ("SASRec", "KuaiFormer", "ELASTIC")


@dataclass
class MovieLensRuns:
    """Per model: test metrics per seed, per-user test NDCG@10 per seed [S][U], and the
    last seed's model; the split each model read."""

    results: dict[str, list[dict[str, float]]]
    per_user: dict[str, list[np.ndarray]]
    models: dict[str, torch.nn.Module]


def movielens_runs(splits: dict[str, SequentialSplit], kuaiformer: KuaiFormerConfig,
                   size: ElasticSize, seed: int, device: str = "auto") -> MovieLensRuns:
    """SASRec (RecBole's settings), KuaiFormer (chapter 2's, one interest) and ELASTIC on
    the same MovieLens-100K targets (``splits``: each model's split), over the profile's
    seeds ``seed, seed + 1, ...``; every model keeps its best validation epoch."""
    runs = MovieLensRuns({}, {}, {})
    for s in range(seed, seed + size.seeds):
        for name in ML_MODELS:
            set_seed(s)
            split = splits[name]
            cfg = dataclasses.replace(NEXT_ITEM, epochs=size.ml_epochs, device=device,
                                      desc=f"{name}, seed {s}")
            if name == "SASRec":
                model, _ = fit_recbole_sasrec(
                    split, s, dataclasses.replace(cfg, epochs=size.sasrec_epochs))
            elif name == "KuaiFormer":
                model = KuaiFormer(kuaiformer)
                fit_kuaiformer(model, split, 8, 256, s, dataclasses.replace(cfg, lr=size.lr))
            else:
                model = Elastic(elastic_config(size, split.n_items, size.ml_max_len))
                fit_next_item(model, cut_points(split, size.per_user, size.batch_size, s),
                              split.eval_batch("valid"),
                              dataclasses.replace(cfg, lr=size.elastic_lr))
            per_user = next_item_metrics(model.eval(), split.eval_batch("test"),
                                         ks=(10, 20, 50), reduce=False)
            runs.results.setdefault(name, []).append({k: float(v.mean())
                                                      for k, v in per_user.items()})
            runs.per_user.setdefault(name, []).append(per_user["ndcg@10"].numpy())
            runs.models[name] = model
    return runs


# --------------------------------------------------------------------------- long histories


@dataclass
class LongRun:
    """One model trained on the returning-interest histories, with per-user test readouts
    [U]: NDCG@10, HR@10, HR@50 and the share of its top 10 in the returning topic."""

    model: torch.nn.Module
    history: History
    per_user: dict[str, np.ndarray]
    seconds: float


def long_run(name: str, model: torch.nn.Module, returns: ReturningInterests,
             size: ElasticSize, seed: int, device: str = "auto",
             progress: bool = True) -> LongRun:
    """Train ``model`` (built after ``set_seed(seed)``) on the (history, next item) pairs of
    ``returns``' training users for the profile's epochs, the loss on the newest position
    only (SASRec's windows get that single target), and read out its test users."""
    train, valid, test = returns.split()
    samples = WindowBatch.last_position(train.newest(model.cfg.max_len)) \
        if isinstance(model, SASRec) else train
    cfg = TrainConfig(epochs=size.long_epochs, lr=size.long_lr, monitor="ndcg@10",
                      device=device, desc=name, progress=progress)
    start = time.perf_counter()
    history = fit_next_item(model, shuffled(samples, size.batch_size, seed), valid, cfg)
    seconds = time.perf_counter() - start
    model.eval()
    on = next(model.parameters()).device
    scores = test.scores(lambda batch: model.score_all(batch.to(on)), chunk=256)
    metrics = ranking_metrics(scores, test.target_ids, ks=(10, 50), reduce=False)
    top10_topic = torch.as_tensor(returns.item_topic)[scores.topk(10, dim=1).indices]
    right_topic = top10_topic == torch.as_tensor(returns.return_topic[-len(test):])[:, None]
    per_user = {key: metrics[key].numpy() for key in ("ndcg@10", "hr@10", "hr@50")}
    per_user["returning topic in top-10"] = right_topic.float().mean(1).numpy()
    return LongRun(model, history, per_user, seconds)


def readout(runs: dict[str, LongRun]) -> pd.DataFrame:
    """Mean readouts per run, with the standard error of NDCG@10 over users."""
    table = pd.DataFrame({name: {key: float(v.mean()) for key, v in run.per_user.items()}
                          for name, run in runs.items()}).T
    table.insert(1, "± se", [float(run.per_user["ndcg@10"].std(ddof=1)
                                   / np.sqrt(len(run.per_user["ndcg@10"])))
                             for run in runs.values()])
    return table


# --------------------------------------------------------------------------- benchmark


def bench_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """A ``benchmarks/long_sequence.py`` report's rows, indexed by (model, length)."""
    return pd.DataFrame(report["rows"]).set_index(["model", "length"])


def ratios_at(report: Mapping[str, Any], length: int = 4_096) -> pd.DataFrame:
    """How many times ELASTIC is faster / lighter than each SASRec at ``length``."""
    frame = bench_frame(report).xs(length, level="length")
    elastic = frame.loc["ELASTIC"]
    rows = {}
    for baseline in ("SASRec (eager)", "SASRec (SDPA)"):
        other = frame.loc[baseline]
        rows[baseline] = {
            "inference speed-up": other["inference_ms"] / elastic["inference_ms"],
            "training-step speed-up": other["train_ms"] / elastic["train_ms"],
            "ELASTIC inference memory (% of it)":
                100 * elastic["inference_peak_mib"] / other["inference_peak_mib"],
            "ELASTIC training memory (% of it)":
                100 * elastic["train_peak_mib"] / other["train_peak_mib"]}
    return pd.DataFrame(rows).T


# --------------------------------------------------------------------------- capacity sweeps


@dataclass(frozen=True)
class Capacity:
    """One (memory size, expert count) setting of the sweeps: per-user test NDCG@10 per
    seed [S, U] and the encoder's operations per user."""

    memory_size: int
    n_experts: int
    per_user: np.ndarray
    encoder_gflop: float

    @property
    def ndcg(self) -> float:
        return float(self.per_user.mean())

    @property
    def per_seed(self) -> list[float]:
        return [float(row.mean()) for row in self.per_user]


def capacity_from_report(report: Mapping[str, Any]) -> list[Capacity]:
    """The settings of a ``benchmarks/elastic_capacity.py`` report, seeds in order."""
    by_setting: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for row in report["rows"]:
        by_setting.setdefault((row["memory_size"], row["n_experts"]), []).append(row)
    settings = []
    for (memory_size, k), rows in by_setting.items():
        rows = sorted(rows, key=lambda row: row["seed"])
        settings.append(Capacity(memory_size, k, np.array([r["per_user_ndcg@10"] for r in rows]),
                                 rows[0]["encoder_gflop"]))
    return settings


def capacity_curves(settings: list[Capacity], memory_size: int, n_experts: int
                    ) -> tuple[list[Capacity], list[Capacity]]:
    """The memory curve at ``n_experts`` experts and the expert curve at ``memory_size``
    slots, each in increasing order."""
    banks = sorted((s for s in settings if s.n_experts == n_experts),
                   key=lambda s: s.memory_size)
    experts = sorted((s for s in settings if s.memory_size == memory_size),
                     key=lambda s: s.n_experts)
    return banks, experts


MEMORY_CLAIM = "the memory adds capacity at constant compute (largest memory beats none)"
EXPERT_CLAIM = "more experts help, then saturate"


def memory_verdict(banks: list[Capacity]) -> Verdict:
    """Claim 4: the largest memory beats no memory, paired by user and seed."""
    if len(banks) < 2 or banks[0].memory_size != 0:
        return Verdict.untested(MEMORY_CLAIM, "no memory sweep")
    gap = paired_gap(banks[-1].per_user, banks[0].per_user, a=f"N={banks[-1].memory_size}",
                     b="no memory", metric="ndcg@10")
    return Verdict.better(MEMORY_CLAIM, gap)


def expert_verdict(experts: list[Capacity], margin: float) -> Verdict:
    """Claim 5, declared before reading the curve: the middle count of the sweep (not the
    best one) beats the smallest, and the largest adds at most ``margin`` (a share of its
    NDCG@10) on top."""
    if len(experts) < 3:
        return Verdict.untested(EXPERT_CLAIM, "no expert sweep")
    low, middle, high = experts[0], experts[len(experts) // 2], experts[-1]
    rise = paired_gap(middle.per_user, low.per_user, a=f"k={middle.n_experts}",
                      b=f"k={low.n_experts}", metric="ndcg@10")
    further = paired_gap(middle.per_user, high.per_user, a=f"k={middle.n_experts}",
                         b=f"k={high.n_experts}", metric="ndcg@10")
    return Verdict.all_of(EXPERT_CLAIM, [
        Verdict.better("the middle count beats the smallest", rise),
        Verdict.not_worse("the middle count is not worse than the largest", further,
                          margin * further.mean_b)])


def capacity_configs(size: ElasticSize, n_items: int, banks: Sequence[int],
                     experts: Sequence[int]) -> list[ElasticConfig]:
    """The capacity sweep's models: the profile's ELASTIC on the returning-interest
    histories first, then one per memory size in ``banks`` (0: no memory) and one per
    expert count in ``experts``, each changed in that one respect only."""
    base = elastic_config(size, n_items, size.long_len)
    return ([base] + [dataclasses.replace(base, memory_size=bank or None) for bank in banks]
            + [dataclasses.replace(base, n_experts=k) for k in experts])


def capacity_sweep(returns: ReturningInterests, size: ElasticSize, base: LongRun, seed: int,
                   device: str = "auto") -> list[Capacity]:
    """The profile's memory sizes and expert counts (each beside the profile's ELASTIC,
    ``base``, already trained) on the returning-interest histories, one seed; the
    models of ``capacity_configs``, as ``benchmarks/elastic_capacity.py`` runs them."""
    configs = capacity_configs(
        size, returns.n_items, [b for b in size.bank_sizes if b != size.memory_size],
        [k for k in size.expert_counts if k != size.n_experts])
    runs = [base]
    for cfg in configs[1:]:
        set_seed(seed)
        runs.append(long_run(f"ELASTIC, N={cfg.memory_size or 0}, k={cfg.n_experts}",
                             Elastic(cfg), returns, size, seed, device))
    return [Capacity(cfg.memory_size or 0, cfg.n_experts, run.per_user["ndcg@10"][None],
                     encoder_gflop(cfg)) for cfg, run in zip(configs, runs, strict=True)]


# --------------------------------------------------------------------------- diagnostics

LONG_CLAIM = "a long history pays: ELASTIC beats every truncated SASRec"


def long_history_verdict(runs: dict[str, LongRun], elastic: str, long_len: int) -> Verdict:
    """Claim 3 against every truncation at once (no baseline picked on the test users):
    ELASTIC must beat each SASRec that reads fewer than ``long_len`` positions, so the
    verdict is that of the hardest comparison."""
    shorter = [name for name, run in runs.items()
               if isinstance(run.model, SASRec) and run.model.cfg.max_len < long_len]
    return Verdict.all_of(LONG_CLAIM, [
        Verdict.better(f"ELASTIC beats {name}", paired_gap(
            runs[elastic].per_user["ndcg@10"], runs[name].per_user["ndcg@10"], a=elastic,
            b=name, metric="ndcg@10")) for name in shorter])


@dataclass
class Focus:
    """Where the experts look on the returning-interest histories: the layer maps
    [B, H, k, L] per layer, the positions of the returning interest [B, L], its share of
    a history [B] and each expert's attention on it over that share [layers, k]
    (1 = no preference)."""

    maps: list[torch.Tensor]
    returning: torch.Tensor
    share: torch.Tensor
    focus: np.ndarray


def returning_focus(model: Elastic, test: WindowBatch, returns: ReturningInterests,
                    n_users: int = 256) -> Focus:
    """The experts' attention on the interest that returns, for the first ``n_users``
    test users (the last ``len(test)`` users of ``returns``)."""
    on = next(model.parameters()).device
    probe = test[:n_users].to(on)
    maps = model.expert_attention(probe.user_seq, probe.is_pad)  # per layer [B, H, k, L]
    item_topic = torch.as_tensor(returns.item_topic, device=on)
    target_topic = torch.as_tensor(returns.return_topic[-len(test):][:n_users], device=on)
    returning = (item_topic[probe.user_seq] == target_topic[:, None]) & ~probe.is_pad
    share = returning.float().sum(1) / (~probe.is_pad).float().sum(1)  # [B]
    focus = [((attention * returning[:, None, None, :]).sum(-1).mean((0, 1))  # [k]
              / share.mean()).cpu().numpy() for attention in maps]
    return Focus(maps, returning, share, np.array(focus))


def interest_usage(model: Elastic, batch: WindowBatch) -> tuple[dict[str, float], np.ndarray]:
    """How much of the interest memory the users read (``slot_usage``) and how alike the
    experts are: their mean off-diagonal cosine, and the [k, k] cosine matrix."""
    states = encode_batches(model, batch)
    k = model.cfg.n_experts
    similarity = expert_similarity(states["experts"])
    usage = slot_usage(states["slots"], model.cfg.memory_size) | {
        "expert cosine (off-diagonal)": float(similarity[~torch.eye(k, dtype=torch.bool)].mean())}
    return usage, similarity.numpy()
