"""``pathray units ...`` and ``pathray pipelines ...``: exit status 0, or 2 with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from pathray.cli.pipelines import pipelines_app, units_app
from pathray.pipeline.spec import PipelineSpec

app = typer.Typer()
app.add_typer(units_app, name="units")
app.add_typer(pipelines_app, name="pipelines")
runner = CliRunner()

CYCLE = """
name: loop
units:
  - {id: a, unit: noop, after: [b]}
  - {id: b, unit: noop, after: [a]}
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATHRAY_HOME of the test's own: checking a spec's models opens its catalog."""
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
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


def test_units_list_and_show() -> None:
    out = ok("units", "list")
    assert "tile_stats" in out and "tissue_mask" in out and "tile -> object" in out
    out = ok("units", "list", "--with", "nucleus_features")
    assert "already chosen" in out and "both turn tiles into objects" in out
    out = ok("units", "show", "nucleus_segmentation")
    assert "nucleus_labels" in out and '"mpp"' in out and "role: nucleus_segmentation" in out
    info = json.loads(ok("units", "show", "tissue_mask", "--json"))
    assert info["config_schema"]["properties"]["mpp"]["type"] == "number"
    assert "Got 'nope' instead" in fails("units", "show", "nope")
    assert "Got ['nope'] instead" in fails("units", "list", "--with", "nope")


def test_presets_show_validate_graph(tmp_path: Path) -> None:
    out = ok("pipelines", "presets")
    assert "nuclei_stats" in out and "tissue" in out
    out = ok("pipelines", "show", "nuclei_stats")
    assert "[['tissue'], ['segment', 'stats'], ['features']]" in out
    assert "valid: nuclei v2" in ok("pipelines", "validate", "nuclei")
    assert "valid: nuclei_classical v1" in ok("pipelines", "validate", "nuclei_classical")
    png = tmp_path / "g.png"
    out = ok("pipelines", "graph", "nuclei_stats", "--png", str(png))
    assert "parallel at level 1: segment | stats" in out
    assert png.stat().st_size > 10_000


def test_validate_file_good_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        PipelineSpec.model_validate({"name": "g", "units": [{"unit": "tissue_mask"}]}).to_yaml()
    )
    assert "valid: g v1, 1 unit(s)" in ok("pipelines", "validate", str(good))
    bad = tmp_path / "bad.yaml"
    bad.write_text(CYCLE)
    assert "a -> b -> a" in fails("pipelines", "validate", str(bad))
    assert "Got a cycle" in fails("pipelines", "graph", str(bad))
    assert "readable YAML file" in fails("pipelines", "validate", str(tmp_path / "none.yaml"))
    assert "a YAML file or a preset" in fails("pipelines", "show", "no_such_preset")


def test_infer_prints_a_valid_spec(tmp_path: Path) -> None:
    out = ok(
        "pipelines",
        "infer",
        "nucleus_features",
        "tile_stats",
        "nucleus_segmentation",
        "tissue_mask",
        "--name",
        "auto",
        "--out",
        str(tmp_path / "auto.yaml"),
    )
    assert "# parallel groups: [['tissue_mask'], ['tile_stats', 'nucleus_segmentation']" in out
    spec = PipelineSpec.model_validate(yaml.safe_load(out))  # comments aside, it is the spec
    assert spec.name == "auto" and len(spec.ordered()) == 4
    assert PipelineSpec.from_yaml(tmp_path / "auto.yaml") == spec
    out = fails("pipelines", "infer", "nucleus_features")
    assert "nucleus_features needs nucleus_labels, which none of the chosen units produces" in out
    assert "must be positive" in fails("pipelines", "infer", "tissue_mask", "--mpp", "-1")
