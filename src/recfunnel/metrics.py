"""Evaluation metrics used by every chapter.

Ranking (retrieval chapters): full-ranking Recall@K, HR@K, NDCG@K and MRR@K over the whole
item vocabulary, optionally with items the user has already seen masked out.
Diversity of a recommended list: category coverage and intra-list diversity; the linear
probe that asks how much category information a set of vectors carries.
Classification (ranking chapters): AUC, GAUC (per-user AUC weighted by impressions, the
metric Kuaishou's papers report) and log-loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recfunnel import checks

# --------------------------------------------------------------------------- ranking


def _relevance(targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """[B] target ids or [B, V] booleans -> BoolTensor [B, V]."""
    if targets.dim() == 1:
        if targets.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"target ids must be integers, got {targets.dtype}")
        if targets.min() < 0 or targets.max() >= n_items:
            raise IndexError(f"target ids must lie in [0, {n_items}), got "
                             f"[{targets.min().item()}, {targets.max().item()}]")
        relevant = torch.zeros(len(targets), n_items, dtype=torch.bool, device=targets.device)
        relevant[torch.arange(len(targets), device=targets.device), targets] = True
        return relevant
    if targets.dim() == 2 and targets.shape[1] == n_items:
        if targets.dtype != torch.bool and not bool(((targets == 0) | (targets == 1)).all()):
            row = int((~((targets == 0) | (targets == 1))).any(1).nonzero()[0])
            raise checks.InvalidInputError(f"targets: a [B, V] relevance mask must hold 0 or 1 "
                                           f"(or booleans); row {row} holds other values")
        return targets.bool()
    raise ValueError(f"targets must be [B] ids or [B, {n_items}] booleans, got "
                     f"{tuple(targets.shape)}")


def _seen_mask(seen, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A [B, V] mask from a boolean tensor or from one list of item ids per row."""
    if isinstance(seen, torch.Tensor):
        if seen.shape != shape:
            raise ValueError(f"seen mask has shape {tuple(seen.shape)}, scores {shape}")
        return seen.to(device=device, dtype=torch.bool)
    if len(seen) != shape[0]:
        raise ValueError(f"seen has {len(seen)} rows, scores have {shape[0]}")
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    for row, ids in enumerate(seen):
        ids = checks.ids(list(ids), f"seen[{row}]")  # a negative id would wrap to the end
        if len(ids) and ids.max() >= shape[1]:
            raise checks.InvalidInputError(f"seen[{row}]: item {ids.max()} is outside the "
                                           f"{shape[1]} scored items")
        mask[row, torch.as_tensor(ids, dtype=torch.long, device=device)] = True
    return mask


