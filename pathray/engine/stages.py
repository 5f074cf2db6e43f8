"""Callable classes the engine hands to ``Dataset.map_batches``: one per unit, plus the writer.

:class:`UnitStage` wraps a unit (rebuilt in the actor from its import path) and takes care of
what every unit would otherwise repeat: passing the key columns through, and, for a unit that
turns tiles into objects, carrying each tile's keys onto its objects and adding one *tile marker*
row per input tile (``object_id == -1``). The markers are how the writer learns that a tile was
processed even when it held no object; units never see them.

:class:`WriteStage` writes every batch to the run's staging area as two Parquet files with
content-derived names (objects first, then the tile markers, each complete or absent: see
:func:`~pathray.results.store.stage_batch`), so a retried batch overwrites its own files and a
tile counts as done only once its marker file exists. The engine runs it inside the last unit's
actors (``UnitStage(write=...)``) rather than as a stage of its own: a separate writer pool would
cost one more actor process per run and one more trip of every batch through the object store,
for no parallelism gained.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from pathray.engine.monitor import MonitorHandler, find_monitor
from pathray.results.location import Location
from pathray.results.store import stage_batch
from pathray.units.base import OBJECT_KEYS, PARENT_INDEX, TILE_KEYS, Batch, Unit
from pathray.units.registry import load_unit_class

MARKER = -1
log = logging.getLogger(__name__)


def _is_marker(batch: Batch) -> np.ndarray:
    if "object_id" not in batch:
        return np.zeros(len(batch["tile_id"]), bool)
    return np.asarray(batch["object_id"]) == MARKER


def _take(batch: Batch, index: np.ndarray) -> Batch:
    return {name: np.asarray(values)[index] for name, values in batch.items()}


def _empty_like(values: np.ndarray, n: int) -> np.ndarray:
    """``n`` placeholder values shaped like one row of ``values`` (markers' object columns)."""
    if values.dtype == object:
        blank = "" if len(values) and isinstance(values[0], str) else b""
        return np.array([blank] * n, dtype=object)
    return np.zeros((n, *values.shape[1:]), values.dtype)


def _concat(parts: list[Batch]) -> Batch:
    names = [name for name in parts[0] if all(name in p for p in parts)]
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in names}


def _use_assigned_cpus() -> int | None:
    """Threads for this actor's native libraries: its assigned CPUs, rounded up.

    Ray sets ``OMP_NUM_THREADS`` to 1 for any fractional share, so an actor given 1.5 CPUs would
    compute on one core; the engine hands out such shares on purpose (see
    :func:`~pathray.engine.sizing.fit_stages`) and the read tasks beside it are light.

    Returns:
        The thread count set in ``OMP_NUM_THREADS``, or None outside a Ray actor.
    """
    if not ray.is_initialized():
        return None
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    except AssertionError:  # a driver (a unit run in-process): nothing assigned
        return None
    if cpus <= 0:
        return None
    threads = max(1, math.ceil(cpus - 1e-6))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def _placement() -> str:
    """Where this actor runs: process, node, and the GPU share and GPU ids Ray gave it."""
    where = f"pid {os.getpid()}"
    if ray.is_initialized():
        context = ray.get_runtime_context()
        try:
            share = context.get_assigned_resources().get("GPU", 0.0)
        except AssertionError:  # a driver: nothing assigned
            share = 0.0
        gpus = context.get_accelerator_ids().get("GPU") or []
        where += f", node {context.get_node_id()[:8]}, GPU share {share:g}, GPUs {gpus or 'none'}"
    return where


