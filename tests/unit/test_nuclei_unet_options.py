"""NucleusUNet options: unknown pixels, sample weights, its own resolution, seeded splitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pathray.errors import ConfigError
from pipelines.nuclei.unet import NucleusUNet, renumber
from pipelines.training_data import synthetic_tiles

torch.set_num_threads(1)
TINY = {"channels": (4, 8), "iterations": 4, "crop_size": 32, "batch": 2, "lr": 5e-3}


@pytest.fixture(scope="module")
def tiles():
    return synthetic_tiles(3, 64, mpp=0.5, seed=5)


def test_unknown_pixels_and_sample_weights_train(tiles):
    labels = tiles.instance_labels.copy()
    labels[:, :, :32] = -1  # the left half of every tile is unknown
    unit = NucleusUNet(TINY).fit(tiles.images, labels, sample_weight=[1.0, 0.0, 1.0])
    assert len(unit.loss_history_) == 4 and np.isfinite(unit.loss_history_).all()
    again = NucleusUNet(TINY).fit(tiles.images, labels, sample_weight=[1.0, 0.0, 1.0])
    assert again.loss_history_ == unit.loss_history_  # seeded
    other = NucleusUNet(TINY).fit(tiles.images, labels, sample_weight=[0.0, 1.0, 0.0])
    assert other.loss_history_ != unit.loss_history_  # the weights choose the tiles
    with pytest.raises(ConfigError, match="sample_weight must have one weight per tile"):
        NucleusUNet(TINY).fit(tiles.images, labels, sample_weight=[1.0])


def test_a_model_runs_at_its_own_resolution(tiles, tmp_path: Path):
    unit = NucleusUNet({**TINY, "colour": "light", "split": "seeds"})
    unit.fit(tiles.images, tiles.instance_labels).save(tmp_path)
    # tiles at 0.25 um/px: resized to the model's 0.5 and back
    fine = NucleusUNet.load(tmp_path, {**TINY, "mpp": 0.25})
    big = np.repeat(np.repeat(tiles.images[:1], 2, axis=1), 2, axis=2)
    out = fine({"image": big, "tissue": np.ones(big.shape[:3], bool)})
    assert out["nucleus_labels"].shape == big.shape[:3]
    coarse = NucleusUNet.load(tmp_path)
    same = coarse({"image": tiles.images[:1], "tissue": np.ones((1, 64, 64), bool)})
    # the same nuclei are found (the fine labels are the coarse ones, twice as large)
    assert abs(int(out["nucleus_count"][0]) - int(same["nucleus_count"][0])) <= 2
    with pytest.raises(ConfigError, match="'work_mpp'"):
        NucleusUNet.load(tmp_path, {**TINY, "mpp": 0.25, "work_mpp": 0.25})


def test_renumber_closes_gaps():
    labels = np.array([[0, 3], [7, 3]], np.int32)
    assert renumber(labels).tolist() == [[0, 1], [2, 1]]
