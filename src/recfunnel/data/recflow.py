"""RecFlow's real on-disk format (Liu et al., ICLR 2025, bibkey liu2025recflow): read it in
bounded memory, check it, and write tiny copies of it.

Layout (as RecFlow publishes it)::

    all_stage/YYYY-MM-DD.feather            exposures and every logged stage sample
    realshow/YYYY-MM-DD.feather             the exposures only (realshow == 1)
    seq_effective_50_dict/YYYY-MM-DD.pkl    request_id -> int64 [50, 10] last effective views
    request_id_dict/YYYY-MM-DD.pkl          request_id -> {stage: int64 [n, 8]}
    ubm_seq_request_id_dict/YYYY-MM-DD.pkl  the same, for requests named by the histories
    others/id_cnt.pkl, retrieval_test.feather (or recall_test), coarse_rank_test.feather
          (or prerank_test), rank_test.feather, realshow_video_info.feather,
          realshow_video_info_daily/YYYY-MM-DD.feather

Row tables are read one Arrow record batch at a time (``iter_rows``), so a multi-GB day is
never in memory whole; pickles only as plain containers and arrays (``data.tables``). The
synthetic world (``recfunnel.data.world_export``) writes through ``write_day`` and
``write_others``, so chapters read it and the real data with the same code.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd

from recfunnel import checks
from recfunnel.checks import INT64_MAX
from recfunnel.data.download import DataUnavailableError, download, extract
from recfunnel.data.tables import (
    FEATHER_CHUNK_ROWS,
    FileFormatError,
    check_integer_columns,
    iter_table,
    read_pickle,
    read_table,
    write_pickle,
    write_table,
)

ROW_COLUMNS = (
    "request_id", "request_timestamp", "user_id", "device_id", "age", "gender", "province",
    "video_id", "author_id", "category_level_one", "category_level_two", "upload_type",
    "upload_timestamp", "duration", "realshow", "rerank_pos", "rerank_neg", "rank_pos",
    "rank_neg", "coarse_neg", "prerank_neg", "rank_index", "rerank_index", "playing_time",
    "effective_view", "long_view", "like", "follow", "forward", "comment",
)
STAGE_FLAGS = ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg",
               "prerank_neg")
FEEDBACK = ("effective_view", "long_view", "like", "follow", "forward", "comment")
NULLABLE = ("rank_index", "rerank_index")  # null (not scored by that stage) is read as 0
SEQ_COLUMNS = ("video_id", "author_id", "category_level_two", "category_level_one",
               "upload_type", "upload_timestamp", "duration", "request_timestamp",
               "playing_time", "request_id")  # [50, 10] arrays; valid rows have col 7 > 0
SEQ_SHAPE = (50, len(SEQ_COLUMNS))
STAGE_ARRAY_COLUMNS = ("video_id", "author_id", "duration", "category_level_two",
                       "upload_type", "upload_timestamp", "category_level_one",
                       "effective_view")  # [n, 8] arrays of request_id_dict
REQUIRED_STAGES = ("rerank_pos", "rerank_neg", "rank_pos", "rank_neg")  # the repo indexes them
TEST_FILES = {
    "retrieval": ("retrieval_test.feather", "recall_test.feather"),
    "coarse_rank": ("coarse_rank_test.feather", "prerank_test.feather"),
    "rank": ("rank_test.feather",),
}
TEST_CAPS = {"retrieval": 30, "coarse_rank": 470, "rank": 430}
TEST_COLUMNS = {
    "retrieval": ("request_id", "video_id", "effective_view"),
    "coarse_rank": ("request_id", "user_id", "request_timestamp", "device_id", "age", "gender",
                    "province", "video_id", "author_id", "category_level_two", "upload_type",
                    "upload_timestamp", "category_level_one", "effective_view"),
}
TEST_COLUMNS["rank"] = TEST_COLUMNS["coarse_rank"]
ID_FIELDS = ("user_id", "device_id", "age", "gender", "province", "video_id", "author_id",
             "category_level_one", "category_level_two", "upload_type")
DAY_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


def is_day(name: object) -> bool:
    """Whether ``name`` is a real calendar day written YYYY-MM-DD (nothing before or after)."""
    if not isinstance(name, str) or not DAY_PATTERN.fullmatch(name):
        return False
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


def check_day(day: object) -> str:
    if not is_day(day):
        raise ValueError(f"days are named YYYY-MM-DD after a real date, got {day!r}")
    return day


# RecFlow's files are integer feather tables and plain pickles (``data.tables``); a file that
# breaks the layout raises the same error as any malformed table.
RecFlowFormatError = FileFormatError


# --------------------------------------------------------------------------- the reader


class RecFlow:
    """Reader of one RecFlow folder (real or synthetic)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise RecFlowFormatError(f"{self.root}: no such RecFlow folder")

    def days(self, kind: str = "realshow") -> list[str]:
        """The days present in ``all_stage/`` or ``realshow/``, in date order."""
        folder = self._kind_folder(kind)
        return sorted(p.stem for p in folder.glob("*.feather") if is_day(p.stem))

    def _kind_folder(self, kind: str) -> Path:
        if kind not in ("realshow", "all_stage"):
            raise ValueError(f"kind must be 'realshow' or 'all_stage', got {kind!r}")
        folder = self.root / kind
        if not folder.is_dir():
            raise RecFlowFormatError(f"{folder}: folder is missing")
        return folder

    def _day_file(self, folder: str, day: str, suffix: str) -> Path:
        check_day(day)
        path = self.root / folder / f"{day}{suffix}"
        if not path.exists():
            raise RecFlowFormatError(f"{path}: day {day} is missing from {folder}/")
        return path

    def iter_rows(self, kind: str = "realshow", days: Sequence[str] | None = None,
                  columns: Sequence[str] = ROW_COLUMNS, batch_rows: int = FEATHER_CHUNK_ROWS,
                  memory_pool=None) -> Iterator[tuple[str, pd.DataFrame]]:
        """Yield (day, rows) in date order, ``batch_rows`` rows at a time, every one of
        RecFlow's 30 row columns checked to be present and integer."""
        unknown = [c for c in columns if c not in ROW_COLUMNS]
        if unknown:
            raise ValueError(f"unknown RecFlow columns {unknown}")
        checks.positive_int("batch_rows", batch_rows)
        self._kind_folder(kind)
        for day in days if days is not None else self.days(kind):
            path = self._day_file(kind, day, ".feather")
            for frame in iter_table(path, columns, batch_rows, ROW_COLUMNS, memory_pool,
                                      nullable=NULLABLE):
                yield day, frame

    def read_rows(self, day: str, kind: str = "realshow",
                  columns: Sequence[str] = ROW_COLUMNS) -> pd.DataFrame:
        """A whole day (for small data); use ``iter_rows`` for real days."""
        frames = [frame for _, frame in self.iter_rows(kind, [day], columns)]
        if not frames:  # a day file with no rows
            return pd.DataFrame({c: np.zeros(0, np.int64) for c in columns})
        return pd.concat(frames, ignore_index=True)

    def read_seq(self, day: str) -> dict[int, np.ndarray]:
        """request_id -> int64 [50, 10] (left-padded with zeros, newest last)."""
        path = self._day_file("seq_effective_50_dict", day, ".pkl")
        seqs = read_pickle(path)
        if not seqs:
            raise RecFlowFormatError(f"{path}: the sequence dictionary is empty")
        check_seqs(str(path), seqs)
        return seqs

    def read_request_dict(self, day: str, ubm: bool = False) -> dict[int, dict]:
        """request_id -> {stage label: int64 [n, 8]}; every label must be a RecFlow stage."""
        folder = "ubm_seq_request_id_dict" if ubm else "request_id_dict"
        path = self._day_file(folder, day, ".pkl")
        requests = read_pickle(path)
        check_request_dict(str(path), requests)
        return requests

    def read_id_cnt(self) -> dict[str, int]:
        """field -> number of ids; ``video_id`` and ``photo_id`` alias each other."""
        path = self.root / "others" / "id_cnt.pkl"
        counts = dict(read_pickle(path))
        if "video_id" not in counts and "photo_id" in counts:
            counts["video_id"] = counts["photo_id"]
        counts.setdefault("photo_id", counts.get("video_id"))
        check_id_cnt(str(path), counts)
        return counts

    def read_test(self, which: str) -> pd.DataFrame:
        """The test candidates of ``retrieval``, ``coarse_rank`` or ``rank`` (either of the
        README's and the code's file names)."""
        if which not in TEST_FILES:
            raise ValueError(f"which must be one of {list(TEST_FILES)}, got {which!r}")
        for name in TEST_FILES[which]:
            path = self.root / "others" / name
            if path.exists():
                table = read_table(path, TEST_COLUMNS[which])
                sizes = table.groupby("request_id").size()
                if len(sizes) and sizes.max() > TEST_CAPS[which]:
                    raise RecFlowFormatError(
                        f"{path}: request {sizes.idxmax()} has {sizes.max()} candidates, "
                        f"more than the {TEST_CAPS[which]} the test loaders pad to")
                return table
        raise RecFlowFormatError(f"{self.root / 'others'}: none of {TEST_FILES[which]} exists")

    def read_video_corpus(self, day: str | None = None) -> np.ndarray:
        """Exposed video ids: all of them, or those accumulated up to ``day``."""
        if day is None:
            path = self.root / "others" / "realshow_video_info.feather"
        else:
            path = self._day_file("others/realshow_video_info_daily", day, ".feather")
        return read_table(path, ["video_id"])["video_id"].to_numpy()