class UnitStage:
    """Run one unit inside a Ray Data actor.

    Args:
        unit_path: Import path of the unit class (``module:qualname``).
        config: The unit's config.
        artifacts: Named artifact paths.
        tile_columns: Tile-level stored scalar columns to keep on tile markers.
        node_id: The pipeline node this stage runs (names its progress and log records).
        monitor: Name of the run's :class:`~pathray.engine.monitor.RunMonitor` actor; None
            outside a run.
        write: Keyword arguments of a :class:`WriteStage` to stage this unit's output with
            (the last stage of a run); the stage then returns the writer's summary rows.
    """

    def __init__(
        self,
        unit_path: str,
        config: dict[str, Any],
        artifacts: dict[str, str] | None = None,
        tile_columns: tuple[str, ...] = (),
        node_id: str | None = None,
        monitor: str | None = None,
        write: dict[str, Any] | None = None,
    ) -> None:
        cls = load_unit_class(unit_path)
        self.node_id = node_id or cls.name
        self.monitor = find_monitor(monitor)
        if self.monitor is not None:
            # One stage per actor process: the root logger's records are this unit's.
            root = logging.getLogger()
            root.addHandler(MonitorHandler(self.monitor, self.node_id))
            root.setLevel(min(root.level, logging.INFO))
            log.info("unit %s starting (%s)", cls.name, _placement())
        threads = _use_assigned_cpus()
        self.unit: Unit = cls(config, artifacts)
        if threads and "torch" in sys.modules:  # imported before the stage read the variable
            sys.modules["torch"].set_num_threads(threads)
        if self.monitor is not None and hasattr(self.unit, "_device"):
            # A GPU share on a machine where torch sees no CUDA computes on CPUs: say so.
            log.info("unit %s computes on %s", cls.name, self.unit._device)
        self.emits = cls.emits_objects()
        self.tile_columns = tile_columns
        self.writer = WriteStage(**write) if write is not None else None

    def __call__(self, batch: Batch) -> Batch:
        """Apply the unit to the batch's real rows and pass markers through (or stage them)."""
        out = self._run(batch)
        return out if self.writer is None else self.writer(out)

    def _run(self, batch: Batch) -> Batch:
        markers = _is_marker(batch)
        tiles = int(markers.sum()) if markers.any() else len(batch["tile_id"])
        if not markers.any():
            out = self._apply(batch)
        else:
            real = _take(batch, ~markers)
            kept = _take(batch, markers)
            if not len(real["tile_id"]):
                self._report(tiles, 0)
                return batch
            out = self._apply(real)
            for name, values in out.items():
                if name not in kept:
                    kept[name] = _empty_like(values, int(markers.sum()))
            out = _concat([out, kept])
        made = int((~_is_marker(out)).sum()) if "object_id" in out else 0
        self._report(tiles, made)
        return out

    def _report(self, tiles: int, objects: int) -> None:
        if self.monitor is not None:
            self.monitor.report.remote(self.node_id, tiles, objects)

    def _apply(self, batch: Batch) -> Batch:
        try:
            result = self.unit(batch)
        except Exception:
            rows = len(batch["tile_id"])
            log.exception("unit %s failed on a batch of %d rows", self.node_id, rows)
            raise
        if not self.emits:
            return {**batch, **result}
        parent = np.asarray(result.pop(PARENT_INDEX), np.int64)
        n_tiles = len(batch["tile_id"])
        objects: Batch = {key: np.asarray(batch[key])[parent] for key in TILE_KEYS}
        # object ids number the objects of each tile 0..k-1, in the order the unit gave them
        order = np.argsort(parent, kind="stable")
        ids = np.empty(len(parent), np.int64)
        counts = np.bincount(parent, minlength=n_tiles)
        ids[order] = np.arange(len(parent)) - np.repeat(np.cumsum(counts) - counts, counts)
        objects["object_id"] = ids
        objects.update({name: np.asarray(values) for name, values in result.items()})
        marker_rows: Batch = {key: np.asarray(batch[key]) for key in TILE_KEYS}
        marker_rows["object_id"] = np.full(n_tiles, MARKER, np.int64)
        for name in self.tile_columns:
            if name in batch:
                # on the objects too: every part of a batch needs the same columns
                marker_rows[name] = np.asarray(batch[name])
                objects[name] = np.asarray(batch[name])[parent]
        for name, values in result.items():
            marker_rows[name] = _empty_like(np.asarray(values), n_tiles)
        return _concat([objects, marker_rows])


def _table(batch: Batch, schema: pa.Schema) -> pa.Table:
    """Build a table of the schema's columns from a batch (types fixed by the schema)."""
    arrays = []
    for field_ in schema:
        values = np.asarray(batch[field_.name])
        if pa.types.is_fixed_size_list(field_.type) and values.ndim == 2 and values.dtype != object:
            flat = pa.array(values.reshape(-1), field_.type.value_type)  # one copy, no per-row work
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field_.type.list_size))
        elif values.dtype == object or values.dtype.kind == "U" or values.ndim > 1:
            # strings, bytes and vectors of varying length (Arrow lists) go row by row
            arrays.append(pa.array(list(values), field_.type))
        else:
            arrays.append(pa.array(values, field_.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class WriteStage:
    """Write each batch to the run's staging folder; return one summary row per batch.

    Args:
        staging: The run's staging folder (a local folder or an object-store location).
        object_schema: Stored columns of object rows (keys included), or None when the
            pipeline makes no objects.
        tile_schema: Stored columns of tile rows (keys included).
    """

    def __init__(
        self,
        staging: Location | str,
        object_schema: pa.Schema | None,
        tile_schema: pa.Schema,
    ) -> None:
        self.staging = staging if isinstance(staging, Location) else Location(staging)
        self.staging.makedirs()
        self.object_schema = object_schema
        self.tile_schema = tile_schema

    def __call__(self, batch: Batch) -> Batch:
        """Stage the batch; return counts of tiles and objects written."""
        markers = _is_marker(batch) if self.object_schema is not None else None
        tiles = batch if markers is None else _take(batch, markers)
        pairs = zip(tiles["slide_id"], tiles["tile_id"], strict=True)
        # Named by the tiles it holds: a retried batch overwrites its own files.
        digest = hashlib.sha1("|".join(sorted(f"{s}:{t}" for s, t in pairs)).encode()).hexdigest()
        digest = digest[:20]
        n_objects, table = 0, None
        if markers is not None and self.object_schema is not None:
            objects = _take(batch, ~markers)
            n_objects = len(objects["tile_id"])
            table = _table(objects, self.object_schema)
        stage_batch(self.staging, digest, _table(tiles, self.tile_schema), table)
        return {
            "tiles": np.array([len(tiles["tile_id"])], np.int64),
            "objects": np.array([n_objects], np.int64),
        }


__all__ = ["MARKER", "OBJECT_KEYS", "UnitStage", "WriteStage"]
