"""Turning vectors into discrete codes: k-means, residual k-means and nearest-item codes.

QARM (Luo et al., 2024, section on quantitative codes) gives each item two codes computed
from its aligned multi-modal vector m in R^d, with no gradient and no reconstruction loss:

* the **VQ code**: the ids of the K pool items nearest to m, (v_1..v_K) = TopKCode(V, m, K),
  where the code book V is the pool of item vectors itself (``NearestItemCode``);
* the **RQ code**: residual k-means. Level l fits k-means to what the levels before it
  left over, R^l = KMeans(M^(l-1)), M^l = M^(l-1) - NearestRep(M^(l-1), R^l), and an item's
  code is the nearest centroid of each level, r_l = argmin_k ||m^(l-1) - R^l_k||
  (``ResidualKMeans``). One level is plain vector quantisation.

Both are written for the whole item pool at once ([N, d] in, [N, K] or [N, R] ids out, for
R levels of M centroids: the paper's L and K_c) and are deterministic under their seed.
``collision_rate`` measures how many items share their full code with another item, which
residual codes with small code books do often.
"""

from __future__ import annotations

import torch

from recfunnel.retrieval import ExactIndex


def _check_vectors(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float matrix [N, d], got {tuple(x.shape)} "
                         f"{x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 8_192) -> torch.Tensor:
    """x [N, d], centroids [K, d] -> [N] index of each row's nearest centroid (L2)."""
    sq_norms = (centroids ** 2).sum(1)  # [K]; ||x||^2 is the same for every centroid
    parts = [(sq_norms - 2 * part @ centroids.T).argmin(1) for part in x.split(chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding: x [N, d] -> centroids [k, d].

    A cluster that loses all its points is re-seeded with the point farthest from its
    centroid, so every centroid stays in use while N >= k."""
    x = _check_vectors(x)
    if not 1 <= k <= len(x):
        raise ValueError(f"k must lie in [1, N={len(x)}], got {k}")
    generator = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    closest = ((x - centroids) ** 2).sum(1)  # [N] squared distance to the nearest centroid
    for _ in range(1, k):  # k-means++: the next seed is drawn in proportion to distance^2
        weights = closest / closest.sum() if closest.sum() > 0 else torch.ones_like(closest)
        pick = torch.multinomial(weights, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        closest = torch.minimum(closest, ((x - x[pick]) ** 2).sum(1))
    for _ in range(iters):
        assign = nearest(x, centroids)  # [N]
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)  # [k]
        updated = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None],
                              centroids)
        for empty in (counts == 0).nonzero().flatten().tolist():
            far = ((x - updated[nearest(x, updated)]) ** 2).sum(1).argmax()
            updated[empty] = x[far]
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids


class ResidualKMeans:
    """Residual k-means ("Res-Kmeans"): ``levels`` code books of ``codebook_size``
    centroids, each fitted to the residuals the levels before it leave.

    fit(M [N, d]) -> self; encode(x [N, d]) -> codes [N, R]; decode(codes) -> x_hat [N, d]
    = sum_l R^l[r_l]; reconstruction_error(x) -> [R] mean squared error after each level."""

    def __init__(self, levels: int, codebook_size: int, iters: int = 25, seed: int = 0):
        if levels < 1 or codebook_size < 1:
            raise ValueError("need at least one level and one centroid per level")
        self.levels, self.codebook_size = levels, codebook_size
        self.iters, self.seed = iters, seed
        self.codebooks: torch.Tensor | None = None  # [R, M, d]

    def fit(self, vectors: torch.Tensor) -> ResidualKMeans:
        residual = _check_vectors(vectors, "vectors").float()
        books = []
        for level in range(self.levels):
            centroids = kmeans(residual, self.codebook_size, self.iters, self.seed + level)
            residual = residual - centroids[nearest(residual, centroids)]  # M^l
            books.append(centroids)
        self.codebooks = torch.stack(books)  # [R, M, d]
        return self

    def _fitted(self) -> torch.Tensor:
        if self.codebooks is None:
            raise RuntimeError("call fit() before encode() or decode()")
        return self.codebooks

    def encode(self, x: torch.Tensor, return_residual: bool = False):
        """x [N, d] -> codes [N, R] int64 (and the final residual [N, d] if asked): level by
        level the nearest centroid of what is left, r_l = argmin_k ||m^(l-1) - R^l_k||."""
        books = self._fitted()
        residual = _check_vectors(x).float()
        if residual.shape[1] != books.shape[2]:
            raise ValueError(f"expected vectors of width {books.shape[2]}, got {residual.shape[1]}")
        codes = []
        for centroids in books:
            code = nearest(residual, centroids)  # [N]
            residual = residual - centroids[code]
            codes.append(code)
        codes = torch.stack(codes, dim=1) if codes else residual.new_zeros(0, dtype=torch.long)
        return (codes, residual) if return_residual else codes

    def decode(self, codes: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """codes [N, R] -> x_hat [N, d], the sum of each level's chosen centroid (of the
        first ``levels`` levels only, if given)."""
        books = self._fitted()
        codes = torch.as_tensor(codes)
        if codes.dim() != 2 or codes.shape[1] != len(books):
            raise ValueError(f"codes must be [N, {len(books)}], got {tuple(codes.shape)}")
        if len(codes) and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise IndexError(f"codes must lie in [0, {self.codebook_size})")
        used = len(books) if levels is None else levels
        return sum((books[level][codes[:, level]] for level in range(used)),
                   torch.zeros(len(codes), books.shape[2]))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """[R] mean squared error ||x - x_hat_l||^2 / d using the first l levels, l = 1..R.
        Each level subtracts the nearest of its centroids, so the error cannot grow."""
        x = _check_vectors(x).float()
        codes = self.encode(x)
        return torch.stack([((x - self.decode(codes, levels=level + 1)) ** 2).mean()
                            for level in range(self.levels)])


class NearestItemCode:
    """QARM's VQ code: an item's code is the ids of the K nearest vectors of a fixed pool
    (cosine similarity, searched with ``retrieval.ExactIndex``), so the code book is the
    pool itself and has N_pool entries.

    encode(x [N, d]) -> [N, K] pool ids, nearest first; with ``exclude`` [N] (each row's own
    pool id, -1 if it is not in the pool) an item never gets its own id. decode(codes) ->
    [N, d], the mean of the code's pool vectors."""

    def __init__(self, pool: torch.Tensor, k: int):
        self.pool = _check_vectors(pool, "pool").float()
        if not 1 <= k < len(self.pool):
            raise ValueError(f"k must lie in [1, pool size {len(self.pool)}), got {k}")
        self.k = k
        self.index = ExactIndex(self.pool, metric="cosine")

    def encode(self, x: torch.Tensor, exclude: torch.Tensor | None = None,
               chunk: int = 4_096) -> torch.Tensor:
        x = _check_vectors(x).float()
        if x.shape[1] != self.pool.shape[1]:
            raise ValueError(f"expected vectors of width {self.pool.shape[1]}, got {x.shape[1]}")
        codes = []
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            mask = None
            if exclude is not None:  # [n, N_pool], True at each row's own pool id
                own = torch.as_tensor(exclude[start:start + chunk])
                mask = own[:, None] == torch.arange(len(self.pool))[None, :]
            codes.append(self.index.search(part, self.k, exclude=mask)[1])
        return torch.cat(codes) if codes else torch.zeros(0, self.k, dtype=torch.long)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.pool[torch.as_tensor(codes)].mean(1)


def collision_rate(codes: torch.Tensor) -> float:
    """Share of items whose full code (a row of codes [N, R]) is also another item's."""
    codes = torch.as_tensor(codes)
    if codes.dim() != 2 or len(codes) == 0:
        raise ValueError(f"codes must be a non-empty [N, R] matrix, got {tuple(codes.shape)}")
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).double().mean())
