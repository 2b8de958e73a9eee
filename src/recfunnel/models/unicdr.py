"""UniCDR (Cao et al., WSDM 2023) and the course's reading of UniCDR+ (Cao et al., 2024).

UniCDR (card section 3.1, read off the authors' code): in domain d, user u is the sum of

* a **domain-specific** vector, ``u_sp = Agg_d(e_sp[d, u], E_d[context])``: the user's own
  ID embedding in d mixed with an aggregate of u's items in d (a random 90 % of them and at
  most ``maxlen``: *interaction masking*), and
* a **domain-shared** vector, ``u_sh = Agg_sh(e_sh[u], [E_d'[global_d']]_d')``: a shared ID
  embedding mixed with an aggregate of u's items in the *other* domains, the own domain's
  slot left empty (*domain masking*), so the shared branch must predict d from elsewhere;

with ``Agg(e, S) = lambda_a e + (1 - lambda_a) W_agg Pool(S)``. Items are scored by the dot
product ``(u_sp + u_sh) . i_d``. A bilinear critic per domain tells (u_sp, u_sh) of the same
user from a shuffled pair (the mutual-information term). When domains share items instead
of users, ``u_sh`` aggregates the user's own items through a shared item table.

UniCDR+ "extends it in five aspects" (card section 3.2); no source details them, so each
is the course's design, behind a flag of ``UniCDRConfig``:

1. ``features``: item side features added to the item ID embedding;
2. ``item_hops``: items smoothed over a co-occurrence item graph, LightGCN-style;
3. ``aggregator="sequential"``: a GRU over the time-ordered context, next to mean,
   user-attention and item-similarity pooling;
4. ``critic="soft"``: an InfoNCE over the batch between u_sp and u_sh;
5. ``head``: an MMoE head predicting several behaviours (click, like) of a user-item pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from recfunnel import checks
from recfunnel.layers.graph import info_nce, propagate
from recfunnel.layers.moe import ExpertBank, Gate, mix

AGGREGATORS = ("mean", "user_attention", "item_similarity", "sequential")
CRITICS = ("hard", "soft", "none")
HEADS = ("none", "towers", "mmoe")


@dataclass(frozen=True)
class UniCDRConfig:
    """UniCDR's hyper-parameters (official defaults in the card's section 5, except the width)
    and the switches of the five extensions; ``shared=False`` is the specific-only model."""

    dim: int = 32  # h (official 128)
    aggregator: str = "mean"
    lambda_a: float = 0.5  # the ID embedding's share in Agg
    dropout: float = 0.3
    maxlen: int = 10  # m: context items per domain in training
    test_maxlen: int = 50  # the most recent items per domain at evaluation
    mask_rate: float = 0.1  # interaction masking
    negatives: int = 10  # sampled per positive in training
    shared: bool = True
    critic: str = "hard"  # hard: UniCDR's bilinear critic; soft: InfoNCE (extension 4)
    lambda_loss: float = 0.4  # rec vs critic: lambda * L_rec + (1 - lambda) * L_critic
    temperature: float = 0.2  # the soft critic's
    features: bool = False  # extension 1
    item_hops: int = 0  # extension 2: hops over the item graph
    graph_k: int = 20  # links kept per item in the item graph
    head: str = "none"  # extension 5: "towers" (one MLP per behaviour) or "mmoe"
    experts: int = 4
    head_hidden: int = 32
    head_weight: float = 1.0  # the behaviours' BCE in the total loss
    zero_logit_softmax: bool = False  # the official masked softmax (padding adds e^0 = 1)
    target_in_context: bool = False  # the official sampler's bug: the positive may stay

    def __post_init__(self) -> None:
        checks.positive_int("dim", self.dim)
        checks.one_of("aggregator", self.aggregator, AGGREGATORS)
        checks.one_of("critic", self.critic, CRITICS)
        checks.one_of("head", self.head, HEADS)
        checks.real("lambda_a", self.lambda_a, 0.0, 1.0)
        checks.real("lambda_loss", self.lambda_loss, 0.0, 1.0)
        checks.real("mask_rate", self.mask_rate, 0.0, 1.0, high_open=True)
        checks.real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        checks.positive_int("maxlen", self.maxlen)
        checks.positive_int("negatives", self.negatives)
        checks.positive_int("item_hops", self.item_hops, minimum=0)


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor, zero_logit: bool = False
                   ) -> torch.Tensor:
    """Softmax over the valid positions of ``logits`` [B, m]; a row with no valid position
    gives zeros. ``zero_logit=True`` is the official code's version: padded logits are set
    to 0 and still exponentiated, so each padding slot adds e^0 = 1 to the denominator
    and the real weights of a short history shrink (card section 9)."""
    if zero_logit:
        e = torch.exp(logits.masked_fill(~valid, 0.0))
        return e * valid / (e.sum(dim=1, keepdim=True) + 1e-12)
    weights = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=1)
    return torch.nan_to_num(weights, nan=0.0)  # an all-padding row: 0/0


class Aggregator(nn.Module):
    """Agg(e_u, S) = lambda_a e_u + (1 - lambda_a) W_agg Pool(S) (card section 3.1), with
    e_u [B, h], S [B, m, h], ``valid`` [B, m] booleans and ``weights`` [B, m] (the
    item-similarity scores). Pool: the mean of the valid rows; user-attention (softmax over
    tanh(W S_j + b) . e_u, dropout on the weights); item-similarity (softmax over the scores);
    sequential (a GRU over S in time order, its state after the last valid row)."""

    def __init__(self, cfg: UniCDRConfig):
        super().__init__()
        self.kind, self.lambda_a, self.zero_logit = cfg.aggregator, cfg.lambda_a, \
            cfg.zero_logit_softmax
        self.W_agg = nn.Linear(cfg.dim, cfg.dim, bias=False)
        if self.kind == "user_attention":
            self.W_att = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.Tanh())
            self.dropout = nn.Dropout(cfg.dropout)
        if self.kind == "sequential":
            self.gru = nn.GRU(cfg.dim, cfg.dim, batch_first=True)

    def pool(self, e_u: torch.Tensor, S: torch.Tensor, valid: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            return (S * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        if self.kind == "sequential":
            states, _ = self.gru(S)  # [B, m, h]; valid rows come first, in time order
            last = (valid.sum(1) - 1).clamp(min=0)
            return states[torch.arange(len(S)), last] * valid.any(1, keepdim=True)
        if self.kind == "user_attention":
            logits = torch.einsum("bmh,bh->bm", self.W_att(S), e_u)
            alpha = self.dropout(masked_softmax(logits, valid, self.zero_logit))
        else:  # item_similarity
            alpha = masked_softmax(weights, valid)
        return torch.einsum("bm,bmh->bh", alpha, S)

    def forward(self, e_u: torch.Tensor, S: torch.Tensor, valid: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        pooled = self.W_agg(self.pool(e_u, S, valid, weights))
        return self.lambda_a * e_u + (1 - self.lambda_a) * pooled


class BehaviourHead(nn.Module):
    """Extension 5: logits [B, T] of T behaviours of a (user, item) pair from
    x = [u ; i ; u * i] [B, 3h]. ``mmoe``: K shared experts, one softmax gate and one linear
    tower per behaviour; ``towers``: one MLP per behaviour, nothing shared."""

    def __init__(self, cfg: UniCDRConfig, behaviours: int):
        super().__init__()
        self.kind, d_in = cfg.head, 3 * cfg.dim
        n_experts = cfg.experts if cfg.head == "mmoe" else behaviours
        self.experts = ExpertBank(n_experts, d_in, (cfg.head_hidden,))
        if cfg.head == "mmoe":
            self.gates = nn.ModuleList(Gate(d_in, n_experts) for _ in range(behaviours))
        self.towers = nn.Parameter(torch.randn(behaviours, cfg.head_hidden) /
                                   cfg.head_hidden ** 0.5)
        self.bias = nn.Parameter(torch.zeros(behaviours))

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        x = torch.cat([u, i, u * i], dim=-1)
        outputs = self.experts(x)  # [B, E, d]
        if self.kind == "mmoe":
            outputs = torch.stack([mix(gate(x), outputs) for gate in self.gates], dim=1)
        return (outputs * self.towers).sum(-1) + self.bias  # [B, T]


@dataclass
class UserInputs:
    """What the user side reads in domain d, all [B, ...] long/float tensors: ``context``
    [B, m] the user's own items in d (0 pads, time order), ``context_w`` [B, m] their
    item-similarity scores, ``cross`` [B, D, m] the user's items in every domain with the
    own domain's slot empty (``cross_w`` likewise), and ``shared_context`` [B, m] the context
    items' ids in the shared item space (the item-overlap scenario)."""

    users: torch.Tensor
    context: torch.Tensor
    context_w: torch.Tensor
    cross: torch.Tensor
    cross_w: torch.Tensor
    shared_context: torch.Tensor | None = None


