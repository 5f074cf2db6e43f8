"""Model artifacts in the cold store, addressed by the SHA-256 of their content.

Layout under the cold root::

    artifacts/sha256/<ab>/<digest>      one immutable blob per content (``ab``: first 2 digits)
    artifacts/tmp/                      blobs being written (renamed into place when complete)
    artifacts/unpacked/<digest>/        folder artifacts unpacked for loading (a cache)

On an object store (``s3://bucket/prefix``) only ``artifacts/sha256/`` is kept there; the
rest, and a checked copy of each blob fetched, lives in a local cache folder
(``PATHRAY_CACHE``, default ``~/.cache/pathray/cold/<hash of the URI>``) with the same layout.

A file is stored as its bytes; a folder as a deterministic tar of it (entries sorted by path,
times, owners and permissions normalised), so the same folder content always gives the same
digest. Writes go to a temporary file and are renamed into place, so a reader never sees half an
artifact and putting the same content twice stores it once. :meth:`ArtifactStore.get` re-hashes
the blob and refuses a corrupted one.

Example:
    >>> store = ArtifactStore("/tmp/cold")  # doctest: +SKIP
    >>> art = store.put(Path("model.joblib"))  # doctest: +SKIP
    >>> store.get(art.digest).read_bytes() == Path("model.joblib").read_bytes()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pathray.errors import ConfigError, NotFoundError, PathRayError
from pathray.results.location import Location

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class CorruptArtifactError(PathRayError):
    """A stored artifact's content no longer matches its digest."""


@dataclass(frozen=True)
class Artifact:
    """A stored artifact.

    Attributes:
        digest: SHA-256 of the stored bytes (64 lowercase hex digits).
        size: Size of the stored blob in bytes (the tar's size for a folder).
        uri: Where the blob lives (an absolute path under the cold root, or its ``s3://`` URI).
    """

    digest: str
    size: int
    uri: str

    @property
    def ref(self) -> str:
        """The digest with its algorithm, ``sha256:<digest>``."""
        return f"sha256:{self.digest}"


def check_digest(digest: str) -> str:
    """Normalise a digest (``sha256:`` prefix allowed, any case) and check its form.

    Args:
        digest: A SHA-256 digest, optionally prefixed with ``sha256:``.

    Returns:
        The 64 lowercase hex digits.

    Raises:
        ConfigError: The digest is not 64 hex digits.
    """
    value = digest.strip().lower().removeprefix("sha256:")
    if not _DIGEST.match(value):
        raise ConfigError(f"An artifact digest must be 64 hex digits (SHA-256). Got {digest!r}.")
    return value


def _chunks(path: Path | Location) -> Iterator[bytes]:
    with path.open_input() if isinstance(path, Location) else path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def hash_file(path: str | Path | Location) -> str:
    """Return the SHA-256 of a file's content (local or on an object store), read in chunks."""
    sha = hashlib.sha256()
    for chunk in _chunks(path if isinstance(path, Location) else Path(path)):
        sha.update(chunk)
    return sha.hexdigest()


def local_cache(uri: str) -> Path:
    """The local folder caching an object-store cold root's artifacts.

    ``PATHRAY_CACHE`` names the parent folder (default ``~/.cache/pathray/cold``); each store
    gets a subfolder named by a hash of its URI.
    """
    parent = Path(os.environ.get("PATHRAY_CACHE") or "~/.cache/pathray/cold").expanduser()
    return parent / hashlib.sha256(uri.encode()).hexdigest()[:16]


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._target.write(data)


def _tar_entries(folder: Path) -> list[Path]:
    entries: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                raise ConfigError(
                    f"A folder artifact must not hold symbolic links to folders. "
                    f"Got {base / name} instead."
                )
        entries.extend(base / name for name in (*dirnames, *filenames))
    return sorted(entries, key=lambda p: p.relative_to(folder).as_posix())


