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
# # 1. RecFlow: the funnel and its data
#
# An industrial recommender does not pick six videos out of a billion in one step. It runs
# a **funnel**: retrieval, pre-ranking, coarse ranking, ranking, re-ranking and a final edge
# ranking that decides the exposure. Public datasets log only the last step, the exposures,
# so models trained on them never see what the earlier stages threw away. RecFlow
# {footcite}`liu2025recflow` is the first public dataset that logs samples from *every*
# stage of Kuaishou's funnel. This chapter reads its real format, builds the synthetic
# world that the rest of the course draws from in the same format, and loads the real
# MovieLens data the retrieval chapters are measured on.
#
# After this chapter you can:
# - describe the six stages of the funnel, their sizes and what RecFlow logs from each;
# - read RecFlow's files day by day in bounded memory and check them with `validate`;
# - build a synthetic Kuaishou world, knowing which truths it plants and why;
# - reproduce the MovieLens-100K sequential split that RecBole uses, line for line.

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
DEVICE = "auto"  # unused here: this chapter trains no model

# %%
# %matplotlib inline
import dataclasses
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from recfunnel import plots
from recfunnel.data import recflow
from recfunnel.data.download import DataUnavailableError
from recfunnel.data.funnel import simulate
from recfunnel.data.movielens import load_ml100k
from recfunnel.data.recflow import RecFlow
from recfunnel.data.sequences import SequentialSplit
from recfunnel.data.world import WORLD_PRESETS, World
from recfunnel.metrics import auc
from recfunnel.notebook import glue, setup, show_source
from recfunnel.study import Verdict, claims_table, exact_gap, ledger_record, paired_gap

_, size = setup("recflow", PROFILE, SEED, "cpu")  # style, seeds, sizes, the machine
world_cfg = dataclasses.replace(WORLD_PRESETS[size.world], seed=SEED)

# %% [markdown]
# ## The funnel at Kuaishou's scale
#
# RecFlow was collected from Kuaishou's short-video feed over 37 days (13 January to
# 18 February 2024). Its abstract gives the scale: about 42,000 users, nearly 9 million
# items, 9.3 million requests, 38 million exposures and 1.9 billion stage samples. Per
# request, the paper's Figure 1 shows how the candidates narrow, and what RecFlow keeps of
# each stage:
#
# | stage | items in | kept | logged in RecFlow |
# |---|---|---|---|
# | retrieval | corpus (~10⁹) | 8,000 | nothing |
# | pre-ranking | 8,000 | 3,000 | `prerank_neg`: 40 sampled from the 5,000 dropped |
# | coarse ranking | 3,000 | 500 | `coarse_neg`: 40 sampled from the 2,500 dropped |
# | ranking | 500 | 120 | `rank_pos`: its top 10; `rank_neg`: 10 of the 380 dropped |
# | re-ranking | 120 | 10 | `rerank_pos`: its top 10; `rerank_neg`: 10 of the 110 dropped |
# | edge ranking | 10 | ~6 shown | `realshow`: the exposures, with the user's feedback |
#
# Only the exposures carry feedback (effective view: at least 30 % watched; long view: all
# of it; like, follow, forward, comment). The other rows record what a stage *decided*, and
# they are what lets a model learn the difference between "not shown" and "not liked".

# %%
fig = plots.funnel_chart([8_000, 3_000, 500, 120, 10, 6],
                         title="candidates per request (RecFlow, Figure 1)")

# %% [markdown]
# ## The real format
#
# RecFlow ships one folder per kind of file, one file per day:
#
# | folder | content |
# |---|---|
# | `all_stage/YYYY-MM-DD.feather` | every logged row of the day: exposures and stage samples, 30 integer columns |
# | `realshow/YYYY-MM-DD.feather` | the exposures only |
# | `seq_effective_50_dict/YYYY-MM-DD.pkl` | request id → the user's last 50 effective views, `[50, 10]`, left-padded |
# | `request_id_dict/YYYY-MM-DD.pkl` | request id → {stage → `[n, 8]` items} |
# | `ubm_seq_request_id_dict/YYYY-MM-DD.pkl` | the same for past requests named in the histories |
# | `others/` | id counts, the test-day candidate files, the exposure corpus |
#
# A day of `all_stage` holds tens of millions of rows, several GB in memory, so
# `recfunnel.data.recflow` never loads one whole: `iter_rows` reads one Arrow record batch
# at a time (the tests show its peak memory does not grow with the file). Every file is
# checked as it is opened, and an error names the file, the column and the type it expected.
# The pickles are read by an unpickler that accepts only dictionaries and numpy arrays, so
# a tampered file cannot run code.

