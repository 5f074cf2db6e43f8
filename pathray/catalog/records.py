"""Frozen records returned by the catalog API.

Records are plain values, built inside a session and safe to use after it closes, to pickle
and to send to Ray workers. The ORM rows of :mod:`pathray.catalog.models` never leave the
catalog package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

import shapely
from shapely.geometry.base import BaseGeometry

from pathray.catalog.models import (
    AnnotationRow,
    AnnotationSetRow,
    AuditRow,
    EvaluationRow,
    ImageSetRow,
    ModelRow,
    ModelVersionRow,
    PipelineRow,
    ResultLocationRow,
    RunRow,
    SlideRow,
    SlideStoreRow,
    UnitVersionRow,
    UserRow,
)

Role = Literal["clinician", "engineer", "admin"]
MppSource = Literal["file", "user"]
AnnotationSetKind = Literal["reference", "correction", "import", "model"]
AnnotationSource = Literal["human", "model", "correction", "import"]
RunStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
ResultKind = Literal["objects", "tiles"]
Framework = Literal["classical", "sklearn", "xgboost", "torch"]

TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class User:
    """A person or service known to the catalog."""

    id: int
    name: str
    role: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: UserRow) -> User:
        """Build the record from its ORM row."""
        return cls(row.id, row.name, row.role, row.created_at)


@dataclass(frozen=True)
class SlideStore:
    """A storage root (folder or URI) holding slide files."""

    id: int
    name: str
    root: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: SlideStoreRow) -> SlideStore:
        """Build the record from its ORM row."""
        return cls(row.id, row.name, row.root, row.created_at)


class Replica(NamedTuple):
    """Where one copy of a slide lives: the store's root and the path below it."""

    root: str
    relative_path: str

    @property
    def location(self) -> str:
        """The root and the relative path joined with ``/`` (a path or a URI)."""
        return f"{self.root.rstrip('/')}/{self.relative_path.lstrip('/')}"


@dataclass(frozen=True)
class Slide:
    """One logical slide (its replicas are in :meth:`Catalog.replicas_of`).

    Attributes:
        level_dimensions: ``(width, height)`` of every pyramid level, level 0 first.
        level_downsamples: Downsample factor of every level relative to level 0.
        mpp: Microns per pixel at level 0, or None when unknown.
        mpp_source: ``"file"`` (read from the slide), ``"user"`` (set by hand) or None.
    """

    id: int
    name: str
    checksum: str
    vendor: str | None
    format: str | None
    width: int
    height: int
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    mpp_source: str | None
    objective_power: float | None
    properties: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: SlideRow) -> Slide:
        """Build the record from its ORM row."""
        return cls(
            id=row.id,
            name=row.name,
            checksum=row.checksum,
            vendor=row.vendor,
            format=row.format,
            width=row.width,
            height=row.height,
            level_count=row.level_count,
            level_dimensions=tuple((int(w), int(h)) for w, h in row.level_dimensions),
            level_downsamples=tuple(float(d) for d in row.level_downsamples),
            mpp=row.mpp,
            mpp_source=row.mpp_source,
            objective_power=row.objective_power,
            properties=dict(row.properties),
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class ImageSet:
    """A named set of slides."""

    id: int
    name: str
    description: str
    protected: bool
    slide_count: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: ImageSetRow, slide_count: int) -> ImageSet:
        """Build the record from its ORM row and its number of member slides."""
        return cls(row.id, row.name, row.description, row.protected, slide_count, row.created_at)


@dataclass(frozen=True)
class AnnotationSet:
    """A named collection of annotations, optionally bound to an image set."""

    id: int
    name: str
    image_set_id: int | None
    image_set: str | None
    kind: str
    labels: tuple[str, ...]
    parent_run_id: str | None
    parent_unit: str | None
    created_at: datetime
    owner: str | None = None

    @classmethod
    def from_row(cls, row: AnnotationSetRow, image_set: str | None) -> AnnotationSet:
        """Build the record from its ORM row and the name of its image set."""
        return cls(
            id=row.id,
            name=row.name,
            image_set_id=row.image_set_id,
            image_set=image_set,
            kind=row.kind,
            labels=tuple(row.labels),
            parent_run_id=row.parent_run_id,
            parent_unit=row.parent_unit,
            created_at=row.created_at,
            owner=row.owner,
        )


