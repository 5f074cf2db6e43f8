"""Comparing results with a reference: matching, metrics, comparisons and plots.

- :mod:`.matching`: one-to-one matching of objects by IoU (polygons) or distance (points).
- :mod:`.pairs`: every overlapping pair once, reused by the metrics at several thresholds.
- :mod:`.metrics`: mergeable accumulators (detection counts, pixel overlap).
- :mod:`.instance`: panoptic quality, aggregated Jaccard index, mean AP.
- :mod:`.classification`: confusion matrix, sensitivity/specificity, ROC/AUC, PR/AP.
- :mod:`.raster`: mask-free scan-line rasterisation behind the pixel metrics.
- :mod:`.compare`: one slide's comparison, and the summary of many slides.
- :mod:`.run_eval`: a run against a reference annotation set (stored as evaluations).
- :mod:`.runs`: several runs (horizontal), successive runs (vertical), run against run.
- :mod:`.plots`: metric, ROC, PR and confusion plots as PNG and HTML.

The overall metrics of a run are one flat dict (:data:`METRIC_NAMES` lists the keys), so a
requirement such as ``dice >= 0.85 and f1 >= 0.80 and pq >= 0.6`` reads straight from it.

Example:
    >>> from shapely.geometry import box
    >>> summarize({"s": compare_objects([box(0, 0, 4, 4)], [box(0, 0, 4, 4)])})["overall"]["f1"]
    1.0
"""

from pathray.evaluate.classification import ClassificationCounts
from pathray.evaluate.compare import (
    METRIC_NAMES,
    SlideComparison,
    compare_objects,
    merge_parts,
    metrics_of,
    summarize,
)
from pathray.evaluate.instance import AJICounts, AveragePrecision, panoptic
from pathray.evaluate.matching import Matching, match_by_distance, match_by_iou
from pathray.evaluate.metrics import DetectionCounts, PixelOverlap, pixel_overlap
from pathray.evaluate.pairs import IoUPairs, iou_pairs

__all__ = [
    "METRIC_NAMES",
    "AJICounts",
    "AveragePrecision",
    "ClassificationCounts",
    "DetectionCounts",
    "IoUPairs",
    "Matching",
    "PixelOverlap",
    "SlideComparison",
    "compare_objects",
    "iou_pairs",
    "match_by_distance",
    "match_by_iou",
    "merge_parts",
    "metrics_of",
    "panoptic",
    "pixel_overlap",
    "summarize",
]
