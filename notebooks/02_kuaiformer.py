# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. KuaiFormer: retrieval as next-action prediction
#
# Retrieval is the first stage of the funnel: out of billions of videos it keeps a few
# thousand for the stages after it. For years Kuaishou did this with a two-tower model,
# one network for the user, one for the item, and a nearest-neighbour search between them.
# KuaiFormer {footcite}`liu2024kuaiformer` keeps the search but replaces the user tower by a
# causal Transformer over the user's recent positive watches, trained like a language
# model to predict the next one. Three engineering problems come with it, and the paper
# answers each: a vocabulary of billions of items (an in-batch softmax with logQ
# correction and label smoothing), users with several interests at once (k learnable query
# tokens, one interest vector each), and long histories that cost too much (older items
# squashed group by group, the newest kept as they are). It has served Kuaishou's main
# feed since May 2024.
#
# After this chapter you can:
# - write KuaiFormer's equations and point to the line of code that computes each;
# - build its embedding, compression, causal backbone and loss, and check them against
#   `recfunnel.models.kuaiformer`;
# - compare it with SASRec {footcite}`kang2018sasrec`, the model it is measured against,
#   on MovieLens-100K under RecBole's protocol;
# - test the paper's claims on multi-interest coverage, compression, logQ and history
#   length on users whose interests we planted ourselves.
#
# ```{admonition} Where this chapter's code lives
# :class: tip
#
# | file | what it holds |
# |---|---|
# | `recfunnel/models/kuaiformer.py` | the compressor, the interest queries, the in-batch loss with logQ, the serving index |
# | `recfunnel/layers/attention.py` | the attention blocks and masks shared with SASRec and ELASTIC |
# | `recfunnel/models/baselines.py` | SASRec and popularity, the references |
# | `recfunnel/data/planted.py` | the planted-interest histories |
# | `recfunnel/recipes/kuaiformer.py` | this chapter's experiments: configurations, runs, readouts, verdicts |
# | `benchmarks/peer_recbole.py` | RecBole's SASRec beside ours, the committed peer comparison |
# ```

# %% tags=["remove-cell"]
# Cell 1 (Colab only): install the course's package. Elsewhere it is already installed.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "recfunnel[faiss] @ git+https://github.com/recfunnel/the-recommendation-funnel"],
        check=True,
    )

# %% tags=["parameters"]
# Cell 2: the run's parameters (papermill overrides them)
import os

PROFILE = os.environ.get("RECFUNNEL_PROFILE", "cpu")  # "smoke", "cpu" or "gpu"
SEED = 0
DEVICE = "auto"  # "auto", "cpu", "cuda" or "mps"

# %%
# %matplotlib inline
import json
import types

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from recfunnel import plots
from recfunnel.data.download import DataUnavailableError
from recfunnel.data.movielens import load_ml100k, side_features
from recfunnel.data.planted import plant_interests, planted_world
from recfunnel.data.sequences import SequentialSplit
from recfunnel.data.world import World
from recfunnel.layers.attention import attention_mask
from recfunnel.metrics import ranking_metrics
from recfunnel.models.baselines import Popularity
from recfunnel.models.kuaiformer import (
    KuaiFormer,
    KuaiFormerConfig,
    in_batch_logits,
    smoothed_in_batch_loss,
)
from recfunnel.notebook import glue, plural, setup, show_source
from recfunnel.recipes import kuaiformer as recipe
from recfunnel.recipes import retrieval
from recfunnel.retrieval import build_index
from recfunnel.runtime import set_seed
from recfunnel.study import Outcome, Verdict, claims_table, ledger_record, results_dir
from recfunnel.train import TrainConfig

device, size = setup("kuaiformer", PROFILE, SEED, DEVICE)

# %% [markdown]
# ## The idea, equation by equation
#
# A user is the list of their last $n$ positive watches $(x_1, f_1), \dots, (x_n, f_n)$:
# video ids $x_i$ and about ten watch attributes $f_i$ (watch time, like, duration, ...),
# continuous ones cut into buckets. The model turns them into $k$ interest vectors and is
# trained to make the next watch $x_{n+1}$ likely (the paper's Eqs. 1-11):
#
# ```{include} ../book/notation.md
# :start-after: <!-- ch02-start -->
# :end-before: <!-- ch02-end -->
# ```
#
# The in-batch softmax of Eq. 10 uses the other rows' next items as negatives: with
# billions of videos no full softmax is possible. Popular videos turn up as somebody's next
# item far more often, so they are pushed down far more often; subtracting
# $\log Q(x)$, the log of the chance that $x$ shows up in a batch, undoes that bias
# {footcite}`yi2019logq`.

# %% [markdown]
# ## The model, built step by step
#
# We build each piece by hand on a tiny batch and check it against the package's
# version with `torch.allclose`. The tiny model reads $n = 11$ items: one group of 4 and
# two groups of 2 compressed, the newest 3 kept raw, so the causal part sees
# $1 + 2 + 3 = 6$ tokens and then $k = 3$ query tokens.

# %%
tiny_cfg = KuaiFormerConfig(n_items=30, side_buckets=(6,), d_model=16, n_heads=2,
                            n_layers=2, d_ffn=32, n_interests=3,
                            compression=((1, 4), (2, 2)), n_raw=3, p_dropout=0.0)
torch.manual_seed(SEED)
tiny = KuaiFormer(tiny_cfg).eval()
user_seq = torch.randint(1, 30, (4, tiny_cfg.max_len))
user_seq[0, :5] = 0  # a short history, left-padded
is_pad = user_seq == 0
seq_feats = torch.randint(1, 6, (4, tiny_cfg.max_len, 1)) * ~is_pad[..., None]
print(f"n = {tiny_cfg.max_len} items -> {tiny_cfg.n_tokens} tokens + "
      f"{tiny_cfg.n_interests} query tokens")

# %% [markdown]
# **Embedding (Eqs. 3-5).** Each watch becomes a token from its item embedding and the
# embeddings of its bucketised attributes. One departure, which we measured to matter: the
# lookups are scaled by $\sqrt D$ and the item's own embedding is added back after the
# MLP, $t_i = \sqrt D\,\mathbf x_i + \mathrm{MLP}(\sqrt D[\mathbf x_i, \mathbf f_i])$.
# The item table doubles as the output layer, so it starts small, and without the skip
# the MLP's biases drown the item's identity (exercise 1 shows the stall).

# %%
# NBVAL_CHECK_OUTPUT
emb = tiny.embedding
with torch.no_grad():
    lookups = torch.cat([emb.item_emb(user_seq), emb.side_embs[0](seq_feats[..., 0])], -1)
    tokens_by_hand = emb.item_emb(user_seq) * emb.scale + emb.mlp(lookups * emb.scale)
    tokens = emb(user_seq, seq_feats)
print("embedding matches:", torch.allclose(tokens_by_hand, tokens, atol=1e-6),
      tuple(tokens.shape))

# %% [markdown]
# **Adaptive compression (Section 3.4, Eq. 7).** The oldest items are cut into groups;
# each group passes through one *bidirectional* Transformer layer and is mean-pooled into a
# single token. Padding is left out of the mean, and a group that is all padding becomes a
# padding token. The newest items are not touched.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    masked = tokens * ~is_pad[..., None]
    encoder = tiny.compressor.encoders[0]  # level one: 1 group of 4
    group, group_pad = masked[:, :4], is_pad[:, :4]
    encoded = encoder(group, group_pad, causal=False)
    real = (~group_pad)[..., None].float()
    first_token = (encoded * real).sum(1) / real.sum(1).clamp(min=1)
    compressed, compressed_pad = tiny.compressor(masked, is_pad)
print("first compressed token matches:", torch.allclose(first_token, compressed[:, 0], atol=1e-6))
print("the newest items are kept as they are:",
      torch.equal(compressed[:, -tiny_cfg.n_raw:], masked[:, -tiny_cfg.n_raw:]))
print("tokens after compression:", tuple(compressed.shape),
      "| padding tokens of the short user:", compressed_pad[0].tolist())

