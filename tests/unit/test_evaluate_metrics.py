"""Mergeable accumulators and pixel overlap (pathray.evaluate.metrics, .raster)."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest
import shapely
import shapely.affinity
from shapely.geometry import Point, Polygon, box
from skimage.draw import polygon2mask
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from pathray.errors import ConfigError
from pathray.evaluate.matching import match_by_iou
from pathray.evaluate.metrics import DetectionCounts, PixelOverlap, pixel_overlap
from pathray.evaluate.raster import Grid, rasterize


def random_polygons(rng: np.random.Generator, n: int, span: float = 500.0) -> list[Polygon]:
    """Star-shaped random polygons (valid, may overlap each other)."""
    out = []
    for cx, cy, r in zip(*rng.uniform([0, 0, 5], [span, span, 30], (n, 3)).T, strict=True):
        k = int(rng.integers(5, 14))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.5, 1.0, k)
        out.append(Polygon(np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))
    return out


# -- detection counts -------------------------------------------------------------------------


def test_detection_counts_hand_computed() -> None:
    refs = [box(0, 0, 10, 10), box(100, 0, 110, 10)]
    preds = [box(1, 0, 11, 10), box(105, 0, 115, 10), box(300, 300, 310, 310)]
    counts = DetectionCounts().update(match_by_iou(preds, refs, 0.5))
    assert (counts.tp, counts.fp, counts.fn) == (1, 2, 1)
    res = counts.result()
    assert res["precision"] == pytest.approx(1 / 3)
    assert res["recall"] == pytest.approx(1 / 2)
    assert res["f1"] == pytest.approx(0.4)
    assert res["mean_iou"] == pytest.approx(90 / 110)


@pytest.mark.parametrize("seed", range(4))
def test_detection_counts_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tp, fp, fn, tn = (int(v) for v in rng.integers(1, 50, 4))
    # One entry per object: matched pairs, false positives, false negatives, and (for sklearn
    # only) true negatives, which must not change precision, recall or F1.
    y_true = np.r_[np.ones(tp), np.zeros(fp), np.ones(fn), np.zeros(tn)]
    y_pred = np.r_[np.ones(tp), np.ones(fp), np.zeros(fn), np.zeros(tn)]
    res = DetectionCounts(tp=tp, fp=fp, fn=fn).result()
    assert res["precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert res["recall"] == pytest.approx(recall_score(y_true, y_pred))
    assert res["f1"] == pytest.approx(f1_score(y_true, y_pred))


def test_detection_empty_conventions() -> None:
    assert DetectionCounts().result() == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "mean_iou": 1.0,
    }
    only_pred = DetectionCounts(fp=3).result()
    only_ref = DetectionCounts(fn=2).result()
    assert set(only_pred.values()) == {0.0} and set(only_ref.values()) == {0.0}
    assert DetectionCounts(fp=1, fn=1).result()["f1"] == 0.0


def test_point_matching_counts_have_no_iou() -> None:
    from pathray.evaluate.matching import match_by_distance

    c = DetectionCounts().update(match_by_distance([[0, 0]], [[1, 0]], 2.0))
    assert (c.tp, c.sum_iou) == (1, 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_merging_random_splits_equals_one_pass(seed: int) -> None:
    rng = np.random.default_rng(seed)
    one_pass_det, one_pass_pix = DetectionCounts(), PixelOverlap()
    parts_det, parts_pix = [], []
    for _ in range(int(rng.integers(1, 8))):  # "slides"
        pred = random_polygons(rng, int(rng.integers(0, 15)), span=150)
        ref = random_polygons(rng, int(rng.integers(0, 15)), span=150)
        m = match_by_iou(pred, ref, 0.3)
        one_pass_det.update(m)
        one_pass_pix.update(pred, ref)
        parts_det.append(DetectionCounts().update(m))
        parts_pix.append(pixel_overlap(pred, ref))
    # Merge in a random order and grouping, as Ray tasks would.
    order = rng.permutation(len(parts_det))
    cut = int(rng.integers(0, len(order) + 1))
    groups = [order[:cut], order[cut:]]
    det = reduce(
        DetectionCounts.merge,
        [
            reduce(DetectionCounts.merge, [parts_det[i] for i in g], DetectionCounts())
            for g in groups
        ],
    )
    pix = reduce(
        PixelOverlap.merge,
        [reduce(PixelOverlap.merge, [parts_pix[i] for i in g], PixelOverlap()) for g in groups],
    )
    assert (det.tp, det.fp, det.fn) == (one_pass_det.tp, one_pass_det.fp, one_pass_det.fn)
    assert det.result() == pytest.approx(one_pass_det.result())
    assert pix.result() == pytest.approx(one_pass_pix.result())
    assert (pix.intersection, pix.pred_area) == (one_pass_pix.intersection, one_pass_pix.pred_area)


def test_merge_is_pure_and_typed() -> None:
    a, b = DetectionCounts(1, 2, 3, 0.5), DetectionCounts(4, 5, 6, 1.5)
    assert a + b == DetectionCounts(5, 7, 9, 2.0)
    assert a == DetectionCounts(1, 2, 3, 0.5)
    with pytest.raises(TypeError):
        a.merge(PixelOverlap())  # type: ignore[arg-type]


# -- pixel overlap ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["raster", "vector"])
def test_two_squares_dice_and_iou(method: str) -> None:
    o = pixel_overlap([box(0, 0, 10, 10)], [box(5, 0, 15, 10)], method=method)  # type: ignore[arg-type]
    assert (o.intersection, o.pred_area, o.ref_area) == pytest.approx((50, 100, 100))
    assert o.result() == pytest.approx({"dice": 0.5, "pixel_iou": 1 / 3})


def test_pixel_empty_conventions() -> None:
    assert pixel_overlap([], []).result() == {"dice": 1.0, "pixel_iou": 1.0}
    assert pixel_overlap([box(0, 0, 2, 2)], []).result() == {"dice": 0.0, "pixel_iou": 0.0}
    assert pixel_overlap([], [box(0, 0, 2, 2)], method="vector").result()["dice"] == 0.0
    assert pixel_overlap([None], [box(0, 0, 2, 2)]).pred_area == 0.0


@pytest.mark.parametrize("method", ["raster", "vector"])
def test_overlapping_polygons_are_a_union_and_holes_are_holes(method: str) -> None:
    refs = [box(0, 0, 10, 10), box(5, 0, 15, 10)]  # union area 150
    ring = box(0, 0, 10, 10).difference(box(3, 3, 6, 6))  # area 91
    o = pixel_overlap([ring], refs, method=method)  # type: ignore[arg-type]
    assert (o.intersection, o.pred_area, o.ref_area) == pytest.approx((91, 91, 150))


@pytest.mark.parametrize("seed", range(4))
def test_raster_and_vector_agree_within_one_percent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, ref = random_polygons(rng, 80), random_polygons(rng, 80)
    for region in (None, Point(250, 250).buffer(180), (50.5, 20.25, 400.0, 333.3)):
        r = pixel_overlap(pred, ref, region, method="raster").result()
        v = pixel_overlap(pred, ref, region, method="vector").result()
        assert r["dice"] == pytest.approx(v["dice"], rel=0.01)
        assert r["pixel_iou"] == pytest.approx(v["pixel_iou"], rel=0.01)


def test_coarser_pixels_still_agree() -> None:
    rng = np.random.default_rng(11)
    pred, ref = random_polygons(rng, 80, span=2000), random_polygons(rng, 80, span=2000)
    v = pixel_overlap(pred, ref, method="vector")
    r = pixel_overlap(pred, ref, pixel_size=2.0)
    assert r.pred_area == pytest.approx(v.pred_area, rel=0.01)
    assert r.result()["dice"] == pytest.approx(v.result()["dice"], rel=0.03)


def test_region_restricts_scoring() -> None:
    pred = [box(0, 0, 10, 10), box(20, 0, 30, 10)]
    ref = [box(0, 0, 10, 10)]
    assert pixel_overlap(pred, ref, (0, 0, 10, 10)).result()["dice"] == 1.0
    assert pixel_overlap(pred, ref).result()["dice"] == pytest.approx(2 / 3)
    half = pixel_overlap(pred, ref, box(5, 0, 25, 10))  # half of each prediction inside
    assert (half.intersection, half.pred_area, half.ref_area) == (50, 100, 50)
    assert pixel_overlap(pred, ref, box(5, 0, 25, 10), method="vector") == half
    with pytest.raises(ConfigError):
        pixel_overlap(pred, ref, (0, 0, 1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        pixel_overlap(pred, ref, method="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        pixel_overlap(pred, ref, pixel_size=0)


def test_pixel_metrics_match_sklearn_on_masks() -> None:
    # Integer rectangles: their centre-sampled masks are exact slices, built independently.
    rng = np.random.default_rng(5)
    shape = (120, 160)
    masks = {"pred": np.zeros(shape, bool), "ref": np.zeros(shape, bool)}
    geoms: dict[str, list[Polygon]] = {"pred": [], "ref": []}
    for side in masks:
        for _ in range(12):
            x0, y0 = int(rng.integers(0, 140)), int(rng.integers(0, 100))
            w, h = int(rng.integers(3, 30)), int(rng.integers(3, 30))
            x1, y1 = min(x0 + w, shape[1]), min(y0 + h, shape[0])
            masks[side][y0:y1, x0:x1] = True
            geoms[side].append(box(x0, y0, x1, y1))
    grid = Grid(0, 0, shape[1], shape[0])
    np.testing.assert_array_equal(rasterize(geoms["pred"], grid), masks["pred"])
    res = pixel_overlap(geoms["pred"], geoms["ref"], (0, 0, shape[1], shape[0])).result()
    y_true, y_pred = masks["ref"].ravel(), masks["pred"].ravel()
    assert res["pixel_iou"] == pytest.approx(jaccard_score(y_true, y_pred))
    assert res["dice"] == pytest.approx(f1_score(y_true, y_pred))


def test_rasterize_agrees_with_skimage() -> None:
    rng = np.random.default_rng(8)
    grid = Grid(0, 0, 300, 200)
    for poly in random_polygons(rng, 30, span=180):
        poly = shapely.affinity.translate(poly, 40, 10)  # entirely on the grid
        ours = rasterize([poly], grid)
        # skimage samples at integer (row, col); our pixel centres are at (col + .5, row + .5).
        rc = np.asarray(poly.exterior.coords)[:, ::-1] - 0.5
        theirs = polygon2mask((grid.height, grid.width), rc)
        assert np.count_nonzero(ours != theirs) <= 2  # ties on the outline only
        assert abs(ours.sum() - poly.area) < poly.length / 2  # only outline pixels differ


def test_banding_does_not_change_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathray.evaluate import raster

    rng = np.random.default_rng(2)
    pred, ref = random_polygons(rng, 60), random_polygons(rng, 60)
    region = Point(250, 250).buffer(200)
    whole = pixel_overlap(pred, ref, region)
    monkeypatch.setattr(raster, "PARTS_PER_BAND", 3)
    monkeypatch.setattr(raster.bands, "__defaults__", (3,))
    assert pixel_overlap(pred, ref, region) == whole


def test_multipolygons_and_non_polygons() -> None:
    multi = shapely.MultiPolygon([box(0, 0, 2, 2), box(4, 0, 6, 2)])
    o = pixel_overlap([multi, Point(1, 1), shapely.LineString([(0, 0), (5, 5)])], [box(0, 0, 6, 2)])
    assert (o.intersection, o.pred_area, o.ref_area) == (8, 8, 12)
