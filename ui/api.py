"""The viewer's JSON and image routes (all behind the session middleware of :mod:`ui.server`).

- ``GET /api/slides/{id}.dzi`` and ``/api/slides/{id}_files/{level}/{col}_{row}.{ext}``: DeepZoom
  from the slide's own pyramid (:mod:`pathray.slides.deepzoom`);
- ``GET /api/slides/{id}/thumbnail.jpg``;
- ``GET /api/slides/{id}/layers``: the overlay layers with style and legend (:mod:`ui.layers`);
- ``GET /api/slides/{id}/overlay/{layer}``: the objects of a layer in a window, GeoJSON
  (:func:`pathray.results.overlay.overlay_features`) or, with ``format=packed`` (what the
  viewer asks for), columnar (:func:`pathray.results.overlay.overlay_packed`), and
  ``/overlay_tiles/...`` the same rendered into PNG tiles for dense coarse views;
- ``GET /api/slides/{id}/annotations``, ``POST /api/annotations``, ``PATCH`` and ``DELETE
  /api/annotations/{id}``: drawing and editing, with the signed-in user as author;
- ``POST /api/corrections``, ``GET /api/corrections/{set}/summary`` and ``/export``.

Errors a user caused come back as ``{"detail": message}`` with 400, 403, 404 or 409.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import shapely.geometry
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.background import BackgroundTask

from pathray.catalog import Catalog
from pathray.catalog.auth import PermissionDeniedError
from pathray.catalog.records import Annotation
from pathray.errors import (
    ConfigError,
    ConflictError,
    FormatError,
    NotFoundError,
    PathRayError,
    ProtectedError,
)
from pathray.results.overlay import (
    geometries_to_geojson,
    overlay_features,
    overlay_json,
    overlay_packed,
    overlay_tile,
)
from pathray.results.store import ColdStore
from pathray.slides.deepzoom import DeepZoom, TileNotFoundError, deepzoom_for_slide
from ui.layers import parse_layer, slide_layers

_STATUS: list[tuple[type[PathRayError], int]] = [
    (ProtectedError, 403),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (ConfigError, 400),
    (FormatError, 400),
]
THUMBNAIL_PX = 254


def error_response(exc: Exception) -> JSONResponse:
    """The HTTP answer to a PathRayError (a bug is re-raised: it must show as a 500)."""
    if not isinstance(exc, PathRayError):
        raise exc
    code = next((c for cls, c in _STATUS if isinstance(exc, cls)), 400)
    return JSONResponse({"detail": str(exc)}, status_code=code)


class NewAnnotation(BaseModel):
    """A drawn annotation: GeoJSON geometry in level-0 pixels, a label from the set's list."""

    model_config = ConfigDict(extra="forbid")
    annotation_set: str
    slide_id: int
    geometry: dict[str, Any]
    label: str | None = None


class AnnotationChange(BaseModel):
    """An edit: new geometry and/or label, or a correction action."""

    model_config = ConfigDict(extra="forbid")
    geometry: dict[str, Any] | None = None
    label: str | None = None
    action: str | None = None  # accept | relabel | redraw (corrections)


