"""Bad input to the writers (RecFlow's days and ``others/``, feather tables, checkpoints):
each is refused before the first byte, so nothing is written and nothing earlier is lost."""

import numpy as np
import pandas as pd
import pytest
import torch
from refusals import refused, snapshot

from recfunnel.data import recflow
from recfunnel.data.recflow import RecFlow
from recfunnel.data.tables import write_table
from recfunnel.train import load_checkpoint, save_checkpoint

DAY = "2024-01-13"


def rows(n=4, **changes):
    frame = pd.DataFrame({c: np.arange(n, dtype=np.int64) for c in recflow.ROW_COLUMNS})
    frame["request_id"] = 7
    frame["user_id"] = 3
    frame["request_timestamp"] = 1_705_075_200_000
    for flag in (*recflow.STAGE_FLAGS, *recflow.FEEDBACK):
        frame[flag] = 0
    frame["realshow"] = 1
    for key, value in changes.items():
        frame[key] = value
    return frame


def seq():
    return np.zeros((50, 10), np.int64)


def stages(**changes):
    arrays = {s: np.zeros((1, 8), np.int64) for s in recflow.STAGE_FLAGS}
    arrays.update(changes)
    return arrays


GOOD = {"rows": rows, "seqs": lambda: {7: seq()}, "requests": lambda: {7: stages()},
        "ubm": dict}

WRITE_DAY_CASES = {
    # the dictionaries (before: written or refused only after two folders were written)
    "a sequence that is a function": ({"seqs": lambda: {7: lambda: 0}}, ("seqs", "function")),
    "a sequence of shape (3,)": ({"seqs": lambda: {7: np.zeros(3, np.int64)}},
                                 ("seqs", "shape (3,)")),
    "a sequence of floats": ({"seqs": lambda: {7: np.zeros((50, 10))}}, ("seqs", "float64")),
    "a sequence with NaN": ({"seqs": lambda: {7: np.full((50, 10), np.nan)}},
                            ("seqs", "float64")),
    "a negative sequence value": ({"seqs": lambda: {7: -seq() - 1}}, ("seqs", "outside")),
    "a text request id": ({"seqs": lambda: {"7": seq()}}, ("seqs", "'7'")),
    "a boolean request id": ({"seqs": lambda: {True: seq()}}, ("seqs", "True")),
    "seqs not a dict": ({"seqs": lambda: [seq()]}, ("seqs", "expected a dict")),
    "a request that is a function": ({"requests": lambda: {1: lambda: 0}},
                                     ("requests", "function")),
    "an unknown stage": ({"requests": lambda: {7: stages(bogus=np.zeros((1, 8), np.int64))}},
                         ("requests", "'bogus'")),
    "a stage that is a list": ({"requests": lambda: {7: stages(realshow=[[0] * 8])}},
                               ("requests", "realshow", "list")),
    "a stage of NaN": ({"requests": lambda: {7: stages(rank_pos=np.full((1, 8), np.nan))}},
                       ("requests", "rank_pos", "float64")),
    "a stage of 7 columns": ({"requests": lambda: {7: stages(rank_neg=np.zeros((1, 7), int))}},
                             ("requests", "rank_neg", "(n, 8)")),
    "a 1-D stage": ({"requests": lambda: {7: stages(rerank_pos=np.zeros(8, np.int64))}},
                    ("requests", "rerank_pos")),
    "a uint64 stage above int64": ({"requests": lambda: {7: stages(
        realshow=np.full((1, 8), 2**63 + 1, np.uint64))}}, ("requests", "outside")),
    "a ubm entry that is a function": ({"ubm": lambda: {5: lambda: 0}},
                                       ("ubm_requests", "function")),
    "a ubm stage of floats": ({"ubm": lambda: {5: stages(realshow=np.zeros((1, 8)))}},
                              ("ubm_requests", "float64")),
    # the rows
    "a missing column": ({"rows": lambda: rows().drop(columns="like")}, ("'like'", "missing")),
    "a float column": ({"rows": lambda: rows(duration=np.linspace(0, 1, 4))},
                       ("'duration'", "integer")),
    "a negative id": ({"rows": lambda: rows(video_id=[1, -2, 3, 4])}, ("'video_id'",
                                                                      "negative")),
    "a uint64 id above int64": ({"rows": lambda: rows(video_id=np.array(
        [1, 2, 3, 2**63 + 9], np.uint64))}, ("'video_id'", "beyond int64")),
    "a stage flag of 2": ({"rows": lambda: rows(rank_pos=2)}, ("'rank_pos'", "0 or 1")),
    "feedback of 3": ({"rows": lambda: rows(like=3)}, ("'like'", "0 or 1")),
    "rows not a frame": ({"rows": lambda: rows().to_dict()}, ("rows", "DataFrame")),
}


