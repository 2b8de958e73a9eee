"""Chapter 11's experiment: the earlier chapters' models trained on one world and wired into
one funnel, RecFlow's stage samples as a ranker's negatives, and LCRON against per-stage
training; what the chapter and ``benchmarks/peer_lcron.py`` both call.

The world is simulated once (``build_world``); its first days train every model, the last
day is served. Retrieval channels (KuaiFormer, DimeRec, ELASTIC) learn next effective view
from the effective-view sequences; pre-ranking and ranking are the cascade task's two-tower
and DIN, trained together by LCRON on RecFlow's files; HoME, trained on the exposures and
the stage samples, gives the task probabilities that re-ranking fuses with the ranking score
before diversifying by MMR over KuaiFormer's item vectors. (HoME reads no history: ranking
our funnel's candidates by it alone is measured in the chapter, and loses to popularity.)
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recfunnel.data.cascade import CascadeBatch, CascadeData
from recfunnel.data.funnel import WorldLog, make_world
from recfunnel.data.impressions import Impressions
from recfunnel.data.recflow import RecFlow
from recfunnel.data.sequences import SeqBatch, SequentialSplit, cut_points
from recfunnel.data.world import World, WorldConfig
from recfunnel.funnel import (
    Channel,
    Funnel,
    Requests,
    Rerank,
    Retrieval,
    TopK,
    expected_engagement,
    stage_recall,
    topic_diversity,
)
from recfunnel.models.cascade import CascadeConfig
from recfunnel.models.dimerec import DimeRec, DimeRecConfig, choose_sample_steps
from recfunnel.models.elastic import Elastic, ElasticConfig
from recfunnel.models.home import HoMEConfig
from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig
from recfunnel.models.lcron import Cascade, joint_recall
from recfunnel.models.multitask import MultiTaskRanker, build_ranker, predict
from recfunnel.profiles import CapstoneSize
from recfunnel.recipes import NEXT_ITEM, fit_multitask, fit_next_item
from recfunnel.runtime import set_seed
from recfunnel.study import Gap, Verdict, paired_gap
from recfunnel.train import TrainConfig, fit, shuffled

# [proposed] worlds sized for the capstone: a catalogue small enough that sequence models
# see each item several times, RecFlow's 10 logged samples of each stage, and a logged
# ranking stage whose noise is 1.0 std of the relevance (chapter 1's default: 0.4): the
# production ranker decides with signals the benchmark's models never see. With 0.4 every
# cascade loss reaches a joint recall of 0.98 (no room to compare them); with 1.0, BCE
# lands at 0.86 on the smoke world (seeds 0 and 1), near RecFlow's 0.854.
CAPSTONE_NOISE = (1.5, 1.0, 0.7, 1.0, 0.25, 0.15)
CAPSTONE_WORLDS = {
    "smoke": WorldConfig(n_users=200, n_videos=1_900, n_live=100, n_creators=300, n_topics=16,
                         n_days=4, requests_per_user_day=4.0, pool_size=2_000,
                         funnel=(400, 150, 60, 25, 10), stage_noise=CAPSTONE_NOISE),
    "cpu": WorldConfig(n_users=1_500, n_videos=5_800, n_live=200, n_creators=1_000,
                       n_topics=32, n_days=6, requests_per_user_day=5.0, pool_size=3_000,
                       funnel=(1_000, 400, 120, 40, 10), stage_noise=CAPSTONE_NOISE),
    "gpu": WorldConfig(n_users=6_000, n_videos=19_600, n_live=400, n_creators=3_000,
                       n_topics=64, n_days=8, requests_per_user_day=6.0, pool_size=6_000,
                       funnel=(2_000, 800, 200, 60, 10), stage_noise=CAPSTONE_NOISE),
}
TASKS = ("effective_view", "long_view", "like", "follow", "comment", "forward")
TASK_GROUPS = {"watch": ("effective_view", "long_view"),
               "interaction": ("like", "follow", "comment", "forward")}
# [proposed] multi-task score fusion: Kuaishou's formula is not published; rarer, stronger
# signals weigh more
FUSION = {"effective_view": 1.0, "long_view": 1.0, "like": 2.0, "follow": 4.0, "comment": 3.0,
          "forward": 3.0}
RANK_FIELDS = ("user_id", "item_id", "creator", "topic", "duration_bucket", "upload_type",
               "age", "gender", "province")
DURATION_BUCKETS = 10


def build_world(size: CapstoneSize, seed: int) -> tuple[World, WorldLog]:
    """The chapter's world (``CAPSTONE_WORLDS[size.world]``) under ``seed``."""
    return make_world(CAPSTONE_WORLDS[size.world], seed=seed)


