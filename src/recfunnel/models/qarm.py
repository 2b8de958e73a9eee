"""QARM: multi-modal item vectors aligned to behaviour and turned into trainable codes.

Luo et al., "QARM: Quantitative Alignment Multi-Modal Recommendation at Kuaishou" (arXiv
2411.11739; bibkey luo2025qarm). The usual cascade feeds a frozen multi-modal embedding to
the recommender; QARM names its two faults, *unmatching* (the embedding was trained for
other tasks) and *unlearning* (the recommender's gradient never reaches it), and answers
in four stages, which this module follows in order:

A. ``models.qarm_pretrain.mine_pairs``: (trigger, target) item pairs from behaviour, the
   trigger chosen by a U2I model's ID embeddings (pair mining and the cascade's frozen
   pre-trained vectors live in ``models.qarm_pretrain``).
B. ``ItemAligner`` (trained by ``recipes.align``): an encoder of the item's content (the course's
   stand-in for the MLLM) trained with an in-batch, symmetric contrastive loss on the
   pairs, so items that behaviour relates end up close (``alignment_loss``).
C. ``build_codes``: the aligned vectors of the item pool become a VQ code (the ids of the
   K nearest pool items) and an RQ code (residual k-means), with ``layers.quantize``; no
   gradient. New (cold) items get both codes from their content alone.
D. ``QARMRanker``: a ranking model that looks the codes up in its own embedding tables,
   trained end to end with the click loss: the candidate's codes, the codes of the user's
   recent clicks, and the sub-sequence of recent clicks whose first RQ level matches the
   candidate's (a code-keyed "hard search"). ``RankerInputs`` switches each input on, so the rows
   of the paper's Table 1 (base, + frozen vector, + VQ, + RQ, + both) are one class.

Chapter 7's experiment (the variant table, stages A and B on one world, one ranker per
variant) is ``recipes.qarm.align_items`` and ``recipes.qarm.rank_variants``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.data.multimodal import MultiModalData, rank_batch
from recfunnel.data.ranking import RankBatch
from recfunnel.layers.features import masked_mean
from recfunnel.layers.quantize import NearestItemCode, ResidualKMeans
from recfunnel.metrics import auc, gauc
from recfunnel.retrieval import ExactIndex

# --------------------------------------------------------------------------- B. alignment


class ItemAligner(nn.Module):
    """content [B, d_in] -> aligned vector [B, d] (unit length): a two-layer MLP standing in
    for the MLLM that QARM fine-tunes (section "item alignment")."""

    def __init__(self, d_in: int, d: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(content), dim=-1)


def alignment_loss(m_trigger: torch.Tensor, m_target: torch.Tensor, trigger_ids: torch.Tensor,
                   target_ids: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric in-batch contrastive loss (InfoNCE) on unit vectors [B, d]:
    -1/2B sum_b [log softmax_b'(s(trig_b, tgt_b') / tau)[b] + the same with roles swapped].

    Another pair's item that *is* this pair's positive (the same item id twice in a batch)
    is not used as a negative."""
    logits = m_trigger @ m_target.T / temperature  # [B, B]
    duplicate = target_ids[None, :] == target_ids[:, None]  # row b, column b' same target
    duplicate |= trigger_ids[None, :] == trigger_ids[:, None]
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(duplicate & ~eye, -torch.inf)
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@torch.no_grad()
def encode_items(aligner: ItemAligner, content: torch.Tensor) -> torch.Tensor:
    """[I, d] aligned vectors of every item (on the CPU), in eval mode."""
    aligner.eval()
    device = next(aligner.parameters()).device
    return torch.cat([aligner(part.to(device)).cpu() for part in content.split(8_192)])


def pair_recall(vectors: torch.Tensor, pairs: np.ndarray, k: int = 10) -> float:
    """Share of (trigger, target) pairs whose target is among the k items most cosine-similar
    to the trigger (the trigger itself left out): item-to-item retrieval quality."""
    if len(pairs) == 0:
        raise ValueError("no pairs to evaluate")
    vectors = torch.as_tensor(vectors).float()
    index = ExactIndex(vectors, metric="cosine")
    pairs_t = torch.as_tensor(pairs, dtype=torch.long)
    hits = 0
    for part in pairs_t.split(4_096):
        itself = part[:, :1] == torch.arange(len(vectors))[None, :]  # [n, I]
        _, top = index.search(vectors[part[:, 0]], k, exclude=itself)
        hits += int((top == part[:, 1:2]).any(1).sum())
    return hits / len(pairs)


# --------------------------------------------------------------------------- C. codes


