"""Pixel readers for tiles, chosen by capability and priority.

Registration reads metadata through TIAToolbox (:mod:`pathray.slides.probe`); the hot path of a
run reads pixels through the fastest reader that can handle the file:

- :class:`TiffTileReader` (priority 20): any TIFF whose pyramid tifffile understands (SVS with
  JPEG or JPEG 2000, OME-TIFF, NDPI, generic tiled TIFF). It reads the compressed tiles a region
  covers straight from the file with ``os.pread`` and decodes them with imagecodecs, keeping an
  LRU cache of decoded tiles, so overlapping tile requests decode each file tile once.
- :class:`TiaReader` (priority 0): anything TIAToolbox opens (DICOM WSI included), through its
  ``read_rect``.

Readers pickle as their path and are rebuilt (and cached once per process) on the other side, so
a Ray worker opens each slide once however many tasks it runs.

Example:
    >>> reader = open_reader("../shared/data/OS-1-detail.ome.tif")  # doctest: +SKIP
    >>> reader.read_region(0, 0, 256, 256, level=0).shape  # doctest: +SKIP
    (256, 256, 3)
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache, wraps
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from pathray.errors import SlideError
from pathray.slides.probe import is_dicom_folder

BACKGROUND = 255  # white: what lies outside a slide's bounds

#: Where decoded pixels start, modulo 32 bytes. libjpeg-turbo's SIMD colour conversion writes
#: an output row that starts on a 16-byte (SSE2) or 32-byte (AVX2) boundary with non-temporal
#: stores (``movntdq``), which bypass the CPU caches: a 256 px tile decoded into such a buffer
#: took 310-360 us here, against 200-245 us at 8 or 16 bytes off (a 256 px row is 768 bytes,
#: so the first row decides them all). malloc hands out either alignment, so the speed of a
#: batch array used to depend on the allocator's history.
_PIXEL_ADDRESS_MOD_32 = 8


def pixel_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array for decoded pixels, 8 bytes off a 16-byte boundary.

    Args:
        shape: The array's shape, e.g. ``(n, height, width, 3)``.

    Returns:
        A C-contiguous uint8 array (a view into a slightly larger allocation).

    Example:
        >>> buf = pixel_buffer((2, 256, 256, 3))
        >>> buf.shape, buf.ctypes.data % 32, buf.flags.c_contiguous
        ((2, 256, 256, 3), 8, True)
    """
    size = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(size + 32, np.uint8)
    start = (_PIXEL_ADDRESS_MOD_32 - raw.ctypes.data) % 32
    return raw[start : start + size].reshape(shape)


