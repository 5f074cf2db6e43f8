"""The model registry, unit versions and pipeline versions in the catalog, on both backends."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from pathray.catalog import Catalog
from pathray.catalog.engine import current_revision, downgrade, head_revision, upgrade
from pathray.catalog.models import (
    AuditRow,
    ModelVersionRow,
    PipelineEdgeRow,
    PipelineNodeRow,
    PipelineRow,
)
from pathray.errors import ConfigError, ConflictError, NotFoundError
from pathray.results.artifacts import Artifact, ArtifactStore

REGISTRY_TABLES = {
    "models",
    "model_versions",
    "model_aliases",
    "units",
    "unit_versions",
    "pipelines",
    "pipeline_nodes",
    "pipeline_edges",
}


def _digest(i: int) -> str:
    return hashlib.sha256(f"artifact-{i}".encode()).hexdigest()


def _count(cat: Catalog, model: type) -> int:
    with cat.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _audit_count(cat: Catalog) -> int:
    return _count(cat, AuditRow)


def _model_with_versions(cat: Catalog, n: int = 3, name: str = "nuclei-rf") -> None:
    cat.register_model(name, "sklearn", task="nucleus segmentation")
    for i in range(1, n + 1):
        cat.add_model_version(
            name,
            artifact_digest=_digest(i),
            artifact_uri=f"/cold/{i}",
            metrics={"dice": 0.7 + i / 100},
            parent_version=None if i == 1 else i - 1,
            created_by="alice",
        )


# -- migration ------------------------------------------------------------------------------


def test_migration_0002_up_and_down(catalog: Catalog) -> None:
    catalog.create_image_set("kept")
    _model_with_versions(catalog, 1)
    head = head_revision()  # every later migration goes down through its downgrade too
    assert current_revision(catalog.engine) == head
    assert set(inspect(catalog.engine).get_table_names()) >= REGISTRY_TABLES
    downgrade(catalog.engine, "0001")
    assert current_revision(catalog.engine) == "0001"
    assert not REGISTRY_TABLES & set(inspect(catalog.engine).get_table_names())
    assert [s.name for s in catalog.list_image_sets()] == ["kept"]  # 0001's data untouched
    upgrade(catalog.engine)
    assert current_revision(catalog.engine) == head
    assert catalog.list_models() == []
    _model_with_versions(catalog, 1)


# -- models and versions --------------------------------------------------------------------


def test_register_model_is_get_or_create(catalog: Catalog) -> None:
    before = _audit_count(catalog)
    first = catalog.register_model("nuclei-rf", "sklearn", task="seg", actor="alice")
    again = catalog.register_model("nuclei-rf", "sklearn", task="other")
    assert again == first
    assert (first.task, first.latest_version, first.aliases) == ("seg", None, {})
    assert _audit_count(catalog) == before + 1
    entry = catalog.audit_entries("model", first.id)[0]
    assert (entry.actor, entry.action, entry.details["framework"]) == ("alice", "create", "sklearn")
    with pytest.raises(ConflictError, match=r"exists with framework 'sklearn'\. Got 'torch'"):
        catalog.register_model("nuclei-rf", "torch")
    with pytest.raises(ConfigError, match="framework must be one of"):
        catalog.register_model("x", "keras")
    with pytest.raises(ConfigError, match="name"):
        catalog.register_model("a@b", "torch")
    catalog.register_model("cnn", "torch")
    assert [m.name for m in catalog.list_models()] == ["cnn", "nuclei-rf"]
    with pytest.raises(NotFoundError, match="Model 'nope' does not exist"):
        catalog.get_model("nope")


def test_versions_are_numbered_and_keep_their_provenance(catalog: Catalog, tmp_path: Path) -> None:
    catalog.register_model("unet", "torch")
    art = ArtifactStore(tmp_path / "cold").put(b"weights v1")
    run = {
        "image_set": "train",
        "annotation_set": "gt",
        "config": {"epochs": 3},
        "code_version": "abc123",
        "seed": 7,
    }
    v1 = catalog.add_model_version(
        "unet",
        artifact=art,
        training_run=run,
        metrics={"dice": 0.81, "nan": float("nan")},
        container_image="pathray:0.1",
        resources={"gpus": 1, "memory_mb": 2048},
        created_by="bob",
    )
    assert (v1.version, v1.ref, v1.parent_version) == (1, "unet@1", None)
    assert (v1.artifact_digest, v1.artifact_uri, v1.artifact_size) == (art.digest, art.uri, 10)
    assert v1.training_run == run
    assert v1.metrics == {"dice": 0.81, "nan": None}
    assert v1.resources == {"cpus": 1.0, "gpus": 1.0, "memory_mb": 2048}
    assert (v1.container_image, v1.created_by) == ("pathray:0.1", "bob")
    v2 = catalog.add_model_version(
        "unet", artifact_digest="sha256:" + _digest(2).upper(), artifact_uri="s3://b/2"
    )
    v3 = catalog.add_model_version("unet", artifact=art, parent_version=2)
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    assert v2.artifact_digest == _digest(2) and v2.artifact_size is None
    assert catalog.get_model_version("unet", 1) == v1
    assert catalog.get_model_version("unet", "2") == v2
    assert catalog.get_model_version("unet") == catalog.get_model_version("unet", "latest") == v3
    assert catalog.list_model_versions("unet") == [v1, v2, v3]
    assert catalog.get_model("unet").latest_version == 3
    entry = catalog.audit_entries("model_version", v3.id)[0]
    assert (entry.action, entry.details["version"], entry.details["parent_version"]) == (
        "create",
        3,
        2,
    )


def test_bad_versions_are_refused_and_leave_nothing(catalog: Catalog) -> None:
    catalog.register_model("m", "xgboost")
    before = (_audit_count(catalog), _count(catalog, ModelVersionRow))
    with pytest.raises(NotFoundError, match="Model 'nope' does not exist"):
        catalog.add_model_version("nope", artifact_digest=_digest(1), artifact_uri="/x")
    with pytest.raises(ConfigError, match="needs its artifact"):
        catalog.add_model_version("m")
    with pytest.raises(ConfigError, match="either artifact or"):
        catalog.add_model_version(
            "m", artifact=Artifact(_digest(1), 1, "/x"), artifact_digest=_digest(1)
        )
    with pytest.raises(ConfigError, match="64 hex digits"):
        catalog.add_model_version("m", artifact_digest="abc", artifact_uri="/x")
    with pytest.raises(ConfigError, match="only cpus, gpus and memory_mb"):
        catalog.add_model_version(
            "m", artifact_digest=_digest(1), artifact_uri="/x", resources={"tpus": 1}
        )
    with pytest.raises(ConfigError, match="Resource gpus must be a number >= 0"):
        catalog.add_model_version(
            "m", artifact_digest=_digest(1), artifact_uri="/x", resources={"gpus": -1}
        )
    with pytest.raises(NotFoundError, match="Model 'm' has no version 4"):
        catalog.add_model_version(
            "m", artifact_digest=_digest(1), artifact_uri="/x", parent_version=4
        )
    with pytest.raises(NotFoundError, match="has no versions"):
        catalog.get_model_version("m")
    assert (_audit_count(catalog), _count(catalog, ModelVersionRow)) == before


def test_concurrent_versions_get_distinct_numbers(catalog_url: str) -> None:
    with Catalog.open(catalog_url) as cat:
        cat.register_model("m", "torch")

        def add(i: int) -> int:
            return cat.add_model_version("m", artifact_digest=_digest(i), artifact_uri="/x").version

        def register(_: int) -> int:
            return cat.register_unit_version("u", "1", {}, "h").id

        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(add, range(16))) == list(range(1, 17))
            assert len(set(pool.map(register, range(8)))) == 1
        assert [e.action for e in cat.audit_entries("unit_version")] == ["create"]


def test_lineage_follows_parents_to_the_root(catalog: Catalog) -> None:
    _model_with_versions(catalog, 3)
    catalog.add_model_version(
        "nuclei-rf", artifact_digest=_digest(9), artifact_uri="/9", parent_version=1
    )
    assert [v.version for v in catalog.model_lineage("nuclei-rf", 3)] == [3, 2, 1]
    assert [v.version for v in catalog.model_lineage("nuclei-rf")] == [4, 1]
    assert [v.parent_version for v in catalog.list_model_versions("nuclei-rf")] == [None, 1, 2, 1]
    catalog.set_alias("nuclei-rf", "champion", 2)
    branch = catalog.add_model_version(
        "nuclei-rf", artifact_digest=_digest(5), artifact_uri="/5", parent_version="champion"
    )
    assert [v.ref for v in catalog.model_lineage("nuclei-rf", branch.version)] == [
        "nuclei-rf@5",
        "nuclei-rf@2",
        "nuclei-rf@1",
    ]


def test_aliases_move_on_promote(catalog: Catalog) -> None:
    _model_with_versions(catalog, 3)
    model_id = catalog.get_model("nuclei-rf").id
    first = catalog.set_alias("nuclei-rf", "champion", 1, actor="carol")
    assert (first.version, first.aliases) == (1, ("champion",))
    catalog.set_alias("nuclei-rf", "staging", "latest")
    moved = catalog.set_alias("nuclei-rf", "champion", 2, actor="carol")
    assert (moved.version, moved.aliases) == (2, ("champion",))
    assert catalog.get_model_version("nuclei-rf", 1).aliases == ()
    assert catalog.get_model_version("nuclei-rf", "champion").version == 2
    assert catalog.get_model("nuclei-rf").aliases == {"champion": 2, "staging": 3}
    assert [v.aliases for v in catalog.list_model_versions("nuclei-rf")] == [
        (),
        ("champion",),
        ("staging",),
    ]
    entries = [e for e in catalog.audit_entries("model", model_id) if e.action == "set_alias"]
    assert [(e.details["alias"], e.details["version"], e.details["previous"]) for e in entries] == [
        ("champion", 1, None),
        ("staging", 3, None),
        ("champion", 2, 1),
    ]
    before = _audit_count(catalog)
    catalog.set_alias("nuclei-rf", "champion", 2)  # no change: nothing to audit
    assert _audit_count(catalog) == before
    for bad in ("3", "latest", "", "has space"):
        with pytest.raises(ConfigError, match="An alias must"):
            catalog.set_alias("nuclei-rf", bad, 1)
    with pytest.raises(NotFoundError, match="has no version 'gold'"):
        catalog.get_model_version("nuclei-rf", "gold")
    catalog.remove_alias("nuclei-rf", "staging", actor="carol")
    assert catalog.get_model("nuclei-rf").aliases == {"champion": 2}
    assert catalog.audit_entries("model", model_id)[-1].action == "remove_alias"
    with pytest.raises(NotFoundError, match="has no alias 'staging'"):
        catalog.remove_alias("nuclei-rf", "staging")


# -- unit versions ----------------------------------------------------------------------------


def test_unit_versions_are_get_or_create_with_lineage(catalog: Catalog) -> None:
    _model_with_versions(catalog, 2)
    mv1 = catalog.get_model_version("nuclei-rf", 1).id
    mv2 = catalog.get_model_version("nuclei-rf", 2).id
    config: dict[str, Any] = {"threshold": 0.5, "sizes": [3, 5]}
    first = catalog.register_unit_version(
        "pixel_classifier",
        "1",
        config,
        "h1",
        model_version_id=mv1,
        role="nuclei",
        code_version="c1",
    )
    before = _audit_count(catalog)
    again = catalog.register_unit_version(
        "pixel_classifier", "1", config, "h1", model_version_id=mv1
    )
    assert again == first
    assert _audit_count(catalog) == before
    assert (first.unit, first.role, first.ref) == (
        "pixel_classifier",
        "nuclei",
        "pixel_classifier@1#h1",
    )
    # iterating: a retrained model gives a new unit version whose parent is the old one
    second = catalog.register_unit_version(
        "pixel_classifier", "1", config, "h2", model_version_id=mv2, parent_id=first.id
    )
    third = catalog.register_unit_version(
        "pixel_classifier", "1", {"threshold": 0.6, "sizes": [3, 5]}, "h3", parent_id=second.id
    )
    assert second.id != first.id and second.role == "nuclei"
    assert [u.id for u in catalog.unit_lineage(third.id)] == [third.id, second.id, first.id]
    assert catalog.get_unit_version(second.id) == second
    assert [u.config_hash for u in catalog.list_unit_versions("pixel_classifier")] == [
        "h1",
        "h2",
        "h3",
    ]
    actions = [(e.entity, e.action) for e in catalog.audit_entries(actor="system")]
    assert actions.count(("unit", "create")) == 1
    assert actions.count(("unit_version", "create")) == 3


def test_unit_version_conflicts(catalog: Catalog) -> None:
    _model_with_versions(catalog, 2)
    mv1 = catalog.get_model_version("nuclei-rf", 1).id
    mv2 = catalog.get_model_version("nuclei-rf", 2).id
    base = catalog.register_unit_version(
        "seg", "1", {"a": 1}, "h1", model_version_id=mv1, role="nuclei"
    )
    other = catalog.register_unit_version("other", "1", {}, "h0")
    with pytest.raises(ConflictError, match="exists with another config"):
        catalog.register_unit_version("seg", "1", {"a": 2}, "h1", model_version_id=mv1)
    with pytest.raises(ConflictError, match="exists with model version"):
        catalog.register_unit_version("seg", "1", {"a": 1}, "h1", model_version_id=mv2)
    with pytest.raises(ConflictError, match=r"has role 'nuclei'\. Got 'tissue'"):
        catalog.register_unit_version(
            "seg", "1", {"a": 1}, "h1", model_version_id=mv1, role="tissue"
        )
    with pytest.raises(ConfigError, match="must be a 'seg' version"):
        catalog.register_unit_version("seg", "2", {"a": 1}, "h9", parent_id=other.id)
    with pytest.raises(NotFoundError, match="Model version 999 does not exist"):
        catalog.register_unit_version("seg", "2", {"a": 1}, "h9", model_version_id=999)
    with pytest.raises(NotFoundError, match="Unit version 999 does not exist"):
        catalog.register_unit_version("seg", "2", {"a": 1}, "h9", parent_id=999)
    with pytest.raises(ConfigError, match="needs a version and a config hash"):
        catalog.register_unit_version("seg", "", {}, "h")
    assert catalog.list_unit_versions("seg") == [base]
    with pytest.raises(NotFoundError, match="Unit 'nope' does not exist"):
        catalog.list_unit_versions("nope")


# -- pipelines --------------------------------------------------------------------------------


def _units(cat: Catalog) -> dict[str, int]:
    return {
        node: cat.register_unit_version(node, "1", {}, f"h-{node}").id
        for node in ("tissue", "segment", "features", "stats")
    }


EDGES = [("tissue", "segment"), ("segment", "features"), ("segment", "stats")]


def test_pipeline_registration_is_idempotent(catalog: Catalog) -> None:
    nodes = _units(catalog)
    spec = {"name": "nuclei", "version": "1", "units": list(nodes)}
    first = catalog.register_pipeline("nuclei", "1", spec, "s1", nodes, EDGES, actor="dave")
    before = _audit_count(catalog)
    again = catalog.register_pipeline("nuclei", "1", spec, "s1", nodes, list(reversed(EDGES)))
    assert again == first
    assert _audit_count(catalog) == before
    assert (_count(catalog, PipelineRow), _count(catalog, PipelineNodeRow)) == (1, 4)
    assert first.nodes == dict(sorted(nodes.items()))
    assert first.edges == tuple(sorted(EDGES))
    assert catalog.get_pipeline("nuclei", "1") == first
    graph_nodes, graph_edges = catalog.pipeline_graph("nuclei", "1")
    assert {n: u.unit for n, u in graph_nodes.items()} == {n: n for n in nodes}
    assert graph_edges == sorted(EDGES)
    entry = catalog.audit_entries("pipeline", first.id)[0]
    assert (entry.actor, entry.action, entry.details["spec_hash"]) == ("dave", "create", "s1")
    # a new version of the pipeline is a new record
    catalog.register_pipeline("nuclei", "2", spec, "s2", nodes, EDGES[:1])
    assert [(p.version, len(p.edges)) for p in catalog.list_pipelines("nuclei")] == [
        ("1", 3),
        ("2", 1),
    ]


def test_conflicting_pipelines_are_refused(catalog: Catalog) -> None:
    nodes = _units(catalog)
    catalog.register_pipeline("nuclei", "1", {"v": 1}, "s1", nodes, EDGES)
    with pytest.raises(ConflictError, match=r"another spec \(hash s1\)\. Got hash s2 instead"):
        catalog.register_pipeline("nuclei", "1", {"v": 2}, "s2", nodes, EDGES)
    with pytest.raises(ConflictError, match="same spec hash but another graph"):
        catalog.register_pipeline("nuclei", "1", {"v": 1}, "s1", nodes, EDGES[:2])
    before = (_audit_count(catalog), _count(catalog, PipelineRow))
    with pytest.raises(ConfigError, match="unknown node"):
        catalog.register_pipeline("p", "1", {}, "s", nodes, [("tissue", "nope")])
    with pytest.raises(ConfigError, match="joins a node to itself"):
        catalog.register_pipeline("p", "1", {}, "s", nodes, [("tissue", "tissue")])
    with pytest.raises(ConfigError, match="cycle through features, segment"):
        catalog.register_pipeline("p", "1", {}, "s", nodes, [*EDGES, ("features", "segment")])
    with pytest.raises(ConfigError, match="at least one node"):
        catalog.register_pipeline("p", "1", {}, "s", {}, [])
    with pytest.raises(NotFoundError, match="Unit version"):
        catalog.register_pipeline("p", "1", {}, "s", {**nodes, "ghost": 999}, EDGES)
    assert (_audit_count(catalog), _count(catalog, PipelineRow)) == before
    with pytest.raises(NotFoundError, match="Pipeline 'p' version '1' does not exist"):
        catalog.get_pipeline("p", "1")


def test_edges_must_join_nodes_of_their_pipeline_in_the_database(catalog: Catalog) -> None:
    nodes = _units(catalog)
    record = catalog.register_pipeline("nuclei", "1", {}, "s1", nodes, EDGES)
    with pytest.raises(DBAPIError), catalog.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO pipeline_edges (pipeline_id, src, dst) VALUES (:p, 'tissue', 'x')"),
            {"p": record.id},
        )
    assert _count(catalog, PipelineEdgeRow) == 3


def test_every_mutation_is_audited(catalog: Catalog, tmp_path: Path) -> None:
    art = ArtifactStore(tmp_path / "cold").put(b"w")
    catalog.register_model("m", "classical", actor="eve")
    v1 = catalog.add_model_version("m", artifact=art, created_by="eve")
    catalog.set_alias("m", "champion", 1, actor="eve")
    unit = catalog.register_unit_version("u", "1", {}, "h", model_version_id=v1.id, actor="eve")
    catalog.register_unit_version("u", "1", {}, "h2", role="r", actor="eve")
    catalog.register_pipeline("p", "1", {}, "s", {"n": unit.id}, [], actor="eve")
    catalog.remove_alias("m", "champion", actor="eve")
    assert [(e.entity, e.action) for e in catalog.audit_entries(actor="eve")] == [
        ("model", "create"),
        ("model_version", "create"),
        ("model", "set_alias"),
        ("unit", "create"),
        ("unit_version", "create"),
        ("unit", "set_role"),
        ("unit_version", "create"),
        ("pipeline", "create"),
        ("model", "remove_alias"),
    ]
