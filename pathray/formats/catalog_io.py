"""Moving annotation records between files and the catalog.

Example:
    >>> records = read_annotations("slide-1.geojson")  # doctest: +SKIP
    >>> import_records(catalog, records, annotation_set="gt", slide_id=1)  # doctest: +SKIP
    120
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pathray.formats.base import AnnotationRecord

if TYPE_CHECKING:
    from pathray.catalog import Catalog

#: Annotations with this ``role`` property outline the area a reference covers (scoring region).
REGION_ROLE = "region"


def import_records(
    catalog: Catalog,
    records: Iterable[AnnotationRecord],
    *,
    annotation_set: str,
    slide_id: int,
    image_set: str | None = None,
    kind: str = "reference",
    author: str = "import",
    source: str = "import",
) -> int:
    """Store records as annotations of one slide, creating the annotation set if new.

    Args:
        catalog: The catalog.
        records: Annotation records (level-0 pixel coordinates).
        annotation_set: Target annotation set.
        slide_id: The annotated slide.
        image_set: Image set of a new annotation set.
        kind: Kind of a new annotation set.
        author: Recorded author.
        source: ``"import"``, ``"human"``, ``"model"`` or ``"correction"``.

    Returns:
        The number of annotations stored.
    """
    if annotation_set not in {a.name for a in catalog.list_annotation_sets()}:
        catalog.create_annotation_set(annotation_set, image_set, kind, actor=author)
    items = [
        (r.geometry, r.label, {**r.properties, **({"color": r.color} if r.color else {})})
        for r in records
    ]
    return catalog.add_annotations(annotation_set, slide_id, items, author, source)


def export_records(catalog: Catalog, annotation_set: str, slide_id: int) -> list[AnnotationRecord]:
    """One slide's annotations of a set, as records ready for a writer."""
    records = []
    for a in catalog.query_annotations(annotation_set, slide_id):
        props = dict(a.properties)
        color = props.pop("color", None)
        records.append(AnnotationRecord(a.geometry, a.label, color, props))
    return records