@dataclass
class ItemCodes:
    """Every item's codes: vq [I, K] ids of pool items (into ``pool``), rq [I, R] ids, and
    the quantisers that made them."""

    vq: torch.Tensor
    rq: torch.Tensor
    pool: torch.Tensor  # [N_pool] item ids of the VQ pool
    nearest: NearestItemCode
    residual: ResidualKMeans

    @property
    def codebook_size(self) -> int:
        return self.residual.codebook_size


def build_codes(vectors: torch.Tensor, pool: np.ndarray, k: int, levels: int,
                codebook_size: int, keep_self: bool = True, iters: int = 25, seed: int = 0
                ) -> ItemCodes:
    """Stage C for all items from their vectors [I, d]. The pool (warm items: those the
    ranker trains on) is both the VQ code book and the data the k-means levels are fitted
    to; every item, pool or not, is then encoded. With ``keep_self`` a pool item's VQ code
    contains its own id (the paper's literal recipe); cold items never do."""
    vectors = torch.as_tensor(vectors).float()
    pool_ids = torch.as_tensor(np.flatnonzero(pool))
    nearest = NearestItemCode(vectors[pool_ids], k)
    position = torch.full((len(vectors),), -1, dtype=torch.long)
    position[pool_ids] = torch.arange(len(pool_ids))
    vq = nearest.encode(vectors, exclude=None if keep_self else position)
    residual = ResidualKMeans(levels, codebook_size, iters=iters, seed=seed).fit(
        vectors[pool_ids])
    return ItemCodes(vq=vq, rq=residual.encode(vectors), pool=pool_ids, nearest=nearest,
                     residual=residual)


# --------------------------------------------------------------------------- D. ranking


@dataclass(frozen=True)
class RankerInputs:
    """Which item inputs ``QARMRanker`` reads besides the ids (the rows of Table 1)."""

    frozen: bool = False  # a fixed item vector, standardised, through a learned Linear
    vq: bool = False  # the VQ code's embeddings
    rq: bool = False  # the RQ levels' embeddings and the matched history


