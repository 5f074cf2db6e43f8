"""Nucleus units: classical segmentation (tile -> tile) and per-nucleus features (tile -> object).

The algorithms live in :mod:`pipelines.nuclei.segment` and :mod:`pipelines.nuclei.features`;
these classes only adapt them to the unit contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import PARENT_INDEX, Batch, Column, Resources, Unit, UnitConfig


class SegmentationConfig(UnitConfig):
    """Config of :class:`NucleusSegmentation`.

    Attributes:
        mpp: Resolution the unit works at.
        params: Overrides of :class:`pipelines.nuclei.segment.SegmentParams` fields.
    """

    mpp: float = Field(0.5, gt=0)
    params: dict[str, float] = Field(default_factory=dict)


class NucleusSegmentation(Unit):
    """Classical nucleus segmentation: colour deconvolution, threshold, watershed."""

    name = "nucleus_segmentation"
    version = "1"
    role = "nucleus_segmentation"
    Config = SegmentationConfig
    inputs = (
        Column("image", "uint8", (None, None, 3)),
        Column("tissue", "bool", (None, None)),
    )
    outputs = (
        Column("nucleus_labels", "int32", (None, None), stored=False, description="instances"),
        Column("nucleus_count", "int32", description="nuclei found in the tile"),
    )
    resources = Resources(num_cpus=1.0)
    batch_size = 16

    def setup(self) -> None:
        """Validate the algorithm's parameters once; one OpenCV thread per actor CPU."""
        import cv2

        from pipelines.nuclei.segment import SegmentParams

        cv2.setNumThreads(1)
        try:
            self._params = SegmentParams(**self.config.params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Invalid nucleus segmentation params: {exc}") from None

    def __call__(self, batch: Batch) -> Batch:
        """Segment each tile into a label image."""
        from pipelines.nuclei.segment import segment_nuclei

        images, tissue = batch["image"], batch["tissue"]
        labels = np.zeros(images.shape[:3], np.int32)
        for i in range(len(images)):
            labels[i] = segment_nuclei(
                images[i], mpp=self.config.mpp, tissue_mask=tissue[i], params=self._params
            )
        counts = labels.reshape(len(labels), -1).max(axis=1).astype(np.int32)
        return {"nucleus_labels": labels, "nucleus_count": counts}


class FeaturesConfig(UnitConfig):
    """Config of :class:`NucleusFeatures`.

    Attributes:
        mpp: Resolution the unit works at.
    """

    mpp: float = Field(0.5, gt=0)


#: Feature columns (object granularity) and the keys of ``nucleus_features`` they come from.
FEATURES: dict[str, str] = {
    "area_um2": "area_um2",
    "perimeter_um": "perimeter_um",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "hematoxylin_mean": "hematoxylin_mean",
    "eosin_mean": "eosin_mean",
}


class NucleusFeatures(Unit):
    """Turn label images into nucleus objects: polygon, box, centroid and features.

    A nucleus is kept by the tile whose core holds its centroid, so overlapping tiles never
    report it twice.
    """

    name = "nucleus_features"
    version = "1"
    role = "nucleus_features"
    Config = FeaturesConfig
    inputs = (
        Column("image", "uint8", (None, None, 3)),
        Column("nucleus_labels", "int32", (None, None)),
    )
    outputs = (
        Column("polygon", "wkb", granularity="object", description="outline, level-0 px"),
        Column("bbox_x0", "float64", granularity="object"),
        Column("bbox_y0", "float64", granularity="object"),
        Column("bbox_x1", "float64", granularity="object"),
        Column("bbox_y1", "float64", granularity="object"),
        Column("centroid_x", "float64", granularity="object"),
        Column("centroid_y", "float64", granularity="object"),
        Column("label", "str", granularity="object", description="class name"),
        *(Column(name, "float32", granularity="object") for name in FEATURES),
    )
    resources = Resources(num_cpus=1.0)
    batch_size = 16

    def __call__(self, batch: Batch) -> Batch:
        """Vectorise each tile's instances and keep those its core owns."""
        from pipelines.nuclei.features import label_to_polygons, nucleus_features

        parts: dict[str, list[Any]] = {name: [] for name in (PARENT_INDEX, "polygon")}
        for i in range(len(batch["tile_id"])):
            labels = batch["nucleus_labels"][i]
            if not labels.any():
                continue
            down = float(batch["downsample"][i])
            polygons = dict(
                label_to_polygons(
                    labels, offset=(float(batch["x"][i]), float(batch["y"][i])), downsample=down
                )
            )
            feats = nucleus_features(labels, batch["image"][i], mpp=self.config.mpp)
            ids = np.asarray(feats["label"], np.int64)
            geoms = np.array([polygons.get(int(k)) for k in ids], dtype=object)
            valid = np.array([g is not None and not g.is_empty for g in geoms], bool)
            cx = batch["x"][i] + (np.asarray(feats["centroid_x"]) + 0.5) * down
            cy = batch["y"][i] + (np.asarray(feats["centroid_y"]) + 0.5) * down
            owned = (
                valid
                & (cx >= batch["core_x0"][i])
                & (cx < batch["core_x1"][i])
                & (cy >= batch["core_y0"][i])
                & (cy < batch["core_y1"][i])
            )
            if not owned.any():
                continue
            kept = geoms[owned]
            bounds = shapely.bounds(kept)
            parts[PARENT_INDEX].append(np.full(len(kept), i, np.int64))
            parts["polygon"].append(np.array(shapely.to_wkb(kept), dtype=object))
            for j, name in enumerate(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")):
                parts.setdefault(name, []).append(bounds[:, j])
            parts.setdefault("centroid_x", []).append(cx[owned])
            parts.setdefault("centroid_y", []).append(cy[owned])
            for column, key in FEATURES.items():
                parts.setdefault(column, []).append(np.asarray(feats[key], np.float32)[owned])
        return self._assemble(parts)

    @staticmethod
    def _assemble(parts: dict[str, list[Any]]) -> Batch:
        empty: dict[str, np.ndarray] = {
            PARENT_INDEX: np.zeros(0, np.int64),
            "polygon": np.zeros(0, dtype=object),
            **{n: np.zeros(0, np.float64) for n in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")},
            "centroid_x": np.zeros(0, np.float64),
            "centroid_y": np.zeros(0, np.float64),
            **{n: np.zeros(0, np.float32) for n in FEATURES},
        }
        out = {
            name: np.concatenate(parts[name]) if parts.get(name) else default
            for name, default in empty.items()
        }
        out["label"] = np.full(len(out[PARENT_INDEX]), "nucleus", dtype=object)
        return out
