"""Inference deployments built from the same unit classes and pipeline DAGs as batch runs.

A pipeline becomes one :class:`PipelineDeployment` chained to one :class:`UnitDeployment` per
node (handles composed with ``.bind()``). Each unit deployment wraps
:class:`~pathray.engine.stages.UnitStage`, the very class a batch run hands to Ray Data, and the
pipeline walks the nodes in the order :meth:`PipelineSpec.ordered` gives the engine; so a tile
served here gets the rows a batch run of the same pipeline would give it. Unit deployments with
the same unit, config and artifacts are shared by the pipelines that use them.

Request batching (``@serve.batch``) gathers concurrent tiles into one unit call, which pays off
for units that vectorise over a batch (a model's forward pass); requests of different image sizes
or columns are grouped and called separately.

:func:`tile_batch` turns one image into the rows a unit reads (a tile at level 0 whose core is the
whole tile, so no object is dropped at a border); :func:`run_in_process` runs the same chain
without Serve (the reference the tests and the benchmark compare with); :func:`to_json` turns the
rows into the API's objects and tile values.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from ray import serve
from ray.serve.handle import DeploymentHandle

from pathray.engine.models import ResolvedModel
from pathray.engine.schemas import stored_schemas
from pathray.engine.sizing import stage_resources
from pathray.engine.stages import MARKER, UnitStage
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.units.base import PARENT_INDEX, TILE_KEYS, Batch, Resources, Unit
from pathray.units.registry import unit_path

#: The column that tells concurrent requests apart inside a shared batch (its value is restored).
_REQUEST = "slide_id"


def tile_batch(images: list[np.ndarray]) -> Batch:
    """The rows of one or more same-sized RGB tiles, as the tile source yields them.

    Args:
        images: ``(H, W, 3)`` uint8 arrays, all of one size.

    Returns:
        A batch with the tile key columns and ``image``.
    """
    n = len(images)
    h, w = images[0].shape[:2]
    zeros = np.zeros(n, np.int64)
    return {
        "slide_id": zeros.copy(),
        "tile_id": np.arange(n, dtype=np.int64),
        "x": zeros.copy(),
        "y": zeros.copy(),
        "width": np.full(n, w, np.int64),
        "height": np.full(n, h, np.int64),
        "downsample": np.ones(n, np.float64),
        "core_x0": np.zeros(n, np.float64),
        "core_y0": np.zeros(n, np.float64),
        "core_x1": np.full(n, float(w)),
        "core_y1": np.full(n, float(h)),
        "image": np.stack(images).astype(np.uint8, copy=False),
    }


@dataclass(frozen=True)
class NodePlan:
    """How to build one node's stage: the same arguments the engine gives ``UnitStage``."""

    node: UnitSpec
    cls: type[Unit]
    config: dict[str, Any]
    artifacts: dict[str, str] | None
    tile_columns: tuple[str, ...]
    #: What one replica asks for: the unit's, its model card's and the node's resources.
    resources: Resources = field(default_factory=Resources)

    def stage_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of :class:`UnitStage`."""
        return {
            "unit_path": unit_path(self.cls),
            "config": self.config,
            "artifacts": self.artifacts,
            "tile_columns": self.tile_columns,
        }

    def key(self) -> str:
        """Identity of the deployment that can serve this node (shared across pipelines)."""
        payload = {
            **self.stage_kwargs(),
            # tile columns only matter to a unit that turns tiles into objects
            "tile_columns": list(self.tile_columns) if self.cls.emits_objects() else [],
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
        return f"unit-{self.cls.name}-{digest.hexdigest()[:8]}"


def plan_nodes(
    spec: PipelineSpec, models: Mapping[str, ResolvedModel] | None = None
) -> list[NodePlan]:
    """The nodes of a pipeline in engine order, with their stage arguments and resources.

    Args:
        spec: The pipeline (validated here).
        models: Node id -> the model it loads (:func:`pathray.engine.models.resolve_models`).

    Raises:
        ConfigError: If the pipeline is invalid.
    """
    models = models or {}
    nodes = spec.ordered()
    order = [(node, spec.unit_class(node)) for node in nodes]
    tile_schema, _ = stored_schemas(order)
    markers = tuple(c for c in tile_schema.names if c not in TILE_KEYS)
    resources = stage_resources(spec, nodes, dict(models))
    return [
        NodePlan(
            node=node,
            cls=cls,
            config=dict(node.config),
            artifacts={"model": models[node.id].path} if node.id in models else None,
            tile_columns=markers,
            resources=share,
        )
        for (node, cls), share in zip(order, resources, strict=True)
    ]


def run_in_process(stages: list[UnitStage], batch: Batch) -> Batch:
    """Run a pipeline's stages one after the other in this process."""
    for stage in stages:
        batch = stage(batch)
    return batch


def _signature(batch: Batch) -> tuple[Any, ...]:
    """Batches that can be concatenated share column names, dtypes and per-row shapes."""
    return tuple(
        (name, np.asarray(v).dtype.str, np.asarray(v).shape[1:])
        for name, v in sorted(batch.items())
    )


