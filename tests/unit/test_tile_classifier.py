"""``tile_classifier``: which model versions it accepts, and what it feeds the model."""

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
from pipelines.classify.tile_classifier import TileClassifier, _centre


@pytest.fixture
def model_folder(tmp_path: Path) -> str:
    """The stored folder of a registered WSInfer model (64 px at 0.5 um/px -> 32 px, 1 um/px)."""
    with Catalog.open(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        source = ex.write_wsinfer_folder(tmp_path / "ws", patch=64, size=32, spacing=0.5)
        version = register_model(catalog, tmp_path / "cold", "tils", source)
    return str(ArtifactStore(tmp_path / "cold").unpack(version.artifact_digest))


def test_check_model_accepts_only_carded_tile_classifiers(catalog: Catalog, tmp_path: Path) -> None:
    cold = tmp_path / "cold"
    tiles = register_model(catalog, cold, "tils", ex.write_wsinfer_folder(tmp_path / "ws"))
    TileClassifier.check_model(tiles)  # fits
    skops = ex.write_skops(tmp_path / "rf.skops")
    card = tmp_path / "rf.json"
    card.write_text(json.dumps(ex.feature_card("skops", skops.name)))
    objects = register_model(catalog, cold, "rf", skops, card)
    with pytest.raises(ConfigError, match=r"task must be 'tile_classification'.*format must be"):
        TileClassifier.check_model(objects)
    catalog.register_model("old", "torch")
    bare = catalog.add_model_version("old", artifact=ArtifactStore(cold).put(b"weights"))
    with pytest.raises(ConfigError, match=r"needs a model with a model card\. old@1 has none"):
        TileClassifier.check_model(bare)


def test_it_needs_a_model_and_an_allowed_precision(model_folder: str) -> None:
    with pytest.raises(ConfigError, match="needs a model"):
        TileClassifier({})
    with pytest.raises(ConfigError, match="precision must be one of the card's"):
        TileClassifier({"precision": "float16"}, {"model": model_folder})


def test_the_model_sees_the_cards_field_of_view(model_folder: str) -> None:
    # tiles at 0.5 um/px; the card asks for 32 px at 1 um/px: the centred 64 px, halved
    unit = TileClassifier({"mpp": 0.5, "batch_size": 2}, {"model": model_folder})
    tile = np.zeros((128, 128, 3), np.uint8)
    tile[32:96, 32:96] = 200  # the centred 64 px window
    x = unit._model_input(tile[None])
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    expected = (200 / 255 - np.array(ex.MEAN)) / np.array(ex.STD)
    np.testing.assert_allclose(x[0].mean(axis=(1, 2)), expected, rtol=1e-5)
    images = np.stack([tile, np.full_like(tile, 255), tile])
    out = unit({"image": images})
    assert out["tile_probabilities"].shape == (3, len(ex.CLASSES))
    np.testing.assert_allclose(out["tile_probabilities"].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out["tile_probabilities"][0], out["tile_probabilities"][2])
    assert out["tile_label"].tolist() == [ex.CLASSES[i] for i in out["tile_class"]]
    empty = unit({"image": images[:0]})
    assert empty["tile_probabilities"].shape == (0, 2) and empty["tile_label"].shape == (0,)


def test_centre_pads_small_tiles_with_white() -> None:
    tile = np.zeros((4, 4, 3), np.uint8)
    window = _centre(tile, 8, 6)
    assert window.shape == (8, 6, 3)
    assert (window[2:6, 1:5] == 0).all() and window[0, 0, 0] == 255 and window[7, 5, 2] == 255
    np.testing.assert_array_equal(
        _centre(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), 2, 2),
        np.arange(48, dtype=np.uint8).reshape(4, 4, 3)[1:3, 1:3],
    )


def test_the_frozen_channels_last_model_gives_the_models_own_answer(
    model_folder: str, tmp_path: Path
) -> None:
    import torch

    # tiles cut at the card's field of view (32 px at 1 um/px) go to the model as they are
    unit = TileClassifier({"mpp": 1.0, "batch_size": 4}, {"model": model_folder})
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    x = unit._model_input(tiles)
    assert x.shape == (6, 3, 32, 32)
    assert x.transpose(0, 2, 3, 1).flags.c_contiguous  # NHWC memory: channels_last for torch
    reference = torch.jit.load(str(Path(model_folder) / "torchscript_model.pt")).eval()
    mean = torch.tensor(ex.MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(ex.STD).reshape(1, 3, 1, 1)
    pixels = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = torch.softmax(reference((pixels - mean) / std), dim=1).numpy()
    out = unit({"image": tiles})
    np.testing.assert_allclose(out["tile_probabilities"], expected, atol=1e-5)
    assert list(reference.parameters())
    assert not list(unit.predictor.module.parameters())  # frozen: the weights are constants
