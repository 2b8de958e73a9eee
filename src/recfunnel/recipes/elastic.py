"""Chapter 3's experiments: ELASTIC at a profile's size, SASRec and KuaiFormer beside it on
MovieLens-100K, the returning-interest runs (which ``benchmarks/elastic_capacity.py``
repeats over seeds and capacities) and the readings of ``benchmarks/long_sequence.py``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
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
from recfunnel.metrics import ranking_metrics
from recfunnel.models.baselines import SASRec
from recfunnel.models.elastic import Elastic, ElasticConfig
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.profiles import ElasticSize
from recfunnel.recipes import NEXT_ITEM, fit_next_item, fit_recbole_sasrec
from recfunnel.recipes.kuaiformer import fit_kuaiformer
from recfunnel.runtime import set_seed
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
                model, _ = fit_recbole_sasrec(split, s, cfg)
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
