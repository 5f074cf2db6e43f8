"""Resolving the models a pipeline's units load, from the model registry to artifact folders.

A node's ``model: "name@version"`` (or ``name@alias``) names a model version; its artifact is
fetched from the content-addressed store (checked against its digest) and unpacked once, and
the unit receives the folder as ``artifacts["model"]``.

A model the catalog does not know may be one the node's unit ships with its code: a unit class
with a ``install_bundled_model(catalog, cold_root, name) -> bool`` classmethod registers it
(artifact, model, version, alias) on first use, so a preset that names it runs on a fresh
catalog with nothing downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pathray.catalog import Catalog
from pathray.catalog.records import ModelVersion
from pathray.errors import ConfigError, NotFoundError
from pathray.pipeline.spec import PipelineSpec
from pathray.results.artifacts import ArtifactStore
from pathray.results.location import Location
from pathray.units.registry import get_unit


@dataclass(frozen=True)
class ResolvedModel:
    """A node's model: the registry's version id and the artifact folder the unit loads."""

    model_version_id: int
    path: str


def parse_model_ref(ref: str) -> tuple[str, str]:
    """Split ``"name@version"`` into its parts.

    Raises:
        ConfigError: If the reference has no ``@``.
    """
    name, sep, version = ref.rpartition("@")
    if not sep or not name or not version:
        raise ConfigError(
            f"A model reference must look like 'name@version' or 'name@alias'. Got {ref!r} instead."
        )
    return name, version


def resolve_models(
    catalog: Catalog, spec: PipelineSpec, cold_root: str | Path | Location
) -> dict[str, ResolvedModel]:
    """Resolve every node's model reference to a registered version and an unpacked folder.

    Args:
        catalog: The catalog holding the model registry.
        spec: The pipeline.
        cold_root: Root of the cold store holding the artifacts (a path, an ``s3://`` URI or
            its location).

    Returns:
        Node id -> its resolved model (nodes without a model are absent).
    """
    store = ArtifactStore(cold_root)
    resolved = {}
    for node in spec.units:
        if node.model is None:
            continue
        record = _model_version(catalog, node.unit, node.model, cold_root)
        path = store.unpack(record.artifact_digest)
        resolved[node.id] = ResolvedModel(record.id, str(path))
    return resolved


def _model_version(
    catalog: Catalog, unit: str, ref: str, cold_root: str | Path | Location
) -> ModelVersion:
    """The registered version a reference names, installing a model the unit ships if needed."""
    name, version = parse_model_ref(ref)
    key: int | str = int(version) if version.isdigit() else version
    try:
        return catalog.get_model_version(name, key)
    except NotFoundError:
        install = getattr(get_unit(unit), "install_bundled_model", None)
        if install is None or not install(catalog, cold_root, name):
            raise
    return catalog.get_model_version(name, key)
