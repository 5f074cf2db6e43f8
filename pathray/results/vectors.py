"""Vector indexes in the cold store: one LanceDB table per (image set, embedding version).

Layout under the cold root::

    search/<key>.lance    rows: vector, slide_id, run_id, tile_id, object_id, x, y, width,
                          height, label (object_id -1 for a tile)

A table grows one run at a time (:meth:`VectorIndex.add_run`: a run already in the table adds
nothing, so indexing is idempotent). Below :data:`ANN_MIN_ROWS` rows, queries scan every vector
(exact, and fast at that size); from there on the table carries an approximate index, kept up to
date for later additions by ``optimize``.

The approximate index is IVF_PQ, re-ranked on the raw vectors (:func:`ann_config`), measured by
``benchmarks/vector_search.py`` on the 2-core development machine under a load of about 20: on
1,000,000 clustered vectors of 256 values it builds in 185 s, finds the exact 10 nearest (recall@10
1.00), answers in 12 ms p50 / 46 ms p99 (a NumPy scan: 442 / 786 ms) and takes 34 MiB on disk.
IVF_HNSW_SQ (:data:`ANN_INDEX` switches to it) answers faster but builds slower: on 100,000
vectors side by side, 462 s to build (IVF_PQ: 250 s), 4.6 ms p50 (17 ms), recall 0.99 (1.00),
44 MiB on disk (3.6); the build runs in ``pathray search index`` on the same few cores, and
IVF_PQ's answers already meet the targets, so IVF_PQ it is.

Vectors are compared by cosine distance (``1 - cos``), so vectors of any scale can be searched;
the embedding units write unit-norm vectors anyway.

Example:
    >>> index = VectorIndex("/tmp/cold", "set-a--tile_embedder-1-abc")  # doctest: +SKIP
    >>> index.add_run("r1", rows)  # doctest: +SKIP
    120
    >>> index.search(vector, k=5, where="slide_id != 3").num_rows  # doctest: +SKIP
    5
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from pathray.errors import ConfigError, NotFoundError

#: Rows from which a table gets an approximate index (an exact scan answers in a few ms below).
ANN_MIN_ROWS = 50_000
#: The approximate index and its query settings (see benchmarks/vector_search.py).
ANN_INDEX = "IVF_PQ"
NPROBES = 32
#: IVF_PQ: candidates re-ranked on the raw vectors, as a multiple of k.
REFINE = 20
METRIC: Literal["l2", "cosine", "dot"] = "cosine"
#: The place columns every row carries besides the vector.
PLACE_TYPES: dict[str, pa.DataType] = {
    "slide_id": pa.int64(),
    "run_id": pa.string(),
    "tile_id": pa.int64(),
    "object_id": pa.int64(),
    "x": pa.int64(),
    "y": pa.int64(),
    "width": pa.int64(),
    "height": pa.int64(),
    "label": pa.string(),
}
_KEY = re.compile(r"^[A-Za-z0-9._-]+$")


def index_schema(dim: int, metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """Schema of an index table of ``dim``-long vectors."""
    fields = [pa.field("vector", pa.list_(pa.float32(), dim))]
    fields += [pa.field(name, kind) for name, kind in PLACE_TYPES.items()]
    return pa.schema(fields, metadata=dict(metadata or {}))


class VectorIndex:
    """One LanceDB table of vectors and the places they describe.

    Args:
        root: The cold store's root folder.
        key: The table's name (letters, digits, ``.``, ``_`` and ``-``).

    Raises:
        ConfigError: If the key holds other characters.
    """

    def __init__(self, root: str | Path, key: str) -> None:
        if not _KEY.match(key):
            raise ConfigError(
                f"An index key must hold only letters, digits, '.', '_' and '-'. Got {key!r} "
                "instead."
            )
        self.folder = Path(root) / "search"
        self.key = key
        self._db: Any = None

    @property
    def db(self) -> Any:
        """The LanceDB connection (opened on first use)."""
        if self._db is None:
            import lancedb  # here: its runtime must not be running when Ray forks workers

            self.folder.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(str(self.folder))
        return self._db

    def exists(self) -> bool:
        """Whether the table was created."""
        return (self.folder / f"{self.key}.lance").exists()

    def table(self) -> Any:
        """The LanceDB table.

        Raises:
            NotFoundError: If the index was never built.
        """
        if not self.exists():
            raise NotFoundError(
                f"No search index {self.key!r}. Build it with `pathray search index`."
            )
        return self.db.open_table(self.key)

    @property
    def dim(self) -> int:
        """Length of the table's vectors."""
        return int(self.table().schema.field("vector").type.list_size)

    @property
    def metadata(self) -> dict[str, str]:
        """The key-value metadata the table was created with."""
        raw = self.table().schema.metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items()}

    def count(self) -> int:
        """Rows in the table (0 before it exists)."""
        return int(self.table().count_rows()) if self.exists() else 0

    def runs(self) -> set[str]:
        """Runs whose rows the table holds."""
        if not self.exists():
            return set()
        column = self.table().to_lance().to_table(columns=["run_id"])["run_id"]
        return set(pa.compute.unique(column).to_pylist())

    def has_ann(self) -> bool:
        """Whether the vector column carries an approximate index."""
        return self.exists() and any(
            "vector" in index.columns for index in self.table().list_indices()
        )

    def add_run(
        self, run_id: str, rows: pa.Table, metadata: Mapping[str, str] | None = None
    ) -> int:
        """Append one run's vectors, unless the table holds that run already.

        Args:
            run_id: The run the rows come from.
            rows: A ``vector`` column of fixed-size float lists and the place columns
                (``run_id`` is filled in, ``object_id`` -1 and ``label`` null where absent).
            metadata: Stored with the table when this call creates it.

        Returns:
            The rows added (0 for a run already there).

        Raises:
            ConfigError: If the vectors' length differs from the table's.
        """
        if run_id in self.runs():
            return 0
        rows = _conform(run_id, rows)
        dim = rows.schema.field("vector").type.list_size
        if not self.exists():
            schema = index_schema(dim, metadata)
            self.db.create_table(self.key, data=rows.cast(schema), schema=schema)
        else:
            if dim != self.dim:
                raise ConfigError(
                    f"Vectors of index {self.key!r} must have length {self.dim}. Got {dim} instead."
                )
            table = self.table()
            table.add(rows.cast(table.schema))
            if self.has_ann():
                table.optimize()  # folds the new rows into the approximate index
        self.ensure_ann()
        return rows.num_rows

    def ensure_ann(self, min_rows: int = ANN_MIN_ROWS) -> bool:
        """Give the table its approximate index once it holds ``min_rows`` rows.

        Returns:
            Whether the table now has one.
        """
        if self.has_ann():
            return True
        if self.count() < min_rows:
            return False
        self.table().create_index("vector", config=ann_config(self.count(), self.dim))
        return True

    def check_vector(self, vector: Any) -> np.ndarray:
        """A query vector as float32, checked against the table's length.

        Raises:
            ConfigError: If it is not one finite vector of the table's length.
        """
        values = np.asarray(vector, dtype=np.float32)
        if values.ndim != 1 or len(values) != self.dim:
            raise ConfigError(
                f"A query vector for index {self.key!r} must have length {self.dim}. "
                f"Got shape {values.shape} instead."
            )
        if not np.isfinite(values).all():
            raise ConfigError("A query vector must hold finite numbers. Got NaN or inf instead.")
        return values

    def search(
        self, vector: Any, k: int = 10, where: str | None = None, nprobes: int = NPROBES
    ) -> pa.Table:
        """The ``k`` rows nearest a vector, nearest first, with their ``_distance``.

        Args:
            vector: The query vector.
            k: How many rows.
            where: A SQL filter on the place columns, applied before the search.
            nprobes: Partitions an approximate index searches.

        Raises:
            NotFoundError: If the index was never built.
            ConfigError: If the vector's length is wrong or ``k`` is not positive.
        """
        if k < 1:
            raise ConfigError(f"k must be a positive integer. Got {k} instead.")
        values = self.check_vector(vector)
        query = self.table().search(values, vector_column_name="vector").distance_type(METRIC)
        if where:
            query = query.where(where, prefilter=True)
        # below ANN_MIN_ROWS an exact scan is fast and exact; above it the index answers
        if not self.has_ann():
            query = query.bypass_vector_index()
        elif ANN_INDEX == "IVF_PQ":
            query = query.nprobes(nprobes).refine_factor(REFINE)
        else:
            query = query.nprobes(nprobes)
        return _exact_distances(query.limit(k).to_arrow(), values)

    def rows(self, where: str, columns: list[str] | None = None) -> pa.Table:
        """Rows matching a SQL filter (no vector search)."""
        return self.table().to_lance().to_table(columns=columns, filter=where)

    def drop(self) -> None:
        """Delete the table (nothing happens if it does not exist)."""
        if self.exists():
            self.db.drop_table(self.key)


