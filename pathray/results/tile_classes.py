"""Tile classes of a run as a viewer layer: each tile's core, filled in its class colour.

A tile classifier (``tile_classifier``) writes one class per tile (the ``tile_label`` column of
the run's tiles dataset) instead of objects. The viewer shows such a unit's output as a class
map: the tile cores (the part of a tile no neighbour shares, so the map has no double cover)
filled with a translucent colour per class. :mod:`pathray.results.overlay` serves them through
the same routes as objects (vectors when zoomed in, raster tiles when zoomed out), with the
boxes kept so its raster tiles can fill them.

Example:
    >>> is_tile_class_layer(catalog, run_id, slide_id, "classify")  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pathray.errors import NotFoundError

if TYPE_CHECKING:
    from pathray.catalog import Catalog
    from pathray.results.store import ColdStore

#: The tiles-dataset column that names a tile's class.
TILE_LABEL = "tile_label"
#: The tiles-dataset column of the class probabilities (its maximum is the tile's score).
TILE_PROBABILITIES = "tile_probabilities"
#: Opacity (of 255) of a class map's fill: the tissue stays visible under it.
FILL_ALPHA = 110
CORE = ["core_x0", "core_y0", "core_x1", "core_y1"]


def is_tile_class_layer(catalog: Catalog, run_id: str, slide_id: int, unit: str | None) -> bool:
    """Whether a run layer of ``unit`` is a class map: the unit wrote tiles, not objects.

    The tiles dataset is shared by a run's tile-level units, so a unit is a class map's when
    the run recorded tiles (and no objects) for it; :func:`read_tile_classes` then checks that
    the dataset holds classes.
    """
    if unit is None:
        return False
    mine = [
        loc
        for loc in catalog.result_locations(run_id=run_id, slide_id=slide_id)
        if loc.unit_name == unit
    ]
    return bool(mine) and all(loc.kind == "tiles" for loc in mine)


def read_tile_classes(
    store: ColdStore,
    run_id: str,
    slide_id: int,
    box: tuple[float, float, float, float],
    label: str | None = None,
) -> pa.Table:
    """The tiles of a slide whose core meets a level-0 box: id, core box, class, score.

    Args:
        store: The cold store.
        run_id: The run.
        slide_id: The slide.
        box: ``(x0, y0, x1, y1)`` in level-0 pixels.
        label: Only the tiles of this class.

    Returns:
        Columns ``tile_id``, ``core_x0``..``core_y1``, ``label`` and ``score`` (the highest
        class probability, or null where the run stored none).

    Raises:
        NotFoundError: The run's tiles hold no classes.
    """
    dataset = store.dataset(run_id, "tiles")
    names = set(dataset.schema.names)
    if TILE_LABEL not in names:
        raise NotFoundError(
            f"Run {run_id!r} must have tile classes ({TILE_LABEL!r}) to show them. "
            f"Got tile columns {sorted(names)} instead."
        )
    x0, y0, x1, y1 = box
    where = (
        f"slide_id = {int(slide_id)} AND core_x1 >= {x0} AND core_x0 <= {x1} "
        f"AND core_y1 >= {y0} AND core_y0 <= {y1}"
    )
    columns = ["tile_id", *CORE, TILE_LABEL]
    if TILE_PROBABILITIES in names:
        columns.append(TILE_PROBABILITIES)
    table = dataset.to_table(columns=columns, filter=where)
    if label is not None:
        table = table.filter(pc.equal(table[TILE_LABEL], label))
    if TILE_PROBABILITIES in names:
        score = pa.array(
            [max(p) if p else None for p in table[TILE_PROBABILITIES].to_pylist()], pa.float64()
        )
    else:
        score = pa.nulls(table.num_rows, pa.float64())
    return pa.table(
        {
            "tile_id": table["tile_id"],
            **{c: table[c] for c in CORE},
            "label": table[TILE_LABEL],
            "score": score,
        }
    )


def slide_classes(store: ColdStore, run_id: str, slide_id: int) -> list[str]:
    """The classes a run's tiles have on a slide, sorted (for a layer's legend)."""
    dataset = store.dataset(run_id, "tiles")
    if TILE_LABEL not in dataset.schema.names:
        return []
    table = dataset.to_table(columns=[TILE_LABEL], filter=f"slide_id = {int(slide_id)}")
    return sorted(str(v) for v in pc.unique(table[TILE_LABEL]).to_pylist() if v is not None)


__all__ = [
    "FILL_ALPHA",
    "TILE_LABEL",
    "is_tile_class_layer",
    "read_tile_classes",
    "slide_classes",
]
