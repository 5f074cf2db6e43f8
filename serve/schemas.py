"""Request and response bodies of the API (the OpenAPI schema is generated from them).

Request bodies forbid unknown fields, so a typo is an error (``request.extra_field``) rather than a
silently ignored option.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from serve.errors import CODES

#: Names of pipelines and versions the API accepts (no paths: a client never names a file).
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RUN_ID = r"^[A-Za-z0-9_-]{1,64}$"
#: Every error code, for the schema's enum of ``ErrorDetail.code``.
_CODE_ENUM: list[JsonValue] = [*sorted(CODES)]


class ErrorDetail(BaseModel):
    """One error: a stable code and a message for people."""

    code: str = Field(
        examples=["image.not_base64"],
        description="Stable: one per failure (serve.errors.CODES).",
        json_schema_extra={"enum": _CODE_ENUM},
    )
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class InferRequest(BaseModel):
    """A tile to infer on.

    Attributes:
        image: The image file (PNG, JPEG, TIFF, WebP or BMP; RGB) as base64.
        pipeline: A deployed pipeline's name (``GET /v1/pipelines``).
        version: The pipeline's version (default: the newest deployed).
        mpp: Microns per pixel of the tile, checked against the pipeline's resolution.
    """

    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="The image file's bytes as base64 (RGB, 8 bits).")
    pipeline: str = Field(pattern=NAME, examples=["nuclei"])
    version: str | None = Field(None, pattern=NAME)
    mpp: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)


class ObjectOut(BaseModel):
    """One object found in the tile (coordinates in tile pixels)."""

    tile: int
    id: int
    label: str | None
    geometry: dict[str, Any] | None
    properties: dict[str, Any]


class InferResponse(BaseModel):
    """What the pipeline found in the tile."""

    pipeline: str
    version: str
    width: int
    height: int
    tile: dict[str, Any] = Field(description="The tile-level outputs (tissue fraction, counts...).")
    objects: list[ObjectOut]
    labels: dict[str, int] = Field(description="Objects per label.")
    drift_warning: bool
    warnings: list[str] = Field(
        default_factory=list,
        description="'<code>: <message>' per soft check the tile failed: 'image.blank' (a "
        "uniform tile), 'image.no_tissue' (under 5 % tissue). The objects are then suspect.",
    )
    elapsed_ms: float


class PipelineInfo(BaseModel):
    """A deployed pipeline."""

    name: str
    version: str
    description: str
    mpp: float
    units: list[str]
    batching: bool


class JobRequest(BaseModel):
    """A slide job: one pipeline over an image set, or over one slide.

    Exactly one of ``image_set`` and ``slide`` is given.
    """

    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(pattern=NAME, examples=["nuclei"])
    version: str | None = Field(None, pattern=NAME)
    image_set: str | None = Field(None, min_length=1, max_length=200)
    slide: int | None = Field(None, ge=1, le=2**31 - 1)


class UnitProgress(BaseModel):
    """Progress of one unit (pipeline node) of a run."""

    tiles_done: int = 0
    objects: int = 0


class JobStatus(BaseModel):
    """A run's state, with its progress per unit."""

    run_id: str
    pipeline: str
    pipeline_version: str
    image_set: str
    requester: str
    status: str
    tiles_total: int | None
    tiles_done: int | None
    fraction: float | None
    units: dict[str, UnitProgress]
    error: str | None
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None


class Health(BaseModel):
    """Whether the service can answer, with what it serves and what cannot infer."""

    status: str = Field(description="'ok', or 'unhealthy' while a pipeline cannot infer.")
    pipelines: list[str]
    failing: list[str] = Field(
        default_factory=list, description="'name:version' of each pipeline that cannot infer."
    )


__all__ = [
    "NAME",
    "RUN_ID",
    "ErrorBody",
    "Health",
    "InferRequest",
    "InferResponse",
    "JobRequest",
    "JobStatus",
    "ObjectOut",
    "PipelineInfo",
    "UnitProgress",
]
