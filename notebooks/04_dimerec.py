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
# # 4. DimeRec: generating the next interest by diffusion
#
# A retrieval model ends in one user vector and a nearest-neighbour search. Chapters 2 and 3
# computed that vector with a Transformer. DimeRec {footcite}`li2025dimerec` *generates* it:
# a diffusion model, the technique behind image generators, learns the distribution of the
# user's next interest and draws from it. It is not the first diffusion recommender, and the
# paper says why the earlier ones struggled. They conditioned on the raw item sequence,
# which is sparse and changes all the time. Their L2 diffusion loss shrinks embedding
# norms while the inner-product retrieval loss grows them. And they fitted a distribution
# over item embeddings that were themselves still random. DimeRec answers each point: a
# multi-interest extractor (ComiRec-SA {footcite}`cen2020comirec`) condenses the history
# into $K$ steadier interest vectors that guide the diffusion; every vector lives on the
# unit sphere, where the two losses agree; and a separate guidance loss trains the
# extractor and the item table directly. Kuaishou runs it as one of the retrieval channels
# that KuaiFormer is compared with.
#
# After this chapter you can:
# - explain the forward and reverse processes of a diffusion model, with their closed forms
#   checked by simulation;
# - build DimeRec's extractor, denoiser and three losses, and check them against
#   `recfunnel.models.dimerec`;
# - compare it with popularity, SASRec {footcite}`kang2018sasrec` and ComiRec-SA on
#   MovieLens-100K in one run, for accuracy, diversity and what the vectors know about genre;
# - judge each of the paper's components by its ablation.
#
# ```{admonition} Where this chapter's code lives
# :class: tip
#
# | file | what it holds |
# |---|---|
# | `recfunnel/models/dimerec.py` | the guidance extractor, the denoiser, the geometric losses, serving by generation |
# | `recfunnel/layers/diffusion.py` | the noise schedule, forward noising and the reverse step |
# | `recfunnel/models/baselines.py` | SASRec and popularity, the references |
# | `recfunnel/recipes/dimerec.py` | this chapter's experiments: contenders, seeds, sweeps, diversity, probes |
# | `benchmarks/dimerec_seeds.py` | the committed runs over seeds and to convergence |
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
import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import display

from recfunnel import plots
from recfunnel.data.download import DataUnavailableError
from recfunnel.data.movielens import genre_matrix, load_ml100k
from recfunnel.data.sequences import SeqBatch, SequentialSplit, next_item_metrics
from recfunnel.layers.diffusion import NoiseSchedule, q_sample, reverse_step
from recfunnel.metrics import ranking_metrics
from recfunnel.models.baselines import Popularity
from recfunnel.models.dimerec import DimeRec, DimeRecConfig, interest_selection
from recfunnel.notebook import glue, plural, setup, show_source
from recfunnel.recipes import dimerec as recipe
from recfunnel.recipes import retrieval
from recfunnel.retrieval import build_index
from recfunnel.runtime import set_seed
from recfunnel.study import Verdict, claims_table, ledger_record, paired_gap, results_dir

device, size = setup("dimerec", PROFILE, SEED, DEVICE)

# %% [markdown]
# ## Diffusion for recommender engineers
#
# A diffusion model learns to undo noise. Take a clean vector $x_0$, here the embedding of
# the item the user watched next, and blur it in $T$ small steps. Step $t$ mixes in fresh
# Gaussian noise with variance $\beta_t$:
# $q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I)$. Gaussians compose,
# so any step can be reached in one jump:
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\qquad
# \bar\alpha_t = \prod_{i \le t} (1-\beta_i),\qquad \epsilon \sim \mathcal N(0, I).$$
#
# $\bar\alpha_t$ is the share of the clean signal's variance left at step $t$. A schedule
# must take it from 1 to about 0, so that $x_T$ is pure noise, the place where generation
# starts. The obvious choice, DDPM's $\beta$ from $10^{-4}$ to $0.02$ {footcite}`ho2020ddpm`,
# was designed for $T = 1000$. With the few steps a recommender can afford it stops short:
# the figure shows it at this chapter's $T$. A model trained that way never sees pure noise,
# yet serving starts from it. We scale DDPM's betas by $1000/T$, which ends near zero for
# any $T$.

# %%
T = size.diffusion_steps
schedules = {f"DDPM's betas, T = {T}": NoiseSchedule.linear(T, 1e-4, 0.02),
             f"scaled by 1000/T (ours), T = {T}": NoiseSchedule.linear(T),
             f"cosine, T = {T}": NoiseSchedule.cosine(T)}
fig, ax = plt.subplots(figsize=(6.5, 3.4))
for (name, schedule), color in zip(schedules.items(), plots.PALETTE, strict=False):
    ax.plot(range(T + 1), schedule.alpha_bar.sqrt(), label=name, color=color)
ax.set(xlabel="step t", ylabel=r"signal kept, $\sqrt{\bar\alpha_t}$",
       title="Does the forward process reach pure noise?")
ax.legend()
plt.show()
raw_left = float(NoiseSchedule.linear(T, 1e-4, 0.02).alpha_bar[-1].sqrt())
glue("dr_raw_signal_left", f"{raw_left:.2f}")
glue("dr_T", T)

# %% [markdown]
# With DDPM's raw betas, $\sqrt{\bar\alpha_T}$ = {glue:text}`dr_raw_signal_left` at
# $T$ = {glue:text}`dr_T`: that share of the clean vector is still there when the forward
# process ends. The closed form is the only thing the training loop uses, so we
# check it by simulation: draw many noisy copies of one vector and compare their mean and
# variance with $\sqrt{\bar\alpha_t}\,x_0$ and $(1-\bar\alpha_t)$.

# %%
# NBVAL_CHECK_OUTPUT
check = NoiseSchedule.linear(50)
x0_check = torch.tensor([[1.0, -0.5, 0.25]], dtype=torch.float64).expand(50_000, 3)
rows = []
for t in (1, 10, 25, 50):
    noise = torch.randn(50_000, 3, generator=torch.Generator().manual_seed(t),
                        dtype=torch.float64)
    x_t = q_sample(check, x0_check, torch.full((50_000,), t), noise)
    abar = float(check.alpha_bar[t])
    rows.append({"t": t, "mean of x_t[0]": x_t[:, 0].mean().item(),
                 "sqrt(abar) x0[0]": math.sqrt(abar),
                 "variance": x_t.var(0).mean().item(), "1 - abar": 1 - abar})
print(pd.DataFrame(rows).set_index("t").round(2).to_string())

# %% [markdown]
# ### What the denoiser learns, and how it generates
#
# The denoiser $f_\theta(x_t, t, \cdot)$ sees a noisy vector and its step and predicts the
# clean one, $\hat x_0$. DimeRec predicts $x_0$ directly (not the noise, as DDPM does), which
# suits retrieval: $\hat x_0$ is already a vector in item space. To generate, start from
# noise at $T$ and walk back. Knowing $\hat x_0$, the step from $t$ to an earlier $s$ is the
# DDIM update {footcite}`song2021ddim`:
#
# $$x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\;\hat\epsilon + \sigma z,
# \qquad \hat\epsilon = \frac{x_t - \sqrt{\bar\alpha_t}\,\hat x_0}{\sqrt{1-\bar\alpha_t}},$$
#
# where $\sigma = \eta\sqrt{(1-\bar\alpha_s)/(1-\bar\alpha_t)}\sqrt{1-\bar\alpha_t/\bar\alpha_s}$.
# With $\eta = 1$ and $s = t - 1$ this is a draw from DDPM's posterior
# $q(x_{t-1} \mid x_t, x_0)$. With $\eta = 0$ there is no fresh noise: the chain is
# deterministic given $x_T$ and may skip steps, so a few strided steps suffice. The cell
# checks the first statement against the posterior's textbook mean and variance.

# %%
# NBVAL_CHECK_OUTPUT
t = 20
abar, beta = check.alpha_bar, check.betas[t - 1]
x0_hat, x_t, z = (torch.randn(1, 4, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(i)) for i in range(3))
posterior_mean = (abar[t - 1].sqrt() * beta / (1 - abar[t])) * x0_hat \
    + ((1 - beta).sqrt() * (1 - abar[t - 1]) / (1 - abar[t])) * x_t
posterior_var = (1 - abar[t - 1]) / (1 - abar[t]) * beta
ddim = reverse_step(check, x_t, x0_hat, t, t - 1, eta=1.0, noise=z)
print("DDIM(eta=1) == DDPM posterior draw:",
      torch.allclose(ddim, posterior_mean + posterior_var.sqrt() * z))

