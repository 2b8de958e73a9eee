"""Named run sizes for every chapter, in one place.

Three profiles:

* ``smoke``: seconds on a CPU; what CI executes. Big enough for the model to beat its
  baseline, which the notebook tests check.
* ``cpu``: minutes on a laptop CPU; the default for ``make book``.
* ``gpu``: paper-like scale on a free Colab GPU.

A chapter reads its sizes with ``size = profile_for("getting_started", PROFILE)``; the
``PROFILE`` parameter defaults to the ``RECFUNNEL_PROFILE`` environment variable. To add a
chapter: write a frozen dataclass of its sizes and register one instance per profile in
``CHAPTER_SIZES``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "RECFUNNEL_PROFILE"


@dataclass(frozen=True)
class GettingStartedSize:
    """Chapter 0: matrix factorisation on a planted low-rank implicit-feedback matrix."""

    n_users: int
    n_items: int
    true_rank: int  # rank of the planted preference matrix
    positives_per_user: int  # interactions sampled per user (last two held out)
    d_model: int  # D: embedding width of the factorisation
    epochs: int
    batch_size: int
    lr: float = 3e-2


@dataclass(frozen=True)
class RecFlowSize:
    """Chapter 1: which synthetic world to build (``recfunnel.data.world.WORLD_PRESETS``)."""

    world: str  # the preset's name
    max_len: int = 50  # history length of the MovieLens sequential protocol


@dataclass(frozen=True)
class KuaiFormerSize:
    """Chapter 2: KuaiFormer and SASRec on MovieLens-100K, then planted-interest histories
    from the synthetic world for the paper's claims (multi-interest, compression, logQ,
    history length)."""

    sasrec_epochs: int  # MovieLens-100K, all-position training
    kuaiformer_epochs: int  # MovieLens-100K, cut points per user and epoch
    d_model: int  # D of KuaiFormer (SASRec keeps RecBole's 64)
    planted_users: int
    planted_items: int
    planted_topics: int
    planted_epochs: int
    # the long history and its compression scheme (oldest first: groups x size) + raw
    long_len: int
    long_compression: tuple[tuple[int, int], ...]
    short_lens: tuple[int, ...]  # uncompressed history lengths of the sweep (besides 64)
    per_user: int = 8  # cut points per user and epoch
    batch_size: int = 256
    lr: float = 2e-3
    seeds: int = 1  # seeds of the MovieLens-100K comparison
    ml_per_user: int = 8  # cut points per user and epoch on MovieLens-100K
    # the in-batch against the full softmax over planted worlds of growing catalogues
    # (benchmarks/kuaiformer_catalogue.py at cpu; live at gpu)
    catalogue_users: int = 2_000
    catalogue_sizes: tuple[int, ...] = (400, 1_600, 6_400)


@dataclass(frozen=True)
class ElasticSize:
    """Chapter 3: ELASTIC, SASRec and KuaiFormer on MovieLens-100K; then histories whose next
    item returns to an interest last seen at least ``long_gap`` items ago, read by ELASTIC
    at ``long_len`` and by SASRec truncated to each of ``truncations``; the sweeps of the
    memory size (0: no memory) and of the expert count (empty: not run)."""

    ml_epochs: int  # KuaiFormer and ELASTIC on MovieLens-100K
    sasrec_epochs: int  # SASRec on MovieLens-100K (chapters 2 and 4 train the same one)
    ml_max_len: int  # ELASTIC's window on MovieLens-100K (SASRec keeps RecBole's 50)
    d_model: int
    n_experts: int  # k
    memory_size: int  # N, a square
    top_c: int
    long_users: int
    long_items: int
    long_topics: int
    long_len: int
    long_gap: int
    long_epochs: int
    truncations: tuple[int, ...]
    bank_sizes: tuple[int, ...] = ()
    expert_counts: tuple[int, ...] = ()
    per_user: int = 8  # cut points per user and epoch on MovieLens-100K
    batch_size: int = 128
    lr: float = 2e-3  # KuaiFormer on MovieLens-100K (chapter 2's)
    elastic_lr: float = 4e-3  # ELASTIC on MovieLens-100K
    long_lr: float = 4e-3  # every model on the returning-interest histories
    seeds: int = 1


ALL_DIMEREC_ABLATIONS = ("no_gem_loss", "no_sphere", "no_temperature", "last_k")


@dataclass(frozen=True)
class DimeRecSize:
    """Chapter 4: popularity, SASRec, ComiRec-SA and DimeRec on MovieLens-100K in one run,
    DimeRec's ablations, and the norm experiment of the sphere."""

    epochs: int  # ComiRec-SA, DimeRec and every ablation
    sasrec_epochs: int
    d_model: int  # d (SASRec keeps RecBole's 64)
    diffusion_steps: int  # T
    per_user: int  # training targets per user and epoch
    norm_steps: int  # optimiser steps of each run of the norm experiment
    n_interests: int = 4  # K
    hidden: int = 128  # the denoiser's width
    batch_size: int = 256
    lr: float = 3e-3
    ablations: tuple[str, ...] = ("no_gem_loss", "no_sphere", "last_k")  # smoke: the three
    samples: int = 5  # stochastic draws per user for the diversity study
    seeds: int = 1