# %% [markdown]
# **Causal backbone and query tokens (Eq. 8).** Llama-style blocks (RMSNorm, rotary
# positions, SwiGLU) read the compressed tokens followed by the $k$ query tokens, under
# one causal mask. The mask is the point: query token $q_j$ sees the whole sequence and
# $q_1..q_{j-1}$, never a later query, so each interest can see the ones before it and
# move away from them. The figure shows the mask of the short user: dark cells may be
# attended to.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    K = tiny_cfg.n_interests
    x = torch.cat([compressed, tiny.queries.expand(4, K, -1)], dim=1)
    pad = torch.cat([compressed_pad, compressed_pad.new_zeros(4, K)], dim=1)
    for block in tiny.blocks:
        x = block(x, pad, causal=True)
    interests_by_hand = tiny.norm(x)[:, -K:]
    interests = tiny.interests(user_seq, is_pad, seq_feats)
print("interests match:", torch.allclose(interests_by_hand, interests, atol=1e-6),
      tuple(interests.shape))

# %%
labels = ([f"g{i + 1}" for i in range(3)] + [f"raw{i + 1}" for i in range(3)]
          + [f"q{j + 1}" for j in range(K)])
allowed = attention_mask(pad[:1], True, len(labels), pad.device)[0, 0].float()
fig = plots.heatmap(allowed.numpy(), labels, labels, fmt=".0f", cmap="Greys",
                    title="who may attend to whom (rows: queries, short user)")

# %% [markdown]
# The short user's first group is all padding, so nobody attends to it; its query tokens
# see every real token and the queries before them.
#
# **Scores and loss (Eqs. 9-11).** An item's score is its best dot product over the $k$
# interests. Inside a batch each row's positive is its own next item, the negatives are
# the other rows' next items (an item that is also this row's positive is an *accidental
# hit* and is masked, our choice), each logit minus $\log Q$ of its item. The paper's
# label smoothing is implemented as printed, with $\log(1-p)$ for the negatives.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    targets = torch.tensor([3, 7, 3, 12])  # rows 0 and 2 share a target
    target_emb = tiny.embedding.item_emb(targets)
    log_q = torch.log(torch.tensor([0.05, 0.01, 0.05, 0.002]))
    scores = torch.einsum("bkd,cd->bkc", interests, target_emb).amax(dim=1) - log_q
    scores[0, 2] = scores[2, 0] = float("-inf")  # the accidental hits
    logits = in_batch_logits(interests, target_emb, targets, log_q)
    p = logits.softmax(dim=1)
    alpha, negatives = tiny_cfg.smoothing, torch.isfinite(logits) & ~torch.eye(4, dtype=bool)
    per_row = (-(1 - alpha) * p.diagonal().log()
               - alpha * (torch.log1p(-p) * negatives).sum(1) / negatives.sum(1))
print("logits match:", torch.allclose(scores, logits, atol=1e-6))
print("loss matches:", torch.allclose(per_row.mean(), smoothed_in_batch_loss(logits, alpha),
                                      atol=1e-6))

# %% [markdown]
# Training predicts one next item per sequence: the query tokens sit at the end, so a
# sequence gives one target, against SASRec's one per position. The paper trains on a
# stream of billions of events and does not care; on a small dataset it matters. We draw
# several random cut points per user and epoch, and add an
# **auxiliary next-item loss** at every raw position (our addition, switchable with
# `aux_weight`, scored against the same in-batch negatives). Here is the whole training
# objective:

# %%
show_source(KuaiFormer.forward)

# %% [markdown]
# ## MovieLens-100K: KuaiFormer against SASRec
#
# The protocol is chapter 1's, RecBole's: per user, the last rating is the test target,
# the one before it the validation target; every item is ranked. SASRec reads the last 50
# items and is trained with a softmax over all items at every position, RecBole's
# defaults. KuaiFormer reads the last 64 items (32 compressed into one token and 16 into
# two, the newest 16 raw: 19 tokens) and three side features per watch: the rating
# (how it was "watched"), the movie's first genre and its decade. Both keep the weights of
# their best validation epoch.

# %%
try:
    movielens = load_ml100k()
except DataUnavailableError as error:  # offline: say so and skip the real-data sections
    movielens = None
    print(f"MovieLens-100K is not available here, its sections are skipped: {error}")
else:
    ml_frame = side_features(movielens)
    ml_columns = ("rating_bucket", "genre_bucket", "decade_bucket")
    ml_kuaiformer = KuaiFormerConfig(
        n_items=movielens.n_items + 1,
        side_buckets=tuple(int(ml_frame[c].max()) + 1 for c in ml_columns),
        d_model=size.d_model, d_ffn=2 * size.d_model, n_interests=4,
        compression=((1, 32), (2, 8)), n_raw=16, aux_weight=1.0)
    sas_split = SequentialSplit(movielens.interactions, max_len=50)
    kf_split = SequentialSplit(ml_frame, max_len=ml_kuaiformer.max_len,
                               feature_columns=ml_columns)
    assert sas_split.checksum() == kf_split.checksum()  # the same sequences and targets
    print(f"{movielens.n_users} users, {movielens.n_items} items; KuaiFormer reads "
          f"{ml_kuaiformer.max_len} items as {ml_kuaiformer.n_tokens} tokens")


# %% [markdown]
# `recipes.kuaiformer.movielens_runs` trains the three contenders on each of the profile's
# seeds, each from `set_seed` of that seed: SASRec with RecBole's settings
# (`recipes.fit_recbole_sasrec`, the reference of chapters 2 to 4) and KuaiFormer with one
# and with four interests on several random cut points per user and epoch. Every model is
# scored on the validation users after each epoch and keeps its best epoch's weights; the
# test users are read once, at the end.

# %%
ml_runs = None
if movielens is not None:
    ml_runs = recipe.movielens_runs(sas_split, kf_split, ml_kuaiformer, size, SEED, DEVICE)

# %% [markdown]
# The table gives the test metrics (the mean over the profile's seeds, with the standard
# deviation when there are several); the figure the validation NDCG@10 after each epoch.

# %%
if movielens is not None:
    train_counts = torch.as_tensor(sas_split.train_item_counts())
    popularity = Popularity(sas_split.n_items).fit(  # fit() counts a list of item ids
        torch.repeat_interleave(torch.arange(sas_split.n_items), train_counts))
    test_batch = sas_split.eval_batch("test")
    popular = ranking_metrics(popularity.score_all(test_batch.user_ids), test_batch.target_ids,
                              ks=(10, 20, 50))
    ml_table = ml_runs.table({"popularity": popular})
    display(plots.table(ml_table))
    for name, key in (("popularity", "pop"), ("SASRec", "sasrec"),
                      ("KuaiFormer k=1", "kf1"), ("KuaiFormer k=4", "kf4")):
        for metric in ("ndcg@10", "recall@10", "recall@50"):
            glue(f"kf_ml_{key}_{metric.replace('@', '')}", round(ml_table.loc[name, metric], 4))
    best_kf = max(ml_table.loc["KuaiFormer k=1", "ndcg@10"], ml_table.loc["KuaiFormer k=4",
                                                                           "ndcg@10"])
    glue("kf_ml_gain_vs_sasrec_pct",
         f"{100 * (best_kf / ml_table.loc['SASRec', 'ndcg@10'] - 1):+.1f}")
    glue("kf_ml_seeds", plural(size.seeds, "seed"))
    glue("kf_ml_sasrec_epochs", size.sasrec_epochs)
    glue("kf_ml_kf_epochs", size.kuaiformer_epochs)
    glue("kf_ml_median_len", int(movielens.interactions.groupby("user_id").size().median()))

    plots.validation_curves({name: runs[0] for name, runs in ml_runs.histories.items()},
                            baseline=popular["ndcg@10"],
                            title="MovieLens-100K: learning curves (first seed)")

