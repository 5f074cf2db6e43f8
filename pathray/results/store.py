"""The cold store: a run's results as Lance datasets, staged first, committed once.

Layout under the cold root (a folder, or an ``s3://bucket/prefix``)::

    staging/<run_id>/<digest>.objects.parquet   objects of one batch of tiles
    staging/<run_id>/<digest>.tiles.parquet     that batch's tile rows: written last, so a tile
                                                counts as done only once this file exists
    runs/<run_id>/objects.lance                 committed objects (immutable once written)
    runs/<run_id>/tiles.lance                   committed tile rows

:meth:`ColdStore.finalize` commits a run: each tile's rows are taken from exactly one staged
batch (the first, by name, that lists the tile), so a retried or resumed run commits exactly the
rows of one clean run, and committing twice gives the same datasets. Region queries filter on the
bounding-box columns; ``slide_id`` carries a scalar index.

Example:
    >>> store = ColdStore("/tmp/cold")  # doctest: +SKIP
    >>> store.query_region(run_id, 1, (0, 0, 1024, 1024)).num_rows  # doctest: +SKIP
    42
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.parquet as pq

from pathray.errors import NotFoundError
from pathray.results.location import Location, is_object_store

KINDS = ("tiles", "objects")


def _stem(frag: Location) -> str:
    return frag.name.split(".")[0]


def stage_batch(folder: Location, name: str, tiles: pa.Table, objects: pa.Table | None) -> None:
    """Stage one batch of a run: its objects (if any), then its tile rows, which mark it done.

    Args:
        folder: The run's staging folder (:meth:`ColdStore.staging`).
        name: The batch's name (the same tiles must always get the same name, so a retried
            batch overwrites its own files).
        tiles: One row per tile of the batch (``slide_id``, ``tile_id``, ...).
        objects: The batch's object rows, or None when the pipeline makes no objects.

    Raises:
        StorageError: If the store cannot be written.
    """
    if objects is not None:
        (folder / f"{name}.objects.parquet").write_parquet(objects)
    (folder / f"{name}.tiles.parquet").write_parquet(tiles)


class ColdStore:
    """Run results under a local path (one every Ray node sees) or an ``s3://`` prefix.

    Args:
        root: The cold store's root: a folder, or ``s3://bucket/prefix`` (reached as
            :class:`~pathray.results.location.Location` says).

    Raises:
        ConfigError: If the root is a malformed URI.
    """

    def __init__(self, root: str | Path | Location) -> None:
        self.location = root if isinstance(root, Location) else Location(root)
        #: The root as given: a Path for a local store, the URI for an object store.
        self.root: Path | str = (
            self.location.uri if self.location.remote else Path(self.location.path)
        )

    @classmethod
    def open(cls, root: str | Path) -> ColdStore:
        """Open a cold store, checking first that an object store can be reached.

        Raises:
            ConfigError: If the root is a malformed URI.
            StorageError: If the object store or its bucket cannot be reached.
        """
        store = cls(root)
        if is_object_store(root):
            store.location.check_reachable()
        return store

    def staging(self, run_id: str) -> Location:
        """The run's staging folder."""
        return self.location / "staging" / run_id

    def uri(self, run_id: str, kind: str) -> Location:
        """Location of a run's committed dataset (``kind``: tiles or objects)."""
        return self.location / "runs" / run_id / f"{kind}.lance"

    def _fragments(self, run_id: str, kind: str) -> list[Location]:
        return self.staging(run_id).files(f".{kind}.parquet")

    def stage(self, run_id: str, name: str, tiles: pa.Table, objects: pa.Table | None) -> None:
        """Stage one batch of a run (see :func:`stage_batch`)."""
        stage_batch(self.staging(run_id), name, tiles, objects)

    def done_tiles(self, run_id: str) -> set[tuple[int, int]]:
        """``(slide_id, tile_id)`` of every tile whose results are staged."""
        done: set[tuple[int, int]] = set()
        for frag in self._fragments(run_id, "tiles"):
            table = frag.read_parquet(columns=["slide_id", "tile_id"])
            done.update(
                zip(table["slide_id"].to_pylist(), table["tile_id"].to_pylist(), strict=True)
            )
        return done

    def _owners(self, run_id: str) -> dict[tuple[int, int], str]:
        owners: dict[tuple[int, int], str] = {}
        for frag in self._fragments(run_id, "tiles"):
            table = frag.read_parquet(columns=["slide_id", "tile_id"])
            for key in zip(
                table["slide_id"].to_pylist(), table["tile_id"].to_pylist(), strict=True
            ):
                owners.setdefault(key, _stem(frag))
        return owners

    def _owned_batches(
        self,
        frags: list[Location],
        owners: dict[tuple[int, int], str],
        schema: pa.Schema,
    ) -> Iterator[pa.RecordBatch]:
        for frag in frags:
            table = frag.read_parquet()
            keys = zip(table["slide_id"].to_pylist(), table["tile_id"].to_pylist(), strict=True)
            mine = pa.array([owners.get(key) == _stem(frag) for key in keys], pa.bool_())
            table = table.filter(mine)
            if table.num_rows:
                yield from table.cast(schema).to_batches()

    def finalize(self, run_id: str) -> dict[int, dict[str, int]]:
        """Commit a run's staged results into its Lance datasets.

        Args:
            run_id: The run.

        Returns:
            Row counts per slide: ``{slide_id: {"tiles": n, "objects": m}}``.

        Raises:
            StorageError: If the store cannot be read or written; what was committed before
                stays as it was, and finalizing again later commits the same rows.
        """
        owners = self._owners(run_id)
        counts: dict[int, dict[str, int]] = {}
        for kind in KINDS:
            stems = set(owners.values())
            frags = [f for f in self._fragments(run_id, kind) if _stem(f) in stems]
            if not frags:
                continue
            schema = pa.unify_schemas([f.read_schema() for f in frags])
            reader = pa.RecordBatchReader.from_batches(
                schema, self._owned_batches(frags, owners, schema)
            )
            uri = self.uri(run_id, kind)
            uri.parent.makedirs()
            try:
                dataset = lance.write_dataset(
                    reader,
                    uri.uri,
                    schema=schema,
                    mode="overwrite",
                    storage_options=uri.storage_options,
                )
                if dataset.count_rows():
                    dataset.create_scalar_index("slide_id", index_type="BTREE", replace=True)
                per_slide = (
                    dataset.to_table(columns=["slide_id"])
                    .group_by("slide_id")
                    .aggregate([("slide_id", "count")])
                )
            except (OSError, ValueError) as exc:  # Lance reports I/O failures as ValueError
                raise uri.error("commit", exc) from exc
            for slide, n in zip(
                per_slide["slide_id"].to_pylist(),
                per_slide["slide_id_count"].to_pylist(),
                strict=True,
            ):
                counts.setdefault(slide, {"tiles": 0, "objects": 0})[kind] = n
        return counts

    def discard_staging(self, run_id: str) -> None:
        """Delete a committed run's staging folder."""
        self.staging(run_id).remove_tree()

    def dataset(self, run_id: str, kind: str = "objects") -> lance.LanceDataset:
        """Open a run's committed dataset.

        Raises:
            NotFoundError: If the run has no committed results of that kind.
        """
        uri = self.uri(run_id, kind)
        if not (uri / "_versions").exists():
            raise NotFoundError(f"Run {run_id!r} has no committed {kind} results.")
        try:
            return lance.dataset(uri.uri, storage_options=uri.storage_options)
        except (OSError, ValueError) as exc:
            raise uri.error("open", exc) from exc

    def read(
        self,
        run_id: str,
        kind: str = "objects",
        slide_id: int | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Read a run's results, optionally of one slide."""
        dataset = self.dataset(run_id, kind)
        where = None if slide_id is None else f"slide_id = {int(slide_id)}"
        return dataset.to_table(columns=columns, filter=where)

    def query_region(
        self,
        run_id: str,
        slide_id: int,
        bbox: tuple[float, float, float, float],
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Objects of a slide whose bounding box meets a level-0 box ``(x0, y0, x1, y1)``."""
        x0, y0, x1, y1 = bbox
        where = (
            f"slide_id = {int(slide_id)} AND bbox_x1 >= {x0} AND bbox_x0 <= {x1} "
            f"AND bbox_y1 >= {y0} AND bbox_y0 <= {y1}"
        )
        return self.dataset(run_id, "objects").to_table(columns=columns, filter=where)

    def export_parquet(self, run_id: str, out_dir: str | Path) -> list[Path]:
        """Export a run's committed results to Parquet files (one per kind).

        Returns:
            The files written.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for kind in KINDS:
            if not (self.uri(run_id, kind) / "_versions").exists():
                continue
            dataset = self.dataset(run_id, kind)
            path = out / f"{run_id}.{kind}.parquet"
            with pq.ParquetWriter(path, dataset.schema, compression="zstd") as writer:
                for batch in dataset.to_batches():
                    writer.write_batch(batch)
            written.append(path)
        return written


__all__ = ["KINDS", "ColdStore", "stage_batch"]
