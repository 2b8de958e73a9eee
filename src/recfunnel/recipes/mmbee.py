"""Chapter 8's experiments: MMBee and its ablations trained on the live-gifting world.

    world = live_world("cpu", seed=0)
    data = prepare(world, size)                  # histories, gift graph, expanded lists
    model, measured = train_variant("MMBee", data, size, seed=0)
    correct = state_probe(world, size, "mfq", seed=0)   # can the fusion read the state?
    logged = prepare_log(gift_impressions(load_kuailive()), size, cut, test_from)
    _, measured = train_variant("GIE, no content", logged, size, seed=0)  # real gifts
    claims = claim_runs(size, seeds=[0, 1, 2], profile="cpu")   # every claim's runs

The split is in time (``data.live``): the burn-in builds the watched histories, the gift
graph, Swing and the expanded lists, and GraphCL pre-trains on that graph; the ranker
trains on the next period's impressions and is read out on the last period's. Nothing of
the training or test period enters the graph (the leak of the card's pitfall 2). A log
without content (KuaiLive) is split the same way by time, and trains the variants that read
no segment (``LOG_VARIANTS``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel import checks
from recfunnel.data.live import GiftLog, LiveWorld, live_world
from recfunnel.metrics import auc, log_loss, user_aucs
from recfunnel.models.mmbee import MFQ, GiftBatch, MeanPoolFusion, MMBee, MMBeeConfig
from recfunnel.models.mmbee_graph import GiftGraph, GraphCLConfig, pretrain_nodes, random_nodes
from recfunnel.profiles import MMBeeSize
from recfunnel.runtime import resolve_device
from recfunnel.study import Gap, Measurement, Run, paired_gap
from recfunnel.train import TrainConfig, fit

# name -> (MMBeeConfig changes, node embeddings: "graphcl", "random" or None)
VARIANTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "MMBee": ({}, "graphcl"),
    "mean-pool fusion": ({"fusion": "mean"}, "graphcl"),
    "no projection": ({"projection": "none"}, "graphcl"),
    "shared queries": ({"streamer_aware": False}, "graphcl"),
    "no GIE": ({"graph": False}, None),
    "GIE, random nodes": ({}, "random"),
    "base (DIN)": ({"fusion": "none", "graph": False}, None),
}
# the variants that need no content: what a log without segments (KuaiLive) can train
LOG_VARIANTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "base (DIN)": VARIANTS["base (DIN)"],
    "GIE, no content": ({"fusion": "none"}, "graphcl"),
}
SPARSE = 2  # viewers with at most this many burn-in gifts are "sparse gifters" (card C4)


@dataclass
class GiftData:
    """Gift impressions prepared for the ranker, from the live world or from a log without
    content (KuaiLive): ``log`` the impressions; ``category`` [A] each streamer's category
    (0 for every streamer of a log that has none); ``rows`` "train" / "test" [n] impression
    indices; ``history`` [U, H] the burn-in's most recent watched streamers (id + 1, 0 =
    padding); the burn-in ``graph`` and its expanded ``paths``; ``past_gifts`` [U];
    ``content`` [A, M d] each streamer's mean burn-in tokens (GraphCL's node attribute) or
    None; with the world, ``window`` and ``live`` [N, W] each impression's segments."""

    log: GiftLog
    category: np.ndarray
    rows: dict[str, np.ndarray]
    history: np.ndarray
    graph: GiftGraph
    paths: dict[str, np.ndarray]
    past_gifts: np.ndarray
    content: np.ndarray | None = None
    world: LiveWorld | None = None
    window: np.ndarray | None = None
    live: np.ndarray | None = None

    @property
    def cut(self) -> float:
        """The end of the burn-in: the graph holds only earlier gifts."""
        return self.graph.before

    @property
    def n_categories(self) -> int:
        return int(self.category.max()) + 1


