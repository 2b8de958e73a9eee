"""RecFlow's real layout: the reader rejects malformed files by naming the problem, writes
nothing on the way, streams in bounded memory, and reads what the writer wrote."""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from recfunnel.data import recflow
from recfunnel.data.recflow import RecFlow, RecFlowFormatError

DAY = "2024-01-13"


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def rows_like(n=3, **changes):
    frame = pd.DataFrame({c: np.arange(n, dtype=np.int64) for c in recflow.ROW_COLUMNS})
    frame["request_timestamp"] = 1_705_075_200_000 + frame["request_timestamp"]
    for flag in (*recflow.STAGE_FLAGS, *recflow.FEEDBACK):  # 0/1 columns
        frame[flag] = frame[flag] % 2
    for key, value in changes.items():
        frame[key] = value
    return frame


def test_the_smoke_world_is_a_valid_recflow_folder(root, smoke_log):
    assert recflow.validate(root) == []
    data = RecFlow(root)
    assert data.days("all_stage") == data.days("realshow") == list(smoke_log.rows)
    rows = data.read_rows(DAY, "all_stage")
    original = smoke_log.rows[DAY]
    pd.testing.assert_frame_equal(rows, original[list(recflow.ROW_COLUMNS)].reset_index(
        drop=True))
    assert (data.read_rows(DAY)["realshow"] == 1).all()
    # a row with two flags (an exposure is also in the re-ranking top 10)
    assert ((rows["realshow"] == 1) & (rows["rerank_pos"] == 1)).any()
    seqs = data.read_seq(DAY)
    assert any((seq[:, 7] == 0).all() for seq in seqs.values())  # a request with no history
    counts = data.read_id_cnt()
    assert counts["video_id"] == counts["photo_id"]
    # the retrieval test file: the last day's exposures, at most 30 per request
    last = smoke_log.rows[list(smoke_log.rows)[-1]]
    shown = last[last["realshow"] == 1].groupby("request_id").head(recflow.TEST_CAPS["retrieval"])
    pd.testing.assert_frame_equal(
        data.read_test("retrieval"),
        shown[list(recflow.TEST_COLUMNS["retrieval"])].reset_index(drop=True))


def test_iter_rows_batches_and_selects(root):
    batches = list(RecFlow(root).iter_rows("all_stage", [DAY], ["request_id", "video_id"],
                                           batch_rows=1000))
    assert all(len(frame) <= 1000 for _, frame in batches) and len(batches) > 5
    assert list(batches[0][1].columns) == ["request_id", "video_id"]
    assert batches[0][1]["video_id"].dtype == np.int64


def test_more_than_six_exposures_and_a_missing_stage_are_read(tmp_path):
    """Two cases the real data has and the repo's loaders tolerate."""
    rows = rows_like(8, request_id=7, realshow=1)
    arrays = {s: np.zeros((0, 8), np.int64) for s in recflow.STAGE_FLAGS if s != "coarse_neg"}
    recflow.write_day(tmp_path, DAY, rows, {7: np.zeros((50, 10), np.int64)}, {7: arrays}, {})
    data = RecFlow(tmp_path)
    assert data.read_rows(DAY)["realshow"].sum() == 8
    assert "coarse_neg" not in data.read_request_dict(DAY)[7]


# --------------------------------------------------------------------------- malformed input


def test_missing_column_is_named(tmp_path):
    recflow.write_table(tmp_path / "all_stage" / f"{DAY}.feather", rows_like(),
                        [c for c in recflow.ROW_COLUMNS if c != "like"])
    with pytest.raises(RecFlowFormatError, match=rf"all_stage/{DAY}.feather: column 'like' is "
                                                 "missing"):
        list(RecFlow(tmp_path).iter_rows("all_stage"))