class Promotion(BaseModel):
    """Open a run's results on a slide for correction."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    slide_id: int
    unit: str | None = None
    name: str | None = None


def _shape(geojson: dict[str, Any]) -> Any:
    try:
        geometry = shapely.geometry.shape(geojson)
    except Exception as exc:
        raise ConfigError(f"geometry must be a GeoJSON geometry. Got {geojson!r:.200}.") from exc
    if geometry.is_empty:
        raise ConfigError("geometry must not be empty.")
    return geometry


def annotation_feature(ann: Annotation) -> dict[str, Any]:
    """One annotation as a GeoJSON feature (the shape the viewer reads)."""
    props = ann.properties or {}
    return {
        "type": "Feature",
        "id": ann.id,
        "geometry": geometries_to_geojson([ann.geometry])[0],
        "properties": {
            "label": ann.label,
            "score": (props.get("model") or {}).get("score"),
            "status": props.get("status"),
            "provenance": {
                "author": ann.author,
                "source": ann.source,
                "modified_at": ann.modified_at.isoformat(),
                **({"status": props["status"]} if "status" in props else {}),
            },
        },
    }


def _tiles(catalog: Catalog, slide_id: int) -> DeepZoom:
    return deepzoom_for_slide(catalog, slide_id)


def build_router(catalog: Catalog, store: ColdStore) -> APIRouter:
    """The ``/api`` routes over one catalog and cold store."""
    router = APIRouter(prefix="/api")

    def guarded(fn: Any) -> Any:
        # Every route turns a user's mistake into its HTTP status, one place for all.
        from functools import wraps

        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except PathRayError as exc:
                return error_response(exc)

        return wrapper

    # -- DeepZoom ------------------------------------------------------------------------------

    @router.get("/slides/{slide_id}.dzi")
    @guarded
    def dzi(slide_id: int) -> Response:
        return Response(_tiles(catalog, slide_id).dzi_xml(), media_type="application/xml")

    @router.get("/slides/{slide_id}_files/{level}/{col}_{row}.{ext}")
    @guarded
    def tile(slide_id: int, level: int, col: int, row: int, ext: str) -> Response:
        dz = _tiles(catalog, slide_id)
        if ext != dz.extension:
            raise TileNotFoundError(f"Tile format must be {dz.extension}. Got {ext!r} instead.")
        return Response(
            dz.tile(level, col, row),
            media_type=dz.media_type,
            headers={"cache-control": "private, max-age=86400"},
        )

    @router.get("/slides/{slide_id}/thumbnail.jpg")
    @guarded
    def thumbnail(slide_id: int) -> Response:
        dz = _tiles(catalog, slide_id)
        # The finest DeepZoom level that still fits in one tile is the thumbnail.
        level = next(lv for lv in range(dz.max_level, -1, -1) if dz.grid.tile_count(lv) == (1, 1))
        pixels = dz.tile_pixels(level, 0, 0)
        import imagecodecs

        return Response(
            bytes(imagecodecs.jpeg_encode(pixels, level=80)),
            media_type="image/jpeg",
            headers={"cache-control": "private, max-age=3600"},
        )

    # -- overlays ------------------------------------------------------------------------------

    @router.get("/slides/{slide_id}/layers")
    @guarded
    def layers(slide_id: int) -> Any:
        catalog.get_slide(slide_id)
        return [layer.as_dict() for layer in slide_layers(catalog, slide_id)]

    @router.get("/slides/{slide_id}/overlay/{layer_id}")
    @guarded
    def overlay(
        slide_id: int,
        layer_id: str,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        downsample: float = 1.0,
        max_features: int = 20_000,
        format: str = "geojson",
    ) -> Any:
        # The viewer asks for the packed form (a seventh of the bytes); GeoJSON for the rest.
        build = {"geojson": overlay_features, "packed": overlay_packed}.get(format)
        if build is None:
            raise ConfigError(f"format must be 'geojson' or 'packed'. Got {format!r} instead.")
        data = build(
            catalog,
            store,
            slide_id,
            parse_layer(layer_id),
            (x0, y0, x1, y1),
            downsample=downsample,
            max_features=max_features,
        )
        return Response(overlay_json(data), media_type="application/json")

    @router.get("/slides/{slide_id}/overlay_tiles/{layer_id}/{level}/{col}_{row}.png")
    @guarded
    def overlay_png(slide_id: int, layer_id: str, level: int, col: int, row: int) -> Response:
        data = overlay_tile(catalog, store, slide_id, parse_layer(layer_id), level, col, row)
        return Response(data, media_type="image/png")

    # -- annotations -----------------------------------------------------------------------------

    @router.get("/slides/{slide_id}/annotations")
    @guarded
    def annotations(slide_id: int, annotation_set: str) -> Any:
        found = catalog.query_annotations(annotation_set, slide_id)
        return {"type": "FeatureCollection", "features": [annotation_feature(a) for a in found]}

    @router.post("/annotations", status_code=201)
    @guarded
    def create(body: NewAnnotation, request: Request) -> Any:
        user = request.state.user.name
        geometry = _shape(body.geometry)
        target = catalog.get_annotation_set(body.annotation_set)
        if target.kind == "correction":
            made = catalog.add_missed_object(
                body.annotation_set, body.slide_id, geometry, body.label, actor=user
            )
            return annotation_feature(made)
        catalog.add_annotations(
            body.annotation_set, body.slide_id, [(geometry, body.label, None)], author=user
        )
        # add_annotations counts; the new row is the newest of this author with this shape.
        mine = [
            a
            for a in catalog.query_annotations(body.annotation_set, body.slide_id, geometry.bounds)
            if a.author == user and a.geometry.equals_exact(geometry, 1e-6)
        ]
        return annotation_feature(max(mine, key=lambda a: a.id))

    @router.patch("/annotations/{annotation_id}")
    @guarded
    def change(annotation_id: int, body: AnnotationChange, request: Request) -> Any:
        user = request.state.user.name
        ann = catalog.get_annotation(annotation_id)
        geometry = None if body.geometry is None else _shape(body.geometry)
        if "status" in (ann.properties or {}):  # an object of a correction set
            if body.action == "accept":
                ann = catalog.accept_object(annotation_id, actor=user)
            if body.label is not None and body.label != ann.label:
                ann = catalog.relabel_object(annotation_id, body.label, actor=user)
            if geometry is not None:
                ann = catalog.redraw_object(annotation_id, geometry, actor=user)
            return annotation_feature(ann)
        if body.action not in (None, "redraw", "relabel"):
            raise ConfigError(
                f"action must be one of accept, relabel or redraw. Got {body.action!r} instead."
            )
        ann = catalog.update_annotation(annotation_id, geometry, body.label, actor=user)
        return annotation_feature(ann)

    @router.delete("/annotations/{annotation_id}")
    @guarded
    def delete(annotation_id: int, request: Request) -> Any:
        user = request.state.user.name
        ann = catalog.get_annotation(annotation_id)
        if "status" in (ann.properties or {}):
            # A rejected model object stays (the summary counts it); an added one goes.
            catalog.reject_object(annotation_id, actor=user)
            return {"rejected": annotation_id}
        catalog.delete_annotation(annotation_id, actor=user)
        return {"deleted": annotation_id}

    # -- corrections -----------------------------------------------------------------------------

    @router.post("/corrections", status_code=201)
    @guarded
    def promote(body: Promotion, request: Request) -> Any:
        made = catalog.promote_run(
            body.run_id,
            body.slide_id,
            store,
            name=body.name,
            unit=body.unit,
            actor=request.state.user.name,
        )
        return {"annotation_set": made.name, "layer": f"ann:{made.name}"}

    @router.get("/corrections/{set_name}/summary")
    @guarded
    def summary(set_name: str, slide_id: int | None = None) -> Any:
        return catalog.correction_summary(set_name, slide_id).as_dict()

    @router.get("/corrections/{set_name}/export")
    @guarded
    def export(set_name: str, slide_id: int, fmt: str = "geojson") -> Response:
        suffix = {"geojson": ".geojson", "asap": ".xml"}.get(fmt)
        if suffix is None:
            raise ConfigError(f"fmt must be 'geojson' or 'asap'. Got {fmt!r} instead.")
        folder = Path(tempfile.mkdtemp(prefix="pathray-export-"))
        path = catalog.export_corrections(set_name, slide_id, folder / f"{set_name}{suffix}", fmt)
        media = "application/geo+json" if fmt == "geojson" else "application/xml"
        # The file goes once sent: nothing the app writes stays on disk.
        cleanup = BackgroundTask(shutil.rmtree, folder, ignore_errors=True)
        return FileResponse(path, media_type=media, filename=path.name, background=cleanup)

    return router
