"""The chapters' experiments, written once: what a chapter and its benchmark both call.

A recipe turns a chapter's run sizes (``profiles``) into model configurations and trained
models, so that ``benchmarks/`` repeats a chapter's experiment over more seeds or epochs
with exactly the chapter's settings; neither may copy them. ``study`` is the generic layer
(runs, gaps, verdicts); this module is the chapter-specific one above the models.

    from recfunnel.recipes import dimerec_config, fit_contender
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recfunnel.data.impressions import Impressions
from recfunnel.data.multimodal import MultiModalData, make_multimodal
from recfunnel.data.sequences import SequentialSplit
from recfunnel.layers.moe import Activation, Norm
from recfunnel.metrics import metrics_from_ranks
from recfunnel.models import qarm
from recfunnel.models.baselines import SASRec, SASRecConfig, fit_sasrec
from recfunnel.models.dimerec import ComiRecSA, DimeRec, DimeRecConfig, ablation, fit_dimerec
from recfunnel.models.elastic import ElasticConfig
from recfunnel.models.home import HoMEConfig
from recfunnel.models.multitask import (
    MixerConfig,
    MultiTaskRanker,
    build_ranker,
    count_parameters,
    diagnose,
    fit_multitask,
    task_metrics,
)
from recfunnel.models.multitask_baselines import MMoEConfig, PLEConfig, SharedBottomConfig
from recfunnel.models.qarm_pretrain import clicks, id_embeddings, mine_pairs, pretrained_vectors
from recfunnel.profiles import DimeRecSize, ElasticSize, HoMESize, QARMSize
from recfunnel.runtime import resolve_device, set_seed
from recfunnel.study import Run
from recfunnel.train import History

# --------------------------------------------------------------------------- chapter 3


def elastic_config(size: ElasticSize, n_items: int, max_len: int, **changes) -> ElasticConfig:
    """Chapter 3's ELASTIC at a profile's size (``changes``: a sweep's setting)."""
    base = ElasticConfig(n_items=n_items, max_len=max_len, d_model=size.d_model,
                         d_ffn=2 * size.d_model, n_experts=size.n_experts,
                         memory_size=size.memory_size, top_c=size.top_c, p_dropout=0.1)
    return dataclasses.replace(base, **changes)


# --------------------------------------------------------------------------- chapter 4


def dimerec_config(size: DimeRecSize, n_items: int, **changes) -> DimeRecConfig:
    """Chapter 4's DimeRec (and ComiRec-SA, its extractor) at a profile's size."""
    return DimeRecConfig(n_items=n_items, max_len=50, d_model=size.d_model,
                         n_interests=size.n_interests, diffusion_steps=size.diffusion_steps,
                         hidden=size.hidden, **changes)


def dimerec_contenders(size: DimeRecSize, n_items: int) -> dict[str, DimeRecConfig | None]:
    """Chapter 4's models by name: SASRec (None: RecBole's settings), ComiRec-SA, DimeRec
    and "DimeRec, <variant>" for each of the profile's ablations."""
    base = dimerec_config(size, n_items)
    contenders: dict[str, DimeRecConfig | None] = {"SASRec": None, "ComiRec-SA": base,
                                                   "DimeRec": base}
    return contenders | {f"DimeRec, {v}": ablation(base, v) for v in size.ablations}


def dimerec_runs(report: Mapping[str, Any], ks: Sequence[int] = (10, 20, 50)) -> list[Run]:
    """A ``benchmarks/dimerec_seeds.py`` report as ``study.Run`` records: each run's
    aggregate metrics, and per-user Recall@K and NDCG@K rebuilt from its stored top-50
    ranks (``metrics.metrics_from_ranks``), so ``study.compare`` pairs users and seeds."""
    recorded = {k: report[k] for k in ("version", "commit") if k in report}
    runs = []
    for row in report["rows"]:
        metrics = {k: float(v) for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("seed", "epochs_run", "best_epoch", "train_seconds",
                                 "sample_steps")}
        runs.append(Run(model="chapter 4", variant=row["model"], seed=row["seed"],
                        profile=report["profile"], config={"sample_steps": row.get("sample_steps")},
                        metrics=metrics, per_user=metrics_from_ranks(row["rank_top50"], ks),
                        epochs=row["epochs_run"], best_epoch=row["best_epoch"],
                        seconds=row["train_seconds"], **recorded))
    return runs


def fit_contender(name: str, cfg: DimeRecConfig | None, split: SequentialSplit,
                  size: DimeRecSize, seed: int, device: str = "auto",
                  **fit_options: Any) -> tuple[nn.Module, History, float]:
    """Train one of ``dimerec_contenders`` the way chapter 4 does; returns the model in
    eval mode (DimeRec serving with the steps validation chose), its history and the
    seconds it took. ``fit_options``: e.g. ``patience`` for a run to convergence."""
    start = time.perf_counter()
    if cfg is None:
        model = SASRec(SASRecConfig(n_items=split.n_items))
        history = fit_sasrec(model, split, size.sasrec_epochs, seed=seed, device=device,
                             desc=f"{name}, seed {seed}", **fit_options)
    else:
        model = (ComiRecSA if name == "ComiRec-SA" else DimeRec)(cfg)
        history = fit_dimerec(model, split, size.epochs, per_user=size.per_user,
                              batch_size=size.batch_size, lr=size.lr, seed=seed,
                              device=device, desc=f"{name}, seed {seed}", **fit_options)
    return model.eval(), history, time.perf_counter() - start


# --------------------------------------------------------------------------- chapter 5

HOME_STEPS = {  # chapter 5 adds HoME's fixes in the paper's order, after BN + Swish
    "+ hierarchy": {"feature_gate": False, "self_gate": False},
    "+ feature-gate": {"self_gate": False},
    "+ self-gate (HoME)": {},
}
HOME_ABLATIONS = {  # full HoME changed in one respect
    "HoME-no-norm": {"expert_norm": None},
    "HoME-layer-norm": {"expert_norm": Norm.LAYER},
    "HoME-no-hierarchy": {"hierarchy": False},
    "HoME-no-feature-gate": {"feature_gate": False},
    "HoME-no-self-gate": {"self_gate": False},
}


def ranker_configs(size: HoMESize) -> dict[str, MixerConfig]:
    """Chapter 5's rankers at a profile's sizes, by name: the references, HoME with its
    fixes added one by one (``HOME_STEPS``) and with each taken away (``HOME_ABLATIONS``)."""
    common = {"d_emb": size.d_emb, "tower_hidden": size.d_emb}
    mmoe = MMoEConfig(n_experts=size.mmoe_experts, expert_hidden=size.expert_hidden, **common)
    home = HoMEConfig(n_meta_shared=size.meta_experts[0], n_meta_group=size.meta_experts[1],
                      n_task_group=size.task_experts[0], n_task_own=size.task_experts[1],
                      meta_hidden=size.expert_hidden, task_hidden=size.task_hidden,
                      lora_rank=size.lora_rank, **common)
    configs: dict[str, MixerConfig] = {
        "shared-bottom": SharedBottomConfig(hidden=(size.expert_hidden[0] * 2,
                                                    *size.expert_hidden), **common),
        "MMoE": mmoe,
        "MMoE+norm": dataclasses.replace(mmoe, activation=Activation.SWISH, norm=Norm.BATCH),
        "PLE": PLEConfig(n_shared=size.meta_experts[0], n_own=size.task_experts[1], levels=2,
                         expert_hidden=size.expert_hidden, **common),
        "HoME": home,
    }
    changes = HOME_STEPS | HOME_ABLATIONS
    return configs | {name: dataclasses.replace(home, **change) for name, change in changes.items()}


def fit_ranker(cfg: MixerConfig, data: Impressions, size: HoMESize, seed: int,
               sparse: Sequence[str] = (), device: str = "auto", desc: str = "ranker",
               progress: bool = True) -> tuple[MultiTaskRanker, dict[str, Any]]:
    """Train one of chapter 5's rankers on ``data``'s training days, early-stopped on the
    validation day; its test scores per task, its expert diagnostics (``sparse``: the tasks
    whose own-expert share is read), its cost and its history. The model is returned on
    the CPU."""
    train, valid, test = data.split()
    set_seed(seed)
    model = build_ranker(cfg, data).to(resolve_device(device))
    start = time.perf_counter()
    history = fit_multitask(model, train, valid, epochs=size.epochs, batch_size=size.batch_size,
                            lr=size.lr, seed=seed, patience=size.patience, progress=progress,
                            desc=desc)
    seconds = time.perf_counter() - start
    model.cpu()
    return model, {"seconds": seconds, "epochs_run": len(history.epochs),
                   "best_epoch": history.best_epoch, "parameters": count_parameters(model),
                   "tasks": task_metrics(model, test), "diagnostics": diagnose(model, test, sparse),
                   "history": history}


def ranker_row(name: str, seed: int, run: Mapping[str, Any]) -> dict[str, Any]:
    """A ``fit_ranker`` record in the form ``benchmarks/home_seeds.py`` stores it."""
    return {"model": name, "seed": seed} | {
        key: run[key] for key in ("tasks", "diagnostics", "parameters", "seconds", "best_epoch")}


def ranker_summary(row: Mapping[str, Any], sparse: Sequence[str]) -> dict[str, Any]:
    """Chapter 5's summary of one stored run (``ranker_row``): mean test AUC over the
    ``sparse`` tasks and over the others, mean GAUC over all, the expert diagnostics and the
    best epoch."""
    tasks = row["tasks"]
    dense = [t for t in tasks if t not in sparse]
    return {"model": row["model"],
            "sparse AUC": float(np.mean([tasks[t]["auc"] for t in sparse])),
            "dense AUC": float(np.mean([tasks[t]["auc"] for t in dense])),
            "mean GAUC": float(np.mean([tasks[t]["gauc"] for t in tasks])),
            **row["diagnostics"], "best epoch": row.get("best_epoch") or float("nan")}


def ranker_runs(rows: Sequence[Mapping[str, Any]], sparse: Sequence[str], profile: str,
                source: Mapping[str, Any] | None = None) -> list[Run]:
    """Stored rows as ``study.Run`` records (their summary as the metrics), for comparisons
    paired seed by seed; ``source``: the report they come from (its version and commit)."""
    recorded = {k: source.get(k, "unknown") for k in ("version", "commit")} if source else {}
    runs = []
    for row in rows:
        summary = ranker_summary(row, sparse)
        metrics = {k: float(v) for k, v in summary.items() if k != "model" and not np.isnan(v)}
        runs.append(Run(model="multi-task ranker", variant=row["model"], seed=row["seed"],
                        profile=profile, config={}, metrics=metrics, **recorded))
    return runs


# --------------------------------------------------------------------------- chapter 7

def qarm_world(size: QARMSize, seed: int) -> MultiModalData:
    """Chapter 7's multi-modal world at a profile's size, drawn from ``seed``."""
    return make_multimodal(n_users=size.users, n_items=size.items,
                           n_impressions=size.impressions, history=size.history, seed=seed)


# the rows of the paper's Table 1, and two more: name -> (ranker inputs, vectors used)
VARIANTS = {
    "base": (qarm.RankerInputs(), "aligned"),
    "+ frozen raw vector": (qarm.RankerInputs(frozen=True), "raw"),
    "+ frozen aligned vector": (qarm.RankerInputs(frozen=True), "aligned"),
    "+ VQ code": (qarm.RankerInputs(vq=True), "aligned"),
    "+ RQ code": (qarm.RankerInputs(rq=True), "aligned"),
    "+ VQ & RQ codes": (qarm.RankerInputs(vq=True, rq=True), "aligned"),
    "+ aligned vector & codes": (qarm.RankerInputs(frozen=True, vq=True, rq=True), "aligned"),
    "+ codes of raw vectors": (qarm.RankerInputs(vq=True, rq=True), "raw"),
}


@dataclass
class Aligned:
    """Stages A and B on one world: the raw and aligned vectors [I, d] and the pairs used."""

    raw: torch.Tensor
    aligned: torch.Tensor
    pairs: np.ndarray
    history: History


def align_items(data: MultiModalData, d: int, window: int, epochs: int,
                batch_size: int = 256, seed: int = 0, progress: bool = True,
                device: str = "cpu") -> Aligned:
    """Mine pairs from the training clicks with the U2I rule and align the content to them."""
    train, _, _ = data.split()
    users, items = clicks(data, train)
    ids = id_embeddings(users, items, data.n_users, data.n_items, seed=seed)
    pairs = mine_pairs(users, items, window, item_vectors=ids)
    content = torch.from_numpy(data.content())
    aligner = qarm.ItemAligner(content.shape[1], d)
    history = qarm.fit_aligner(aligner, content, pairs, epochs, batch_size, seed=seed,
                               progress=progress, device=device)
    return Aligned(raw=pretrained_vectors(content, d, seed),
                   aligned=qarm.encode_items(aligner, content), pairs=pairs, history=history)


def rank_variants(data: MultiModalData, vectors: dict[str, torch.Tensor],
                  codes: dict[str, qarm.ItemCodes], variants: Sequence[str], d_emb: int,
                  hidden: Sequence[int], epochs: int, batch_size: int = 1_024,
                  lr: float = 3e-3, patience: int | None = 1, seed: int = 0,
                  progress: bool = True, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Train one ranker per variant (``VARIANTS``) on the same data and seed; return each
    one's test scores (``qarm.evaluate_ranker``) and its best epoch."""
    train, valid, test = data.split()
    results = {}
    for name in variants:
        inputs, source = VARIANTS[name]
        torch.manual_seed(seed)
        model = qarm.QARMRanker(data.n_users, data.n_items, d_emb, hidden, inputs=inputs,
                                frozen=vectors[source], codes=codes[source])
        history = qarm.fit_ranker(model, data, train, valid, epochs, batch_size, lr, seed,
                                  patience, progress, desc=name, device=device)
        results[name] = qarm.evaluate_ranker(model, data, test) | {
            "best_epoch": history.best_epoch}
    return results
