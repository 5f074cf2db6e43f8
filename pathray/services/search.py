"""Similarity search: "where else, in this image set, does tissue look like this?".

A run whose pipeline has an *embedding* node (a unit of role ``embedding``, e.g. ``tile_embedder``)
stores one vector per tile in its tiles dataset. :class:`SearchService` gathers those vectors into
one LanceDB table per (image set, embedding version) under ``<cold>/search/``
(:class:`~pathray.results.vectors.VectorIndex`), where an *embedding version* is the unit, its
version, its config hash and its model version: vectors of two versions live in different spaces
and never share a table. Building is incremental (a run already indexed adds nothing) and the
catalog is only read, so the index can be rebuilt from the runs at any time.

Queries go by example: a point of a slide (the embedded tile that holds it) or a vector, with
filters on slide, run and label. The query's own place (in any run) is left out of the answer.

Example:
    >>> service = SearchService(catalog, cold_root)  # doctest: +SKIP
    >>> service.build("demo")  # doctest: +SKIP
    [IndexReport(key='demo--tile_embedder-1-3f2a...', runs_added=1, rows_added=412, ...)]
    >>> service.like_place("demo", "OS-1-detail", 300, 500, k=5).hits[0].slide  # doctest: +SKIP
    'OS-2-ndpi.ome.tif'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pathray.catalog import Catalog
from pathray.errors import ConfigError, NotFoundError
from pathray.results.store import ColdStore
from pathray.results.vectors import VectorIndex
from pathray.units.registry import get_unit

#: The unit role whose output is a vector per tile.
EMBEDDING_ROLE = "embedding"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class EmbeddingVersion:
    """The unit version (and model version) that made a set of vectors.

    Attributes:
        unit: Unit name.
        version: Unit version.
        config_hash: Hash of the unit's validated config.
        model_version_id: The model version the unit loaded, or None.
        config: The unit's config as JSON (to embed an uploaded image the same way).
    """

    unit: str
    version: str
    config_hash: str
    model_version_id: int | None
    config: str = field(default="{}", compare=False)

    def key(self, image_set: str) -> str:
        """Name of the index table of this version's vectors of an image set."""
        model = f"-m{self.model_version_id}" if self.model_version_id is not None else ""
        name = f"{image_set}--{self.unit}-{self.version}-{self.config_hash[:12]}{model}"
        return _SAFE.sub("_", name)


@dataclass(frozen=True)
class IndexReport:
    """What one :meth:`SearchService.build` did to one index."""

    key: str
    unit: str
    runs_added: list[str]
    rows_added: int
    rows: int
    approximate: bool


@dataclass(frozen=True)
class Filters:
    """Restrictions on the places a query may return (empty: no restriction).

    Attributes:
        slides: Slide ids or names.
        runs: Run ids.
        labels: Labels.
    """

    slides: Sequence[int | str] = ()
    runs: Sequence[str] = ()
    labels: Sequence[str] = ()


@dataclass(frozen=True)
class Hit:
    """One similar place."""

    slide_id: int
    slide: str
    run_id: str
    tile_id: int
    object_id: int
    x: int
    y: int
    width: int
    height: int
    label: str | None
    distance: float

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    """The answer to a query: its index, the query's place (if any) and the hits."""

    index: str
    hits: list[Hit]
    query: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {"index": self.index, "query": self.query, "hits": [h.to_dict() for h in self.hits]}


def embedding_column(unit: str) -> str:
    """The output column of an embedding unit that holds its vectors.

    Raises:
        ConfigError: If the unit declares no fixed-length float vector output.
    """
    for column in get_unit(unit).outputs:
        fixed = len(column.shape) == 1 and column.shape[0] is not None
        if fixed and column.granularity == "tile" and np.dtype(column.dtype).kind == "f":
            return column.name
    raise ConfigError(
        f"An embedding unit must output a fixed-length float vector per tile. Unit {unit!r} "
        "declares none."
    )


