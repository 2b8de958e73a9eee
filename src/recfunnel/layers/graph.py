"""Graph building blocks on sparse matrices: Swing similarity, metapath top-k expansion, and
LightGCN propagation with a graph-contrastive loss.

Graphs here are bipartite interaction matrices ``M`` [U, A] (users by items, or viewers by
streamers) held as ``scipy.sparse.csr_matrix``; scipy is already a dependency of the
course's scikit-learn, and a sparse product is all that Swing and metapaths need.

* ``swing`` (Yang et al. 2020, Alibaba): two items are similar when *pairs* of users both
  interacted with both, each pair weighted down by how much else the two users share,

      sim(a, b) = sum over u != v in U_a & U_b of 1 / (alpha + |A_u & A_v|),

  computed as ``I^T diag(w) I`` where each row of ``I`` is the items two users share
  (``shared_items`` in the code).
* ``top_k_rows``: the k best columns of every row of a score matrix, chunk by chunk, as
  1-based ids (0 = padding): the offline store of expanded behaviour lists.
* ``normalised_adjacency`` / ``propagate``: LightGCN's symmetric normalisation of the
  bipartite graph and its layer mean (He et al. 2020); ``info_nce``: GraphCL's contrast of
  two views of every node (You et al. 2020).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recfunnel import checks


def interaction_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int],
                       weights: np.ndarray | None = None) -> sp.csr_matrix:
    """[n_rows, n_cols] csr matrix summing ``weights`` (default 1) of repeated pairs."""
    rows, cols = checks.ids(rows, "rows"), checks.ids(cols, "cols")
    if len(rows) != len(cols):
        raise checks.InvalidInputError(f"rows: {len(rows)} rows but {len(cols)} cols")
    if len(rows) and (rows.max() >= shape[0] or cols.max() >= shape[1]):
        raise checks.InvalidInputError(f"rows/cols: an id lies outside the shape {shape}")
    values = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    return sp.csr_matrix((values, (rows, cols)), shape=shape)


def cap_per_column(M: sp.csr_matrix, order: np.ndarray | None, cap: int) -> sp.csr_matrix:
    """Keep at most ``cap`` nonzeros per column: those with the largest ``order`` (e.g. the
    most recent interaction time, an [n_rows, n_cols] sparse matrix of the same pattern);
    without ``order``, the first rows. Swing's cost is quadratic in a column's users."""
    checks.positive_int("cap", cap)
    coo = M.tocoo()
    key = np.zeros(coo.nnz) if order is None else -np.asarray(
        order.tocsr()[coo.row, coo.col]).ravel()
    ranked = np.lexsort((coo.row, key, coo.col))  # by column, then newest first
    col = coo.col[ranked]
    starts = np.searchsorted(col, col, side="left")
    keep = ranked[np.arange(len(ranked)) - starts < cap]
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=M.shape)


def swing(M: sp.csr_matrix, alpha: float = 1.0) -> sp.csr_matrix:
    """Swing similarity [A, A] of the columns of a user-by-item matrix ``M`` [U, A] (any
    nonzero counts as an interaction); the diagonal is zero. Ordered user pairs, as in the
    formula: every unordered pair counts twice."""
    checks.real("alpha", alpha, 0.0, low_open=True)
    B = (M != 0).astype(np.float64).tocsr()
    overlap = sp.triu(B @ B.T, k=1).tocoo()  # |A_u & A_v| for u < v
    pairs = overlap.data >= 2  # a pair sharing one item adds only to sim(a, a)
    u, v, shared = overlap.row[pairs], overlap.col[pairs], overlap.data[pairs]
    if not len(u):
        return sp.csr_matrix(M.shape[1:] * 2)
    shared_items = B[u].multiply(B[v]).tocsr()  # [P, A] the items each pair shares
    w = sp.diags(2.0 / (alpha + shared))  # ordered pairs: (u, v) and (v, u)
    sim = (shared_items.T @ w @ shared_items).tocsr()
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return sim


def keep_top_k(S: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``S`` with only the ``k`` largest entries of each row kept (ties: lower column)."""
    checks.positive_int("k", k)
    S = S.tocsr()
    rows, cols, vals = [], [], []
    for r in range(S.shape[0]):
        start, end = S.indptr[r], S.indptr[r + 1]
        c, x = S.indices[start:end], S.data[start:end]
        best = np.lexsort((c, -x))[:k]
        rows.append(np.full(len(best), r))
        cols.append(c[best])
        vals.append(x[best])
    if not rows:
        return S
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=S.shape)