# %% [markdown]
# ## Why the sphere
#
# DimeRec trains the denoiser with two losses on the same output. The reconstruction loss
# $\lVert x_0 - \hat x_0\rVert^2$ asks $\hat x_0$ to sit *at* the target's embedding. The
# sampled-softmax loss asks $\hat x_0 \cdot e_a$ to beat $\hat x_0 \cdot e_i$ for other items,
# which a larger norm makes easier. Since $x_0 = e_a$ is itself trainable, the first loss is
# also lowered by shrinking every embedding, the second by growing them. On the unit sphere
# both become one: $\lVert a - b\rVert^2 = 2 - 2\,a\cdot b$, so lowering the distance *is*
# raising the inner product. With unit vectors the logits lie in $[-1, 1]$, too flat for a
# softmax over a thousand items, so every softmax divides them by a temperature $\tau$
# (0.1 here; the paper does not give one).
#
# The experiment below trains the diffusion part alone (no guidance loss) on MovieLens-100K
# in plain Euclidean space with each loss alone and with both, and records the mean norm of
# the item embeddings. The dashed line is the norm every loss sees on the sphere: 1, by
# construction.

# %%
try:
    movielens = load_ml100k()
except DataUnavailableError as error:  # offline: say so and skip the real-data sections
    movielens = None
    print(f"MovieLens-100K is not available here, its sections are skipped: {error}")
HAVE_DATA = movielens is not None
MARGIN = 0.05  # every non-inferiority margin of the chapter, declared before the runs
glue("dr_margin_pct", round(100 * MARGIN))


if HAVE_DATA:
    split = SequentialSplit(movielens.interactions, max_len=50)
    # the diffusion losses alone in plain Euclidean space, logits u.e (tau = 1)
    euclid = recipe.dimerec_config(size, split.n_items, sphere=False, temperature=1.0,
                                   gem_weight=0.0)
    norm_runs = {
        "reconstruction loss alone": dataclasses.replace(euclid, ssm_weight=0.0),
        "softmax loss alone": dataclasses.replace(euclid, recon_weight=0.0),
        "both losses": euclid,
    }
    norms = {name: recipe.norm_trajectory(cfg, split, size, size.norm_steps, SEED, DEVICE)
             for name, cfg in norm_runs.items()}
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for (name, values), color in zip(norms.items(), plots.PALETTE, strict=False):
        ax.plot(values, label=f"Euclidean, {name}", color=color)
    ax.axhline(1.0, color="grey", linestyle="--", label="on the sphere (any loss)")
    ax.set(xlabel="optimiser step", ylabel="mean item-embedding norm", yscale="log",
           title="Off the sphere, the two losses pull the norms apart")
    ax.legend()
    plt.show()
    for name, key in (("reconstruction loss alone", "recon"), ("softmax loss alone", "ssm"),
                      ("both losses", "both")):
        glue(f"dr_norm_{key}_end", round(norms[name][-1], 2))
    glue("dr_norm_start", round(norms["both losses"][0], 2))
else:
    for key in ("recon_end", "ssm_end", "both_end", "start"):
        glue(f"dr_norm_{key}", float("nan"))

# %% [markdown]
# How to read the figure: the y axis is logarithmic, so a straight rise is exponential
# growth. Each run starts from the same embeddings; what moves the curves apart is only
# which losses act on them. `recipes.dimerec.norm_trajectory` writes the optimiser steps
# out, without early stopping or validation, because the quantity of interest is the
# drift itself, not the best model.

# %% [markdown]
# From a mean norm of {glue:text}`dr_norm_start`, the reconstruction loss alone drives the
# norms to {glue:text}`dr_norm_recon_end` (shrinking everything is the cheapest way to make
# $\hat x_0$ and $x_0$ close), the softmax loss alone to {glue:text}`dr_norm_ssm_end`, and
# both together to {glue:text}`dr_norm_both_end`. Together, the norm is set by a tug of war
# between two losses, not by what the user likes; on the sphere the question does not
# arise.
#
# The paper justifies the sphere more carefully: a diffusion on a curved space is not the
# Euclidean one, but a long walk of small random steps along the sphere (a geodesic random
# walk) ends approximately Gaussian around its mean, so the Euclidean formulas hold if every
# vector is projected back onto the sphere, $\Pi(v) = v / \lVert v\rVert$. One detail the
# paper leaves open matters here: the scale of the noise. Standard noise in $d = 64$
# dimensions has norm about 8, and would swamp a unit vector after the first step. We draw
# the noise with variance $1/d$ per coordinate, so a noised unit vector keeps an expected
# squared norm of $\bar\alpha_t + (1 - \bar\alpha_t) = 1$ and $\Pi$ is a small correction.

# %% [markdown]
# ## The model, built step by step
#
# Three pieces, in the paper's Section 3 order:
#
# $$g^u = \mathrm{GEM}(S^u) \in \mathbb R^{K\times d},\qquad
# \hat x_0 = \Pi\big(f_\theta(x_t,\ t,\ g^u)\big),\qquad
# \mathcal L = \mathcal L_{gem} + \lambda\,\mathcal L_{recon} + \mu\,\mathcal L_{ssm}.$$
#
# ```{include} ../book/notation.md
# :start-after: <!-- ch04-start -->
# :end-before: <!-- ch04-end -->
# ```
#
# **The guidance extractor (GEM)** is ComiRec-SA. Each of $K$ heads puts a softmax over the
# $N$ positions of the history, from a two-layer MLP with $\tanh$, and its interest is the
# weighted sum of the item embeddings $H$:
# $A = \mathrm{softmax}_N\big(W_2 \tanh(W_1 (H + P))\big) \in \mathbb R^{N\times K}$,
# $g^u = \Pi(A^\top H)$. The position embedding $P$ enters only the logits, as in ComiRec-SA
# (one reading note adds it to $H$ as well). We rebuild it by hand on a tiny batch and
# compare with the package.

# %%
# NBVAL_CHECK_OUTPUT
tiny_cfg = DimeRecConfig(n_items=30, max_len=6, d_model=8, n_interests=2, diffusion_steps=10,
                         hidden=16)
set_seed(SEED)
tiny = DimeRec(tiny_cfg).eval()
user_seq = torch.randint(1, 30, (3, 6), generator=torch.Generator().manual_seed(1))
user_seq[0, :2] = 0  # a short history, left-padded
is_pad = user_seq == 0

gem = tiny.gem
H = gem.item_emb(user_seq)  # [B, N, d]
logits = gem.attention[2](torch.tanh(gem.attention[0](H + gem.pos_emb)))  # [B, N, K]
A = logits.masked_fill(is_pad[..., None], float("-inf")).softmax(dim=1)
g_by_hand = F.normalize(A.transpose(1, 2) @ H, dim=-1)  # [B, K, d]
print("GEM by hand == package:", torch.allclose(g_by_hand, gem.interests(user_seq, is_pad),
                                                atol=1e-6))
print("attention on padding:", A[0, :2].abs().max().item())

# %% [markdown]
# **The guidance loss** picks, for each example, the interest closest to the target item and
# applies a softmax over items to that interest alone (ComiRec's hard selection). Only the
# chosen interest receives a gradient, so an interest that never wins never learns: the
# chapter tracks how often each one is chosen. We use a full softmax over MovieLens's 1,682
# items where the paper samples negatives; at Kuaishou's scale the sampled version with a
# logQ correction (chapter 2) takes its place.
#
# **The denoiser** is "a simple MLP" in the paper, without saying how the $K \times d$
# guidance enters it. We flatten it and concatenate it with $x_t$ and a learned embedding of
# the step: $[x_t, \mathrm{emb}(t), g_1, \dots, g_K] \in \mathbb R^{(K+2)d}$, then
# Linear, SiLU, Linear, and $\Pi$.

# %%
show_source(DimeRec.forward)

# %% [markdown]
# One training step on the tiny batch, each term recomputed from the same noise draw:

# %%
# NBVAL_CHECK_OUTPUT
targets = torch.tensor([4, 9, 17])
set_seed(SEED)
t_draw = torch.randint(1, tiny_cfg.diffusion_steps + 1, (3,))
noise = tiny.noise_scale * torch.randn(3, tiny_cfg.d_model)
items = tiny.gem.items()  # [V, d] on the sphere
x0 = items[targets]
x_t = F.normalize(q_sample(tiny.schedule, x0, t_draw, noise), dim=-1)
x0_hat = tiny.denoise(x_t, t_draw, g_by_hand)
recon = (x0 - x0_hat).pow(2).sum(-1).mean()
ssm = F.cross_entropy(tiny.space.logits(x0_hat, items), targets)
gem_loss, chosen = tiny.gem.guidance_loss(g_by_hand, targets)
print(f"L_recon = {recon.item():.3f}, L_ssm = {ssm.item():.3f}, L_gem = {gem_loss.item():.3f}")
print("interest chosen for each target:", chosen.tolist())
print("||x0 - x0_hat||^2 == 2 - 2 x0.x0_hat on the sphere:",
      torch.allclose((x0 - x0_hat).pow(2).sum(-1), 2 - 2 * (x0 * x0_hat).sum(-1), atol=1e-6))

# %% [markdown]
# **Serving** draws $x_T = \Pi(\text{noise})$ and walks back with the DDIM update, projecting
# after every step. The last $\hat x_0$ is the user's query vector, searched against the
# item table like any two-tower model's. With $\eta = 0$ and a fixed seed the vector is
# deterministic, which evaluation needs; with $\eta = 1$ every draw differs, which the
# diversity study below uses.

