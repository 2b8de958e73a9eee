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
after the click and before the room ended. Ids are mapped to 0..n-1.
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


@dataclass(frozen=True)
class KuaiLive:
    """The tables of KuaiLive, checked: ``rooms`` and one frame per log in ``LOGS``, plus
    the user and streamer side tables as published."""

    rooms: pd.DataFrame
    logs: dict[str, pd.DataFrame]
    users: pd.DataFrame
    streamers: pd.DataFrame


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    try:
        frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise checks.InvalidInputError(f"{name}: the file is empty") from None
    checks.columns(frame, FILES[name], name)
    checks.not_empty(len(frame), name)
    for column in FILES[name]:
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
    return KuaiLive(rooms=rooms, logs=logs, users=_read(folder, "user.csv"),
                    streamers=_read(folder, "streamer.csv"))


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


def load_kuailive() -> KuaiLive:
    """KuaiLive, downloaded once into ``data_home()``; raises ``DataUnavailableError``
    offline. The publisher gives no checksum: ``read_kuailive``'s checks stand in."""
    home = data_home() / "KuaiLive"
    if not is_complete(home):
        archive = download(KUAILIVE_URL, data_home() / "KuaiLive.zip", checksum=None)
        install(archive, data_home(), "KuaiLive", ("room.csv", "gift.csv", "click.csv"),
                max_bytes=KUAILIVE_MAX_BYTES)
    return read_kuailive(home)
