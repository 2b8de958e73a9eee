"""The funnel measured against the world's truth.

The synthetic world knows every user-item relevance at every minute, so a funnel can be
judged end to end, which no logged dataset allows:

* recall after each stage: the share of the request's ``n_relevant`` truly most relevant
  items of the whole catalogue that the stage kept (non-increasing along the funnel, since
  each stage keeps a subset of what it received);
* expected engagement: the mean probability of an effective view of what is shown, by the
  model that draws the world's labels (``WorldLog.engagement_probability``);
* diversity: distinct topics among what is shown, per item shown;
* cost: seconds and torch FLOPs per request of each stage (``Trace``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recfunnel.data.funnel import WorldLog
from recfunnel.data.world import World, day_start_ms
from recfunnel.funnel.stages import EMPTY, Requests, Trace


def requests_of_day(log: WorldLog, day: str, limit: int | None = None, seed: int = 0
                    ) -> Requests:
    """The requests of ``day`` (a random ``limit`` of them, in time order), with the users'
    fields and the histories the log recorded at request time."""
    rows = log.rows[day].drop_duplicates("request_id")
    if limit is not None and limit < len(rows):
        picked = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
        rows = rows.iloc[picked]
    ids = rows["request_id"].to_numpy()
    seqs = log.seqs[day]
    history = np.zeros((len(ids), 50, 3), dtype=np.int64)
    for r, request_id in enumerate(ids):
        seq = seqs[int(request_id)]
        real = seq[:, 7] > 0
        history[r, real] = seq[real][:, [0, 1, 2]] + 1
    day_index = list(log.rows).index(day)
    minute = (rows["request_timestamp"].to_numpy() - day_start_ms(day)) // 60_000
    fields = rows[["user_id", "age", "gender", "province"]].to_numpy(np.int64) + 1
    return Requests(ids.copy(), rows["user_id"].to_numpy().copy(), day_index, minute, fields,
                    history)


def truly_relevant(world: World, requests: Requests, n_relevant: int, chunk: int = 256
                   ) -> np.ndarray:
    """[R, n_relevant] the catalogue's most relevant items for each request (by the truth)."""
    items = np.arange(world.cfg.n_items)
    out = []
    for start in range(0, len(requests), chunk):
        part = requests.rows(slice(start, start + chunk))
        truth = world.relevance(part.users, items, part.day, part.minute)
        out.append(np.argpartition(-truth, n_relevant - 1, axis=1)[:, :n_relevant])
    return np.concatenate(out)


def stage_recall(trace: Trace, relevant: np.ndarray) -> dict[str, np.ndarray]:
    """stage -> [R] share of the truly relevant items the stage kept."""
    out = {}
    for name, kept in trace.kept.items():
        hits = [len(set(k[k != EMPTY].tolist()) & set(t.tolist()))
                for k, t in zip(kept, relevant, strict=True)]
        out[name] = np.asarray(hits) / relevant.shape[1]
    return out


def expected_engagement(log: WorldLog, requests: Requests, shown: np.ndarray,
                        behaviour: str = "effective_view") -> np.ndarray:
    """[R] mean probability of ``behaviour`` over the items shown (by the world's truth)."""
    world = log.world
    values = np.zeros(len(requests))
    for r in range(len(requests)):
        items = shown[r][shown[r] != EMPTY]
        relevance = world.relevance(requests.users[r:r + 1], items, requests.day,
                                    requests.minute[r:r + 1])[0]
        values[r] = log.engagement_probability(relevance, behaviour).mean()
    return values


def topic_diversity(world: World, shown: np.ndarray) -> np.ndarray:
    """[R] distinct topics among the items shown, divided by the number shown."""
    out = np.zeros(len(shown))
    for r, row in enumerate(shown):
        items = row[row != EMPTY]
        out[r] = len(set(world.item_topic[items].tolist())) / max(len(items), 1)
    return out


def funnel_table(trace: Trace, recall: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per stage: items kept, recall of the truly relevant, ms and MFLOPs per
    request."""
    return pd.DataFrame({
        "kept": {name: int((kept != EMPTY).sum(1).mean()) for name, kept in trace.kept.items()},
        "recall": {name: float(values.mean()) for name, values in recall.items()},
        "ms / request": {name: 1e3 * s for name, s in trace.seconds.items()},
        "MFLOPs / request": {name: f / 1e6 for name, f in trace.flops.items()},
    })
