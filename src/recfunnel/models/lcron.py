"""LCRON: Learning Cascade Ranking as One Network (Kuaishou, ICML 2025), and the losses it
is compared with, on the two-stage task of ``data.cascade``.

A cascade succeeds on a request when a ground-truth item survives both stages: retrieval
keeps q1 = 30 of the 40 candidates, ranking keeps q2 = 20 of those. LCRON writes each stage's
chance of selecting an item with NeuralSort (``layers.sorting``) and trains

    L = L_e2e + 1 / (2 w_1^2) L_single(ranking) + 1 / (2 w_2^2) L_single(retrieval)
        + log(w_1 w_2)

* L_e2e, the end-to-end loss: for each ground-truth item -log(P_ret(i) P_rank(i)), the
  survival probability through the cascade (its lower bound, the paper's Eq. for the
  product of selections); for the other items -log(1 - P_ret(i) P_rank(i));
* L_single, per stage: the same cross-entropy of that stage's own selection, which tightens
  the bound;
* w_1, w_2: learned weights (uncertainty weighting, Kendall et al. 2018).

As in the authors' released code, every relaxed selection here is "among the top 10" (the
number of ground-truth items), although the cascade keeps 30 and 20 [the paper's text leaves
it to the code], and tau = 50. One difference, measured rather than assumed: the released
code divides each item's top-rows mass by its column sum treated as a constant; here the
division stays in the graph (``layers.sorting.top_m_probability``), because with the
constant the gradient is not the loss's gradient: training on free scores drifts away from
the optimum (``tests/test_capstone.py``), and the course's two-tower and DIN collapse with it
on chapter 11's world, although the authors' own models train well with it there
(``benchmarks/results/peer_lcron.json``). ``lcron_detached`` keeps the released form.

The comparisons: ``bce`` (each stage its own binary cross-entropy: retrieval ground truth
against all 39 others, ranking against ``rank_neg`` only), ``fs_lambdaloss`` (each stage a
LambdaLoss on the full-stage graded labels, FS-LTR), ``arf_v2`` (each stage its own
NeuralSort losses: a global permutation loss plus a relaxed top-m selection, m = 30 and 20).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.data.cascade import PER_GROUP, CascadeBatch
from recfunnel.layers.sorting import neural_sort, selection_loss, top_m_probability
from recfunnel.models.cascade import DIN, CascadeConfig, TwoTower

RETRIEVAL_KEEP, RANKING_KEEP, GROUND_TRUTH = 30, 20, 10
LOSSES = ("bce", "fs_lambdaloss", "arf_v2", "lcron", "lcron_no_e2e", "lcron_no_single",
          "lcron_detached")
LCRON_TAU = 50.0  # the released code's temperature for LCRON
ARF_TAU = 200.0  # and for ARF


def bce_losses(batch: CascadeBatch, retrieval: torch.Tensor, ranking: torch.Tensor
               ) -> torch.Tensor:
    """Retrieval: ground truth against the 39 others; ranking: against ``rank_neg`` only
    (the first two groups), each stage's BCE averaged over its slots."""
    target = batch.is_target.float()
    ret = F.binary_cross_entropy_with_logits(retrieval, target, weight=batch.mask)
    two = 2 * PER_GROUP
    rank = F.binary_cross_entropy_with_logits(ranking[:, :two], target[:, :two],
                                              weight=batch.mask[:, :two])
    return ret + rank


