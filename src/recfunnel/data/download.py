"""Downloads for datasets that cannot ship with the course: checksum-verified, extracted
without letting an archive write outside its folder, and, offline, a clear message.

``DataUnavailableError`` is the one error a chapter catches to skip a real-data section with a
message instead of a traceback.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
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


def verify(path: str | Path, expected: str, algorithm: str = "sha256",
           label: str | None = None) -> None:
    """Raise ``ChecksumError`` naming ``label`` (default: the file name)."""
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
    checked for completeness, and the reader's own format checks must stand in.
    """
    dest = Path(dest)
    if dest.exists():
        if checksum is not None:
            verify(dest, checksum, algorithm)
        return dest
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


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .zip, .tar, .tar.gz or .tgz into ``dest``; every entry is checked first
    (no absolute paths, no ``..``, no links), and nothing is written if one is refused."""
    archive, dest = Path(archive), Path(dest)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _safe_member_path(info.filename, dest)
            dest.mkdir(parents=True, exist_ok=True)
            zf.extractall(dest)
        return dest
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _safe_member_path(member.name, dest)
                if member.issym() or member.islnk() or member.isdev():
                    raise ValueError(f"archive entry {member.name!r} is a link or device")
            dest.mkdir(parents=True, exist_ok=True)
            for member in members:
                target = _safe_member_path(member.name, dest)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tf.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        return dest
    raise ValueError(f"{archive.name} is neither a zip nor a tar archive")
