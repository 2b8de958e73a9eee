"""Chapter 2's experiments: KuaiFormer against SASRec on MovieLens-100K, and the variants
on planted interests whose per-user readouts the chapter's claims are judged on."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from recfunnel.data.planted import PlantedHistories, plant_interests, planted_world
from recfunnel.data.sequences import (
    SeqBatch,
    SequentialSplit,
    cut_points,
    next_item_metrics,
)
from recfunnel.data.world import World
from recfunnel.metrics import ranking_metrics
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.notebook import plural
from recfunnel.profiles import KuaiFormerSize
from recfunnel.recipes import NEXT_ITEM, fit_next_item, fit_recbole_sasrec
from recfunnel.recipes.retrieval import per_user
from recfunnel.runcache import cached_training
from recfunnel.runtime import resolve_device, set_seed
from recfunnel.study import Gap, Verdict, exact_gap, paired_gap, report_commit, seed_gap
from recfunnel.train import History, TrainConfig

TEST_KS = (10, 20, 50)


def fit_kuaiformer(model: KuaiFormer, split: SequentialSplit, per_user: int, batch_size: int,
                   seed: int, cfg: TrainConfig) -> History:
    """KuaiFormer's training: log Q from the split's training targets, ``per_user`` random
    cut points per user and epoch [proposed: the paper trains on a stream, and one target
    per sequence needs several cuts to see enough targets]. Chapter 3 trains the same
    KuaiFormer as chapter 2: the run cache (``recfunnel.runcache``) loads it there."""
    model.set_item_frequencies(torch.as_tensor(split.train_item_counts()))
    return cached_training(
        model, lambda: fit_next_item(model, cut_points(split, per_user, batch_size, seed),
                                     split.eval_batch("valid"), cfg),
        cfg, "cut_points", split.fingerprint(), per_user, batch_size, seed, label=cfg.desc)


def test_metrics(model: torch.nn.Module, split: SequentialSplit) -> dict[str, float]:
    """Full-ranking Recall, NDCG and HR at 10, 20 and 50 on the split's test targets."""
    return next_item_metrics(model.eval(), split.eval_batch("test"), ks=TEST_KS)


