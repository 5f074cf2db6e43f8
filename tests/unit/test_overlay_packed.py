"""The packed overlay form: same objects as GeoJSON, in columns, with exact geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from pathray.errors import ConfigError
from pathray.results.overlay import Layer, overlay_features, overlay_json, overlay_packed
from pathray.results.packed import (
    coordinate_quantum,
    dictionary_encode,
    pack_geometries,
    unpack_features,
)


def _same_shape(a: dict, b: dict, tol: float) -> bool:
    """Two GeoJSON geometries equal up to ``tol`` in every coordinate."""
    ga, gb = shapely.geometry.shape(a), shapely.geometry.shape(b)
    return ga.geom_type == gb.geom_type and shapely.equals_exact(ga, gb, tolerance=tol)


def test_every_geometry_kind_round_trips_within_the_quantum() -> None:
    rng = np.random.default_rng(3)
    star = shapely.Polygon(rng.uniform(0, 1, (9, 2)) * 50 + 1000).convex_hull
    holed = shapely.box(0, 0, 10, 10).difference(shapely.box(2, 2, 4, 4))
    multi = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(5.55, 5.55, 6.66, 7.77)])
    geoms = np.array(
        [star, shapely.Point(2.25, 3.5), holed, multi, None, shapely.LineString([(0, 0), (4, 4)])],
        dtype=object,
    )
    cx, cy = np.arange(6.0), np.arange(6.0) + 100
    packed = pack_geometries(geoms, 0.01, (cx, cy))
    assert packed["parts"] == [1, 0, 1, 2, 0, 0]  # None and the line come as their centroids
    assert packed["rings"] == [1, 2, 1, 1]
    # The closing vertex is not sent; deltas are small integers after each ring's first vertex.
    assert packed["sizes"][0] == len(star.exterior.coords) - 1
    assert all(isinstance(v, int) for v in packed["xy"])
    fc = {
        "geometry": packed,
        "ids": list(range(6)),
        "labels": dictionary_encode(["a"] * 6) | {"colors": ["#000000"]},
        "scores": None,
        "provenance": {},
        "provenance_columns": {},
    }
    out = [f["geometry"] for f in unpack_features(fc)]
    for i in (0, 2, 3):  # each vertex within half a quantum in x and in y
        assert _same_shape(out[i], shapely.geometry.mapping(geoms[i]), 0.005 * 2**0.5 + 1e-9)
    assert out[1] == {"type": "Point", "coordinates": [2.25, 3.5]}
    assert out[4] == {"type": "Point", "coordinates": [4.0, 104.0]}
    assert out[5] == {"type": "Point", "coordinates": [5.0, 105.0]}
    with pytest.raises(ValueError, match="centroids"):
        pack_geometries(np.array([None], dtype=object), 0.1)


def test_the_quantum_follows_the_zoom() -> None:
    assert coordinate_quantum(1.0) == 0.1  # a tenth of a level-0 pixel at 1:1
    assert coordinate_quantum(0.2) == 0.01  # zoomed far in: never coarser than 1/100 px
    assert coordinate_quantum(64) == 1.0  # zoomed out: whole pixels
    # Always under a quarter of a screen pixel.
    for down in (0.05, 0.3, 1.7, 3.9, 4.1, 40):
        assert coordinate_quantum(down) / down <= 0.25


def test_packed_run_view_holds_the_geojson_objects(objects_slide) -> None:
    env = objects_slide
    layer, bbox = Layer.run(env.run.run_id), (500.0, 400.0, 1300.0, 1000.0)
    args = (env.catalog, env.store, env.slide_id, layer, bbox)
    fc, pk = overlay_features(*args), overlay_packed(*args)
    assert pk["format"] == "packed"
    for key in ("mode", "total", "returned", "truncated", "bbox", "downsample", "layer"):
        assert pk[key] == fc[key], key
    # The run's provenance is sent once, not per object.
    assert pk["provenance"] == fc["features"][0]["properties"]["provenance"]
    assert pk["provenance_columns"] == {}
    _assert_same_features(unpack_features(pk), fc["features"], tol=coordinate_quantum(1.0))
    # A third of the bytes or fewer, even with a score on every object (a seventh on nuclei).
    assert len(overlay_json(pk)) < len(overlay_json(fc)) / 3


def test_packed_annotation_views_keep_each_objects_provenance(objects_slide) -> None:
    env = objects_slide
    cat = env.catalog
    cat.create_annotation_set("gt", image_set="cases")
    cells = [
        (shapely.box(x, 100, x + 8, 108), "cell", {"score": 0.7, "status": "rejected"})
        if x == 40
        else (shapely.box(x, 100, x + 8, 108), "cell", None)
        for x in range(0, 800, 20)
    ]
    tumour = shapely.Polygon([(1000, 1000), (3000, 1100), (2800, 2800), (1200, 2500)])
    cat.add_annotations("gt", env.slide_id, [*cells, (tumour, "tumor", None)], author="dr-a")
    cat.add_annotations("gt", env.slide_id, [(shapely.Point(50, 50), "mitosis", None)], "dr-b")
    layer = Layer.annotations("gt")
    for bbox, down in (((0, 0, 390, 400), 1.0), ((0, 0, 4000, 3000), 32.0)):
        args = (cat, None, env.slide_id, layer, bbox, down)
        fc, pk = overlay_features(*args), overlay_packed(*args)
        assert pk["mode"] == fc["mode"] and pk["total"] == fc["total"]
        _assert_same_features(unpack_features(pk), fc["features"], tol=coordinate_quantum(down))
    fine = overlay_packed(cat, None, env.slide_id, layer, (0, 0, 390, 400))
    authors = fine["provenance_columns"]["author"]
    assert sorted(authors["values"]) == ["dr-a", "dr-b"]  # each name written once
    status = fine["provenance_columns"]["status"]
    assert status["values"].count("rejected") == 1
    assert sum(status["values"][i] == "rejected" for i in status["index"]) == 1
    assert json.loads(overlay_json(fine)) == fine  # plain JSON throughout


def test_packed_form_is_asked_for_by_name_and_checks_its_input(objects_slide) -> None:
    env = objects_slide
    args = (env.catalog, env.store, env.slide_id, Layer.run(env.run.run_id))
    with pytest.raises(ConfigError, match="bbox must be"):
        overlay_packed(*args, (10, 10, 0, 0))
    with pytest.raises(ConfigError, match="downsample"):
        overlay_packed(*args, (0, 0, 10, 10), downsample=-1)
    empty = overlay_packed(*args, (-500, -500, -400, -400))
    assert empty["returned"] == 0 and empty["geometry"]["parts"] == []


def _assert_same_features(got: list[dict], want: list[dict], tol: float) -> None:
    assert [f["id"] for f in got] == [f["id"] for f in want]
    for g, w in zip(got, want, strict=True):
        assert g["properties"]["label"] == w["properties"]["label"]
        assert g["properties"]["color"] == w["properties"]["color"]
        assert g["properties"]["score"] == pytest.approx(w["properties"]["score"])
        assert g["properties"]["provenance"] == w["properties"]["provenance"]
        # GeoJSON rounds to 1/100 px; packed to the quantum of the zoom (Euclidean distance).
        assert _same_shape(g["geometry"], w["geometry"], (tol / 2 + 0.005) * 2**0.5 + 1e-9)
