"""Run-against-run comparisons (migration 0006): agreement metrics and object changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import ComparisonRow
from pathray.errors import ConfigError


@dataclass(frozen=True)
class Comparison:
    """A run compared with a base run; ``slide_id`` None = overall."""

    id: int
    base_run_id: str
    run_id: str
    slide_id: int | None
    iou_threshold: float
    metrics: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: ComparisonRow) -> Comparison:
        """Build the record from its ORM row."""
        return cls(
            id=row.id,
            base_run_id=row.base_run_id,
            run_id=row.run_id,
            slide_id=row.slide_id,
            iou_threshold=row.iou_threshold,
            metrics=dict(row.metrics),
            created_at=row.created_at,
        )


class ComparisonsMixin(CatalogBase):
    """Run-against-run comparisons."""

    def record_comparison(
        self,
        base_run_id: str,
        run_id: str,
        slide_id: int | None,
        metrics: Mapping[str, Any],
        *,
        iou_threshold: float = 0.5,
        actor: str = "system",
    ) -> Comparison:
        """Record how a run compares with a base run.

        Args:
            base_run_id: The run compared against (e.g. the previous iteration).
            run_id: The run compared.
            slide_id: The slide, or None for the whole image set.
            metrics: Agreement metrics and object changes (NumPy values converted).
            iou_threshold: IoU at which objects of the two runs were matched.
            actor: Who asks, for the audit log.

        Returns:
            The stored comparison.

        Raises:
            NotFoundError: A run or the slide does not exist.
            ConfigError: The two runs are the same.
        """
        if base_run_id == run_id:
            raise ConfigError(f"A run must be compared with another run. Got {run_id} twice.")
        with self.transaction() as session:
            self._run_row(session, base_run_id)
            self._run_row(session, run_id)
            if slide_id is not None:
                self._slide_row(session, slide_id)
            row = ComparisonRow(
                base_run_id=base_run_id,
                run_id=run_id,
                slide_id=slide_id,
                iou_threshold=float(iou_threshold),
                metrics=json_safe(dict(metrics)),
            )
            session.add(row)
            session.flush()
            details = {"base_run_id": base_run_id, "run_id": run_id, "slide_id": slide_id}
            self._audit(session, actor, "record", "comparison", row.id, details)
            return Comparison.from_row(row)

    def list_comparisons(self, run_id: str | None = None) -> list[Comparison]:
        """Comparisons by id; with ``run_id``, those where it is either side."""
        with self.transaction() as session:
            query = select(ComparisonRow).order_by(ComparisonRow.id)
            if run_id is not None:
                query = query.where(
                    or_(ComparisonRow.run_id == run_id, ComparisonRow.base_run_id == run_id)
                )
            return [Comparison.from_row(row) for row in session.scalars(query)]