@dataclass(frozen=True)
class MARMSize:
    """Chapter 6: MARM's cached multi-layer target attention on two-hop exposure streams."""

    users: int
    length: int  # exposures per user
    epochs: int
    d_model: int = 32
    heads: int = 2
    window: int = 8  # n: predecessors each request reads (the two-hop window W is 8 too)
    items: int = 400
    topics: int = 8
    batch_users: int = 500  # requests of one position per optimiser step
    lr: float = 1e-2
    patience: int = 2
    fresh: bool = True  # also train L = 2 fresh (the staleness reference, about 3x L = 2)
    # the cache-size grid (layers, window), trained at ``grid_epochs``; () skips it
    grid: tuple[tuple[int, int], ...] = ((1, 4), (1, 8), (1, 16), (2, 4), (2, 8), (2, 16))
    grid_epochs: int = 3
    live_grid: bool = False  # train the grid in the chapter (else: the committed runs)
    kuairand: bool = False  # also train L = 1 and L = 2 on KuaiRand-Pure's exposure streams
    kuairand_length: int = 100  # the last exposures kept per user (users with fewer: out)


@dataclass(frozen=True)
class HoMESize:
    """Chapter 5: shared-bottom, MMoE, PLE and HoME (and HoME's fixes one by one) on the
    world's eight-task impressions; KuaiRand-Pure's real logs at ``gpu`` when available."""

    impressions: int
    users: int
    items: int
    epochs: int  # at most; training stops after `patience` epochs without a better
    patience: int | None = 1  # validation mean AUC and keeps the best epoch
    d_emb: int = 16
    expert_hidden: tuple[int, ...] = (64, 32)  # MMoE / PLE experts and HoME's meta experts
    task_hidden: tuple[int, ...] = (32,)  # HoME's task-layer experts
    mmoe_experts: int = 8
    meta_experts: tuple[int, int] = (2, 2)  # HoME meta layer: global, per group
    task_experts: tuple[int, int] = (1, 1)  # HoME task layer: per group, per task
    lora_rank: int = 8
    batch_size: int = 2_048
    lr: float = 3e-3
    seeds: int = 3  # the chapter's own seeds (cpu: one, and the benchmark's three)
    kuairand: bool = False  # also train on KuaiRand-Pure (downloaded when the network allows)


@dataclass(frozen=True)
class QARMSize:
    """Chapter 7: the multi-modal world, item alignment, codes, and the ranker with each
    kind of item input (the rows of QARM's Table 1), over ``seeds`` worlds; MovieLens-100K's
    movie texts aligned to co-ratings."""

    users: int
    items: int
    impressions: int
    history: int  # S: recent clicks a ranker reads
    d_align: int  # d: width of the raw and the aligned item vector
    align_epochs: int
    window: int  # trigger window of the pair mining (the paper: latest 50 clicks)
    vq_k: int  # K: nearest pool items in the VQ code (the paper: 25)
    rq_levels: int  # L (the paper: 6)
    rq_size: int  # K_c: centroids per level
    d_emb: int  # e: id and code embedding width of the ranker
    epochs: int  # ranker epochs at most (early stopping on validation AUC)
    patience: int = 1
    hidden: tuple[int, ...] = (64, 32)
    align_batch: int = 256
    batch_size: int = 1_024
    lr: float = 3e-3
    seeds: int = 3
    # MovieLens-100K: "tfidf" or "minilm" (then TF-IDF too, for the comparison)
    text_encoder: str = "tfidf"
    text_dim: int = 64  # width of the TF-IDF + SVD vectors
    text_align_epochs: int = 5  # alignment epochs on MovieLens-100K's co-rating pairs