# %%
# NBVAL_CHECK_OUTPUT
tiny_batch = SeqBatch(torch.arange(3), user_seq, is_pad, targets)
trail: list = []
generated = tiny.generate(tiny_batch, steps=4, seed=0, trajectory=trail)
print("steps visited:", [t for t, _, _ in trail])
print("unit norm:", torch.allclose(generated.norm(dim=-1), torch.ones(3), atol=1e-6))
print("same seed, same vector:", torch.equal(generated, tiny.generate(tiny_batch, steps=4,
                                                                      seed=0)))

# %% [markdown]
# ## MovieLens-100K: popularity, SASRec, ComiRec-SA and DimeRec
#
# The protocol is the course's, RecBole's: per user, the last rating is the test target and
# the one before it the validation target, and every item is ranked. SASRec keeps RecBole's
# defaults (50 items, all-position softmax, $d = 64$). ComiRec-SA is DimeRec's own extractor
# trained alone with the guidance loss and served by each item's best score over the $K$
# interests. ComiRec-SA and DimeRec read the last 50 items and see random cut points of each
# user's history, the same number per epoch. Every model keeps the weights of its best
# validation epoch. DimeRec serves with the deterministic sampler and the number of reverse
# steps (1, 2, 5, 10 or all $T$) that gives the best validation NDCG@10 after training
# (`choose_sample_steps`); the number of steps is studied below.

# %% [markdown]
# What the cell does. `recipes.dimerec.dimerec_contenders` gives each model's configuration
# at the profile's size (SASRec's is RecBole's and needs none), and
# `recipes.dimerec.train_over_seeds` trains each contender with `fit_contender` on every seed
# of the profile, the function `benchmarks/dimerec_seeds.py` calls too. It keeps the last
# seed's model and history for the studies below and every test user's metrics for every
# seed, which the next cell pairs between models. Popularity is fitted on the training
# targets and scored with the same metrics.

# %%
if HAVE_DATA:
    test_batch = split.eval_batch("test")
    valid_batch = split.eval_batch("valid")
    counts = torch.as_tensor(split.train_item_counts())
    popularity = Popularity(split.n_items).fit(
        torch.repeat_interleave(torch.arange(split.n_items), counts))
    pop_scores = popularity.score_all(test_batch.user_ids)
    ml_users = {"popularity": {k: v.numpy() for k, v in ranking_metrics(
        pop_scores, test_batch.target_ids, ks=(10, 20, 50), reduce=False).items()}}
    contenders = recipe.dimerec_contenders(size, split.n_items)
    main_runs = recipe.train_over_seeds(("SASRec", "ComiRec-SA", "DimeRec"), contenders,
                                        split, size, SEED, DEVICE)
    models, histories = main_runs.models, main_runs.histories  # the last seed's
    seed_users = main_runs.users  # name -> metric -> [S, U], paired between models
    ml_users.update(main_runs.mean_users())

# %%
if HAVE_DATA:
    columns = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]
    ml_table = pd.DataFrame({name: {c: float(v[c].mean()) for c in columns}
                             for name, v in ml_users.items()}).T
    display(plots.table(ml_table))
    for name, key in (("popularity", "pop"), ("SASRec", "sasrec"), ("ComiRec-SA", "comirec"),
                      ("DimeRec", "dimerec")):
        for metric in ("ndcg@10", "ndcg@50", "recall@50"):
            glue(f"dr_ml_{key}_{metric.replace('@', '')}",
                 round(float(ml_table.loc[name, metric]), 4))
    gaps = {(other, metric): paired_gap(seed_users["DimeRec"][metric],
                                        seed_users[other][metric], a="DimeRec", b=other,
                                        metric=metric)
            for other in ("SASRec", "ComiRec-SA") for metric in ("ndcg@10", "ndcg@50",
                                                                  "recall@50")}
    for (other, metric), gap in gaps.items():
        key = f"dr_gap_{'sasrec' if other == 'SASRec' else 'comirec'}_{metric.replace('@', '')}"
        glue(key, str(gap))
    plots.validation_curves(histories, baseline=ml_table.loc["popularity", "ndcg@10"],
                            baseline_label="popularity (test)")
    plt.show()
    shares = interest_selection(models["ComiRec-SA"], test_batch)
    glue("dr_seconds", ", ".join(f"{name} {sec:.0f} s" for name, sec in
                                 main_runs.seconds.items()))
    last_epoch = {name: h.column("ndcg@10")[-1] >= max(h.column("ndcg@10")) - 1e-9
                  for name, h in histories.items()}
    rising = [name for name, best_last in last_epoch.items() if best_last]
    glue("dr_still_rising", ", ".join(rising) if rising else "none of them")
    glue("dr_interest_shares", ", ".join(f"{s:.0%}" for s in shares))
    glue("dr_dead_interests", "none is dead" if shares.min() > 0.02 else
         f"{int((shares <= 0.02).sum())} of them almost never win")
else:
    for key in ("pop", "sasrec", "comirec", "dimerec"):
        for metric in ("ndcg10", "ndcg50", "recall50"):
            glue(f"dr_ml_{key}_{metric}", float("nan"))
    for other in ("sasrec", "comirec"):
        for metric in ("ndcg10", "ndcg50", "recall50"):
            glue(f"dr_gap_{other}_{metric}", "n/a")
    glue("dr_interest_shares", "n/a")
    glue("dr_dead_interests", "not measured")
    glue("dr_seconds", "n/a")
    glue("dr_still_rising", "n/a")
glue("dr_epochs", size.epochs)
glue("dr_sasrec_epochs", size.sasrec_epochs)
glue("dr_seeds", plural(size.seeds, "seed"))
glue("dr_per_user", size.per_user)
glue("dr_test_users", f"{movielens.n_users:,}" if HAVE_DATA else "no")

# %% [markdown]
# Per user, DimeRec minus SASRec is {glue:text}`dr_gap_sasrec_ndcg10` on NDCG@10 and
# {glue:text}`dr_gap_sasrec_ndcg50` on NDCG@50 (mean ± standard error over the
# {glue:text}`dr_test_users` test users); DimeRec minus ComiRec-SA, its own extractor alone, is
# {glue:text}`dr_gap_comirec_ndcg10` and {glue:text}`dr_gap_comirec_ndcg50`. The models ran
# for {glue:text}`dr_epochs` epochs (SASRec {glue:text}`dr_sasrec_epochs`) on
# {glue:text}`dr_seeds`, each user's metrics averaged over the seeds before pairing.
# The paired standard error measures the test users' noise, not the seed's, so a gap within
# about two of them is not a finding; the three-seed table further down adds the seeds'
# spread.
#
# The budgets are not the same kind of thing: training took {glue:text}`dr_seconds` on this
# machine. SASRec learns from every position of every window, the others from
# {glue:text}`dr_epochs` x {glue:text}`dr_per_user` random targets per user. Models whose best
# validation score came at their last epoch, so that more epochs might still help:
# {glue:text}`dr_still_rising`. The `gpu` profile trains every model until validation stops
# improving, and the converged comparison further down does the same on the CPU.
#
# ComiRec-SA trails for a structural reason: an interest is a weighted average of the
# history's own item embeddings, with no transformation, so it can only point *at* what the
# user watched, never at what typically comes next. The test suite shows it on sequences that
# cycle through the catalogue, where the next item is always the one after the current:
# ComiRec-SA cannot learn it, DimeRec can. DimeRec's denoiser is the learned map from the
# interests to the next item. Its interests are chosen as targets in the shares
# {glue:text}`dr_interest_shares` (ComiRec-SA alone, test users): {glue:text}`dr_dead_interests`.

# %% [markdown]
# ### Serving through the index
#
# Serving needs nothing new: the generated vector queries the same nearest-neighbour index
# as any two-tower user vector (chapter 2's `recfunnel.retrieval`). Here the index returns
# exactly what `score_all` ranks first.

# %%
if HAVE_DATA:
    dimerec = models["DimeRec"]
    with torch.no_grad():
        queries = torch.cat([dimerec.generate(test_batch[s:s + 512].to(device)).cpu()
                             for s in range(0, len(test_batch), 512)])
        table = dimerec.gem.items().cpu()[1:]  # row 0 is padding
    _, found = build_index(table, backend="exact").search(queries, k=50)
    expected = test_batch.scores(lambda rows: dimerec.score_all(rows.to(device))).topk(50).indices
    agreement = (found + 1 == expected).float().mean().item()
    print(f"top-50 from the index equal to score_all's in {agreement:.1%} of positions")
    glue("dr_index_agreement", agreement)
else:
    glue("dr_index_agreement", float("nan"))

# %% [markdown]
# ### How many reverse steps?
#
# Serving cost grows linearly with the number of reverse steps, and the paper reports that
# accuracy saturates after a modest number. We score validation and test users with the same
# trained model and 1 up to all $T$ deterministic steps.

# %% [markdown]
# `recipes.dimerec.steps_sweep` changes only the served number of steps of one trained
# model, scores the validation and the test users at each count and times the test pass,
# then restores the validated count. Nothing is retrained, so every difference between the
# rows is the chain's length alone.

