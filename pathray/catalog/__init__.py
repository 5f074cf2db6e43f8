"""The hot catalog: a small transactional SQL store (SQLite by default, PostgreSQL on a cluster).

It keeps slides and their replicas on stores, image sets (with protection), annotation sets and
annotations (WKB geometry plus indexed bounding boxes), runs, the locations of their results in
the cold store, evaluations, the model registry (models, versions, aliases), unit versions and
pipeline versions with their DAGs, users and an append-only audit log. Open it with
:meth:`Catalog.open`; the schema is managed by the Alembic migrations in ``migrations/``.
"""

from pathray.catalog.api import Catalog
from pathray.catalog.records import (
    Annotation,
    AnnotationSet,
    AuditEntry,
    Evaluation,
    ImageSet,
    Model,
    ModelVersion,
    PipelineRecord,
    Replica,
    ResultLocation,
    Run,
    Slide,
    SlideStore,
    UnitVersion,
    User,
)

__all__ = [
    "Annotation",
    "AnnotationSet",
    "AuditEntry",
    "Catalog",
    "Evaluation",
    "ImageSet",
    "Model",
    "ModelVersion",
    "PipelineRecord",
    "Replica",
    "ResultLocation",
    "Run",
    "Slide",
    "SlideStore",
    "UnitVersion",
    "User",
]
