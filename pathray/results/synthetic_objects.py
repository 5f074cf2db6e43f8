"""A run's worth of synthetic objects in the cold store, for tests, benchmarks and demos.

:func:`write_objects_run` records a run in the catalog and commits objects (small polygons on
a jittered grid, with a label and a score) through the cold store's own staging and
:meth:`~pathray.results.store.ColdStore.finalize`, so the result looks exactly like an engine
run's: ``runs/<id>/objects.lance`` plus a result location per slide.

Example:
    >>> slides = {1: (20000, 20000)}
    >>> run = write_objects_run(catalog, store, "set", slides, count=100_000)  # doctest: +SKIP
    >>> run.counts[1]  # doctest: +SKIP
    100000
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import shapely

if TYPE_CHECKING:
    from pathray.catalog import Catalog
    from pathray.results.store import ColdStore

LABELS = ("tumor", "lymphocyte", "stroma")


@dataclass(frozen=True)
class ObjectsRun:
    """What :func:`write_objects_run` wrote.

    Attributes:
        run_id: The run.
        unit: The unit (pipeline node id) recorded as the objects' producer.
        unit_version: Its version.
        counts: Objects per slide.
    """

    run_id: str
    unit: str
    unit_version: str
    counts: dict[int, int]


def synthetic_objects(
    slide_id: int, width: int, height: int, count: int, *, seed: int = 0, radius: float = 6.0
) -> pa.Table:
    """``count`` octagons of about ``radius`` px on a jittered grid covering a slide.

    Objects are grouped in 512 px tiles (``tile_id`` row-major), ``object_id`` numbering the
    objects of each tile, as an engine run writes them.
    """
    rng = np.random.default_rng(seed)
    side = max(1, math.ceil(math.sqrt(count * width / height)))
    rows = max(1, math.ceil(count / side))
    step_x, step_y = width / side, height / rows
    idx = np.arange(count)
    cx = (idx % side + 0.5) * step_x + rng.uniform(-0.25, 0.25, count) * step_x
    cy = (idx // side + 0.5) * step_y + rng.uniform(-0.25, 0.25, count) * step_y
    cx, cy = np.clip(cx, radius, width - radius), np.clip(cy, radius, height - radius)
    angles = np.linspace(0, 2 * math.pi, 9)[:-1]
    r = radius * rng.uniform(0.7, 1.3, count)
    xs = cx[:, None] + r[:, None] * np.cos(angles)[None, :]
    ys = cy[:, None] + r[:, None] * np.sin(angles)[None, :]
    rings = np.stack([xs, ys], axis=2)
    polygons = shapely.polygons(np.concatenate([rings, rings[:, :1]], axis=1))
    per_row = math.ceil(width / 512)
    tile_id = (cy // 512).astype(np.int64) * per_row + (cx // 512).astype(np.int64)
    order = np.argsort(tile_id, kind="stable")
    tile_id = tile_id[order]
    starts = np.searchsorted(tile_id, tile_id, side="left")
    bounds = shapely.bounds(polygons[order])
    labels = np.array(LABELS)[rng.integers(0, len(LABELS), count)]
    return pa.table(
        {
            "slide_id": pa.array(np.full(count, slide_id, np.int64)),
            "tile_id": pa.array(tile_id),
            "object_id": pa.array(np.arange(count, dtype=np.int64) - starts),
            "polygon": pa.array(list(shapely.to_wkb(polygons[order])), pa.binary()),
            "bbox_x0": pa.array(bounds[:, 0]),
            "bbox_y0": pa.array(bounds[:, 1]),
            "bbox_x1": pa.array(bounds[:, 2]),
            "bbox_y1": pa.array(bounds[:, 3]),
            "centroid_x": pa.array(cx[order]),
            "centroid_y": pa.array(cy[order]),
            "label": pa.array(labels[order].tolist(), pa.string()),
            "score": pa.array(rng.uniform(0.5, 1.0, count).astype(np.float32)),
        }
    )


def write_objects_run(
    catalog: Catalog,
    store: ColdStore,
    image_set: str,
    slides: dict[int, tuple[int, int]],
    *,
    count: int = 1000,
    unit: str = "nuclei",
    unit_version: str = "1",
    seed: int = 0,
) -> ObjectsRun:
    """Record a succeeded run with ``count`` synthetic objects on each slide.

    Args:
        catalog: The catalog (the slides must be in ``image_set``).
        store: The cold store to commit the objects to.
        image_set: The run's image set.
        slides: ``{slide_id: (width, height)}``.
        count: Objects per slide.
        unit: The producing unit's node id.
        unit_version: Its version.
        seed: Random seed (same seed, same objects).

    Returns:
        The run written.
    """
    run_id = catalog.create_run(
        pipeline_name="synthetic-objects", pipeline_version="1", image_set=image_set
    )
    for k, (slide_id, (width, height)) in enumerate(sorted(slides.items())):
        table = synthetic_objects(slide_id, width, height, count, seed=seed + k)
        tiles = pa.table(
            {
                "slide_id": pa.array(np.full(len(np.unique(table["tile_id"])), slide_id, np.int64)),
                "tile_id": pa.array(np.unique(table["tile_id"].to_numpy())),
            }
        )
        store.stage(run_id, f"{k:04d}", tiles, table)
    counts = store.finalize(run_id)
    store.discard_staging(run_id)
    for slide_id, rows in counts.items():
        catalog.record_result_location(
            run_id,
            slide_id,
            unit,
            unit_version,
            "objects",
            str(store.uri(run_id, "objects")),
            rows["objects"],
        )
    catalog.update_run(run_id, status="running")
    catalog.update_run(run_id, status="succeeded")
    return ObjectsRun(run_id, unit, unit_version, {s: c["objects"] for s, c in counts.items()})


__all__ = ["LABELS", "ObjectsRun", "synthetic_objects", "write_objects_run"]
