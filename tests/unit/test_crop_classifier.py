"""``crop_classifier``: the models it accepts, and crops centred on each nucleus."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
import typer
from typer.testing import CliRunner

from pathray.catalog import Catalog
from pathray.cli.pipelines import pipelines_app
from pathray.config import Settings
from pathray.errors import ConfigError
from pathray.models import examples as ex
from pathray.results.artifacts import ArtifactStore
from pathray.services.models import register_model
from pipelines.classify.crop_classifier import CropClassifier

#: Nucleus colours the colour model keys on, and a background of a third colour.
COLOURS = {"blue": (40, 40, 190), "red": (200, 30, 30), "pink": (235, 215, 225)}
DOWN = 2.0  # tiles read at twice the level-0 pixel size
ORIGIN = (1000, 3000)


def _register(catalog: Catalog, cold: Path, name: str, module: object, card: dict) -> str:
    """Register a TorchScript module with its card; the stored version's folder."""
    source = cold.parent / f"{name}-source"
    model = ex.save_torchscript(module, source / "model.pt", 224)
    (source / "card.json").write_text(json.dumps({**card, "file": model.name}))
    version = register_model(catalog, cold, name, source)
    CropClassifier.check_model(version)
    return str(ArtifactStore(cold).unpack(version.artifact_digest))


def _disc(labels: np.ndarray, centre: tuple[int, int], r: int, k: int) -> None:
    """Draw instance ``k``: a disc of radius ``r`` at ``(row, col)``."""
    mask = np.zeros(labels.shape, np.uint8)
    cv2.circle(mask, (centre[1], centre[0]), r, 1, -1)
    labels[mask > 0] = k


def _tile(nuclei: list[tuple[tuple[int, int], int, str]], size: int = 128) -> dict:
    """One tile batch: pink tissue, the given nuclei (centre, radius, colour), all core owned."""
    image = np.full((size, size, 3), COLOURS["pink"], np.uint8)
    labels = np.zeros((size, size), np.int32)
    for k, (centre, radius, colour) in enumerate(nuclei, start=1):
        _disc(labels, centre, radius, k)
        image[labels == k] = COLOURS[colour]
    x, y = ORIGIN
    span = size * DOWN
    return {
        "image": image[None],
        "nucleus_labels": labels[None],
        "x": np.array([x], np.int64),
        "y": np.array([y], np.int64),
        "downsample": np.array([DOWN]),
        "core_x0": np.array([x], np.float64),
        "core_y0": np.array([y], np.float64),
        "core_x1": np.array([x + span]),
        "core_y1": np.array([y + span]),
    }


def test_a_nucleus_comes_out_as_the_class_of_its_colour(
    sqlite_catalog: Catalog, tmp_path: Path
) -> None:
    """Crops are centred: neighbours of another colour 12 px away, or the tile's edge, change
    nothing, since the colour model looks only at the centre of its 224 px input."""
    classes = list(COLOURS)
    card = ex.crop_card("torchscript", "model.pt", classes=classes)
    folder = _register(
        sqlite_catalog, tmp_path / "cold", "colours", ex.colour_net(COLOURS.values()), card
    )
    unit = CropClassifier({"mpp": 0.5, "batch_size": 2}, {"model": folder})
    nuclei = [
        ((40, 40), 5, "red"),
        ((40, 52), 5, "blue"),  # touching distance of the red one
        ((52, 40), 5, "blue"),
        ((90, 100), 7, "red"),
        ((3, 3), 4, "blue"),  # at the tile's corner: the crop is reflected
        ((124, 70), 4, "red"),  # at its bottom edge
    ]
    out = unit(_tile(nuclei))
    assert out["object_label"].tolist() == [colour for _, _, colour in nuclei]
    assert out["object_class"].tolist() == [classes.index(c) for _, _, c in nuclei]
    probabilities = out["object_probabilities"]
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(nuclei), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.max(axis=1) > 0.9).all()
    # the objects sit where the nuclei are, in level-0 pixels (those the edge cuts, about)
    rows = np.array([centre[0] for centre, _, _ in nuclei], float)
    cols = np.array([centre[1] for centre, _, _ in nuclei], float)
    np.testing.assert_allclose(out["centroid_x"], ORIGIN[0] + (cols + 0.5) * DOWN, atol=1.5)
    np.testing.assert_allclose(out["centroid_y"], ORIGIN[1] + (rows + 0.5) * DOWN, atol=1.5)
    np.testing.assert_array_equal(out["parent_index"], np.zeros(len(nuclei), np.int64))
    outlines = shapely.from_wkb(out["polygon"])
    assert shapely.contains_xy(outlines, out["centroid_x"], out["centroid_y"]).all()
    assert (out["bbox_x0"] < out["centroid_x"]).all() and (out["centroid_x"] < out["bbox_x1"]).all()
    # a tile without nuclei, and a batch of none, give no objects with the declared columns
    empty = unit(_tile([]))
    assert empty["object_probabilities"].shape == (0, 3) and empty["polygon"].shape == (0,)
    assert set(empty) == set(out)