def watched_history(log: GiftLog, before: float, length: int) -> np.ndarray:
    """[U, length] each viewer's last ``length`` watched streamers before time ``before``
    (id + 1, oldest first, left-padded with 0)."""
    early = np.flatnonzero(log.time < before)  # time-ordered already
    out = np.zeros((log.n_users, length), dtype=np.int64)
    users = log.user[early]
    order = np.argsort(users, kind="stable")
    users, streamers = users[order], log.streamer[early][order] + 1
    starts = np.searchsorted(users, np.arange(log.n_users))
    ends = np.searchsorted(users, np.arange(log.n_users), side="right")
    for u in np.flatnonzero(ends > starts):
        recent = streamers[max(starts[u], ends[u] - length):ends[u]]
        out[u, length - len(recent):] = recent
    return out


def _prepare_log(log: GiftLog, size: MMBeeSize, cut: float, test_from: float,
                 category: np.ndarray, **content) -> GiftData:
    """What every source shares: the graph, histories and lists from gifts before ``cut``;
    training rows up to ``test_from``, test rows from it."""
    if not cut < test_from:
        raise checks.InvalidInputError(f"cut: the burn-in ends at {cut}, not before the test "
                                       f"period (from {test_from})")
    gifts = log.gift == 1
    graph = GiftGraph.build(log.user[gifts], log.streamer[gifts], log.time[gifts],
                            log.n_users, log.n_streamers, before=cut, k_swing=size.k_swing)
    early_gifts = gifts & (log.time < cut)
    return GiftData(log=log, category=category,
                    rows={"train": np.flatnonzero((log.time >= cut) & (log.time < test_from)),
                          "test": np.flatnonzero(log.time >= test_from)},
                    history=watched_history(log, cut, size.history), graph=graph,
                    paths=graph.paths(size.k1, size.k2),
                    past_gifts=np.bincount(log.user[early_gifts], minlength=log.n_users),
                    **content)


def prepare(world: LiveWorld, size: MMBeeSize) -> GiftData:
    """Histories, graph and expanded lists from the world's burn-in; the train and test
    rows; each impression's window of segments."""
    cut = world.config.train_start
    window, live = world.window_segments(world.streamer, world.segment)
    content = world.tokens[:, :cut].mean(axis=(1, 3)).reshape(world.n_streamers, -1)
    return _prepare_log(world.log(), size, cut, world.config.test_start, world.cluster,
                        content=content.astype(np.float32), world=world, window=window,
                        live=live)


def prepare_log(log: GiftLog, size: MMBeeSize, cut: float, test_from: float) -> GiftData:
    """A log without content (KuaiLive's gift impressions): the burn-in before ``cut``,
    training up to ``test_from``, test after; one category for every streamer. Only the
    content-free variants (``LOG_VARIANTS``) train on it."""
    return _prepare_log(log, size, cut, test_from, np.zeros(log.n_streamers, dtype=np.int64))


def gift_batch(data: GiftData, rows: np.ndarray, tokens: torch.Tensor | None = None
               ) -> GiftBatch:
    """The impressions ``rows`` as one batch; ``tokens`` the world's token table as a
    tensor (made once by the caller; built here when not given; none for a log)."""
    log = data.log
    u, a = log.user[rows], log.streamer[rows]
    ids = lambda table, index: torch.from_numpy(table[index])  # noqa: E731
    segments = {}
    if data.world is not None:
        tokens = torch.from_numpy(data.world.tokens) if tokens is None else tokens
        times = torch.from_numpy(data.window[rows])  # [B, W]
        seg = tokens[torch.from_numpy(a)[:, None], times]  # [B, W, M, n, d]
        B, W, M, n, d = seg.shape
        segments = {"tokens": seg.permute(0, 2, 1, 3, 4).reshape(B, M, W * n, d),
                    "token_pad": ~torch.from_numpy(data.live[rows]).repeat_interleave(
                        n, dim=1)}  # [B, W n]
    return GiftBatch(
        features=torch.from_numpy(np.stack([u, a, data.category[a]], axis=1)).long(),
        labels=torch.from_numpy(log.gift[rows].astype(np.float32))[:, None],
        history=ids(data.history, u),
        gifted=ids(data.paths["U->A"], u), expanded=ids(data.paths["U->A->A"], u),
        gifters=ids(data.paths["A->U"], a), similar_gifters=ids(data.paths["A->A->U"], a),
        **segments)


