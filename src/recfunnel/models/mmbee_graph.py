"""MMBee's graph side (GIE, section 3.2 of the paper; the card's reading): the gifting
graphs, metapath-guided behaviour expansion, and GraphCL pre-training of node embeddings.

    graph = GiftGraph.build(users, streamers, times, n_users, n_streamers, before=cut)
    paths = graph.paths(k1=10, k2=20)        # the "offline storage" of expanded lists
    g_user, g_streamer = pretrain_nodes(graph, content, d=32)   # frozen afterwards

* **U2A**: viewer -> streamer edges from gifts sent *before* ``before`` (never later: a
  test-period edge in the graph is the test label), weighted by log(1 + gifts).
* **A2A**: Swing over the co-gifters (at most ``max_gifters`` most recent per streamer),
  top ``k_swing`` neighbours per streamer.
* **Metapaths** (this book's reading of the set): U->A (streamers the viewer gifted),
  U->A->A (Swing neighbours of those, not yet gifted), A->U (the streamer's gifters) and
  A->A->U (gifters of similar streamers who never gifted this one).
* **GraphCL**: a LightGCN encoder over U2A; two views by dropping edges and masking
  content features; InfoNCE between a node's two views, plus a BPR link loss on the gift
  edges (as SGL pairs them: contrast alone only smooths).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from recfunnel import checks
from recfunnel.layers.graph import (
    cap_per_column,
    drop_edges,
    info_nce,
    interaction_matrix,
    keep_top_k,
    normalised_adjacency,
    propagate,
    swing,
    top_k_rows,
)

METAPATHS = ("U->A", "U->A->A", "A->U", "A->A->U")


@dataclass
class GiftGraph:
    """gifts [U, A] csr: log(1 + gifts sent before ``before``); similar [A, A] csr: Swing,
    top ``k_swing`` per streamer."""

    gifts: sp.csr_matrix
    similar: sp.csr_matrix
    before: float  # the time (segment, millisecond) the graph's gifts all precede

    @classmethod
    def build(cls, users: np.ndarray, streamers: np.ndarray, times: np.ndarray,
              n_users: int, n_streamers: int, before: float, k_swing: int = 10,
              max_gifters: int = 200, alpha: float = 1.0) -> GiftGraph:
        """The graphs of the gifts (``users``, ``streamers``, ``times`` [n]) with
        time < ``before``."""
        times = np.asarray(times)
        if not len(users) == len(streamers) == len(times):
            raise checks.InvalidInputError(
                f"users/streamers/times: lengths {len(users)}, {len(streamers)}, {len(times)}")
        early = times < before
        u, a, t = np.asarray(users)[early], np.asarray(streamers)[early], times[early]
        counts = interaction_matrix(u, a, (n_users, n_streamers))
        key = u.astype(np.int64) * n_streamers + a  # the newest gift time of each pair
        pairs, inverse = np.unique(key, return_inverse=True)
        newest = np.full(len(pairs), -np.inf)
        np.maximum.at(newest, inverse, t.astype(np.float64))
        latest = sp.csr_matrix((newest - newest.min() + 1.0 if len(pairs) else newest,
                                (pairs // n_streamers, pairs % n_streamers)), shape=counts.shape)
        capped = cap_per_column(counts, latest, max_gifters)
        similar = keep_top_k(swing(capped, alpha), k_swing)
        gifts = counts.copy()
        gifts.data = np.log1p(gifts.data)
        return cls(gifts=gifts.tocsr(), similar=similar, before=before)

    @property
    def shape(self) -> tuple[int, int]:
        return self.gifts.shape

    def paths(self, k1: int, k2: int) -> dict[str, np.ndarray]:
        """The four expanded lists, 1-based ids (0 = padding), best first: "U->A" and
        "U->A->A" [U, k] of streamers, "A->U" and "A->A->U" [A, k] of viewers."""
        W, S = self.gifts, self.similar
        return {
            "U->A": top_k_rows(W, k1),
            "U->A->A": top_k_rows(W @ S, k2, exclude=W),
            "A->U": top_k_rows(W.T.tocsr(), k1),
            "A->A->U": top_k_rows(S @ W.T, k2, exclude=W.T),
        }


@dataclass(frozen=True)
class GraphCLConfig:
    """GraphCL pre-training of the U2A graph's nodes (the card's proposed values)."""

    d_node: int = 32
    layers: int = 2
    epochs: int = 60
    lr: float = 1e-2
    temperature: float = 0.2
    edge_drop: float = 0.2
    feature_mask: float = 0.2
    contrast_weight: float = 0.5  # InfoNCE's weight next to the BPR link loss
    batch_nodes: int = 2_048  # nodes contrasted per step


class NodeEncoder(nn.Module):
    """Node inputs: an id embedding per viewer and per streamer, plus a linear map of the
    streamer's content features (its multi-modal attribute) when given."""

    def __init__(self, n_users: int, n_streamers: int, d: int, content: torch.Tensor | None):
        super().__init__()
        self.ids = nn.Embedding(n_users + n_streamers, d)
        nn.init.normal_(self.ids.weight, std=0.1)
        self.n_users = n_users
        self.register_buffer("content", content if content is not None else
                             torch.zeros(n_streamers, 0))
        self.from_content = nn.Linear(self.content.shape[1], d, bias=False) if (
            self.content.shape[1]) else None

    def forward(self, mask_share: float = 0.0, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        x = self.ids.weight
        if self.from_content is None:
            return x
        content = self.content
        if mask_share:
            keep = torch.rand(content.shape, generator=generator) >= mask_share
            content = content * keep
        streamers = x[self.n_users:] + self.from_content(content)
        return torch.cat([x[: self.n_users], streamers])


def pretrain_nodes(graph: GiftGraph, content: np.ndarray | None = None,
                   cfg: GraphCLConfig = GraphCLConfig(), seed: int = 0,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """GraphCL-pretrained, frozen node embeddings: viewers [U, d] and streamers [A, d].
    ``content`` [A, c]: the streamers' multi-modal attributes (e.g. mean segment tokens)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    U, A = graph.shape
    adjacency = normalised_adjacency(graph.gifts)
    encoder = NodeEncoder(U, A, cfg.d_node,
                          None if content is None else torch.as_tensor(content).float())
    optimiser = torch.optim.Adam(encoder.parameters(), lr=cfg.lr)
    edges = graph.gifts.tocoo()
    users, streamers = torch.from_numpy(edges.row).long(), torch.from_numpy(edges.col).long()
    for _ in tqdm(range(cfg.epochs), desc="GraphCL", disable=not progress):
        optimiser.zero_grad()
        views = [propagate(drop_edges(adjacency, cfg.edge_drop, generator),
                           encoder(cfg.feature_mask, generator), cfg.layers) for _ in range(2)]
        nodes = torch.randperm(U + A, generator=generator)[: cfg.batch_nodes]
        loss = cfg.contrast_weight * info_nce(views[0][nodes], views[1][nodes],
                                              cfg.temperature)
        if len(users):
            z = propagate(adjacency, encoder(), cfg.layers)
            negatives = torch.randint(A, (len(users),), generator=generator)
            positive = (z[users] * z[U + streamers]).sum(-1)
            negative = (z[users] * z[U + negatives]).sum(-1)
            loss = loss + F.softplus(negative - positive).mean()  # BPR
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        z = propagate(adjacency, encoder(), cfg.layers)
    return z[:U].clone(), z[U:].clone()


def random_nodes(n_users: int, n_streamers: int, d: int, like: torch.Tensor | None = None,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random frozen node embeddings (the C6 baseline), scaled to the mean norm of ``like``
    when given."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n_users + n_streamers, d, generator=generator)
    if like is not None:
        z = z / z.norm(dim=1, keepdim=True) * like.norm(dim=1).mean()
    return z[:n_users], z[n_users:]
