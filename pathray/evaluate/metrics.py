"""Mergeable metric accumulators: detection counts and pixel overlap.

An accumulator holds sufficient statistics (counts and sums, never ratios), so results computed
per slide, in separate Ray tasks, merge into exactly the numbers a single pass would give:
``a.merge(b).result() == single_pass.result()``. Each one offers

- ``update(...)``: add one more observation, in place; returns ``self`` for chaining;
- ``merge(other)``: a new accumulator with both contents (neither input changes); also ``+``;
- ``result()``: the metrics, a ``dict[str, float]`` ready for JSON.

Empty cases follow one convention: when there is nothing to find and nothing was found, every
score is 1.0 (a perfect answer); when only one side is empty, the scores that depend on it are
0.0. Later metrics (panoptic quality, AJI, classification) add accumulators of the same shape.

Example:
    >>> a = DetectionCounts(tp=8, fp=2, fn=0, sum_iou=6.4)
    >>> b = DetectionCounts(tp=0, fp=0, fn=2)
    >>> {k: round(v, 3) for k, v in (a + b).result().items()}
    {'precision': 0.8, 'recall': 0.8, 'f1': 0.8, 'mean_iou': 0.8}
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal, Protocol, Self, TypeAlias

import numpy as np
import shapely
from shapely.geometry import box

from pathray.errors import ConfigError
from pathray.evaluate import raster
from pathray.evaluate.matching import Geometries, Matching, as_geometry_array

#: A region to score in: a polygon, or a bounding box ``(xmin, ymin, xmax, ymax)``.
Region: TypeAlias = shapely.Geometry | tuple[float, float, float, float]


class Accumulator(Protocol):
    """What every metric accumulator offers (see the module docstring)."""

    def merge(self, other: Self) -> Self:
        """A new accumulator holding both contents."""
        ...

    def result(self) -> dict[str, float]:
        """The metrics of everything accumulated."""
        ...


def _ratio(num: float, den: float, *, empty: float) -> float:
    return float(num) / float(den) if den else empty


class _Summable:
    """Merge by adding every field (all fields are counts or sums)."""

    def merge(self, other: Self) -> Self:
        """A new accumulator holding the contents of ``self`` and ``other``.

        Args:
            other: An accumulator of the same type.

        Returns:
            The field-wise sum; neither input changes.
        """
        if type(other) is not type(self):
            raise TypeError(f"Cannot merge {type(self).__name__} with {type(other).__name__}.")
        changes = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return replace(self, **changes)  # type: ignore[type-var]

    def __add__(self, other: Self) -> Self:
        return self.merge(other)


@dataclass
class DetectionCounts(_Summable):
    """Object-level detection counts after one-to-one matching.

    Metrics (:meth:`result`): ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``,
    ``f1 = 2 tp / (2 tp + fp + fn)`` and ``mean_iou = sum_iou / tp`` (mean IoU of the matched
    pairs; 0.0 for point matchings, which have no IoU). With no predictions and no references
    all four are 1.0; with only one side empty, all four are 0.0.

    Attributes:
        tp: Matched pairs.
        fp: Unmatched predictions.
        fn: Unmatched references.
        sum_iou: Sum of the IoU of the matched pairs.

    Example:
        >>> DetectionCounts(tp=1, fp=2, fn=1).result()["f1"]
        0.4
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    sum_iou: float = 0.0

    def update(self, matching: Matching) -> Self:
        """Add the pairs and leftovers of one matching.

        Args:
            matching: A matching from :func:`~pathray.evaluate.matching.match_by_iou` or
                :func:`~pathray.evaluate.matching.match_by_distance`.

        Returns:
            ``self``, updated in place.
        """
        self.tp += matching.n_matched
        self.fp += len(matching.unmatched_pred)
        self.fn += len(matching.unmatched_ref)
        if matching.kind == "iou":
            self.sum_iou += float(np.sum(matching.score))
        return self

    def result(self) -> dict[str, float]:
        """Precision, recall, F1 and mean matched IoU (see the class docstring)."""
        empty = 1.0 if self.tp + self.fp + self.fn == 0 else 0.0
        return {
            "precision": _ratio(self.tp, self.tp + self.fp, empty=empty),
            "recall": _ratio(self.tp, self.tp + self.fn, empty=empty),
            "f1": _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, empty=1.0),
            "mean_iou": _ratio(self.sum_iou, self.tp, empty=empty),
        }