@dataclass(frozen=True)
class MomentCrossSize:
    """Chapter 9: the stream world (``data.streams.STREAM_PRESETS``), the real-time ranker
    and its trainer (one pass, ``recipes.moment_cross``), the detection-lag panel."""

    world: str  # the preset's name
    d: int = 16
    length: int = 30  # L, items per search unit
    levels: int = 1  # 1: CGC, 2: PLE
    lr: float = 3e-3  # Adam, the network
    room_lr: float = 0.2  # SGD, the room-ID bias, per sample of evidence
    max_batch: int = 1_024  # samples per optimizer step
    panel_users: int = 32
    panel_rooms: int = 60
    lag_cap: int = 20  # ticks searched for a crossing after a highlight's onset
    # the variants the chapter trains itself (``recipes.moment_cross.variants``; all: None)
    variants: tuple[str, ...] | None = ("5-min fast + 1-h slow", "30 s, first-only (Moment)",
                                        "naive 30 s", "30 s, no first-only", "Moment&Cross",
                                        "no short-video units")
    live_claims: bool = True  # False: the claims' seeds are read from the committed runs
    seeds: int = 3  # seeds of the claims when they run live
    kuailive: bool = False  # replay KuaiLive's logs (gpu)
    replay_days: float = 2.0  # the first days of KuaiLive replayed


@dataclass(frozen=True)
class UniCDRSize:
    """Chapter 10: the cross-domain world (``data.crossdomain.CROSS_WORLD_PRESETS``), UniCDR's
    training budget (epochs x iterations x batch, split evenly over the domains), and the
    MovieLens scenarios' user samples."""

    world: str
    epochs: int
    iterations: int  # steps per epoch (official: 500)
    dim: int = 32  # h (official: 128)
    maxlen: int = 10
    # the ID embedding's share in Agg (official 0.5): on the validation split of a world of
    # seed 100, 0 / 0.25 / 0.5 gave NDCG@10 0.0224 / 0.0236 / 0.0205, within one split's
    # noise (about 0.003); 0 is kept: a user is what they did in a domain, and a user with
    # no history there has an empty specific branch, not an untrained ID vector
    lambda_a: float = 0.0
    # rec against critic, lambda L_rec + (1 - lambda) L_critic (official 0.4): chosen on the
    # same validation from {0.4, 0.7, 0.9, 1.0}; 0.4 gave 0.0180, 0.9 gave 0.0224
    lambda_loss: float = 0.9
    batch_size: int = 512  # over all domains (official: 1,024)
    lr: float = 1e-2  # Adam (official 1e-3 over 50,000 steps; here 1,000)
    weight_decay: float = 1e-5  # (official)
    eval_every: int = 5  # epochs between validations (official: 5)
    seeds: int = 3
    live_claims: bool = True  # False: the claims' seeds are read from the committed runs
    variants: tuple[str, ...] | None = None  # the variants the chapter trains (None: all)
    genre_users: int | None = 1_000  # MovieLens-1M users in the genre domains (None: all)
    pair_users: int | None = 1_000  # MovieLens-1M users next to MovieLens-100K's
    movielens: bool = True


