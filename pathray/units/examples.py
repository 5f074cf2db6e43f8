"""Small reference units: a no-op, tile statistics and a dark-blob detector.

The no-op measures the engine's overhead; tile statistics (tile -> tile) is a branch that runs in
parallel with the nuclei; dark blobs (tile -> object) is the simplest object detector.

They document the contract by example and give the engine's tests units whose output is easy to
predict, without the cost of the real nucleus pipeline.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import shapely
from pydantic import Field

from pathray.slides.tissue import optical_density
from pathray.units.base import PARENT_INDEX, Batch, Column, Resources, Unit, UnitConfig


class NoOp(Unit):
    """Pass tiles through, adding a constant column (measures the engine's overhead)."""

    name = "noop"
    inputs = (Column("image", "uint8", (None, None, 3)),)
    outputs = (Column("noop", "int8", stored=False),)
    resources = Resources(num_cpus=0.25)
    batch_size = 64

    def __call__(self, batch: Batch) -> Batch:
        """Return a zero per row."""
        return {"noop": np.zeros(len(batch["image"]), np.int8)}


class TileStats(Unit):
    """Per-tile staining statistics over the tissue pixels (quality control of a slide).

    Tiles without tissue get NaN statistics.
    """

    name = "tile_stats"
    role = "tile_statistics"
    inputs = (
        Column("image", "uint8", (None, None, 3)),
        Column("tissue", "bool", (None, None)),
    )
    outputs = (
        Column("mean_grey", "float32", description="mean grey level of the tissue pixels"),
        Column("mean_od", "float32", description="mean optical density of the tissue pixels"),
        Column("std_od", "float32", description="spread of the optical density over the tissue"),
    )
    resources = Resources(num_cpus=0.25)
    batch_size = 64

    def __call__(self, batch: Batch) -> Batch:
        """Average grey level and optical density over each tile's tissue mask."""
        n = len(batch["image"])
        out = {name: np.full(n, np.nan, np.float32) for name in ("mean_grey", "mean_od", "std_od")}
        for i, (image, tissue) in enumerate(zip(batch["image"], batch["tissue"], strict=True)):
            if not tissue.any():
                continue
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[tissue]
            od = optical_density(image)[tissue]
            out["mean_grey"][i] = grey.mean()
            out["mean_od"][i] = od.mean()
            out["std_od"][i] = od.std()
        return out


class DarkBlobsConfig(UnitConfig):
    """Config of :class:`DarkBlobs`.

    Attributes:
        threshold: Grey level below which a pixel belongs to a blob.
        min_area: Smallest blob kept, in tile pixels.
        delay_s: Simulated model latency per batch (engine tests and benchmarks).
    """

    threshold: int = Field(100, ge=0, le=255)
    min_area: int = Field(4, ge=1)
    delay_s: float = Field(0.0, ge=0, le=10)


class DarkBlobs(Unit):
    """Connected dark regions of each tile, as polygons in level-0 coordinates."""

    name = "dark_blobs"
    Config = DarkBlobsConfig
    inputs = (Column("image", "uint8", (None, None, 3)),)
    outputs = (
        Column("polygon", "wkb", granularity="object"),
        Column("bbox_x0", "float64", granularity="object"),
        Column("bbox_y0", "float64", granularity="object"),
        Column("bbox_x1", "float64", granularity="object"),
        Column("bbox_y1", "float64", granularity="object"),
        Column("area_px", "float64", granularity="object"),
    )
    resources = Resources(num_cpus=0.5)
    batch_size = 32

    def __call__(self, batch: Batch) -> Batch:
        """Threshold, label and outline each tile; keep blobs whose centre the core owns."""
        if self.config.delay_s:
            time.sleep(self.config.delay_s)
        geoms, parents = [], []
        for i, image in enumerate(batch["image"]):
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            mask = (grey < self.config.threshold).astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            down = float(batch["downsample"][i])
            for contour in contours:
                if cv2.contourArea(contour) < self.config.min_area or len(contour) < 3:
                    continue
                pts = contour[:, 0, :].astype(np.float64) * down
                pts[:, 0] += batch["x"][i]
                pts[:, 1] += batch["y"][i]
                poly = shapely.Polygon(pts)
                c = poly.centroid
                if batch["core_x0"][i] <= c.x < batch["core_x1"][i] and (
                    batch["core_y0"][i] <= c.y < batch["core_y1"][i]
                ):
                    geoms.append(poly)
                    parents.append(i)
        array = np.array(geoms, dtype=object)
        bounds = shapely.bounds(array) if len(array) else np.zeros((0, 4))
        return {
            PARENT_INDEX: np.asarray(parents, np.int64),
            "polygon": np.array(list(shapely.to_wkb(array)) if len(array) else [], dtype=object),
            "bbox_x0": bounds[:, 0],
            "bbox_y0": bounds[:, 1],
            "bbox_x1": bounds[:, 2],
            "bbox_y1": bounds[:, 3],
            "area_px": shapely.area(array) if len(array) else np.zeros(0),
        }


class PinnedNoOp(NoOp):
    """The no-op, pinned to nodes that offer the ``gpu_node`` custom resource.

    It shows (and tests) placement by resources: its actors run only on a node started with
    ``resources={"gpu_node": ...}``. It is not registered by default (a run on a cluster without
    such a node would wait for one): register it with
    :func:`pathray.units.registry.register` where it is needed.
    """

    name = "pinned_noop"
    outputs = (Column("pinned_noop", "int8", stored=False),)
    resources = Resources(num_cpus=0.25, custom={"gpu_node": 1.0})

    def __call__(self, batch: Batch) -> Batch:
        """Return a zero per row."""
        return {"pinned_noop": np.zeros(len(batch["image"]), np.int8)}
