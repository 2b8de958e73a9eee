"""Bad input to the loaders (MovieLens, KuaiRand, the sequential protocol, RecFlow's reader
and validator): every case is refused with a message that names the file, column or
argument, or, where noted, has a documented correct behaviour."""

import pickle
import weakref

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from real_formats import write_kuairand, write_ml1m
from refusals import refused

from recfunnel import checks
from recfunnel.data import kuairand, recflow
from recfunnel.data.movielens import parse_ml1m
from recfunnel.data.recflow import RecFlow
from recfunnel.data.sequences import SequentialSplit, order_by_time

DAY = "2024-01-13"


def interactions(n_users=4, per_user=5, **columns):
    users = np.repeat(np.arange(1, n_users + 1), per_user)
    frame = pd.DataFrame({"user_id": users, "item_id": np.arange(len(users)) % 9 + 1,
                          "timestamp": np.arange(len(users), dtype=np.int64)})
    for name, value in columns.items():
        frame[name] = value
    return frame


def with_row(frame, column, row, value):
    frame = frame.copy()
    if not isinstance(value, (int, np.integer)):
        frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


# --------------------------------------------------------------------------- sequences

SEQUENCE_CASES = {
    "NaN timestamp": (lambda: with_row(interactions(), "timestamp", 3, np.nan), {},
                      ("'timestamp'", "row 3")),
    "infinite timestamp": (lambda: with_row(interactions(), "timestamp", 0, np.inf), {},
                           ("'timestamp'", "row 0")),
    "text timestamp": (lambda: with_row(interactions(), "timestamp", 2, "noon"), {},
                       ("'timestamp'", "numeric")),
    "fractional user id": (lambda: with_row(interactions(), "user_id", 6, 1.5), {},
                           ("'user_id'", "row 6", "whole")),
    "missing user id": (lambda: with_row(interactions(), "user_id", 4, None), {},
                        ("'user_id'", "row 4")),
    "a missing nullable user id": (lambda: interactions().astype({"user_id": "Int64"}).pipe(
        lambda f: f.assign(user_id=f["user_id"].mask(f.index == 2))), {},
                                   ("'user_id'", "row 2", "missing")),
    "string user ids": (lambda: interactions().astype({"user_id": str}), {},
                        ("'user_id'", "integers")),
    "fractional item id": (lambda: with_row(interactions(), "item_id", 1, 2.5), {},
                           ("'item_id'", "row 1", "whole")),
    "item id 0 (padding)": (lambda: with_row(interactions(), "item_id", 5, 0), {},
                            ("'item_id'", "row 5", "start at 1")),
    "negative item id": (lambda: with_row(interactions(), "item_id", 5, -4), {},
                         ("'item_id'", "row 5")),
    "empty frame": (lambda: interactions().iloc[:0], {}, ("interactions", "no rows")),
    "no user column": (lambda: interactions().drop(columns="user_id"), {},
                       ("'user_id'", "missing")),
    "no timestamp column": (lambda: interactions().drop(columns="timestamp"), {},
                            ("'timestamp'", "missing")),
    "not a frame": (lambda: [(1, 2, 3)], {}, ("interactions", "DataFrame")),
    "max_len 0": (interactions, {"max_len": 0}, ("max_len", "at least 1")),
    "max_len negative": (interactions, {"max_len": -5}, ("max_len",)),
    "max_len fractional": (interactions, {"max_len": 2.5}, ("max_len", "integer")),
    "max_len text": (interactions, {"max_len": "50"}, ("max_len", "integer")),
    "feature bucket 0": (lambda: interactions(genre=0), {"feature_columns": ("genre",)},
                         ("'genre'", "start at 1")),
    "feature bucket NaN": (lambda: with_row(interactions(genre=1), "genre", 2, np.nan),
                           {"feature_columns": ("genre",)}, ("'genre'", "row 2")),
    "feature column missing": (interactions, {"feature_columns": ("decade",)},
                               ("'decade'", "missing")),
    "sparse item ids (10**10)": (lambda: with_row(interactions(), "item_id", 0, 10**10), {},
                                 ("'item_id'", "remap")),
    "users with two interactions": (lambda: interactions(per_user=2), {},
                                    ("fewer than 3 interactions",)),
}