@pytest.mark.parametrize("case", WRITE_DAY_CASES)
def test_write_day_refuses_before_writing_anything(case, tmp_path):
    changes, names = WRITE_DAY_CASES[case]
    parts = {key: changes.get(key, make)() for key, make in GOOD.items()}
    out = tmp_path / "out"
    refused(lambda: recflow.write_day(out, DAY, parts["rows"], parts["seqs"],
                                      parts["requests"], parts["ubm"]), *names)
    assert not out.exists()


@pytest.mark.parametrize("day", ["2024-01-13\n", "2024-99-99", "2023-02-29", "2024/01/13",
                                 "13-01-2024", "", 20240113])
def test_write_day_refuses_a_day_that_is_not_a_date(day, tmp_path):
    refused(lambda: recflow.write_day(tmp_path / "out", day, rows(), {7: seq()},
                                      {7: stages()}, {}), "YYYY-MM-DD")
    assert not (tmp_path / "out").exists()


def test_write_day_writes_what_the_reader_reads(tmp_path):
    recflow.write_day(tmp_path, DAY, rows(), {7: seq()}, {7: stages()}, {})
    assert RecFlow(tmp_path).read_rows(DAY)["video_id"].tolist() == [0, 1, 2, 3]


def test_a_refused_day_leaves_an_earlier_day_untouched(tmp_path):
    recflow.write_day(tmp_path, DAY, rows(), {7: seq()}, {7: stages()}, {})
    before = snapshot(tmp_path)
    refused(lambda: recflow.write_day(tmp_path, DAY, rows(), {7: seq()}, {1: lambda: 0}, {}),
            "requests")
    assert snapshot(tmp_path) == before


ID_CNT = {field: 100 for field in recflow.ID_FIELDS}
WRITE_OTHERS_CASES = {
    "a NaN count": ({"id_cnt": {**ID_CNT, "age": float("nan")}}, ("'age'",)),
    "a negative count": ({"id_cnt": {**ID_CNT, "gender": -3}}, ("'gender'", "-3")),
    "a missing field": ({"id_cnt": {k: v for k, v in ID_CNT.items() if k != "video_id"}},
                        ("'video_id'", "missing")),
    "an unknown test": ({"tests": {"reranking": pd.DataFrame()}}, ("'reranking'",)),
    "a test without a column": ({"tests": {"retrieval": pd.DataFrame(
        {"request_id": [1], "video_id": [2]})}}, ("retrieval", "'effective_view'")),
    "a corpus with NaN": ({"corpus": np.array([1.0, np.nan])}, ("corpus", "row 1")),
    "a negative corpus id": ({"corpus": np.array([3, -1])}, ("corpus", "row 1")),
    "a daily corpus on no date": ({"daily": {"day one": np.array([1])}}, ("YYYY-MM-DD",)),
}


@pytest.mark.parametrize("case", WRITE_OTHERS_CASES)
def test_write_others_refuses_before_writing_anything(case, tmp_path):
    changes, names = WRITE_OTHERS_CASES[case]
    refused(lambda: recflow.write_others(
        tmp_path / "out", changes.get("id_cnt", ID_CNT), changes.get("tests", {}),
        changes.get("corpus", np.arange(3)), changes.get("daily", {})), *names)
    assert not (tmp_path / "out").exists()


def test_write_table_refuses_uint64_beyond_int64(tmp_path):
    frame = pd.DataFrame({"video_id": np.array([1, 2**64 - 1], np.uint64)})
    refused(lambda: write_table(tmp_path / "t.feather", frame, ["video_id"]), "'video_id'",
            "beyond int64")
    assert not (tmp_path / "t.feather").exists()


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("meta", [{"note": lambda: 0}, {"note": object()},
                                  {"nested": {"fn": print}}, {"items": [1, {2, 3}]}])
def test_a_failed_checkpoint_save_keeps_the_previous_one(meta, tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, epoch=1)
    before = snapshot(tmp_path)
    refused(lambda: save_checkpoint(path, torch.nn.Linear(3, 2), **meta), "meta[",
            "cannot be stored")
    assert snapshot(tmp_path) == before  # no temporary file left either
    assert load_checkpoint(path, torch.nn.Linear(3, 2)) == {"epoch": 1}


def test_numpy_metadata_is_stored_as_python_numbers(tmp_path):
    save_checkpoint(tmp_path / "c.pt", torch.nn.Linear(2, 1), epoch=np.int64(3),
                    score=np.float32(0.5), history=[np.float64(0.25)])
    meta = load_checkpoint(tmp_path / "c.pt", torch.nn.Linear(2, 1))  # weights_only
    assert meta == {"epoch": 3, "score": 0.5, "history": [0.25]}
    assert type(meta["epoch"]) is int


def test_a_checkpoint_save_that_fails_midway_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, torch.nn.Linear(3, 2), epoch=1)

    def disk_full(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, torch.nn.Linear(3, 2), epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path, torch.nn.Linear(3, 2)) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
