"""Downloads for datasets that cannot ship with the course: checksum-verified, extracted
without letting an archive write outside its folder, and, offline, a clear message.

``DataUnavailableError`` is the one error a chapter catches to skip a real-data section with a
message instead of a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm


class DataUnavailableError(RuntimeError):
    """The data cannot be had here (offline, say); the message says how to get it."""


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the published checksum."""


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalise_checksum(expected: str, algorithm: str = "sha256") -> str:
    """A published hex digest in lower case, refused when it cannot be one of
    ``algorithm``'s (wrong length, not hexadecimal)."""
    if algorithm not in hashlib.algorithms_available:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    digest = expected.strip().lower() if isinstance(expected, str) else expected
    length = 2 * hashlib.new(algorithm).digest_size
    if not isinstance(digest, str) or len(digest) != length or \
            any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"checksum {expected!r} is not a {algorithm} hex digest "
                         f"({length} hexadecimal characters)")
    return digest


def verify(path: str | Path, expected: str, algorithm: str = "sha256",
           label: str | None = None) -> None:
    """Raise ``ChecksumError`` naming ``label`` (default: the file name); the expected
    digest may be in upper or lower case."""
    expected = normalise_checksum(expected, algorithm)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{label or Path(path).name}: {algorithm} is {actual}, expected "
                               f"{expected}; the file is corrupt or not the published one")


