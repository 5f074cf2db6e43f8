"""The ``pathray`` command: user mistakes give one clear line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathray.cli import app
from tests.helpers import CMU_SVS, OME_FILES

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    assert runner.invoke(app, ["init"]).exit_code == 0
    return tmp_path / "home"


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def fails(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_slides_sets_and_protection(home: Path, tmp_path: Path) -> None:
    out = ok("slides", "add", str(OME_FILES[0]), "--store", "shared", "--set", "ki67")
    assert "registered" in out
    ok("slides", "add", str(CMU_SVS), "--store", "cmu")
    assert "CMU-1-Small-Region.svs" in ok("slides", "list")
    assert "ki67" in ok("slides", "show", "1")
    ok("sets", "add", "ki67", "CMU-1-Small-Region.svs")
    ok("sets", "protect", "ki67")
    assert "protected" in fails("sets", "remove", "ki67", "1").lower()
    assert "yes" in ok("sets", "list")
    assert "does not exist" in fails("sets", "add", "nope", "1")


def test_bad_slide_is_rejected_without_traceback(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    out = fails("slides", "add", str(bad))
    assert "rejected" in out and "PNG" in out


def test_annotations_round_trip_through_the_catalog(home: Path, tmp_path: Path) -> None:
    ok("slides", "add", str(OME_FILES[0]), "--store", "shared", "--set", "ki67")
    geojson = tmp_path / "in.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
                                [[2, 2], [4, 2], [4, 4], [2, 2]],
                            ],
                        },
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": "tumor", "color": [255, 0, 0]},
                        },
                    }
                ],
            }
        )
    )
    assert "imported 1" in ok(
        "annotations", "import", str(geojson), "--set", "gt", "--slide", "1", "--image-set", "ki67"
    )
    for fmt in ("geojson", "asap"):
        out = tmp_path / f"out.{fmt}"
        ok("annotations", "export", "gt", "--slide", "1", "--out", str(out), "--format", fmt)
        from pathray.formats import read_annotations

        [record] = read_annotations(out)
        assert record.label == "tumor" and record.geometry.area == pytest.approx(100 - 2)
    ok("sets", "protect", "ki67")
    assert (
        "protected"
        in fails("annotations", "import", str(geojson), "--set", "gt", "--slide", "1").lower()
    )


def test_invalid_pipeline_and_unknown_preset(home: Path, tmp_path: Path) -> None:
    assert "must be a YAML file or a preset" in fails("run", "no-such-preset", "--set", "x")
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nunits:\n  - {unit: nucleus_features}\n")
    assert "needs input columns" in fails("run", str(spec), "--set", "x")
    spec.write_text("name: x\nunits:\n  - {unit: tissue_mask, config: {nope: 1}}\n")
    assert "nope" in fails("run", str(spec), "--set", "x")


def test_a_slide_is_named_by_its_file_name_or_stem(home: Path) -> None:
    ok("slides", "add", str(OME_FILES[0]), "--store", "shared", "--set", "ki67")
    name = OME_FILES[0].name  # e.g. OS-1-detail.ome.tif
    stem = name.split(".")[0]
    for ref in (name, name.rsplit(".", 1)[0], stem, "1"):
        assert name in ok("slides", "show", ref), ref
    out = fails("slides", "show", stem[:-1] + "x")
    assert "does not exist" in out and f"Did you mean '{name}'" in out


def test_list_commands_print_json_and_runs_newest_first(home: Path) -> None:
    from pathray.catalog import Catalog
    from pathray.config import Settings
    from pathray.results.store import ColdStore
    from pathray.results.synthetic_objects import write_objects_run

    ok("slides", "add", str(OME_FILES[0]), "--store", "shared", "--set", "ki67")
    slides = json.loads(ok("slides", "list", "--json"))
    assert [s["name"] for s in slides] == [OME_FILES[0].name]
    assert json.loads(ok("sets", "list", "--json"))[0]["name"] == "ki67"
    settings = Settings.from_env()
    with Catalog.open(settings.catalog_url) as catalog:
        store = ColdStore(settings.cold_root)
        first = write_objects_run(catalog, store, "ki67", {1: (512, 512)}, count=3, seed=1)
        second = write_objects_run(catalog, store, "ki67", {1: (512, 512)}, count=3, seed=2)
    runs = json.loads(ok("runs", "list", "--json"))
    assert [r["id"] for r in runs] == [second.run_id, first.run_id]
    table = ok("runs", "list")
    assert table.index(second.run_id) < table.index(first.run_id)


def test_iterate_takes_the_requirement_option_the_readme_uses(home: Path) -> None:
    out = fails("iterate", "--set", "none", "--reference", "gt", "--requirement", "f1 >= 0.8")
    assert "No such option" not in out
    assert "does not exist" in out  # it got past option parsing to the catalog
