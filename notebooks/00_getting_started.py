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
# # 0. Getting started: run the course, and one model from data to metric
#
# This chapter shows how to run the course (on Colab, on your laptop, at three sizes) and
# then walks once through everything later chapters take for granted: a dataset with a
# known truth, a baseline, a model trained with the course's one training loop, full-ranking
# evaluation, nearest-neighbour retrieval and the figures. The model is the oldest workhorse
# of recommendation, matrix factorisation {footcite}`koren2009mf`; the baseline, recommending
# what is popular.

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
# Cell 2: the run's parameters (papermill overrides them; see "Profiles" below)
import os

PROFILE = os.environ.get("RECFUNNEL_PROFILE", "cpu")  # "smoke", "cpu" or "gpu"
SEED = 0
DEVICE = "auto"  # "auto" picks cuda, then mps, then cpu

# %%
# %matplotlib inline
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from torch.utils.data import TensorDataset

from recfunnel import plots
from recfunnel.metrics import evaluate_ranking, ranking_metrics
from recfunnel.models.baselines import MatrixFactorization, MFConfig, Popularity
from recfunnel.notebook import glue, setup, show_source
from recfunnel.profiles import CHAPTER_SIZES
from recfunnel.retrieval import build_index
from recfunnel.study import Verdict, claims_table, ledger_record, paired_gap
from recfunnel.train import TrainConfig, fit, make_loader

device, size = setup("getting_started", PROFILE, SEED, DEVICE)

# %% [markdown]
# ## How to run the course
#
# **On Colab.** Every chapter page has a rocket icon at the top; *Colab* opens the chapter's
# notebook there. Its first cell installs the package, its second holds the parameters
# `PROFILE`, `SEED` and `DEVICE`, and its third calls `recfunnel.notebook.setup`, which
# seeds every random generator, picks the device, looks up the chapter's sizes at the
# profile and prints both with the versions of the machine. For paper-like scale choose *Runtime → Change runtime type →
# GPU* and set `PROFILE = "gpu"`.
#
# **On your machine.** From a clone of the repository, two commands do everything:
#
# ```bash
# make book   # creates .venv, installs, executes every chapter, builds this book
# make test   # creates .venv, installs, runs the unit and notebook tests, builds the book
# ```
#
# `make book` executes the chapters at the profile named by the environment variable
# `RECFUNNEL_PROFILE` (`cpu` when unset): `RECFUNNEL_PROFILE=gpu make book` on a GPU machine.
# A conda environment is provided too: `conda env create -f environment.yml`.
#
# **Profiles.** A profile is a named run size, kept for every chapter in
# `recfunnel.profiles`:
#
# | profile | meant for | this chapter |
# |---|---|---|
# | `smoke` | seconds on any CPU; what the tests run | {glue:text}`gs_smoke_size` |
# | `cpu` | minutes on a laptop; the default | {glue:text}`gs_cpu_size` |
# | `gpu` | paper-like scale on a free Colab GPU | {glue:text}`gs_gpu_size` |
#
# **Devices.** `DEVICE = "auto"` uses a CUDA GPU when there is one, then Apple's MPS, then
# the CPU. The training loop turns mixed precision on only on CUDA. The environment report
# above records versions and hardware, so that any figure can be traced to its run.

# %%
for name, chapter_size in CHAPTER_SIZES["getting_started"].items():
    glue(f"gs_{name}_size", f"{chapter_size.n_users:,} users × {chapter_size.n_items:,} items, "
         f"{chapter_size.epochs} epochs")

# %% [markdown]
# Where does this chapter's model sit? Industrial recommendation is a funnel. Kuaishou's
# RecFlow paper {footcite}`liu2025recflow` gives the sizes per request: about 8,000 candidates
# leave retrieval, and six videos are finally shown. Matrix factorisation is a retrieval
# model: a user vector, item vectors, and a nearest-neighbour search among them.

# %%
fig = plots.funnel_chart([8_000, 3_000, 500, 120, 10, 6], highlight="retrieval",
                         title="candidates per request at each stage (RecFlow, Figure 1)")

# %% [markdown]
# ## A dataset whose truth we know
#
# We plant the truth. Each user $u$ and item $i$ get a hidden vector of rank
# {glue:text}`gs_true_rank` at this profile, and every item a hidden popularity $c_i$; the
# true affinity is $a(u, i) = x_u^\top y_i / \sqrt{r} \cdot 2 + c_i$. Each user then picks
# {glue:text}`gs_positives` distinct items, at random but favouring high affinity (the
# Gumbel-top-$k$ trick samples without replacement in proportion to $e^{a(u,i)}$). That is
# implicit feedback: we see what users chose, never a rating. Per user, one chosen item is
# held out for validation and one for the test; the rest is training data.
#
# Because the affinities are known, we can also score an **oracle** that ranks by them: the
# ceiling that no model trained on these samples can be expected to reach.