# %% [markdown]
# The better KuaiFormer's test NDCG@10 differs from SASRec's by
# {glue:text}`kf_ml_gain_vs_sasrec_pct` % here, after {glue:text}`kf_ml_sasrec_epochs`
# SASRec epochs and {glue:text}`kf_ml_kf_epochs` KuaiFormer epochs
# ({glue:text}`kf_ml_seeds`; the benchmark below shows how much one seed's test
# NDCG@10 moves between seeds). Read this as a comparison at a short budget, not of converged
# models: the curves show SASRec still climbing when it stops, and the benchmark below
# trains both to convergence. The paper's setting is far from this one anyway:
# KuaiFormer's strengths, the in-batch softmax over a catalogue of billions and the
# compression of 256-item histories, have little to do here, where a full softmax over
# 1,682 movies is cheap and the median user has {glue:text}`kf_ml_median_len` ratings.
#
# **Against RecBole.** `benchmarks/peer_recbole.py` trains RecBole 1.2.1's own SASRec on
# the same split in the same run as ours. Its committed results are read here when the
# repository is at hand (the book build); they are not recomputed, because one RecBole
# epoch took {glue:text}`kf_peer_recbole_epoch_s` s on the benchmark's machine.

# %%
peer_path = results_dir() / "peer_recbole.json"
if peer_path.exists():
    peer_report = json.loads(peer_path.read_text())
    peer_table, peer_values = recipe.peer_summary(peer_report)
    display(plots.table(peer_table))
    peer_judged = recipe.peer_verdicts(peer_report)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    our_sasrec = [run for run in peer_report["runs"]
                  if run["model"] == "recfunnel SASRec" and run.get("chosen", True)]
    for i, run in enumerate(our_sasrec):
        seconds, scores = zip(*run["valid_curve"], strict=True)
        ax.plot(seconds, scores, lw=1, color=plots.PALETTE[0],
                label=f"our SASRec ({plural(len(our_sasrec), 'seed')})" if i == 0 else None)
    seconds, scores = zip(*peer_report["runs"][0]["valid_curve"], strict=True)
    ax.plot(seconds, scores, marker="o", lw=2, color=plots.PALETTE[1],
            label=peer_report["runs"][0]["model"])
    recbole_run = peer_report["runs"][0]
    ax.axhline(recbole_run["best_valid_ndcg@10"], color="grey", ls=":")
    ax.axvline(recbole_run["wall_seconds"] / recipe.SPEEDUP, color="grey", ls="--",
               label=f"1/{recipe.SPEEDUP:g} of RecBole's wall time")
    ax.set(xlabel="seconds of training (validation after every epoch)",
           ylabel="validation NDCG@10", title="Our SASRec and RecBole's, one run")
    ax.legend(fontsize=8)
    fig.tight_layout()
else:
    print("benchmarks/results/peer_recbole.json is not here (a Colab session?): "
          "see the repository for the peer comparison")
    peer_values = dict.fromkeys(recipe.PEER_KEYS, "n/a")
    peer_judged = {}
for key, value in peer_values.items():
    glue(f"kf_peer_{key}", value)
stride = retrieval.SETTINGS.sasrec_stride
glue("kf_peer_stride", stride)
glue("kf_peer_min_history", 50 - stride + 1)
glue("kf_peer_margin", f"{recipe.PARITY_MARGIN:.0%}")
glue("kf_peer_speedup", f"{recipe.SPEEDUP:g}")
for key in ("parity", "speed"):
    judged = peer_judged.get(key)
    glue(f"kf_peer_{key}_verdict", judged.text if judged else "not judged (no per-user ranks)")
    glue(f"kf_peer_{key}_gap", judged.gap.summary if judged else "n/a")

# %% [markdown]
# In this benchmark our SASRec trains the way RecBole's does in substance: every target
# sees its full history (up to 50 items). RecBole makes every prefix of a history its own
# sample; we cut overlapping 50-item windows {glue:text}`kf_peer_stride` items apart and
# let each window train only its newest {glue:text}`kf_peer_stride` targets
# (`SequentialSplit.train_windows(stride)`), so every target is trained once per epoch with
# at least {glue:text}`kf_peer_min_history` items of history, for a fraction of the
# Transformer work of all prefixes. On the first seed a dropout sweep and a separate output
# item table were tried (the "setting" column); the setting with the best *validation*
# NDCG@10 is marked "chosen" and is the only one trained on the other seeds and counted
# below. The chapter's own live SASRec above keeps the cheaper disjoint windows.
#
# With the same seed, the chosen SASRec's test NDCG@10 differs from RecBole's by
# {glue:text}`kf_peer_parity_pct` %. That it reaches RecBole's, within
# {glue:text}`kf_peer_margin` of RecBole's NDCG@10 paired over the test users and our seeds
# (gap {glue:text}`kf_peer_parity_gap`): {glue:text}`kf_peer_parity_verdict`. RecBole was
# capped at {glue:text}`kf_peer_recbole_epochs` epochs for time; in the same run our SASRec
# {glue:text}`kf_peer_reached`. That it reaches RecBole's best validation NDCG@10 in under
# 1/{glue:text}`kf_peer_speedup` of RecBole's wall time, over our seeds (RecBole's wall time
# over ours to that score, minus {glue:text}`kf_peer_speedup`: {glue:text}`kf_peer_speed_gap`):
# {glue:text}`kf_peer_speed_verdict`. The figure shows both: the dotted line is RecBole's
# best validation score, the dashed one the wall-time bound. On the first seed the
# separate output table is the setting that stands out (the table's "setting" column) and
# validation chose it; the sweep tried it at one dropout on one seed, so it is a lead for
# the next experiment, not a measured rule. Trained to convergence and averaged over
# {glue:text}`kf_peer_seeds`, the better KuaiFormer's test NDCG@10 differs from our
# SASRec's by {glue:text}`kf_peer_kf_vs_sasrec` %. The runs were made at commit
# {glue:text}`kf_peer_commit`.
#
# ## MovieLens-1M: enough users to see five per cent
#
# With 943 test users, the standard error of a model's NDCG@10 on MovieLens-100K is about
# a tenth of its value: no gap of a few per cent between two models can be told from noise
# there. MovieLens-1M {footcite}`harper2015movielens` has 6,040 users, two and a half times
# less noise (the square root of 6,040 / 943), and `benchmarks/retrieval_ml1m.py` runs the retrieval chapters' models on it
# beside three outside implementations on the same split: RecBole 1.2.1's GRU4Rec and
# SASRec {footcite}`zhao2021recbole` (dropout 0.2) and RecTools' SASRec. Every contender
# gets the same wall-clock budget on the same machine and keeps its best validation epoch;
# every test user's target rank is stored, so gaps are paired per user.
#
# Two published findings shape our settings (`recipes.retrieval`, fixed before any run).
# SASRec trained with a softmax over all items beats the original one-negative loss by a
# wide margin on MovieLens-1M (NDCG@10 about 0.18 against 0.13
# {footcite}`klenitskiy2023turning`), and in-batch negatives are the weakest choice on
# small catalogues, with logQ only partly closing the gap {footcite}`tikhonovich2025esasrec`.
# So KuaiFormer runs with the paper's in-batch loss and with a full softmax
# (`KuaiFormerConfig(loss="full")`, which also scores the auxiliary all-position loss
# against the whole catalogue). And SASRec trains on overlapping windows
# (`SequentialSplit.train_windows(stride=10)`): every target once, each seeing at least 41
# items of history, where disjoint 50-item windows leave the first targets of each window
# almost blind. RecBole gets the same effect by treating every prefix as a sample, which
# runs the Transformer over 50 positions for each target where our windows run it over 5.
# Its output shares the item table with its input, as in RecBole: these settings were fixed
# before the MovieLens-100K sweep above picked a separate output table, and they stay fixed
# so that nothing here is chosen after looking. Chapters 3 and 4 read the same report for
# ELASTIC and DimeRec.

# %%
CHAPTER_MODELS = ("SASRec", "KuaiFormer k=1", "KuaiFormer k=4", "KuaiFormer k=1, full softmax",
                  "KuaiFormer k=4, full softmax")