def split_days(log: WorldLog) -> tuple[list[str], str]:
    """(training days, the served test day): the last day is served."""
    days = list(log.rows)
    return days[:-1], days[-1]


# --------------------------------------------------------------------------- retrieval


def view_split(log: WorldLog, days: Sequence[str], max_len: int = 50) -> SequentialSplit:
    """Every user's effective views of ``days`` in time order (items + 1), leave-one-out."""
    rows = pd.concat([log.rows[d] for d in days])
    views = rows[rows["effective_view"] == 1]
    frame = pd.DataFrame({"user_id": views["user_id"].to_numpy(),
                          "item_id": views["video_id"].to_numpy() + 1,
                          "timestamp": views["request_timestamp"].to_numpy()})
    counts = frame.groupby("user_id")["item_id"].transform("size")
    return SequentialSplit(frame[counts >= 3], max_len=max_len)


def channel_models(size: CapstoneSize, n_items: int) -> dict[str, nn.Module]:
    """KuaiFormer (chapter 2), ELASTIC (chapter 3) and DimeRec (chapter 4) at this size,
    built in this order from the current seed state."""
    d = size.d_model
    return {
        "KuaiFormer": KuaiFormer(KuaiFormerConfig(n_items=n_items, d_model=d, d_ffn=2 * d,
                                                  compression=((1, 18),), n_raw=32,
                                                  n_interests=4)),
        "ELASTIC": Elastic(ElasticConfig(n_items=n_items, max_len=50, d_model=d, d_ffn=2 * d,
                                         n_experts=4, memory_size=256, top_c=4)),
        "DimeRec": DimeRec(DimeRecConfig(n_items=n_items, max_len=50, d_model=d,
                                         diffusion_steps=20, hidden=4 * d)),
    }


def train_channels(split: SequentialSplit, size: CapstoneSize, seed: int,
                   progress: bool = True) -> dict[str, nn.Module]:
    """Each channel model trained on next effective view, early-stopped on validation
    NDCG@10 (the recipes of chapters 2-4), in eval mode."""
    set_seed(seed)
    models = channel_models(size, split.n_items)
    valid = split.eval_batch("valid")
    counts = torch.as_tensor(split.train_item_counts())
    for name, model in models.items():
        if isinstance(model, KuaiFormer):
            model.set_item_frequencies(counts)
        cfg = dataclasses.replace(NEXT_ITEM, epochs=size.seq_epochs, lr=size.lr, seed=seed,
                                  desc=name, progress=progress, patience=2)
        fit_next_item(model, cut_points(split, size.per_user, 256, seed), valid, cfg)
        if isinstance(model, DimeRec):
            choose_sample_steps(model, valid)
        model.eval()
    return models


def sequence_channel(model: nn.Module, n_items: int) -> Callable[[Requests], np.ndarray]:
    """``score_all`` of a sequence model over the world's catalogue: the request's history
    (newest last) as a ``SeqBatch``; items the model's vocabulary lacks score -inf."""
    @torch.no_grad()
    def score_all(requests: Requests) -> np.ndarray:
        seq = torch.as_tensor(requests.history[..., 0])
        batch = SeqBatch(torch.as_tensor(requests.users), seq, seq == 0,
                         torch.zeros(len(seq), dtype=torch.long))
        scores = model.score_all(batch).float()[:, 1:].numpy()  # column v: world item v
        out = np.full((len(requests), n_items), -np.inf)
        out[:, :scores.shape[1]] = scores
        return out
    return score_all


