"""Chapter 4's experiments: DimeRec, its extractor ComiRec-SA, SASRec and the ablations,
trained as the chapter and ``benchmarks/dimerec_seeds.py`` both train them, and the
chapter's readings of them (norms, reverse steps, diversity, probes, seeds)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recfunnel.data.movielens import MovieLens, first_genres
from recfunnel.data.sequences import (
    SeqBatch,
    SequentialSplit,
    cut_points,
    every_target,
    next_item_metrics,
)
from recfunnel.metrics import (
    category_coverage,
    intra_list_diversity,
    linear_probe,
    metrics_from_ranks,
)
from recfunnel.models.baselines import SASRec
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


@dataclass
class SeedRuns:
    """Contenders trained over seeds: the last seed's model and history per name, its
    training seconds, and every user's test metrics per seed (name -> metric -> [S, U])."""

    models: dict[str, nn.Module] = field(default_factory=dict)
    histories: dict[str, History] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    users: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def mean_users(self) -> dict[str, dict[str, np.ndarray]]:
        """Each user's metrics averaged over the seeds (name -> metric -> [U])."""
        return {name: {k: v.mean(0) for k, v in metrics.items()}
                for name, metrics in self.users.items()}


def train_over_seeds(names: Sequence[str], contenders: Mapping[str, DimeRecConfig | None],
                     split: SequentialSplit, size: DimeRecSize, seed: int,
                     device: str = "auto") -> SeedRuns:
    """``fit_contender`` for each name over the profile's seeds ``seed, seed + 1, ...``."""
    runs, per_seed = SeedRuns(), {}
    for s in range(seed, seed + size.seeds):
        for name in names:
            set_seed(s)
            model, runs.histories[name], runs.seconds[name] = fit_contender(
                name, contenders[name], split, size, s, device=device)
            runs.models[name] = model
            per_seed.setdefault(name, []).append(per_user(model, split))
    runs.users = {name: {k: np.stack([run[k] for run in seeds]) for k in seeds[0]}
                  for name, seeds in per_seed.items()}
    return runs


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
    return batch.top_items(score_fn, 50)


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


@dataclass
class ReverseTrail:
    """One user's deterministic generation, step by step: the step t, the cosine of the
    predicted x0 with each of the user's K guidance interests [T, K] and with the true next
    item [T], and that item's rank among all items [T]."""

    steps: list[int]
    to_interest: np.ndarray
    to_target: list[float]
    ranks: list[int]


@torch.no_grad()
def reverse_trail(model: DimeRec, row: SeqBatch, seed: int) -> ReverseTrail:
    """Follow ``model``'s reverse chain for the one user of ``row`` (all T steps)."""
    row = row.to(next(model.parameters()).device)
    trail: list = []
    model.generate(row, steps=None, seed=seed, trajectory=trail)
    interests = model.guidance(row)[0]  # [K, d]
    items = model.gem.items()  # [V, d]
    target = items[row.target_ids[0]]
    return ReverseTrail(
        steps=[t for t, _, _ in trail],
        to_interest=np.array([(interests @ x0[0]).cpu().numpy() for _, _, x0 in trail]),
        to_target=[float(target @ x0[0]) for _, _, x0 in trail],
        ranks=[int((items[1:] @ x0[0] > target @ x0[0]).sum()) + 1 for _, _, x0 in trail])


def genre_diversity(lists: Mapping[str, torch.Tensor], genres: torch.Tensor
                    ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per top-50 list ([B, 50] item ids): genres covered, intra-list diversity and distinct
    items over all users; and each user's genre coverage [B], for paired comparisons."""
    coverage = {name: category_coverage(ids, genres).float().numpy()
                for name, ids in lists.items()}
    frame = pd.DataFrame({
        name: {"genres in top-50": float(coverage[name].mean()),
               "ILD@50": intra_list_diversity(ids, genres.float()).mean().item(),
               "distinct items (all users)": len(torch.unique(ids))}
        for name, ids in lists.items()}).T
    return frame, coverage


def item_tables(models: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Each contender's item embeddings [V, d]: SASRec's table, ComiRec-SA's and
    DimeRec's item vectors (DimeRec's on the sphere)."""
    return {name: (model.item_emb.weight if isinstance(model, SASRec) else
                   model.gem.items() if isinstance(model, DimeRec) else model.items()
                   ).detach().cpu() for name, model in models.items()}


def genre_probes(models: Mapping[str, nn.Module], movielens: MovieLens, test: SeqBatch,
                 seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, float]]:
    """Linear probes of the first genre: from each item embedding (accuracy per item, on
    the same folds for every model) and from each test user's vector to the next film's
    genre; the table, the per-item accuracies and the majority-class baselines."""
    first_genre = torch.as_tensor(first_genres(movielens))  # [items], by item id order
    item_ids = torch.as_tensor(np.sort(movielens.items["item_id"].to_numpy()))
    target_genre = first_genre[test.target_ids - 1]
    per_item = {name: linear_probe(table[item_ids], first_genre, seed=seed, reduce=False)
                for name, table in item_tables(models).items()}
    frame = pd.DataFrame({
        name: {"item embedding -> first genre": per_item[name].mean(),
               "user vector -> next film's genre": linear_probe(
                   probe_vectors(model, test), target_genre, seed=seed)}
        for name, model in models.items()}).T
    majority = {"items": float(torch.bincount(first_genre).max() / len(first_genre)),
                "users": float(torch.bincount(target_genre).max() / len(target_genre))}
    return frame, per_item, majority
