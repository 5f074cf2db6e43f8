"""Matching predicted objects to reference objects (pathray.evaluate.matching)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely
from shapely.geometry import Point, Polygon, box

from pathray.errors import ConfigError
from pathray.evaluate.assignment import max_matching
from pathray.evaluate.matching import Matching, as_points, match_by_distance, match_by_iou


def test_two_squares_exact_iou() -> None:
    # 10x10 squares overlapping on 5x10: I = 50, U = 150.
    m = match_by_iou([box(0, 0, 10, 10)], [box(5, 0, 15, 10)], threshold=0.3)
    assert m.pred_idx.tolist() == [0] and m.ref_idx.tolist() == [0]
    assert m.iou[0] == pytest.approx(1 / 3, abs=1e-12)
    assert m.kind == "iou" and m.n_matched == 1
    below = match_by_iou([box(0, 0, 10, 10)], [box(5, 0, 15, 10)], threshold=0.5)
    assert below.n_matched == 0
    assert below.unmatched_pred.tolist() == [0] and below.unmatched_ref.tolist() == [0]


def test_iou_exactly_at_threshold_matches() -> None:
    # I = 100 * 2/3, U = 100 + 100 * 1/3 ... pick a clean tie: I = 50, U = 100 -> 0.5.
    pred, ref = box(0, 0, 10, 10), box(0, 0, 10, 5)
    assert match_by_iou([pred], [ref], threshold=0.5).n_matched == 1


def test_three_preds_two_refs_one_below_threshold() -> None:
    refs = [box(0, 0, 10, 10), box(100, 0, 110, 10)]
    preds = [
        box(1, 0, 11, 10),  # IoU 90/110 with ref 0: a match
        box(105, 0, 115, 10),  # IoU 50/150 with ref 1: below 0.5
        box(300, 300, 310, 310),  # touches nothing
    ]
    m = match_by_iou(preds, refs, threshold=0.5)
    assert list(zip(m.pred_idx.tolist(), m.ref_idx.tolist(), strict=True)) == [(0, 0)]
    assert m.iou[0] == pytest.approx(90 / 110)
    assert m.unmatched_pred.tolist() == [1, 2]
    assert m.unmatched_ref.tolist() == [1]
    assert (m.n_pred, m.n_ref) == (3, 2)


def test_ambiguous_low_threshold_is_solved_optimally() -> None:
    # Candidates at threshold 0.1: A-X (0.538), A-Y (0.176), B-X (0.25). Greedy by IoU takes
    # A-X and leaves B alone (1 pair); the optimum pairs A-Y and B-X (2 pairs).
    x, y = box(0, 0, 10, 10), box(10, 0, 20, 10)
    a, b = box(3, 0, 13, 10), box(-6, 0, 4, 10)
    m = match_by_iou([a, b], [x, y], threshold=0.1)
    assert m.n_matched == 2
    assert dict(zip(m.pred_idx.tolist(), m.ref_idx.tolist(), strict=True)) == {0: 1, 1: 0}
    assert m.iou.tolist() == pytest.approx([30 / 170, 40 / 160])
    # At 0.5 only A-X is a candidate.
    assert match_by_iou([a, b], [x, y], threshold=0.5).n_matched == 1


def _brute_force(pi, ri, w):
    best = (0, 0.0)
    for mask in range(1 << len(pi)):
        sel = [e for e in range(len(pi)) if mask >> e & 1]
        if len(set(pi[sel])) == len(sel) == len(set(ri[sel])):
            best = max(best, (len(sel), round(float(w[sel].sum()), 9)))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_assignment_is_optimal_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n_p, n_r = (int(v) for v in rng.integers(1, 6, 2))
        cells = rng.choice(n_p * n_r, int(rng.integers(0, min(10, n_p * n_r) + 1)), replace=False)
        pi, ri = (cells // n_r).astype(np.int64), (cells % n_r).astype(np.int64)
        w = rng.uniform(0, 1, len(cells)).round(3)
        pos = max_matching(pi, ri, w, n_p, n_r)
        assert (len(pos), round(float(w[pos].sum()), 9)) == _brute_force(pi, ri, w)
        assert len(set(pi[pos].tolist())) == len(set(ri[pos].tolist())) == len(pos)


def test_largest_total_iou_breaks_ties_in_count() -> None:
    # Both 2-pair matchings exist; greedy (A-X 0.6 first) totals 0.8, the optimum 1.0.
    pi, ri = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    w = np.array([0.6, 0.5, 0.5, 0.2])
    assert max_matching(pi, ri, w, 2, 2).tolist() == [1, 2]


def test_empty_sides_and_missing_geometries() -> None:
    sq = box(0, 0, 1, 1)
    m = match_by_iou([], [])
    assert (m.n_matched, m.n_pred, m.n_ref) == (0, 0, 0)
    m = match_by_iou([sq, sq], [])
    assert m.unmatched_pred.tolist() == [0, 1] and m.n_ref == 0
    m = match_by_iou([], np.array([sq], dtype=object))
    assert m.unmatched_ref.tolist() == [0]
    m = match_by_iou([None, Polygon(), sq], [sq, None])
    assert list(zip(m.pred_idx.tolist(), m.ref_idx.tolist(), strict=True)) == [(2, 0)]
    assert m.unmatched_pred.tolist() == [0, 1] and m.unmatched_ref.tolist() == [1]


def test_invalid_polygon_is_repaired_not_fatal() -> None:
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    m = match_by_iou([bowtie], [box(0, 0, 10, 10)], threshold=0.1)
    assert m.n_matched == 1 and 0 < m.iou[0] <= 1


def test_bad_arguments() -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError):
            match_by_iou([], [], threshold=bad)
    with pytest.raises(ConfigError):
        match_by_iou([], [], chunk_size=0)
    with pytest.raises(TypeError):
        match_by_iou([1, 2], [])
    with pytest.raises(ConfigError):
        match_by_distance([[0, 0]], [[0, 0]], max_distance=-1)
    with pytest.raises(ConfigError):
        as_points(np.zeros((3, 3)))


def test_chunks_and_threads_do_not_change_the_result() -> None:
    rng = np.random.default_rng(3)
    c = rng.uniform(0, 300, (400, 2))
    pred = shapely.buffer(shapely.points(c), 6)
    ref = shapely.buffer(shapely.points(c + rng.normal(0, 3, c.shape)), 6)
    a = match_by_iou(pred, ref, 0.3, chunk_size=7, n_threads=1)
    b = match_by_iou(pred, ref, 0.3, chunk_size=10_000, n_threads=3)
    for field in ("pred_idx", "ref_idx", "score", "unmatched_pred", "unmatched_ref"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_remap() -> None:
    m = Matching(
        np.array([0, 1]), np.array([1, 0]), np.array([0.7, 0.9]), np.array([2]), np.array([])
    )
    r = m.remap([5, 6, 7], [8, 9])
    assert r.pred_idx.tolist() == [5, 6] and r.ref_idx.tolist() == [9, 8]
    assert r.unmatched_pred.tolist() == [7] and r.unmatched_ref.tolist() == []


def test_points_matching() -> None:
    pred = [[0, 0], [10, 0], [50, 50]]
    ref = [[1, 0], [12, 0], [90, 90]]
    m = match_by_distance(pred, ref, max_distance=2)  # 2.0 exactly is inside
    assert list(zip(m.pred_idx.tolist(), m.ref_idx.tolist(), strict=True)) == [(0, 0), (1, 1)]
    assert m.score.tolist() == [1.0, 2.0] and m.kind == "distance"
    assert m.unmatched_pred.tolist() == [2] and m.unmatched_ref.tolist() == [2]
    with pytest.raises(AttributeError):
        _ = m.iou


def test_points_ambiguous_and_coincident() -> None:
    # Greedy by distance pairs p0-r0 (0) and leaves p1 (only near r0) alone; optimal: 2 pairs.
    pred = np.array([[0.0, 0.0], [-3.0, 0.0]])
    ref = np.array([[0.0, 0.0], [3.0, 0.0]])
    m = match_by_distance(pred, ref, max_distance=3.5)
    assert m.n_matched == 2
    assert dict(zip(m.pred_idx.tolist(), m.ref_idx.tolist(), strict=True)) == {0: 1, 1: 0}
    # Among equal counts, the smaller total distance wins; zero distance is a valid pair.
    m = match_by_distance([[0, 0], [5, 0]], [[0, 0], [5, 1]], max_distance=10)
    assert m.ref_idx.tolist() == [0, 1] and m.score.tolist() == [0.0, 1.0]


def test_points_from_geometries_and_empty() -> None:
    m = match_by_distance([Point(1, 1), box(0, 0, 4, 4)], np.array([[2.0, 2.0]]), 0.5)
    assert m.pred_idx.tolist() == [1]
    m = match_by_distance([], [[0, 0]], 1.0)
    assert (m.n_matched, m.n_pred, m.unmatched_ref.tolist()) == (0, 0, [0])
    m = match_by_distance(np.zeros((0, 2)), [], 1.0)
    assert m.n_matched == 0 and m.n_ref == 0
    m = match_by_distance([[0, 0]], [[0, 0]], 0.0)
    assert m.n_matched == 1


def test_scale_20k_discs() -> None:
    side, n = 150, 20_000  # a 150 x 150 grid of cells, 20k used
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    centres = (np.c_[gx.ravel(), gy.ravel()] * 30.0 + 15.0)[:n]
    ref = shapely.buffer(shapely.points(centres), 8.0, quad_segs=8)
    shift = np.where(np.arange(n)[:, None] < 16_000, 1.0, 15.0)  # 4k land between discs
    pred = shapely.buffer(shapely.points(centres + shift), 8.0, quad_segs=8)
    start = time.perf_counter()
    m = match_by_iou(pred, ref, threshold=0.5)
    elapsed = time.perf_counter() - start
    assert (m.n_matched, len(m.unmatched_pred), len(m.unmatched_ref)) == (16_000, 4_000, 4_000)
    np.testing.assert_array_equal(m.pred_idx, m.ref_idx)
    assert m.iou.min() > 0.75
    assert elapsed < 20.0, f"20k vs 20k took {elapsed:.1f} s"
