"""Warm units: unit actors that outlive a run and serve the next runs of the same unit version.

On a local Ray of this process (two CPUs) and the 2202 px NDPI OME-TIFF: a second warm run
leases the first run's actors (same actor ids, no unit load), commits exactly a cold run's rows,
a changed config gets actors of its own, an idle pool releases itself, and a warm run cancelled
midway resumes to exactly the rows of a clean run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import ray

from pathray.catalog import Catalog
from pathray.engine import warm
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import RunResult, run_pipeline
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from tests.helpers import OME_FILES

pytestmark = pytest.mark.ray
SLIDE = next(p for p in OME_FILES if "ndpi" in p.name)  # 2202 px square, 0.227 mpp

SPEC = """
name: warm-blobs
version: "1"
tiling: {{mpp: 0.5, size: 128, overlap: 16, min_tissue: 0.0}}
units:
  - {{id: tissue, unit: tissue_mask, config: {{mpp: 0.5}}}}
  - id: blobs
    unit: dark_blobs
    after: [tissue]
    config: {{threshold: {threshold}, delay_s: {delay}}}
"""


def _spec(threshold: int = 110, delay: float = 0.0) -> PipelineSpec:
    return PipelineSpec.from_yaml(SPEC.format(threshold=threshold, delay=delay))


def _sorted(table: pa.Table) -> pa.Table:
    keys = [k for k in ("slide_id", "tile_id", "object_id") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys])


def _rows(store: ColdStore, run_id: str) -> dict[str, pa.Table]:
    return {kind: _sorted(store.read(run_id, kind)) for kind in ("tiles", "objects")}


def _warm_events(catalog: Catalog, run_id: str) -> list[str]:
    return [e.message for e in catalog.run_events(run_id) if "warm actor" in e.message]


def _pool_ids(key_prefix: str) -> dict[str, str]:
    """Actor id of every live warm actor whose name starts with ``key_prefix``."""
    ids = {}
    for name in warm.warm_actors():
        if name.startswith(key_prefix):
            actor = ray.get_actor(name, namespace=warm.NAMESPACE)
            ids[name] = actor._actor_id.hex()
    return ids


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("warm")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    report = register_slides(catalog, SLIDE, store="shared", image_set="ndpi")
    assert report.registered and not report.rejected
    ensure_ray(num_cpus=2)
    try:
        yield {"catalog": catalog, "store": ColdStore(home / "cold")}
    finally:
        warm.evict_idle()  # leave the CPUs to the next module's runs
        catalog.close()


def test_a_second_warm_run_reuses_the_actors_and_commits_a_cold_runs_rows(
    env: dict[str, Any],
) -> None:
    catalog, store = env["catalog"], env["store"]
    first = run_pipeline(catalog, store, _spec(), "ndpi", warm=True)
    assert first.status == "succeeded" and first.tiles_processed > 20
    started = _warm_events(catalog, first.run_id)
    assert len(started) == 2 and all("started" in m for m in started), started
    before = _pool_ids("pathray-warm-")
    assert len(before) >= 2

    second = run_pipeline(catalog, store, _spec(), "ndpi", warm=True)
    assert second.status == "succeeded"
    reused = _warm_events(catalog, second.run_id)
    # no actor started, so no unit loaded: both stages leased the first run's actors
    assert len(reused) == 2 and all("reusing" in m for m in reused), reused
    assert _pool_ids("pathray-warm-") == before
    assert sum(c["objects"] for c in second.counts.values()) > 100

    cold = run_pipeline(catalog, store, _spec(), "ndpi", warm=False)
    assert cold.status == "succeeded" and not _warm_events(catalog, cold.run_id)
    for kind, table in _rows(store, cold.run_id).items():
        assert _rows(store, first.run_id)[kind].equals(table), kind
        assert _rows(store, second.run_id)[kind].equals(table), kind
    # per-unit progress reached the catalog through the warm monitor
    units = catalog.get_run(second.run_id).progress["units"]
    assert units["blobs"]["objects"] == sum(c["objects"] for c in second.counts.values())


def test_a_changed_config_or_model_gets_actors_of_its_own(env: dict[str, Any]) -> None:
    catalog, store = env["catalog"], env["store"]
    base = run_pipeline(catalog, store, _spec(), "ndpi", warm=True)
    before = set(_pool_ids("pathray-warm-"))
    changed = run_pipeline(catalog, store, _spec(threshold=120), "ndpi", warm=True)
    events = _warm_events(catalog, changed.run_id)
    # the tissue stage is the same unit version and config: reused; dark_blobs changed: started
    assert any(m.startswith("unit tissue: reusing") for m in events), events
    assert any(m.startswith("unit blobs: started") for m in events), events
    assert len(set(_pool_ids("pathray-warm-")) - before) >= 1
    assert base.status == changed.status == "succeeded"
    # a model is part of the key too (its artifact folder is named by its digest)
    args = ("pathray.units.examples:DarkBlobs", "1", {"threshold": 110}, None, {})
    assert warm.pool_key(*args) != warm.pool_key(*args[:3], {"model": "sha256/ab/cd"}, {})


def test_an_idle_pool_releases_itself(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    catalog, store = env["catalog"], env["store"]
    before = set(_pool_ids("pathray-warm-"))
    monkeypatch.setenv(warm.IDLE_ENV, "2")
    result = run_pipeline(catalog, store, _spec(threshold=90), "ndpi", warm=True)
    assert result.status == "succeeded"
    mine = [m for m in _warm_events(catalog, result.run_id) if m.startswith("unit blobs")]
    assert mine and "started" in mine[0]
    new = set(_pool_ids("pathray-warm-")) - before
    assert new  # the threshold-90 pool
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and new & set(_pool_ids("pathray-warm-")):
        time.sleep(0.5)
    alive = set(_pool_ids("pathray-warm-"))
    # the threshold-90 pool (idle 2 s) left by itself; pools started with the default idle stay
    assert not new & alive and before <= alive, (new, before, alive)


def test_a_cancelled_warm_run_resumes_to_exactly_a_clean_runs_rows(env: dict[str, Any]) -> None:
    catalog, store = env["catalog"], env["store"]
    spec = _spec(threshold=100, delay=1.0)
    box: dict[str, RunResult] = {}
    thread = threading.Thread(
        target=lambda: box.update(result=run_pipeline(catalog, store, spec, "ndpi", warm=True))
    )
    thread.start()
    deadline = time.monotonic() + 240
    run_id = None
    while time.monotonic() < deadline:
        running = [r for r in catalog.list_runs() if r.config_hash == spec.spec_hash()]
        if running and store.done_tiles(running[-1].id):
            run_id = running[-1].id
            break
        time.sleep(0.2)
    assert run_id is not None, "the warm run staged nothing"
    catalog.request_cancel(run_id)
    thread.join(60)
    assert not thread.is_alive()
    cancelled = box["result"]
    assert cancelled.status == "cancelled" and cancelled.tiles_processed > 0
    resumed = run_pipeline(catalog, store, spec, resume=run_id, warm=True)
    assert resumed.status == "succeeded" and resumed.tiles_reused > 0
    clean = run_pipeline(catalog, store, _spec(threshold=100), "ndpi", warm=False)
    for kind, table in _rows(store, clean.run_id).items():
        assert _rows(store, run_id)[kind].equals(table), kind


def test_warm_mode_reads_its_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warm.WARM_ENV, raising=False)
    assert warm.warm_enabled() is False and warm.warm_enabled(True) is True
    monkeypatch.setenv(warm.WARM_ENV, "1")
    assert warm.warm_enabled() is True and warm.warm_enabled(False) is False
    monkeypatch.setenv(warm.WARM_ENV, "sometimes")
    with pytest.raises(ValueError, match="PATHRAY_WARM must be 1 or 0"):
        warm.warm_enabled()
    monkeypatch.setenv(warm.IDLE_ENV, "-3")
    with pytest.raises(ValueError, match="positive number of seconds"):
        warm.idle_seconds()


def test_every_tile_is_staged_once_in_warm_mode(env: dict[str, Any]) -> None:
    """Sanity of the premise of exactly-once: both modes stage every tile once."""
    catalog, store = env["catalog"], env["store"]
    result = run_pipeline(catalog, store, _spec(), "ndpi", warm=True)
    tiles = store.read(result.run_id, "tiles")
    assert tiles.num_rows == result.tiles_processed == len(set(tiles["tile_id"].to_pylist()))
