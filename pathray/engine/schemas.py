"""The Arrow schemas of a run's stored tile rows and object rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pathray.pipeline.spec import UnitSpec
from pathray.units.base import OBJECT_KEYS, TILE_KEYS, Column, Unit

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