def ann_config(rows: int, dim: int, kind: str = ANN_INDEX) -> Any:
    """The LanceDB config of the approximate index of ``rows`` vectors of length ``dim``.

    IVF_PQ: sqrt(rows) / 4 partitions (250 for a million: k-means training stays within minutes
    on two cores, and 32 probes still reach the true neighbours), product quantisation of about
    8 values per sub-vector (the largest divisor of ``dim`` not above ``dim / 8``), k-means on
    64 samples per partition for 20 iterations. IVF_HNSW_SQ: one HNSW graph per 100,000 rows
    over 8-bit scalar-quantised vectors.
    """
    from lancedb.index import HnswSq, IvfPq

    if kind == "IVF_PQ":
        sub = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
        return IvfPq(
            distance_type=METRIC,
            num_partitions=max(1, math.isqrt(rows) // 4),
            num_sub_vectors=sub,
            max_iterations=20,
            sample_rate=64,
        )
    return HnswSq(distance_type=METRIC, num_partitions=max(1, rows // 100_000))


def _exact_distances(found: pa.Table, query: np.ndarray) -> pa.Table:
    """The rows with exact cosine distances, nearest first.

    An approximate index reports its own, quantised distances (an HNSW graph the squared
    Euclidean distance of normalised vectors); recomputing them on the k rows costs nothing and
    gives every answer the same scale.
    """
    if not found.num_rows:
        return found
    vectors = found["vector"].combine_chunks().flatten().to_numpy().reshape(found.num_rows, -1)
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
    cosine = np.divide(vectors @ query, norms, out=np.zeros(len(vectors)), where=norms > 0)
    distance = pa.array((1.0 - cosine).astype(np.float32))
    found = found.set_column(found.schema.get_field_index("_distance"), "_distance", distance)
    return found.take(np.argsort(distance.to_numpy(), kind="stable"))


def _conform(run_id: str, rows: pa.Table) -> pa.Table:
    """The rows with every place column (defaults filled in), in the index's order."""
    if "vector" not in rows.column_names or not pa.types.is_fixed_size_list(
        rows.schema.field("vector").type
    ):
        raise ConfigError("Index rows must have a 'vector' column of fixed-size float lists.")
    n = rows.num_rows
    defaults = {
        "run_id": pa.array([run_id] * n, pa.string()),
        "object_id": pa.array(np.full(n, -1, np.int64)),
        "label": pa.nulls(n, pa.string()),
    }
    columns = {"vector": rows["vector"].cast(pa.list_(pa.float32(), rows["vector"].type.list_size))}
    for name, kind in PLACE_TYPES.items():
        if name in rows.column_names and name != "run_id":
            columns[name] = rows[name].cast(kind)
        elif name in defaults:
            columns[name] = defaults[name]
        else:
            raise ConfigError(f"Index rows must have a {name!r} column. It is missing.")
    return pa.table(columns)


__all__ = [
    "ANN_INDEX",
    "ANN_MIN_ROWS",
    "METRIC",
    "PLACE_TYPES",
    "VectorIndex",
    "ann_config",
    "index_schema",
]