# %%
def plant_implicit_feedback(n_users, n_items, rank, n_positives, seed,
                             popularity_scale=1.0, chunk=4096):
    """Low-rank affinities plus item popularity; each user samples n_positives items."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=(n_users, rank)).astype(np.float32)
    item_factors = rng.normal(size=(n_items, rank)).astype(np.float32)
    popularity = popularity_scale * rng.normal(size=n_items).astype(np.float32)
    picks = np.empty((n_users, n_positives), dtype=np.int64)
    for start in range(0, n_users, chunk):  # chunks keep the gpu profile within memory
        affinity = 2 * user_factors[start:start + chunk] @ item_factors.T / np.sqrt(rank)
        affinity += popularity
        noisy = affinity + rng.gumbel(size=affinity.shape).astype(np.float32)
        picks[start:start + chunk] = np.argsort(-noisy, axis=1)[:, :n_positives]
    picks = rng.permuted(picks, axis=1)  # the order of choices carries no information
    return picks, (user_factors, item_factors, popularity)


picks, truth = plant_implicit_feedback(size.n_users, size.n_items, size.true_rank,
                                       size.positives_per_user, SEED)
train_items, valid_items, test_items = picks[:, :-2], picks[:, -2], picks[:, -1]
glue("gs_true_rank", size.true_rank)
glue("gs_positives", size.positives_per_user)

# %% [markdown]
# The statistics of the data are checked by the tests on every change (nbval compares this
# cell's output at the `smoke` profile), so a silent change in how the data are made fails
# the build.

# %%
# NBVAL_CHECK_OUTPUT
counts = np.bincount(picks.ravel(), minlength=size.n_items)
top_share = np.sort(counts)[::-1][: size.n_items // 10].sum() / counts.sum()
print(f"users {size.n_users}, items {size.n_items}, interactions {picks.size}")
print(f"density {picks.size / (size.n_users * size.n_items):.4f}")
print(f"share of interactions on the 10% most popular items {top_share:.3f}")
print(f"first user's training items {sorted(train_items[0][:5].tolist())}")

# %% [markdown]
# Popularity is skewed, as in every real catalogue: a tenth of the items collect
# {glue:text}`gs_top_share:.1%` of the interactions. That is what makes popularity a
# baseline worth beating.

# %%
glue("gs_top_share", float(top_share))
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(np.sort(counts)[::-1], color=plots.PALETTE[0])
ax.set(xlabel="item (most popular first)", ylabel="interactions", yscale="log",
       title="item popularity in the planted data")
fig.tight_layout()

# %% [markdown]
# ## Full-ranking metrics
#
# For each user we rank **every** item and look at where the held-out item lands, after
# removing the items the user already interacted with in training (they are known, so
# recommending them again is no skill). With one held-out item of rank $r$:
#
# $$\mathrm{Recall@}K = \mathbb{1}[r \le K], \qquad
#   \mathrm{NDCG@}K = \frac{\mathbb{1}[r \le K]}{\log_2(r + 1)}.$$
#
# Ranking every item, rather than the target against a hundred sampled negatives, is
# slower but honest: sampled metrics can even reverse the order of two models. A tiny case
# by hand: five items, the target (item 3) scored third highest, so $r = 3$ and
# NDCG@5 $= 1/\log_2 4 = 0.5$.

# %%
# NBVAL_CHECK_OUTPUT
toy_scores = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.2]])  # item 3 has the third-best score
print(ranking_metrics(toy_scores, torch.tensor([3]), ks=(1, 5)))

# %% [markdown]
# ## The baseline: popularity
#
# Popularity recommends the most chosen training items to everybody.

# %%
users = torch.arange(size.n_users)
seen_in_training = [row.tolist() for row in train_items]
seen_before_test = [row + [int(v)] for row, v in zip(seen_in_training, valid_items, strict=True)]
valid_targets, test_targets = torch.as_tensor(valid_items), torch.as_tensor(test_items)

popularity = Popularity(size.n_items).fit(torch.as_tensor(train_items))
pop_test = evaluate_ranking(popularity.score_all, users, test_targets, seen_before_test)
{metric: round(value, 4) for metric, value in pop_test.items()}

# %% [markdown]
# ## The model: matrix factorisation
#
# Matrix factorisation gives user $u$ a vector $p_u$ and item $i$ a vector $q_i$ and a bias
# $b_i$, and scores $s(u, i) = p_u^\top q_i + b_i$. We train it with a softmax over all
# items: for each observed pair $(u, i^+)$ the loss is
# $-\log\big(e^{s(u,i^+)} / \sum_j e^{s(u,j)}\big)$, which pushes the chosen item up and
# every other item down. The retrieval chapters use the same loss, over sampled items when
# the catalogue is too large to sum over.
#
# ```{include} ../book/notation.md
# :start-after: <!-- ch00-start -->
# :end-before: <!-- ch00-end -->
# ```

# %%
show_source(MatrixFactorization)

# %% [markdown]
# ## Training with the course's loop
#
# Every chapter trains with `recfunnel.train.fit`: AdamW, gradient clipping, mixed
# precision on CUDA only, a progress bar, early stopping on a validation metric with the
# best weights restored, checkpoints, and several GPUs under `torchrun`. Here the validation
# metric is NDCG@10 on the held-out validation items.

# %%
model = MatrixFactorization(MFConfig(size.n_users, size.n_items, d_model=size.d_model))
pairs = TensorDataset(torch.arange(size.n_users).repeat_interleave(train_items.shape[1]),
                      torch.as_tensor(train_items).flatten())
loader = make_loader(pairs, batch_size=size.batch_size, shuffle=True, seed=SEED)


def validate(model):
    return evaluate_ranking(lambda u: model.score_all(u.to(device)), users, valid_targets,
                            seen_in_training, ks=(10,))


train_cfg = TrainConfig(epochs=size.epochs, lr=size.lr, weight_decay=1e-4, device=DEVICE,
                        monitor="ndcg@10", patience=4, desc="matrix factorisation")
started = time.perf_counter()
history = fit(model, loader, cfg=train_cfg, evaluate=validate)
train_seconds = time.perf_counter() - started
glue("gs_train_seconds", round(train_seconds, 1))
glue("gs_best_epoch", history.best_epoch)

# %%
fig = history.plot(metrics=["ndcg@10"], title="matrix factorisation on the planted data")

# %% [markdown]
# Training took {glue:text}`gs_train_seconds` s; the best validation NDCG@10 came at epoch
# {glue:text}`gs_best_epoch`, whose weights `fit` restored.
#
# ## Evaluation against the baseline
#
# Both models are scored on the same test items with the same items masked. The oracle
# ranks by the true affinities.

# %%
model.eval()
with torch.no_grad():
    mf_test = evaluate_ranking(lambda u: model.score_all(u.to(device)), users, test_targets,
                               seen_before_test)
user_factors, item_factors, item_popularity = (torch.as_tensor(t) for t in truth)


def true_affinity(u):
    return 2 * user_factors[u] @ item_factors.T / size.true_rank**0.5 + item_popularity


oracle_test = evaluate_ranking(true_affinity, users, test_targets, seen_before_test)
results = {"popularity": pop_test, "matrix factorisation": mf_test, "oracle": oracle_test}
for name, row in results.items():
    print(f"{name:<22} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                                      if k.startswith(("recall", "ndcg"))))
for key, row in (("pop", pop_test), ("mf", mf_test), ("oracle", oracle_test)):
    for metric in ("recall@10", "ndcg@10"):
        glue(f"gs_{key}_{metric.replace('@', '')}", round(row[metric], 4))

# %%
fig = plots.metric_bars(results, metrics=["recall@10", "ndcg@10", "recall@20", "ndcg@20"],
                        baseline="popularity", title="test metrics, full ranking")

# %% [markdown]
# Matrix factorisation reaches NDCG@10 {glue:text}`gs_mf_ndcg10` against popularity's
# {glue:text}`gs_pop_ndcg10`, and Recall@10 {glue:text}`gs_mf_recall10` against
# {glue:text}`gs_pop_recall10`. The oracle, which knows the planted affinities, reaches
# NDCG@10 {glue:text}`gs_oracle_ndcg10`: that gap is what the limited samples per user
# leave unlearnable (each user chose only a few items, with Gumbel noise).
#
# ## Serving: nearest-neighbour retrieval
#
# At serving time nobody scores every item with a Python loop: the item vectors go into a
# nearest-neighbour index and each user vector asks it for its top $k$. Appending the bias
# as one more coordinate ($[p_u, 1] \cdot [q_i, b_i]$) turns the model's score into a
# plain inner product. `recfunnel.retrieval` has an exact index in torch and FAISS
# {footcite}`johnson2019faiss` behind the same interface; both must return the items that
# `score_all` ranks first.

# %%
with torch.no_grad():
    item_vecs = torch.cat([model.item_emb.weight, model.item_bias[:, None]], dim=1).cpu()
    user_vecs = torch.cat([model.user_emb.weight, torch.ones(size.n_users, 1,
                                                            device=device)], dim=1).cpu()
    by_score = model.score_all(users.to(device)).cpu().topk(10).indices
exact_scores, exact_ids = build_index(item_vecs, backend="exact").search(user_vecs, k=10)
backend = "auto"  # FAISS when installed, else the exact index again
auto_scores, auto_ids = build_index(item_vecs, backend=backend).search(user_vecs, k=10)
agreement = (exact_ids == by_score).float().mean().item()
print(f"exact index agrees with score_all on {agreement:.1%} of the top-10 slots")
print(f"index '{backend}' agrees with the exact one on "
      f"{(auto_ids == exact_ids).float().mean().item():.1%}")
glue("gs_index_agreement", agreement)

# %% [markdown]
# ## The claims, judged by one rule
#
# Every later chapter ends its experiments the same way: each claim becomes a gap between
# two models measured per user, and `recfunnel.study` judges it by the book's one rule. The
# gap counts only when its whole interval of two standard errors lies above zero (above
# the bar); a gap within noise is "not resolved", never "held". Here there is one claim,
# the course's own: matrix factorisation beats popularity on the test users.

# %%
with torch.no_grad():
    per_user = {name: evaluate_ranking(score, users, test_targets, seen_before_test,
                                       reduce=False)["ndcg@10"].numpy()
                for name, score in (("matrix factorisation", lambda u: model.score_all(
                    u.to(device)).cpu()), ("popularity", popularity.score_all))}
claims = {"1": Verdict.better("matrix factorisation beats popularity on NDCG@10", paired_gap(
    per_user["matrix factorisation"], per_user["popularity"], a="matrix factorisation",
    b="popularity", metric="ndcg@10"))}
display(claims_table(claims))
glue("gs_claim1", claims["1"].text)
glue("ledger", ledger_record("0. Getting started", "the course's own check", claims, {}))

# %% [markdown]
# ## Summary
#
# - A chapter runs at three profiles, `smoke`, `cpu` and `gpu`, chosen with
#   `RECFUNNEL_PROFILE` or the `PROFILE` parameter; everything it prints is computed here.
# - `recfunnel.train.fit` trains any module that returns a loss; `recfunnel.metrics` ranks
#   every item; `recfunnel.retrieval` serves the top $k$ from an index.
# - On planted low-rank data, matrix factorisation beats popularity by a wide margin, and an
#   oracle shows how much of the truth remains unlearned.
#
# ## Pitfalls the course avoids, and you should too
#
# - **Sampled metrics flatter.** Ranking the target against 100 random items instead of the
#   whole catalogue makes every model look better and can even reorder models; the course
#   ranks every item (Exercise 1 measures the difference).
# - **Items already seen are not candidates.** A user's own training items would fill the
#   top of every list; here they (and, for the test, the validation item) are excluded
#   before ranking, for every model alike.
# - **Validation picks, test reports.** The epoch, the number of steps or the variant to
#   serve is chosen on the validation users; the test users are read once, at the end.
# - **One seed is one draw.** A gap smaller than the spread between seeds is noise; the
#   later chapters judge every claim with paired gaps over users and seeds.
#
# ## Exercises
#
# :::{exercise}
# :label: ex-00-sampled
# Evaluate matrix factorisation with *sampled* metrics instead: rank each test item against
# 100 random items the user has not interacted with. Is NDCG@10 higher or lower than with full
# ranking, and why?
# :::
#
# :::{solution} ex-00-sampled
# :class: dropdown
# Higher: among 101 items, the target only has to beat 100 random ones, most of them
# unpopular and far from the user's taste, instead of every item in the catalogue. Sampled
# metrics also compress the differences between models and can even reverse their order,
# which is why the course ranks every item. The hidden cell below measures it.
# :::

# %% tags=["hide-cell", "solution"]
n_eval = min(2_000, size.n_users)  # a subset of users keeps the mask small at gpu size
generator = torch.Generator().manual_seed(SEED)
unseen = torch.ones(n_eval, size.n_items)  # 1 where an item may serve as a negative
for user in range(n_eval):
    unseen[user, seen_before_test[user] + [int(test_items[user])]] = 0
n_negatives = min(100, int(unseen.sum(1).min()))
negatives = torch.multinomial(unseen, n_negatives, generator=generator)  # no repeats
candidates = torch.cat([test_targets[:n_eval, None], negatives], dim=1)  # target: column 0
with torch.no_grad():
    all_scores = model.score_all(users[:n_eval].to(device)).cpu()
sampled = ranking_metrics(all_scores.gather(1, candidates),
                          torch.zeros(n_eval, dtype=torch.long))
full = ranking_metrics(all_scores, test_targets[:n_eval], seen=seen_before_test[:n_eval])
print(f"NDCG@10 against {n_negatives} sampled items {sampled['ndcg@10']:.4f}, "
      f"against every item {full['ndcg@10']:.4f}")

# %% [markdown]
# :::{exercise}
# :label: ex-00-rank
# Set `d_model` below the planted rank (for instance 2) with
# `dataclasses.replace(size, d_model=2)` and retrain. What happens to the gap with the
# oracle?
# :::
#
# :::{solution} ex-00-rank
# :class: dropdown
# The gap widens: a model of lower rank than the truth cannot represent every user's
# preferences, only the strongest directions (popularity among them). The hidden cell
# retrains with two dimensions.
# :::

# %% tags=["hide-cell", "solution"]
small = dataclasses.replace(size, d_model=2)
small_model = MatrixFactorization(MFConfig(small.n_users, small.n_items, small.d_model))
fit(small_model, loader, cfg=dataclasses.replace(train_cfg, progress=False), evaluate=validate)
with torch.no_grad():
    small_test = evaluate_ranking(lambda u: small_model.score_all(u.to(device)), users,
                                  test_targets, seen_before_test)
print(f"NDCG@10 with D=2: {small_test['ndcg@10']:.4f}, with D={size.d_model}: "
      f"{mf_test['ndcg@10']:.4f}, oracle {oracle_test['ndcg@10']:.4f}")

# %% [markdown]
# :::{exercise}
# :label: ex-00-popbias
# Remove the item popularity from the planted affinities (`popularity_scale=0.0` in
# `plant_implicit_feedback`) and train again. How do popularity and matrix factorisation
# change, and which of the two loses more?
# :::
#
# :::{solution} ex-00-popbias
# :class: dropdown
# Both fall, since the planted popularity was the part of the taste that all users
# shared, but popularity falls further: it keeps only the items whose hidden vectors are
# long enough to attract many users, while matrix factorisation still models each user's
# own taste, so its lead over popularity grows (compare the ratios in the hidden cell's
# output). With $V$ items, chance is $10/V$ for Recall@10.
# :::

# %% tags=["hide-cell", "solution"]
flat_picks, _ = plant_implicit_feedback(size.n_users, size.n_items, size.true_rank,
                                        size.positives_per_user, SEED, popularity_scale=0.0)
flat_seen = [row[:-1].tolist() for row in flat_picks]  # training and validation items
flat_targets = torch.as_tensor(flat_picks[:, -1])
flat_pairs = TensorDataset(users.repeat_interleave(flat_picks.shape[1] - 2),
                           torch.as_tensor(flat_picks[:, :-2]).flatten())
flat_model = MatrixFactorization(MFConfig(size.n_users, size.n_items, size.d_model))
fit(flat_model, make_loader(flat_pairs, size.batch_size, seed=SEED),
    cfg=dataclasses.replace(train_cfg, monitor=None, patience=None, progress=False))
flat_pop = Popularity(size.n_items).fit(torch.as_tensor(flat_picks[:, :-2]))
with torch.no_grad():
    flat = {"popularity": evaluate_ranking(flat_pop.score_all, users, flat_targets, flat_seen),
            "matrix factorisation": evaluate_ranking(lambda u: flat_model.score_all(
                u.to(device)), users, flat_targets, flat_seen)}
for label, table in (("with popularity", results), ("without popularity", flat)):
    mf, pop = table["matrix factorisation"]["recall@10"], table["popularity"]["recall@10"]
    print(f"{label:<19} Recall@10: popularity {pop:.4f}, matrix factorisation {mf:.4f} "
          f"({mf / pop:.1f}x); chance {10 / size.n_items:.4f}")

# %% [markdown]
# ## What comes next
#
# Chapter 1 builds the funnel data that the rest of the course trains on, and chapter 2
# replaces this chapter's matrix factorisation by a model that reads each user's history in
# order. The training loop (`train.fit`) and the ranking metrics stay the ones used here.
# Chapters 2 to 4 retrieve from a user's history (KuaiFormer, ELASTIC, DimeRec); chapters 5
# and 7 rank what retrieval found (HoME's multi-task ranker, QARM's multi-modal item codes),
# and their claims are judged by the same rule, with the same noise over users and seeds.

# %% [markdown]
# ## References
#
# ```{footbibliography}
# ```
