"""Synthetic H&E slides: determinism, ground truth, appearance, readability."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from pathray.errors import ConfigError
from pathray.slides.synthetic import SyntheticHE, make_synthetic_slide, sidecar_paths
from pathray.slides.synthetic_nuclei import CELL

SIZE = 2048
SEED = 0


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("synthetic") / "syn.tif"
    return make_synthetic_slide(path, width=SIZE, height=SIZE, seed=SEED)


@pytest.fixture(scope="module")
def he() -> SyntheticHE:
    return SyntheticHE(SIZE, SIZE, seed=SEED)


@pytest.fixture(scope="module")
def features(slide) -> list[dict]:
    return json.loads(slide.nuclei_geojson.read_text())["features"]


def _level0(path: Path, x: int, y: int, w: int, h: int) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[0].asarray()[y : y + h, x : x + w]


def _rasterise(features: list[dict], x: int, y: int, w: int, h: int) -> tuple[np.ndarray, ...]:
    """Pixel-centre rule computed independently of the renderer (shapely): inside, on edge."""
    from shapely import contains_xy, intersects_xy
    from shapely.geometry import Polygon

    yy, xx = np.mgrid[y : y + h, x : x + w] + 0.5
    inside = np.zeros((h, w), dtype=bool)
    on_edge = np.zeros((h, w), dtype=bool)
    for f in features:
        poly = Polygon(f["geometry"]["coordinates"][0])
        x0, y0, x1, y1 = poly.bounds
        if x1 < x or x0 > x + w or y1 < y or y0 > y + h:
            continue
        c0, r0 = max(0, int(x0) - x), max(0, int(y0) - y)
        c1, r1 = min(w, int(x1) + 2 - x), min(h, int(y1) + 2 - y)
        sub = (slice(r0, r1), slice(c0, c1))
        inside[sub] |= contains_xy(poly, xx[sub], yy[sub])
        on_edge[sub] |= intersects_xy(poly.boundary, xx[sub], yy[sub])
    return inside, on_edge


def test_files_and_summary(slide) -> None:
    assert slide.path.is_file()
    assert (slide.nuclei_geojson, slide.tissue_geojson) == sidecar_paths(slide.path)
    assert slide.nuclei_geojson.name == "syn.nuclei.geojson"
    assert (slide.width, slide.height, slide.mpp) == (SIZE, SIZE, 0.25)
    assert slide.classes == ("tumor", "lymphocyte", "stroma")
    assert slide.n_nuclei is not None and slide.n_nuclei > 100


def test_ground_truth_is_byte_identical_for_the_same_seed(slide, tmp_path: Path) -> None:
    again = SyntheticHE(SIZE, SIZE, seed=SEED)
    again.write_nuclei_geojson(tmp_path / "n.geojson")
    again.write_tissue_geojson(tmp_path / "t.geojson")
    assert (tmp_path / "n.geojson").read_bytes() == slide.nuclei_geojson.read_bytes()
    assert (tmp_path / "t.geojson").read_bytes() == slide.tissue_geojson.read_bytes()
    other = SyntheticHE(SIZE, SIZE, seed=SEED + 1)
    other.write_nuclei_geojson(tmp_path / "o.geojson")
    assert (tmp_path / "o.geojson").read_bytes() != slide.nuclei_geojson.read_bytes()


def test_tile_pixels_are_deterministic_and_seed_dependent(he: SyntheticHE) -> None:
    tile = he.render_region(768, 768, 256, 256)
    assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
    assert np.array_equal(
        tile, SyntheticHE(SIZE, SIZE, seed=SEED).render_region(768, 768, 256, 256)
    )
    other = SyntheticHE(SIZE, SIZE, seed=SEED + 1).render_region(768, 768, 256, 256)
    assert not np.array_equal(tile, other)


def test_a_region_does_not_depend_on_how_it_is_cut(he: SyntheticHE) -> None:
    whole = he.render_region(900, 700, 300, 300).astype(int)
    parts = np.concatenate(
        [he.render_region(900, 700, 300, 130), he.render_region(900, 830, 300, 170)]
    ).astype(int)
    # Identical up to float rounding inside OpenCV (at most one grey level, rarely).
    assert np.abs(whole - parts).max() <= 1
    assert (whole != parts).mean() < 1e-3


def test_geojson_is_qupath_style(slide, features: list[dict]) -> None:
    doc = json.loads(slide.nuclei_geojson.read_text())
    assert doc["type"] == "FeatureCollection"
    assert len(features) == slide.n_nuclei
    ids = {f["id"] for f in features}
    assert len(ids) == len(features)
    seen = set()
    for f in features:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        props = f["properties"]
        assert props["objectType"] == "annotation"
        cls = props["classification"]
        assert cls["name"] in slide.classes
        assert len(cls["color"]) == 3 and all(isinstance(c, int) for c in cls["color"])
        seen.add(cls["name"])
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 8
        xy = np.asarray(ring)
        assert xy.min() >= 0 and xy[:, 0].max() <= SIZE and xy[:, 1].max() <= SIZE
    assert seen == set(slide.classes)
    tissue = json.loads(slide.tissue_geojson.read_text())["features"]
    assert tissue and all(t["properties"]["classification"]["name"] == "tissue" for t in tissue)


def test_nuclei_are_valid_disjoint_and_inside_tissue(slide, features: list[dict]) -> None:
    from shapely import STRtree, unary_union
    from shapely.geometry import Polygon, shape

    polys = [Polygon(f["geometry"]["coordinates"][0]) for f in features]
    assert all(p.is_valid for p in polys)
    tree = STRtree(polys)
    left, right = tree.query(polys, predicate="intersects")
    pairs = [(i, j) for i, j in zip(left, right, strict=True) if i < j]
    assert all(polys[i].intersection(polys[j]).area < 1e-6 for i, j in pairs)
    tissue = unary_union(
        [shape(t["geometry"]) for t in json.loads(slide.tissue_geojson.read_text())["features"]]
    )
    inside = sum(tissue.buffer(2.0).contains(p) for p in polys)
    assert inside == len(polys)


def test_class_shapes_differ(features: list[dict]) -> None:
    from shapely.geometry import Polygon

    stats: dict[str, list[tuple[float, float]]] = {}
    for f in features:
        p = Polygon(f["geometry"]["coordinates"][0])
        rect = p.minimum_rotated_rectangle.exterior.coords
        sides = sorted(np.hypot(*np.diff(np.asarray(rect)[:3], axis=0).T))
        stats.setdefault(f["properties"]["classification"]["name"], []).append(
            (p.area, sides[0] / sides[1])
        )
    area = {k: np.mean([a for a, _ in v]) for k, v in stats.items()}
    aspect = {k: np.mean([r for _, r in v]) for k, v in stats.items()}
    assert area["tumor"] > 1.5 * area["lymphocyte"]
    assert aspect["stroma"] < 0.5 < aspect["lymphocyte"]
    # ~7 um lymphocytes at 0.25 mpp: about 28 px across.
    assert 20 < 2 * np.sqrt(area["lymphocyte"] / np.pi) < 36


def test_polygons_agree_with_drawn_pixels(he: SyntheticHE, features: list[dict]) -> None:
    x, y, w, h = 512, 512, 1024, 1024
    drawn = he.nuclei_mask(x, y, w, h) > 0
    inside, on_edge = _rasterise(features, x, y, w, h)
    assert drawn.sum() > 1000
    # Exactly the pixels whose centre lies inside a polygon (a centre on an edge may go
    # either way).
    assert not ((drawn != inside) & ~on_edge).any()
    assert (drawn != inside).sum() < 1e-3 * drawn.sum()


def test_haematoxylin_is_high_inside_nuclei(slide, he: SyntheticHE) -> None:
    from skimage.color import rgb2hed

    x, y, w, h = 256, 256, 1536, 1536
    rgb = _level0(slide.path, x, y, w, h)
    hed = rgb2hed(rgb)
    nuclei = cv2.erode((he.nuclei_mask(x, y, w, h) > 0).astype(np.uint8), np.ones((5, 5))) > 0
    tissue = he.tissue_mask(x, y, w, h)
    near = cv2.dilate((he.nuclei_mask(x, y, w, h) > 0).astype(np.uint8), np.ones((9, 9))) > 0
    stroma = tissue & ~near
    glass = ~he.tissue_mask(x - 8, y - 8, w + 16, h + 16)[8:-8, 8:-8]
    assert nuclei.sum() > 500 and stroma.sum() > 1000 and glass.sum() > 1000
    h_in, h_out = hed[..., 0][nuclei].mean(), hed[..., 0][stroma].mean()
    assert h_in > h_out + 0.03
    assert hed[..., 1][stroma].mean() > hed[..., 1][glass].mean() + 0.01
    # Purple nuclei: blue above green, red above green; white-ish glass.
    r, g, b = (rgb[nuclei][:, c].mean() for c in range(3))
    assert b > g and r > g and max(r, g, b) < 170
    assert rgb[glass].mean() > 225


def test_region_render_matches_the_written_file(slide, he: SyntheticHE) -> None:
    x, y = 640, 896
    rendered = he.render_region(x, y, 512, 512).astype(int)
    stored = _level0(slide.path, x, y, 512, 512).astype(int)
    diff = np.abs(rendered - stored)
    assert diff.mean() < 3.0 and np.percentile(diff, 99) < 16


def test_readable_by_tifffile_tiatoolbox_and_openslide(slide, he: SyntheticHE) -> None:
    import openslide
    from tiatoolbox.wsicore.wsireader import WSIReader

    with tifffile.TiffFile(slide.path) as tif:
        levels = tif.series[0].levels
        assert [lv.shape[:2] for lv in levels] == [(2048, 2048), (1024, 1024)]
        assert levels[0].keyframe.is_tiled and levels[0].keyframe.tilewidth == 256
    reference = he.render_region(1024, 1024, 256, 256).astype(int)

    wsi = WSIReader.open(slide.path)
    assert wsi.info.level_count == 2
    assert wsi.info.mpp == pytest.approx([0.25, 0.25])
    tia = wsi.read_rect((1024, 1024), (256, 256), resolution=0, units="level")
    assert np.abs(tia[..., :3].astype(int) - reference).mean() < 3.0

    osr = openslide.OpenSlide(str(slide.path))
    assert osr.level_dimensions == ((2048, 2048), (1024, 1024))
    assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
    region = np.asarray(osr.read_region((1024, 1024), 0, (256, 256)).convert("RGB"))
    assert np.abs(region.astype(int) - reference).mean() < 3.0
    osr.close()


def test_bbox_limited_and_disabled_ground_truth(tmp_path: Path) -> None:
    slide = make_synthetic_slide(
        tmp_path / "small.tif",
        width=1024,
        height=1024,
        seed=5,
        ground_truth_bbox=(256, 256, 512, 512),
        workers=1,
    )
    feats = json.loads(slide.nuclei_geojson.read_text())["features"]
    assert len(feats) == slide.n_nuclei
    for f in feats:
        cx, cy = np.asarray(f["geometry"]["coordinates"][0])[:-1].mean(axis=0)
        assert 256 <= cx < 768 and 256 <= cy < 768
    full = SyntheticHE(1024, 1024, seed=5)
    assert slide.n_nuclei == sum(1 for _ in full.iter_nuclei((256, 256, 512, 512)))
    assert slide.n_nuclei < sum(1 for _ in full.iter_nuclei())
    none = make_synthetic_slide(
        tmp_path / "nogt.tif", width=512, height=512, write_ground_truth=False
    )
    assert none.nuclei_geojson is None and none.n_nuclei is None
    assert not (tmp_path / "nogt.nuclei.geojson").exists()
    assert none.tissue_geojson.is_file()


def test_class_subset_and_nuclei_cells() -> None:
    he = SyntheticHE(1536, 1536, seed=2, classes=("lymphocyte",))
    labels = {n.label for n in he.iter_nuclei()}
    assert labels == {"lymphocyte"}
    # Nuclei never leave their placement cell: tiles need only the cells they overlap.
    for n in he.iter_nuclei():
        _, cx, cy, _ = n.key.split("/")
        x0, y0 = int(cx) * CELL, int(cy) * CELL
        assert n.polygon[:, 0].min() >= x0 and n.polygon[:, 0].max() <= x0 + CELL
        assert n.polygon[:, 1].min() >= y0 and n.polygon[:, 1].max() <= y0 + CELL


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 0, "height": 10},
        {"width": 10, "height": 10, "mpp": 0},
        {"width": 10, "height": 10, "classes": ("tumor", "neutrophil")},
        {"width": 10, "height": 10, "tissue_fraction": 1.5},
        {"width": 10, "height": 10, "nuclei_per_mm2": -1},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SyntheticHE(**kwargs)


@pytest.mark.slow
def test_memory_stays_bounded_for_a_16k_synthetic_slide(tmp_path: Path) -> None:
    import threading
    import time

    import psutil

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        slide = make_synthetic_slide(tmp_path / "big.tif", width=16384, height=16384, seed=3)
    finally:
        done.set()
        watcher.join()
    growth_mb = (peak[0] - baseline) / 2**20
    # Level 0 alone would be 768 MB uncompressed.
    assert growth_mb < 500, growth_mb
    assert slide.n_nuclei is not None and slide.n_nuclei > 10_000


def test_generator_pickles_for_workers(he: SyntheticHE) -> None:
    import pickle

    he.render_region(0, 0, 64, 64)  # fill the caches
    clone = pickle.loads(pickle.dumps(he))
    assert np.array_equal(
        clone.render_region(1000, 1000, 128, 128), he.render_region(1000, 1000, 128, 128)
    )