# %%
if HAVE_DATA:
    sweep = recipe.steps_sweep(dimerec, valid_batch, test_batch)
    display(plots.table(sweep))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(sweep.index, sweep["test ndcg@10"], marker="o", label="NDCG@10")
    axes[0].plot(sweep.index, sweep["test recall@50"], marker="o", label="Recall@50")
    axes[0].set(xlabel="reverse steps", ylabel="test metric",
                title="Accuracy by number of steps")
    plots.log_axis(axes[0], ticks=sweep.index)
    axes[0].legend()
    axes[1].plot(sweep.index, sweep["ms per 1,000 users"], marker="o", color=plots.PALETTE[3])
    axes[1].set(xlabel="reverse steps", ylabel="ms per 1,000 users",
                title="Serving time grows linearly")
    plt.show()
    best_steps = served_steps = dimerec.cfg.sample_steps  # validation's choice, served above
    glue("dr_best_steps", plural(best_steps, "step"))
    glue("dr_full_chain_ndcg10", round(float(sweep["test ndcg@10"].iloc[-1]), 4))
    glue("dr_one_step_ndcg10", round(float(sweep.loc[1, "test ndcg@10"]), 4))
    # claim 6, "accuracy saturates": the whole chain is not worse than the number of steps
    # validation picked, by more than the declared margin, on the test users
    chain_users = {}
    for steps in (best_steps, dimerec.cfg.diffusion_steps):
        dimerec.cfg = dataclasses.replace(dimerec.cfg, sample_steps=steps)
        chain_users[steps] = next_item_metrics(dimerec, test_batch, ks=(10,),
                                               reduce=False)["ndcg@10"].numpy()
    dimerec.cfg = dataclasses.replace(dimerec.cfg, sample_steps=served_steps)
    steps_gap = paired_gap(chain_users[dimerec.cfg.diffusion_steps], chain_users[best_steps],
                           a="whole chain", b=plural(best_steps, "step"), metric="ndcg@10")
    claim6 = Verdict.not_worse("accuracy saturates: the whole chain is not worse than the "
                               "validated steps", steps_gap, MARGIN * steps_gap.mean_b)
    glue("dr_steps_gap", str(steps_gap))
    glue("dr_steps_trend", claim6.text)
    slope = np.polyfit(sweep.index, sweep["ms per 1,000 users"], 1)[0]
    glue("dr_ms_per_step", f"{slope:.1f}")
else:
    for key in ("best_steps", "full_chain_ndcg10", "one_step_ndcg10", "ms_per_step",
                "steps_trend", "steps_gap"):
        glue(f"dr_{key}", "n/a")

# %% [markdown]
# Validation picks {glue:text}`dr_best_steps`. Test NDCG@10 is
# {glue:text}`dr_one_step_ndcg10` with one step and {glue:text}`dr_full_chain_ndcg10` with the
# whole chain, while each step costs about {glue:text}`dr_ms_per_step` ms per 1,000 users on
# this machine. The paper's "accuracy saturates" means that walking the whole chain loses
# nothing against the few steps validation picked; we test it as a non-inferiority claim with
# a margin of {glue:text}`dr_margin_pct` % declared beforehand (whole chain minus the
# validated steps, per test user:
# {glue:text}`dr_steps_gap`): {glue:text}`dr_steps_trend`. Where accuracy falls, the reason
# is what the late steps were trained to do. Near $t = 0$ the denoiser sees a vector that is almost an
# item embedding and learns to snap it onto an item. Walked all the way, the chain commits
# to one plausible next item; the first step, from pure noise, returns the guidance's
# average direction, which ranks a whole neighbourhood of likely items well. For retrieval,
# which needs a good *list*, the average is the better query. The profile therefore serves
# with few steps; the figure of the reverse process below shows the commitment happen.
#
# ### The reverse process, for one user
#
# We run the whole chain for one test user and follow $\hat x_0$: its cosine with each of
# the user's $K$ interests and with the item the user actually watched next, and the rank of
# that item.

# %%
if HAVE_DATA:
    trail = recipe.reverse_trail(dimerec, test_batch[:1], SEED)  # the first test user
    steps_seen, to_interest = trail.steps, trail.to_interest  # [T], [T, K]
    to_target, ranks = trail.to_target, trail.ranks  # [T], [T]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for k in range(to_interest.shape[1]):
        axes[0].plot(steps_seen, to_interest[:, k], label=f"interest {k + 1}",
                     color=plots.PALETTE[k % len(plots.PALETTE)])
    axes[0].plot(steps_seen, to_target, label="the next item", color="black", linewidth=2)
    axes[0].invert_xaxis()
    axes[0].set(xlabel="step t (generation runs right)", ylabel=r"cosine with $\hat x_0$",
                title="Where the prediction points")
    axes[0].legend()
    axes[1].plot(steps_seen, ranks, color=plots.PALETTE[3])
    axes[1].invert_xaxis()
    axes[1].set(xlabel="step t", ylabel="rank of the next item", yscale="log",
                title="Rank of the true next item")
    plt.show()
    glue("dr_rev_cos", f"{to_target[0]:.2f} at the first step to {to_target[-1]:.2f} at the "
         "last")
    glue("dr_rev_rank", f"{ranks[0]} to {ranks[-1]}")
    glue("dr_rev_interest", int(to_interest[-1].argmax()) + 1)
else:
    for key in ("cos", "rank", "interest"):
        glue(f"dr_rev_{key}", "n/a")

# %% [markdown]
# How to read the figure: time runs from left to right, from the noisiest step $t = T$ to
# the last one. On the left, each coloured line is the cosine of the predicted $\hat x_0$
# with one of the user's interests and the black line its cosine with the film the user
# watched next; on the right, that film's rank among all films, on a log scale, so lower is
# better. A black line that rises while one coloured line pulls away from the others is the
# chain committing to one interest.

# %% [markdown]
# For this user, the cosine between $\hat x_0$ and the next film goes from
# {glue:text}`dr_rev_cos`, and the film's rank from {glue:text}`dr_rev_rank`; the chain ends
# closest to interest {glue:text}`dr_rev_interest`. The first prediction, from pure noise,
# is a blend of the interests; the later ones move towards one of them and, within it,
# towards particular films, which is the commitment the steps study measures on average.

# %% [markdown]
# ## MovieLens-1M: beside the outside peers
#
# Chapter 2's benchmark (`benchmarks/retrieval_ml1m.py`, settings in `recipes.retrieval`)
# also trains DimeRec on MovieLens-1M's 6,040 users (d = 64, 50 diffusion steps, 32 cut
# points per user and epoch), under the same wall budget as every other contender and
# beside RecBole's GRU4Rec and SASRec and RecTools' SASRec on the same split, where a gap of
# five per cent can be told from noise. The committed report is read here; at `gpu`
# DimeRec is trained again.

# %%
ml1m_report = retrieval.committed_report()
if ml1m_report is not None and PROFILE == "gpu":  # this chapter's model again, live
    ml1m_report = retrieval.with_live_runs(ml1m_report, ["DimeRec"], SEED, device=DEVICE)
if retrieval.has_runs(ml1m_report, "ml-1m"):
    display(plots.table(retrieval.shown(ml1m_report, "ml-1m")))
    retrieval.plot(ml1m_report, "ml-1m", highlight=["DimeRec"],
                   title="MovieLens-1M: test NDCG@10, one seed, 6,040 users")
else:
    print("benchmarks/results/retrieval_ml1m.json is not here (a Colab session?): see the "
          "repository for the MovieLens-1M benchmark")
for key, value in retrieval.chapter_values(ml1m_report, "DimeRec").items():
    glue(f"dr_ml1m_{key}", value)
if retrieval.has_runs(ml1m_report, "ml-100k"):  # the same benchmark on MovieLens-100K
    display(plots.table(retrieval.shown(ml1m_report, "ml-100k")))
for key, value in retrieval.chapter_values(ml1m_report, "DimeRec", "ml-100k").items():
    glue(f"dr_ml100k_{key}", value)
glue("dr_goal_ratio", f"{retrieval.GOAL:g}")

# %% [markdown]
# Against the best peer, {glue:text}`dr_ml1m_peer` (NDCG@10
# {glue:text}`dr_ml1m_peer_ndcg`), DimeRec reaches {glue:text}`dr_ml1m_ndcg` after
# {glue:text}`dr_ml1m_epochs` epochs in its {glue:text}`dr_ml1m_budget` s: a ratio of
# {glue:text}`dr_ml1m_ratio`. The course's goal, {glue:text}`dr_goal_ratio` times the best peer with a significant
# paired gap: {glue:text}`dr_ml1m_goal`. Read it with how the peer trained:
# {glue:text}`dr_ml1m_peer_training`. DimeRec's paper compares it with SASRec trained on
# sampled negatives; here every contender is trained with a softmax over the whole
# catalogue, the strongest version of each. On MovieLens-100K the same benchmark (the second
# table when the report holds it, {glue:text}`dr_ml100k_seeds`) puts DimeRec at
# {glue:text}`dr_ml100k_ratio` times its best peer there, {glue:text}`dr_ml100k_peer`; with
# 943 test users that ratio describes, it decides nothing.