# %%
show_source(RecFlow.iter_rows)

# %% [markdown]
# The real data are several GB per day and sit behind drive links, so the book cannot
# download them for you; `recflow.fetch` does it, checksum-verified, when you pass the
# links. Everything below runs the same reader over files the synthetic world writes in
# exactly this layout.
#
# ## A synthetic Kuaishou world
#
# `recfunnel.data.world` builds a world from known latent factors, so that later chapters
# can measure how much of the truth a model recovers:
#
# - **topics** $\mu_k$; **creators** with a main topic and a style; **items**, short videos
#   and live streams, with $v_i = \mu_{\text{topic}(i)} + \text{style}_{\text{creator}(i)} +
#   \epsilon_i$ and a popularity $b_i$; visual, text and audio vectors made from the topic
#   plus noise, with a knob for how informative they are;
# - **users** with a sparse mixture of interests, $u = \sum_k \pi_k \mu_k + \epsilon$, that
#   drifts by a random-walk step every day, demographics weakly tied to their main interest,
#   and a taste for live streams;
# - **live streams** on air a few hours a day, whose appeal rises and falls minute by minute;
# - the **true relevance** $r(u, i, t) = \langle u_t, v_i \rangle / \sqrt{d} + b_i$ (plus the
#   live terms), scaled to unit variance.
#
# Each request then runs through six stages (`recfunnel.data.funnel.simulate`; writing the
# log in RecFlow's layout is `recfunnel.data.world_export`). Stage $s$ scores its input with
# $r + \sigma_s \varepsilon$ and keeps its top $K_s$; the noise shrinks downstream
# ($\sigma$ = {glue:text}`recflow_stage_noise`), so later stages are more precise, as in
# production. What the stages drop is sampled into the log exactly as RecFlow logs it, and
# the exposures get feedback whose rates are calibrated to targets. The paper's label rates
# are not given in a form we could use, so the targets are placeholders:
# effective view {glue:text}`recflow_target_ev`, long view {glue:text}`recflow_target_lv`,
# like {glue:text}`recflow_target_like` per exposure.
#
# ```{include} ../book/notation.md
# :start-after: <!-- ch01-start -->
# :end-before: <!-- ch01-end -->
# ```

# %%
glue("recflow_stage_noise", ", ".join(f"{s:g}" for s in world_cfg.stage_noise))
for name, key in (("effective_view", "ev"), ("long_view", "lv"), ("like", "like")):
    glue(f"recflow_target_{key}", f"{dict(world_cfg.rates)[name]:.0%}")
started = time.perf_counter()
world = World.build(world_cfg)
log = simulate(world)
glue("recflow_world_seconds", round(time.perf_counter() - started, 1))
n_requests = sum(frame["request_id"].nunique() for frame in log.rows.values())
n_rows = sum(len(frame) for frame in log.rows.values())
print(f"{world_cfg.n_users:,} users, {world_cfg.n_items:,} items "
      f"({world_cfg.n_live:,} live streams), {world_cfg.n_days} days")
print(f"{n_requests:,} requests, {n_rows:,} logged rows")

# %% [markdown]
# The world was built and simulated in {glue:text}`recflow_world_seconds` s. Its log
# goes to disk in RecFlow's layout, and `validate` checks every rule of the format: the
# columns and their types, left-padded histories strictly earlier than their request, every
# request's stage arrays, long views only on effective views, no feedback off exposure.

# %%
folder = tempfile.TemporaryDirectory()  # removed at the end of the chapter
root = log.write_recflow(Path(folder.name) / "recflow")
problems = recflow.validate(root)
print(f"validate: {len(problems)} problems")
data = RecFlow(root)
print("days:", data.days("all_stage"))
glue("recflow_validate_problems", len(problems))

# %% [markdown]
# Everything from here on reads the files back through the reader, the same code that reads
# the real RecFlow, batch by batch. The world's truth travels beside them in a `_truth/`
# folder (not part of RecFlow's layout): each logged row's true relevance, and whether the
# item is a live stream. One request, as the files hold it:

# %%
rows = pd.concat([frame for _, frame in data.iter_rows("all_stage")], ignore_index=True)
truth = pd.concat([recflow.read_table(path, ["request_id", "video_id", "relevance_e6",
                                              "is_live"])
                   for path in sorted((root / "_truth").glob("*.feather"))])