ml1m_report = retrieval.committed_report()
if ml1m_report is not None and PROFILE == "gpu":  # this chapter's models again, live
    ml1m_report = retrieval.with_live_runs(ml1m_report, CHAPTER_MODELS, SEED, device=DEVICE)
ml1m_section = ml1m_report is not None and any(r["dataset"] == "ml-1m"
                                               for r in ml1m_report["runs"])
if ml1m_section:
    ml1m_table = retrieval.table(ml1m_report, "ml-1m")
    display(plots.table(retrieval.shown(ml1m_report, "ml-1m")))
    retrieval.plot(ml1m_report, "ml-1m", highlight=CHAPTER_MODELS,
                   title="MovieLens-1M: test NDCG@10, one seed, 6,040 users")
    ml1m_values = retrieval.summary(ml1m_report)
    ml1m_goal = retrieval.goal_verdicts(ml1m_report)
    ours = [m for m in CHAPTER_MODELS[1:] if m in ml1m_table.index]
    best_kf = max(ours, key=lambda m: ml1m_table.loc[m, "ndcg@10"]) if ours else None
    glue("kf_ml1m_users", ml1m_values["users"])
    glue("kf_ml1m_peer", ml1m_values["best_peer"])
    glue("kf_ml1m_peer_ndcg", ml1m_values["best_peer_ndcg"])
    glue("kf_ml1m_commits", ml1m_values["commits"])
    glue("kf_ml1m_peer_training", retrieval.peer_training(ml1m_report))
    glue("kf_ml1m_rising", ", ".join(retrieval.still_rising(ml1m_report)) or "none")
    for model, key in (("SASRec", "sasrec"), (best_kf, "kf")):
        ratio = ml1m_values.get(f"ratio {model}", float("nan"))
        glue(f"kf_ml1m_{key}_ratio", f"{ratio:.3f}" if ratio == ratio else "n/a")
        glue(f"kf_ml1m_{key}_ndcg", float(ml1m_table.loc[model, "ndcg@10"])
             if model in ml1m_table.index else float("nan"))
    glue("kf_ml1m_best_kf", best_kf or "n/a")
    glue("kf_ml1m_goal", ml1m_goal[best_kf].text if best_kf in ml1m_goal else "not run")
    inbatch_vs_full = [ml1m_table.loc[f"KuaiFormer k={k}, full softmax", "ndcg@10"]
                       - ml1m_table.loc[f"KuaiFormer k={k}", "ndcg@10"] for k in (1, 4)
                       if f"KuaiFormer k={k}" in ml1m_table.index
                       and f"KuaiFormer k={k}, full softmax" in ml1m_table.index]
    glue("kf_ml1m_full_gain", f"{np.mean(inbatch_vs_full):+.4f}" if inbatch_vs_full else "n/a")
    if retrieval.has_runs(ml1m_report, "ml-100k"):  # the same benchmark on MovieLens-100K
        display(plots.table(retrieval.shown(ml1m_report, "ml-100k")))
else:
    print("benchmarks/results/retrieval_ml1m.json is not here (a Colab session?): see the "
          "repository for the MovieLens-1M benchmark")
    for key in ("users", "peer", "commits", "sasrec_ratio", "kf_ratio", "best_kf", "goal",
                "full_gain", "peer_training", "rising"):
        glue(f"kf_ml1m_{key}", "n/a")
    for key in ("peer_ndcg", "sasrec_ndcg", "kf_ndcg"):
        glue(f"kf_ml1m_{key}", float("nan"))
ml100k = {model: retrieval.chapter_values(ml1m_report, model, "ml-100k")
          for model in ("SASRec", "KuaiFormer k=4")}
glue("kf_ml100k_seeds", ml100k["SASRec"]["seeds"])
glue("kf_goal_ratio", f"{retrieval.GOAL:g}")
glue("kf_ml100k_peer", ml100k["SASRec"]["peer"])
glue("kf_ml100k_sasrec_ratio", ml100k["SASRec"]["ratio"])
glue("kf_ml100k_kf4_ratio", ml100k["KuaiFormer k=4"]["ratio"])

# %% [markdown]
# On {glue:text}`kf_ml1m_users` test users the best peer is {glue:text}`kf_ml1m_peer`
# (NDCG@10 {glue:text}`kf_ml1m_peer_ndcg:.4f`). Our SASRec reaches
# {glue:text}`kf_ml1m_sasrec_ratio` times its NDCG@10, the best KuaiFormer
# ({glue:text}`kf_ml1m_best_kf`) {glue:text}`kf_ml1m_kf_ratio` times; the course set itself
# the goal of {glue:text}`kf_goal_ratio` times the best peer with a significant paired gap, and for that
# KuaiFormer the verdict is: {glue:text}`kf_ml1m_goal`. The full softmax minus the in-batch
# loss, averaged over k = 1 and 4: {glue:text}`kf_ml1m_full_gain`, which measures whether the
# published ordering of the two losses (above) holds here at this budget, where the
# in-batch loss also runs more epochs in the same time. Every model had the same
# wall budget (the table's "budget s"), so a model that is slower per epoch saw fewer
# epochs: the table says how many and what ended each run. The peers train on every prefix
# of every history, ten times our Transformer's work per target, and
# {glue:text}`kf_ml1m_peer_training`. Of ours, these were still at their best validation
# score in their last epoch when the budget stopped them: {glue:text}`kf_ml1m_rising`. A
# goal that did not hold here says that at this budget on two CPU cores our models stay
# below the best peer; it says nothing about converged models, for which the benchmark
# must run longer (`--redo` with a larger `--budget`) or on a GPU. The runs were made at
# commit(s) {glue:text}`kf_ml1m_commits`. On MovieLens-100K the same benchmark (the second
# table when the report holds it, {glue:text}`kf_ml100k_seeds`) puts our SASRec at
# {glue:text}`kf_ml100k_sasrec_ratio` and KuaiFormer k=4 at {glue:text}`kf_ml100k_kf4_ratio`
# times the best peer there, {glue:text}`kf_ml100k_peer`; with 943 test users these ratios
# describe, they decide nothing.
#
# ## Which softmax? A sweep over catalogue sizes
#
# KuaiFormer's in-batch softmax exists because Kuaishou's catalogue has billions of videos:
# a softmax over all of them at every step is out of the question, and the other targets of
# a batch of thousands of users, corrected by logQ, are the negatives at hand. On a
# catalogue of a few thousand items the full softmax costs little, and every item is a
# negative at every step. Where does one regime end and the other begin? The sweep below
# plants the same kind of interests into worlds whose catalogues grow from a few hundred to
# thousands of videos (a hundred thousand at `gpu`), and trains the same KuaiFormer (four interests, 64 items,
# no auxiliary loss, so only the two losses differ) with each loss. At `smoke` and `cpu`
# the chapter reads the committed sweep (`benchmarks/kuaiformer_catalogue.py`); at `gpu` it
# runs it, with eight thousand users and a catalogue of up to 102,400 videos.

# %%
catalogue_path = results_dir() / "kuaiformer_catalogue.json"
if PROFILE == "gpu":
    catalogue = recipe.catalogue_record(recipe.catalogue_sweep(size, SEED, DEVICE))
elif catalogue_path.exists():
    catalogue = json.loads(catalogue_path.read_text())["sweep"]
else:
    catalogue = None
    print("benchmarks/results/kuaiformer_catalogue.json is not here: the sweep is skipped")
if catalogue is not None:
    catalogue_table, full_wins, inbatch_level = recipe.catalogue_verdicts(catalogue)
    display(plots.table(catalogue_table))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for column, label in (("in-batch", "in-batch softmax + logQ (the paper)"),
                          ("full", "softmax over the whole catalogue")):
        ax.plot(catalogue_table.index.astype(int), catalogue_table[column].astype(float),
                marker="o", label=label)
    plots.log_axis(ax, "x", catalogue_table.index.astype(int).tolist())
    ax.set_xlabel("videos in the catalogue")
    ax.set_ylabel("test NDCG@10")
    ax.set_title("The two losses as the catalogue grows")
    ax.legend()
    fig.tight_layout()
    sizes = catalogue_table.index.astype(int).tolist()
    level_at = [n for n in sizes if inbatch_level[n].outcome is Outcome.NOT_WORSE]
    wins_at = [n for n in sizes if full_wins[n].outcome is Outcome.HELD]
    glue("kf_cat_sizes", ", ".join(f"{n:,}" for n in sizes))
    glue("kf_cat_full_wins", ", ".join(f"{n:,}" for n in wins_at) or "none")
    glue("kf_cat_level", ", ".join(f"{n:,}" for n in level_at) or "none")
    glue("kf_cat_margin", f"{recipe.CATALOGUE_MARGIN:.0%}")
