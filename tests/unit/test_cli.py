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