def test_wrong_dtype_names_file_column_and_types(tmp_path):
    import pyarrow as pa
    import pyarrow.feather as feather

    table = pa.table({c: pa.array(np.arange(3), pa.int64()) for c in recflow.ROW_COLUMNS})
    table = table.set_column(table.schema.get_field_index("duration"), "duration",
                             pa.array([1.5, 2.0, 3.0]))
    (tmp_path / "realshow").mkdir()
    feather.write_feather(table, tmp_path / "realshow" / f"{DAY}.feather")
    with pytest.raises(RecFlowFormatError, match="column 'duration' must be an integer "
                                                 r"\(int64\), found double"):
        list(RecFlow(tmp_path).iter_rows())


def test_truncated_feather_is_named(root):
    path = root / "realshow" / f"{DAY}.feather"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot(root)
    with pytest.raises(RecFlowFormatError, match=f"{DAY}.feather: not a readable feather"):
        list(RecFlow(root).iter_rows("realshow", [DAY]))
    assert snapshot(root) == before  # the reader writes nothing


def test_missing_day_is_named(root):
    with pytest.raises(RecFlowFormatError, match="day 2024-02-18 is missing from realshow"):
        list(RecFlow(root).iter_rows("realshow", ["2024-02-18"]))
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        RecFlow(root).read_seq("13/01/2024")


def test_unknown_stage_flag_is_named(root):
    path = root / "request_id_dict" / f"{DAY}.pkl"
    requests = pickle.loads(path.read_bytes())
    first = next(iter(requests))
    requests[first]["rerank_maybe"] = np.zeros((1, 8), np.int64)
    path.write_bytes(pickle.dumps(requests, protocol=4))
    with pytest.raises(RecFlowFormatError, match="unknown stage flag 'rerank_maybe'"):
        RecFlow(root).read_request_dict(DAY)


def test_empty_sequence_dictionary_is_named(root):
    (root / "seq_effective_50_dict" / f"{DAY}.pkl").write_bytes(pickle.dumps({}))
    with pytest.raises(RecFlowFormatError, match="sequence dictionary is empty"):
        RecFlow(root).read_seq(DAY)


def test_sequence_of_the_wrong_shape_is_named(root):
    (root / "seq_effective_50_dict" / f"{DAY}.pkl").write_bytes(
        pickle.dumps({11: np.zeros((50, 9), np.int64)}))
    with pytest.raises(RecFlowFormatError, match=r"request 11's sequence: shape "
                                                 r"\(50, 9\), expected \(50, 10\)"):
        RecFlow(root).read_seq(DAY)