def batches(data: GiftData, rows: np.ndarray, batch_size: int, seed: int | None = None
            ) -> Iterator[GiftBatch]:
    """Batches of ``rows``, shuffled under ``seed`` (in order when None)."""
    if seed is not None:
        rows = np.random.default_rng(seed).permutation(rows)
    tokens = torch.from_numpy(data.world.tokens) if data.world is not None else None
    for start in range(0, len(rows), batch_size):
        yield gift_batch(data, rows[start:start + batch_size], tokens)


def node_embeddings(data: GiftData, kind: str | None, size: MMBeeSize, seed: int
                    ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """GIE's frozen node embeddings: GraphCL-pretrained, random (same norm), or none."""
    if kind is None:
        return None
    cfg = GraphCLConfig(d_node=size.d_node, epochs=size.graph_epochs)
    g_user, g_streamer = pretrain_nodes(data.graph, data.content, cfg, seed=seed)
    if kind == "graphcl":
        return g_user, g_streamer
    checks.one_of("nodes", kind, ("graphcl", "random"))
    return random_nodes(len(g_user), len(g_streamer), size.d_node,
                        like=torch.cat([g_user, g_streamer]), seed=seed)


def config_for(changes: dict[str, Any], data: GiftData, size: MMBeeSize) -> MMBeeConfig:
    shape = {}
    if data.world is not None:  # the segments' layout (a log has no content)
        tokens = data.world.tokens  # [A, T, M, n, d]
        shape = {"window": data.world.config.window, "n_modalities": tokens.shape[2],
                 "d_token": tokens.shape[-1]}
    return MMBeeConfig(n_users=data.log.n_users, n_streamers=data.log.n_streamers,
                       n_categories=data.n_categories, d_model=size.d_model,
                       n_queries=size.n_queries, fusion_layers=size.fusion_layers,
                       heads=size.heads, **shape, **changes)


def _bce(model: MMBee, batch: GiftBatch) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(model(batch), batch.labels)


@torch.no_grad()
def predict(model: MMBee, data: GiftData, rows: np.ndarray, batch_size: int = 8_192
            ) -> np.ndarray:
    """[n] gift probabilities of the impressions ``rows``."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.sigmoid(model(batch.to(device))).squeeze(1).cpu()
           for batch in batches(data, rows, batch_size)]
    return torch.cat(out).numpy()


def readout(data: GiftData, probs: np.ndarray, rows: np.ndarray) -> Measurement:
    """AUC, UAUC, GAUC and log-loss of ``probs`` on ``rows``, with the per-user AUCs (all
    kept users, and the sparse and other gifters apart; their ids in ``extra["users"]``),
    UAUC and GAUC of the sparse gifters, and how many users GAUC kept."""
    labels, users = data.log.gift[rows], data.log.user[rows]
    per_user = user_aucs(labels, probs, users)
    sparse = data.past_gifts[per_user.groups] <= SPARSE
    metrics = {"auc": auc(labels, probs), "uauc": per_user.uauc, "gauc": per_user.gauc,
               "log_loss": log_loss(labels, probs),
               "users_kept": float(len(per_user.groups)), "users_dropped": float(
                   per_user.dropped),
               "uauc_sparse": float(per_user.auc[sparse].mean()),
               "uauc_other": float(per_user.auc[~sparse].mean()),
               "gauc_sparse": float(np.average(per_user.auc[sparse],
                                               weights=per_user.impressions[sparse]))}
    return Measurement(metrics=metrics, per_user={
        "uauc": per_user.auc, "uauc_sparse": per_user.auc[sparse],
        "uauc_other": per_user.auc[~sparse]}, extra={"users": per_user.groups.tolist()})


def train_variant(name: str, data: GiftData, size: MMBeeSize, seed: int,
                  device: str = "auto", progress: bool = False,
                  nodes: tuple[torch.Tensor, torch.Tensor] | None = None,
                  changes: dict[str, Any] | None = None) -> tuple[MMBee, Measurement]:
    """Train one of ``VARIANTS`` (on a log: of ``LOG_VARIANTS``) on ``data`` and read it out
    on the test period. ``nodes`` reuses GraphCL embeddings already pre-trained on this
    data (the "graphcl" kind); ``changes`` alters the variant's config further (an
    exercise's own variant)."""
    checks.one_of("variant", name, {**VARIANTS, **LOG_VARIANTS})
    base_changes, kind = {**VARIANTS, **LOG_VARIANTS}[name]
    if data.world is None and base_changes.get("fusion") != "none":
        raise checks.InvalidInputError(f"variant: {name!r} reads the segments' content, "
                                       f"which a log has not; use one of {list(LOG_VARIANTS)}")
    changes = {**base_changes, **(changes or {})}
    if kind is not None and not (kind == "graphcl" and nodes is not None):
        nodes = node_embeddings(data, kind, size, seed)
    torch.manual_seed(seed)
    model = MMBee(config_for(changes, data, size), nodes if kind is not None else None)
    train = data.rows["train"]
    history = fit(model, lambda epoch: batches(data, train, size.batch_size, seed * 100 + epoch),
                  _bce, TrainConfig(epochs=size.epochs, lr=size.lr, device=device,
                                    progress=progress, desc=f"MMBee: {name}", seed=seed))
    model.to(resolve_device(device))
    measured = readout(data, predict(model, data, data.rows["test"]), data.rows["test"])
    measured.epochs = size.epochs
    measured.extra["seconds"] = history.seconds
    return model, measured


def expansion_recall(log: GiftLog, graph: GiftGraph, test: np.ndarray, k: int = 5,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Recall@k of each viewer's first-time gift streamers of the test period (gifted then,
    never in the burn-in) among the new streamers the viewer met in the test period, as
    three burn-in scores rank them: the U->A->A expansion (W S, the gifted streamers'
    Swing neighbours), the history alone (how often the viewer watched each in the
    burn-in) and popularity (gifts received in the burn-in); ties in random order. Ranking
    only what the viewer met keeps exposure out of it: a gift needs an impression, and a
    list of the most watched streamers would "recall" the streamers the viewer will be
    shown, not the ones the viewer will like. Viewers with no burn-in gift (no expansion)
    or no new gifted streamer are left out. ``graph`` holds the gifts before its cut
    (``graph.before``), ``test`` the rows of ``log`` to read. Returns per-viewer arrays and
    their ids."""
    w = log
    rng = np.random.default_rng(seed)
    gifted = graph.gifts
    expansion = (gifted @ graph.similar).tocsr()
    early = w.time < graph.before
    watched = np.zeros((w.n_users, w.n_streamers))
    np.add.at(watched, (w.user[early], w.streamer[early]), 1.0)
    scores = {"expansion": None, "history": watched,
              "popularity": np.asarray(gifted.sum(0)).ravel()}
    out: dict[str, list[float]] = {name: [] for name in scores}
    users = []
    order = np.argsort(w.user[test], kind="stable")
    test = test[order]
    bounds = np.searchsorted(w.user[test], np.arange(w.n_users + 1))
    for u in range(w.n_users):
        rows = test[bounds[u]:bounds[u + 1]]
        before = gifted[u].indices
        if not len(rows) or not len(before):
            continue
        met = np.setdiff1d(np.unique(w.streamer[rows]), before)
        new = np.setdiff1d(np.unique(w.streamer[rows[w.gift[rows] == 1]]), before)
        if not len(new) or len(met) <= k:
            continue
        tie = rng.random(len(met))
        for name, table in scores.items():
            if name == "expansion":
                score = expansion[u].toarray().ravel()[met]
            else:
                score = (table[u] if table.ndim == 2 else table)[met]
            top = met[np.lexsort((tie, -score))[:k]]
            out[name].append(np.isin(new, top).mean())
        users.append(u)
    return {**{name: np.asarray(v) for name, v in out.items()}, "users": np.asarray(users)}


class StateProbe(nn.Module):
    """A fusion of chapter 8 (MFQ or mean pooling) and a linear head that names the
    segment's content state: (tokens [B, M, n, d], pad [B, n], streamer [B, 2]) -> [B, S]
    logits. A probe of what the fusion can read, taught by the world's truth."""

    def __init__(self, cfg: MMBeeConfig, n_states: int):
        super().__init__()
        self.fusion = MFQ(cfg) if cfg.fusion == "mfq" else MeanPoolFusion(cfg)
        self.head = nn.Linear(cfg.d_model, n_states)

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor, streamer: torch.Tensor
                ) -> torch.Tensor:
        return self.head(self.fusion(tokens, pad, streamer))


