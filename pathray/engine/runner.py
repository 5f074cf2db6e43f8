"""Running a pipeline over an image set on Ray.

``run_pipeline`` records a run, plans its tiles, builds one Ray Data stage per unit (each on its
own actor pool, in topological order) followed by the writer, streams everything, then commits
the staged results to the cold store and records their locations in the catalog. A run resumed by
id re-plans the same tiles, skips those already staged and commits exactly the rows of one clean
run.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pathray import __version__
from pathray.catalog import Catalog
from pathray.engine.cluster import cluster_cpus, cluster_gpus, ensure_ray
from pathray.engine.lineage import register_lineage
from pathray.engine.models import ResolvedModel, resolve_models
from pathray.engine.plan import Plan, plan_run
from pathray.engine.stages import UnitStage, WriteStage
from pathray.errors import ConfigError
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.results.store import ColdStore
from pathray.slides.source import tile_dataset
from pathray.units.base import OBJECT_KEYS, TILE_KEYS, Unit
from pathray.units.registry import unit_path

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


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
    """

    run_id: str
    status: str
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    tiles_processed: int = 0


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


def stored_schemas(order: list[tuple[UnitSpec, type[Unit]]]) -> tuple[pa.Schema, pa.Schema]:
    """Schemas of the stored tile rows and object rows of a pipeline (keys first)."""
    tiles = {name: _KEY_TYPES[name] for name in (*TILE_KEYS, "tissue_fraction")}
    objects = {name: _KEY_TYPES[name] for name in OBJECT_KEYS}
    for _, cls in order:
        for column in cls.outputs:
            if column.stored and not column.shape:
                target = objects if column.granularity == "object" else tiles
                target.setdefault(column.name, _arrow_type(column.dtype))
    return pa.schema(list(tiles.items())), pa.schema(list(objects.items()))


#: CPUs the writer stage declares (it only serialises small tables).
WRITER_CPUS = 0.25


