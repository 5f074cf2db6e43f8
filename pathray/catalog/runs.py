"""Runs, the locations of their results in the cold store, and their evaluations."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import (
    RESULT_KINDS,
    RUN_STATUSES,
    AnnotationSetRow,
    EvaluationRow,
    ImageSetRow,
    ResultLocationRow,
    RunRow,
    utcnow,
)
from pathray.catalog.records import TERMINAL_STATUSES, Evaluation, ResultLocation, Run
from pathray.errors import ConfigError, ConflictError

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_RESULT_KEY = ("run_id", "slide_id", "unit_name", "unit_version", "kind")


class RunsMixin(CatalogBase):
    """Runs, result locations and evaluations."""

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        pipeline_name: str,
        pipeline_version: str,
        image_set: str,
        spec: Mapping[str, Any] | None = None,
        config_hash: str = "",
        code_version: str = "",
        requester: str | None = None,
        owner: str | None = None,
        run_id: str | None = None,
        actor: str = "system",
    ) -> str:
        """Record a new pending run of a pipeline version over an image set.

        Args:
            pipeline_name: Name of the pipeline.
            pipeline_version: Its version, with every unit version pinned in ``spec``.
            image_set: Name of the image set the run covers.
            spec: The resolved pipeline specification (JSON).
            config_hash: Hash of the units' validated configs.
            code_version: Version of the code (package version, git commit).
            requester: Who asked for the run; defaults to ``actor``.
            owner: The API client the run belongs to (None: an internal run, seen by all).
            run_id: A chosen id (32 hex digits); a fresh ``uuid4().hex`` by default.
            actor: Who asks, for the audit log.

        Returns:
            The run id.

        Raises:
            NotFoundError: The image set does not exist.
            ConflictError: A run with this id exists.
            ConfigError: A malformed run id.
        """
        run_id = uuid.uuid4().hex if run_id is None else run_id
        if not _RUN_ID.match(run_id):
            raise ConfigError(f"A run id must be 32 lowercase hex digits. Got {run_id!r}.")
        with self.transaction() as session:
            set_row = self._image_set_row(session, image_set)
            if session.get(RunRow, run_id) is not None:
                raise ConflictError(f"Run '{run_id}' exists already.")
            session.add(
                RunRow(
                    id=run_id,
                    pipeline_name=pipeline_name,
                    pipeline_version=pipeline_version,
                    spec=json_safe(dict(spec or {})),
                    config_hash=config_hash,
                    code_version=code_version,
                    image_set_id=set_row.id,
                    requester=requester or actor,
                    owner=owner,
                    status="pending",
                    progress={},
                )
            )
            details = {
                "pipeline": pipeline_name,
                "version": pipeline_version,
                "image_set": image_set,
                "owner": owner,
            }
            self._audit(session, actor, "create", "run", run_id, details)
        return run_id

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        progress: Mapping[str, Any] | None = None,
        error: str | None = None,
        actor: str = "system",
    ) -> Run:
        """Change a run's status, progress or error.

        ``started_at`` is set the first time the run goes ``running``; ``finished_at`` when it
        reaches ``succeeded``, ``failed`` or ``cancelled`` (and cleared if a failed or cancelled
        run is resumed). A succeeded run keeps its status.

        Args:
            run_id: The run.
            status: New status.
            progress: New progress document (replaces the old one).
            error: Error text (for failed runs).
            actor: Who asks, for the audit log.

        Returns:
            The updated run.

        Raises:
            NotFoundError: No such run.
            ConflictError: The run succeeded already and a new status was asked.
            ConfigError: Unknown status.
        """
        if status is not None:
            self._check_choice("status", status, RUN_STATUSES)
        with self.transaction() as session:
            row = self._run_row(session, run_id)
            details: dict[str, Any] = {}
            if status is not None and status != row.status:
                if row.status == "succeeded":
                    raise ConflictError(f"Run '{run_id}' succeeded; its status cannot change.")
                details["status"] = [row.status, status]
                row.status = status
                now = utcnow()
                if status == "running" and row.started_at is None:
                    row.started_at = now
                row.finished_at = now if status in TERMINAL_STATUSES else None
            if progress is not None:
                # Progress alone is not audited: it changes every few seconds and says nothing
                # about who changed what; the final progress is audited with the final status.
                row.progress = json_safe(dict(progress))
                if details:
                    details["progress"] = row.progress
            if error is not None:
                row.error = error
                details["error"] = error[:2000]
            if details:
                self._audit(session, actor, "update", "run", run_id, details)
                session.flush()
            return Run.from_row(row, self._image_set_name(session, row.image_set_id) or "")

    def get_run(self, run_id: str) -> Run:
        """Return a run.

        Raises:
            NotFoundError: No such run.
        """
        with self.transaction() as session:
            row = self._run_row(session, run_id)
            return Run.from_row(row, self._image_set_name(session, row.image_set_id) or "")

    def list_runs(self, image_set: str | None = None, status: str | None = None) -> list[Run]:
        """Return runs, oldest first, optionally of one image set or with one status.

        Raises:
            NotFoundError: The image set does not exist.
        """
        with self.transaction() as session:
            query = (
                select(RunRow, ImageSetRow.name)
                .join(ImageSetRow, ImageSetRow.id == RunRow.image_set_id)
                .order_by(RunRow.created_at, RunRow.id)
            )
            if image_set is not None:
                query = query.where(
                    RunRow.image_set_id == self._image_set_row(session, image_set).id
                )
            if status is not None:
                query = query.where(RunRow.status == status)
            return [Run.from_row(row, name) for row, name in session.execute(query)]

    def owner_activity(self, owner: str, since: datetime) -> tuple[int, list[datetime]]:
        """What one client has going: its unfinished runs, and when it created runs lately.

        Args:
            owner: The client.
            since: Creation times from this moment on are returned.

        Returns:
            How many of its runs are pending or running, and the creation times (oldest
            first) of its runs created since ``since``.
        """
        with self.transaction() as session:
            active = session.scalar(
                select(func.count())
                .select_from(RunRow)
                .where(RunRow.owner == owner, RunRow.status.in_(("pending", "running")))
            )
            created = session.scalars(
                select(RunRow.created_at)
                .where(RunRow.owner == owner, RunRow.created_at >= since)
                .order_by(RunRow.created_at)
            )
            return int(active or 0), list(created)

    # -- result locations ------------------------------------------------------------------

    def record_result_location(
        self,
        run_id: str,
        slide_id: int,
        unit_name: str,
        unit_version: str,
        kind: str,
        uri: str,
        row_count: int,
        *,
        actor: str = "system",
    ) -> ResultLocation:
        """Record where a unit version's output for one slide of a run lives (an upsert).

        Recording the same ``(run, slide, unit, version, kind)`` again replaces the location
        and row count, so a retried or resumed run never duplicates an entry.

        Args:
            run_id: The run.
            slide_id: The slide.
            unit_name: The unit.
            unit_version: Its version.
            kind: ``"objects"`` or ``"tiles"``.
            uri: Location of the cold table (path or URI).
            row_count: Number of rows written for this slide.
            actor: Who asks, for the audit log.

        Returns:
            The stored location.

        Raises:
            NotFoundError: The run or slide does not exist.
            ConfigError: Unknown kind or negative row count.
        """
        with self.transaction() as session:
            self._run_row(session, run_id)
            values = {
                "slide_id": slide_id,
                "unit_name": unit_name,
                "unit_version": unit_version,
                "kind": kind,
                "uri": uri,
                "row_count": row_count,
            }
            return self._upsert_location(session, run_id, values, actor)

    def _upsert_location(
        self, session: Session, run_id: str, location: Mapping[str, Any], actor: str
    ) -> ResultLocation:
        """Insert or replace one result location of a run (checked, audited) in ``session``."""
        self._check_choice("kind", location["kind"], RESULT_KINDS)
        if location["row_count"] < 0:
            raise ConfigError(f"row_count must be >= 0. Got {location['row_count']} instead.")
        values = {
            "run_id": run_id,
            "slide_id": int(location["slide_id"]),
            "unit_name": str(location["unit_name"]),
            "unit_version": str(location["unit_version"]),
            "kind": location["kind"],
            "uri": str(location["uri"]),
            "row_count": int(location["row_count"]),
            "created_at": utcnow(),
        }
        self._slide_row(session, values["slide_id"])
        dialect = session.get_bind().dialect.name
        upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = upsert(ResultLocationRow).values(**values)
        changes = {key: stmt.excluded[key] for key in ("uri", "row_count", "created_at")}
        returning = stmt.on_conflict_do_update(
            index_elements=list(_RESULT_KEY), set_=changes
        ).returning(ResultLocationRow.id)
        location_id = session.execute(returning).scalar_one()
        details = {k: values[k] for k in (*_RESULT_KEY, "uri", "row_count") if k != "run_id"}
        self._audit(session, actor, "record_result_location", "run", run_id, details)
        row = session.get_one(ResultLocationRow, location_id, populate_existing=True)
        return ResultLocation.from_row(row)

    def complete_run(
        self,
        run_id: str,
        locations: Sequence[Mapping[str, Any]],
        progress: Mapping[str, Any],
        *,
        actor: str = "system",
    ) -> Run:
        """Record a run's result locations and mark it succeeded, all in one transaction.

        Either every location and the ``succeeded`` status are stored or nothing is, so a
        catalog lost during the commit never leaves a half-recorded run. Completing a
        completed run again stores the same locations (safe to retry).

        Args:
            run_id: The run.
            locations: One mapping per location, with the keyword arguments of
                :meth:`record_result_location` (``slide_id``, ``unit_name``, ``unit_version``,
                ``kind``, ``uri``, ``row_count``).
            progress: The run's final progress document.
            actor: Who asks, for the audit log.

        Returns:
            The succeeded run.

        Raises:
            NotFoundError: The run or a slide does not exist (nothing is stored).
            ConfigError: A location has an unknown kind or a negative row count.
        """
        with self.transaction() as session:
            row = self._run_row(session, run_id)
            for location in locations:
                self._upsert_location(session, run_id, location, actor)
            if row.status != "succeeded":
                now = utcnow()
                document = json_safe(dict(progress))
                details = {"status": [row.status, "succeeded"], "progress": document}
                row.status, row.finished_at, row.progress = "succeeded", now, document
                row.started_at = row.started_at or now
                self._audit(session, actor, "update", "run", run_id, details)
            session.flush()
            return Run.from_row(row, self._image_set_name(session, row.image_set_id) or "")

    def result_locations(
        self,
        run_id: str | None = None,
        slide_id: int | None = None,
        unit_name: str | None = None,
        kind: str | None = None,
    ) -> list[ResultLocation]:
        """Return result locations by id, filtered by any of run, slide, unit and kind."""
        with self.transaction() as session:
            query = select(ResultLocationRow).order_by(ResultLocationRow.id)
            if run_id is not None:
                query = query.where(ResultLocationRow.run_id == run_id)
            if slide_id is not None:
                query = query.where(ResultLocationRow.slide_id == slide_id)
            if unit_name is not None:
                query = query.where(ResultLocationRow.unit_name == unit_name)
            if kind is not None:
                query = query.where(ResultLocationRow.kind == kind)
            return [ResultLocation.from_row(row) for row in session.scalars(query)]

    # -- evaluations -----------------------------------------------------------------------

    def record_evaluation(
        self,
        run_id: str,
        annotation_set: str,
        slide_id: int | None,
        metrics: Mapping[str, Any],
        unit_name: str | None = None,
        *,
        actor: str = "system",
    ) -> Evaluation:
        """Record the metrics of a run against a reference annotation set.

        Args:
            run_id: The evaluated run.
            annotation_set: Name of the reference annotation set.
            slide_id: The slide the metrics are about, or None for the whole image set.
            metrics: Metric values (NumPy values are converted; NaN is stored as null).
            unit_name: The unit whose output was evaluated, or None for the pipeline's sinks.
            actor: Who asks, for the audit log.

        Returns:
            The stored evaluation.

        Raises:
            NotFoundError: The run, annotation set or slide does not exist.
        """
        with self.transaction() as session:
            self._run_row(session, run_id)
            set_row = self._annotation_set_row(session, annotation_set)
            if slide_id is not None:
                self._slide_row(session, slide_id)
            row = EvaluationRow(
                run_id=run_id,
                annotation_set_id=set_row.id,
                slide_id=slide_id,
                unit_name=unit_name,
                metrics=json_safe(dict(metrics)),
            )
            session.add(row)
            session.flush()
            details = {
                "run_id": run_id,
                "annotation_set": annotation_set,
                "slide_id": slide_id,
                "unit_name": unit_name,
            }
            self._audit(session, actor, "record", "evaluation", row.id, details)
            return Evaluation.from_row(row, set_row.name)

    def list_evaluations(
        self, run_id: str | None = None, annotation_set: str | None = None
    ) -> list[Evaluation]:
        """Return evaluations by id, of one run and/or against one annotation set.

        Raises:
            NotFoundError: The annotation set does not exist.
        """
        with self.transaction() as session:
            query = (
                select(EvaluationRow, AnnotationSetRow.name)
                .join(AnnotationSetRow, AnnotationSetRow.id == EvaluationRow.annotation_set_id)
                .order_by(EvaluationRow.id)
            )
            if run_id is not None:
                query = query.where(EvaluationRow.run_id == run_id)
            if annotation_set is not None:
                set_id = self._annotation_set_row(session, annotation_set).id
                query = query.where(EvaluationRow.annotation_set_id == set_id)
            return [Evaluation.from_row(row, name) for row, name in session.execute(query)]