# %% [markdown]
# ## Diversity and what the vectors know
#
# The paper reports that DimeRec's recommendations cover the most distinct categories, and
# that a linear probe reads an item's category from DimeRec's item embeddings better than
# from SASRec's or ComiRec's. MovieLens has 19 genres (a film may have several), so both
# can be measured. For each user's top 50 we count the distinct genres (coverage) and the
# mean genre dissimilarity of its pairs (intra-list diversity, ILD: one minus the cosine of
# the films' genre vectors). DimeRec is scored twice: with its deterministic vector, and
# with {glue:text}`dr_samples` stochastic draws ($\eta = 1$) merged by each item's best
# score, the paper's suggested source of diversity.

# %%
glue("dr_samples", size.samples)
if HAVE_DATA:
    lists = {"popularity": pop_scores.topk(50, dim=1).indices}
    for name in ("SASRec", "ComiRec-SA", "DimeRec"):
        lists[name] = recipe.top50(test_batch,
                                   lambda rows, m=models[name]: m.score_all(rows.to(device)))
    lists[f"DimeRec, {size.samples} draws"] = recipe.top50(
        test_batch, recipe.sampled_scores(dimerec, size.samples, SEED))
    diversity, coverage = recipe.genre_diversity(lists, genre_matrix(movielens, split.n_items))
    display(plots.table(diversity, digits=3))
    cov_gap = paired_gap(coverage["DimeRec"], coverage["SASRec"], a="DimeRec", b="SASRec",
                         metric="genres in top-50")
    cov_claim = Verdict.better("DimeRec's top 50 covers more genres than SASRec's", cov_gap)
    glue("dr_cov_dimerec", round(float(coverage["DimeRec"].mean()), 2))
    glue("dr_cov_sasrec", round(float(coverage["SASRec"].mean()), 2))
    glue("dr_cov_comirec", round(float(coverage["ComiRec-SA"].mean()), 2))
    glue("dr_cov_gap", f"{cov_gap.mean:+.2f} ± {cov_gap.se:.2f}")
    glue("dr_cov_verdict", cov_claim.text)
    glue("dr_cov_sampled", round(float(coverage[f"DimeRec, {size.samples} draws"].mean()), 2))
else:
    for key in ("cov_dimerec", "cov_sasrec", "cov_comirec", "cov_sampled"):
        glue(f"dr_{key}", float("nan"))
    glue("dr_cov_gap", "n/a")
    glue("dr_cov_verdict", Verdict.untested("", "MovieLens-100K unavailable").text)

# %% [markdown]
# The columns: "genres in top-50" counts the distinct genres of a user's 50 films, averaged
# over users; "ILD@50" is the mean genre dissimilarity of the list's pairs; "distinct items
# (all users)" counts the films that appear in anybody's list, a reading of how much of the
# catalogue a model ever recommends. A model can score high on the first two and low on the
# third by giving everybody the same varied list, as popularity does.

# %% [markdown]
# DimeRec's top 50 covers {glue:text}`dr_cov_dimerec` genres on average against SASRec's
# {glue:text}`dr_cov_sasrec` and ComiRec-SA's {glue:text}`dr_cov_comirec` (DimeRec minus
# SASRec per user: {glue:text}`dr_cov_gap`; the claim {glue:text}`dr_cov_verdict`). Merging
# several stochastic draws gives {glue:text}`dr_cov_sampled`. Coverage alone rewards
# scattering: the popularity list is one list for everybody and still spans many genres.
# Read it next to the accuracy table. Where DimeRec covers fewer genres than SASRec, the
# reason is the one that makes it accurate: the generated vector is one point close to the
# user's current interests, and its 50 nearest films share their genres. The draws with
# $\eta = 1$ barely differ after the one or two steps served here, because from pure noise
# the first step already returns the guidance's direction; sampling only diversifies when
# the chain is long, which costs accuracy (the steps study). The paper's online diversity
# gain is measured against Kuaishou's other channels, a comparison a single-model offline
# table cannot repeat.
#
# **The probe.** A multinomial logistic regression predicts a film's first genre from each
# model's item embedding (five folds, held-out accuracy), and the genre of the user's next
# film from the user's query vector (SASRec: the last position's output; ComiRec-SA: the
# mean of its interests; DimeRec: the generated vector). A higher score means the genre is
# more linearly readable from the vectors.

# %% [markdown]
# `recipes.dimerec.genre_probes` fits the item probe on the same five folds for every
# model, so its per-item accuracies can be paired between models, as the probe part of
# claim 5 does; the majority-class accuracies are the floor any probe must clear.

# %%
if HAVE_DATA:
    probe, item_probe, majority = recipe.genre_probes(models, movielens, test_batch, SEED)
    display(plots.table(probe, digits=3))
    print(f"majority-class accuracy for the item probe: {majority['items']:.3f}")
    for name, key in (("SASRec", "sasrec"), ("ComiRec-SA", "comirec"), ("DimeRec", "dimerec")):
        glue(f"dr_probe_{key}", round(float(probe.loc[name].iloc[0]), 3))
        glue(f"dr_probe_user_{key}", round(float(probe.loc[name].iloc[1]), 3))
    glue("dr_probe_majority", round(majority["items"], 3))
    glue("dr_probe_user_majority", round(majority["users"], 3))
    probe_best = probe.iloc[:, 0].idxmax()
    glue("dr_probe_best", probe_best)
    # the probe part of claim 5, item by item on the same folds: DimeRec against each
    probe_claim = Verdict.all_of("DimeRec's item embeddings read genre better", [
        Verdict.better(f"DimeRec over {other}", paired_gap(
            item_probe["DimeRec"], item_probe[other], a="DimeRec", b=other,
            metric="probe accuracy")) for other in ("SASRec", "ComiRec-SA")])
else:
    for key in ("sasrec", "comirec", "dimerec", "majority", "best", "user_sasrec",
                "user_comirec", "user_dimerec", "user_majority"):
        glue(f"dr_probe_{key}", "n/a")

# %% [markdown]
# Item probe: DimeRec {glue:text}`dr_probe_dimerec`, SASRec {glue:text}`dr_probe_sasrec`,
# ComiRec-SA {glue:text}`dr_probe_comirec`, against {glue:text}`dr_probe_majority` for always
# guessing the commonest genre (the paper: 0.568, 0.495 and 0.492 on its data, figures we
# have from one third-party summary only, not from the paper's tables). Genre is a
# coarse label that a film's audience only partly follows, so all three stay far from
# perfect. DimeRec's item table is ComiRec-SA's trained with two more losses, so the two are
# close; SASRec's table also serves as the input of a Transformer, whose layers can carry
# what the table does not. The user vectors tell the same story more faintly: the next
# film's genre is read with accuracy {glue:text}`dr_probe_user_dimerec` (DimeRec),
# {glue:text}`dr_probe_user_sasrec` (SASRec) and {glue:text}`dr_probe_user_comirec`
# (ComiRec-SA), against {glue:text}`dr_probe_user_majority` for the majority guess: which
# genre comes next is mostly not predictable.
#
# ## Ablations: which part matters?
#
# Each variant removes one of the paper's three answers and is trained exactly like the
# full model: without the guidance loss (the extractor learns only through the denoiser),
# without the sphere (Euclidean vectors; the softmax keeps its temperature, so that only the
# projection changes), and with the raw newest $K$ items as the condition instead of the
# extracted interests (the paper's rule-based extractor and the conditioning of earlier
# diffusion recommenders). At the `cpu` and `gpu` profiles a fourth variant keeps the sphere
# and drops the temperature ($\tau = 1$), the other half of what "the sphere" changes. Each
# variant serves with the number of reverse steps that its own validation picks. The paper's
# ablation reports Recall@20.

# %%
names = {"no_gem_loss": "no guidance loss", "no_sphere": "no sphere (Euclidean, same tau)",
         "no_temperature": "no temperature (tau = 1, on the sphere)",
         "last_k": "raw newest K items as condition"}
ablation_users = {}
if HAVE_DATA:
    ablation_runs = recipe.train_over_seeds([f"DimeRec, {v}" for v in size.ablations],
                                            contenders, split, size, SEED, DEVICE)
    ablation_users = {v: ablation_runs.users[f"DimeRec, {v}"] for v in size.ablations}
    rows = {"full DimeRec": {"recall@20": ml_users["DimeRec"]["recall@20"].mean(),
                             "ndcg@20": ml_users["DimeRec"]["ndcg@20"].mean(),
                             "gap in recall@20": "", "verdict": ""}}
    for variant, values in ablation_users.items():  # each seed paired with the full model's
        gap = paired_gap(seed_users["DimeRec"]["recall@20"], values["recall@20"],
                         a="DimeRec", b=names[variant], metric="recall@20")
        ablation_claim = Verdict.better(f"{names[variant]} is worse than full DimeRec", gap)
        rows[names[variant]] = {"recall@20": values["recall@20"].mean(),
                                "ndcg@20": values["ndcg@20"].mean(),
                                "gap in recall@20": str(gap), "verdict": ablation_claim.text}
        glue(f"dr_abl_{variant}_gap", str(gap))
        glue(f"dr_abl_{variant}_verdict", ablation_claim.text)
        glue(f"dr_abl_{variant}_recall20", round(float(values["recall@20"].mean()), 4))
    display(plots.table(pd.DataFrame(rows).T))
    glue("dr_full_recall20", round(float(ml_users["DimeRec"]["recall@20"].mean()), 4))
