"""A run whose unit workers are killed mid-way completes with exactly the rows of a clean run.

While :func:`~pathray.engine.runner.run_pipeline` streams tiles through tissue masking and a slow
dark-blob detector, a thread of the test waits for the first staged tiles, then SIGKILLs the
worker processes of the run's ``UnitStage`` actors (found in this Ray's GCS actor table, never by
process name: other Ray instances may share the machine). Ray Data creates its actors with
``max_restarts=-1`` and ``max_task_retries=-1`` unless told otherwise, so the actors restart, their
lost tasks are retried and the run completes on its own, with the committed tiles and objects of
a clean run. (A killed *driver* is resumed by id: ``tests/integration/test_engine.py``.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
import ray

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
tiling: {mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.25}}
  - {id: blobs, unit: dark_blobs, after: [tissue], config: {threshold: 110, delay_s: 0.5}}
"""


@dataclass(frozen=True)
class ActorRecord:
    """One actor of the GCS actor table."""

    actor_id: str
    repr_name: str
    state: str
    pid: int
    num_restarts: int


def _actors() -> list[ActorRecord]:
    """Every actor of this Ray, read from the GCS actor table (no dashboard needed)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    accessor = state._connect_and_get_accessor()
    records = []
    for raw in accessor.get_actor_table(None, None):
        data = gcs_pb2.ActorTableData.FromString(raw)
        records.append(
            ActorRecord(
                actor_id=data.actor_id.hex(),
                repr_name=data.repr_name or data.class_name,
                state=gcs_pb2.ActorTableData.ActorState.Name(data.state),
                pid=data.pid,
                num_restarts=data.num_restarts,
            )
        )
    return records


def _unit_workers() -> list[ActorRecord]:
    return [a for a in _actors() if "MapBatches(UnitStage)" in a.repr_name and a.state == "ALIVE"]


class Killer(threading.Thread):
    """Kill the run's unit workers once some tiles are staged.

    Args:
        staging: The store's staging root (runs stage under ``<root>/<run id>/``).
        after: Staged tile files to wait for.
    """

    def __init__(self, staging: Path, after: int = 2) -> None:
        super().__init__(daemon=True)
        self.staging = staging
        self.after = after
        self.killed: list[ActorRecord] = []
        self.killed_at = 0.0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        """Poll the staging folder and the actor table; kill once, then return."""
        try:
            while not self.stop.is_set():
                staged = len(list(self.staging.glob("*/*.tiles.parquet")))
                workers = _unit_workers()
                if staged >= self.after and workers:
                    for worker in workers:
                        os.kill(worker.pid, signal.SIGKILL)
                    self.killed, self.killed_at = workers, time.monotonic()
                    return
                self.stop.wait(0.1)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _sorted(table: pa.Table) -> pa.Table:
    keys = [k for k in ("slide_id", "tile_id", "object_id") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Catalog, ColdStore]]:
    """A catalog with one slide in set ``ki67``, a cold store and a local Ray (2 CPUs)."""
    home = tmp_path_factory.mktemp("failure")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    report = register_slides(catalog, SLIDE, store="shared", image_set="ki67")
    assert report.registered and not report.rejected
    with pytest.MonkeyPatch.context() as patch:
        # A busy machine starts Ray's agents slowly; the raylet waits about 15 s by default.
        patch.setenv("RAY_raylet_start_wait_time_s", "120")
        ensure_ray(num_cpus=2)
    yield catalog, ColdStore(home / "cold")
    ray.shutdown()
    catalog.close()


def test_run_with_killed_unit_workers_commits_the_rows_of_a_clean_run(
    env: tuple[Catalog, ColdStore],
) -> None:
    """SIGKILLed unit actors are restarted and their tasks retried; no row is lost or doubled."""
    catalog, store = env
    spec = PipelineSpec.from_yaml(SPEC)
    killer = Killer(store.root / "staging")
    killer.start()
    try:
        result = run_pipeline(catalog, store, spec, "ki67")  # no resume needed
    finally:
        finished = time.monotonic()
        killer.stop.set()
        killer.join(timeout=30)
    assert killer.error is None, killer.error
    assert killer.killed, "the run ended before any unit worker could be killed"
    assert killer.killed_at < finished
    assert result.status == "succeeded"
    assert catalog.get_run(result.run_id).status == "succeeded"
    # the killed processes are gone: their batches were retried on restarted actors (Ray Data
    # keeps the actor ids; the GCS restart count is not reliable once the pool has shut down)
    for actor in killer.killed:
        with pytest.raises(ProcessLookupError):
            os.kill(actor.pid, 0)
    clean = run_pipeline(catalog, store, spec, "ki67")
    assert result.counts == clean.counts
    assert result.tiles_processed == clean.tiles_processed  # retried tiles written once
    for kind in ("objects", "tiles"):
        got = _sorted(store.read(result.run_id, kind))
        want = _sorted(store.read(clean.run_id, kind))
        assert got.num_rows == want.num_rows > 0
        assert got.equals(want)
