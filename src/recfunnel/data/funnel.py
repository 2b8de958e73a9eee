"""The funnel simulated over a ``World``: requests, six stages, feedback and histories.

Each request's candidates pass retrieval, pre-ranking, ranking and re-ranking, each stage a
noisy model of the true relevance that grows more precise downstream; the exposures get
multi-behaviour feedback (effective view, long view, like, follow, comment, forward, and
gifts on live streams) at configurable rates, and every stage's samples are logged exactly
as RecFlow logs them ([proposed] marks the choices RecFlow's paper leaves open).

    world, log = make_world("smoke")   # World.build + simulate
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recfunnel import checks
from recfunnel.data import recflow
from recfunnel.data.world import (
    BEHAVIOURS,
    ENGAGEMENT_SLOPES,
    WORLD_PRESETS,
    World,
    WorldConfig,
    calibrate_intercept,
    day_start_ms,
    sigmoid,
)

# --------------------------------------------------------------------------- the log


@dataclass
class WorldLog:
    """Everything ``simulate`` produced: RecFlow rows per day (30 columns plus truth and
    extras), the three dictionaries per day, and the test-day files."""

    world: World
    rows: dict[str, pd.DataFrame]  # day -> rows (RecFlow columns + relevance, gift, ...)
    seqs: dict[str, dict]
    requests: dict[str, dict]
    ubm: dict[str, dict]
    calibration: dict[str, float]  # behaviour -> intercept gamma; z_mean, z_std

    def all_rows(self) -> pd.DataFrame:
        return pd.concat([self.rows[d].assign(day=d) for d in self.rows], ignore_index=True)

    def engagement_probability(self, relevance: np.ndarray,
                               behaviour: str = "effective_view") -> np.ndarray:
        """The chance an item of this true relevance would get ``behaviour`` if shown (for
        long view and the interactions: given an effective view), by the model that drew
        the labels. Defined for every logged item, shown or not."""
        if behaviour not in self.calibration:
            raise KeyError(f"unknown behaviour {behaviour!r}; known: {list(BEHAVIOURS)}")
        z = (np.asarray(relevance) - self.calibration["z_mean"]) / self.calibration["z_std"]
        return sigmoid(dict(ENGAGEMENT_SLOPES)[behaviour] * z + self.calibration[behaviour])

    def write_recflow(self, root: str | Path) -> Path:
        """Write the RecFlow layout (``data.world_export.write_recflow``)."""
        from recfunnel.data.world_export import write_recflow

        return write_recflow(self, root)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, best first. [R, C] -> [R, k]"""
    k = min(k, scores.shape[1])
    if k == scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _sample_columns(rng: np.random.Generator, n_rows: int, n_cols: int, k: int) -> np.ndarray:
    """k distinct column indices per row, uniformly at random. -> [R, min(k, n_cols)]"""
    k = min(k, n_cols)
    if k == 0:
        return np.zeros((n_rows, 0), dtype=np.int64)
    return np.argpartition(rng.random((n_rows, n_cols)), k - 1, axis=1)[:, :k]


# --------------------------------------------------------------------------- the funnel