def run_shared(stage: UnitStage, batches: list[Batch]) -> list[Batch]:
    """Run several requests' batches through one stage with as few calls as possible.

    Requests are told apart by :data:`_REQUEST` while they share a call; each gets its own rows
    back with its original values.
    """
    out: list[Batch | None] = [None] * len(batches)
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, batch in enumerate(batches):
        groups[_signature(batch)].append(i)
    for members in groups.values():
        if len(members) == 1:
            out[members[0]] = stage(batches[members[0]])
            continue
        originals = [np.asarray(batches[i][_REQUEST]) for i in members]
        joined = {
            name: np.concatenate(
                [
                    np.full(len(originals[k]), k, np.int64)
                    if name == _REQUEST
                    else np.asarray(batches[i][name])
                    for k, i in enumerate(members)
                ]
            )
            for name in batches[members[0]]
        }
        result = stage(joined)
        owner = np.asarray(result[_REQUEST])
        for k, i in enumerate(members):
            rows = owner == k
            part = {name: np.asarray(values)[rows] for name, values in result.items()}
            part[_REQUEST] = np.full(int(rows.sum()), originals[k][0], np.int64)
            out[i] = part
    return [b for b in out if b is not None]


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class UnitDeployment:
    """One unit as a Serve deployment (a :class:`UnitStage` inside).

    Args:
        stage_kwargs: Constructor arguments of :class:`UnitStage`.
        max_batch_size: Requests gathered into one call (1: no batching).
        batch_wait_timeout_s: How long a batch waits to fill.
    """

    def __init__(
        self, stage_kwargs: dict[str, Any], max_batch_size: int = 1, batch_wait_timeout_s: float = 0
    ) -> None:
        self.stage = UnitStage(**stage_kwargs)
        self.batching = max_batch_size > 1
        if self.batching:
            batched: Any = self._batched  # serve.batch adds the setters
            batched.set_max_batch_size(max_batch_size)
            batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def __call__(self, batch: Batch) -> Batch:
        """Add the unit's columns to one request's rows."""
        if self.batching:
            return await self._batched(batch)
        # a worker thread: the replica's event loop keeps accepting (and queueing) requests
        return await asyncio.to_thread(self.stage, batch)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batched(self, batches: list[Batch]) -> list[Batch]:
        return await asyncio.to_thread(run_shared, self.stage, batches)


@serve.deployment(ray_actor_options={"num_cpus": 0})
class PipelineDeployment:
    """A pipeline: its unit deployments called in the engine's order.

    Args:
        spec: The pipeline spec as JSON data.
        units: Handles of the unit deployments, in :func:`plan_nodes` order.
    """

    def __init__(self, spec: dict[str, Any], units: list[DeploymentHandle]) -> None:
        self.spec = PipelineSpec.model_validate(spec)
        self.units = units

    async def __call__(self, batch: Batch) -> Batch:
        """Run the pipeline over one request's tiles."""
        for handle in self.units:
            batch = await handle.remote(batch)
        return batch


def _finite(value: Any) -> Any:
    """JSON-safe scalar: NaN and infinities become None, NumPy scalars Python ones."""
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def object_columns(plans: list[NodePlan]) -> frozenset[str]:
    """Names of the object-granularity columns the pipeline's units write."""
    return frozenset(
        c.name for p in plans for c in p.cls.outputs if c.granularity == "object" and not c.shape
    )


def to_json(batch: Batch, objects_of: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The API's view of a pipeline's output rows for tiles at ``tile_id`` 0..n-1.

    Args:
        batch: The rows the pipeline's last stage returned.
        objects_of: The object columns (:func:`object_columns`): left out of the tile values,
            and the only values an object carries.

    Returns:
        ``{"tiles": [{column: value}], "objects": [{"tile": i, "geometry": GeoJSON | None,
        "label": str | None, "properties": {...}}], "labels": {label: count}}``; tile values are
        the scalar columns of the tile rows, objects are the rows of an object-making unit.
    """
    cols = {name: np.asarray(v) for name, v in batch.items() if name != PARENT_INDEX}
    n = len(cols["tile_id"])
    is_object = (cols["object_id"] != MARKER if "object_id" in cols else np.zeros(n, bool)).astype(
        bool
    )
    skip = {*TILE_KEYS, "object_id", "image"}
    scalar = [k for k, v in cols.items() if v.ndim == 1 and k not in skip]
    tiles = []
    per_tile = [k for k in scalar if k not in objects_of]
    per_object = [k for k in scalar if k in objects_of]
    for row in np.flatnonzero(~is_object):
        tiles.append(
            {"tile": int(cols["tile_id"][row]), **{k: _finite(cols[k][row]) for k in per_tile}}
        )
    tiles.sort(key=lambda t: t["tile"])
    objects: list[dict[str, Any]] = []
    labels: dict[str, int] = defaultdict(int)
    for row in np.flatnonzero(is_object):
        props: dict[str, Any] = {}
        geometry = None
        for k in per_object:
            value = cols[k][row]
            if k == "polygon" and isinstance(value, bytes) and value:
                geometry = shapely.geometry.mapping(shapely.from_wkb(value))
            else:
                props[k] = _finite(value)
        label = props.pop("label", None)
        if isinstance(label, str):
            labels[label] += 1
        objects.append(
            {
                "tile": int(cols["tile_id"][row]),
                "id": int(cols["object_id"][row]),
                "label": label,
                "geometry": _listify(geometry),
                "properties": props,
            }
        )
    return {"tiles": tiles, "objects": objects, "labels": dict(labels)}


def _listify(geometry: Any) -> Any:
    """GeoJSON coordinates as nested lists (shapely gives tuples)."""
    if geometry is None:
        return None
    return json.loads(json.dumps(geometry))


__all__ = [
    "NodePlan",
    "PipelineDeployment",
    "UnitDeployment",
    "object_columns",
    "plan_nodes",
    "run_in_process",
    "run_shared",
    "tile_batch",
    "to_json",
]