rows = rows.merge(truth, on=["request_id", "video_id"], how="left", validate="one_to_one")
rows["relevance"] = rows.pop("relevance_e6") / 1e6
shown = rows[rows["realshow"] == 1]
day_rows = rows[rows["request_id"].isin(data.read_seq(data.days("all_stage")[0]))]
request = day_rows.loc[day_rows["realshow"] == 1, "request_id"].iloc[0]
columns = ["video_id", "realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg",
           "coarse_neg", "prerank_neg", "rank_index", "effective_view", "playing_time"]
day_rows.loc[day_rows["request_id"] == request, columns].head(8).set_index("video_id").T

# %% [markdown]
# An exposed item is also in the re-ranking stage's top 10, so a row can carry several
# flags at once; RecFlow's own loaders allow for that, and so does ours. Per request, the
# world's funnel keeps the configured number of items at each stage and logs the
# configured samples:

# %%
per_request = day_rows.groupby("request_id")[list(recflow.STAGE_FLAGS)].sum()
shown_per_request = rows[rows["realshow"] == 1].groupby("request_id").size().mean()
print(per_request.mean().round(2).to_string())
glue("recflow_shown_per_request", round(float(shown_per_request), 2))
fig = plots.funnel_chart([*world_cfg.funnel, shown_per_request],
                         title=f"items surviving each stage per request (world '{size.world}')")

# %% [markdown]
# ## What each stage passes on
#
# Because the world knows $r$, we can ask what the log cannot: how good were the items each
# stage kept or dropped? The mean true relevance rises stage by stage, and the exposures are
# the best of all, though far from perfectly separated from what the stage just before them
# dropped.

# %%
order = ["prerank_neg", "coarse_neg", "rank_neg", "rerank_neg", "rank_pos", "rerank_pos",
         "realshow"]
relevance_by_stage = {flag: rows.loc[rows[flag] == 1, "relevance"] for flag in order}
fig, ax = plt.subplots(figsize=(7, 3.4))
for color, (flag, values) in zip(plots.PALETTE, relevance_by_stage.items(), strict=False):
    ax.hist(values, bins=40, density=True, histtype="step", lw=1.6, color=color, label=flag)
ax.set(xlabel="true relevance r (units of its std)", ylabel="density",
       title="who survives: true relevance of the items each stage logged")
ax.legend()
fig.tight_layout()
means = [float(values.mean()) for values in relevance_by_stage.values()]
glue("recflow_stage_means_increase", bool(means == sorted(means)))

# %% [markdown]
# How hard is each cut? The AUC of the true relevance between two adjacent stages' samples
# says how separable they are: 0.5 means the stage's choice looks random to the truth,
# 1.0 means perfectly sorted.

# %%
pairs = [("prerank_neg", "coarse_neg"), ("coarse_neg", "rank_neg"),
         ("rank_neg", "rank_pos"), ("rerank_neg", "realshow")]
separation = {}
for low, high in pairs:
    a, b = relevance_by_stage[low], relevance_by_stage[high]
    separation[f"{low} < {high}"] = auc(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b])
print(pd.Series(separation).round(3).to_string())
glue("recflow_auc_pre_coarse", round(separation["prerank_neg < coarse_neg"], 3))

# %% [markdown]
# And the labels: on exposures only, since nothing else was shown. The world also knows
# what each logged item *would* have earned had it been shown: the probability of an
# effective view given its relevance, from the same calibrated model that drew the labels.

# %%
would_view = {flag: float(log.engagement_probability(values).mean())
              for flag, values in relevance_by_stage.items()}
rates = {name: float(shown[name].mean()) for name in
         ("effective_view", "long_view", "like", "follow", "comment", "forward")}
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
axes[0].bar(range(len(would_view)), list(would_view.values()), color=plots.PALETTE[0])
axes[0].set_xticks(range(len(would_view)), list(would_view), rotation=45, ha="right")
axes[0].set(ylabel="P(effective view) if shown", title="what each stage's items would earn")
axes[1].bar(range(len(rates)), list(rates.values()), color=plots.PALETTE[1])
axes[1].set_xticks(range(len(rates)), list(rates), rotation=45, ha="right")
axes[1].set(yscale="log", ylabel="rate per exposure", title="feedback on exposures")
fig.tight_layout()
glue("recflow_ev_rate", round(rates["effective_view"], 4))
glue("recflow_like_rate", round(rates["like"], 4))
oracle_auc = auc(shown["effective_view"], shown["relevance"])
glue("recflow_oracle_auc", round(oracle_auc, 3))
print(f"AUC of the true relevance for effective views: {oracle_auc:.3f}")