else:
    for key in ("sizes", "full_wins", "level", "margin"):
        glue(f"kf_cat_{key}", "n/a")

# %% [markdown]
# Over catalogues of {glue:text}`kf_cat_sizes` videos, the full softmax wins (paired over
# the test users, the book's rule) at: {glue:text}`kf_cat_full_wins`; the in-batch loss is
# not worse, within {glue:text}`kf_cat_margin` of the full softmax's NDCG@10, at:
# {glue:text}`kf_cat_level`. The in-batch loss with logQ is an estimate of the full one whose
# negatives are the batch's targets; the correction removes the popularity bias of that
# sample, not its size, and how much the size matters depends on how many items compete for
# a user's next watch. The seconds columns show the other side: the full softmax's cost
# grows with the catalogue, the in-batch loss's with the batch only.
#
# ## Serving: the best interest, through an index
#
# Serving searches the item table with each interest and keeps each item's best score,
# Eq. 9. `recfunnel.retrieval` does it exactly with `torch.topk`, or with FAISS when it is
# installed; both must return what `score_all` ranks first.

# %%
if movielens is not None:
    model = ml_runs.models["KuaiFormer k=4"].cpu().eval()
    valid = kf_split.eval_batch("valid")
    with torch.no_grad():
        queries = model.interests(valid.user_seq, valid.is_pad, valid.seq_feats)  # [B, 4, D]
        expected = model.score_all(valid).topk(50, dim=1).indices
    table = model.item_vectors().detach()[1:]  # row 0 is padding: leave it out of the index
    backends = ["exact"]
    try:
        import faiss  # noqa: F401

        backends.append("faiss")
    except ImportError:
        print("FAISS is not installed; only the exact index is shown")
    for backend in backends:
        _, found = build_index(table, backend=backend).search(queries, k=50)
        agreement = (found + 1 == expected).float().mean().item()
        print(f"{backend:>5}: top-50 equal to score_all's in {agreement:.1%} of positions")
        glue(f"kf_index_agreement_{backend}", agreement)

# %% [markdown]
# ## Planted interests: testing the paper's claims
#
# MovieLens cannot say whether the $k$ interest vectors find a user's interests: nobody
# knows them. The synthetic world can. Each user here gets between two and five of the
# world's topics, with Dirichlet weights, and watches a long sequence of videos: sessions
# of one interest (the next watch stays on the current topic with probability 0.3), a
# personal taste inside each topic (the world's user vector), and a popularity skew
# between videos (the world's item bias), which is what logQ must correct.

# %%
world = World.build(planted_world(size.planted_users, size.planted_items,
                                  size.planted_topics, seed=SEED))
planted = plant_interests(world, length=size.long_len + 2, stickiness=0.3, seed=SEED)
watches = planted.interactions
print(f"{size.planted_users} users x {size.long_len + 2} watches, {size.planted_items} "
      f"videos in {size.planted_topics} topics")
user0 = watches[watches.user_id == 1]
print("user 1's planted topics and weights:",
      dict(zip(planted.user_topics[0].tolist(), planted.user_weights[0].round(2).tolist(),
               strict=True)))
print("the topics of their first 30 watches:", user0.topic.to_numpy()[:30].tolist())
glue("kf_planted_users", size.planted_users)
glue("kf_planted_len", size.long_len)

# %% [markdown]
# Every variant below has the same width, depth and training budget; only the part a
# claim is about changes. Besides NDCG@10 and HR@50 on the test targets, three readouts
# use the truth:
#
# - **topic coverage**: the share of a user's planted topics present among their top-10
#   items (a single interest vector tends to serve the dominant topic first);
# - **interest spread**: the mean pairwise cosine similarity of a user's $k$ interest
#   vectors (1 means the $k$ vectors are the same);
# - **long-tail share**: the share of the top-50 items from the less popular half of the
#   catalogue (what logQ should raise).

# %% [markdown]
# Each variant is one call of `recipes.kuaiformer.planted_run`: it builds the sequential
# split for the variant's history length, trains the configuration from
# `recipes.kuaiformer.planted_config` for the profile's epochs without early stopping (the
# claims compare variants at one budget, so none may stop sooner), and keeps every test
# user's readouts for paired comparisons. The variants differ only in the history length,
# the compression, the number of interests and the logQ switch.

# %%
def variant(name: str, max_len: int, compression=(), n_raw=None, k: int = 4,
            log_q: bool = True) -> recipe.PlantedRun:
    """Train one KuaiFormer on the planted histories (``recipes.kuaiformer.planted_run``)."""
    cfg = recipe.planted_config(planted, size, max_len, compression, n_raw, k, log_q)
    return recipe.planted_run(name, planted, cfg, size, SEED, DEVICE)


planted_runs = {f"k={k}": variant(f"k={k}, n=64", 64, k=k) for k in (1, 4)}
planted_runs["no logQ"] = variant("k=4, n=64, no logQ", 64, log_q=False)
for n in size.short_lens:
    planted_runs[f"n={n}"] = variant(f"k=4, n={n}", n)
long_raw = size.long_len - sum(g * s for g, s in size.long_compression)
planted_runs["long compressed"] = variant(f"k=4, n={size.long_len} compressed", size.long_len,
                                          size.long_compression, long_raw)
planted_runs["long raw"] = variant(f"k=4, n={size.long_len} raw", size.long_len)

# %% [markdown]
# Popularity is the floor every variant must clear: it recommends the videos watched most
# often in the training histories, the same list to every user. Every variant's split is
# cut from the same watch histories with the same held-out targets, only the window
# differs, so this one number serves as the floor for all of them.

# %%
planted_split = planted_runs["k=4"].split
planted_test = planted_split.eval_batch("test")
planted_pop = ranking_metrics(
    torch.as_tensor(planted_split.train_item_counts(), dtype=torch.float32).expand(
        len(planted_test), -1), planted_test.target_ids, ks=(10, 50))
glue("kf_planted_pop_ndcg10", round(planted_pop["ndcg@10"], 4))
print(f"popularity on the planted histories: NDCG@10 {planted_pop['ndcg@10']:.4f}, "
      f"HR@50 {planted_pop['hr@50']:.4f}")


# %% [markdown]
# ### Claim 1: several interests cover more of a user
#
# The paper reports that going from one query token to two raises its offline accuracy by
# 0.006 and from six to seven by only 0.001 (Fig. 3). Here, with the same backbone:

# %%
interest_table = recipe.readout(planted_runs, ["k=1", "k=4"])
display(plots.table(interest_table))
k4 = planted_runs["k=4"]
for key, digits in (("hr@50", 4), ("coverage", 3)):
    for name in ("k=1", "k=4"):
        glue(f"kf_claim1_{key.replace('@', '')}_{name.replace('=', '')}",
             round(interest_table.loc[name, key], digits))
claim1_gap = recipe.planted_gap(planted_runs, "k=4", "k=1", "hr@50")
claims = {"1": Verdict.better("four interests beat one on HR@50", claim1_gap)}
glue("kf_claim1_gap", str(claim1_gap))
glue("kf_claim1_held", claims["1"].text)
glue("kf_claim1_spread", round(interest_table.loc["k=4", "spread"], 3))