def download(url: str, dest: str | Path, checksum: str | None, algorithm: str = "sha256",
             timeout_s: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` (kept if already there with the right checksum).

    The file is written to a temporary name and moved into place only once its checksum
    matches, so an interrupted or corrupt download never leaves a file that looks valid.
    ``checksum=None`` is for data whose publisher gives none: the download is then only
    checked for completeness, and the reader's own format checks must stand in. A cached
    ``dest`` with the wrong checksum is removed, with a warning naming it, and fetched again.
    """
    dest = Path(dest)
    if checksum is not None:
        checksum = normalise_checksum(checksum, algorithm)
    if dest.exists():
        if checksum is None:
            return dest
        try:
            verify(dest, checksum, algorithm)
            return dest
        except ChecksumError as error:
            warnings.warn(f"removing the corrupt cached {dest} and downloading it again "
                          f"({error})", stacklevel=2)
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        partial = Path(tmp.name)
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout_s)  # noqa: S310
        except (urllib.error.URLError, OSError) as error:
            raise DataUnavailableError(
                f"cannot download {url} ({error}). This machine seems to be offline: "
                f"download the file elsewhere and place it at {dest}"
            ) from None
        total = int(response.headers.get("Content-Length", 0)) or None
        with response, open(partial, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=dest.name
        ) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
        if total is not None and partial.stat().st_size != total:
            raise DataUnavailableError(f"{url}: the download stopped early; try again")
        if checksum is not None:
            verify(partial, checksum, algorithm, label=f"{dest.name} from {url}")
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _safe_member_path(name: str, root: Path) -> Path:
    """The path an archive entry would be written to, refused if it leaves ``root``."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"archive entry {name!r} escapes the extraction folder")
    target = (root / pure).resolve()
    if root.resolve() not in (target, *target.parents):
        raise ValueError(f"archive entry {name!r} escapes the extraction folder")
    return target


class ArchiveTooLargeError(ValueError):
    """An archive unpacks to more than the caller allows (a zip bomb, or the wrong file)."""


def _members(archive: Path) -> tuple:
    """(the open archive, whether it is a zip, its entries): each entry as (name, is a
    folder, declared size, compressed size, opener). Tar entries must be plain files or
    folders; a damaged or truncated archive raises ``ChecksumError``."""
    if zipfile.is_zipfile(archive):
        try:
            zf = zipfile.ZipFile(archive)  # noqa: SIM115 (extract closes it)
        except zipfile.BadZipFile as error:
            raise ChecksumError(f"{archive.name} is damaged ({error})") from None
        entries = [(info.filename, info.is_dir(), info.file_size, info.compress_size,
                    lambda info=info: zf.open(info)) for info in zf.infolist()]
        return zf, True, entries
    if tarfile.is_tarfile(archive):
        tf = tarfile.open(archive)  # noqa: SIM115 (extract closes it)
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            tf.close()
            raise ChecksumError(f"{archive.name} is damaged or truncated ({error})") from None
        entries = []
        for member in members:
            if not (member.isfile() or member.isdir()):
                tf.close()
                raise ValueError(f"archive entry {member.name!r} is a link, device or FIFO")
            entries.append((member.name, member.isdir(), member.size, member.size,
                            lambda member=member: tf.extractfile(member)))
        return tf, False, entries
    raise ValueError(f"{archive.name} is neither a zip nor a tar archive")


def extract(archive: str | Path, dest: str | Path, max_bytes: int = 4 << 30,
            max_ratio: float = 200.0) -> Path:
    """Extract a .zip, .tar, .tar.gz or .tgz into ``dest``.

    Every entry is checked before the first byte is written (no absolute paths, no ``..``,
    no links, devices or FIFOs, at most ``max_bytes`` unpacked in all, and a zip may not
    unpack to more than ``max_ratio`` times its compressed size); nothing is written if one
    is refused. Each file is written to a temporary name and renamed only once complete
    (its size as declared and, in a zip, its CRC checked), so a full disk or a damaged
    entry never leaves a half file under the entry's own name. The sizes are counted while
    writing too, since an archive's headers can lie."""
    archive, dest = Path(archive), Path(dest)
    handle, is_zip, entries = _members(archive)
    with handle:
        declared = 0
        for name, _, size, packed, _ in entries:
            _safe_member_path(name, dest)
            declared += size
            if is_zip and size > max_ratio * max(packed, 1) + (1 << 20):
                raise ArchiveTooLargeError(
                    f"{archive.name}: entry {name!r} unpacks {size:,} bytes from {packed:,} "
                    f"(more than {max_ratio:g} times): refused as a likely zip bomb")
        if declared > max_bytes:
            raise ArchiveTooLargeError(
                f"{archive.name} unpacks to {declared:,} bytes, more than the {max_bytes:,} "
                "allowed for it (max_bytes)")
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        for name, is_dir, size, _, opener in entries:
            target = _safe_member_path(name, dest)
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            try:
                written = _copy_entry(archive.name, name, opener, partial, size, written,
                                      max_bytes)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            os.replace(partial, target)
    return dest


def _copy_entry(archive: str, name: str, opener, partial: Path, size: int, written: int,
                max_bytes: int) -> int:
    """Copy one entry to ``partial``, counting bytes against ``max_bytes``; a damaged entry
    (bad CRC, truncated stream, wrong size) raises ``ChecksumError`` naming it."""
    try:
        with opener() as src, open(partial, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                written += len(block)
                if written > max_bytes:
                    raise ArchiveTooLargeError(f"{archive} unpacks to more than the "
                                               f"{max_bytes:,} bytes allowed for it (max_bytes)")
                out.write(block)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error,
            gzip.BadGzipFile) as error:
        raise ChecksumError(f"{archive}: entry {name!r} is damaged or the archive is "
                            f"truncated ({error})") from None
    if partial.stat().st_size != size:
        raise ChecksumError(f"{archive}: entry {name!r} holds {partial.stat().st_size:,} "
                            f"bytes, not the {size:,} its header declares")
    return written


# --------------------------------------------------------------------------- dataset folders

COMPLETE_MARKER = ".recfunnel-complete"


def is_complete(folder: str | Path) -> bool:
    """Whether ``folder`` was installed whole by ``install``: its marker exists and every
    file the marker lists has the size it had when it was verified."""
    marker = Path(folder) / COMPLETE_MARKER
    try:
        listed = json.loads(marker.read_text())
        return all((Path(folder) / name).stat().st_size == size
                   for name, (size, _) in listed.items())
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def install(archive: str | Path, home: str | Path, folder: str, required: tuple[str, ...],
            max_bytes: int = 4 << 30) -> Path:
    """Extract ``archive`` (which holds ``folder/...``) into ``home/folder`` all or nothing.

    The archive is unpacked into a staging folder beside it; only when every ``required``
    file (a path inside ``folder``) is there is a marker written listing every file's size
    and SHA-256, and the folder renamed into place (replacing an incomplete earlier one).
    An interrupted extraction therefore never looks like a dataset (``is_complete``). A
    damaged cached archive is removed, so the next call downloads it afresh."""
    home, archive = Path(home), Path(archive)
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=home, prefix=f".{folder}.partial-"))
    try:
        try:
            extract(archive, staging, max_bytes=max_bytes)
        except ChecksumError as error:
            archive.unlink(missing_ok=True)
            raise ChecksumError(f"{error}; removed {archive}, run again to download it "
                                "afresh") from None
        root = staging / folder
        missing = [name for name in required if not (root / name).is_file()]
        if missing:
            raise ChecksumError(f"{archive.name} lacks {folder}/{missing[0]}: not the "
                                "published archive")
        listing = {str(path.relative_to(root)): (path.stat().st_size, file_digest(path))
                   for path in sorted(root.rglob("*")) if path.is_file()}
        (root / COMPLETE_MARKER).write_text(json.dumps(listing, indent=1))
        target = home / folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