# %% [markdown]
# Even the truth predicts an effective view with an AUC of only
# {glue:text}`recflow_oracle_auc`: feedback is noisy, as it is in production. The world is
# meant to give 0.70 to 0.78 here, so that trained ranking models land in a production-like
# range; a model trained on this world can be compared against this ceiling.
#
# ## Popularity and activity
#
# Exposures pile up on a few items, and users differ in how much they engage; both shape
# what a model sees.

# %%
exposures_per_item = np.sort(shown["video_id"].value_counts().to_numpy())[::-1]
views_per_user = shown.groupby("user_id")["effective_view"].sum().sort_values(ascending=False)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
axes[0].loglog(np.arange(1, len(exposures_per_item) + 1), exposures_per_item,
               color=plots.PALETTE[0])
axes[0].set(xlabel="item rank", ylabel="exposures", title="the popularity long tail")
axes[1].plot(views_per_user.to_numpy(), color=plots.PALETTE[2])
axes[1].set(xlabel="user (most active first)", ylabel="effective views",
            title="user activity")
fig.tight_layout()
cumulative = np.cumsum(exposures_per_item[::-1]) / exposures_per_item.sum()
gini = float(1 - 2 * cumulative.mean() + 1 / len(cumulative))
glue("recflow_exposure_gini", round(gini, 3))
print(f"Gini coefficient of exposures per item: {gini:.3f}; "
      f"{rows['video_id'].nunique():,} items logged, {shown['video_id'].nunique():,} exposed")

# %% [markdown]
# ## RecFlow as published versus this world
#
# | quantity | RecFlow (abstract, Figure 1) | this world |
# |---|---|---|
# | users | ~42,000 | {glue:text}`recflow_users` |
# | items | ~9 million | {glue:text}`recflow_items` |
# | days | 37 | {glue:text}`recflow_days` |
# | requests | 9.3 million | {glue:text}`recflow_requests` |
# | exposures per request | about 4.1 (38M / 9.3M) | {glue:text}`recflow_shown_per_request` |
# | stage rows per request | ~120 by Figure 1, ~204 by the totals | {glue:text}`recflow_rows_per_request` |
# | effective-view rate | not given | {glue:text}`recflow_ev_rate` (target {glue:text}`recflow_target_ev`) |
#
# The world keeps RecFlow's schema, its funnel order and its logging rules, and scales
# everything else down so that a chapter runs on a laptop; the `gpu` profile comes closer
# ({glue:text}`recflow_gpu_users` users, {glue:text}`recflow_gpu_items` items, retrieval
# keeping {glue:text}`recflow_gpu_retrieved` per request against the paper's 8,000).

# %%
glue("recflow_users", f"{world_cfg.n_users:,}")
glue("recflow_items", f"{world_cfg.n_items:,}")
glue("recflow_days", world_cfg.n_days)
glue("recflow_requests", f"{n_requests:,}")
glue("recflow_rows_per_request", round(len(rows) / n_requests, 1))
gpu_world = WORLD_PRESETS["gpu"]
glue("recflow_gpu_users", f"{gpu_world.n_users:,}")
glue("recflow_gpu_items", f"{gpu_world.n_items:,}")
glue("recflow_gpu_retrieved", f"{gpu_world.funnel[0]:,}")

# %% [markdown]
# ## The paper's claims about its data
#
# RecFlow's abstract makes two claims about the data itself that this world can check:
# the unexposed items are "a significantly larger space than the exposed one", and each
# stage of the funnel filters items out, so that a model trained on exposures meets at
# serving time items unlike those it learned from. The first is counted exactly: the
# unexposed stage samples per exposure, which must exceed the bar declared in the next
# cell, an order of magnitude (RecFlow's own totals give about 50). The second is measured per
# request with the truth that the world keeps: at each of the four cuts of the figure above,
# the mean true relevance of what the stage passed on minus that of what it dropped, over
# the requests that logged both; its noise is the spread over requests. Each cut must be
# positive beyond two standard errors, by the package's one rule.

