"""DimeRec: generative retrieval by diffusion guided by multi-interest extraction (Li et al.
2025, bibkey li2025dimerec, arXiv 2408.12153).

Two modules (Section 3 of the paper):

* the Guidance Extraction Module (GEM) condenses the history into K interest vectors; the
  main model uses ComiRec-SA's self-attentive extractor (``ComiRecSA``, Cen et al. 2020,
  bibkey cen2020comirec), which alone is also the ComiRec baseline;
* the Diffusion Aggregation Module (DAM) generates the next interest: a denoiser
  f(x_t, t, g) predicts the clean target-item embedding x_0 from a noised copy x_t and the
  guidance g; at serving time it walks back from noise (``recfunnel.layers.diffusion``).

Every vector lives on the unit sphere, so the reconstruction loss (L2) and the sampled
softmax (inner product) agree: on the sphere ||a - b||^2 = 2 - 2 a.b. The objective is
L = L_gem + lambda L_recon + mu L_ssm. What the paper leaves open is marked [proposed]
and explained in chapter 4.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.data.sequences import (
    SeqBatch,
    next_item_metrics,
)
from recfunnel.layers.diffusion import NoiseSchedule, StepEmbedding, q_sample, sample


class Guidance(enum.Enum):
    """What conditions the denoiser: the extractor's K interests (DimeRec's GEM, ComiRec-SA
    style) or, as the ablation, the raw newest K items (no parameters)."""

    EXTRACTED = "comirec"
    NEWEST_ITEMS = "last_k"


@dataclass(frozen=True)
class DimeRecConfig:
    n_items: int  # V, including the padding id 0
    max_len: int = 50  # N: history length
    d_model: int = 64  # d [proposed]: DreamRec's value
    n_interests: int = 4  # K [proposed]
    diffusion_steps: int = 50  # T [proposed]
    # strided deterministic steps at serving; None: all T. [proposed] after training,
    # choose_sample_steps sets it to the count that validation prefers
    sample_steps: int | None = 2
    # linear schedule [proposed]: None = DDPM's 1e-4 -> 0.02 scaled by 1000 / T
    beta_start: float | None = None
    beta_end: float | None = None
    temperature: float = 0.1  # tau of every softmax, logits u.e / tau [proposed]
    gem_weight: float = 1.0  # 0: the ablation without the guidance loss
    recon_weight: float = 1.0  # lambda [proposed]
    ssm_weight: float = 1.0  # mu [proposed]
    sphere: bool = True  # False: the Euclidean ablation (no projection; tau is kept)
    guidance: Guidance = Guidance.EXTRACTED
    hidden: int = 256  # width of the denoiser MLP (4d)

    def __post_init__(self) -> None:
        if not isinstance(self.guidance, Guidance):
            raise ValueError(f"guidance must be a Guidance ({', '.join(g.name for g in Guidance)}"
                             f"), got {self.guidance!r}")
        if self.n_interests < 1 or self.n_interests > self.max_len:
            raise ValueError(f"n_interests must lie in [1, max_len={self.max_len}], "
                             f"got {self.n_interests}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if min(self.gem_weight, self.recon_weight, self.ssm_weight) < 0:
            raise ValueError("loss weights must be >= 0")


class SphereSpace:
    """Where scores are computed: on the unit sphere, or (the ablation) in plain Euclidean
    space; logits u.e / tau in both, so that the two ablations "no sphere" (projection off)
    and "no temperature" (tau = 1) each change one thing."""

    def __init__(self, sphere: bool, temperature: float):
        self.sphere, self.temperature = sphere, temperature

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Pi(x) = x / ||x|| on the sphere; the identity otherwise."""
        return F.normalize(x, dim=-1) if self.sphere else x

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [..., d], items [V, d] (already projected) -> [..., V]; padding never wins."""
        logits = users @ items.T / self.temperature
        return logits.index_fill(-1, torch.tensor([0], device=logits.device), float("-inf"))


def best_interest(interests: torch.Tensor, target_emb: torch.Tensor) -> torch.Tensor:
    """argmax_j g_j . e_a: which of the K interests [B, K, d] best matches each target
    [B, d] (ComiRec's hard selection, DimeRec Section 3.2) -> [B]."""
    return torch.einsum("bkd,bd->bk", interests, target_emb).argmax(dim=1)


class ComiRecSA(nn.Module):
    """ComiRec-SA's self-attentive multi-interest extractor (the GEM of Section 3.2):
    A = softmax_over_positions(W_2 tanh(W_1 (H + P))) [B, N, K], g = A^T H [B, K, d].

    [proposed] P, a learned position embedding, enters only the attention logits, as in
    ComiRec-SA. Alone it is the ComiRec baseline: trained with ``guidance_loss`` and served
    by each item's best score over the K interests.
    """

    def __init__(self, cfg: DimeRecConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.space = SphereSpace(cfg.sphere, cfg.temperature)
        self.item_emb = nn.Embedding(cfg.n_items, d, padding_idx=0)  # shared with the DAM
        self.pos_emb = nn.Parameter(0.02 * torch.randn(cfg.max_len, d))  # P
        self.attention = nn.Sequential(nn.Linear(d, 4 * d), nn.Tanh(),
                                       nn.Linear(4 * d, cfg.n_interests))  # MLP_[4d, K]
        nn.init.normal_(self.item_emb.weight, std=0.1)

    def items(self) -> torch.Tensor:
        """[V, d] the item table that serving searches, projected."""
        return self.space.project(self.item_emb.weight)

    def interest_weights(self, user_seq: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """A [B, N, K]: each interest's attention over the positions (padding gets 0)."""
        H = self.item_emb(user_seq)  # [B, N, d]
        logits = self.attention(H + self.pos_emb[-user_seq.shape[1]:])  # [B, N, K]
        return logits.masked_fill(is_pad[..., None], float("-inf")).softmax(dim=1)

    def interests(self, user_seq: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """g = A^T H, projected: [B, K, d]."""
        H = self.item_emb(user_seq)  # [B, N, d]
        A = self.interest_weights(user_seq, is_pad)  # [B, N, K]
        return self.space.project(A.transpose(1, 2) @ H)

    def guidance_loss(self, interests: torch.Tensor, target_ids: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_gem: softmax over all items [proposed: the paper samples negatives] of the
        interest that best matches the target -> (loss, chosen interest [B])."""
        items = self.items()
        chosen = best_interest(interests.detach(), items[target_ids].detach())
        g_u = interests[torch.arange(len(chosen), device=chosen.device), chosen]  # [B, d]
        return F.cross_entropy(self.space.logits(g_u, items), target_ids), chosen

    def item_vectors(self) -> torch.Tensor:
        """[V, d] the item table an index holds (row 0 is padding)."""
        return self.items()

    def query_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """[B, K, d] the K interests of each user's newest max_len items."""
        batch = batch.newest(self.cfg.max_len)
        return self.interests(batch.user_seq, batch.is_pad)

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, V]: each item's best score over the K interests."""
        return self.space.logits(self.query_vectors(batch), self.items()).amax(dim=1)

    def forward(self, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, float]]:
        g = self.interests(batch.user_seq, batch.is_pad)
        loss, chosen = self.guidance_loss(g, batch.target_ids)
        return loss, {"gem": loss.item(), "item_norm": item_norm(self.item_emb)}


def item_norm(item_emb: nn.Embedding) -> float:
    """Mean L2 norm of the raw item embeddings (padding row excluded), the quantity the
    reconstruction and softmax losses pull in opposite directions off the sphere."""
    return item_emb.weight[1:].detach().norm(dim=-1).mean().item()


class Denoiser(nn.Module):
    """f_theta(x_t, t, g) = MLP([x_t, emb(t), flatten(g)]) -> x0_hat (Section 3.3).

    [proposed] The paper says "a simple MLP" that predicts x_0; how the K x d guidance
    enters it is not stated. Here it is flattened and concatenated:
    Linear(d (K + 2), hidden) -> SiLU -> Linear(hidden, d).
    """

    def __init__(self, cfg: DimeRecConfig):
        super().__init__()
        d, K = cfg.d_model, cfg.n_interests
        self.step_emb = StepEmbedding(d)
        self.mlp = nn.Sequential(nn.Linear(d * (K + 2), cfg.hidden), nn.SiLU(),
                                 nn.Linear(cfg.hidden, d))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, guidance: torch.Tensor
                ) -> torch.Tensor:
        """x_t [B, d], t [B], guidance [B, K, d] -> x0_hat [B, d] (not yet projected)."""
        return self.mlp(torch.cat([x_t, self.step_emb(t), guidance.flatten(1)], dim=-1))


class DimeRec(nn.Module):
    """GEM -> guidance g [B, K, d]; DAM: noise the target's embedding, denoise it given g.

    Paper -> code: GEM_phi -> self.gem (or the newest K item embeddings when
    ``Guidance.NEWEST_ITEMS``), f_theta -> self.denoiser, Pi -> self.space.project,
    L_gem / L_recon / L_ssm -> the three terms of forward(), the reverse chain ->
    generate(). The forward noise has per-coordinate variance 1/d [proposed], so a noised
    unit vector keeps an expected squared norm of 1 and the projection is a small correction.
    """

    def __init__(self, cfg: DimeRecConfig):
        super().__init__()
        self.cfg = cfg
        self.gem = ComiRecSA(cfg)
        self.denoiser = Denoiser(cfg)
        self.space = self.gem.space
        self.schedule = NoiseSchedule.linear(cfg.diffusion_steps, cfg.beta_start, cfg.beta_end)
        self.noise_scale = cfg.d_model ** -0.5

    def guidance(self, batch: SeqBatch) -> torch.Tensor:
        """g [B, K, d] from the newest ``max_len`` items."""
        batch = batch.newest(self.cfg.max_len)
        if self.cfg.guidance is Guidance.NEWEST_ITEMS:  # rule-based: the newest K items
            return self.space.project(self.gem.item_emb(batch.user_seq[:, -self.cfg.n_interests:]))
        return self.gem.interests(batch.user_seq, batch.is_pad)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x0_hat = Pi(f_theta(x_t, t, g)) [B, d]."""
        return self.space.project(self.denoiser(x_t, t, g))

    def generate(self, batch: SeqBatch, steps: int | None = -1, eta: float = 0.0,
                 seed: int = 0, trajectory: list | None = None) -> torch.Tensor:
        """The generated next interest [B, d]: from x_T = Pi(noise) back to x0_hat with
        ``steps`` strided steps (-1: the config's ``sample_steps``; None: all T).
        Deterministic for eta = 0 under ``seed``; eta = 1 draws a fresh sample per seed."""
        g = self.guidance(batch)
        steps = self.cfg.sample_steps if steps == -1 else steps
        generator = torch.Generator(device=g.device).manual_seed(seed)
        return sample(lambda x, t: self.denoise(x, t, g), (len(g), self.cfg.d_model),
                      self.schedule, steps=steps, eta=eta, noise_scale=self.noise_scale,
                      project=self.space.project, generator=generator, device=g.device,
                      trajectory=trajectory)

    def item_vectors(self) -> torch.Tensor:
        """[V, d] the item table an index holds (row 0 is padding): the extractor's."""
        return self.gem.items()

    def query_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """[B, d] the generated next interest (``generate`` with the served steps)."""
        return self.generate(batch)

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, V]: the generated vector's score for every item (one ANN query per user)."""
        return self.space.logits(self.query_vectors(batch), self.item_vectors())

    def forward(self, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """L = w_gem L_gem + lambda L_recon + mu L_ssm (Section 3.5), one noised step per
        example."""
        cfg = self.cfg
        g = self.guidance(batch)  # [B, K, d]
        items = self.gem.items()  # [V, d], projected
        x0 = items[batch.target_ids]  # [B, d]: e_a on the sphere
        B = len(x0)
        t = torch.randint(1, cfg.diffusion_steps + 1, (B,), device=x0.device)
        noise = self.noise_scale * torch.randn_like(x0)
        x_t = self.space.project(q_sample(self.schedule, x0, t, noise))
        x0_hat = self.denoise(x_t, t, g)
        recon = (x0 - x0_hat).pow(2).sum(-1).mean()
        ssm = F.cross_entropy(self.space.logits(x0_hat, items), batch.target_ids)
        loss = cfg.recon_weight * recon + cfg.ssm_weight * ssm
        logs = {"recon": recon.item(), "ssm": ssm.item(), "item_norm": item_norm(self.gem.item_emb)}
        if cfg.gem_weight > 0:
            gem, _ = self.gem.guidance_loss(g, batch.target_ids)
            loss = loss + cfg.gem_weight * gem
            logs["gem"] = gem.item()
        return loss, logs


@torch.no_grad()
def choose_sample_steps(model: DimeRec, valid: SeqBatch,
                        candidates: tuple[int, ...] = (1, 2, 5, 10)) -> int:
    """Serve with the number of strided reverse steps (among ``candidates`` and all T) that
    gives the best validation NDCG@10, ties to the fewer steps; sets ``cfg.sample_steps``.
    The paper reports that accuracy saturates after a few steps (Section 3.4) but not how
    many it serves with [proposed]."""
    model.eval()
    counts = sorted({c for c in candidates if c <= model.cfg.diffusion_steps}
                    | {model.cfg.diffusion_steps})
    scores = {}
    for steps in counts:
        model.cfg = replace(model.cfg, sample_steps=steps)
        scores[steps] = next_item_metrics(model, valid)["ndcg@10"]
    best = max(counts, key=lambda steps: (scores[steps], -steps))
    model.cfg = replace(model.cfg, sample_steps=best)
    return best


def ablation(cfg: DimeRecConfig, name: str) -> DimeRecConfig:
    """The chapter's variants by name: "full", "no_gem_loss", "no_sphere" (Euclidean, the
    temperature kept), "no_temperature" (on the sphere, tau = 1), "last_k"."""
    variants = {"full": {}, "no_gem_loss": {"gem_weight": 0.0}, "no_sphere": {"sphere": False},
                "no_temperature": {"temperature": 1.0},
                "last_k": {"guidance": Guidance.NEWEST_ITEMS}}
    if name not in variants:
        raise KeyError(f"unknown variant {name!r}; choose one of {sorted(variants)}")
    return replace(cfg, **variants[name])


@torch.no_grad()
def interest_selection(model: ComiRecSA, batch: SeqBatch) -> np.ndarray:
    """[K] share of ``batch``'s targets that each interest wins (a dead interest shows 0)."""
    model.eval()
    batch = batch.to(next(model.parameters()).device)
    g = model.interests(batch.user_seq, batch.is_pad)
    chosen = best_interest(g, model.items()[batch.target_ids])
    return np.bincount(chosen.cpu().numpy(), minlength=g.shape[1]) / len(chosen)
