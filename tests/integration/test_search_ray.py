"""``pathray search`` end to end on a local Ray: the embed preset, the index, queries, mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pathray.cli import app
from pathray.config import Settings
from pathray.results.store import ColdStore
from tests.helpers import OME_FILES

pytestmark = pytest.mark.ray
runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _fails(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose set ``ome`` holds the three OME-TIFF slides, indexed by the CLI."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATHRAY_HOME", str(home))
        patch.delenv("PATHRAY_CATALOG_URL", raising=False)
        patch.delenv("PATHRAY_COLD", raising=False)
        patch.setenv("RAY_raylet_start_wait_time_s", "120")
        _ok("init")
        for path in OME_FILES:
            _ok("slides", "add", str(path), "--store", "shared", "--set", "ome")
        yield home


@pytest.fixture
def env(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATHRAY_HOME", str(home))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    return home


def test_index_runs_the_embed_preset_then_answers_queries(env: Path) -> None:
    out = _ok("search", "index", "--set", "ome")
    assert "embedded" in out and "exact scan" in out
    # the engine stored one unit-norm vector per tile, as a fixed-size list
    from pathray.catalog import Catalog

    settings = Settings.from_env()
    catalog = Catalog.open(settings.catalog_url)
    (run,) = catalog.list_runs(image_set="ome", status="succeeded")
    tiles = ColdStore(settings.cold_root).read(run.id, "tiles")
    assert str(tiles.schema.field("embedding").type) == "fixed_size_list<item: float>[176]"
    vectors = tiles["embedding"].combine_chunks().flatten().to_numpy().reshape(tiles.num_rows, -1)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert len(set(tiles["slide_id"].to_pylist())) == 3
    # building again adds nothing
    again = _ok("search", "index", "--set", "ome")
    assert "embedded" not in again and "0 added from 0 new runs" in again
    # a query by place: neighbours from several slides, nearest first
    result = json.loads(_ok("search", "--like", "OS-1-detail:300,300", "-k", "10", "--json"))
    hits = result["hits"]
    assert len(hits) == 10 and result["query"]["slide"] == "OS-1-detail.ome.tif"
    assert len({h["slide"] for h in hits}) >= 2
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    table = _ok("search", "--like", "OS-1-detail:300,300", "-k", "3", "--set", "ome")
    assert "3 most similar places" in table
    only = json.loads(
        _ok("search", "--like", "OS-1-detail:300,300", "--slide", "OS-2-vsi", "--json")
    )
    assert only["hits"] and {h["slide"] for h in only["hits"]} == {"OS-2-vsi.ome.tif"}


def test_mistakes_print_one_line(env: Path) -> None:
    _ok("search", "index", "--set", "ome")
    assert "does not exist" in _fails("search", "--like", "nope:1,2")
    assert "SLIDE:X,Y" in _fails("search", "--like", "OS-1-detail")
    assert "must lie in an embedded tile" in _fails("search", "--like", "OS-1-detail:-9,5")
    _ok("sets", "create", "empty")
    assert "has no search index" in _fails("search", "--like", "OS-1-detail:5,5", "--set", "empty")
    assert "no succeeded run" in _fails("search", "index", "--set", "empty", "--no-embed")
