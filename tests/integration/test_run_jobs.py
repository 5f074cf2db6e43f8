"""Background runs on a local Ray: submit, per-unit progress, unit logs, cancel, resume."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pytest
import ray

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.jobs import RunTimeoutError, driver_alive, submit_run, wait_run
from pathray.engine.runner import run_pipeline
from pathray.errors import ConfigError
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from tests.helpers import OME_FILES

pytestmark = pytest.mark.ray
SLIDE = next(p for p in OME_FILES if "ndpi" in p.name)  # 2202 px square, 0.227 mpp

SPEC = """
name: blobs-jobs
version: "1"
tiling: {{mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}}
units:
  - {{id: tissue, unit: tissue_mask, config: {{mpp: 0.25}}}}
  - {{id: blobs, unit: dark_blobs, after: [tissue], config: {{threshold: 110, delay_s: {delay}}}}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Catalog, ColdStore]]:
    home = tmp_path_factory.mktemp("jobs")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    report = register_slides(catalog, SLIDE, store="shared", image_set="ki67")
    assert report.registered and not report.rejected
    ensure_ray(num_cpus=2)
    yield catalog, ColdStore(home / "cold")
    catalog.close()


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in ("slide_id", "tile_id", "object_id")])


def test_submitted_run_reports_per_unit_progress_and_unit_logs(
    env: tuple[Catalog, ColdStore],
) -> None:
    catalog, store = env
    run_id = submit_run(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
    run = wait_run(catalog, run_id, timeout=300)
    assert run.status == "succeeded", run.error
    units = run.progress["units"]
    total = run.progress["tiles_total"]
    assert set(units) == {"tissue", "blobs"} and total > 0
    assert all(u["tiles_done"] == u["tiles_total"] == total for u in units.values())
    assert units["blobs"]["objects"] == store.read(run_id).num_rows > 0
    events = catalog.run_events(run_id)
    messages = [e.message for e in events]
    assert messages[0].startswith("submitted by") or messages[1].startswith("submitted by")
    assert any(m.startswith(f"planned {total} tiles") for m in messages)
    # each unit's actor forwarded its own log record, tagged with its node id
    started = {e.unit for e in events if e.message.startswith("unit ") and "starting" in e.message}
    assert started == {"tissue", "blobs"}
    assert messages[-1].startswith("succeeded")


def test_bad_submission_records_nothing(env: tuple[Catalog, ColdStore]) -> None:
    catalog, store = env
    before = len(catalog.list_runs())
    bad = PipelineSpec.from_yaml(SPEC.format(delay=0).replace("after: [tissue]", "after: [nope]"))
    with pytest.raises(ConfigError):
        submit_run(catalog, store, bad, "ki67")
    assert len(catalog.list_runs()) == before


def test_cancel_stops_a_running_run_and_resume_completes_it(
    env: tuple[Catalog, ColdStore],
) -> None:
    catalog, store = env
    # 11 batches of 3 s on at most two actors: the run is still going when the cancel lands
    spec = PipelineSpec.from_yaml(SPEC.format(delay=3))
    run_id = submit_run(catalog, store, spec, "ki67", requester="alice")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until some tiles are done
        run = catalog.get_run(run_id)
        assert not run.finished, run.error
        if run.progress.get("tiles_done", 0) > 0:
            break
        time.sleep(0.2)
    with pytest.raises(RunTimeoutError, match="must finish within"):
        wait_run(catalog, run_id, timeout=0.1)
    catalog.request_cancel(run_id, actor="bob")
    run = wait_run(catalog, run_id, timeout=120)
    assert run.status == "cancelled"
    assert 0 < run.progress["tiles_done"] < run.progress["tiles_total"]
    messages = [e.message for e in catalog.run_events(run_id)]
    assert "cancel requested by bob" in messages
    assert any(m.startswith("cancelled after") for m in messages)
    staged = len(store.done_tiles(run_id))
    assert staged > 0  # kept for the resume
    resumed = run_pipeline(catalog, store, resume=run_id)
    assert resumed.status == "succeeded"
    # a batch in flight at the cancel may be staged after it; the resume keeps that one too
    assert resumed.tiles_reused >= staged
    assert resumed.tiles_processed + resumed.tiles_reused == run.progress["tiles_total"]
    clean = run_pipeline(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
    assert _sorted(store.read(run_id)).equals(_sorted(store.read(clean.run_id)))


@ray.remote(num_cpus=0)
class _Holder:
    """Holds CPUs the way Serve's unit replicas do (logical CPUs, held while idle)."""

    def ready(self) -> bool:
        return True


def _hold(cpus: float) -> object:
    holder = _Holder.options(num_cpus=cpus).remote()  # type: ignore[attr-defined]
    assert ray.get(holder.ready.remote(), timeout=120)
    return holder


def _wait_for_event(catalog: Catalog, run_id: str, prefix: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = catalog.get_run(run_id)
        assert not run.finished, (run.status, run.error)
        if any(e.message.startswith(prefix) for e in catalog.run_events(run_id)):
            return
        time.sleep(0.2)
    raise AssertionError(f"no event {prefix!r}: {[e.message for e in catalog.run_events(run_id)]}")


def _all_cpus_free_again(timeout: float = 90) -> bool:
    """Whether every CPU of the 2-CPU Ray comes free (no stage actor or driver left holding)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) >= 2.0 - 1e-6:
            return True
        time.sleep(0.5)
    return False


def test_a_run_fits_in_the_cpus_that_others_leave_free(env: tuple[Catalog, ColdStore]) -> None:
    """Serve's units hold 1.5 of the 2 CPUs: the run starts in the 0.5 left, not never."""
    catalog, store = env
    holder = _hold(1.5)
    try:
        run_id = submit_run(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
        run = wait_run(catalog, run_id, timeout=300)
        assert run.status == "succeeded", run.error
        assert run.progress["tiles_done"] == run.progress["tiles_total"] > 0
    finally:
        ray.kill(holder)


def test_cancel_ends_a_run_waiting_for_cpus(env: tuple[Catalog, ColdStore]) -> None:
    catalog, store = env
    holder = _hold(2.0)
    try:
        run_id = submit_run(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=0)), "ki67")
        _wait_for_event(catalog, run_id, "waiting for 0.15 free CPUs (got 0.00)")
        catalog.request_cancel(run_id, actor="bob")
        run = wait_run(catalog, run_id, timeout=20)
        assert run.status == "cancelled" and run.progress["tiles_done"] == 0
    finally:
        ray.kill(holder)
    assert _all_cpus_free_again()


def test_cancel_before_the_first_batch_ends_the_run_and_frees_its_cpus(
    env: tuple[Catalog, ColdStore],
) -> None:
    """The blobs unit takes 10 s per batch (its most): the cancel lands before the first one."""
    catalog, store = env
    run_id = submit_run(catalog, store, PipelineSpec.from_yaml(SPEC.format(delay=10)), "ki67")
    _wait_for_event(catalog, run_id, "planned ")
    catalog.request_cancel(run_id, actor="bob")
    run = wait_run(catalog, run_id, timeout=20)  # generous for a loaded 2-core CI machine
    assert run.status == "cancelled" and run.progress["tiles_done"] == 0
    assert run.finished_at is not None and run.cancel_requested_at is not None
    assert (run.finished_at - run.cancel_requested_at).total_seconds() < 10
    messages = [e.message for e in catalog.run_events(run_id)]
    assert any(
        m.startswith(f"cancelled after 0 of {run.progress['tiles_total']}") for m in messages
    )
    # the driver exits, and the stage actors it started go with it
    assert _all_cpus_free_again() and not driver_alive(run_id)
