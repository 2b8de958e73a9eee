"""Nearest-neighbour search over item vectors: exact batched top-k in torch, and FAISS.

Both indexes share one interface, ``index.search(queries, k, exclude=None) -> (scores,
ids)``, so a chapter switches backend with one argument. Queries may be one vector per
user ``[B, D]`` or several interest vectors per user ``[B, K, D]``; an item's score is then
its best score over the K interests (KuaiFormer's and DimeRec's serving rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recfunnel import checks

METRICS = ("ip", "cosine")


def _prepare(vectors: torch.Tensor, metric: str, name: str) -> torch.Tensor:
    """Float vectors (unit length for cosine), refused when one holds NaN or infinity: the
    two backends would rank such a vector differently (torch first, FAISS never)."""
    checks.one_of("metric", metric, METRICS)
    vectors = checks.finite_tensor(name, vectors).detach().float()
    return F.normalize(vectors, dim=-1) if metric == "cosine" else vectors


def _check_items(item_vecs: torch.Tensor) -> None:
    if not isinstance(item_vecs, torch.Tensor) or item_vecs.dim() != 2 or not len(item_vecs):
        shape = tuple(item_vecs.shape) if isinstance(item_vecs, torch.Tensor) else item_vecs
        raise checks.InvalidInputError(f"item_vecs: must be a [V, D] tensor with V >= 1, got "
                                       f"{shape}")


def _check_query(queries: torch.Tensor, dim: int, k: int, n_items: int,
                 exclude: torch.Tensor | None) -> torch.Tensor:
    if queries.dim() == 2:
        queries = queries[:, None, :]  # [B, 1, D]: one interest
    if queries.dim() != 3 or queries.shape[-1] != dim:
        raise checks.InvalidInputError(f"queries: must be [B, D] or [B, K, D] with D={dim}, "
                                       f"got {tuple(queries.shape)}")
    checks.positive_int("k", k)
    if k > n_items:
        raise checks.InvalidInputError(f"k: must lie in [1, {n_items}], got {k}")
    if exclude is not None:
        if exclude.dtype != torch.bool or tuple(exclude.shape) != (len(queries), n_items):
            raise checks.InvalidInputError(
                f"exclude: must be a BoolTensor [{len(queries)}, {n_items}], got "
                f"{exclude.dtype} {tuple(exclude.shape)}")
        allowed = n_items - exclude.sum(dim=1)
        if len(allowed) and int(allowed.min()) < k:
            row = int(allowed.argmin())
            raise checks.InvalidInputError(
                f"exclude: row {row} allows only {int(allowed[row])} items, fewer than k={k}; "
                "an excluded item is never returned")
    return queries


class ExactIndex:
    """Exact maximum inner-product (or cosine) search with a matmul and ``torch.topk``."""

    def __init__(self, item_vecs: torch.Tensor, metric: str = "ip", batch_size: int = 1024):
        _check_items(item_vecs)
        self.metric = metric
        self.item_vecs = _prepare(item_vecs, metric, "item_vecs")  # [V, D]
        self.batch_size = batch_size

    @property
    def n_items(self) -> int:
        return self.item_vecs.shape[0]

    @torch.no_grad()
    def search(
        self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [B, D] or [B, K, D]; exclude BoolTensor [B, V] (True: never return; each
        row must allow at least k items). Returns scores [B, k] (best first) and item ids
        [B, k]; no queries give [0, k]."""
        V, D = self.item_vecs.shape
        queries = _check_query(_prepare(queries, self.metric, "queries"), D, k, V, exclude)
        if not len(queries):
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        queries = queries.to(self.item_vecs.device)
        scores_out, ids_out = [], []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start:start + self.batch_size]  # [b, K, D]
            scores = (chunk @ self.item_vecs.T).amax(dim=1)  # [b, V] best interest per item
            if exclude is not None:
                mask = exclude[start:start + self.batch_size].to(scores.device)
                scores = scores.masked_fill(mask, float("-inf"))
            top = scores.topk(k, dim=1)
            scores_out.append(top.values)
            ids_out.append(top.indices)
        return torch.cat(scores_out), torch.cat(ids_out)


class FaissIndex:
    """The same search through FAISS's exact inner-product index (``pip install faiss-cpu``).

    Swap ``faiss.IndexFlatIP`` for an IVF or HNSW index to trade exactness for speed at
    Kuaishou's corpus sizes; the merging of interests and exclusions stays the same.
    """

    def __init__(self, item_vecs: torch.Tensor, metric: str = "ip"):
        try:
            import faiss
        except ImportError as error:
            raise ImportError(
                "FaissIndex needs FAISS: pip install faiss-cpu (or recfunnel[faiss])"
            ) from error
        _check_items(item_vecs)
        self.metric = metric
        vectors = _prepare(item_vecs, metric, "item_vecs").cpu().contiguous().numpy()
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    @property
    def n_items(self) -> int:
        return self.index.ntotal

    @torch.no_grad()
    def search(
        self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        V, D = self.n_items, self.index.d
        queries = _check_query(_prepare(queries, self.metric, "queries"), D, k, V, exclude).cpu()
        if not len(queries):
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        B, K, _ = queries.shape
        # Ask each interest for enough neighbours that exclusions cannot starve the list;
        # an item in the true top-k is within the top-k of the interest that scores it best.
        n_excluded = int(exclude.sum(dim=1).max()) if exclude is not None else 0
        depth = min(V, k + n_excluded)
        flat = queries.reshape(B * K, D).contiguous().numpy()
        scores, ids = self.index.search(flat, depth)  # [B*K, depth] each
        scores = torch.from_numpy(scores).view(B, K * depth)  # [B, N] candidates per user
        ids = torch.from_numpy(ids).long().view(B, K * depth)
        # best first, then drop an item's later (lower-scored) copies from other interests
        order = scores.argsort(dim=1, descending=True, stable=True)
        scores, ids = scores.gather(1, order), ids.gather(1, order)
        by_id = ids.argsort(dim=1, stable=True)  # equal ids stay in score order
        ids_by_id = ids.gather(1, by_id)
        repeat = torch.zeros_like(ids, dtype=torch.bool)
        repeat[:, 1:] = ids_by_id[:, 1:] == ids_by_id[:, :-1]
        is_copy = torch.zeros_like(repeat).scatter_(1, by_id, repeat)
        scores = scores.masked_fill(is_copy, float("-inf"))
        if exclude is not None:
            scores = scores.masked_fill(exclude.cpu().gather(1, ids), float("-inf"))
        top = scores.topk(k, dim=1)
        return top.values, ids.gather(1, top.indices)


def build_index(item_vecs: torch.Tensor, backend: str = "exact", metric: str = "ip"):
    """``backend``: ``"exact"`` (torch), ``"faiss"``, or ``"auto"`` (FAISS when installed)."""
    if backend == "auto":
        try:
            import faiss  # noqa: F401
        except ImportError:
            backend = "exact"
        else:
            backend = "faiss"
    if backend == "exact":
        return ExactIndex(item_vecs, metric)
    if backend == "faiss":
        return FaissIndex(item_vecs, metric)
    raise checks.InvalidInputError(f"backend: must be 'exact', 'faiss' or 'auto', got "
                                   f"{backend!r}")
