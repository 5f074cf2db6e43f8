"""Comparing a slide's predicted objects with its reference objects, and summarising slides.

:func:`compare_objects` scores one slide (or tile): object detection after one-to-one matching
(by IoU, or by centroid distance), pixel overlap of the two unions, and by default the instance
metrics (panoptic quality, AJI, mean AP) and, given labels, the classification of the matched
objects. :func:`summarize` turns per-slide comparisons into JSON-ready metrics: per slide,
overall (accumulators merged, i.e. pooled counts and areas; the same numbers as one pass over
all slides) and macro (the mean of per-slide metrics).

Metric keys (one flat dict, see :data:`METRIC_NAMES`): ``precision``, ``recall``, ``f1``,
``mean_iou`` (mean IoU of matched objects), ``dice``, ``pixel_iou`` and its alias ``iou``
(pixels), ``pq``, ``sq``, ``rq``, ``aji``, ``map``, ``ap50``, ``ap75``, the classification keys
of :mod:`.classification`, plus the counts ``tp``, ``fp``, ``fn``, ``n_pred``, ``n_ref`` and,
given labels, ``relabelled``.

Example:
    >>> from shapely.geometry import box
    >>> c = compare_objects([box(0, 0, 10, 10)], [box(1, 0, 11, 10), box(40, 40, 50, 50)])
    >>> report = summarize({"slide-1": c})
    >>> report["overall"]["recall"], report["overall"]["tp"]
    (0.5, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any, Literal

import numpy as np
import shapely
from numpy.typing import ArrayLike

from pathray.errors import ConfigError
from pathray.evaluate.classification import ClassificationCounts
from pathray.evaluate.instance import COCO_THRESHOLDS, AJICounts, AveragePrecision, panoptic
from pathray.evaluate.matching import (
    Geometries,
    Matching,
    as_geometry_array,
    match_by_distance,
    match_by_iou,
)
from pathray.evaluate.metrics import (
    Accumulator,
    DetectionCounts,
    PixelOverlap,
    Region,
    as_region,
    pixel_overlap,
)
from pathray.evaluate.pairs import iou_pairs

#: Keys of the counts in a metrics dict (integers); all other keys are scores in [0, 1].
COUNT_KEYS = ("tp", "fp", "fn", "n_pred", "n_ref")
#: Every integer key (``relabelled`` only with labels); never averaged over slides.
ALL_COUNT_KEYS = (*COUNT_KEYS, "relabelled")

#: The flat metric names a requirement may use, with what each means. Classification adds
#: per-class keys such as ``sensitivity[tumour]`` (see :mod:`.classification`).
METRIC_NAMES: dict[str, str] = {
    "dice": "pixel Dice of the union of predictions with the union of references",
    "iou": "pixel IoU (Jaccard) of the two unions (alias of pixel_iou)",
    "pixel_iou": "pixel IoU (Jaccard) of the two unions",
    "precision": "matched predictions / predictions",
    "recall": "matched references / references (sensitivity)",
    "f1": "2 tp / (2 tp + fp + fn)",
    "mean_iou": "mean IoU of the matched pairs",
    "pq": "panoptic quality, sq * rq",
    "sq": "segmentation quality: mean IoU of the matched pairs",
    "rq": "recognition quality: tp / (tp + fp/2 + fn/2)",
    "aji": "aggregated Jaccard index",
    "map": "mean average precision over IoU 0.50:0.05:0.95 (object scores)",
    "ap50": "average precision at IoU 0.5",
    "ap75": "average precision at IoU 0.75",
    "accuracy": "correctly labelled matched objects / matched objects",
    "balanced_accuracy": "mean per-class sensitivity of the labels",
    "macro_sensitivity": "mean per-class sensitivity of the labels",
    "macro_specificity": "mean per-class specificity of the labels",
    "macro_f1": "mean per-class F1 of the labels",
    "auc": "mean one-vs-rest ROC AUC of the class scores",
    "ap": "mean one-vs-rest average precision of the class scores",
}


@dataclass(frozen=True)
class SlideComparison:
    """The comparison of one slide's predictions with its reference.

    Attributes:
        detection: Detection counts after matching.
        pixels: Pixel overlap of the unions (inside the region, if any).
        matching: The matching; indices refer to the ``pred`` and ``ref`` given to
            :func:`compare_objects`, and objects left out (outside the region, missing or
            empty) appear neither in pairs nor as unmatched.
        aji: AJI sums (None when instance metrics were not asked for).
        ap: Average precision data (None likewise).
        classes: Labels of the matched pairs (None without labels).
    """

    detection: DetectionCounts
    pixels: PixelOverlap
    matching: Matching
    aji: AJICounts | None = None
    ap: AveragePrecision | None = None
    classes: ClassificationCounts | None = None

    def accumulators(self) -> dict[str, Accumulator]:
        """The mergeable parts of the comparison, by name (only those computed)."""
        parts: dict[str, Any] = {"detection": self.detection, "pixels": self.pixels}
        for name in ("aji", "ap", "classes"):
            if getattr(self, name) is not None:
                parts[name] = getattr(self, name)
        return parts

    def metrics(self) -> dict[str, Any]:
        """Scores and counts of this slide (see the module docstring for the keys).

        Example:
            >>> compare_objects([], []).metrics()["f1"]
            1.0
        """
        return metrics_of(self.accumulators(), self.matching.kind)

    def changes(self) -> dict[str, int]:
        """Per-object change summary.

        Returns:
            ``matched`` (pairs), ``missed`` (references left unmatched), ``extra``
            (predictions left unmatched) and ``relabelled`` (matched, with another label).
        """
        return {
            "matched": self.detection.tp,
            "missed": self.detection.fn,
            "extra": self.detection.fp,
            "relabelled": len(self.relabelled()),
        }

    def relabelled(self) -> list[tuple[int, int]]:
        """``(pred, ref)`` index pairs matched with different labels (empty without labels)."""
        if self.classes is None:
            return []
        differ = np.flatnonzero(self.classes.y_true != self.classes.y_pred)
        m = self.matching
        return list(zip(m.pred_idx[differ].tolist(), m.ref_idx[differ].tolist(), strict=True))


def metrics_of(parts: Mapping[str, Any], kind: str = "iou") -> dict[str, Any]:
    """The flat metrics dict of a set of accumulators (see :meth:`SlideComparison.accumulators`).

    Args:
        parts: Accumulators by name: ``detection`` and ``pixels`` always, ``aji``, ``ap`` and
            ``classes`` when computed.
        kind: The matching's kind; panoptic quality needs IoU matching.
    """
    detection: DetectionCounts = parts["detection"]
    out: dict[str, Any] = {**detection.result(), **parts["pixels"].result()}
    out["iou"] = out["pixel_iou"]
    if kind == "iou":
        out.update(panoptic(detection))
    for name in ("aji", "ap", "classes"):
        if name in parts:
            out.update(parts[name].result())
    out.update(
        tp=int(detection.tp),
        fp=int(detection.fp),
        fn=int(detection.fn),
        n_pred=int(detection.tp + detection.fp),
        n_ref=int(detection.tp + detection.fn),
    )
    if "classes" in parts:
        cls: ClassificationCounts = parts["classes"]
        out["relabelled"] = int(np.count_nonzero(cls.y_true != cls.y_pred))
    return out


def inside(geoms: Geometries, region: Region | None) -> np.ndarray:
    """Which geometries count: present, not empty, and with their centroid in ``region``.

    Args:
        geoms: Geometries.
        region: A polygon or box; None keeps every present, non-empty geometry. A centroid on
            the region's boundary is inside.

    Returns:
        A boolean array, one entry per geometry.

    Example:
        >>> from shapely.geometry import box
        >>> inside([box(0, 0, 2, 2), box(8, 8, 9, 9), None], (0, 0, 5, 5)).tolist()
        [True, False, False]
    """
    g = as_geometry_array(geoms)
    keep = ~(shapely.is_missing(g) | shapely.is_empty(g))
    area = as_region(region)
    if area is not None and keep.any():
        centre = shapely.centroid(g[keep])
        keep[keep] = shapely.intersects_xy(area, shapely.get_x(centre), shapely.get_y(centre))
    return keep


def compare_objects(
    pred: Geometries,
    ref: Geometries,
    *,
    iou_threshold: float = 0.5,
    region: Region | None = None,
    pixel_method: Literal["raster", "vector"] = "raster",
    pixel_size: float = 1.0,
    n_threads: int | None = None,
    match: Literal["iou", "centroid"] = "iou",
    max_distance: float | None = None,
    instance_metrics: bool = True,
    pred_scores: ArrayLike | None = None,
    pred_labels: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    class_scores: Mapping[str, ArrayLike] | None = None,
    ap_thresholds: tuple[float, ...] = COCO_THRESHOLDS,
) -> SlideComparison:
    """Compare one slide's predicted objects with its reference objects.

    Objects whose centroid lies outside ``region`` (and missing or empty geometries) are
    dropped from both sides before matching; pixel overlap counts only the area inside
    ``region``.

    Args:
        pred: Predicted polygons (or points, with ``match="centroid"``), level-0 pixels.
        ref: Reference polygons (or points).
        iou_threshold: IoU at which a prediction matches a reference, in ``(0, 1]``.
        region: Score only inside this polygon or ``(xmin, ymin, xmax, ymax)`` box; None
            scores everything.
        pixel_method: ``"raster"`` (default, fast) or ``"vector"`` (exact); see
            :func:`~pathray.evaluate.metrics.pixel_overlap`.
        pixel_size: Raster pixel side in level-0 pixels.
        n_threads: Threads for exact intersections; see
            :func:`~pathray.evaluate.matching.match_by_iou`.
        match: ``"iou"`` (polygons) or ``"centroid"``: pairs of centroids at most
            ``max_distance`` apart (cells annotated as points). Panoptic quality, AJI and mAP
            need IoU matching and are left out otherwise.
        max_distance: Largest centroid distance of a pair, for ``match="centroid"``.
        instance_metrics: Compute AJI and mAP (one more pass over overlapping pairs).
        pred_scores: Confidence of each prediction, for mAP (all 1.0 when None).
        pred_labels: Class of each prediction; with ``ref_labels``, the matched pairs are
            scored as a classification.
        ref_labels: Class of each reference.
        class_scores: Class -> score of each prediction (probabilities), for ROC and PR.
        ap_thresholds: IoU thresholds of mAP.

    Returns:
        The comparison.

    Raises:
        ConfigError: If a parameter is out of range.

    Example:
        >>> from shapely.geometry import box
        >>> c = compare_objects([box(0, 0, 10, 10), box(20, 0, 30, 10)], [box(0, 0, 10, 10)])
        >>> c.detection
        DetectionCounts(tp=1, fp=1, fn=0, sum_iou=1.0)
        >>> c.pixels.result()["dice"], c.metrics()["pq"], c.metrics()["aji"]
        (0.6666666666666666, 0.6666666666666666, 0.5)
    """
    p, r = as_geometry_array(pred), as_geometry_array(ref)
    keep_p, keep_r = np.flatnonzero(inside(p, region)), np.flatnonzero(inside(r, region))
    aji = ap = None
    if match == "centroid":
        if max_distance is None:
            raise ConfigError("max_distance must be given for centroid matching. Got None.")
        matching = match_by_distance(p[keep_p], r[keep_r], max_distance)
    elif match != "iou":
        raise ConfigError(f"match must be 'iou' or 'centroid'. Got {match!r} instead.")
    elif instance_metrics:
        pairs = iou_pairs(p[keep_p], r[keep_r], n_threads=n_threads)
        matching = pairs.match(iou_threshold)
        aji = AJICounts().update(pairs)
        scores = None if pred_scores is None else _per_object(pred_scores, len(p))[keep_p]
        ap = AveragePrecision(ap_thresholds).update(pairs, scores)
    else:
        matching = match_by_iou(p[keep_p], r[keep_r], iou_threshold, n_threads=n_threads)
    matching = matching.remap(keep_p, keep_r)
    classes = None
    if pred_labels is not None and ref_labels is not None:
        pl, rl = _per_object(pred_labels, len(p)), _per_object(ref_labels, len(r))
        cs = {c: _per_object(v, len(p))[matching.pred_idx] for c, v in (class_scores or {}).items()}
        classes = ClassificationCounts().update(rl[matching.ref_idx], pl[matching.pred_idx], cs)
    return SlideComparison(
        detection=DetectionCounts().update(matching),
        pixels=pixel_overlap(p, r, region, method=pixel_method, pixel_size=pixel_size),
        matching=matching,
        aji=aji,
        ap=ap,
        classes=classes,
    )


def _per_object(values: ArrayLike, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=object if not isinstance(values, np.ndarray) else None)
    if arr.ndim != 1 or len(arr) != n:
        raise ConfigError(f"Per-object values must be one per object ({n}). Got shape {arr.shape}.")
    return arr


def summarize(per_slide: Mapping[str, SlideComparison]) -> dict[str, Any]:
    """Per-slide, overall and macro-averaged metrics, ready for JSON.

    Args:
        per_slide: Comparisons by slide name (or id).

    Returns:
        ``{"per_slide": {name: metrics}, "overall": metrics, "macro": scores,
        "n_slides": int}``; ``overall`` merges the accumulators of all slides (pooled counts
        and areas), ``macro`` averages each per-slide score over the slides that have it (no
        counts). With no slides, ``overall`` is the empty-case convention (all scores 1.0,
        counts 0) and ``macro`` is empty.

    Example:
        >>> from shapely.geometry import box
        >>> a = compare_objects([box(0, 0, 4, 4)], [box(0, 0, 4, 4)])
        >>> b = compare_objects([box(0, 0, 4, 4)], [])
        >>> s = summarize({"a": a, "b": b})
        >>> s["overall"]["precision"], s["macro"]["precision"]
        (0.5, 0.5)
    """
    names = [str(name) for name in per_slide]
    slides = list(per_slide.values())
    kind = slides[0].matching.kind if slides else "iou"
    rows = {name: s.metrics() for name, s in zip(names, slides, strict=True)}
    overall = metrics_of(merge_parts([s.accumulators() for s in slides]), kind)
    scores = [k for k in overall if k not in ALL_COUNT_KEYS]
    macro = {}
    for k in scores:
        values = [m[k] for m in rows.values() if k in m]
        if values:
            macro[k] = float(np.mean(values))
    return {"per_slide": rows, "overall": overall, "macro": macro, "n_slides": len(rows)}


def merge_parts(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge accumulators by name across slides (a name some slides lack merges the others).

    With no parts, empty detection and pixel accumulators (the empty-case convention).
    """
    merged: dict[str, Any] = {"detection": DetectionCounts(), "pixels": PixelOverlap()}
    names = {name for part in parts for name in part}
    for name in sorted(names):
        present = [part[name] for part in parts if name in part]
        merged[name] = reduce(lambda a, b: a.merge(b), present)
    return merged
