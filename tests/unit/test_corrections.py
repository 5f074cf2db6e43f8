"""Corrections: promotion of a run's objects, the corrections, summary, labels, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely

from pathray.errors import ConfigError, ConflictError, ProtectedError
from pathray.formats import read_annotations


def _promoted(env):
    corr = env.catalog.promote_run(env.run.run_id, env.slide_id, env.store, actor="dr-b")
    anns = env.catalog.query_annotations(corr.name, env.slide_id)
    return corr, anns


def test_promotion_copies_the_run_output_with_its_provenance(objects_slide) -> None:
    env = objects_slide
    corr, anns = _promoted(env)
    assert corr.kind == "correction" and corr.parent_run_id == env.run.run_id
    assert corr.parent_unit == "nuclei@1" and corr.image_set == "cases"
    assert len(anns) == 1500
    table = env.store.read(env.run.run_id, "objects").to_pydict()
    first = anns[0]
    tile, obj = first.properties["model"]["object"].split(":")
    i = next(
        k
        for k, (t, o) in enumerate(zip(table["tile_id"], table["object_id"], strict=True))
        if (t, o) == (int(tile), int(obj))
    )
    assert first.geometry.equals(shapely.from_wkb(table["polygon"][i]))
    assert first.label == table["label"][i] == first.properties["model"]["label"]
    assert first.properties["status"] == "pending"
    assert first.properties["score"] == pytest.approx(table["score"][i])
    assert (first.source, first.author) == ("model", "nuclei@1")
    summary = env.catalog.correction_summary(corr.name)
    assert summary.as_dict() == {
        "model_objects": 1500,
        "pending": 1500,
        "accepted": 0,
        "modified": 0,
        "added": 0,
        "rejected": 0,
        "relabelled": 0,
        "redrawn": 0,
        "unchanged": 1500,
    }
    promote = [e for e in env.catalog.audit_entries("annotation_set") if e.action == "promote"]
    assert promote[-1].actor == "dr-b" and promote[-1].details["count"] == 1500


def test_correction_lifecycle_and_summary(objects_slide) -> None:
    env = objects_slide
    cat = env.catalog
    corr, anns = _promoted(env)
    a, b, c, d, e = anns[:5]
    cat.accept_object(a.id, actor="dr-b")
    assert cat.reject_object(b.id, actor="dr-b").properties["status"] == "rejected"
    relabelled = cat.relabel_object(c.id, "necrosis", actor="dr-b")
    assert relabelled.label == "necrosis" and relabelled.properties["status"] == "modified"
    assert relabelled.properties["model"]["label"] == c.label and relabelled.source == "correction"
    new_outline = shapely.box(10, 10, 30, 30)
    redrawn = cat.redraw_object(d.id, new_outline, actor="dr-b")
    assert redrawn.geometry.equals(new_outline)
    assert shapely.from_wkt(redrawn.properties["model"]["geometry"]).equals_exact(d.geometry, 1e-6)
    # Relabelling back to the model's label on an untouched outline counts as unchanged again.
    cat.relabel_object(e.id, "other", actor="dr-b")
    assert cat.relabel_object(e.id, e.label, actor="dr-b").properties["status"] == "accepted"
    added = cat.add_missed_object(
        corr.name, env.slide_id, shapely.box(0, 0, 5, 5), "tumor", actor="dr-b"
    )
    assert added.properties == {"status": "added"} and added.source == "correction"
    assert added.author == "dr-b"
    s = cat.correction_summary(corr.name)
    assert (s.pending, s.accepted, s.modified, s.added, s.rejected) == (1495, 2, 2, 1, 1)
    assert (s.relabelled, s.redrawn, s.unchanged, s.model_objects) == (1, 1, 1497, 1500)
    assert cat.correction_summary(corr.name, slide_id=env.slide_id + 99).model_objects == 0
    # Revert restores the model's outline; rejecting an added object removes it.
    reverted = cat.revert_object(d.id)
    assert reverted.geometry.equals_exact(d.geometry, 1e-6) and reverted.source == "model"
    assert (
        reverted.properties["status"] == "pending"
        and "geometry" not in reverted.properties["model"]
    )
    with pytest.raises(ConfigError, match="added by a reviewer"):
        cat.revert_object(added.id)
    assert cat.reject_object(added.id) is None
    assert cat.accept_pending(corr.name, actor="dr-b") == 1496
    s = cat.correction_summary(corr.name)
    assert (s.pending, s.accepted, s.modified, s.added, s.rejected) == (0, 1498, 1, 0, 1)
    actions = {x.action for x in cat.audit_entries("annotation")}
    assert {"accept", "reject", "relabel", "redraw", "revert", "add_missed"} <= actions


def test_training_labels_are_the_accepted_modified_and_added_objects(objects_slide) -> None:
    env = objects_slide
    cat = env.catalog
    corr, anns = _promoted(env)
    cat.accept_object(anns[0].id)
    cat.reject_object(anns[1].id)
    cat.relabel_object(anns[2].id, "necrosis")
    added = cat.add_missed_object(corr.name, env.slide_id, shapely.box(0, 0, 5, 5), "tumor")
    labels = cat.corrected_annotations([env.slide_id])
    assert [a.id for a in labels] == [anns[0].id, anns[2].id, added.id]
    assert labels[1].label == "necrosis"
    assert cat.corrected_annotations([env.slide_id + 1]) == []
    with_pending = cat.corrected_annotations(annotation_sets=[corr.name], include_pending=True)
    assert len(with_pending) == 1500  # every object but the rejected one, plus the added one
    cat.create_annotation_set("gt", image_set="cases")
    with pytest.raises(ConfigError, match="must be a correction set"):
        cat.corrected_annotations(annotation_sets=["gt"])


def test_corrections_need_a_correction_set_and_a_free_slide(objects_slide) -> None:
    env = objects_slide
    cat = env.catalog
    corr, anns = _promoted(env)
    with pytest.raises(ConflictError, match="already holds slide"):
        cat.promote_run(env.run.run_id, env.slide_id, env.store, name=corr.name)
    cat.create_annotation_set("gt", image_set="cases")
    cat.add_annotations("gt", env.slide_id, [(shapely.box(0, 0, 4, 4), "x", None)], "dr-a")
    with pytest.raises(ConflictError, match="must be a correction set"):
        cat.promote_run(env.run.run_id, env.slide_id, env.store, name="gt")
    reference = cat.query_annotations("gt", env.slide_id)[0]
    with pytest.raises(ConfigError, match="must be a correction set"):
        cat.accept_object(reference.id)
    with pytest.raises(ConfigError, match="must be a correction set"):
        cat.add_missed_object("gt", env.slide_id, shapely.box(0, 0, 1, 1), "x")
    with pytest.raises(ConfigError):
        cat.relabel_object(anns[0].id, "")
    second = cat.promote_run(
        env.run.run_id, env.slide_id, env.store, name="second", bind_image_set=False
    )
    assert second.image_set is None and cat.count_annotations("second") == 1500


def test_protected_sets_are_read_only(objects_slide) -> None:
    env = objects_slide
    cat = env.catalog
    corr, anns = _promoted(env)
    cat.protect("cases")
    for change in (
        lambda: cat.accept_object(anns[0].id),
        lambda: cat.reject_object(anns[0].id),
        lambda: cat.relabel_object(anns[0].id, "x"),
        lambda: cat.redraw_object(anns[0].id, shapely.box(0, 0, 2, 2)),
        lambda: cat.add_missed_object(corr.name, env.slide_id, shapely.box(0, 0, 2, 2), "x"),
        lambda: cat.accept_pending(corr.name),
        lambda: cat.promote_run(env.run.run_id, env.slide_id, env.store, name=corr.name),
    ):
        with pytest.raises(ProtectedError):
            change()
    assert cat.correction_summary(corr.name).pending == 1500  # nothing changed


def test_export_round_trips(objects_slide, tmp_path: Path) -> None:
    env = objects_slide
    cat = env.catalog
    corr, anns = _promoted(env)
    cat.reject_object(anns[0].id)
    cat.relabel_object(anns[1].id, "necrosis")
    cat.redraw_object(anns[2].id, shapely.box(100, 100, 140, 130))
    path = cat.export_corrections(corr.name, env.slide_id, tmp_path / "c.geojson")
    records = read_annotations(path)
    assert len(records) == 1499  # the rejected object is left out
    by_name = {r.properties["name"]: r for r in records}
    relabelled = by_name[f"modified {anns[1].id}"]
    assert (
        relabelled.label == "necrosis" and relabelled.properties["model"]["label"] == anns[1].label
    )
    assert relabelled.geometry.equals_exact(anns[1].geometry, 1e-6)
    assert by_name[f"modified {anns[2].id}"].geometry.equals(shapely.box(100, 100, 140, 130))
    everything = cat.export_corrections(
        corr.name, env.slide_id, tmp_path / "all.xml", include_rejected=True
    )
    asap = read_annotations(everything)
    assert len(asap) == 1500
    asap_by_name = {r.properties["name"]: r for r in asap}
    assert asap_by_name[f"rejected {anns[0].id}"].geometry.equals_exact(anns[0].geometry, 1e-6)
    assert asap_by_name[f"modified {anns[1].id}"].label == "necrosis"
    with pytest.raises(ConfigError, match="format"):
        cat.export_corrections(corr.name, env.slide_id, tmp_path / "c.txt", format="imagej")