@dataclass(frozen=True)
class MMBeeSize:
    """Chapter 8: the live-gifting world (``data.live.LIVE_PRESETS``), MMBee and its
    ablations over ``seeds`` worlds, the nuisance sweep of claim C2."""

    world: str  # the live world's preset
    epochs: int
    d_model: int = 32
    n_queries: int = 4
    fusion_layers: int = 1
    heads: int = 2
    history: int = 20  # H: the most recent watched streamers of the burn-in
    k_swing: int = 10  # Swing neighbours kept per streamer
    k1: int = 10  # U->A and A->U list lengths
    k2: int = 20  # U->A->A and A->A->U list lengths
    d_node: int = 32  # GraphCL node width
    graph_epochs: int = 60
    probe_epochs: int = 30  # the state probe: the fusions taught the live state itself
    batch_size: int = 1_024
    lr: float = 3e-3
    seeds: int = 3
    nuisances: tuple[float, ...] = (0.0, 2.0, 4.0)  # claim C2's shared-nuisance strengths
    variants: tuple[str, ...] = ()  # the variants trained in the chapter; () = all
    live_claims: bool = True  # train every seed and the sweep in the chapter (else: read
    # the committed runs of benchmarks/mmbee_claims.py)
    kuailive: bool = False  # also train on KuaiLive's gift logs (downloaded when online)


@dataclass(frozen=True)
class CapstoneSize:
    """Chapter 11: the capstone world (``recipes.capstone.CAPSTONE_WORLDS``), every stage's
    model, the funnel's budgets, and the cascade task's losses over ``seeds``."""

    world: str
    test_requests: int  # requests of the served day passed through the funnel
    seq_epochs: int  # retrieval channels (at most; early stop on validation NDCG@10)
    rank_epochs: int  # HoME (at most; early stop on validation mean AUC)
    cascade_epochs: int  # passes over the cascade task (LCRON's code: one, over 22 days)
    d_model: int = 32  # the channels' width
    rank_d: int = 8  # HoME's embedding width
    per_user: int = 8  # training targets per user and epoch of the channels
    lr: float = 3e-3
    cascade_batch: int = 256  # LCRON's code: 1,024 [smaller: our days hold fewer requests]
    # retrieval: channel -> items it brings (the merged budget is their sum)
    channel_quotas: tuple[tuple[str, int], ...] = (("KuaiFormer", 80), ("DimeRec", 60),
                                                   ("ELASTIC", 60), ("popularity", 50))
    pre_keep: int = 80
    rank_keep: int = 24
    shown: int = 6
    diversity: float = 0.3  # MMR's lambda at re-ranking
    n_relevant: int = 50  # the truly relevant items recall is counted against
    stage_samples: float = 0.2  # share of the filtered-out logged items a ranker adds
    seeds: int = 3  # seeds of the cascade losses (and of the stage-sample claim)
    losses: tuple[str, ...] = ("bce", "fs_lambdaloss", "arf_v2", "lcron", "lcron_no_e2e")

    @property
    def quotas(self) -> dict[str, int]:
        return dict(self.channel_quotas)


