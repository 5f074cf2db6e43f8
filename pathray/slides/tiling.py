"""Tile grids: which tiles of a slide a run reads, at which resolution.

A grid is laid at a requested :class:`~pathray.slides.resolution.Resolution`: tiles of
``size`` output pixels, overlapping by ``overlap`` pixels, in level-0 coordinates. Each tile owns
a *core* box; the cores partition the slide exactly, so an object found in the overlap of two
tiles is kept by the one tile whose core holds its centroid.

Only tile references exist here (ids and coordinates, as columns of a pyarrow table); no pixels.

Example:
    >>> grid = TileGrid(width=1000, height=600, downsample=2.0, size=256, overlap=32)
    >>> grid.columns, grid.rows
    (3, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pathray.errors import ConfigError
from pathray.slides.tissue import TissueMask

#: Schema of a tile reference table (one row per tile to read).
TILE_REF_SCHEMA = pa.schema(
    [
        ("slide_id", pa.int64()),
        ("path", pa.string()),
        ("tile_id", pa.int64()),
        ("x", pa.int64()),
        ("y", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("downsample", pa.float64()),
        ("size", pa.int64()),
        ("core_x0", pa.float64()),
        ("core_y0", pa.float64()),
        ("core_x1", pa.float64()),
        ("core_y1", pa.float64()),
        ("tissue_fraction", pa.float32()),
    ]
)


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of square tiles over a slide.

    Args:
        width: Slide width at level 0.
        height: Slide height at level 0.
        downsample: Level-0 pixels per tile pixel.
        size: Tile side in output pixels.
        overlap: Overlap between neighbouring tiles in output pixels.
    """

    width: int
    height: int
    downsample: float
    size: int = 256
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ConfigError(f"Tile size must be positive. Got {self.size} instead.")
        if not 0 <= self.overlap < self.size:
            raise ConfigError(
                f"Tile overlap must be in [0, size={self.size}). Got {self.overlap} instead."
            )
        if self.downsample <= 0:
            raise ConfigError(f"downsample must be positive. Got {self.downsample} instead.")

    @property
    def span(self) -> float:
        """Tile side in level-0 pixels."""
        return self.size * self.downsample

    @property
    def stride(self) -> float:
        """Distance between tile origins in level-0 pixels."""
        return (self.size - self.overlap) * self.downsample

    @property
    def columns(self) -> int:
        """Number of tile columns."""
        return max(1, math.ceil((self.width - self.overlap * self.downsample) / self.stride))

    @property
    def rows(self) -> int:
        """Number of tile rows."""
        return max(1, math.ceil((self.height - self.overlap * self.downsample) / self.stride))

    def __len__(self) -> int:
        return self.columns * self.rows

    def boxes(self) -> np.ndarray:
        """All tiles as an ``(n, 5)`` array: ``tile_id, x, y, width, height`` (level 0)."""
        grid_cols, grid_rows = np.meshgrid(np.arange(self.columns), np.arange(self.rows))
        cols, rows = grid_cols.ravel(), grid_rows.ravel()
        x = np.floor(cols * self.stride).astype(np.int64)
        y = np.floor(rows * self.stride).astype(np.int64)
        span = np.full_like(x, round(self.span))
        return np.stack([rows * self.columns + cols, x, y, span, span], axis=1)

    def cores(self, tile_ids: np.ndarray) -> np.ndarray:
        """Core boxes ``(n, 4)`` as ``x0, y0, x1, y1``; the cores partition the plane."""
        cols, rows = tile_ids % self.columns, tile_ids // self.columns
        half = self.overlap * self.downsample / 2.0

        def edges(index: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
            start = np.where(index == 0, -np.inf, index * self.stride + half)
            stop = np.where(index == count - 1, np.inf, (index + 1) * self.stride + half)
            return start, stop

        x0, x1 = edges(cols, self.columns)
        y0, y1 = edges(rows, self.rows)
        return np.stack([x0, y0, x1, y1], axis=1)


def plan_tiles(
    slide_id: int,
    path: str,
    grid: TileGrid,
    mask: TissueMask | None,
    min_tissue: float = 0.05,
) -> pa.Table:
    """Tile references of one slide: the grid's tiles holding enough tissue.

    Args:
        slide_id: Catalog id of the slide.
        path: Where the workers open the slide (a reachable replica).
        grid: The tile grid.
        mask: The slide's tissue mask, or None to keep every tile.
        min_tissue: Smallest tissue fraction of a kept tile.

    Returns:
        A table with :data:`TILE_REF_SCHEMA`, ordered by tile id.
    """
    boxes = grid.boxes()
    if mask is None:
        fractions = np.ones(len(boxes), np.float32)
    else:
        fractions = mask.fractions(boxes[:, 1:5].astype(np.float64)).astype(np.float32)
    keep = fractions >= min_tissue
    boxes, fractions = boxes[keep], fractions[keep]
    cores = grid.cores(boxes[:, 0])
    n = len(boxes)
    return pa.table(
        {
            "slide_id": np.full(n, slide_id, np.int64),
            "path": pa.array([path] * n, pa.string()),
            "tile_id": boxes[:, 0],
            "x": boxes[:, 1],
            "y": boxes[:, 2],
            "width": boxes[:, 3],
            "height": boxes[:, 4],
            "downsample": np.full(n, grid.downsample),
            "size": np.full(n, grid.size, np.int64),
            "core_x0": cores[:, 0],
            "core_y0": cores[:, 1],
            "core_x1": cores[:, 2],
            "core_y1": cores[:, 3],
            "tissue_fraction": fractions,
        },
        schema=TILE_REF_SCHEMA,
    )
