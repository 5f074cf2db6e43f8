"""Running a pipeline over an image set on Ray.

``run_pipeline`` records a run, plans its tiles, builds one Ray Data stage per unit (each on its
own actor pool, in topological order; the last one also stages the results), streams everything,
then commits the staged results to the cold store and records their locations in the catalog. A
run resumed by id re-plans the same tiles, skips those already staged and commits exactly the
rows of one clean run.

The parts live beside it: :mod:`~pathray.engine.sizing` (CPU and GPU shares of the stages),
:mod:`~pathray.engine.schemas` (stored columns), :mod:`~pathray.engine.streaming` (a cold run's
batches through Ray Data, and the progress tracker) and :mod:`~pathray.engine.warm_stream` (a
warm run's batches through leased unit pools).
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from pathray import __version__
from pathray.catalog import Catalog
from pathray.catalog.retry import retrying
from pathray.engine import warm as warm_units
from pathray.engine.cluster import (
    ensure_ray,
    free_resources,
)
from pathray.engine.lineage import register_lineage
from pathray.engine.models import ResolvedModel, resolve_models
from pathray.engine.monitor import RunMonitor, monitor_name
from pathray.engine.plan import Plan, plan_run
from pathray.engine.schemas import stored_schemas
from pathray.engine.sizing import await_resources, fit_stages, stage_resources
from pathray.engine.stages import UnitStage
from pathray.engine.streaming import Progress, Tracker, stream_dataset
from pathray.engine.warm_stream import lease_pools, stream_warm
from pathray.errors import CatalogUnavailableError, ConfigError
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.results.location import Location
from pathray.results.store import ColdStore
from pathray.slides.source import tile_dataset
from pathray.units.base import TILE_KEYS
from pathray.units.registry import unit_path

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        run_id: The run's id in the catalog.
        status: Final status.
        counts: Rows committed per slide: ``{slide_id: {"tiles": n, "objects": m}}``.
        problems: Slides skipped, with the reason.
        seconds: Wall time of the run.
        tiles_processed: Tiles processed by this call (fewer than planned on a resume).
        tiles_reused: Tiles found already staged when this call began (a resume), which it
            kept instead of processing again.
        phases: Seconds spent in each phase of this call: ``plan`` (models, Ray, tiles),
            ``first_batch`` (from the plan to the first batch out: actor start, model load),
            ``stream`` (the remaining batches) and ``commit``; also kept in the run's
            progress document.
    """

    run_id: str
    status: str
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    tiles_processed: int = 0
    tiles_reused: int = 0
    phases: dict[str, float] = field(default_factory=dict)