def ranking_metrics(
    scores: torch.Tensor,  # [B, V] one score per item, higher is better
    targets: torch.Tensor,  # [B] the held-out item of each row, or [B, V] booleans
    ks: Iterable[int] = (10, 20),
    seen: torch.Tensor | Sequence[Iterable[int]] | None = None,  # [B, V] or ids per row
    reduce: bool = True,
) -> dict[str, float] | dict[str, torch.Tensor]:
    """Full-ranking Recall@K, HR@K, NDCG@K and MRR@K.

    Every item is ranked (no sampled negatives). Items in ``seen`` are removed from the
    ranking first; a target inside ``seen`` can then no longer be found, so pass only
    items that are not targets (the training history). With one target per row,
    Recall@K equals HR@K. Ties are broken by ``torch.topk``. ``reduce=False`` returns
    per-row values, for paired tests between models.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise checks.InvalidInputError(f"scores: must be a [B, V] tensor, got {shape}")
    checks.not_empty(len(scores), "scores")
    checks.no_nan("scores", scores)  # a NaN would outrank every item
    ks = sorted({checks.positive_int("ks", k) for k in ks})
    if not ks:
        raise checks.InvalidInputError("ks: name at least one K")
    B, V = scores.shape
    if len(targets) != B:
        raise checks.InvalidInputError(f"targets: {len(targets)} rows, scores have {B}")
    if ks[0] < 1 or ks[-1] > V:
        raise ValueError(f"every K must lie in [1, {V}], got {ks}")
    relevant = _relevance(targets.to(scores.device), V)  # [B, V]
    n_relevant = relevant.sum(dim=1)  # [B]
    if (n_relevant == 0).any():
        row = int((n_relevant == 0).nonzero()[0])
        raise ValueError(f"row {row} has no relevant item")
    if seen is not None:
        scores = scores.masked_fill(_seen_mask(seen, (B, V), scores.device), float("-inf"))

    k_max = ks[-1]
    top_ids = scores.topk(k_max, dim=1).indices  # [B, k_max]
    hits = relevant.gather(1, top_ids).float()  # [B, k_max] 1 where the i-th item is relevant
    positions = torch.arange(1, k_max + 1, device=scores.device, dtype=torch.float32)
    discounts = 1.0 / torch.log2(positions + 1.0)  # [k_max] 1/log2(i+1)
    ideal_dcg = discounts.cumsum(0)  # [k_max] DCG of a perfect list of i relevant items

    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hits_k = hits[:, :k]
        n_hits = hits_k.sum(dim=1)
        out[f"recall@{k}"] = n_hits / n_relevant
        out[f"hr@{k}"] = (n_hits > 0).float()
        best_possible = ideal_dcg[(n_relevant.clamp(max=k) - 1)]
        out[f"ndcg@{k}"] = (hits_k * discounts[:k]).sum(dim=1) / best_possible
        out[f"mrr@{k}"] = (hits_k / positions[:k]).max(dim=1).values  # 1 / rank of first hit
    if reduce:
        return {name: value.mean().item() for name, value in out.items()}
    return out


def metrics_from_ranks(ranks, ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Per-row Recall@K and NDCG@K (one target per row) from the target's 1-based rank,
    0 meaning "below every K asked for" (a stored top-N rank with N >= max(ks))."""
    ranks = checks.ids(ranks, "ranks")  # whole numbers >= 0: NaN and 2.5 are refused
    if ranks.ndim != 1:
        raise checks.InvalidInputError("ranks: must be a 1-D array of ranks >= 1, or 0 for a "
                                       "miss")
    out = {}
    for k in ks:
        hit = (ranks >= 1) & (ranks <= k)
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
    return out


@torch.no_grad()
def evaluate_ranking(
    score_fn: Callable[[torch.Tensor], torch.Tensor],  # user ids [b] -> scores [b, V]
    user_ids: torch.Tensor,  # [B] the users to evaluate
    targets: torch.Tensor,  # [B] their held-out items
    seen: Sequence[Iterable[int]] | None = None,  # items to mask, one list per user
    ks: Iterable[int] = (10, 20),
    batch_size: int = 1024,
    reduce: bool = True,
) -> dict[str, float] | dict[str, torch.Tensor]:
    """``ranking_metrics`` over users in chunks, so the [B, V] score matrix never has to
    fit in memory at once; the scores are computed on ``score_fn``'s device."""
    if len(user_ids) != len(targets) or (seen is not None and len(seen) != len(user_ids)):
        raise ValueError("user_ids, targets and seen must have one entry per user")
    checks.not_empty(len(user_ids), "user_ids")
    batch_size = checks.positive_int("batch_size", batch_size)
    parts: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(user_ids), batch_size):
        chunk = slice(start, start + batch_size)
        scores = score_fn(user_ids[chunk]).float()
        parts.append(ranking_metrics(
            scores, targets[chunk].to(scores.device), ks,
            seen=None if seen is None else seen[chunk], reduce=False,
        ))
    per_user = {name: torch.cat([part[name] for part in parts]).cpu() for name in parts[0]}
    if reduce:
        return {name: value.mean().item() for name, value in per_user.items()}
    return per_user


# --------------------------------------------------------------------------- diversity


