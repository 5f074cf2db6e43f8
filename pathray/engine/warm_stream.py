"""The driver's side of a warm run: lease the unit pools, then feed them batch by batch.

The pools themselves (detached unit actors, their keys, leases and idle release) are in
:mod:`pathray.engine.warm`; cold runs stream through Ray Data instead
(:func:`pathray.engine.streaming.stream_dataset`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from pathray.catalog import Catalog
from pathray.engine import warm as warm_units
from pathray.engine.models import ResolvedModel
from pathray.engine.schemas import stored_schemas
from pathray.engine.sizing import await_resources, fit_stages, stage_resources
from pathray.engine.streaming import Progress, Tracker
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.results.location import Location
from pathray.units.base import TILE_KEYS
from pathray.units.registry import unit_path


def lease_pools(
    catalog: Catalog,
    spec: PipelineSpec,
    order: list[UnitSpec],
    models: dict[str, ResolvedModel],
    run_id: str,
    tracker: Tracker,
) -> list[warm_units.Pool] | None:
    """Lease the run's warm pools, starting those that are cold; None if cancelled meanwhile.

    A pool is keyed by what its actors load and ask for (unit, version, config, model,
    declared resources), so the CPU share it was fitted to when it started does not change
    its key. Cold pools are fitted to the free CPUs like a cold run's stages.
    """
    declared = stage_resources(spec, order, models)
    args = []
    for node, resources in zip(order, declared, strict=True):
        cls = spec.unit_class(node)
        artifacts = {"model": models[node.id].path} if node.id in models else None
        key = warm_units.pool_key(
            unit_path(cls),
            cls.version,
            dict(node.config),
            artifacts,
            {**asdict(resources), "custom": dict(resources.custom)},
        )
        args.append((key, unit_path(cls), dict(node.config), artifacts))
    found = [warm_units.find_pool(key, run_id) for key, *_ in args]
    cold = [i for i, leased in enumerate(found) if not leased]
    if cold:
        keys = {args[i][0] for i in range(len(args))}
        free_cpus = await_resources(
            [declared[i] for i in cold],
            lambda: catalog.cancel_requested(run_id),
            notify=tracker.event,
            keep=lambda name: any(name.startswith(f"pathray-warm-{k}-") for k in keys),
        )
        if free_cpus is None:
            return None
        fitted, _ = fit_stages([declared[i] for i in cold], free_cpus)
        for i, options in zip(cold, fitted, strict=True):
            size = options.pop("compute").initial_size
            key, path, config, artifacts = args[i]
            found[i] = warm_units.start_pool(key, run_id, size, path, config, artifacts, options)
    pools = []
    for i, (node, leased) in enumerate(zip(order, found, strict=True)):
        infos = [info for _, info in leased]
        pool = warm_units.Pool(
            args[i][0], [a for a, _ in leased], infos, len(leased) if i in cold else 0
        )
        pools.append(pool)
        loads = ", ".join(f"{info['load_s']:g} s" for info in infos)
        if pool.started:
            tracker.event(
                f"unit {node.id}: started {pool.started} warm actor(s) (loaded in {loads})"
            )
        else:
            served = max(len(info["runs"]) - 1 for info in infos)
            tracker.event(
                f"unit {node.id}: reusing {len(infos)} warm actor(s) (up to {served} earlier runs)"
            )
    return pools


def stream_warm(
    spec: PipelineSpec,
    order: list[UnitSpec],
    pools: list[warm_units.Pool],
    pending: pa.Table,
    staging: Location,
    tracker: Tracker,
    monitor: warm_units.RunChannel,
    progress: Progress | None,
) -> tuple[int, bool]:
    """Feed the tiles through the warm pools, batch by batch, actor to actor.

    Each batch of tile references goes to an actor of the first pool (which reads the pixels),
    its output to an actor of the next pool, and so on; only the last pool's summary rows come
    back to the driver. A bounded number of batches is in flight, so memory stays bounded by
    the batches in flight, as with Ray Data. A cancel is seen within a second: no further batch
    is sent, queued ones are cancelled, and what was staged is kept (a resume skips it).

    Returns:
        Tiles processed, and whether the run was cancelled.
    """
    classes = [spec.unit_class(node) for node in order]
    tile_schema, object_schema = stored_schemas(list(zip(order, classes, strict=True)))
    emits = any(cls.emits_objects() for cls in classes)
    write = {
        "staging": staging,
        "object_schema": object_schema if emits else None,
        "tile_schema": tile_schema,
    }
    marker_cols = tuple(c for c in tile_schema.names if c not in TILE_KEYS)
    ctxs = [
        {
            "run_id": tracker.run_id,
            "node_id": node.id,
            "tile_columns": marker_cols,
            "write": write if i == len(order) - 1 else None,
        }
        for i, node in enumerate(order)
    ]
    refs = pending.combine_chunks()
    rows = max(1, min(cls.batch_size for cls in classes))
    starts = list(range(0, refs.num_rows, rows))
    window = 2 * max(len(pool.actors) for pool in pools) + 1
    in_flight: dict[Any, int] = {}
    sent, processed = 0, 0

    def send(n: int) -> None:
        start = starts[n]
        # a compact copy: a pickled slice would carry the whole table's buffers
        ref: Any = refs.take(np.arange(start, min(start + rows, refs.num_rows)))
        for pool, ctx in zip(pools, ctxs, strict=True):
            ref = pool.actors[n % len(pool.actors)].call.remote(ref, ctx)
        in_flight[ref] = n

    while True:
        while sent < len(starts) and len(in_flight) < window:
            send(sent)
            sent += 1
        if not in_flight:
            return processed, False
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.25)
        for ref in ready:
            del in_flight[ref]
            tiles = int(np.asarray(ray.get(ref)["tiles"]).sum())
            processed += tiles
            tracker.batch_done(tiles, progress)
        if tracker.poll(monitor):
            for ref in in_flight:
                ray.cancel(ref)  # queued batches go; a batch being computed finishes
            return processed, True
