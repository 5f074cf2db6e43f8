"""All overlapping pairs of predicted and reference polygons, computed once and reused.

Several metrics need the IoU of object pairs at different thresholds: the detection matching
(one threshold), mean average precision (0.50 to 0.95) and the aggregated Jaccard index (any
overlap at all). :func:`iou_pairs` finds every pair whose IoU reaches ``min_iou`` once, with the
same tree query, bound pruning and threads as :func:`~pathray.evaluate.matching.match_by_iou`;
:meth:`IoUPairs.match` then gives the optimal matching at any threshold above it without
touching a geometry again.

Example:
    >>> from shapely.geometry import box
    >>> pairs = iou_pairs([box(0, 0, 10, 10)], [box(5, 0, 15, 10), box(0, 0, 10, 10)])
    >>> sorted(zip(pairs.ref_idx.tolist(), pairs.iou.round(3).tolist()))
    [(0, 0.333), (1, 1.0)]
    >>> pairs.match(0.5).ref_idx.tolist()
    [1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from pathray.errors import ConfigError
from pathray.evaluate.matching import (
    _TOL,
    Geometries,
    Matching,
    _assign,
    _iou_candidates,
    _pieces,
    _threads,
    as_geometry_array,
)
from pathray.evaluate.overlap import make_valid

_INT = np.int64

#: Smallest IoU of a pair kept by default: any overlap of positive area.
ANY_OVERLAP = 1e-9


@dataclass(frozen=True)
class IoUPairs:
    """Overlapping (pred, ref) pairs with their IoU and intersection, plus every object's area.

    Attributes:
        pred_idx: Prediction index of each pair.
        ref_idx: Reference index of each pair.
        iou: IoU of each pair.
        intersection: Intersection area of each pair (level-0 pixels²).
        pred_area: Area of every prediction (0 for missing geometries).
        ref_area: Area of every reference.
        min_iou: The smallest IoU a pair may have; pairs below it were not kept.
    """

    pred_idx: NDArray[np.int64]
    ref_idx: NDArray[np.int64]
    iou: NDArray[np.float64]
    intersection: NDArray[np.float64]
    pred_area: NDArray[np.float64]
    ref_area: NDArray[np.float64]
    min_iou: float = ANY_OVERLAP

    @property
    def n_pred(self) -> int:
        """Number of predictions."""
        return len(self.pred_area)

    @property
    def n_ref(self) -> int:
        """Number of references."""
        return len(self.ref_area)

    def above(self, threshold: float) -> NDArray[np.bool_]:
        """Which pairs have an IoU of at least ``threshold`` (with the matchers' tolerance)."""
        if threshold < self.min_iou * (1 - _TOL):
            raise ConfigError(
                f"threshold must be at least the pairs' min_iou {self.min_iou}. Got {threshold}."
            )
        return np.asarray(self.iou >= threshold * (1 - _TOL))

    def match(self, threshold: float = 0.5) -> Matching:
        """The optimal one-to-one matching of pairs with IoU >= ``threshold``.

        Same result as :func:`~pathray.evaluate.matching.match_by_iou` at that threshold.
        """
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"IoU threshold must be in (0, 1]. Got {threshold} instead.")
        k = self.above(threshold)
        pi, ri, iou = self.pred_idx[k], self.ref_idx[k], self.iou[k]
        return _assign(pi, ri, iou, iou, self.n_pred, self.n_ref, "iou")


def iou_pairs(
    pred: Geometries,
    ref: Geometries,
    min_iou: float = ANY_OVERLAP,
    *,
    chunk_size: int = 100_000,
    n_threads: int | None = None,
) -> IoUPairs:
    """Every (pred, ref) pair whose IoU is at least ``min_iou``, and all areas.

    Invalid geometries are repaired first (:func:`~pathray.evaluate.overlap.make_valid`),
    so areas and intersections agree.

    Args:
        pred: Predicted polygons.
        ref: Reference polygons.
        min_iou: Smallest IoU kept, in ``(0, 1]``; the default keeps any overlap. Higher values
            are faster (more pairs pruned from bounding boxes alone).
        chunk_size: Predictions intersected at once.
        n_threads: Threads (see :func:`~pathray.evaluate.matching.match_by_iou`).

    Returns:
        The pairs, ordered by prediction.

    Raises:
        ConfigError: If ``min_iou`` is out of range.
    """
    if not 0.0 < min_iou <= 1.0:
        raise ConfigError(f"min_iou must be in (0, 1]. Got {min_iou} instead.")
    threads = _threads(n_threads)
    p, r = as_geometry_array(pred), as_geometry_array(ref)
    p = np.concatenate([make_valid(x) for x in _pieces(p, 50_000)]) if len(p) else p
    r = np.concatenate([make_valid(x) for x in _pieces(r, 50_000)]) if len(r) else r
    pi, ri, iou, inter = _iou_candidates(p, r, min_iou, chunk_size, threads, repair=False)
    return IoUPairs(
        pred_idx=pi,
        ref_idx=ri,
        iou=iou,
        intersection=inter,
        pred_area=_areas(p),
        ref_area=_areas(r),
        min_iou=min_iou,
    )


def _areas(geoms: NDArray[np.object_]) -> NDArray[np.float64]:
    return (
        np.nan_to_num(np.asarray(shapely.area(geoms), dtype=np.float64))
        if len(geoms)
        else np.zeros(0)
    )


__all__ = ["ANY_OVERLAP", "IoUPairs", "iou_pairs"]
