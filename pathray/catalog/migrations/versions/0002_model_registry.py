"""Model registry, units and pipelines: models, versions, aliases, unit versions, DAGs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
FRAMEWORKS = ("classical", "sklearn", "xgboost", "torch")


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _created_at() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def _fk(table: str, column: str, target: str, ondelete: str | None = None):
    name = f"fk_{table}_{column}_{target}"
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=name, ondelete=ondelete)


def _index(table: str, name: str, columns: list[str]) -> None:
    with op.batch_alter_table(table) as batch_op:
        batch_op.create_index(name, columns, unique=False)


def _models() -> None:
    frameworks = ", ".join(repr(f) for f in FRAMEWORKS)
    op.create_table(
        "models",
        _id(),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("framework", sa.String(16), nullable=False),
        sa.Column("task", sa.String(256), server_default="", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        _created_at(),
        sa.CheckConstraint(f"framework IN ({frameworks})", name="ck_models_framework"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "model_versions",
        _id(),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_digest", sa.String(64), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("artifact_size", sa.BigInteger(), nullable=True),
        sa.Column("parent_version_id", sa.Integer(), nullable=True),
        sa.Column("training_run", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("container_image", sa.String(512), nullable=True),
        sa.Column("resources", JSON, nullable=False),
        _created_at(),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.CheckConstraint("version >= 1", name="ck_model_versions_version"),
        _fk("model_versions", "model_id", "models"),
        _fk("model_versions", "parent_version_id", "model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    )
    _index("model_versions", "ix_model_versions_artifact_digest", ["artifact_digest"])
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        _fk("model_aliases", "model_id", "models"),
        _fk("model_aliases", "version_id", "model_versions"),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_model_aliases"),
    )


def _units() -> None:
    op.create_table(
        "units",
        _id(),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(128), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
        sa.UniqueConstraint("name", name="uq_units_name"),
    )
    op.create_table(
        "unit_versions",
        _id(),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("code_version", sa.String(128), server_default="", nullable=False),
        _created_at(),
        _fk("unit_versions", "unit_id", "units"),
        _fk("unit_versions", "model_version_id", "model_versions"),
        _fk("unit_versions", "parent_id", "unit_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_unit_versions"),
        sa.UniqueConstraint("unit_id", "version", "config_hash", name="uq_unit_versions_key"),
    )
    _index("unit_versions", "ix_unit_versions_model_version_id", ["model_version_id"])


def _pipelines() -> None:
    op.create_table(
        "pipelines",
        _id(),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("spec_hash", sa.String(128), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_pipelines"),
        sa.UniqueConstraint("name", "version", name="uq_pipelines_name_version"),
    )
    op.create_table(
        "pipeline_nodes",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("unit_version_id", sa.Integer(), nullable=False),
        _fk("pipeline_nodes", "pipeline_id", "pipelines", ondelete="CASCADE"),
        _fk("pipeline_nodes", "unit_version_id", "unit_versions"),
        sa.PrimaryKeyConstraint("pipeline_id", "node_id", name="pk_pipeline_nodes"),
    )
    _index("pipeline_nodes", "ix_pipeline_nodes_unit_version_id", ["unit_version_id"])
    nodes = ["pipeline_nodes.pipeline_id", "pipeline_nodes.node_id"]
    op.create_table(
        "pipeline_edges",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("src", sa.String(128), nullable=False),
        sa.Column("dst", sa.String(128), nullable=False),
        sa.CheckConstraint("src <> dst", name="ck_pipeline_edges_no_loop"),
        sa.ForeignKeyConstraint(
            ["pipeline_id", "src"],
            nodes,
            name="fk_pipeline_edges_src_pipeline_nodes",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id", "dst"],
            nodes,
            name="fk_pipeline_edges_dst_pipeline_nodes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pipeline_id", "src", "dst", name="pk_pipeline_edges"),
    )


def upgrade() -> None:
    _models()
    _units()
    _pipelines()


def downgrade() -> None:
    for table in (
        "pipeline_edges",
        "pipeline_nodes",
        "pipelines",
        "unit_versions",
        "units",
        "model_aliases",
        "model_versions",
        "models",
    ):
        op.drop_table(table)
