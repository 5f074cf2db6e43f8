"""Overlays: in-view filtering, polygons vs centroids, truncation, provenance, raster tiles."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
import shapely

from pathray.errors import ConfigError, NotFoundError
from pathray.results.overlay import Layer, geometries_to_geojson, overlay_features, overlay_tile
from pathray.slides.deepzoom import DeepZoomGrid, TileNotFoundError


def _truth(env, bbox):
    """Objects of the run whose box meets ``bbox``, by a plain scan of the whole table."""
    table = env.store.read(env.run.run_id, "objects").to_pydict()
    x0, y0, x1, y1 = bbox
    return {
        f"{t}:{o}"
        for t, o, a, b, c, d in zip(
            table["tile_id"],
            table["object_id"],
            table["bbox_x0"],
            table["bbox_y0"],
            table["bbox_x1"],
            table["bbox_y1"],
            strict=True,
        )
        if c >= x0 and a <= x1 and d >= y0 and b <= y1
    }


def test_run_view_returns_exactly_the_objects_in_the_window(objects_slide) -> None:
    env = objects_slide
    bbox = (500.0, 400.0, 1300.0, 1000.0)
    fc = overlay_features(env.catalog, env.store, env.slide_id, Layer.run(env.run.run_id), bbox)
    assert fc["type"] == "FeatureCollection" and fc["mode"] == "polygons"
    ids = {f["id"] for f in fc["features"]}
    assert ids == _truth(env, bbox) and 20 < len(ids) < 200
    assert fc["total"] == fc["returned"] == len(ids) and fc["truncated"] is False
    window = shapely.box(*bbox)
    for feature in fc["features"]:
        shape = shapely.geometry.shape(feature["geometry"])
        assert shape.geom_type == "Polygon" and shape.envelope.intersects(window)
        props = feature["properties"]
        assert props["label"] in ("tumor", "lymphocyte", "stroma")
        assert 0.5 <= props["score"] <= 1.0 and props["color"].startswith("#")
        assert props["provenance"] == {
            "run_id": env.run.run_id,
            "pipeline": "synthetic-objects",
            "pipeline_version": "1",
            "unit": "nuclei",
            "unit_version": "1",
        }


def test_coarse_views_send_centroids_thinned_evenly(objects_slide) -> None:
    env = objects_slide
    layer = Layer.run(env.run.run_id)
    whole = (0.0, 0.0, 4000.0, 3000.0)
    fc = overlay_features(env.catalog, env.store, env.slide_id, layer, whole, downsample=16)
    assert fc["mode"] == "centroids" and fc["total"] == 1500 and not fc["truncated"]
    assert {f["geometry"]["type"] for f in fc["features"]} == {"Point"}
    capped = overlay_features(
        env.catalog, env.store, env.slide_id, layer, whole, downsample=16, max_features=300
    )
    assert capped["truncated"] is True and capped["returned"] == 300 and capped["total"] == 1500
    points = np.array([f["geometry"]["coordinates"] for f in capped["features"]])
    # An even pick covers the slide: every quarter of the height keeps some points.
    quarters = np.histogram(points[:, 1], bins=4, range=(0, 3000))[0]
    assert quarters.min() > 40


def test_auto_mode_falls_back_to_centroids_when_a_fine_view_is_too_dense(objects_slide) -> None:
    env = objects_slide
    layer = Layer.run(env.run.run_id)
    bbox = (0.0, 0.0, 2000.0, 2000.0)
    dense = overlay_features(env.catalog, env.store, env.slide_id, layer, bbox, max_features=100)
    assert dense["mode"] == "centroids" and dense["truncated"] and dense["returned"] == 100
    forced = overlay_features(
        env.catalog, env.store, env.slide_id, layer, bbox, max_features=100, mode="polygons"
    )
    assert forced["mode"] == "polygons" and forced["returned"] == 100
    assert forced["total"] == len(_truth(env, bbox)) and forced["truncated"]
    assert forced["features"][0]["geometry"]["type"] == "Polygon"


def test_label_filter(objects_slide) -> None:
    env = objects_slide
    fc = overlay_features(
        env.catalog,
        env.store,
        env.slide_id,
        Layer.run(env.run.run_id),
        (0, 0, 4000, 3000),
        downsample=8,
        label="stroma",
    )
    assert fc["total"] > 300 and {f["properties"]["label"] for f in fc["features"]} == {"stroma"}


def test_annotation_layer_keeps_big_shapes_and_provenance(objects_slide) -> None:
    env = objects_slide
    cat = env.catalog
    cat.create_annotation_set("gt", image_set="cases")
    small = [(shapely.box(x, 100, x + 8, 108), "cell", {"score": 0.7}) for x in range(0, 800, 20)]
    tumour = shapely.Polygon([(1000, 1000), (3000, 1100), (2800, 2800), (1200, 2500)])
    cat.add_annotations("gt", env.slide_id, [*small, (tumour, "tumor", None)], author="dr-a")
    layer = Layer.annotations("gt")
    fine = overlay_features(cat, None, env.slide_id, layer, (0, 0, 390, 400))
    assert fine["mode"] == "polygons" and fine["total"] == 20
    assert all(f["geometry"]["type"] == "Polygon" for f in fine["features"])
    prov = fine["features"][0]["properties"]["provenance"]
    assert prov["annotation_set"] == "gt" and prov["author"] == "dr-a"
    assert prov["source"] == "human" and prov["modified_at"].startswith("20")
    assert fine["features"][0]["properties"]["score"] == 0.7
    coarse = overlay_features(cat, None, env.slide_id, layer, (0, 0, 4000, 3000), downsample=32)
    assert coarse["mode"] == "centroids" and coarse["total"] == 41
    kinds = {f["properties"]["label"]: f["geometry"]["type"] for f in coarse["features"]}
    assert kinds == {"cell": "Point", "tumor": "Polygon"}  # 2000 px is 62 screen px here
    capped = overlay_features(
        cat, None, env.slide_id, layer, (0, 0, 4000, 3000), downsample=32, max_features=10
    )
    assert 5 <= capped["returned"] <= 11 and capped["truncated"] and capped["total"] == 41
    # Thinning keeps small objects spread over the row and never drops the big shape.
    labels = [f["properties"]["label"] for f in capped["features"]]
    assert labels.count("tumor") == 1
    xs = [
        f["geometry"]["coordinates"][0]
        for f in capped["features"]
        if f["properties"]["label"] == "cell"
    ]
    assert min(xs) < 200 and max(xs) > 600


def test_bad_requests_are_clear_errors(objects_slide) -> None:
    env = objects_slide
    run = Layer.run(env.run.run_id)
    args = (env.catalog, env.store, env.slide_id, run)
    with pytest.raises(ConfigError, match="bbox must be"):
        overlay_features(*args, (10, 10, 0, 0))
    with pytest.raises(ConfigError, match="downsample"):
        overlay_features(*args, (0, 0, 10, 10), downsample=0)
    with pytest.raises(ConfigError, match="max_features"):
        overlay_features(*args, (0, 0, 10, 10), max_features=0)
    with pytest.raises(ConfigError, match="store"):
        overlay_features(env.catalog, None, env.slide_id, run, (0, 0, 10, 10))
    with pytest.raises(NotFoundError, match="unit 'other'"):
        overlay_features(
            env.catalog, env.store, env.slide_id, Layer.run(env.run.run_id, "other"), (0, 0, 9, 9)
        )
    with pytest.raises(NotFoundError):
        overlay_features(env.catalog, None, env.slide_id, Layer.annotations("nope"), (0, 0, 9, 9))
    with pytest.raises(ConfigError):
        Layer("pixels", "x")  # type: ignore[arg-type]


def test_overlay_tiles_draw_objects_where_they_are(objects_slide) -> None:
    env = objects_slide
    cat = env.catalog
    cat.create_annotation_set("box", image_set="cases")
    cat.add_annotations("box", env.slide_id, [(shapely.box(100, 100, 200, 150), "x", None)], "a")
    grid = DeepZoomGrid(4000, 3000)
    png = overlay_tile(cat, None, env.slide_id, Layer.annotations("box"), grid.max_level, 0, 0)
    rgba = np.asarray(imagecodecs.imread(png))
    assert rgba.shape == (255, 255, 4)
    ys, xs = np.nonzero(rgba[..., 3])
    assert xs.min() >= 97 and xs.max() <= 203 and ys.min() >= 97 and ys.max() <= 153
    assert rgba[125, 150, 3] == 0  # an outline, not a fill
    empty = overlay_tile(cat, None, env.slide_id, Layer.annotations("box"), grid.max_level, 3, 3)
    assert not np.asarray(imagecodecs.imread(empty))[..., 3].any()
    # Coarse: the small box becomes a dot at its centre (150, 125) / 256 -> pixel (0, 0).
    dot = overlay_tile(cat, None, env.slide_id, Layer.annotations("box"), 4, 0, 0)
    dot_alpha = np.asarray(imagecodecs.imread(dot))[..., 3]
    assert dot_alpha[0, 0] > 0 and dot_alpha[:, 3:].sum() == 0
    # A coarse tile of the whole run: dots spread over the whole slide area of the tile.
    coarse = overlay_tile(cat, env.store, env.slide_id, Layer.run(env.run.run_id), 4, 0, 0)
    alpha = np.asarray(imagecodecs.imread(coarse))[..., 3]
    assert alpha.shape == grid.tile_box(4, 0, 0)[2:][::-1]
    assert alpha[: alpha.shape[0] // 2].any() and alpha[alpha.shape[0] // 2 :].any()
    with pytest.raises(TileNotFoundError):
        overlay_tile(cat, env.store, env.slide_id, Layer.run(env.run.run_id), 4, 5, 0)


def test_geojson_conversion_handles_every_kind() -> None:
    geoms = [
        shapely.box(0, 0, 1, 1),
        shapely.Point(2.123, 3.456),
        shapely.box(0, 0, 10, 10).difference(shapely.box(2, 2, 4, 4)),
        shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6)]),
        None,
    ]
    out = geometries_to_geojson(geoms)
    assert out[0] == {
        "type": "Polygon",
        "coordinates": [[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]],
    }
    assert out[1] == {"type": "Point", "coordinates": [2.12, 3.46]}
    assert out[2] is not None and len(out[2]["coordinates"]) == 2  # exterior + hole
    assert out[3] is not None and out[3]["type"] == "MultiPolygon"
    assert out[4] is None
    for original, converted in zip(geoms[:4], out[:4], strict=True):
        assert (
            shapely.geometry.shape(converted).normalize().equals_exact(original.normalize(), 0.01)
        )