else:
    glue("dr_full_recall20", float("nan"))
for variant in names:
    if variant not in ablation_users:
        for suffix, value in (("gap", "not run"),
                              ("verdict", Verdict.untested("", "not run").text),
                              ("recall20", float("nan"))):
            glue(f"dr_abl_{variant}_{suffix}", value)

# %% [markdown]
# Full DimeRec's Recall@20 is {glue:text}`dr_full_recall20`. Full minus each variant, per
# user: without the guidance loss {glue:text}`dr_abl_no_gem_loss_gap`, without the sphere
# {glue:text}`dr_abl_no_sphere_gap`, with the raw newest items as condition
# {glue:text}`dr_abl_last_k_gap`. The paper's variants fell 6 to 27 % below its full model
# on ML-10M (a range we have from one third-party summary, not from the paper's table).
# Without the temperature, on the sphere with $\tau = 1$:
# {glue:text}`dr_abl_no_temperature_gap` (run at the `cpu` and `gpu` profiles only).
#
# "The sphere" changes two things at once: the projection, and the temperature that unit
# vectors need, since logits in $[-1, 1]$ are too flat for a softmax over 1,682 films. An
# ablation that removes both cannot say which one the accuracy depends on; ours remove one
# each, and the three-seed run below judges both. Where the Euclidean variant, which keeps
# $\tau$, is within noise of the full model while $\tau = 1$ on the sphere falls clearly
# below it, what the sphere buys at this scale is its temperature: Euclidean vectors can
# sharpen their softmax by growing their norms, as the norm experiment showed.
#
# The raw-items variant deserves a second look. The paper's argument against conditioning
# on raw items is that an industrial history is long, sparse and non-stationary. A
# MovieLens-100K rating history is none of these in the same way: what a user rated in the
# last few minutes of a rating session is a strong clue to the next film, the clue SASRec
# lives on. Where the raw newest items guide as well as the extracted interests, as the
# ablation allows here, the denoiser, not the extractor, does most of the work. Whether the
# extractor pays on truly long, noisy histories is a question for the synthetic world
# (Exercise 4).
#
# ### Over three seeds
#
# One seed resolves only large gaps. `benchmarks/dimerec_seeds.py` repeats the comparison
# and the ablations at the `cpu` profile's sizes on three seeds (the split is fixed; the
# initialisation and the batch order change). The table gives mean ± standard deviation over
# the seeds; the paired gaps below it pair each user seed by seed, and their standard errors
# hold the noise of both the users and the seeds. The run's commit:
# {glue:text}`dr_seeds_commit`; `recipes.dimerec.fit_contender` trains every row, the
# function this chapter calls, so the benchmark's models are the chapter's.

# %% [markdown]
# `recipes.dimerec.seed_report` reads the committed JSON into one row per model and seed,
# and `recipes.dimerec.seed_verdicts` turns each comparison named in `seed_keys` into a
# paired gap over users and seeds and its verdict. The comparisons are the same as in the
# chapter's own run, fixed before the benchmark was run.

# %%
columns = ["ndcg@10", "recall@20", "ndcg@50", "recall@50", "genres_top50"]
seed_keys = {
    "sasrec_ndcg10": ("DimeRec", "SASRec", "ndcg@10"),
    "sasrec_ndcg50": ("DimeRec", "SASRec", "ndcg@50"),
    "sasrec_recall50": ("DimeRec", "SASRec", "recall@50"),
    "comirec_ndcg50": ("DimeRec", "ComiRec-SA", "ndcg@50"),
    "comirec_recall50": ("DimeRec", "ComiRec-SA", "recall@50"),
} | {f"abl_{v}": ("DimeRec", f"DimeRec, {v}", "recall@20")
     for v in names}
results = results_dir()
frame, bench_runs, commit = recipe.seed_report(results / "dimerec_seeds.json")
glue("dr_seeds_commit", commit)
if frame is not None:
    summary = frame.groupby("model", sort=False)[columns].agg(["mean", "std"])
    display(plots.table(plots.mean_std(summary)))  # mean ± std over the seeds
    table, judged = recipe.seed_verdicts(bench_runs, seed_keys)
    display(plots.table(table))
    for key, (gap, verdict) in judged.items():
        glue(f"dr_seeds_{key}", str(gap) if gap else "not run")
        glue(f"dr_seeds_{key}_verdict", verdict.text)
    cov = summary["genres_top50"]["mean"]
    glue("dr_seeds_cov", f"DimeRec {cov['DimeRec']:.2f}, SASRec {cov['SASRec']:.2f}")
    glue("dr_seeds_source", f"{len(frame.seed.unique())} seeds at the cpu sizes")
else:
    print("no committed results: run benchmarks/dimerec_seeds.py")
    for key in seed_keys:
        glue(f"dr_seeds_{key}", "n/a")
        glue(f"dr_seeds_{key}_verdict", "n/a")
    glue("dr_seeds_cov", "n/a")
    glue("dr_seeds_source", "no committed results")

# %% [markdown]
# ### Trained to convergence
#
# At the `cpu` budget SASRec was still improving. The committed run of
# `benchmarks/dimerec_seeds.py --epochs 60 --sasrec-epochs 100 --patience 10` trains
# SASRec, ComiRec-SA and DimeRec until validation NDCG@10 has not improved for 10 epochs, on
# three seeds, and keeps each model's best epoch. Its commit: {glue:text}`dr_conv_commit`.
# A run without a recorded commit predates three changes: the serving steps chosen on
# validation (its DimeRec served with the then fixed two steps), the separated sphere
# ablations, and the package's one epoch shuffle (`train.shuffled`), which changed the order
# in which SASRec sees its training windows. ComiRec-SA trains as it did then.

# %%
conv_keys = {k: seed_keys[k] for k in ("sasrec_ndcg10", "sasrec_ndcg50", "comirec_ndcg50")}
frame, conv_runs, commit = recipe.seed_report(results / "dimerec_converged.json")
glue("dr_conv_commit", commit)
if frame is not None:
    conv = frame.groupby("model", sort=False)[columns + ["epochs_run", "train_seconds"]].agg(
        ["mean", "std"])
    display(plots.table(plots.mean_std(conv)))  # mean ± std over the seeds
    table, judged = recipe.seed_verdicts(conv_runs, conv_keys)
    display(plots.table(table))
    for key, (gap, verdict) in judged.items():
        glue(f"dr_conv_{key}", str(gap) if gap else "not run")
        glue(f"dr_conv_{key}_verdict", verdict.text)
    means = conv["ndcg@10"]["mean"]
    glue("dr_conv_ndcg10", f"DimeRec {means['DimeRec']:.4f}, SASRec {means['SASRec']:.4f}, "
         f"ComiRec-SA {means['ComiRec-SA']:.4f}")
    seconds, epochs_run = conv["train_seconds"]["mean"], conv["epochs_run"]["mean"]
    glue("dr_conv_seconds", ", ".join(f"{m} {seconds[m]:.0f} s ({epochs_run[m]:.0f} epochs)"
                                      for m in ("SASRec", "ComiRec-SA", "DimeRec")))
else:
    glue("dr_conv_seconds", "n/a")
    print("no committed results: run the converged benchmark")
    for key in conv_keys:
        glue(f"dr_conv_{key}", "n/a")
        glue(f"dr_conv_{key}_verdict", "n/a")
    glue("dr_conv_ndcg10", "n/a")

# %% [markdown]
# Converged, mean test NDCG@10 over the seeds: {glue:text}`dr_conv_ndcg10`. DimeRec minus
# SASRec per user: {glue:text}`dr_conv_sasrec_ndcg10` on NDCG@10
# ({glue:text}`dr_conv_sasrec_ndcg10_verdict`), {glue:text}`dr_conv_sasrec_ndcg50` on
# NDCG@50 ({glue:text}`dr_conv_sasrec_ndcg50_verdict`). Training took, on average,
# {glue:text}`dr_conv_seconds` on 2 CPU cores.
#
# Read the two comparisons together. DimeRec gets most of its accuracy in its first few
# epochs; SASRec, with its heavy dropout and its loss at every position, keeps improving for
# dozens of epochs and catches up. Which one "wins" on this small dataset therefore depends
# on the training budget, and a table from a single budget hides that. The paper's tables come from
# industrial data with much longer, noisier histories and a retrieval setting that values
# the whole top 50; neither our budgets nor our data reproduce that setting.

