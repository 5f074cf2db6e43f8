"""Nuclei classified from image crops by a registered model, end to end on a real slide.

A tiny TorchScript crop classifier and its ONNX export (``torch.onnx``) are registered with a
card (224 px input, ImageNet normalisation, class names), each bound by ``model: name@1`` in a
``tissue_mask -> nucleus_segmentation -> crop_classifier`` pipeline and run by the engine on Ray
over CMU-1-Small-Region.svs. Every stored nucleus must carry a label from the card's class
names and probabilities that sum to 1, and the two runtimes must agree within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import run_pipeline
from pathray.models import examples as ex
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.services.models import register_model
from pathray.slides.register import register_slides
from tests.helpers import CMU_SVS

pytestmark = pytest.mark.ray

CLASSES = ("lymphocyte", "tumour", "stroma")
SPEC = """
name: NAME
tiling: {mpp: 0.5, size: 512, overlap: 32, min_tissue: 0.05}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.5}}
  - {id: nuclei, unit: nucleus_segmentation, after: [tissue], config: {mpp: 0.5}}
  - {id: cells, unit: crop_classifier, after: [nuclei], model: MODEL, config: {mpp: 0.5}}
"""
COLUMNS = [
    "slide_id",
    "tile_id",
    "object_id",
    "centroid_x",
    "object_probabilities",
    "object_class",
    "object_label",
]


def _run(catalog: Catalog, store: ColdStore, model: str) -> pa.Table:
    name = model.split("@")[0]
    spec = PipelineSpec.from_yaml(SPEC.replace("NAME", f"run-{name}").replace("MODEL", model))
    result = run_pipeline(catalog, store, spec, "cmu")
    run = catalog.get_run(result.run_id)
    nodes, _ = catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
    assert nodes["cells"].model_version_id == catalog.get_model_version(name, 1).id
    return store.read(result.run_id, "objects", columns=COLUMNS).sort_by(
        [("slide_id", "ascending"), ("tile_id", "ascending"), ("object_id", "ascending")]
    )


def test_torchscript_and_onnx_crop_classifiers_label_every_nucleus_alike(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    store = ColdStore(tmp_path / "cold")
    register_slides(catalog, CMU_SVS, store="shared", image_set="cmu")
    net = ex.crop_net(classes=len(CLASSES))
    for fmt, save in (("torchscript", ex.save_torchscript), ("onnx", ex.save_onnx)):
        model = save(net, tmp_path / fmt / f"cells.{'pt' if fmt == 'torchscript' else 'onnx'}", 224)
        card = tmp_path / fmt / "card.yaml"
        card.write_text(json.dumps(ex.crop_card(fmt, model.name, classes=CLASSES, size=224)))
        version = register_model(catalog, store.root, f"cells-{fmt}", model, card)
        assert version.card["input_size"] == [224, 224]

    ensure_ray(num_cpus=2)
    by_torch = _run(catalog, store, "cells-torchscript@1")
    by_onnx = _run(catalog, store, "cells-onnx@1")

    assert by_torch.num_rows > 500  # nuclei of the slide
    keys = ["tile_id", "object_id", "centroid_x"]
    assert by_torch.select(keys).to_pylist() == by_onnx.select(keys).to_pylist()
    torch_p = np.array(by_torch["object_probabilities"].to_pylist(), np.float32)
    onnx_p = np.array(by_onnx["object_probabilities"].to_pylist(), np.float32)
    assert torch_p.shape == (by_torch.num_rows, len(CLASSES))
    np.testing.assert_allclose(torch_p.sum(axis=1), 1.0, atol=1e-5)
    assert (torch_p >= 0).all()
    labels = by_torch["object_label"].to_pylist()
    assert set(labels) <= set(CLASSES)  # every object labelled from the card's class names
    classes = np.array(by_torch["object_class"].to_pylist())
    np.testing.assert_array_equal(classes, torch_p.argmax(axis=1))
    assert labels == [CLASSES[c] for c in classes]
    # the two runtimes, on the same crops
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
    assert by_onnx["object_label"].to_pylist() == labels
    catalog.close()
