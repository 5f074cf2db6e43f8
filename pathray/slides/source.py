"""A Ray Data source of tiles: tile references planned on the driver, pixels read in workers.

The driver holds only the reference table (:func:`~pathray.slides.tiling.plan_tiles`); each
read task takes a slice of it, opens the slides through the per-process reader cache
(:func:`~pathray.slides.readers.open_reader`) and yields blocks of ``block_rows`` tiles. Ray Data
streams the blocks through the following stages, so memory stays bounded by the blocks in
flight, not by the slide size. :func:`tile_dataset` builds that read stage with a sensible
number of read tasks (see ``benchmarks/tile_streaming.py`` for its rate against the peers).

Example:
    >>> ds = tile_dataset(refs, block_rows=64)  # doctest: +SKIP
    >>> next(ds.iter_batches(batch_size=4))["image"].shape  # doctest: +SKIP
    (4, 256, 256, 3)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pathray.slides.readers import SlideReader, open_reader, pixel_buffer
from pathray.slides.tiling import TILE_REF_SCHEMA

#: Read tasks hold at most this many tiles when there are more than two tasks' worth per read
#: slot (a few seconds of decoding: a task boundary costs ~0.1-0.2 s, see default_read_tasks).
MAX_TILES_PER_TASK = 8192

#: Reference columns copied onto every tile row (everything but the path).
_KEY_COLUMNS = [name for name in TILE_REF_SCHEMA.names if name != "path"]


def read_tiles(refs: pa.Table, reader: str | None = None) -> dict[str, np.ndarray]:
    """Read the pixels of a slice of tile references.

    Each tile is decoded straight into its row of the batch array (no per-tile copies when
    the tile is one aligned file tile; see :class:`~pathray.slides.readers.TiffTileReader`).

    Args:
        refs: Rows of :data:`~pathray.slides.tiling.TILE_REF_SCHEMA`, all of one tile size.
        reader: Force a reader by name (see :func:`~pathray.slides.readers.open_reader`).

    Returns:
        A column batch: the reference columns plus ``image`` ``(n, size, size, 3)`` uint8.
    """
    columns = {name: refs.column(name).to_numpy(zero_copy_only=False) for name in _KEY_COLUMNS}
    n = refs.num_rows
    size = int(columns["size"][0]) if n else 0
    images = pixel_buffer((n, size, size, 3))
    xs, ys = columns["x"].tolist(), columns["y"].tolist()
    downsamples = columns["downsample"].tolist()
    slides: dict[str, SlideReader] = {}
    for i, path in enumerate(refs.column("path").to_pylist()):
        slide = slides.get(path)
        if slide is None:
            slide = slides[path] = open_reader(path, reader)
        slide.read_region(xs[i], ys[i], size, size, downsample=downsamples[i], out=images[i])
    columns["image"] = images
    return columns


def iter_tile_batches(
    refs: pa.Table, batch_rows: int = 64, reader: str | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Read tiles in-process, batch by batch (the same code the Ray workers run)."""
    for start in range(0, refs.num_rows, batch_rows):
        yield read_tiles(refs.slice(start, batch_rows), reader)


def _to_block(batch: dict[str, np.ndarray]) -> pa.Table:
    from ray.data.extensions import ArrowTensorArray

    arrays: dict[str, Any] = {}
    for name, values in batch.items():
        arrays[name] = ArrowTensorArray.from_numpy(values) if values.ndim > 1 else values
    return pa.table(arrays)