# %% [markdown]
# With four query tokens HR@50 is {glue:text}`kf_claim1_hr50_k4` against
# {glue:text}`kf_claim1_hr50_k1` with one (paired over users:
# {glue:text}`kf_claim1_gap`), and the top-10 covers {glue:text}`kf_claim1_coverage_k4` of
# a user's planted topics against {glue:text}`kf_claim1_coverage_k1`: the claim
# {glue:text}`kf_claim1_held` on this data. The
# mean cosine between a user's four interests is {glue:text}`kf_claim1_spread`. A single
# vector in $D$ dimensions can already score several topics high at once when $D$ is much
# larger than the number of interests, which is why the gain from more tokens is small,
# here as in the paper.
#
# The figure projects one user's items onto the two main directions of the item
# embeddings: the items of each planted topic in colour, the rest in grey, and the four
# interest vectors as arrows.

# %%
user = int(np.argmax([len(t) for t in planted.user_topics]))  # a user with many interests
table4 = k4.model.item_vectors().detach().cpu()[1:]
center = table4.mean(0)
_, _, basis = torch.linalg.svd(table4 - center, full_matrices=False)
project = basis[:2].T  # [D, 2]
xy = ((table4 - center) @ project).numpy()
fig, ax = plt.subplots(figsize=(7.5, 4.6))
ax.scatter(xy[:, 0], xy[:, 1], s=3, color="lightgrey", label="other videos")
for color, topic in zip(plots.PALETTE, planted.user_topics[user], strict=False):
    members = planted.item_topic[1:] == topic
    weight = planted.user_weights[user][list(planted.user_topics[user]).index(topic)]
    ax.scatter(xy[members, 0], xy[members, 1], s=6, color=color,
               label=f"topic {topic} (weight {weight:.2f})")
arrows = (k4.interests[user] @ project).numpy()
arrows *= np.abs(xy).max() / np.abs(arrows).max()
for j, (dx, dy) in enumerate(arrows):
    ax.annotate("", xy=(dx, dy), xytext=(0, 0), arrowprops={"arrowstyle": "->", "lw": 1.8})
    ax.text(dx * 1.08, dy * 1.08, f"u{j + 1}", fontsize=9, weight="bold")
reach = 1.15 * max(np.abs(xy).max(), np.abs(arrows).max())  # every arrow inside the axes
ax.set(title=f"user {user + 1}: planted topics and the 4 interests", xticks=[], yticks=[],
       xlim=(-reach, reach), ylim=(-reach, reach))
ax.set_aspect("equal")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), markerscale=2)  # beside the cloud
fig.tight_layout()
plt.show()

# %% [markdown]
# How to read the figure: the grey cloud is every video, projected on the two main
# directions of the item table; the coloured points are the videos of this user's planted
# topics, with each topic's weight in the user's mix. The arrows are the user's four
# interest vectors in the same projection, scaled to the cloud. Interests that point at
# different coloured groups have split the user's topics between them; arrows that point
# the same way have learned the same thing. A two-dimensional projection can hide a split
# that the full space keeps, so the coverage and spread readouts above are the measure.

# %% [markdown]
# ### Claims 2 and 4: compression is nearly free, and longer histories help
#
# The paper's Table 3: 64 raw items reach 0.417, 256 raw items 0.441, 256 items compressed
# into 55 tokens 0.445, at about a tenth more compute than 64 items where 256 raw items
# cost six times as much. At this profile the long history is
# {glue:text}`kf_planted_len` items; compressed, the oldest go into
# {glue:text}`kf_long_groups` group tokens.

# %% [markdown]
# The table reads each length's run out on its test users, and adds two costs: the mean
# seconds of one training step on a batch, after a warm-up step
# (`recipes.kuaiformer.step_seconds`, measured here, on this machine), and the query-key
# pairs per head and sequence, counted exactly from the configuration
# (`KuaiFormerConfig.attention_pairs`: the causal layers over the tokens and the query
# tokens, plus the compressor's groups). The pairs are the cost that does not depend on
# the machine, and the one claim 2 is judged on.

# %%
lengths = sorted({*size.short_lens, 64})
names = [f"n={n}" if n != 64 else "k=4" for n in lengths] + ["long compressed", "long raw"]
length_table = recipe.readout(planted_runs, names)
length_table.index = [f"n={n}" for n in lengths] + [f"n={size.long_len} compressed",
                                                     f"n={size.long_len} raw"]


length_table["step s"] = [recipe.step_seconds(planted_runs[name], size.batch_size, DEVICE)
                          for name in names]
length_table["attention pairs"] = [planted_runs[name].cfg.attention_pairs for name in names]
display(plots.table(length_table, formats={"step s": "{:.3f}"}))

# %%
comp, raw, base = length_table["ndcg@10"].iloc[-2], length_table["ndcg@10"].iloc[-1], \
    length_table.loc["n=64", "ndcg@10"]
t_comp, t_raw, t_base = length_table["step s"].iloc[-2], length_table["step s"].iloc[-1], \
    length_table.loc["n=64", "step s"]
glue("kf_long_groups", sum(g for g, _ in size.long_compression))
glue("kf_claim2_comp", round(comp, 4))
glue("kf_claim2_raw", round(raw, 4))
glue("kf_claim2_base", round(base, 4))
glue("kf_claim2_speedup", round(t_raw / t_comp, 2))
glue("kf_pairs_ratio", round(length_table["attention pairs"].iloc[-1]
                             / length_table["attention pairs"].iloc[-2], 2))
glue("kf_claim2_cost_vs_64", round(t_comp / t_base, 2))
glue("kf_claim2_raw_cost_vs_64", round(t_raw / t_base, 2))
# Claims 2 and 4 each contain a non-inferiority part, "not worse than", whose margin is
# declared here, before the runs are read: 5 % of the reference model's NDCG@10.
MARGIN = 0.05
pairs_ratio = length_table["attention pairs"].iloc[-1] / length_table["attention pairs"].iloc[-2]
claims["2"] = recipe.compression_verdict(planted_runs, pairs_ratio, MARGIN)
claims["4"] = recipe.length_verdict(planted_runs, lengths[0], MARGIN)
glue("kf_claim2_gap", str(claims["2"].parts[0].gap))
glue("kf_claim2_held", claims["2"].text)
glue("kf_claim4_gap", str(claims["4"].parts[0].gap))
glue("kf_claim4_gap_long", str(claims["4"].parts[1].gap))
glue("kf_claim4_held", claims["4"].text)
glue("kf_margin_pct", round(100 * MARGIN))
glue("kf_claim4_shortest", round(length_table["ndcg@10"].iloc[0], 4))
glue("kf_claim4_shortest_len", lengths[0])

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].plot(lengths, length_table["ndcg@10"].iloc[:len(lengths)], marker="o",
             color=plots.PALETTE[0], label="raw history")
axes[0].scatter([size.long_len], [comp], marker="*", s=160, color=plots.PALETTE[1],
                label="compressed", zorder=3)
axes[0].scatter([size.long_len], [raw], marker="s", s=50, color=plots.PALETTE[2],
                label="raw", zorder=3)
axes[0].set(xlabel="history length n", ylabel="test NDCG@10",
            title="quality against history length")
plots.log_axis(axes[0], ticks=lengths + [size.long_len])
axes[0].legend()
axes[1].barh(length_table.index, length_table["step s"], color=plots.PALETTE[3])
axes[1].set(xlabel="seconds per training step", title="cost of a training step")
fig.tight_layout()

