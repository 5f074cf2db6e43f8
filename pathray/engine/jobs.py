"""Runs in the background: submit from a service or the app, poll, cancel.

:func:`submit_run` validates and records the run in the caller (so a bad spec fails at once and
nothing is recorded), then hands it to a *detached* Ray actor that drives it with
:func:`~pathray.engine.runner.execute_run`. The driver outlives the process that submitted the
run (a Serve replica, the Gradio app, a CLI that exits), and reports through the catalog: the
run's status and per-unit progress, and its events. Cancel with
:meth:`~pathray.catalog.Catalog.request_cancel`; the driver stops within a second or two, even
before the first batch, and then exits, taking the run's stage actors (which it owns) with it.

Example:
    >>> run_id = submit_run(catalog, store, load_preset("nuclei"), "he")  # doctest: +SKIP
    >>> wait_run(catalog, run_id, timeout=600).status  # doctest: +SKIP
    'succeeded'
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from pathray.catalog import Catalog
from pathray.catalog.records import Run
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import execute_run, prepare_run
from pathray.engine.warm import warm_enabled
from pathray.errors import PathRayError
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore

log = logging.getLogger(__name__)


class RunTimeoutError(PathRayError):
    """A run did not finish within the time the caller was willing to wait."""


def driver_name(run_id: str) -> str:
    """The Ray actor name of a run's driver."""
    return f"pathray-run-{run_id}"


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=2)  # type: ignore[call-overload]
class RunDriver:
    """Drives one run to its end, then exits (a detached Ray actor, holding no CPU)."""

    def execute(self, catalog: Catalog, store: ColdStore, run_id: str, warm: bool = False) -> None:
        """Run the pipeline (on warm unit actors if ``warm``), then exit; see the catalog.

        Exiting ends the actors the run started (Ray ends an actor with its owner): those of a
        run cancelled before its first batch are still starting or computing it, and idle
        detached drivers would each keep a process.
        """
        try:
            execute_run(catalog, store, run_id, warm=warm)
        except Exception:  # recorded in the catalog by execute_run
            log.exception("run %s failed", run_id)
        finally:
            catalog.close()
        ray.actor.exit_actor()

    def ping(self) -> bool:
        """Whether the driver is alive (answers while a run is being driven)."""
        return True


def submit_run(
    catalog: Catalog,
    store: ColdStore,
    spec: PipelineSpec,
    image_set: str,
    *,
    requester: str = "system",
    owner: str | None = None,
    ray_address: str | None = None,
    warm: bool | None = None,
) -> str:
    """Record a run and start it in the background on Ray; return its id at once.

    Args:
        catalog: The hot catalog (the driver reconnects to the same URL).
        store: The cold store (a path every Ray node sees).
        spec: The pipeline.
        image_set: The image set to process.
        requester: Who asked for the run.
        owner: The API client the run belongs to (None: an internal run).
        ray_address: Ray cluster to use (None: ``RAY_ADDRESS`` or a local Ray).
        warm: Run on warm unit actors (:mod:`pathray.engine.warm`); None: ``PATHRAY_WARM``
            as this process sees it (the driver runs in a Ray worker with another environment).

    Returns:
        The run id (the run is ``pending`` until its driver starts it).

    Raises:
        ConfigError: The spec is invalid (nothing is recorded).
        NotFoundError: The image set or a model version does not exist.
    """
    run_id = prepare_run(catalog, store, spec, image_set, requester=requester, owner=owner)
    try:
        ensure_ray(ray_address)
        driver: Any = RunDriver.options(  # type: ignore[attr-defined]
            name=driver_name(run_id), lifetime="detached"
        ).remote()
        driver.execute.remote(catalog, store, run_id, warm_enabled(warm))
    except Exception as exc:
        catalog.update_run(run_id, status="failed", error=f"could not start: {exc}")
        raise
    catalog.add_run_events(run_id, [{"message": f"submitted by {requester}"}])
    return run_id


def driver_alive(run_id: str) -> bool:
    """Whether the run's background driver is still running (False once it has finished)."""
    try:
        actor = ray.get_actor(driver_name(run_id))
        return bool(ray.get(actor.ping.remote(), timeout=10))
    except Exception:
        return False


def wait_run(catalog: Catalog, run_id: str, timeout: float | None = None, poll: float = 0.5) -> Run:
    """Wait until a run reaches a terminal status (succeeded, failed or cancelled).

    Args:
        catalog: The hot catalog.
        run_id: The run.
        timeout: Seconds to wait at most (None: forever).
        poll: Seconds between two looks at the catalog.

    Returns:
        The finished run.

    Raises:
        RunTimeoutError: The run had not finished after ``timeout`` seconds.
        NotFoundError: No such run.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = catalog.get_run(run_id)
        if run.finished:
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise RunTimeoutError(
                f"Run '{run_id}' must finish within {timeout:g} s. "
                f"Got status '{run.status}' after waiting."
            )
        time.sleep(poll)


__all__ = ["RunDriver", "RunTimeoutError", "driver_alive", "submit_run", "wait_run"]
