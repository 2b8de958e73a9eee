"""KuaiLive: real Kuaishou live-streaming logs (Qu et al. 2025, bibkey qu2025kuailive),
read in their published layout, and turned into gift impressions.

The archive ``KuaiLive.zip`` (Zenodo record 16565801) holds, per the dataset's own field
description, ``user.csv``, ``streamer.csv``, ``room.csv`` (live_id, streamer_id,
start_timestamp, end_timestamp, ...), the interaction logs ``click.csv`` (with
watch_live_time), ``comment.csv``, ``like.csv``, ``gift.csv`` (with gift_price) and
``negative.csv`` (exposures without a click), all keyed by user_id, live_id, streamer_id and
a millisecond timestamp; 23,772 users and 452,621 streamers over 21 days. The column names
below are the ones that description lists; the files themselves could not be opened when
this reader was written (no download was possible), so the first real read is also the
check of the layout: every missing column is named with its file.

``gift_impressions`` makes the chapter-8 task from it: every click (a viewer entering a
room) is an impression, labelled 1 when the same viewer sent a gift in the same room at or
after the click and before the room ended. Ids are mapped to 0..n-1. ``event_log`` replays
the logs as chapter 9's event log (``data.streams.EventLog``), from which the same four
data streams are built as from the simulated world.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recfunnel import checks
from recfunnel.data.download import download, install, is_complete
from recfunnel.data.live import GiftLog
from recfunnel.data.movielens import data_home
from recfunnel.data.streams import (
    CLICK,
    COMMENT,
    GIFT,
    LIKE,
    LONG_VIEW,
    LONG_VIEW_S,
    TICK_S,
    EventLog,
)

KUAILIVE_URL = "https://zenodo.org/records/16565801/files/KuaiLive.zip"
KUAILIVE_MAX_BYTES = 8 << 30
KEYS = ("user_id", "live_id", "streamer_id", "timestamp")
FILES = {
    "room.csv": ("live_id", "streamer_id", "start_timestamp", "end_timestamp"),
    "click.csv": (*KEYS, "watch_live_time"),
    "comment.csv": KEYS,
    "like.csv": KEYS,
    "gift.csv": (*KEYS, "gift_price"),
    "user.csv": ("user_id",),
    "streamer.csv": ("streamer_id",),
}
LOGS = ("click", "comment", "like", "gift")
NEGATIVES = ("negative.csv", KEYS)  # exposures without a click: read when present


@dataclass(frozen=True)
class KuaiLive:
    """The tables of KuaiLive, checked: ``rooms`` and one frame per log in ``LOGS``, plus
    the user and streamer side tables as published."""

    rooms: pd.DataFrame
    logs: dict[str, pd.DataFrame]
    users: pd.DataFrame
    streamers: pd.DataFrame
    negatives: pd.DataFrame | None = None


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    try:
        frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise checks.InvalidInputError(f"{name}: the file is empty") from None
    required = FILES.get(name) or dict([NEGATIVES])[name]
    checks.columns(frame, required, name)
    checks.not_empty(len(frame), name)
    for column in required:
        if column.endswith("_id"):
            frame[column] = checks.id_column(frame, column, name)
        elif column in ("timestamp", "start_timestamp", "end_timestamp", "gift_price",
                        "watch_live_time"):
            frame[column] = checks.finite_column(frame, column, name, minimum=0)
    return frame


def read_kuailive(folder: str | Path) -> KuaiLive:
    """The files of KuaiLive in ``folder`` (or ``folder/KuaiLive``). Raises
    ``InvalidInputError`` naming the file and column when a file is not in the published
    layout, and when a room ends before it starts."""
    folder = Path(folder)
    if not (folder / "room.csv").exists() and (folder / "KuaiLive" / "room.csv").exists():
        folder = folder / "KuaiLive"
    rooms = _read(folder, "room.csv")
    bad = rooms["end_timestamp"].to_numpy() < rooms["start_timestamp"].to_numpy()
    if bad.any():
        row = checks.first_bad(bad)
        raise checks.InvalidInputError(
            f"room.csv: end_timestamp before start_timestamp at row {row} (live_id "
            f"{rooms['live_id'].iloc[row]})")
    logs = {name: _read(folder, f"{name}.csv").sort_values("timestamp", kind="stable")
            .reset_index(drop=True) for name in LOGS}
    negatives = (_read(folder, NEGATIVES[0]).sort_values("timestamp", kind="stable")
                 .reset_index(drop=True) if (folder / NEGATIVES[0]).exists() else None)
    return KuaiLive(rooms=rooms, logs=logs, users=_read(folder, "user.csv"),
                    streamers=_read(folder, "streamer.csv"), negatives=negatives)


def gift_impressions(data: KuaiLive) -> GiftLog:
    """Every click as an impression, labelled by a gift of the same viewer in the same
    room at or after the click and before the room's end; time-ordered, ids 0..n-1."""
    clicks = data.logs["click"][["user_id", "live_id", "streamer_id", "timestamp"]]
    ends = data.rooms[["live_id", "end_timestamp"]].drop_duplicates("live_id")
    gifts = data.logs["gift"][["user_id", "live_id", "timestamp"]].rename(
        columns={"timestamp": "gift_time"})
    pairs = clicks.reset_index().merge(gifts, on=["user_id", "live_id"]).merge(
        ends, on="live_id", how="left")
    after = (pairs["gift_time"] >= pairs["timestamp"]) & ~(
        pairs["gift_time"] > pairs["end_timestamp"])
    gifted = np.zeros(len(clicks), dtype=np.int8)
    gifted[pairs.loc[after, "index"].to_numpy()] = 1
    users, user_ids = pd.factorize(clicks["user_id"], sort=True)
    streamers, streamer_ids = pd.factorize(clicks["streamer_id"], sort=True)
    return GiftLog(user=users.astype(np.int64), streamer=streamers.astype(np.int64),
                   time=clicks["timestamp"].to_numpy(np.float64), gift=gifted,
                   n_users=len(user_ids), n_streamers=len(streamer_ids))