# %% [markdown]
# Compressed, the long history reaches NDCG@10 {glue:text}`kf_claim2_comp` against
# {glue:text}`kf_claim2_raw` uncompressed and {glue:text}`kf_claim2_base` with 64 raw
# items. One training step of the compressed model takes
# {glue:text}`kf_claim2_cost_vs_64` times as long as the 64-item model's, the
# uncompressed one {glue:text}`kf_claim2_raw_cost_vs_64` times: compression makes the
# long model {glue:text}`kf_claim2_speedup` times faster. Claim 2 says compression is
# nearly free, a non-inferiority claim: the compressed model may not fall below the raw one
# by more than a margin declared before the run, {glue:text}`kf_margin_pct` % of the raw
# model's NDCG@10 (paired gap {glue:text}`kf_claim2_gap`), and it must at least halve the
# attention pairs; its verdict: {glue:text}`kf_claim2_held`. Claim 4 (64 items beat
# {glue:text}`kf_claim4_shortest_len`, paired gap {glue:text}`kf_claim4_gap`, and the long
# compressed history does not fall back by more than the same margin, gap
# {glue:text}`kf_claim4_gap_long`): {glue:text}`kf_claim4_held`. A "not worse" verdict is
# weaker than held: it shows the difference is small, not that there is none. The
# attention pairs fall {glue:text}`kf_pairs_ratio`-fold;
# the time falls with the number of tokens as well, since the feed-forward layers and the
# norms run on every token.
#
# ### Claim 3: logQ correction
#
# Without the correction, every in-batch negative counts as if all items were equally
# likely to be one, and popular items, which are somebody's next item in most batches, are
# pushed down.

# %%
logq_table = recipe.readout(planted_runs, ["k=4", "no logQ"]).rename(index={"k=4": "with logQ"})
display(plots.table(logq_table))
for key, digits in (("ndcg@10", 4), ("long_tail", 3)):
    for row, label in (("with logQ", "with"), ("no logQ", "without")):
        glue(f"kf_claim3_{key.replace('@', '')}_{label}", round(logq_table.loc[row, key], digits))
    gap = recipe.planted_gap(planted_runs, "k=4", "no logQ", key)
    claims[f"3 ({key})"] = Verdict.better(f"logQ correction raises {key}", gap)
    glue(f"kf_claim3_{key.replace('@', '')}_gap", str(gap))
    glue(f"kf_claim3_{key.replace('@', '')}_held", claims[f"3 ({key})"].text)

# %% [markdown]
# With logQ, NDCG@10 is {glue:text}`kf_claim3_ndcg10_with` against
# {glue:text}`kf_claim3_ndcg10_without` without it (paired gap
# {glue:text}`kf_claim3_ndcg10_gap`): the accuracy part of the claim
# {glue:text}`kf_claim3_ndcg10_held`. The share of long-tail items in the top-50 is
# {glue:text}`kf_claim3_long_tail_with` with the correction and
# {glue:text}`kf_claim3_long_tail_without` without (gap {glue:text}`kf_claim3_long_tail_gap`):
# that part {glue:text}`kf_claim3_long_tail_held`.
#
# Consider what the correction does. Without it, a popular video, somebody's next watch
# in almost every batch, serves as a negative far more often than a rare one and is
# pushed down, so the uncorrected model leans towards the tail; the correction removes
# that push, so it should *lower* the long-tail share, whatever the claim says. And
# subtracting $\log Q(x)$ with $Q$ the item's share of targets is exact only while an
# item's chance of being in a batch of $B$ is proportional to that share, that is while
# $B\,Q(x)$ is small. The next cell shows how far the head of this small catalogue is
# from that.

# %%
counts = np.bincount(watches.item_id, minlength=planted.n_items)
share = np.sort(counts[1:] / counts[1:].sum())[::-1][:5]
head = pd.DataFrame({"share of targets Q": share, "B * Q (what logQ assumes)":
                     size.batch_size * share,
                     "P(in a batch) = 1 - (1 - Q)^B": 1 - (1 - share) ** size.batch_size},
                    index=[f"#{i + 1}" for i in range(5)])
display(plots.table(head))
glue("kf_head_bq", round(float(size.batch_size * share[0]), 2))

# %% [markdown]
# For the most popular video $B\,Q$ is {glue:text}`kf_head_bq`: the correction keeps
# growing with popularity while the real chance of being in a batch has almost stopped
# at 1, so the head is over-corrected. On Kuaishou's catalogue of billions no video comes
# near that, and the correction does what it promises; on small catalogues, larger
# batches make it worse, not better.
#
# ## The claims, judged by one rule
#
# Every verdict above comes from `recfunnel.study`'s one rule: a gap counts only when the
# whole interval of two standard errors around it lies on one side of the bar (zero, or
# minus the declared margin for a "not worse" claim); a composite claim is as strong as its
# weakest part.

# %%
PAPER = {
    "1": "more query tokens help: offline accuracy +0.006 from 1 to 2 tokens, +0.001 from 6 "
         "to 7",
    "2": "compressing 256 items into 55 tokens is nearly free: 0.445 against 0.441 "
         "uncompressed and 0.417 with 64 items",
    "4": "longer histories help, with diminishing returns: 0.325 at 8 items to 0.441 at 256",
    "3 (ndcg@10)": "the logQ correction of in-batch negatives is used (not ablated)",
    "3 (long_tail)": "the logQ correction of in-batch negatives is used (not ablated)"}
display(claims_table(claims, PAPER))
SCALE = "Kuaishou's streaming training: 400M daily users, billions of videos"
glue("ledger", ledger_record("2. KuaiFormer", SCALE, claims, PAPER))

# %% [markdown]
# ## The paper and this book
#
# | | the paper (Kuaishou, 400M users) | this book |
# |---|---|---|
# | data | industrial stream, billions of videos | MovieLens-100K; planted histories of {glue:text}`kf_planted_users` synthetic users |
# | metric | replayed HR@50-1000, in-batch "accuracy" | full-ranking NDCG@10, HR@50 |
# | vs SASRec, short budget | HR@50 4.21 % vs 1.17 % (Table 1) | NDCG@10 {glue:text}`kf_ml_kf4_ndcg10` (k=4), {glue:text}`kf_ml_kf1_ndcg10` (k=1) vs {glue:text}`kf_ml_sasrec_ndcg10` |
# | vs SASRec, trained to convergence | | {glue:text}`kf_peer_kf_vs_sasrec` % NDCG@10 (benchmark, {glue:text}`kf_peer_seeds`) |
# | query tokens | +0.006 accuracy from 1 to 2 | HR@50 {glue:text}`kf_claim1_hr50_k1` (k=1) → {glue:text}`kf_claim1_hr50_k4` (k=4) |
# | compression | 0.445 (compressed 256) vs 0.441 (raw 256) vs 0.417 (raw 64) | {glue:text}`kf_claim2_comp` vs {glue:text}`kf_claim2_raw` vs {glue:text}`kf_claim2_base` (n = {glue:text}`kf_planted_len`) |
# | history length | 0.325 (n = 8) → 0.441 (n = 256), flattening after 64 | NDCG@10 {glue:text}`kf_claim4_shortest` (n = {glue:text}`kf_claim4_shortest_len`) → {glue:text}`kf_claim2_base` (n = 64) → {glue:text}`kf_claim2_comp` (n = {glue:text}`kf_planted_len`, compressed) |
# | its cost | about +10 % over 64 items; raw 256 about 6× | {glue:text}`kf_claim2_cost_vs_64`× and {glue:text}`kf_claim2_raw_cost_vs_64`× a 64-item step |
# | logQ | used, not ablated | NDCG@10 {glue:text}`kf_claim3_ndcg10_with` with vs {glue:text}`kf_claim3_ndcg10_without` without |
#
# The paper's offline "accuracy" is measured in-batch during streaming training and its
# hit rates on replayed requests over billions of candidates; neither can be compared with
# full-ranking metrics on a small catalogue, so the table compares directions, not values.
#
# ## What the paper leaves open
#
# - **Sizes.** $d$, heads, FFN width, optimiser, learning rate, batch size, dropout and the
#   smoothing weight $\alpha$ are not reported; we choose sizes that train in minutes on a
#   CPU (`recfunnel.profiles`), and dropout on the residual branches only, none on the
#   attention probabilities (as in Llama).
# - **The backbone's details.** "Llama-style" is all it says; we use pre-RMSNorm, SwiGLU and
#   rotary positions over the compressed token index.
# - **The embedding MLP.** Eq. 5 is a bare MLP; we scale the lookups and add the item back
#   (measured in exercise 1).
# - **Label smoothing.** The printed loss uses $\log(1-p)$ for the negatives, not the
#   usual $\log p$; we implement it as printed, with $\alpha = 0.1$.
# - **Q.** Not described (it appears as $Q_u$); we use each item's share of training targets.
# - **Max over interests.** "argmax" in Eq. 9 means the best score; the gradient flows
#   through the best interest only. Serving merges per-interest searches by that score;
#   the paper's production gives each interest a quota instead.
# - **Compression.** Whether the early and middle encoders share weights, and what to do
#   with padding: separate encoders, padding left out of the mean, empty groups masked.
# - **Training signal.** One target per sequence is enough on a stream of billions of
#   events; on small data we add random cut points and an auxiliary next-item loss.
# - **The softmax on a small catalogue.** The in-batch loss is the paper's answer to a
#   catalogue of billions. For thousands of items we add a full softmax
#   (`KuaiFormerConfig(loss="full")`, for the main and the auxiliary losses, no logQ since
#   nothing is sampled); the catalogue sweep above shows where each is the right choice.
#
# ## Pitfalls when you build it yourself
#
# - **Keep the compressed groups in time order.** The oldest groups come first and the
#   newest raw items last, next to the query tokens. Shuffled or reversed, the causal mask
#   no longer separates what the user did before from what came after.
# - **Leave padding out of a group's mean, and mask an empty group.** A short user's oldest
#   groups are all padding; averaged with the pads they become a token that looks like a
#   real, very bland behaviour, and every short user gets the same one.
# - **"argmax" over interests is the best score.** Equation 9 picks the interest with the
#   highest score for the target, and only that interest receives the gradient. An interest
#   that never wins stops learning; count how often each interest wins, as chapter 4 does
#   for ComiRec-SA, to see whether one has died.
# - **Correct in-batch negatives for popularity.** In an in-batch softmax a popular item
#   appears as a negative far more often than a rare one, so the model learns to push
#   popular items down. Subtracting $\log Q$ of each candidate undoes this; on batches of a
#   few dozen the estimate is too noisy to help, which is why every profile of the
#   chapter trains with batches of 256.
# - **One target per sequence is few.** SASRec learns from every position of every window;
#   KuaiFormer from the newest one. At equal epochs KuaiFormer has seen several times fewer
#   targets, so compare at convergence or give it cut points and the auxiliary loss, and say
#   which budget a comparison was made at.
# - **The paper's numbers are not MovieLens numbers.** Its hit rates come from replayed
#   requests over billions of videos and its "accuracy" from in-batch training; compare the
#   direction of an effect, never its size.
#
# ## Summary
#
# - KuaiFormer turns retrieval into next-action prediction: a Transformer reads the
#   history, a few query tokens read the Transformer, and each query token is one interest
#   vector searched in the item index.
# - Compression keeps long histories affordable: older items are squashed group by group,
#   so attention runs over a few dozen tokens instead of hundreds of items.
# - The loss is an in-batch softmax with logQ correction and label smoothing; the best
#   interest takes the gradient for each target.
# - Every claim is tested twice when it can be: on MovieLens-100K, where the truth is
#   unknown and only held-out ratings judge, and on planted histories, where the number of
#   interests and their order are known.
# - Non-inferiority claims ("nearly free", "does not fall back") are judged against a
#   margin declared before the runs, and reported as "not worse", never as held.
#
# ## Exercises

