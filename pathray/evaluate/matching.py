"""One-to-one matching of predicted objects to reference objects.

Two matchers share one optimal assignment:

- :func:`match_by_iou` pairs polygons (nuclei, glands, ...) whose intersection over union
  reaches a threshold;
- :func:`match_by_distance` pairs points (cell centroids, mitoses, ...) closer than a distance.

Both solve the same problem on the graph of *candidate* pairs (pairs that pass the threshold):
choose a one-to-one matching with the **largest number of pairs**, and among those the one with
the **largest total score** (IoU, or closeness for points). This is the convention of StarDist's
``matching``. When the threshold is above 0.5 and neither side's objects overlap each other,
every object has at most one candidate, so the result is also the greedy one; below 0.5 greedy
matching can lose pairs, and this one does not. Candidates whose two ends have no other
candidate (the usual case) are matched directly; only the remaining, ambiguous ones go to a
sparse Jonker-Volgenant solver (see :mod:`.assignment`).

Geometries are shapely 2 geometries in level-0 pixel coordinates. Candidate pairs come from an
:class:`shapely.STRtree` bounding-box query, pruned by an IoU upper bound computed from bounding
boxes and areas before any exact (GEOS) intersection; predictions are processed in chunks so
memory stays bounded for millions of objects.

Example:
    >>> from shapely.geometry import box
    >>> m = match_by_iou([box(0, 0, 10, 10), box(50, 50, 60, 60)], [box(0, 0, 10, 12)])
    >>> m.pred_idx.tolist(), m.ref_idx.tolist(), round(float(m.iou[0]), 3)
    ([0], [0], 0.833)
    >>> m.unmatched_pred.tolist(), m.unmatched_ref.tolist()
    ([1], [])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from pathray.errors import ConfigError
from pathray.evaluate.assignment import max_matching
from pathray.evaluate.overlap import Rings, intersection_areas, make_valid

#: Anything accepted as a collection of geometries: a sequence or an object array of them.
Geometries = Sequence[shapely.Geometry | None] | NDArray[np.object_]

#: Relative tolerance on the threshold, so that hand-computed ties (IoU exactly 0.5) match.
_TOL = 1e-9

_INT = np.int64


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching between predicted and reference objects.

    Indices refer to positions in the inputs given to the matcher (or to the original inputs,
    after :meth:`remap`).

    Attributes:
        pred_idx: Index of the prediction of each matched pair (sorted ascending).
        ref_idx: Index of the reference of each matched pair.
        score: IoU of each pair (``kind="iou"``) or distance (``kind="distance"``).
        unmatched_pred: Indices of predictions left unmatched (false positives).
        unmatched_ref: Indices of references left unmatched (false negatives).
        kind: What :attr:`score` holds.
    """

    pred_idx: NDArray[np.int64]
    ref_idx: NDArray[np.int64]
    score: NDArray[np.float64]
    unmatched_pred: NDArray[np.int64]
    unmatched_ref: NDArray[np.int64]
    kind: Literal["iou", "distance"] = "iou"

    def __post_init__(self) -> None:
        for name in ("pred_idx", "ref_idx", "unmatched_pred", "unmatched_ref"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=_INT))
        object.__setattr__(self, "score", np.asarray(self.score, dtype=np.float64))

    @property
    def iou(self) -> NDArray[np.float64]:
        """IoU of each matched pair (only for IoU matchings)."""
        if self.kind != "iou":
            raise AttributeError(f"A {self.kind} matching has no IoU; use .score.")
        return self.score

    @property
    def n_matched(self) -> int:
        """Number of matched pairs (true positives)."""
        return len(self.pred_idx)

    @property
    def n_pred(self) -> int:
        """Number of predictions taking part (matched or not)."""
        return len(self.pred_idx) + len(self.unmatched_pred)

    @property
    def n_ref(self) -> int:
        """Number of references taking part (matched or not)."""
        return len(self.ref_idx) + len(self.unmatched_ref)

    def remap(self, pred_ids: ArrayLike, ref_ids: ArrayLike) -> Matching:
        """Translate indices through lookup tables, e.g. from a filtered subset to the originals.

        Args:
            pred_ids: ``pred_ids[i]`` is the new index of prediction ``i``.
            ref_ids: ``ref_ids[j]`` is the new index of reference ``j``.

        Returns:
            The same matching expressed in the new indices.

        Example:
            >>> m = Matching(np.array([0]), np.array([1]), np.array([0.9]), np.array([1]),
            ...              np.array([0]))
            >>> m.remap([10, 11], [20, 21]).pred_idx.tolist()
            [10]
        """
        p = np.asarray(pred_ids, dtype=_INT)
        r = np.asarray(ref_ids, dtype=_INT)
        return Matching(
            p[self.pred_idx], r[self.ref_idx], self.score,
            p[self.unmatched_pred], r[self.unmatched_ref], self.kind,
        )  # fmt: skip