# %% [markdown]
# ## The claims, held or not
#
# "This run" is the chapter's own run above; "three seeds" is the committed benchmark
# ({glue:text}`dr_seeds_source`), which we trust more, and "converged" its run to
# convergence. Accuracy claims are judged at convergence first, since at the `cpu` budget
# SASRec is still improving; the budget's verdict stands beside it.
#
# | # | claim | this run | verdict | three seeds | verdict |
# |---|---|---|---|---|---|
# | 1 | DimeRec beats SASRec and its own extractor on HR@50 and NDCG@50 | NDCG@50 minus SASRec {glue:text}`dr_gap_sasrec_ndcg50`, minus ComiRec-SA {glue:text}`dr_gap_comirec_ndcg50`; Recall@50 minus SASRec {glue:text}`dr_gap_sasrec_recall50` | {glue:text}`dr_claim1` | NDCG@50 minus SASRec {glue:text}`dr_seeds_sasrec_ndcg50`, minus ComiRec-SA {glue:text}`dr_seeds_comirec_ndcg50`; Recall@50 minus SASRec {glue:text}`dr_seeds_sasrec_recall50`; converged, NDCG@50 minus SASRec {glue:text}`dr_conv_sasrec_ndcg50`, minus ComiRec-SA {glue:text}`dr_conv_comirec_ndcg50` | {glue:text}`dr_seeds_sasrec_ndcg50_verdict`, {glue:text}`dr_seeds_comirec_ndcg50_verdict`, {glue:text}`dr_seeds_sasrec_recall50_verdict`; converged {glue:text}`dr_conv_sasrec_ndcg50_verdict`, {glue:text}`dr_conv_comirec_ndcg50_verdict` |
# | 1b | (course) DimeRec's NDCG@10 at least SASRec's | {glue:text}`dr_gap_sasrec_ndcg10` | {glue:text}`dr_claim1b` | {glue:text}`dr_seeds_sasrec_ndcg10`; converged {glue:text}`dr_conv_sasrec_ndcg10` | {glue:text}`dr_seeds_sasrec_ndcg10_verdict`; converged {glue:text}`dr_conv_sasrec_ndcg10_verdict` |
# | 2 | the sphere matters (Recall@20) | full minus Euclidean {glue:text}`dr_abl_no_sphere_gap`; the norm experiment above | {glue:text}`dr_abl_no_sphere_verdict` | {glue:text}`dr_seeds_abl_no_sphere` | {glue:text}`dr_seeds_abl_no_sphere_verdict` |
# | 2' | (course) the temperature matters (Recall@20) | full minus $\tau = 1$ {glue:text}`dr_abl_no_temperature_gap` | {glue:text}`dr_abl_no_temperature_verdict` | {glue:text}`dr_seeds_abl_no_temperature` | {glue:text}`dr_seeds_abl_no_temperature_verdict` |
# | 3 | the guidance loss matters (Recall@20) | full minus no $\mathcal L_{gem}$ {glue:text}`dr_abl_no_gem_loss_gap` | {glue:text}`dr_abl_no_gem_loss_verdict` | {glue:text}`dr_seeds_abl_no_gem_loss` | {glue:text}`dr_seeds_abl_no_gem_loss_verdict` |
# | 4 | better guidance gives a better DimeRec (ComiRec-SA over the raw newest items) | {glue:text}`dr_abl_last_k_gap` | {glue:text}`dr_abl_last_k_verdict` | {glue:text}`dr_seeds_abl_last_k` | {glue:text}`dr_seeds_abl_last_k_verdict` |
# | 5 | more genres in the top 50 than SASRec; a better genre probe | coverage {glue:text}`dr_cov_gap`; item probe best: {glue:text}`dr_probe_best` | coverage {glue:text}`dr_cov_verdict`; probe {glue:text}`dr_claim5_probe` | mean genres: {glue:text}`dr_seeds_cov` | |
# | 6 | accuracy saturates after a few steps, time grows linearly | best at {glue:text}`dr_best_steps`; {glue:text}`dr_ms_per_step` ms per step and 1,000 users | {glue:text}`dr_steps_trend` | | |

# %%
PAPER = {
    "1": "HR@50 +18 % to +39 % over the second-best model, per dataset",
    "5": "more diverse lists; a genre probe of 0.5683 against 0.4947 (SASRec) and 0.4917 "
         "(ComiRec)",
    "6": "a few reverse steps suffice while latency grows with the steps"}
SCALE = "ML-10M, Yelp and Kuaishou's industrial data"
if HAVE_DATA:
    claims = {
        "1": Verdict.all_of("DimeRec beats SASRec and ComiRec-SA on Recall@50 and NDCG@50", [
            Verdict.better(f"over {other} on {metric}", gaps[other, metric])
            for other in ("SASRec", "ComiRec-SA") for metric in ("ndcg@50", "recall@50")]),
        "1b": Verdict.not_worse("(course) DimeRec's NDCG@10 not worse than SASRec's",
                                gaps["SASRec", "ndcg@10"],
                                MARGIN * gaps["SASRec", "ndcg@10"].mean_b),
        "5": Verdict.all_of("more genres in the top 50 than SASRec; a better genre probe",
                            [cov_claim, probe_claim]),
        "6": claim6}
    glue("dr_claim1", claims["1"].text)
    glue("dr_claim1b", claims["1b"].text)
    glue("dr_claim5_probe", probe_claim.text)
    display(claims_table(claims, PAPER))
    glue("ledger", ledger_record("4. DimeRec", SCALE, claims, PAPER))
else:
    claims = {key: Verdict.untested(claim, "MovieLens-100K unavailable") for key, claim in (
        ("1", "DimeRec beats SASRec and ComiRec-SA on Recall@50 and NDCG@50"),
        ("5", "more genres in the top 50 than SASRec; a better genre probe"),
        ("6", "accuracy saturates after a few reverse steps"))}
    for key in ("claim1", "claim1b", "claim5_probe"):
        glue(f"dr_{key}", Verdict.untested("", "MovieLens-100K unavailable").text)
    glue("ledger", ledger_record("4. DimeRec", SCALE, claims, PAPER))

# %% [markdown]
# How to read the table: one row per claim, with every gap it was judged on ($a - b \pm$
# standard error, one per part for a composite claim), the noise that standard error holds
# and the outcome of the book's one rule. The three-seed and converged verdicts of the
# table above come from the same rule applied to the committed benchmarks.

# %% [markdown]
# Claim 1b is the course's acceptance bar, not the paper's, and a non-inferiority claim:
# DimeRec is "not worse" when the interval of two standard errors around its gap to SASRec
# stays above minus the margin declared before the run, {glue:text}`dr_margin_pct` % of
# SASRec's NDCG@10. The table
# above lists this run's verdicts with their parts and noise.
#
# ## The paper and this book
#
# | | paper | this book |
# |---|---|---|
# | data | YooChoose, KuaiRec, ML-10M; Kuaishou online | MovieLens-100K, RecBole's protocol |
# | metrics | HR and NDCG at 10, 20, 50; five runs (summary-only) | Recall (= HR here) and NDCG at 10, 20, 50; per-user paired gaps |
# | extractor | ComiRec-SA (best of four) | ComiRec-SA, and the raw newest items as ablation |
# | denoiser | "a simple MLP", predicts $x_0$ | flattened guidance, step embedding, two-layer MLP |
# | negatives | sampled | full softmax (1,682 items) |
# | sphere | geodesic random walk, projection | projection, temperature 0.1, noise variance $1/d$ |
# | schedule, $T$, $K$, $d$, $\lambda$, $\mu$ | studied, values not available to us | linear scaled to $T$; profile values; $\lambda = \mu = 1$ |
# | serving | reverse chain, then ANN | deterministic DDIM with the validated number of steps, then the index |
# | anchors | +18 to +39 % HR@50 over the second best; probe 0.568 vs 0.495 / 0.492 (both from one third-party summary) | the tables above |
#
# ## What the paper leaves open
#
# - **The schedule, $T$ and the noise scale.** With DDPM's betas and a small $T$ the chain
#   never reaches noise (the first figure). We scale the betas to $T$ and draw noise with
#   variance $1/d$ so the projection stays a correction.
# - **How the $K$ interests enter the denoiser.** We flatten them. Attention from $x_t$ over
#   the interests is the other natural choice and scales better with $K$ (Exercise 3).
# - **The temperature.** Unit vectors need one; 0.1 is our choice.
# - **Negatives.** A full softmax is cheap at MovieLens's size; at Kuaishou's, sampled
#   negatives with a logQ correction (chapter 2).
# - **Serving steps.** The paper reports saturation, not the number it serves with. We serve
#   with the number validation picks and test saturation as claim 6; the reverse-process
#   figure shows why a long chain commits to single items.
# - **Whether $x_0$ is detached in the reconstruction loss.** We keep the gradient, as the
#   equations are written (Exercise 2).
#
# ## Pitfalls when you build it yourself
#
# - **The target of the reconstruction loss is trainable.** $x_0$ is the target item's
#   embedding, so the loss can fall by moving the embeddings instead of by denoising
#   better. Off the sphere the norms drift, as the norm experiment above shows; on the
#   sphere they cannot.
# - **Unit vectors need a temperature.** On the sphere a logit is a cosine in $[-1, 1]$. A
#   softmax over such logits is almost flat, and training crawls; dividing by a temperature
#   $\tau$ restores a usable range. An ablation that removes the sphere must keep $\tau$,
#   or it removes two things at once: the chapter's "no sphere" and "no temperature"
#   variants change one each.
# - **A hard argmax starves interests.** The guidance loss trains only the interest that
#   wins each target. Watch how often each of the $K$ interests wins; one that never does
#   has died.
# - **Generation is random; evaluation should not be.** Metrics from stochastic reverse
#   sampling move from run to run. The chapter scores with deterministic reverse steps and
#   reports the sampled variant (`eta = 1`) separately, for diversity.
# - **Pick the number of steps on validation users.** The steps sweep shows every count on
#   the test users for reading only; the served count is chosen on the validation users
#   before the test users are looked at.
# - **Expect gains at @50 before @10.** The paper's largest gains are at cut-off 50, where
#   diversity counts; a model can win there and lose at @10. Judge the claim at the
#   cut-offs the paper names, and report the others beside it.
# - **Compare at convergence.** At a short budget SASRec is under-trained, so a comparison
#   there is about learning speed. The converged benchmark above is the fair one; the
#   budget result stands beside it.
#
# ## Summary
#
# - DimeRec splits retrieval into two parts: an extractor turns the history into $K$
#   interest vectors (the guidance), and a diffusion model generates the next item's vector
#   from noise, guided by them.
# - The geometry matters as much as the diffusion: on the sphere with a temperature the
#   reconstruction and softmax losses stop pulling the embeddings apart.
# - Serving is generation followed by a nearest-neighbour search, so the number of reverse
#   steps trades accuracy for time, linearly.
# - Diversity and accuracy are measured on the same users: genres in the top 50, a linear
#   probe of what the vectors know, and paired gaps over users and seeds for every claim.
# - Which model wins on MovieLens-100K depends on the training budget: the chapter reports
#   the budget run, the three seeds and the run to convergence side by side, and judges
#   accuracy at convergence.
# - Each ablation removes one thing: the guidance loss, the projection onto the sphere, the
#   temperature, or the extractor (replaced by the raw newest items), so that a fall in
#   accuracy names its cause.
# - The served number of reverse steps is chosen on the validation users, never on the
#   test users that judge it.
#
# ## Exercises
#
# :::{exercise} An exact walk on the sphere
# :label: ex-04-1
# Replace the projected forward step by the exponential
# map: $x_t = \cos(\lVert v\rVert)\,x_{t-1} + \sin(\lVert v\rVert)\,v/\lVert v\rVert$ with
# $v = \sqrt{\beta_t}\,(I - x_{t-1}x_{t-1}^\top)\,\xi$ and $\xi$ Gaussian with variance
# $1/d$. Check that it stays on the sphere, and compare the cosine between $x_0$ and $x_t$
# after $t$ steps with the projected closed form.
# :::
#
# :::{solution} ex-04-1
# :class: dropdown
# $v$ is tangent at $x_{t-1}$ (the projection removes the radial part), and the exponential
# map moves along the great circle, so $\lVert x_t\rVert = 1$ exactly. Each step keeps the
# cosine with the start in expectation about $\sqrt{1-\beta_t}$ times, as the Euclidean
# chain does, so the two agree closely. The hidden cell runs both.
# :::