def state_probe(world: LiveWorld, size: MMBeeSize, fusion: str, seed: int,
                device: str = "auto", progress: bool = False,
                projection: str = "orthogonal") -> np.ndarray:
    """Teach a fusion (``"mfq"`` or ``"mean"``, at the profile's sizes, after
    ``projection``) to name the live state of one segment from its tokens, with the world's
    true states as labels, on every segment before the test period; returns [A * T_test]
    1.0 where it names a test-period segment's state right. This separates what a fusion
    *can* read from what the sparse gift label teaches it."""
    checks.one_of("fusion", fusion, ("mfq", "mean"))
    A, T, M, n, d = world.tokens.shape
    tokens = torch.from_numpy(world.tokens).reshape(A * T, M, n, d)
    state = torch.from_numpy(world.state.reshape(-1))
    streamer = np.repeat(np.arange(A), T)
    key = torch.from_numpy(np.stack([streamer, world.cluster[streamer]], axis=1))
    pad = torch.zeros(A * T, n, dtype=torch.bool)  # one segment, always live
    before = np.tile(np.arange(T), A) < world.config.test_start
    cfg = MMBeeConfig(n_users=1, n_streamers=A, n_categories=world.config.n_clusters,
                      n_modalities=M, window=1, d_token=d, d_model=size.d_model,
                      n_queries=size.n_queries, fusion_layers=size.fusion_layers,
                      heads=size.heads, fusion=fusion, projection=projection, graph=False)
    torch.manual_seed(seed)
    probe = StateProbe(cfg, world.config.n_states)
    train = torch.from_numpy(np.flatnonzero(before))

    def epoch_batches(epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        order = train[torch.from_numpy(np.random.default_rng(seed * 100 + epoch)
                                       .permutation(len(train)))]
        for rows in order.split(256):
            yield tokens[rows], pad[rows], key[rows], state[rows]

    def step(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        *inputs, labels = batch
        return F.cross_entropy(model(*inputs), labels)

    fit(probe, epoch_batches, step, TrainConfig(epochs=size.probe_epochs, lr=3e-3,
                                                device=device, progress=progress,
                                                desc=f"state probe: {fusion}", seed=seed))
    test = torch.from_numpy(np.flatnonzero(~before))
    probe.eval()
    target = next(probe.parameters()).device
    with torch.no_grad():
        named = torch.cat([probe(tokens[rows].to(target), pad[rows].to(target),
                                 key[rows].to(target)).argmax(1).cpu()
                           for rows in test.split(4_096)])
    return (named == state[test]).numpy().astype(np.float64)


def linear_state_accuracy(vectors: np.ndarray, state: np.ndarray, fit: np.ndarray,
                          epochs: int = 300, seed: int = 0) -> float:
    """How much of the true state vectors [n, d] hold: a multinomial logistic regression
    fitted on the rows where ``fit`` [n] is True, and its accuracy on the others."""
    if fit.all() or not fit.any():
        raise checks.InvalidInputError("fit: needs rows to fit on and rows to score")
    torch.manual_seed(seed)
    x = torch.as_tensor(vectors, dtype=torch.float32)
    x = (x - x[fit].mean(0)) / x[fit].std(0).clamp(min=1e-6)
    y = torch.as_tensor(state, dtype=torch.long)
    fit_t = torch.as_tensor(fit)
    head = nn.Linear(x.shape[1], int(y.max()) + 1)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(epochs):
        optimiser.zero_grad()
        F.cross_entropy(head(x[fit_t]), y[fit_t]).backward()
        optimiser.step()
    with torch.no_grad():
        return float((head(x[~fit_t]).argmax(1) == y[~fit_t]).float().mean())


# --------------------------------------------------------------------------- the claims' runs

SWEPT = ("MMBee", "no projection")  # trained again at every other nuisance strength (C2)
RECALLED = ("expansion", "history", "popularity")


def sweep_name(variant: str, nuisance: float) -> str:
    """The run name of ``variant`` in a world with another shared-nuisance strength."""
    return f"{variant} @ nuisance {nuisance:g}"


@dataclass
class ClaimRuns:
    """What chapter 8's claims are judged on, over seeds: ``runs`` every variant of
    ``VARIANTS`` and the nuisance sweep, ``probes`` the state probe of both fusions
    (variants "mfq" and "mean", per test-period segment), ``recalls`` seed -> the
    expansion's per-viewer recall@5 and the two baselines' (``expansion_recall``)."""

    runs: list[Run] = field(default_factory=list)
    probes: list[Run] = field(default_factory=list)
    recalls: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def claim_runs(size: MMBeeSize, seeds: list[int], profile: str, device: str = "auto",
               log: Callable[[str], None] | None = None) -> ClaimRuns:
    """Every seed draws its own world, pre-trains GraphCL once and trains every variant;
    then, at each nuisance strength of ``size.nuisances`` other than the world's, a world
    with that strength and the ``SWEPT`` variants; and the state probe of both fusions.
    ``log`` receives a line per finished run. The benchmark and the chapter (at gpu) both
    call this, so they cannot drift."""
    say = log or (lambda _: None)
    out = ClaimRuns()
    for seed in seeds:
        world = live_world(size.world, seed=seed)
        own = world.config.nuisance
        data = prepare(world, size)
        recall = expansion_recall(world.log(), data.graph, data.rows["test"])
        out.recalls[str(seed)] = {k: v.tolist() for k, v in recall.items()}
        for fusion in ("mfq", "mean"):
            started = time.perf_counter()
            hits = state_probe(world, size, fusion, seed, device=device)
            out.probes.append(Run(model="state probe", variant=fusion, seed=seed,
                                  profile=profile, config={"fusion": fusion},
                                  metrics={"accuracy": float(hits.mean())},
                                  per_user={"accuracy": hits}, epochs=size.probe_epochs,
                                  seconds=time.perf_counter() - started))
            say(f"seed {seed} state probe, {fusion}: accuracy {hits.mean():.3f}")
        jobs = [(name, name, own) for name in VARIANTS]  # (run name, variant, nuisance)
        jobs += [(sweep_name(variant, nuisance), variant, nuisance)
                 for nuisance in size.nuisances if nuisance != own for variant in SWEPT]
        worlds = {own: (data, node_embeddings(data, "graphcl", size, seed))}
        for name, variant, nuisance in jobs:
            if nuisance not in worlds:
                other = prepare(live_world(size.world, seed=seed, nuisance=nuisance), size)
                worlds[nuisance] = (other, node_embeddings(other, "graphcl", size, seed))
            job_data, job_nodes = worlds[nuisance]
            started = time.perf_counter()
            _, measured = train_variant(variant, job_data, size, seed, device=device,
                                        nodes=job_nodes)
            cfg = config_for(VARIANTS[variant][0], job_data, size)
            out.runs.append(Run(model="MMBee", variant=name, seed=seed, profile=profile,
                                config=dataclasses.asdict(cfg), metrics=measured.metrics,
                                per_user=measured.per_user, epochs=measured.epochs,
                                seconds=time.perf_counter() - started, extra=measured.extra))
            say(f"seed {seed} {name}: AUC {measured.metrics['auc']:.4f}, UAUC "
                f"{measured.metrics['uauc']:.4f} ({out.runs[-1].seconds:.0f} s)")
    return out


def recall_runs(recalls: dict[str, dict[str, list[float]]], profile: str = "") -> list[Run]:
    """``ClaimRuns.recalls`` as runs of variants ``RECALLED`` (metric "recall@5", per
    viewer), for ``study.compare``."""
    return [Run(model="GIE", variant=name, seed=int(seed), profile=profile, config={},
                metrics={"recall@5": float(np.mean(values[name]))},
                per_user={"recall@5": np.asarray(values[name])})
            for seed, values in recalls.items() for name in RECALLED]


def probe_gap(probes: list[Run]) -> Gap:
    """MFQ minus mean pooling in the state probe's accuracy, paired by segment within each
    seed."""
    by_fusion = {fusion: [run.per_user["accuracy"]
                          for run in sorted(probes, key=lambda r: r.seed)
                          if run.variant == fusion] for fusion in ("mfq", "mean")}
    return paired_gap(by_fusion["mfq"], by_fusion["mean"], a="MFQ", b="mean pooling",
                      metric="accuracy", unit="segments")
