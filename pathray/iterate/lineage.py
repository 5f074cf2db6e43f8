"""Lineage: trace a result back to slides, runs, unit versions, models, training sets, annotations.

:func:`trace` takes a run id (32 hex digits), a model version (``name@version`` or
``name@alias``) or an iteration (``iteration:<id>``, or its bare id) and returns the trace as a
tree of plain dicts (JSON-ready)::

    run -> slides, pipeline version
        -> unit versions (each with its parent chain)
            -> model version (with its parent chain)
                -> training set: image set, slides, annotation sets (reference, corrections
                   and the runs the corrections came from)
        -> evaluations, iterations

Example:
    >>> tree = trace(catalog, "nuclei-segment-nucleus_pixel_classifier-sklearn@2")  # doctest: +SKIP
    >>> tree["model"]["parents"]  # doctest: +SKIP
    ['nuclei-segment-nucleus_pixel_classifier-sklearn@1']
"""

from __future__ import annotations

import re
from typing import Any

from pathray.catalog import Catalog, ModelVersion, UnitVersion
from pathray.engine.models import parse_model_ref
from pathray.errors import ConfigError, NotFoundError

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_ITERATION = re.compile(r"^(?:iteration:|it:)?(\d+)$")


def _slide_names(catalog: Catalog, ids: list[int]) -> list[dict[str, Any]]:
    out = []
    for slide_id in ids:
        try:
            out.append({"id": slide_id, "name": catalog.get_slide(slide_id).name})
        except NotFoundError:
            out.append({"id": slide_id, "name": None})
    return out


def _annotation_set(catalog: Catalog, name: str) -> dict[str, Any]:
    try:
        found = catalog.get_annotation_set(name)
    except NotFoundError:
        return {"name": name, "missing": True}
    return {
        "name": found.name,
        "kind": found.kind,
        "image_set": found.image_set,
        "annotations": catalog.count_annotations(found.name),
        "parent_run_id": found.parent_run_id,
        "parent_unit": found.parent_unit,
    }


def model_trace(catalog: Catalog, version: ModelVersion) -> dict[str, Any]:
    """A model version, its parent chain and its training set."""
    chain = catalog.model_lineage(version.model, version.version)
    training = dict(version.training_run)
    sets = training.get("annotation_sets") or []
    return {
        "ref": version.ref,
        "id": version.id,
        "artifact": f"sha256:{version.artifact_digest}",
        "created_by": version.created_by,
        "created_at": str(version.created_at),
        "metrics": dict(version.metrics),
        "parents": [v.ref for v in chain[1:]],
        "training_set": {
            "image_set": training.get("image_set"),
            "slides": _slide_names(catalog, [int(s) for s in training.get("slides") or []]),
            "annotation_sets": [_annotation_set(catalog, name) for name in sets],
            "label_sources": training.get("label_sources", {}),
            # a model trained outside the catalog (a shipped default) says how, and on what
            "script": training.get("script"),
            "data": training.get("data"),
        },
        "config": training.get("config", {}),
        "code_version": training.get("code_version"),
        "seed": training.get("seed"),
    }


def _unit_trace(catalog: Catalog, node: str, unit_version: UnitVersion) -> dict[str, Any]:
    chain = catalog.unit_lineage(unit_version.id)
    model = None
    if unit_version.model_version_id is not None:
        model = catalog.model_version_by_id(unit_version.model_version_id)
    return {
        "node": node,
        "unit_version": {
            "id": unit_version.id,
            "ref": unit_version.ref,
            "config": dict(unit_version.config),
            "code_version": unit_version.code_version,
        },
        "parents": [{"id": uv.id, "ref": uv.ref} for uv in chain[1:]],
        "model": None if model is None else model_trace(catalog, model),
    }


def run_trace(catalog: Catalog, run_id: str) -> dict[str, Any]:
    """A run: its slides, pipeline version, unit versions, models, evaluations, iterations."""
    run = catalog.get_run(run_id)
    try:
        nodes, edges = catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
    except NotFoundError:  # a run recorded before pipelines were versioned
        nodes, edges = {}, []
    return {
        "kind": "run",
        "run": {
            "id": run.id,
            "pipeline": f"{run.pipeline_name}@{run.pipeline_version}",
            "image_set": run.image_set,
            "status": run.status,
            "code_version": run.code_version,
            "requester": run.requester,
            "created_at": str(run.created_at),
        },
        "slides": _slide_names(catalog, [s.id for s in catalog.slides_in_set(run.image_set)]),
        "edges": [list(e) for e in edges],
        "units": [_unit_trace(catalog, node, uv) for node, uv in nodes.items()],
        "evaluations": [
            {"annotation_set": e.annotation_set, "slide_id": e.slide_id, "metrics": e.metrics}
            for e in catalog.list_evaluations(run_id=run.id)
            if e.slide_id is None
        ],
        "iterations": [
            {"id": it.id, "loop_id": it.loop_id, "number": it.number, "status": it.status}
            for it in catalog.list_iterations(run_id=run.id)
        ],
    }


def iteration_trace(catalog: Catalog, iteration_id: int) -> dict[str, Any]:
    """An iteration: its loop, the iterations it derives from, and its run's trace."""
    iteration = catalog.get_iteration(iteration_id)
    loop = catalog.get_iteration_loop(iteration.loop_id)
    chain, parent_id = [], iteration.parent_id
    while parent_id is not None:
        parent = catalog.get_iteration(parent_id)
        chain.append({"id": parent.id, "number": parent.number, "strategy": parent.strategy})
        parent_id = parent.parent_id
    return {
        "kind": "iteration",
        "iteration": {
            "id": iteration.id,
            "number": iteration.number,
            "strategy": iteration.strategy,
            "status": iteration.status,
            "evaluation": iteration.evaluation,
            "verdict": iteration.verdict.get("reasons", []),
        },
        "loop": {
            "id": loop.id,
            "requirement": loop.requirement,
            "status": loop.status,
            "image_set": loop.image_set,
            "reference": loop.reference,
        },
        "parents": chain,
        "run": None if iteration.run_id is None else run_trace(catalog, iteration.run_id),
    }


def trace(catalog: Catalog, ref: str) -> dict[str, Any]:
    """The lineage of a run, a model version or an iteration, as a tree of dicts.

    Args:
        catalog: The catalog.
        ref: A run id, ``model@version`` (or ``model@alias``), or ``iteration:<id>``.

    Returns:
        The trace; its ``kind`` is ``run``, ``model_version`` or ``iteration``.

    Raises:
        ConfigError: The reference has none of these forms.
        NotFoundError: It names nothing in the catalog.
    """
    ref = ref.strip()
    if _RUN_ID.match(ref):
        return run_trace(catalog, ref)
    if "@" in ref:
        name, version = parse_model_ref(ref)
        found = catalog.get_model_version(name, int(version) if version.isdigit() else version)
        return {"kind": "model_version", "model": model_trace(catalog, found)}
    match = _ITERATION.match(ref)
    if match:
        return iteration_trace(catalog, int(match.group(1)))
    raise ConfigError(
        "A lineage reference must be a run id (32 hex digits), a model version (name@version) "
        f"or an iteration (iteration:<id>). Got {ref!r} instead."
    )


__all__ = ["iteration_trace", "model_trace", "run_trace", "trace"]
