"""The tile read path: decoding into the caller's array, batches and read-task planning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ray import cloudpickle

from pathray.slides.readers import TiffTileReader
from pathray.slides.source import (
    TileDatasource,
    default_read_tasks,
    iter_tile_batches,
    read_tiles,
)
from pathray.slides.synthetic import make_synthetic_slide
from pathray.slides.tiling import TileGrid, plan_tiles
from tests.helpers import CMU_SVS


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slides") / "syn.tif"
    make_synthetic_slide(path, width=1000, height=760, write_ground_truth=False, workers=1)
    return path


def _generic(reader: TiffTileReader, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The region pasted from decoded file tiles (the general path, one pixel wider)."""
    wide = reader.read_level(level, x, y, w + 1, h)
    return np.ascontiguousarray(wide[:, :w])


@pytest.mark.parametrize("which", ["synthetic", "svs"])
def test_aligned_tiles_decode_straight_into_out(which: str, synthetic: Path) -> None:
    reader = TiffTileReader(synthetic if which == "synthetic" else CMU_SVS)
    layout = reader._layout[0]
    assert layout.jpeg is not None  # both are 8-bit RGB JPEG (YCbCr and Aperio RGB)
    tw, th = layout.seg_w, layout.seg_h
    batch = np.zeros((2, th, tw, 3), np.uint8)
    for i, (x, y) in enumerate([(0, 0), (tw, th)]):
        result = reader.read_level(0, x, y, tw, th, out=batch[i])
        assert result is batch[i] or np.shares_memory(result, batch)
        np.testing.assert_array_equal(batch[i], _generic(reader, 0, x, y, tw, th))


def test_out_is_filled_where_the_region_leaves_the_slide(synthetic: Path) -> None:
    reader = TiffTileReader(synthetic)
    width, height = reader.level_dimensions[0]
    out = np.zeros((256, 256, 3), np.uint8)
    reader.read_level(0, width - 100, height - 50, 256, 256, out=out)
    assert (out[50:] == 255).all() and (out[:, 100:] == 255).all()
    np.testing.assert_array_equal(out, reader.read_level(0, width - 100, height - 50, 256, 256))
    # the edge tile is not whole inside the slide, so it takes the general path
    edge_x = (width // 256) * 256
    edge = reader.read_level(0, edge_x, 0, 256, 256)
    assert (edge[:, width - edge_x :] == 255).all()


def test_read_region_out_at_a_downsample(synthetic: Path) -> None:
    reader = TiffTileReader(synthetic)
    out = np.empty((128, 128, 3), np.uint8)
    assert reader.read_region(10, 20, 128, 128, downsample=3.0, out=out) is out
    np.testing.assert_array_equal(out, reader.read_region(10, 20, 128, 128, downsample=3.0))


def test_batches_match_single_reads(synthetic: Path) -> None:
    reader = TiffTileReader(synthetic)
    for grid in (TileGrid(1000, 760, 1.0, 256, 0), TileGrid(1000, 760, 2.0, 128, 16)):
        refs = plan_tiles(7, str(synthetic), grid, mask=None)
        batch = read_tiles(refs)
        assert batch["image"].shape == (refs.num_rows, grid.size, grid.size, 3)
        assert batch["tile_id"].tolist() == refs.column("tile_id").to_pylist()
        for i, (x, y) in enumerate(zip(batch["x"], batch["y"], strict=True)):
            expected = reader.read_region(
                int(x), int(y), grid.size, grid.size, downsample=grid.downsample
            )
            np.testing.assert_array_equal(batch["image"][i], expected)
        stacked = np.concatenate([b["image"] for b in iter_tile_batches(refs, 5)])
        np.testing.assert_array_equal(stacked, batch["image"])


def test_read_tasks_cover_the_rows_with_compact_parts(synthetic: Path) -> None:
    grid = TileGrid(1000, 760, 0.25, 64, 0)  # 16 x 12 tiles of 64 px at 4x
    refs = plan_tiles(1, str(synthetic), grid, mask=None)
    tasks = TileDatasource(refs, block_rows=10).get_read_tasks(parallelism=4)
    assert len(tasks) == 4
    assert sum(t.metadata.num_rows for t in tasks) == refs.num_rows
    # each task carries its own rows, not the whole table (as a pickled slice would)
    whole = len(cloudpickle.dumps(refs))
    assert all(len(cloudpickle.dumps(t)) < whole / 2 for t in tasks)
    ids = [tid for t in tasks for block in t() for tid in block.column("tile_id").to_pylist()]
    assert ids == refs.column("tile_id").to_pylist()


def test_default_read_tasks() -> None:
    # two per read slot while tasks stay small enough, at most one per block
    assert default_read_tasks(4096, 64, num_cpus=1.0, cluster_cpus=2) == 4
    assert default_read_tasks(4096, 64, num_cpus=0.5, cluster_cpus=2) == 8
    assert default_read_tasks(100, 64, num_cpus=1.0, cluster_cpus=16) == 2
    assert default_read_tasks(1_000_000, 64, num_cpus=1.0, cluster_cpus=2) == -(-15625 // 128)
    assert default_read_tasks(0, 64, num_cpus=1.0, cluster_cpus=2) == 1