def popularity_counts(log: WorldLog, days: Sequence[str]) -> np.ndarray:
    """[I] effective views of each item over ``days``."""
    rows = pd.concat([log.rows[d] for d in days])
    views = rows.loc[rows["effective_view"] == 1, "video_id"].to_numpy()
    return np.bincount(views, minlength=log.world.cfg.n_items).astype(np.float64)


def popularity_channel(counts: np.ndarray) -> Callable[[Requests], np.ndarray]:
    return lambda requests: np.broadcast_to(counts, (len(requests), len(counts)))


def popularity_scorer(counts: np.ndarray):
    return lambda requests, candidates: counts[candidates]


# --------------------------------------------------------------------------- the cascade task


def cascade_data(log: WorldLog) -> tuple[CascadeData, CascadeData]:
    """(training days, test day) of LCRON's task, read back from the world written in
    RecFlow's layout (the files LCRON's own code reads)."""
    train_days, test_day = split_days(log)
    with tempfile.TemporaryDirectory() as folder:
        recflow = RecFlow(log.write_recflow(folder))
        return (CascadeData.from_recflow(recflow, train_days),
                CascadeData.from_recflow(recflow, [test_day]))


def train_cascade(data: CascadeData, loss: str, size: CapstoneSize, seed: int,
                  progress: bool = True) -> Cascade:
    """A two-tower retrieval and a DIN ranking trained by ``loss`` (``models.lcron``):
    Adam at lr 0.01 without clipping, as LCRON's code; ``size.cascade_epochs`` passes."""
    set_seed(seed)
    cfg = CascadeConfig(data.user_cardinalities, data.item_cardinalities)
    model = Cascade(cfg, loss)
    train = TrainConfig(epochs=size.cascade_epochs, lr=1e-2, grad_clip=None, seed=seed,
                        progress=progress, desc=f"cascade, {loss}")
    fit(model, shuffled(data.batch(), size.cascade_batch, seed), cfg=train)
    return model.eval()


@torch.no_grad()
def cascade_recall(model: Cascade, data: CascadeData, chunk: int = 4_096) -> np.ndarray:
    """[R] joint Recall@10@20 of every test request."""
    batch = data.batch()
    out = []
    for start in range(0, len(batch), chunk):
        part = batch[start:start + chunk]
        retrieval, ranking = model.scores(part)
        out.append(joint_recall(retrieval, ranking, part.gain, part.mask).numpy())
    return np.concatenate(out)


def item_fields(world: World, items: np.ndarray) -> np.ndarray:
    """[..., 3] (item, creator, topic) + 1 of world items."""
    return np.stack([items + 1, world.item_creator[items] + 1, world.item_topic[items] + 1], -1)


def stage_scorer(stage: nn.Module, world: World):
    """A cascade stage (``Cascade.retrieval``, the two-tower, or ``Cascade.ranking``, DIN)
    as a funnel scorer: the request's user fields and history against its candidates."""
    @torch.no_grad()
    def score(requests: Requests, candidates: np.ndarray) -> np.ndarray:
        zeros = torch.zeros(candidates.shape)
        batch = CascadeBatch(torch.as_tensor(requests.user_fields),
                             torch.as_tensor(requests.history),
                             torch.as_tensor(item_fields(world, candidates)), zeros, zeros,
                             zeros.bool())
        return stage(batch).numpy()
    return score


def two_tower_scorer(model: Cascade, world: World):
    """Pre-ranking: the cascade's two-tower."""
    return stage_scorer(model.retrieval, world)


def din_scorer(model: Cascade, world: World):
    """Ranking: the cascade's DIN, each candidate against the request's history."""
    return stage_scorer(model.ranking, world)


def table_vectors(model: nn.Module, n_items: int) -> Callable[[np.ndarray], torch.Tensor]:
    """``vectors(items) -> [..., D]``: a sequence model's item table (``item_vectors()``)
    read for world items (zeros for items outside its vocabulary): what re-ranking's MMR
    measures similarity with, items watched in the same sessions lying close."""
    table = model.item_vectors().detach().float()[1:]  # row v: world item v
    padded = torch.zeros(n_items, table.shape[1])
    padded[:len(table)] = table[:n_items]
    return lambda items: padded[torch.as_tensor(items)]


