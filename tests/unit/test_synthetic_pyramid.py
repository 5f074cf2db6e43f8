"""The streaming pyramidal TIFF writer and the mirrored real-image slide builder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pathray.errors import ConfigError, SlideError
from pathray.slides.pyramid import pyramid_from_image, pyramid_levels, write_pyramid

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OS1 = DATA / "OS-1-detail.ome.tif"


def _image(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    img = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx + yy) // 3) % 256], axis=-1)
    return img.astype(np.uint8)


def _smooth_image(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    img = np.stack(
        [
            128 + 100 * np.sin(xx / 37),
            128 + 100 * np.cos(yy / 23),
            128 + 90 * np.sin((xx + yy) / 51),
        ],
        axis=-1,
    )
    return img.round().astype(np.uint8)


def _halve(img: np.ndarray) -> np.ndarray:
    """Reference 2x2 mean, the odd last row / column averaged with itself."""
    h, w = img.shape[:2]
    padded = np.pad(img.astype(np.float64), ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, 3)
    return blocks.mean(axis=(1, 3))


def test_pyramid_levels() -> None:
    assert pyramid_levels(1000, 700) == [(1000, 700)]
    assert pyramid_levels(5000, 3000)[-1] == (625, 375)
    assert pyramid_levels(100_000, 100_000)[-1] == (782, 782)
    assert pyramid_levels(3001, 2001, levels=3) == [(3001, 2001), (1501, 1001), (751, 501)]


@pytest.mark.parametrize("as_iterator", [False, True])
def test_lossless_levels_are_exact_box_filtered_halves(tmp_path: Path, as_iterator: bool) -> None:
    width, height, tile = 1500, 1100, 256
    img = _image(width, height)
    if as_iterator:
        source = (
            img[y : y + tile, x : x + tile]
            for y in range(0, height, tile)
            for x in range(0, width, tile)
        )
    else:
        source = lambda x, y, w, h: img[y : y + h, x : x + w]  # noqa: E731
    info = write_pyramid(
        tmp_path / "p.tif",
        source,
        width,
        height,
        mpp=0.5,
        compression="deflate",
        levels=4,
        workers=2,
    )
    assert info.level_dimensions == ((1500, 1100), (750, 550), (375, 275), (188, 138))
    with tifffile.TiffFile(info.path) as tif:
        assert tif.is_bigtiff and len(tif.pages) == 4
        levels = [lv.asarray() for lv in tif.series[0].levels]
    assert np.array_equal(levels[0], img)
    expected = img
    for level in levels[1:]:
        expected = _halve(expected)
        assert level.shape == expected.shape
        assert np.abs(level.astype(float) - expected).max() <= 1.0  # rounding
        expected = level


def test_jpeg_pyramid_is_read_by_openslide_and_tiatoolbox(tmp_path: Path) -> None:
    import openslide
    from tiatoolbox.wsicore.wsireader import WSIReader

    img = _smooth_image(2600, 2100)
    path = tmp_path / "j.tif"
    info = write_pyramid(path, lambda x, y, w, h: img[y : y + h, x : x + w], 2600, 2100, mpp=0.5)
    assert info.level_dimensions == ((2600, 2100), (1300, 1050), (650, 525))
    osr = openslide.OpenSlide(str(path))
    assert osr.level_dimensions == info.level_dimensions
    assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
    region = np.asarray(osr.read_region((1000, 900), 0, (300, 200)).convert("RGB"))
    assert np.abs(region.astype(int) - img[900:1100, 1000:1300]).mean() < 2
    osr.close()
    wsi = WSIReader.open(path)
    assert wsi.info.level_count == 3
    assert wsi.info.mpp == pytest.approx([0.5, 0.5])
    low = wsi.read_rect((0, 0), (650, 525), resolution=2, units="level")[..., :3]
    reference = _halve(_halve(img))
    assert np.abs(low.astype(float) - reference).mean() < 2


def test_subifd_layout(tmp_path: Path) -> None:
    img = _image(1100, 1100)
    info = write_pyramid(
        tmp_path / "s.tif",
        lambda x, y, w, h: img[y : y + h, x : x + w],
        1100,
        1100,
        mpp=0.25,
        layout="subifds",
    )
    with tifffile.TiffFile(info.path) as tif:
        assert len(tif.pages) == 1
        assert [lv.shape[:2] for lv in tif.series[0].levels] == [(1100, 1100), (550, 550)]


def test_bad_tiles_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        write_pyramid(tmp_path / "a.tif", lambda *a: None, 10, 10, mpp=0.5, tile_size=100)
    with pytest.raises(ConfigError):
        write_pyramid(tmp_path / "a.tif", [], 10, 10, mpp=0.5, compression="lzma")  # type: ignore[arg-type]
    with pytest.raises(SlideError):
        write_pyramid(
            tmp_path / "b.tif", lambda x, y, w, h: np.zeros((h, w), np.uint8), 300, 300, mpp=1
        )
    assert not (tmp_path / "b.tif").exists()
    with pytest.raises(SlideError, match="tiles"):
        write_pyramid(
            tmp_path / "c.tif", iter([np.zeros((256, 256, 3), np.uint8)]), 600, 300, mpp=1
        )
    assert not list(tmp_path.glob(".pyramid-*"))


def test_memory_stays_bounded_for_a_16k_slide(tmp_path: Path) -> None:
    import psutil

    side = 16384
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (16, 256, 256, 3), dtype=np.uint8)

    def source(x: int, y: int, w: int, h: int) -> np.ndarray:
        return palette[(x // 256 + 3 * (y // 256)) % 16, :h, :w]

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        info = write_pyramid(tmp_path / "big.tif", source, side, side, mpp=0.25, workers=2)
    finally:
        done.set()
        watcher.join()
    assert len(info.level_dimensions) == 5
    growth_mb = (peak[0] - baseline) / 2**20
    # A whole level 0 is 768 MB and level 1 192 MB; the writer keeps one tile row per level.
    print(f"RSS growth {growth_mb:.0f} MB")
    assert growth_mb < 150, growth_mb
    with tifffile.TiffFile(info.path) as tif:
        assert tif.series[0].levels[-1].shape == (1024, 1024, 3)


@pytest.mark.skipif(not OS1.is_file(), reason="shared sample data not available")
def test_pyramid_from_a_real_crop(tmp_path: Path) -> None:
    from tiatoolbox.wsicore.wsireader import WSIReader

    source = tifffile.imread(OS1)
    n = source.shape[0]
    info = pyramid_from_image(OS1, tmp_path / "os1.tif", width=4096, height=3000)
    assert info.mpp == pytest.approx(0.227, abs=1e-3)
    assert info.level_dimensions[0] == (4096, 3000)
    with tifffile.TiffFile(info.path) as tif:
        level0 = tif.series[0].levels[0].asarray()
    diff = np.abs(level0[:n, :n].astype(int) - source)
    assert diff.mean() < 3 and np.percentile(diff, 99) < 20
    # Mirrored beyond the edge: column n + k shows source column n - 1 - k.
    mirrored = level0[:256, n : n + 256].astype(int)
    assert np.abs(mirrored - source[:256, n - 256 :][:, ::-1]).mean() < 3
    wsi = WSIReader.open(info.path)
    assert wsi.info.mpp == pytest.approx([0.227, 0.227], abs=1e-3)
    assert wsi.info.level_count == len(info.level_dimensions)


def test_pyramid_from_an_array_with_scale(tmp_path: Path) -> None:
    img = _image(300, 200)
    info = pyramid_from_image(
        img, tmp_path / "a.tif", mpp=0.5, scale=2.0, width=1024, height=768, compression="none"
    )
    assert info.mpp == pytest.approx(0.25)
    with tifffile.TiffFile(info.path) as tif:
        assert tif.series[0].levels[0].shape == (768, 1024, 3)
    with pytest.raises(ConfigError):
        pyramid_from_image(img, tmp_path / "b.tif", width=512, height=512)


def test_placeholder_resolution_is_not_taken_for_mpp(tmp_path: Path) -> None:
    img = _smooth_image(224, 224)
    src = tmp_path / "tile.tif"
    tifffile.imwrite(src, img, resolution=(72, 72), resolutionunit="INCH")
    with pytest.raises(ConfigError, match="mpp"):
        pyramid_from_image(src, tmp_path / "x.tif", width=512, height=512)
    info = pyramid_from_image(src, tmp_path / "y.tif", mpp=0.5, width=600, height=500)
    with tifffile.TiffFile(info.path) as tif:
        level0 = tif.series[0].levels[0].asarray()
    assert level0.shape == (500, 600, 3)
    assert np.abs(level0[:224, :224].astype(int) - img).mean() < 2