def as_geometry_array(geoms: Geometries) -> NDArray[np.object_]:
    """Return ``geoms`` as a 1-D numpy object array of shapely geometries (or None).

    Args:
        geoms: A sequence or array of shapely geometries.

    Returns:
        A 1-D object array (the input itself when it already is one).

    Raises:
        TypeError: If an element is neither a shapely geometry nor None.

    Example:
        >>> from shapely.geometry import Point
        >>> as_geometry_array([Point(0, 0)]).shape
        (1,)
    """
    if isinstance(geoms, np.ndarray) and geoms.dtype == object and geoms.ndim == 1:
        arr = geoms
    else:
        items = list(geoms)
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
    if len(arr) and not np.all(shapely.is_geometry(arr) | shapely.is_missing(arr)):
        raise TypeError("Objects must be shapely geometries (or None).")
    return arr


def match_by_iou(
    pred: Geometries,
    ref: Geometries,
    threshold: float = 0.5,
    *,
    chunk_size: int = 100_000,
    n_threads: int | None = None,
    repair: bool = True,
) -> Matching:
    """Match predicted polygons to reference polygons one-to-one by IoU.

    A pair is a candidate when its IoU is at least ``threshold`` and its intersection is not
    empty; the matching has the most pairs possible, then the largest total IoU (see the
    module docstring). Missing or empty geometries never match.

    Args:
        pred: Predicted polygons (or multipolygons).
        ref: Reference polygons.
        threshold: Minimum IoU of a pair, in ``(0, 1]``.
        chunk_size: Predictions processed at once; bounds memory.
        n_threads: Threads computing exact intersections (shapely and the kernel release
            the GIL);
            ``None`` uses up to 8 of the CPUs this process may use, and no more than
            ``OMP_NUM_THREADS`` (which Ray sets to a task's CPUs).
        repair: Replace invalid geometries (self-intersecting outlines, ...) by
            :func:`shapely.make_valid` ones first, so their areas are right; about 2 µs per
            object. Pass False when the inputs are known to be valid.

    Returns:
        The matching, with ``score`` holding the IoU of each pair.

    Raises:
        ConfigError: If ``threshold`` or ``chunk_size`` is out of range.

    Example:
        >>> from shapely.geometry import box
        >>> m = match_by_iou([box(0, 0, 4, 4)], [box(2, 0, 6, 4)], threshold=0.3)
        >>> round(float(m.iou[0]), 4)
        0.3333
    """
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"IoU threshold must be in (0, 1]. Got {threshold} instead.")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive. Got {chunk_size} instead.")
    p, r = as_geometry_array(pred), as_geometry_array(ref)
    pi, ri, iou, _ = _iou_candidates(p, r, threshold, chunk_size, _threads(n_threads), repair)
    return _assign(pi, ri, iou, iou, len(p), len(r), "iou")


def match_by_distance(
    pred_points: ArrayLike | Geometries,
    ref_points: ArrayLike | Geometries,
    max_distance: float,
) -> Matching:
    """Match predicted points to reference points one-to-one within a distance.

    A pair is a candidate when its two points are at most ``max_distance`` apart; the matching
    has the most pairs possible, then the smallest total distance.

    Args:
        pred_points: Predicted points, as an ``(N, 2)`` array of ``x, y`` or as shapely
            geometries (their centroids are used).
        ref_points: Reference points, in the same forms.
        max_distance: Largest distance of a pair, in level-0 pixels (non-negative).

    Returns:
        The matching, with ``score`` holding the distance of each pair.

    Raises:
        ConfigError: If ``max_distance`` is negative or not finite.

    Example:
        >>> m = match_by_distance([[0, 0], [10, 0]], [[1, 0], [30, 0]], max_distance=3)
        >>> m.pred_idx.tolist(), m.ref_idx.tolist(), m.score.tolist()
        ([0], [0], [1.0])
    """
    if not (np.isfinite(max_distance) and max_distance >= 0):
        raise ConfigError(f"max_distance must be a non-negative number. Got {max_distance}.")
    p, r = as_points(pred_points), as_points(ref_points)
    if len(p) and len(r):
        pairs = cKDTree(p).sparse_distance_matrix(cKDTree(r), max_distance, output_type="ndarray")
        pi, ri, dist = pairs["i"].astype(_INT), pairs["j"].astype(_INT), pairs["v"]
    else:
        pi = ri = np.zeros(0, _INT)
        dist = np.zeros(0)
    closeness = 1.0 - dist / max_distance if max_distance > 0 else np.ones(len(dist))
    return _assign(pi, ri, closeness, dist, len(p), len(r), "distance")


def as_points(points: ArrayLike | Geometries) -> NDArray[np.float64]:
    """Return points as an ``(N, 2)`` float array; geometries are replaced by their centroids.

    Args:
        points: An ``(N, 2)`` array-like of coordinates, or shapely geometries.

    Returns:
        The ``x, y`` coordinates, one row per point.

    Raises:
        ConfigError: If the input is neither.

    Example:
        >>> from shapely.geometry import box
        >>> as_points([box(0, 0, 2, 2)]).tolist()
        [[1.0, 1.0]]
    """
    if isinstance(points, np.ndarray) and points.dtype != object:
        arr = points
    else:
        items = list(points)  # type: ignore[arg-type]
        if items and all(isinstance(g, shapely.Geometry) for g in items):
            return shapely.get_coordinates(shapely.centroid(np.asarray(items, dtype=object)))
        arr = np.asarray(items, dtype=np.float64)
    out: NDArray[np.float64] = np.asarray(arr, dtype=np.float64)
    if out.size == 0:
        return np.zeros((0, 2))
    if out.ndim != 2 or out.shape[1] != 2:
        raise ConfigError(f"Points must be an (N, 2) array of x, y. Got shape {out.shape}.")
    return out


