"""The diffusion toolkit, DimeRec's modules and losses, and the diversity metrics."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from recfunnel.data.sequences import SeqBatch, next_item_metrics
from recfunnel.layers.diffusion import (
    NoiseSchedule,
    q_sample,
    reverse_step,
    sample,
    sampling_steps,
    sinusoidal_embedding,
)
from recfunnel.metrics import (
    category_coverage,
    intra_list_diversity,
    linear_probe,
    metrics_from_ranks,
    ranking_metrics,
)
from recfunnel.models.dimerec import (
    ComiRecSA,
    DimeRec,
    DimeRecConfig,
    Guidance,
    ablation,
    best_interest,
    choose_sample_steps,
)


def tiny_config(**changes) -> DimeRecConfig:
    base = dict(n_items=40, max_len=8, d_model=16, n_interests=3, diffusion_steps=20,
                sample_steps=5, hidden=32)
    return DimeRecConfig(**{**base, **changes})


def tiny_batch(B: int = 6, L: int = 8, n_items: int = 40, seed: int = 0) -> SeqBatch:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, n_items, (B, L), generator=g)
    seq[0, :3] = 0
    return SeqBatch(torch.arange(B), seq, seq == 0, torch.randint(1, n_items, (B,), generator=g))


@pytest.mark.parametrize("t", [1, 10, 50])
def test_forward_process_matches_its_closed_form(t):
    """Over many noise draws, x_t has mean sqrt(abar_t) x_0 and variance (1 - abar_t) s^2."""
    schedule, s, n = NoiseSchedule.linear(50), 0.25, 40_000
    x0 = torch.linspace(-1, 1, 8, dtype=torch.float64).expand(n, 8)
    noise = s * torch.randn(n, 8, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    x_t = q_sample(schedule, x0, torch.full((n,), t), noise)
    abar = float(torch.cumprod(1 - schedule.betas, 0)[t - 1])  # computed independently
    variance = (1 - abar) * s**2
    standard_error = math.sqrt(variance / n)
    assert torch.allclose(x_t.mean(0), math.sqrt(abar) * x0[0], atol=5 * standard_error)
    # the sample variance of a Gaussian has a relative standard error of sqrt(2 / n)
    assert torch.allclose(x_t.var(0), torch.full((8,), variance, dtype=torch.float64),
                          rtol=5 * math.sqrt(2 / n))


def test_schedules_end_near_pure_noise_and_reject_bad_betas():
    for schedule in (NoiseSchedule.linear(50), NoiseSchedule.linear(1000),
                     NoiseSchedule.cosine(50)):
        abar = schedule.alpha_bar
        assert abar[0] == 1 and (abar[1:] < abar[:-1]).all() and abar[-1] < 1e-3
    with pytest.raises(ValueError, match="beta"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))


def test_ddim_with_eta_one_is_the_ddpm_posterior():
    """One step t -> t - 1 with eta = 1: mean and variance of q(x_{t-1} | x_t, x_0)."""
    schedule, t = NoiseSchedule.linear(30), 12
    abar, beta = schedule.alpha_bar, schedule.betas[t - 1]
    x0, x_t = torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    mean = (abar[t - 1].sqrt() * beta / (1 - abar[t])) * x0 \
        + ((1 - beta).sqrt() * (1 - abar[t - 1]) / (1 - abar[t])) * x_t
    variance = (1 - abar[t - 1]) / (1 - abar[t]) * beta
    z = torch.randn(1, 4, dtype=torch.float64)
    step = reverse_step(schedule, x_t, x0, t, t - 1, eta=1.0, noise=z)
    assert torch.allclose(step, mean + variance.sqrt() * z)


def test_strided_steps_start_at_t_and_end_at_one():
    assert sampling_steps(50, None) == list(range(50, 0, -1))
    steps = sampling_steps(50, 5)
    assert steps[0] == 50 and steps[-1] == 1 and steps == sorted(set(steps), reverse=True)
    assert len(steps) == 5
    with pytest.raises(ValueError, match="steps"):
        sampling_steps(50, 0)


def test_step_embedding_distinguishes_steps():
    codes = sinusoidal_embedding(torch.arange(1, 51), 16)
    assert codes.shape == (50, 16)
    distances = torch.cdist(codes, codes) + torch.eye(50)
    assert distances.min() > 1e-3


def test_the_sampler_is_deterministic_under_a_seed_and_ends_on_the_sphere():
    torch.manual_seed(0)
    model, batch = DimeRec(tiny_config()).eval(), tiny_batch()
    trajectory: list = []
    first = model.generate(batch, seed=7, trajectory=trajectory)
    assert torch.equal(first, model.generate(batch, seed=7))
    assert not torch.allclose(first, model.generate(batch, seed=8))
    assert torch.allclose(first.norm(dim=-1), torch.ones(len(batch)), atol=1e-5)
    assert len(trajectory) == 5
    for _, x_t, x0_hat in trajectory:
        assert torch.allclose(x_t.norm(dim=-1), torch.ones(len(batch)), atol=1e-5)
        assert torch.allclose(x0_hat.norm(dim=-1), torch.ones(len(batch)), atol=1e-5)
    # stochastic sampling (eta = 1) differs between seeds but repeats under one seed
    noisy = model.generate(batch, eta=1.0, seed=3)
    assert torch.equal(noisy, model.generate(batch, eta=1.0, seed=3))


def test_a_perfect_denoiser_is_reproduced_by_the_sampler():
    schedule, target = NoiseSchedule.linear(40), torch.randn(3, 8)
    out = sample(lambda x, t: target, (3, 8), schedule, steps=7)
    assert torch.equal(out, target)


def test_the_guidance_loss_picks_the_interest_that_best_matches_the_target():
    torch.manual_seed(0)
    gem = ComiRecSA(tiny_config())
    items = gem.items().detach()
    target = torch.tensor([5, 9])
    interests = torch.randn(2, 3, 16)
    interests[0, 2] = items[5] * 3  # interest 2 is the target's direction
    interests[1, 0] = items[9] * 3
    interests = torch.nn.functional.normalize(interests, dim=-1).requires_grad_()
    assert best_interest(interests, items[target]).tolist() == [2, 0]
    loss, chosen = gem.guidance_loss(interests, target)
    loss.backward()
    assert chosen.tolist() == [2, 0]
    has_grad = interests.grad.abs().sum(-1) > 0  # only the chosen interest learns
    assert has_grad.tolist() == [[False, False, True], [True, False, False]]


def test_interest_attention_is_a_distribution_over_real_positions():
    torch.manual_seed(0)
    gem, batch = ComiRecSA(tiny_config()), tiny_batch()
    weights = gem.interest_weights(batch.user_seq, batch.is_pad)  # [B, N, K]
    assert torch.allclose(weights.sum(1), torch.ones(len(batch), 3))
    assert (weights[batch.is_pad] == 0).all()
    interests = gem.interests(batch.user_seq, batch.is_pad)
    assert torch.allclose(interests.norm(dim=-1), torch.ones(len(batch), 3), atol=1e-5)


def test_losses_are_finite_and_every_module_learns():
    torch.manual_seed(0)
    model, batch = DimeRec(tiny_config()), tiny_batch()
    loss, logs = model(batch)
    loss.backward()
    assert torch.isfinite(loss) and {"gem", "recon", "ssm", "item_norm"} <= set(logs)
    for name, part in (("gem", model.gem.attention), ("denoiser", model.denoiser)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), name
    # without the guidance loss the GEM still learns, through the denoiser
    model = DimeRec(tiny_config(gem_weight=0.0))
    loss, logs = model(batch)
    loss.backward()
    assert "gem" not in logs
    assert model.gem.attention[0].weight.grad.abs().sum() > 0


def test_raw_sequence_guidance_uses_the_newest_items():
    torch.manual_seed(0)
    model, batch = DimeRec(tiny_config(guidance=Guidance.NEWEST_ITEMS)), tiny_batch()
    expected = torch.nn.functional.normalize(model.gem.item_emb(batch.user_seq[:, -3:]), dim=-1)
    assert torch.allclose(model.guidance(batch), expected)


@pytest.mark.parametrize("loss, direction", [("recon", -1), ("ssm", 1)])
def test_off_the_sphere_the_two_losses_pull_norms_apart(loss, direction):
    """The conflict of Section 3.4: in Euclidean space the reconstruction loss alone shrinks
    the item embeddings, the softmax loss alone grows them."""
    torch.manual_seed(0)
    weights = {"recon": dict(ssm_weight=0.0), "ssm": dict(recon_weight=0.0)}[loss]
    model = DimeRec(tiny_config(sphere=False, temperature=1.0, gem_weight=0.0, **weights))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    norms = []
    for step in range(60):
        value, logs = model(tiny_batch(B=32, seed=step))
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        norms.append(logs["item_norm"])
    assert direction * (norms[-1] - norms[0]) > 0.1 * norms[0]


def test_each_ablation_changes_one_thing():
    cfg = tiny_config()
    for name, field in (("no_sphere", "sphere"), ("no_temperature", "temperature"),
                        ("no_gem_loss", "gem_weight"), ("last_k", "guidance")):
        changed = ablation(cfg, name)
        differ = [f for f in cfg.__dataclass_fields__ if getattr(cfg, f) != getattr(changed, f)]
        assert differ == [field], name
    users, items = torch.randn(3, 8), torch.randn(5, 8)
    euclidean = DimeRec(ablation(cfg, "no_sphere")).space
    torch.testing.assert_close(euclidean.logits(users, items)[:, 1:], (users @ items.T)[:, 1:]
                               / cfg.temperature)  # the temperature stays without the sphere
    with pytest.raises(KeyError, match="no_such"):
        ablation(cfg, "no_such")


def test_serving_uses_the_steps_validation_prefers():
    torch.manual_seed(0)
    model, valid = DimeRec(tiny_config()), tiny_batch(B=16, seed=3)
    by_hand = {}
    for steps in (1, 2, 5, model.cfg.diffusion_steps):
        model.cfg = dataclasses.replace(model.cfg, sample_steps=steps)
        by_hand[steps] = next_item_metrics(model.eval(), valid)["ndcg@10"]
    chosen = choose_sample_steps(model, valid, candidates=(1, 2, 5))
    assert model.cfg.sample_steps == chosen
    assert by_hand[chosen] == max(by_hand.values())
    assert chosen == min(s for s, v in by_hand.items() if v == by_hand[chosen])


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="guidance"):
        tiny_config(guidance="sasrec")
    with pytest.raises(ValueError, match="n_interests"):
        tiny_config(n_interests=20)
    with pytest.raises(ValueError, match="temperature"):
        tiny_config(temperature=0.0)


def test_diversity_metrics_on_hand_built_lists():
    categories = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool)
    lists = torch.tensor([[0, 1], [0, 3], [2, 3]])
    assert category_coverage(lists, categories).tolist() == [1, 3, 2]
    ild = intra_list_diversity(lists, categories.float())
    assert torch.allclose(ild, torch.tensor([0.0, 1.0, 1 - 1 / math.sqrt(2)]))
    with pytest.raises(IndexError):
        category_coverage(torch.tensor([[0, 4]]), categories)
    with pytest.raises(ValueError, match="two items"):
        intra_list_diversity(lists[:, :1], categories.float())


def test_the_linear_probe_reads_separable_labels_and_not_random_ones():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    centres = 4 * torch.randn(4, 6, generator=g)
    features = centres[labels] + torch.randn(400, 6, generator=g)
    assert linear_probe(features, labels) > 0.95
    noise = torch.randn(400, 6, generator=g)
    assert linear_probe(noise, labels) < 0.4  # chance is about 0.25
    per_row = linear_probe(features, labels, reduce=False)  # the same folds, row by row
    assert per_row.shape == (400,) and set(np.unique(per_row)) <= {0.0, 1.0}
    assert per_row.mean() == pytest.approx(linear_probe(features, labels))
    assert per_row.mean() - linear_probe(noise, labels, reduce=False).mean() > 0.5


def test_metrics_from_stored_ranks_equal_the_full_ranking_metrics():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, 80, generator=g)
    targets = torch.randint(0, 80, (300,), generator=g)
    top = scores.topk(20, dim=1).indices
    hit = top == targets[:, None]
    ranks = torch.where(hit.any(1), hit.float().argmax(1) + 1, 0).numpy()
    derived = metrics_from_ranks(ranks, ks=(5, 20))
    full = ranking_metrics(scores, targets, ks=(5, 20), reduce=False)
    for name, values in derived.items():
        assert torch.allclose(torch.as_tensor(values, dtype=torch.float32), full[name])
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks([1, -2], ks=(5,))


def test_a_benchmark_report_becomes_runs_paired_by_user_and_seed():
    from recfunnel.recipes.dimerec import dimerec_runs
    from recfunnel.study import compare

    def row(model, seed, ranks):
        return {"model": model, "seed": seed, "ndcg@10": 0.0, "epochs_run": 3,
                "best_epoch": 2, "train_seconds": 1.0, "rank_top50": ranks}

    report = {"profile": "cpu", "commit": "abc", "rows": [
        row("DimeRec", 0, [1, 1, 0, 2]), row("SASRec", 0, [0, 1, 0, 0]),
        row("DimeRec", 1, [1, 3, 0, 2]), row("SASRec", 1, [2, 1, 0, 0])]}
    runs = dimerec_runs(report, ks=(10,))
    assert runs[0].commit == "abc" and runs[0].per_user["recall@10"].tolist() == [1, 1, 0, 1]
    gap = compare(runs, "DimeRec", "SASRec", "recall@10")
    assert gap.n_seeds == 2 and gap.n_users == 4
    assert gap.mean == pytest.approx((2 / 4 + 1 / 4) / 2)
