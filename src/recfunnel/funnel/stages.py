"""The funnel's stages as plain objects with one interface.

A stage takes the requests and the candidates the stage before it kept ([R, C] world item
ids, -1 for an empty slot; retrieval takes none and reads the whole catalogue) and keeps at
most its ``budget``:

    stage.select(requests, candidates) -> kept [R, budget]

so any stage's model can be swapped for its baseline and the funnel still runs. A stage is
built from a ``Scorer`` (anything that scores candidates for requests) and a selection rule:

* ``Retrieval``: several channels merged with per-channel quotas; an item an earlier channel
  already brought is skipped, and the channel's next item takes its place;
* ``TopK``: the budget best by one scorer (pre-ranking, ranking);
* ``Rerank``: greedy maximal marginal relevance (Carbonell and Goldstein, SIGIR 1998) over
  item vectors, score_i - lambda max_{j chosen} cos(v_i, v_j) with the scores scaled to
  [0, 1] per request; lambda = 0 is a plain sort.

``Funnel.run`` passes requests through the stages in chunks and records what each stage
kept, its wall time and the torch FLOPs it spent (``torch.utils.flop_counter``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from recfunnel import checks

EMPTY = -1  # an empty candidate slot


@dataclass
class Requests:
    """R requests of one day: ids, users, minute of the day, the user's fields [R, 4] (user,
    age, gender, province, each + 1) and the last 50 effective views [R, 50, 3] (item,
    creator, topic, each + 1; 0 is padding, newest last), as RecFlow logs them."""

    request_ids: np.ndarray
    users: np.ndarray
    day: int
    minute: np.ndarray
    user_fields: np.ndarray
    history: np.ndarray

    def __post_init__(self) -> None:
        R = len(self.request_ids)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) and len(value) != R:
                raise ValueError(f"Requests.{f.name} has {len(value)} rows, expected {R}")

    def __len__(self) -> int:
        return len(self.request_ids)

    def rows(self, rows: slice | np.ndarray) -> Requests:
        return Requests(self.request_ids[rows], self.users[rows], self.day, self.minute[rows],
                        self.user_fields[rows], self.history[rows])


class Scorer(Protocol):
    """Scores [R, C] of candidates [R, C] (world item ids; never -1) for requests."""

    def __call__(self, requests: Requests, candidates: np.ndarray) -> np.ndarray: ...


class Stage(Protocol):
    name: str
    budget: int

    def select(self, requests: Requests, candidates: np.ndarray | None) -> np.ndarray:
        """kept [R, budget] world item ids (-1: an empty slot), best first."""
        ...


def _top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """[R, k] column indices of the k best scores, best first (-inf last)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _score_real(scorer: Scorer, requests: Requests, candidates: np.ndarray) -> np.ndarray:
    """Scores of the real candidates, -inf at empty slots."""
    safe = np.where(candidates == EMPTY, 0, candidates)
    scores = np.asarray(scorer(requests, safe), dtype=np.float64)
    return np.where(candidates == EMPTY, -np.inf, scores)


@dataclass
class Channel:
    """A retrieval channel: ``score_all(requests) -> [R, I]`` over the whole catalogue, and
    how many items it may bring (its quota)."""

    name: str
    score_all: Callable[[Requests], np.ndarray]
    quota: int


@dataclass
class Retrieval:
    """Channels merged in order: each brings its ``quota`` best items that no earlier
    channel brought; the budget is the sum of the quotas."""

    channels: Sequence[Channel]
    name: str = "retrieval"

    @property
    def budget(self) -> int:
        return sum(c.quota for c in self.channels)

    def select(self, requests: Requests, candidates: np.ndarray | None = None) -> np.ndarray:
        taken = np.full((len(requests), self.budget), EMPTY, dtype=np.int64)
        filled = np.zeros(len(requests), dtype=np.int64)
        for channel in self.channels:
            checks.positive_int(f"quota of channel {channel.name!r}", channel.quota)
            scores = np.asarray(channel.score_all(requests), dtype=np.float64)
            # its quota plus everything earlier channels took is always enough
            ranked = _top_columns(scores, min(scores.shape[1], channel.quota + self.budget))
            for r in range(len(requests)):
                seen = set(taken[r, :filled[r]].tolist())
                fresh = [i for i in ranked[r].tolist() if i not in seen][:channel.quota]
                taken[r, filled[r]:filled[r] + len(fresh)] = fresh
                filled[r] += len(fresh)
        return taken


@dataclass
class TopK:
    """Keep the ``budget`` best candidates by ``scorer``."""

    name: str
    scorer: Scorer
    budget: int

    def select(self, requests: Requests, candidates: np.ndarray | None) -> np.ndarray:
        if candidates is None:
            raise ValueError(f"stage {self.name!r} needs the previous stage's candidates")
        scores = _score_real(self.scorer, requests, candidates)
        keep = _top_columns(scores, self.budget)
        kept = np.take_along_axis(candidates, keep, 1)
        kept = np.where(np.take_along_axis(scores, keep, 1) == -np.inf, EMPTY, kept)
        return _pad(kept, self.budget)


