"""Instance-segmentation metrics: panoptic quality, aggregated Jaccard index, mean AP.

Each is a mergeable accumulator (see :mod:`.metrics`): per-slide results merge into exactly
the numbers of one pass over all slides.

- Panoptic quality (Kirillov et al. 2019) follows from the detection counts of a one-to-one
  IoU matching: ``RQ = tp / (tp + fp/2 + fn/2)`` (an F1), ``SQ = sum_iou / tp`` (mean IoU of
  the matched pairs) and ``PQ = SQ * RQ``. At the standard threshold 0.5 the matching is unique.
- The aggregated Jaccard index (Kumar et al. 2017) pairs each reference with the prediction of
  largest IoU (not one-to-one), sums their intersections ``C`` and unions ``U``, and adds to
  ``U`` the area of every prediction no reference chose: ``AJI = C / U``. A reference that
  overlaps no prediction adds its own area to ``U``.
- Mean average precision over IoU thresholds 0.50:0.05:0.95 (COCO): at each threshold the
  predictions, by descending score, each take the unmatched reference of largest IoU; AP is
  the area under the step precision-recall curve, ``sum (R_i - R_{i-1}) P_i`` over distinct
  scores (scikit-learn's ``average_precision_score``, with recall over *all* references).

Example:
    >>> from shapely.geometry import box
    >>> from pathray.evaluate.pairs import iou_pairs
    >>> pairs = iou_pairs([box(0, 0, 10, 10), box(20, 0, 30, 10)], [box(0, 0, 10, 5)])
    >>> AJICounts().update(pairs).result()  # C = 50, U = 100 + unchosen 100
    {'aji': 0.25}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pathray.errors import ConfigError
from pathray.evaluate.classification import average_precision_score
from pathray.evaluate.metrics import DetectionCounts, _ratio, _Summable
from pathray.evaluate.pairs import IoUPairs

#: COCO's IoU thresholds: 0.50, 0.55, ..., 0.95.
COCO_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def panoptic(counts: DetectionCounts) -> dict[str, float]:
    """Panoptic, segmentation and recognition quality from IoU-matching counts.

    With nothing to find and nothing found all three are 1.0; with no matched pair they are
    0.0.

    Args:
        counts: Counts of an IoU matching (threshold 0.5 for the standard PQ).

    Returns:
        ``{"pq", "sq", "rq"}``.

    Example:
        >>> panoptic(DetectionCounts(tp=2, fp=1, fn=1, sum_iou=1.6))
        {'pq': 0.5333333333333333, 'sq': 0.8, 'rq': 0.6666666666666666}
    """
    if counts.tp + counts.fp + counts.fn == 0:
        return {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    rq = _ratio(counts.tp, counts.tp + 0.5 * (counts.fp + counts.fn), empty=0.0)
    sq = _ratio(counts.sum_iou, counts.tp, empty=0.0)
    return {"pq": sq * rq, "sq": sq, "rq": rq}


@dataclass
class AJICounts(_Summable):
    """Sums behind the aggregated Jaccard index (see the module docstring).

    Attributes:
        intersection: ``C``, the summed intersections of each reference with its best
            prediction.
        union: ``U``, the summed unions plus lone references and unchosen predictions.
    """

    intersection: float = 0.0
    union: float = 0.0

    def update(self, pairs: IoUPairs) -> Self:
        """Add one image's pairs.

        The pairs must include every overlapping pair: build them with the default
        ``min_iou`` of :func:`~pathray.evaluate.pairs.iou_pairs`.

        Returns:
            ``self``, updated in place.
        """
        pi, ri, iou = pairs.pred_idx, pairs.ref_idx, pairs.iou
        # Best prediction per reference: sort by reference, then IoU descending, keep firsts.
        order = np.lexsort((pi, -iou, ri))
        first = order[np.r_[True, ri[order][1:] != ri[order][:-1]]] if len(order) else order
        chosen = np.zeros(pairs.n_pred, dtype=bool)
        chosen[pi[first]] = True
        has_pred = np.zeros(pairs.n_ref, dtype=bool)
        has_pred[ri[first]] = True
        inter = pairs.intersection[first]
        union = pairs.pred_area[pi[first]] + pairs.ref_area[ri[first]] - inter
        self.intersection += float(inter.sum())
        self.union += float(
            union.sum() + pairs.ref_area[~has_pred].sum() + pairs.pred_area[~chosen].sum()
        )
        return self

    def result(self) -> dict[str, float]:
        """``{"aji": C / U}``; 1.0 when there is nothing at all."""
        return {"aji": _ratio(self.intersection, self.union, empty=1.0)}


@dataclass(eq=False)
class AveragePrecision:
    """Detection average precision over IoU thresholds, from object scores.

    Holds, for every prediction, its score and whether it is a true positive at each
    threshold, plus the number of references; merging concatenates (exact).

    Attributes:
        thresholds: IoU thresholds (COCO's by default).
        scores: Score of each prediction seen.
        hits: ``(predictions, thresholds)`` booleans: matched at that threshold.
        n_ref: References seen.
    """

    thresholds: tuple[float, ...] = COCO_THRESHOLDS
    scores: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    hits: NDArray[np.bool_] = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    n_ref: int = 0

    def __post_init__(self) -> None:
        if not self.thresholds or not all(0.0 < t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"IoU thresholds must be in (0, 1]. Got {self.thresholds}.")
        if self.hits.shape != (len(self.scores), len(self.thresholds)):
            self.hits = np.zeros((len(self.scores), len(self.thresholds)), dtype=bool)

    def update(self, pairs: IoUPairs, scores: ArrayLike | None = None) -> Self:
        """Add one image: its pairs and its predictions' scores.

        Args:
            pairs: Pairs with ``min_iou`` at most the smallest threshold.
            scores: One score per prediction (higher = more confident); all 1.0 when None.

        Returns:
            ``self``, updated in place.

        Raises:
            ConfigError: If the scores do not fit the predictions.
        """
        n = pairs.n_pred
        s = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).ravel()
        if len(s) != n:
            raise ConfigError(f"scores must have one value per prediction ({n}). Got {len(s)}.")
        # Rank of each prediction by descending score; ties keep input order (stable).
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-s, kind="stable")] = np.arange(n)
        hits = np.zeros((n, len(self.thresholds)), dtype=bool)
        for k, t in enumerate(self.thresholds):
            keep = pairs.above(t)
            hits[:, k] = _greedy_hits(
                pairs.pred_idx[keep], pairs.ref_idx[keep], pairs.iou[keep], rank, n, pairs.n_ref
            )
        self.scores = np.r_[self.scores, s]
        self.hits = np.r_[self.hits, hits]
        self.n_ref += pairs.n_ref
        return self

    def merge(self, other: Self) -> Self:
        """A new accumulator with the predictions and references of both."""
        if type(other) is not type(self) or other.thresholds != self.thresholds:
            raise TypeError("Can only merge AveragePrecision with the same thresholds.")
        return type(self)(
            self.thresholds,
            np.r_[self.scores, other.scores],
            np.r_[self.hits, other.hits],
            self.n_ref + other.n_ref,
        )

    def __add__(self, other: Self) -> Self:
        return self.merge(other)

    def per_threshold(self) -> NDArray[np.float64]:
        """AP at each threshold."""
        return np.array(
            [
                average_precision(self.hits[:, k], self.scores, self.n_ref)
                for k in range(len(self.thresholds))
            ]
        )

    def result(self) -> dict[str, float]:
        """``map`` (mean over the thresholds), and ``ap50``/``ap75`` when among them."""
        ap = self.per_threshold()
        out = {"map": float(ap.mean())}
        for t, name in ((0.5, "ap50"), (0.75, "ap75")):
            if t in self.thresholds:
                out[name] = float(ap[self.thresholds.index(t)])
        return out


def average_precision(hit: ArrayLike, scores: ArrayLike, n_ref: int) -> float:
    """Area under the step precision-recall curve of scored detections.

    Args:
        hit: Whether each prediction is a true positive.
        scores: Each prediction's score.
        n_ref: Number of references (recall's denominator; may exceed the hits).

    Returns:
        AP in ``[0, 1]``; 1.0 with no references and no predictions, 0.0 when only one side
        is empty.

    Example:
        >>> round(average_precision([True, False, True], [0.9, 0.8, 0.7], n_ref=4), 4)
        0.4167
    """
    n = len(np.asarray(hit))
    if n_ref == 0 or n == 0:
        return 1.0 if n_ref == 0 and n == 0 else 0.0
    return average_precision_score(np.asarray(hit, dtype=bool), scores, n_pos=n_ref)


def _greedy_hits(
    pi: NDArray[np.int64],
    ri: NDArray[np.int64],
    iou: NDArray[np.float64],
    rank: NDArray[np.int64],
    n_pred: int,
    n_ref: int,
) -> NDArray[np.bool_]:
    """COCO matching: by descending score, each prediction takes its best free reference."""
    hit = np.zeros(n_pred, dtype=bool)
    if not len(pi):
        return hit
    deg_p = np.bincount(pi, minlength=n_pred)
    deg_r = np.bincount(ri, minlength=n_ref)
    # A pair alone on both ends is taken whatever the order (the usual case above IoU 0.5).
    alone = (deg_p[pi] == 1) & (deg_r[ri] == 1)
    hit[pi[alone]] = True
    rest = np.flatnonzero(~alone)
    order = rest[np.lexsort((-iou[rest], rank[pi[rest]]))]
    taken: set[int] = set()
    done: set[int] = set()
    for p, r in zip(pi[order].tolist(), ri[order].tolist(), strict=True):
        if p in done or r in taken:
            continue
        hit[p] = True
        done.add(p)
        taken.add(r)
    return hit


__all__ = ["COCO_THRESHOLDS", "AJICounts", "AveragePrecision", "average_precision", "panoptic"]
