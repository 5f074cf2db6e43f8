"""``segmenter``: which model versions it accepts, and the nuclei it makes of their maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathray.catalog import Catalog
from pathray.errors import ConfigError
from pathray.models import examples as ex
from pathray.results.artifacts import ArtifactStore
from pathray.services.models import register_model
from pipelines.nuclei.generic_segmenter import Segmenter

SIZE = 96


def _register(catalog: Catalog, cold: Path, tmp_path: Path, fmt: str) -> str:
    """Register the example segmenter as TorchScript or ONNX; its stored folder."""
    save = ex.save_torchscript if fmt == "torchscript" else ex.save_onnx
    model = save(
        ex.nucleus_net(), tmp_path / fmt / f"net.{'pt' if fmt == 'torchscript' else 'onnx'}", SIZE
    )
    card = tmp_path / fmt / "card.json"
    card.write_text(json.dumps(ex.segmentation_card(fmt, model.name, size=SIZE)))
    version = register_model(catalog, cold, f"seg-{fmt}", model, card)
    Segmenter.check_model(version)
    return str(ArtifactStore(cold).unpack(version.artifact_digest))


def _tile() -> np.ndarray:
    """Pink cytoplasm with two dark nuclei (discs of 12 px radius, 36 um2 at 0.5 um/px)."""
    tile = np.full((SIZE, SIZE, 3), (230, 180, 210), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for cy, cx in ((30, 30), (60, 70)):
        tile[(yy - cy) ** 2 + (xx - cx) ** 2 < 12**2] = (60, 30, 110)
    return tile


def test_check_model_accepts_only_carded_segmentation_models(
    catalog: Catalog, tmp_path: Path
) -> None:
    _register(catalog, tmp_path / "cold", tmp_path, "onnx")
    tiles = register_model(
        catalog, tmp_path / "cold", "tils", ex.write_wsinfer_folder(tmp_path / "ws")
    )
    with pytest.raises(ConfigError, match=r"segmenter cannot run tils@1: task must be one of"):
        Segmenter.check_model(tiles)
    with pytest.raises(ConfigError, match="needs a model"):
        Segmenter({})


def test_torchscript_and_onnx_segmenters_find_the_same_nuclei(
    catalog: Catalog, tmp_path: Path
) -> None:
    cold = tmp_path / "cold"
    units = [
        Segmenter({"mpp": 0.5}, {"model": _register(catalog, cold, tmp_path, f)})
        for f in ("torchscript", "onnx")
    ]
    tissue = np.ones((2, SIZE, SIZE), bool)
    tissue[1] = False  # no tissue: no nuclei
    batch = {"image": np.stack([_tile(), _tile()]), "tissue": tissue}
    by_torch, by_onnx = (unit(batch) for unit in units)
    assert by_torch["nucleus_count"].tolist() == [2, 0]
    np.testing.assert_array_equal(by_torch["nucleus_labels"], by_onnx["nucleus_labels"])
    labels = by_torch["nucleus_labels"][0]
    assert labels[30, 30] != labels[60, 70] and labels[30, 30] > 0 and labels[0, 0] == 0
    area = (labels == labels[30, 30]).sum()
    assert abs(area - np.pi * 12**2) < 0.15 * np.pi * 12**2


def test_a_border_class_splits_touching_nuclei(catalog: Catalog, tmp_path: Path) -> None:
    unit = Segmenter(
        {"mpp": 0.5}, {"model": _register(catalog, tmp_path / "cold", tmp_path, "onnx")}
    )
    unit._border = 2  # as if the card's classes were background, nucleus, border
    probs = np.zeros((3, SIZE, SIZE), np.float32)
    probs[0] = 1.0
    probs[:, 20:50, 20:76] = np.array([0.0, 1.0, 0.0])[:, None, None]  # one blob, two nuclei
    probs[:, 20:50, 46:50] = np.array([0.0, 0.0, 1.0])[:, None, None]  # a border between them
    unit.card = unit.card.model_copy(update={"outputs": ["probabilities"]})
    labels = unit._instances(probs, (SIZE, SIZE), None)
    assert labels.max() == 2 and labels[35, 30] != labels[35, 70]