class SearchService:
    """Vector indexes of image sets, built from their runs, and queries by example.

    Args:
        catalog: The hot catalog (read only).
        cold_root: The cold store's root folder.
    """

    def __init__(self, catalog: Catalog, cold_root: str | Path) -> None:
        self.catalog = catalog
        self.store = ColdStore(cold_root)

    # -- building --------------------------------------------------------------------------

    def embedding_runs(self, image_set: str) -> dict[EmbeddingVersion, list[str]]:
        """The image set's succeeded runs that embedded tiles, by embedding version.

        Raises:
            NotFoundError: If the image set does not exist.
        """
        found: dict[EmbeddingVersion, list[str]] = {}
        for run in self.catalog.list_runs(image_set=image_set, status="succeeded"):
            nodes, _ = self.catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
            for node in nodes.values():
                if node.role != EMBEDDING_ROLE:
                    continue
                version = EmbeddingVersion(
                    node.unit,
                    node.version,
                    node.config_hash,
                    node.model_version_id,
                    json.dumps(node.config, sort_keys=True),
                )
                found.setdefault(version, []).append(run.id)
        return found

    def build(self, image_set: str) -> list[IndexReport]:
        """Create or update the indexes of an image set: one per embedding version.

        Runs already indexed are skipped, so building twice adds nothing.

        Raises:
            NotFoundError: If the image set does not exist or none of its runs embedded tiles.
        """
        versions = self.embedding_runs(image_set)
        if not versions:
            raise NotFoundError(
                f"Image set {image_set!r} has no succeeded run with an embedding unit. Run a "
                "pipeline with one (e.g. tissue_mask -> tile_embedder) first."
            )
        reports = []
        for version, run_ids in versions.items():
            index = VectorIndex(self.store.root, version.key(image_set))
            column = embedding_column(version.unit)
            added, rows = [], 0
            for run_id in run_ids:
                if run_id in index.runs():
                    continue
                n = index.add_run(
                    run_id, self._run_rows(run_id, column), _meta(image_set, version, column)
                )
                added.append(run_id)
                rows += n
            reports.append(
                IndexReport(index.key, version.unit, added, rows, index.count(), index.has_ann())
            )
        return reports

    def _run_rows(self, run_id: str, column: str) -> pa.Table:
        """A run's embedded tiles as index rows (tiles without a vector left out)."""
        dataset = self.store.dataset(run_id, "tiles")
        names = ["slide_id", "tile_id", "x", "y", "width", "height", column]
        if "label" in dataset.schema.names:
            names.append("label")
        table = dataset.to_table(columns=names).rename_columns(
            [("vector" if n == column else n) for n in names]
        )
        flat = table["vector"].combine_chunks().flatten().to_numpy()
        norms = np.linalg.norm(flat.reshape(table.num_rows, -1), axis=1) if table.num_rows else []
        return table.filter(pa.array(np.asarray(norms) > 0))

    # -- querying --------------------------------------------------------------------------

    def indexes(self, image_set: str) -> list[VectorIndex]:
        """The built indexes of an image set, newest embedding version last."""
        return [
            index
            for version in self.embedding_runs(image_set)
            if (index := VectorIndex(self.store.root, version.key(image_set))).exists()
        ]

    def index(self, image_set: str, unit: str | None = None) -> VectorIndex:
        """The index a query of an image set uses: the newest one (of ``unit``, if given).

        Raises:
            NotFoundError: If the set has no built index (of that unit).
        """
        found = [
            i for i in self.indexes(image_set) if unit is None or i.metadata.get("unit") == unit
        ]
        if not found:
            of = f" of unit {unit!r}" if unit else ""
            raise NotFoundError(
                f"Image set {image_set!r} has no search index{of}. Build it with "
                f"`pathray search index --set {image_set}`."
            )
        return found[-1]

    def like_vector(
        self,
        image_set: str,
        vector: Any,
        k: int = 10,
        filters: Filters | None = None,
        unit: str | None = None,
    ) -> SearchResult:
        """The ``k`` places of an image set nearest a vector.

        Raises:
            NotFoundError: If the set has no index, or a filter names an unknown slide.
            ConfigError: If the vector's length is wrong or ``k`` is not positive.
        """
        index = self.index(image_set, unit)
        found = index.search(vector, k, self._where(filters))
        return SearchResult(index.key, self._hits(found, k))

    def embed_image(self, image_set: str, image: np.ndarray, unit: str | None = None) -> np.ndarray:
        """An image's vector, made by the unit and config of the index a query would use.

        A unit that reads a tissue mask gets one from the registered ``tissue_mask`` unit.
        No model artifact is handed over: units that need one (other than a shipped default)
        cannot embed uploads.

        Args:
            image_set: The image set whose index the vector is for.
            image: ``(H, W, 3)`` uint8 RGB, at the embedding unit's resolution.
            unit: The embedding unit whose index to use (None: the newest).

        Raises:
            NotFoundError: If the set has no index.
        """
        index = self.index(image_set, unit)
        meta = index.metadata
        embedder = get_unit(meta["unit"])(json.loads(meta.get("config") or "{}"))
        batch: dict[str, np.ndarray] = {"image": np.asarray(image, np.uint8)[None, ..., :3]}
        if any(c.name == "tissue" for c in embedder.inputs):
            batch["tissue"] = get_unit("tissue_mask")()(batch)["tissue"]
        return np.asarray(embedder(batch)[meta["column"]][0], np.float32)

    def like_place(
        self,
        image_set: str,
        slide: int | str,
        x: float,
        y: float,
        k: int = 10,
        filters: Filters | None = None,
        unit: str | None = None,
    ) -> SearchResult:
        """The ``k`` places of an image set most like the embedded tile at a slide's point.

        Args:
            image_set: The image set to search.
            slide: The query's slide (id or name).
            x: Level-0 x of the point.
            y: Level-0 y of the point.
            k: How many places.
            filters: Restrictions on the places returned.
            unit: The embedding unit whose index to use (None: the newest).

        Raises:
            NotFoundError: If the set has no index, the slide does not exist, or no embedded
                tile of the slide holds the point.
            ConfigError: If ``k`` is not positive.
        """
        if k < 1:
            raise ConfigError(f"k must be a positive integer. Got {k} instead.")
        record = self.catalog.get_slide(slide_ref(slide))
        index = self.index(image_set, unit)
        tile = self._tile_at(index, record.id, record.name, float(x), float(y))
        where = self._where(filters)
        # A place appears once per run that indexed it, the query's own too: ask for enough
        # rows to keep k distinct places after dropping repeats.
        found = index.search(tile["vector"], (k + 1) * max(1, len(index.runs())), where)
        hits = self._hits(found, k, skip=(record.id, int(tile["x"]), int(tile["y"])))
        query = {
            "slide_id": record.id,
            "slide": record.name,
            "x": x,
            "y": y,
            "tile": {n: tile[n] for n in ("run_id", "tile_id", "x", "y", "width", "height")},
        }
        return SearchResult(index.key, hits, query)

    def _tile_at(
        self, index: VectorIndex, slide_id: int, name: str, x: float, y: float
    ) -> dict[str, Any]:
        """The embedded tile of a slide that holds a point (the one centred nearest it)."""
        px, py = math.floor(x), math.floor(y)  # the pixel holding the point; columns are ints
        rows = index.rows(
            f"slide_id = {slide_id} AND x <= {px} AND x + width > {px} "
            f"AND y <= {py} AND y + height > {py}"
        )
        if not rows.num_rows:
            if not index.rows(f"slide_id = {slide_id}", columns=["slide_id"]).num_rows:
                raise NotFoundError(
                    f"Slide {name!r} has no embedded tiles in index {index.key!r}. "
                    "Run an embedding pipeline on it and rebuild the index."
                )
            raise NotFoundError(
                f"The point ({x:g}, {y:g}) of slide {name!r} must lie in an embedded tile. It "
                "lies outside all of them (glass, or past the slide's edge)."
            )
        centre_x = pc.add(rows["x"], pc.divide(rows["width"], 2)).to_numpy()
        centre_y = pc.add(rows["y"], pc.divide(rows["height"], 2)).to_numpy()
        best = int(np.argmin(np.hypot(centre_x - x, centre_y - y)))
        row = rows.slice(best, 1).to_pylist()[0]
        row["vector"] = np.asarray(row["vector"], np.float32)
        return row

    def _where(self, filters: Filters | None) -> str | None:
        """The SQL filter of a query's restrictions."""
        if filters is None:
            return None
        clauses = []
        if filters.slides:
            ids = sorted({self.catalog.get_slide(slide_ref(s)).id for s in filters.slides})
            clauses.append(f"slide_id IN ({', '.join(str(i) for i in ids)})")
        if filters.runs:
            clauses.append(f"run_id IN ({_quoted(filters.runs)})")
        if filters.labels:
            clauses.append(f"label IN ({_quoted(filters.labels)})")
        return " AND ".join(clauses) or None

    def _hits(self, found: pa.Table, k: int, skip: tuple[int, int, int] | None = None) -> list[Hit]:
        """Distinct places, nearest first (a place indexed by several runs counts once)."""
        names: dict[int, str] = {}
        hits: list[Hit] = []
        seen = {skip} if skip else set()
        for row in found.drop_columns(["vector"]).to_pylist():
            place = (row["slide_id"], row["x"], row["y"])
            if place in seen:
                continue
            seen.add(place)
            if row["slide_id"] not in names:
                names[row["slide_id"]] = self.catalog.get_slide(int(row["slide_id"])).name
            hits.append(
                Hit(
                    slide_id=row["slide_id"],
                    slide=names[row["slide_id"]],
                    run_id=row["run_id"],
                    tile_id=row["tile_id"],
                    object_id=row["object_id"],
                    x=row["x"],
                    y=row["y"],
                    width=row["width"],
                    height=row["height"],
                    label=row["label"],
                    distance=round(float(row["_distance"]), 6),
                )
            )
            if len(hits) == k:
                break
        return hits


