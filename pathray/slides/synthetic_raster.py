"""Exact, vectorised polygon rasterisation with the pixel-centre rule.

Pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` (the GeoJSON / QuPath convention) and belongs to
a polygon when its centre ``(i + 0.5, j + 0.5)`` lies inside (even-odd rule; a centre exactly on
an edge is decided consistently but arbitrarily). This is what shapely, skimage and rasterio
compute; ``cv2.fillPoly`` instead fills every pixel the outline touches (about 7 % more pixels
on a nucleus), so the synthetic slides do not use it for their ground truth.

All polygons of a region are rasterised at once: the crossings of every edge with every pixel
row are computed in one pass, sorted, paired into spans, and the spans written through a
row-wise cumulative sum.

Example:
    >>> import numpy as np
    >>> square = np.array([[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [1.0, 3.0]])
    >>> rasterise([square], 0, 0, 6, 5)
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0]], dtype=int32)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def rasterise(
    polygons: Sequence[NDArray[np.float64]], x: int, y: int, w: int, h: int
) -> NDArray[np.int32]:
    """Label image of non-overlapping polygons over a region.

    Args:
        polygons: ``(n, 2)`` vertex arrays (open or closed rings) in absolute pixel
            coordinates; they must not overlap (where they do, labels add up).
        x: Left edge of the region.
        y: Top edge.
        w: Width in pixels.
        h: Height in pixels.

    Returns:
        ``(h, w)`` int32: 0 outside every polygon, ``k + 1`` inside ``polygons[k]``.
    """
    empty = np.zeros((h, w), dtype=np.int32)
    if not len(polygons):
        return empty
    lengths = np.array([len(p) for p in polygons])
    starts = np.concatenate(polygons)
    following = np.arange(1, len(starts) + 1)
    following[np.cumsum(lengths) - 1] = np.cumsum(lengths) - lengths  # close each ring
    ends = starts[following]
    owner = np.repeat(np.arange(1, len(polygons) + 1), lengths)
    x0, y0 = starts[:, 0] - x, starts[:, 1] - y
    x1, y1 = ends[:, 0] - x, ends[:, 1] - y
    # Rows j whose centre j + 0.5 lies in [min(y0, y1), max(y0, y1)).
    first = np.maximum(np.ceil(np.minimum(y0, y1) - 0.5), 0).astype(np.int64)
    stop = np.minimum(np.ceil(np.maximum(y0, y1) - 0.5), h).astype(np.int64)
    count = np.maximum(stop - first, 0)
    total = int(count.sum())
    if total == 0:
        return empty
    edge = np.repeat(np.arange(len(count)), count)
    row = first[edge] + np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    t = (row + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    label = owner[edge]
    order = np.lexsort((xc, row, label))
    xc, row, label = xc[order], row[order], label[order]
    # Each (label, row) group holds an even number of crossings: pair them into spans.
    begin = np.clip(np.floor(xc[0::2] - 0.5) + 1, 0, w).astype(np.int64)
    end = np.clip(np.ceil(xc[1::2] - 0.5), 0, w).astype(np.int64)
    row, label = row[0::2], label[0::2].astype(np.float64)
    keep = begin < end
    base = row[keep] * (w + 1)
    size = h * (w + 1)
    delta = np.bincount(base + begin[keep], label[keep], size) - np.bincount(
        base + end[keep], label[keep], size
    )
    spans = np.cumsum(delta.astype(np.int32).reshape(h, w + 1), axis=1, dtype=np.int32)
    return np.ascontiguousarray(spans[:, :w])