@pytest.mark.parametrize("case", SEQUENCE_CASES)
def test_the_sequential_split_refuses(case):
    make, kwargs, names = SEQUENCE_CASES[case]
    refused(lambda: SequentialSplit(make(), **kwargs), *names)


def test_a_nan_timestamp_is_refused_by_order_by_time_itself():
    # before: one NaN made every normalised timestamp NaN, and no user was ordered by time
    refused(lambda: order_by_time(with_row(interactions(), "timestamp", 0, np.nan)),
            "'timestamp'", "row 0")


def test_whole_float_ids_are_read_as_the_same_ids():
    frame = interactions()
    exact = SequentialSplit(frame)
    floats = SequentialSplit(frame.astype({"user_id": float, "item_id": float}))
    assert floats.checksum() == exact.checksum()


def test_remap_makes_a_sparse_id_space_dense_and_keeps_id_order():
    frame = interactions()
    frame["item_id"] = frame["item_id"] * 10**9
    dense = checks.remap(frame, "item_id")
    assert sorted(dense["item_id"].unique()) == list(range(1, frame["item_id"].nunique() + 1))
    assert (np.argsort(dense["item_id"].to_numpy(), kind="stable") ==
            np.argsort(frame["item_id"].to_numpy(), kind="stable")).all()
    assert SequentialSplit(dense).n_items == frame["item_id"].nunique() + 1


# --------------------------------------------------------------------------- MovieLens-1M

GOOD_RATING = "1::1::5::978300760"
ML1M_CASES = {
    "three fields": (["1::1::5::978300760", "1::2::5"], None, ("ratings.dat", "line 2")),
    "text user id": (["x::1::5::978300760"], None, ("ratings.dat", "'user_id'")),
    "fractional item id": (["1::1.5::5::978300760"], None, ("ratings.dat", "'item_id'")),
    "item id 0": (["1::0::5::978300760"], None, ("ratings.dat", "'item_id'", "start at 1")),
    "text rating": (["1::1::five::978300760"], None, ("ratings.dat", "'rating'")),
    "fractional timestamp": (["1::1::5::97.5"], None, ("ratings.dat", "'timestamp'")),
    "movie without genres": ([GOOD_RATING], ["1::Film (1995)"], ("movies.dat", "line 1")),
    "text movie id": ([GOOD_RATING], ["one::Film (1995)::Drama"], ("movies.dat", "'item_id'")),
}


@pytest.mark.parametrize("case", ML1M_CASES)
def test_the_ml1m_parser_refuses(case, tmp_path):
    ratings, movies, names = ML1M_CASES[case]
    write_ml1m(tmp_path, ratings, movies)
    refused(lambda: parse_ml1m(tmp_path), *names)


def test_an_empty_ratings_file_is_refused(tmp_path):
    write_ml1m(tmp_path)
    (tmp_path / "ratings.dat").write_text("")
    refused(lambda: parse_ml1m(tmp_path), "ratings.dat")


def test_the_ml1m_parser_reads_its_layout(tmp_path):
    data = parse_ml1m(write_ml1m(tmp_path))
    assert len(data.interactions) == 35 and data.items["year"].tolist()[:2] == [1991, 1992]


# --------------------------------------------------------------------------- KuaiRand


def spoil_log(folder, change):
    path = folder / kuairand.LOG_FILES[0]
    log = pd.read_csv(path)
    change(log).to_csv(path, index=False)


def at(column, row, value):
    def change(log):
        log[column] = log[column].astype(object)
        log.loc[row, column] = value
        return log
    return change


KUAIRAND_CASES = {
    "NaN play time": (at("play_time_ms", 3, np.nan), ("'play_time_ms'", "row 3")),
    "negative play time": (at("play_time_ms", 5, -100), ("'play_time_ms'", ">= 0")),
    "negative duration": (at("duration_ms", 2, -1), ("'duration_ms'", ">= 0")),
    "NaN duration": (at("duration_ms", 7, np.nan), ("'duration_ms'", "row 7")),
    "NaN user id": (at("user_id", 1, np.nan), ("'user_id'", "row 1")),
    "text video id": (at("video_id", 0, "abc"), ("'video_id'",)),
    "a click of 2": (at("is_click", 4, 2), ("'is_click'", "0 or 1")),
    "a missing like": (at("is_like", 4, np.nan), ("'is_like'", "0 or 1")),
    "no play-time column": (lambda log: log.drop(columns="play_time_ms"), ("'play_time_ms'",
                                                                           "missing")),
    "header only": (lambda log: log.iloc[:0], ("log_standard_4_08", "no rows")),
}


