"""Per-slide comparisons and their summary (pathray.evaluate.compare)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from shapely.geometry import Point, box

from pathray.evaluate import SlideComparison, compare_objects, summarize
from pathray.evaluate.compare import COUNT_KEYS, inside


def discs(rng: np.random.Generator, n: int, span: float = 400.0) -> np.ndarray:
    return shapely.buffer(shapely.points(rng.uniform(10, span - 10, (n, 2))), rng.uniform(4, 9, n))


def shift(geoms: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return shapely.transform(geoms, lambda xy: xy + np.array([dx, dy]))


def test_compare_hand_computed() -> None:
    refs = [box(0, 0, 10, 10), box(100, 0, 110, 10)]
    preds = [box(1, 0, 11, 10), box(105, 0, 115, 10), box(300, 300, 310, 310)]
    c = compare_objects(preds, refs)
    m = c.metrics()
    assert (m["tp"], m["fp"], m["fn"], m["n_pred"], m["n_ref"]) == (1, 2, 1, 3, 2)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == 0.5
    assert m["f1"] == pytest.approx(0.4)
    # Pixels: pred union 300, ref union 200, intersection 90 + 50.
    assert m["dice"] == pytest.approx(2 * 140 / 500)
    assert m["pixel_iou"] == pytest.approx(140 / 360)


def test_region_drops_objects_by_centroid() -> None:
    region = box(0, 0, 50, 50)
    preds = [box(0, 0, 10, 10), box(45, 0, 65, 10), box(80, 80, 90, 90)]  # centroids in, out, out
    refs = [box(0, 0, 10, 10), box(40, 0, 52, 10), box(60, 60, 70, 70)]  # in, in, out
    c = compare_objects(preds, refs, region=region)
    assert (c.detection.tp, c.detection.fp, c.detection.fn) == (1, 0, 1)
    # Indices refer to the inputs; dropped objects are neither matched nor unmatched.
    assert c.matching.pred_idx.tolist() == [0] and c.matching.ref_idx.tolist() == [0]
    assert c.matching.unmatched_pred.tolist() == [] and c.matching.unmatched_ref.tolist() == [1]
    # Pixels inside the region only: pred 100 + 5*10, ref 100 + 10*10, intersection 100 + 50.
    assert (c.pixels.intersection, c.pixels.pred_area, c.pixels.ref_area) == (150, 150, 200)
    same = compare_objects(preds, refs, region=(0, 0, 50, 50))
    assert same.metrics() == c.metrics()


def test_inside_keeps_boundary_centroids_and_drops_missing() -> None:
    geoms = [box(0, 0, 2, 2), box(4, 0, 6, 2), None, shapely.Polygon()]
    assert inside(geoms, (0, 0, 5, 5)).tolist() == [True, True, False, False]
    assert inside(geoms, None).tolist() == [True, True, False, False]


def test_summary_is_json_and_merges_exactly_like_one_pass() -> None:
    rng = np.random.default_rng(0)
    per_slide: dict[str, SlideComparison] = {}
    all_pred, all_ref = [], []
    for k in range(4):
        pred = discs(rng, int(rng.integers(20, 60)))
        ref = shift(pred, 1.5, -1.0)[: int(rng.integers(10, 40))]
        ref = np.r_[ref, discs(rng, 5)]
        per_slide[f"slide-{k}"] = compare_objects(pred, ref, iou_threshold=0.5)
        # One big "slide": the same slides side by side, 1000 px apart (integer offset, so the
        # raster grids line up too).
        all_pred.extend(shift(pred, 1000 * k, 0))
        all_ref.extend(shift(ref, 1000 * k, 0))
    report = summarize(per_slide)
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {"per_slide", "overall", "macro", "n_slides"}
    assert list(report["per_slide"]) == list(per_slide)
    single = compare_objects(all_pred, all_ref).metrics()
    overall = report["overall"]
    assert {k: overall[k] for k in COUNT_KEYS} == {k: single[k] for k in COUNT_KEYS}
    assert overall == pytest.approx(single)
    scores = [k for k in overall if k not in COUNT_KEYS]
    for key in scores:
        mean = np.mean([m[key] for m in report["per_slide"].values()])
        assert report["macro"][key] == pytest.approx(mean)
    assert report["n_slides"] == 4


def test_summary_of_nothing_and_of_empty_slides() -> None:
    empty = summarize({})
    assert empty["n_slides"] == 0 and empty["macro"] == {}
    assert empty["overall"]["f1"] == 1.0 and empty["overall"]["tp"] == 0
    report = summarize(
        {"a": compare_objects([], []), "b": compare_objects([], [Point(0, 0).buffer(3)])}
    )
    assert report["per_slide"]["a"]["f1"] == 1.0 and report["per_slide"]["b"]["f1"] == 0.0
    assert report["overall"]["recall"] == 0.0 and report["macro"]["f1"] == 0.5
    assert json.dumps(report)


def test_vector_pixels_and_threshold_are_passed_on() -> None:
    a, b = box(0, 0, 10, 10), box(5, 0, 15, 10)  # IoU 1/3
    assert compare_objects([a], [b]).detection.tp == 0
    c = compare_objects([a], [b], iou_threshold=0.3, pixel_method="vector")
    assert c.detection.tp == 1 and c.detection.sum_iou == pytest.approx(1 / 3)
    assert c.pixels.result()["dice"] == pytest.approx(0.5)