def event_log(data: KuaiLive) -> EventLog:
    """KuaiLive replayed as chapter 9's event log. Every click is a clicked impression, every
    row of ``negative.csv`` one without a click (without that file the click task has no
    negative: refused). A view lasts ``watch_live_time`` (read as milliseconds), closed at
    the room's end and at the last event; a view of 60 s is a long view; a comment, like or
    gift belongs to the viewer's latest click in the same room before it, if the view was
    still open. A "room" of the ranker is the streamer (a live_id lasts one session). Times
    are seconds from the first impression."""
    if data.negatives is None:
        raise checks.InvalidInputError("negative.csv is missing: without exposures that were "
                                       "not clicked the click task has no negatives")
    keys = ["user_id", "live_id", "streamer_id", "timestamp"]
    clicks = data.logs["click"].assign(clicked=True)
    shown = pd.concat([clicks[[*keys, "watch_live_time", "clicked"]],
                       data.negatives[keys].assign(watch_live_time=0.0, clicked=False)])
    shown = shown.sort_values("timestamp", kind="stable").reset_index(drop=True)
    ends = data.rooms.drop_duplicates("live_id").set_index("live_id")["end_timestamp"]
    start = shown["timestamp"].min()
    time = (shown["timestamp"].to_numpy(np.float64) - start) / 1_000
    stay = shown["watch_live_time"].to_numpy(np.float64) / 1_000
    room_end = (shown["live_id"].map(ends).to_numpy(np.float64) - start) / 1_000
    events = [(data.logs[name], task) for name, task in (("comment", COMMENT), ("like", LIKE),
                                                         ("gift", GIFT))]
    last = max([time.max(), *((f["timestamp"].max() - start) / 1_000 for f, _ in events)])
    horizon = (np.floor(last / TICK_S) + 1) * TICK_S
    exit_time = np.minimum(time + stay, np.nan_to_num(room_end, nan=horizon))
    exit_time = np.clip(exit_time, time, horizon)
    exit_time[~shown["clicked"].to_numpy()] = time[~shown["clicked"].to_numpy()]
    views = shown.assign(view=np.arange(len(shown)))[shown["clicked"].to_numpy()]
    entered = views["view"].to_numpy()
    rows, tasks, times = [entered], [np.full(len(entered), CLICK)], [time[entered]]
    long = entered[exit_time[entered] - time[entered] >= LONG_VIEW_S]
    rows.append(long)
    tasks.append(np.full(len(long), LONG_VIEW))
    times.append(time[long] + LONG_VIEW_S)
    for frame, task in events:
        matched = pd.merge_asof(frame[keys].sort_values("timestamp"),
                                views[[*keys, "view"]].sort_values("timestamp"),
                                on="timestamp", by=["user_id", "live_id"],
                                direction="backward").dropna(subset=["view"])
        view = matched["view"].to_numpy(np.int64)
        at = (matched["timestamp"].to_numpy(np.float64) - start) / 1_000
        inside = at <= exit_time[view]
        rows.append(view[inside])
        tasks.append(np.full(inside.sum(), task))
        times.append(at[inside])
    row, task, at = (np.concatenate(x) for x in (rows, tasks, times))
    order = np.argsort(at, kind="stable")
    users, _ = pd.factorize(shown["user_id"], sort=True)
    rooms, _ = pd.factorize(shown["streamer_id"], sort=True)
    return EventLog(user=users.astype(np.int64), room=rooms.astype(np.int64), time=time,
                    clicked=shown["clicked"].to_numpy(), exit=exit_time,
                    event_impression=row[order], event_task=task[order], event_time=at[order],
                    n_users=int(users.max()) + 1, n_rooms=int(rooms.max()) + 1, horizon=horizon)


def load_kuailive() -> KuaiLive:
    """KuaiLive, downloaded once into ``data_home()``; raises ``DataUnavailableError``
    offline. The publisher gives no checksum: ``read_kuailive``'s checks stand in."""
    home = data_home() / "KuaiLive"
    if not is_complete(home):
        archive = download(KUAILIVE_URL, data_home() / "KuaiLive.zip", checksum=None)
        install(archive, data_home(), "KuaiLive", ("room.csv", "gift.csv", "click.csv"),
                max_bytes=KUAILIVE_MAX_BYTES)
    return read_kuailive(home)
