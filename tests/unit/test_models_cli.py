"""``pathray models list/show/promote``: exit 0 on success, 2 with one line on a user error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathray.catalog import Catalog
from pathray.cli.models import format_metrics, models_app
from pathray.config import Settings
from pathray.results.artifacts import ArtifactStore

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATHRAY_HOME with model 'nuclei-rf' at versions 1 (champion) and 2 (child of 1)."""
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    settings = Settings.from_env()
    store = ArtifactStore(settings.cold_root)
    with Catalog.open(settings.catalog_url) as cat:
        cat.register_model("nuclei-rf", "sklearn", task="nucleus segmentation")
        cat.add_model_version(
            "nuclei-rf",
            artifact=store.put(b"v1"),
            training_run={"image_set": "train", "seed": 7},
            metrics={"dice": 0.8123456},
        )
        cat.add_model_version(
            "nuclei-rf", artifact=store.put(b"v2"), metrics={"dice": 0.85}, parent_version=1
        )
        cat.set_alias("nuclei-rf", "champion", 1)
    return settings.home


def ok(*args: str) -> str:
    result = runner.invoke(models_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def fails(*args: str) -> str:
    result = runner.invoke(models_app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    return result.output


def test_list_and_show(home: Path) -> None:
    out = ok("list")
    assert "nuclei-rf" in out and "sklearn" in out and "champion=1" in out
    out = ok("show", "nuclei-rf")
    assert "nucleus segmentation" in out and "dice=0.8123" in out and "champion" in out
    out = ok("show", "nuclei-rf", "--version", "2")
    assert "nuclei-rf@2" in out and "lineage: nuclei-rf@2 <- nuclei-rf@1" in out
    assert "stored" in out and "0.85" in out
    out = ok("show", "nuclei-rf", "-v", "champion")
    assert "lineage: nuclei-rf@1" in out and '"seed": 7' in out


def test_promote_moves_the_alias(home: Path) -> None:
    assert "nuclei-rf@2 is now champion (was nuclei-rf@1)" in ok("promote", "nuclei-rf", "2")
    assert "already champion" in ok("promote", "nuclei-rf", "2")
    assert "nuclei-rf@1 is now staging" in ok("promote", "nuclei-rf", "1", "--alias", "staging")
    assert "champion=2, staging=1" in ok("list")
    with Catalog.open(Settings.from_env().catalog_url) as cat:
        assert cat.get_model_version("nuclei-rf", "champion").version == 2
        assert cat.audit_entries("model")[-1].action == "set_alias"


def test_user_errors_exit_2(home: Path) -> None:
    assert "Model 'nope' does not exist" in fails("show", "nope")
    assert "has no version 9" in fails("show", "nuclei-rf", "--version", "9")
    assert "has no version 9" in fails("promote", "nuclei-rf", "9")
    assert "An alias must" in fails("promote", "nuclei-rf", "1", "--alias", "latest")


def test_empty_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    assert "name" in ok("list")


def test_format_metrics() -> None:
    assert format_metrics({}) == "-"
    assert format_metrics({"b": 1, "a": 0.123456}) == "a=0.1235, b=1"
    assert format_metrics({k: 1 for k in "abcdef"}, limit=2) == "a=1, b=1, +4"


def test_register_a_wsinfer_folder_and_show_its_card(home: Path, tmp_path: Path) -> None:
    from pathray.models.examples import write_wsinfer_folder

    folder = write_wsinfer_folder(tmp_path / "wsinfer")
    out = ok("register", "tils", str(folder), "--alias", "candidate")
    assert "registered tils@1 (candidate): torchscript tile_classification" in out
    out = ok("show", "tils")
    assert "card of tils@1" in out and '"spacing' not in out and '"mpp": 1.0' in out
    out = ok("show", "tils", "-v", "candidate")
    assert '"class_names"' in out and '"benign"' in out and "lineage: tils@1" in out


def test_register_refuses_a_pickle_in_one_line(home: Path, tmp_path: Path) -> None:
    import pickle

    model = tmp_path / "model.joblib"
    model.write_bytes(pickle.dumps([1, 2]))
    card = tmp_path / "card.yaml"
    card.write_text("task: tile_classification\n")
    out = fails("register", "m", str(model), "--card", str(card))
    assert "refuses pickles" in out and "ONNX (.onnx)" in out
    assert "does not exist" in fails("register", "m", str(tmp_path / "nope.onnx"))
    assert "needs its card" in fails("register", "m", str(model))
    with Catalog.open(Settings.from_env().catalog_url) as cat:
        assert [m.name for m in cat.list_models()] == ["nuclei-rf"]