def test_a_pickle_that_would_run_code_is_refused(root):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "request_id_dict" / f"{DAY}.pkl").write_bytes(pickle.dumps({1: Evil()}))
    with pytest.raises(RecFlowFormatError, match="refusing to load builtins.print"):
        RecFlow(root).read_request_dict(DAY)
    (root / "request_id_dict" / f"{DAY}.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(RecFlowFormatError, match="expected a dict, found list"):
        RecFlow(root).read_request_dict(DAY)


def test_null_outside_the_nullable_columns_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.feather as feather

    columns = {c: pa.array([1, 2, 3], pa.int64()) for c in recflow.ROW_COLUMNS}
    columns["rank_index"] = pa.array([1, None, 3], pa.int64())  # allowed: not ranked
    (tmp_path / "realshow").mkdir()
    feather.write_feather(pa.table(columns), tmp_path / "realshow" / f"{DAY}.feather")
    assert RecFlow(tmp_path).read_rows(DAY)["rank_index"].tolist() == [1, 0, 3]
    columns["user_id"] = pa.array([1, None, 3], pa.int64())
    feather.write_feather(pa.table(columns), tmp_path / "realshow" / f"{DAY}.feather")
    with pytest.raises(RecFlowFormatError, match="column 'user_id' has null values"):
        RecFlow(tmp_path).read_rows(DAY)


def test_test_file_over_its_cap_is_named(root):
    frame = pd.DataFrame({c: np.zeros(31, np.int64) for c in recflow.TEST_COLUMNS["retrieval"]})
    recflow.write_table(root / "others" / "retrieval_test.feather", frame,
                        recflow.TEST_COLUMNS["retrieval"])
    with pytest.raises(RecFlowFormatError, match="request 0 has 31 candidates, more than "
                                                 "the 30"):
        RecFlow(root).read_test("retrieval")


def test_test_file_under_the_code_s_name_is_found(root):
    others = root / "others"
    under_readme_name = RecFlow(root).read_test("coarse_rank")
    (others / "coarse_rank_test.feather").rename(others / "prerank_test.feather")
    pd.testing.assert_frame_equal(RecFlow(root).read_test("coarse_rank"), under_readme_name)


def test_id_cnt_missing_field_is_named(root):
    counts = pickle.loads((root / "others" / "id_cnt.pkl").read_bytes())
    del counts["author_id"]
    (root / "others" / "id_cnt.pkl").write_bytes(pickle.dumps(counts))
    with pytest.raises(RecFlowFormatError, match="field 'author_id' is missing"):
        RecFlow(root).read_id_cnt()


def test_writer_refuses_bad_rows_before_writing_anything(tmp_path):
    rows = rows_like(3, like=[0.0, 1.0, 0.5])
    with pytest.raises(RecFlowFormatError, match="column 'like' must be an integer"):
        recflow.write_day(tmp_path / "out", DAY, rows, {}, {}, {})
    assert not (tmp_path / "out").exists()


def test_validate_reports_broken_invariants(root):
    path = root / "seq_effective_50_dict" / f"{DAY}.pkl"
    seqs = pickle.loads(path.read_bytes())
    request, seq = next((r, s) for r, s in seqs.items() if (s[:, 7] > 0).sum() >= 2)
    seq = seq.copy()
    seq[[0, -1]] = seq[[-1, 0]]  # a valid row moved to the front: no longer left-padded
    seqs[request] = seq
    path.write_bytes(pickle.dumps(seqs, protocol=4))
    requests_path = root / "request_id_dict" / f"{DAY}.pkl"
    requests = pickle.loads(requests_path.read_bytes())
    other = next(r for r in requests if r != request)
    del requests[other]["rank_pos"]  # the repo's loaders index this key directly
    requests_path.write_bytes(pickle.dumps(requests, protocol=4))
    problems = recflow.validate(root)
    assert any(f"request {request} is not left-padded" in p for p in problems)
    assert any(f"request {other} lacks 'rank_pos'" in p for p in problems)


def test_fetch_offline_says_what_to_do(tmp_path):
    from recfunnel.data.download import DataUnavailableError

    with pytest.raises(DataUnavailableError, match="RecFlow README"):
        recflow.fetch({"http://127.0.0.1:9/all_stage.tar.gz": "0" * 64}, tmp_path)


# --------------------------------------------------------------------------- bounded memory

MEASURE = textwrap.dedent('''
    import sys, tracemalloc, numpy as np, pandas as pd, pyarrow as pa
    from pathlib import Path
    from recfunnel.data import recflow
    root, n = Path(sys.argv[1]), int(sys.argv[2])
    frame = pd.DataFrame({c: np.arange(n, dtype=np.int64) % 997 for c in recflow.ROW_COLUMNS})
    recflow.write_table(root / "all_stage" / "2024-01-13.feather", frame, recflow.ROW_COLUMNS)
    del frame
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    tracemalloc.start()
    total = 0
    for _, rows in recflow.RecFlow(root).iter_rows("all_stage", batch_rows=8192,
                                                   memory_pool=pool):
        total += int(rows["video_id"].sum())
    print(tracemalloc.get_traced_memory()[1] + pool.max_memory())
''')


def peak_bytes(tmp_path, n_rows):
    folder = tmp_path / f"rows{n_rows}"
    result = subprocess.run([sys.executable, "-c", MEASURE, str(folder), str(n_rows)],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def test_peak_memory_stays_flat_as_the_day_grows(tmp_path):
    small, large = peak_bytes(tmp_path, 150_000), peak_bytes(tmp_path, 1_200_000)
    whole_large_day = 1_200_000 * len(recflow.ROW_COLUMNS) * 8  # 288 MB as int64
    assert large < 1.3 * small, (small, large)
    assert large < whole_large_day / 5, (large, whole_large_day)  # about one 64K-row chunk
