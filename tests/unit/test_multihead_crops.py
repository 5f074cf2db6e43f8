"""The multi-dataset classifier with the small CNN body on nucleus crops (tile -> object)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pathray.errors import ConfigError
from pathray.units.base import PARENT_INDEX
from pipelines.classify.crop_cnn import NucleusCropCNN
from pipelines.classify.multihead_crops import MultiHeadCropClassifier
from pipelines.training_data import synthetic_tiles
from tests.unit.test_trainable_contract import tile_batch

torch.set_num_threads(1)

TINY = {"input_size": 16, "crop_size": 16, "widths": (4, 8), "max_iterations": 8, "batch": 8}
B_NAMES = {"tumor": "epithelial", "lymphocyte": "inflammatory", "stroma": "other"}


@pytest.fixture(scope="module")
def tiles():
    return synthetic_tiles(3, 96, mpp=0.5, seed=0)


@pytest.fixture(scope="module")
def trained(tiles):
    """Fitted on the same nuclei labelled by two datasets (A: the classes, B: renamed)."""
    unit = MultiHeadCropClassifier(TINY)
    crops, classes = unit.crops(*tiles, mpp=0.5)
    pairs = np.array(
        [("A", c) for c in classes] + [("B", B_NAMES[c]) for c in classes], dtype=object
    )
    return unit.fit(np.concatenate([crops, crops]), pairs), crops, classes


def test_emits_the_crop_cnn_objects_with_every_dataset(trained, tiles):
    unit, _, _ = trained
    assert unit.label_space_.to_dict() == {
        "A": ["lymphocyte", "stroma", "tumor"],
        "B": ["epithelial", "inflammatory", "other"],
    }
    assert unit.model_[-1].out_features == 6  # one shared network, both label sets
    rows = tile_batch(tiles)
    out = unit(rows)
    # the same nuclei, outlines and parents as the single-dataset crop CNN
    shape = {k: TINY[k] for k in ("input_size", "crop_size", "widths")}
    single = NucleusCropCNN({**shape, "iterations": 1, "batch": 4})
    reference = single.fit(*single.training_set(*tiles, mpp=0.5))(rows)
    assert len(out[PARENT_INDEX]) > 0
    for name in (PARENT_INDEX, "polygon", "centroid_x", "bbox_y1"):
        assert np.array_equal(out[name], reference[name]), name
    assert set(out) == {c.name for c in unit.outputs} | {PARENT_INDEX} | {
        c.name for d in "AB" for c in unit.dataset_columns(d)
    }
    assert set(out["class_label_A"]) <= {"lymphocyte", "stroma", "tumor"}
    assert set(out["class_label_B"]) <= set(B_NAMES.values())
    assert np.array_equal(out["class_label"], out["class_label_A"])
    labels = json.loads(out["dataset_labels"][0])
    assert labels == {"A": out["class_label_A"][0], "B": out["class_label_B"][0]}
    # tiles without nuclei give no rows but every column
    empty = unit({**rows, "nucleus_labels": np.zeros_like(rows["nucleus_labels"])})
    assert set(empty) == set(out) and all(len(v) == 0 for v in empty.values())


def test_save_load_and_determinism(trained, tiles, tmp_path):
    unit, crops, classes = trained
    unit.save(tmp_path)
    rows = tile_batch(tiles)
    expected = unit(rows)
    loaded = MultiHeadCropClassifier.load(tmp_path)
    out = loaded(rows)
    assert out.keys() == expected.keys()
    assert all(np.array_equal(out[k], expected[k]) for k in out)
    # the same data, config and seed give the same network
    again = MultiHeadCropClassifier(TINY).fit(crops, classes, datasets="A")
    twice = MultiHeadCropClassifier(TINY).fit(crops, classes, datasets="A")
    assert np.array_equal(again.decision_function(crops), twice.decision_function(crops))
    with pytest.raises(ConfigError, match=r"'widths' of unit .* must match"):
        MultiHeadCropClassifier.load(tmp_path, {**unit.get_params(), "widths": [4]})


def test_training_set_and_input_errors(tiles):
    unit = MultiHeadCropClassifier({**TINY, "datasets": {"NuCLS": ["tumor", "lymphocyte"]}})
    crops, pairs = unit.training_set(*tiles, mpp=0.5)
    assert crops.shape[1:] == (16, 16, 4) and len(pairs) == len(crops)
    assert set(pairs[:, 0]) == {"NuCLS"}
    with pytest.raises(ConfigError, match=r"Label 'stroma' is not in dataset 'NuCLS''s"):
        unit.fit(crops, pairs)
    known = pairs[:, 1] != "stroma"
    with pytest.raises(ConfigError, match=r"Crops must be an \(n, size, size, 4\) uint8"):
        unit.fit(crops[known][..., :3], pairs[known])
    with pytest.raises(ConfigError, match="resolution"):
        unit.training_set(*tiles, mpp=0.25)
