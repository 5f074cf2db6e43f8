"""The catalog service API on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import pickle
from datetime import UTC
from typing import Any

import numpy as np
import pytest
import shapely
from sqlalchemy import func, select

from pathray.catalog import Catalog, Replica, Slide
from pathray.catalog.models import AnnotationRow, AuditRow, ReplicaRow, SlideRow
from pathray.errors import ConfigError, ConflictError, NotFoundError, ProtectedError


def _checksum(i: int) -> str:
    return hashlib.sha256(f"slide-{i}".encode()).hexdigest()


def _slide(cat: Catalog, i: int, store: str = "local", path: str | None = None) -> Slide:
    cat.add_store(store, f"/data/{store}")
    return cat.register_slide(
        name=f"s{i}.svs",
        checksum=_checksum(i),
        store=store,
        relative_path=path or f"s{i}.svs",
        width=4000,
        height=3000,
        level_count=2,
        level_dimensions=[(4000, 3000), (1000, 750)],
        level_downsamples=[1.0, 4.0],
        mpp=0.25,
        objective_power=40.0,
        vendor="aperio",
        format="svs",
        properties={"openslide.vendor": "aperio", "array": np.arange(2)},
    )


def _count(cat: Catalog, model: type) -> int:
    with cat.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# -- stores, slides, replicas ---------------------------------------------------------------


def test_store_is_get_or_create(catalog: Catalog) -> None:
    first = catalog.add_store("local", "/data/local")
    assert catalog.add_store("local", "/data/local") == first
    assert catalog.get_store("local").root == "/data/local"
    assert catalog.add_store("s3", "s3://bucket/slides/").root == "s3://bucket/slides"
    with pytest.raises(ConflictError, match="exists with root"):
        catalog.add_store("local", "/elsewhere")
    with pytest.raises(NotFoundError, match="Slide store 'nope' does not exist"):
        catalog.get_store("nope")


def test_register_slide_and_replicas(catalog: Catalog) -> None:
    slide = _slide(catalog, 1, "a")
    assert slide.level_dimensions == ((4000, 3000), (1000, 750))
    assert slide.level_downsamples == (1.0, 4.0)
    assert (slide.mpp, slide.mpp_source) == (0.25, "file")
    assert slide.properties == {"openslide.vendor": "aperio", "array": [0, 1]}
    assert slide.created_at.tzinfo == UTC
    # the same content on a second store: one slide, two replicas
    again = _slide(catalog, 1, "b", path="copies/s1.svs")
    assert again.id == slide.id
    assert _count(catalog, SlideRow) == 1
    assert catalog.replicas_of(slide.id) == [
        Replica("/data/a", "s1.svs"),
        Replica("/data/b", "copies/s1.svs"),
    ]
    assert catalog.replicas_of(slide.id)[1].location == "/data/b/copies/s1.svs"
    # registering the same file again changes nothing
    _slide(catalog, 1, "b", path="copies/s1.svs")
    assert _count(catalog, ReplicaRow) == 2
    with pytest.raises(ConflictError, match="already has a replica on store 'b'"):
        _slide(catalog, 1, "b", path="other.svs")
    with pytest.raises(ConflictError, match="already holds slide"):
        _slide(catalog, 2, "a", path="s1.svs")
    assert catalog.get_slide(slide.id) == slide
    assert catalog.get_slide("s1.svs") == slide
    assert catalog.find_slide(_checksum(1)) == slide
    assert catalog.find_slide(_checksum(9)) is None
    with pytest.raises(NotFoundError, match="Slide 999 does not exist"):
        catalog.get_slide(999)
    actions = [e.action for e in catalog.audit_entries("slide", slide.id)]
    assert actions == ["register_slide", "add_replica"]


def test_register_slide_validates_metadata(catalog: Catalog) -> None:
    catalog.add_store("local", "/data")
    common: dict[str, Any] = {"name": "x", "store": "local", "width": 10, "height": 10}
    with pytest.raises(ConfigError, match="checksum"):
        catalog.register_slide(checksum="abc", relative_path="x.svs", **common)
    with pytest.raises(ConfigError, match="relative"):
        catalog.register_slide(checksum=_checksum(1), relative_path="/abs.svs", **common)
    with pytest.raises(ConfigError, match="must agree"):
        catalog.register_slide(
            checksum=_checksum(1), relative_path="x.svs", level_count=3, **common
        )
    with pytest.raises(ConfigError, match="mpp_source"):
        catalog.register_slide(
            checksum=_checksum(1), relative_path="x.svs", mpp=0.5, mpp_source="guess", **common
        )
    with pytest.raises(NotFoundError, match="Slide store 'nope'"):
        catalog.register_slide(
            checksum=_checksum(1), relative_path="x.svs", **{**common, "store": "nope"}
        )
    assert catalog.list_slides() == []
    slide = catalog.register_slide(checksum=_checksum(1), relative_path="x.svs", **common)
    assert (slide.mpp, slide.mpp_source, slide.level_count) == (None, None, 1)
    assert catalog.set_slide_mpp(slide.id, 0.5).mpp_source == "user"


# -- image sets and membership -------------------------------------------------------------


def test_membership_is_many_to_many(catalog: Catalog) -> None:
    s1, s2, s3 = (_slide(catalog, i).id for i in (1, 2, 3))
    catalog.create_image_set("train", "training slides")
    catalog.create_image_set("test")
    assert catalog.add_to_image_set("train", [s1, s2]) == 2
    assert catalog.add_to_image_set("train", [s2, s3]) == 1  # s2 already there
    assert catalog.add_to_image_set("test", [s2]) == 1
    assert [s.id for s in catalog.slides_in_set("train")] == [s1, s2, s3]
    assert [s.id for s in catalog.list_slides(image_set="test")] == [s2]
    assert catalog.image_sets_of(s2) == ["train", "test"]
    assert [(s.name, s.slide_count) for s in catalog.list_image_sets()] == [
        ("train", 3),
        ("test", 1),
    ]
    assert catalog.remove_from_image_set("train", [s2, 999]) == 1
    assert catalog.get_image_set("train").slide_count == 2
    assert catalog.image_sets_of(s2) == ["test"]
    with pytest.raises(ConflictError, match="Image set 'train' exists already"):
        catalog.create_image_set("train")
    with pytest.raises(NotFoundError, match=r"Slides \[999\] do not exist."):
        catalog.add_to_image_set("train", [s1, 999])
    with pytest.raises(NotFoundError, match="Image set 'x' does not exist"):
        catalog.add_to_image_set("x", [s1])


def test_protected_set_refuses_changes_through_the_api(catalog: Catalog) -> None:
    s1, s2 = _slide(catalog, 1).id, _slide(catalog, 2).id
    catalog.create_image_set("ref")
    catalog.add_to_image_set("ref", [s1])
    catalog.create_annotation_set("gt", image_set="ref", labels=["tumour", "stroma"])
    catalog.add_annotations("gt", s1, [(shapely.box(0, 0, 5, 5), "tumour", {})], author="ann")
    ann = catalog.query_annotations("gt", s1)[0]
    catalog.add_user("carol", "clinician")
    catalog.add_user("root", "admin")
    with pytest.raises(ProtectedError, match="Only an admin"):
        catalog.protect("ref", actor="carol")
    assert catalog.protect("ref", actor="root").protected

    with pytest.raises(ProtectedError, match="Image set 'ref' is protected"):
        catalog.add_to_image_set("ref", [s2])
    with pytest.raises(ProtectedError, match="Image set 'ref' is protected"):
        catalog.remove_from_image_set("ref", [s1])
    frozen = "Annotation set 'gt' belongs to protected image set 'ref'"
    with pytest.raises(ProtectedError, match=frozen):
        catalog.add_annotations("gt", s1, [(shapely.box(1, 1, 2, 2), None, None)], author="x")
    with pytest.raises(ProtectedError, match=frozen):
        catalog.update_annotation(ann.id, label="stroma")
    with pytest.raises(ProtectedError, match=frozen):
        catalog.delete_annotation(ann.id)
    assert catalog.get_annotation(ann.id) == ann
    assert [s.id for s in catalog.slides_in_set("ref")] == [s1]

    with pytest.raises(ProtectedError, match="'nobody' is not a registered user"):
        catalog.unprotect("ref", actor="nobody")
    catalog.unprotect("ref", actor="root")
    assert catalog.update_annotation(ann.id, label="stroma").label == "stroma"
    assert catalog.add_to_image_set("ref", [s2]) == 1
    actions = [(e.actor, e.action) for e in catalog.audit_entries("image_set")]
    assert ("root", "protect") in actions and ("root", "unprotect") in actions


# -- audit ----------------------------------------------------------------------------------


def test_every_mutation_is_audited(catalog: Catalog) -> None:
    s1 = _slide(catalog, 1).id
    catalog.create_image_set("set", actor="eve")
    catalog.add_to_image_set("set", [s1], actor="eve")
    catalog.create_annotation_set("anns", image_set="set", actor="eve")
    catalog.add_annotations("anns", s1, [(shapely.Point(1, 1), None, None)], author="eve")
    run_id = catalog.create_run(
        pipeline_name="p", pipeline_version="1", image_set="set", actor="eve"
    )
    catalog.update_run(run_id, status="running", actor="engine")
    catalog.record_result_location(run_id, s1, "nuclei", "2", "objects", "cold/x", 5)
    entries = catalog.audit_entries()
    assert [(e.actor, e.action, e.entity) for e in entries] == [
        ("system", "add_store", "slide_store"),
        ("system", "register_slide", "slide"),
        ("eve", "create", "image_set"),
        ("eve", "add_slides", "image_set"),
        ("eve", "create", "annotation_set"),
        ("eve", "add_annotations", "annotation_set"),
        ("eve", "create", "run"),
        ("engine", "update", "run"),
        ("system", "record_result_location", "run"),
    ]
    assert entries[3].details == {"name": "set", "slide_ids": [s1]}
    assert all(e.at.tzinfo == UTC for e in entries)
    assert catalog.audit_entries("run", run_id, actor="engine")[0].details["status"] == [
        "pending",
        "running",
    ]
    assert len(catalog.audit_entries(limit=2)) == 2


# -- atomicity ------------------------------------------------------------------------------


def test_failed_bulk_insert_leaves_nothing(catalog: Catalog) -> None:
    s1 = _slide(catalog, 1).id
    catalog.create_annotation_set("anns", labels=["a"])
    audit_before = _count(catalog, AuditRow)
    items = [
        (shapely.box(0, 0, 1, 1), "a", None),
        (shapely.box(2, 2, 3, 3), "a", None),
        (shapely.Polygon(), "a", None),  # empty: refused
    ]
    with pytest.raises(ConfigError, match="must not be empty"):
        catalog.add_annotations("anns", s1, items, author="x")
    with pytest.raises(ConfigError, match="Label 'b' must be one of"):
        catalog.add_annotations("anns", s1, [(shapely.box(0, 0, 1, 1), "b", None)], author="x")
    assert _count(catalog, AnnotationRow) == 0
    assert _count(catalog, AuditRow) == audit_before


def test_transaction_rolls_back_on_error(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError, match="boom"), catalog.transaction() as session:
        session.add(
            SlideRow(
                name="x",
                checksum=_checksum(1),
                width=1,
                height=1,
                level_count=1,
                level_dimensions=[[1, 1]],
                level_downsamples=[1.0],
                properties={},
            )
        )
        session.flush()
        raise RuntimeError("boom")
    assert catalog.list_slides() == []
    # a database error half way (duplicate key) rolls back the earlier statements too
    slide_id = _slide(catalog, 1).id
    store_id = catalog.get_store("local").id
    with pytest.raises(ConflictError), catalog.transaction() as session:
        session.add(ReplicaRow(slide_id=slide_id, store_id=store_id, relative_path="new.svs"))
        session.flush()
        session.add(ReplicaRow(slide_id=slide_id, store_id=store_id, relative_path="again.svs"))
    assert [r.relative_path for r in catalog.replicas_of(slide_id)] == ["s1.svs"]


# -- annotations ----------------------------------------------------------------------------


def test_bbox_query_returns_exactly_the_intersecting_annotations(catalog: Catalog) -> None:
    s1, s2 = _slide(catalog, 1).id, _slide(catalog, 2).id
    catalog.create_annotation_set("nuclei", kind="model", labels=["n"])
    rng = np.random.default_rng(0)
    shapes = [
        shapely.Point(x, y).buffer(r)
        for x, y, r in zip(
            rng.uniform(0, 1000, 300),
            rng.uniform(0, 1000, 300),
            rng.uniform(2, 20, 300),
            strict=True,
        )
    ]
    # a diagonal line whose bounding box covers the query box but which misses it
    shapes.append(shapely.LineString([(0, 600), (600, 0)]))
    items = [(g, "n", {"i": i}) for i, g in enumerate(shapes)]
    assert catalog.add_annotations("nuclei", s1, items, author="model:v1", source="model") == 301
    catalog.add_annotations("nuclei", s2, items[:10], author="model:v1", source="model")
    assert catalog.count_annotations("nuclei") == 311
    assert catalog.count_annotations("nuclei", s1) == 301
    box = (400.0, 400.0, 650.0, 700.0)
    found = catalog.query_annotations("nuclei", s1, box)
    expected = {i for i, g in enumerate(shapes) if g.intersects(shapely.box(*box))}
    assert {a.properties["i"] for a in found} == expected
    assert 300 not in expected and 0 < len(expected) < 300
    assert all(a.slide_id == s1 and a.source == "model" for a in found)
    first = found[0]
    assert first.geometry.equals(shapes[first.properties["i"]])
    assert first.bbox == shapes[first.properties["i"]].bounds
    assert len(catalog.query_annotations("nuclei", s1)) == 301
    assert catalog.query_annotations("nuclei", s1, (5000, 5000, 6000, 6000)) == []
    assert len(catalog.query_annotations("nuclei", s1, label="other")) == 0
    with pytest.raises(ConfigError, match="bbox"):
        catalog.query_annotations("nuclei", s1, (10, 10, 0, 0))


def test_annotation_update_and_delete(catalog: Catalog) -> None:
    s1, s2 = _slide(catalog, 1).id, _slide(catalog, 2).id
    catalog.create_image_set("set")
    catalog.add_to_image_set("set", [s1])
    catalog.create_annotation_set("ref", image_set="set")
    with pytest.raises(ConflictError, match=r"Slide \d+ is not in image set 'set'"):
        catalog.add_annotations("ref", s2, [(shapely.Point(0, 0), None, None)], author="a")
    catalog.add_annotations("ref", s1, [(shapely.box(0, 0, 10, 10), "t", None)], author="a")
    ann = catalog.query_annotations("ref", s1)[0]
    moved = catalog.update_annotation(
        ann.id, geometry=shapely.box(100, 100, 110, 120), properties={"note": "moved"}
    )
    assert moved.bbox == (100, 100, 110, 120)
    assert moved.properties == {"note": "moved"} and moved.label == "t"
    assert moved.modified_at >= ann.modified_at
    assert catalog.query_annotations("ref", s1, (0, 0, 50, 50)) == []
    assert catalog.query_annotations("ref", s1, (105, 105, 106, 106)) == [moved]
    catalog.delete_annotation(ann.id, actor="bob")
    assert catalog.count_annotations("ref") == 0
    with pytest.raises(NotFoundError, match=f"Annotation {ann.id} does not exist."):
        catalog.delete_annotation(ann.id)
    assert catalog.audit_entries("annotation", ann.id)[-1].actor == "bob"


def test_annotation_sets(catalog: Catalog) -> None:
    _slide(catalog, 1)
    catalog.create_image_set("set")
    run_id = catalog.create_run(pipeline_name="p", pipeline_version="1", image_set="set")
    ref = catalog.create_annotation_set("ref", image_set="set", labels=["a", "b"])
    corr = catalog.create_annotation_set(
        "fix", image_set="set", kind="correction", parent_run_id=run_id, parent_unit="nuclei@2"
    )
    catalog.create_annotation_set("free", kind="import")
    assert ref.labels == ("a", "b") and ref.image_set == "set"
    assert catalog.get_annotation_set("fix") == corr
    assert [s.name for s in catalog.list_annotation_sets(image_set="set")] == ["ref", "fix"]
    assert [s.name for s in catalog.list_annotation_sets(kind="import")] == ["free"]
    with pytest.raises(ConfigError, match="kind must be one of"):
        catalog.create_annotation_set("bad", kind="guess")
    with pytest.raises(ConflictError, match="Annotation set 'ref' exists already"):
        catalog.create_annotation_set("ref")
    with pytest.raises(NotFoundError, match=r"Run 'f+' does not exist"):
        catalog.create_annotation_set("orphan", parent_run_id="f" * 32)


# -- runs, result locations, evaluations ----------------------------------------------------


def test_run_lifecycle(catalog: Catalog) -> None:
    catalog.create_image_set("set")
    run_id = catalog.create_run(
        pipeline_name="nuclei",
        pipeline_version="3",
        image_set="set",
        spec={"units": ["a@1", "b@2"]},
        config_hash="abc",
        code_version="0.1.0",
        requester="dana",
    )
    run = catalog.get_run(run_id)
    assert (run.status, run.requester, run.image_set, run.started_at) == (
        "pending",
        "dana",
        "set",
        None,
    )
    running = catalog.update_run(run_id, status="running", progress={"done": 1, "total": 4})
    assert running.started_at is not None and running.finished_at is None
    failed = catalog.update_run(run_id, status="failed", error="worker died")
    assert failed.finished and failed.error == "worker died"
    resumed = catalog.update_run(run_id, status="running")
    assert resumed.finished_at is None and resumed.started_at == running.started_at
    done = catalog.update_run(run_id, status="succeeded", progress={"done": 4, "total": 4})
    assert done.finished_at is not None and done.finished_at.tzinfo == UTC
    with pytest.raises(ConflictError, match="succeeded"):
        catalog.update_run(run_id, status="running")
    other = catalog.create_run(pipeline_name="x", pipeline_version="1", image_set="set")
    assert [r.id for r in catalog.list_runs()] == [run_id, other]
    assert [r.id for r in catalog.list_runs(status="pending")] == [other]
    with pytest.raises(ConfigError, match="status must be one of"):
        catalog.update_run(other, status="done")
    with pytest.raises(NotFoundError, match="Run 'nope' does not exist"):
        catalog.get_run("nope")


def test_result_location_upsert_is_idempotent(catalog: Catalog) -> None:
    s1, s2 = _slide(catalog, 1).id, _slide(catalog, 2).id
    catalog.create_image_set("set")
    run_id = catalog.create_run(pipeline_name="p", pipeline_version="1", image_set="set")
    first = catalog.record_result_location(run_id, s1, "nuclei", "2", "objects", "cold/a", 10)
    again = catalog.record_result_location(run_id, s1, "nuclei", "2", "objects", "cold/b", 12)
    assert again.id == first.id and (again.uri, again.row_count) == ("cold/b", 12)
    catalog.record_result_location(run_id, s1, "nuclei", "2", "tiles", "cold/t", 100)
    catalog.record_result_location(run_id, s1, "nuclei", "3", "objects", "cold/c", 11)
    catalog.record_result_location(run_id, s2, "nuclei", "2", "objects", "cold/d", 7)
    assert len(catalog.result_locations(run_id=run_id)) == 4
    assert [r.uri for r in catalog.result_locations(slide_id=s1, kind="objects")] == [
        "cold/b",
        "cold/c",
    ]
    assert catalog.result_locations(run_id=run_id, slide_id=s2)[0].row_count == 7
    with pytest.raises(NotFoundError, match="Slide 999 does not exist"):
        catalog.record_result_location(run_id, 999, "nuclei", "2", "objects", "x", 1)
    with pytest.raises(ConfigError, match="kind must be one of"):
        catalog.record_result_location(run_id, s1, "nuclei", "2", "pixels", "x", 1)


def test_evaluation_recording(catalog: Catalog) -> None:
    s1 = _slide(catalog, 1).id
    catalog.create_image_set("set")
    catalog.create_annotation_set("ref", image_set="set")
    run_id = catalog.create_run(pipeline_name="p", pipeline_version="1", image_set="set")
    per_slide = catalog.record_evaluation(
        run_id, "ref", s1, {"dice": np.float32(0.875), "f1": 0.8, "ap": float("nan")}, "nuclei"
    )
    overall = catalog.record_evaluation(run_id, "ref", None, {"dice": 0.9, "n": np.int64(3)})
    assert per_slide.metrics == {"dice": 0.875, "f1": 0.8, "ap": None}
    assert (per_slide.unit_name, per_slide.slide_id, per_slide.annotation_set) == (
        "nuclei",
        s1,
        "ref",
    )
    assert overall.slide_id is None and overall.metrics == {"dice": 0.9, "n": 3}
    assert catalog.list_evaluations(run_id) == [per_slide, overall]
    assert catalog.list_evaluations(annotation_set="ref") == [per_slide, overall]
    with pytest.raises(NotFoundError, match="Annotation set 'nope' does not exist"):
        catalog.record_evaluation(run_id, "nope", None, {})


# -- records and the catalog object ---------------------------------------------------------


def test_records_outlive_the_session_and_the_catalog_pickles(catalog_url: str) -> None:
    cat = Catalog.open(catalog_url)
    slide = _slide(cat, 1)
    cat.create_image_set("set")
    image_set = cat.get_image_set("set")
    clone = pickle.loads(pickle.dumps(cat))
    try:
        assert clone.get_slide(slide.id) == slide
    finally:
        clone.close()
    cat.close()
    assert slide.name == "s1.svs" and image_set.slide_count == 0
    assert pickle.loads(pickle.dumps(slide)) == slide
    assert "Catalog(" in repr(clone)


def test_annotation_view_timestamps_read_as_the_orm_reads_them(catalog: Catalog) -> None:
    """The view reads raw timestamps (SQLite text, PostgreSQL datetimes) for speed."""
    s1 = _slide(catalog, 1).id
    catalog.create_image_set("set")
    catalog.add_to_image_set("set", [s1])
    catalog.create_annotation_set("anns", image_set="set")
    boxes = [(shapely.box(i, i, i + 2, i + 2), "a", None) for i in range(3)]
    catalog.add_annotations("anns", s1, boxes, author="eve")
    first = catalog.query_annotations("anns", s1)[0]
    catalog.update_annotation(first.id, label="b")
    view = catalog.annotation_view("anns", s1)
    expected = [catalog.get_annotation(i).modified_at.isoformat() for i in view.ids]
    assert view.modified == expected
    assert all(m.endswith("+00:00") and "T" in m for m in view.modified)
