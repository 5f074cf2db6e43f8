"""The catalog schema: migrations, and the database backstops (triggers) on both backends."""

from __future__ import annotations

import hashlib

import pytest
import shapely
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from pathray.catalog import Catalog
from pathray.catalog.engine import current_revision, downgrade, head_revision, upgrade
from pathray.catalog.models import Base
from pathray.errors import ProtectedError

TABLES = {
    "users",
    "slide_stores",
    "slides",
    "replicas",
    "image_sets",
    "image_set_members",
    "annotation_sets",
    "annotations",
    "runs",
    "result_locations",
    "evaluations",
    "audit_log",
    # 0002: model registry, units, pipelines
    "models",
    "model_versions",
    "model_aliases",
    "units",
    "unit_versions",
    "pipelines",
    "pipeline_nodes",
    "pipeline_edges",
    # 0003: iterations
    "iteration_loops",
    "iterations",
    # 0004: auth
    "user_credentials",
    "auth_sessions",
    "api_tokens",
    # 0005: run control
    "run_events",
    # 0006: comparisons
    "comparisons",
}


def _slide(cat: Catalog, i: int, store: str = "local") -> int:
    cat.add_store(store, f"/data/{store}")
    checksum = hashlib.sha256(f"slide-{i}".encode()).hexdigest()
    return cat.register_slide(
        name=f"s{i}.svs",
        checksum=checksum,
        store=store,
        relative_path=f"s{i}.svs",
        width=1000,
        height=800,
    ).id


def _protected_fixture(cat: Catalog) -> tuple[int, int, int]:
    """A protected set 'ref' with slide a as member, and an annotation bound to it."""
    a, b = _slide(cat, 1), _slide(cat, 2)
    cat.create_image_set("ref")
    cat.add_to_image_set("ref", [a])
    cat.create_annotation_set("gt", image_set="ref")
    cat.add_annotations("gt", a, [(shapely.box(0, 0, 10, 10), None, None)], author="ann")
    ann_id = cat.query_annotations("gt", a)[0].id
    cat.protect("ref")
    return a, b, ann_id


def _raw_fails(cat: Catalog, sql: str, params: dict[str, object], marker: str) -> None:
    with pytest.raises(DBAPIError) as info, cat.engine.begin() as conn:
        conn.execute(text(sql), params)
    assert marker in str(info.value.orig)


def test_migration_creates_every_table(catalog: Catalog) -> None:
    names = set(inspect(catalog.engine).get_table_names())
    assert names == TABLES | {"alembic_version"}
    assert current_revision(catalog.engine) == head_revision() >= "0002"
    columns = {c["name"] for c in inspect(catalog.engine).get_columns("annotations")}
    assert {"geometry", "geom_type", "min_x", "min_y", "max_x", "max_y"} <= columns
    indexes = {
        i["name"]: i["column_names"] for i in inspect(catalog.engine).get_indexes("annotations")
    }
    assert indexes["ix_annotations_bbox"] == [
        "annotation_set_id",
        "slide_id",
        "min_x",
        "max_x",
        "min_y",
        "max_y",
    ]


def test_models_match_the_migration(catalog: Catalog) -> None:
    with catalog.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_base_and_upgrade_again(catalog: Catalog) -> None:
    _slide(catalog, 1)
    downgrade(catalog.engine, "base")
    assert set(inspect(catalog.engine).get_table_names()) <= {"alembic_version"}
    upgrade(catalog.engine)
    assert set(inspect(catalog.engine).get_table_names()) >= TABLES
    assert catalog.list_slides() == []


def test_reopening_is_idempotent(catalog_url: str) -> None:
    with Catalog.open(catalog_url) as first:
        _slide(first, 1)
    with Catalog.open(catalog_url) as second:
        assert [s.name for s in second.list_slides()] == ["s1.svs"]


