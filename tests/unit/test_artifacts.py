"""The content-addressed artifact store in the cold store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pathray.errors import ConfigError, NotFoundError, PathRayError
from pathray.results.artifacts import ArtifactStore, CorruptArtifactError, check_digest


def _blobs(store: ArtifactStore) -> list[Path]:
    return sorted(p for p in (store.base / "sha256").rglob("*") if p.is_file())


def _tree(root: Path, order: list[str], mtime: int) -> Path:
    files = {
        "weights.bin": b"\x00\x01" * 1000,
        "config.json": b'{"classes": 3}',
        "sub/readme.txt": b"hello",
        "sub/deeper/run.sh": b"#!/bin/sh\necho hi\n",
    }
    (root / "empty").mkdir(parents=True)
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
        os.utime(path, (mtime, mtime))
    (root / "sub/deeper/run.sh").chmod(0o750)
    return root


def test_bytes_are_content_addressed_and_stored_once(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cold")
    data = b"model weights" * 100
    first = store.put(data)
    assert first.digest == hashlib.sha256(data).hexdigest()
    assert first.size == len(data)
    assert first.ref == f"sha256:{first.digest}"
    assert Path(first.uri) == tmp_path / "cold/artifacts/sha256" / first.digest[:2] / first.digest
    assert store.put(bytearray(data)) == first
    # the same bytes from a file give the same artifact
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    assert store.put(source) == first
    assert store.put(str(source)) == first
    assert _blobs(store) == [Path(first.uri)]
    assert list((store.base / "tmp").iterdir()) == []  # no temporary file left behind
    assert store.exists(first.digest) and store.exists(first.ref)
    assert store.get(first.digest).read_bytes() == data
    assert store.describe(first.digest) == first
    other = store.put(b"other")
    assert other.digest != first.digest
    assert len(_blobs(store)) == 2


def test_folders_are_stored_as_deterministic_tars(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cold")
    names = ["weights.bin", "config.json", "sub/readme.txt", "sub/deeper/run.sh"]
    a = store.put(_tree(tmp_path / "a", names, mtime=1_000_000))
    b = store.put(_tree(tmp_path / "b", list(reversed(names)), mtime=2_000_000))
    assert a == b
    assert len(_blobs(store)) == 1
    # any change to the content gives another digest
    (tmp_path / "b/sub/readme.txt").write_bytes(b"hellO")
    assert store.put(tmp_path / "b").digest != a.digest
    # unpacking gives the folder back, executable bit and empty folder included
    out = store.unpack(a.digest)
    assert (out / "weights.bin").read_bytes() == (tmp_path / "a/weights.bin").read_bytes()
    assert (out / "sub/deeper/run.sh").stat().st_mode & 0o100
    assert (out / "empty").is_dir()
    assert store.unpack(a.digest) == out  # cached
    with pytest.raises(CorruptArtifactError, match="not stored from a folder"):
        store.unpack(store.put(b"plain file").digest)


def test_folder_links(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cold")
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "real.bin").write_bytes(b"weights")
    (folder / "link.bin").symlink_to(tmp_path / "real.bin")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "link.bin").write_bytes(b"weights")
    assert store.put(folder) == store.put(plain)  # a link to a file stores the file
    (folder / "dir").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic links to folders"):
        store.put(folder)
    assert list((store.base / "tmp").iterdir()) == []


def test_corruption_is_detected_and_put_repairs(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cold")
    art = store.put(b"precious weights")
    blob = Path(art.uri)
    blob.chmod(0o644)
    blob.write_bytes(b"precious weightz")
    with pytest.raises(CorruptArtifactError, match="corrupted") as info:
        store.get(art.digest)
    assert isinstance(info.value, PathRayError)
    assert art.digest in str(info.value)
    assert store.get(art.digest, verify=False) == blob  # a caller may skip the check
    assert store.put(b"precious weights") == art  # putting the content again repairs it
    assert store.get(art.digest).read_bytes() == b"precious weights"


def test_bad_digests_and_sources(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cold")
    assert check_digest("SHA256:" + "AB" * 32) == "ab" * 32
    with pytest.raises(ConfigError, match="64 hex digits"):
        store.get("abc")
    with pytest.raises(NotFoundError, match="not in the store"):
        store.get("0" * 64)
    assert not store.exists("0" * 64)
    with pytest.raises(NotFoundError, match="does not exist"):
        store.put(tmp_path / "missing.bin")
