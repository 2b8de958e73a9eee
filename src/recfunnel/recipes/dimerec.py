"""Chapter 4's experiments: DimeRec, its extractor ComiRec-SA, SASRec and the ablations,
trained as the chapter and ``benchmarks/dimerec_seeds.py`` both train them, and the
chapter's readings of them (norms, reverse steps, diversity, probes, seeds)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recfunnel.data.sequences import (
    SeqBatch,
    SequentialSplit,
    cut_points,
    every_target,
    next_item_metrics,
)
from recfunnel.metrics import metrics_from_ranks
from recfunnel.models.dimerec import (
    ComiRecSA,
    DimeRec,
    DimeRecConfig,
    ablation,
    choose_sample_steps,
)
from recfunnel.profiles import DimeRecSize
from recfunnel.recipes import NEXT_ITEM, fit_next_item, fit_recbole_sasrec
from recfunnel.runtime import resolve_device, set_seed
from recfunnel.study import Gap, Run, Verdict, judge_better, report_commit
from recfunnel.train import History


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
    valid = split.eval_batch("valid")
    train = dataclasses.replace(NEXT_ITEM, device=device, desc=f"{name}, seed {seed}",
                                **fit_options)
    if cfg is None:
        model, history = fit_recbole_sasrec(
            split, seed, dataclasses.replace(train, epochs=size.sasrec_epochs),
            patience=fit_options.get("patience", 10))
    else:
        model = (ComiRecSA if name == "ComiRec-SA" else DimeRec)(cfg)
        batches = (every_target(split, size.batch_size, seed) if size.per_user is None
                   else cut_points(split, size.per_user, size.batch_size, seed))
        history = fit_next_item(model, batches, valid,
                                dataclasses.replace(train, epochs=size.epochs, lr=size.lr))
        if isinstance(model, DimeRec):
            choose_sample_steps(model, valid)
    return model.eval(), history, time.perf_counter() - start




def per_user(model: nn.Module, split: SequentialSplit, ks: Sequence[int] = (10, 20, 50)
             ) -> dict[str, np.ndarray]:
    """Test Recall/NDCG/HR at ``ks`` of every user [U], for paired comparisons."""
    return {k: v.numpy() for k, v in next_item_metrics(model.eval(), split.eval_batch("test"),
                                                       ks=ks, reduce=False).items()}


def norm_trajectory(cfg: DimeRecConfig, split: SequentialSplit, size: DimeRecSize,
                    steps: int, seed: int, device: str = "auto") -> list[float]:
    """Mean item-embedding norm after each of ``steps`` AdamW steps of ``cfg``'s losses,
    written out (no early stopping, no validation): the norm experiment of chapter 4."""
    set_seed(seed)
    on = resolve_device(device)
    model = DimeRec(cfg).to(on)
    optimiser = torch.optim.AdamW(model.parameters(), lr=size.lr)
    batches, norms, epoch = cut_points(split, size.per_user, size.batch_size, seed), [], 0
    while len(norms) < steps:
        for batch in batches(epoch):
            loss, logs = model(batch.to(on))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            norms.append(logs["item_norm"])
            if len(norms) == steps:
                break
        epoch += 1
    return norms


def steps_sweep(model: DimeRec, valid: SeqBatch, test: SeqBatch) -> pd.DataFrame:
    """Validation and test metrics and serving time of one trained DimeRec by the number
    of deterministic reverse steps (1, 2, 5, 10 and all T); the served count is restored."""
    rows, served = [], model.cfg
    for steps in sorted({1, 2, 5, 10, model.cfg.diffusion_steps}):
        model.cfg = dataclasses.replace(served, sample_steps=steps)
        start = time.perf_counter()
        test_metrics = next_item_metrics(model, test, ks=(10, 50))
        seconds = time.perf_counter() - start
        rows.append({"steps": steps, "valid ndcg@10": next_item_metrics(
            model, valid, ks=(10,))["ndcg@10"], "test ndcg@10": test_metrics["ndcg@10"],
            "test recall@50": test_metrics["recall@50"],
            "ms per 1,000 users": 1000 * seconds / len(test) * 1000})
    model.cfg = served
    return pd.DataFrame(rows).set_index("steps")


def top50(batch: SeqBatch, score_fn) -> torch.Tensor:
    """[B, 50] the item ids ``score_fn`` ranks first for each user of ``batch``."""
    return batch.scores(score_fn).topk(50, dim=1).indices


def sampled_scores(model: DimeRec, samples: int, seed: int):
    """A score function: each item's best score over ``samples`` stochastic generations
    (eta = 1, seeds ``seed, seed + 1, ...``), the paper's suggested source of diversity."""
    def score(rows: SeqBatch) -> torch.Tensor:
        rows = rows.to(next(model.parameters()).device)
        draws = [model.space.logits(model.generate(rows, eta=1.0, seed=seed + s),
                                    model.gem.items()) for s in range(samples)]
        return torch.stack(draws).amax(0)
    return score


@torch.no_grad()
def probe_vectors(model: nn.Module, batch: SeqBatch) -> torch.Tensor:
    """[B, d] one vector per user for the probe: the model's query vector, its K
    interests averaged for a multi-interest model (ComiRec-SA)."""
    queries = model.query_vectors(batch.to(next(model.parameters()).device))
    return (queries.mean(1) if queries.dim() == 3 else queries).cpu()


def seed_report(path: Path) -> tuple[pd.DataFrame | None, list[Run], str]:
    """A committed ``dimerec_seeds.py`` report: a frame of its metrics, its ``study.Run``
    records (per-user metrics from the stored ranks) and the commit it ran at."""
    if not path.exists():
        return None, [], "n/a"
    report = json.loads(path.read_text())
    frame = pd.DataFrame([{k: v for k, v in row.items() if k != "rank_top50"}
                          for row in report["rows"]])
    return frame, dimerec_runs(report), report_commit(report)


def seed_verdicts(runs: Sequence[Run], comparisons: Mapping[str, tuple[str, str, str]]
                  ) -> tuple[pd.DataFrame, dict[str, tuple[Gap | None, Verdict]]]:
    """Each comparison ``key -> (a, b, metric)`` paired per user and seed
    (``study.judge_better``): a table, and each key's gap and verdict (the verdict says
    untested where the benchmark did not run one of the two models)."""
    rows, judged = [], {}
    for key, (a, b, metric) in comparisons.items():
        verdict = judge_better(runs, f"{a} beats {b} on {metric}", a, b, metric)
        judged[key] = (verdict.gap, verdict)
        rows.append({"comparison": f"{a} minus {b}", "metric": metric,
                     "gap": verdict.gap.summary if verdict.gap else "not run",
                     "verdict": verdict.text})
    return pd.DataFrame(rows).set_index("comparison"), judged
