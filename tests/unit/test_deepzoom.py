"""DeepZoom tiles: descriptor, geometry, content against direct reads, levels used, errors."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pytest

from pathray.errors import ConfigError, NotFoundError
from pathray.slides.deepzoom import (
    DeepZoom,
    DeepZoomGrid,
    TileNotFoundError,
    deepzoom_for_slide,
    open_deepzoom,
)
from pathray.slides.pyramid import write_pyramid
from pathray.slides.readers import TiffTileReader

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
W, H = 2000, 1500  # three stored levels: 2000, 1000, 500 px wide


def _pattern(x: int, y: int, w: int, h: int) -> np.ndarray:
    """Smooth colour ramps plus blocks: content that tells positions apart after JPEG."""
    yy, xx = np.mgrid[y : y + h, x : x + w]
    r = (xx * 255 // W).astype(np.uint8)
    g = (yy * 255 // H).astype(np.uint8)
    b = (((xx // 64) + (yy // 64)) % 2 * 180 + 40).astype(np.uint8)
    return np.dstack([r, g, b])


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dz") / "pyramid.tif"
    write_pyramid(path, _pattern, W, H, mpp=0.5, levels=3, quality=95)
    return path


class RecordingReader(TiffTileReader):
    """A TIFF reader that remembers which levels were read."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.levels: list[int] = []

    def read_level(self, level, x, y, width, height, out=None):
        self.levels.append(level)
        return super().read_level(level, x, y, width, height, out)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(imagecodecs.imread(data))


def test_descriptor_and_grid(pyramid: Path) -> None:
    dz = DeepZoom(str(pyramid))
    root = ET.fromstring(dz.dzi_xml().split("\n", 1)[1])
    assert root.tag == "{http://schemas.microsoft.com/deepzoom/2008}Image"
    assert (root.get("TileSize"), root.get("Overlap"), root.get("Format")) == ("254", "1", "jpeg")
    size = root[0]
    assert (size.get("Width"), size.get("Height")) == (str(W), str(H))
    assert dz.dzi_json()["Image"]["Size"] == {"Width": str(W), "Height": str(H)}  # type: ignore[index]
    grid = dz.grid
    assert grid.max_level == 11 and grid.level_count == 12  # ceil(log2(2000)) = 11
    assert grid.level_size(11) == (W, H) and grid.level_size(10) == (1000, 750)
    assert grid.level_size(0) == (1, 1)
    assert grid.tile_count(11) == (8, 6)  # ceil(2000 / 254), ceil(1500 / 254)
    assert grid.tile_box(11, 0, 0) == (0, 0, 255, 255)  # overlap only towards neighbours
    assert grid.tile_box(11, 1, 1) == (253, 253, 509, 509)
    assert grid.tile_box(11, 7, 5) == (7 * 254 - 1, 5 * 254 - 1, W, H)
    assert grid.tile_bounds(10, 1, 0) == (506.0, 0.0, 1018.0, 510.0)
    assert grid.level_for_downsample(1) == 11 and grid.level_for_downsample(5) == 9
    assert DeepZoomGrid(256, 256, 256, 0).tile_count(8) == (1, 1)


def test_full_resolution_tiles_match_direct_reads(pyramid: Path) -> None:
    dz = DeepZoom(str(pyramid), quality=95)
    reader = TiffTileReader(str(pyramid))
    for col, row in [(0, 0), (1, 1), (3, 2), (7, 5)]:
        x0, y0, x1, y1 = dz.grid.tile_box(dz.max_level, col, row)
        tile = _decode(dz.tile(dz.max_level, col, row))
        assert tile.shape == (y1 - y0, x1 - x0, 3)
        direct = reader.read_level(0, x0, y0, x1 - x0, y1 - y0)
        diff = np.abs(tile.astype(int) - direct.astype(int))
        assert diff.mean() < 3, (col, row, diff.mean())


def test_png_tiles_are_lossless(pyramid: Path) -> None:
    dz = DeepZoom(str(pyramid), tile_size=256, overlap=0, format="png")
    assert dz.media_type == "image/png" and 'Format="png"' in dz.dzi_xml()
    tile = _decode(dz.tile(dz.max_level, 2, 1))
    direct = TiffTileReader(str(pyramid)).read_level(0, 512, 256, 256, 256)
    np.testing.assert_array_equal(tile, direct)


def test_coarse_tiles_come_from_coarse_levels(pyramid: Path) -> None:
    reader = RecordingReader(str(pyramid))
    dz = DeepZoom(str(pyramid), reader=reader, cache_tiles=0, resident_pixels=0)
    top = dz.max_level
    for level, stored in [(top, 0), (top - 1, 1), (top - 2, 2), (top - 3, 2), (0, 2)]:
        reader.levels.clear()
        dz.tile(level, 0, 0)
        assert set(reader.levels) == {stored}, (level, reader.levels)
    # With the coarsest level held in memory, it is read once, whole, for every coarse tile.
    reader = RecordingReader(str(pyramid))
    dz = DeepZoom(str(pyramid), reader=reader, cache_tiles=0)
    for level, col, row in [(top - 2, 0, 0), (top - 2, 1, 1), (top - 4, 0, 0), (3, 0, 0)]:
        dz.tile(level, col, row)
    dz.tile(top - 1, 0, 0)
    assert reader.levels == [2, 1]


