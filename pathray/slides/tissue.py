"""Tissue masks at low resolution.

The mask decides which tiles a run reads, so it must be cheap (one low-resolution read per slide)
and stable: two copies of the same scan in different containers (SVS and DICOM) must give the same
mask. It thresholds the optical density of a thumbnail read at :data:`MASK_MPP`, the threshold
being Otsu's, clamped to the band where background ends and faint tissue begins, then removes
specks and fills small holes.

Example:
    >>> reader = open_reader("../shared/data/wsi/CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> mask = tissue_mask(reader, mpp=0.499)  # doctest: +SKIP
    >>> mask.downsample, mask.array.dtype  # doctest: +SKIP
    (16.03..., dtype('bool'))
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

from pathray.slides.readers import SlideReader

#: Resolution of the tissue mask in microns per pixel (about 1.25x objective).
MASK_MPP = 8.0
#: Longest side of the mask when the slide's mpp is unknown.
MASK_SIDE = 1024
#: Optical density band the threshold is clamped to: below it is glass, above it tissue.
OD_FLOOR, OD_CEILING = 0.04, 0.15


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask and its scale.

    Attributes:
        array: ``(h, w)`` bool, True on tissue.
        downsample: Level-0 pixels per mask pixel.
    """

    array: np.ndarray
    downsample: float

    def fraction(self, x: float, y: float, width: float, height: float) -> float:
        """Fraction of tissue inside a level-0 box (0 outside the mask)."""
        d = self.downsample
        h, w = self.array.shape
        x0, y0 = max(int(x / d), 0), max(int(y / d), 0)
        x1, y1 = min(int(np.ceil((x + width) / d)), w), min(int(np.ceil((y + height) / d)), h)
        if x1 <= x0 or y1 <= y0:
            return 0.0
        return float(self.array[y0:y1, x0:x1].mean())

    def fractions(self, boxes: np.ndarray) -> np.ndarray:
        """Tissue fraction of many level-0 boxes ``(n, 4)`` as ``x, y, width, height``.

        Uses an integral image, so it costs O(n) however large the boxes.
        """
        d = self.downsample
        h, w = self.array.shape
        integral = cv2.integral(self.array.astype(np.uint8))  # (h+1, w+1)
        x0 = np.clip((boxes[:, 0] / d).astype(np.int64), 0, w)
        y0 = np.clip((boxes[:, 1] / d).astype(np.int64), 0, h)
        x1 = np.clip(np.ceil((boxes[:, 0] + boxes[:, 2]) / d).astype(np.int64), 0, w)
        y1 = np.clip(np.ceil((boxes[:, 1] + boxes[:, 3]) / d).astype(np.int64), 0, h)
        area = np.maximum((x1 - x0) * (y1 - y0), 1)
        total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        return np.where((x1 > x0) & (y1 > y0), total / area, 0.0)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel optical density (max over channels) of an RGB uint8 image."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)
    return od.max(axis=-1)


def mask_from_image(rgb: np.ndarray, min_object_px: int = 16) -> np.ndarray:
    """Threshold an RGB thumbnail into a tissue mask.

    Args:
        rgb: ``(h, w, 3)`` uint8 thumbnail.
        min_object_px: Specks smaller than this many pixels are dropped, and holes smaller than
            it filled.

    Returns:
        ``(h, w)`` bool mask.
    """
    od = cv2.GaussianBlur(optical_density(rgb), (0, 0), 1.0)
    try:
        threshold = float(threshold_otsu(od))
    except ValueError:  # a constant image
        threshold = OD_CEILING
    threshold = min(max(threshold, OD_FLOOR), OD_CEILING)
    mask = od > threshold
    mask = remove_small_objects(mask, max_size=min_object_px)
    return remove_small_holes(mask, max_size=min_object_px * 4)


def tissue_mask(reader: SlideReader, mpp: float | None) -> TissueMask:
    """Compute a slide's tissue mask at low resolution.

    Args:
        reader: The slide's pixel reader.
        mpp: Level-0 microns per pixel, or None (then the mask's long side is
            :data:`MASK_SIDE` pixels).

    Returns:
        The mask and its downsample against level 0.
    """
    width, height = reader.level_dimensions[0]
    longest = max(width, height)
    downsample = max(MASK_MPP / mpp if mpp else longest / MASK_SIDE, 1.0)
    out_w, out_h = max(1, round(width / downsample)), max(1, round(height / downsample))
    thumb = reader.read_region(0, 0, out_w, out_h, downsample=downsample)
    return TissueMask(mask_from_image(thumb), width / out_w)
