"""Matching predicted nuclei to reference nuclei: PathRay against a naive pairwise loop.

Synthetic nuclei: star-shaped (non-convex) polygons of 24 vertices, radius 5 to 9 px, one per
cell of a 24 px grid (1M nuclei cover a 24,000 px square, a whole slide at 0.5 um/px). The
predictions redraw each outline's radii and move it by about 1 px (IoU mostly 0.6 to 0.9), miss
10% of the nuclei and add 10% extra objects between them.

- PathRay: :func:`pathray.evaluate.matching.match_by_iou` at IoU 0.5 (STRtree bulk query, IoU
  bound pruning from boxes and areas, exact intersection areas from the compiled kernel of
  :mod:`pathray.evaluate.overlap` on threads, sparse optimal assignment), with a phase breakdown
  from :func:`profile_phases` (which also times GEOS on the same pairs).
- Naive: a Python double loop over every (prediction, reference) pair (shapely intersection
  and union areas), then greedy one-to-one matching by IoU, timed on a subset (``--naive``
  nuclei on each side) and extrapolated to the full size as O(n^2) (its cost is exactly
  proportional to the number of pairs).

Both matchers run on the same subset too, and must agree on the pairs found there.

Run: ``python -m benchmarks.matching [--n 1000000] [--naive 1000] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import shapely

from benchmarks.common import machine_info, print_table, write_result
from pathray.evaluate.matching import Matching, _threads, match_by_iou
from pathray.evaluate.overlap import Rings, geos_intersection_areas, intersection_areas, make_valid

SPACING = 24.0
VERTICES = 24


def nuclei(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` reference nuclei and their predictions (see the module docstring)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    centres = (np.c_[gx.ravel(), gy.ravel()][:n] + 0.5) * SPACING
    radius = rng.uniform(5.0, 9.0, n)
    ref = _stars(rng, centres, radius)
    found = rng.random(n) >= 0.1
    moved = centres[found] + rng.normal(0.0, 0.7, (int(found.sum()), 2))
    pred = _stars(rng, moved, radius[found])
    n_extra = n // 10
    # Extras sit on cell corners, between four nuclei, where they touch at most their rims.
    extra = (np.c_[gx.ravel(), gy.ravel()][rng.choice(n, n_extra, replace=False)] + 1.0) * SPACING
    pred = np.concatenate([pred, _stars(rng, extra, rng.uniform(3.0, 5.0, n_extra))])
    return pred, ref


def _stars(rng: np.random.Generator, centres: np.ndarray, radius: np.ndarray) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, VERTICES, endpoint=False)
    wobble = 1.0 + 0.12 * rng.standard_normal((len(centres), VERTICES))
    r = radius[:, None] * np.clip(wobble, 0.7, 1.3)
    xy = np.stack([centres[:, :1] + r * np.cos(angles), centres[:, 1:] + r * np.sin(angles)], -1)
    ring = np.concatenate([xy, xy[:, :1]], axis=1)
    return np.asarray(shapely.polygons(ring), dtype=object)


def naive_match(pred: np.ndarray, ref: np.ndarray, threshold: float = 0.5) -> set[tuple[int, int]]:
    """Every pair's IoU in a Python double loop, then greedy one-to-one by IoU."""
    pairs = []
    for i, p in enumerate(pred):
        for j, r in enumerate(ref):
            inter = p.intersection(r).area
            if inter > 0:
                iou = inter / p.union(r).area
                if iou >= threshold:
                    pairs.append((iou, i, j))
    pairs.sort(reverse=True)
    used_p: set[int] = set()
    used_r: set[int] = set()
    out = set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            out.add((i, j))
    return out