# --------------------------------------------------------------------------- the checks
# shared by the reader, ``validate`` and the writers, so a file the writer accepts is one
# the reader accepts


def _check_request_id(where: str, key: object) -> None:
    if isinstance(key, bool) or not isinstance(key, Integral) or not 0 <= key <= INT64_MAX:
        raise RecFlowFormatError(f"{where}: key {key!r} is not a request id (an integer "
                                 "in [0, 2**63))")


def _check_int_array(where: str, array: object, shape: tuple[int | None, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise RecFlowFormatError(f"{where}: expected an int64 array, found "
                                 f"{type(array).__name__}")
    if array.ndim != len(shape) or any(n is not None and n != m
                                       for n, m in zip(shape, array.shape, strict=True)):
        shown = ", ".join("n" if n is None else str(n) for n in shape)
        raise RecFlowFormatError(f"{where}: shape {array.shape}, expected ({shown})")
    if not np.issubdtype(array.dtype, np.integer):
        raise RecFlowFormatError(f"{where}: dtype {array.dtype}, expected int64")
    if array.size and (array.min() < 0 or (array.dtype.kind == "u" and array.max() > INT64_MAX)):
        raise RecFlowFormatError(f"{where}: holds ids outside [0, 2**63)")


def check_seqs(where: str, seqs: object) -> None:
    """request_id -> int64 [50, 10] with non-negative values (seq_effective_50_dict)."""
    if not isinstance(seqs, dict):
        raise RecFlowFormatError(f"{where}: expected a dict, found {type(seqs).__name__}")
    for request_id, seq in seqs.items():
        _check_request_id(where, request_id)
        _check_int_array(f"{where}: request {request_id}'s sequence", seq, SEQ_SHAPE)


def check_request_dict(where: str, requests: object) -> None:
    """request_id -> {stage flag: int64 [n, 8]} (request_id_dict and its ubm twin)."""
    if not isinstance(requests, dict):
        raise RecFlowFormatError(f"{where}: expected a dict, found {type(requests).__name__}")
    for request_id, stages in requests.items():
        _check_request_id(where, request_id)
        if not isinstance(stages, dict):
            raise RecFlowFormatError(f"{where}: request {request_id} maps to "
                                     f"{type(stages).__name__}, expected a dict of stages")
        for label, array in stages.items():
            if label not in STAGE_FLAGS:
                raise RecFlowFormatError(f"{where}: request {request_id} has unknown stage "
                                         f"flag {label!r}; known: {list(STAGE_FLAGS)}")
            _check_int_array(f"{where}: request {request_id}, {label}", array,
                             (None, len(STAGE_ARRAY_COLUMNS)))


def check_id_cnt(where: str, counts: object) -> None:
    """field -> number of ids (a positive integer) for every id field."""
    if not isinstance(counts, dict):
        raise RecFlowFormatError(f"{where}: expected a dict, found {type(counts).__name__}")
    for field in ID_FIELDS:
        value = counts.get(field)
        if value is None:
            raise RecFlowFormatError(f"{where}: field {field!r} is missing")
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise RecFlowFormatError(f"{where}: field {field!r} counts {value!r} ids; "
                                     "expected a positive integer")


def check_rows(where: str, rows: object, columns: Sequence[str] = ROW_COLUMNS) -> None:
    """A rows table: every column present, integer, non-negative and within int64; stage
    flags and feedback 0 or 1."""
    if not isinstance(rows, pd.DataFrame):
        raise RecFlowFormatError(f"{where}: expected a DataFrame, found {type(rows).__name__}")
    check_integer_columns(where, rows, columns)
    for column in columns:
        values = rows[column].to_numpy()
        if len(values) and values.min() < 0:
            raise RecFlowFormatError(f"{where}: column {column!r} holds the negative value "
                                     f"{values.min()} (row {int(values.argmin())})")
        if column in (*STAGE_FLAGS, *FEEDBACK) and len(values) and values.max() > 1:
            raise RecFlowFormatError(f"{where}: column {column!r} must be 0 or 1, found "
                                     f"{values.max()} (row {int(values.argmax())})")


# --------------------------------------------------------------------------- validation


_VALIDATED_COLUMNS = ("request_id", "request_timestamp", *ID_FIELDS, "realshow", *FEEDBACK)


def validate(root: str | Path) -> list[str]:
    """Every violation of the RecFlow layout found in ``root`` (empty when it is sound)."""
    data, problems = RecFlow(root), []

    def check(fn):
        try:
            return fn()
        except (RecFlowFormatError, ValueError) as error:
            problems.append(str(error))
            return None

    days = check(lambda: data.days("all_stage")) or []
    if days != (check(lambda: data.days("realshow")) or []):
        problems.append("all_stage/ and realshow/ hold different days")
    id_cnt = check(data.read_id_cnt) or {}
    owners: dict[int, int] = {}  # request_id -> its user, over all days
    for day in days:
        seqs = check(lambda d=day: data.read_seq(d)) or {}
        requests = check(lambda d=day: data.read_request_dict(d)) or {}
        ubm = check(lambda d=day: data.read_request_dict(d, ubm=True)) or {}
        timestamps: dict[int, int] = {}
        try:  # one record batch at a time: a real day never sits in memory whole
            for _, rows in data.iter_rows("all_stage", [day], columns=_VALIDATED_COLUMNS):
                problems.extend(_row_problems(f"all_stage/{day}", rows, id_cnt, owners))
                timestamps.update(zip(rows["request_id"], rows["request_timestamp"],
                                      strict=True))
        except RecFlowFormatError as error:
            problems.append(str(error))
        for request_id, timestamp in timestamps.items():
            seq = seqs.get(request_id)
            if seq is None:
                problems.append(f"seq_effective_50_dict/{day}: request {request_id} missing")
                break
            valid = seq[:, 7] > 0
            if valid.any() and not valid[valid.argmax():].all():
                problems.append(f"seq_effective_50_dict/{day}: request {request_id} is not "
                                "left-padded")
            if (seq[valid, 7] >= timestamp).any():
                problems.append(f"seq_effective_50_dict/{day}: request {request_id} holds a "
                                "behaviour that is not earlier than the request")
            if request_id not in requests:
                problems.append(f"request_id_dict/{day}: request {request_id} missing")
            elif missing := [s for s in REQUIRED_STAGES if s not in requests[request_id]]:
                problems.append(f"request_id_dict/{day}: request {request_id} lacks "
                                f"{missing[0]!r}")
            for past in seq[valid, 9]:
                if int(past) not in ubm:
                    problems.append(f"ubm_seq_request_id_dict/{day}: request {past} named by "
                                    f"request {request_id}'s history is missing")
                    break
    for which in TEST_FILES:
        check(lambda w=which: data.read_test(w))
    return list(dict.fromkeys(problems))  # each problem once, in the order found


def _row_problems(where: str, rows: pd.DataFrame, id_cnt: dict, owners: dict[int, int]
                  ) -> list[str]:
    """The violations in one batch of rows; ``owners`` collects each request's user."""
    problems = []
    try:
        check_rows(where, rows, _VALIDATED_COLUMNS)
    except RecFlowFormatError as error:
        problems.append(str(error))
    if (rows["long_view"] > rows["effective_view"]).any():
        problems.append(f"{where}: long_view without effective_view")
    unexposed = rows["realshow"] == 0
    if (rows.loc[unexposed, list(FEEDBACK)] != 0).any().any():
        problems.append(f"{where}: feedback on rows that were not shown")
    for field in ID_FIELDS:
        if field in id_cnt and (rows[field] >= id_cnt[field]).any():
            problems.append(f"{where}: {field} above id_cnt ({id_cnt[field]})")
    pairs = rows[["request_id", "user_id"]].drop_duplicates().to_numpy()
    for request_id, user in pairs:
        known = owners.setdefault(int(request_id), int(user))
        if known != user:
            problems.append(f"{where}: request {request_id} belongs to users {known} and "
                            f"{user}; a request id names one request of one user")
            break
    return problems


# --------------------------------------------------------------------------- writing


def write_day(root: str | Path, day: str, rows: pd.DataFrame, seqs: dict, requests: dict,
              ubm_requests: dict) -> None:
    """Write one day in the RecFlow layout: ``rows`` (all 30 columns) to all_stage/, its
    exposures to realshow/, and the three dictionaries. Everything is checked before the
    first file is written."""
    root = Path(root)
    check_day(day)
    check_rows(f"rows for {day}", rows)
    check_seqs(f"seqs for {day}", seqs)
    check_request_dict(f"requests for {day}", requests)
    check_request_dict(f"ubm_requests for {day}", ubm_requests)
    write_table(root / "all_stage" / f"{day}.feather", rows, ROW_COLUMNS)
    write_table(root / "realshow" / f"{day}.feather", rows[rows["realshow"] == 1], ROW_COLUMNS)
    write_pickle(root / "seq_effective_50_dict" / f"{day}.pkl", seqs)
    write_pickle(root / "request_id_dict" / f"{day}.pkl", requests)
    write_pickle(root / "ubm_seq_request_id_dict" / f"{day}.pkl", ubm_requests)


def write_others(root: str | Path, id_cnt: dict[str, int], tests: dict[str, pd.DataFrame],
                 corpus: np.ndarray, daily_corpus: dict[str, np.ndarray]) -> None:
    """Write ``others/``: id counts (with both ``video_id`` and ``photo_id``), the three
    test files under the README's names, and the exposure corpora."""
    others = Path(root) / "others"
    check_id_cnt("id_cnt", id_cnt)
    for which, frame in tests.items():
        if which not in TEST_FILES:
            raise ValueError(f"tests: unknown test file {which!r}; known: {list(TEST_FILES)}")
        check_rows(f"the {which} test", frame, TEST_COLUMNS[which])
    for day in daily_corpus:
        check_day(day)
    corpus = checks.ids(corpus, "corpus")
    daily_corpus = {day: checks.ids(v, f"daily_corpus[{day!r}]") for day, v in daily_corpus.items()}
    write_pickle(others / "id_cnt.pkl", {**id_cnt, "photo_id": id_cnt["video_id"]})
    for which, frame in tests.items():
        write_table(others / TEST_FILES[which][0], frame, TEST_COLUMNS[which])
    write_table(others / "realshow_video_info.feather",
                pd.DataFrame({"video_id": np.asarray(corpus, np.int64)}), ["video_id"])
    for day, ids in daily_corpus.items():
        write_table(others / "realshow_video_info_daily" / f"{day}.feather",
                    pd.DataFrame({"video_id": np.asarray(ids, np.int64)}), ["video_id"])


# --------------------------------------------------------------------------- download


def fetch(archives: dict[str, str], root: str | Path, max_bytes: int = 1 << 40) -> Path:
    """Download RecFlow archives and extract them into ``root``.

    ``archives`` maps each archive's URL to its SHA-256. RecFlow is shared through drive
    links in its README, whose addresses and checksums the authors do not publish in a
    stable form, so the caller passes them. Each archive is checked before it is unpacked,
    and no entry may leave ``root``. Offline, ``DataUnavailableError`` says what to do.
    """
    root = Path(root)
    for url, sha256 in archives.items():
        name = url.rstrip("/").rsplit("/", 1)[-1] or "recflow-archive"
        try:
            archive = download(url, root / "_downloads" / name, sha256)
        except DataUnavailableError as error:
            raise DataUnavailableError(
                f"{error}. RecFlow is large (several GB per day); download it from the links "
                f"in the RecFlow README and extract it into {root}") from None
        extract(archive, root, max_bytes=max_bytes)
    return root
