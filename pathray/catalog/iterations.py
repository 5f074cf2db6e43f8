"""Iteration loops and their iterations: what the judge decided, version after version.

A loop (:class:`IterationLoop`) iterates one node of a pipeline over an image set against a
reference annotation set until a requirement holds or its budget is spent. Each of its
iterations (:class:`Iteration`, numbered 0, 1, 2, ...; 0 is the starting version) records the
unit version and model version it ran, the strategy that made it, its run, the evaluation
(metrics on the held-out slides) and the judge's verdict; ``parent_id`` is the iteration it was
derived from.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import (
    ITERATION_STATUSES,
    LOOP_STATUSES,
    AnnotationSetRow,
    ImageSetRow,
    IterationLoopRow,
    IterationRow,
    ModelVersionRow,
    utcnow,
)
from pathray.catalog.models_registry import ModelRegistryMixin
from pathray.catalog.records import ModelVersion
from pathray.errors import ConfigError, NotFoundError

_LOOP_ID = re.compile(r"^[0-9a-f]{32}$")
#: Loop statuses after which a loop never changes again.
FINAL_LOOP_STATUSES = ("met", "exhausted", "failed", "cancelled")


@dataclass(frozen=True)
class IterationLoop:
    """An iteration loop.

    Attributes:
        id: 32 hex digits.
        pipeline_name: The pipeline iterated.
        node_id: The node of the pipeline whose unit is iterated.
        image_set: The image set the loop works on (split by slide into training and
            validation).
        reference: The reference annotation set.
        requirement: The requirement, as text.
        budget: ``{"iterations": n, "seconds": s or None}``.
        strategy: ``"auto"``, ``"config_search"``, ``"retrain"`` or ``"swap"``.
        settings: Everything else the loop was started with (split, seed, search space...).
        status: ``running``, ``met``, ``exhausted``, ``failed`` or ``cancelled``.
        best_number: Number of the best iteration so far.
        error: Why the loop failed.
        requester: Who started it.
        created_at: When it started.
        finished_at: When it ended.
    """

    id: str
    pipeline_name: str
    node_id: str
    image_set: str
    reference: str
    requirement: str
    budget: dict[str, Any]
    strategy: str
    settings: dict[str, Any]
    status: str
    best_number: int | None
    error: str | None
    requester: str
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Iteration:
    """One iteration of a loop.

    Attributes:
        id: Catalog id.
        loop_id: The loop.
        number: 0 for the starting version, then 1, 2, ...
        parent_id: The iteration this one was derived from.
        strategy: How its version was made (``start``, ``config_search``, ``retrain``, ``swap``).
        unit_name: The unit the node ran.
        unit_version_id: Its unit version.
        model_version_id: The model version it loaded, if any.
        config: The unit's config.
        run_id: Its run.
        evaluation: Metrics of the run on the held-out slides (overall).
        verdict: The judge's verdict (see :class:`pathray.iterate.judge.Verdict`).
        details: How the version was made (training set, search results, ...).
        status: ``running``, ``met``, ``not_met`` or ``failed``.
        error: Why it failed.
        created_at: When it started.
        finished_at: When it ended.
    """

    id: int
    loop_id: str
    number: int
    parent_id: int | None
    strategy: str
    unit_name: str
    unit_version_id: int | None
    model_version_id: int | None
    config: dict[str, Any]
    run_id: str | None
    evaluation: dict[str, Any]
    verdict: dict[str, Any]
    details: dict[str, Any]
    status: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: IterationRow) -> Iteration:
        """Build the record from its row."""
        return cls(
            id=row.id,
            loop_id=row.loop_id,
            number=row.number,
            parent_id=row.parent_id,
            strategy=row.strategy,
            unit_name=row.unit_name,
            unit_version_id=row.unit_version_id,
            model_version_id=row.model_version_id,
            config=dict(row.config or {}),
            run_id=row.run_id,
            evaluation=dict(row.evaluation or {}),
            verdict=dict(row.verdict or {}),
            details=dict(row.details or {}),
            status=row.status,
            error=row.error,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


_ITERATION_FIELDS = (
    "unit_version_id",
    "model_version_id",
    "run_id",
    "evaluation",
    "verdict",
    "details",
    "config",
    "error",
)


class IterationsMixin(CatalogBase):
    """Iteration loops and iterations."""

    # -- look-ups --------------------------------------------------------------------------

    @staticmethod
    def _loop_row(session: Session, loop_id: str) -> IterationLoopRow:
        row = session.get(IterationLoopRow, loop_id)
        if row is None:
            raise NotFoundError(f"Iteration loop '{loop_id}' does not exist.")
        return row

    @staticmethod
    def _loop_record(session: Session, row: IterationLoopRow) -> IterationLoop:
        image_set = session.scalar(
            select(ImageSetRow.name).where(ImageSetRow.id == row.image_set_id)
        )
        reference = session.scalar(
            select(AnnotationSetRow.name).where(AnnotationSetRow.id == row.reference_set_id)
        )
        return IterationLoop(
            id=row.id,
            pipeline_name=row.pipeline_name,
            node_id=row.node_id,
            image_set=image_set or "",
            reference=reference or "",
            requirement=row.requirement,
            budget=dict(row.budget or {}),
            strategy=row.strategy,
            settings=dict(row.settings or {}),
            status=row.status,
            best_number=row.best_number,
            error=row.error,
            requester=row.requester,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )

    # -- loops -----------------------------------------------------------------------------

    def create_iteration_loop(
        self,
        *,
        pipeline_name: str,
        node_id: str,
        image_set: str,
        reference: str,
        requirement: str,
        budget: Mapping[str, Any],
        strategy: str,
        settings: Mapping[str, Any] | None = None,
        requester: str = "system",
        loop_id: str | None = None,
    ) -> IterationLoop:
        """Record a new running iteration loop.

        Args:
            pipeline_name: The pipeline iterated.
            node_id: The node whose unit is iterated.
            image_set: The image set the loop works on.
            reference: The reference annotation set.
            requirement: The requirement, as text.
            budget: Its budget (JSON).
            strategy: The strategy asked for.
            settings: Other settings (JSON).
            requester: Who starts it; also the actor in the audit log.
            loop_id: A chosen id (32 hex digits); a fresh one by default.

        Returns:
            The loop.

        Raises:
            NotFoundError: The image set or annotation set does not exist.
            ConfigError: A malformed loop id.
        """
        loop_id = uuid.uuid4().hex if loop_id is None else loop_id
        if not _LOOP_ID.match(loop_id):
            raise ConfigError(f"A loop id must be 32 lowercase hex digits. Got {loop_id!r}.")
        with self.transaction() as session:
            row = IterationLoopRow(
                id=loop_id,
                pipeline_name=pipeline_name,
                node_id=node_id,
                image_set_id=self._image_set_row(session, image_set).id,
                reference_set_id=self._annotation_set_row(session, reference).id,
                requirement=requirement,
                budget=json_safe(dict(budget)),
                strategy=strategy,
                settings=json_safe(dict(settings or {})),
                status="running",
                requester=requester,
            )
            session.add(row)
            session.flush()
            details = {"pipeline": pipeline_name, "node": node_id, "requirement": requirement}
            self._audit(session, requester, "create", "iteration_loop", loop_id, details)
            return self._loop_record(session, row)

    def finish_iteration_loop(
        self,
        loop_id: str,
        status: str,
        *,
        best_number: int | None = None,
        error: str | None = None,
        actor: str = "system",
    ) -> IterationLoop:
        """Mark a loop finished (``met``, ``exhausted``, ``failed`` or ``cancelled``).

        Raises:
            NotFoundError: No such loop.
            ConfigError: Unknown or non-final status.
        """
        if status not in FINAL_LOOP_STATUSES:
            raise ConfigError(
                f"A loop's final status must be one of {', '.join(FINAL_LOOP_STATUSES)}. "
                f"Got {status!r} instead."
            )
        with self.transaction() as session:
            row = self._loop_row(session, loop_id)
            row.status, row.best_number, row.error = status, best_number, error
            row.finished_at = utcnow()
            details = {"status": status, "best_number": best_number, "error": error}
            self._audit(session, actor, "finish", "iteration_loop", loop_id, details)
            session.flush()
            return self._loop_record(session, row)

    def get_iteration_loop(self, loop_id: str) -> IterationLoop:
        """Return a loop.

        Raises:
            NotFoundError: No such loop.
        """
        with self.transaction() as session:
            return self._loop_record(session, self._loop_row(session, loop_id))

    def list_iteration_loops(self, status: str | None = None) -> list[IterationLoop]:
        """Return loops, oldest first, optionally those with one status."""
        with self.transaction() as session:
            query = select(IterationLoopRow).order_by(
                IterationLoopRow.created_at, IterationLoopRow.id
            )
            if status is not None:
                self._check_choice("status", status, LOOP_STATUSES)
                query = query.where(IterationLoopRow.status == status)
            return [self._loop_record(session, row) for row in session.scalars(query)]

    # -- iterations ------------------------------------------------------------------------

    def add_iteration(
        self,
        loop_id: str,
        number: int,
        *,
        strategy: str,
        unit_name: str,
        config: Mapping[str, Any],
        parent_id: int | None = None,
        details: Mapping[str, Any] | None = None,
        actor: str = "system",
    ) -> Iteration:
        """Record a new running iteration of a loop.

        Raises:
            NotFoundError: The loop or the parent iteration does not exist.
            ConflictError: The loop has an iteration with this number.
        """
        with self.transaction() as session:
            self._loop_row(session, loop_id)
            if parent_id is not None and session.get(IterationRow, parent_id) is None:
                raise NotFoundError(f"Iteration {parent_id} does not exist.")
            row = IterationRow(
                loop_id=loop_id,
                number=int(number),
                parent_id=parent_id,
                strategy=strategy,
                unit_name=unit_name,
                config=json_safe(dict(config)),
                evaluation={},
                verdict={},
                details=json_safe(dict(details or {})),
                status="running",
            )
            session.add(row)
            session.flush()
            audit = {"loop_id": loop_id, "number": number, "strategy": strategy}
            self._audit(session, actor, "create", "iteration", row.id, audit)
            return Iteration.from_row(row)

    def update_iteration(
        self, iteration_id: int, *, status: str | None = None, actor: str = "system", **fields: Any
    ) -> Iteration:
        """Change an iteration's status and any of its recorded fields.

        Args:
            iteration_id: The iteration.
            status: New status (a final one also sets ``finished_at``).
            actor: Who asks, for the audit log.
            **fields: Any of ``unit_version_id``, ``model_version_id``, ``run_id``,
                ``evaluation``, ``verdict``, ``details``, ``config``, ``error``.

        Raises:
            NotFoundError: No such iteration.
            ConfigError: Unknown status or field.
        """
        unknown = sorted(set(fields) - set(_ITERATION_FIELDS))
        if unknown:
            raise ConfigError(
                f"Iteration fields must be among {', '.join(_ITERATION_FIELDS)}. "
                f"Got {', '.join(unknown)} instead."
            )
        if status is not None:
            self._check_choice("status", status, ITERATION_STATUSES)
        with self.transaction() as session:
            row = session.get(IterationRow, iteration_id)
            if row is None:
                raise NotFoundError(f"Iteration {iteration_id} does not exist.")
            for name, value in fields.items():
                setattr(row, name, json_safe(value) if isinstance(value, Mapping) else value)
            audit: dict[str, Any] = {k: v for k, v in fields.items() if not isinstance(v, Mapping)}
            if status is not None:
                audit["status"] = [row.status, status]
                row.status = status
                if status != "running":
                    row.finished_at = utcnow()
            self._audit(session, actor, "update", "iteration", iteration_id, json_safe(audit))
            session.flush()
            return Iteration.from_row(row)

    def get_iteration(self, iteration_id: int) -> Iteration:
        """Return an iteration by id.

        Raises:
            NotFoundError: No such iteration.
        """
        with self.transaction() as session:
            row = session.get(IterationRow, iteration_id)
            if row is None:
                raise NotFoundError(f"Iteration {iteration_id} does not exist.")
            return Iteration.from_row(row)

    def list_iterations(
        self, loop_id: str | None = None, *, run_id: str | None = None
    ) -> list[Iteration]:
        """Return iterations (of one loop, by number; or of one run), oldest first.

        Raises:
            NotFoundError: The loop does not exist.
        """
        with self.transaction() as session:
            query = select(IterationRow).order_by(IterationRow.loop_id, IterationRow.number)
            if loop_id is not None:
                self._loop_row(session, loop_id)
                query = query.where(IterationRow.loop_id == loop_id)
            if run_id is not None:
                query = query.where(IterationRow.run_id == run_id)
            return [Iteration.from_row(row) for row in session.scalars(query)]

    # -- look-ups by id used by lineage ----------------------------------------------------

    def model_version_by_id(self, model_version_id: int) -> ModelVersion:
        """Return a model version by its catalog id (as unit versions reference it).

        Raises:
            NotFoundError: No such model version.
        """
        with self.transaction() as session:
            row = session.get(ModelVersionRow, model_version_id)
            if row is None:
                raise NotFoundError(f"Model version {model_version_id} does not exist.")
            return ModelRegistryMixin._model_version_record(session, row)
