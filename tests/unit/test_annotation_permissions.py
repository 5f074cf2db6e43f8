"""Who may change which annotations (pathray.catalog.access), on SQLite and PostgreSQL.

Users: cara and dan (clinicians), erin (engineer), ada (admin). A reference set ``gt`` made by
the system (no user owns it), cara's own set ``cara-notes``, and a correction set ``fix``.
"""

from __future__ import annotations

import hashlib

import pytest
import shapely

from pathray.catalog import Catalog
from pathray.catalog.auth import PermissionDeniedError

BOX = shapely.box(0, 0, 10, 10)


@pytest.fixture
def setup(catalog: Catalog) -> tuple[Catalog, int]:
    for name, role in (("cara", "clinician"), ("dan", "clinician"), ("erin", "engineer")):
        catalog.add_user(name, role)
    catalog.add_user("ada", "admin")
    catalog.add_store("local", "/data")
    slide = catalog.register_slide(
        name="s.svs",
        checksum=hashlib.sha256(b"s").hexdigest(),
        store="local",
        relative_path="s.svs",
        width=100,
        height=100,
    ).id
    catalog.create_image_set("set")
    catalog.add_to_image_set("set", [slide])
    catalog.create_annotation_set("gt", image_set="set")
    catalog.add_annotations("gt", slide, [(BOX, None, None)], author="import")
    catalog.create_annotation_set("cara-notes", image_set="set", actor="cara")
    catalog.create_annotation_set("fix", image_set="set", kind="correction")
    return catalog, slide


def _add(catalog: Catalog, set_name: str, slide: int, author: str) -> int:
    catalog.add_annotations(set_name, slide, [(BOX, None, None)], author=author)
    return max(a.id for a in catalog.query_annotations(set_name, slide) if a.author == author)


def test_reference_sets_are_changed_by_their_owner_or_engineers(
    setup: tuple[Catalog, int],
) -> None:
    catalog, slide = setup
    assert catalog.get_annotation_set("cara-notes").owner == "cara"
    reference = catalog.query_annotations("gt", slide)[0].id
    with pytest.raises(PermissionDeniedError, match=r"Annotation set 'gt' \(reference, owned by"):
        catalog.add_annotations("gt", slide, [(BOX, None, None)], author="cara")
    with pytest.raises(PermissionDeniedError, match="Got 'cara' with role 'clinician'"):
        catalog.delete_annotation(reference, actor="cara")
    with pytest.raises(PermissionDeniedError):
        catalog.update_annotation(reference, label="tumor", actor="cara")
    with pytest.raises(PermissionDeniedError):  # another clinician's own set
        catalog.add_annotations("cara-notes", slide, [(BOX, None, None)], author="dan")
    assert catalog.count_annotations("gt") == 1 and catalog.count_annotations("cara-notes") == 0
    assert not catalog.may_change_annotation_set("gt", "cara")
    assert catalog.may_change_annotation_set("cara-notes", "cara")
    assert catalog.may_change_annotation_set("gt", "erin")
    # The owner and engineers may; PathRay's own processes (no user of that name) too.
    _add(catalog, "cara-notes", slide, "cara")
    _add(catalog, "gt", slide, "erin")
    _add(catalog, "gt", slide, "import")
    assert catalog.count_annotations("gt") == 3 and catalog.count_annotations("cara-notes") == 1


def test_others_annotations_are_deleted_by_admins_only(setup: tuple[Catalog, int]) -> None:
    catalog, slide = setup
    # Correction sets are open to every user: each adds their own objects.
    cara_id = _add(catalog, "fix", slide, "cara")
    dan_id = _add(catalog, "fix", slide, "dan")
    with pytest.raises(PermissionDeniedError, match=r"by 'cara'\) can be deleted by its author"):
        catalog.delete_annotation(cara_id, actor="dan")
    with pytest.raises(PermissionDeniedError, match="can be deleted by its author or an admin"):
        catalog.delete_annotation(cara_id, actor="erin")
    with pytest.raises(PermissionDeniedError, match="can be updated by its author or an engineer"):
        catalog.update_annotation(cara_id, label="x", actor="dan")
    assert catalog.get_annotation(cara_id).label is None
    catalog.update_annotation(cara_id, label="edited", actor="erin")  # engineers may edit
    catalog.delete_annotation(dan_id, actor="dan")  # one's own
    catalog.delete_annotation(cara_id, actor="ada")  # an admin, anybody's
    assert catalog.count_annotations("fix") == 0
    deletes = catalog.audit_entries("annotation", actor=None)
    done = [(e.actor, e.action, int(e.entity_id)) for e in deletes if e.action != "create"]
    assert done == [
        ("erin", "update", cara_id),
        ("dan", "delete", dan_id),
        ("ada", "delete", cara_id),
    ]
    refused = [e for e in catalog.audit_entries(actor="dan") if e.action == "update"]
    assert refused == []  # a refused change changes nothing, the log included


def test_deleted_annotation_ids_are_never_reused(setup: tuple[Catalog, int]) -> None:
    catalog, slide = setup
    first = _add(catalog, "cara-notes", slide, "cara")
    newest = _add(catalog, "cara-notes", slide, "cara")
    catalog.delete_annotation(newest, actor="cara")
    catalog.delete_annotation(first, actor="cara")
    again = _add(catalog, "cara-notes", slide, "cara")
    assert again > newest > first
    assert [e.entity_id for e in catalog.audit_entries("annotation", again)] == []
