"""Comparisons of one run with another (per slide, or overall when slide_id is NULL).

Run-against-reference metrics stay in ``evaluations``; this table holds run-against-run
comparisons: agreement metrics and the per-object change summary (matched, missed, extra,
relabelled) of a run relative to a base run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_run_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("slide_id", sa.Integer(), nullable=True),
        sa.Column("iou_threshold", sa.Float(), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["base_run_id"], ["runs.id"], name="fk_comparisons_base_run_id_runs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_comparisons_run_id_runs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["slide_id"], ["slides.id"], name="fk_comparisons_slide_id_slides"),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
    )
    with op.batch_alter_table("comparisons") as batch_op:
        batch_op.create_index("ix_comparisons_run_id", ["run_id"], unique=False)
        batch_op.create_index("ix_comparisons_base_run_id", ["base_run_id"], unique=False)


def downgrade() -> None:
    op.drop_table("comparisons")
