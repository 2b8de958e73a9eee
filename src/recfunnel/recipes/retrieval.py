"""The retrieval chapters' shared benchmark: the course's sequence models against outside
peers on MovieLens-1M and MovieLens-100K, one split and one protocol (RecBole's).

``benchmarks/retrieval_ml1m.py`` trains every contender under a wall-clock budget, keeps
the best validation epoch and stores each test user's 1-based target rank over the whole
catalogue. This module holds what the benchmark and chapters 2, 3, 4 and 7 share: each
contender's settings (fixed before any run, never chosen on the test split), its training,
the per-user ranks, and the report's tables and verdicts.

Settings, and why:

* SASRec: RecBole's architecture (50 items, d = 64, 2 layers, full softmax at every
  position) with the two changes the issue's sources point to: dropout 0.2 instead of 0.5
  (RecBole's maintainers), and overlapping windows (``stride`` 10: each target trained once,
  seeing at least 41 items of history) instead of disjoint 50-item windows, whose early
  positions see almost nothing. ``stride=1`` would be RecBole's every-prefix sampling at
  ten times the cost per epoch (50 positions run per target instead of 5).
* KuaiFormer: chapter 2's compression scheme ((1 x 32), (2 x 8), 16 raw: 64 items) at
  d = 64, 8 random cut points per user and epoch, the all-position auxiliary loss; the
  paper's in-batch softmax with logQ, or (``full``) a softmax over the whole catalogue.
* ELASTIC: chapter 3's model at d = 64 on 50 items, 8 experts, a 4,096-slot memory.
* DimeRec: chapter 4's model at d = 64, 32 cut points per user and epoch.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recfunnel import plots
from recfunnel.data.movielens import load_ml1m, load_ml100k, side_features
from recfunnel.data.sequences import SeqBatch, SequentialSplit, cut_points, every_window
from recfunnel.metrics import metrics_from_ranks
from recfunnel.models.baselines import SASRec, SASRecConfig
from recfunnel.models.dimerec import DimeRec, DimeRecConfig, choose_sample_steps
from recfunnel.models.elastic import Elastic, ElasticConfig
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.notebook import plural
from recfunnel.recipes import NEXT_ITEM, fit_next_item
from recfunnel.runtime import set_seed
from recfunnel.study import Verdict, paired_gap, results_dir
from recfunnel.train import History

DATASETS = ("ml-1m", "ml-100k")
SIDE_COLUMNS = ("rating_bucket", "genre_bucket", "decade_bucket")
PEERS = ("RecBole GRU4Rec", "RecBole SASRec", "RecTools SASRec")
OURS = ("SASRec", "KuaiFormer k=1", "KuaiFormer k=4", "KuaiFormer k=1, full softmax",
        "KuaiFormer k=4, full softmax", "ELASTIC", "DimeRec")
KF_COMPRESSION, KF_RAW = ((1, 32), (2, 8)), 16  # chapter 2's scheme
KF_WINDOW = sum(groups * size for groups, size in KF_COMPRESSION) + KF_RAW  # 64 items
GOAL = 1.05  # the target: our retrieval models at 1.05 x the best peer's NDCG@10
GOAL_MODELS = ("KuaiFormer k=1", "KuaiFormer k=4", "KuaiFormer k=1, full softmax",
               "KuaiFormer k=4, full softmax", "ELASTIC", "DimeRec")


@dataclass(frozen=True)
class Settings:
    """Every contender's fixed settings (see the module's docstring)."""

    sasrec_dropout: float = 0.2
    sasrec_stride: int = 10
    d_model: int = 64
    kf_per_user: int = 8
    kf_batch: int = 256
    kf_lr: float = 2e-3
    elastic_per_user: int = 8
    elastic_batch: int = 128
    elastic_lr: float = 2e-3
    dimerec_per_user: int = 32
    dimerec_batch: int = 256
    dimerec_lr: float = 3e-3


SETTINGS = Settings()


@dataclass
class Splits:
    """One dataset's split for the 50-item models, the same targets with KuaiFormer's side
    features and 64-item window, and the MovieLens table they came from."""

    name: str
    plain: SequentialSplit
    featured: SequentialSplit
    side_buckets: tuple[int, ...]  # buckets per side-feature column, 0 = padding
    interactions: pd.DataFrame  # user_id, item_id, rating, timestamp (what peers read)


def load_splits(dataset: str) -> Splits:
    """RecBole's leave-one-out split of ``dataset`` ("ml-1m" or "ml-100k")."""
    loaders = {"ml-1m": load_ml1m, "ml-100k": load_ml100k}
    if dataset not in loaders:
        raise ValueError(f"dataset must be one of {sorted(loaders)}, got {dataset!r}")
    data = loaders[dataset]()
    frame = side_features(data)
    featured = SequentialSplit(frame, max_len=KF_WINDOW, feature_columns=SIDE_COLUMNS)
    splits = Splits(dataset, SequentialSplit(data.interactions, max_len=50), featured,
                    tuple(int(frame[c].max()) + 1 for c in SIDE_COLUMNS), data.interactions)
    if splits.plain.checksum() != splits.featured.checksum():
        raise AssertionError("the featured split's targets differ from the plain split's")
    return splits


