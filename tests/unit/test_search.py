"""Similarity search on both catalog backends: indexes built from runs, queries, filters, errors.

The runs are real engine runs on the shared OME-TIFF slides, driven in this process rather than
on Ray (:mod:`tests.embedding_runs`; the Ray path is covered by
tests/integration/test_search_ray.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathray.catalog import Catalog
from pathray.errors import ConfigError, NotFoundError
from pathray.results.store import ColdStore
from pathray.results.vectors import VectorIndex
from pathray.services.search import Filters, SearchService, parse_place
from pathray.slides.register import register_slides
from tests.embedding_runs import OS1, OS2, run_in_process


@pytest.fixture
def searched(catalog: Catalog, tmp_path: Path) -> dict[str, object]:
    """Set ``one`` holds OS-1 and has one embedding run; set ``two`` holds both slides."""
    register_slides(catalog, OS1, store="shared", image_set="one")
    register_slides(catalog, OS2, store="shared", image_set="two")
    catalog.add_to_image_set("two", [catalog.get_slide(OS1.name).id])
    store = ColdStore(tmp_path / "cold")
    run_one = run_in_process(catalog, store, "one")
    return {"service": SearchService(catalog, store.root), "store": store, "run_one": run_one}


def test_tiles_dataset_holds_unit_norm_vectors(searched: dict[str, object]) -> None:
    store = searched["store"]
    assert isinstance(store, ColdStore)
    tiles = store.read(str(searched["run_one"]), "tiles")
    kind = tiles.schema.field("embedding").type
    assert str(kind) == "fixed_size_list<item: float>[176]"
    vectors = tiles["embedding"].combine_chunks().flatten().to_numpy().reshape(tiles.num_rows, -1)
    assert tiles.num_rows > 5
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_build_is_incremental_and_idempotent(catalog: Catalog, searched: dict[str, object]) -> None:
    service, store = searched["service"], searched["store"]
    assert isinstance(service, SearchService) and isinstance(store, ColdStore)
    (first,) = service.build("one")
    n_one = store.read(str(searched["run_one"]), "tiles").num_rows
    assert first.runs_added == [searched["run_one"]] and first.rows == first.rows_added == n_one
    assert not first.approximate  # a few dozen rows: an exact scan
    (again,) = service.build("one")
    assert again.runs_added == [] and again.rows_added == 0 and again.rows == n_one
    # a new run of the set after a slide joined it: only its rows are appended
    catalog.add_to_image_set("one", [catalog.get_slide(OS2.name).id])
    run_two = run_in_process(catalog, store, "one")
    (grown,) = service.build("one")
    n_two = store.read(run_two, "tiles").num_rows
    assert grown.runs_added == [run_two] and grown.rows_added == n_two
    assert grown.rows == n_one + n_two and n_two > n_one
    assert VectorIndex(store.root, grown.key).runs() == {searched["run_one"], run_two}


def test_like_place_finds_neighbours_on_several_slides(searched: dict[str, object]) -> None:
    service, store = searched["service"], searched["store"]
    assert isinstance(service, SearchService) and isinstance(store, ColdStore)
    run_two = run_in_process(service.catalog, store, "two")
    service.build("two")
    result = service.like_place("two", "OS-1-detail", 300, 300, k=40)
    assert result.query["tile"]["run_id"] == run_two
    tile = result.query["tile"]
    assert (
        tile["x"] <= 300 < tile["x"] + tile["width"]
        and tile["y"] <= 300 < tile["y"] + tile["height"]
    )
    distances = [h.distance for h in result.hits]
    assert len(result.hits) == 40 and distances == sorted(distances) and distances[0] >= 0
    assert {h.slide for h in result.hits} == {OS1.name, OS2.name}
    places = [(h.slide_id, h.x, h.y) for h in result.hits]
    assert len(set(places)) == len(places)  # distinct places
    assert (result.query["slide_id"], tile["x"], tile["y"]) not in places  # not the query itself
    # the nearest tile by the index is the nearest by a brute-force scan
    tiles = store.read(run_two, "tiles")
    vectors = tiles["embedding"].combine_chunks().flatten().to_numpy().reshape(tiles.num_rows, -1)
    query = vectors[tiles["tile_id"].to_pylist().index(tile["tile_id"])]
    same = (np.asarray(tiles["slide_id"]) == result.query["slide_id"]) & (
        np.asarray(tiles["tile_id"]) == tile["tile_id"]
    )
    cosine = np.where(same, -np.inf, vectors @ query)
    best = int(np.argmax(cosine))
    assert (result.hits[0].slide_id, result.hits[0].tile_id) == (
        tiles["slide_id"][best].as_py(),
        tiles["tile_id"][best].as_py(),
    )
    assert result.hits[0].distance == pytest.approx(1 - cosine[best], abs=1e-5)
    # by vector: the same answer, the query's own tile first at distance 0
    by_vector = service.like_vector("two", query, k=2)
    assert by_vector.hits[0].tile_id == tile["tile_id"] and by_vector.hits[0].distance < 1e-5


def test_filters_restrict_the_answer(catalog: Catalog, searched: dict[str, object]) -> None:
    service, store = searched["service"], searched["store"]
    assert isinstance(service, SearchService) and isinstance(store, ColdStore)
    catalog.add_to_image_set("one", [catalog.get_slide(OS2.name).id])
    run_two = run_in_process(catalog, store, "one")
    service.build("one")
    only_os2 = service.like_place(
        "one", OS1.name, 300, 300, k=10, filters=Filters(slides=[OS2.name])
    )
    assert len(only_os2.hits) == 10 and {h.slide for h in only_os2.hits} == {OS2.name}
    by_id = Filters(slides=[str(catalog.get_slide(OS2.name).id)])
    assert service.like_place("one", OS1.name, 300, 300, k=10, filters=by_id) == only_os2
    first_run = service.like_place(
        "one", OS1.name, 300, 300, k=50, filters=Filters(runs=[searched["run_one"]])
    )
    assert first_run.hits and {h.run_id for h in first_run.hits} == {searched["run_one"]}
    assert {h.slide for h in first_run.hits} == {OS1.name}  # run one saw OS-1 only
    second = service.like_place("one", OS1.name, 300, 300, k=5, filters=Filters(runs=[run_two]))
    assert {h.run_id for h in second.hits} == {run_two}
    assert (
        service.like_place("one", OS1.name, 300, 300, filters=Filters(labels=["tumour"])).hits == []
    )


def test_bad_queries_raise_typed_errors_and_change_nothing(
    catalog: Catalog, searched: dict[str, object]
) -> None:
    service = searched["service"]
    assert isinstance(service, SearchService)
    (report,) = service.build("one")
    index = VectorIndex(service.store.root, report.key)
    before = (index.count(), index.runs())
    with pytest.raises(NotFoundError, match="does not exist"):
        service.like_place("one", "no-such-slide", 10, 10)
    with pytest.raises(NotFoundError, match="must lie in an embedded tile"):
        service.like_place("one", OS1.name, -500, 10)
    register_slides(catalog, OS2, store="shared", image_set="other")
    with pytest.raises(NotFoundError, match="has no embedded tiles"):
        service.like_place("one", OS2.name, 10, 10)
    with pytest.raises(ConfigError, match=r"must have length 176\. Got shape \(3,\)"):
        service.like_vector("one", [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="finite"):
        service.like_vector("one", np.full(176, np.nan))
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        service.like_place("one", OS1.name, 300, 300, k=0)
    with pytest.raises(NotFoundError, match="no search index"):
        service.like_vector("two", np.ones(176))
    with pytest.raises(NotFoundError, match="no succeeded run with an embedding unit"):
        service.build("other")
    with pytest.raises(NotFoundError, match="does not exist"):
        service.build("no-such-set")
    with pytest.raises(NotFoundError, match="does not exist"):
        service.like_place("one", OS1.name, 300, 300, filters=Filters(slides=["nope"]))
    assert (index.count(), index.runs()) == before


def test_parse_place() -> None:
    assert parse_place("OS-1-detail:300,500.5") == ("OS-1-detail", 300.0, 500.5)
    assert parse_place("7: 10 , 20") == ("7", 10.0, 20.0)
    for bad in ("OS-1", "OS-1:10", ":1,2", "OS-1:a,b"):
        with pytest.raises(ConfigError, match="SLIDE:X,Y"):
            parse_place(bad)
