"""A PostgreSQL catalog restarted mid-run: the run waits and continues, or fails with the reason.

Each test starts a private PostgreSQL server (``private_pg``; the shared server is never
touched), runs the nucleus U-Net with its shipped model over a synthetic slide on a local Ray,
and stops the server with ``pg_ctl stop -m fast`` (every session cut) at a chosen moment:

- mid-stream, for a few seconds, under a run driven by a detached Ray actor (the catalog is
  written from a Ray worker): the driver's writes wait for the server and the run succeeds
  with exactly the rows of a clean run;
- right after the Lance datasets are written and before the catalog records them, for longer
  than the catalog waits: the run fails with :class:`~pathray.errors.CatalogUnavailableError`
  naming the reason, the catalog holds no result location (no half commit), and a resume
  commits the staged rows of a clean run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.jobs import driver_alive, submit_run, wait_run
from pathray.engine.runner import run_pipeline
from pathray.errors import CatalogUnavailableError
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from tests.faults import (
    IMAGE_SET,
    SPEC,
    assert_locations_agree,
    assert_same_rows,
    committed_rows,
    register,
    wait_for_staged,
)
from tests.private_postgres import PrivatePostgres

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
#: Seconds the server stays down in the mid-run restart (the catalog waits up to 60 s).
OUTAGE_S = 4.0


def test_run_driven_on_ray_waits_out_a_catalog_restart(
    private_pg: PrivatePostgres, fault_slide: Path, fault_reference: dict, tmp_path: Path
) -> None:
    """Stopped and started again mid-stream, the catalog loses no write and the run succeeds."""
    store = ColdStore(tmp_path / "cold")
    with Catalog.open(private_pg.url) as catalog:
        register(catalog, fault_slide)
        ensure_ray(num_cpus=2)
        run_id = submit_run(catalog, store, PipelineSpec.from_yaml(SPEC), IMAGE_SET)
        wait_for_staged(
            store,
            lambda: driver_alive(run_id),
            why=lambda: repr(catalog.get_run(run_id)) + repr(catalog.run_events(run_id)),
        )
        private_pg.stop()
        staged_at_stop = len(store.done_tiles(run_id))
        time.sleep(OUTAGE_S)  # the driver's progress writes wait meanwhile
        private_pg.start()
        run = wait_run(catalog, run_id, timeout=300)
        assert run.status == "succeeded", run.error
        assert 0 < staged_at_stop < fault_reference["tiles"].num_rows  # stopped mid-run
        assert_same_rows(committed_rows(store, run_id), fault_reference)
        assert_locations_agree(catalog, store, run_id)
        assert run.progress["tiles_done"] == run.progress["tiles_total"]


def test_catalog_lost_at_commit_fails_the_run_and_commits_nothing(
    private_pg: PrivatePostgres,
    fault_slide: Path,
    fault_reference: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gone between the Lance write and the catalog commit for longer than the catalog waits."""
    store = ColdStore(tmp_path / "cold")
    finalize = store.finalize

    def finalize_then_lose_the_catalog(run_id: str) -> dict[int, dict[str, int]]:
        counts = finalize(run_id)
        private_pg.stop()
        return counts

    with Catalog.open(private_pg.url, wait_s=2) as catalog:
        register(catalog, fault_slide)
        ensure_ray(num_cpus=2)
        monkeypatch.setattr(store, "finalize", finalize_then_lose_the_catalog)
        spec = PipelineSpec.from_yaml(SPEC)
        with pytest.raises(CatalogUnavailableError, match="catalog database must be reachable"):
            run_pipeline(catalog, store, spec, IMAGE_SET)
        monkeypatch.undo()
        private_pg.start()
        (run,) = catalog.list_runs()
        assert run.status == "running"  # the end could not be recorded either
        assert store.uri(run.id, "tiles").exists()  # Lance was written ...
        assert_locations_agree(catalog, store, run.id)  # ... but the catalog points at none
        resumed = run_pipeline(catalog, store, spec, resume=run.id)
        assert resumed.status == "succeeded"
        assert resumed.tiles_processed == 0  # every tile was staged: only the commit is redone
        assert_same_rows(committed_rows(store, run.id), fault_reference)
        assert_locations_agree(catalog, store, run.id)