# %%
BAR = 10  # unexposed samples per exposure that claim 1 needs, declared before counting
unexposed_per_exposure = float((rows["realshow"] == 0).sum() / len(shown))
per_request = {flag: rows[rows[flag] == 1].groupby("request_id")["relevance"].mean()
               for flag in order}
cuts = []
for dropped, kept in pairs:
    both = per_request[kept].index.intersection(per_request[dropped].index)
    cuts.append(Verdict.better(f"{kept} above {dropped}", paired_gap(
        per_request[kept].loc[both].to_numpy(), per_request[dropped].loc[both].to_numpy(),
        a=kept, b=dropped, metric="mean true relevance", unit="requests")))
claims = {
    "1": Verdict.better(f"the unexposed stage samples outnumber the exposures more than "
                        f"{BAR}-fold", exact_gap(unexposed_per_exposure,
                                                 a="unexposed samples per exposure"),
                        threshold=BAR),
    "2": Verdict.all_of("at every cut, what a stage passes on is more relevant than what it "
                        "drops", cuts),
}
PAPER = {
    "1": "unexposed items are a significantly larger space than the exposed one "
         "(1.9B stage samples, 38M exposures)",
    "2": "each stage of the funnel filters items out: stage samples are not the exposures "
         "that models are trained on",
}
display(claims_table(claims, PAPER))
glue("recflow_unexposed_per_exposure", round(unexposed_per_exposure, 1))
glue("recflow_claim1", claims["1"].text)
glue("recflow_bar", BAR)
glue("recflow_claim2", claims["2"].text)
glue("ledger", ledger_record("1. RecFlow", "42K users, 9M items, 9.3M requests over 37 days",
                             claims, PAPER))

# %% [markdown]
# The world logs {glue:text}`recflow_unexposed_per_exposure` unexposed samples per exposure
# against the bar of {glue:text}`recflow_bar` (claim 1: {glue:text}`recflow_claim1`).
# That the funnel keeps better items than it drops {glue:text}`recflow_claim2` here; this
# is what the generator was built to do, so the check guards the world rather than testing
# the paper. What the paper's claim means for models (trained on exposures, ranking stage
# samples) is the subject of chapter 11, the capstone (in preparation).

# %% [markdown]
# ## MovieLens-100K, the real data of the retrieval chapters
#
# The retrieval chapters also measure their models on real data, MovieLens-100K
# {footcite}`harper2015movielens`, with the protocol RecBole {footcite}`zhao2021recbole`
# uses, so that our numbers can be set beside RecBole's. The course reads the copy that the
# `recbole` 1.2.1 wheel ships (fetched with `pip download`, never imported) and checks its
# SHA-256. Each user's ratings are ordered by time exactly as RecBole orders them (a stable
# sort on the normalised timestamp stored as float32, so ties keep the file's order); the
# last item is the test target, the one before it the validation target.
#
# The output of the next cell is checked by the tests on every change, so a silent change
# in the data or the split fails the build.

# %%
# NBVAL_CHECK_OUTPUT
try:
    movielens = load_ml100k()
except DataUnavailableError as error:  # offline: say so and go on without it
    movielens = None
    print(f"MovieLens-100K is not available here: {error}")
else:
    split = SequentialSplit(movielens.interactions, max_len=size.max_len)
    n_train = len(split.train_samples()[0])
    print(f"users {movielens.n_users}, items {movielens.n_items}, "
          f"interactions {len(movielens.interactions)}, fewest ratings per user "
          f"{movielens.interactions.groupby('user_id').size().min()}")
    print(f"training samples {n_train}, validation targets {len(split.eval_batch('valid'))}, "
          f"test targets {len(split.eval_batch('test'))}")
    print(f"ordered-sequence checksum {split.checksum()[:16]}")

# %%
if movielens is not None:
    glue("ml100k_users", movielens.n_users)
    glue("ml100k_items", movielens.n_items)
    glue("ml100k_interactions", len(movielens.interactions))
    glue("ml100k_train_samples", n_train)
    lengths = movielens.interactions.groupby("user_id").size()
    genres = movielens.items.explode("genres")["genres"].value_counts()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].hist(lengths, bins=40, color=plots.PALETTE[0])
    axes[0].set(xlabel="ratings per user", ylabel="users",
                title="MovieLens-100K: history lengths")
    plots.log_axis(axes[0], ticks=[20, 50, 100, 200, 500])
    axes[1].barh(genres.index[:10][::-1], genres.to_numpy()[:10][::-1], color=plots.PALETTE[1])
    axes[1].set(xlabel="movies", title="the ten largest genres")
    fig.tight_layout()