def test_resident_coarse_levels_render_like_reads(pyramid: Path) -> None:
    held = DeepZoom(str(pyramid), format="png")
    read = DeepZoom(str(pyramid), format="png", resident_pixels=0)
    for level in range(held.max_level - 2, -1, -1):
        cols, rows = held.grid.tile_count(level)
        for col, row in {(0, 0), (cols - 1, rows - 1)}:
            a = _decode(held.tile(level, col, row)).astype(int)
            b = _decode(read.tile(level, col, row)).astype(int)
            # Both are area averages; they part only where 64 px blocks shrink below a pixel.
            assert a.shape == b.shape and np.abs(a - b).mean() < 4, (level, col, row)


def test_coarse_tile_content_matches_a_downsampled_read(pyramid: Path) -> None:
    # PNG isolates the rendering from JPEG's chroma loss on this high-contrast pattern.
    dz = DeepZoom(str(pyramid), format="png")
    level = dz.max_level - 3  # 8x: rendered from stored level 2 (4x), halved
    x0, y0, x1, y1 = dz.grid.tile_box(level, 0, 0)
    tile = _decode(dz.tile(level, 0, 0)).astype(int)
    assert tile.shape == (y1 - y0, x1 - x0, 3) == (188, 250, 3)
    reader = TiffTileReader(str(pyramid))
    from_level2 = cv2.resize(
        reader.read_level(2, 0, 0, 500, 375), (250, 188), interpolation=cv2.INTER_AREA
    )
    assert np.abs(tile - from_level2.astype(int)).max() <= 1
    from_level0 = cv2.resize(
        reader.read_level(0, 0, 0, W, H), (250, 188), interpolation=cv2.INTER_AREA
    )
    assert np.abs(tile - from_level0.astype(int)).mean() < 4
    jpeg = _decode(DeepZoom(str(pyramid), quality=95).tile(level, 0, 0)).astype(int)
    assert np.abs(jpeg - tile).mean() < 10  # chroma subsampling of 8 px blue/grey blocks


def test_out_of_range_tiles_are_not_found(pyramid: Path) -> None:
    dz = DeepZoom(str(pyramid))
    for level, col, row in [(12, 0, 0), (-1, 0, 0), (11, 8, 0), (11, 0, 6), (11, -1, 0), (0, 1, 0)]:
        with pytest.raises(TileNotFoundError) as info:
            dz.tile(level, col, row)
        assert isinstance(info.value, NotFoundError)
        assert "Got" in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"format": "gif"}, {"quality": 0}, {"tile_size": 0}, {"overlap": 254}]
)
def test_bad_settings_are_config_errors(pyramid: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DeepZoom(str(pyramid), **kwargs)  # type: ignore[arg-type]


def test_cache_and_threads_give_the_same_bytes(pyramid: Path) -> None:
    dz = DeepZoom(str(pyramid), cache_tiles=8)
    keys = [(lv, c, r) for lv in (9, 10, 11) for c, r in [(0, 0), (1, 1), (1, 0)]]
    sequential = [bytes(DeepZoom(str(pyramid), cache_tiles=0).tile(*k)) for k in keys]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda k: dz.tile(*k), keys * 3))
    assert threaded == sequential * 3
    info = dz.cache_info()
    assert info["size"] == 8 and info["hits"] + info["misses"] == 27
    before = dz.cache_info()["hits"]
    dz.tile(*keys[-1])
    assert dz.cache_info()["hits"] == before + 1


def test_real_slide_tiles(tmp_path: Path) -> None:
    path = DATA / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    dz = open_deepzoom(str(path))
    assert open_deepzoom(str(path)) is dz  # one per process
    reader = dz.reader
    w, h = reader.level_dimensions[0]
    assert f'Width="{w}" Height="{h}"' in dz.dzi_xml()
    x0, y0, x1, y1 = dz.grid.tile_box(dz.max_level, 4, 3)
    tile = _decode(dz.tile(dz.max_level, 4, 3))
    direct = reader.read_level(0, x0, y0, x1 - x0, y1 - y0)
    assert np.abs(tile.astype(int) - direct.astype(int)).mean() < 6


def test_deepzoom_for_a_registered_slide(sqlite_catalog, pyramid: Path) -> None:
    sqlite_catalog.add_store("local", str(pyramid.parent))
    slide = sqlite_catalog.register_slide(
        name=pyramid.name,
        checksum=hashlib.sha256(pyramid.read_bytes()).hexdigest(),
        store="local",
        relative_path=pyramid.name,
        width=W,
        height=H,
    )
    dz = deepzoom_for_slide(sqlite_catalog, slide.id)
    assert dz is open_deepzoom(str(pyramid))
    assert dz.grid.width == W
    with pytest.raises(NotFoundError):
        deepzoom_for_slide(sqlite_catalog, slide.id + 1)
