"""The engine on a local Ray: a run end to end, results in Lance, and a killed run resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import run_pipeline
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from tests.helpers import OME_FILES

pytestmark = pytest.mark.ray
SLIDE = next(p for p in OME_FILES if "ndpi" in p.name)  # 2202 px square, 0.227 mpp

SPEC = """
name: blobs
version: "1"
tiling: {{mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}}
units:
  - {{id: tissue, unit: tissue_mask, config: {{mpp: 0.25}}}}
  - {{id: blobs, unit: dark_blobs, after: [tissue], config: {{threshold: 110, delay_s: {delay}}}}}
"""


def _sorted(table: pa.Table) -> pa.Table:
    keys = [k for k in ("slide_id", "tile_id", "object_id") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    home = tmp_path_factory.mktemp("home")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    report = register_slides(catalog, SLIDE, store="shared", image_set="ki67")
    assert report.registered and not report.rejected
    ensure_ray(num_cpus=2)
    return {"home": home, "catalog": catalog, "store": ColdStore(home / "cold")}


def test_run_end_to_end(env: dict[str, object]) -> None:
    catalog, store = env["catalog"], env["store"]
    assert isinstance(catalog, Catalog) and isinstance(store, ColdStore)
    result = run_pipeline(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
    assert result.status == "succeeded"
    objects = store.read(result.run_id)
    tiles = store.read(result.run_id, "tiles")
    assert objects.num_rows > 100
    # every planned tile was processed once, objects keep unique keys
    assert tiles.num_rows == result.tiles_processed == len(set(tiles["tile_id"].to_pylist()))
    keys = set(zip(objects["tile_id"].to_pylist(), objects["object_id"].to_pylist(), strict=True))
    assert len(keys) == objects.num_rows
    assert "tissue_fraction" in tiles.column_names and "area_px" in objects.column_names
    # the run and the slide <-> unit <-> location map are in the catalog
    run = catalog.get_run(result.run_id)
    assert run.status == "succeeded" and run.progress["tiles_done"] == tiles.num_rows
    # where the time went, phase by phase, adding up to the run's wall time
    phases = run.progress["phases"]
    assert list(phases) == ["plan", "first_batch", "stream", "commit"] and phases == result.phases
    assert all(v >= 0 for v in phases.values()) and phases["first_batch"] > 0
    assert abs(sum(phases.values()) - result.seconds) < 0.05 * result.seconds + 0.1
    locations = catalog.result_locations(run_id=result.run_id)
    assert {(loc.unit_name, loc.kind) for loc in locations} == {
        ("tissue", "tiles"),
        ("blobs", "objects"),
    }
    assert all(Path(loc.uri).exists() for loc in locations)
    # the run traces to its pipeline version, whose nodes are unit versions with their configs
    nodes, edges = catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
    assert edges == [("tissue", "blobs")]
    assert nodes["blobs"].unit == "dark_blobs" and nodes["blobs"].config["threshold"] == 110
    # region query equals a filter over the full table
    slide_id = int(objects["slide_id"][0].as_py())
    box = (500.0, 500.0, 900.0, 800.0)
    region = store.query_region(result.run_id, slide_id, box)
    full = objects.to_pandas()
    expected = full[
        (full.bbox_x1 >= box[0])
        & (full.bbox_x0 <= box[2])
        & (full.bbox_y1 >= box[1])
        & (full.bbox_y0 <= box[3])
    ]
    assert 0 < region.num_rows == len(expected) < objects.num_rows
    # Parquet export holds the same rows
    files = store.export_parquet(result.run_id, env["home"] / "export")  # type: ignore[operator]
    import pyarrow.parquet as pq

    exported = pq.read_table(next(f for f in files if f.name.endswith("objects.parquet")))
    assert _sorted(exported).equals(_sorted(objects))


def test_killed_run_resumes_to_the_rows_of_a_clean_run(
    env: dict[str, object], tmp_path: Path
) -> None:
    catalog, store, home = env["catalog"], env["store"], env["home"]
    assert isinstance(catalog, Catalog) and isinstance(store, ColdStore)
    spec_file = tmp_path / "slow.yaml"
    spec_file.write_text(SPEC.format(delay=0.3))
    child_env = {**os.environ, "PATHRAY_HOME": str(home), "PATHRAY_COLD": str(store.root)}
    child_env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "pathray", "run", str(spec_file), "--set", "ki67"]
    proc = subprocess.Popen(
        cmd,
        env=child_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    staging = store.root / "staging"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if len(list(staging.glob("*/*.tiles.parquet"))) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    run = next(
        r for r in catalog.list_runs() if r.pipeline_name == "blobs" and r.status == "running"
    )
    done_before = len(store.done_tiles(run.id))
    assert done_before > 0
    resumed = run_pipeline(catalog, store, PipelineSpec.from_yaml(spec_file), resume=run.id)
    assert resumed.run_id == run.id and resumed.status == "succeeded"
    assert resumed.tiles_processed > 0  # only the missing tiles were processed again
    # workers of the killed Ray may stage a batch they were computing after the count above:
    # the resume keeps those too, and processes each tile once
    assert resumed.tiles_reused >= done_before
    clean = run_pipeline(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
    assert resumed.tiles_processed + resumed.tiles_reused == clean.tiles_processed
    for kind in ("objects", "tiles"):
        a, b = _sorted(store.read(run.id, kind)), _sorted(store.read(clean.run_id, kind))
        assert a.num_rows == b.num_rows > 0
        assert a.equals(b)
