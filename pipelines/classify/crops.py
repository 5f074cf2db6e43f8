"""Image crops around nuclei, shared by the units that classify nuclei from their pixels.

Object rows carry no pixels, so a crop classifier is a tile -> object unit: it reads a tile's
``image`` and the ``nucleus_labels`` of an upstream segmenter. Both ``nucleus_crop_cnn`` (a
trainable CNN) and ``crop_classifier`` (any registered image classifier) cut their crops and
make their objects here, so a model trained on one's crops sees the same crops in the other:

- :func:`owned_nuclei`: the nuclei a tile's core owns (centroid rule, so overlapping tiles never
  report one twice), with their outline, box and centroid in level-0 pixels;
- :func:`extract_crops`: a ``size`` px window centred on each nucleus centroid (the image
  reflected past the tile's edge), optionally with the nucleus mask as a fourth channel;
- :func:`resize_crops`: the windows resized to a model's input size.

Example:
    >>> import numpy as np
    >>> labels = np.zeros((32, 32), np.int32)
    >>> labels[10:14, 20:24] = 1
    >>> ids, centres = nucleus_centroids(labels)
    >>> ids.tolist(), centres.tolist()
    ([1], [[11.5, 21.5]])
    >>> extract_crops(np.zeros((32, 32, 3), np.uint8), labels, ids, centres, size=8,
    ...               mask_channel=False).shape
    (1, 8, 8, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import shapely

from pathray.units.base import Batch, Column

#: Box and centroid columns of every nucleus object, level-0 pixels.
GEOMETRY = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "centroid_x", "centroid_y")
#: The outline and :data:`GEOMETRY` columns, as a tile -> object unit declares them.
GEOMETRY_OUTPUTS = (
    Column("polygon", "wkb", granularity="object", description="outline, level-0 px"),
    *(Column(name, "float64", granularity="object") for name in GEOMETRY),
)


def nucleus_centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the instances of a label image and their centroids ``(row, col)``."""
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols]
    count = np.bincount(ids)
    present = np.flatnonzero(count)
    present = present[present > 0]
    centre = (
        np.stack(
            [np.bincount(ids, weights=rows)[present], np.bincount(ids, weights=cols)[present]],
            axis=1,
        )
        / count[present, None]
    )
    return present.astype(np.int64), centre


def extract_crops(
    image: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    centres: np.ndarray,
    *,
    size: int,
    mask_channel: bool,
) -> np.ndarray:
    """Windows of ``size`` px centred on each nucleus, ``(n, size, size, 3 or 4)`` uint8.

    Args:
        image: ``(H, W, 3)`` uint8 RGB tile.
        labels: ``(H, W)`` instance labels.
        ids: Instances to crop.
        centres: Their centroids ``(row, col)``.
        size: Window edge.
        mask_channel: Add the instance's mask (255 inside) as a fourth channel.

    Returns:
        The crops (the image is reflected beyond the tile edge).
    """
    half = size // 2
    pad = half + 1
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(image[..., :3]), pad, pad, pad, pad, cv2.BORDER_REFLECT_101
    )
    lab = np.pad(labels, pad) if mask_channel else labels
    out = np.zeros((len(ids), size, size, 4 if mask_channel else 3), np.uint8)
    for k, (index, (row, col)) in enumerate(zip(ids, centres, strict=True)):
        y0, x0 = int(np.floor(row)) - half + pad, int(np.floor(col)) - half + pad
        out[k, :, :, :3] = padded[y0 : y0 + size, x0 : x0 + size]
        if mask_channel:
            out[k, :, :, 3] = (lab[y0 : y0 + size, x0 : x0 + size] == index) * 255
    return out


def resize_crops(crops: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crops ``(n, h, w, c)`` resized (bilinear) to ``size`` = ``(height, width)``."""
    height, width = size
    if crops.shape[1:3] == (height, width):
        return crops
    return np.stack(
        [
            cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR).reshape(
                height, width, -1
            )
            for c in crops
        ]
    ).reshape(len(crops), height, width, crops.shape[-1])


@dataclass(frozen=True)
class TileNuclei:
    """The nuclei one tile's core owns.

    Attributes:
        labels: The tile's instance label image.
        ids: The owned instances' ids in ``labels``.
        centres: Their centroids ``(row, col)`` in tile pixels (where crops are centred).
        columns: Their ``polygon`` (WKB) and :data:`GEOMETRY` columns, level-0 pixels.
    """

    labels: np.ndarray
    ids: np.ndarray
    centres: np.ndarray
    columns: Batch


def owned_nuclei(batch: Batch, i: int) -> TileNuclei | None:
    """The nuclei of row ``i`` of a tile batch that its core owns (None: none).

    A nucleus belongs to the tile whose core (``core_x0`` ... ``core_y1``) holds its centroid,
    and needs an outline (:func:`~pipelines.nuclei.features.label_to_polygons`).

    Args:
        batch: Tile rows with ``nucleus_labels`` and the tile keys (``x``, ``y``,
            ``downsample``, the core).
        i: The row.
    """
    from pipelines.nuclei.features import label_to_polygons

    labels = np.asarray(batch["nucleus_labels"][i])
    if not labels.any():
        return None
    down, x, y = float(batch["downsample"][i]), float(batch["x"][i]), float(batch["y"][i])
    ids, centres = nucleus_centroids(labels)
    cx, cy = x + (centres[:, 1] + 0.5) * down, y + (centres[:, 0] + 0.5) * down
    polygons = dict(label_to_polygons(labels, offset=(x, y), downsample=down))
    geoms = np.array([polygons.get(int(k)) for k in ids], dtype=object)
    owned = np.array([g is not None and not g.is_empty for g in geoms], bool)
    owned &= (cx >= batch["core_x0"][i]) & (cx < batch["core_x1"][i])
    owned &= (cy >= batch["core_y0"][i]) & (cy < batch["core_y1"][i])
    if not owned.any():
        return None
    bounds = shapely.bounds(geoms[owned])
    columns: Batch = {
        "polygon": np.array(shapely.to_wkb(geoms[owned]), dtype=object),
        **{name: bounds[:, j] for j, name in enumerate(GEOMETRY[:4])},
        "centroid_x": cx[owned],
        "centroid_y": cy[owned],
    }
    return TileNuclei(labels, ids[owned], centres[owned], columns)


def empty_geometry() -> Batch:
    """The geometry columns of no objects."""
    return {
        "polygon": np.zeros(0, dtype=object),
        **{name: np.zeros(0, np.float64) for name in GEOMETRY},
    }


__all__ = [
    "GEOMETRY",
    "GEOMETRY_OUTPUTS",
    "TileNuclei",
    "empty_geometry",
    "extract_crops",
    "nucleus_centroids",
    "owned_nuclei",
    "resize_crops",
]