# %% tags=["hide-cell", "solution"]
def geodesic_walk(x0: torch.Tensor, schedule: NoiseSchedule, steps: int,
                  generator: torch.Generator) -> torch.Tensor:
    x, d = x0.clone(), x0.shape[-1]
    for t in range(steps):
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype) / math.sqrt(d)
        v = math.sqrt(float(schedule.betas[t])) * (xi - (xi * x).sum(-1, keepdim=True) * x)
        norm = v.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        x = torch.cos(norm) * x + torch.sin(norm) * v / norm
    return x


walk_schedule = NoiseSchedule.linear(50)
start = F.normalize(torch.randn(2_000, 32, dtype=torch.float64), dim=-1)
g_walk = torch.Generator().manual_seed(SEED)
for steps in (5, 20, 40):
    walked = geodesic_walk(start, walk_schedule, steps, g_walk)
    jumped = F.normalize(q_sample(walk_schedule, start, torch.full((2_000,), steps),
                                  torch.randn(start.shape, generator=g_walk,
                                              dtype=torch.float64) / math.sqrt(32)), dim=-1)
    print(f"t={steps:2d}: max |norm - 1| {float((walked.norm(dim=-1) - 1).abs().max()):.1e}; "
          f"mean cosine to x0: walk {float((walked * start).sum(-1).mean()):.3f}, "
          f"projected closed form {float((jumped * start).sum(-1).mean()):.3f}")

# %% [markdown]
# :::{exercise} Detach the target
# :label: ex-04-2
# The reconstruction loss can be lowered by moving the item
# embeddings towards whatever the denoiser outputs. Write the loss with `x0.detach()` and
# say which parameters then still receive its gradient. Why does the sphere make the
# difference small?
# :::
#
# :::{solution} ex-04-2
# :class: dropdown
# With `x0.detach()`, $\mathcal L_{recon}$ still trains the denoiser and, through $g$, the
# extractor and the embeddings of the *history's* items (the guidance is built from them);
# it no longer moves the *target's* embedding towards the prediction. Off
# the sphere, keeping the gradient lets the table collapse towards small norms (the norm
# figure). On the sphere it can only rotate items towards the denoiser's predictions, which
# is what $\mathcal L_{ssm}$ asks as well. The hidden cell counts the parameters that get a
# gradient either way.
# :::

# %% tags=["hide-cell", "solution"]
tiny_batch_loss = SeqBatch(torch.arange(3), user_seq, is_pad, targets)
x0_detached = tiny.gem.items()[targets].detach()
t_ex = torch.full((3,), 5)
x_t_ex = F.normalize(q_sample(tiny.schedule, x0_detached, t_ex,
                              tiny.noise_scale * torch.randn(3, tiny_cfg.d_model)), dim=-1)
tiny.zero_grad()
recon_detached = (x0_detached - tiny.denoise(x_t_ex, t_ex, tiny.guidance(tiny_batch_loss))
                  ).pow(2).sum(-1).mean()
recon_detached.backward()
touched = [name for name, p in tiny.named_parameters()
           if p.grad is not None and p.grad.abs().sum() > 0]
print("parameters reached with x0.detach():", sorted({n.split(".")[0] + "." + n.split(".")[1]
                                                      for n in touched}))
tiny.zero_grad()

# %% [markdown]
# :::{exercise} Attention instead of flattening
# :label: ex-04-3
# Flattening makes the denoiser's first layer grow
# with $K$ and ties each interest to a slot. Replace it by one cross-attention from $x_t$
# (plus the step embedding) over the $K$ interests. How do the input sizes compare at
# $K = 4$ and $K = 32$ with $d = 64$?
# :::
#
# :::{solution} ex-04-3
# :class: dropdown
# The flattened input has $(K + 2)d$ features: 384 at $K = 4$, 2,176 at $K = 32$, and the
# first layer's weights grow with it. A cross-attention reads $K$ keys of size $d$ and
# returns one $d$-vector whatever $K$ is, and it is invariant to the order of the
# interests. `recfunnel.layers.attention.CrossAttention` (chapter 3) does it in one line;
# the hidden cell shows the output shape is the same for both $K$.
# :::

# %% tags=["hide-cell", "solution"]
from recfunnel.layers.attention import CrossAttention  # noqa: E402

cross = CrossAttention(64, n_heads=2)
for K in (4, 32):
    query = torch.randn(8, 1, 64)
    interests_k = torch.randn(8, K, 64)
    print(f"K={K:2d}: flattened input {(K + 2) * 64} features; cross-attention output "
          f"{tuple(cross(query, interests_k).shape)}")

# %% [markdown]
# :::{exercise} Where the extractor should pay
# :label: ex-04-4
# Build histories from the synthetic world in which
# each user alternates between several interests in long sessions, so that the newest $K$
# items show only the current one while the next item may return to another
# (`recfunnel.data.planted.plant_interests`, chapter 2). Compare full DimeRec with the
# raw-items variant there. Which do you expect to win, and why?
# :::
#
# :::{solution} ex-04-4
# :class: dropdown
# The newest $K$ items describe only the current session; ComiRec-SA's interests are
# attention-weighted summaries of the whole window, so they keep the other interests in
# view. When the next item can come from any of them, the extracted guidance should win,
# the more so the longer the sessions. On MovieLens-100K the newest ratings are a strong
# clue to the next film, which is why the raw items did well in the ablation. Run it with
# `recipes.dimerec.fit_contender` and `ablation(cfg, "last_k")`; at the `cpu` sizes of chapter 2's
# planted data it takes a few minutes.
# :::

# %% [markdown]
# :::{exercise} Sampling for diversity, at a price
# :label: ex-04-5
# Serve DimeRec with the whole chain and
# stochastic steps ($\eta = 1$), merge several draws per user, and plot genres in the
# top 50 against Recall@50 as the number of draws grows. Where on that curve would you
# serve, and on which users would you decide it?
# :::
# :::{exercise} Interests that die
# :label: ex-04-6
# Count, on the training targets, how often each of DimeRec's
# $K$ guidance interests wins the guidance loss's argmax, epoch by epoch. Does one stop
# winning, and does a softmax over the interests instead of the hard argmax keep it alive?
# :::

# %% [markdown]
# ## References
#
# ```{footbibliography}
# ```
