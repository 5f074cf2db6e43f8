"""Automatic structure: a pipeline inferred from a set of chosen units.

Edges follow the data: ``A -> B`` when an output column of A is an input column of B (columns the
tile source provides need no precursor). Edges implied by longer paths are dropped, every unit
version is pinned, and the result goes through the full validation. Nothing is guessed: an input
no chosen unit produces, or one that several produce, is reported with the units that would
resolve it.

A unit that loads a model gets the model bound to it (``models``); one left unbound gets the
model its unit ships, if any (the nucleus U-Net: ``nuclei-default@champion``), and otherwise
fails validation, saying so.

Example:
    >>> spec = infer_pipeline(["nucleus_features", "tissue_mask", "nucleus_segmentation"])
    >>> [(node.id, node.after) for node in spec.units]  # doctest: +NORMALIZE_WHITESPACE
    [('tissue_mask', ()), ('nucleus_segmentation', ('tissue_mask',)),
     ('nucleus_features', ('nucleus_segmentation',))]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pathray.errors import ConfigError
from pathray.pipeline.bind import bundled_model
from pathray.pipeline.graph import topological_order, transitive_reduction
from pathray.pipeline.selection import chosen_classes, exclusion
from pathray.pipeline.spec import PipelineSpec, TilingSpec, UnitSpec
from pathray.pipeline.validate import SOURCE_COLUMNS, stream_phase
from pathray.units.base import Unit
from pathray.units.registry import producers


def infer_pipeline(
    chosen_units: Sequence[str],
    *,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    models: Mapping[str, str] | None = None,
    tiling: TilingSpec | None = None,
    name: str = "custom",
    version: str = "1",
    description: str = "",
) -> PipelineSpec:
    """Order chosen units into a validated pipeline from their declared inputs and outputs.

    Args:
        chosen_units: Registered unit names, in any order; each becomes the node of that id.
        configs: Unit name -> config (defaults for the others).
        models: Unit name -> the model its node binds (``name@alias`` or ``name@version``); a
            model unit left out binds the model it ships, if any.
        tiling: The tiling; None takes the default tiling at the ``mpp`` the tile-level units
            agree on.
        name: The pipeline's name.
        version: The pipeline's version.
        description: The pipeline's description (default: the chosen units).

    Returns:
        The validated spec, its nodes listed in the order the engine runs them.

    Raises:
        ConfigError: If the choice is empty, repeats or excludes a unit, misses or has several
            producers of an input, a model is bound to a unit not chosen, or the inferred spec
            fails validation (a model unit with no model and none shipped, a model on a unit
            that loads none).
    """
    chosen = list(chosen_units)
    if not chosen:
        raise ConfigError("Chosen units must name at least one unit. Got none instead.")
    repeated = sorted({n for n in chosen if chosen.count(n) > 1})
    if repeated:
        raise ConfigError(f"Chosen units must be distinct. Got {repeated} more than once instead.")
    classes = dict(zip(chosen, chosen_classes(chosen), strict=True))
    configs = dict(configs or {})
    stray = sorted(set(configs) - set(chosen))
    if stray:
        raise ConfigError(f"Configs must be for chosen units {chosen}. Got {stray} instead.")
    bound = _bind_models(classes, models or {})
    for i, cls in enumerate(classes.values()):
        reason = exclusion(cls, list(classes.values())[:i])
        if reason:
            raise ConfigError(f"Unit {cls.name!r} cannot join the chosen units: {reason}.")
    parents = _data_edges(classes)
    order = topological_order(parents, key=lambda n: stream_phase(classes[n]))
    reduced = transitive_reduction(parents)
    spec = PipelineSpec(
        name=name,
        version=version,
        description=description or f"Inferred from the units {', '.join(chosen)}.",
        tiling=tiling or _tiling_for(classes, configs),
        units=tuple(
            UnitSpec(
                id=unit,
                unit=unit,
                version=classes[unit].version,
                config=dict(configs.get(unit, {})),
                after=reduced[unit],
                model=bound.get(unit),
            )
            for unit in order
        ),
    )
    spec.ordered()
    return spec


def _bind_models(classes: Mapping[str, type[Unit]], models: Mapping[str, str]) -> dict[str, str]:
    """Unit name -> the model its node binds: the one given, else the one its unit ships."""
    stray = sorted(set(models) - set(classes))
    if stray:
        raise ConfigError(
            f"Models must be bound to chosen units {list(classes)}. Got {stray} instead."
        )
    bound = dict(models)
    for unit, cls in classes.items():
        default = bundled_model(cls)
        if unit not in bound and cls.needs_model and default:
            bound[unit] = default
    return bound


def _data_edges(classes: Mapping[str, type[Unit]]) -> dict[str, tuple[str, ...]]:
    """Parents of each unit from the columns it reads; report what is missing or ambiguous."""
    makers: dict[str, list[str]] = {}
    for unit, cls in classes.items():
        for column in cls.outputs:
            makers.setdefault(column.name, []).append(unit)
    parents: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for unit, cls in classes.items():
        found: list[str] = []
        for column in cls.inputs:
            made = [m for m in makers.get(column.name, []) if m != unit]
            if len(made) == 1:
                found.append(made[0])
            elif len(made) > 1:
                problems.append(
                    f"{unit} needs {column.name}, which several chosen units produce "
                    f"({', '.join(made)}); keep one of them"
                )
            elif column.name not in SOURCE_COLUMNS:
                others = [p for p in producers(column.name) if p != unit]
                hint = (
                    f"units that produce it: {', '.join(others)}"
                    if others
                    else "no registered unit produces it"
                )
                problems.append(
                    f"{unit} needs {column.name}, which none of the chosen units produces; {hint}"
                )
        parents[unit] = tuple(dict.fromkeys(found))
    if len(problems) == 1:
        raise ConfigError(f"The chosen units are incomplete: {problems[0]}.")
    if problems:
        raise ConfigError(
            "The chosen units are incomplete:\n" + "\n".join(f"- {p}" for p in problems)
        )
    return parents


def _tiling_for(
    classes: Mapping[str, type[Unit]], configs: Mapping[str, Mapping[str, Any]]
) -> TilingSpec:
    """The default tiling at the mpp the tile-level units agree on (default mpp otherwise)."""
    mpps: list[float] = []
    for unit, cls in classes.items():
        mpp = cls.mpp(configs.get(unit)) if cls.input_granularity() == "tile" else None
        if mpp is not None and not any(math.isclose(mpp, m, rel_tol=1e-6) for m in mpps):
            mpps.append(mpp)
    return TilingSpec(mpp=mpps[0]) if len(mpps) == 1 else TilingSpec()
