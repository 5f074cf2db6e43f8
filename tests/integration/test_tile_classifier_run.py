"""Bring your own model, end to end: a WSInfer model and its ONNX export run on a real slide.

Both are registered (the WSInfer folder in one call, the ONNX file with a YAML card), bound by
``model: name@1`` in a ``tissue_mask -> tile_classifier`` pipeline, and run by the engine on
Ray over CMU-1-Small-Region.svs. The stored tile results must be probabilities (summing to 1),
labels in range, and the two runtimes must agree within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import imagecodecs
import numpy as np
import pyarrow as pa
import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import run_pipeline
from pathray.models import examples as ex
from pathray.pipeline.spec import PipelineSpec
from pathray.results.overlay import label_color, overlay_features, overlay_tile
from pathray.results.store import ColdStore
from pathray.results.tile_classes import FILL_ALPHA
from pathray.services.models import register_model
from pathray.slides.deepzoom import DeepZoomGrid
from pathray.slides.register import register_slides
from tests.helpers import CMU_SVS
from ui.layers import parse_layer, slide_layers

pytestmark = pytest.mark.ray

MPP = 2.0  # the WSInfer config's 128 px at 1 um/px, resized to 64 px
SPEC = """
name: NAME
tiling: {mpp: 2.0, size: 64, overlap: 0}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 2.0}}
  - {id: classify, unit: tile_classifier, after: [tissue], model: MODEL, config: {mpp: 2.0}}
"""
COLUMNS = ["slide_id", "tile_id", "tile_probabilities", "tile_class", "tile_label"]


def _run(catalog: Catalog, store: ColdStore, model: str) -> tuple[str, pa.Table]:
    name = model.split("@")[0]
    spec = PipelineSpec.from_yaml(SPEC.replace("NAME", f"run-{name}").replace("MODEL", model))
    result = run_pipeline(catalog, store, spec, "cmu")
    run = catalog.get_run(result.run_id)
    nodes, _ = catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
    assert nodes["classify"].model_version_id == catalog.get_model_version(name, 1).id
    return result.run_id, store.read(result.run_id, "tiles", columns=COLUMNS).sort_by(
        [("slide_id", "ascending"), ("tile_id", "ascending")]
    )


def test_torchscript_and_onnx_tile_classifiers_agree_on_a_real_slide(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    store = ColdStore(tmp_path / "cold")
    register_slides(catalog, CMU_SVS, store="shared", image_set="cmu")
    wsinfer = ex.write_wsinfer_folder(tmp_path / "wsinfer", patch=128, size=64, spacing=1.0)
    torchscript = register_model(catalog, store.root, "tiles-ts", wsinfer)
    onnx = ex.save_onnx(ex.tile_net(), tmp_path / "export" / "tiles.onnx", 64)
    card = tmp_path / "export" / "card.json"
    card.write_text(json.dumps(ex.tile_card("onnx", onnx.name, size=64, mpp=MPP)))
    exported = register_model(catalog, store.root, "tiles-onnx", onnx, card)
    assert torchscript.card["mpp"] == exported.card["mpp"] == MPP

    ensure_ray(num_cpus=2)
    ts_run, by_torch = _run(catalog, store, "tiles-ts@1")
    _, by_onnx = _run(catalog, store, "tiles-onnx@1")

    assert by_torch.num_rows > 20  # tiles of tissue on the slide
    assert by_torch["tile_id"].to_pylist() == by_onnx["tile_id"].to_pylist()
    torch_p = np.array(by_torch["tile_probabilities"].to_pylist(), np.float32)
    onnx_p = np.array(by_onnx["tile_probabilities"].to_pylist(), np.float32)
    assert torch_p.shape == (by_torch.num_rows, len(ex.CLASSES))
    np.testing.assert_allclose(torch_p.sum(axis=1), 1.0, atol=1e-5)
    assert (torch_p >= 0).all()
    classes = np.array(by_torch["tile_class"].to_pylist())
    assert set(classes) <= set(range(len(ex.CLASSES)))
    np.testing.assert_array_equal(classes, torch_p.argmax(axis=1))
    assert by_torch["tile_label"].to_pylist() == [ex.CLASSES[c] for c in classes]
    # the two runtimes, on the same tiles
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
    assert by_onnx["tile_class"].to_pylist() == classes.tolist()
    _check_class_map(catalog, store, ts_run, by_torch)
    catalog.close()


def _check_class_map(catalog: Catalog, store: ColdStore, run_id: str, tiles: pa.Table) -> None:
    """The viewer shows the run as a class map: legend of the card's classes, filled cores."""
    slide = catalog.get_slide(int(tiles["slide_id"][0].as_py()))
    (layer,) = [x for x in slide_layers(catalog, slide.id) if x.run_id == run_id]
    assert layer.id == f"run:{run_id}:classify" and layer.kind == "classes"
    assert layer.style["fill"] and list(layer.style["classes"]) == list(ex.CLASSES)
    whole = (0.0, 0.0, float(slide.width), float(slide.height))
    fc = overlay_features(catalog, store, slide.id, parse_layer(layer.id), whole, mode="polygons")
    assert len(fc["features"]) == tiles.num_rows
    by_id = {f["id"]: f["properties"]["label"] for f in fc["features"]}
    want = dict(zip(tiles["tile_id"].to_pylist(), tiles["tile_label"].to_pylist(), strict=True))
    assert by_id == {f"tile:{t}": label for t, label in want.items()}
    # one DeepZoom tile holding the whole slide: each class present is filled in its colour
    grid = DeepZoomGrid(slide.width, slide.height, 254, 1)
    level = next(
        lv
        for lv in range(grid.level_count)
        if grid.tile_count(lv) == (1, 1) and max(grid.level_size(lv)) > 128
    )
    png = overlay_tile(catalog, store, slide.id, parse_layer(layer.id), level, 0, 0)
    rgba = imagecodecs.png_decode(png)
    filled = rgba[rgba[..., 3] == FILL_ALPHA][:, :3]
    assert len(filled) > 0.05 * rgba.shape[0] * rgba.shape[1]
    colours = {tuple(int(v) for v in c) for c in np.unique(filled, axis=0)}
    assert colours == {label_color(c) for c in set(want.values())}
