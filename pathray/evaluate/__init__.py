"""Comparing results with a reference: matching, metrics and per-slide summaries.

- :mod:`.matching`: one-to-one matching of objects by IoU (polygons) or distance (points).
- :mod:`.metrics`: mergeable accumulators (detection counts, pixel overlap).
- :mod:`.raster`: mask-free scan-line rasterisation behind the pixel metrics.
- :mod:`.compare`: one slide's comparison, and the summary of many slides.

Example:
    >>> from shapely.geometry import box
    >>> summarize({"s": compare_objects([box(0, 0, 4, 4)], [box(0, 0, 4, 4)])})["overall"]["f1"]
    1.0
"""

from pathray.evaluate.compare import SlideComparison, compare_objects, summarize
from pathray.evaluate.matching import Matching, match_by_distance, match_by_iou
from pathray.evaluate.metrics import DetectionCounts, PixelOverlap, pixel_overlap

__all__ = [
    "DetectionCounts",
    "Matching",
    "PixelOverlap",
    "SlideComparison",
    "compare_objects",
    "match_by_distance",
    "match_by_iou",
    "pixel_overlap",
    "summarize",
]
