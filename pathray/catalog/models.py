"""The hot catalog's tables, as SQLAlchemy 2 typed ORM classes.

The ORM classes end in ``Row`` and stay inside the catalog package; callers get the frozen
records of :mod:`pathray.catalog.records`. The schema itself is created and changed only by the
Alembic migrations in ``migrations/versions``; these classes must match them (a test compares
the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

USER_ROLES = ("clinician", "engineer", "admin")
MPP_SOURCES = ("file", "user")
ANNOTATION_SET_KINDS = ("reference", "correction", "import", "model")
ANNOTATION_SOURCES = ("human", "model", "correction", "import")
RUN_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
RESULT_KINDS = ("objects", "tiles")
EVENT_LEVELS = ("debug", "info", "warning", "error")
MODEL_FRAMEWORKS = ("classical", "sklearn", "xgboost", "torch")

JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def _in_check(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (UTC), on every dialect.

    SQLite keeps no time zone, so values are normalised to UTC before they are written and
    tagged UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive datetimes are taken as UTC already)."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Tag the stored value as UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow, server_default=func.now())


class Base(DeclarativeBase):
    """Declarative base of the catalog tables (shared metadata with a naming convention)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserRow(Base):
    """A person or service acting on the catalog."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in_check("role", USER_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _created_at()


class SlideStoreRow(Base):
    """A storage root (folder or URI) holding slide files."""

    __tablename__ = "slide_stores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    root: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created_at()


class SlideRow(Base):
    """One logical slide, identified by the SHA-256 of its content."""

    __tablename__ = "slides"
    __table_args__ = (
        CheckConstraint(
            "(mpp IS NULL AND mpp_source IS NULL) OR "
            f"(mpp IS NOT NULL AND mpp > 0 AND {_in_check('mpp_source', MPP_SOURCES)})",
            name="mpp_source",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), nullable=False, index=True)
    checksum: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    vendor: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    level_count: Mapped[int] = mapped_column(Integer, nullable=False)
    level_dimensions: Mapped[list[Any]] = mapped_column(JSONType, nullable=False)
    level_downsamples: Mapped[list[Any]] = mapped_column(JSONType, nullable=False)
    mpp: Mapped[float | None] = mapped_column(Float)
    mpp_source: Mapped[str | None] = mapped_column(String(8))
    objective_power: Mapped[float | None] = mapped_column(Float)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = _created_at()


class ReplicaRow(Base):
    """A copy of a slide's file on one store."""

    __tablename__ = "replicas"
    __table_args__ = (
        UniqueConstraint("slide_id", "store_id", name="uq_replicas_slide_store"),
        UniqueConstraint("store_id", "relative_path", name="uq_replicas_store_path"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slide_id: Mapped[int] = mapped_column(
        ForeignKey("slides.id", ondelete="CASCADE"), nullable=False
    )
    store_id: Mapped[int] = mapped_column(ForeignKey("slide_stores.id"), nullable=False)
    relative_path: Mapped[str] = mapped_column(Text, nullable=False)


class ImageSetRow(Base):
    """A named set of slides; protected sets freeze their membership and annotations."""

    __tablename__ = "image_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    protected: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    created_at: Mapped[datetime] = _created_at()


class ImageSetMemberRow(Base):
    """Membership of a slide in an image set (many-to-many)."""

    __tablename__ = "image_set_members"

    image_set_id: Mapped[int] = mapped_column(
        ForeignKey("image_sets.id", ondelete="CASCADE"), primary_key=True
    )
    slide_id: Mapped[int] = mapped_column(
        ForeignKey("slides.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AnnotationSetRow(Base):
    """A named collection of annotations: a reference, a correction, an import or model output."""

    __tablename__ = "annotation_sets"
    __table_args__ = (CheckConstraint(_in_check("kind", ANNOTATION_SET_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    image_set_id: Mapped[int | None] = mapped_column(ForeignKey("image_sets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    parent_run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    parent_unit: Mapped[str | None] = mapped_column(String(256))
    labels: Mapped[list[Any]] = mapped_column(JSONType, nullable=False)
    # Who made the set (0007): a reference set's owner may edit it like an engineer.
    owner: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = _created_at()


class AnnotationRow(Base):
    """One annotated shape: WKB geometry in level-0 pixels plus its indexed bounding box."""

    __tablename__ = "annotations"
    __table_args__ = (
        CheckConstraint(_in_check("source", ANNOTATION_SOURCES), name="source"),
        Index(
            "ix_annotations_bbox",
            "annotation_set_id",
            "slide_id",
            "min_x",
            "max_x",
            "min_y",
            "max_y",
        ),
        # A deleted annotation's id is never handed out again (0007): the audit log names
        # annotations by id. PostgreSQL sequences never reuse ids; SQLite needs AUTOINCREMENT.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotation_set_id: Mapped[int] = mapped_column(
        ForeignKey("annotation_sets.id", ondelete="CASCADE"), nullable=False
    )
    slide_id: Mapped[int] = mapped_column(
        ForeignKey("slides.id", ondelete="CASCADE"), nullable=False, index=True
    )
    geometry: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    geom_type: Mapped[str] = mapped_column(String(32), nullable=False)
    min_x: Mapped[float] = mapped_column(Float, nullable=False)
    min_y: Mapped[float] = mapped_column(Float, nullable=False)
    max_x: Mapped[float] = mapped_column(Float, nullable=False)
    max_y: Mapped[float] = mapped_column(Float, nullable=False)
    label: Mapped[str | None] = mapped_column(String(256))
    author: Mapped[str] = mapped_column(String(128), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = _created_at()
    modified_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=func.now()
    )


class RunRow(Base):
    """One execution of a pipeline version over an image set."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in_check("status", RUN_STATUSES), name="status"),
        Index("ix_runs_owner_created_at", "owner", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline_name: Mapped[str] = mapped_column(String(256), nullable=False)
    pipeline_version: Mapped[str] = mapped_column(String(64), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    config_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    code_version: Mapped[str] = mapped_column(String(128), nullable=False)
    image_set_id: Mapped[int] = mapped_column(
        ForeignKey("image_sets.id"), nullable=False, index=True
    )
    requester: Mapped[str] = mapped_column(String(128), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # migration 0005: a cancel is a request the run's driver honours between batches
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested_by: Mapped[str | None] = mapped_column(String(128))
    # migration 0007: the API client the run belongs to (None: an internal run)
    owner: Mapped[str | None] = mapped_column(String(128))


class ResultLocationRow(Base):
    """Where the cold store keeps one unit version's output for one slide of one run."""

    __tablename__ = "result_locations"
    __table_args__ = (
        CheckConstraint(_in_check("kind", RESULT_KINDS), name="kind"),
        UniqueConstraint(
            "run_id",
            "slide_id",
            "unit_name",
            "unit_version",
            "kind",
            name="uq_result_locations_key",
        ),
        Index("ix_result_locations_slide_id", "slide_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id"), nullable=False)
    unit_name: Mapped[str] = mapped_column(String(256), nullable=False)
    unit_version: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    row_count: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _created_at()


class EvaluationRow(Base):
    """Metrics of a run against a reference annotation set (per slide, or overall when NULL)."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    annotation_set_id: Mapped[int] = mapped_column(ForeignKey("annotation_sets.id"), nullable=False)
    slide_id: Mapped[int | None] = mapped_column(ForeignKey("slides.id"))
    unit_name: Mapped[str | None] = mapped_column(String(256))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = _created_at()


class AuditRow(Base):
    """One append-only audit entry: who did what to which entity."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=func.now()
    )
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    entity: Mapped[str] = mapped_column(String(64), nullable=False)
    entity_id: Mapped[str] = mapped_column(String(128), nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)


# -- model registry, units, pipelines (migration 0002) ------------------------------------------


class ModelRow(Base):
    """A named model; its trained states are the rows of ``model_versions``."""

    __tablename__ = "models"
    __table_args__ = (CheckConstraint(_in_check("framework", MODEL_FRAMEWORKS), name="framework"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    framework: Mapped[str] = mapped_column(String(16), nullable=False)
    task: Mapped[str] = mapped_column(String(256), nullable=False, default="", server_default="")
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    created_at: Mapped[datetime] = _created_at()


class ModelVersionRow(Base):
    """One trained state of a model: its content-addressed artifact and how it was made."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        CheckConstraint("version >= 1", name="version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    artifact_digest: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    artifact_uri: Mapped[str] = mapped_column(Text, nullable=False)
    artifact_size: Mapped[int | None] = mapped_column(BigInteger)
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    training_run: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    container_image: Mapped[str | None] = mapped_column(String(512))
    resources: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    #: The model card (:class:`pathray.models.card.ModelCard` as JSON); {} before cards existed.
    card: Mapped[dict[str, Any]] = mapped_column(
        JSONType, nullable=False, default=dict, server_default=text("'{}'")
    )
    created_at: Mapped[datetime] = _created_at()
    created_by: Mapped[str] = mapped_column(String(128), nullable=False)


class ModelAliasRow(Base):
    """A movable name (``champion``, ``staging``) for one version of a model."""

    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), nullable=False)


class UnitRow(Base):
    """A pipeline unit by name; ``role`` is its output role (two units of a role exclude)."""

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    role: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = _created_at()


class UnitVersionRow(Base):
    """A unit version with one validated config (and model version); iterations chain by parent."""

    __tablename__ = "unit_versions"
    __table_args__ = (
        UniqueConstraint("unit_id", "version", "config_hash", name="uq_unit_versions_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    config_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("unit_versions.id"))
    code_version: Mapped[str] = mapped_column(
        String(128), nullable=False, default="", server_default=""
    )
    created_at: Mapped[datetime] = _created_at()


class PipelineRow(Base):
    """A pipeline version: its spec and the hash that identifies it."""

    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_pipelines_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    spec_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = _created_at()


class PipelineNodeRow(Base):
    """A node of a pipeline version's DAG, pinned to one unit version."""

    __tablename__ = "pipeline_nodes"

    pipeline_id: Mapped[int] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    unit_version_id: Mapped[int] = mapped_column(
        ForeignKey("unit_versions.id"), nullable=False, index=True
    )


class PipelineEdgeRow(Base):
    """A precursor relation of a pipeline version: the output of ``src`` feeds ``dst``."""

    __tablename__ = "pipeline_edges"
    __table_args__ = (
        PrimaryKeyConstraint("pipeline_id", "src", "dst", name="pk_pipeline_edges"),
        ForeignKeyConstraint(
            ["pipeline_id", "src"],
            ["pipeline_nodes.pipeline_id", "pipeline_nodes.node_id"],
            name="fk_pipeline_edges_src_pipeline_nodes",
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["pipeline_id", "dst"],
            ["pipeline_nodes.pipeline_id", "pipeline_nodes.node_id"],
            name="fk_pipeline_edges_dst_pipeline_nodes",
            ondelete="CASCADE",
        ),
        CheckConstraint("src <> dst", name="no_loop"),
    )

    pipeline_id: Mapped[int] = mapped_column(Integer, nullable=False)
    src: Mapped[str] = mapped_column(String(128), nullable=False)
    dst: Mapped[str] = mapped_column(String(128), nullable=False)


# -- run control (migration 0005) ---------------------------------------------------------------


class RunEventRow(Base):
    """One event of a run: a driver milestone or a unit's log record (append-only)."""

    __tablename__ = "run_events"
    __table_args__ = (
        CheckConstraint(_in_check("level", EVENT_LEVELS), name="level"),
        Index("ix_run_events_run_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=func.now()
    )
    unit: Mapped[str | None] = mapped_column(String(256))
    level: Mapped[str] = mapped_column(String(16), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)


# -- iterations (migration 0003) ----------------------------------------------------------------

LOOP_STATUSES = ("running", "met", "exhausted", "failed", "cancelled")
ITERATION_STATUSES = ("running", "met", "not_met", "failed")


class IterationLoopRow(Base):
    """An iteration loop: a pipeline node iterated until a requirement holds or a budget ends."""

    __tablename__ = "iteration_loops"
    __table_args__ = (CheckConstraint(_in_check("status", LOOP_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline_name: Mapped[str] = mapped_column(String(256), nullable=False)
    node_id: Mapped[str] = mapped_column(String(128), nullable=False)
    image_set_id: Mapped[int] = mapped_column(ForeignKey("image_sets.id"), nullable=False)
    reference_set_id: Mapped[int] = mapped_column(ForeignKey("annotation_sets.id"), nullable=False)
    requirement: Mapped[str] = mapped_column(Text, nullable=False)
    budget: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    strategy: Mapped[str] = mapped_column(String(32), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    best_number: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = _created_at()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class IterationRow(Base):
    """One iteration: a unit version (and model version), its run, evaluation and verdict."""

    __tablename__ = "iterations"
    __table_args__ = (
        CheckConstraint("number >= 0", name="number"),
        CheckConstraint(_in_check("status", ITERATION_STATUSES), name="status"),
        UniqueConstraint("loop_id", "number", name="uq_iterations_loop_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    loop_id: Mapped[str] = mapped_column(
        ForeignKey("iteration_loops.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("iterations.id"))
    strategy: Mapped[str] = mapped_column(String(32), nullable=False)
    unit_name: Mapped[str] = mapped_column(String(256), nullable=False)
    unit_version_id: Mapped[int | None] = mapped_column(ForeignKey("unit_versions.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), index=True)
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    verdict: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# -- auth (migration 0004) ----------------------------------------------------------------------

TOKEN_ROLES = ("clinician", "engineer", "admin", "service")


class UserCredentialRow(Base):
    """A user's password, as an scrypt hash with its own salt (never the password)."""

    __tablename__ = "user_credentials"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=func.now()
    )


class AuthSessionRow(Base):
    """A login session: the SHA-256 of its random token, its expiry and revocation."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiTokenRow(Base):
    """A role-scoped API token of a service client (only its SHA-256 is stored)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(_in_check("role", TOKEN_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_by: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# -- comparisons (migration 0006) ---------------------------------------------------------------


class ComparisonRow(Base):
    """A run compared with a base run (per slide, or overall when ``slide_id`` is NULL)."""

    __tablename__ = "comparisons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    slide_id: Mapped[int | None] = mapped_column(ForeignKey("slides.id"))
    iou_threshold: Mapped[float] = mapped_column(Float, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = _created_at()
