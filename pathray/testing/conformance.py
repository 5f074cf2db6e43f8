"""The unit contract, as checks a unit author can run (:func:`check_unit`).

A unit (:class:`~pathray.units.base.Unit`) promises:

- its config validates from ``{}`` (defaults) and survives JSON and its own JSON Schema, with
  the same config hash after the round trip (the hash names the unit version in the catalog);
- called on a batch, it returns exactly the columns it declares (plus ``parent_index`` for a
  unit that turns tiles into objects), each with the declared dtype and per-row shape, all of
  one length, and one row per input row when it keeps the granularity;
- two instances built from the same config and artifacts give the same outputs (a run that is
  retried or resumed must commit the rows of one clean run).

The engine's own wrapping of a unit (passing keys through, tile markers, running it as a Ray
actor) is checked by PathRay's suite (``tests/integration/test_conformance.py``), which runs
these same checks on every registered unit first.

Example:
    >>> from pathray.units.examples import DarkBlobs
    >>> raw = check_unit(DarkBlobs, example_tiles(2))
    >>> "polygon" in raw and "parent_index" in raw
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from pathray.units.base import PARENT_INDEX, Batch, Column, Unit, UnitConfig


class ConformanceError(AssertionError):
    """A unit breaks its contract; the message names the unit, the column and what differs."""


def _fail(message: str) -> None:
    raise ConformanceError(message)


def example_tiles(n: int = 4, size: int = 128, seed: int = 0) -> Batch:
    """A batch of ``n`` synthetic H&E-like tiles with their keys, as the tile source yields them.

    Pink background, darker purple blobs (nuclei-like) and a tissue mask, at level-0 positions
    side by side; enough for units that read ``image`` (and ``tissue``) to produce output.

    Args:
        n: Tiles in the batch.
        size: Tile side in pixels.
        seed: Seed of the blob positions.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        image = np.empty((size, size, 3), np.float32)
        image[:] = (232, 182, 208)  # eosin-pink
        for _ in range(max(3, size // 16)):
            cx, cy = rng.uniform(8, size - 8, 2)
            r = rng.uniform(3, 7)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            image[inside] = (92, 58, 128)  # haematoxylin-purple
        image += rng.normal(0, 4, image.shape)
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
    xs = np.arange(n, dtype=np.int64) * size
    ys = np.zeros(n, np.int64)
    return {
        "slide_id": np.ones(n, np.int64),
        "tile_id": np.arange(n, dtype=np.int64),
        "x": xs,
        "y": ys,
        "width": np.full(n, size, np.int64),
        "height": np.full(n, size, np.int64),
        "downsample": np.ones(n, np.float64),
        "core_x0": xs.astype(np.float64),
        "core_y0": ys.astype(np.float64),
        "core_x1": (xs + size).astype(np.float64),
        "core_y1": (ys + size).astype(np.float64),
        "image": images,
        "tissue": np.ones((n, size, size), bool),
    }


def check_config(cls: type[Unit], configs: list[Mapping[str, Any]] | None = None) -> None:
    """The defaults (and ``configs``) validate, survive JSON and match the JSON Schema.

    Raises:
        ConformanceError: A config changes over the round trip, or its hash does.
    """
    schema = cls.Config.model_json_schema()
    if schema.get("type") != "object":
        _fail(f"{cls.name}: its Config's JSON Schema must be an object. Got {schema.get('type')}.")
    for given in [{}, *(configs or [])]:
        config: UnitConfig = cls.validate_config(given)
        dumped = json.loads(json.dumps(config.model_dump(mode="json")))
        again = cls.Config.model_validate(dumped)
        if again != config:
            _fail(f"{cls.name}: config {given!r} must survive JSON. Got {again!r} instead.")
        if cls.config_hash(again) != cls.config_hash(config):
            _fail(f"{cls.name}: the config hash of {given!r} must survive JSON.")
        try:
            import jsonschema
        except ImportError:  # an optional check: the schema itself was made by pydantic
            continue
        jsonschema.validate(dumped, schema)


def check_outputs(
    cls: type[Unit], raw: Batch, n_in: int, config: Mapping[str, Any] | None = None
) -> None:
    """A unit's raw output holds exactly its declared columns, with their dtypes and shapes.

    Args:
        cls: The unit class.
        raw: What an instance returned.
        n_in: Rows of the batch it was given.
        config: Its config (units whose columns depend on it, e.g. one per dataset).

    Raises:
        ConformanceError: A column undeclared, missing, of another dtype or shape, or of
            another length.
    """
    declared = {c.name: c for c in cls.declared_outputs(config)}
    extra = {PARENT_INDEX} if cls.emits_objects() else set()
    if set(raw) != set(declared) | extra:
        missing = sorted(set(declared) | extra - set(raw))
        undeclared = sorted(set(raw) - set(declared) - extra)
        _fail(f"{cls.name}: undeclared or missing output columns ({undeclared=}, {missing=})")
    lengths = {len(np.asarray(v)) for v in raw.values()}
    if len(lengths) != 1:
        _fail(f"{cls.name}: output columns have different lengths {lengths}")
    if cls.output_granularity() == cls.input_granularity() and lengths != {n_in}:
        _fail(f"{cls.name}: one output row per input row expected ({n_in}). Got {lengths}.")
    for name, column in declared.items():
        _check_column(cls.name, column, np.asarray(raw[name]))


def _check_column(unit: str, column: Column, values: np.ndarray) -> None:
    where = f"{unit}.{column.name}"
    if column.dtype == "wkb":
        if not (values.dtype == object and all(isinstance(v, bytes) for v in values)):
            _fail(f"{where}: WKB bytes expected")
        return
    if column.dtype == "str":
        if not (values.dtype.kind in "OU" and all(isinstance(v, str) for v in values)):
            _fail(f"{where}: strings expected")
        return
    if values.dtype != np.dtype(column.dtype):
        _fail(f"{where}: dtype {values.dtype} must be {column.dtype}")
    shape = values.shape[1:]
    if len(shape) != len(column.shape) or any(
        want is not None and got != want for got, want in zip(shape, column.shape, strict=False)
    ):
        _fail(f"{where}: shape {shape} must be {column.shape}")


def _values(array: Any) -> np.ndarray:
    """Strings and bytes as an object array, everything else unchanged."""
    array = np.asarray(array)
    return array.astype(object) if array.dtype.kind in "USO" else array


def check_same(expected: Batch, actual: Batch, where: str) -> None:
    """Column-by-column equality: exact for ints, bools, strings and bytes; close for floats.

    Raises:
        ConformanceError: Columns, shapes, dtypes or values differ.
    """
    if set(actual) != set(expected):
        _fail(f"{where}: columns differ ({sorted(set(actual) ^ set(expected))})")
    for name, want_raw in expected.items():
        want, got = _values(want_raw), _values(actual[name])
        if got.shape != want.shape:
            _fail(f"{where}: {name} shape {got.shape} != {want.shape}")
        if want.dtype == object:
            if got.tolist() != want.tolist():
                _fail(f"{where}: {name} values differ")
            continue
        if got.dtype != want.dtype:
            _fail(f"{where}: {name} dtype {got.dtype} != {want.dtype}")
        if want.dtype.kind == "f":
            close = np.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        else:
            close = np.array_equal(got, want)
        if not close:
            _fail(f"{where}: {name} values differ")


def check_unit(
    cls: type[Unit],
    batch: Batch | None = None,
    config: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, str] | None = None,
) -> Batch:
    """Run the unit contract's checks on a unit class (see the module docs).

    Args:
        cls: The unit class.
        batch: An input batch holding the unit's inputs (default: :func:`example_tiles`).
        config: Its config (default: the defaults).
        artifacts: What it loads (e.g. ``{"model": folder}`` for a model unit).

    Returns:
        The unit's raw output on ``batch``.

    Raises:
        ConformanceError: The first broken promise, naming the unit and what differs.
    """
    batch = dict(example_tiles() if batch is None else batch)
    missing = [c.name for c in cls.inputs if c.name not in batch]
    if missing:
        _fail(f"{cls.name}: the batch must hold the unit's inputs. Got none of {missing}.")
    check_config(cls, [config] if config else None)
    conf = cls.validate_config(config or {}).model_dump(mode="json")
    rows = {k: np.asarray(v) for k, v in batch.items()}
    n = len(rows[next(iter(rows))])
    raw = cls(conf, dict(artifacts or {}))(dict(rows))
    check_outputs(cls, raw, n, conf)
    check_same(raw, cls(conf, dict(artifacts or {}))(dict(rows)), f"{cls.name} (second instance)")
    return raw


__all__ = [
    "ConformanceError",
    "check_config",
    "check_outputs",
    "check_same",
    "check_unit",
    "example_tiles",
]
