"""Recording what a run is made of: unit versions and the pipeline version, before it starts.

Each node's unit is recorded as a unit version (unit, version, validated config and its hash,
code version), and the pipeline as a version with its nodes and edges, so any result traces back
through ``runs.pipeline_name/version`` -> pipeline graph -> unit versions -> configs.
A spec that changed under an unchanged version string is recorded as ``<version>+<spec hash>``
rather than refused: the run still starts, and the two specs stay distinguishable.
"""

from __future__ import annotations

from collections.abc import Mapping

from pathray.catalog import Catalog
from pathray.engine.models import ResolvedModel
from pathray.errors import ConflictError
from pathray.pipeline.spec import PipelineSpec


def register_lineage(
    catalog: Catalog,
    spec: PipelineSpec,
    code_version: str,
    actor: str,
    models: Mapping[str, ResolvedModel] | None = None,
) -> str:
    """Record the unit versions and the pipeline version of a spec.

    Args:
        catalog: The catalog.
        spec: A validated pipeline spec.
        code_version: Version of the code that will run it.
        actor: Who asks (audit log).
        models: Node id -> the model version its unit loads.

    Returns:
        The pipeline version under which the spec is recorded.
    """
    nodes: dict[str, int] = {}
    models = models or {}
    for node in spec.ordered():
        cls = spec.unit_class(node)
        model = models.get(node.id)
        # the same config with another model is another unit version
        config_hash = cls.config_hash(node.config)
        if model is not None:
            config_hash = f"{config_hash[:8]}m{model.model_version_id}"
        record = catalog.register_unit_version(
            node.unit,
            cls.version,
            cls.validate_config(node.config).model_dump(mode="json"),
            config_hash,
            model_version_id=model.model_version_id if model else None,
            role=cls.role,
            code_version=code_version,
            actor=actor,
        )
        nodes[node.id] = record.id
    payload, digest = spec.model_dump(mode="json"), spec.spec_hash()
    try:
        catalog.register_pipeline(
            spec.name, spec.version, payload, digest, nodes, spec.edges(), actor=actor
        )
        return spec.version
    except ConflictError:
        version = f"{spec.version}+{digest[:8]}"
        catalog.register_pipeline(
            spec.name, version, payload, digest, nodes, spec.edges(), actor=actor
        )
        return version