def _meta(image_set: str, version: EmbeddingVersion, column: str) -> dict[str, str]:
    """Metadata an index table is created with (what its vectors are)."""
    return {
        "image_set": image_set,
        "unit": version.unit,
        "unit_version": version.version,
        "config_hash": version.config_hash,
        "config": version.config,
        "model_version_id": ""
        if version.model_version_id is None
        else str(version.model_version_id),
        "column": column,
    }


def slide_ref(slide: int | str) -> int | str:
    """A slide given on a command line or in JSON: digits are an id."""
    return int(slide) if isinstance(slide, str) and slide.isdigit() else slide


def _quoted(values: Sequence[str]) -> str:
    """SQL string literals (quotes doubled)."""
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def parse_place(text: str) -> tuple[str, float, float]:
    """``SLIDE:X,Y`` -> ``(slide, x, y)`` (the slide is an id or a name).

    Raises:
        ConfigError: If the text is not of that form.
    """
    match = re.fullmatch(r"(.+):\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)", text.strip())
    if not match:
        raise ConfigError(f"A place must be written SLIDE:X,Y (e.g. OS-1:300,500). Got {text!r}.")
    return match.group(1), float(match.group(2)), float(match.group(3))


__all__ = [
    "EMBEDDING_ROLE",
    "EmbeddingVersion",
    "Filters",
    "Hit",
    "IndexReport",
    "SearchResult",
    "SearchService",
    "embedding_column",
    "parse_place",
    "slide_ref",
]
