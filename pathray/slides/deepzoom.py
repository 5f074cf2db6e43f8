"""DeepZoom (DZI) tiles of a slide, rendered from the slide's own pyramid levels.

A DeepZoom image has levels ``0 .. max_level`` where level ``max_level`` is the slide at full
resolution and each level below halves the one above (rounding up), down to 1 x 1 pixel. A tile
``(level, col, row)`` covers ``tile_size`` pixels of that level plus ``overlap`` pixels on every
side that has a neighbour, which is what OpenSeadragon expects.

Each tile is rendered from the coarsest stored pyramid level that is at least as fine as the
tile needs (so a coarse tile never touches level 0), resized with area interpolation, and
encoded as JPEG or PNG. Encoded tiles go into a bounded LRU cache; everything is thread-safe, so
one :class:`DeepZoom` per slide serves every request of a process (see :func:`open_deepzoom`).

Example:
    >>> dz = open_deepzoom("../shared/data/wsi/CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> dz.dzi_xml()[:38]  # doctest: +SKIP
    '<?xml version="1.0" encoding="UTF-8"?>'
    >>> len(dz.tile(dz.max_level, 0, 0)) > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from pathray.errors import ConfigError, NotFoundError
from pathray.slides.readers import SlideReader, open_reader

if TYPE_CHECKING:
    from pathray.catalog import Catalog

TileFormat = Literal["jpeg", "png"]
MEDIA_TYPES: dict[str, str] = {"jpeg": "image/jpeg", "png": "image/png"}
BBox = tuple[float, float, float, float]


#: ``(catalog url, slide id) -> reachable replica`` of :func:`slide_location`.
_LOCATIONS: dict[tuple[str, int], str] = {}


class TileNotFoundError(NotFoundError):
    """A DeepZoom level, column or row outside the image (HTTP layers answer 404)."""


@dataclass(frozen=True)
class DeepZoomGrid:
    """The DeepZoom geometry of a ``width x height`` image (no pixels).

    Attributes:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        tile_size: Tile edge without the overlap (254 with overlap 1, or 256 with 0).
        overlap: Pixels each tile shares with each neighbour.
    """

    width: int
    height: int
    tile_size: int = 254
    overlap: int = 1

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(
                f"Image size must be positive. Got {self.width} x {self.height} instead."
            )
        if self.tile_size <= 0 or self.overlap < 0 or self.overlap >= self.tile_size:
            raise ConfigError(
                "tile_size must be positive and overlap in [0, tile_size). "
                f"Got tile_size={self.tile_size}, overlap={self.overlap} instead."
            )

    @property
    def max_level(self) -> int:
        """The full-resolution level (``ceil(log2(max(width, height)))``)."""
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    @property
    def level_count(self) -> int:
        """Number of DeepZoom levels."""
        return self.max_level + 1

    def scale(self, level: int) -> int:
        """Level-0 pixels per pixel of ``level`` (a power of two)."""
        self._check_level(level)
        return 1 << (self.max_level - level)

    def level_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of a level in its own pixels."""
        factor = self.scale(level)
        return -(-self.width // factor), -(-self.height // factor)

    def tile_count(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of a level."""
        w, h = self.level_size(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """A tile's ``(x0, y0, x1, y1)`` in the pixels of its own level, overlap included.

        Raises:
            TileNotFoundError: The level, column or row is outside the image.
        """
        cols, rows = self.tile_count(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileNotFoundError(
                f"Tile ({col}, {row}) must be within {cols} x {rows} tiles of level {level}. "
                f"Got column {col}, row {row} instead."
            )
        w, h = self.level_size(level)
        ts, ov = self.tile_size, self.overlap
        x0 = col * ts - (ov if col > 0 else 0)
        y0 = row * ts - (ov if row > 0 else 0)
        return x0, y0, min((col + 1) * ts + ov, w), min((row + 1) * ts + ov, h)

    def tile_bounds(self, level: int, col: int, row: int) -> BBox:
        """A tile's ``(x0, y0, x1, y1)`` in level-0 pixels (clipped to the image).

        Raises:
            TileNotFoundError: The level, column or row is outside the image.
        """
        x0, y0, x1, y1 = self.tile_box(level, col, row)
        f = self.scale(level)
        return (
            float(x0 * f),
            float(y0 * f),
            float(min(x1 * f, self.width)),
            float(min(y1 * f, self.height)),
        )

    def level_for_downsample(self, downsample: float) -> int:
        """The DeepZoom level whose scale is closest to ``downsample`` without being coarser."""
        if not downsample > 0:
            raise ConfigError(f"downsample must be positive. Got {downsample} instead.")
        steps = max(0, math.floor(math.log2(max(downsample, 1.0)) + 1e-9))
        return max(0, self.max_level - steps)

    def _check_level(self, level: int) -> None:
        if not 0 <= level <= self.max_level:
            raise TileNotFoundError(
                f"DeepZoom level must be between 0 and {self.max_level}. Got {level} instead."
            )


class DeepZoom:
    """DeepZoom descriptor and tiles of one slide, with an LRU cache of encoded tiles.

    Args:
        path: The slide file or DICOM folder.
        tile_size: Tile edge without overlap (254 with ``overlap=1``, or 256 with 0).
        overlap: Overlap in pixels.
        format: ``"jpeg"`` or ``"png"``.
        quality: JPEG quality (1-100).
        cache_tiles: Encoded tiles kept (LRU); 0 disables the cache.
        reader: A reader to use instead of the shared one of :func:`open_reader`.
        resident_pixels: Hold the slide's coarsest level in memory when it has at most this
            many pixels (0: never), so coarse tiles need no decoding.

    Raises:
        ConfigError: An invalid tile size, overlap, format or quality.
        SlideError: The slide cannot be opened.
    """

    def __init__(
        self,
        path: str,
        *,
        tile_size: int = 254,
        overlap: int = 1,
        format: TileFormat = "jpeg",
        quality: int = 85,
        cache_tiles: int = 2048,
        reader: SlideReader | None = None,
        resident_pixels: int = 4_000_000,
    ) -> None:
        if format not in MEDIA_TYPES:
            raise ConfigError(f"format must be 'jpeg' or 'png'. Got {format!r} instead.")
        if not 1 <= quality <= 100:
            raise ConfigError(f"quality must be between 1 and 100. Got {quality} instead.")
        self.path = str(path)
        self.reader = reader if reader is not None else open_reader(self.path)
        width, height = self.reader.level_dimensions[0]
        self.grid = DeepZoomGrid(int(width), int(height), tile_size, overlap)
        self.format: TileFormat = format
        self.quality = quality
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._cache_size = cache_tiles
        self._lock = threading.Lock()
        # The TIFF reader is thread-safe (pread + a locked cache); TIAToolbox's may not be.
        self._read_lock: threading.Lock | None = (
            None if self.reader.name == "tiff" else threading.Lock()
        )
        self.hits = 0
        self.misses = 0
        self.resident_pixels = resident_pixels
        self._resident_levels: list[tuple[float, np.ndarray]] | None = None
        self._resident_failed = resident_pixels <= 0
        self._resident_lock = threading.Lock()

    # -- descriptor ------------------------------------------------------------------------

    @property
    def media_type(self) -> str:
        """The tiles' MIME type (``image/jpeg`` or ``image/png``)."""
        return MEDIA_TYPES[self.format]

    @property
    def extension(self) -> str:
        """The tiles' file extension in DeepZoom URLs (``jpeg`` or ``png``)."""
        return self.format

    @property
    def max_level(self) -> int:
        """The full-resolution DeepZoom level."""
        return self.grid.max_level

    def dzi_xml(self) -> str:
        """The DZI descriptor (XML) OpenSeadragon reads before asking for tiles."""
        g = self.grid
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{self.format}" Overlap="{g.overlap}" TileSize="{g.tile_size}">'
            f'<Size Width="{g.width}" Height="{g.height}"/></Image>'
        )

    def dzi_json(self) -> dict[str, object]:
        """The same descriptor as OpenSeadragon's inline ``tileSources`` object."""
        g = self.grid
        return {
            "Image": {
                "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                "Format": self.format,
                "Overlap": str(g.overlap),
                "TileSize": str(g.tile_size),
                "Size": {"Width": str(g.width), "Height": str(g.height)},
            }
        }

    # -- tiles -----------------------------------------------------------------------------

    def tile(self, level: int, col: int, row: int) -> bytes:
        """One encoded tile (cached).

        Args:
            level: DeepZoom level (``max_level`` is full resolution).
            col: Tile column.
            row: Tile row.

        Returns:
            The JPEG or PNG bytes.

        Raises:
            TileNotFoundError: The level, column or row is outside the image.
        """
        key = (int(level), int(col), int(row))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return hit
        data = self.encode(self.tile_pixels(*key))
        with self._lock:
            self.misses += 1
            if self._cache_size > 0:
                self._cache[key] = data
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return data

    def tile_pixels(self, level: int, col: int, row: int) -> np.ndarray:
        """One tile's RGB pixels, ``(h, w, 3)`` uint8, before encoding (not cached).

        Raises:
            TileNotFoundError: The level, column or row is outside the image.
        """
        x0, y0, x1, y1 = self.grid.tile_box(level, col, row)
        scale = self.grid.scale(level)
        out_w, out_h = x1 - x0, y1 - y0
        reader = self.reader
        # The coarsest stored level no coarser than the tile: never level 0 for a coarse tile.
        slide_level = reader.best_level(float(scale))
        resident = self._resident(slide_level)
        if resident is not None:  # the coarsest level, in memory with halvings of its own
            usable = [item for item in resident if item[0] <= scale * 1.01] or resident[:1]
            factor, src_level = usable[-1]
            lh, lw = src_level.shape[:2]
        else:
            factor = reader.level_downsamples[slide_level]
            lw, lh = reader.level_dimensions[slide_level]
        # The tile's box in that level's pixels, widened to whole pixels and kept inside it.
        fx0, fy0 = x0 * scale / factor, y0 * scale / factor
        fx1 = min(x1 * scale / factor, float(lw))
        fy1 = min(y1 * scale / factor, float(lh))
        rx0, ry0 = math.floor(fx0), math.floor(fy0)
        rx1, ry1 = max(rx0 + 1, math.ceil(fx1)), max(ry0 + 1, math.ceil(fy1))
        if resident is not None:
            src = src_level[ry0:ry1, rx0:rx1]
        elif self._read_lock is None:
            src = reader.read_level(slide_level, rx0, ry0, rx1 - rx0, ry1 - ry0)
        else:
            with self._read_lock:
                src = reader.read_level(slide_level, rx0, ry0, rx1 - rx0, ry1 - ry0)
        if src.shape[0] == out_h and src.shape[1] == out_w:
            return np.ascontiguousarray(src)
        return cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_AREA)

    def _resident(self, slide_level: int) -> list[tuple[float, np.ndarray]] | None:
        """The coarsest stored level held in memory, with successive halvings of it.

        Coarse DeepZoom levels all come from the slide's coarsest level; a real slide often
        stores few levels (an SVS may stop at 4x), so every coarse tile would decode and shrink
        many file tiles. Holding that level (when it is at most ``resident_pixels``) and its
        halvings makes those tiles a slice and a small resize.

        Returns:
            ``[(downsample, pixels), ...]`` finest first, or None when ``slide_level`` is not
            the coarsest level or it is too big to hold.
        """
        reader = self.reader
        last = len(reader.level_dimensions) - 1
        if slide_level != last or self._resident_failed:
            return None
        with self._resident_lock:
            if self._resident_levels is None:
                w, h = reader.level_dimensions[last]
                if w * h > self.resident_pixels:
                    self._resident_failed = True
                    return None
                if self._read_lock is None:
                    image = reader.read_level(last, 0, 0, w, h)
                else:
                    with self._read_lock:
                        image = reader.read_level(last, 0, 0, w, h)
                factor = reader.level_downsamples[last]
                levels = [(factor, image)]
                while max(image.shape[:2]) > self.grid.tile_size and min(image.shape[:2]) > 1:
                    half = ((image.shape[1] + 1) // 2, (image.shape[0] + 1) // 2)
                    image = cv2.resize(image, half, interpolation=cv2.INTER_AREA)
                    levels.append((factor * w / image.shape[1], image))
                self._resident_levels = levels
            return self._resident_levels

    def encode(self, pixels: np.ndarray) -> bytes:
        """Encode RGB pixels in the tile format."""
        import imagecodecs

        if self.format == "jpeg":
            return bytes(imagecodecs.jpeg_encode(pixels, level=self.quality))
        return bytes(imagecodecs.png_encode(pixels, level=1))

    def cache_info(self) -> dict[str, int]:
        """Hits, misses and the number of cached tiles."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "size": len(self._cache)}

    def clear_cache(self) -> None:
        """Drop every cached tile."""
        with self._lock:
            self._cache.clear()


def open_deepzoom(
    path: str,
    tile_size: int = 254,
    overlap: int = 1,
    format: TileFormat = "jpeg",
    quality: int = 85,
) -> DeepZoom:
    """The process-wide :class:`DeepZoom` of a slide file (one per path and settings).

    Args:
        path: The slide file or DICOM folder.
        tile_size: Tile edge without overlap.
        overlap: Overlap in pixels.
        format: ``"jpeg"`` or ``"png"``.
        quality: JPEG quality.

    Returns:
        The shared DeepZoom (its reader comes from :func:`open_reader`, also shared).

    Raises:
        ConfigError: Invalid settings.
        SlideError: The slide cannot be opened.
    """
    # One cache key per setting, however the caller spelled the arguments.
    return _shared_deepzoom(str(path), int(tile_size), int(overlap), format, int(quality))


@lru_cache(maxsize=32)
def _shared_deepzoom(
    path: str, tile_size: int, overlap: int, format: TileFormat, quality: int
) -> DeepZoom:
    return DeepZoom(path, tile_size=tile_size, overlap=overlap, format=format, quality=quality)


def slide_location(catalog: Catalog, slide_id: int) -> str:
    """The first reachable replica of a registered slide.

    Raises:
        NotFoundError: No such slide.
        SlideError: No replica of it is reachable.
    """
    from pathray.engine.plan import reachable_replica

    # Every tile request asks; remember the answer while the file is still there.
    key = (catalog.url, int(slide_id))
    known = _LOCATIONS.get(key)
    if known is not None and os.path.exists(known):
        return known
    location = reachable_replica(catalog, slide_id)[0]
    _LOCATIONS[key] = location
    return location


def deepzoom_for_slide(
    catalog: Catalog,
    slide_id: int,
    *,
    tile_size: int = 254,
    overlap: int = 1,
    format: TileFormat = "jpeg",
    quality: int = 85,
) -> DeepZoom:
    """The shared :class:`DeepZoom` of a registered slide (opened from a reachable replica).

    Raises:
        NotFoundError: No such slide.
        SlideError: No replica is reachable or it cannot be read.
        ConfigError: Invalid settings.
    """
    return open_deepzoom(slide_location(catalog, slide_id), tile_size, overlap, format, quality)


__all__ = [
    "MEDIA_TYPES",
    "DeepZoom",
    "DeepZoomGrid",
    "TileFormat",
    "TileNotFoundError",
    "deepzoom_for_slide",
    "open_deepzoom",
    "slide_location",
]
