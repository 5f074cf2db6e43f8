"""Overlay data for a slide viewer: what to draw over one window of a slide.

Two kinds of layer feed the viewer:

- ``annotations``: an annotation set of the catalog (a reference, an import, a correction);
- ``run``: the objects a run wrote to the cold store (one unit's output, through
  :meth:`~pathray.results.store.ColdStore.query_region`); for a unit that classifies tiles
  instead (``tile_classifier``), its class map: each tile's core, labelled with its class and
  filled in the class colour in raster tiles (:mod:`pathray.results.tile_classes`).

:func:`overlay_features` returns a GeoJSON FeatureCollection of the objects meeting a level-0
window. Zoomed in (``downsample <= fine_max_downsample``) every object comes as its polygon;
zoomed out, objects come as centroids (points), except annotations large enough to be seen as
shapes at that zoom, which keep a simplified outline. At most ``max_features`` features come
back; ``truncated`` says whether some were left out (centroids are thinned evenly over the
window, so a capped view still shows where objects are). Each feature carries its id, label,
score and provenance (the run and unit version, or the annotation's author, source and time).

:func:`overlay_tile` renders a layer into a transparent PNG aligned with a DeepZoom tile, for
views too dense to send as vectors.

Example:
    >>> layer = Layer.run(run_id)  # doctest: +SKIP
    >>> box = (0, 0, 4096, 4096)
    >>> fc = overlay_features(catalog, store, 1, layer, box, downsample=2)  # doctest: +SKIP
    >>> fc["mode"], fc["truncated"], len(fc["features"])  # doctest: +SKIP
    ('polygons', False, 812)
"""

from __future__ import annotations

import gc
import json
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import pyarrow as pa
import shapely

from pathray.catalog.corrections import AnnotationView
from pathray.errors import ConfigError, NotFoundError
from pathray.results.tile_classes import FILL_ALPHA, is_tile_class_layer, read_tile_classes
from pathray.slides.deepzoom import DeepZoomGrid

if TYPE_CHECKING:
    from pathray.catalog import Catalog
    from pathray.results.location import Location
    from pathray.results.store import ColdStore

LayerKind = Literal["annotations", "run"]
Mode = Literal["auto", "polygons", "centroids"]
BBox = tuple[float, float, float, float]

#: Features per request unless the caller asks otherwise.
DEFAULT_MAX_FEATURES = 5000
#: Zoomed in at or below this downsample (level-0 px per screen px), polygons are sent.
FINE_MAX_DOWNSAMPLE = 4.0
#: In centroid mode, annotations at least this many screen pixels across stay polygons.
MIN_SHAPE_PX = 12.0

# Distinct colours (Tableau 10) picked per label by a stable hash.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


@dataclass(frozen=True)
class Layer:
    """One overlay layer: an annotation set, or one unit's objects of a run.

    Attributes:
        kind: ``"annotations"`` or ``"run"``.
        ref: The annotation set's name, or the run id.
        unit: For a run: the unit (pipeline node id) whose objects to show; None picks the
            last object-producing unit the run recorded for the slide.
    """

    kind: LayerKind
    ref: str
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("annotations", "run"):
            raise ConfigError(f"layer kind must be 'annotations' or 'run'. Got {self.kind!r}.")
        if not self.ref:
            raise ConfigError("A layer must name an annotation set or a run. Got ''.")

    @classmethod
    def annotations(cls, name: str) -> Layer:
        """The layer of an annotation set."""
        return cls("annotations", name)

    @classmethod
    def run(cls, run_id: str, unit: str | None = None) -> Layer:
        """The layer of a run's objects (of one unit)."""
        return cls("run", run_id, unit)


