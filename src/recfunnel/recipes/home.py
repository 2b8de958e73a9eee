"""Chapter 5's experiment: the multi-task rankers (references, HoME with its fixes added
and taken away), trained and summarised as the chapter and ``benchmarks/home_seeds.py`` do."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recfunnel.data.impressions import Impressions
from recfunnel.layers.moe import Activation, Norm
from recfunnel.models.home import HoMEConfig
from recfunnel.models.multitask import (
    MixerConfig,
    MultiTaskRanker,
    build_ranker,
    count_parameters,
    diagnose,
    task_metrics,
)
from recfunnel.models.multitask_baselines import MMoEConfig, PLEConfig, SharedBottomConfig
from recfunnel.profiles import HoMESize
from recfunnel.recipes import fit_multitask
from recfunnel.runtime import resolve_device, set_seed
from recfunnel.study import Run, report_commit
from recfunnel.train import TrainConfig

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
    cfg = TrainConfig(epochs=size.epochs, lr=size.lr, monitor="valid_mean_auc",
                      patience=size.patience, seed=seed, progress=progress, desc=desc,
                      device=device)
    history = fit_multitask(model, train, valid, cfg, size.batch_size)
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




@dataclass
class SeedReport:
    """A ``benchmarks/home_seeds.py`` report (or this run's rows) read for chapter 5: the
    stored rows, their summaries (one per run), the ``study.Run`` records for paired
    comparisons, where they come from and the commit they ran at."""

    rows: list[Mapping[str, Any]]
    frame: pd.DataFrame
    runs: list[Run]
    source: str
    commit: str

    def summary(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Mean and std over seeds per model of the summary ``columns`` (all by default)."""
        frame = self.frame if columns is None else self.frame[["model", *columns]]
        return frame.groupby("model", sort=False).agg(["mean", "std"])

    def per_task(self, model: str, metric: str) -> pd.DataFrame:
        """[seeds, tasks] of one model's test ``metric`` ("auc" or "gauc")."""
        return pd.DataFrame([{t: s[metric] for t, s in row["tasks"].items()}
                             for row in self.rows if row["model"] == model])


def seed_report(rows: Sequence[Mapping[str, Any]], sparse: Sequence[str], profile: str,
                report: Mapping[str, Any] | None = None, source: str = "this run"
                ) -> SeedReport:
    """Read stored rows (``ranker_row``), from ``report`` when they come from one."""
    return SeedReport(list(rows), pd.DataFrame([ranker_summary(r, sparse) for r in rows]),
                      ranker_runs(rows, sparse, report["profile"] if report else profile,
                                  report),
                      source, report_commit(report) if report else "this run")


def load_seed_report(path: Path, sparse: Sequence[str]) -> SeedReport | None:
    """A committed ``benchmarks/home_seeds.py`` report, or None when it is not there."""
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    seeds = len({row["seed"] for row in report["runs"]})
    return seed_report(report["runs"], sparse, report["profile"], report,
                       f"benchmarks/home_seeds.py, {seeds} seeds")


def zero_shares(recorded: Any) -> np.ndarray:
    """Per expert output unit of a ``multitask.trace``: the share of inputs on which it
    is zero (a unit zero on more than 90 % of them counts as dead)."""
    units = torch.cat([out.flatten(1) for out in recorded.outputs.values()], dim=1)
    return (units.abs() <= 1e-3).float().mean(0).numpy()