def _stage_resources(
    order: list[tuple[UnitSpec, type[Unit]]],
) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """Ray resources of the unit stages, of the writer and of a read task, fitted to the cluster.

    Actors hold their CPUs while idle, so on a small machine the declared CPUs are scaled down
    until the first actor of every stage fits beside one read task (else the pipeline would wait
    forever for a read slot).
    """
    total, gpus = cluster_cpus(), cluster_gpus()
    read_cpus = min(1.0, total * 0.25)
    budget = total - read_cpus
    declared = sum(cls.resources.num_cpus for _, cls in order) + WRITER_CPUS
    scale = min(1.0, budget / declared)
    stages = []
    for _, cls in order:
        cpus = cls.resources.num_cpus * scale
        stage: dict[str, Any] = {
            "num_cpus": cpus,
            "compute": ray.data.ActorPoolStrategy(
                min_size=1, max_size=max(1, int(budget // max(cpus, 0.25)))
            ),
        }
        if cls.resources.num_gpus and gpus:
            stage["num_gpus"] = cls.resources.num_gpus
        if cls.resources.memory_mb:
            stage["memory"] = cls.resources.memory_mb * 2**20
        if cls.resources.custom:
            stage["resources"] = dict(cls.resources.custom)
        stages.append(stage)
    writer = {"num_cpus": WRITER_CPUS * scale, "compute": ray.data.ActorPoolStrategy(size=1)}
    return stages, writer, read_cpus


def build_dataset(
    spec: PipelineSpec,
    refs: pa.Table,
    staging: Path,
    block_rows: int = 32,
    models: dict[str, ResolvedModel] | None = None,
) -> ray.data.Dataset:
    """The Ray Data pipeline of a run: tiles -> unit stages -> writer.

    Args:
        spec: The pipeline.
        refs: The tile references to process.
        staging: The run's staging folder.
        block_rows: Tiles per block read.
        models: Node id -> the model its unit loads.
    """
    models = models or {}
    order = [(node, spec.unit_class(node)) for node in spec.ordered()]
    tile_schema, object_schema = stored_schemas(order)
    stages, writer, read_cpus = _stage_resources(order)
    ds = tile_dataset(refs, block_rows=block_rows, num_cpus=read_cpus)
    marker_cols = tuple(c for c in tile_schema.names if c not in TILE_KEYS)
    for (node, cls), resources in zip(order, stages, strict=True):
        ds = ds.map_batches(
            UnitStage,
            fn_constructor_kwargs={
                "unit_path": unit_path(cls),
                "config": dict(node.config),
                "artifacts": {"model": models[node.id].path} if node.id in models else None,
                "tile_columns": marker_cols,
            },
            batch_size=cls.batch_size,
            batch_format="numpy",
            **resources,
        )
    emits = any(cls.emits_objects() for _, cls in order)
    return ds.map_batches(
        WriteStage,
        fn_constructor_kwargs={
            "staging": str(staging),
            "object_schema": object_schema if emits else None,
            "tile_schema": tile_schema,
        },
        batch_size=None,
        batch_format="numpy",
        **writer,
    )


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


def run_pipeline(
    catalog: Catalog,
    store: ColdStore,
    spec: PipelineSpec,
    image_set: str | None = None,
    *,
    requester: str = "system",
    resume: str | None = None,
    progress: Progress | None = None,
    ray_address: str | None = None,
) -> RunResult:
    """Run a pipeline over an image set (or resume a run), end to end.

    Args:
        catalog: The hot catalog.
        store: The cold store.
        spec: The pipeline.
        image_set: Name of the image set to process (ignored when resuming).
        requester: Who asked for the run.
        resume: Id of an unfinished run to resume.
        progress: Called with ``(tiles done, tiles total)`` as batches finish.
        ray_address: Ray cluster to use (None: ``RAY_ADDRESS`` or a local Ray).

    Returns:
        The run's result.

    Raises:
        ConfigError: If the spec is invalid or the run cannot be resumed.
    """
    start = time.perf_counter()
    order = spec.ordered()  # validate before recording anything
    if resume:
        run = catalog.get_run(resume)
        if run.status == "succeeded":
            raise ConfigError(f"Run {resume} already succeeded; nothing to resume.")
        spec = PipelineSpec.model_validate(run.spec)
        order = spec.ordered()
        run_id, image_set = run.id, run.image_set
    elif image_set is None:
        raise ConfigError("An image set must be given for a new run.")
    models = resolve_models(catalog, spec, store.root)
    if not resume:
        catalog.get_image_set(image_set)  # fail before recording anything
        code = code_version()
        run_id = catalog.create_run(
            pipeline_name=spec.name,
            pipeline_version=register_lineage(catalog, spec, code, requester, models),
            spec=spec.model_dump(mode="json"),
            config_hash=spec.spec_hash(),
            code_version=code,
            image_set=image_set,
            requester=requester,
        )
    catalog.update_run(run_id, status="running")
    try:
        ensure_ray(ray_address)
        slide_ids = [slide.id for slide in catalog.slides_in_set(image_set)]
        plan = plan_run(catalog, slide_ids, spec.tiling)
        pending = _pending(plan, store, run_id)
        total, done = plan.refs.num_rows, plan.refs.num_rows - pending.num_rows
        catalog.update_run(run_id, progress={"tiles_total": total, "tiles_done": done})
        processed = 0
        if pending.num_rows:
            dataset = build_dataset(spec, pending, store.staging(run_id), models=models)
            last_report = time.monotonic()
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                n = int(pc.sum(pa.array(batch["tiles"])).as_py() or 0)
                processed += n
                done += n
                if progress:
                    progress(done, total)
                if time.monotonic() - last_report > 2.0:
                    catalog.update_run(run_id, progress={"tiles_total": total, "tiles_done": done})
                    last_report = time.monotonic()
        counts = store.finalize(run_id)
        _record_locations(catalog, store, run_id, order, spec, counts)
        catalog.update_run(
            run_id,
            status="succeeded",
            progress={"tiles_total": total, "tiles_done": done, "skipped_slides": plan.problems},
        )
        store.discard_staging(run_id)
    except KeyboardInterrupt:
        catalog.update_run(run_id, status="cancelled", error="interrupted")
        raise
    except Exception as exc:
        catalog.update_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return RunResult(
        run_id=run_id,
        status="succeeded",
        counts=counts,
        problems=plan.problems,
        seconds=time.perf_counter() - start,
        tiles_processed=processed,
    )


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