CHAPTER_SIZES: dict[str, dict[str, object]] = {
    "qarm": {
        "smoke": QARMSize(users=300, items=400, impressions=15_000, history=10, d_align=16,
                          align_epochs=2, window=20, vq_k=3, rq_levels=2, rq_size=8, d_emb=8,
                          epochs=3, hidden=(32,), align_batch=128, batch_size=256, seeds=2,
                          text_dim=32, text_align_epochs=2),
        "cpu": QARMSize(users=3_000, items=2_000, impressions=150_000, history=20, d_align=32,
                        align_epochs=3, window=50, vq_k=5, rq_levels=3, rq_size=32, d_emb=16,
                        epochs=6, text_encoder="minilm"),
        "gpu": QARMSize(users=20_000, items=20_000, impressions=3_000_000, history=50,
                        d_align=64, align_epochs=5, window=50, vq_k=25, rq_levels=4,
                        rq_size=256, d_emb=32, epochs=10, hidden=(256, 128), align_batch=1_024,
                        batch_size=4_096, lr=1e-3, text_encoder="minilm",
                        text_align_epochs=10),
    },
    "marm": {
        "smoke": MARMSize(users=1_000, length=120, epochs=3, d_model=16,
                          fresh=False, grid=()),
        "cpu": MARMSize(users=2_000, length=150, epochs=6),
        "gpu": MARMSize(users=20_000, length=400, epochs=10, d_model=64, heads=4, window=16,
                        batch_users=2_000, lr=3e-3,
                        grid=tuple((L, n) for L in (1, 2, 4) for n in (4, 8, 16, 32)),
                        grid_epochs=6, live_grid=True, kuairand=True),
    },
    "moment_cross": {
        "smoke": MomentCrossSize(world="smoke", d=8, length=10, lr=1e-2, seeds=1),
        "cpu": MomentCrossSize(world="cpu", live_claims=False),
        "gpu": MomentCrossSize(world="gpu", d=32, length=100, levels=2, max_batch=4_096,
                               variants=None, kuailive=True),
    },
    "unicdr": {
        "smoke": UniCDRSize(world="smoke", epochs=6, iterations=30, eval_every=2,
                            seeds=1, live_claims=False, variants=("UniCDR", "specific-only"),
                            movielens=False),
        "cpu": UniCDRSize(world="cpu", epochs=20, iterations=50, live_claims=False,
                          variants=("UniCDR", "specific-only")),
        "gpu": UniCDRSize(world="gpu", epochs=40, iterations=200, dim=128, batch_size=1_024,
                          lr=1e-3,
                          genre_users=None, pair_users=None),
    },
    "mmbee": {
        "smoke": MMBeeSize(world="smoke", epochs=2, d_model=16, n_queries=2, heads=1,
                           history=10, k_swing=5, k1=5, k2=10, d_node=16, graph_epochs=30,
                           probe_epochs=15, batch_size=1_024, lr=6e-3, live_claims=False,
                           variants=("MMBee", "mean-pool fusion", "no GIE", "base (DIN)")),
        "cpu": MMBeeSize(world="cpu", epochs=2, batch_size=512, live_claims=False,
                         variants=("MMBee", "mean-pool fusion", "no GIE", "base (DIN)")),
        "gpu": MMBeeSize(world="gpu", epochs=4, d_model=64, n_queries=16, fusion_layers=2,
                         heads=4, history=50, k_swing=50, k1=50, k2=100, d_node=64,
                         graph_epochs=200, batch_size=4_096, lr=1e-3, kuailive=True),
    },
    "home": {
        "smoke": HoMESize(impressions=40_000, users=500, items=1_000, epochs=3, d_emb=8,
                          expert_hidden=(32, 16), task_hidden=(16,), lora_rank=4,
                          batch_size=512, seeds=1),
        "cpu": HoMESize(impressions=300_000, users=2_000, items=5_000, epochs=8, seeds=1),
        "gpu": HoMESize(impressions=3_000_000, users=20_000, items=50_000, epochs=20,
                        d_emb=32, expert_hidden=(256, 128), task_hidden=(128,),
                        mmoe_experts=16, meta_experts=(4, 4), task_experts=(2, 1),
                        lora_rank=16, batch_size=4_096, lr=1e-3, kuairand=True),
    },
    "dimerec": {
        "smoke": DimeRecSize(epochs=4, sasrec_epochs=1, d_model=32, diffusion_steps=20,
                             per_user=4, norm_steps=40),
        "cpu": DimeRecSize(epochs=10, sasrec_epochs=8, d_model=32, diffusion_steps=50,
                           per_user=32, norm_steps=150, ablations=ALL_DIMEREC_ABLATIONS),
        "gpu": DimeRecSize(epochs=100, sasrec_epochs=200, d_model=64, diffusion_steps=200,
                           per_user=64, norm_steps=600, hidden=256, seeds=3,
                           ablations=ALL_DIMEREC_ABLATIONS),
    },
    "elastic": {
        "smoke": ElasticSize(
            ml_epochs=3, sasrec_epochs=1, ml_max_len=50, d_model=32, n_experts=4,
            memory_size=256, top_c=4,
            long_users=1_500, long_items=300, long_topics=10, long_len=200, long_gap=120,
            long_epochs=10, truncations=(50,), per_user=4,
        ),
        "cpu": ElasticSize(
            ml_epochs=8, sasrec_epochs=8, ml_max_len=50, d_model=32, n_experts=8,
            memory_size=1_024, top_c=8,
            long_users=2_000, long_items=1_000, long_topics=20, long_len=384, long_gap=224,
            long_epochs=12, truncations=(50, 200),
        ),
        "gpu": ElasticSize(
            ml_epochs=200, sasrec_epochs=200, ml_max_len=200, d_model=64, n_experts=32,
            memory_size=65_536,
            top_c=32, long_users=8_000, long_items=3_000, long_topics=32, long_len=2_048,
            long_gap=600, long_epochs=40, truncations=(50, 200, 2_048),
            bank_sizes=(0, 1_024, 16_384, 65_536), expert_counts=(2, 4, 8, 16, 32),
            batch_size=256, long_lr=3e-3, seeds=3,
        ),
    },
    "kuaiformer": {
        "smoke": KuaiFormerSize(
            sasrec_epochs=1, kuaiformer_epochs=3, d_model=32, planted_users=120,
            planted_items=600, planted_topics=16, planted_epochs=3, long_len=96,
            long_compression=((1, 32), (2, 16)), short_lens=(16,), per_user=4,
            catalogue_users=300, catalogue_sizes=(400, 1_600),
        ),
        "cpu": KuaiFormerSize(
            sasrec_epochs=8, kuaiformer_epochs=8, d_model=32, planted_users=500,
            planted_items=3_000, planted_topics=32, planted_epochs=10, long_len=128,
            long_compression=((1, 64), (2, 16)), short_lens=(16,), per_user=5,
        ),
        "gpu": KuaiFormerSize(
            sasrec_epochs=200, kuaiformer_epochs=200, d_model=64, planted_users=4_000,
            planted_items=10_000, planted_topics=64, planted_epochs=40, long_len=256,
            long_compression=((2, 64), (5, 16)), short_lens=(8, 16, 32, 128), seeds=3,
            catalogue_users=8_000, catalogue_sizes=(400, 1_600, 6_400, 25_600, 102_400),
        ),
    },
    "recflow": {name: RecFlowSize(world=name) for name in PROFILES},
    "capstone": {
        "smoke": CapstoneSize(world="smoke", test_requests=150, seq_epochs=2, rank_epochs=2,
                              cascade_epochs=4, stage_samples=0.5, d_model=16, per_user=4, seeds=1,
                              losses=("bce", "lcron"),
                              channel_quotas=(("KuaiFormer", 40), ("DimeRec", 30),
                                              ("ELASTIC", 30), ("popularity", 20)),
                              pre_keep=50, rank_keep=20),
        "cpu": CapstoneSize(world="cpu", test_requests=1_000, seq_epochs=4, rank_epochs=3,
                            cascade_epochs=4),
        "gpu": CapstoneSize(world="gpu", test_requests=5_000, seq_epochs=30, rank_epochs=10,
                            cascade_epochs=10, d_model=64, rank_d=16, cascade_batch=1_024,
                            seeds=5, losses=("bce", "fs_lambdaloss", "arf_v2", "lcron",
                                             "lcron_no_e2e", "lcron_no_single")),
    },
    "getting_started": {
        "smoke": GettingStartedSize(
            n_users=300, n_items=200, true_rank=4, positives_per_user=20,
            d_model=16, epochs=12, batch_size=256,
        ),
        "cpu": GettingStartedSize(
            n_users=2_000, n_items=1_000, true_rank=8, positives_per_user=30,
            d_model=32, epochs=20, batch_size=1_024,
        ),
        "gpu": GettingStartedSize(
            n_users=50_000, n_items=20_000, true_rank=16, positives_per_user=50,
            d_model=64, epochs=20, batch_size=8_192,
        ),
    },
}


def current_profile(default: str = "cpu") -> str:
    """The profile named by ``RECFUNNEL_PROFILE``, else ``default``; checked."""
    name = os.environ.get(ENV_VAR, "").strip() or default
    return check_profile(name)


def check_profile(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES}")
    return name


def profile_for(chapter: str, profile: str | None = None):
    """The sizes of ``chapter`` at ``profile`` (default: ``current_profile()``)."""
    if chapter not in CHAPTER_SIZES:
        raise KeyError(f"no profiles for chapter {chapter!r}; known: {sorted(CHAPTER_SIZES)}")
    name = check_profile(profile) if profile is not None else current_profile()
    return CHAPTER_SIZES[chapter][name]