@dataclass
class _Objects:
    """Objects of one window, column-wise (geometries only in polygon mode)."""

    ids: list[Any]
    labels: list[str | None]
    scores: list[float | None]
    cx: np.ndarray
    cy: np.ndarray
    geoms: np.ndarray | None
    #: What all objects share (the run and unit, or the annotation set) ...
    provenance: dict[str, Any]
    total: int
    #: ... and what each has of its own (author, source, time, status), column-wise.
    provenance_columns: dict[str, list[Any]] = field(default_factory=dict)
    #: Level-0 boxes ``(n, 4)`` of a class map's tiles, filled rather than outlined in tiles.
    boxes: np.ndarray | None = None


def label_color(label: str | None, colors: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """The display colour of a label: from ``colors`` (``'#rrggbb'``) or a stable palette pick."""
    if colors and label is not None and label in colors:
        value = colors[label].lstrip("#")
        return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    if label is None:
        return (255, 215, 0)
    return PALETTE[zlib.crc32(label.encode()) % len(PALETTE)]


def overlay_features(
    catalog: Catalog,
    store: ColdStore | None,
    slide_id: int,
    layer: Layer,
    bbox: BBox,
    downsample: float = 1.0,
    *,
    max_features: int = DEFAULT_MAX_FEATURES,
    mode: Mode = "auto",
    fine_max_downsample: float = FINE_MAX_DOWNSAMPLE,
    label: str | None = None,
) -> dict[str, Any]:
    """The objects of a layer meeting a window of a slide, as a GeoJSON FeatureCollection.

    Args:
        catalog: The catalog.
        store: The cold store (needed for run layers).
        slide_id: The slide.
        layer: What to show (:class:`Layer`).
        bbox: The window ``(x0, y0, x1, y1)`` in level-0 pixels.
        downsample: Level-0 pixels per screen pixel of the view (the zoom).
        max_features: At most this many features come back.
        mode: ``"polygons"``, ``"centroids"``, or ``"auto"``: polygons when
            ``downsample <= fine_max_downsample`` and the window holds at most
            ``max_features`` objects, centroids otherwise.
        fine_max_downsample: The coarsest zoom at which ``auto`` sends polygons.
        label: Only objects with this label.

    Returns:
        ``{"type": "FeatureCollection", "features": [...], "mode", "truncated", "total",
        "returned", "bbox", "downsample", "layer"}``. Each feature has an ``id`` and
        ``properties`` ``label``, ``score``, ``color`` and ``provenance``; ``total`` is the
        number of objects in the window, ``truncated`` whether fewer were returned.

    Raises:
        ConfigError: A bad window, zoom, cap or mode, or a run layer without a store.
        NotFoundError: The slide, annotation set, run or unit does not exist (or the run
            has no objects).
    """
    box = _check_window(bbox, downsample, max_features, mode)
    objects, chosen = _collect(
        catalog,
        store,
        slide_id,
        layer,
        box,
        downsample,
        max_features,
        mode,
        fine_max_downsample,
        label,
    )
    features = _features(objects, chosen)
    return {
        "type": "FeatureCollection",
        "features": features,
        **_summary(objects, chosen, len(features), box, downsample, layer),
    }


def overlay_packed(
    catalog: Catalog,
    store: ColdStore | None,
    slide_id: int,
    layer: Layer,
    bbox: BBox,
    downsample: float = 1.0,
    *,
    max_features: int = DEFAULT_MAX_FEATURES,
    mode: Mode = "auto",
    fine_max_downsample: float = FINE_MAX_DOWNSAMPLE,
    label: str | None = None,
) -> dict[str, Any]:
    """The same objects as :func:`overlay_features`, in the packed columnar form.

    What the viewer asks for: about a seventh of the bytes of GeoJSON, built and parsed several
    times faster (see :mod:`pathray.results.packed` for the layout). Arguments, errors and
    the summary keys (``mode``, ``total``, ``returned``, ``truncated``, ``bbox``,
    ``downsample``, ``layer``) are those of :func:`overlay_features`.

    Returns:
        ``{"format": "packed", ...summary, "ids", "labels", "scores", "provenance",
        "provenance_columns", "geometry"}``: ``labels`` (``{"values", "index"}``, with
        ``colors`` per value) and each of ``provenance_columns`` are dictionary-encoded;
        ``scores`` is None when no object has one; ``provenance`` is what all objects share.

    Example:
        >>> pk = overlay_packed(catalog, store, 1, layer, (0, 0, 4096, 4096))  # doctest: +SKIP
        >>> pk["geometry"]["parts"][:3]  # doctest: +SKIP
        [1, 1, 1]
    """
    from pathray.results.packed import coordinate_quantum, dictionary_encode, pack_geometries

    box = _check_window(bbox, downsample, max_features, mode)
    with gc_paused():  # tens of thousands of rows and list items, none in a cycle
        objects, chosen = _collect(
            catalog,
            store,
            slide_id,
            layer,
            box,
            downsample,
            max_features,
            mode,
            fine_max_downsample,
            label,
        )
        labels = dictionary_encode(objects.labels)
        labels["colors"] = ["#{:02x}{:02x}{:02x}".format(*label_color(v)) for v in labels["values"]]
        scores = [None if s is None or not math.isfinite(s) else s for s in objects.scores]
        geometry = pack_geometries(
            objects.geoms, coordinate_quantum(downsample), (objects.cx, objects.cy)
        )
        provenance_columns = {
            k: dictionary_encode(v) for k, v in objects.provenance_columns.items()
        }
    return {
        "format": "packed",
        **_summary(objects, chosen, len(objects.ids), box, downsample, layer),
        "ids": list(objects.ids),
        "labels": labels,
        "scores": scores if any(s is not None for s in scores) else None,
        "provenance": objects.provenance,
        "provenance_columns": provenance_columns,
        "geometry": geometry,
    }


def _summary(
    objects: _Objects, mode: str, returned: int, box: BBox, downsample: float, layer: Layer
) -> dict[str, Any]:
    return {
        "mode": mode,
        "total": objects.total,
        "returned": returned,
        "truncated": returned < objects.total,
        "bbox": list(box),
        "downsample": float(downsample),
        "layer": {"kind": layer.kind, "ref": layer.ref, "unit": layer.unit},
    }


def _collect(
    catalog: Catalog,
    store: ColdStore | None,
    slide_id: int,
    layer: Layer,
    box: BBox,
    downsample: float,
    cap: int,
    mode: str,
    fine_max: float,
    label: str | None,
    light: bool = False,
) -> tuple[_Objects, str]:
    """The objects of a window, column-wise, and the mode chosen for them.

    ``light`` skips what only GeoJSON features carry (annotation provenance), for raster tiles.
    """
    if layer.kind == "annotations":
        return _annotation_objects(
            catalog, slide_id, layer, box, downsample, cap, mode, fine_max, label, light
        )
    if store is None:
        raise ConfigError("A run layer needs the cold store. Got store=None instead.")
    fine_zoom = downsample <= fine_max
    if is_tile_class_layer(catalog, layer.ref, slide_id, layer.unit):
        return _run_tile_classes(catalog, store, slide_id, layer, box, cap, mode, fine_zoom, label)
    return _run_objects(catalog, store, slide_id, layer, box, cap, mode, fine_zoom, label)


def _check_window(bbox: BBox, downsample: float, max_features: int, mode: str) -> BBox:
    try:
        x0, y0, x1, y1 = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ConfigError(f"bbox must be four numbers (x0, y0, x1, y1). Got {bbox!r}.") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
        raise ConfigError(f"bbox must be (x0, y0, x1, y1) with x0 <= x1, y0 <= y1. Got {bbox}.")
    if not (isinstance(downsample, int | float) and math.isfinite(downsample) and downsample > 0):
        raise ConfigError(f"downsample must be a positive number. Got {downsample!r} instead.")
    if not isinstance(max_features, int) or max_features < 1:
        raise ConfigError(f"max_features must be a positive integer. Got {max_features!r}.")
    if mode not in ("auto", "polygons", "centroids"):
        raise ConfigError(f"mode must be 'auto', 'polygons' or 'centroids'. Got {mode!r}.")
    return (x0, y0, x1, y1)


def _even_pick(n: int, cap: int) -> np.ndarray:
    """``cap`` indices spread evenly over ``range(n)`` (all of them when ``n <= cap``)."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


# -- annotations ----------------------------------------------------------------------------


def _annotation_view(
    catalog: Catalog,
    slide_id: int,
    layer: Layer,
    box: BBox,
    label: str | None,
    cap: int,
    every: int,
    light: bool,
    min_extent: float | None = None,
) -> AnnotationView:
    """A thinned view of a window; ``light`` reads only ids, boxes and labels (raster tiles)."""
    if not light:
        return catalog.annotation_view(
            layer.ref,
            slide_id,
            box,
            label=label,
            limit=cap,
            shapes=False,
            every=every,
            min_extent=min_extent,
        )
    ids, boxes, labels = catalog.annotation_boxes(
        layer.ref, slide_id, box, label=label, every=every, min_extent=min_extent
    )
    n = min(len(ids), cap)
    return AnnotationView(
        ids=ids[:n],
        labels=labels[:n],
        bboxes=boxes[:n],
        wkb=None,
        authors=[""] * n,
        sources=[""] * n,
        modified=[""] * n,
        status=[None] * n,
        scores=[None] * n,
    )


def _annotation_objects(
    catalog: Catalog,
    slide_id: int,
    layer: Layer,
    box: BBox,
    downsample: float,
    cap: int,
    mode: str,
    fine_max: float,
    label: str | None,
    light: bool = False,
) -> tuple[_Objects, str]:
    total = catalog.count_annotations_in(layer.ref, slide_id, box, label=label)
    fine = mode == "polygons" or (mode == "auto" and downsample <= fine_max and total <= cap)
    if fine:
        view = catalog.annotation_view(layer.ref, slide_id, box, label=label, limit=cap)
        geoms = np.asarray(shapely.from_wkb(np.array(view.wkb, dtype=object)), dtype=object)
    else:
        # The database thins evenly (ids divisible by a stride): only about ``cap`` rows
        # come back however many annotations the window holds.
        every = max(1, math.ceil(total / cap))
        min_extent = MIN_SHAPE_PX * downsample
        view = _annotation_view(catalog, slide_id, layer, box, label, cap, every, light)
        if every > 1:  # big shapes are never thinned away
            big_view = _annotation_view(
                catalog, slide_id, layer, box, label, cap, 1, light, min_extent
            )
            view = view.merged(big_view)
        # Coarse views keep big shapes (tumour outlines) as shapes: only small ones are points.
        big = [
            i
            for i, (x0, y0, x1, y1) in enumerate(view.bboxes)
            if max(x1 - x0, y1 - y0) >= min_extent
        ]
        geoms = np.empty(len(view.ids), dtype=object)
        for i, g in zip(big, catalog.annotation_geometries(view.ids_of(big)), strict=True):
            geoms[i] = g.simplify(downsample, preserve_topology=True)
    bounds = np.asarray(view.bboxes, np.float64).reshape(-1, 4)
    objects = _Objects(
        ids=list(view.ids),
        labels=list(view.labels),
        scores=list(view.scores),
        cx=(bounds[:, 0] + bounds[:, 2]) / 2,
        cy=(bounds[:, 1] + bounds[:, 3]) / 2,
        geoms=geoms,
        provenance={"annotation_set": layer.ref},
        total=total,
        provenance_columns={
            "author": list(view.authors),
            "source": list(view.sources),
            "modified_at": list(view.modified),
            "status": list(view.status),
        },
    )
    return objects, "polygons" if fine else "centroids"


# -- run results ----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _run_columns(uri: Location) -> frozenset[str]:
    import lance

    return frozenset(lance.dataset(uri.uri, storage_options=uri.storage_options).schema.names)


def run_provenance(
    catalog: Catalog, run_id: str, slide_id: int, unit: str | None, kind: str = "objects"
) -> dict[str, Any]:
    """Provenance of a run's objects on a slide: run, pipeline, unit name and version.

    Args:
        catalog: The catalog.
        run_id: The run.
        slide_id: The slide.
        unit: The unit (pipeline node id); None picks the last one that produced objects.
        kind: What the unit produced: ``objects``, or ``tiles`` (a class map's tile classes).

    Returns:
        ``{"run_id", "pipeline", "pipeline_version", "unit", "unit_version"}``.

    Raises:
        NotFoundError: The run does not exist, or recorded no objects of that unit.
    """
    run = catalog.get_run(run_id)
    locations = catalog.result_locations(run_id=run_id, slide_id=slide_id, kind=kind)
    if unit is not None:
        locations = [loc for loc in locations if loc.unit_name == unit]
    if not locations:
        which = f"unit {unit!r}" if unit else "any unit"
        raise NotFoundError(f"Run {run_id!r} recorded no {kind} of {which} on slide {slide_id}.")
    loc = locations[-1]
    return {
        "run_id": run_id,
        "pipeline": run.pipeline_name,
        "pipeline_version": run.pipeline_version,
        "unit": loc.unit_name,
        "unit_version": loc.unit_version,
    }


def _run_objects(
    catalog: Catalog,
    store: ColdStore,
    slide_id: int,
    layer: Layer,
    box: BBox,
    cap: int,
    mode: str,
    fine_zoom: bool,
    label: str | None,
) -> tuple[_Objects, str]:
    provenance = run_provenance(catalog, layer.ref, slide_id, layer.unit)
    names = _run_columns(store.uri(layer.ref, "objects"))
    light = ["tile_id", "object_id", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]
    light += [c for c in ("centroid_x", "centroid_y", "label", "score") if c in names]
    table = store.query_region(layer.ref, slide_id, box, columns=light)
    if label is not None and "label" in names:
        table = table.filter(pa.compute.equal(table["label"], label))
    total = table.num_rows
    fine = mode == "polygons" or (mode == "auto" and fine_zoom and total <= cap)
    geoms = None
    if fine:
        keep = np.arange(min(total, cap))
        if "polygon" in names and len(keep):
            geoms = _run_polygons(store, layer.ref, slide_id, box, table, keep, label)
    else:
        keep = _even_pick(total, cap)
    picked = table.take(pa.array(keep, pa.int64()))
    x0, y0 = picked["bbox_x0"].to_numpy(), picked["bbox_y0"].to_numpy()
    x1, y1 = picked["bbox_x1"].to_numpy(), picked["bbox_y1"].to_numpy()
    cx = picked["centroid_x"].to_numpy() if "centroid_x" in light else (x0 + x1) / 2
    cy = picked["centroid_y"].to_numpy() if "centroid_y" in light else (y0 + y1) / 2
    tiles, objs = picked["tile_id"].to_pylist(), picked["object_id"].to_pylist()
    n = picked.num_rows
    labels = picked["label"].to_pylist() if "label" in light else [None] * n
    scores = picked["score"].to_pylist() if "score" in light else [None] * n
    objects = _Objects(
        ids=[f"{t}:{o}" for t, o in zip(tiles, objs, strict=True)],
        labels=[lab or None for lab in labels],
        scores=scores,
        cx=np.asarray(cx, np.float64),
        cy=np.asarray(cy, np.float64),
        geoms=geoms,
        provenance=provenance,
        total=total,
    )
    return objects, "polygons" if fine else "centroids"


def _run_tile_classes(
    catalog: Catalog,
    store: ColdStore,
    slide_id: int,
    layer: Layer,
    box: BBox,
    cap: int,
    mode: str,
    fine_zoom: bool,
    label: str | None,
) -> tuple[_Objects, str]:
    """A class map's tiles in a window, as objects: core boxes labelled with their class."""
    provenance = run_provenance(catalog, layer.ref, slide_id, layer.unit, kind="tiles")
    table = read_tile_classes(store, layer.ref, slide_id, box, label)
    total = table.num_rows
    fine = mode == "polygons" or (mode == "auto" and fine_zoom and total <= cap)
    keep = np.arange(min(total, cap)) if fine else _even_pick(total, cap)
    picked = table.take(pa.array(keep, pa.int64()))
    boxes = np.stack(
        [picked[c].to_numpy() for c in ("core_x0", "core_y0", "core_x1", "core_y1")], axis=1
    ).reshape(-1, 4)
    objects = _Objects(
        ids=[f"tile:{t}" for t in picked["tile_id"].to_pylist()],
        labels=[str(v) if v is not None else None for v in picked["label"].to_pylist()],
        scores=picked["score"].to_pylist(),
        cx=(boxes[:, 0] + boxes[:, 2]) / 2,
        cy=(boxes[:, 1] + boxes[:, 3]) / 2,
        geoms=shapely.box(*boxes.T) if fine else None,
        provenance=provenance,
        total=total,
        boxes=boxes,
    )
    return objects, "polygons" if fine else "centroids"


def _run_polygons(
    store: ColdStore,
    run_id: str,
    slide_id: int,
    box: BBox,
    light: pa.Table,
    keep: np.ndarray,
    label: str | None,
) -> np.ndarray:
    """The polygons of the kept rows (a second scan reading only the polygon column)."""
    table = store.query_region(
        run_id, slide_id, box, columns=["polygon", "label"] if label else ["polygon"]
    )
    if label is not None:
        table = table.filter(pa.compute.equal(table["label"], label))
    # Both scans read the same rows in the same order (same filter on an immutable dataset).
    if table.num_rows != light.num_rows:
        raise NotFoundError(f"Run {run_id!r} changed while it was read; try again.")
    blobs = table["polygon"].take(pa.array(keep, pa.int64())).to_numpy(zero_copy_only=False)
    return np.asarray(shapely.from_wkb(blobs), dtype=object)


# -- GeoJSON ----------------------------------------------------------------------------------


def geometries_to_geojson(geoms: Sequence[Any] | np.ndarray) -> list[dict[str, Any] | None]:
    """GeoJSON geometry dicts of shapely geometries, fast for plain polygons.

    Simple polygons (no holes), the bulk of pathology objects, are converted with vectorised
    coordinate extraction; anything else goes through ``shapely.geometry.mapping``.
    """
    arr = np.asarray(geoms, dtype=object)
    out: list[dict[str, Any] | None] = [None] * len(arr)
    if not len(arr):
        return out
    present = np.array([g is not None for g in arr], bool)
    types = np.full(len(arr), -1)
    types[present] = shapely.get_type_id(arr[present])
    holes = np.zeros(len(arr), np.int64)
    simple_poly = types == 3
    holes[simple_poly] = shapely.get_num_interior_rings(arr[simple_poly])
    fast = np.flatnonzero(simple_poly & (holes == 0))
    if len(fast):
        rings = shapely.get_exterior_ring(arr[fast])
        # One tolist() for all coordinates, then plain list slices: far cheaper per object.
        coords = np.round(shapely.get_coordinates(rings), 2).tolist()
        ends = np.cumsum(shapely.get_num_coordinates(rings)).tolist()
        start = 0
        end: int
        for i, end in zip(fast.tolist(), ends, strict=True):
            out[i] = {"type": "Polygon", "coordinates": [coords[start:end]]}
            start = end
    slow = present.copy()
    slow[fast] = False
    for i in np.flatnonzero(slow).tolist():
        if types[i] == 0:
            x, y = shapely.get_x(arr[i]), shapely.get_y(arr[i])
            out[i] = {"type": "Point", "coordinates": [round(float(x), 2), round(float(y), 2)]}
        else:
            out[i] = shapely.geometry.mapping(shapely.set_precision(arr[i], 0.01))
    return out


def _features(objects: _Objects, mode: str) -> list[dict[str, Any]]:
    n = len(objects.ids)
    with gc_paused():
        geo = geometries_to_geojson(objects.geoms) if objects.geoms is not None else [None] * n
        points = np.round(np.stack([objects.cx, objects.cy], axis=1), 2).tolist() if n else []
        shared = objects.provenance
        own = objects.provenance_columns
        names: list[str] = [k for k in ("author", "source", "modified_at") if k in own]
        status = own.get("status")
        colors = {
            label: "#{:02x}{:02x}{:02x}".format(*label_color(label))
            for label in set(objects.labels)
        }
        features = []
        for i in range(n):
            label = objects.labels[i]
            score = objects.scores[i]
            features.append(
                {
                    "type": "Feature",
                    "id": objects.ids[i],
                    "geometry": geo[i] or {"type": "Point", "coordinates": points[i]},
                    "properties": {
                        "label": label,
                        "score": None if score is None or not math.isfinite(score) else score,
                        "color": colors[label],
                        "provenance": _provenance(shared, own, names, status, i),
                    },
                }
            )
    return features


def _provenance(
    shared: dict[str, Any],
    own: dict[str, list[Any]],
    names: list[str],
    status: list[Any] | None,
    i: int,
) -> dict[str, Any]:
    """One object's provenance: the shared part (itself, when nothing is per object) and its own."""
    if not own:
        return shared
    out = {**shared, **{k: own[k][i] for k in names}}
    if status is not None and status[i] is not None:
        out["status"] = status[i]
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small containers.

    Building 10k+ feature dicts otherwise triggers repeated full collections that cost more
    than the building itself; none of these objects forms a cycle.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# -- raster tiles -----------------------------------------------------------------------------


def overlay_tile(
    catalog: Catalog,
    store: ColdStore | None,
    slide_id: int,
    layer: Layer,
    level: int,
    col: int,
    row: int,
    *,
    tile_size: int = 254,
    overlap: int = 1,
    colors: Mapping[str, str] | None = None,
    max_objects: int = 200_000,
    line_width: int = 2,
) -> bytes:
    """Render a layer's objects into a transparent PNG aligned with one DeepZoom tile.

    Zoomed in (up to ``FINE_MAX_DOWNSAMPLE`` level-0 px per tile px) objects are drawn as
    outlines; coarser tiles draw them as dots (annotations big enough to be seen keep their
    outline), so a coarse tile of a slide with 100k nuclei shows their density without sending
    vectors. Drawing is vectorised per label (one ``polylines`` call, dots stamped by indexing).

    Args:
        catalog: The catalog.
        store: The cold store (needed for run layers).
        slide_id: The slide.
        layer: What to draw.
        level: DeepZoom level, as in :class:`~pathray.slides.deepzoom.DeepZoom`.
        col: Tile column.
        row: Tile row.
        tile_size: DeepZoom tile size (must match the slide's DZI).
        overlap: DeepZoom overlap (must match the slide's DZI).
        colors: ``{label: '#rrggbb'}`` overrides of the palette.
        max_objects: At most this many objects drawn (evenly thinned beyond).
        line_width: Outline width in pixels.

    Returns:
        PNG bytes, RGBA, the size of the DeepZoom tile.

    Raises:
        TileNotFoundError: The level, column or row is outside the slide.
        NotFoundError: The slide, annotation set or run does not exist.
    """
    import imagecodecs

    slide = catalog.get_slide(slide_id)
    grid = DeepZoomGrid(slide.width, slide.height, tile_size, overlap)
    tx0, ty0, tx1, ty1 = grid.tile_box(level, col, row)
    scale = float(grid.scale(level))
    bounds = grid.tile_bounds(level, col, row)
    canvas = np.zeros((ty1 - ty0, tx1 - tx0, 4), np.uint8)
    box = _check_window(bounds, scale, max_objects, "auto")
    # Outlines when zoomed in enough to see shapes; dots (and big annotations) otherwise.
    objects, _ = _collect(
        catalog,
        store,
        slide_id,
        layer,
        box,
        scale,
        max_objects,
        "auto",
        FINE_MAX_DOWNSAMPLE,
        None,
        light=True,
    )
    origin = np.array([tx0 * scale, ty0 * scale])
    palette = {label: (*label_color(label, colors), 230) for label in set(objects.labels)}
    labels = np.array([str(label) for label in objects.labels], dtype=object)
    has_shape = np.zeros(len(labels), bool)
    if objects.geoms is not None:
        has_shape = np.array([g is not None for g in objects.geoms], bool)
    shift = 4  # sub-pixel precision of cv2's drawing
    if objects.boxes is not None:  # a class map: each tile core filled in its class colour
        corners = np.rint((objects.boxes - np.tile(origin, 2)) / scale)
        # within one pixel of the canvas, as plain ints: cv2 takes nothing wider than int32
        limit = np.array([canvas.shape[1], canvas.shape[0]] * 2) + 1
        corners = np.clip(corners, -1, limit).astype(np.int64).tolist()
        for (x0, y0, x1, y1), label in zip(corners, labels, strict=True):
            rgba = tuple(int(v) for v in (*label_color(label, colors), FILL_ALPHA))
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), rgba, -1)
        return bytes(imagecodecs.png_encode(canvas, level=1))
    for label, rgba in palette.items():
        mine = labels == str(label)
        shaped = np.flatnonzero(mine & has_shape)
        if len(shaped):
            rings = _outline_rings(np.asarray(objects.geoms)[shaped])
            pts = [((r - origin) / scale * (1 << shift)).astype(np.int32) for r in rings]
            cv2.polylines(canvas, pts, True, rgba, line_width, cv2.LINE_AA, shift)
        dots = np.flatnonzero(mine & ~has_shape)
        if len(dots):
            _stamp_dots(canvas, objects.cx[dots], objects.cy[dots], origin, scale, rgba, line_width)
    return bytes(imagecodecs.png_encode(canvas, level=1))