class QARMRanker(nn.Module):
    """A click model in the shape of QARM's stage D (a DLRM-style ranker).

    Every input becomes one [B, e] vector, on the user side or the item side:

    * base: user id, candidate item id (item side), mean of the history's item ids;
    * ``frozen``: a fixed item vector (raw or aligned), standardised per dimension, through
      a learned Linear, for the candidate and averaged over the history (the cascade QARM
      starts from);
    * ``vq``: mean of the candidate's K VQ-code embeddings; the same for each history item,
      averaged;
    * ``rq``: sum of the candidate's R level embeddings (one table per level); the same
      for the history; and the *matched* sub-sequence: the mean over history items whose
      first RQ level equals the candidate's, with log(1 + their count).

    The MLP reads all vectors, the dot product of every user-side with every item-side
    vector, and the match count: logit = MLP([vectors ; dots ; count]).
    """

    def __init__(self, n_users: int, n_items: int, d_emb: int, hidden: Sequence[int],
                 inputs: RankerInputs = RankerInputs(), frozen: torch.Tensor | None = None,
                 codes: ItemCodes | None = None):
        super().__init__()
        self.inputs = inputs
        if inputs.frozen and frozen is None:
            raise ValueError("the frozen input needs the frozen item vectors [I, d]")
        if (inputs.vq or inputs.rq) and codes is None:
            raise ValueError("the vq and rq inputs need the items' codes (build_codes)")
        self.user_emb = nn.Embedding(n_users, d_emb)
        self.item_emb = nn.Embedding(n_items + 1, d_emb)  # row 0: padding, row i + 1: item i
        n_user_side, n_item_side = 2, 1
        if self.inputs.frozen:
            vectors = torch.as_tensor(frozen).float()
            vectors = (vectors - vectors.mean(0)) / vectors.std(0).clamp(min=1e-8)  # z-scores
            padded = torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])  # [I + 1, d]
            self.register_buffer("frozen", padded)
            self.frozen_proj = nn.Linear(vectors.shape[1], d_emb)
            n_user_side, n_item_side = n_user_side + 1, n_item_side + 1
        if self.inputs.vq:  # pool ids; the padding item's codes are one more id
            self.register_buffer("vq_codes", _with_pad_row(codes.vq, len(codes.pool)))
            self.vq_emb = nn.Embedding(len(codes.pool) + 1, d_emb)
            n_user_side, n_item_side = n_user_side + 1, n_item_side + 1
        if self.inputs.rq:
            self.register_buffer("rq_codes", _with_pad_row(codes.rq, codes.codebook_size))
            self.rq_emb = nn.ModuleList(nn.Embedding(codes.codebook_size + 1, d_emb)
                                        for _ in range(codes.rq.shape[1]))
            n_user_side, n_item_side = n_user_side + 2, n_item_side + 1
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.05)
        n_vectors = n_user_side + n_item_side
        d_in = n_vectors * d_emb + n_user_side * n_item_side + self.inputs.rq
        layers, width = [], d_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def _rq_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """item ids + 1 [...] -> [..., e]: the sum of the R level embeddings of their RQ codes."""
        codes = self.rq_codes[ids]  # [..., R]
        return sum(table(codes[..., level]) for level, table in enumerate(self.rq_emb))

    def matched(self, history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, L] True where a history item's first RQ level equals the candidate's (the
        code-keyed hard search); never at padding (id 0)."""
        return (history != 0) & (self.rq_codes[history][..., 0] == self.rq_codes[items][:, None, 0])

    def forward(self, batch: RankBatch) -> torch.Tensor:
        """batch.features [B, 2] (user, item + 1), batch.history [B, L] (0 = padding)
        -> logits [B]."""
        users, items, history = batch.features[:, 0], batch.features[:, 1], batch.history
        valid = history != 0  # [B, L]
        user_side = [self.user_emb(users), masked_mean(self.item_emb(history), valid)]
        item_side = [self.item_emb(items)]
        extra = []
        if self.inputs.frozen:
            item_side.append(self.frozen_proj(self.frozen[items]))
            user_side.append(masked_mean(self.frozen_proj(self.frozen[history]), valid))
        if self.inputs.vq:
            item_side.append(self.vq_emb(self.vq_codes[items]).mean(1))  # [B, K, e] -> [B, e]
            user_side.append(masked_mean(self.vq_emb(self.vq_codes[history]).mean(2), valid))
        if self.inputs.rq:
            history_codes = self._rq_vectors(history)  # [B, L, e]
            item_side.append(self._rq_vectors(items))
            user_side.append(masked_mean(history_codes, valid))
            matched = self.matched(history, items)
            user_side.append(masked_mean(history_codes, matched))
            extra.append(torch.log1p(matched.sum(1, keepdim=True).float()))
        u = torch.stack(user_side, dim=1)  # [B, P_u, e]
        i = torch.stack(item_side, dim=1)  # [B, P_i, e]
        dots = (u @ i.transpose(1, 2)).flatten(1)  # [B, P_u * P_i]
        return self.mlp(torch.cat([u.flatten(1), i.flatten(1), dots, *extra], dim=1)).squeeze(1)

    def loss(self, batch: RankBatch) -> torch.Tensor:
        """The click BCE on ``batch.labels[:, 0]``."""
        if batch.labels is None:
            raise ValueError("the loss needs a batch with labels")
        return F.binary_cross_entropy_with_logits(self(batch), batch.labels[:, 0])


def _with_pad_row(codes: torch.Tensor, pad_id: int) -> torch.Tensor:
    """[I, n] codes -> [I + 1, n], row 0 (the padding item) all ``pad_id``."""
    return torch.cat([torch.full((1, codes.shape[1]), pad_id, dtype=codes.dtype), codes])


# --------------------------------------------------------------------------- train, evaluate


@torch.no_grad()
def predict(model: QARMRanker, data: MultiModalData, rows: np.ndarray,
            batch_size: int = 8_192) -> np.ndarray:
    """Click probabilities [n] of the impressions in ``rows``, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    batch = rank_batch(data, rows)
    out = [torch.sigmoid(model(batch[s:s + batch_size].to(device))).cpu()
           for s in range(0, len(batch), batch_size)]
    model.train()
    return torch.cat(out).numpy() if out else np.zeros(0)


def item_groups(data: MultiModalData, n_buckets: int = 3) -> np.ndarray:
    """[I] group of every item: 0 = cold, then 1..n_buckets warm popularity buckets of equal
    item count by training impressions (1 = the long tail, n_buckets = the head)."""
    popularity = data.train_popularity()
    groups = np.zeros(data.n_items, dtype=np.int64)
    warm = np.flatnonzero(~data.is_cold)
    ranked = warm[np.argsort(popularity[warm], kind="stable")]
    for bucket, members in enumerate(np.array_split(ranked, n_buckets), start=1):
        groups[members] = bucket
    return groups


def evaluate_ranker(model: QARMRanker, data: MultiModalData, rows: np.ndarray,
                    group_names: Sequence[str] = ("cold", "tail", "torso", "head")
                    ) -> dict[str, float]:
    """AUC and GAUC on ``rows``, and AUC on the rows of each item group (``item_groups``)."""
    probs, labels = predict(model, data, rows), data.labels[rows]
    scores = {"auc": auc(labels, probs), "gauc": gauc(labels, probs, data.users[rows])}
    groups = item_groups(data, len(group_names) - 1)[data.items[rows]]
    for g, name in enumerate(group_names):
        members = groups == g
        scores[f"auc_{name}"] = (auc(labels[members], probs[members])
                                 if 0 < labels[members].sum() < members.sum() else float("nan"))
    return scores
