"""Validation of a pipeline spec: each kind of mistake has its own message naming the node.

The checks run in this order, so that a spec with several mistakes reports the most basic one:

1. node ids unique, precursors known, no cycle;
2. every unit registered at the pinned version, with a valid config; a model bound on exactly
   the nodes whose unit loads one (:func:`pathray.pipeline.bind.check_bindings`; whether the
   catalog holds that model is :func:`pathray.pipeline.bind.check_models`'s question);
3. no two units with the same role (mutually exclusive units);
4. granularity: tile-level units read tiles, object-level units read objects;
5. resolution: the tile-level units of a chain work at the tiling's ``mpp``;
6. every input column produced by the tile source or by a precursor.

The order returned is the one the engine streams rows through: a pipeline's rows are tiles until
the one unit that turns tiles into objects runs, then objects. So among the nodes ready at each
step the tile-level ones go first, then the unit that makes objects, then the object-level ones;
ties follow the listing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pathray.errors import ConfigError
from pathray.pipeline.bind import check_bindings, label
from pathray.pipeline.graph import ancestors, topological_order
from pathray.units.base import OBJECT_KEYS, Unit
from pathray.units.registry import producers

if TYPE_CHECKING:
    from pathray.pipeline.spec import PipelineSpec, UnitSpec

#: Columns the tile source provides to the first units.
SOURCE_COLUMNS = frozenset({*OBJECT_KEYS[:-1], "image", "size", "tissue_fraction"})

Classes = dict[str, type[Unit]]


def stream_phase(cls: type[Unit]) -> int:
    """Where a unit sits in the row stream: 0 tiles -> tiles, 1 tiles -> objects, 2 objects."""
    if cls.input_granularity() == "object":
        return 2
    return 1 if cls.emits_objects() else 0


def validate(spec: PipelineSpec) -> list[UnitSpec]:
    """Check a spec and return its nodes in the order the engine runs them.

    Raises:
        ConfigError: On the first mistake found, in the order of the module docstring.
    """
    parents = _check_ids(spec)
    topological_order(parents)  # a cycle is reported before any unit is looked up
    classes: Classes = {}
    for node in spec.units:
        classes[node.id] = cls = spec.unit_class(node)
        try:
            cls.validate_config(node.config)
        except ConfigError as exc:
            raise ConfigError(f"Node {node.id!r}: {exc}") from None
    check_bindings(spec, classes)
    check_roles(spec, classes)
    ids = topological_order(parents, key=lambda i: stream_phase(classes[i]))
    order = [spec.node(i) for i in ids]
    check_granularity(order, classes, parents)
    check_resolution(spec, order, classes, parents)
    check_columns(order, classes, parents)
    return order


def _check_ids(spec: PipelineSpec) -> dict[str, tuple[str, ...]]:
    ids = [node.id for node in spec.units]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"Node ids must be unique. Got duplicates {duplicates} instead.")
    for node in spec.units:
        for parent in node.after:
            if parent not in ids:
                raise ConfigError(
                    f"Node {node.id!r} must run after nodes of the pipeline {ids}. "
                    f"Got unknown node {parent!r} instead."
                )
    return {node.id: node.after for node in spec.units}


def check_roles(spec: PipelineSpec, classes: Classes) -> None:
    """Refuse two nodes whose units fill the same role (mutually exclusive units).

    Raises:
        ConfigError: Naming both nodes and the role.
    """
    holders: dict[str, UnitSpec] = {}
    for node in spec.units:
        role = classes[node.id].role
        if role is None:
            continue
        if role in holders:
            first = holders[role]
            raise ConfigError(
                f"Nodes {label(first)} and {label(node)} are mutually exclusive: both fill role "
                f"{role!r}. A pipeline must hold one unit per role. Got two instead."
            )
        holders[role] = node


def check_granularity(
    order: list[UnitSpec], classes: Classes, parents: dict[str, tuple[str, ...]]
) -> None:
    """Check that tile-level units read tiles and object-level units read objects.

    Raises:
        ConfigError: If a tile-level unit comes after tiles became objects (behind a precursor,
            or behind a second unit that makes objects), or an object-level unit has no
            precursor that makes objects.
    """
    position = {node.id: i for i, node in enumerate(order)}
    first_emitter: UnitSpec | None = None
    for node in order:
        cls = classes[node.id]
        ups = sorted(ancestors(parents, node.id), key=position.__getitem__)
        emitters = [order[position[a]] for a in ups if classes[a].emits_objects()]
        if cls.input_granularity() == "tile" and emitters:
            raise ConfigError(
                f"Node {label(node)} must read tile rows. Got object rows instead: its "
                f"precursor {label(emitters[0])} turned the tiles into objects."
            )
        if cls.input_granularity() == "tile" and first_emitter is not None:
            raise ConfigError(
                f"Node {label(node)} must read tile rows. Got object rows instead: node "
                f"{label(first_emitter)} turns the tiles into objects first, and a pipeline's "
                f"rows turn into objects only once."
            )
        if cls.input_granularity() == "object" and not emitters:
            fed_by = f"tile-level precursors {ups}" if ups else "the tile source"
            raise ConfigError(
                f"Node {label(node)} reads objects, so one of its precursors must turn tiles "
                f"into objects. Got only {fed_by} instead."
            )
        if cls.emits_objects() and first_emitter is None:
            first_emitter = node


def check_resolution(
    spec: PipelineSpec,
    order: list[UnitSpec],
    classes: Classes,
    parents: dict[str, tuple[str, ...]],
) -> None:
    """Check that the tile-level units of a chain agree on ``mpp``, and with the tiling.

    Units whose config has no ``mpp`` field take the tiles as they come and are not checked.

    Raises:
        ConfigError: If a tile-level unit's ``mpp`` differs from a tile-level precursor's, or
            (all agreeing) from the tiling's.
    """
    position = {node.id: i for i, node in enumerate(order)}
    mpps: dict[str, float] = {}
    for node in order:
        cls = classes[node.id]
        mpp = cls.mpp(node.config) if cls.input_granularity() == "tile" else None
        if mpp is None:
            continue
        for up in sorted(ancestors(parents, node.id), key=position.__getitem__):
            if up in mpps and not math.isclose(mpps[up], mpp, rel_tol=1e-6):
                raise ConfigError(
                    f"Node {label(node)} mpp must match its precursor "
                    f"{label(order[position[up]])} in one tile chain ({mpps[up]}). "
                    f"Got {mpp} instead."
                )
        mpps[node.id] = mpp
    for node in order:
        mpp = mpps.get(node.id)
        if mpp is not None and not math.isclose(mpp, spec.tiling.mpp, rel_tol=1e-6):
            raise ConfigError(
                f"Node {label(node)} mpp must be the tiling's mpp ({spec.tiling.mpp}), the "
                f"resolution the tiles are cut at. Got {mpp} instead."
            )


def check_columns(
    order: list[UnitSpec], classes: Classes, parents: dict[str, tuple[str, ...]]
) -> None:
    """Check that every input column comes from the tile source or from a precursor.

    Raises:
        ConfigError: Naming the missing columns and the units that would produce them.
    """
    produced: dict[str, set[str]] = {}
    for node in order:
        cls = classes[node.id]
        available = set(SOURCE_COLUMNS)
        for up in ancestors(parents, node.id):  # every ancestor's outputs are visible
            available |= produced[up]
        missing = [c.name for c in cls.inputs if c.name not in available]
        if missing:
            makers = sorted({name for column in missing for name in producers(column)})
            hint = f"units that produce them: {', '.join(makers)}" if makers else "no unit does"
            raise ConfigError(
                f"Node {label(node)} needs input columns {missing} that no precursor "
                f"produces; {hint}."
            )
        produced[node.id] = {c.name for c in cls.outputs}