def code_version() -> str:
    """PathRay's version plus the git commit of the checkout, when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def build_dataset(
    spec: PipelineSpec,
    refs: pa.Table,
    staging: Location | str | Path,
    block_rows: int = 32,
    models: dict[str, ResolvedModel] | None = None,
    monitor: str | None = None,
    free_cpus: float | None = None,
) -> ray.data.Dataset:
    """The Ray Data pipeline of a run: tiles -> unit stages, the last one staging the results.

    Args:
        spec: The pipeline.
        refs: The tile references to process.
        staging: The run's staging folder (a path or an object-store location).
        block_rows: Tiles per block read.
        models: Node id -> the model its unit loads.
        monitor: Name of the run's monitor actor (per-unit progress and logs), if any.
        free_cpus: CPUs the run may take (default: those free in the cluster now).
    """
    models = models or {}
    nodes = spec.ordered()
    order = [(node, spec.unit_class(node)) for node in nodes]
    tile_schema, object_schema = stored_schemas(order)
    if free_cpus is None:
        free_cpus = free_resources()[0]
    stages, read_cpus = fit_stages(stage_resources(spec, nodes, models), free_cpus)
    ds = tile_dataset(refs, block_rows=block_rows, num_cpus=read_cpus)
    marker_cols = tuple(c for c in tile_schema.names if c not in TILE_KEYS)
    emits = any(cls.emits_objects() for _, cls in order)
    write = {
        "staging": staging if isinstance(staging, Location) else Location(staging),
        "object_schema": object_schema if emits else None,
        "tile_schema": tile_schema,
    }
    for i, ((node, cls), resources) in enumerate(zip(order, stages, strict=True)):
        last = i == len(order) - 1
        ds = ds.map_batches(
            UnitStage,
            fn_constructor_kwargs={
                "unit_path": unit_path(cls),
                "config": dict(node.config),
                "artifacts": {"model": models[node.id].path} if node.id in models else None,
                "tile_columns": marker_cols,
                "node_id": node.id,
                "monitor": monitor,
                # The last unit stages its own output (see pathray.engine.stages).
                "write": write if last else None,
            },
            batch_size=cls.batch_size,
            batch_format="numpy",
            **resources,
        )
    return ds


def _pending(plan: Plan, store: ColdStore, run_id: str) -> pa.Table:
    """The planned tiles not yet staged (all of them for a new run)."""
    done = store.done_tiles(run_id)
    if not done or not plan.refs.num_rows:
        return plan.refs
    keys = [
        (s, t)
        for s, t in zip(
            plan.refs["slide_id"].to_pylist(), plan.refs["tile_id"].to_pylist(), strict=True
        )
    ]
    return plan.refs.filter(pa.array([k not in done for k in keys], pa.bool_()))


def prepare_run(
    catalog: Catalog,
    store: ColdStore,
    spec: PipelineSpec,
    image_set: str,
    *,
    requester: str = "system",
    owner: str | None = None,
) -> str:
    """Validate a pipeline, pin its unit and model versions and record a pending run.

    Nothing is recorded when the spec, a model reference or the image set is wrong.

    Args:
        catalog: The hot catalog.
        store: The cold store (model artifacts are resolved into it).
        spec: The pipeline.
        image_set: Name of the image set to process.
        requester: Who asked for the run.
        owner: The API client the run belongs to (None: an internal run).

    Returns:
        The new run's id (status ``pending``).

    Raises:
        ConfigError: If the spec is invalid, or a model is unknown or refused by its unit
            (the reason and the closest registered names are in the message).
        NotFoundError: If the image set does not exist.
    """
    spec.ordered()  # validate before recording anything
    models = resolve_models(catalog, spec, store.location)
    catalog.get_image_set(image_set)
    code = code_version()
    return catalog.create_run(
        pipeline_name=spec.name,
        pipeline_version=register_lineage(catalog, spec, code, requester, models),
        spec=spec.model_dump(mode="json"),
        config_hash=spec.spec_hash(),
        code_version=code,
        image_set=image_set,
        requester=requester,
        owner=owner,
    )


def run_pipeline(
    catalog: Catalog,
    store: ColdStore,
    spec: PipelineSpec | None = None,
    image_set: str | None = None,
    *,
    requester: str = "system",
    resume: str | None = None,
    progress: Progress | None = None,
    ray_address: str | None = None,
    warm: bool | None = None,
) -> RunResult:
    """Run a pipeline over an image set (or resume a run), end to end, in this process.

    Args:
        catalog: The hot catalog.
        store: The cold store.
        spec: The pipeline (not needed when resuming).
        image_set: Name of the image set to process (ignored when resuming).
        requester: Who asked for the run.
        resume: Id of an unfinished (failed, cancelled or interrupted) run to resume: only
            its missing tiles are processed.
        progress: Called with ``(tiles done, tiles total)`` as batches finish.
        ray_address: Ray cluster to use (None: ``RAY_ADDRESS`` or a local Ray).
        warm: Run on warm unit actors that outlive the run (:mod:`pathray.engine.warm`);
            None: ``PATHRAY_WARM`` (default off).

    Returns:
        The run's result (status ``succeeded``, or ``cancelled`` when someone cancelled it).

    Raises:
        ConfigError: If the spec is invalid or the run cannot be resumed.
    """
    if resume:
        run = catalog.get_run(resume)
        if run.status == "succeeded":
            raise ConfigError(f"Run {resume} already succeeded; nothing to resume.")
        catalog.clear_cancel(resume, actor=requester)
        run_id = resume
    elif spec is None or image_set is None:
        raise ConfigError("A pipeline and an image set must be given for a new run.")
    else:
        run_id = prepare_run(catalog, store, spec, image_set, requester=requester)
    return execute_run(
        catalog, store, run_id, progress=progress, ray_address=ray_address, warm=warm
    )


def execute_run(
    catalog: Catalog,
    store: ColdStore,
    run_id: str,
    *,
    progress: Progress | None = None,
    ray_address: str | None = None,
    warm: bool | None = None,
) -> RunResult:
    """Drive a recorded run: plan, stream the unit stages, commit, record locations.

    Honours cancel requests at any time: while it waits for free CPUs, before the first batch
    and between batches (staged results are kept, so the run can be resumed); waits at most
    :data:`RESOURCE_WAIT_S` for the CPUs of one actor per stage, then fails with the reason.
    Reports per-unit progress into the run's progress document and forwards the units' log
    records to the run's events.

    A catalog database that goes away meanwhile (a PostgreSQL restart) is waited for, up to
    the catalog's ``wait_s``, at every catalog call; the stream goes on staging results
    meanwhile. The results are committed in one catalog transaction (every location and the
    ``succeeded`` status, or nothing), after the Lance datasets are written: a run whose catalog
    stays away longer fails with :class:`~pathray.errors.CatalogUnavailableError`, keeps its
    staged results and can be resumed.

    Args:
        catalog: The hot catalog.
        store: The cold store.
        run_id: A pending, failed or cancelled (not cancel-requested) run.
        progress: Called with ``(tiles done, tiles total)`` as batches finish.
        ray_address: Ray cluster to use (None: ``RAY_ADDRESS`` or a local Ray).
        warm: Run on warm unit actors (see :func:`run_pipeline`).

    Returns:
        The run's result.
    """
    start = time.perf_counter()
    catalog = retrying(catalog)
    run = catalog.get_run(run_id)
    if run.cancel_requested_at is not None:
        if not run.finished:
            catalog.update_run(run_id, status="cancelled", error="cancelled before it started")
        return RunResult(run_id=run_id, status="cancelled")
    spec = PipelineSpec.model_validate(run.spec)
    order = spec.ordered()
    catalog.update_run(run_id, status="running")
    warm = warm_units.warm_enabled(warm)
    monitor: Any = None
    pools: list[warm_units.Pool] = []
    try:
        models = resolve_models(catalog, spec, store.location)
        ensure_ray(ray_address)
        slide_ids = [slide.id for slide in catalog.slides_in_set(run.image_set)]
        plan = plan_run(catalog, slide_ids, spec.tiling)
        pending = _pending(plan, store, run_id)
        total, done = plan.refs.num_rows, plan.refs.num_rows - pending.num_rows
        tracker = Tracker(catalog, run_id, [node.id for node in order], total, done, start)
        tracker.event(
            f"planned {total} tiles on {len(slide_ids) - len(plan.problems)} slides"
            + (f" ({len(plan.problems)} skipped)" if plan.problems else "")
            + (f"; {done} already done" if done else "")
        )
        tracker.sync(None)
        tracker.phase("plan")
        processed, cancelled, free_cpus = 0, False, None
        if pending.num_rows and warm:
            monitor = warm_units.RunChannel(warm_units.warm_monitor(), run_id)
            found = lease_pools(catalog, spec, order, models, run_id, tracker)
            cancelled, pools = found is None, found or []
            if not cancelled:
                processed, cancelled = stream_warm(
                    spec, order, pools, pending, store.staging(run_id), tracker, monitor, progress
                )
                tracker.phase("stream")
                tracker.sync(monitor)
        elif pending.num_rows:
            free_cpus = await_resources(
                stage_resources(spec, order, models),
                lambda: catalog.cancel_requested(run_id),
                notify=tracker.event,
            )
            cancelled = free_cpus is None
        if pending.num_rows and not cancelled and not warm:
            monitor = RunMonitor.options(name=monitor_name(run_id)).remote()  # type: ignore[attr-defined]
            dataset = build_dataset(
                spec,
                pending,
                store.staging(run_id),
                models=models,
                monitor=monitor_name(run_id),
                free_cpus=free_cpus,
            )
            processed, cancelled = stream_dataset(dataset, tracker, monitor, progress)
            tracker.phase("stream")
            tracker.sync(monitor)
        if cancelled:
            tracker.event(
                f"cancelled after {tracker.done} of {total} tiles"
                + ("; staged results kept" if tracker.done > tracker.base else "")
                + f" (resume with: pathray run --resume {run_id})"
            )
            catalog.update_run(run_id, status="cancelled", progress=tracker.document())
            return RunResult(
                run_id=run_id,
                status="cancelled",
                problems=plan.problems,
                seconds=time.perf_counter() - start,
                tiles_processed=processed,
                tiles_reused=tracker.base,
                phases=tracker.phases,
            )
        counts = store.finalize(run_id)
        tracker.phase("commit")
        n_objects = sum(c.get("objects", 0) for c in counts.values())
        tracker.event(
            f"succeeded: {total} tiles, {n_objects} objects in {time.perf_counter() - start:.1f} s"
        )
        catalog.complete_run(
            run_id,
            _locations(store, run_id, order, spec, counts),
            progress={**tracker.document(), "skipped_slides": plan.problems},
        )
        store.discard_staging(run_id)
    except KeyboardInterrupt:
        _record_end(catalog, run_id, "cancelled", "interrupted")
        raise
    except Exception as exc:
        _record_end(catalog, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if isinstance(monitor, warm_units.RunChannel):
            warm_units.end_leases(pools or [])
            monitor.monitor.forget.remote(run_id)
        elif monitor is not None:
            ray.kill(monitor)
    return RunResult(
        run_id=run_id,
        status="succeeded",
        counts=counts,
        problems=plan.problems,
        seconds=time.perf_counter() - start,
        tiles_processed=processed,
        tiles_reused=tracker.base,
        phases=tracker.phases,
    )


def _record_end(catalog: Catalog, run_id: str, status: str, message: str) -> None:
    """Record how a run ended; a catalog that is gone (the likely cause) is only logged."""
    try:
        if status == "failed":
            catalog.add_run_events(run_id, [{"level": "error", "message": f"failed: {message}"}])
        catalog.update_run(run_id, status=status, error=message)
    except CatalogUnavailableError as exc:
        log.error("run %s %s (%s), not recorded: %s", run_id, status, message, exc)


def _locations(
    store: ColdStore,
    run_id: str,
    order: list[UnitSpec],
    spec: PipelineSpec,
    counts: dict[int, dict[str, int]],
) -> list[dict[str, Any]]:
    """Where every slide and unit version of the run has its outputs (the catalog's map)."""
    locations = []
    for node in order:
        cls = spec.unit_class(node)
        kind = "objects" if cls.output_granularity() == "object" else "tiles"
        for slide_id, rows in counts.items():
            locations.append(
                {
                    "slide_id": slide_id,
                    "unit_name": node.id,
                    "unit_version": cls.version,
                    "kind": kind,
                    "uri": str(store.uri(run_id, kind)),
                    "row_count": rows.get(kind, 0),
                }
            )
    return locations
