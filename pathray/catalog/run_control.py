"""Run control: cancel requests and the run's event log (driver milestones, unit log records).

A cancel is a *request*: the catalog records who asked and when, and the run's driver (which may
live in another process or on another node) honours it between batches, leaving the staged
results in place so the run can be resumed. A run that never started is cancelled at once.

Example:
    >>> catalog.request_cancel(run_id, actor="alice")  # doctest: +SKIP
    >>> [e.message for e in catalog.run_events(run_id)]  # doctest: +SKIP
    ['planned 1270 tiles on 1 slide', 'cancel requested by alice', 'cancelled after 64 tiles']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from pathray.catalog.base import CatalogBase
from pathray.catalog.models import EVENT_LEVELS, RunEventRow, RunRow, utcnow
from pathray.catalog.records import TERMINAL_STATUSES, Run
from pathray.errors import ConfigError, ConflictError


@dataclass(frozen=True)
class RunEvent:
    """One event of a run.

    Attributes:
        id: Increasing id (use it to fetch only newer events).
        run_id: The run.
        at: When it happened (UTC).
        unit: The pipeline node it concerns, or None for the driver.
        level: ``debug``, ``info``, ``warning`` or ``error``.
        message: What happened.
    """

    id: int
    run_id: str
    at: datetime
    unit: str | None
    level: str
    message: str

    @classmethod
    def from_row(cls, row: RunEventRow) -> RunEvent:
        """Build the record from its ORM row."""
        return cls(row.id, row.run_id, row.at, row.unit, row.level, row.message)


class RunControlMixin(CatalogBase):
    """Cancel requests and run events."""

    def request_cancel(self, run_id: str, *, actor: str = "system") -> Run:
        """Ask a run to stop. A pending run is cancelled at once; a running one at its next batch.

        Args:
            run_id: The run.
            actor: Who asks (audited and shown in the run's events).

        Returns:
            The run after the request.

        Raises:
            NotFoundError: No such run.
            ConflictError: The run has already finished.
        """
        with self.transaction() as session:
            row = self._run_row(session, run_id)
            if row.status in TERMINAL_STATUSES:
                raise ConflictError(
                    f"Run '{run_id}' must be pending or running to be cancelled. "
                    f"Got status '{row.status}' instead."
                )
            now = utcnow()
            if row.cancel_requested_at is None:
                row.cancel_requested_at, row.cancel_requested_by = now, actor
            details: dict[str, Any] = {"cancel_requested": True}
            if row.status == "pending":
                row.status, row.finished_at = "cancelled", now
                details["status"] = ["pending", "cancelled"]
            session.add(
                RunEventRow(
                    run_id=run_id, at=now, level="info", message=f"cancel requested by {actor}"
                )
            )
            self._audit(session, actor, "cancel", "run", run_id, details)
            session.flush()
            return Run.from_row(row, self._image_set_name(session, row.image_set_id) or "")

    def cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked the run to stop (cheap: one column of one row)."""
        with self.transaction() as session:
            value = session.execute(
                select(RunRow.cancel_requested_at).where(RunRow.id == run_id)
            ).scalar_one_or_none()
            return value is not None

    def clear_cancel(self, run_id: str, *, actor: str = "system") -> None:
        """Forget a cancel request (a cancelled run being resumed)."""
        with self.transaction() as session:
            row = self._run_row(session, run_id)
            if row.cancel_requested_at is not None:
                row.cancel_requested_at = row.cancel_requested_by = None
                self._audit(session, actor, "update", "run", run_id, {"cancel_cleared": True})

    def add_run_events(self, run_id: str, events: Iterable[Mapping[str, Any]]) -> int:
        """Append events to a run's log (not audited: the log is itself append-only).

        Args:
            run_id: The run.
            events: Mappings with ``message`` and optionally ``level`` (default ``info``),
                ``unit`` and ``at``.

        Returns:
            How many events were added.

        Raises:
            NotFoundError: No such run.
            ConfigError: An unknown level.
        """
        rows = []
        for event in events:
            level = str(event.get("level", "info"))
            if level not in EVENT_LEVELS:
                raise ConfigError(
                    f"Event level must be one of {list(EVENT_LEVELS)}. Got {level!r} instead."
                )
            rows.append(
                RunEventRow(
                    run_id=run_id,
                    at=event.get("at") or utcnow(),
                    unit=event.get("unit"),
                    level=level,
                    message=str(event["message"])[:4000],
                )
            )
        if not rows:
            return 0
        with self.transaction() as session:
            self._run_row(session, run_id)
            session.add_all(rows)
        return len(rows)

    def run_events(
        self,
        run_id: str,
        *,
        unit: str | None = None,
        after_id: int = 0,
        min_level: str = "debug",
        limit: int | None = None,
    ) -> list[RunEvent]:
        """A run's events, oldest first.

        Args:
            run_id: The run.
            unit: Only this pipeline node's events.
            after_id: Only events newer than this id (for polling).
            min_level: Drop events below this level.
            limit: At most this many (the oldest first).

        Raises:
            NotFoundError: No such run.
            ConfigError: An unknown level.
        """
        if min_level not in EVENT_LEVELS:
            raise ConfigError(
                f"Level must be one of {list(EVENT_LEVELS)}. Got {min_level!r} instead."
            )
        levels = EVENT_LEVELS[EVENT_LEVELS.index(min_level) :]
        with self.transaction() as session:
            self._run_row(session, run_id)
            query = (
                select(RunEventRow)
                .where(RunEventRow.run_id == run_id, RunEventRow.id > after_id)
                .where(RunEventRow.level.in_(levels))
                .order_by(RunEventRow.id)
            )
            if unit is not None:
                query = query.where(RunEventRow.unit == unit)
            if limit is not None:
                query = query.limit(limit)
            return [RunEvent.from_row(row) for row in session.scalars(query)]
