"""The engine on a local Ray with the cold store on S3 (a moto server), and the store vanishing.

The run's store is reached through a TCP forwarder (the ``s3_proxy`` fixture): killing it makes
the object store disappear mid-run for the driver and every Ray worker at once, while the
server behind it keeps what was written, so the run can be resumed once it is back.
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import run_pipeline
from pathray.pipeline.spec import PipelineSpec
from pathray.results.location import Location, S3Options
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from tests.conftest import S3_KEYS, S3Proxy
from tests.helpers import OME_FILES

pytestmark = pytest.mark.ray
SLIDE = next(p for p in OME_FILES if "ndpi" in p.name)  # 2202 px square, 0.227 mpp

SPEC = """
name: blobs-s3
version: "1"
tiling: {{mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}}
units:
  - {{id: tissue, unit: tissue_mask, config: {{mpp: 0.25}}}}
  - {{id: blobs, unit: dark_blobs, after: [tissue], config: {{threshold: 110, delay_s: {delay}}}}}
"""


def _sorted(table: pa.Table) -> pa.Table:
    keys = [k for k in ("slide_id", "tile_id", "object_id") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys])


def _options(endpoint: str) -> S3Options:
    return S3Options(
        endpoint=endpoint,
        access_key=S3_KEYS["AWS_ACCESS_KEY_ID"],
        secret_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    report = register_slides(catalog, SLIDE, store="shared", image_set="ki67")
    assert report.registered and not report.rejected
    ensure_ray(num_cpus=2)
    return catalog


def test_run_on_s3_commits_readable_results(catalog: Catalog, s3_cold: str) -> None:
    store = ColdStore.open(s3_cold)
    result = run_pipeline(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
    assert result.status == "succeeded"
    objects, tiles = store.read(result.run_id), store.read(result.run_id, "tiles")
    assert objects.num_rows > 100
    assert tiles.num_rows == result.tiles_processed == len(set(tiles["tile_id"].to_pylist()))
    keys = set(zip(objects["tile_id"].to_pylist(), objects["object_id"].to_pylist(), strict=True))
    assert len(keys) == objects.num_rows
    # the catalog points at the datasets in the bucket, which a fresh reader opens
    locations = catalog.result_locations(run_id=result.run_id)
    assert {loc.uri for loc in locations} == {
        f"{s3_cold}/runs/{result.run_id}/objects.lance",
        f"{s3_cold}/runs/{result.run_id}/tiles.lance",
    }
    again = ColdStore(s3_cold).read(result.run_id, "objects")
    assert _sorted(again).equals(_sorted(objects))
    slide_id = int(objects["slide_id"][0].as_py())
    region = store.query_region(result.run_id, slide_id, (500.0, 500.0, 900.0, 800.0))
    assert 0 < region.num_rows < objects.num_rows
    # the staging area is gone once committed
    assert not store.staging(result.run_id).exists()


def test_store_vanishing_mid_run_fails_cleanly_and_resumes(
    catalog: Catalog, s3_cold: str, s3_proxy: S3Proxy, s3_server: str
) -> None:
    # the run reaches the store through the proxy; the test watches it directly
    run_store = ColdStore(Location(s3_cold, _options(s3_proxy.endpoint)))
    direct = ColdStore(Location(s3_cold, _options(s3_server)))
    spec = PipelineSpec.from_yaml(SPEC.format(delay=0.3))

    killed = threading.Event()

    def kill_when_streaming() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed.is_set():
            staged = direct.location / "staging"
            runs = [f for f in staged.filesystem.get_file_info(_selector(staged)) if f.is_file]
            if sum(f.base_name.endswith(".tiles.parquet") for f in runs) >= 2:
                s3_proxy.kill()
                killed.set()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_when_streaming, daemon=True)
    watcher.start()
    with pytest.raises(Exception, match="PATHRAY_S3_ENDPOINT") as info:
        run_pipeline(catalog, run_store, spec, "ki67")
    watcher.join(timeout=5)
    assert killed.is_set(), f"the run ended before the store vanished: {info.value}"
    # a clear reason, recorded on the run; nothing committed or recorded
    run = next(r for r in catalog.list_runs() if r.pipeline_name == "blobs-s3")
    assert run.status == "failed"
    assert "Could not" in (run.error or "") and s3_proxy.endpoint in (run.error or "")
    assert catalog.result_locations(run_id=run.id) == []
    assert not (direct.location / "runs" / run.id).exists()
    done_before = len(direct.done_tiles(run.id))
    assert done_before >= 2
    # the store comes back: the resumed run processes only the missing tiles
    s3_proxy.start()
    resumed = run_pipeline(catalog, run_store, spec, resume=run.id)
    assert resumed.status == "succeeded" and resumed.tiles_processed > 0
    # a batch still being written when the run failed may land once the store is back:
    # the resume keeps it too, and each tile is processed once
    assert resumed.tiles_reused >= done_before
    clean = run_pipeline(catalog, direct, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
    assert resumed.tiles_processed + resumed.tiles_reused == clean.tiles_processed
    for kind in ("objects", "tiles"):
        a, b = _sorted(direct.read(run.id, kind)), _sorted(direct.read(clean.run_id, kind))
        assert a.num_rows == b.num_rows > 0 and a.equals(b)


def _selector(folder: Location) -> pafs.FileSelector:
    return pafs.FileSelector(folder.path, recursive=True, allow_not_found=True)