def _check_lists(top_ids: torch.Tensor, table: torch.Tensor, name: str) -> None:
    if top_ids.dim() != 2 or table.dim() != 2:
        raise ValueError(f"top_ids must be [B, k] and {name} [V, C]")
    if top_ids.numel() and (top_ids.min() < 0 or top_ids.max() >= len(table)):
        raise IndexError(f"item ids must lie in [0, {len(table)})")


def category_coverage(top_ids: torch.Tensor, item_categories: torch.Tensor) -> torch.Tensor:
    """Distinct categories among each list's items: top_ids [B, k], item_categories [V, C]
    booleans (an item may have several) -> [B] counts."""
    _check_lists(top_ids, item_categories, "item_categories")
    return item_categories.bool()[top_ids].any(dim=1).sum(dim=1)


def intra_list_diversity(top_ids: torch.Tensor, item_features: torch.Tensor) -> torch.Tensor:
    """ILD: the mean over a list's item pairs of 1 - cosine(f_i, f_j) (Ziegler et al.
    2005): top_ids [B, k] with k >= 2, item_features [V, F] -> [B] in [0, 2]."""
    _check_lists(top_ids, item_features, "item_features")
    k = top_ids.shape[1]
    if k < 2:
        raise ValueError("a list needs at least two items to have pairs")
    unit = torch.nn.functional.normalize(item_features.float(), dim=-1)[top_ids]  # [B, k, F]
    similarity = unit @ unit.transpose(1, 2)  # [B, k, k]
    off_diagonal = similarity.sum(dim=(1, 2)) - similarity.diagonal(dim1=1, dim2=2).sum(1)
    return 1 - off_diagonal / (k * (k - 1))


def neighbour_agreement(vectors: torch.Tensor, labels) -> float:
    """Share of rows whose most cosine-similar *other* row carries the same label:
    vectors [n, d], labels [n] (how much of the label a nearest-neighbour lookup keeps)."""
    labels = np.asarray(labels)
    unit = torch.nn.functional.normalize(torch.as_tensor(vectors).float(), dim=1)
    nearest = (unit @ unit.T).fill_diagonal_(-2).argmax(1).numpy()
    return float((labels[nearest] == labels).mean())


def cluster_purity(clusters, labels) -> float:
    """Share of rows whose cluster's most common label is their own: clusters [n] and
    labels [n] non-negative integers."""
    clusters, labels = np.asarray(clusters), checks.ids(labels, "labels")
    if len(clusters) != len(labels) or not len(labels):
        raise checks.InvalidInputError(f"clusters and labels: need one label per row, got "
                                       f"{len(clusters)} and {len(labels)}")
    majority = {c: np.bincount(labels[clusters == c]).argmax() for c in np.unique(clusters)}
    return float(np.mean([labels[i] == majority[c] for i, c in enumerate(clusters)]))


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: x [n, d], y [n] -> weight [d, C], bias [C]."""
    weight = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


def linear_probe(features: torch.Tensor, labels: torch.Tensor, folds: int = 5,
                 l2: float = 1e-3, seed: int = 0, reduce: bool = True) -> float | np.ndarray:
    """Held-out accuracy of a multinomial logistic regression that predicts ``labels`` [n]
    from ``features`` [n, d] (standardised on each training fold, L2 penalty ``l2``, fitted
    by L-BFGS), averaged over ``folds`` random folds: how linearly readable the labels are.
    ``reduce=False`` returns each row's held-out correctness [n] (1.0 or 0.0) instead; with
    the same ``seed`` two feature sets share the folds, so their rows can be paired."""
    features = checks.finite_tensor("features", torch.as_tensor(
        features, dtype=torch.float64).detach().cpu())
    labels = torch.as_tensor(checks.ids(torch.as_tensor(labels).cpu().numpy(), "labels"))
    if features.dim() != 2 or len(features) != len(labels):
        raise ValueError("features must be [n, d] with one label per row")
    if folds < 2 or len(labels) < folds:
        raise ValueError(f"need 2 <= folds <= n, got folds={folds}, n={len(labels)}")
    n_classes = int(labels.max()) + 1
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    correct = np.zeros(len(labels))
    for held_out in order.chunk(folds):
        train = torch.ones(len(labels), dtype=torch.bool)
        train[held_out] = False
        mean, std = features[train].mean(0), features[train].std(0).clamp(min=1e-8)
        x_train, x_test = (features[train] - mean) / std, (features[held_out] - mean) / std
        weight, bias = _fit_logistic(x_train, labels[train], n_classes, l2)
        with torch.no_grad():
            right = (x_test @ weight + bias).argmax(1) == labels[held_out]
        correct[held_out.numpy()] = right.double().numpy()
    return float(correct.mean()) if reduce else correct


# --------------------------------------------------------------------------- classification


def _as_numpy(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return array


def _binary_labels(labels) -> np.ndarray:
    array = _as_numpy(labels, "labels")
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return array


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[inverse]


def auc(labels, scores) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative
    (ties count one half), computed with the Mann-Whitney rank statistic."""
    y, s = _binary_labels(labels), _as_numpy(scores, "scores")
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class UserAUCs:
    """Per-group AUCs: groups [G] the ids kept, auc [G], impressions [G]; ``dropped``
    counts the groups whose labels were all equal (no AUC)."""

    groups: np.ndarray
    auc: np.ndarray
    impressions: np.ndarray
    dropped: int

    @property
    def gauc(self) -> float:
        """Weighted by impressions."""
        return float((self.auc * self.impressions).sum() / self.impressions.sum())

    @property
    def uauc(self) -> float:
        """The plain mean over groups."""
        return float(self.auc.mean())