@dataclass
class Rerank:
    """Greedy MMR: repeatedly take the candidate maximising (1 - lambda) s_i - lambda
    max_j cos(v_i, v_j) over those already chosen (s scaled to [0, 1] per request);
    ``vectors(items) -> [..., D]`` embeds items. lambda = 0 sorts by the score."""

    name: str
    scorer: Scorer
    vectors: Callable[[np.ndarray], torch.Tensor]
    budget: int
    diversity: float = 0.0  # lambda

    def select(self, requests: Requests, candidates: np.ndarray | None) -> np.ndarray:
        if candidates is None:
            raise ValueError(f"stage {self.name!r} needs the previous stage's candidates")
        checks.real("diversity", self.diversity, low=0.0, high=1.0)
        scores = torch.as_tensor(_score_real(self.scorer, requests, candidates))
        real = torch.isfinite(scores)
        low = scores.masked_fill(~real, np.inf).min(1, keepdim=True).values
        high = scores.masked_fill(~real, -np.inf).max(1, keepdim=True).values
        relevance = ((scores - low) / (high - low).clamp(min=1e-12)).masked_fill(~real, -np.inf)
        v = torch.nn.functional.normalize(self.vectors(np.where(candidates == EMPTY, 0,
                                                                candidates)).float(), dim=-1)
        similarity = v @ v.transpose(1, 2)  # [R, C, C]
        R, C = scores.shape
        closest = torch.zeros(R, C, dtype=relevance.dtype)  # max similarity to the chosen
        chosen = torch.zeros(R, C, dtype=torch.bool)
        picks = []
        for step in range(min(self.budget, C)):
            value = (1 - self.diversity) * relevance - self.diversity * closest
            value = value.masked_fill(chosen, -np.inf)
            best = value.argmax(1)  # [R]
            picks.append(best)
            chosen[torch.arange(R), best] = True
            sim = similarity[torch.arange(R), best].to(closest.dtype)  # [R, C]
            closest = torch.maximum(closest, sim) if step else sim
        order = torch.stack(picks, 1).numpy()
        kept = np.take_along_axis(candidates, order, 1)
        kept = np.where(np.take_along_axis(real.numpy(), order, 1), kept, EMPTY)
        return _pad(kept, self.budget)


def _pad(kept: np.ndarray, budget: int) -> np.ndarray:
    if kept.shape[1] >= budget:
        return kept[:, :budget]
    pad = np.full((len(kept), budget - kept.shape[1]), EMPTY, dtype=kept.dtype)
    return np.concatenate([kept, pad], 1)


@dataclass
class Trace:
    """What a funnel did: each stage's kept items [R, budget] (in stage order), its seconds
    and torch FLOPs per request."""

    kept: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)

    @property
    def shown(self) -> np.ndarray:
        return list(self.kept.values())[-1]


class Funnel:
    """Stages in order; each receives what the previous one kept."""

    def __init__(self, stages: Sequence[Stage]):
        if not stages:
            raise ValueError("a funnel needs at least one stage")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must differ, got {names}")
        self.stages = list(stages)

    def replace(self, name: str, stage: Stage) -> Funnel:
        """A copy with stage ``name`` swapped for ``stage`` (an ablation)."""
        names = [s.name for s in self.stages]
        if name not in names:
            raise KeyError(f"no stage {name!r}; the stages are {names}")
        return Funnel([stage if s.name == name else s for s in self.stages])

    @torch.no_grad()
    def run(self, requests: Requests, chunk: int = 256, progress: bool = False,
            desc: str = "funnel") -> Trace:
        checks.positive_int("chunk", chunk)
        trace = Trace()
        parts: dict[str, list[np.ndarray]] = {s.name: [] for s in self.stages}
        for s in self.stages:
            trace.seconds[s.name], trace.flops[s.name] = 0.0, 0.0
        for start in tqdm(range(0, len(requests), chunk), desc=desc, disable=not progress):
            part = requests.rows(slice(start, start + chunk))
            candidates = None
            for stage in self.stages:
                began = time.perf_counter()
                with FlopCounterMode(display=False) as counter:
                    candidates = stage.select(part, candidates)
                trace.seconds[stage.name] += time.perf_counter() - began
                trace.flops[stage.name] += counter.get_total_flops()
                if candidates.shape[1] > stage.budget:
                    raise RuntimeError(f"stage {stage.name!r} kept {candidates.shape[1]} "
                                       f"items, more than its budget {stage.budget}")
                parts[stage.name].append(candidates)
        for stage in self.stages:
            trace.kept[stage.name] = np.concatenate(parts[stage.name])
            trace.seconds[stage.name] /= len(requests)
            trace.flops[stage.name] /= len(requests)
        return trace