@pytest.mark.parametrize("case", KUAIRAND_CASES)
def test_the_kuairand_reader_refuses(case, tmp_path):
    change, names = KUAIRAND_CASES[case]
    write_kuairand(tmp_path)
    spoil_log(tmp_path, change)
    refused(lambda: kuairand.read_kuairand(tmp_path), kuairand.LOG_FILES[0], *names)


def test_an_empty_kuairand_file_is_refused(tmp_path):
    write_kuairand(tmp_path)
    (tmp_path / kuairand.USER_FILE).write_text("")
    refused(lambda: kuairand.read_kuairand(tmp_path), kuairand.USER_FILE, "empty")


def test_a_missing_user_id_in_the_user_features_is_refused(tmp_path):
    write_kuairand(tmp_path)
    users = pd.read_csv(tmp_path / kuairand.USER_FILE)
    users["user_id"] = users["user_id"].astype(object)
    users.loc[2, "user_id"] = None
    users.to_csv(tmp_path / kuairand.USER_FILE, index=False)
    refused(lambda: kuairand.read_kuairand(tmp_path), kuairand.USER_FILE, "'user_id'")


# --------------------------------------------------------------------------- RecFlow


def rewrite_pickle(root, folder, change):
    path = root / folder / f"{DAY}.pkl"
    value = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps(change(value)))


def first_key(d):
    return next(iter(d))


def set_first(d, value):
    d[first_key(d)] = value
    return d


def set_first_stage(d, label, value):
    d[first_key(d)][label] = value
    return d


READER_CASES = {
    "sequence as a list": ("seq_effective_50_dict", lambda d: set_first(d, [[0] * 10] * 50),
                           lambda data: data.read_seq(DAY), ("found list",)),
    "sequence of floats": ("seq_effective_50_dict",
                           lambda d: set_first(d, np.full((50, 10), np.nan)),
                           lambda data: data.read_seq(DAY), ("dtype float64",)),
    "negative ids in a sequence": ("seq_effective_50_dict",
                                   lambda d: set_first(d, -np.ones((50, 10), np.int64)),
                                   lambda data: data.read_seq(DAY), ("outside [0, 2**63)",)),
    "a text request id": ("seq_effective_50_dict",
                          lambda d: {"r1": np.zeros((50, 10), np.int64)},
                          lambda data: data.read_seq(DAY), ("'r1'", "request id")),
    "a stage that is a list": ("request_id_dict",
                               lambda d: set_first_stage(d, "realshow", [[1] * 8]),
                               lambda data: data.read_request_dict(DAY), ("realshow",
                                                                          "found list")),
    "a stage of NaN floats": ("request_id_dict",
                              lambda d: set_first_stage(d, "rank_pos", np.full((2, 8), np.nan)),
                              lambda data: data.read_request_dict(DAY), ("rank_pos",
                                                                         "float64")),
    "a stage of 7 columns": ("request_id_dict",
                             lambda d: set_first_stage(d, "rank_neg", np.zeros((2, 7), np.int64)),
                             lambda data: data.read_request_dict(DAY), ("rank_neg", "(n, 8)")),
    "a negative request id": ("request_id_dict", lambda d: {-3: d[first_key(d)]},
                              lambda data: data.read_request_dict(DAY), ("-3",)),
    "a ubm stage that is a list": ("ubm_seq_request_id_dict",
                                   lambda d: set_first_stage(d, "realshow", [1, 2]),
                                   lambda data: data.read_request_dict(DAY, ubm=True),
                                   ("ubm_seq_request_id_dict", "found list")),
}