def _threads(n_threads: int | None) -> int:
    if n_threads is not None:
        return max(1, int(n_threads))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    # Ray sets OMP_NUM_THREADS to a task's CPUs: stay within the task's share.
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cpus = min(cpus, int(omp))
    return max(1, min(8, cpus))


def _iou_candidates(
    p: NDArray[np.object_],
    r: NDArray[np.object_],
    threshold: float,
    chunk: int,
    threads: int,
    repair: bool,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """All pairs with IoU >= threshold, as (pred index, ref index, IoU, intersection) arrays.

    Chunks of predictions run concurrently on ``threads`` threads (shapely and the compiled
    kernel release the GIL); each chunk queries the tree, prunes by the IoU upper bound, then
    intersects exactly.
    """
    if not len(p) or not len(r):
        return np.zeros(0, _INT), np.zeros(0, _INT), np.zeros(0), np.zeros(0)
    # Several chunks per thread balance the load; a chunk still bounds the memory in use.
    chunk = max(1, min(chunk, max(1000, -(-len(p) // (4 * threads)))))
    with ThreadPoolExecutor(threads) as pool:
        if repair:
            r = np.concatenate(list(pool.map(make_valid, _pieces(r, -(-len(r) // threads)))))
        tree = shapely.STRtree(r)
        area_r, box_r = shapely.area(r), shapely.bounds(r)
        rings_r = _rings(pool, r, threads)

        def work(start: int) -> tuple[NDArray[Any], ...]:
            part = p[start : start + chunk]
            if repair:
                part = make_valid(part)
            # Below IoU 0.1 the bound prunes little (AJI asks for every overlap): a prepared
            # intersects test is then much cheaper than the exact overlays it saves.
            qi, rj = tree.query(part, predicate="intersects" if threshold < 0.1 else None)
            qi, rj = qi.astype(_INT), rj.astype(_INT)
            # Upper bound: intersection <= min(area_p, area_r, bbox overlap); union >= max area.
            area_p, box_p = shapely.area(part), shapely.bounds(part)
            lo = np.maximum(box_p[qi, :2], box_r[rj, :2])
            hi = np.minimum(box_p[qi, 2:], box_r[rj, 2:])
            overlap = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
            ap, ar = area_p[qi], area_r[rj]
            bound = np.minimum(np.minimum(ap, ar), overlap) / np.maximum(np.maximum(ap, ar), 1e-300)
            keep = bound >= threshold * (1 - _TOL)
            qi, rj, ap, ar = qi[keep], rj[keep], ap[keep], ar[keep]
            inter = intersection_areas(part, r, Rings.from_geometries(part), rings_r, qi, rj)
            union = ap + ar - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            ok = (inter > 0) & (iou >= threshold * (1 - _TOL))
            return qi[ok] + start, rj[ok], np.minimum(iou[ok], 1.0), inter[ok]

        out = list(pool.map(work, range(0, len(p), chunk)))
    return tuple(np.concatenate(col) for col in zip(*out, strict=True))  # type: ignore[return-value]


def _pieces(arr: NDArray[np.object_], size: int) -> list[NDArray[np.object_]]:
    return [arr[i : i + size] for i in range(0, len(arr), size)]


def _rings(pool: ThreadPoolExecutor, geoms: NDArray[np.object_], threads: int) -> Rings:
    """:meth:`Rings.from_geometries` of ``geoms``, the pieces flattened on the pool's threads."""
    parts = pool.map(Rings.from_geometries, _pieces(geoms, -(-len(geoms) // threads)))
    return Rings.concatenate(list(parts))


def _assign(
    pi: NDArray[np.int64],
    ri: NDArray[np.int64],
    weight: NDArray[np.float64],
    score: NDArray[np.float64],
    n_pred: int,
    n_ref: int,
    kind: Literal["iou", "distance"],
) -> Matching:
    """The optimal matching among candidate pairs, as a :class:`Matching`."""
    sel = max_matching(pi, ri, weight, n_pred, n_ref)
    order = sel[np.argsort(pi[sel], kind="stable")]
    matched_p = np.zeros(n_pred, dtype=bool)
    matched_r = np.zeros(n_ref, dtype=bool)
    matched_p[pi[order]] = True
    matched_r[ri[order]] = True
    return Matching(
        pred_idx=pi[order],
        ref_idx=ri[order],
        score=score[order],
        unmatched_pred=np.flatnonzero(~matched_p),
        unmatched_ref=np.flatnonzero(~matched_r),
        kind=kind,
    )
