"""The cold store's vector index (LanceDB): adds per run, exact and approximate search, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pathray.errors import ConfigError, NotFoundError
from pathray.results.vectors import VectorIndex

DIM = 16


def _rows(vectors: np.ndarray, slide: int) -> pa.Table:
    n = len(vectors)
    flat = pa.array(vectors.astype(np.float32).reshape(-1))
    return pa.table(
        {
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            "slide_id": np.full(n, slide, np.int64),
            "tile_id": np.arange(n, dtype=np.int64),
            "x": np.arange(n, dtype=np.int64) * 256,
            "y": np.zeros(n, np.int64),
            "width": np.full(n, 256, np.int64),
            "height": np.full(n, 256, np.int64),
        }
    )


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_runs_are_added_once_and_searched_exactly(tmp_path: Path) -> None:
    index = VectorIndex(tmp_path, "set--unit-1-abc")
    assert not index.exists() and index.count() == 0 and index.runs() == set()
    a, b = _vectors(200, 1), _vectors(100, 2)
    assert index.add_run("a", _rows(a, 1), {"unit": "u"}) == 200
    assert index.add_run("a", _rows(a, 1)) == 0  # idempotent
    assert index.add_run("b", _rows(b, 2)) == 100
    assert index.count() == 300 and index.runs() == {"a", "b"} and index.metadata == {"unit": "u"}
    assert not index.has_ann()
    found = index.search(a[7], k=5)
    cosine = np.r_[a, b] @ a[7] / np.linalg.norm(np.r_[a, b], axis=1) / np.linalg.norm(a[7])
    best = np.argsort(-cosine)[:5]
    tile_ids = np.r_[np.arange(200), np.arange(100)]
    assert found["tile_id"].to_pylist() == tile_ids[best].tolist()
    np.testing.assert_allclose(found["_distance"], 1 - cosine[best], atol=1e-5)
    only_b = index.search(a[7], k=5, where="run_id = 'b'")
    assert set(only_b["slide_id"].to_pylist()) == {2} and only_b.num_rows == 5
    assert index.search(a[7], k=5, where="label = 'x'").num_rows == 0  # labels default to null


def test_an_approximate_index_takes_later_runs_in(tmp_path: Path) -> None:
    index = VectorIndex(tmp_path, "big")
    first = _vectors(3000, 3)
    index.add_run("a", _rows(first, 1))
    assert not index.ensure_ann(min_rows=5000) and not index.has_ann()
    assert index.ensure_ann(min_rows=1000) and index.has_ann()
    # same exact distances as before the index, for a stored vector: itself first at 0
    found = index.search(first[42], k=3)
    assert found["tile_id"][0].as_py() == 42 and found["_distance"][0].as_py() < 1e-5
    # a later run is folded in and found
    later = _vectors(500, 4)
    assert index.add_run("b", _rows(later, 2)) == 500 and index.has_ann()
    hit = index.search(later[9], k=1, where="slide_id = 2")
    assert (hit["slide_id"][0].as_py(), hit["tile_id"][0].as_py()) == (2, 9)


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="letters, digits"):
        VectorIndex(tmp_path, "../escape")
    index = VectorIndex(tmp_path, "k")
    with pytest.raises(NotFoundError, match="No search index 'k'"):
        index.search(np.ones(DIM), k=1)
    index.add_run("a", _rows(_vectors(20, 5), 1))
    with pytest.raises(ConfigError, match=f"must have length {DIM}"):
        index.add_run("b", _rows(_vectors(20, 6)[:, :8], 1))
    with pytest.raises(ConfigError, match=f"must have length {DIM}. Got shape \\(3,\\)"):
        index.search(np.ones(3), k=1)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        index.search(np.ones(DIM), k=0)
    with pytest.raises(ConfigError, match="'tile_id' column"):
        index.add_run("c", _rows(_vectors(5, 7), 1).drop_columns(["tile_id"]))
    with pytest.raises(ConfigError, match="fixed-size float lists"):
        index.add_run("d", pa.table({"vector": [[1.0, 2.0]]}))
    assert index.count() == 20 and index.runs() == {"a"}