def _run_funnel(world: World, rng: np.random.Generator, users: np.ndarray, day: int,
                minute: np.ndarray) -> dict[str, np.ndarray]:
    """One batch of requests through the six stages. Returns, per logged row: request row,
    item id, flags, stage positions, relevance."""
    cfg = world.cfg
    R = len(users)
    n_ret, n_pre, n_coarse, n_rank, n_rerank = cfg.funnel
    pre_neg, coarse_neg, rank_pos, rank_neg, rerank_pos, rerank_neg = cfg.logged
    noise = cfg.stage_noise
    if cfg.n_items <= cfg.pool_size:
        pool = np.arange(cfg.n_items)
    else:  # [proposed] one random pool per batch, plus every live stream (they are few)
        videos = rng.choice(cfg.n_videos, cfg.pool_size - min(cfg.n_live, cfg.pool_size // 4),
                            replace=False)
        live = cfg.n_videos + rng.choice(cfg.n_live, min(cfg.n_live, cfg.pool_size // 4),
                                         replace=False)
        pool = np.sort(np.concatenate([videos, live]))
    truth = world.relevance(users, pool, day, minute)  # [R, P]

    def stage(candidates: np.ndarray, sigma: float, keep: int):
        """Score candidates [R, C] (pool positions) with this stage's noisy model: the kept
        ones best first [R, keep], the dropped ones in no order [R, C - keep]."""
        noisy = np.take_along_axis(truth, candidates, axis=1)
        noisy = noisy + sigma * rng.normal(size=noisy.shape)
        if keep >= candidates.shape[1]:
            return np.take_along_axis(candidates, _top(noisy, keep), axis=1), candidates[:, :0]
        split = np.argpartition(-noisy, keep - 1, axis=1)
        kept, dropped = split[:, :keep], split[:, keep:]
        best_first = np.argsort(-np.take_along_axis(noisy, kept, axis=1), axis=1, kind="stable")
        kept = np.take_along_axis(kept, best_first, axis=1)
        return (np.take_along_axis(candidates, kept, axis=1),
                np.take_along_axis(candidates, dropped, axis=1))

    retrieved = _top(truth + noise[0] * rng.normal(size=truth.shape), n_ret)  # [R, n_ret]
    pre_kept, pre_dropped = stage(retrieved, noise[1], n_pre)
    coarse_kept, coarse_dropped = stage(pre_kept, noise[2], n_coarse)
    rank_order, _ = stage(coarse_kept, noise[3], n_coarse)  # ranking orders all its input
    rank_kept, rank_dropped = rank_order[:, :n_rank], rank_order[:, n_rank:]
    rerank_order, _ = stage(rank_kept, noise[4], n_rank)
    rerank_kept, rerank_dropped = rerank_order[:, :n_rerank], rerank_order[:, n_rerank:]
    edge_order, _ = stage(rerank_kept, noise[5], n_rerank)
    n_shown = np.clip(rng.binomial(cfg.max_shown, 0.68, R), 1, cfg.max_shown)

    # flags over the ranking stage's input (every item a later stage touched is in it)
    C = rank_order.shape[1]
    flags = {name: np.zeros((R, C), dtype=bool) for name in recflow.STAGE_FLAGS}
    rows_idx = np.arange(R)[:, None]
    position_in = {key: np.full((R, len(pool)), -1) for key in ("rank", "rerank")}
    position_in["rank"][rows_idx, rank_order] = np.arange(C)
    position_in["rerank"][rows_idx, rerank_order] = np.arange(rerank_order.shape[1])
    col_of = position_in["rank"]  # pool position -> column in rank_order

    def mark(name: str, items: np.ndarray) -> None:
        if items.size:
            flags[name][rows_idx, np.take_along_axis(col_of, items, axis=1)] = True

    mark("rank_pos", rank_order[:, :rank_pos])
    mark("rank_neg", np.take_along_axis(rank_dropped, _sample_columns(
        rng, R, rank_dropped.shape[1], rank_neg), axis=1))
    mark("rerank_pos", rerank_order[:, :rerank_pos])
    mark("rerank_neg", np.take_along_axis(rerank_dropped, _sample_columns(
        rng, R, rerank_dropped.shape[1], rerank_neg), axis=1))
    shown = edge_order[:, : cfg.max_shown]
    shown_mask = np.arange(cfg.max_shown)[None, :] < n_shown[:, None]
    flags["realshow"][rows_idx, np.take_along_axis(col_of, shown, axis=1)] |= shown_mask
    logged = np.zeros((R, C), dtype=bool)
    for name in ("rank_pos", "rank_neg", "rerank_pos", "rerank_neg", "realshow"):
        logged |= flags[name]
    rank_index = np.broadcast_to(np.arange(1, C + 1), (R, C))
    rerank_index = np.take_along_axis(position_in["rerank"], rank_order, axis=1) + 1  # 0: none

    r_idx, c_idx = np.nonzero(logged)
    out = {
        "row": r_idx, "pool_pos": rank_order[r_idx, c_idx],
        "rank_index": rank_index[r_idx, c_idx], "rerank_index": rerank_index[r_idx, c_idx],
        "edge_position": np.zeros(len(r_idx), dtype=np.int64),
        **{name: flags[name][r_idx, c_idx] for name in recflow.STAGE_FLAGS},
    }
    # pre-ranking and coarse-ranking negatives: sampled from what those stages dropped
    extra = []
    for name, dropped, k in (("prerank_neg", pre_dropped, pre_neg),
                             ("coarse_neg", coarse_dropped, coarse_neg)):
        picks = np.take_along_axis(dropped, _sample_columns(rng, R, dropped.shape[1], k), 1)
        extra.append((name, np.repeat(np.arange(R), picks.shape[1]), picks.ravel()))
    for name, rows, pool_pos in extra:
        n = len(rows)
        out["row"] = np.concatenate([out["row"], rows])
        out["pool_pos"] = np.concatenate([out["pool_pos"], pool_pos])
        for key in ("rank_index", "rerank_index", "edge_position"):
            out[key] = np.concatenate([out[key], np.zeros(n, dtype=np.int64)])
        for flag in recflow.STAGE_FLAGS:
            out[flag] = np.concatenate([out[flag], np.full(n, flag == name)])
    out["item"] = pool[out["pool_pos"]]
    out["relevance"] = truth[out["row"], out["pool_pos"]]
    out["priority"] = (6 * out["realshow"] + 4 * (out["rerank_pos"] | out["rank_pos"])
                       + 3 * (out["rerank_neg"] | out["rank_neg"]) + 2 * out["coarse_neg"]
                       + out["prerank_neg"])
    return out


def simulate(world: World, batch_requests: int = 512, progress: bool = True) -> WorldLog:
    """Run every day's requests through the funnel, draw feedback on the exposures, and
    build the histories. Deterministic given ``world.cfg.seed`` *and* ``batch_requests``:
    requests are scored ``batch_requests`` at a time and each batch draws its candidate
    pool and stage noise from the day's random stream in turn, so a different batch size
    gives another, equally valid, draw of the same world (part of the seed, like the
    thread count of a training run)."""
    batch_requests = checks.positive_int("batch_requests", batch_requests)
    cfg = world.cfg
    day_seeds = np.random.SeedSequence([cfg.seed, 1]).spawn(cfg.n_days)
    history: dict[int, list[np.ndarray]] = {u: [] for u in range(cfg.n_users)}
    rows_by_day, seqs_by_day, requests_by_day, ubm_by_day = {}, {}, {}, {}
    stage_arrays: dict[int, dict] = {}  # every request's stage arrays, for the UBM dicts
    next_request_id = 0
    rates = dict(cfg.rates)
    calibration: dict[str, float] = {}
    bar = tqdm(total=cfg.n_days, desc="simulating days", disable=not progress)
    for day_index, day in enumerate(cfg.days):
        rng = np.random.default_rng(day_seeds[day_index])
        counts = np.maximum(rng.poisson(cfg.requests_per_user_day, cfg.n_users), 1)
        users = np.repeat(np.arange(cfg.n_users), counts)
        # request times: activity rises through the day and peaks in the evening
        minute_weights = 0.3 + np.sin(np.linspace(0, np.pi, 24 * 60)) ** 2
        minute = rng.choice(24 * 60, len(users), p=minute_weights / minute_weights.sum())
        ms = minute * 60_000 + rng.integers(0, 60_000, len(users))
        order = np.lexsort((users, ms))
        users, minute, ms = users[order], minute[order], ms[order]
        step = np.arange(len(ms))  # make times strictly increasing (a few ms at most)
        ms = np.maximum.accumulate(ms - step) + step
        request_ids = next_request_id + np.arange(len(users))
        next_request_id += len(users)
        timestamps = day_start_ms(day) + ms

        parts = []
        for start in range(0, len(users), batch_requests):
            batch = slice(start, start + batch_requests)
            out = _run_funnel(world, rng, users[batch], day_index, minute[batch])
            out["row"] = out["row"] + start
            parts.append(out)
        log = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        frame = _assemble_rows(world, log, users, request_ids, timestamps)
        frame, gammas = _feedback(world, rng, frame, rates, calibration if day_index else None)
        calibration.update(gammas)
        frame = frame.sort_values(["request_timestamp", "request_id", "priority", "rank_index",
                                   "video_id"], ascending=[True, True, False, True, True],
                                  kind="stable").reset_index(drop=True)
        rows_by_day[day], requests_by_day[day] = frame, _stage_dicts(frame)
        stage_arrays.update(requests_by_day[day])
        seqs_by_day[day] = _histories(frame, history)
        referenced = {int(r) for seq in seqs_by_day[day].values() for r in seq[seq[:, 7] > 0, 9]}
        ubm_by_day[day] = {r: stage_arrays[r] for r in sorted(referenced)}
        bar.update(1)
    bar.close()
    return WorldLog(world, rows_by_day, seqs_by_day, requests_by_day, ubm_by_day, calibration)


def _assemble_rows(world: World, log: dict, users: np.ndarray, request_ids: np.ndarray,
                   timestamps: np.ndarray) -> pd.DataFrame:
    item = log["item"]
    u = users[log["row"]]
    meta = world.item_meta
    frame = pd.DataFrame({
        "request_id": request_ids[log["row"]].astype(np.int64),
        "request_timestamp": timestamps[log["row"]].astype(np.int64),
        "user_id": u.astype(np.int64),
        "device_id": ((u * 7919) % world.cfg.n_users).astype(np.int64),  # a fixed permutation
        "age": world.demographics["age"][u].astype(np.int64),
        "gender": world.demographics["gender"][u].astype(np.int64),
        "province": world.demographics["province"][u].astype(np.int64),
        "video_id": item.astype(np.int64),
        "author_id": world.item_creator[item].astype(np.int64),
        "category_level_one": meta["category_level_one"][item],
        "category_level_two": meta["category_level_two"][item],
        "upload_type": meta["upload_type"][item],
        "upload_timestamp": meta["upload_timestamp"][item],
        "duration": meta["duration_ms"][item],
        **{flag: log[flag].astype(np.int64) for flag in recflow.STAGE_FLAGS},
        "rank_index": log["rank_index"].astype(np.int64),
        "rerank_index": log["rerank_index"].astype(np.int64),
        "relevance": log["relevance"],
        "priority": log["priority"].astype(np.int64),
        "is_live": world.item_is_live[item].astype(np.int64),
    })
    return frame


def _feedback(world: World, rng: np.random.Generator, frame: pd.DataFrame, rates: dict,
              gammas: dict | None) -> tuple[pd.DataFrame, dict]:
    """Watch time and the behaviours, on exposed rows only. Intercepts are
    calibrated by bisection on the first day to hit the target rates, then kept fixed."""
    shown = frame["realshow"].to_numpy() == 1
    found = dict(gammas or {})
    relevance = frame["relevance"].to_numpy()[shown]
    if "z_mean" not in found:  # standardise with the first day's exposures, then keep it
        found["z_mean"], found["z_std"] = float(relevance.mean()), float(relevance.std())
    z = (relevance - found["z_mean"]) / (found["z_std"] + 1e-9)
    slopes = dict(ENGAGEMENT_SLOPES)
    n = shown.sum()

    def draw(name: str, logits: np.ndarray, eligible: np.ndarray, share: float) -> np.ndarray:
        """Bernoulli draws for eligible rows, calibrated so the per-exposure rate is hit."""
        if name not in found:
            target = min(rates[name] / max(share, 1e-9), 0.999)
            found[name] = calibrate_intercept(logits[eligible], target) if eligible.any() else 0.0
        return eligible & (rng.random(len(logits)) < sigmoid(logits + found[name]))

    everyone = np.ones(n, dtype=bool)
    effective = draw("effective_view", slopes["effective_view"] * z, everyone, 1.0)
    long_view = draw("long_view", slopes["long_view"] * z, effective, effective.mean())
    duration = frame["duration"].to_numpy()[shown]
    watch = np.where(effective, 0.3 + 0.7 * rng.beta(2.0, 2.0, n), 0.3 * rng.beta(2.0, 3.0, n))
    watch = np.where(long_view, 1.0 + rng.exponential(0.3, n), np.minimum(watch, 0.999))
    playing = np.floor(watch * duration).astype(np.int64)
    # keep the labels consistent with the watch time at integer precision
    effective = 10 * playing >= 3 * duration
    long_view = long_view & effective & (playing >= duration)
    labels = {"effective_view": effective, "long_view": long_view}
    for name in ("like", "follow", "comment", "forward"):
        labels[name] = draw(name, slopes[name] * z, effective, effective.mean())
    is_live = frame["is_live"].to_numpy()[shown] == 1
    live_views = effective & is_live
    # the gift rate is per effective view of a live stream
    labels["gift"] = draw("gift", slopes["gift"] * z, live_views, 1.0)
    frame = frame.copy()
    frame["playing_time"] = 0
    frame.loc[shown, "playing_time"] = playing
    for name in BEHAVIOURS:
        frame[name] = 0
        frame.loc[shown, name] = labels[name].astype(np.int64)
    return frame, found


def _stage_dicts(frame: pd.DataFrame) -> dict[int, dict]:
    """request_id -> {stage: int64 [n, 8]} in the frame's order (RecFlow's request_id_dict);
    every request holds every stage key, empty when the stage logged nothing."""
    values = frame[list(recflow.STAGE_ARRAY_COLUMNS)].to_numpy(np.int64)
    flags = frame[list(recflow.STAGE_FLAGS)].to_numpy().astype(bool)
    request = frame["request_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]])
    ends = np.r_[starts[1:], len(request)]
    out = {}
    for s, e in zip(starts, ends, strict=True):
        out[int(request[s])] = {name: values[s:e][flags[s:e, j]]
                                for j, name in enumerate(recflow.STAGE_FLAGS)}
    return out


def _histories(frame: pd.DataFrame, history: dict[int, list[np.ndarray]]) -> dict[int, np.ndarray]:
    """Snapshot each request's last 50 effective views (strictly earlier requests only),
    then append the request's own effective views to its user's history."""
    columns = ["video_id", "author_id", "category_level_two", "category_level_one",
               "upload_type", "upload_timestamp", "duration", "request_timestamp",
               "playing_time", "request_id"]
    seqs: dict[int, np.ndarray] = {}
    viewed = frame[frame["effective_view"] == 1]  # rows of one request are contiguous
    values, request = viewed[columns].to_numpy(np.int64), viewed["request_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]]) if len(request) else []
    ends = np.r_[starts[1:], len(request)] if len(request) else []
    viewed_by_request = {int(request[s]): values[s:e] for s, e in zip(starts, ends,
                                                                     strict=True)}
    requests = frame.drop_duplicates("request_id")[["request_id", "user_id"]].to_numpy()
    for request_id, user in requests:
        past = history[int(user)]
        snapshot = np.zeros(recflow.SEQ_SHAPE, dtype=np.int64)
        if past:
            recent = np.concatenate(past[-50:])[-50:]
            snapshot[50 - len(recent):] = recent
        seqs[int(request_id)] = snapshot
        if int(request_id) in viewed_by_request:
            history[int(user)].append(viewed_by_request[int(request_id)])
    return seqs


def make_world(preset: str | WorldConfig = "smoke", **overrides) -> tuple[World, WorldLog]:
    """Build a world and simulate it: ``make_world("cpu", seed=3)``."""
    if isinstance(preset, str):
        cfg = WORLD_PRESETS[checks.one_of("preset", preset, WORLD_PRESETS)]
    elif isinstance(preset, WorldConfig):
        cfg = preset
    else:
        raise checks.InvalidInputError(f"preset: must be a preset name {list(WORLD_PRESETS)} "
                                       f"or a WorldConfig, got {type(preset).__name__}")
    unknown = sorted(set(overrides) - {f.name for f in fields(WorldConfig)})
    if unknown:
        raise checks.InvalidInputError(f"make_world: {unknown[0]!r} is not a WorldConfig "
                                       "field")
    cfg = replace(cfg, **overrides) if overrides else cfg
    world = World.build(cfg)
    return world, simulate(world)
