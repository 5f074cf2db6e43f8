"""Initial catalog: users, stores, slides, image sets, annotations, runs, results, audit.

Also installs the protection and append-only triggers (see ``pathray.catalog.triggers``).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from pathray.catalog.triggers import downgrade_0001, upgrade_0001

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _ts(name: str, nullable: bool = False) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _fk(table: str, column: str, target: str, ondelete: str | None = None):
    name = f"fk_{table}_{column}_{target}"
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=name, ondelete=ondelete)


def _index(table: str, name: str, columns: list[str]) -> None:
    with op.batch_alter_table(table) as batch_op:
        batch_op.create_index(name, columns, unique=False)


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint(_in("role", ["clinician", "engineer", "admin"]), name="ck_users_role"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "slide_stores",
        _id(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_slide_stores"),
        sa.UniqueConstraint("name", name="uq_slide_stores_name"),
    )
    op.create_table(
        "slides",
        _id(),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("vendor", sa.String(64), nullable=True),
        sa.Column("format", sa.String(64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("level_count", sa.Integer(), nullable=False),
        sa.Column("level_dimensions", JSON, nullable=False),
        sa.Column("level_downsamples", JSON, nullable=False),
        sa.Column("mpp", sa.Float(), nullable=True),
        sa.Column("mpp_source", sa.String(8), nullable=True),
        sa.Column("objective_power", sa.Float(), nullable=True),
        sa.Column("properties", JSON, nullable=False),
        _ts("created_at"),
        sa.CheckConstraint(
            "(mpp IS NULL AND mpp_source IS NULL) OR "
            "(mpp IS NOT NULL AND mpp > 0 AND mpp_source IN ('file', 'user'))",
            name="ck_slides_mpp_source",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_slides"),
        sa.UniqueConstraint("checksum", name="uq_slides_checksum"),
    )
    _index("slides", "ix_slides_name", ["name"])
    op.create_table(
        "replicas",
        _id(),
        sa.Column("slide_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("relative_path", sa.Text(), nullable=False),
        _fk("replicas", "slide_id", "slides", ondelete="CASCADE"),
        _fk("replicas", "store_id", "slide_stores"),
        sa.PrimaryKeyConstraint("id", name="pk_replicas"),
        sa.UniqueConstraint("slide_id", "store_id", name="uq_replicas_slide_store"),
        sa.UniqueConstraint("store_id", "relative_path", name="uq_replicas_store_path"),
    )
    op.create_table(
        "image_sets",
        _id(),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("protected", sa.Boolean(), server_default=sa.false(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_image_sets"),
        sa.UniqueConstraint("name", name="uq_image_sets_name"),
    )
    op.create_table(
        "image_set_members",
        sa.Column("image_set_id", sa.Integer(), nullable=False),
        sa.Column("slide_id", sa.Integer(), nullable=False),
        _fk("image_set_members", "image_set_id", "image_sets", ondelete="CASCADE"),
        _fk("image_set_members", "slide_id", "slides", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_set_id", "slide_id", name="pk_image_set_members"),
    )
    _index("image_set_members", "ix_image_set_members_slide_id", ["slide_id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pipeline_name", sa.String(256), nullable=False),
        sa.Column("pipeline_version", sa.String(64), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("code_version", sa.String(128), nullable=False),
        sa.Column("image_set_id", sa.Integer(), nullable=False),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.CheckConstraint(
            _in("status", ["pending", "running", "succeeded", "failed", "cancelled"]),
            name="ck_runs_status",
        ),
        _fk("runs", "image_set_id", "image_sets"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    _index("runs", "ix_runs_image_set_id", ["image_set_id"])
    op.create_table(
        "annotation_sets",
        _id(),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("image_set_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_run_id", sa.String(32), nullable=True),
        sa.Column("parent_unit", sa.String(256), nullable=True),
        sa.Column("labels", JSON, nullable=False),
        _ts("created_at"),
        sa.CheckConstraint(
            _in("kind", ["reference", "correction", "import", "model"]),
            name="ck_annotation_sets_kind",
        ),
        _fk("annotation_sets", "image_set_id", "image_sets"),
        _fk("annotation_sets", "parent_run_id", "runs"),
        sa.PrimaryKeyConstraint("id", name="pk_annotation_sets"),
        sa.UniqueConstraint("name", name="uq_annotation_sets_name"),
    )
    _index("annotation_sets", "ix_annotation_sets_image_set_id", ["image_set_id"])
    op.create_table(
        "annotations",
        _id(),
        sa.Column("annotation_set_id", sa.Integer(), nullable=False),
        sa.Column("slide_id", sa.Integer(), nullable=False),
        sa.Column("geometry", sa.LargeBinary(), nullable=False),
        sa.Column("geom_type", sa.String(32), nullable=False),
        sa.Column("min_x", sa.Float(), nullable=False),
        sa.Column("min_y", sa.Float(), nullable=False),
        sa.Column("max_x", sa.Float(), nullable=False),
        sa.Column("max_y", sa.Float(), nullable=False),
        sa.Column("label", sa.String(256), nullable=True),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("properties", JSON, nullable=False),
        _ts("created_at"),
        _ts("modified_at"),
        sa.CheckConstraint(
            _in("source", ["human", "model", "correction", "import"]), name="ck_annotations_source"
        ),
        _fk("annotations", "annotation_set_id", "annotation_sets", ondelete="CASCADE"),
        _fk("annotations", "slide_id", "slides", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_annotations"),
    )
    _index(
        "annotations",
        "ix_annotations_bbox",
        ["annotation_set_id", "slide_id", "min_x", "max_x", "min_y", "max_y"],
    )
    _index("annotations", "ix_annotations_slide_id", ["slide_id"])
    op.create_table(
        "result_locations",
        _id(),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("slide_id", sa.Integer(), nullable=False),
        sa.Column("unit_name", sa.String(256), nullable=False),
        sa.Column("unit_version", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint(_in("kind", ["objects", "tiles"]), name="ck_result_locations_kind"),
        _fk("result_locations", "run_id", "runs", ondelete="CASCADE"),
        _fk("result_locations", "slide_id", "slides"),
        sa.PrimaryKeyConstraint("id", name="pk_result_locations"),
        sa.UniqueConstraint(
            "run_id",
            "slide_id",
            "unit_name",
            "unit_version",
            "kind",
            name="uq_result_locations_key",
        ),
    )
    _index("result_locations", "ix_result_locations_slide_id", ["slide_id"])
    op.create_table(
        "evaluations",
        _id(),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("annotation_set_id", sa.Integer(), nullable=False),
        sa.Column("slide_id", sa.Integer(), nullable=True),
        sa.Column("unit_name", sa.String(256), nullable=True),
        sa.Column("metrics", JSON, nullable=False),
        _ts("created_at"),
        _fk("evaluations", "annotation_set_id", "annotation_sets"),
        _fk("evaluations", "run_id", "runs", ondelete="CASCADE"),
        _fk("evaluations", "slide_id", "slides"),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
    )
    _index("evaluations", "ix_evaluations_run_id", ["run_id"])
    op.create_table(
        "audit_log",
        _id(),
        _ts("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(128), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    _index("audit_log", "ix_audit_log_entity", ["entity", "entity_id"])

    for statement in upgrade_0001(op.get_context().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in downgrade_0001(op.get_context().dialect.name):
        op.execute(statement)
    for table in (
        "audit_log",
        "evaluations",
        "result_locations",
        "annotations",
        "annotation_sets",
        "runs",
        "image_set_members",
        "image_sets",
        "replicas",
        "slides",
        "slide_stores",
        "users",
    ):
        op.drop_table(table)
