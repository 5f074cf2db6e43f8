"""Streaming writer of pyramidal tiled TIFF slides.

:func:`write_pyramid` asks a tile source for level-0 tiles in row-major order and writes a
BigTIFF pyramid without ever holding a whole level in memory: every level-0 tile is encoded and
written at once, and its 2x2 box-filtered half goes into a one-tile-high band of level 1; a full
band of level 1 is cut into tiles, encoded, and halved into the band of level 2, and so on. The
encoded tiles of levels >= 1 wait in an anonymous temporary file beside the output and are copied
(not re-encoded) into the TIFF once level 0 is written. Memory is about one tile row of each
reduced level (``tile_size * width / 2 * 3`` bytes for level 1, half that for level 2, ...), so
about 77 MB for a 100,000 px wide slide with 256 px tiles.

File layout: BigTIFF; level 0 is the first IFD, each reduced level the next top-level IFD with
NewSubfileType = 1 (reduced), all tiled, JPEG tiles stored as YCbCr with 2x2 chroma subsampling
(as Aperio and libvips write them). Every level carries ResolutionUnit = centimeter and
X/YResolution = 1e4 / mpp of that level. This is the layout OpenSlide's ``generic-tiff`` driver
reads as a pyramid (OpenSlide ignores SubIFDs, so a SubIFD pyramid shows only level 0 there),
tifffile lists it as one series with levels, and TIAToolbox 2.1 opens it with its
``TIFFWSIReader`` (which accepts a multi-page TIFF only when it is BigTIFF, SVS or OME) and reads
the mpp from the resolution tags. No OME-XML or Aperio description is needed for either, so none
is written: the file does not pretend to come from a scanner. ``layout="subifds"`` writes the
reduced levels as SubIFDs of level 0 instead (the OME-TIFF layout; tifffile and TIAToolbox see
every level, OpenSlide only level 0).

Example:
    >>> import numpy as np
    >>> def source(x, y, w, h):
    ...     return np.full((h, w, 3), 200, dtype=np.uint8)
    >>> info = write_pyramid("/tmp/flat.tif", source, 3000, 2000, mpp=0.5)  # doctest: +SKIP
    >>> info.level_dimensions  # doctest: +SKIP
    ((3000, 2000), (1500, 1000), (750, 500))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from pathray.errors import ConfigError, SlideError
from pathray.slides.pyramid_parts import (
    Band,
    RGBImage,
    TileSpool,
    bounded_map,
    checked_tile,
    encoder,
    halve,
    pad,
    read_image,
    reflect,
)

TileFunction = Callable[[int, int, int, int], RGBImage]
TileSource = TileFunction | Iterable[RGBImage]
Compression = Literal["jpeg", "deflate", "none"]
Layout = Literal["pages", "subifds"]

_TIFF_COMPRESSION = {"jpeg": "jpeg", "deflate": "zlib", "none": None}


@dataclass(frozen=True)
class PyramidInfo:
    """What :func:`write_pyramid` wrote.

    Attributes:
        path: The TIFF file.
        level_dimensions: ``(width, height)`` of each level, level 0 first.
        mpp: Microns per pixel of level 0.
        tile_size: Tile edge in pixels.
        compression: Tile compression.
    """

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    mpp: float
    tile_size: int
    compression: str


def pyramid_levels(
    width: int, height: int, levels: int | None = None, smallest: int = 1024
) -> list[tuple[int, int]]:
    """Dimensions of each pyramid level; each level halves the one before (rounding up).

    Args:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        levels: Number of levels; None adds levels until the longer side is at most ``smallest``.
        smallest: Target size of the coarsest level when ``levels`` is None.

    Returns:
        ``[(width, height), ...]`` from level 0 down.

    Example:
        >>> pyramid_levels(5000, 3000)
        [(5000, 3000), (2500, 1500), (1250, 750), (625, 375)]
    """
    dims = [(width, height)]
    while (levels is None and max(dims[-1]) > smallest) or (levels and len(dims) < levels):
        w, h = dims[-1]
        if w == 1 and h == 1:
            break
        dims.append(((w + 1) // 2, (h + 1) // 2))
    return dims


def write_pyramid(
    path: str | Path,
    tile_source: TileSource,
    width: int,
    height: int,
    *,
    mpp: float,
    tile_size: int = 256,
    compression: Compression = "jpeg",
    quality: int = 90,
    levels: int | None = None,
    description: str | None = None,
    layout: Layout = "pages",
    workers: int = 1,
) -> PyramidInfo:
    """Write a pyramidal tiled BigTIFF from level-0 tiles, level by level in one pass.

    Args:
        path: Output file (``.tif``); overwritten if it exists.
        tile_source: Either a function ``(x, y, w, h) -> (h, w, 3) uint8`` called once per
            level-0 tile in row-major order (``w`` and ``h`` are smaller at the right and bottom
            edges), or an iterable of such tiles in row-major order (full ``tile_size`` tiles
            at the edges are cropped). A function may be called from ``workers`` threads.
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        mpp: Microns per pixel of level 0.
        tile_size: Tile edge in pixels, a multiple of 16.
        compression: ``"jpeg"`` (YCbCr, 2x2 subsampling), ``"deflate"`` or ``"none"``.
        quality: JPEG quality (1-100).
        levels: Number of levels; None halves until the longer side fits in 1024 px.
        description: ImageDescription of level 0 (default: a short PathRay line).
        layout: ``"pages"`` (reduced levels as top-level IFDs) or ``"subifds"``.
        workers: Threads that produce and encode tiles (1: all in the calling thread).

    Returns:
        A :class:`PyramidInfo` describing the file.

    Raises:
        ConfigError: If an argument is invalid.
        SlideError: If the tile source returns a tile of the wrong shape or type.

    Example:
        >>> import numpy as np
        >>> src = lambda x, y, w, h: np.zeros((h, w, 3), np.uint8)
        >>> info = write_pyramid("/tmp/a.tif", src, 4096, 4096, mpp=0.25)  # doctest: +SKIP
        >>> info.level_dimensions[-1]  # doctest: +SKIP
        (1024, 1024)
    """
    import tifffile

    if tile_size <= 0 or tile_size % 16:
        raise ConfigError(f"tile_size must be a positive multiple of 16. Got {tile_size} instead.")
    if compression not in _TIFF_COMPRESSION:
        raise ConfigError(
            f"compression must be one of {list(_TIFF_COMPRESSION)}. Got {compression!r} instead."
        )
    if width <= 0 or height <= 0 or not mpp > 0:
        raise ConfigError(
            f"width, height and mpp must be positive. Got {width}, {height}, {mpp} instead."
        )
    if layout not in ("pages", "subifds"):
        raise ConfigError(f"layout must be 'pages' or 'subifds'. Got {layout!r} instead.")
    path = Path(path)
    dims = pyramid_levels(width, height, levels)
    encode = encoder(compression, quality)
    bands = [Band(k, w, h, tile_size) for k, (w, h) in enumerate(dims)]
    spool = TileSpool(path.parent, len(dims))
    pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def finish(tile: RGBImage) -> tuple[bytes, RGBImage]:
        return encode(pad(tile, tile_size)), halve(tile)

    def push_row(level: int, fine_row: int, halves: list[RGBImage]) -> None:
        """Place the halves of one finished row of ``level - 1``; emit full rows of ``level``."""
        band = bands[level]
        for col, half in enumerate(halves):
            band.put(col, fine_row, half)
        if fine_row % 2 == 0 and fine_row != bands[level - 1].rows - 1:
            return
        row = fine_row // 2
        results = list(bounded_map(pool, finish, band.tiles(row), 4 * workers))
        for data, _ in results:
            spool.append(level, data)
        band.pixels[:] = 0
        if level + 1 < len(bands):
            push_row(level + 1, row, [half for _, half in results])

    def level0_tiles() -> Iterator[bytes]:
        band = bands[0]
        cells = [(col, row) for row in range(band.rows) for col in range(band.cols)]
        if callable(tile_source):
            fn: TileFunction = tile_source

            def produce(cell: tuple[int, int]) -> tuple[bytes, RGBImage]:
                col, row = cell
                x, y = col * tile_size, row * tile_size
                w, h = min(tile_size, width - x), min(tile_size, height - y)
                return finish(checked_tile(fn(x, y, w, h), w, h, path))

            results = bounded_map(pool, produce, cells, 4 * workers)
        else:
            sizes = [
                (min(tile_size, width - c * tile_size), min(tile_size, height - r * tile_size))
                for c, r in cells
            ]
            tiles = (
                checked_tile(t, w, h, path) for t, (w, h) in zip(tile_source, sizes, strict=False)
            )
            results = bounded_map(pool, finish, tiles, 4 * workers)
        halves: list[RGBImage] = []
        count = -1
        for count, (data, half) in enumerate(results):
            halves.append(half)
            if len(halves) == band.cols:
                # Before the yield: tifffile stops pulling after the last tile.
                if len(bands) > 1:
                    push_row(1, count // band.cols, halves)
                halves = []
            yield data
        if count + 1 != len(cells):
            raise SlideError(path, f"the tile source gave {count + 1} tiles, not {len(cells)}")

    try:
        with tifffile.TiffWriter(path, bigtiff=True) as tiff:
            for k, (w, h) in enumerate(dims):
                level_mpp = mpp * width / w
                options: dict[str, Any] = {
                    "shape": (h, w, 3),
                    "dtype": np.uint8,
                    "tile": (tile_size, tile_size),
                    "photometric": "rgb",
                    "compression": _TIFF_COMPRESSION[compression],
                    "resolution": (1e4 / level_mpp, 1e4 / level_mpp),
                    "resolutionunit": "CENTIMETER",
                    "metadata": None,
                }
                if compression == "jpeg":
                    options["subsampling"] = (2, 2)
                if k == 0:
                    desc = description or f"PathRay pyramid; level 0 {width}x{height}; mpp={mpp}"
                    subifds = len(dims) - 1 if layout == "subifds" and len(dims) > 1 else None
                    tiff.write(level0_tiles(), description=desc, subifds=subifds, **options)
                else:
                    tiff.write(spool.tiles(k), subfiletype=1, **options)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        spool.close()
        if pool is not None:
            pool.shutdown(wait=True)
    return PyramidInfo(path, tuple(dims), float(mpp), tile_size, compression)


def pyramid_from_image(
    src: str | Path | RGBImage,
    out_path: str | Path,
    *,
    mpp: float | None = None,
    scale: float = 1.0,
    width: int = 8192,
    height: int = 8192,
    tile_size: int = 256,
    compression: Compression = "jpeg",
    quality: int = 90,
    workers: int = 1,
) -> PyramidInfo:
    """Build a large pyramidal slide by mirror-tiling a small real image.

    A slide made of real pixels for I/O and scale tests, not for accuracy: the image is repeated
    with reflection (so the seams are continuous), which makes structures recur every two image
    widths. Level-0 pixel ``(x, y)`` for ``x, y`` inside the (scaled) source equals the source's
    pixel, so the top-left corner of the slide is the source itself.

    Args:
        src: The source image: a path (TIFF, PNG, JPEG; the whole image is read, so keep it
            small) or an ``(h, w, 3)`` uint8 array.
        out_path: The pyramidal TIFF to write.
        mpp: Microns per pixel of the source; None reads it from the TIFF resolution tags.
        scale: Resize factor applied to the source first (2 doubles its pixels); the written
            slide's mpp is ``mpp / scale``.
        width: Width of the slide in pixels.
        height: Height of the slide in pixels.
        tile_size: Tile edge in pixels.
        compression: Tile compression, as in :func:`write_pyramid`.
        quality: JPEG quality.
        workers: Threads for producing and encoding tiles.

    Returns:
        The :class:`PyramidInfo` of the written slide.

    Raises:
        SlideError: If the source cannot be read or is not RGB.
        ConfigError: If no mpp is given and the source declares none, or ``scale`` is not
            positive.

    Example:
        >>> info = pyramid_from_image(  # doctest: +SKIP
        ...     "../shared/data/OS-1-detail.ome.tif", "/tmp/os1-8k.tif", width=8192, height=8192
        ... )
        >>> info.level_dimensions[0], round(info.mpp, 3)  # doctest: +SKIP
        ((8192, 8192), 0.227)
    """
    raw: NDArray[Any]
    declared: float | None = None
    if isinstance(src, np.ndarray):
        raw = src
    else:
        raw, declared = read_image(src)
    if raw.dtype != np.uint8 or raw.ndim != 3 or raw.shape[2] not in (3, 4):
        raise SlideError(str(src)[:200], f"expected an RGB uint8 image; got {raw.shape}")
    image: NDArray[Any] = np.ascontiguousarray(raw[..., :3])
    mpp = mpp if mpp is not None else declared
    if mpp is None or not mpp > 0:
        raise ConfigError("pyramid_from_image needs the source's mpp; pass mpp=...")
    if not scale > 0:
        raise ConfigError(f"scale must be positive. Got {scale} instead.")
    if scale != 1.0:
        h, w = image.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
        image = cv2.resize(image, size, interpolation=interp)
    src_h, src_w = image.shape[:2]

    def source(x: int, y: int, w: int, h: int) -> RGBImage:
        cols = reflect(np.arange(x, x + w, dtype=np.int64), src_w)
        rows = reflect(np.arange(y, y + h, dtype=np.int64), src_h)
        tile: RGBImage = image[rows[:, None], cols[None, :]]
        return tile

    return write_pyramid(
        out_path,
        source,
        width,
        height,
        mpp=mpp / scale,
        tile_size=tile_size,
        compression=compression,
        quality=quality,
        workers=workers,
        description=f"PathRay mirrored pyramid of a real image; mpp={mpp / scale:.6g}",
    )
