"""Trainable nucleus segmenters (pixel classifier, U-Net) and the training data they learn from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathray.slides.synthetic import SyntheticHE
from pipelines.nuclei.pixel_classifier import NucleusPixelClassifier, pixel_features
from pipelines.nuclei.segment import segment_nuclei
from pipelines.nuclei.unet import NucleusUNet, unet_targets
from pipelines.training_data import (
    random_crop,
    random_dihedral,
    stain_jitter,
    synthetic_tiles,
)
from tests.helpers import SHARED

torch.set_num_threads(1)
MPP = 0.5
UNET = {"channels": (4, 8, 16), "iterations": 8, "crop_size": 48, "batch": 2, "lr": 5e-3}


@pytest.fixture(scope="module")
def train():
    return synthetic_tiles(4, 128, mpp=MPP, seed=1)


@pytest.fixture(scope="module")
def held_out():
    return synthetic_tiles(4, 128, mpp=MPP, seed=2)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred > 0, truth > 0
    return float(2 * (p & t).sum() / (p.sum() + t.sum()))


def segment(unit, tiles) -> np.ndarray:
    n, h, w = tiles.instance_labels.shape
    out = unit({"image": tiles.images, "tissue": np.ones((n, h, w), bool)})
    assert out["nucleus_labels"].dtype == np.int32 and out["nucleus_labels"].shape == (n, h, w)
    assert out["nucleus_count"].dtype == np.int32
    assert np.array_equal(out["nucleus_count"], out["nucleus_labels"].reshape(n, -1).max(axis=1))
    return out["nucleus_labels"]


# -- training data ------------------------------------------------------------------------------


def test_synthetic_tiles_match_the_slide_ground_truth():
    tiles = synthetic_tiles(3, 64, mpp=MPP, seed=4)
    assert tiles.images.shape == (3, 64, 64, 3) and tiles.images.dtype == np.uint8
    again = synthetic_tiles(3, 64, mpp=MPP, seed=4)
    assert np.array_equal(tiles.images, again.images)
    assert np.array_equal(tiles.instance_labels, again.instance_labels)
    he = SyntheticHE(4096, 4096, mpp=MPP, seed=4)
    for image, labels, classes in zip(*tiles, strict=True):
        # instances numbered 1..K, one class each
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
        assert len(classes) == labels.max() and set(classes) <= set(he.classes)
        # the tile is a region of the slide: find it and compare with the class mask
        ys, xs = np.nonzero(he.tissue_mask(0, 0, 4096, 4096, downsample=64))
        found = False
        for y0, x0 in zip(ys * 64, xs * 64, strict=True):
            if np.array_equal(he.render_region(int(x0), int(y0), 64, 64), image):
                lut = np.array([0, *[he.classes.index(c) + 1 for c in classes]], np.uint8)
                assert np.array_equal(lut[labels], he.nuclei_mask(int(x0), int(y0), 64, 64))
                found = True
                break
        assert found


def test_tumour_nuclei_are_larger_than_lymphocytes():
    tiles = synthetic_tiles(4, 128, mpp=MPP, seed=3)
    areas: dict[str, list[int]] = {}
    for labels, classes in zip(tiles.instance_labels, tiles.class_labels, strict=True):
        counts = np.bincount(labels.ravel())[1:]
        for count, name in zip(counts, classes, strict=True):
            areas.setdefault(name, []).append(int(count))
    assert np.median(areas["tumor"]) > 2 * np.median(areas["lymphocyte"])


def test_augmentation_is_seeded_and_keeps_alignment():
    tiles = synthetic_tiles(1, 64, mpp=MPP, seed=0)
    image, labels = tiles.images[0], tiles.instance_labels[0]
    a = stain_jitter(image, np.random.default_rng(7))
    assert a.dtype == np.uint8 and a.shape == image.shape and not np.array_equal(a, image)
    assert np.array_equal(a, stain_jitter(image, np.random.default_rng(7)))
    assert np.abs(a.astype(int) - image).mean() < 30  # a perturbation, not a new image
    turned, turned_labels = random_dihedral([image, labels], np.random.default_rng(1))
    assert sorted(np.bincount(turned_labels.ravel())) == sorted(np.bincount(labels.ravel()))
    crop, crop_labels = random_crop([turned, turned_labels], 80, np.random.default_rng(2))
    assert crop.shape == (80, 80, 3) and crop_labels.shape == (80, 80)


def test_dsb2018_tiles_load_with_their_masks():
    from pipelines.training_data import dsb2018_tiles

    # ../shared/data is part of the project's set-up (CI has it): missing data is a failure
    assert (SHARED / "nuclei" / "dsb2018-histology").is_dir(), f"no DSB 2018 data under {SHARED}"
    tiles = dsb2018_tiles("he", root=SHARED)
    assert len(tiles.images) == 4 and tiles.mpp == [0.13] * 4
    for image, labels in zip(tiles.images, tiles.instance_labels, strict=True):
        assert image.shape[:2] == labels.shape and labels.dtype == np.int32 and labels.max() > 5


# -- pixel classifier ---------------------------------------------------------------------------


def test_pixel_features_shape_and_scale():
    image = synthetic_tiles(1, 40, mpp=MPP, seed=0).images[0]
    feats = pixel_features(image, mpp=MPP, sigmas_um=(0.5, 1.0))
    assert feats.shape == (40, 40, 5 * (1 + 6 * 2) + 1) and feats.dtype == np.float32
    assert np.isfinite(feats).all()


@pytest.mark.parametrize("model", ["random_forest", "xgboost"])
def test_pixel_classifier_beats_the_classical_segmenter(model, train, held_out):
    config = {"model": model, "n_estimators": 20, "max_samples": 12_000}
    unit = NucleusPixelClassifier(config).fit(train.images, train.instance_labels)
    learned = dice(segment(unit, held_out), held_out.instance_labels)
    classical = dice(
        np.stack([segment_nuclei(image, mpp=MPP) for image in held_out.images]),
        held_out.instance_labels,
    )
    # measured: 0.998 (both models) against 0.973 for the classical segmenter
    assert learned > 0.95
    assert learned > classical
    again = NucleusPixelClassifier(config).fit(train.images, train.instance_labels)
    assert np.array_equal(
        again.predict_proba(held_out.images[0]), unit.predict_proba(held_out.images[0])
    )


def test_pixel_classifier_respects_tissue_and_finds_nothing_on_glass(train):
    unit = NucleusPixelClassifier({"n_estimators": 5, "max_samples": 4000}).fit(
        list(train.images[:2]), list(train.instance_labels[:2])
    )
    glass = np.full((1, 64, 64, 3), 238, np.uint8)
    assert unit({"image": glass, "tissue": np.ones((1, 64, 64), bool)})["nucleus_count"][0] == 0
    no_tissue = np.zeros((1, *train.instance_labels.shape[1:]), bool)
    out = unit({"image": train.images[:1], "tissue": no_tissue})
    assert out["nucleus_count"][0] == 0


# -- U-Net --------------------------------------------------------------------------------------


def test_unet_targets_mark_borders_between_touching_nuclei():
    labels = np.zeros((10, 10), np.int32)
    labels[2:8, 1:5], labels[2:8, 5:9] = 1, 2
    fg, border = unet_targets(labels).transpose(2, 0, 1)
    assert fg.sum() == 48 and border[4, 4] and border[4, 5] and not border[4, 2]


def test_unet_trains_deterministically_and_outputs_instances(train):
    unit = NucleusUNet(UNET).fit(train.images, train.instance_labels)
    history = unit.loss_history_
    assert len(history) == UNET["iterations"]
    assert np.mean(history[-3:]) < np.mean(history[:3])
    again = NucleusUNet(UNET).fit(train.images, train.instance_labels)
    assert again.loss_history_ == history
    images = train.images[:2, :70, :90]  # sides that are not multiples of 4
    maps = unit.predict_maps(images)
    assert maps.shape == (2, 2, 70, 90) and maps.dtype == np.float32
    assert ((maps >= 0) & (maps <= 1)).all()
    assert np.array_equal(maps, again.predict_maps(images))
    labels = segment(unit, type(train)(images, train.instance_labels[:2, :70, :90], []))
    assert labels.shape == (2, 70, 90)
