"""Corrections of model results, and fast annotation reads for the viewer.

A clinician corrects a run's results on a slide by *promoting* them into a correction
:class:`~pathray.catalog.records.AnnotationSet` (``kind="correction"``, ``parent_run_id``,
``parent_unit``): every object becomes an annotation (``source="model"``, author the unit and
its version) whose properties keep the model's output next to the correction, as MONAI Label
does::

    {"status": "pending", "model": {"object": "12:3", "label": "tumor", "score": 0.91}}

Corrections then change the annotation and its ``status``:

============  ==========================================================================
status        meaning
============  ==========================================================================
pending       model output not reviewed yet (counts as unchanged)
accepted      model output confirmed as is (unchanged)
modified      relabelled and/or redrawn; ``model.label`` / ``model.geometry`` (WKT) keep
              the original; ``source`` becomes ``"correction"``
added         an object the model missed, drawn by the reviewer (``source="correction"``)
rejected      a false positive (kept, so the summary can count it)
============  ==========================================================================

Sets bound to a protected image set are read-only, as every annotation set (the API refuses,
and the database triggers back it up). Accepted, modified and added objects are the training
labels an iteration learns from (:meth:`CorrectionsMixin.corrected_annotations`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Text, func, insert, or_, select, type_coerce
from sqlalchemy.orm import Session

from pathray.catalog.annotations import (
    _GEOM_TYPES,
    AnnotationsMixin,
    BBox,
    _bbox_overlaps,
    _geometry_columns,
)
from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import AnnotationRow, AnnotationSetRow, Base, utcnow
from pathray.catalog.records import Annotation, AnnotationSet
from pathray.errors import ConfigError, ConflictError, NotFoundError

if TYPE_CHECKING:
    from pathray.results.store import ColdStore

CORRECTION_STATUSES = ("pending", "accepted", "modified", "added", "rejected")
#: Statuses whose annotations are training labels.
LABEL_STATUSES = ("accepted", "modified", "added")


@dataclass(frozen=True)
class CorrectionSummary:
    """How a correction set differs from the run output it was promoted from.

    Attributes:
        model_objects: Objects promoted from the run.
        pending: Not reviewed yet.
        accepted: Confirmed unchanged.
        modified: Relabelled or redrawn (``relabelled`` and ``redrawn`` count each change).
        added: Missed by the model, drawn by a reviewer.
        rejected: False positives.
    """

    model_objects: int
    pending: int
    accepted: int
    modified: int
    added: int
    rejected: int
    relabelled: int
    redrawn: int

    @property
    def unchanged(self) -> int:
        """Model objects kept as they were (pending or accepted)."""
        return self.pending + self.accepted

    def as_dict(self) -> dict[str, int]:
        """Every count, ``unchanged`` included."""
        return {**asdict(self), "unchanged": self.unchanged}


@dataclass(frozen=True)
class AnnotationView:
    """Column-wise annotations of a window, for overlays (no shapely decoding unless asked).

    Attributes:
        ids: Annotation ids.
        labels: Labels.
        bboxes: ``(min_x, min_y, max_x, max_y)`` of each.
        wkb: Geometries as WKB (only when asked with ``shapes=True``).
        authors: Authors.
        sources: Sources.
        modified: Last change, ISO 8601.
        status: Correction status (None outside correction sets).
        scores: The model's score, when the properties carry one.
    """

    ids: list[int]
    labels: list[str | None]
    bboxes: list[tuple[float, float, float, float]]
    wkb: list[bytes] | None
    authors: list[str]
    sources: list[str]
    modified: list[str]
    status: list[str | None]
    scores: list[float | None]

    def ids_of(self, positions: Iterable[int]) -> list[int]:
        """The ids at some positions of the view."""
        return [self.ids[i] for i in positions]

    def merged(self, other: AnnotationView) -> AnnotationView:
        """This view plus the rows of ``other`` it lacks, by id."""
        mine = set(self.ids)
        keep = [i for i, a in enumerate(other.ids) if a not in mine]
        order = sorted(
            [(a, 0, i) for i, a in enumerate(self.ids)] + [(other.ids[i], 1, i) for i in keep]
        )
        views = (self, other)

        def column(name: str) -> list[Any] | None:
            values = [getattr(v, name) for v in views]
            if any(value is None for value in values):
                return None
            return [values[src][i] for _, src, i in order]

        return AnnotationView(
            **{name: column(name) for name in self.__dataclass_fields__}  # type: ignore[arg-type]
        )


class CorrectionsMixin(CatalogBase):
    """Promotion of run results into correction sets, corrections, and viewer reads."""

    # -- promotion ---------------------------------------------------------------------------

    def promote_run(
        self,
        run_id: str,
        slide_id: int,
        store: ColdStore,
        *,
        name: str | None = None,
        unit: str | None = None,
        bind_image_set: bool = True,
        actor: str = "system",
    ) -> AnnotationSet:
        """Copy a run's objects on a slide into a correction annotation set (one transaction).

        Promoting another slide of the same run into the same ``name`` adds to that set.

        Args:
            run_id: The run.
            slide_id: The slide whose objects to promote.
            store: The cold store holding the run's results.
            name: The correction set; default ``correction-<run id[:8]>``.
            unit: The unit (pipeline node id) whose objects to promote; None takes the last
                unit that recorded objects for the slide.
            bind_image_set: Bind a new set to the run's image set (then the set is read-only
                while that image set is protected); False leaves it unbound.
            actor: Who asks, for the audit log.

        Returns:
            The correction set.

        Raises:
            NotFoundError: The run, slide or unit does not exist, or the run has no objects.
            ConflictError: ``name`` is a set of another kind or run, or already holds the slide.
            ProtectedError: The set belongs to a protected image set.
        """
        from pathray.results.overlay import run_provenance

        prov = run_provenance(self, run_id, slide_id, unit)  # type: ignore[arg-type]
        parent_unit = f"{prov['unit']}@{prov['unit_version']}"
        columns = set(store.dataset(run_id, "objects").schema.names)
        wanted = ["tile_id", "object_id", "polygon"]
        wanted += [c for c in ("label", "score") if c in columns]
        if "polygon" not in columns:
            raise NotFoundError(f"Run {run_id!r} stored no object polygons to correct.")
        table = store.read(run_id, "objects", slide_id=slide_id, columns=wanted)
        rows = _promoted_rows(table, parent_unit)
        set_name = name or f"correction-{run_id[:8]}"
        with self.transaction() as session:
            run = self._run_row(session, run_id)
            self._slide_row(session, slide_id)
            set_row = session.scalar(
                select(AnnotationSetRow).where(AnnotationSetRow.name == set_name)
            )
            if set_row is None:
                set_row = AnnotationSetRow(
                    name=set_name,
                    image_set_id=run.image_set_id if bind_image_set else None,
                    kind="correction",
                    labels=[],
                    parent_run_id=run_id,
                    parent_unit=parent_unit,
                )
                session.add(set_row)
                session.flush()
                details = {"name": set_name, "kind": "correction", "parent_run_id": run_id}
                self._audit(session, actor, "create", "annotation_set", set_row.id, details)
            elif set_row.kind != "correction" or set_row.parent_run_id != run_id:
                raise ConflictError(
                    f"Annotation set '{set_name}' must be a correction set of run {run_id}. "
                    f"Got a {set_row.kind} set of run {set_row.parent_run_id} instead."
                )
            self._refuse_if_annotations_frozen(session, set_row)
            AnnotationsMixin._check_slide_in_set(session, set_row, slide_id)
            held = session.scalar(
                select(func.count()).where(
                    AnnotationRow.annotation_set_id == set_row.id,
                    AnnotationRow.slide_id == slide_id,
                )
            )
            if held:
                raise ConflictError(
                    f"Correction set '{set_name}' already holds slide {slide_id}; "
                    "correct it there or promote into a new set."
                )
            now = utcnow()
            for row in rows:
                row.update(annotation_set_id=set_row.id, created_at=now, modified_at=now)
                row["slide_id"] = slide_id
            if rows:
                session.execute(insert(Base.metadata.tables["annotations"]), rows)
            promoted = {"run_id": run_id, "slide_id": slide_id, "unit": parent_unit}
            self._audit(
                session,
                actor,
                "promote",
                "annotation_set",
                set_row.id,
                {**promoted, "count": len(rows)},
            )
            image_set = self._image_set_name(session, set_row.image_set_id)
            return AnnotationSet.from_row(set_row, image_set)

    # -- corrections -------------------------------------------------------------------------

    def accept_object(self, annotation_id: int, *, actor: str = "system") -> Annotation:
        """Confirm a promoted object (pending or rejected -> accepted; others unchanged)."""

        def change(row: AnnotationRow, props: dict[str, Any]) -> list[str]:
            if props["status"] in ("pending", "rejected"):
                props["status"] = "accepted"
                return ["status"]
            return []

        return self._correct(annotation_id, actor, "accept", change)

    def reject_object(self, annotation_id: int, *, actor: str = "system") -> Annotation | None:
        """Mark a promoted object a false positive; an added object is deleted instead.

        Returns:
            The rejected annotation, or None when an added object was deleted.
        """
        with self.transaction() as session:
            row, set_row = self._correction_row(session, annotation_id)
            if (row.properties or {}).get("status") == "added":
                details = {"annotation_set": set_row.name, "slide_id": row.slide_id}
                session.delete(row)
                self._audit(session, actor, "reject", "annotation", annotation_id, details)
                return None

        def change(row: AnnotationRow, props: dict[str, Any]) -> list[str]:
            props["status"] = "rejected"
            return ["status"]

        return self._correct(annotation_id, actor, "reject", change)

    def relabel_object(
        self, annotation_id: int, label: str, *, actor: str = "system"
    ) -> Annotation:
        """Give an object another label (the model's label stays in ``model.label``)."""
        if not isinstance(label, str) or not label:
            raise ConfigError(f"label must be a non-empty string. Got {label!r} instead.")

        def change(row: AnnotationRow, props: dict[str, Any]) -> list[str]:
            row.label = label
            return ["label"]

        return self._correct(annotation_id, actor, "relabel", change)

    def redraw_object(
        self, annotation_id: int, geometry: BaseGeometry, *, actor: str = "system"
    ) -> Annotation:
        """Replace an object's outline (the model's outline stays in ``model.geometry``)."""
        columns = _geometry_columns(geometry)

        def change(row: AnnotationRow, props: dict[str, Any]) -> list[str]:
            model = props.setdefault("model", {})
            if props["status"] != "added" and "geometry" not in model:
                model["geometry"] = shapely.from_wkb(row.geometry).wkt
            for key, value in columns.items():
                setattr(row, key, value)
            return ["geometry"]

        return self._correct(annotation_id, actor, "redraw", change)

    def revert_object(self, annotation_id: int, *, actor: str = "system") -> Annotation:
        """Undo the corrections of a promoted object: the model's label and outline, pending."""

        def change(row: AnnotationRow, props: dict[str, Any]) -> list[str]:
            if props["status"] == "added":
                raise ConfigError(
                    f"Annotation {annotation_id} was added by a reviewer; it has no model "
                    "output to revert to. Reject it to remove it."
                )
            model = props.get("model", {})
            row.label = model.get("label")
            if "geometry" in model:
                for key, value in _geometry_columns(
                    shapely.from_wkt(model.pop("geometry"))
                ).items():
                    setattr(row, key, value)
            props["status"] = "pending"
            return ["label", "geometry", "status"]

        return self._correct(annotation_id, actor, "revert", change)

    def add_missed_object(
        self,
        set_name: str,
        slide_id: int,
        geometry: BaseGeometry,
        label: str | None,
        *,
        actor: str = "system",
    ) -> Annotation:
        """Add an object the model missed to a correction set (``status="added"``).

        Raises:
            NotFoundError: The set or slide does not exist.
            ConfigError: The set is not a correction set, or the geometry is empty.
            ProtectedError: The set belongs to a protected image set.
        """
        columns = _geometry_columns(geometry)
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            _require_correction_set(set_row)
            self._refuse_if_annotations_frozen(session, set_row)
            self._slide_row(session, slide_id)
            AnnotationsMixin._check_slide_in_set(session, set_row, slide_id)
            now = utcnow()
            row = AnnotationRow(
                annotation_set_id=set_row.id,
                slide_id=slide_id,
                label=label,
                author=actor,
                source="correction",
                properties={"status": "added"},
                created_at=now,
                modified_at=now,
                **columns,
            )
            session.add(row)
            session.flush()
            details = {"annotation_set": set_name, "slide_id": slide_id, "label": label}
            self._audit(session, actor, "add_missed", "annotation", row.id, details)
            return Annotation.from_row(row)

    def accept_pending(
        self, set_name: str, slide_id: int | None = None, *, actor: str = "system"
    ) -> int:
        """Accept every pending object of a correction set (of one slide, or all).

        Returns:
            How many objects were accepted.
        """
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            _require_correction_set(set_row)
            self._refuse_if_annotations_frozen(session, set_row)
            query = select(AnnotationRow).where(AnnotationRow.annotation_set_id == set_row.id)
            if slide_id is not None:
                query = query.where(AnnotationRow.slide_id == slide_id)
            now, count = utcnow(), 0
            for row in session.scalars(query):
                props = dict(row.properties or {})
                if props.get("status") == "pending":
                    props["status"] = "accepted"
                    row.properties = props
                    row.modified_at = now
                    count += 1
            details = {"slide_id": slide_id, "count": count}
            self._audit(session, actor, "accept_pending", "annotation_set", set_row.id, details)
            return count

    # -- summaries, labels, export -------------------------------------------------------------

    def correction_summary(self, set_name: str, slide_id: int | None = None) -> CorrectionSummary:
        """Count unchanged, modified, added and rejected objects of a correction set.

        Raises:
            NotFoundError: The set does not exist.
            ConfigError: It is not a correction set.
        """
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            _require_correction_set(set_row)
            query = select(AnnotationRow.label, AnnotationRow.properties).where(
                AnnotationRow.annotation_set_id == set_row.id
            )
            if slide_id is not None:
                query = query.where(AnnotationRow.slide_id == slide_id)
            counts = dict.fromkeys(CORRECTION_STATUSES, 0)
            relabelled = redrawn = 0
            for label, props in session.execute(query):
                status = (props or {}).get("status", "pending")
                counts[status] = counts.get(status, 0) + 1
                model = (props or {}).get("model") or {}
                if status == "modified":
                    relabelled += int(label != model.get("label"))
                    redrawn += int("geometry" in model)
        return CorrectionSummary(
            model_objects=sum(counts[s] for s in CORRECTION_STATUSES if s != "added"),
            pending=counts["pending"],
            accepted=counts["accepted"],
            modified=counts["modified"],
            added=counts["added"],
            rejected=counts["rejected"],
            relabelled=relabelled,
            redrawn=redrawn,
        )

    def corrected_annotations(
        self,
        slide_ids: Sequence[int] | None = None,
        *,
        annotation_sets: Sequence[str] | None = None,
        include_pending: bool = False,
    ) -> list[Annotation]:
        """The training labels of corrections: accepted, modified and added objects.

        Args:
            slide_ids: Only these slides (None: every slide).
            annotation_sets: Only these correction sets (None: every correction set).
            include_pending: Also return objects nobody reviewed yet.

        Returns:
            The annotations (corrected geometry and label), by id.

        Raises:
            NotFoundError: A named set does not exist.
            ConfigError: A named set is not a correction set.
        """
        wanted = set(LABEL_STATUSES) | ({"pending"} if include_pending else set())
        with self.transaction() as session:
            if annotation_sets is None:
                set_ids = list(
                    session.scalars(
                        select(AnnotationSetRow.id).where(AnnotationSetRow.kind == "correction")
                    )
                )
            else:
                set_ids = []
                for set_name in annotation_sets:
                    set_row = self._annotation_set_row(session, set_name)
                    _require_correction_set(set_row)
                    set_ids.append(set_row.id)
            query = select(AnnotationRow).where(AnnotationRow.annotation_set_id.in_(set_ids))
            if slide_ids is not None:
                query = query.where(AnnotationRow.slide_id.in_([int(s) for s in slide_ids]))
            rows = session.scalars(query.order_by(AnnotationRow.id))
            return [
                Annotation.from_row(row)
                for row in rows
                if (row.properties or {}).get("status", "pending") in wanted
            ]

    def export_corrections(
        self,
        set_name: str,
        slide_id: int,
        path: str | Path,
        format: str | None = None,
        *,
        include_rejected: bool = False,
    ) -> Path:
        """Write a slide's corrections as GeoJSON or ASAP XML.

        GeoJSON keeps every property (status, the model's label and outline); ASAP keeps the
        geometry and label, and names each annotation ``"<status> <id>"``.

        Args:
            set_name: The correction set.
            slide_id: The slide.
            path: The output file.
            format: ``"geojson"`` or ``"asap"``; None picks from the extension.
            include_rejected: Also write rejected objects.

        Returns:
            The file written.

        Raises:
            NotFoundError: The set does not exist.
            ConfigError: It is not a correction set.
            FormatError: Unknown format.
        """
        from pathray.formats import AnnotationRecord, write_annotations

        if format not in (None, "geojson", "asap"):
            raise ConfigError(f"format must be 'geojson' or 'asap'. Got {format!r} instead.")
        set_record = self.get_annotation_set(set_name)  # type: ignore[attr-defined]
        if set_record.kind != "correction":
            raise ConfigError(
                f"Annotation set '{set_name}' must be a correction set. Got {set_record.kind}."
            )
        records = []
        for a in self.query_annotations(set_name, slide_id):  # type: ignore[attr-defined]
            props = dict(a.properties)
            status = props.get("status", "pending")
            if status == "rejected" and not include_rejected:
                continue
            props.update(name=f"{status} {a.id}", author=a.author, source=a.source)
            records.append(AnnotationRecord(a.geometry, a.label, None, json_safe(props)))
        return write_annotations(records, path, format)  # type: ignore[arg-type]

    # -- viewer reads ------------------------------------------------------------------------

    def count_annotations_in(
        self, set_name: str, slide_id: int, bbox: BBox, *, label: str | None = None
    ) -> int:
        """Count a slide's annotations whose bounding box meets a level-0 window.

        Raises:
            NotFoundError: The set does not exist.
        """
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            query = select(func.count()).where(
                AnnotationRow.annotation_set_id == set_row.id,
                AnnotationRow.slide_id == slide_id,
                _bbox_overlaps(bbox),
            )
            if label is not None:
                query = query.where(AnnotationRow.label == label)
            return int(session.scalar(query) or 0)

    def annotation_boxes(
        self,
        set_name: str,
        slide_id: int,
        bbox: BBox,
        *,
        label: str | None = None,
        every: int = 1,
        min_extent: float | None = None,
    ) -> tuple[list[int], list[tuple[float, float, float, float]], list[str | None]]:
        """Ids, bounding boxes and labels of a slide's annotations meeting a window, by id.

        A light read (no geometry, no properties) for coarse views of many annotations;
        ``every=k`` keeps only ids divisible by ``k``, an even thinning done by the database;
        ``min_extent`` keeps only annotations at least that wide or tall.

        Raises:
            NotFoundError: The set does not exist.
        """
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            query = select(
                AnnotationRow.id,
                AnnotationRow.min_x,
                AnnotationRow.min_y,
                AnnotationRow.max_x,
                AnnotationRow.max_y,
                AnnotationRow.label,
            ).where(
                AnnotationRow.annotation_set_id == set_row.id,
                AnnotationRow.slide_id == slide_id,
                _bbox_overlaps(bbox),
            )
            if label is not None:
                query = query.where(AnnotationRow.label == label)
            query = _thinned(query, every, min_extent)
            rows = session.execute(query.order_by(AnnotationRow.id)).all()
        return (
            [r[0] for r in rows],
            [(r[1], r[2], r[3], r[4]) for r in rows],
            [r[5] for r in rows],
        )

    def annotation_view(
        self,
        set_name: str,
        slide_id: int,
        bbox: BBox | None = None,
        *,
        ids: Sequence[int] | None = None,
        label: str | None = None,
        limit: int | None = None,
        shapes: bool = True,
        every: int = 1,
        min_extent: float | None = None,
    ) -> AnnotationView:
        """A slide's annotations meeting a window (by bounding box), column-wise and by id.

        Args:
            set_name: The annotation set.
            slide_id: The slide.
            bbox: ``(x0, y0, x1, y1)`` in level-0 pixels; None for the whole slide.
            ids: Only these annotation ids (for example a thinned pick of
                :meth:`annotation_boxes`).
            label: Only this label.
            limit: At most this many (the lowest ids).
            shapes: Also return the WKB geometries.
            every: Keep only ids divisible by this (an even thinning done by the database).
            min_extent: Keep only annotations at least this wide or tall (level-0 px).

        Raises:
            NotFoundError: The set does not exist.
        """
        cols: list[Any] = [
            AnnotationRow.id,
            AnnotationRow.label,
            AnnotationRow.min_x,
            AnnotationRow.min_y,
            AnnotationRow.max_x,
            AnnotationRow.max_y,
            AnnotationRow.author,
            AnnotationRow.source,
            # Raw (SQLite's stored text): building, tagging and formatting a datetime per row
            # was a third of the read; :func:`_iso_utc` gives the same string directly.
            type_coerce(AnnotationRow.modified_at, Text).label("modified_at"),
            # As text: most rows hold ``{}``, and parsing only the others halves the read.
            type_coerce(AnnotationRow.properties, Text).label("properties"),
        ]
        if shapes:
            cols.append(AnnotationRow.geometry)
        rows: list[Any] = []
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            query = select(*cols).where(
                AnnotationRow.annotation_set_id == set_row.id,
                AnnotationRow.slide_id == slide_id,
            )
            if bbox is not None:
                query = query.where(_bbox_overlaps(bbox))
            if label is not None:
                query = query.where(AnnotationRow.label == label)
            query = _thinned(query, every, min_extent).order_by(AnnotationRow.id)
            # Plain rows through the connection: the ORM's row loading adds a third for nothing.
            conn = session.connection()
            if ids is None:
                rows = list(conn.execute(query if limit is None else query.limit(limit)).all())
            else:  # in chunks: SQLite caps the parameters of one statement
                wanted = list(ids)[:limit] if limit is not None else list(ids)
                for k in range(0, len(wanted), 5000):
                    chunk = wanted[k : k + 5000]
                    rows += conn.execute(query.where(AnnotationRow.id.in_(chunk))).all()
        props = [_properties(r.properties) for r in rows]
        return AnnotationView(
            ids=[r.id for r in rows],
            labels=[r.label for r in rows],
            bboxes=[(r.min_x, r.min_y, r.max_x, r.max_y) for r in rows],
            wkb=[r.geometry for r in rows] if shapes else None,
            authors=[r.author for r in rows],
            sources=[r.source for r in rows],
            modified=[_iso_utc(r.modified_at) for r in rows],
            status=[p.get("status") for p in props],
            scores=[_number(p.get("score")) for p in props],
        )

    def annotation_geometries(self, annotation_ids: Sequence[int]) -> list[BaseGeometry]:
        """The geometries of some annotations, in the order asked.

        Raises:
            NotFoundError: An id does not exist.
        """
        if not annotation_ids:
            return []
        with self.transaction() as session:
            found = dict(
                session.execute(
                    select(AnnotationRow.id, AnnotationRow.geometry).where(
                        AnnotationRow.id.in_(list(annotation_ids))
                    )
                ).all()
            )
        missing = [i for i in annotation_ids if i not in found]
        if missing:
            raise NotFoundError(f"Annotation {missing[0]} does not exist.")
        return list(shapely.from_wkb([found[i] for i in annotation_ids]))

    # -- helpers -----------------------------------------------------------------------------

    def _correction_row(
        self, session: Session, annotation_id: int
    ) -> tuple[AnnotationRow, AnnotationSetRow]:
        row = session.get(AnnotationRow, annotation_id)
        if row is None:
            raise NotFoundError(f"Annotation {annotation_id} does not exist.")
        set_row = session.get_one(AnnotationSetRow, row.annotation_set_id)
        _require_correction_set(set_row)
        self._refuse_if_annotations_frozen(session, set_row)
        return row, set_row

    def _correct(
        self,
        annotation_id: int,
        actor: str,
        action: str,
        change: Callable[[AnnotationRow, dict[str, Any]], list[str]],
    ) -> Annotation:
        """Apply one correction in one transaction, update status and source, audit it."""
        with self.transaction() as session:
            row, set_row = self._correction_row(session, annotation_id)
            props = json_safe(dict(row.properties or {}))
            props.setdefault("status", "pending")
            props["model"] = dict(props.get("model") or {})
            changed = change(row, props)
            if changed:
                model = props["model"]
                if props["status"] != "added" and action in ("relabel", "redraw"):
                    same = row.label == model.get("label") and "geometry" not in model
                    props["status"] = "accepted" if same else "modified"
                if not props["model"]:
                    props.pop("model")
                row.properties = props
                row.source = "correction" if props["status"] in ("modified", "added") else "model"
                row.modified_at = utcnow()
                details = {"annotation_set": set_row.name, "changed": changed, **props}
                details.pop("model", None)
                self._audit(session, actor, action, "annotation", annotation_id, details)
                session.flush()
            return Annotation.from_row(row)


def _promoted_rows(table: pa.Table, parent_unit: str) -> list[dict[str, Any]]:
    """Annotation rows of a run's objects: their WKB as stored, the model output in properties."""
    from pathray.results.overlay import gc_paused

    blobs = table["polygon"].to_numpy(zero_copy_only=False)
    geoms = shapely.from_wkb(blobs)
    empty = np.flatnonzero(shapely.is_empty(geoms) | shapely.is_missing(geoms))
    if empty.size:
        raise ConfigError(f"Object polygons must not be empty. Got an empty one at row {empty[0]}.")
    bounds = shapely.bounds(geoms).tolist()
    types = [_GEOM_TYPES[int(t)] for t in shapely.get_type_id(geoms)]
    n = table.num_rows
    names = table.column_names
    labels = [lab or None for lab in table["label"].to_pylist()] if "label" in names else [None] * n
    scores = table["score"].to_pylist() if "score" in names else [None] * n
    tiles, objs = table["tile_id"].to_pylist(), table["object_id"].to_pylist()
    with gc_paused():  # 100k small dicts: the collector would cost more than building them
        rows = []
        for i in range(n):
            props: dict[str, Any] = {
                "status": "pending",
                "model": {"object": f"{tiles[i]}:{objs[i]}", "label": labels[i]},
            }
            score = scores[i]
            if score is not None and math.isfinite(score):
                props["score"] = float(score)
            box = bounds[i]
            rows.append(
                {
                    "geometry": bytes(blobs[i]),
                    "geom_type": types[i],
                    "min_x": box[0],
                    "min_y": box[1],
                    "max_x": box[2],
                    "max_y": box[3],
                    "label": labels[i],
                    "author": parent_unit,
                    "source": "model",
                    "properties": props,
                }
            )
    return rows


def _thinned(query: Any, every: int, min_extent: float | None) -> Any:
    """Keep ids divisible by ``every``, and only annotations ``min_extent`` px wide or tall."""
    if every > 1:
        query = query.where(AnnotationRow.id % int(every) == 0)
    if min_extent is not None:
        query = query.where(
            or_(
                AnnotationRow.max_x - AnnotationRow.min_x >= float(min_extent),
                AnnotationRow.max_y - AnnotationRow.min_y >= float(min_extent),
            )
        )
    return query


def _require_correction_set(set_row: AnnotationSetRow) -> None:
    if set_row.kind != "correction":
        raise ConfigError(
            f"Annotation set '{set_row.name}' must be a correction set. Got a {set_row.kind} "
            "set instead; promote a run's results to correct them."
        )


def _iso_utc(value: Any) -> str:
    """The ``isoformat()`` of a stored UTC timestamp, from the raw value read.

    The raw value is SQLite's text (``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC) or a driver's
    datetime (PostgreSQL); the result is what :class:`~pathray.catalog.models.UTCDateTime`
    would read, formatted.

    Example:
        >>> _iso_utc("2026-12-07 01:02:03.000000"), _iso_utc("2026-12-07 01:02:03.250000")
        ('2026-12-07T01:02:03+00:00', '2026-12-07T01:02:03.250000+00:00')
    """
    if isinstance(value, str) and len(value) in (19, 26) and value[10] == " ":
        text = value[:19] if value.endswith(".000000") else value
        return f"{text[:10]}T{text[11:]}+00:00"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat()


def _properties(raw: Any) -> dict[str, Any]:
    """Annotation properties read as text (SQLite) or already decoded (PostgreSQL's JSONB)."""
    if isinstance(raw, dict):
        return raw
    if not raw or raw in ("{}", "null"):
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


__all__ = [
    "CORRECTION_STATUSES",
    "LABEL_STATUSES",
    "AnnotationView",
    "CorrectionSummary",
    "CorrectionsMixin",
]
