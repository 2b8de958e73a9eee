"""KuaiRand-Pure: real Kuaishou logs with many feedback signals per impression
(Gao et al. 2022, bibkey gao2022kuairand), read into the same ``Impressions`` the
synthetic multi-task world produces.

The archive (45 MB, 194 MB unpacked) holds, in ``KuaiRand-Pure/data/``, the standard logs
``log_standard_4_08_to_4_21_pure.csv`` and ``log_standard_4_22_to_5_08_pure.csv`` (one row
per impression of the normal feed), a log of randomly exposed videos (not used here), and
``user_features_pure.csv`` / ``video_features_basic_pure.csv``. The eight tasks:

    click (is_click), effective_view (derived: play >= 7 s or >= half the video [proposed]),
    long_view, like (is_like), follow, comment, forward, profile_enter

grouped as HoME groups them: watch = click, effective view, long view; interaction = the
rest. Play time and the stay times are outcomes of the impression, never features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recfunnel import checks
from recfunnel.data.download import download, install, is_complete
from recfunnel.data.impressions import Impressions
from recfunnel.data.movielens import data_home

KUAIRAND_URL = "https://zenodo.org/records/10439422/files/KuaiRand-Pure.tar.gz"
KUAIRAND_MAX_BYTES = 1 << 30  # the archive unpacks to 194 MB
LOG_FILES = ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv")
USER_FILE, VIDEO_FILE = "user_features_pure.csv", "video_features_basic_pure.csv"
LOG_COLUMNS = ("user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
               "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
               "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
               "is_rand", "tab")
USER_FIELDS = ("user_active_degree", "is_live_streamer", "is_video_author",
               "follow_user_num_range", "fans_user_num_range", "register_days_range")
VIDEO_FIELDS = ("author_id", "video_type", "upload_type", "music_type")
TASK_COLUMNS = {"click": "is_click", "long_view": "long_view", "like": "is_like",
                "follow": "is_follow", "comment": "is_comment", "forward": "is_forward",
                "profile_enter": "is_profile_enter"}
TASKS = ("click", "effective_view", "long_view", "like", "follow", "comment", "forward",
         "profile_enter")
GROUPS = {"watch": ("click", "effective_view", "long_view"),
          "interaction": ("like", "follow", "comment", "forward", "profile_enter")}
EFFECTIVE_VIEW_MS = 7_000  # [proposed]: or at least half of the video


def _read(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    try:
        frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise checks.InvalidInputError(f"{path.name}: the file is empty") from None
    checks.columns(frame, required, path.name)
    checks.not_empty(len(frame), path.name)
    return frame


def _check_log(name: str, log: pd.DataFrame) -> pd.DataFrame:
    """One standard log, checked: ids present, labels 0/1, play and video time finite and
    not negative (a NaN play time would silently read as "no effective view")."""
    for column in ("user_id", "video_id", "date", "hourmin", "time_ms"):
        log[column] = checks.id_column(log, column, name)
    for column in (*TASK_COLUMNS.values(), "is_rand"):
        log[column] = checks.binary_column(log, column, name)
    for column in ("play_time_ms", "duration_ms"):
        log[column] = checks.finite_column(log, column, name, minimum=0)
    return log


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Contiguous ids 0..n-1 for any categorical column (missing values are one category)."""
    codes, uniques = pd.factorize(values.astype("string").fillna("<missing>"), sort=True)
    return codes.astype(np.int64), len(uniques)


def read_kuairand(folder: str | Path) -> Impressions:
    """The standard logs of KuaiRand-Pure in ``folder`` (or ``folder/data``), joined with the
    user and video features. Rows are ordered by time; ``days`` counts calendar days from
    the first, so ``Impressions.split`` holds out the last days. Raises ``ValueError``
    naming the file and column when a file does not have the published layout."""
    folder = Path(folder)
    if not (folder / LOG_FILES[0]).exists() and (folder / "data" / LOG_FILES[0]).exists():
        folder = folder / "data"
    log = pd.concat([_check_log(name, _read(folder / name, LOG_COLUMNS)) for name in LOG_FILES],
                    ignore_index=True)
    log = log[log["is_rand"] == 0].sort_values("time_ms", kind="stable").reset_index(drop=True)
    users = _read(folder / USER_FILE, ("user_id", *USER_FIELDS))
    videos = _read(folder / VIDEO_FILE, ("video_id", *VIDEO_FIELDS))
    users["user_id"] = checks.id_column(users, "user_id", USER_FILE)
    videos["video_id"] = checks.id_column(videos, "video_id", VIDEO_FILE)
    users, videos = users.drop_duplicates("user_id"), videos.drop_duplicates("video_id")
    rows = log.merge(users[["user_id", *USER_FIELDS]], on="user_id", how="left").merge(
        videos[["video_id", *VIDEO_FIELDS]], on="video_id", how="left")

    fields = ("user_id", "video_id", "tab", "hour", *VIDEO_FIELDS, *USER_FIELDS)
    rows["hour"] = rows["hourmin"] // 100
    columns, cardinalities = [], []
    for name in fields:
        codes, n = _codes(rows[name])
        columns.append(codes)
        cardinalities.append(n)

    play, duration = rows["play_time_ms"].to_numpy(), rows["duration_ms"].to_numpy()
    labels = {task: rows[column].to_numpy() for task, column in TASK_COLUMNS.items()}
    labels["effective_view"] = (play >= EFFECTIVE_VIEW_MS) | (play >= 0.5 * duration)
    dates = pd.to_datetime(rows["date"].astype(str), format="%Y%m%d")
    return Impressions(
        features=np.stack(columns, axis=1), cardinalities=tuple(cardinalities), fields=fields,
        labels=np.stack([labels[t] for t in TASKS], axis=1).astype(np.int8), tasks=TASKS,
        users=columns[0], days=(dates - dates.min()).dt.days.to_numpy().astype(np.int64),
        groups=GROUPS)


def load_kuairand() -> Impressions:
    """KuaiRand-Pure, downloaded once into ``data_home()``; raises ``DataUnavailableError``
    offline. The publisher gives no checksum: ``read_kuairand``'s column checks stand in."""
    home = data_home() / "KuaiRand-Pure"
    if not is_complete(home):  # an interrupted extraction is done again
        archive = download(KUAIRAND_URL, data_home() / "KuaiRand-Pure.tar.gz", checksum=None)
        install(archive, data_home(), "KuaiRand-Pure",
                tuple(f"data/{name}" for name in (*LOG_FILES, USER_FILE, VIDEO_FILE)),
                max_bytes=KUAIRAND_MAX_BYTES)
    return read_kuairand(home)