def profile_phases(pred: np.ndarray, ref: np.ndarray, threads: int) -> dict[str, float]:
    """Seconds of each phase of the matcher, run one after another on one thread of control.

    (The matcher itself overlaps them on its threads; this only shows where the time goes.)
    """
    out: dict[str, float] = {}

    def lap(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        value = fn()
        out[name] = time.perf_counter() - start
        return value

    p = lap("validity check", lambda: make_valid(pred))
    r = make_valid(ref)
    tree = lap("STRtree build", lambda: shapely.STRtree(r))
    qi, rj = lap("bulk query", lambda: tree.query(p))
    ap, ar = lap("areas + bounds", lambda: (shapely.area(p), shapely.area(r)))
    bp, br = shapely.bounds(p), shapely.bounds(r)

    def prune() -> np.ndarray:
        lo = np.maximum(bp[qi, :2], br[rj, :2])
        hi = np.minimum(bp[qi, 2:], br[rj, 2:])
        overlap = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
        a, b = ap[qi], ar[rj]
        return np.asarray(np.minimum(np.minimum(a, b), overlap) / np.maximum(a, b) >= 0.5)

    keep = lap("IoU bound pruning", prune)
    out["candidate pairs (M)"] = len(qi) / 1e6
    out["exact pairs (M)"] = float(keep.sum()) / 1e6
    a, b = p[qi[keep]], r[rj[keep]]
    rings_a = lap("flatten rings", lambda: Rings.from_geometries(a))
    rings_b = Rings.from_geometries(b)
    ours = lap(
        "exact intersections, kernel (1 thread)",
        lambda: intersection_areas(a, b, rings_a, rings_b),
    )
    # GEOS on a sample of the same pairs (all of them take minutes), scaled to the whole.
    k = min(len(a), 100_000)
    start = time.perf_counter()
    geos = geos_intersection_areas(a[:k], b[:k])
    out["exact intersections, GEOS (1 thread, scaled)"] = (
        (time.perf_counter() - start) * len(a) / max(k, 1)
    )
    out["kernel vs GEOS max |difference| (px^2)"] = float(np.abs(ours[:k] - geos).max(initial=0))
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print absolute times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="reference nuclei")
    parser.add_argument("--naive", type=int, default=1_000, help="naive subset size")
    parser.add_argument("--threads", type=int, default=None, help="matcher threads")
    parser.add_argument("--no-profile", action="store_true", help="skip the phase breakdown")
    args = parser.parse_args(argv)
    threads = _threads(args.threads)
    load_before = os.getloadavg()

    start = time.perf_counter()
    pred, ref = nuclei(args.n)
    gen_s = time.perf_counter() - start
    print(f"generated {len(pred):,} predictions and {len(ref):,} references in {gen_s:.1f} s")

    start, cpu = time.perf_counter(), time.process_time()
    full: Matching = match_by_iou(pred, ref, 0.5, n_threads=threads)
    ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
    # CPU seconds (all threads) depend less on other processes' load than wall time does.
    print(
        f"pathray: {full.n_matched:,} pairs in {ours_s:.1f} s wall, {ours_cpu:.1f} s CPU "
        f"({threads} threads)"
    )

    # The same comparison on a subset: the first nuclei of the grid and their predictions.
    k = args.naive
    sub_ref = ref[:k]
    near = shapely.STRtree(sub_ref).query(pred, predicate="intersects")[0]
    sub_pred = pred[np.unique(near)][:k]
    start = time.perf_counter()
    sub_ours = match_by_iou(sub_pred, sub_ref, 0.5, n_threads=threads)
    sub_ours_s = time.perf_counter() - start
    start = time.perf_counter()
    sub_naive = naive_match(sub_pred, sub_ref)
    naive_s = time.perf_counter() - start
    same = sub_naive == set(zip(sub_ours.pred_idx.tolist(), sub_ours.ref_idx.tolist(), strict=True))
    pairs_sub = len(sub_pred) * len(sub_ref)
    naive_full_s = naive_s * (len(pred) * len(ref)) / pairs_sub

    rows = [
        {
            "matcher": "pathray",
            "size": f"{len(pred):,} x {len(ref):,}",
            "seconds": ours_s,
            "ratio": 1.0,
        },
        {
            "matcher": "naive (extrapolated n^2)",
            "size": f"{len(pred):,} x {len(ref):,}",
            "seconds": naive_full_s,
            "ratio": naive_full_s / ours_s,
        },
        {
            "matcher": "pathray",
            "size": f"{len(sub_pred):,} x {len(sub_ref):,}",
            "seconds": sub_ours_s,
            "ratio": 1.0,
        },
        {
            "matcher": "naive (measured)",
            "size": f"{len(sub_pred):,} x {len(sub_ref):,}",
            "seconds": naive_s,
            "ratio": naive_s / sub_ours_s,
        },
    ]
    print_table(rows, title="Matching at IoU 0.5 (ratio = time / PathRay's time, same size)")
    print(f"subset: both matchers found the same {len(sub_naive)} pairs: {same}")
    phases = {} if args.no_profile else profile_phases(pred, ref, threads)
    if phases:
        print_table(
            [{"phase": k, "value": v} for k, v in phases.items()],
            title="Where the time goes (seconds, one thread; pairs in millions)",
        )
    info = machine_info()
    print(
        f"\nload average before: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f} "
        f"({info['usable_cores']} usable cores)"
    )
    write_result(
        "matching",
        {
            "n_pred": len(pred),
            "n_ref": len(ref),
            "threads": threads,
            "pathray_s": ours_s,
            "pathray_cpu_s": ours_cpu,
            "matched": full.n_matched,
            "naive_subset": [len(sub_pred), len(sub_ref)],
            "naive_subset_s": naive_s,
            "pathray_subset_s": sub_ours_s,
            "naive_extrapolated_s": naive_full_s,
            "speedup": naive_full_s / ours_s,
            "subset_agrees": same,
            "phases": phases,
            "load_before": load_before[0],
        },
    )


if __name__ == "__main__":
    main()