def top_k_rows(scores: sp.spmatrix, k: int, exclude: sp.spmatrix | None = None,
               chunk: int = 4_096) -> np.ndarray:
    """[n_rows, k] int64: each row's ``k`` best columns by score, as 1-based ids, best first;
    0 pads where a row has fewer than ``k`` positive scores. Columns where ``exclude`` is
    nonzero are skipped (e.g. streamers a viewer already gifted). Ties: lower column."""
    checks.positive_int("k", k)
    scores = scores.tocsr()
    exclude = None if exclude is None else (exclude != 0).tocsr()
    out = np.zeros((scores.shape[0], k), dtype=np.int64)
    width = min(k, scores.shape[1])
    for start in range(0, scores.shape[0], chunk):
        block = scores[start:start + chunk].toarray()
        if exclude is not None:
            block[exclude[start:start + chunk].toarray()] = 0.0
        columns = np.arange(block.shape[1])
        order = np.lexsort((np.broadcast_to(columns, block.shape), -block), axis=1)[:, :width]
        best = np.take_along_axis(block, order, axis=1)
        out[start:start + chunk, :width] = np.where(best > 0, order + 1, 0)
    return out


def normalised_adjacency(M: sp.csr_matrix) -> torch.Tensor:
    """LightGCN's D^-1/2 [[0, M], [M^T, 0]] D^-1/2 over U + A nodes (users first), as a
    sparse torch tensor; isolated nodes keep zero rows."""
    B = (M != 0).astype(np.float64)
    U, A = B.shape
    adjacency = sp.bmat([[None, B], [B.T, None]]).tocoo()
    degree = np.asarray(adjacency.sum(1)).ravel()
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    values = scale[adjacency.row] * adjacency.data * scale[adjacency.col]
    index = torch.from_numpy(np.stack([adjacency.row, adjacency.col])).long()
    return torch.sparse_coo_tensor(index, torch.from_numpy(values).float(), (U + A, U + A),
                                   check_invariants=False).coalesce()


def drop_edges(adjacency: torch.Tensor, share: float, generator: torch.Generator
               ) -> torch.Tensor:
    """A view of a normalised adjacency with ``share`` of its entries dropped (GraphCL's
    edge perturbation; the survivors are not renormalised)."""
    checks.real("share", share, 0.0, 1.0, high_open=True)
    index, values = adjacency.indices(), adjacency.values()
    keep = torch.rand(len(values), generator=generator) >= share
    return torch.sparse_coo_tensor(index[:, keep], values[keep], adjacency.shape,
                                   check_invariants=False)


def propagate(adjacency: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
    """LightGCN: the mean of x, Ax, A^2x, ..., A^layers x (no weights, no non-linearity)."""
    out, h = x, x
    for _ in range(layers):
        h = torch.sparse.mm(adjacency, h)
        out = out + h
    return out / (layers + 1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """GraphCL's contrastive loss: row i of ``a`` [n, d] should be closest (cosine) to row i
    of ``b`` [n, d] among all rows of ``b``."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # [n, n]
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def item_item_graph(users: np.ndarray, items: np.ndarray, n_items: int, k: int = 20
                    ) -> torch.Tensor:
    """The row-normalised item-item co-occurrence graph [n_items + 1, n_items + 1] of
    interaction rows (1-based items; row and column 0, padding, stay empty): two items are
    linked by the number of users who interacted with both, each item keeping its ``k``
    strongest links (UniCDR+'s item-level graph, as the course reads it)."""
    if len(users) != len(items):
        raise checks.InvalidInputError("users and items must have one entry per interaction")
    M = (interaction_matrix(users, items, (int(users.max()) + 1, n_items + 1)) != 0
         ).astype(np.float64)
    co = (M.T @ M).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    co = keep_top_k(co, k).tocoo()
    degree = np.asarray(co.sum(1)).ravel()
    values = co.data / np.maximum(degree[co.row], 1e-12)
    index = torch.from_numpy(np.stack([co.row, co.col])).long()
    return torch.sparse_coo_tensor(index, torch.from_numpy(values).float(), co.shape,
                                   check_invariants=False).coalesce()
