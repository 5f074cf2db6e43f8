"""Readers, tissue masks and tile grids on the real slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathray.errors import ConfigError
from pathray.slides.probe import probe_slide
from pathray.slides.readers import TiaReader, TiffTileReader, open_reader
from pathray.slides.resolution import Resolution
from pathray.slides.source import iter_tile_batches
from pathray.slides.tiling import TileGrid, plan_tiles
from pathray.slides.tissue import tissue_mask
from tests.helpers import CMU_DICOM, CMU_SVS, REAL_SLIDES, TCGA_SVS


def test_readers_chosen_by_capability() -> None:
    assert isinstance(open_reader(str(CMU_SVS)), TiffTileReader)
    assert isinstance(open_reader(str(TCGA_SVS)), TiffTileReader)  # JPEG 2000 too
    assert isinstance(open_reader(str(CMU_DICOM)), TiaReader)


@pytest.mark.parametrize("path", [CMU_SVS, TCGA_SVS], ids=lambda p: p.name)
def test_fast_reader_matches_tiatoolbox(path: Path) -> None:
    fast, tia = open_reader(str(path), "tiff"), open_reader(str(path), "tiatoolbox")
    for x, y, w, h in [(0, 0, 256, 256), (300, 411, 500, 300), (2100, 2800, 300, 300)]:
        a = fast.read_level(0, x, y, w, h).astype(int)
        b = tia.read_level(0, x, y, w, h).astype(int)
        assert a.shape == b.shape == (h, w, 3)
        assert np.abs(a - b).mean() < 1.0  # same codec; only edge padding may differ


def test_outside_the_slide_is_white() -> None:
    region = open_reader(str(CMU_SVS)).read_level(0, -100, -100, 50, 50)
    assert (region == 255).all()


def test_read_region_at_downsample_uses_area_resize() -> None:
    reader = open_reader(str(CMU_SVS))
    full = reader.read_region(0, 0, 512, 512, level=0).astype(np.float32)
    half = reader.read_region(0, 0, 256, 256, downsample=2.0).astype(np.float32)
    expected = full.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - expected).mean() < 1.0


def test_resolution_units() -> None:
    assert Resolution(0.5, "mpp").downsample(baseline_mpp=0.25) == 2.0
    assert Resolution(10, "power").downsample(baseline_power=40) == 4.0
    assert Resolution(1, "level").downsample(level_downsamples=(1.0, 4.0)) == 4.0
    with pytest.raises(ConfigError, match="units must be one of"):
        Resolution(1, "pixels")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="microns per pixel"):
        Resolution(0.5, "mpp").downsample(baseline_mpp=None)


def test_grid_cores_partition_the_slide() -> None:
    grid = TileGrid(width=1000, height=700, downsample=2.0, size=128, overlap=16)
    boxes = grid.boxes()
    cores = grid.cores(boxes[:, 0])
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [1000, 700], size=(2000, 2))
    inside = (
        (points[:, None, 0] >= cores[None, :, 0])
        & (points[:, None, 0] < cores[None, :, 2])
        & (points[:, None, 1] >= cores[None, :, 1])
        & (points[:, None, 1] < cores[None, :, 3])
    )
    assert (inside.sum(axis=1) == 1).all()  # every point owned by exactly one tile
    # each core lies inside its tile, so a tile sees every object it owns
    finite = np.isfinite(cores[:, 2])
    assert (cores[finite, 2] <= (boxes[:, 1] + boxes[:, 3])[finite]).all()
    assert (cores[np.isfinite(cores[:, 0]), 0] >= boxes[np.isfinite(cores[:, 0]), 1]).all()
    with pytest.raises(ConfigError, match="overlap"):
        TileGrid(100, 100, 1.0, size=64, overlap=64)


@pytest.mark.parametrize("path", REAL_SLIDES, ids=lambda p: p.name)
def test_every_real_slide_tiles(path: Path) -> None:
    info = probe_slide(path)
    mpp = info.mpp or 0.5
    reader = open_reader(str(path))
    mask = tissue_mask(reader, mpp)
    grid = TileGrid(info.width, info.height, 0.5 / mpp, 256, 32)
    refs = plan_tiles(1, str(path), grid, mask)
    assert 0 < refs.num_rows <= len(grid)
    batch = next(iter_tile_batches(refs, 4))
    assert batch["image"].shape == (min(4, refs.num_rows), 256, 256, 3)
    assert batch["image"].mean() < 235  # tissue tiles are not blank glass


def test_svs_and_dicom_copies_give_the_same_tissue_tiles() -> None:
    tables = []
    for path in (CMU_SVS, CMU_DICOM):
        info = probe_slide(path)
        grid = TileGrid(info.width, info.height, 0.5 / info.mpp, 256, 32)  # type: ignore[operator]
        tables.append(plan_tiles(1, str(path), grid, tissue_mask(open_reader(str(path)), info.mpp)))
    svs, dicom = (t.column("tile_id").to_pylist() for t in tables)
    assert svs == dicom and len(svs) > 10
    a = next(iter_tile_batches(tables[0], 8))["image"].astype(int)
    b = next(iter_tile_batches(tables[1], 8))["image"].astype(int)
    assert np.abs(a - b).mean() < 6  # same scan, decoded from two containers