def _outline_rings(geoms: np.ndarray) -> list[np.ndarray]:
    """Every ring (exteriors and holes) of polygonal geometries, as ``(n, 2)`` arrays."""
    parts = shapely.get_parts(geoms)
    polys = parts[shapely.get_type_id(parts) == 3]
    rings = shapely.get_rings(polys) if len(polys) else np.empty(0, dtype=object)
    lines = parts[np.isin(shapely.get_type_id(parts), (1, 2))]
    rings = np.concatenate([rings, lines]) if len(lines) else rings
    if not len(rings):
        return []
    coords, index = shapely.get_coordinates(rings, return_index=True)
    return np.split(coords, np.flatnonzero(np.diff(index)) + 1)


def _stamp_dots(
    canvas: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    origin: np.ndarray,
    scale: float,
    rgba: tuple[int, ...],
    radius: int,
) -> None:
    """Paint small square dots at many points at once (a Python loop of circles is slow)."""
    h, w = canvas.shape[:2]
    xs = np.floor((cx - origin[0]) / scale).astype(np.int64)
    ys = np.floor((cy - origin[1]) / scale).astype(np.int64)
    for dy in range(-radius + 1, radius):
        for dx in range(-radius + 1, radius):
            x, y = xs + dx, ys + dy
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            canvas[y[inside], x[inside]] = rgba


def overlay_json(collection: Mapping[str, Any]) -> str:
    """Compact JSON text of a feature collection from :func:`overlay_features`.

    The collection holds only dicts, lists, strings and numbers, so ``json.dumps`` can write it
    as is: on a 13k-polygon view that takes about 17 ms, where a web framework's generic encoder
    (which walks every value first) takes 130-230 ms.
    """
    return json.dumps(collection, separators=(",", ":"))


__all__ = [
    "DEFAULT_MAX_FEATURES",
    "FINE_MAX_DOWNSAMPLE",
    "Layer",
    "gc_paused",
    "geometries_to_geojson",
    "label_color",
    "overlay_features",
    "overlay_json",
    "overlay_packed",
    "overlay_tile",
    "run_provenance",
]
