"""The sequential protocol the retrieval chapters share, as RecBole runs it by default.

Per user, interactions are ordered by time (a *stable* sort on the min-max-normalised
timestamp stored as float32, so ties keep the file's line order, exactly as RecBole 1.2.1
does); the last item is the test target, the one before the validation target, the rest is
training data. A sample is (the last ``max_len`` items before position t, the item at t).
Evaluation ranks every item (``recfunnel.metrics``).

Batches follow the course's conventions: ``user_seq`` [B, L] is left-padded with 0 (the
newest item at ``[:, -1]``), ``is_pad`` is True at padding. The negative samplers (uniform,
popularity with its log-probability for logQ correction) live here too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from recfunnel import checks
from recfunnel.metrics import ranking_metrics
from recfunnel.runtime import epoch_rng
from recfunnel.train import shuffled


@dataclass
class SeqBatch:
    """user_ids [B]; user_seq [B, L] left-padded with 0; is_pad [B, L]; target_ids [B];
    seq_feats [B, L, F] bucketised side features per position (0 at padding), if any."""

    user_ids: torch.Tensor
    user_seq: torch.Tensor
    is_pad: torch.Tensor
    target_ids: torch.Tensor
    seq_feats: torch.Tensor | None = None

    def to(self, device) -> SeqBatch:
        return SeqBatch(*(None if getattr(self, f.name) is None else
                          getattr(self, f.name).to(device) for f in fields(self)))

    def __len__(self) -> int:
        return len(self.user_ids)

    def __getitem__(self, rows: slice) -> SeqBatch:
        """The rows ``rows`` of every field, e.g. ``batch[:512]``."""
        return SeqBatch(*(None if getattr(self, f.name) is None else
                          getattr(self, f.name)[rows] for f in fields(self)))

    def newest(self, length: int) -> SeqBatch:
        """The same users with only their ``length`` newest positions (a model with a
        shorter window sees a truncated history)."""
        if length >= self.user_seq.shape[1]:
            return self
        feats = None if self.seq_feats is None else self.seq_feats[:, -length:]
        return SeqBatch(self.user_ids, self.user_seq[:, -length:], self.is_pad[:, -length:],
                        self.target_ids, feats)

    @torch.no_grad()
    def top_items(self, score_fn, k: int, chunk: int = 512) -> torch.Tensor:
        """[B, k] the ``k`` best-scored item ids of every row, best first, computed ``chunk``
        rows at a time (the same as ``scores(score_fn).topk(k).indices``)."""
        chunk = checks.positive_int("chunk", chunk)
        return torch.cat([score_fn(self[start:start + chunk]).float().cpu().topk(k, dim=1)
                          .indices for start in range(0, len(self), chunk)])

    @torch.no_grad()
    def scores(self, score_fn, chunk: int = 512) -> torch.Tensor:
        """``score_fn(batch) -> [b, V]`` over ``chunk`` rows at a time, so attention over
        long histories never holds every user at once; -> [B, V] on the CPU (B x V floats:
        for metrics use ``next_item_metrics``, for top lists ``top_items``, which never hold
        the whole matrix)."""
        chunk = checks.positive_int("chunk", chunk)
        return torch.cat([score_fn(self[start:start + chunk]).float().cpu()
                          for start in range(0, len(self), chunk)])


@dataclass
class WindowBatch:
    """All-position training (SASRec's way): user_seq [B, L] inputs left-padded with 0,
    target_seq [B, L] the next item at each position (0: no target), is_pad [B, L]."""

    user_seq: torch.Tensor
    is_pad: torch.Tensor
    target_seq: torch.Tensor

    def to(self, device) -> WindowBatch:
        return WindowBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def __len__(self) -> int:
        return len(self.user_seq)

    def __getitem__(self, rows) -> WindowBatch:
        return WindowBatch(*(getattr(self, f.name)[rows] for f in fields(self)))

    @classmethod
    def last_position(cls, samples: SeqBatch) -> WindowBatch:
        """(history, next item) samples as windows whose only target is the newest
        position: an all-position model trained on a last-position model's targets."""
        target_seq = torch.zeros_like(samples.user_seq)
        target_seq[:, -1] = samples.target_ids
        return cls(samples.user_seq, samples.is_pad, target_seq)


def order_by_time(interactions: pd.DataFrame, column: str = "item_id"
                  ) -> dict[int, np.ndarray]:
    """user_id -> ``column`` (item ids by default) oldest first, in RecBole's order.

    User ids and ``column`` must be integers and timestamps finite numbers: a NaN
    timestamp would make the min-max normalisation NaN for every user, and a fractional
    user id would merge users, so both are refused naming the row."""
    checks.columns(interactions, ("user_id", column, "timestamp"), "interactions")
    checks.not_empty(len(interactions), "interactions")
    ts = checks.finite_column(interactions, "timestamp", "interactions")
    span = ts.max() - ts.min()
    normalised = ((ts - ts.min()) / (span if span > 0 else 1.0)).astype(np.float32)
    users = checks.id_column(interactions, "user_id", "interactions", minimum=-checks.INT64_MAX)
    order = np.lexsort((normalised, users))  # stable: ties keep the row order
    items = checks.id_column(interactions, column, "interactions",
                             minimum=-checks.INT64_MAX)[order]
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return {int(sorted_users[s]): items[s:e] for s, e in zip(starts, ends, strict=True)}


def left_pad(histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Histories of any length -> [B, max_len], newest last, 0 in front."""
    max_len = checks.positive_int("max_len", max_len)
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, history in enumerate(histories):
        tail = history[-max_len:]
        if len(tail):
            out[row, max_len - len(tail):] = torch.as_tensor(tail, dtype=torch.long)
    return out


class SequentialSplit:
    """Leave-one-out by time: train prefixes, one validation and one test target per user.

    n_items is the vocabulary size V including the padding id 0 (item ids run 1..V-1).
    Users with fewer than 3 interactions are refused (they would have no training item).
    """

    def __init__(self, interactions: pd.DataFrame, max_len: int = 50,
                 feature_columns: tuple[str, ...] = ()):
        self.max_len = checks.positive_int("max_len", max_len)
        checks.columns(interactions, ("user_id", "item_id", "timestamp", *feature_columns),
                       "interactions")
        checks.not_empty(len(interactions), "interactions")
        item_ids = checks.id_column(interactions, "item_id", "interactions", minimum=1)
        self.n_items = checks.dense_id_space(item_ids, "interactions: column 'item_id'")
        self.sequences = order_by_time(interactions)
        self.feature_columns = feature_columns
        # user -> [n, F] bucket ids (>= 1) of each interaction, in the items' order
        for c in feature_columns:  # bucket ids: 0 is padding
            checks.id_column(interactions, c, "interactions (side-feature buckets)", minimum=1)
        per_column = [order_by_time(interactions, c) for c in feature_columns]
        self.features = {u: np.stack([col[u] for col in per_column], axis=1)
                         for u in self.sequences} if feature_columns else {}
        short = [u for u, seq in self.sequences.items() if len(seq) < 3]
        if short:
            raise ValueError(f"{len(short)} users have fewer than 3 interactions "
                             f"(e.g. user {short[0]}): filter them first")
        self.user_ids = np.array(sorted(self.sequences))

    def checksum(self) -> str:
        """SHA-256 of every user's ordered items: pins the split in tests."""
        digest = hashlib.sha256()
        for user in self.user_ids:
            digest.update(f"{user}:".encode() + self.sequences[user].astype(np.int64).tobytes())
        return digest.hexdigest()

    def fingerprint(self) -> str:
        """SHA-256 of everything a model trained on the split reads: the sequences (the
        ``checksum``), the window, the vocabulary and every side feature."""
        digest = hashlib.sha256(f"{self.checksum()} {self.max_len} {self.n_items} "
                                f"{self.feature_columns}".encode())
        for user in self.user_ids if self.features else ():
            digest.update(self.features[user].astype(np.int64).tobytes())
        return digest.hexdigest()

    def train_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(user of each sample, position of its target in the user's sequence): every
        target from the 2nd item to the 3rd-last."""
        users, positions = [], []
        for user in self.user_ids:
            n = len(self.sequences[user])
            positions.append(np.arange(1, n - 2))
            users.append(np.full(n - 3, user))
        return np.concatenate(users), np.concatenate(positions)

    def batch(self, users: np.ndarray, positions: np.ndarray) -> SeqBatch:
        histories = [self.sequences[u][max(0, p - self.max_len):p]
                     for u, p in zip(users, positions, strict=True)]
        user_seq = left_pad(histories, self.max_len)
        targets = [self.sequences[u][p] for u, p in zip(users, positions, strict=True)]
        seq_feats = None
        if self.feature_columns:
            seq_feats = torch.zeros(len(users), self.max_len, len(self.feature_columns),
                                    dtype=torch.long)
            for row, (u, p) in enumerate(zip(users, positions, strict=True)):
                feats = self.features[u][max(0, p - self.max_len):p]
                if len(feats):
                    seq_feats[row, self.max_len - len(feats):] = torch.as_tensor(feats)
        return SeqBatch(torch.as_tensor(users, dtype=torch.long), user_seq, user_seq == 0,
                        torch.as_tensor(np.asarray(targets), dtype=torch.long), seq_feats)

    def eval_batch(self, split: str) -> SeqBatch:
        """One batch of all users: history and target of ``"valid"`` or ``"test"``."""
        offset = {"valid": 2, "test": 1}.get(split)
        if offset is None:
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        positions = np.array([len(self.sequences[u]) - offset for u in self.user_ids])
        return self.batch(self.user_ids, positions)

    def train_windows(self, stride: int | None = None) -> WindowBatch:
        """Every training target exactly once, as windows of ``max_len`` positions whose
        inputs are the items before each target, cut from each user's training items (all
        but the last two), newest first, ``stride`` targets apart.

        ``stride=None`` (= ``max_len``): windows do not overlap, so the oldest positions of
        a window see a shorter history than ``max_len`` (a target early in a window sees
        only the items of that window). A smaller ``stride`` makes windows overlap: each
        window keeps only its newest ``stride`` targets (the others are 0, no target), so
        every target is still trained once but sees at least ``max_len - stride + 1`` items
        of history (all of it when the user has fewer). ``stride=1`` is RecBole's "every
        prefix is a sample"; it costs ``max_len`` forward positions per target, where
        ``stride=s`` costs ``max_len / s``."""
        stride = self.max_len if stride is None else checks.positive_int("stride", stride)
        inputs, targets = [], []
        for user in self.user_ids:
            train = self.sequences[user][:-2]  # targets are train[1:], inputs train[:-1]
            for end in range(len(train), 1, -stride):
                start = max(0, end - self.max_len - 1)
                window = train[start:end]
                inputs.append(window[:-1])
                owned = window[1:].copy()
                owned[:-stride] = 0  # a newer window trains these with a longer history
                targets.append(owned)
        user_seq, target_seq = left_pad(inputs, self.max_len), left_pad(targets, self.max_len)
        return WindowBatch(user_seq, user_seq == 0, target_seq)

    def train_item_counts(self) -> np.ndarray:
        """[V] how often each item is a training target (for popularity and logQ)."""
        users, positions = self.train_samples()
        targets = np.array([self.sequences[u][p] for u, p in zip(users, positions,
                                                                 strict=True)])
        return np.bincount(targets, minlength=self.n_items)


class TrainSamples(Dataset):
    """The training samples of a split, as a Dataset whose batches are ``SeqBatch``es
    (use ``collate_fn=samples.collate`` in a DataLoader)."""

    def __init__(self, split: SequentialSplit):
        self.split = split
        self.users, self.positions = split.train_samples()

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> SeqBatch:
        indices = np.asarray(indices)
        return self.split.batch(self.users[indices], self.positions[indices])

    def cut_points(self, epoch: int, per_user: int, batch_size: int, seed: int = 0
                   ) -> list[SeqBatch]:
        """One epoch for a model that predicts a single next item per sequence (KuaiFormer's
        query tokens): ``per_user`` random targets of every user (all of a user's targets
        when fewer), shuffled and cut into batches; redrawn for each ``epoch``."""
        if per_user < 1 or batch_size < 1:
            raise ValueError("per_user and batch_size must be positive")
        rng = epoch_rng(seed, epoch)
        starts = np.flatnonzero(np.r_[True, self.users[1:] != self.users[:-1]])
        ends = np.r_[starts[1:], len(self.users)]
        chosen = np.concatenate([start + rng.permutation(end - start)[:per_user]
                                 for start, end in zip(starts, ends, strict=True)])
        rng.shuffle(chosen)
        return [self.collate(list(rows)) for rows in np.split(
            chosen, np.arange(batch_size, len(chosen), batch_size))]


def cut_points(split: SequentialSplit, per_user: int, batch_size: int, seed: int = 0
               ) -> Callable[[int], list[SeqBatch]]:
    """``epoch -> batches`` of ``per_user`` random training targets per user, redrawn each
    epoch (``TrainSamples.cut_points``): what ``train.fit`` takes as ``batches``."""
    samples = TrainSamples(split)
    return lambda epoch: samples.cut_points(epoch, per_user, batch_size, seed)


def every_target(split: SequentialSplit, batch_size: int, seed: int = 0
                 ) -> Callable[[int], list[SeqBatch]]:
    """``epoch -> batches`` of every training target once, as (history, next item)
    samples in a fresh order each epoch (``train.shuffled``)."""
    return shuffled(split.batch(*split.train_samples()), batch_size, seed)


def every_window(split: SequentialSplit, batch_size: int, seed: int = 0,
                 stride: int | None = None) -> Callable[[int], list[WindowBatch]]:
    """``epoch -> batches`` of the split's training windows (SASRec's all-position
    targets, ``SequentialSplit.train_windows(stride)``) in a fresh order each epoch."""
    return shuffled(split.train_windows(stride), batch_size, seed)


def next_item_metrics(model: torch.nn.Module, batch: SeqBatch, ks=(10,), chunk: int = 512,
                      reduce: bool = True) -> dict[str, float] | dict[str, torch.Tensor]:
    """Full-ranking metrics of ``model.score_all`` on ``batch``'s targets, scored and
    ranked ``chunk`` users at a time on the model's device, so memory holds a [chunk, V]
    score matrix, never [B, V]; ``reduce=False`` keeps one value per user."""
    device = next(model.parameters()).device
    chunk = checks.positive_int("chunk", chunk)
    parts = [ranking_metrics(model.score_all(rows.to(device)).float().cpu(), rows.target_ids,
                             ks=ks, reduce=False)
             for rows in (batch[start:start + chunk] for start in range(0, len(batch), chunk))]
    if not parts:
        raise checks.InvalidInputError("batch: has no users to evaluate")
    per_user = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    if reduce:
        return {name: value.mean().item() for name, value in per_user.items()}
    return per_user


# --------------------------------------------------------------------------- negatives


class UniformSampler:
    """Item ids drawn uniformly from 1..V-1 (never the padding id)."""

    def __init__(self, n_items: int, seed: int = 0):
        self.n_items = checks.positive_int("n_items", n_items, minimum=2)  # ids 1..V-1
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(1, self.n_items, shape, generator=self.generator)

    def log_prob(self, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.full(item_ids.shape, -np.log(self.n_items - 1), dtype=torch.float32)


class PopularitySampler:
    """Items drawn with probability proportional to count**alpha (alpha=0.75 is word2vec's
    choice); ``log_prob`` gives log Q(i) for the logQ correction of sampled softmax
    (Yi et al. 2019, bibkey yi2019logq). Items never counted get a count of 1."""

    def __init__(self, counts: np.ndarray, alpha: float = 0.75, seed: int = 0):
        counts = checks.finite(counts, "counts", minimum=0)
        if counts.ndim != 1 or len(counts) < 2:
            raise checks.InvalidInputError("counts: need one count per item id, padding "
                                           "included ([V] with V >= 2)")
        checks.real("alpha", alpha, low=0.0)
        weights = np.maximum(counts, 1.0) ** alpha
        weights[0] = 0.0  # padding
        self.probs = torch.as_tensor(weights / weights.sum(), dtype=torch.float32)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
        n = int(np.prod(shape))
        ids = torch.multinomial(self.probs, n, replacement=True, generator=self.generator)
        return ids.view(shape)

    def log_prob(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.probs.to(item_ids.device)[item_ids].log()


def in_batch_log_q(counts: np.ndarray) -> torch.Tensor:
    """[V] log of each item's share of training targets: the chance it appears as an
    in-batch negative, for the logQ correction of in-batch softmax. Items never seen get a
    count of 1; the padding id gets 0 (it never appears)."""
    counts = checks.finite(counts, "counts", minimum=0)
    if counts.ndim != 1 or len(counts) < 2:
        raise checks.InvalidInputError("counts: need one count per item id, padding included "
                                       "([V] with V >= 2)")
    counts = np.maximum(counts, 1.0)
    log_q = np.log(counts / counts[1:].sum())
    log_q[0] = 0.0
    return torch.as_tensor(log_q, dtype=torch.float32)