def _clear_errors(read_level: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Turn a failure inside a reader (a truncated or corrupt tile) into a SlideError."""

    @wraps(read_level)
    def read(
        self: SlideReader, level: int, x: int, y: int, *args: Any, **kwargs: Any
    ) -> np.ndarray:
        try:
            return read_level(self, level, x, y, *args, **kwargs)
        except SlideError:
            raise
        except Exception as exc:
            where = f"level {level} at ({x}, {y})"
            raise SlideError(
                self.path, f"{where} cannot be read ({type(exc).__name__}: {exc})"
            ) from exc

    return read


class SlideReader(ABC):
    """Reads RGB pixels of one slide at any pyramid level.

    Args:
        path: The slide file or DICOM folder.
    """

    #: Higher wins when several readers can read a file.
    priority: ClassVar[int] = 0
    name: ClassVar[str] = "base"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    @classmethod
    @abstractmethod
    def can_read(cls, path: Path) -> bool:
        """Whether this reader can read ``path`` (cheap: header checks only)."""

    @property
    @abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level."""

    @abstractmethod
    def read_level(
        self,
        level: int,
        x: int,
        y: int,
        width: int,
        height: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read a region in the coordinates of one level.

        Args:
            level: Pyramid level.
            x: Left edge, in that level's pixels (may be negative or past the edge).
            y: Top edge, in that level's pixels.
            width: Region width in pixels.
            height: Region height in pixels.
            out: A C-contiguous ``(height, width, 3)`` uint8 array to fill in place (for
                example one row of a batch), or None to allocate one.

        Returns:
            ``(height, width, 3)`` uint8 RGB (``out`` when given); outside the slide is white.
        """

    @cached_property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level against level 0 (from the widths; computed once)."""
        base = self.level_dimensions[0][0]
        return tuple(base / w for w, _ in self.level_dimensions)

    def best_level(self, downsample: float) -> int:
        """The coarsest level at least as fine as ``downsample`` (tolerating 1% rounding)."""
        best = 0
        for level, factor in enumerate(self.level_downsamples):
            if factor <= downsample * 1.01:
                best = level
        return best

    def read_region(
        self,
        x: int,
        y: int,
        width: int,
        height: int,
        level: int = 0,
        downsample: float | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read a region given in level-0 coordinates, at a downsample or a level.

        Args:
            x: Left edge in level-0 pixels.
            y: Top edge in level-0 pixels.
            width: Output width in pixels.
            height: Output height in pixels.
            level: Level to read when ``downsample`` is None.
            downsample: Level-0 pixels per output pixel; the nearest finer level is read and
                resized (area interpolation) when no level matches exactly.
            out: A C-contiguous ``(height, width, 3)`` uint8 array to fill in place, or None.

        Returns:
            ``(height, width, 3)`` uint8 RGB (``out`` when given).
        """
        if downsample is None:
            factor = self.level_downsamples[level]
            lx, ly = round(x / factor), round(y / factor)
            return self.read_level(level, lx, ly, width, height, out)
        level = self.best_level(downsample)
        factor = self.level_downsamples[level]
        scale = downsample / factor
        lx, ly = round(x / factor), round(y / factor)
        if abs(scale - 1.0) < 1e-3:
            return self.read_level(level, lx, ly, width, height, out)
        src_w, src_h = max(1, round(width * scale)), max(1, round(height * scale))
        src = self.read_level(level, lx, ly, src_w, src_h)
        if out is None:
            return cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA)
        out[...] = cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA)
        return out

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Pickle as the path: the other side rebuilds (and caches) its own reader.
        return (open_reader, (self.path, self.name))


@dataclass(frozen=True)
class _Level:
    """Segment geometry of one TIFF level: tiles (``seg_h x seg_w``) or strips."""

    width: int
    height: int
    seg_w: int
    seg_h: int
    per_row: int
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    #: ``(tables, colorspace, outcolorspace)`` when its segments are 8-bit RGB baseline JPEG,
    #: which :func:`imagecodecs.jpeg_decode` decodes straight into a caller's array.
    jpeg: tuple[bytes | None, int | None, int | str | None] | None


def _jpeg_args(page: Any) -> tuple[bytes | None, int | None, int | str | None] | None:
    """The JPEG decoding arguments of a page, or None when it needs tifffile's general path."""
    if page.compression != 7 or page.planarconfig != 1 or page.extrasamples:
        return None
    if page.samplesperpixel != 3 or page.bitspersample != 8:
        return None
    try:  # the color-space rules tifffile itself applies (Aperio RGB JPEG, YCbCr, ...)
        from tifffile.tifffile import jpeg_decode_colorspace

        colorspace, outcolorspace = jpeg_decode_colorspace(
            page.photometric, page.planarconfig, page.extrasamples, page.is_jfif
        )
    except Exception:
        return None
    return page.jpegtables, colorspace, outcolorspace


class TiffTileReader(SlideReader):
    """Direct tile decoding of tiled or striped TIFF pyramids with tifffile and imagecodecs.

    A request for exactly one file tile of an 8-bit RGB JPEG level (the common case: a tile
    grid at a level's own resolution, aligned to the file's tiles) is decoded straight into
    the caller's array; any other request pastes the decoded file tiles it covers, through the
    LRU cache.

    Args:
        path: A TIFF-based slide.
        cache_tiles: Decoded file tiles kept per reader (LRU).
    """

    priority = 20
    name = "tiff"

    def __init__(self, path: str | Path, cache_tiles: int = 256) -> None:
        import tifffile

        super().__init__(path)
        self._tif = tifffile.TiffFile(self.path)
        self._pages = [lv.keyframe for lv in self._tif.series[0].levels]
        self._layout = [self._level_layout(lv) for lv in self._tif.series[0].levels]
        self._dims = tuple((lv.width, lv.height) for lv in self._layout)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_tiles
        self._lock = threading.Lock()

    @staticmethod
    def _level_layout(series_level: Any) -> _Level:
        page = series_level.keyframe
        height, width = int(series_level.shape[0]), int(series_level.shape[1])
        if page.is_tiled:
            seg_h, seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            seg_h, seg_w = int(page.rowsperstrip) or height, width
        return _Level(
            width=width,
            height=height,
            seg_w=seg_w,
            seg_h=seg_h,
            per_row=-(-width // seg_w),
            offsets=tuple(page.dataoffsets),
            counts=tuple(page.databytecounts),
            jpeg=_jpeg_args(page),
        )

    @classmethod
    def can_read(cls, path: Path) -> bool:
        """TIFF files whose first series has RGB(A) uint8 pages with a known codec."""
        if path.is_dir():
            return False
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                for level in tif.series[0].levels:
                    page = level.keyframe
                    if page.dtype != np.uint8 or page.samplesperpixel not in (3, 4):
                        return False
                    if page.planarconfig != 1:  # only interleaved RGB
                        return False
                    page.decode  # noqa: B018 - raises for unsupported codecs
            return True
        except Exception:
            return False

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level."""
        return self._dims

    def _segment(self, level: int, index: int) -> np.ndarray:
        """One decoded file tile (or strip) of a level, through the LRU cache."""
        key = (level, index)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        page, layout = self._pages[level], self._layout[level]
        data = os.pread(self._fd, layout.counts[index], layout.offsets[index])
        decoded, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        array = np.asarray(decoded)[0, :, :, :3]
        with self._lock:
            self._cache[key] = array
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return array

    def _decode_into(self, layout: _Level, index: int, out: np.ndarray) -> bool:
        """Decode one whole JPEG segment straight into ``out``; False if it cannot be."""
        if layout.jpeg is None:
            return False
        import imagecodecs

        tables, colorspace, outcolorspace = layout.jpeg
        data = os.pread(self._fd, layout.counts[index], layout.offsets[index])
        try:
            imagecodecs.jpeg_decode(
                data,
                tables=tables,
                colorspace=colorspace,
                outcolorspace=outcolorspace,
                shape=(layout.seg_h, layout.seg_w),
                out=out,
            )
        except Exception:  # odd segment (or ``out`` not contiguous): take the general path
            return False
        return True

    @_clear_errors
    def read_level(
        self,
        level: int,
        x: int,
        y: int,
        width: int,
        height: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read a region of one level by decoding only the file tiles it covers.

        Args:
            level: Pyramid level.
            x: Left edge, in that level's pixels (may be negative or past the edge).
            y: Top edge, in that level's pixels.
            width: Region width in pixels.
            height: Region height in pixels.
            out: A ``(height, width, 3)`` uint8 array to fill in place, or None.

        Returns:
            ``(height, width, 3)`` uint8 RGB (``out`` when given); outside the slide is white.
        """
        layout = self._layout[level]
        if out is None:
            out = pixel_buffer((height, width, 3))
        seg_w, seg_h = layout.seg_w, layout.seg_h
        inside = x >= 0 and y >= 0 and x + width <= layout.width and y + height <= layout.height
        if (
            inside
            and width == seg_w
            and height == seg_h
            and x % seg_w == 0
            and y % seg_h == 0
            and self._decode_into(layout, (y // seg_h) * layout.per_row + x // seg_w, out)
        ):
            return out
        if not inside:
            out.fill(BACKGROUND)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, layout.width), min(y + height, layout.height)
        if x1 <= x0 or y1 <= y0:
            return out
        for row in range(y0 // seg_h, (y1 - 1) // seg_h + 1):
            for col in range(x0 // seg_w, (x1 - 1) // seg_w + 1):
                seg = self._segment(level, row * layout.per_row + col)
                sx, sy = col * seg_w, row * seg_h
                ix0, iy0 = max(x0, sx), max(y0, sy)
                if seg.shape[0] < seg_h or seg.shape[1] < seg_w:  # short: blank its box first
                    box_x1, box_y1 = min(x1, sx + seg_w), min(y1, sy + seg_h)
                    out[iy0 - y : box_y1 - y, ix0 - x : box_x1 - x] = BACKGROUND
                ix1 = min(x1, sx + seg.shape[1])
                iy1 = min(y1, sy + seg.shape[0])
                if ix1 <= ix0 or iy1 <= iy0:
                    continue
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = seg[
                    iy0 - sy : iy1 - sy, ix0 - sx : ix1 - sx
                ]
        return out

    def close(self) -> None:
        """Release the file handles."""
        os.close(self._fd)
        self._tif.close()


class TiaReader(SlideReader):
    """Any slide TIAToolbox opens (DICOM WSI included), through ``read_rect``.

    Args:
        path: Slide file or DICOM folder.
    """

    priority = 0
    name = "tiatoolbox"

    def __init__(self, path: str | Path) -> None:
        from tiatoolbox.wsicore.wsireader import DICOMWSIReader, WSIReader

        from pathray.slides.probe import _quiet_tiatoolbox

        super().__init__(path)
        _quiet_tiatoolbox()
        p = Path(path)
        self._reader = DICOMWSIReader(p) if is_dicom_folder(p) else WSIReader.open(p)
        self._dims = tuple((int(w), int(h)) for w, h in self._reader.info.level_dimensions)

    @classmethod
    def can_read(cls, path: Path) -> bool:
        """TIAToolbox is the fallback: it is tried on anything."""
        return True

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level."""
        return self._dims

    @_clear_errors
    def read_level(
        self,
        level: int,
        x: int,
        y: int,
        width: int,
        height: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read a region of one level through TIAToolbox (copied into ``out`` when given)."""
        factor = self.level_downsamples[level]
        region = self._reader.read_rect(
            (round(x * factor), round(y * factor)),
            (width, height),
            resolution=level,
            units="level",
            pad_constant_values=BACKGROUND,
        )
        pixels = np.asarray(region)[..., :3]
        if out is None:
            return np.ascontiguousarray(pixels, dtype=np.uint8)
        out[...] = pixels
        return out


READERS: list[type[SlideReader]] = [TiffTileReader, TiaReader]


@lru_cache(maxsize=32)
def open_reader(path: str, name: str | None = None) -> SlideReader:
    """Open (once per process) the best reader for a slide.

    Args:
        path: Slide file or DICOM folder.
        name: Force a reader by its ``name`` (``"tiff"`` or ``"tiatoolbox"``).

    Returns:
        The reader, shared by every caller in this process.

    Raises:
        SlideError: If no reader can open the slide.
    """
    candidates = sorted(READERS, key=lambda cls: -cls.priority)
    if name is not None:
        candidates = [cls for cls in candidates if cls.name == name]
        if not candidates:
            names = [cls.name for cls in READERS]
            raise SlideError(path, f"reader must be one of {names}. Got {name!r} instead.")
    errors = []
    for cls in candidates:
        if name is None and not cls.can_read(Path(path)):
            continue
        try:
            return cls(path)
        except Exception as exc:  # try the next reader, keep the reason
            errors.append(f"{cls.name}: {type(exc).__name__}: {exc}")
    raise SlideError(path, "no reader could open it (" + "; ".join(errors) + ")")
