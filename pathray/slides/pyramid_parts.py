"""Building blocks of :mod:`pathray.slides.pyramid`: tile codecs, bands, the tile spool.

Example:
    >>> import numpy as np
    >>> halve(np.zeros((5, 4, 3), dtype=np.uint8)).shape
    (3, 2, 3)
    >>> reflect(np.arange(-2, 6), 3).tolist()
    [1, 0, 0, 1, 2, 2, 1, 0]
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from pathray.errors import SlideError

RGBImage = NDArray[np.uint8]


def encoder(compression: str, quality: int) -> Callable[[RGBImage], bytes]:
    """Return the function that encodes one full tile for the TIFF."""
    import imagecodecs

    if compression == "jpeg":

        def encode_jpeg(tile: RGBImage) -> bytes:
            return bytes(
                imagecodecs.jpeg8_encode(
                    tile,
                    level=quality,
                    colorspace="RGB",
                    outcolorspace="YCBCR",
                    subsampling=(2, 2),
                )
            )

        return encode_jpeg
    if compression == "deflate":
        return lambda tile: bytes(imagecodecs.zlib_encode(tile.tobytes(), level=6))
    return lambda tile: tile.tobytes()


def pad(tile: RGBImage, size: int) -> RGBImage:
    """Pad a partial edge tile to ``size x size`` by repeating its last row and column."""
    h, w = tile.shape[:2]
    if h == size and w == size:
        return np.ascontiguousarray(tile)
    padded = cv2.copyMakeBorder(tile, 0, size - h, 0, size - w, cv2.BORDER_REPLICATE)
    return np.asarray(padded, dtype=np.uint8)


def halve(tile: RGBImage) -> RGBImage:
    """2x2 box-filter downsample; an odd last row or column is averaged with itself."""
    h, w = tile.shape[:2]
    if h % 2 or w % 2:
        tile = np.asarray(
            cv2.copyMakeBorder(tile, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE), dtype=np.uint8
        )
    out = cv2.resize(tile, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    return np.asarray(out, dtype=np.uint8).reshape((h + 1) // 2, (w + 1) // 2, 3)


class TileSpool:
    """Encoded tiles of the reduced levels, kept in an anonymous temporary file."""

    def __init__(self, folder: Path, n_levels: int) -> None:
        # Closed by close(); an anonymous file vanishes even if the process dies.
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=folder, prefix=".pyramid-")  # noqa: SIM115
        self._index: list[list[tuple[int, int]]] = [[] for _ in range(n_levels)]
        self._end = 0

    def append(self, level: int, data: bytes) -> None:
        """Store the next encoded tile of ``level``."""
        self._file.write(data)
        self._index[level].append((self._end, len(data)))
        self._end += len(data)

    def tiles(self, level: int) -> Iterator[bytes]:
        """Yield the encoded tiles of ``level`` in the order they were stored."""
        self._file.flush()
        fd = self._file.fileno()
        for offset, length in self._index[level]:
            yield os.pread(fd, length, offset)

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()


class Band:
    """One tile row of a reduced level, filled by halves of the finer level's tiles."""

    def __init__(self, level: int, width: int, height: int, tile: int) -> None:
        self.level, self.width, self.height, self.tile = level, width, height, tile
        self.cols = math.ceil(width / tile)
        self.rows = math.ceil(height / tile)
        # Level 0 comes tile by tile from the source and needs no band.
        band_width = self.cols * tile if level > 0 else 0
        self.pixels = np.zeros((tile, band_width, 3), dtype=np.uint8)

    def put(self, fine_col: int, fine_row: int, half: RGBImage) -> None:
        """Place the half of tile ``(fine_col, fine_row)`` of the finer level."""
        y = (fine_row % 2) * (self.tile // 2)
        x = fine_col * (self.tile // 2)
        self.pixels[y : y + half.shape[0], x : x + half.shape[1]] = half

    def tiles(self, row: int) -> Iterator[RGBImage]:
        """Yield copies of the tiles of ``row`` (cropped at the right and bottom edges)."""
        h = min(self.tile, self.height - row * self.tile)
        for col in range(self.cols):
            w = min(self.tile, self.width - col * self.tile)
            yield self.pixels[:h, col * self.tile : col * self.tile + w].copy()


def bounded_map(
    pool: ThreadPoolExecutor | None, fn: Callable[..., Any], items: Iterable[Any], depth: int
) -> Iterator[Any]:
    """Ordered map that keeps at most ``depth`` calls in flight (inline when no pool)."""
    if pool is None:
        for item in items:
            yield fn(item)
        return
    pending: deque[Future[Any]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def checked_tile(tile: Any, w: int, h: int, path: Path) -> RGBImage:
    """Validate one level-0 tile and crop a full edge tile to its valid part."""
    arr = np.asarray(tile)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise SlideError(path, f"tiles must be (h, w, 3) uint8 arrays; got {arr.shape} {arr.dtype}")
    if arr.shape[0] < h or arr.shape[1] < w:
        raise SlideError(path, f"a tile must be at least {h} x {w} px; got {arr.shape[:2]}")
    return arr[:h, :w]


def reflect(index: NDArray[np.int64], size: int) -> NDArray[np.int64]:
    """Mirror indices into ``[0, size)``: 0..n-1, n-1..0, 0..n-1, ..."""
    period = 2 * size
    m = np.mod(index, period)
    out: NDArray[np.int64] = np.where(m >= size, period - 1 - m, m)
    return out


def read_image(src: str | Path) -> tuple[NDArray[Any], float | None]:
    """Read a small RGB image (TIFF level 0, PNG, JPEG) and the mpp its TIFF tags declare."""
    import tifffile

    path = Path(src)
    if not path.is_file():
        raise SlideError(path, "no such file")
    if path.suffix.lower() in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr = series.asarray()
            if series.axes.startswith("C") and arr.ndim == 3:
                arr = np.moveaxis(arr, 0, -1)
            page = tif.pages.first
            unit, res = page.tags.get("ResolutionUnit"), page.tags.get("XResolution")
            mpp = None
            if unit is not None and res is not None and unit.value in (2, 3) and res.value[0]:
                mpp = (25400.0 if unit.value == 2 else 1e4) * res.value[1] / res.value[0]
                # 72 or 96 dpi and the like are "unset", not a microscope: ignore them.
                mpp = mpp if 0.01 <= mpp <= 50.0 else None
        return np.asarray(arr), mpp
    img: NDArray[Any] | None = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SlideError(path, "not an image OpenCV can read")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img, None