def test_a_four_channel_card_gets_the_nucleus_mask(sqlite_catalog: Catalog, tmp_path: Path) -> None:
    """With a four-channel normalisation the model also reads the nucleus's own mask."""
    import torch
    from torch import nn

    class MaskArea(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            share = x[:, 3].mean(dim=(1, 2))[:, None]  # of the crop inside the nucleus
            return torch.cat([0.1 - share, share - 0.1], dim=1) * 100

    source = tmp_path / "mask-source"
    source.mkdir()
    traced = torch.jit.trace(MaskArea().eval(), torch.zeros(1, 4, 224, 224))
    torch.jit.save(traced, str(source / "model.pt"))
    card = {
        **ex.crop_card("torchscript", "model.pt", classes=["small", "large"]),
        "normalisation": {"mean": [0.5, 0.5, 0.5, 0.0], "std": [0.5, 0.5, 0.5, 1.0]},
    }
    (source / "card.json").write_text(json.dumps(card))
    version = register_model(sqlite_catalog, tmp_path / "cold", "mask", source)
    folder = str(ArtifactStore(tmp_path / "cold").unpack(version.artifact_digest))
    unit = CropClassifier({}, {"model": folder})
    # a small nucleus right next to a large one: only its own mask counts
    out = unit(_tile([((64, 40), 20, "red"), ((64, 66), 5, "blue")]))
    assert out["object_label"].tolist() == ["large", "small"]


def test_check_model_refuses_cards_that_do_not_fit(sqlite_catalog: Catalog, tmp_path: Path) -> None:
    cold = tmp_path / "cold"
    tiles = register_model(sqlite_catalog, cold, "tils", ex.write_wsinfer_folder(tmp_path / "ws"))
    CropClassifier.check_model(tiles)  # an image classifier of tiles fits too
    segmenter = ex.save_onnx(ex.nucleus_net(), tmp_path / "seg" / "nuclei.onnx", 64)
    card = tmp_path / "seg" / "card.json"
    card.write_text(json.dumps(ex.segmentation_card("onnx", segmenter.name, size=64)))
    segments = register_model(sqlite_catalog, cold, "seg", segmenter, card)
    with pytest.raises(
        ConfigError, match=r"crop_classifier cannot run seg@1: task must be one of \['object_"
    ):
        CropClassifier.check_model(segments)
    booster = ex.write_xgboost(tmp_path / "cells.json")
    card.write_text(json.dumps({**ex.feature_card("xgboost_json", booster.name)}))
    features = register_model(sqlite_catalog, cold, "cells", booster, card)
    with pytest.raises(ConfigError, match=r"cells@1: format must be one of \['torchscript', 'onn"):
        CropClassifier.check_model(features)
    # what registration cannot refuse (a card alone says nothing wrong) the unit refuses
    bare = {"task": "object_classification", "format": "onnx", "file": "m.onnx"}
    with pytest.raises(ConfigError, match=r"x@1: input_size must be given; class_names must"):
        CropClassifier.check_card(bare, "x@1")
    with pytest.raises(ConfigError, match=r"needs a model with a model card\. x@2 has none"):
        CropClassifier.check_card({}, "x@2")
    with pytest.raises(ConfigError, match="crop_classifier needs a model"):
        CropClassifier({})


runner = CliRunner()
app = typer.Typer()
app.add_typer(pipelines_app, name="pipelines")


def test_infer_refuses_a_model_that_does_not_fit_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    settings = Settings.from_env()
    settings.home.mkdir(parents=True)
    booster = ex.write_xgboost(tmp_path / "cells.json")
    card = tmp_path / "cells.yaml"
    card.write_text(json.dumps(ex.feature_card("xgboost_json", booster.name)))
    with Catalog.open(settings.catalog_url) as catalog:
        register_model(catalog, settings.cold_root, "cells", booster, card)
        register_model(
            catalog, settings.cold_root, "tils", ex.write_wsinfer_folder(tmp_path / "ws")
        )
    chain = ["tissue_mask", "nucleus_segmentation", "crop_classifier"]
    refused = runner.invoke(
        app, ["pipelines", "infer", *chain, "--model", "crop_classifier=cells@1"]
    )
    assert refused.exit_code == 2, refused.output
    assert "model 'cells@1' does not fit the unit" in refused.output
    assert "format must be one of ['torchscript', 'onnx']" in refused.output
    bound = runner.invoke(app, ["pipelines", "infer", *chain, "--model", "crop_classifier=tils@1"])
    assert bound.exit_code == 0, bound.output
    assert "crop_classifier <- tils@1 (version 1)" in bound.output