# %% [markdown]
# :::{exercise}
# :label: ex-02-embedding
# Replace KuaiFormer's token embedding by the bare MLP of Eq. 5,
# $t_i = \mathrm{MLP}([\mathbf x_i, \mathbf f_i])$ without the scaling and the skip, and train
# the shortest-history model on the planted histories for a few epochs. What happens to the
# validation NDCG@10, and why?
# :::
#
# :::{solution} ex-02-embedding
# :class: dropdown
# The bare version learns far more slowly. The item table is also the output layer, so
# it starts small (standard deviation 0.02); the MLP's first layer then sees inputs much
# smaller than its biases, every token looks alike, and attention has little to tell
# apart. The hidden cell trains both versions side by side for the same epochs.
# :::

# %% tags=["hide-cell", "solution"]
def bare_mlp_tokens(embedding, user_seq, seq_feats):
    """Eq. 5 as printed: t_i = MLP([x_i]) (no side features here), no scaling, no skip."""
    return embedding.mlp(embedding.item_emb(user_seq))


short_run = planted_runs[f"n={min(size.short_lens)}"]  # the cheapest variant
for label, bare in (("with the skip", False), ("bare MLP", True)):
    set_seed(SEED)
    model = KuaiFormer(short_run.cfg)
    if bare:
        model.embedding.forward = types.MethodType(bare_mlp_tokens, model.embedding)
    budget = TrainConfig(epochs=max(2, size.planted_epochs * 2 // 3), lr=size.lr,
                         monitor="ndcg@10", device=DEVICE, progress=False)
    history = recipe.fit_kuaiformer(model, short_run.split, size.per_user, size.batch_size,
                                    SEED, budget)
    print(f"{label:>14}: validation NDCG@10 by epoch",
          [round(v, 4) for v in history.column("ndcg@10")])

# %% [markdown]
# :::{exercise}
# :label: ex-02-quota
# The paper serves each interest with a fixed quota of the retrieval budget and merges
# the lists; this chapter ranks all items by their best interest. For the four-interest
# model on the planted histories, compare HR@50 of the two rules, with a quota of
# ⌈50/4⌉ = 13 items per interest.
# :::
#
# :::{solution} ex-02-quota
# :class: dropdown
# The quota rule gives every interest a share even when it is weak for this user, so a
# user with one dominant topic loses slots to minor ones; and when interests overlap, the
# quotas retrieve the same items several times and fill fewer than 50 distinct slots. The
# hidden cell prints both hit rates and the number of distinct items the quotas return;
# on these users the best-interest rule wins.
# :::

# %% tags=["hide-cell", "solution"]
run4 = planted_runs["k=4"]
test = run4.split.eval_batch("test")
table = run4.model.item_vectors().detach().cpu()
per_interest = torch.einsum("ukd,vd->ukv", run4.interests, table)
per_interest[..., 0] = float("-inf")
quota = per_interest.topk(13, dim=2).indices.flatten(1)  # [U, 4 * 13], duplicates possible
quota_hit = (quota == test.target_ids[:, None]).any(1).float().mean().item()
distinct = np.mean([len(set(row.tolist())) for row in quota])
print(f"HR@50 by the best interest: {run4.per_user['hr@50'].mean():.4f}; "
      "by a quota of 13 per interest: "
      f"{quota_hit:.4f}, from {distinct:.1f} distinct items on average (at most 52)")

# %% [markdown]
# :::{exercise}
# :label: ex-02-smoothing
# The paper's label smoothing penalises $\log(1-p)$ of the negatives. Show that for a
# negative with small $p$ this term is about $-p$, so its gradient pushes on the
# probability itself, while ordinary label smoothing's $\log p$ pushes on the logit. What
# does that mean for the negatives that the model already ranks low?
# :::
#
# :::{solution} ex-02-smoothing
# :class: dropdown
# $\log(1-p) = -p - p^2/2 - \dots \approx -p$ for small $p$, and
# $\partial(-\log(1-p))/\partial z = p$ for a softmax logit $z$ when $p$ is small: the
# push is proportional to how likely the negative already is, so negatives ranked low are
# left alone and only the confusable ones are pushed down. Ordinary label smoothing adds
# $-\frac{\alpha}{|\mathcal B|}\log p$, whose gradient $-\frac{\alpha}{|\mathcal B|}(1 - p)$
# pulls *every* negative up a little, which is its regularising effect. The hidden cell
# checks the first-order claim numerically.
# :::

# %% tags=["hide-cell", "solution"]
z = torch.tensor([2.0, 0.0, -3.0, -6.0], requires_grad=True)
p = z.softmax(0)
(-torch.log1p(-p[1:])).sum().backward()
print("p of the negatives:", p[1:].detach().numpy().round(4))
print("gradient of -log(1-p) on their logits:", z.grad[1:].numpy().round(4))

# %% [markdown]
# ## References
#
# ```{footbibliography}
# ```
