"""Comparing a slide's predicted objects with its reference objects, and summarising slides.

:func:`compare_objects` scores one slide (or tile): object detection after one-to-one IoU
matching, and pixel overlap of the two unions. :func:`summarize` turns per-slide comparisons
into JSON-ready metrics: per slide, overall (accumulators merged, i.e. pooled counts and
areas; the same numbers as one pass over all slides) and macro (the mean of per-slide metrics).

Metric keys: ``precision``, ``recall``, ``f1``, ``mean_iou`` (mean IoU of matched objects),
``dice`` and ``pixel_iou`` (pixels), plus the counts ``tp``, ``fp``, ``fn``, ``n_pred`` and
``n_ref``.

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

from pathray.evaluate.matching import Geometries, Matching, as_geometry_array, match_by_iou
from pathray.evaluate.metrics import (
    Accumulator,
    DetectionCounts,
    PixelOverlap,
    Region,
    as_region,
    pixel_overlap,
)

#: Keys of the counts in a metrics dict (integers); all other keys are scores in [0, 1].
COUNT_KEYS = ("tp", "fp", "fn", "n_pred", "n_ref")


@dataclass(frozen=True)
class SlideComparison:
    """The comparison of one slide's predictions with its reference.

    Attributes:
        detection: Detection counts after matching.
        pixels: Pixel overlap of the unions (inside the region, if any).
        matching: The matching; indices refer to the ``pred`` and ``ref`` given to
            :func:`compare_objects`, and objects left out (outside the region, missing or
            empty) appear neither in pairs nor as unmatched.
    """

    detection: DetectionCounts
    pixels: PixelOverlap
    matching: Matching

    def accumulators(self) -> dict[str, Accumulator]:
        """The mergeable parts of the comparison, by name."""
        return {"detection": self.detection, "pixels": self.pixels}

    def metrics(self) -> dict[str, Any]:
        """Scores and counts of this slide (see the module docstring for the keys).

        Example:
            >>> compare_objects([], []).metrics()["f1"]
            1.0
        """
        return _metrics(self.detection, self.pixels)


def _metrics(detection: DetectionCounts, pixels: PixelOverlap) -> dict[str, Any]:
    out: dict[str, Any] = {**detection.result(), **pixels.result()}
    out.update(
        tp=int(detection.tp),
        fp=int(detection.fp),
        fn=int(detection.fn),
        n_pred=int(detection.tp + detection.fp),
        n_ref=int(detection.tp + detection.fn),
    )
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
) -> SlideComparison:
    """Compare one slide's predicted polygons with its reference polygons.

    Objects whose centroid lies outside ``region`` (and missing or empty geometries) are
    dropped from both sides before matching; pixel overlap counts only the area inside
    ``region``.

    Args:
        pred: Predicted polygons, in level-0 pixel coordinates.
        ref: Reference polygons.
        iou_threshold: IoU at which a prediction matches a reference, in ``(0, 1]``.
        region: Score only inside this polygon or ``(xmin, ymin, xmax, ymax)`` box; None
            scores everything.
        pixel_method: ``"raster"`` (default, fast) or ``"vector"`` (exact); see
            :func:`~pathray.evaluate.metrics.pixel_overlap`.
        pixel_size: Raster pixel side in level-0 pixels.
        n_threads: Threads for exact intersections; see
            :func:`~pathray.evaluate.matching.match_by_iou`.

    Returns:
        The comparison.

    Raises:
        ConfigError: If a parameter is out of range.

    Example:
        >>> from shapely.geometry import box
        >>> c = compare_objects([box(0, 0, 10, 10), box(20, 0, 30, 10)], [box(0, 0, 10, 10)])
        >>> c.detection
        DetectionCounts(tp=1, fp=1, fn=0, sum_iou=1.0)
        >>> c.pixels.result()["dice"]
        0.6666666666666666
    """
    p, r = as_geometry_array(pred), as_geometry_array(ref)
    keep_p, keep_r = np.flatnonzero(inside(p, region)), np.flatnonzero(inside(r, region))
    matching = match_by_iou(p[keep_p], r[keep_r], iou_threshold, n_threads=n_threads)
    matching = matching.remap(keep_p, keep_r)
    return SlideComparison(
        detection=DetectionCounts().update(matching),
        pixels=pixel_overlap(p, r, region, method=pixel_method, pixel_size=pixel_size),
        matching=matching,
    )


def summarize(per_slide: Mapping[str, SlideComparison]) -> dict[str, Any]:
    """Per-slide, overall and macro-averaged metrics, ready for JSON.

    Args:
        per_slide: Comparisons by slide name (or id).

    Returns:
        ``{"per_slide": {name: metrics}, "overall": metrics, "macro": scores,
        "n_slides": int}``; ``overall`` merges the accumulators of all slides (pooled counts
        and areas), ``macro`` averages each per-slide score (no counts). With no slides,
        ``overall`` is the empty-case convention (all scores 1.0, counts 0) and ``macro`` is
        empty.

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
    detection = reduce(DetectionCounts.merge, (s.detection for s in slides), DetectionCounts())
    pixels = reduce(PixelOverlap.merge, (s.pixels for s in slides), PixelOverlap())
    rows = {name: s.metrics() for name, s in zip(names, slides, strict=True)}
    scores = [k for k in _metrics(detection, pixels) if k not in COUNT_KEYS]
    macro = {k: float(np.mean([m[k] for m in rows.values()])) for k in scores} if rows else {}
    return {
        "per_slide": rows,
        "overall": _metrics(detection, pixels),
        "macro": macro,
        "n_slides": len(rows),
    }