@dataclass
class PixelOverlap(_Summable):
    """Areas of the union of predictions, of references, and of their intersection.

    Metrics (:meth:`result`): ``dice = 2 I / (P + R)`` and ``pixel_iou = I / (P + R - I)``;
    both 1.0 when both areas are 0, and 0.0 when only one is.

    Attributes:
        intersection: Area covered by both a prediction and a reference (level-0 pixels²).
        pred_area: Area covered by predictions.
        ref_area: Area covered by references.

    Example:
        >>> PixelOverlap(intersection=50, pred_area=100, ref_area=100).result()
        {'dice': 0.5, 'pixel_iou': 0.3333333333333333}
    """

    intersection: float = 0.0
    pred_area: float = 0.0
    ref_area: float = 0.0

    def update(
        self,
        pred: Geometries,
        ref: Geometries,
        region: Region | None = None,
        method: Literal["raster", "vector"] = "raster",
        pixel_size: float = 1.0,
    ) -> Self:
        """Add the overlap of one more image (see :func:`pixel_overlap`).

        Returns:
            ``self``, updated in place.
        """
        more = pixel_overlap(pred, ref, region, method=method, pixel_size=pixel_size)
        self.intersection += more.intersection
        self.pred_area += more.pred_area
        self.ref_area += more.ref_area
        return self

    def result(self) -> dict[str, float]:
        """Dice and IoU of the pixels (see the class docstring)."""
        total = self.pred_area + self.ref_area
        return {
            "dice": _ratio(2 * self.intersection, total, empty=1.0),
            "pixel_iou": _ratio(self.intersection, total - self.intersection, empty=1.0),
        }


def as_region(region: Region | None) -> shapely.Geometry | None:
    """A region as a geometry: bounding boxes become rectangles; None stays None.

    Example:
        >>> as_region((0, 0, 2, 3)).area
        6.0
    """
    if region is None or isinstance(region, shapely.Geometry):
        return region
    if len(region) != 4:
        raise ConfigError(f"A region box must be (xmin, ymin, xmax, ymax). Got {region!r}.")
    return box(*region)


def pixel_overlap(
    pred: Geometries,
    ref: Geometries,
    region: Region | None = None,
    *,
    method: Literal["raster", "vector"] = "raster",
    pixel_size: float = 1.0,
) -> PixelOverlap:
    """Overlap of the union of predicted polygons with the union of reference polygons.

    Args:
        pred: Predicted polygons (level-0 pixel coordinates).
        ref: Reference polygons.
        region: Score only inside this polygon or box (some datasets outline only part of a
            tile); everywhere when None.
        method: ``"raster"`` counts pixels whose centre is covered, on a grid of ``pixel_size``
            aligned to multiples of it (fast, memory bounded; see :mod:`.raster`);
            ``"vector"`` computes exact areas with shapely (slower for many objects).
        pixel_size: Raster pixel side in level-0 pixels (coarser is faster).

    Returns:
        The areas, in level-0 pixels².

    Raises:
        ConfigError: If ``method`` or ``pixel_size`` is invalid.

    Example:
        >>> from shapely.geometry import box
        >>> pixel_overlap([box(0, 0, 10, 10)], [box(5, 0, 15, 10)]).result()["dice"]
        0.5
    """
    p, r, area = as_geometry_array(pred), as_geometry_array(ref), as_region(region)
    if method == "vector":
        return _vector_overlap(p, r, area)
    if method != "raster":
        raise ConfigError(f"method must be 'raster' or 'vector'. Got {method!r} instead.")
    sets = [raster.polygon_parts(p), raster.polygon_parts(r)]
    if area is not None:
        sets.append(raster.polygon_parts(np.asarray([area], dtype=object)))
        bounds = area.bounds
    else:
        both = np.concatenate(sets)
        bounds = shapely.total_bounds(both) if len(both) else (np.nan,) * 4
    grid = raster.Grid.covering(bounds, pixel_size)
    counts = np.zeros(1 << len(sets), dtype=np.int64)
    for rows, chosen in raster.bands(sets, grid):
        counts += raster.covered_counts([raster.spans(c, grid, rows) for c in chosen], grid.width)
    if area is not None:  # keep only pixels inside the region (bit 2)
        counts[:4] = 0
    pix = grid.pixel_size**2
    idx = np.arange(len(counts))
    return PixelOverlap(
        intersection=float(counts[(idx & 3) == 3].sum() * pix),
        pred_area=float(counts[(idx & 1) == 1].sum() * pix),
        ref_area=float(counts[(idx & 2) == 2].sum() * pix),
    )


def _union(geoms: np.ndarray) -> shapely.Geometry:
    try:
        return shapely.union_all(geoms)
    except shapely.errors.GEOSException:
        return shapely.union_all(shapely.make_valid(geoms))


def _vector_overlap(p: np.ndarray, r: np.ndarray, region: shapely.Geometry | None) -> PixelOverlap:
    up, ur = _union(p), _union(r)
    if region is not None:
        up, ur = shapely.intersection(up, region), shapely.intersection(ur, region)
    return PixelOverlap(
        intersection=float(shapely.area(shapely.intersection(up, ur))),
        pred_area=float(shapely.area(up)),
        ref_area=float(shapely.area(ur)),
    )


__all__ = [
    "Accumulator",
    "DetectionCounts",
    "PixelOverlap",
    "Region",
    "as_region",
    "pixel_overlap",
]
