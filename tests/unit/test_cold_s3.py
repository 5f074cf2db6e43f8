"""The cold store and the artifact store on S3, against a local moto server (no Ray)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pathray.config import Settings
from pathray.errors import ConfigError, NotFoundError, StorageError
from pathray.results.artifacts import ArtifactStore, CorruptArtifactError, local_cache
from pathray.results.location import Location, S3Options
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from tests.conftest import S3_KEYS, S3Proxy, free_port


def _objects(slide: int, tiles: list[int], x0: float) -> pa.Table:
    n = len(tiles)
    return pa.table({
        "slide_id": pa.array([slide] * n, pa.int64()),
        "tile_id": pa.array(tiles, pa.int64()),
        "object_id": pa.array(range(n), pa.int64()),
        "bbox_x0": pa.array([x0 + 100 * i for i in range(n)], pa.float64()),
        "bbox_y0": pa.array([0.0] * n, pa.float64()),
        "bbox_x1": pa.array([x0 + 100 * i + 50 for i in range(n)], pa.float64()),
        "bbox_y1": pa.array([50.0] * n, pa.float64()),
    })  # fmt: skip


def _tiles(slide: int, tiles: list[int]) -> pa.Table:
    return pa.table({
        "slide_id": pa.array([slide] * len(tiles), pa.int64()),
        "tile_id": pa.array(tiles, pa.int64()),
    })  # fmt: skip


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("slide_id", "ascending"), ("tile_id", "ascending")])


def test_stage_finalize_query_export_on_s3(s3_cold: str, tmp_path: Path) -> None:
    store = ColdStore.open(s3_cold)
    assert store.location.remote and store.root == s3_cold
    run = "run-1"
    store.stage(run, "a", _tiles(1, [0, 1]), _objects(1, [0, 1], 0.0))
    # a retried batch (other name, same tile 1) must not double tile 1's rows
    store.stage(run, "b", _tiles(1, [1, 2]), _objects(1, [1, 2], 5000.0))
    store.stage(run, "c", _tiles(2, [0]), _objects(2, [0], 0.0))
    assert store.done_tiles(run) == {(1, 0), (1, 1), (1, 2), (2, 0)}
    first = store.finalize(run)
    assert first == {1: {"tiles": 3, "objects": 3}, 2: {"tiles": 1, "objects": 1}}
    objects = store.read(run)
    # tile 1's object comes from batch "a" (first by name), not from the retry "b"
    pairs = zip(objects["tile_id"].to_pylist(), objects["bbox_x0"].to_pylist(), strict=True)
    assert sorted(pairs) == [(0, 0.0), (0, 0.0), (1, 100.0), (2, 5100.0)]
    # committing again gives the same datasets
    assert store.finalize(run) == first
    assert _sorted(store.read(run)).equals(_sorted(objects))
    assert store.uri(run, "objects").uri == f"{s3_cold}/runs/{run}/objects.lance"
    # region query on the committed objects of slide 1
    region = store.query_region(run, 1, (0.0, 0.0, 120.0, 60.0))
    assert sorted(region["bbox_x0"].to_pylist()) == [0.0, 100.0]
    # export to local Parquet files with the same rows
    files = store.export_parquet(run, tmp_path / "export")
    assert sorted(f.name for f in files) == [f"{run}.objects.parquet", f"{run}.tiles.parquet"]
    exported = pq.read_table(tmp_path / "export" / f"{run}.objects.parquet")
    assert _sorted(exported).equals(_sorted(objects))
    # the staging area goes once the run is committed; the datasets stay
    store.discard_staging(run)
    assert store.done_tiles(run) == set() and not store.staging(run).exists()
    assert store.read(run, "tiles").num_rows == 4
    with pytest.raises(NotFoundError, match="no committed objects"):
        store.read("no-such-run")


def test_artifacts_on_s3_are_checked_and_unpacked_locally(s3_cold: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (folder / "sub" / "config.json").write_text('{"k": 1}')
    store = ArtifactStore(s3_cold)
    art = store.put(folder)
    assert art.uri.startswith(f"{s3_cold}/artifacts/sha256/{art.digest[:2]}/")
    assert store.exists(art.digest) and store.describe(art.digest).size == art.size
    assert store.put(folder) == art  # the same content is stored once
    # a fresh cache (another node) fetches, checks and unpacks it
    other = ArtifactStore(s3_cold)
    assert other.root == local_cache(s3_cold)
    for path in sorted(other.root.rglob("*"), reverse=True):
        path.chmod(0o755)
        path.unlink() if path.is_file() else path.rmdir()
    out = other.unpack(art.digest)
    assert (out / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert (out / "sub" / "config.json").read_text() == '{"k": 1}'
    # a damaged object is refused, never handed to a unit
    blob = Location(art.uri)
    blob.filesystem.delete_file(blob.path)
    with blob.filesystem.open_output_stream(blob.path) as handle:
        handle.write(b"not the model")
    cached = other.path(art.digest)
    cached.chmod(0o644)
    cached.unlink()
    with pytest.raises(CorruptArtifactError, match="corrupted"):
        other.get(art.digest)
    # putting the original again repairs it
    store.put(folder)
    cached.chmod(0o644)
    cached.unlink()
    assert tarfile.is_tarfile(other.get(art.digest))
    with pytest.raises(NotFoundError, match="not in the store"):
        other.get("0" * 64)


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "s3://Bad_Bucket/x", "gs://bucket/x"])
def test_malformed_cold_uri_is_refused(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATHRAY_COLD", uri)
    with pytest.raises(ConfigError, match=r"s3://bucket/prefix.*Got"):
        Settings.from_env()
    with pytest.raises(ConfigError, match="Got"):
        ColdStore(uri)


def test_bad_endpoint_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATHRAY_S3_ENDPOINT", "127.0.0.1:9000")
    with pytest.raises(ConfigError, match="PATHRAY_S3_ENDPOINT must be an http:// or https://"):
        ColdStore("s3://bucket/cold")


def test_unreachable_store_names_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in S3_KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATHRAY_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PATHRAY_COLD", "s3://bucket/cold")
    settings = Settings.from_env()
    assert settings.cold_root == "s3://bucket/cold"
    with pytest.raises(StorageError, match="PATHRAY_S3_ENDPOINT") as info:
        ColdStore.open(settings.cold_root)
    assert "s3://bucket/cold" in str(info.value) and "127.0.0.1" in str(info.value)


def test_missing_bucket_is_named(s3_cold: str) -> None:
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' .* does not exist"):
        ColdStore.open("s3://no-such-bucket/cold")


def test_s3_slide_store_is_refused(sqlite_catalog) -> None:
    with pytest.raises(ConfigError, match=r"not supported yet\. Got 's3://slides/wsi'"):
        register_slides(sqlite_catalog, "s3://slides/wsi", store="cloud")
    assert sqlite_catalog.list_stores() == []


def test_vanished_store_fails_with_storage_error_and_keeps_state(
    s3_cold: str, s3_proxy: S3Proxy, s3_server: str
) -> None:
    def store_at(endpoint: str) -> ColdStore:
        keys = (S3_KEYS["AWS_ACCESS_KEY_ID"], S3_KEYS["AWS_SECRET_ACCESS_KEY"])
        return ColdStore(Location(s3_cold, S3Options(endpoint, "us-east-1", *keys)))

    through_proxy, direct = store_at(s3_proxy.endpoint), store_at(s3_server)
    through_proxy.stage("r", "a", _tiles(1, [0]), _objects(1, [0], 0.0))
    s3_proxy.kill()
    for action in (
        lambda: through_proxy.finalize("r"),
        lambda: through_proxy.stage("r", "b", _tiles(1, [1]), None),
        lambda: through_proxy.read("r"),
    ):
        with pytest.raises(StorageError, match="PATHRAY_S3_ENDPOINT") as info:
            action()
        assert s3_proxy.endpoint in str(info.value)
    # what was staged before is intact, nothing was committed, and the run commits later
    assert direct.done_tiles("r") == {(1, 0)} and not (direct.location / "runs").exists()
    s3_proxy.start()
    assert through_proxy.finalize("r") == {1: {"tiles": 1, "objects": 1}}
