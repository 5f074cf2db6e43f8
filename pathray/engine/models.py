"""Resolving the models a pipeline's units load, from the model registry to artifact folders.

A node's ``model: "name@version"`` (or ``name@alias``) names a model version; its artifact is
fetched from the content-addressed store (checked against its digest) and unpacked once, and
the unit receives the folder as ``artifacts["model"]``.

Every reference is checked first (:func:`pathray.pipeline.bind.check_models`: registered, and
accepted by the unit's ``check_model``). A model the catalog does not know may be one the node's
unit ships with its code: a unit class that declares it as ``bundled_model`` (its reference) and
has a ``install_bundled_model(catalog, cold_root, name) -> bool`` classmethod registers it
(artifact, model, version, alias) on first use, so a preset that names it runs on a fresh
catalog with nothing downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathray.catalog import Catalog
from pathray.catalog.records import ModelVersion
from pathray.pipeline.bind import check_models, parse_model_ref, version_key
from pathray.pipeline.spec import PipelineSpec
from pathray.results.artifacts import ArtifactStore
from pathray.results.location import Location
from pathray.units.registry import get_unit

__all__ = ["ResolvedModel", "card_resources", "parse_model_ref", "resolve_models"]


@dataclass(frozen=True)
class ResolvedModel:
    """A node's model: the registry's version id and the artifact folder the unit loads.

    Attributes:
        model_version_id: The version's id in the registry.
        path: The unpacked artifact folder.
        resources: The ``resources`` of the version's model card (empty without a card).
    """

    model_version_id: int
    path: str
    resources: dict[str, Any] = field(default_factory=dict)


def card_resources(version: ModelVersion) -> dict[str, Any]:
    """The ``resources`` of a version's model card (empty for versions without a card)."""
    card = getattr(version, "card", None) or {}
    return dict(card.get("resources") or {})


def resolve_models(
    catalog: Catalog, spec: PipelineSpec, cold_root: str | Path | Location
) -> dict[str, ResolvedModel]:
    """Check every node's model, then resolve it to a registered version and unpacked folder.

    Args:
        catalog: The catalog holding the model registry.
        spec: The pipeline.
        cold_root: Root of the cold store holding the artifacts (a path, an ``s3://`` URI or
            its location).

    Returns:
        Node id -> its resolved model (nodes without a model are absent).

    Raises:
        ConfigError: If the spec is invalid, a model unknown or refused by its unit (see
            :func:`pathray.pipeline.bind.check_models`); nothing is installed then.
    """
    store = ArtifactStore(cold_root)
    resolved = {}
    for node_id, record in check_models(catalog, spec).items():
        node = spec.node(node_id)
        assert node.model is not None  # check_models returns the nodes with a model
        if record is None:  # a model the unit ships, not registered yet
            record = _install_bundled(catalog, node.unit, node.model, cold_root)
        path = store.unpack(record.artifact_digest)
        resolved[node_id] = ResolvedModel(record.id, str(path), card_resources(record))
    return resolved


def _install_bundled(
    catalog: Catalog, unit: str, ref: str, cold_root: str | Path | Location
) -> ModelVersion:
    """Register the model a unit ships (see the module docstring) and return its version."""
    cls = get_unit(unit)
    name, version = parse_model_ref(ref)
    cls.install_bundled_model(catalog, cold_root, name)  # type: ignore[attr-defined]
    # the unit's version check runs on the installed version too
    record = catalog.get_model_version(name, version_key(version))
    cls.check_model(record)
    return record