class UniCDR(nn.Module):
    """UniCDR with the UniCDR+ switches (module docstring). ``n_items`` per domain;
    ``item_features`` per domain the side-feature ids [I_d + 1, F] (extension 1);
    ``graphs`` one item-item adjacency per domain (extension 2); ``n_shared_items`` > 0
    for domains that share items instead of users; ``behaviours`` the number of behaviours
    of the head (extension 5)."""

    def __init__(self, cfg: UniCDRConfig, n_users: int, n_items: tuple[int, ...],
                 item_features: tuple[torch.Tensor, ...] | None = None,
                 graphs: tuple[torch.Tensor, ...] | None = None, n_shared_items: int = 0,
                 behaviours: int = 2):
        super().__init__()
        if cfg.item_hops and (graphs is None or len(graphs) != len(n_items)):
            raise ValueError("item_hops > 0 needs one item graph per domain")
        if cfg.features and (item_features is None or len(item_features) != len(n_items)):
            raise ValueError("features=True needs the side features of every domain")
        self.cfg, self.n_domains = cfg, len(n_items)
        self.items_overlap = n_shared_items > 0
        h = cfg.dim
        self.user_specific = nn.ModuleList(nn.Embedding(n_users, h) for _ in n_items)
        self.item_specific = nn.ModuleList(nn.Embedding(n + 1, h, padding_idx=0)
                                           for n in n_items)
        if cfg.features:
            for d, ids in enumerate(item_features):
                self.register_buffer(f"features_{d}", torch.as_tensor(ids, dtype=torch.long))
            self.feature_tables = nn.ModuleList(
                nn.ModuleList(nn.Embedding(int(size) + 1, h, padding_idx=0)
                              for size in torch.as_tensor(ids).max(0).values)
                for ids in item_features)
        self.graphs = graphs
        self.aggregators = nn.ModuleList(Aggregator(cfg) for _ in n_items)
        if cfg.shared:
            self.shared_aggregator = Aggregator(cfg)
            if self.items_overlap:  # one shared-user table per domain, one shared item table
                self.user_shared = nn.ModuleList(nn.Embedding(n_users, h) for _ in n_items)
                self.item_shared = nn.Embedding(n_shared_items + 1, h, padding_idx=0)
            else:
                self.user_shared = nn.Embedding(n_users, h)
            if cfg.critic == "hard":
                self.critics = nn.ModuleList(nn.Bilinear(h, h, 1) for _ in n_items)
        if cfg.head != "none":
            self.head = BehaviourHead(cfg, behaviours)
        for table in [*self.user_specific, *self.item_specific]:
            nn.init.normal_(table.weight, std=0.01)
        self.tables: list[torch.Tensor] | None = None

    # ----------------------------------------------------------------- item side

    def item_table(self, d: int) -> torch.Tensor:
        """[I_d + 1, h] every item of domain d: ID embedding (+ side features), smoothed over
        the item graph when ``item_hops`` > 0; row 0 (padding) stays zero."""
        table = self.item_specific[d].weight
        if self.cfg.features:
            features = getattr(self, f"features_{d}")  # [I + 1, F]
            table = table + sum(emb(features[:, f]) for f, emb in
                                enumerate(self.feature_tables[d]))
        if self.cfg.item_hops:
            table = propagate(self.graphs[d], table, self.cfg.item_hops)
        return table

    def refresh(self) -> None:
        """Compute every domain's item table once for the step (or for an evaluation)."""
        self.tables = [self.item_table(d) for d in range(self.n_domains)]

    def items(self, d: int, ids: torch.Tensor) -> torch.Tensor:
        """[..., h] items ``ids`` of domain d, with dropout in training (card: i_d)."""
        return F.dropout(self.tables[d][ids], self.cfg.dropout, self.training)

    # ----------------------------------------------------------------- user side

    def user(self, d: int, x: UserInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(u_sp, u_sh) [B, h] each in domain d; u_sh is None for the specific-only model."""
        cfg = self.cfg
        context = self.tables[d][x.context]  # [B, m, h]
        u_sp = self.aggregators[d](self.user_specific[d](x.users), context, x.context > 0,
                                   x.context_w)
        u_sp = F.dropout(u_sp, cfg.dropout, self.training)
        if not cfg.shared:
            return u_sp, None
        if self.items_overlap:
            e_sh = self.user_shared[d](x.users)
            S, valid, w = self.item_shared(x.shared_context), x.shared_context > 0, x.context_w
        else:
            e_sh = self.user_shared(x.users)
            S = torch.cat([self.tables[k][x.cross[:, k]] for k in range(self.n_domains)],
                          dim=1)  # [B, D * m, h]
            valid, w = (x.cross > 0).flatten(1), x.cross_w.flatten(1)
        u_sh = F.dropout(self.shared_aggregator(e_sh, S, valid, w), cfg.dropout, self.training)
        return u_sp, u_sh

    def user_vector(self, d: int, x: UserInputs) -> torch.Tensor:
        u_sp, u_sh = self.user(d, x)
        return u_sp if u_sh is None else u_sp + u_sh  # "same weight" (the code's Eq. 13)

    # ----------------------------------------------------------------- losses

    def critic_loss(self, d: int, u_sp: torch.Tensor, u_sh: torch.Tensor) -> torch.Tensor:
        """Hard: BCE of the bilinear critic on (u_sp[b], u_sh[b]) against
        (u_sp[(b + r) mod B], u_sh[b]) for one random shift r per step; soft: InfoNCE of u_sp
        against every u_sh of the batch (temperature ``cfg.temperature``)."""
        if self.cfg.critic == "soft":
            return info_nce(u_sp, u_sh, self.cfg.temperature)
        B = len(u_sp)
        shift = int(torch.randint(1, max(B, 2), (1,)))
        shuffled = u_sp[(torch.arange(B, device=u_sp.device) + shift) % B]
        real = self.critics[d](u_sp, u_sh).squeeze(-1)
        fake = self.critics[d](shuffled, u_sh).squeeze(-1)
        return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
            F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))

    def loss(self, d: int, x: UserInputs, positives: torch.Tensor, negatives: torch.Tensor,
             behaviours: torch.Tensor | None = None) -> torch.Tensor:
        """Domain d's loss on one batch (card section 4): lambda * (BCE of the positive [B]
        and of the sampled negatives [B, N]) + (1 - lambda) * the critic; plus the head's BCE
        over ``behaviours`` [B, T] of the positive (the negatives have none) when present."""
        cfg = self.cfg
        u_sp, u_sh = self.user(d, x)
        u = u_sp if u_sh is None else u_sp + u_sh
        pos, neg = self.items(d, positives), self.items(d, negatives)  # [B, h], [B, N, h]
        pos_score = (u * pos).sum(-1)
        neg_score = torch.einsum("bh,bnh->bn", u, neg)
        rec = F.binary_cross_entropy_with_logits(pos_score, torch.ones_like(pos_score)) + \
            F.binary_cross_entropy_with_logits(neg_score, torch.zeros_like(neg_score))
        if u_sh is None or cfg.critic == "none":
            total = rec
        else:
            total = cfg.lambda_loss * rec + (1 - cfg.lambda_loss) * \
                self.critic_loss(d, u_sp, u_sh)
        if behaviours is not None and cfg.head != "none":
            B, N = negatives.shape
            pair_u = torch.cat([u, u.unsqueeze(1).expand(-1, N, -1).reshape(B * N, -1)])
            pair_i = torch.cat([pos, neg.reshape(B * N, -1)])
            labels = torch.cat([behaviours.float(),
                                torch.zeros(B * N, behaviours.shape[1], device=u.device)])
            total = total + cfg.head_weight * F.binary_cross_entropy_with_logits(
                self.head(pair_u, pair_i), labels)
        return total
