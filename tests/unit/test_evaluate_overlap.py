"""The compiled intersection-area kernel against GEOS, degenerate cases above all."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from pathray.evaluate.overlap import (
    Rings,
    _pair_areas,
    geos_intersection_areas,
    intersection_areas,
)


def _arr(geoms: list) -> np.ndarray:
    out = np.empty(len(geoms), dtype=object)
    out[:] = geoms
    return out


def _kernel_only(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The kernel's own answers (NaN where it declines), no GEOS fallback."""
    ra, rb = Rings.from_geometries(a), Rings.from_geometries(b)
    idx = np.arange(len(a), dtype=np.int64)
    out = np.empty(len(a))
    _pair_areas(ra.xy, ra.start, ra.count, rb.xy, rb.start, rb.count, idx, idx, out)
    return out


def _stars(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    """Valid random non-convex polygons (star-shaped about a random centre)."""
    out: list[Polygon] = []
    while len(out) < n:
        k = int(rng.integers(3, 30))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(2, 10, k) * scale
        c = rng.uniform(0, 6, 2) * scale
        poly = Polygon(np.c_[c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)])
        if poly.is_valid:
            out.append(poly)
    return _arr(out)


def _blob(rng: np.random.Generator, size: int = 12) -> Polygon:
    """A hole-free rectilinear polygon on the integer grid (a traced mask, as from a model)."""
    while True:
        cells = rng.random((size, size)) < 0.55
        boxes = [box(x, y, x + 1, y + 1) for y, x in zip(*np.nonzero(cells), strict=True)]
        union = shapely.union_all(boxes)
        parts = list(union.geoms) if isinstance(union, MultiPolygon) else [union]
        big = max(parts, key=lambda g: g.area)
        if big.area >= 4:
            return Polygon(big.exterior)


def test_random_float_polygons_match_geos() -> None:
    rng = np.random.default_rng(0)
    a, b = _stars(rng, 500), _stars(rng, 500)
    ours = _kernel_only(a, b)
    ref = geos_intersection_areas(a, b)
    assert np.isnan(ours).sum() == 0
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    assert (ref > 0).mean() > 0.5  # the test exercises real overlaps, not only disjoint pairs


def test_pixel_grid_polygons_with_shared_edges_match_geos_exactly() -> None:
    rng = np.random.default_rng(1)
    blobs = [_blob(rng) for _ in range(300)]
    shifts = rng.integers(-3, 4, (300, 2))
    a = _arr(blobs)
    b = _arr([shapely.affinity.translate(g, *s) for g, s in zip(blobs[::-1], shifts, strict=True)])
    ours = _kernel_only(a, b)
    ref = geos_intersection_areas(a, b)
    # Integer coordinates: every orientation test is exact, so the kernel never declines.
    assert np.isnan(ours).sum() == 0
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_identical_nested_touching_and_disjoint() -> None:
    sq = box(0, 0, 4, 4)
    cases = [
        (sq, sq, 16.0),  # identical: every edge shared
        (sq, box(1, 1, 2, 2), 1.0),  # nested
        (box(1, 1, 2, 2), sq, 1.0),
        (sq, box(4, 0, 8, 4), 0.0),  # sharing an edge, outsides touching
        (sq, box(4, 4, 8, 8), 0.0),  # touching at a corner
        (sq, box(0, 0, 4, 2), 8.0),  # three shared edges
        (sq, box(10, 10, 11, 11), 0.0),  # disjoint
        (sq, Polygon([(0, 0), (4, 4), (0, 4)]), 8.0),  # diagonal through two corners
        (sq, Polygon([(2, 0), (4, 2), (2, 4), (0, 2)]), 8.0),  # vertices on the edges
        (sq, Polygon([(0, 0), (2, 0), (4, 0), (4, 4), (0, 4)]), 16.0),  # collinear vertex
        (sq, Polygon([(0, 0), (0, 4), (4, 4), (4, 0)]), 16.0),  # clockwise
        (sq, Polygon([(0, 0), (4, 0), (4, 0), (4, 4), (0, 4)]), 16.0),  # repeated vertex
    ]
    a, b = _arr([c[0] for c in cases]), _arr([c[1] for c in cases])
    ours = _kernel_only(a, b)
    assert not np.isnan(ours).any()
    np.testing.assert_allclose(ours, [c[2] for c in cases], atol=1e-12)
    np.testing.assert_allclose(ours, geos_intersection_areas(a, b), atol=1e-12)


def test_far_from_origin_and_tiny_offsets() -> None:
    rng = np.random.default_rng(2)
    a = _stars(rng, 200)
    base = rng.uniform(0, 90_000, (200, 2))
    a = _arr([shapely.affinity.translate(g, *o) for g, o in zip(a, base, strict=True)])
    # The same polygons moved by a hair: near-coincident edges everywhere.
    b = _arr([shapely.affinity.translate(g, 1e-7, -3e-8) for g in a])
    got = intersection_areas(a, b)
    np.testing.assert_allclose(got, geos_intersection_areas(a, b), rtol=1e-7)


def test_holes_multipolygons_and_missing_go_to_geos() -> None:
    ring = box(0, 0, 10, 10).difference(box(3, 3, 7, 7))
    multi = MultiPolygon([box(0, 0, 2, 2), box(5, 5, 7, 7)])
    a = _arr([ring, multi, None, box(0, 0, 1, 1)])
    b = _arr([box(2, 2, 8, 8), box(1, 1, 6, 6), box(0, 0, 1, 1), Polygon()])
    rings = Rings.from_geometries(a)
    assert rings.count.tolist() == [0, 0, 0, 4]
    ours = _kernel_only(a, b)
    assert np.isnan(ours).all()  # each pair has one side the kernel leaves to GEOS
    got = intersection_areas(a, b)
    np.testing.assert_allclose(got[:2], [20.0, 2.0])
    assert got[3] == 0.0


def test_pair_indices_and_reused_rings() -> None:
    a = _arr([box(0, 0, 2, 2), box(5, 5, 6, 6)])
    b = _arr([box(1, 1, 3, 3), box(0, 0, 10, 10)])
    ra, rb = Rings.from_geometries(a), Rings.from_geometries(b)
    ia, ib = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    got = intersection_areas(a, b, ra, rb, ia, ib)
    np.testing.assert_allclose(got, [1.0, 4.0, 0.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="same length"):
        intersection_areas(a, b, ia=ia, ib=ib[:2])


@pytest.mark.parametrize("grid", [1.0, 0.25, 0.1])
def test_snapped_coordinates(grid: float) -> None:
    """Vertices on a grid: collinear and touching configurations abound."""
    rng = np.random.default_rng(3)
    a, b = _stars(rng, 800), _stars(rng, 800)
    a = shapely.transform(a, lambda c: np.round(c / grid) * grid)
    b = shapely.transform(b, lambda c: np.round(c / grid) * grid)
    ok = shapely.is_valid(a) & shapely.is_valid(b)
    a, b = a[ok], b[ok]
    ref = np.array([shapely.area(shapely.intersection(x, y)) for x, y in zip(a, b, strict=True)])
    ours = _kernel_only(a, b)
    decided = ~np.isnan(ours)
    if grid != 0.1:  # binary fractions: every orientation is exact
        assert decided.all()
    assert decided.mean() > 0.8
    np.testing.assert_allclose(ours[decided], ref[decided], atol=1e-9)
    # Where the kernel declines, GEOS answers.
    np.testing.assert_allclose(intersection_areas(a, b), ref, atol=1e-9)
