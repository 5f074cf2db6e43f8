"""Resolving the models a pipeline's units load, from the model registry to artifact folders.

A node's ``model: "name@version"`` (or ``name@alias``) names a model version; its artifact is
fetched from the content-addressed store (checked against its digest) and unpacked once, and
the unit receives the folder as ``artifacts["model"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pathray.catalog import Catalog
from pathray.errors import ConfigError
from pathray.pipeline.spec import PipelineSpec
from pathray.results.artifacts import ArtifactStore


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
    catalog: Catalog, spec: PipelineSpec, cold_root: str | Path
) -> dict[str, ResolvedModel]:
    """Resolve every node's model reference to a registered version and an unpacked folder.

    Args:
        catalog: The catalog holding the model registry.
        spec: The pipeline.
        cold_root: Root of the cold store holding the artifacts.

    Returns:
        Node id -> its resolved model (nodes without a model are absent).
    """
    store = ArtifactStore(cold_root)
    resolved = {}
    for node in spec.units:
        if node.model is None:
            continue
        name, version = parse_model_ref(node.model)
        record = catalog.get_model_version(name, int(version) if version.isdigit() else version)
        path = store.unpack(record.artifact_digest)
        resolved[node.id] = ResolvedModel(record.id, str(path))
    return resolved
