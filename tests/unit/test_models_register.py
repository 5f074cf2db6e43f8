"""Registering models trained elsewhere: cards, safe formats, checksums, and bad input.

Every bad input must raise a typed error and leave the registry exactly as it was (models,
versions, cards, aliases and the audit log), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from pathray.catalog import Catalog
from pathray.errors import ConfigError, ModelFileError, NotFoundError
from pathray.models import examples as ex
from pathray.models.card import ModelCard, card_from_wsinfer
from pathray.models.folder import CHECKSUMS
from pathray.models.formats import detect_format
from pathray.models.runtime import load_predictor
from pathray.results.artifacts import ArtifactStore
from pathray.services.models import register_model

SIZE = 32


class Homemade(ClassifierMixin, BaseEstimator):
    """An estimator skops does not know, so it must not trust it."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Homemade:
        self.classes_ = np.unique(y)
        return self


def _write_card(path: Path, card: dict[str, Any]) -> Path:
    path.write_text(json.dumps(card) if path.suffix == ".json" else _yaml(card))
    return path


def _yaml(card: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(card)


def _snapshot(catalog: Catalog) -> list[Any]:
    """Everything registering may touch: models, versions with cards and aliases, the audit."""
    state: list[Any] = []
    for model in catalog.list_models():
        versions = catalog.list_model_versions(model.name)
        state.append((model.name, model.framework, model.aliases))
        state.extend((v.ref, v.artifact_digest, v.card, v.aliases) for v in versions)
    state.append([(e.action, e.entity, e.entity_id) for e in catalog.audit_entries()])
    return state


@pytest.fixture
def cold(tmp_path: Path) -> Path:
    return tmp_path / "cold"


@pytest.fixture
def wsinfer_dir(tmp_path: Path) -> Path:
    return ex.write_wsinfer_folder(tmp_path / "wsinfer", size=SIZE)


@pytest.fixture
def onnx_file(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny ONNX tile classifier and its YAML card."""
    model = ex.save_onnx(ex.tile_net(), tmp_path / "tiles.onnx", SIZE)
    card = _write_card(tmp_path / "tiles.yaml", ex.tile_card("onnx", model.name, SIZE))
    return model, card


@pytest.fixture
def registered(catalog: Catalog, cold: Path, wsinfer_dir: Path) -> Catalog:
    """A catalog with ``tils@1`` registered (so 'unchanged' is checked against a real state)."""
    register_model(catalog, cold, "tils", wsinfer_dir, alias="champion")
    return catalog


# -- cards -------------------------------------------------------------------------------------


def test_wsinfer_config_becomes_a_tile_classification_card() -> None:
    card = card_from_wsinfer(ex.wsinfer_config(patch=64, size=32, spacing=0.5), "m.pt")
    assert card.task == "tile_classification" and card.format == "torchscript"
    assert card.input_size == (32, 32)
    # 64 px at 0.5 um/px resized to 32 px: the model sees 1 um/px
    assert card.mpp == pytest.approx(1.0)
    assert card.normalisation is not None and card.normalisation.mean == ex.MEAN
    assert card.class_names == list(ex.CLASSES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown \\['extra'\\]"),
        ({"num_classes": 3}, "num_classes must equal"),
        ({"spec_version": "2.0"}, "spec_version must be '1.0'"),
        ({"transform": [{"name": "CenterCrop"}]}, "transforms must be Resize"),
    ],
)
def test_bad_wsinfer_configs_are_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        card_from_wsinfer({**ex.wsinfer_config(), **change}, "m.pt")


def test_native_card_rejects_unknown_fields_and_bad_values() -> None:
    card = ex.tile_card("onnx", "m.onnx")
    assert ModelCard.model_validate(card).resources.gpus == 0.25
    with pytest.raises(ValueError, match="Extra inputs"):
        ModelCard.model_validate({**card, "colour": "red"})
    with pytest.raises(ValueError, match="std must be > 0"):
        ModelCard.model_validate({**card, "normalisation": {"mean": [0.5], "std": [0.0]}})


# -- formats -----------------------------------------------------------------------------------


def test_pickles_are_refused_with_the_safe_formats(tmp_path: Path) -> None:
    import torch

    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps({"weights": [1, 2]}))
    disguised = tmp_path / "model.onnx"  # a pickle under a safe suffix
    disguised.write_bytes(pickle.dumps([1]))
    checkpoint = tmp_path / "model.pt"
    torch.save(ex.tile_net().state_dict(), checkpoint)
    for path in (plain, disguised, checkpoint):
        with pytest.raises(ModelFileError, match=r"refuses pickles.*TorchScript.*ONNX.*skops"):
            detect_format(path)


def test_formats_are_recognised(tmp_path: Path, wsinfer_dir: Path) -> None:
    assert detect_format(wsinfer_dir / "torchscript_model.pt") == "torchscript"
    assert detect_format(ex.write_skops(tmp_path / "m.skops")) == "skops"
    assert detect_format(ex.write_xgboost(tmp_path / "m.json")) == "xgboost_json"
    assert detect_format(ex.write_xgboost(tmp_path / "m.ubj")) == "xgboost_ubj"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match=r"Got suffix '\.txt'"):
        detect_format(tmp_path / "notes.txt")


# -- registering -------------------------------------------------------------------------------


def test_wsinfer_folder_registers_in_one_call(
    catalog: Catalog, cold: Path, wsinfer_dir: Path
) -> None:
    version = register_model(catalog, cold, "tils", wsinfer_dir, alias="candidate")
    assert version.ref == "tils@1" and version.aliases == ("candidate",)
    assert catalog.get_model("tils").framework == "torch"
    stored = catalog.get_model_version("tils", "candidate")
    assert stored.card == version.card
    assert stored.card["class_names"] == list(ex.CLASSES) and stored.card["input_size"] == [32, 32]
    assert [e.action for e in catalog.audit_entries("model_version")] == ["create"]
    # the stored copy is independent of the original
    shutil.rmtree(wsinfer_dir)
    folder = ArtifactStore(cold).unpack(stored.artifact_digest)
    predictor = load_predictor(folder)
    probe = np.zeros((2, 3, SIZE, SIZE), np.float32)
    assert predictor.predict(probe).shape == (2, len(ex.CLASSES))


def test_onnx_skops_and_xgboost_register(
    catalog: Catalog, cold: Path, tmp_path: Path, onnx_file: tuple[Path, Path]
) -> None:
    v = register_model(catalog, cold, "tiles-onnx", onnx_file[0], onnx_file[1])
    assert v.card["format"] == "onnx" and v.resources["gpus"] == 0.25
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    for name, file in (("rf", "m.skops"), ("xgb-json", "m.json"), ("xgb-ubj", "m.ubj")):
        path = ex.write_skops(tmp_path / file) if file.endswith("skops") else None
        path = path or ex.write_xgboost(tmp_path / file)
        fmt = detect_format(path)
        card = _write_card(tmp_path / f"{name}.json", ex.feature_card(fmt, file))
        version = register_model(catalog, cold, name, path, card)
        predictor = load_predictor(ArtifactStore(cold).unpack(version.artifact_digest))
        probabilities = predictor.predict(rows)
        assert probabilities.shape == (5, 2), name
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert {m.name: m.framework for m in catalog.list_models()} == {
        "rf": "sklearn",
        "tiles-onnx": "torch",
        "xgb-json": "xgboost",
        "xgb-ubj": "xgboost",
    }


def test_a_changed_file_fails_its_checksum_on_load(
    registered: Catalog, cold: Path, tmp_path: Path
) -> None:
    digest = registered.get_model_version("tils").artifact_digest
    folder = tmp_path / "copy"
    shutil.copytree(ArtifactStore(cold).unpack(digest), folder)
    model = folder / "torchscript_model.pt"
    model.chmod(0o644)
    with model.open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelFileError, match="must hash to its recorded SHA-256"):
        load_predictor(folder)
    (folder / CHECKSUMS).unlink()
    with pytest.raises(ModelFileError, match="must record the SHA-256"):
        load_predictor(folder)


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _bad_sources(tmp_path: Path, wsinfer_dir: Path, onnx_file: tuple[Path, Path]) -> dict:
    """Name -> (path, card, expected error, message) of every bad input."""
    onnx, onnx_card = onnx_file
    card = ex.tile_card("onnx", onnx.name, SIZE)
    cases: dict[str, tuple[Path, Path | None, type[Exception], str]] = {}
    cases["missing file"] = (tmp_path / "nope.onnx", onnx_card, NotFoundError, "does not exist")
    cases["missing card"] = (onnx, tmp_path / "nope.yaml", NotFoundError, "does not exist")
    truncated_ts = tmp_path / "truncated"
    shutil.copytree(wsinfer_dir, truncated_ts)
    _truncate(truncated_ts / "torchscript_model.pt")
    cases["truncated torchscript"] = (truncated_ts, None, ModelFileError, "corrupt or truncated")
    truncated_onnx = _truncate(shutil.copy(onnx, tmp_path / "half.onnx"))
    cases["truncated onnx"] = (Path(truncated_onnx), onnx_card, ModelFileError, "corrupt")
    flat = ex.save_torchscript(ex.flat_net(SIZE), tmp_path / "flat" / "model.pt", SIZE)
    wrong_size = {**ex.tile_card("torchscript", flat.name, SIZE), "input_size": [48, 48]}
    cases["input size contradicts card"] = (
        flat,
        _write_card(tmp_path / "flat.yaml", wrong_size),
        ModelFileError,
        r"must accept input of shape \[1, 3, 48, 48\]",
    )
    three = {**card, "class_names": ["a", "b", "c"]}
    cases["class count contradicts card"] = (
        onnx,
        _write_card(tmp_path / "three.json", three),
        ModelFileError,
        "must output one value per class name \\(3",
    )
    cases["unknown card field"] = (
        onnx,
        _write_card(tmp_path / "extra.yaml", {**card, "colour": "red"}),
        ConfigError,
        "colour: Extra inputs",
    )
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"w": 1}))
    cases["pickle"] = (pkl, onnx_card, ModelFileError, "refuses pickles")
    untrusted = tmp_path / "homemade.skops"
    import skops.io as sio

    sio.dump(Homemade().fit(np.zeros((4, 2)), np.array([0, 1, 0, 1])), untrusted)
    cases["untrusted skops type"] = (
        untrusted,
        _write_card(tmp_path / "homemade.json", ex.feature_card("skops", untrusted.name)),
        ModelFileError,
        "only types skops trusts",
    )
    cases["format differs from card"] = (
        onnx,
        _write_card(tmp_path / "fmt.json", {**card, "format": "torchscript"}),
        ModelFileError,
        "format must match",
    )
    return cases


BAD = [
    "missing file",
    "missing card",
    "truncated torchscript",
    "truncated onnx",
    "input size contradicts card",
    "class count contradicts card",
    "unknown card field",
    "pickle",
    "untrusted skops type",
    "format differs from card",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_leaves_the_registry_unchanged(
    case: str,
    registered: Catalog,
    cold: Path,
    tmp_path: Path,
    wsinfer_dir: Path,
    onnx_file: tuple[Path, Path],
) -> None:
    path, card, error, message = _bad_sources(tmp_path, wsinfer_dir, onnx_file)[case]
    before = _snapshot(registered)
    with pytest.raises(error, match=message):
        # an existing model: a bad new version must not be recorded either
        register_model(registered, cold, "tils", path, card, alias="champion")
    with pytest.raises(error, match=message):
        register_model(registered, cold, "fresh", path, card)
    assert _snapshot(registered) == before


def test_bad_names_and_aliases_change_nothing(
    registered: Catalog, cold: Path, onnx_file: tuple[Path, Path]
) -> None:
    before = _snapshot(registered)
    with pytest.raises(ConfigError, match="An alias must"):
        register_model(registered, cold, "tiles", *onnx_file, alias="latest")
    with pytest.raises(ConfigError, match="name must be non-empty"):
        register_model(registered, cold, "a@b", *onnx_file)
    assert _snapshot(registered) == before


def test_versions_without_a_card_read_as_empty(catalog: Catalog, cold: Path) -> None:
    catalog.register_model("old", "sklearn")
    version = catalog.add_model_version("old", artifact=ArtifactStore(cold).put(b"blob"))
    assert version.card == {} and catalog.get_model_version("old").card == {}


def test_the_models_package_imports_neither_store() -> None:
    """Units load models through pathray.models, which must stay free of catalog and cold store."""
    import subprocess
    import sys

    code = (
        "import sys, pathray.models.runtime, pathray.models.examples, "
        "pipelines.classify.tile_classifier\n"
        "stores = ('pathray.catalog', 'pathray.results')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(stores))\n"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