def write_tree_tar(folder: str | Path, fileobj: IO[bytes] | _HashingWriter) -> None:
    """Write a folder as a deterministic, uncompressed tar stream.

    Entries are sorted by relative path; times are 0, owners root with no names, folders are
    mode 755 and files 755 (executable) or 644. Symbolic links to files are stored as the file
    they point to.

    Args:
        folder: The folder to archive (its content, not the folder itself, is stored).
        fileobj: A binary stream to write to.

    Raises:
        ConfigError: The folder holds a link to a folder or a special file.
    """
    root = Path(folder)
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in _tar_entries(root):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            mode = path.stat().st_mode
            if stat.S_ISDIR(mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif stat.S_ISREG(mode):
                info.mode = 0o755 if mode & 0o111 else 0o644
                info.size = path.stat().st_size
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                raise ConfigError(
                    f"A folder artifact may hold only files and folders. Got {path} instead."
                )


class ArtifactStore:
    """Content-addressed artifacts under a cold-store root.

    Args:
        root: The cold store's root: a folder (artifacts go to ``<root>/artifacts``) or an
            ``s3://bucket/prefix`` (blobs go to ``<prefix>/artifacts/sha256``, fetched copies
            and unpacked folders to a local cache, see :func:`local_cache`).
    """

    def __init__(self, root: str | Path | Location) -> None:
        location = root if isinstance(root, Location) else Location(root)
        #: The object-store folder holding the blobs, or None for a local store.
        self.remote = location / "artifacts" if location.remote else None
        self.root = local_cache(location.uri) if location.remote else Path(location.path)
        self.base = self.root / "artifacts"

    def path(self, digest: str) -> Path:
        """Where the blob of a digest lives locally (whether or not it exists)."""
        value = check_digest(digest)
        return self.base / "sha256" / value[:2] / value

    def _remote_blob(self, digest: str) -> Location | None:
        value = check_digest(digest)
        return None if self.remote is None else self.remote / "sha256" / value[:2] / value

    def exists(self, digest: str) -> bool:
        """Whether an artifact with this digest is stored (its content is not checked)."""
        blob = self._remote_blob(digest)
        return self.path(digest).is_file() if blob is None else blob.is_file()

    def put(self, source: str | Path | bytes | bytearray | memoryview) -> Artifact:
        """Store a file, a folder or bytes; storing the same content again changes nothing.

        Args:
            source: A file path, a folder path (stored as a deterministic tar), or the bytes.

        Returns:
            The stored artifact.

        Raises:
            NotFoundError: The path does not exist.
            ConfigError: The path is neither a file nor a folder, or a folder holds a link to a
                folder or a special file.
        """
        tmp_dir = self.base / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                writer = _HashingWriter(handle)
                self._write(source, writer)
                handle.flush()
                os.fsync(handle.fileno())
            digest = writer.sha.hexdigest()
            target = self.path(digest)
            if not (target.is_file() and hash_file(target) == digest):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.chmod(0o444)
                os.replace(tmp, target)  # also repairs a corrupted copy
            blob = self._remote_blob(digest)
            if blob is not None and not (blob.is_file() and hash_file(blob) == digest):
                blob.upload(target)  # complete or absent; also repairs a corrupted copy
            return Artifact(digest, writer.size, str(blob or target))
        finally:
            tmp.unlink(missing_ok=True)

    def _fetch(self, digest: str, target: Path) -> None:
        """Copy an object-store blob into the local cache (complete or not at all)."""
        blob = self._remote_blob(digest)
        if blob is None or not blob.is_file():
            where = self.remote or self.base
            raise NotFoundError(f"Artifact sha256:{digest} is not in the store at {where}.")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{digest[:8]}-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in _chunks(blob):
                    handle.write(chunk)
            Path(name).chmod(0o444)
            os.replace(name, target)
        finally:
            Path(name).unlink(missing_ok=True)

    @staticmethod
    def _write(source: str | Path | bytes | bytearray | memoryview, writer: _HashingWriter) -> None:
        if isinstance(source, bytes | bytearray | memoryview):
            writer.write(bytes(source))
            return
        path = Path(source)
        if path.is_dir():
            write_tree_tar(path, writer)
        elif path.is_file():
            for chunk in _chunks(path):
                writer.write(chunk)
        elif not path.exists():
            raise NotFoundError(f"Artifact source {path} does not exist.")
        else:
            raise ConfigError(f"An artifact must be a file or a folder. Got {path} instead.")

    def get(self, digest: str, *, verify: bool = True) -> Path:
        """Return the path of a stored artifact after checking its content.

        Args:
            digest: The artifact's digest (``sha256:`` prefix allowed).
            verify: Re-hash the blob and compare it with the digest (on by default).

        Returns:
            The blob's path (read-only; a folder artifact is a tar, see :meth:`unpack`).

        Raises:
            NotFoundError: No artifact with this digest.
            CorruptArtifactError: The blob's content does not match its digest.
        """
        value = check_digest(digest)
        target = self.path(value)
        if self.remote is not None and not (target.is_file() and hash_file(target) == value):
            self._fetch(value, target)  # a missing or damaged cached copy is fetched again
        if not target.is_file():
            raise NotFoundError(f"Artifact sha256:{value} is not in the store at {self.base}.")
        if verify:
            actual = hash_file(target)
            if actual != value:
                raise CorruptArtifactError(
                    f"Artifact sha256:{value} at {target} is corrupted: its content hashes to "
                    f"{actual}. Put the original content again to repair it."
                )
        return target

    def describe(self, digest: str) -> Artifact:
        """Return the stored artifact of a digest (its content is not checked).

        Raises:
            NotFoundError: No artifact with this digest.
        """
        blob = self._remote_blob(digest)
        if blob is not None:
            if not blob.is_file():
                raise NotFoundError(f"Artifact {digest} is not in the store at {self.remote}.")
            return Artifact(check_digest(digest), blob.size(), blob.uri)
        target = self.path(digest)
        if not target.is_file():
            raise NotFoundError(f"Artifact {digest} is not in the store at {self.base}.")
        return Artifact(check_digest(digest), target.stat().st_size, str(target))

    def unpack(self, digest: str) -> Path:
        """Return a folder artifact unpacked (checked, then cached under ``artifacts/unpacked``).

        Args:
            digest: Digest of an artifact stored from a folder.

        Returns:
            The folder holding the artifact's content; treat it as read-only.

        Raises:
            NotFoundError: No artifact with this digest.
            CorruptArtifactError: The blob is corrupted, or it is not a folder artifact.
        """
        value = check_digest(digest)
        out = self.base / "unpacked" / value
        if out.is_dir():
            return out
        blob = self.get(value)
        if not tarfile.is_tarfile(blob):
            raise CorruptArtifactError(
                f"Artifact sha256:{value} was not stored from a folder; use get() for its file."
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{value[:8]}-"))
        try:
            with tarfile.open(blob, mode="r:") as tar:
                tar.extractall(tmp, filter="data")
            try:
                tmp.rename(out)
            except OSError:  # unpacked meanwhile by another process
                if not out.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


__all__ = [
    "Artifact",
    "ArtifactStore",
    "CorruptArtifactError",
    "check_digest",
    "hash_file",
    "local_cache",
    "write_tree_tar",
]
