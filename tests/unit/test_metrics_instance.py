"""Panoptic quality, AJI and mean AP (pathray.evaluate.instance, .pairs), against hand-computed
cases, naive loops and scikit-learn."""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import box
from sklearn.metrics import average_precision_score

from pathray.errors import ConfigError
from pathray.evaluate import SlideComparison, compare_objects, summarize
from pathray.evaluate.instance import (
    COCO_THRESHOLDS,
    AJICounts,
    AveragePrecision,
    average_precision,
    panoptic,
)
from pathray.evaluate.matching import match_by_iou
from pathray.evaluate.metrics import DetectionCounts
from pathray.evaluate.pairs import iou_pairs


def blobs(rng: np.random.Generator, n: int, span: float = 300.0) -> np.ndarray:
    centres = rng.uniform(10, span - 10, (n, 2))
    return shapely.buffer(shapely.points(centres), rng.uniform(4, 10, n), quad_segs=6)


def jitter(rng: np.random.Generator, geoms: np.ndarray, sd: float) -> np.ndarray:
    """Each geometry moved by its own random shift."""
    shift = rng.normal(0, sd, (len(geoms), 2))
    _, which = shapely.get_coordinates(geoms, return_index=True)
    return shapely.transform(geoms, lambda xy: xy + shift[which])


# -- panoptic quality -------------------------------------------------------------------------


def test_pq_hand_computed() -> None:
    refs = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]
    # IoU 1.0 (identical), IoU 80/100 = 0.8 (8-wide inside 10-wide), one extra, ref 3 missed.
    preds = [box(0, 0, 10, 10), box(21, 0, 29, 10), box(80, 80, 90, 90)]
    m = compare_objects(preds, refs).metrics()
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["sq"] == pytest.approx(0.9)
    assert m["rq"] == pytest.approx(2 / (2 + 0.5 + 0.5))
    assert m["pq"] == pytest.approx(0.9 * 2 / 3)


def test_pq_conventions() -> None:
    assert panoptic(DetectionCounts()) == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    assert panoptic(DetectionCounts(fp=2)) == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    # Centroid matching has no IoU: no panoptic quality.
    m = compare_objects([box(0, 0, 4, 4)], [box(1, 0, 5, 4)], match="centroid", max_distance=2)
    assert m.detection.tp == 1 and "pq" not in m.metrics() and "aji" not in m.metrics()


# -- AJI --------------------------------------------------------------------------------------


def naive_aji(pred: list, ref: list) -> float:
    """Kumar et al.'s loop, written directly with shapely."""
    c = u = 0.0
    used: set[int] = set()
    for g in ref:
        ious = [g.intersection(s).area / g.union(s).area for s in pred]
        if not ious or max(ious) == 0:
            u += g.area
            continue
        j = int(np.argmax(ious))
        c += g.intersection(pred[j]).area
        u += g.union(pred[j]).area
        used.add(j)
    u += sum(s.area for j, s in enumerate(pred) if j not in used)
    return c / u if u else 1.0


def test_aji_hand_computed() -> None:
    # Ref A is split in two halves (IoU 0.5 each: the first wins the tie); ref B is missed.
    refs = [box(0, 0, 10, 10), box(50, 0, 60, 10)]
    preds = [box(0, 0, 10, 5), box(0, 5, 10, 10)]
    acc = AJICounts().update(iou_pairs(preds, refs))
    # C = 50; U = |A u P1| 100 + unchosen P2 50 + lone B 100.
    assert (acc.intersection, acc.union) == pytest.approx((50, 250))
    assert acc.result()["aji"] == pytest.approx(0.2)
    assert AJICounts().result() == {"aji": 1.0}


@pytest.mark.parametrize("seed", range(3))
def test_aji_matches_the_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = blobs(rng, 40)
    pred = np.r_[jitter(rng, ref[:30], 3.0), blobs(rng, 8)]
    ours = AJICounts().update(iou_pairs(pred, ref)).result()["aji"]
    assert ours == pytest.approx(naive_aji(list(pred), list(ref)), rel=1e-9)


# -- mean average precision -------------------------------------------------------------------


def naive_hits(pred: list, ref: list, scores: np.ndarray, t: float) -> np.ndarray:
    """COCO's greedy loop: by score, each prediction takes its best free reference."""
    hit = np.zeros(len(pred), bool)
    taken: set[int] = set()
    for i in np.argsort(-scores, kind="stable"):
        best, best_iou = -1, t - 1e-12
        for j, g in enumerate(ref):
            iou = pred[i].intersection(g).area / pred[i].union(g).area
            if j not in taken and iou >= best_iou and (best < 0 or iou > best_iou):
                best, best_iou = j, iou
        if best >= 0:
            hit[i] = True
            taken.add(best)
    return hit