@dataclass(frozen=True)
class Annotation:
    """One annotated shape in level-0 pixel coordinates."""

    id: int
    annotation_set_id: int
    slide_id: int
    geometry: BaseGeometry
    label: str | None
    author: str
    source: str
    properties: dict[str, Any]
    created_at: datetime
    modified_at: datetime

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(min_x, min_y, max_x, max_y)`` of the geometry."""
        x0, y0, x1, y1 = self.geometry.bounds
        return (x0, y0, x1, y1)

    @classmethod
    def from_row(cls, row: AnnotationRow) -> Annotation:
        """Build the record from its ORM row, decoding the WKB geometry."""
        return cls(
            id=row.id,
            annotation_set_id=row.annotation_set_id,
            slide_id=row.slide_id,
            geometry=shapely.from_wkb(row.geometry),
            label=row.label,
            author=row.author,
            source=row.source,
            properties=dict(row.properties),
            created_at=row.created_at,
            modified_at=row.modified_at,
        )


@dataclass(frozen=True)
class Run:
    """One execution of a pipeline version over an image set."""

    id: str
    pipeline_name: str
    pipeline_version: str
    spec: dict[str, Any]
    config_hash: str
    code_version: str
    image_set_id: int
    image_set: str
    requester: str
    status: str
    progress: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None = None
    cancel_requested_by: str | None = None
    owner: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the run reached a terminal status (succeeded, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_row(cls, row: RunRow, image_set: str) -> Run:
        """Build the record from its ORM row and the name of its image set."""
        return cls(
            id=row.id,
            pipeline_name=row.pipeline_name,
            pipeline_version=row.pipeline_version,
            spec=dict(row.spec),
            config_hash=row.config_hash,
            code_version=row.code_version,
            image_set_id=row.image_set_id,
            image_set=image_set,
            requester=row.requester,
            status=row.status,
            progress=dict(row.progress),
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            cancel_requested_at=row.cancel_requested_at,
            cancel_requested_by=row.cancel_requested_by,
            owner=row.owner,
        )


@dataclass(frozen=True)
class ResultLocation:
    """Where one unit version's output for one slide of one run lives in the cold store."""

    id: int
    run_id: str
    slide_id: int
    unit_name: str
    unit_version: str
    kind: str
    uri: str
    row_count: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: ResultLocationRow) -> ResultLocation:
        """Build the record from its ORM row."""
        return cls(
            id=row.id,
            run_id=row.run_id,
            slide_id=row.slide_id,
            unit_name=row.unit_name,
            unit_version=row.unit_version,
            kind=row.kind,
            uri=row.uri,
            row_count=row.row_count,
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a run against a reference annotation set; ``slide_id`` None = overall."""

    id: int
    run_id: str
    annotation_set_id: int
    annotation_set: str
    slide_id: int | None
    unit_name: str | None
    metrics: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: EvaluationRow, annotation_set: str) -> Evaluation:
        """Build the record from its ORM row and the name of its annotation set."""
        return cls(
            id=row.id,
            run_id=row.run_id,
            annotation_set_id=row.annotation_set_id,
            annotation_set=annotation_set,
            slide_id=row.slide_id,
            unit_name=row.unit_name,
            metrics=dict(row.metrics),
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: AuditRow) -> AuditEntry:
        """Build the record from its ORM row."""
        return cls(row.id, row.at, row.actor, row.action, row.entity, row.entity_id, row.details)


# -- model registry, units, pipelines ---------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A registered model.

    Attributes:
        framework: ``"classical"``, ``"sklearn"``, ``"xgboost"`` or ``"torch"``.
        task: What the model does (``"nucleus segmentation"``, ...), free text.
        latest_version: Its highest version number, or None before the first version.
        aliases: Alias -> version number (``{"champion": 3}``).
    """

    id: int
    name: str
    framework: str
    task: str
    description: str
    latest_version: int | None
    aliases: dict[str, int]
    created_at: datetime

    @classmethod
    def from_row(cls, row: ModelRow, latest_version: int | None, aliases: dict[str, int]) -> Model:
        """Build the record from its ORM row, its newest version number and its aliases."""
        return cls(
            id=row.id,
            name=row.name,
            framework=row.framework,
            task=row.task,
            description=row.description,
            latest_version=latest_version,
            aliases=dict(aliases),
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class ModelVersion:
    """One trained state of a model: its artifact, the training run that made it, its metrics.

    Attributes:
        model: Name of the model.
        version: 1, 2, 3, ... within the model.
        artifact_digest: SHA-256 of the artifact in the cold store's artifact store.
        artifact_uri: Where the artifact was stored when the version was recorded.
        artifact_size: Its size in bytes, when known.
        parent_version: Version number this one was derived from (fine-tuned, retrained).
        training_run: Image set, annotation set, config, code version and seed of the training.
        resources: ``{"cpus": float, "gpus": float, "memory_mb": int | None}`` it needs.
        aliases: The aliases pointing at this version.
        card: Its model card as JSON data (see :mod:`pathray.models.card`); empty for versions
            registered without one.
    """

    id: int
    model_id: int
    model: str
    version: int
    artifact_digest: str
    artifact_uri: str
    artifact_size: int | None
    parent_version_id: int | None
    parent_version: int | None
    training_run: dict[str, Any]
    metrics: dict[str, Any]
    container_image: str | None
    resources: dict[str, Any]
    aliases: tuple[str, ...]
    created_at: datetime
    created_by: str
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``name@version``, e.g. ``nuclei-rf@3``."""
        return f"{self.model}@{self.version}"

    @classmethod
    def from_row(
        cls,
        row: ModelVersionRow,
        model: str,
        parent_version: int | None,
        aliases: tuple[str, ...] = (),
    ) -> ModelVersion:
        """Build the record from its ORM row, its model's name, its parent's number, aliases."""
        return cls(
            id=row.id,
            model_id=row.model_id,
            model=model,
            version=row.version,
            artifact_digest=row.artifact_digest,
            artifact_uri=row.artifact_uri,
            artifact_size=row.artifact_size,
            parent_version_id=row.parent_version_id,
            parent_version=parent_version,
            training_run=dict(row.training_run),
            metrics=dict(row.metrics),
            container_image=row.container_image,
            resources=dict(row.resources),
            aliases=tuple(sorted(aliases)),
            card=dict(row.card or {}),
            created_at=row.created_at,
            created_by=row.created_by,
        )


@dataclass(frozen=True)
class UnitVersion:
    """A unit version with one validated config, optionally bound to a model version.

    Attributes:
        unit: Name of the unit.
        role: The unit's output role (units of one role exclude each other), if declared.
        config_hash: Hash of the validated config (it identifies the version with ``version``).
        model_version_id: The model version the unit loads, or None (classical code).
        parent_id: The unit version this one iterates on (retrained, reconfigured), or None.
    """

    id: int
    unit_id: int
    unit: str
    role: str | None
    version: str
    config: dict[str, Any]
    config_hash: str
    model_version_id: int | None
    parent_id: int | None
    code_version: str
    created_at: datetime

    @property
    def ref(self) -> str:
        """``unit@version#hash`` with the first 8 digits of the config hash."""
        return f"{self.unit}@{self.version}#{self.config_hash[:8]}"

    @classmethod
    def from_row(cls, row: UnitVersionRow, unit: str, role: str | None) -> UnitVersion:
        """Build the record from its ORM row and its unit's name and role."""
        return cls(
            id=row.id,
            unit_id=row.unit_id,
            unit=unit,
            role=role,
            version=row.version,
            config=dict(row.config),
            config_hash=row.config_hash,
            model_version_id=row.model_version_id,
            parent_id=row.parent_id,
            code_version=row.code_version,
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class PipelineRecord:
    """A stored pipeline version: its spec, and its DAG of pinned unit versions.

    Attributes:
        spec_hash: Hash of the spec; a name and version always keep the same spec.
        nodes: Node id -> unit version id.
        edges: ``(src, dst)`` precursor relations, sorted.
    """

    id: int
    name: str
    version: str
    spec: dict[str, Any]
    spec_hash: str
    nodes: dict[str, int]
    edges: tuple[tuple[str, str], ...]
    created_at: datetime

    @classmethod
    def from_row(
        cls, row: PipelineRow, nodes: dict[str, int], edges: list[tuple[str, str]]
    ) -> PipelineRecord:
        """Build the record from its ORM row, its nodes and its edges."""
        return cls(
            id=row.id,
            name=row.name,
            version=row.version,
            spec=dict(row.spec),
            spec_hash=row.spec_hash,
            nodes=dict(sorted(nodes.items())),
            edges=tuple(sorted(edges)),
            created_at=row.created_at,
        )