# --------------------------------------------------------------------------- ranking


def _duration_bucket(world: World) -> np.ndarray:
    log_duration = np.log(world.item_meta["duration_ms"])
    edges = np.quantile(log_duration, np.linspace(0, 1, DURATION_BUCKETS + 1)[1:-1])
    return np.searchsorted(edges, log_duration) + 1


def rank_features(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[N, 9] the fields of ``RANK_FIELDS`` (+ 1: 0 is padding) of (user, item) pairs."""
    demo = world.demographics
    return np.stack([users + 1, items + 1, world.item_creator[items] + 1,
                     world.item_topic[items] + 1, _duration_bucket(world)[items],
                     world.item_meta["upload_type"][items] + 1, demo["age"][users] + 1,
                     demo["gender"][users] + 1, demo["province"][users] + 1], 1)


def rank_impressions(log: WorldLog, days: Sequence[str], stage_samples: float = 0.0,
                     seed: int = 0) -> Impressions:
    """The exposures of ``days`` with their six behaviours, plus a random share
    ``stage_samples`` of the logged items the funnel filtered out, as negatives of every task
    (RecFlow's proposal; 0: exposures only)."""
    world, cfg = log.world, log.world.cfg
    rng = np.random.default_rng(seed)
    frames = []
    for d, day in enumerate(days):
        rows = log.rows[day]
        keep = (rows["realshow"] == 1).to_numpy() | (rng.random(len(rows)) < stage_samples)
        frames.append(rows[keep].assign(day_index=d))
    rows = pd.concat(frames)
    users, items = rows["user_id"].to_numpy(), rows["video_id"].to_numpy()
    cards = (cfg.n_users + 1, cfg.n_items + 1, cfg.n_creators + 1, cfg.n_topics + 1,
             DURATION_BUCKETS + 1, 6, 8, 3, 32)
    return Impressions(rank_features(world, users, items),
                       rows[list(TASKS)].to_numpy(np.int8), users, rows["day_index"].to_numpy(),
                       RANK_FIELDS, cards, TASKS, TASK_GROUPS)


def home_config(size: CapstoneSize) -> HoMEConfig:
    return HoMEConfig(d_emb=size.rank_d, tower_hidden=size.rank_d, meta_hidden=(32, 16),
                      task_hidden=(16,), lora_rank=4)


def train_ranker(log: WorldLog, size: CapstoneSize, seed: int, stage_samples: bool,
                 progress: bool = True) -> MultiTaskRanker:
    """HoME (chapter 5) on the training days but the last (with ``size.stage_samples`` of
    the filtered-out items when ``stage_samples``), early-stopped on the last training day's
    exposures (mean AUC over tasks)."""
    train_days, _ = split_days(log)
    train = rank_impressions(log, train_days[:-1], size.stage_samples if stage_samples else 0.0,
                             seed)
    valid = rank_impressions(log, train_days[-1:])
    set_seed(seed)
    model = build_ranker(home_config(size), train)
    cfg = TrainConfig(epochs=size.rank_epochs, lr=3e-3, monitor="valid_mean_auc", patience=1,
                      seed=seed, progress=progress, desc="HoME" + (" + stage samples"
                                                                   if stage_samples else ""))
    fit_multitask(model, train, valid, cfg, batch_size=1_024)
    return model.eval()


def ranker_scores(model: MultiTaskRanker, world: World, users: np.ndarray, items: np.ndarray
                  ) -> np.ndarray:
    """[N, T] task probabilities of (user, item) pairs."""
    features = rank_features(world, users, items)
    data = Impressions(features, np.zeros((len(features), len(TASKS)), np.int8), users,
                       np.zeros(len(users), np.int64), RANK_FIELDS,
                       tuple(int(c) for c in model.embed.limits), TASKS, TASK_GROUPS)
    return predict(model, data)


def fused_scorer(model: MultiTaskRanker, world: World, fusion: Mapping[str, float] = FUSION):
    """Ranking and re-ranking: sum_t w_t p_t(user, item) over HoME's tasks."""
    weights = np.array([fusion[t] for t in TASKS])

    def score(requests: Requests, candidates: np.ndarray) -> np.ndarray:
        R, C = candidates.shape
        users = np.repeat(requests.users, C)
        return (ranker_scores(model, world, users, candidates.ravel()) @ weights).reshape(R, C)
    return score


# --------------------------------------------------------------------------- the funnel


def catalogue_agreement(scorers: Mapping[str, Any], world: World, requests: Requests,
                        n_items: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> [R] rank correlation (Spearman) between each scorer's scores and the truth
    over ``n_items`` random short videos per request: how well a stage model orders items it
    may meet in our funnel, not only the logged ones."""
    candidates = np.random.default_rng(seed).integers(0, world.cfg.n_videos,
                                                      (len(requests), n_items))
    truth = np.concatenate([world.relevance(requests.users[r:r + 1], candidates[r],
                                            requests.day, requests.minute[r:r + 1])
                            for r in range(len(requests))])
    def spearman(scores: np.ndarray) -> np.ndarray:
        a, b = percentile(scores), percentile(truth)
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return {name: spearman(np.asarray(score(requests, candidates), dtype=np.float64))
            for name, score in scorers.items()}


def percentile(scores: np.ndarray) -> np.ndarray:
    """[R, C] each score's rank within its row, scaled to [0, 1] (1: the best)."""
    order = scores.argsort(1).argsort(1)
    return order / max(scores.shape[1] - 1, 1)


def blended_scorer(*scorers):
    """The mean of several scorers' per-request percentiles: a fusion that no scale of any
    one model can dominate."""
    def score(requests: Requests, candidates: np.ndarray) -> np.ndarray:
        return np.mean([percentile(s(requests, candidates)) for s in scorers], axis=0)
    return score


@dataclass
class StageModels:
    """Everything a funnel is built from."""

    channels: dict[str, nn.Module]
    popularity: np.ndarray  # [I] effective views of the training days
    cascade: Cascade  # its two-tower pre-ranks, its DIN ranks
    ranker: MultiTaskRanker  # HoME: the task probabilities fused at re-ranking
    world: World


def build_funnel(models: StageModels, size: CapstoneSize, baseline: Sequence[str] = (),
                 rank_by_home: bool = False) -> Funnel:
    """The course's funnel; stages named in ``baseline`` fall back to their baseline:
    retrieval, pre-ranking and ranking to popularity, re-ranking to a plain sort.
    Re-ranking's score blends the ranking stage's (DIN) and HoME's fused task probabilities;
    ``rank_by_home``: HoME's fused score ranks instead of DIN (an alternative the chapter
    measures)."""
    world, n_items = models.world, models.world.cfg.n_items
    pop = popularity_scorer(models.popularity)
    if "retrieval" in baseline:
        channels = [Channel("popularity", popularity_channel(models.popularity),
                            sum(size.quotas.values()))]
    else:
        channels = [Channel(name, sequence_channel(models.channels[name], n_items)
                            if name != "popularity" else popularity_channel(models.popularity),
                            quota) for name, quota in size.quotas.items()]
    fused = fused_scorer(models.ranker, world)
    din = din_scorer(models.cascade, world)
    return Funnel([
        Retrieval(channels),
        TopK("pre-ranking", pop if "pre-ranking" in baseline else
             two_tower_scorer(models.cascade, world), size.pre_keep),
        TopK("ranking", pop if "ranking" in baseline else fused if rank_by_home else din,
             size.rank_keep),
        Rerank("re-ranking", blended_scorer(din, fused),
               table_vectors(models.channels["KuaiFormer"], n_items), size.shown,
               0.0 if "re-ranking" in baseline else size.diversity),
    ])


def popularity_funnel(models: StageModels, size: CapstoneSize) -> Funnel:
    """Every stage by popularity: the end-to-end baseline."""
    pop = popularity_scorer(models.popularity)
    return Funnel([Retrieval([Channel("popularity", popularity_channel(models.popularity),
                                      sum(size.quotas.values()))]),
                   TopK("pre-ranking", pop, size.pre_keep), TopK("ranking", pop, size.rank_keep),
                   TopK("re-ranking", pop, size.shown)])


@dataclass
class FunnelResult:
    """One funnel's run on the test requests, measured against the truth (per request)."""

    recall: dict[str, np.ndarray]
    engagement: np.ndarray
    diversity: np.ndarray
    seconds: dict[str, float]
    flops: dict[str, float]

    def summary(self) -> dict[str, float]:
        return {"recall after " + k: float(v.mean()) for k, v in self.recall.items()} | {
            "expected engagement": float(self.engagement.mean()),
            "topic diversity": float(self.diversity.mean()),
            "ms / request": 1e3 * sum(self.seconds.values()),
            "MFLOPs / request": sum(self.flops.values()) / 1e6}


def measure_funnel(funnel: Funnel, log: WorldLog, requests: Requests, relevant: np.ndarray,
                   desc: str = "funnel") -> tuple[FunnelResult, Any]:
    trace = funnel.run(requests, desc=desc)
    result = FunnelResult(stage_recall(trace, relevant),
                          expected_engagement(log, requests, trace.shown),
                          topic_diversity(log.world, trace.shown), trace.seconds, trace.flops)
    return result, trace


# --------------------------------------------------------------------------- RecFlow's claim


def logged_recall(model: MultiTaskRanker, log: WorldLog, day: str, k: int = 10
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per test request, over every logged candidate (exposed or filtered out): recall@k of
    the k truly most relevant by the ranker's effective-view probability; and the same
    recall counting unexposed items only (both [R])."""
    rows = log.rows[day]
    p = ranker_scores(model, log.world, rows["user_id"].to_numpy(),
                      rows["video_id"].to_numpy())[:, 0]
    frame = pd.DataFrame({"request": rows["request_id"].to_numpy(), "p": p,
                          "truth": rows["relevance"].to_numpy(),
                          "shown": rows["realshow"].to_numpy() == 1})

    def recall(part: pd.DataFrame) -> np.ndarray:
        by_request = part.groupby("request", sort=False)
        best = by_request["truth"].rank(ascending=False, method="first") <= k
        picked = by_request["p"].rank(ascending=False, method="first") <= k
        hits = (best & picked).groupby(part["request"], sort=False).sum()
        return hits.reindex(frame["request"].unique()).to_numpy() / k

    return recall(frame), recall(frame[~frame["shown"]])


def per_request_gap(a: Sequence[np.ndarray], b: Sequence[np.ndarray], names: tuple[str, str],
                    metric: str) -> Gap:
    """Paired over requests and seeds ([S][R] each)."""
    return paired_gap(np.stack(a), np.stack(b), a=names[0], b=names[1], metric=metric,
                      unit="requests")


def stage_sample_verdict(with_samples: Sequence[np.ndarray], exposures_only: Sequence[np.ndarray]
                         ) -> Verdict:
    return Verdict.better("a ranker trained with the stage samples as negatives finds more "
                          "of the truly best logged candidates",
                          per_request_gap(with_samples, exposures_only,
                                          ("exposures + stage samples", "exposures only"),
                                          "recall@10 over logged candidates"))


# --------------------------------------------------------------------------- claims

PAPER = {  # what the papers report, for the claims table
    "F1": "a multi-stage funnel serves the users better than one popularity ranking "
          "(RecFlow's premise; not measured there)",
    "R1": "RecFlow: stage samples as extra negatives help models meet what earlier stages "
          "filtered (the dataset's motivation; magnitudes not stated)",
    "L1": "LCRON 0.8732 vs BCE 0.8539 joint Recall@10@20 on RecFlow (Table 2)",
    "L2": "LCRON 0.8732 vs ARF-v2 0.8678",
    "L3": "LCRON 0.8732 vs FS-LambdaLoss 0.8666",
    "L4": "without L_e2e 0.8710 vs LCRON 0.8732 (ablation)",
}
STAGE_BASELINES = ("retrieval", "pre-ranking", "ranking", "re-ranking")


def cascade_values(report: Mapping[str, Any]) -> dict[tuple[str, str], list[np.ndarray]]:
    """``benchmarks/peer_lcron.py``'s runs as (implementation, loss) -> per-request joint
    recall of each seed, in seed order."""
    out: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
    for run in report["runs"].values():
        out.setdefault((run["implementation"], run["loss"]), []).append(
            (run["seed"], np.asarray(run["per_request"])))
    return {key: [v for _, v in sorted(runs, key=lambda x: x[0])] for key, runs in out.items()}


def loss_table(values: Mapping[tuple[str, str], Sequence[np.ndarray]]) -> pd.DataFrame:
    """Joint Recall@10@20 per (implementation, loss): mean over requests and seeds, the
    spread of the seed means, the seed count."""
    rows = {}
    for (implementation, loss), runs in values.items():
        means = np.array([r.mean() for r in runs])
        rows[f"{implementation} {loss}"] = {
            "joint recall@10@20": means.mean(),
            "std over seeds": means.std(ddof=1) if len(means) > 1 else float("nan"),
            "seeds": len(means)}
    return pd.DataFrame(rows).T.sort_values("joint recall@10@20", ascending=False)


def cascade_claims(values: Mapping[tuple[str, str], Sequence[np.ndarray]]
                   ) -> dict[str, Verdict]:
    """LCRON against each other loss of the course's implementation (paired over requests
    and seeds), for the losses the runs cover."""
    claims = {"L1": ("bce", "LCRON beats BCE"), "L2": ("arf_v2", "LCRON beats ARF-v2"),
              "L3": ("fs_lambdaloss", "LCRON beats FS-LambdaLoss"),
              "L4": ("lcron_no_e2e", "the end-to-end loss adds to the per-stage losses")}
    out = {}
    for key, (other, claim) in claims.items():
        if ("course", other) not in values or ("course", "lcron") not in values:
            out[key] = Verdict.untested(claim, f"{other} was not trained at this profile")
            continue
        out[key] = Verdict.better(claim, per_request_gap(
            values[("course", "lcron")], values[("course", other)], ("LCRON", other),
            "joint recall@10@20"))
    return out


def funnel_claims(full: FunnelResult, popularity: FunnelResult,
                  ablations: Mapping[str, FunnelResult]) -> dict[str, Verdict]:
    """F1: the funnel beats the popularity funnel on expected engagement; S-<stage>: each
    stage's model beats its baseline at that stage (engagement; for re-ranking, topic
    diversity at no more than 0.01 of engagement lost). Paired over the test requests of
    one world (one seed: the world's and the models' seed noise is not in these)."""
    def gap(a: np.ndarray, b: np.ndarray, names: tuple[str, str], metric: str) -> Gap:
        return per_request_gap([a], [b], names, metric)

    out = {"F1": Verdict.better("the course's funnel shows more engaging items than the "
                                "popularity funnel",
                                gap(full.engagement, popularity.engagement,
                                    ("funnel", "popularity funnel"), "expected engagement"))}
    for stage in STAGE_BASELINES[:3]:
        out[f"S-{stage}"] = Verdict.better(
            f"{stage}'s model beats popularity at its stage",
            gap(full.engagement, ablations[stage].engagement,
                ("funnel", f"{stage} by popularity"), "expected engagement"))
    rerank = ablations["re-ranking"]
    out["S-re-ranking"] = Verdict.all_of("MMR widens the topics shown at a small cost", [
        Verdict.better("MMR raises topic diversity",
                       gap(full.diversity, rerank.diversity, ("MMR", "plain sort"),
                           "topic diversity")),
        Verdict.not_worse("MMR keeps expected engagement", gap(
            full.engagement, rerank.engagement, ("MMR", "plain sort"), "expected engagement"),
            margin=0.01)])
    return out
