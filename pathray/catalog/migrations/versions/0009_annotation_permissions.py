"""Annotation permissions: annotation sets get an owner; annotation ids are never reused.

``annotation_sets.owner`` is who made the set (NULL for sets made before): the owner of a
reference set may edit it like an engineer (:mod:`pathray.catalog.access`). On SQLite the
``annotations`` table is rebuilt with AUTOINCREMENT, so the id of a deleted annotation (the
newest one, in particular) is not handed out again: the audit log names annotations by id.
PostgreSQL's sequences never reuse ids, so nothing changes there. The rebuild drops the
table's triggers of ``0001``; they are put back as they were.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pathray.catalog.triggers import sqlite_trigger_names_0001, sqlite_triggers_on_0001

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild_sqlite(table: str, **table_kwargs: bool) -> None:
    with op.batch_alter_table(table, recreate="always", table_kwargs=table_kwargs):
        pass
    for statement in sqlite_triggers_on_0001(table):
        op.execute(statement)


def upgrade() -> None:
    with op.batch_alter_table("annotation_sets") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(128), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("annotations", sqlite_autoincrement=True)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # Dropping a column rebuilds annotation_sets, and SQLite refuses to rename a table
        # into place while triggers of another table (annotations) name it: drop those first.
        for name in sqlite_trigger_names_0001("annotations"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("annotation_sets") as batch_op:
        batch_op.drop_column("owner")
    if sqlite:
        _rebuild_sqlite("annotations")
        for statement in sqlite_triggers_on_0001("annotation_sets"):
            op.execute(statement)
