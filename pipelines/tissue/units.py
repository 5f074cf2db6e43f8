"""Tissue masking at tile resolution.

The run's planner already skipped empty tiles with a low-resolution mask; this unit refines it per
tile so that later units ignore glass inside a kept tile.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from pathray.slides.tissue import optical_density
from pathray.units.base import Batch, Column, Resources, Unit, UnitConfig


class TissueMaskConfig(UnitConfig):
    """Config of :class:`TissueMaskUnit`.

    Attributes:
        mpp: Resolution the unit works at.
        od_threshold: Optical density above which a pixel is tissue.
        smooth_um: Gaussian smoothing before thresholding, in microns.
    """

    mpp: float = Field(0.5, gt=0)
    od_threshold: float = Field(0.08, gt=0)
    smooth_um: float = Field(2.0, ge=0)


class TissueMaskUnit(Unit):
    """Per-tile tissue mask and tissue fraction."""

    name = "tissue_mask"
    version = "1"
    role = "tissue_mask"
    Config = TissueMaskConfig
    inputs = (Column("image", "uint8", (None, None, 3)),)
    outputs = (
        Column("tissue", "bool", (None, None), stored=False, description="tissue pixels"),
        Column("tissue_fraction", "float32", description="fraction of the tile that is tissue"),
    )
    resources = Resources(num_cpus=0.5)
    batch_size = 32

    def __call__(self, batch: Batch) -> Batch:
        """Threshold each tile's optical density."""
        images = batch["image"]
        sigma = self.config.smooth_um / self.config.mpp
        masks = np.empty(images.shape[:3], bool)
        for i, image in enumerate(images):
            od = optical_density(image)
            if sigma > 0:
                od = cv2.GaussianBlur(od, (0, 0), sigma)
            masks[i] = od > self.config.od_threshold
        return {
            "tissue": masks,
            "tissue_fraction": masks.reshape(len(masks), -1).mean(axis=1).astype(np.float32),
        }