def lambda_loss(gain: torch.Tensor, logits: torch.Tensor, top_n: int = 30,
                smooth: float = 0.8) -> torch.Tensor:
    """LambdaLoss (Wang et al., CIKM 2018) with the NDCG weights of FS-LTR's code: each pair
    (i, j) with gain_i > gain_j pays its logistic loss on s_i - s_j, weighted by
    |gain_i - gain_j| / IDCG and by how much swapping them changes the discount
    (a ``smooth`` mix of LambdaLoss's NDCG-cost and its rank-difference terms, top ``top_n``).
    gain, logits [B, n] -> scalar."""
    def discount(rank: torch.Tensor) -> torch.Tensor:
        return 1.0 / torch.log(rank + 1)

    ranks = logits.argsort(1, descending=True).argsort(1).float() + 1  # [B, n], 1 = best
    ideal = gain.sort(1, descending=True).values
    positions = torch.arange(1, gain.shape[1] + 1, device=gain.device).float()
    idcg = (ideal * discount(positions)).sum(1, keepdim=True)
    scaled = torch.where(idcg > 0, gain / idcg.clamp(min=1e-12), torch.zeros_like(gain))
    pair_gain = (scaled.unsqueeze(2) - scaled.unsqueeze(1)).abs()
    rank_gap = (ranks.unsqueeze(2) - ranks.unsqueeze(1)).abs()
    near_top = (ranks.unsqueeze(2) <= top_n) | (ranks.unsqueeze(1) <= top_n)
    u = torch.where((rank_gap > 0) & near_top,
                    (discount(rank_gap) - discount(rank_gap + 1)).abs(), torch.zeros_like(rank_gap))
    top_discount = torch.where(ranks <= top_n, discount(ranks), torch.zeros_like(ranks))
    v = (top_discount.unsqueeze(2) - top_discount.unsqueeze(1)).abs()
    weight = (pair_gain * ((1 - smooth) * u + smooth * v)).detach()
    pair_logits = logits.unsqueeze(2) - logits.unsqueeze(1)
    pair_labels = (gain.unsqueeze(2) > gain.unsqueeze(1)).float()
    pairs = F.binary_cross_entropy_with_logits(pair_logits, pair_labels, reduction="none")
    return (pairs * weight).sum((1, 2)).mean()


