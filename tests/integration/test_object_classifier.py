"""Bring your own model, objects: an XGBoost JSON nucleus classifier registered, bound and run.

The booster is trained in the test on the ``nucleus_features`` columns of synthetic nuclei and
saved with ``save_model`` as JSON beside a card naming those columns. It is registered, bound by
``model: cells@1`` in ``tissue_mask -> nucleus_segmentation -> nucleus_features ->
object_classifier`` and run by the engine on Ray over CMU-1-Small-Region.svs. Every stored
nucleus must carry the booster's own probabilities for its stored features and their label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import run_pipeline
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.services.models import register_model
from pathray.slides.register import register_slides
from pipelines.training_data import FEATURE_COLUMNS, write_object_classifier
from tests.helpers import CMU_SVS

pytestmark = pytest.mark.ray

SPEC = """
name: cells
tiling: {mpp: 0.5, size: 256, overlap: 40, min_tissue: 0.05}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.5}}
  - {id: segment, unit: nucleus_segmentation, after: [tissue], config: {mpp: 0.5}}
  - {id: features, unit: nucleus_features, after: [segment], config: {mpp: 0.5}}
  - {id: classify, unit: object_classifier, after: [features], model: cells@1}
"""
OUTPUTS = ["object_probabilities", "object_class", "object_label"]


def test_an_xgboost_json_object_classifier_labels_the_nuclei_of_a_real_slide(
    tmp_path: Path,
) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    store = ColdStore(tmp_path / "cold")
    register_slides(catalog, CMU_SVS, store="shared", image_set="cmu")
    source = write_object_classifier(tmp_path / "cells", tiles=2)
    version = register_model(catalog, store.root, "cells", source)
    assert version.card["format"] == "xgboost_json"
    assert version.card["features"] == list(FEATURE_COLUMNS)
    classes = json.loads((source / "card.json").read_text())["class_names"]

    ensure_ray(num_cpus=2)
    result = run_pipeline(catalog, store, PipelineSpec.from_yaml(SPEC), "cmu")
    run = catalog.get_run(result.run_id)
    nodes, _ = catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
    assert nodes["classify"].model_version_id == version.id
    objects = store.read(result.run_id, "objects", columns=[*FEATURE_COLUMNS, *OUTPUTS])

    assert objects.num_rows > 100  # nuclei of the slide's tissue
    probabilities = np.array(objects["object_probabilities"].to_pylist(), np.float32)
    assert probabilities.shape == (objects.num_rows, len(classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    features = np.column_stack([objects[name].to_numpy() for name in FEATURE_COLUMNS])
    booster = xgb.Booster(model_file=str(source / "model.json"))
    expected = booster.predict(xgb.DMatrix(np.nan_to_num(features).astype(np.float32)))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    best = np.array(objects["object_class"].to_pylist())
    np.testing.assert_array_equal(best, probabilities.argmax(axis=1))
    assert objects["object_label"].to_pylist() == [classes[c] for c in best]
    catalog.close()