def test_raw_sql_cannot_change_protected_membership(catalog: Catalog) -> None:
    a, b, _ = _protected_fixture(catalog)
    set_id = catalog.get_image_set("ref").id
    marker = "PATHRAY_PROTECTED"
    _raw_fails(
        catalog,
        "INSERT INTO image_set_members (image_set_id, slide_id) VALUES (:s, :b)",
        {"s": set_id, "b": b},
        marker,
    )
    _raw_fails(catalog, "DELETE FROM image_set_members WHERE slide_id = :a", {"a": a}, marker)
    _raw_fails(
        catalog,
        "UPDATE image_set_members SET slide_id = :b WHERE slide_id = :a",
        {"a": a, "b": b},
        marker,
    )
    _raw_fails(catalog, "DELETE FROM image_sets WHERE id = :s", {"s": set_id}, marker)
    _raw_fails(catalog, "DELETE FROM slides WHERE id = :a", {"a": a}, marker)  # cascade
    assert [s.id for s in catalog.slides_in_set("ref")] == [a]
    # an unprotected set accepts the same raw SQL
    catalog.unprotect("ref")
    with catalog.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO image_set_members (image_set_id, slide_id) VALUES (:s, :b)"),
            {"s": set_id, "b": b},
        )
    assert [s.id for s in catalog.slides_in_set("ref")] == [a, b]


def test_raw_sql_cannot_change_protected_annotations(catalog: Catalog) -> None:
    a, _, ann_id = _protected_fixture(catalog)
    gt = catalog.get_annotation_set("gt").id
    marker = "PATHRAY_PROTECTED"
    wkb = shapely.to_wkb(shapely.box(5, 5, 6, 6))
    _raw_fails(
        catalog,
        "INSERT INTO annotations (annotation_set_id, slide_id, geometry, geom_type, min_x, min_y,"
        " max_x, max_y, author, source, properties) VALUES (:g, :a, :w, 'Polygon', 5, 5, 6, 6,"
        " 'x', 'human', '{}')",
        {"g": gt, "a": a, "w": wkb},
        marker,
    )
    _raw_fails(catalog, "UPDATE annotations SET label = 'x' WHERE id = :i", {"i": ann_id}, marker)
    _raw_fails(catalog, "DELETE FROM annotations WHERE id = :i", {"i": ann_id}, marker)
    _raw_fails(
        catalog, "UPDATE annotation_sets SET image_set_id = NULL WHERE id = :g", {"g": gt}, marker
    )
    _raw_fails(catalog, "DELETE FROM annotation_sets WHERE id = :g", {"g": gt}, marker)
    assert catalog.count_annotations("gt") == 1


def test_trigger_errors_become_protected_errors(catalog: Catalog) -> None:
    _, b, _ = _protected_fixture(catalog)
    set_id = catalog.get_image_set("ref").id
    with pytest.raises(ProtectedError, match="protected") as info, catalog.transaction() as s:
        s.execute(
            text("INSERT INTO image_set_members (image_set_id, slide_id) VALUES (:s, :b)"),
            {"s": set_id, "b": b},
        )
    assert "PATHRAY" not in str(info.value)
    if catalog.engine.dialect.name == "postgresql":  # PL/pgSQL can name the set
        assert str(info.value) == "Image set 'ref' is protected; its membership cannot change."


def test_audit_log_is_append_only(catalog: Catalog) -> None:
    catalog.create_image_set("x", actor="alice")
    entry = catalog.audit_entries("image_set")[0]
    marker = "PATHRAY_APPEND_ONLY"
    _raw_fails(
        catalog, "UPDATE audit_log SET actor = 'mallory' WHERE id = :i", {"i": entry.id}, marker
    )
    _raw_fails(catalog, "DELETE FROM audit_log WHERE id = :i", {"i": entry.id}, marker)
    _raw_fails(catalog, "DELETE FROM audit_log", {}, marker)
    if catalog.engine.dialect.name == "postgresql":
        _raw_fails(catalog, "TRUNCATE audit_log", {}, marker)
    with pytest.raises(ProtectedError, match="append-only"), catalog.transaction() as session:
        session.execute(text("DELETE FROM audit_log"))
    assert catalog.audit_entries("image_set") == [entry]
    # appending stays possible through raw SQL as well
    with catalog.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (actor, action, entity, entity_id, details) "
                "VALUES ('ops', 'note', 'image_set', :i, '{}')"
            ),
            {"i": entry.entity_id},
        )
    assert [e.action for e in catalog.audit_entries("image_set")] == ["create", "note"]