def user_aucs(labels, scores, groups) -> UserAUCs:
    """The AUC of each group's (user's) impressions, groups in increasing id order; groups
    with one label class only are left out and counted in ``dropped``."""
    y, s = _binary_labels(labels), _as_numpy(scores, "scores")
    g = np.asarray(groups.detach().cpu() if isinstance(groups, torch.Tensor) else groups).ravel()
    if not len(y) == len(s) == len(g):
        raise ValueError(f"lengths differ: {len(y)} labels, {len(s)} scores, {len(g)} groups")
    order = np.argsort(g, kind="stable")
    y, s, g = y[order], s[order], g[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.array([], int)
    ends = np.r_[starts[1:], len(g)]
    kept, aucs, sizes = [], [], []
    for start, end in zip(starts, ends, strict=True):
        group_labels = y[start:end]
        if 0 < group_labels.sum() < len(group_labels):
            kept.append(g[start])
            aucs.append(auc(group_labels, s[start:end]))
            sizes.append(end - start)
    if not kept:
        raise ValueError("GAUC needs at least one group with both positive and negative labels")
    return UserAUCs(np.asarray(kept), np.asarray(aucs), np.asarray(sizes),
                    dropped=len(starts) - len(kept))


def gauc(labels, scores, groups) -> float:
    """Group AUC: the AUC of each user's impressions, averaged with weights equal to the
    user's number of impressions. Users whose labels are all equal have no AUC and are
    left out (of the sum and of the weights)."""
    return user_aucs(labels, scores, groups).gauc


def uauc(labels, scores, groups) -> float:
    """User AUC: the plain mean of the per-user AUCs (users of one label class left out)."""
    return user_aucs(labels, scores, groups).uauc


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of predicted probabilities (clipped to [eps, 1 - eps])."""
    y, p = _binary_labels(labels), _as_numpy(probs, "probs")
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probs must lie in [0, 1]; apply a sigmoid to logits first")
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def paired_difference(a, b) -> tuple[float, float]:
    """Mean of the per-row differences a - b (two models' readouts on the same users) and
    its standard error, for comparing two models on one test set."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or len(diff) < 2:
        raise ValueError("need two equally long 1-D arrays of at least two rows")
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


