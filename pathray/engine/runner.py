"""Running a pipeline over an image set on Ray.

``run_pipeline`` records a run, plans its tiles, builds one Ray Data stage per unit (each on its
own actor pool, in topological order; the last one also stages the results), streams everything,
then commits the staged results to the cold store and records their locations in the catalog. A
run resumed by id re-plans the same tiles, skips those already staged and commits exactly the
rows of one clean run.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pathray import __version__
from pathray.catalog import Catalog
from pathray.engine.cluster import (
    cluster_cpus,
    cluster_gpus,
    ensure_ray,
    free_resources,
    largest_node_cpus,
)
from pathray.engine.lineage import register_lineage
from pathray.engine.models import ResolvedModel, resolve_models
from pathray.engine.monitor import RunMonitor, monitor_name
from pathray.engine.plan import Plan, plan_run
from pathray.engine.stages import UnitStage
from pathray.errors import ConfigError, ResourceError
from pathray.pipeline.resources import node_resources
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.results.location import Location
from pathray.results.store import ColdStore
from pathray.slides.source import tile_dataset
from pathray.units.base import OBJECT_KEYS, TILE_KEYS, Column, Resources, Unit
from pathray.units.registry import unit_path

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]

#: The smallest CPU share of a stage actor or a read task: a run needs that much free for one
#: actor of every stage and a read task, or it is refused.
MIN_SHARE_CPUS = 0.05
#: Seconds a run waits for those CPUs to come free (actors of a run that just ended release
#: theirs shortly after it) before it is refused.
RESOURCE_WAIT_S = 30.0
#: Seconds a cancelled or interrupted run waits for its stream's puller to leave once the
#: stream's executor is shut down (it leaves at once unless a batch is being handed over).
STOP_STREAM_S = 30.0


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


_KEY_TYPES: dict[str, pa.DataType] = {
    "slide_id": pa.int64(),
    "tile_id": pa.int64(),
    "x": pa.int64(),
    "y": pa.int64(),
    "width": pa.int64(),
    "height": pa.int64(),
    "downsample": pa.float64(),
    "core_x0": pa.float64(),
    "core_y0": pa.float64(),
    "core_x1": pa.float64(),
    "core_y1": pa.float64(),
    "object_id": pa.int64(),
    "tissue_fraction": pa.float32(),
}


def _arrow_type(dtype: str) -> pa.DataType:
    if dtype == "wkb":
        return pa.binary()
    if dtype == "str":
        return pa.string()
    return pa.from_numpy_dtype(np.dtype(dtype))


def _stored_type(column: Column) -> pa.DataType | None:
    """Arrow type a stored column is written as, or None for a column that is not written.

    Scalars are written as they are; a vector of a fixed length (``shape == (D,)``, e.g. an
    embedding) as a ``fixed_size_list`` of D values, the type LanceDB indexes. Images, masks
    and vectors of varying length stay in memory.
    """
    if not column.stored:
        return None
    if not column.shape:
        return _arrow_type(column.dtype)
    if len(column.shape) == 1:  # per-row vectors: of a fixed length, or not (class counts)
        kind = _arrow_type(column.dtype)
        return pa.list_(kind) if column.shape[0] is None else pa.list_(kind, column.shape[0])
    return None


def stored_schemas(order: list[tuple[UnitSpec, type[Unit]]]) -> tuple[pa.Schema, pa.Schema]:
    """Schemas of the stored tile rows and object rows of a pipeline (keys first).

    Scalar columns and vectors (one-dimensional per row, e.g. class probabilities, stored as
    Arrow lists) are stored; images and masks are not.
    """
    tiles = {name: _KEY_TYPES[name] for name in (*TILE_KEYS, "tissue_fraction")}
    objects = {name: _KEY_TYPES[name] for name in OBJECT_KEYS}
    for _, cls in order:
        for column in cls.outputs:
            kind = _stored_type(column)
            if kind is not None:
                target = objects if column.granularity == "object" else tiles
                target.setdefault(column.name, kind)
    return pa.schema(list(tiles.items())), pa.schema(list(objects.items()))


def stage_resources(
    spec: PipelineSpec,
    order: list[UnitSpec],
    models: dict[str, ResolvedModel] | None = None,
) -> list[Resources]:
    """What one actor of each node asks for: its unit's, its model card's, its node's.

    See :func:`pathray.pipeline.resources.node_resources` for how the three combine.
    """
    models = models or {}
    return [
        node_resources(
            spec.unit_class(node).resources,
            models[node.id].resources if node.id in models else None,
            node.resources,
        )
        for node in order
    ]


def _stage_resources(
    declared: list[Resources], free_cpus: float
) -> tuple[list[dict[str, Any]], float]:
    """Ray resources of the unit stages and of a read task, fitted to the free CPUs.

    A stage's GPU share is kept where the cluster has GPUs and dropped where it has none (the
    unit then computes on CPUs).

    Actors hold their CPUs while idle, so the declared CPUs are fitted to the budget (the CPUs
    nothing else holds, less one read task's): what Serve replicas or other runs hold is never
    counted, or the run would wait forever for it.

    - a budget below the declared sum is shared in proportion (one actor of every stage must
      fit beside a read task, else the pipeline would wait forever for a read slot);
    - a budget that holds one actor of every stage but not two is split so that *two* actors
      of every CPU stage fit, and both start at once: two single-threaded actors keep both
      cores of a small machine busy, where one two-threaded actor stalls at every parallel
      region a read task or the driver interrupts (on 2 CPUs the nucleus U-Net streams 40 tiles
      a second so, against 24-31 with one actor on 1.5 CPUs). A GPU stage instead takes its
      whole share in one actor (its threads feed the GPU), never beyond what the largest node
      holds beside a read task;
    - a larger budget keeps the declared CPUs, and Ray Data adds actors while work waits.

    Args:
        declared: What one actor of each stage asks for (:func:`stage_resources`), in order.
        free_cpus: CPUs free for the run (at least what :func:`required_resources` says).
    """
    gpus = cluster_gpus()
    read_cpus = min(1.0, free_cpus * 0.25)
    budget = free_cpus - read_cpus
    wanted = sum(r.num_cpus for r in declared)
    node_cap = min(largest_node_cpus(), free_cpus) - read_cpus
    stages = []
    for resources in declared:
        on_gpu = bool(resources.num_gpus and gpus)
        cpus, initial = resources.num_cpus, 1
        # The budget is positive, so either branch implies wanted > 0.
        if budget < wanted:
            cpus = cpus * budget / wanted
        elif budget < 2 * wanted:
            if on_gpu:
                cpus = max(cpus, min(cpus * budget / wanted, node_cap))
            else:
                cpus, initial = cpus * budget / (2 * wanted), 2
        stage: dict[str, Any] = {
            "num_cpus": cpus,
            "compute": ray.data.ActorPoolStrategy(
                min_size=1,
                max_size=max(initial, int(budget // max(cpus, 0.25))),
                initial_size=initial,
            ),
        }
        if on_gpu:
            stage["num_gpus"] = resources.num_gpus
        if resources.memory_mb:
            stage["memory"] = resources.memory_mb * 2**20
        if resources.custom:
            stage["resources"] = dict(resources.custom)
        stages.append(stage)
    return stages, read_cpus


def required_resources(declared: list[Resources]) -> tuple[float, float]:
    """The free CPUs and GPUs a run needs to start: one actor of every stage and a read task.

    Each CPU share can shrink to :data:`MIN_SHARE_CPUS`; a GPU stage needs its GPUs whole
    (on a cluster that has GPUs at all; elsewhere it runs on CPUs).
    """
    gpus = sum(r.num_gpus for r in declared) if cluster_gpus() else 0.0
    return round(MIN_SHARE_CPUS * (len(declared) + 1), 6), float(gpus)


def await_resources(
    declared: list[Resources],
    cancelled: Callable[[], bool],
    wait_s: float = RESOURCE_WAIT_S,
    poll_s: float = 0.5,
    notify: Callable[[str], Any] | None = None,
) -> float | None:
    """Wait until one actor of every stage fits in what the cluster has free.

    Args:
        declared: What one actor of each stage asks for (:func:`stage_resources`).
        cancelled: Whether the run was cancelled meanwhile (asked at every poll).
        wait_s: Seconds to wait at most.
        poll_s: Seconds between two looks.
        notify: Told once, in words, that the run waits (the run's event log).

    Returns:
        The free CPUs (the run's budget), or None when the run was cancelled while waiting.

    Raises:
        ResourceError: Still too few free resources after ``wait_s`` seconds.
    """
    need_cpus, need_gpus = required_resources(declared)
    deadline = time.monotonic() + wait_s
    while True:
        cpus, gpus = free_resources()
        if cpus >= need_cpus and gpus >= need_gpus:
            return cpus
        if cancelled():
            return None
        if notify is not None:
            notify(
                f"waiting for {need_cpus:.2f} free CPUs (got {cpus:.2f}) to start one actor of "
                f"each stage, at most {wait_s:g} s"
            )
            notify = None
        if time.monotonic() >= deadline:
            gpu_note = f" and {need_gpus:g} GPUs (got {gpus:g})" if need_gpus else ""
            raise ResourceError(
                f"A run must find at least {need_cpus:.2f} free CPUs{gpu_note}: one actor of "
                f"each of its {len(declared)} stages and a read task. Got {cpus:.2f} free of the "
                f"cluster's {cluster_cpus():g} after waiting {wait_s:g} s; the rest is held by "
                "Serve replicas or other runs. Give Ray more CPUs, serve the units with fewer "
                "(ServeArgs.unit_cpus), or retry when other runs have finished."
            )
        time.sleep(poll_s)


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
    stages, read_cpus = _stage_resources(stage_resources(spec, nodes, models), free_cpus)
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
    return execute_run(catalog, store, run_id, progress=progress, ray_address=ray_address)


def execute_run(
    catalog: Catalog,
    store: ColdStore,
    run_id: str,
    *,
    progress: Progress | None = None,
    ray_address: str | None = None,
) -> RunResult:
    """Drive a recorded run: plan, stream the unit stages, commit, record locations.

    Honours cancel requests at any time: while it waits for free CPUs, before the first batch
    and between batches (staged results are kept, so the run can be resumed); waits at most
    :data:`RESOURCE_WAIT_S` for the CPUs of one actor per stage, then fails with the reason.
    Reports per-unit progress into the run's progress document and forwards the units' log
    records to the run's events.

    Args:
        catalog: The hot catalog.
        store: The cold store.
        run_id: A pending, failed or cancelled (not cancel-requested) run.
        progress: Called with ``(tiles done, tiles total)`` as batches finish.
        ray_address: Ray cluster to use (None: ``RAY_ADDRESS`` or a local Ray).

    Returns:
        The run's result.
    """
    start = time.perf_counter()
    run = catalog.get_run(run_id)
    if run.cancel_requested_at is not None:
        if not run.finished:
            catalog.update_run(run_id, status="cancelled", error="cancelled before it started")
        return RunResult(run_id=run_id, status="cancelled")
    spec = PipelineSpec.model_validate(run.spec)
    order = spec.ordered()
    catalog.update_run(run_id, status="running")
    monitor: Any = None
    try:
        models = resolve_models(catalog, spec, store.location)
        ensure_ray(ray_address)
        slide_ids = [slide.id for slide in catalog.slides_in_set(run.image_set)]
        plan = plan_run(catalog, slide_ids, spec.tiling)
        pending = _pending(plan, store, run_id)
        total, done = plan.refs.num_rows, plan.refs.num_rows - pending.num_rows
        tracker = _Tracker(catalog, run_id, [node.id for node in order], total, done, start)
        tracker.event(
            f"planned {total} tiles on {len(slide_ids) - len(plan.problems)} slides"
            + (f" ({len(plan.problems)} skipped)" if plan.problems else "")
            + (f"; {done} already done" if done else "")
        )
        tracker.sync(None)
        tracker.phase("plan")
        processed, cancelled, free_cpus = 0, False, None
        if pending.num_rows:
            free_cpus = await_resources(
                stage_resources(spec, order, models),
                lambda: catalog.cancel_requested(run_id),
                notify=tracker.event,
            )
            cancelled = free_cpus is None
        if pending.num_rows and not cancelled:
            monitor = RunMonitor.options(name=monitor_name(run_id)).remote()  # type: ignore[attr-defined]
            dataset = build_dataset(
                spec,
                pending,
                store.staging(run_id),
                models=models,
                monitor=monitor_name(run_id),
                free_cpus=free_cpus,
            )
            processed, cancelled = _stream(dataset, tracker, monitor, progress)
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
        _record_locations(catalog, store, run_id, order, spec, counts)
        tracker.phase("commit")
        n_objects = sum(c.get("objects", 0) for c in counts.values())
        tracker.event(
            f"succeeded: {total} tiles, {n_objects} objects in {time.perf_counter() - start:.1f} s"
        )
        catalog.update_run(
            run_id,
            status="succeeded",
            progress={**tracker.document(), "skipped_slides": plan.problems},
        )
        store.discard_staging(run_id)
    except KeyboardInterrupt:
        catalog.update_run(run_id, status="cancelled", error="interrupted")
        raise
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        catalog.add_run_events(run_id, [{"level": "error", "message": f"failed: {message}"}])
        catalog.update_run(run_id, status="failed", error=message)
        raise
    finally:
        if monitor is not None:
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


def _stream(
    dataset: ray.data.Dataset, tracker: _Tracker, monitor: Any, progress: Progress | None
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
    processed, last_sync = 0, time.monotonic()
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
                if "first_batch" not in tracker.phases:
                    tracker.phase("first_batch")
                processed += item
                tracker.done += item
                if progress:
                    progress(tracker.done, tracker.total)
            if time.monotonic() - last_sync > 1.0:
                tracker.sync(monitor)
                last_sync = time.monotonic()
                if tracker.catalog.cancel_requested(tracker.run_id):
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


class _Tracker:
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


def _record_locations(
    catalog: Catalog,
    store: ColdStore,
    run_id: str,
    order: list[UnitSpec],
    spec: PipelineSpec,
    counts: dict[int, dict[str, int]],
) -> None:
    """Map every slide and unit version of the run to the datasets holding its outputs."""
    for node in order:
        cls = spec.unit_class(node)
        kind = "objects" if cls.output_granularity() == "object" else "tiles"
        for slide_id, rows in counts.items():
            catalog.record_result_location(
                run_id,
                slide_id,
                unit_name=node.id,
                unit_version=cls.version,
                kind=kind,
                uri=str(store.uri(run_id, kind)),
                row_count=rows.get(kind, 0),
            )