def label_permutation(gain: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, n, n] the permutation that sorts the graded labels, with ties spread: row r marks
    every real item whose label equals the r-th largest label (so any order within a tied
    group is right), as the released code's near-zero-temperature NeuralSort of the labels
    thresholded at 0.001 does."""
    labels = gain.masked_fill(mask == 0, float("-inf"))
    ordered = labels.sort(1, descending=True).values  # [B, n]
    return ((ordered.unsqueeze(2) == labels.unsqueeze(1)) & (mask.unsqueeze(1) > 0)).float()


def permutation_loss(permutation: torch.Tensor, gain: torch.Tensor, mask: torch.Tensor
                     ) -> torch.Tensor:
    """ARF's global loss: the cross-entropy of each relaxed row against the label's sorting
    permutation, over real candidates."""
    labels = label_permutation(gain, mask)
    pair = mask.unsqueeze(1) * mask.unsqueeze(2)
    return -(torch.log(permutation * pair + 1e-6) * labels * pair).mean((1, 2)).mean()


class LossWeights(nn.Module):
    """Learned weights w_k of uncertainty weighting: sum_k L_k / (2 w_k^2) + log prod w_k."""

    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n))

    def forward(self, losses: list[torch.Tensor]) -> torch.Tensor:
        weighted = sum(loss / (2 * w ** 2) for loss, w in zip(losses, self.w, strict=True))
        return weighted + torch.log(self.w.abs()).sum()


class Cascade(nn.Module):
    """A two-tower retrieval stage and a DIN ranking stage trained together by ``loss``
    (one of ``LOSSES``). ``scores(batch)`` -> (retrieval logits, ranking logits) [B, C]."""

    def __init__(self, cfg: CascadeConfig, loss: str):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss_name = loss
        self.retrieval, self.ranking = TwoTower(cfg), DIN(cfg)
        self.weights = LossWeights(2) if loss.startswith(("lcron", "arf")) else None
        if loss == "arf_v2":  # ARF weights each stage's global loss (one weight per stage)
            self.weights = nn.ModuleList([LossWeights(1), LossWeights(1)])

    def scores(self, batch: CascadeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.retrieval(batch), self.ranking(batch)

    def forward(self, batch: CascadeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        retrieval, ranking = self.scores(batch)
        if self.loss_name == "bce":
            loss = bce_losses(batch, retrieval, ranking)
        elif self.loss_name == "fs_lambdaloss":
            loss = lambda_loss(batch.gain, retrieval) + lambda_loss(batch.gain, ranking)
        elif self.loss_name == "arf_v2":
            loss = sum(self._arf_stage(batch, logits, keep, weights) for logits, keep, weights
                       in ((retrieval, RETRIEVAL_KEEP, self.weights[0]),
                           (ranking, RANKING_KEEP, self.weights[1])))
        else:
            loss = self._lcron(batch, retrieval, ranking)
        return loss, {"loss": float(loss.detach())}

    @staticmethod
    def _arf_stage(batch: CascadeBatch, logits: torch.Tensor, keep: int,
                   weights: LossWeights) -> torch.Tensor:
        """ARF-v2 for one stage: w-weighted global permutation loss + the relaxed top-``keep``
        selection of the ground truth."""
        permutation = neural_sort(logits, ARF_TAU)
        selected = top_m_probability(permutation, keep, batch.mask)
        relax = selection_loss(selected, batch.is_target, _enough(batch.mask, keep))
        glob = permutation_loss(permutation, batch.gain, batch.mask)
        return weights([glob]) + relax

    def _lcron(self, batch: CascadeBatch, retrieval: torch.Tensor, ranking: torch.Tensor
               ) -> torch.Tensor:
        detach = self.loss_name == "lcron_detached"  # the released code's normaliser
        p_ret = top_m_probability(neural_sort(retrieval, LCRON_TAU), GROUND_TRUTH, batch.mask,
                                  detach)
        p_rank = top_m_probability(neural_sort(ranking, LCRON_TAU), GROUND_TRUTH, batch.mask,
                                   detach)
        enough = _enough(batch.mask, GROUND_TRUTH)
        single = [selection_loss(p_rank, batch.is_target, enough),
                  selection_loss(p_ret, batch.is_target, enough)]
        joint = selection_loss(p_ret * p_rank, batch.is_target, batch.mask)
        if self.loss_name == "lcron_no_single":
            return joint
        if self.loss_name == "lcron_no_e2e":
            return self.weights(single)
        return joint + self.weights(single)


def _enough(mask: torch.Tensor, keep: int) -> torch.Tensor:
    """The mask with the requests that have no more than ``keep`` candidates removed: a
    stage that keeps everything has nothing to learn from its selection loss."""
    return mask * (mask.sum(1, keepdim=True) > keep)


def joint_recall(retrieval: torch.Tensor, ranking: torch.Tensor, gain: torch.Tensor,
                 mask: torch.Tensor, keep: tuple[int, int] = (RETRIEVAL_KEEP, RANKING_KEEP),
                 ground_truth: int = GROUND_TRUTH) -> torch.Tensor:
    """Recall@10@20 of the cascade per request [B]: retrieval keeps its ``keep[0]`` best real
    candidates, ranking the ``keep[1]`` best of those; the ground truth is the
    ``ground_truth`` highest graded labels; recall = |kept ∩ truth| / ground_truth."""
    real = mask > 0
    neg_inf = torch.finfo(retrieval.dtype).min
    kept_ret = retrieval.masked_fill(~real, neg_inf).topk(keep[0], dim=1).indices
    in_ret = torch.zeros_like(real).scatter(1, kept_ret, True) & real
    kept = ranking.masked_fill(~in_ret, neg_inf).topk(keep[1], dim=1).indices
    final = torch.zeros_like(real).scatter(1, kept, True) & in_ret
    truth_idx = (gain * mask).topk(ground_truth, dim=1).indices
    truth = torch.zeros_like(real).scatter(1, truth_idx, True) & real
    return (final & truth).sum(1).float() / ground_truth