@dataclass
class MovieLensRuns:
    """Each model's test metrics per seed, its training histories, its last-seed model."""

    results: dict[str, list[dict[str, float]]]
    histories: dict[str, list[History]]
    models: dict[str, torch.nn.Module]

    def table(self, extra: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
        """Mean test metrics over seeds (rows: models), with NDCG@10's standard deviation
        when there are several seeds; ``extra``: rows of single-run references."""
        rows = {name: pd.DataFrame(runs).mean() for name, runs in self.results.items()}
        table = pd.DataFrame({**(extra or {}), **rows}).T
        table = table[["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50"]]
        if max(len(runs) for runs in self.results.values()) > 1:
            table["ndcg@10 std"] = pd.Series({name: float(np.std([r["ndcg@10"] for r in runs]))
                                              for name, runs in self.results.items()})
        return table


def movielens_runs(sas_split: SequentialSplit, kf_split: SequentialSplit,
                   kuaiformer: KuaiFormerConfig, size: KuaiFormerSize, seed: int,
                   device: str = "auto") -> MovieLensRuns:
    """SASRec (RecBole's settings, all positions) and KuaiFormer with 1 and 4 interests on
    the same MovieLens-100K split, each seed ``seed, seed + 1, ...`` of the profile."""
    runs = MovieLensRuns({}, {}, {})
    for s in range(seed, seed + size.seeds):
        contenders = {"SASRec": None, "KuaiFormer k=1": 1, "KuaiFormer k=4": 4}
        for name, k in contenders.items():
            set_seed(s)
            cfg = dataclasses.replace(NEXT_ITEM, device=device, desc=f"{name}, seed {s}")
            if k is None:
                model, history = fit_recbole_sasrec(
                    sas_split, s, dataclasses.replace(cfg, epochs=size.sasrec_epochs))
                split = sas_split
            else:
                model = KuaiFormer(dataclasses.replace(kuaiformer, n_interests=k))
                history = fit_kuaiformer(model, kf_split, size.ml_per_user, size.batch_size, s,
                                         dataclasses.replace(cfg, epochs=size.kuaiformer_epochs,
                                                             lr=size.lr))
                split = kf_split
            runs.histories.setdefault(name, []).append(history)
            runs.results.setdefault(name, []).append(test_metrics(model, split))
            runs.models[name] = model
    return runs


# --------------------------------------------------------------------------- planted


@dataclass
class PlantedRun:
    """One KuaiFormer variant trained on the planted histories, with per-user readouts
    [U] of its test targets: NDCG@10, HR@10, HR@50, topic coverage of the top 10, the
    mean cosine between the user's interests (spread), the long-tail share of the top 50."""

    name: str
    cfg: KuaiFormerConfig
    split: SequentialSplit
    model: KuaiFormer
    history: History
    interests: torch.Tensor  # [U, k, D] of the test users
    per_user: dict[str, np.ndarray]


def planted_config(planted: PlantedHistories, size: KuaiFormerSize, max_len: int,
                   compression: tuple[tuple[int, int], ...] = (), n_raw: int | None = None,
                   k: int = 4, log_q: bool = True) -> KuaiFormerConfig:
    """The chapter's KuaiFormer on planted histories: one width and depth for every
    variant, only the history length, compression, interests or logQ changing."""
    return KuaiFormerConfig(n_items=planted.n_items, d_model=size.d_model,
                            d_ffn=2 * size.d_model, n_interests=k, compression=compression,
                            n_raw=max_len if n_raw is None else n_raw, p_dropout=0.0,
                            aux_weight=1.0, log_q=log_q)


def long_tail_items(planted: PlantedHistories) -> torch.Tensor:
    """[V] True for the items watched no more often than the median item."""
    counts = np.bincount(planted.interactions.item_id, minlength=planted.n_items)
    tail = torch.as_tensor(counts <= np.median(counts[1:]))
    tail[0] = False
    return tail


def planted_run(name: str, planted: PlantedHistories, cfg: KuaiFormerConfig,
                size: KuaiFormerSize, seed: int, device: str = "auto") -> PlantedRun:
    """Train ``cfg`` for the profile's planted epochs (no early stop) and read it out."""
    split = SequentialSplit(planted.interactions, max_len=cfg.max_len)
    set_seed(seed)
    model = KuaiFormer(cfg)
    train = dataclasses.replace(NEXT_ITEM, epochs=size.planted_epochs, lr=size.lr,
                                patience=None, device=device, desc=name)
    history = fit_kuaiformer(model, split, size.per_user, size.batch_size, seed, train)
    model.eval()
    on = next(model.parameters()).device
    test = split.eval_batch("test")
    scores = test.scores(lambda batch: model.score_all(batch.to(on)))
    metrics = ranking_metrics(scores, test.target_ids, ks=(10, 50), reduce=False)
    top50 = scores.topk(50, dim=1).indices  # [U, 50]
    item_topic = torch.as_tensor(planted.item_topic)
    coverage = [np.isin(topics, item_topic[row[:10]].numpy()).mean()
                for topics, row in zip(planted.user_topics, top50, strict=True)]
    vectors = interests_of(model, test)
    k = cfg.n_interests
    unit = F.normalize(vectors, dim=-1)
    cosine = (unit @ unit.transpose(1, 2))[:, ~torch.eye(k, dtype=torch.bool)]  # [U, k(k-1)]
    per_user = {"ndcg@10": metrics["ndcg@10"].numpy(), "hr@10": metrics["hr@10"].numpy(),
                "hr@50": metrics["hr@50"].numpy(), "coverage": np.asarray(coverage),
                "spread": cosine.mean(1).numpy() if k > 1 else np.full(len(test), 1.0),
                "long_tail": long_tail_items(planted)[top50].float().mean(1).numpy()}
    return PlantedRun(name, cfg, split, model, history, vectors, per_user)


@torch.no_grad()
def interests_of(model: KuaiFormer, batch: SeqBatch, chunk: int = 256) -> torch.Tensor:
    """[B, k, D] interest vectors of ``batch``'s users, on the CPU."""
    on = next(model.parameters()).device
    return torch.cat([model.interests(part.user_seq, part.is_pad).cpu()
                      for part in (batch[i:i + chunk].to(on) for i in range(0, len(batch), chunk))])


def planted_gap(runs: dict[str, PlantedRun], a: str, b: str, key: str) -> Gap:
    """Run a's readout minus run b's, paired over the planted users."""
    return paired_gap(runs[a].per_user[key], runs[b].per_user[key], a=a, b=b, metric=key)


def readout(runs: dict[str, PlantedRun], names: Sequence[str]) -> pd.DataFrame:
    """Mean readouts per run, and NDCG@10's standard error over users for scale."""
    table = pd.DataFrame({name: {key: float(values.mean()) for key, values in
                                 runs[name].per_user.items()} for name in names}).T
    ndcg = [runs[name].per_user["ndcg@10"] for name in names]
    table.insert(1, "± se", [float(v.std(ddof=1) / np.sqrt(len(v))) for v in ndcg])
    return table


def step_seconds(run: PlantedRun, batch_size: int, device: str = "auto",
                 repeats: int = 3) -> float:
    """Seconds of one training step (forward and backward) of a fresh copy of ``run``'s
    model on a batch of ``batch_size`` users, after one warm-up step."""
    on = resolve_device(device)
    model = KuaiFormer(run.cfg).to(on).train()
    users = run.split.user_ids[:batch_size]
    positions = np.array([len(run.split.sequences[u]) - 3 for u in users])
    batch = run.split.batch(users, positions).to(on)
    model(batch).backward()  # warm-up
    if on.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        model(batch).backward()
    if on.type == "cuda":
        torch.cuda.synchronize()  # GPU work is asynchronous: wait before reading the clock
    return (time.perf_counter() - started) / repeats


# --------------------------------------------------------------------------- catalogue size

CATALOGUE_WINDOW = 64  # items of history in the sweep
CATALOGUE_MARGIN = 0.05  # in-batch "not worse" than full: within 5 % of its NDCG@10


def catalogue_sweep(size: KuaiFormerSize, seed: int, device: str = "auto",
                    item_counts: Sequence[int] | None = None
                    ) -> dict[int, dict[str, PlantedRun]]:
    """KuaiFormer (k = 4, 64 items, no auxiliary loss: the two losses of the interest
    tokens alone) trained with the paper's in-batch softmax with logQ and with a softmax
    over the whole catalogue, on planted worlds of ``size.catalogue_users`` users and each
    of ``item_counts`` items (default: the profile's), one world per count from ``seed``."""
    sweep: dict[int, dict[str, PlantedRun]] = {}
    for n_items in item_counts or size.catalogue_sizes:
        world = World.build(planted_world(size.catalogue_users, n_items, size.planted_topics,
                                          seed=seed))
        planted = plant_interests(world, length=CATALOGUE_WINDOW + 2, stickiness=0.3,
                                  seed=seed)
        base = dataclasses.replace(planted_config(planted, size, CATALOGUE_WINDOW),
                                   aux_weight=0.0)
        sweep[n_items] = {loss: planted_run(f"{n_items:,} items, {loss}", planted,
                                            dataclasses.replace(base, loss=loss), size, seed,
                                            device)
                          for loss in ("in_batch", "full")}
    return sweep


def catalogue_record(sweep: Mapping[int, Mapping[str, PlantedRun]]) -> dict[str, Any]:
    """The sweep as plain data (what ``benchmarks/kuaiformer_catalogue.py`` stores and the
    chapter reads): per catalogue size and loss, every test user's NDCG@10 and the seconds
    of training."""
    return {str(n): {loss: {"ndcg@10": run.per_user["ndcg@10"].tolist(),
                            "seconds": run.history.seconds}
                     for loss, run in runs.items()} for n, runs in sweep.items()}


def catalogue_verdicts(record: Mapping[str, Any], margin: float = CATALOGUE_MARGIN
                       ) -> tuple[pd.DataFrame, dict[int, Verdict], dict[int, Verdict]]:
    """Per catalogue size: the table (NDCG@10 of each loss, the gap full - in-batch and its
    standard error, seconds), whether the full softmax wins, and whether the in-batch
    softmax is not worse (within ``margin`` x the full softmax's NDCG@10), paired per
    user."""
    rows, wins, level = {}, {}, {}
    for n, runs in sorted(record.items(), key=lambda kv: int(kv[0])):
        gap = paired_gap(runs["full"]["ndcg@10"], runs["in_batch"]["ndcg@10"],
                         a="full softmax", b="in-batch", metric="ndcg@10")
        n = int(n)
        wins[n] = Verdict.better(f"the full softmax wins with {n:,} items", gap)
        level[n] = Verdict.not_worse(
            f"the in-batch softmax is not worse with {n:,} items",
            paired_gap(runs["in_batch"]["ndcg@10"], runs["full"]["ndcg@10"], a="in-batch",
                       b="full softmax", metric="ndcg@10"), margin * gap.mean_a)
        rows[n] = {"in-batch": gap.mean_b, "full": gap.mean_a, "full - in-batch": gap.mean,
                   "± se": gap.se, "in-batch s": runs["in_batch"]["seconds"],
                   "full s": runs["full"]["seconds"], "full wins": wins[n].text,
                   "in-batch not worse": level[n].text}
    table = pd.DataFrame(rows).T
    table.index.name = "items"
    return table, wins, level


# --------------------------------------------------------------------------- the peer


PEER_KEYS = ("parity_pct", "recbole_epochs", "recbole_epoch_s", "reached", "kf_vs_sasrec",
             "seeds", "commit")


def peer_summary(report: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A ``benchmarks/peer_recbole.py`` report: one row per run, and the values the
    chapter quotes (``PEER_KEYS``): our SASRec against RecBole's at the same seed, the
    time our SASRec took to reach RecBole's best validation score, the better KuaiFormer
    against our SASRec over seeds, and the commit the runs were made at."""
    def setting(run: Mapping[str, Any]) -> str:  # our SASRec's sweep (newer reports)
        if "dropout" not in run:
            return ""
        return f"dropout {run['dropout']:g}" + (", separate output" if run["separate_output"]
                                                 else "") + (" (chosen)" if run["chosen"]
                                                             else "")

    table = pd.DataFrame([{
        "model": run["model"], "seed": run.get("seed", 0), "setting": setting(run),
        "epochs": run["epochs"], "wall s": round(run["wall_seconds"]),
        "best valid NDCG@10": run["best_valid_ndcg@10"], "test NDCG@10": run["test_ndcg@10"],
        "test Recall@10": run["test_recall@10"],
        "s to RecBole's best valid": run.get("seconds_to_recbole_best_valid"),
    } for run in report["runs"]]).set_index(["model", "seed", "setting"])
    # the runs that count: all but the sweep's settings that validation did not choose
    kept = [run for run in report["runs"] if run.get("chosen", True)]
    recbole, ours = kept[0], kept[1]
    means = pd.DataFrame(kept).groupby("model")["test_ndcg@10"].mean()
    reached = ours.get("seconds_to_recbole_best_valid")
    best_kf = max(means["recfunnel KuaiFormer k=1"], means["recfunnel KuaiFormer k=4"])
    values = {
        "parity_pct": f"{100 * (ours['test_ndcg@10'] / recbole['test_ndcg@10'] - 1):+.1f}",
        "recbole_epochs": recbole["epochs"],
        "recbole_epoch_s": round(recbole["wall_seconds"] / recbole["epochs"]),
        "reached": "did not reach RecBole's best validation NDCG@10 within its epochs"
        if reached is None else f"reached RecBole's best validation NDCG@10 after "
        f"{reached:.0f} s, against RecBole's {recbole['wall_seconds']:.0f} s in all",
        "kf_vs_sasrec": f"{100 * (best_kf / means['recfunnel SASRec'] - 1):+.1f}",
        "seeds": plural(len(report.get("seeds", [0])), "seed"),
        "commit": report_commit(report)}
    return table, values


PARITY_MARGIN = 0.05  # our SASRec "reaches" RecBole's: not worse by 5 % of its NDCG@10
SPEEDUP = 2.0  # ... and reaches RecBole's best validation score in half RecBole's wall time


def peer_verdicts(report: Mapping[str, Any]) -> dict[str, Verdict]:
    """The reference SASRec against RecBole's, in one ``benchmarks/peer_recbole.py`` run:
    "parity": its test NDCG@10 not worse than RecBole's by ``PARITY_MARGIN`` of RecBole's,
    paired per test user (our chosen setting's seeds each against RecBole's one run);
    "speed": RecBole's wall time over the time ours took to reach RecBole's best validation
    NDCG@10 exceeds ``SPEEDUP``, over our seeds (a seed that never reached it counts 0).
    Empty for a report without RecBole or per-user ranks (older reports)."""
    runs = [run for run in report["runs"] if run.get("chosen", True)]
    recbole = next((run for run in runs if run["model"].startswith("RecBole")), None)
    ours = [run for run in runs if run["model"] == "recfunnel SASRec"]
    if recbole is None or not ours or not all("test_ranks" in run for run in [recbole, *ours]):
        return {}
    theirs = per_user(recbole)
    parity = paired_gap(np.stack([per_user(run) for run in ours]),
                        np.stack([theirs] * len(ours)), a="our SASRec", b="RecBole's SASRec",
                        metric="ndcg@10")
    ratios = [recbole["wall_seconds"] / run["seconds_to_recbole_best_valid"]
              if run.get("seconds_to_recbole_best_valid") else 0.0 for run in ours]
    speed = seed_gap(ratios, [SPEEDUP] * len(ours), a="RecBole's wall time / ours to its best "
                     "validation", b=f"{SPEEDUP:g}", metric="time ratio")
    return {
        "parity": Verdict.not_worse(
            f"our SASRec reaches RecBole's test NDCG@10 (within {PARITY_MARGIN:.0%} of it)",
            parity, margin=PARITY_MARGIN * parity.mean_b),
        "speed": Verdict.better(
            f"our SASRec reaches RecBole's best validation NDCG@10 in under 1/{SPEEDUP:g} of "
            "RecBole's wall time", speed)}


def compression_verdict(runs: dict[str, PlantedRun], pairs_ratio: float,
                        margin: float) -> Verdict:
    """Claim 2: the compressed long history is not worse than the raw one (``margin``: a
    share of the raw run's NDCG@10, declared before the runs) and costs at most half its
    attention pairs (``pairs_ratio``: raw over compressed, counted exactly)."""
    gap = planted_gap(runs, "long compressed", "long raw", "ndcg@10")
    return Verdict.all_of("compression is nearly free: not worse than the raw long "
                          "history, at most half its attention pairs", [
        Verdict.not_worse("compressed vs raw NDCG@10", gap, margin * gap.mean_b),
        Verdict.better("raw / compressed attention pairs above 2",
                       exact_gap(pairs_ratio, a="raw", b="compressed", metric="pairs ratio"),
                       threshold=2.0)])


def length_verdict(runs: dict[str, PlantedRun], shortest: int, margin: float) -> Verdict:
    """Claim 4: 64 items beat the ``shortest`` history, and the compressed long history is
    not worse than 64 items (``margin``: a share of the 64-item run's NDCG@10)."""
    longer = planted_gap(runs, "k=4", f"n={shortest}", "ndcg@10")
    long = planted_gap(runs, "long compressed", "k=4", "ndcg@10")
    return Verdict.all_of("longer histories help: 64 items beat the shortest, and the "
                          "compressed long history does not fall back", [
        Verdict.better(f"64 items beat {shortest}", longer),
        Verdict.not_worse("long compressed vs 64 items", long, margin * long.mean_b)])