def kuaiformer_config(k: int, n_items: int, side_buckets: tuple[int, ...], full: bool = False,
                      settings: Settings = SETTINGS) -> KuaiFormerConfig:
    """Chapter 2's KuaiFormer at the benchmark's width, with k interests."""
    return KuaiFormerConfig(n_items=n_items, side_buckets=side_buckets, d_model=settings.d_model,
                            d_ffn=2 * settings.d_model, n_interests=k,
                            compression=KF_COMPRESSION, n_raw=KF_RAW, aux_weight=1.0,
                            loss="full" if full else "in_batch")


def build(name: str, splits: Splits, settings: Settings = SETTINGS
          ) -> tuple[nn.Module, SequentialSplit, Any]:
    """(model, the split it reads, ``seed -> batches``) of one of ``OURS``."""
    plain, featured = splits.plain, splits.featured
    V, D = plain.n_items, settings.d_model
    if name == "SASRec":
        model = SASRec(SASRecConfig(n_items=V, p_dropout=settings.sasrec_dropout))
        return model, plain, lambda s: every_window(plain, 128, s, settings.sasrec_stride)
    if name.startswith("KuaiFormer"):
        k = int(name.split("k=")[1][0])
        model = KuaiFormer(kuaiformer_config(k, V, splits.side_buckets, "full" in name,
                                             settings))
        model.set_item_frequencies(torch.as_tensor(featured.train_item_counts()))
        return model, featured, lambda s: cut_points(featured, settings.kf_per_user,
                                                     settings.kf_batch, s)
    if name == "ELASTIC":
        model = Elastic(ElasticConfig(n_items=V, max_len=50, d_model=D, d_ffn=2 * D,
                                      n_experts=8, memory_size=4_096, top_c=8, p_dropout=0.1))
        return model, plain, lambda s: cut_points(plain, settings.elastic_per_user,
                                                  settings.elastic_batch, s)
    if name == "DimeRec":
        model = DimeRec(DimeRecConfig(n_items=V, max_len=50, d_model=D, diffusion_steps=50,
                                      hidden=128))
        return model, plain, lambda s: cut_points(plain, settings.dimerec_per_user,
                                                  settings.dimerec_batch, s)
    raise ValueError(f"unknown contender {name!r}; choose one of {OURS}")


def learning_rate(name: str, settings: Settings = SETTINGS) -> float:
    return {"SASRec": 1e-3, "ELASTIC": settings.elastic_lr,
            "DimeRec": settings.dimerec_lr}.get(name, settings.kf_lr)


@torch.no_grad()
def target_ranks(model: nn.Module, batch: SeqBatch, chunk: int = 512) -> np.ndarray:
    """[U] each user's 1-based rank of the target among all items by ``score_all``
    (ties counted against the target: rank = 1 + items scoring at least as high)."""
    device = next(model.parameters()).device
    ranks = []
    for start in range(0, len(batch), chunk):
        rows = batch[start:start + chunk].to(device)
        scores = model.score_all(rows).float()  # [B, V]
        target = scores.gather(1, rows.target_ids[:, None])  # [B, 1]
        ranks.append((scores >= target).sum(1).cpu())  # the target counts itself once
    return torch.cat(ranks).numpy().astype(np.int64)