@pytest.mark.parametrize("case", READER_CASES)
def test_the_recflow_reader_and_validate_refuse(case, root):
    folder, change, read, names = READER_CASES[case]
    if folder == "ubm_seq_request_id_dict" and not pickle.loads(
            (root / folder / f"{DAY}.pkl").read_bytes()):
        rewrite_pickle(root, folder, lambda d: {0: {"realshow": np.zeros((0, 8), np.int64)}})
    rewrite_pickle(root, folder, change)
    refused(lambda: read(RecFlow(root)), folder, *names)
    problems = recflow.validate(root)  # never an AttributeError: a problem in the list
    assert any(all(name in p for name in names) for p in problems), problems


@pytest.mark.parametrize("value", [float("nan"), -3, 0, 2.5, "many", None])
def test_id_cnt_must_count_ids(root, value):
    path = root / "others" / "id_cnt.pkl"
    counts = pickle.loads(path.read_bytes())
    counts["author_id"] = value
    path.write_bytes(pickle.dumps(counts))
    refused(lambda: RecFlow(root).read_id_cnt(), "id_cnt.pkl", "'author_id'")
    assert any("'author_id'" in p for p in recflow.validate(root))


def rewrite_day(root, change):
    path = root / "all_stage" / f"{DAY}.feather"
    table = feather.read_table(path)
    feather.write_feather(change(table), path)


def replace_column(table, name, array):
    return table.set_column(table.schema.get_field_index(name), name, array)


def test_negative_ids_are_a_validation_problem(root):
    def negative(table):
        values = table.column("author_id").to_numpy().copy()
        values[4] = -7
        return replace_column(table, "author_id", pa.array(values))
    rewrite_day(root, negative)
    assert any("'author_id'" in p and "negative" in p for p in recflow.validate(root))


def test_one_request_id_for_two_users_is_a_validation_problem(root):
    def shared(table):
        requests = table.column("request_id").to_numpy()
        users = table.column("user_id").to_numpy().copy()
        first = requests == requests[0]
        users[np.flatnonzero(first)[-1]] = users[0] + 1
        return replace_column(table, "user_id", pa.array(users))
    rewrite_day(root, shared)
    assert any("belongs to users" in p for p in recflow.validate(root))


def test_uint64_ids_above_int64_are_refused_on_read(root):
    def huge(table):
        values = table.column("video_id").to_numpy().astype(np.uint64)
        values[0] = np.uint64(2**63 + 5)
        return replace_column(table, "video_id", pa.array(values, pa.uint64()))
    rewrite_day(root, huge)
    refused(lambda: RecFlow(root).read_rows(DAY, "all_stage"), "'video_id'", "beyond int64")


@pytest.mark.parametrize("day", ["2024-01-13\n", "2024-99-99", "2024-02-30", "20240113",
                                 " 2024-01-13", 20240113, None])
def test_day_names_must_be_real_dates(root, day):
    refused(lambda: RecFlow(root).read_rows(day), "YYYY-MM-DD")


def test_an_empty_day_reads_as_an_empty_frame(root):
    # documented behaviour: a day file without rows is an empty table, not an error
    path = root / "realshow" / f"{DAY}.feather"
    feather.write_feather(feather.read_table(path).slice(0, 0), path)
    rows = RecFlow(root).read_rows(DAY)
    assert len(rows) == 0 and list(rows.columns) == list(recflow.ROW_COLUMNS)
    assert (rows.dtypes == np.int64).all()


def test_validate_streams_a_day_one_batch_at_a_time(root, monkeypatch):
    # before: validate read a whole day into a list (about 7 GB for a real RecFlow day)
    alive, real = [], recflow.RecFlow.iter_rows
    batches = []

    def spy(self, kind="realshow", days=None, columns=recflow.ROW_COLUMNS, batch_rows=512,
            memory_pool=None):
        for day, frame in real(self, kind, days, columns, 512, memory_pool):
            alive.append(sum(ref() is not None for ref in batches))
            batches.append(weakref.ref(frame))
            yield day, frame
            del frame
    monkeypatch.setattr(recflow.RecFlow, "iter_rows", spy)
    assert recflow.validate(root) == []
    assert len(batches) > 5 and max(alive) <= 1  # only the batch being checked is held


@pytest.mark.parametrize("batch_rows", [0, -64, 2.5])
def test_iter_rows_refuses_a_batch_size_below_one(root, batch_rows):
    refused(lambda: list(RecFlow(root).iter_rows(batch_rows=batch_rows)), "batch_rows")
