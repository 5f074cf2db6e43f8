"""``object_classifier``: which model versions it accepts and what it writes on the objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from pathray.catalog import Catalog
from pathray.errors import ConfigError, ModelFileError
from pathray.models import examples as ex
from pathray.results.artifacts import ArtifactStore
from pathray.services.models import register_model
from pipelines.classify.generic_objects import ObjectClassifier
from pipelines.training_data import FEATURE_COLUMNS, write_object_classifier


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XGBoost JSON nucleus classifier folder (model.json and card.json)."""
    return write_object_classifier(tmp_path_factory.mktemp("oc") / "cells", tiles=2)


def _folder(catalog: Catalog, cold: Path, source: Path) -> str:
    version = register_model(catalog, cold, "cells", source)
    return str(ArtifactStore(cold).unpack(version.artifact_digest))


def test_check_model_accepts_only_carded_feature_classifiers(
    catalog: Catalog, tmp_path: Path, source: Path
) -> None:
    cold = tmp_path / "cold"
    cells = register_model(catalog, cold, "cells", source)
    ObjectClassifier.check_model(cells)  # fits
    tiles = register_model(catalog, cold, "tils", ex.write_wsinfer_folder(tmp_path / "ws"))
    with pytest.raises(ConfigError, match=r"task must be 'object_classification'.*format must"):
        ObjectClassifier.check_model(tiles)
    booster = ex.write_xgboost(tmp_path / "plain.json")
    card = tmp_path / "plain.yaml"
    card.write_text(json.dumps(ex.feature_card("xgboost_json", booster.name)))
    plain = register_model(catalog, cold, "plain", booster, card)
    with pytest.raises(ConfigError, match=r"plain@1: features must be given\."):
        ObjectClassifier.check_model(plain)


def test_registration_refuses_a_card_naming_more_features_than_the_model_reads(
    catalog: Catalog, tmp_path: Path
) -> None:
    booster = ex.write_xgboost(tmp_path / "four.json")  # reads 4 columns
    card = tmp_path / "four.yaml"
    data = {**ex.feature_card("xgboost_json", booster.name), "features": list(FEATURE_COLUMNS)}
    card.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=r"one column per card feature \(6: .*reads 4"):
        register_model(catalog, tmp_path / "cold", "four", booster, card)
    assert catalog.list_models() == []


def test_objects_get_the_boosters_probabilities_and_labels(
    catalog: Catalog, tmp_path: Path, source: Path
) -> None:
    unit = ObjectClassifier({"batch_size": 3}, {"model": _folder(catalog, tmp_path, source)})
    rng = np.random.default_rng(0)
    n = 7
    batch: dict[str, np.ndarray] = {
        name: rng.uniform(0.1, 60, n).astype(np.float32) for name in FEATURE_COLUMNS
    }
    batch["centroid_x"] = batch["centroid_y"] = np.zeros(n)
    out = unit(batch)
    card = json.loads((source / "card.json").read_text())
    booster = xgb.Booster(model_file=str(source / "model.json"))
    matrix = np.column_stack([batch[name] for name in FEATURE_COLUMNS])
    expected = booster.predict(xgb.DMatrix(matrix))
    np.testing.assert_allclose(out["object_probabilities"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["object_probabilities"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["object_class"], expected.argmax(axis=1))
    assert out["object_label"].tolist() == [card["class_names"][c] for c in out["object_class"]]
    empty = unit({name: values[:0] for name, values in batch.items()})
    assert empty["object_probabilities"].shape == (0, len(card["class_names"]))
    assert empty["object_label"].shape == (0,)


def test_missing_feature_columns_are_named(catalog: Catalog, tmp_path: Path, source: Path) -> None:
    unit = ObjectClassifier({}, {"model": _folder(catalog, tmp_path, source)})
    with pytest.raises(ConfigError, match=r"Columns \['area_um2', .*'eosin_mean'\] are missing"):
        unit({"centroid_x": np.zeros(2), "centroid_y": np.zeros(2)})
    with pytest.raises(ConfigError, match="needs a model"):
        ObjectClassifier({})
