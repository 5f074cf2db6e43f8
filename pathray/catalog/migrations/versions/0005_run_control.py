"""Run control: cancel requests on runs and the append-only run events (driver and unit logs).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEVELS = ("debug", "info", "warning", "error")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("cancel_requested_by", sa.String(128)))
    levels = ", ".join(repr(level) for level in LEVELS)
    op.create_table(
        "run_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("unit", sa.String(256), nullable=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.CheckConstraint(f"level IN ({levels})", name="ck_run_events_level"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_events_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_run_events"),
    )
    with op.batch_alter_table("run_events") as batch_op:
        batch_op.create_index("ix_run_events_run_id", ["run_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("run_events")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("cancel_requested_by")
        batch_op.drop_column("cancel_requested_at")
