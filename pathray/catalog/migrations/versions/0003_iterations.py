"""Iterations: iteration loops (requirement, budget, status) and their iterations.

An iteration loop runs a pipeline, evaluates it against a reference, judges the metrics against
a requirement and makes the next unit version until the requirement holds or the budget is
spent; every iteration records its unit version, model version, run, evaluation and verdict.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
LOOP_STATUSES = ("running", "met", "exhausted", "failed", "cancelled")
ITERATION_STATUSES = ("running", "met", "not_met", "failed")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ts(name: str, nullable: bool = False) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def _fk(table: str, column: str, target: str, ondelete: str | None = None):
    name = f"fk_{table}_{column}_{target}"
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=name, ondelete=ondelete)


def _index(table: str, name: str, columns: list[str]) -> None:
    with op.batch_alter_table(table) as batch_op:
        batch_op.create_index(name, columns, unique=False)


def upgrade() -> None:
    op.create_table(
        "iteration_loops",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pipeline_name", sa.String(256), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("image_set_id", sa.Integer(), nullable=False),
        sa.Column("reference_set_id", sa.Integer(), nullable=False),
        sa.Column("requirement", sa.Text(), nullable=False),
        sa.Column("budget", JSON, nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("settings", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("best_number", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requester", sa.String(128), nullable=False),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        sa.CheckConstraint(_in("status", LOOP_STATUSES), name="ck_iteration_loops_status"),
        _fk("iteration_loops", "image_set_id", "image_sets"),
        _fk("iteration_loops", "reference_set_id", "annotation_sets"),
        sa.PrimaryKeyConstraint("id", name="pk_iteration_loops"),
    )
    op.create_table(
        "iterations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loop_id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("unit_name", sa.String(256), nullable=False),
        sa.Column("unit_version_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("evaluation", JSON, nullable=False),
        sa.Column("verdict", JSON, nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        sa.CheckConstraint("number >= 0", name="ck_iterations_number"),
        sa.CheckConstraint(_in("status", ITERATION_STATUSES), name="ck_iterations_status"),
        _fk("iterations", "loop_id", "iteration_loops", ondelete="CASCADE"),
        _fk("iterations", "parent_id", "iterations"),
        _fk("iterations", "unit_version_id", "unit_versions"),
        _fk("iterations", "model_version_id", "model_versions"),
        _fk("iterations", "run_id", "runs"),
        sa.PrimaryKeyConstraint("id", name="pk_iterations"),
        sa.UniqueConstraint("loop_id", "number", name="uq_iterations_loop_number"),
    )
    _index("iterations", "ix_iterations_run_id", ["run_id"])


def downgrade() -> None:
    op.drop_table("iterations")
    op.drop_table("iteration_loops")
