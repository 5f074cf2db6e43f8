"""``POST /v1/search``: the places of an image set most like an example, for services.

The example is a place (``like``: a slide and a level-0 point, answered from the embedded tile
that holds it), a vector, or an uploaded tile (``image``, base64, embedded by the index's own unit
and config). The route lives in this router, which :mod:`serve.ingress` includes; the ingress
hands it the catalog and cold store with :func:`configure` when its replica starts. Errors follow
the API's contract (:mod:`serve.errors`): an unknown slide or set, a missing index or a point
outside every embedded tile answer 404 ``not_found``, a wrong vector length 422 ``invalid``.

Example:
    >>> body = {"image_set": "real-wsi", "like": {"slide": "OS-1-detail", "x": 300, "y": 300}}
    >>> requests.post(f"{url}/v1/search", json=body, headers=auth).json()["hits"][0]["slide"]
    ... # doctest: +SKIP
    'OS-2-ndpi.ome.tif'
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations in the Serve
# replica (see serve/security.py).

import time
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pathray.catalog import Catalog
from pathray.services.search import Filters, SearchResult, SearchService
from serve.errors import ApiError
from serve.schemas import ErrorBody
from serve.security import Inferrer
from serve.validation import ImageLimits, decode_tile

router = APIRouter(tags=["search"])
_state: dict[str, Any] = {}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 422)
}
_TEXT = Field(min_length=1, max_length=200)


def configure(catalog: Catalog, cold_root: str, limits: ImageLimits) -> None:
    """Give the route its catalog, cold store and image limits (once per replica)."""
    _state["service"] = SearchService(catalog, cold_root)
    _state["limits"] = limits


class Place(BaseModel):
    """A level-0 point of a slide."""

    model_config = ConfigDict(extra="forbid")
    slide: int | str = Field(description="Slide id or name (file name or stem).")
    x: float = Field(ge=-1e9, le=1e9, allow_inf_nan=False)
    y: float = Field(ge=-1e9, le=1e9, allow_inf_nan=False)


class SearchRequest(BaseModel):
    """A query by example: exactly one of ``like``, ``vector`` and ``image``.

    Attributes:
        image_set: The image set to search.
        like: A place whose embedded tile is the example.
        vector: The example's vector (the index's length).
        image: An example tile as base64 (RGB, at the embedding unit's resolution).
        k: How many places.
        slides: Only places on these slides (ids or names).
        runs: Only places of these runs.
        labels: Only places with these labels.
        unit: The embedding unit whose index to use (default: the newest).
    """

    model_config = ConfigDict(extra="forbid")
    image_set: str = _TEXT
    like: Place | None = None
    vector: list[float] | None = Field(None, min_length=1, max_length=8192)
    image: str | None = None
    k: int = Field(10, ge=1, le=1000)
    slides: list[int | str] = Field(default_factory=list, max_length=1000)
    runs: list[str] = Field(default_factory=list, max_length=1000)
    labels: list[str] = Field(default_factory=list, max_length=1000)
    unit: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_example(self) -> "SearchRequest":
        given = [n for n in ("like", "vector", "image") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"Exactly one of 'like', 'vector' and 'image' must be given. Got {given or 'none'}."
            )
        return self


class HitOut(BaseModel):
    """One similar place (level-0 pixels of its tile)."""

    slide_id: int
    slide: str
    run_id: str
    tile_id: int
    object_id: int
    x: int
    y: int
    width: int
    height: int
    label: str | None
    distance: float = Field(description="Cosine distance to the example (0: the same).")


class SearchResponse(BaseModel):
    """The most similar places, nearest first."""

    index: str
    query: dict[str, Any]
    hits: list[HitOut]
    elapsed_ms: float


def _service() -> SearchService:
    if "service" not in _state:
        raise ApiError("unavailable", "The search service is starting; retry in a moment.")
    return _state["service"]


@router.post("/v1/search", responses=_ERRORS)
async def search(_: Inferrer, body: SearchRequest) -> SearchResponse:
    """The ``k`` places of an image set most like a place, a vector or an uploaded tile."""
    start = time.perf_counter()
    service = _service()
    filters = Filters(slides=body.slides, runs=body.runs, labels=body.labels)

    def answer() -> SearchResult:
        if body.like is not None:
            like = body.like
            return service.like_place(
                body.image_set, like.slide, like.x, like.y, body.k, filters, body.unit
            )
        vector: Any = body.vector
        if body.image is not None:
            image = decode_tile(body.image, _state["limits"])
            vector = service.embed_image(body.image_set, image, body.unit)
        return service.like_vector(body.image_set, vector, body.k, filters, body.unit)

    result = await run_in_threadpool(answer)
    return SearchResponse(
        index=result.index,
        query=result.query,
        hits=[HitOut(**hit.to_dict()) for hit in result.hits],
        elapsed_ms=(time.perf_counter() - start) * 1000,
    )


__all__ = ["SearchRequest", "SearchResponse", "configure", "router"]
