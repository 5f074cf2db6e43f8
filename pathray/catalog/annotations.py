"""Annotation sets and annotations: bulk insert, edits and bounding-box queries.

Geometries are stored as WKB in level-0 pixel coordinates, next to their bounding box in four
indexed float columns; a region query filters on the box in SQL and refines with shapely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import ColumnElement, and_, func, insert, select
from sqlalchemy.orm import Session

from pathray.catalog.access import check_annotation_change
from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import (
    ANNOTATION_SET_KINDS,
    ANNOTATION_SOURCES,
    AnnotationRow,
    AnnotationSetRow,
    Base,
    ImageSetMemberRow,
    ImageSetRow,
    utcnow,
)
from pathray.catalog.records import Annotation, AnnotationSet
from pathray.errors import ConfigError, ConflictError, NotFoundError

_GEOM_TYPES = {
    0: "Point",
    1: "LineString",
    2: "LinearRing",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}
AnnotationItem = tuple[BaseGeometry, str | None, Mapping[str, Any] | None]
BBox = tuple[float, float, float, float]


def _geometry_columns(geometry: BaseGeometry) -> dict[str, Any]:
    if not isinstance(geometry, BaseGeometry):
        raise ConfigError(
            f"An annotation geometry must be a shapely geometry. Got {type(geometry).__name__}."
        )
    if geometry.is_empty:
        raise ConfigError(f"An annotation geometry must not be empty. Got {geometry.wkt}.")
    min_x, min_y, max_x, max_y = geometry.bounds
    return {
        "geometry": shapely.to_wkb(geometry),
        "geom_type": geometry.geom_type,
        "min_x": float(min_x),
        "min_y": float(min_y),
        "max_x": float(max_x),
        "max_y": float(max_y),
    }


def _encode_items(
    items: Iterable[AnnotationItem], allowed: set[str], set_name: str
) -> list[dict[str, Any]]:
    """Validate annotation items and encode their geometries, vectorised with shapely."""
    items = list(items)
    geometries = np.empty(len(items), dtype=object)
    for i, (geometry, label, _) in enumerate(items):
        if not isinstance(geometry, BaseGeometry):
            raise ConfigError(
                "An annotation geometry must be a shapely geometry. "
                f"Got {type(geometry).__name__} instead."
            )
        if allowed and label is not None and label not in allowed:
            raise ConfigError(
                f"Label {label!r} must be one of annotation set '{set_name}''s labels "
                f"{sorted(allowed)}."
            )
        geometries[i] = geometry
    if not items:
        return []
    empty = np.flatnonzero(shapely.is_empty(geometries))
    if empty.size:
        raise ConfigError(
            f"An annotation geometry must not be empty. Got {geometries[empty[0]].wkt} "
            f"(item {int(empty[0])})."
        )
    bounds = shapely.bounds(geometries).tolist()
    blobs = shapely.to_wkb(geometries)
    types = [_GEOM_TYPES[int(t)] for t in shapely.get_type_id(geometries)]
    return [
        {
            "geometry": blob,
            "geom_type": geom_type,
            "min_x": box[0],
            "min_y": box[1],
            "max_x": box[2],
            "max_y": box[3],
            "label": label,
            "properties": json_safe(dict(properties or {})),
        }
        for blob, geom_type, box, (_, label, properties) in zip(
            blobs, types, bounds, items, strict=True
        )
    ]


def _bbox_overlaps(bbox: BBox) -> ColumnElement[bool]:
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if x1 < x0 or y1 < y0:
        raise ConfigError(f"A bbox must be (x0, y0, x1, y1) with x0 <= x1, y0 <= y1. Got {bbox}.")
    return and_(
        AnnotationRow.max_x >= x0,
        AnnotationRow.min_x <= x1,
        AnnotationRow.max_y >= y0,
        AnnotationRow.min_y <= y1,
    )


class AnnotationsMixin(CatalogBase):
    """Annotation sets and their annotations."""

    # -- annotation sets -------------------------------------------------------------------

    def create_annotation_set(
        self,
        name: str,
        image_set: str | None = None,
        kind: str = "reference",
        labels: Sequence[str] | None = None,
        parent_run_id: str | None = None,
        parent_unit: str | None = None,
        *,
        actor: str = "system",
    ) -> AnnotationSet:
        """Create an empty annotation set.

        Args:
            name: Unique name.
            image_set: Image set the annotations are about (their slides must be members).
            kind: ``"reference"``, ``"correction"``, ``"import"`` or ``"model"``.
            labels: Allowed labels; empty or None allows any label.
            parent_run_id: Run whose results this set was promoted from (corrections).
            parent_unit: Unit (and version) of that run the results came from.
            actor: Who asks, for the audit log; the set's owner (see
                :mod:`pathray.catalog.access`).

        Returns:
            The new annotation set.

        Raises:
            ConflictError: An annotation set of that name exists.
            NotFoundError: The image set or parent run does not exist.
            ConfigError: Unknown kind.
        """
        self._check_choice("kind", kind, ANNOTATION_SET_KINDS)
        label_list = [str(label) for label in (labels or [])]
        if len(set(label_list)) != len(label_list):
            raise ConfigError(f"Labels must be unique. Got {label_list} instead.")
        with self.transaction() as session:
            exists = session.scalar(
                select(AnnotationSetRow.id).where(AnnotationSetRow.name == name)
            )
            if exists is not None:
                raise ConflictError(f"Annotation set '{name}' exists already.")
            set_id = None if image_set is None else self._image_set_row(session, image_set).id
            if parent_run_id is not None:
                self._run_row(session, parent_run_id)
            row = AnnotationSetRow(
                name=name,
                image_set_id=set_id,
                kind=kind,
                labels=label_list,
                parent_run_id=parent_run_id,
                parent_unit=parent_unit,
                owner=actor,
            )
            session.add(row)
            session.flush()
            details = {"name": name, "image_set": image_set, "kind": kind, "owner": actor}
            self._audit(session, actor, "create", "annotation_set", row.id, details)
            return AnnotationSet.from_row(row, image_set)

    def get_annotation_set(self, name: str) -> AnnotationSet:
        """Return the annotation set called ``name``.

        Raises:
            NotFoundError: No such annotation set.
        """
        with self.transaction() as session:
            row = self._annotation_set_row(session, name)
            return AnnotationSet.from_row(row, self._image_set_name(session, row.image_set_id))

    def list_annotation_sets(
        self, image_set: str | None = None, kind: str | None = None
    ) -> list[AnnotationSet]:
        """Return annotation sets by id, optionally those of one image set or one kind.

        Raises:
            NotFoundError: The image set does not exist.
        """
        with self.transaction() as session:
            query = (
                select(AnnotationSetRow, ImageSetRow.name)
                .outerjoin(ImageSetRow, ImageSetRow.id == AnnotationSetRow.image_set_id)
                .order_by(AnnotationSetRow.id)
            )
            if image_set is not None:
                set_id = self._image_set_row(session, image_set).id
                query = query.where(AnnotationSetRow.image_set_id == set_id)
            if kind is not None:
                query = query.where(AnnotationSetRow.kind == kind)
            return [AnnotationSet.from_row(row, name) for row, name in session.execute(query)]

    # -- annotations -----------------------------------------------------------------------

    def add_annotations(
        self,
        set_name: str,
        slide_id: int,
        items: Iterable[AnnotationItem],
        author: str,
        source: str = "human",
        *,
        actor: str | None = None,
    ) -> int:
        """Insert many annotations on one slide in one transaction (all or none).

        Args:
            set_name: The annotation set.
            slide_id: The annotated slide.
            items: ``(shapely geometry, label or None, properties or None)`` per annotation,
                in level-0 pixel coordinates.
            author: Who drew or produced them (a user, or a model and its version).
            source: ``"human"``, ``"model"``, ``"correction"`` or ``"import"``.
            actor: Who asks, for the audit log; defaults to ``author``.

        Returns:
            How many annotations were inserted.

        Raises:
            NotFoundError: The set or slide does not exist.
            ProtectedError: The set belongs to a protected image set.
            PermissionDeniedError: The actor may not change the set
                (:mod:`pathray.catalog.access`).
            ConflictError: The slide is not in the set's image set.
            ConfigError: An empty geometry, a label outside the set's labels, a bad source.
        """
        self._check_choice("source", source, ANNOTATION_SOURCES)
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            self._refuse_if_annotations_frozen(session, set_row)
            check_annotation_change(session, actor or author, set_row)
            self._slide_row(session, slide_id)
            self._check_slide_in_set(session, set_row, slide_id)
            now = utcnow()
            rows = _encode_items(items, set(set_row.labels), set_name)
            for row in rows:
                row.update(
                    annotation_set_id=set_row.id,
                    slide_id=slide_id,
                    author=author,
                    source=source,
                    created_at=now,
                    modified_at=now,
                )
            if rows:  # one executemany through Core (the ORM bulk path costs more per row)
                session.execute(insert(Base.metadata.tables["annotations"]), rows)
                details = {"slide_id": slide_id, "count": len(rows), "source": source}
                self._audit(
                    session,
                    actor or author,
                    "add_annotations",
                    "annotation_set",
                    set_row.id,
                    details,
                )
            return len(rows)

    def get_annotation(self, annotation_id: int) -> Annotation:
        """Return one annotation.

        Raises:
            NotFoundError: No such annotation.
        """
        with self.transaction() as session:
            return Annotation.from_row(self._annotation_row(session, annotation_id))

    def update_annotation(
        self,
        annotation_id: int,
        geometry: BaseGeometry | None = None,
        label: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        actor: str = "system",
    ) -> Annotation:
        """Change an annotation's geometry, label or properties (those given, not None).

        Args:
            annotation_id: The annotation.
            geometry: New geometry, level-0 pixels.
            label: New label.
            properties: New properties (replace the old ones).
            actor: Who asks, for the audit log.

        Returns:
            The updated annotation.

        Raises:
            NotFoundError: No such annotation.
            ProtectedError: Its set belongs to a protected image set.
            PermissionDeniedError: The actor may not edit it (:mod:`pathray.catalog.access`).
            ConfigError: An empty geometry or a label outside the set's labels.
        """
        with self.transaction() as session:
            row = self._annotation_row(session, annotation_id)
            set_row = session.get_one(AnnotationSetRow, row.annotation_set_id)
            self._refuse_if_annotations_frozen(session, set_row)
            check_annotation_change(session, actor, set_row, row.author, "update")
            changed: list[str] = []
            if geometry is not None:
                for key, value in _geometry_columns(geometry).items():
                    setattr(row, key, value)
                changed.append("geometry")
            if label is not None:
                if set_row.labels and label not in set_row.labels:
                    raise ConfigError(
                        f"Label {label!r} must be one of annotation set '{set_row.name}''s "
                        f"labels {sorted(set_row.labels)}."
                    )
                row.label = label
                changed.append("label")
            if properties is not None:
                row.properties = json_safe(dict(properties))
                changed.append("properties")
            if changed:
                row.modified_at = utcnow()
                details = {"annotation_set": set_row.name, "changed": changed}
                self._audit(session, actor, "update", "annotation", annotation_id, details)
                session.flush()
            return Annotation.from_row(row)

    def delete_annotation(self, annotation_id: int, *, actor: str = "system") -> None:
        """Delete one annotation (its id is never handed out again).

        Raises:
            NotFoundError: No such annotation.
            ProtectedError: Its set belongs to a protected image set.
            PermissionDeniedError: The actor may not delete it (:mod:`pathray.catalog.access`).
        """
        with self.transaction() as session:
            row = self._annotation_row(session, annotation_id)
            set_row = session.get_one(AnnotationSetRow, row.annotation_set_id)
            self._refuse_if_annotations_frozen(session, set_row)
            check_annotation_change(session, actor, set_row, row.author, "delete")
            details = {
                "annotation_set": set_row.name,
                "slide_id": row.slide_id,
                "label": row.label,
                "wkt": shapely.from_wkb(row.geometry).wkt[:2000],
            }
            session.delete(row)
            self._audit(session, actor, "delete", "annotation", annotation_id, details)

    def query_annotations(
        self,
        set_name: str,
        slide_id: int,
        bbox: BBox | None = None,
        *,
        label: str | None = None,
    ) -> list[Annotation]:
        """Return a slide's annotations of a set, optionally only those meeting a region.

        Args:
            set_name: The annotation set.
            slide_id: The slide.
            bbox: ``(x0, y0, x1, y1)`` in level-0 pixels; annotations whose geometry
                intersects this box (touching included) are returned.
            label: Only annotations with this label.

        Returns:
            The annotations, by id, with decoded shapely geometries.

        Raises:
            NotFoundError: The set does not exist.
        """
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            query = select(AnnotationRow).where(
                AnnotationRow.annotation_set_id == set_row.id, AnnotationRow.slide_id == slide_id
            )
            if bbox is not None:
                query = query.where(_bbox_overlaps(bbox))
            if label is not None:
                query = query.where(AnnotationRow.label == label)
            found = [
                Annotation.from_row(row)
                for row in session.scalars(query.order_by(AnnotationRow.id))
            ]
        if bbox is None:
            return found
        region = shapely.box(*bbox)
        return [a for a in found if a.geometry.intersects(region)]

    def count_annotations(self, set_name: str, slide_id: int | None = None) -> int:
        """Count the annotations of a set, on one slide or on all.

        Raises:
            NotFoundError: The set does not exist.
        """
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            query = select(func.count()).where(AnnotationRow.annotation_set_id == set_row.id)
            if slide_id is not None:
                query = query.where(AnnotationRow.slide_id == slide_id)
            return int(session.scalar(query) or 0)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _annotation_row(session: Session, annotation_id: int) -> AnnotationRow:
        row = session.get(AnnotationRow, annotation_id)
        if row is None:
            raise NotFoundError(f"Annotation {annotation_id} does not exist.")
        return row

    @staticmethod
    def _check_slide_in_set(session: Session, set_row: AnnotationSetRow, slide_id: int) -> None:
        if set_row.image_set_id is None:
            return
        member = session.scalar(
            select(ImageSetMemberRow.slide_id).where(
                ImageSetMemberRow.image_set_id == set_row.image_set_id,
                ImageSetMemberRow.slide_id == slide_id,
            )
        )
        if member is None:
            name = session.scalar(
                select(ImageSetRow.name).where(ImageSetRow.id == set_row.image_set_id)
            )
            raise ConflictError(
                f"Slide {slide_id} is not in image set '{name}', which annotation set "
                f"'{set_row.name}' annotates. Add the slide to the image set first."
            )