@dataclass
class Trained:
    model: nn.Module
    history: History
    seconds: float
    ranks: np.ndarray  # [U] test ranks


def train(name: str, splits: Splits, seed: int, budget: float, epochs: int = 200,
          device: str = "auto", settings: Settings = SETTINGS, progress: bool = True
          ) -> Trained:
    """One of ``OURS`` trained under a ``budget`` of wall seconds (validation NDCG@10
    after every epoch, early stop after 5 epochs without gain, best epoch kept)."""
    set_seed(seed)
    model, split, batches = build(name, splits, settings)
    cfg = dataclasses.replace(NEXT_ITEM, epochs=epochs, lr=learning_rate(name, settings),
                              device=device, max_seconds=budget, progress=progress,
                              desc=f"{splits.name} {name}, seed {seed}")
    started = time.perf_counter()
    history = fit_next_item(model, batches(seed), split.eval_batch("valid"), cfg)
    if isinstance(model, DimeRec):
        choose_sample_steps(model, split.eval_batch("valid"))
    seconds = time.perf_counter() - started
    return Trained(model.eval(), history, seconds, target_ranks(model, split.eval_batch("test")))


# --------------------------------------------------------------------------- the report


def per_user(run: Mapping[str, Any], metric: str = "ndcg@10") -> np.ndarray:
    """[U] a run's per-user metric (``recall@K`` or ``ndcg@K``) from its stored ranks."""
    k = int(metric.split("@")[1])
    ranks = np.asarray(run["test_ranks"])
    return metrics_from_ranks(np.where(ranks <= k, ranks, 0), [k])[metric]


