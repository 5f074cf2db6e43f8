"""Streaming a cold run's batches through Ray Data, and the driver's view of its progress.

:class:`Tracker` keeps the run's progress document and phases and folds the run monitor's
per-unit counts and log records into the catalog; :func:`stream_dataset` pulls the batches
in a thread of its own so that a cancel is seen even while no batch comes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pathray.catalog import Catalog

log = logging.getLogger(__name__)
#: Called with ``(tiles done, tiles total)`` as batches finish.
Progress = Callable[[int, int], None]
#: Seconds a cancelled or interrupted run waits for its stream's puller to leave once the
#: stream's executor is shut down (it leaves at once unless a batch is being handed over).
STOP_STREAM_S = 30.0


def stream_dataset(
    dataset: ray.data.Dataset, tracker: Tracker, monitor: Any, progress: Progress | None
) -> tuple[int, bool]:
    """Stream a run's batches, watching for a cancel even while no batch comes.

    The batches are pulled in a thread of their own: the first one can take minutes (actors
    starting, models loading), and a cancel must be seen meanwhile. Once cancelled, the
    puller stops at its next batch (Ray Data then shuts the stream down); a run driver's
    actors go with its process (see :class:`~pathray.engine.jobs.RunDriver`).

    Returns:
        Tiles processed, and whether the run was cancelled.
    """
    counts: queue.Queue[int | BaseException | None] = queue.Queue()
    stop = threading.Event()
    # A name of its own, so that the stream's executor thread can be found to stop it.
    dataset.set_name(f"pathray-{tracker.run_id}")
    puller = threading.Thread(
        target=_pull, args=(dataset, counts, stop), name="pathray-batches", daemon=True
    )
    puller.start()
    processed = 0
    try:
        while True:
            try:
                item = counts.get(timeout=0.25)
            except queue.Empty:
                item = 0
            if isinstance(item, BaseException):
                raise item
            if item is None:
                return processed, False
            if item:
                processed += item
                tracker.batch_done(item, progress)
            if tracker.poll(monitor):
                return processed, True
    finally:
        stop.set()  # a no-op once the stream ended; else the puller leaves at its next batch
        if puller.is_alive():  # cancelled or interrupted while batches were still coming
            _stop_stream(dataset, puller)


def _stop_stream(dataset: ray.data.Dataset, puller: threading.Thread) -> None:
    """Shut an unfinished stream's executor down and wait for the puller to leave.

    Left alone, Ray Data's executor thread and the puller outlive the run: after Ray is shut
    down (at the end of ``pathray run``, or of a test session) they call Ray again, which
    logged tracebacks and even started a new local Ray from a daemon thread while the process
    was exiting. Ray Data (2.59) offers no public way to stop an iteration from another thread,
    so the executor is found by its thread's name (``StreamingExecutor-<dataset id>``) and
    shut down; its output then ends, and the puller with it.
    """
    prefix = f"StreamingExecutor-{dataset.name}_"
    for thread in threading.enumerate():
        if thread.name.startswith(prefix) and hasattr(thread, "shutdown"):
            try:
                thread.shutdown(force=True)
            except Exception as exc:  # best effort: the run's own outcome is already decided
                log.warning("could not stop the stream's executor: %s", exc)
    puller.join(timeout=STOP_STREAM_S)
    if puller.is_alive():
        log.warning("the stream did not stop within %s s", STOP_STREAM_S)


def _pull(
    dataset: ray.data.Dataset,
    counts: queue.Queue[int | BaseException | None],
    stop: threading.Event,
) -> None:
    """Put the tile count of each batch into ``counts``, then None (or the error raised)."""
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            # leaving the loop closes Ray Data's iterator, which shuts the stream down
            if stop.is_set():
                return
            counts.put(int(pc.sum(pa.array(batch["tiles"])).as_py() or 0))
    except BaseException as exc:  # handed to the driver thread, which raises it
        counts.put(exc)
        return
    counts.put(None)


class Tracker:
    """The driver's view of a run's progress, written to the catalog on each sync."""

    def __init__(
        self,
        catalog: Catalog,
        run_id: str,
        nodes: list[str],
        total: int,
        done: int,
        started: float,
    ) -> None:
        self.catalog, self.run_id, self.total, self.done = catalog, run_id, total, done
        self.base = done  # tiles done before this call (a resume)
        self.units: dict[str, dict[str, int]] = {
            node: {"tiles_total": total, "tiles_done": done, "objects": 0} for node in nodes
        }
        self.phases: dict[str, float] = {}
        self._phase_start = started  # perf_counter() when the run's call began
        self._last_sync = time.monotonic()

    def batch_done(self, tiles: int, progress: Progress | None) -> None:
        """Count a batch's tiles (the first batch ends the ``first_batch`` phase)."""
        if "first_batch" not in self.phases:
            self.phase("first_batch")
        self.done += tiles
        if progress:
            progress(self.done, self.total)

    def poll(self, monitor: Any) -> bool:
        """Sync the progress at most once a second; whether a cancel was requested then."""
        if time.monotonic() - self._last_sync <= 1.0:
            return False
        self.sync(monitor)
        self._last_sync = time.monotonic()
        return self.catalog.cancel_requested(self.run_id)

    def phase(self, name: str) -> None:
        """Record that phase ``name`` (begun when the previous one ended) ends now."""
        now = time.perf_counter()
        self.phases[name] = round(now - self._phase_start, 3)
        self._phase_start = now

    def document(self) -> dict[str, Any]:
        """The run's progress document."""
        return {
            "tiles_total": self.total,
            "tiles_done": self.done,
            "units": self.units,
            "phases": dict(self.phases),
        }

    def event(self, message: str, level: str = "info") -> None:
        """Record a driver event."""
        self.catalog.add_run_events(self.run_id, [{"level": level, "message": message}])

    def sync(self, monitor: Any) -> None:
        """Fold the monitor's counts and log records into the catalog."""
        if monitor is not None:
            try:
                counts, events = ray.get(monitor.drain.remote(), timeout=10)
            except Exception as exc:  # the monitor is best effort; the run goes on
                log.warning("run monitor unreachable: %s", exc)
                counts, events = {}, []
            for node, c in counts.items():
                if node in self.units:
                    unit = self.units[node]
                    unit["tiles_done"] = min(self.total, self.base + c["tiles"])
                    unit["objects"] = c["objects"]
            if events:
                for event in events:
                    event["at"] = datetime.fromtimestamp(event["at"], UTC)
                self.catalog.add_run_events(self.run_id, events)
        self.catalog.update_run(self.run_id, progress=self.document())
