"""Resampling of tiles, maps and label images between resolutions.

A segmenter trained at one resolution (its ``work_mpp``) runs on tiles of another by resizing
the tile to its own resolution, segmenting there, and bringing the labels back by nearest
neighbour: the outlines keep the finer resolution's shape.

Example:
    >>> import numpy as np
    >>> resize_image(np.zeros((10, 20, 3), np.uint8), 2.0).shape
    (20, 40, 3)
    >>> resize_labels(np.arange(4, dtype=np.int32).reshape(2, 2), (4, 4))[0].tolist()
    [0, 0, 1, 1]
"""

from __future__ import annotations

import cv2
import numpy as np


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """``(height, width)`` of ``shape`` scaled by ``factor`` (at least one pixel)."""
    return max(round(shape[0] * factor), 1), max(round(shape[1] * factor), 1)


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize an image (or a float map) by ``factor``: area when shrinking, bilinear else.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array of a dtype OpenCV resizes (uint8, float32).
        factor: Output size over input size; 1 returns the input itself.

    Returns:
        The resized array (same dtype and channels).
    """
    if abs(factor - 1.0) < 1e-6:
        return image
    height, width = scaled_shape(image.shape, factor)
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    out: np.ndarray = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=method)
    return out.reshape((height, width, *image.shape[2:]))


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a label image (any integer or bool dtype) to ``shape`` by nearest neighbour."""
    height, width = labels.shape[:2]
    if (height, width) == tuple(shape):
        return labels
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * height / shape[0]).astype(np.intp), height - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * width / shape[1]).astype(np.intp), width - 1)
    out: np.ndarray = labels[rows][:, cols]
    return out