@pytest.mark.parametrize("seed", range(3))
def test_map_against_naive_matching_and_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = blobs(rng, 30, span=150)  # crowded: ambiguous pairs occur
    pred = np.r_[jitter(rng, ref[:25], 1.0), jitter(rng, ref[:5], 3.0), blobs(rng, 5, span=150)]
    scores = np.round(rng.uniform(0, 1, len(pred)), 1)  # ties on purpose
    acc = AveragePrecision().update(iou_pairs(pred, ref), scores)
    per_t = acc.per_threshold()
    for k, t in enumerate(COCO_THRESHOLDS):
        hits = naive_hits(list(pred), list(ref), scores, t)
        np.testing.assert_array_equal(acc.hits[:, k], hits)
        expected = (
            average_precision_score(hits, scores) * hits.sum() / len(ref) if hits.any() else 0
        )
        assert per_t[k] == pytest.approx(expected)
    res = acc.result()
    assert res["map"] == pytest.approx(per_t.mean())
    assert res["ap50"] == per_t[0] and res["ap75"] == per_t[5]
    assert 0 < res["ap75"] <= res["ap50"] <= 1


def test_average_precision_hand_computed_and_conventions() -> None:
    # Recall 1/4, 1/4, 2/4 at precision 1, 1/2, 2/3.
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7], 4) == pytest.approx(0.25 + 0.25 * 2 / 3)
    assert average_precision([], [], 0) == 1.0
    assert average_precision([0], [0.5], 0) == 0.0 and average_precision([], [], 3) == 0.0
    perfect = AveragePrecision().update(iou_pairs([box(0, 0, 9, 9)], [box(0, 0, 9, 9)]))
    assert perfect.result() == {"map": 1.0, "ap50": 1.0, "ap75": 1.0}
    with pytest.raises(ConfigError):
        AveragePrecision(thresholds=(0.0,))
    with pytest.raises(ConfigError):
        AveragePrecision().update(iou_pairs([box(0, 0, 1, 1)], []), scores=[1, 2])
    with pytest.raises(TypeError):
        AveragePrecision().merge(AveragePrecision(thresholds=(0.5,)))


def test_pairs_match_equals_match_by_iou() -> None:
    rng = np.random.default_rng(7)
    ref = blobs(rng, 60, span=200)
    pred = jitter(rng, ref, 3.0)
    pairs = iou_pairs(pred, ref)
    for t in (0.1, 0.3, 0.5, 0.7):
        a, b = pairs.match(t), match_by_iou(pred, ref, t)
        np.testing.assert_array_equal(a.pred_idx, b.pred_idx)
        np.testing.assert_array_equal(a.ref_idx, b.ref_idx)
        np.testing.assert_allclose(a.iou, b.iou)
    with pytest.raises(ConfigError):
        iou_pairs(pred, ref, min_iou=0.5).match(0.3)
    with pytest.raises(ConfigError):
        iou_pairs(pred, ref, min_iou=0)


# -- merging ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_instance_metrics_merge_like_one_pass(seed: int) -> None:
    rng = np.random.default_rng(seed)
    slides: dict[str, SlideComparison] = {}
    all_pred: list[Any] = []
    all_ref: list[Any] = []
    all_scores: list[float] = []
    for k in range(4):
        ref = blobs(rng, int(rng.integers(5, 30)))
        pred = np.r_[jitter(rng, ref, 2.5)[: int(rng.integers(0, len(ref)))], blobs(rng, 3)]
        scores = rng.uniform(0, 1, len(pred))
        slides[f"s{k}"] = compare_objects(pred, ref, pred_scores=scores)
        offset = np.array([1000.0 * k, 0.0])
        all_pred.extend(shapely.transform(pred, lambda xy, o=offset: xy + o))
        all_ref.extend(shapely.transform(ref, lambda xy, o=offset: xy + o))
        all_scores.extend(scores)
    single = compare_objects(all_pred, all_ref, pred_scores=all_scores).metrics()
    overall = summarize(slides)["overall"]
    for key in ("pq", "sq", "rq", "aji", "map", "ap50", "ap75", "f1", "dice"):
        assert overall[key] == pytest.approx(single[key], rel=1e-12), key
    merged = reduce(lambda a, b: a + b, (s.ap for s in slides.values() if s.ap is not None))
    assert merged.n_ref == len(all_ref) and len(merged.scores) == len(all_pred)