class TileDatasource(Datasource):
    """Ray Data source streaming the tiles of a reference table.

    Args:
        refs: Tile references (:func:`~pathray.slides.tiling.plan_tiles`, concatenated).
        block_rows: Tiles per block (and per read call).
        reader: Force a reader by name.
    """

    def __init__(self, refs: pa.Table, block_rows: int = 64, reader: str | None = None) -> None:
        self._refs = refs.combine_chunks() if refs.num_rows else refs
        self._block_rows = block_rows
        self._reader = reader

    def estimate_inmemory_data_size(self) -> int | None:
        """Bytes of pixels the source will produce."""
        if not self._refs.num_rows:
            return 0
        size = int(self._refs.column("size")[0].as_py())
        return self._refs.num_rows * size * size * 3

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        """Split the references into at most ``parallelism`` read tasks of whole blocks.

        Each task carries a compact copy of its rows (a pickled slice of an Arrow table would
        carry the whole table's buffers).
        """
        n = self._refs.num_rows
        if n == 0:
            return []
        blocks = -(-n // self._block_rows)
        tasks_count = max(1, min(parallelism, blocks))
        per_task = -(-blocks // tasks_count) * self._block_rows
        size = int(self._refs.column("size")[0].as_py())
        tasks = []
        for start in range(0, n, per_task):
            part = self._refs.take(np.arange(start, min(start + per_task, n)))
            meta = BlockMetadata(
                num_rows=part.num_rows,
                size_bytes=part.num_rows * size * size * 3,
                input_files=None,
                exec_stats=None,
            )
            tasks.append(
                ReadTask(
                    self._make_read_fn(part),
                    meta,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks

    def _make_read_fn(self, part: pa.Table) -> Any:
        block_rows, reader = self._block_rows, self._reader

        def read_fn() -> Iterator[pa.Table]:
            for batch in iter_tile_batches(part, block_rows, reader):
                yield _to_block(batch)

        return read_fn

    def get_name(self) -> str:
        """Name shown in Ray Data's progress and stats."""
        return "Tiles"


def default_read_tasks(rows: int, block_rows: int, num_cpus: float, cluster_cpus: float) -> int:
    """How many read tasks a tile stream of ``rows`` tiles is cut into.

    Two tasks per read slot (for balance), more only when tasks would exceed
    :data:`MAX_TILES_PER_TASK` tiles (so a retried task redoes little). Few long tasks are
    cheaper than many short ones: Ray Data notices a finished task only at its next scheduling
    step (it waits up to 0.1 s for running tasks), so each task boundary leaves a slot idle for
    0.1-0.2 s, the decoding of several hundred tiles. Blocks still stream out of a task as they
    are read.

    Args:
        rows: Tiles to read.
        block_rows: Tiles per block.
        num_cpus: CPUs reserved by each read task.
        cluster_cpus: CPUs of the cluster.

    Returns:
        The number of read tasks (at least 1, at most one per block).
    """
    blocks = max(1, -(-rows // block_rows))
    slots = max(1, int(cluster_cpus / num_cpus)) if num_cpus > 0 else max(1, int(cluster_cpus))
    per_task = max(1, MAX_TILES_PER_TASK // block_rows)
    return min(blocks, max(2 * slots, -(-blocks // per_task)))


def tile_dataset(
    refs: pa.Table,
    *,
    block_rows: int = 64,
    num_cpus: float = 1.0,
    tasks: int | None = None,
    reader: str | None = None,
) -> ray.data.Dataset:
    """The read stage of a run: a Ray Data dataset streaming the tiles of ``refs``.

    The number of read tasks is set here rather than left to Ray Data, which asks for about 200
    tasks (at least 200 blocks) whatever the data: a tile source with fewer blocks would then
    have each block split (``SplitBlocks``), which also stops the read from fusing with the
    stage after it, and each extra task costs a launch.

    Args:
        refs: Tile references (:func:`~pathray.slides.tiling.plan_tiles`, concatenated).
        block_rows: Tiles per block.
        num_cpus: CPUs reserved by each read task.
        tasks: Read tasks (default: :func:`default_read_tasks` for the connected cluster).
        reader: Force a reader by name.

    Returns:
        A dataset of tile rows: the reference columns (bar ``path``) plus ``image``.

    Example:
        >>> ds = tile_dataset(refs, block_rows=32)  # doctest: +SKIP
        >>> ds.map_batches(model, batch_size=32)  # doctest: +SKIP
    """
    if tasks is None:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        tasks = default_read_tasks(refs.num_rows, block_rows, num_cpus, cpus)
    ds = ray.data.read_datasource(
        TileDatasource(refs, block_rows, reader),
        override_num_blocks=max(1, tasks),
        num_cpus=num_cpus,
    )
    if refs.num_rows:
        # Ray Data merges a read task's blocks up to ``target_max_block_size`` (128 MiB) by
        # copying them together; a target just under one block keeps the blocks as read.
        # The context is this dataset's own copy (``read_datasource`` copies the current one).
        size = int(refs.column("size")[0].as_py())
        ds.context.target_max_block_size = int(0.9 * block_rows * size * size * 3)
    return ds