# %% [markdown]
# Every user has at least 20 ratings, so every user has a validation and a test target and
# at least 17 training samples: 97,171 in all, as in RecBole.
#
# ## Summary
#
# - The funnel narrows ~8,000 retrieved candidates to ~6 exposures in five cuts; RecFlow logs
#   samples of what every cut kept and dropped, and feedback only on the exposures.
# - `recfunnel.data.recflow` reads that format in bounded memory and names any file, column
#   or type that breaks it; the synthetic world writes the same format, with the truth kept.
# - RecFlow's two claims about its data, checked on the world's truth: it logs
#   {glue:text}`recflow_unexposed_per_exposure` unexposed samples per exposure (verdict:
#   {glue:text}`recflow_claim1`), and whether every cut keeps better items than it drops:
#   {glue:text}`recflow_claim2`.
# - MovieLens-100K and RecBole's split are reproduced exactly, for the retrieval chapters.
# - The world keeps its truth (each user's interests, each item's topic and appeal), so the
#   later chapters can measure what a model learned against what there was to learn.
#
# ## Exercises
#
# :::{exercise}
# :label: ex-01-flags
# Using only `RecFlow(root).iter_rows`, count for each request how many of its exposed items
# were also in the ranking stage's top 10 (`rank_pos`). What share of exposures is that, and
# what does it say about how much re-ranking changes the ranking's order?
# :::
#
# :::{solution} ex-01-flags
# :class: dropdown
# Stream the rows and count exposures with `rank_pos == 1`. In this world the share is
# below one: re-ranking reorders everything the ranking stage kept, and the edge stage picks
# from re-ranking's top 10, so items from below the ranking's top 10 reach the screen. The
# hidden cell computes it.
# :::

# %% tags=["hide-cell", "solution"]
both = total = 0
for _, batch in RecFlow(root).iter_rows("realshow", columns=["realshow", "rank_pos"]):
    both += int(batch["rank_pos"].sum())
    total += len(batch)
print(f"{both / total:.1%} of exposures were in the ranking stage's top 10")

# %% [markdown]
# :::{exercise}
# :label: ex-01-noise
# Give every stage the same noise (`stage_noise=(1.0,) * 6`) and rebuild the world. Which
# stage separations change, and why would a model trained on such logs learn less from the
# stage samples?
# :::
#
# :::{solution} ex-01-noise
# :class: dropdown
# With equal noise, later stages are no more precise than earlier ones: the relevance of
# what the ranking stage keeps and what it drops moves closer, so its AUC falls, while the
# first cuts barely change. Stage samples teach a model where a *better* model drew the line;
# with equal noise, the later lines carry less information. The hidden cell measures the
# ranking cut both ways.
# :::

# %% tags=["hide-cell", "solution"]
flat_log = simulate(World.build(dataclasses.replace(world_cfg, stage_noise=(1.0,) * 6)),
                    progress=False)
flat_rows = flat_log.all_rows()


def rank_cut_auc(frame):
    kept = frame.loc[frame["rank_pos"] == 1, "relevance"]
    dropped = frame.loc[frame["rank_neg"] == 1, "relevance"]
    return auc(np.r_[np.zeros(len(dropped)), np.ones(len(kept))], np.r_[dropped, kept])


print(f"ranking cut AUC: graded noise {rank_cut_auc(rows):.3f}, "
      f"equal noise {rank_cut_auc(flat_rows):.3f}")

# %% [markdown]
# :::{exercise}
# :label: ex-01-ndcg
# RecFlow's evaluation code computes "NDCG" as the sum of $1/\log_2(\text{rank} + 2)$ over
# the hits, divided by the number of positives, with no ideal-DCG normalisation. Show with a
# two-positive example that it differs from true NDCG. Can it reach 1 for a perfect
# ranking?
# :::
#
# :::{solution} ex-01-ndcg
# :class: dropdown
# Take two positives ranked first and second. True NDCG is 1. RecFlow's value is
# $(1/\log_2 2 + 1/\log_2 3)/2 \approx 0.815$: with more than one positive it cannot reach 1
# even for a perfect ranking, so it is comparable only between runs on the same test set.
# `recfunnel.metrics` reports the normalised NDCG.
# :::

# %%
folder.cleanup()

# %% [markdown]
# ## References
#
# ```{footbibliography}
# ```