def runs_of(report: Mapping[str, Any], dataset: str) -> dict[str, list[Mapping[str, Any]]]:
    """{model: its runs (one per seed, in seed order)} on ``dataset``."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for run in sorted(report["runs"], key=lambda r: r["seed"]):
        if run["dataset"] == dataset:
            out.setdefault(run["model"], []).append(run)
    return out


def stopped_by(run: Mapping[str, Any]) -> str:
    """What ended a run: "budget" (more epochs would have run) or "early stop"."""
    return "budget" if run.get("stopped_by_budget", True) else "early stop"


def table(report: Mapping[str, Any], dataset: str) -> pd.DataFrame:
    """Test Recall and NDCG at 10 and 20 (mean over seeds), NDCG@10's standard error over
    users, epochs, wall budget and seconds per model, peers first."""
    rows = {}
    for model, runs in runs_of(report, dataset).items():
        ndcg = np.stack([per_user(r) for r in runs])  # [S, U]
        rows[model] = {
            "peer": model in PEERS, "seeds": len(runs),
            "recall@10": float(np.mean([per_user(r, "recall@10").mean() for r in runs])),
            "ndcg@10": float(ndcg.mean()),
            "± se": float(ndcg.mean(0).std(ddof=1) / np.sqrt(ndcg.shape[1])),
            "ndcg@20": float(np.mean([per_user(r, "ndcg@20").mean() for r in runs])),
            "epochs": float(np.mean([r["epochs"] for r in runs])),
            "budget s": runs[0]["budget_seconds"],
            "wall s": float(np.mean([r["wall_seconds"] for r in runs])),
            "stopped by": ", ".join(sorted({stopped_by(r) for r in runs})),
        }
    frame = pd.DataFrame(rows).T
    order = [m for m in (*PEERS, *OURS) if m in frame.index]
    return frame.loc[order]


SHOWN = ["ndcg@10", "± se", "recall@10", "epochs", "wall s", "stopped by"]


def shown(report: Mapping[str, Any], dataset: str) -> pd.DataFrame:
    """The columns of ``table`` a chapter page shows (it must fit the page's width)."""
    return table(report, dataset)[SHOWN]


def best_peer(report: Mapping[str, Any], dataset: str) -> str | None:
    """The peer with the highest mean test NDCG@10 on ``dataset`` (None: no peer ran)."""
    runs = runs_of(report, dataset)
    peers = {m: np.mean([per_user(r).mean() for r in runs[m]]) for m in PEERS if m in runs}
    return max(peers, key=peers.get) if peers else None


def goal_verdicts(report: Mapping[str, Any], dataset: str = "ml-1m") -> dict[str, Verdict]:
    """Each of ``GOAL_MODELS`` that ran against ``GOAL`` x the best peer's NDCG@10, paired
    per test user (the same seeds: one on ML-1M)."""
    runs, peer = runs_of(report, dataset), best_peer(report, dataset)
    if peer is None:
        return {}
    verdicts = {}
    for model in GOAL_MODELS:
        if model not in runs:
            continue
        seeds = sorted({r["seed"] for r in runs[model]} & {r["seed"] for r in runs[peer]})
        ours = np.stack([per_user(r) for r in runs[model] if r["seed"] in seeds])
        theirs = np.stack([per_user(r) for r in runs[peer] if r["seed"] in seeds])
        gap = paired_gap(ours, theirs, a=model, b=peer, metric="ndcg@10")
        verdicts[model] = Verdict.better(
            f"{model} reaches {GOAL:g} x {peer}'s NDCG@10", gap,
            threshold=(GOAL - 1) * gap.mean_b)
    return verdicts


# --------------------------------------------------------------------------- the chapters

REPORT = "retrieval_ml1m.json"
GPU_BUDGET = 120.0  # seconds per model when a chapter reruns its models live (gpu profile)


def committed_report() -> dict | None:
    """The committed ``benchmarks/results/retrieval_ml1m.json`` (None when not here)."""
    path = results_dir() / REPORT
    return json.loads(path.read_text()) if path.exists() else None


def with_live_runs(report: Mapping[str, Any], models: Sequence[str], seed: int,
                   budget: float = GPU_BUDGET, device: str = "auto",
                   dataset: str = "ml-1m") -> dict:
    """``report`` with ``models`` (of ``OURS``) retrained here on ``dataset`` under
    ``budget`` seconds each, replacing the committed runs of the same model and seed; the
    peers stay as committed. A chapter calls it at the ``gpu`` profile."""
    splits = load_splits(dataset)
    live = []
    for model in models:
        trained = train(model, splits, seed, budget, device=device)
        live.append({"model": model, "dataset": dataset, "seed": seed, "live": True,
                     "epochs": len(trained.history.epochs), "budget_seconds": budget,
                     "wall_seconds": trained.seconds, "test_ranks": trained.ranks.tolist(),
                     "best_valid_ndcg@10": trained.history.best_value})
    replaced = {(r["model"], r["dataset"], r["seed"]) for r in live}
    kept = [r for r in report["runs"]
            if (r["model"], r["dataset"], r["seed"]) not in replaced]
    return {**report, "runs": kept + live}


def plot(report: Mapping[str, Any], dataset: str, highlight: Sequence[str] = (),
         title: str = ""):
    """Test NDCG@10 per model with two standard errors over users, peers in grey, the
    issue's goal (``GOAL`` x the best peer) as a dashed line; ``highlight``: the chapter's
    own models in colour, the rest of ours pale."""
    frame = table(report, dataset)
    fig, ax = plots._subplots(figsize=(7.5, 0.45 * len(frame) + 1.2))
    colors = [plots.BASELINE_COLOR if row.peer else
              (plots.PALETTE[0] if name in highlight or not highlight else "#c6d4e1")
              for name, row in frame.iterrows()]
    y = np.arange(len(frame))
    ax.barh(y, frame["ndcg@10"], xerr=2 * frame["± se"].astype(float), color=colors,
            capsize=3)
    ax.set_yticks(y, frame.index)
    ax.invert_yaxis()
    peer = best_peer(report, dataset)
    if peer is not None:
        goal = GOAL * frame.loc[peer, "ndcg@10"]
        ax.axvline(goal, color="black", linestyle="--", linewidth=1,
                   label=f"the goal: {GOAL:g} x {peer}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("test NDCG@10 (two standard errors over users)")
    ax.set_title(title or f"{dataset}: full ranking, leave-one-out")
    fig.tight_layout()
    return fig


def short_commit(commit: str) -> str:
    """'60104253...' -> '6010425', keeping a '+dirty' mark."""
    return commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")


def summary(report: Mapping[str, Any], dataset: str = "ml-1m") -> dict[str, Any]:
    """The values a chapter quotes: users, the best peer and its NDCG@10, each model's
    NDCG@10 relative to it, and the commit(s) the runs were made at."""
    frame = table(report, dataset)
    peer = best_peer(report, dataset)
    runs = [r for r in report["runs"] if r["dataset"] == dataset]
    values: dict[str, Any] = {
        "users": f"{len(runs[0]['test_ranks']):,}" if runs else "n/a",
        "best_peer": peer or "n/a",
        "best_peer_ndcg": float(frame.loc[peer, "ndcg@10"]) if peer else float("nan"),
        "commits": ", ".join(sorted({short_commit(r.get("commit", "?")) for r in runs
                                     if not r.get("live")})) or "n/a"}
    for model in frame.index:
        values[f"ratio {model}"] = (float(frame.loc[model, "ndcg@10"] / values["best_peer_ndcg"])
                                    if peer else float("nan"))
    return values


def peer_training(report: Mapping[str, Any], dataset: str = "ml-1m") -> str:
    """A sentence on how the best peer's training ended: by the budget (then the comparison
    is of quality per wall-second on the benchmark's machine) or by early stopping."""
    peer = best_peer(report, dataset)
    if peer is None:
        return "no peer ran"
    runs = runs_of(report, dataset)[peer]
    epochs = plural(round(float(np.mean([r["epochs"] for r in runs]))), "epoch")
    if all(stopped_by(r) == "early stop" for r in runs):
        return f"{peer} stopped early after {epochs}, its validation score no longer rising"
    wall = float(np.mean([r["wall_seconds"] for r in runs]))
    budget = float(runs[0]["budget_seconds"])
    over = (f" (in {wall:,.0f} s against a budget of {budget:,.0f} s: an epoch is never cut "
            f"short)") if wall > 1.25 * budget else ""
    return (f"{peer} was stopped by the budget after {epochs}{over}, not by early stopping: "
            f"this compares what each implementation reaches on a short wall-clock budget on "
            f"the benchmark's machine, not converged models")


def still_rising(report: Mapping[str, Any], dataset: str = "ml-1m") -> list[str]:
    """Those of ``OURS`` stopped by the budget at their best validation epoch so far: more
    time would probably have helped them."""
    return [model for model, runs in runs_of(report, dataset).items()
            if model in OURS and all(
                stopped_by(r) == "budget" and r["valid_curve"]
                and r["valid_curve"][-1][1] >= max(v for _, v in r["valid_curve"])
                for r in runs)]


def has_runs(report: Mapping[str, Any] | None, dataset: str = "ml-1m") -> bool:
    return report is not None and any(r["dataset"] == dataset for r in report["runs"])


def chapter_values(report: Mapping[str, Any] | None, model: str,
                   dataset: str = "ml-1m") -> dict[str, str]:
    """What a chapter quotes about its ``model`` in the report, as text ("n/a" where the
    report or the run is missing): users, the best peer and its NDCG@10, the model's
    NDCG@10, its ratio to the peer, its seeds and epochs within the budget, the goal's
    verdict and the commits of the committed runs."""
    values = dict.fromkeys(("users", "peer", "peer_ndcg", "peer_training", "ndcg", "ratio",
                            "seeds", "epochs", "budget", "goal", "commits"), "n/a")
    if not has_runs(report, dataset):
        return values
    frame, facts = table(report, dataset), summary(report, dataset)
    values.update(users=facts["users"], peer=facts["best_peer"], commits=facts["commits"])
    if facts["best_peer"] != "n/a":
        values["peer_ndcg"] = f"{facts['best_peer_ndcg']:.4f}"
        values["peer_training"] = peer_training(report, dataset)
    if model in frame.index:
        values.update(ndcg=f"{frame.loc[model, 'ndcg@10']:.4f}",
                      seeds=plural(int(frame.loc[model, "seeds"]), "seed"),
                      epochs=f"{frame.loc[model, 'epochs']:.0f}",
                      budget=f"{frame.loc[model, 'budget s']:.0f}")
        if facts["best_peer"] != "n/a":
            values["ratio"] = f"{facts[f'ratio {model}']:.3f}"
            values["goal"] = goal_verdicts(report, dataset)[model].text \
                if model in GOAL_MODELS else "n/a"
    return values
