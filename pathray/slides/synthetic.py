"""Deterministic synthetic H&E slides with exact nucleus ground truth.

:func:`make_synthetic_slide` writes three files that agree with each other exactly:

- ``<stem>.tif``: a pyramidal tiled JPEG BigTIFF (:func:`pathray.slides.pyramid.write_pyramid`)
  of white-ish glass, pink eosin tissue in smooth irregular pieces, and purple haematoxylin
  nuclei of three classes (tumour: large, irregular, pale with a nucleolus; lymphocyte: small,
  round, dark, in aggregates; stroma: elongated, along the fibres);
- ``<stem>.nuclei.geojson``: every nucleus polygon with its class (QuPath style), in level-0
  pixel coordinates; the pixels whose centres lie inside a polygon are exactly the pixels drawn
  as that nucleus (before blur and JPEG);
- ``<stem>.tissue.geojson``: the tissue outline(s), traced at a coarse grid (accurate to
  ``ceil(max(width, height) / 1024)`` px).

Everything is a function of ``seed`` and absolute coordinates: any region can be rendered on
its own (:meth:`SyntheticHE.render_region`), nuclei are placed per 512 px cell from
``(seed, cell_x, cell_y)`` (:mod:`pathray.slides.synthetic_nuclei`), and the ground truth is
streamed cell by cell, so slide size is limited by disk and time, not memory.

Example:
    >>> slide = make_synthetic_slide("/tmp/syn.tif", width=2048, height=2048)  # doctest: +SKIP
    >>> slide.n_nuclei > 0, slide.nuclei_geojson.name  # doctest: +SKIP
    (True, 'syn.nuclei.geojson')
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pathray.errors import ConfigError
from pathray.slides.pyramid import write_pyramid
from pathray.slides.synthetic_geojson import FeatureWriter
from pathray.slides.synthetic_nuclei import CELL, CLASSES, CellNuclei, place_cell_nuclei
from pathray.slides.synthetic_render import nucleus_labels, render_region
from pathray.slides.synthetic_tissue import TissueLayout

DEFAULT_CLASSES = ("tumor", "lymphocyte", "stroma")
TISSUE_COLOR = (0, 160, 80)
GRAIN = 512


@dataclass(frozen=True)
class SyntheticSlide:
    """The files of one synthetic slide.

    Attributes:
        path: The pyramidal TIFF.
        nuclei_geojson: Nucleus polygons with classes (None when not written).
        tissue_geojson: Tissue outlines.
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        mpp: Microns per pixel of level 0.
        n_nuclei: Nuclei written to the ground truth (None when not written).
        classes: Class names, in the order of the class indices.
    """

    path: Path
    nuclei_geojson: Path | None
    tissue_geojson: Path
    width: int
    height: int
    mpp: float
    n_nuclei: int | None
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Nucleus:
    """One ground-truth nucleus.

    Attributes:
        polygon: ``(n, 2)`` vertices in level-0 px (open ring, pixel-corner convention).
        label: Class name.
        key: Stable identity ``"<seed>/<cell_x>/<cell_y>/<index>"``.
    """

    polygon: NDArray[np.float64]
    label: str
    key: str


class SyntheticHE:
    """A synthetic H&E slide, defined everywhere, rendered on demand.

    Args:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        mpp: Microns per pixel of level 0.
        seed: Everything follows from it.
        classes: Nucleus classes to draw (any of ``"tumor"``, ``"lymphocyte"``, ``"stroma"``).
        nuclei_per_mm2: Density of candidate tumour nuclei; lymphocyte candidates are 3x and
            stroma candidates 1/4 as dense. Tissue, class mixing and overlap rejection make
            the realised density lower (about 2,500-3,000 per mm2 of tissue at 6,000).
        tissue_fraction: Approximate fraction of the slide covered by tissue.
        cache_cells: Placement cells kept in memory (default: two rows of cells).

    Example:
        >>> he = SyntheticHE(2048, 2048, seed=3)
        >>> tile = he.render_region(0, 0, 256, 256)
        >>> bool((tile == he.render_region(0, 0, 256, 256)).all())
        True
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        mpp: float = 0.25,
        seed: int = 0,
        classes: Sequence[str] = DEFAULT_CLASSES,
        nuclei_per_mm2: float = 6000.0,
        tissue_fraction: float = 0.5,
        cache_cells: int | None = None,
    ) -> None:
        if width <= 0 or height <= 0 or not mpp > 0:
            raise ConfigError(
                f"width, height and mpp must be positive. Got {width}, {height}, {mpp} instead."
            )
        if not 0.0 < tissue_fraction < 1.0:
            raise ConfigError(f"tissue_fraction must be in (0, 1). Got {tissue_fraction} instead.")
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or len(set(classes)) != len(classes):
            raise ConfigError(
                f"classes must be distinct names among {list(CLASSES)}. Got {list(classes)}."
            )
        if nuclei_per_mm2 < 0:
            raise ConfigError(f"nuclei_per_mm2 must be >= 0. Got {nuclei_per_mm2} instead.")
        self.width, self.height, self.mpp, self.seed = width, height, float(mpp), int(seed)
        self.classes = tuple(classes)
        self.specs = tuple(CLASSES[c] for c in self.classes)
        self.nuclei_per_mm2 = float(nuclei_per_mm2)
        self.layout = TissueLayout(
            width, height, mpp=self.mpp, seed=self.seed, tissue_fraction=tissue_fraction
        )
        self.cells_x, self.cells_y = math.ceil(width / CELL), math.ceil(height / CELL)
        self._cache: OrderedDict[tuple[int, int], CellNuclei] = OrderedDict()
        self._cache_size = cache_cells or 2 * (self.cells_x + 2) + 16
        self._lock = threading.Lock()
        grain_rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, 9]))
        # Two periods in each direction: a region up to GRAIN px is a plain slice.
        self._grain = np.tile(grain_rng.random((GRAIN, GRAIN), dtype=np.float32), (2, 2))

    def grain(self, x: int, y: int, w: int, h: int) -> NDArray[np.float32]:
        """Per-pixel uniform noise of a region (a seeded texture repeating every 512 px)."""
        if w <= GRAIN and h <= GRAIN:
            x0, y0 = x % GRAIN, y % GRAIN
            return self._grain[y0 : y0 + h, x0 : x0 + w]
        rows = np.arange(y, y + h) % GRAIN
        cols = np.arange(x, x + w) % GRAIN
        out: NDArray[np.float32] = self._grain[rows][:, cols]
        return out

    def __getstate__(self) -> dict[str, object]:
        # Picklable (e.g. for Ray workers): caches and locks are rebuilt on the other side.
        state = self.__dict__.copy()
        state["_cache"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def cell(self, cell_x: int, cell_y: int) -> CellNuclei:
        """The nuclei of one placement cell (cached, thread-safe)."""
        key = (cell_x, cell_y)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        cell = place_cell_nuclei(
            self.layout,
            cell_x,
            cell_y,
            seed=self.seed,
            classes=self.specs,
            nuclei_per_mm2=self.nuclei_per_mm2,
        )
        with self._lock:
            self._cache[key] = cell
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return cell

    def render_region(self, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        """RGB pixels of a level-0 region (``(h, w, 3)`` uint8), the same however cut."""
        return render_region(self, x, y, w, h)

    def nuclei_mask(self, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        """Class mask of a level-0 region: 0 outside nuclei, ``k + 1`` for ``classes[k]``."""
        labels, drawn = nucleus_labels(self, x, y, w, h)
        lut = np.concatenate([[0], drawn.classes + 1]).astype(np.uint8)
        out: NDArray[np.uint8] = lut[labels]
        return out

    def tissue_mask(self, x: int, y: int, w: int, h: int, downsample: float = 1.0) -> NDArray:
        """Boolean tissue mask of a region, one value per ``downsample`` level-0 pixels."""
        return self.layout.tissue_mask(x, y, w, h, downsample)

    def iter_nuclei(self, bbox: tuple[int, int, int, int] | None = None) -> Iterator[Nucleus]:
        """Yield the ground-truth nuclei, cell by cell in row-major order.

        Args:
            bbox: ``(x, y, w, h)`` in level-0 px: only nuclei whose vertex mean lies inside.

        Yields:
            :class:`Nucleus` records.
        """
        x, y, w, h = bbox if bbox is not None else (0, 0, self.width, self.height)
        for cy in range(max(0, y // CELL), min(self.cells_y, (y + h - 1) // CELL + 1)):
            for cx in range(max(0, x // CELL), min(self.cells_x, (x + w - 1) // CELL + 1)):
                cell = place_cell_nuclei(
                    self.layout,
                    cx,
                    cy,
                    seed=self.seed,
                    classes=self.specs,
                    nuclei_per_mm2=self.nuclei_per_mm2,
                )
                for k, poly in enumerate(cell.polygons):
                    mx, my = poly.mean(axis=0)
                    if x <= mx < x + w and y <= my < y + h:
                        label = self.classes[int(cell.classes[k])]
                        yield Nucleus(poly, label, f"{self.seed}/{cx}/{cy}/{k}")

    def write_nuclei_geojson(
        self, path: str | Path, bbox: tuple[int, int, int, int] | None = None
    ) -> int:
        """Stream the nucleus ground truth to a GeoJSON file; return the number written."""
        with open(path, "w", encoding="utf-8", buffering=1 << 20) as stream:
            writer = FeatureWriter(stream)
            for nucleus in self.iter_nuclei(bbox):
                color = CLASSES[nucleus.label].color
                writer.add([nucleus.polygon], nucleus.label, color, nucleus.key)
            writer.close()
            return writer.count

    def write_tissue_geojson(self, path: str | Path) -> int:
        """Write the tissue outlines to a GeoJSON file; return the number of pieces."""
        with open(path, "w", encoding="utf-8") as stream:
            writer = FeatureWriter(stream)
            for k, rings in enumerate(self.layout.tissue_polygons()):
                writer.add(rings, "tissue", TISSUE_COLOR, f"{self.seed}/tissue/{k}")
            writer.close()
            return writer.count


def sidecar_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.nuclei.geojson, <stem>.tissue.geojson)`` beside a slide file.

    Example:
        >>> [p.name for p in sidecar_paths("/data/s1.tif")]
        ['s1.nuclei.geojson', 's1.tissue.geojson']
    """
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.nuclei.geojson"), path.with_name(f"{stem}.tissue.geojson")


def make_synthetic_slide(
    path: str | Path,
    *,
    width: int,
    height: int,
    mpp: float = 0.25,
    seed: int = 0,
    tile_size: int = 256,
    nuclei_per_mm2: float = 6000.0,
    classes: Sequence[str] = DEFAULT_CLASSES,
    tissue_fraction: float = 0.5,
    write_ground_truth: bool = True,
    ground_truth_bbox: tuple[int, int, int, int] | None = None,
    quality: int = 90,
    workers: int | None = None,
) -> SyntheticSlide:
    """Write a synthetic H&E slide and its ground truth.

    Args:
        path: The pyramidal TIFF to write (``.tif``); the GeoJSON files go beside it.
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        mpp: Microns per pixel of level 0.
        seed: Same seed, same files (byte for byte for the GeoJSON; same pixels).
        tile_size: TIFF tile edge in pixels.
        nuclei_per_mm2: Candidate density of tumour nuclei (see :class:`SyntheticHE`).
        classes: Nucleus classes to draw.
        tissue_fraction: Approximate fraction of the slide covered by tissue.
        write_ground_truth: Write ``<stem>.nuclei.geojson`` (turn off for huge slides).
        ground_truth_bbox: ``(x, y, w, h)``: write only the nuclei in this region.
        quality: JPEG quality of the tiles.
        workers: Threads rendering tiles (default: up to 4, as CPUs allow).

    Returns:
        The :class:`SyntheticSlide`.

    Raises:
        ConfigError: If an argument is invalid.

    Example:
        >>> s = make_synthetic_slide("/tmp/s.tif", width=4096, height=4096)  # doctest: +SKIP
        >>> s.classes  # doctest: +SKIP
        ('tumor', 'lymphocyte', 'stroma')
    """
    path = Path(path)
    he = SyntheticHE(
        width,
        height,
        mpp=mpp,
        seed=seed,
        classes=classes,
        nuclei_per_mm2=nuclei_per_mm2,
        tissue_fraction=tissue_fraction,
    )
    nuclei_path, tissue_path = sidecar_paths(path)
    threads = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
    write_pyramid(
        path,
        he.render_region,
        width,
        height,
        mpp=mpp,
        tile_size=tile_size,
        quality=quality,
        workers=threads,
        description=f"PathRay synthetic H&E; seed={seed}; mpp={mpp}",
    )
    he.write_tissue_geojson(tissue_path)
    n_nuclei: int | None = None
    if write_ground_truth:
        n_nuclei = he.write_nuclei_geojson(nuclei_path, ground_truth_bbox)
    return SyntheticSlide(
        path=path,
        nuclei_geojson=nuclei_path if write_ground_truth else None,
        tissue_geojson=tissue_path,
        width=width,
        height=height,
        mpp=float(mpp),
        n_nuclei=n_nuclei,
        classes=he.classes,
    )
