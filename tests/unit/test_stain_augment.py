"""Stain normalisation, colour augmentation, resampling and seeded instance splitting."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.nuclei.augment import ColourParams, colour_augment, random_scale_crop
from pipelines.nuclei.instances import seeded_instances
from pipelines.nuclei.resample import resize_image, resize_labels
from pipelines.nuclei.segment import SegmentParams
from pipelines.nuclei.stain import (
    REFERENCE,
    fit_reference,
    normalise_stain,
    od_to_rgb,
    optical_density,
    stain_vectors,
)
from pipelines.training_data import cryonuseg_tiles, dsb2018_tiles
from tests.helpers import SHARED

#: Stains unlike the reference's: a bluer haematoxylin and a redder eosin.
H_OTHER = np.array([0.75, 0.60, 0.28])
E_OTHER = np.array([0.15, 0.90, 0.40])


def two_stain_tile(seed: int = 0, size: int = 96) -> np.ndarray:
    """A tile of blobs of haematoxylin on an eosin background, with known stain vectors."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    hem = np.zeros((size, size))
    for cy, cx in rng.integers(8, size - 8, (12, 2)):
        hem += 0.9 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
    eos = 0.25 + 0.2 * rng.random((size, size))
    eos[:, : size // 6] = 0.0  # a strip of glass
    hem[:, : size // 6] = 0.0
    h, e = H_OTHER / np.linalg.norm(H_OTHER), E_OTHER / np.linalg.norm(E_OTHER)
    return od_to_rgb(hem[..., None] * h + eos[..., None] * e)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_stain_vectors_are_found_and_ordered():
    vectors = stain_vectors(two_stain_tile())
    assert vectors is not None and vectors.shape == (2, 3)
    assert cosine(vectors[0], H_OTHER) > 0.98 and cosine(vectors[1], E_OTHER) > 0.98


def test_normalisation_maps_the_stains_to_the_reference():
    tile = two_stain_tile()
    out = normalise_stain(tile)
    assert out.shape == tile.shape and out.dtype == np.uint8
    assert not np.array_equal(out, tile)
    vectors = stain_vectors(out)
    assert vectors is not None
    reference = REFERENCE.matrix()
    assert cosine(vectors[0], reference[0]) > 0.98 and cosine(vectors[1], reference[1]) > 0.98
    # glass stays glass
    assert optical_density(out[:, :10]).max() < 0.02
    # deterministic
    assert np.array_equal(normalise_stain(tile), out)


def test_one_stain_and_empty_tiles_are_left_as_they_are():
    glass = np.full((40, 40, 3), 242, np.uint8)
    assert np.array_equal(normalise_stain(glass), glass)
    grey = np.tile(np.linspace(60, 250, 40).astype(np.uint8)[:, None, None], (1, 40, 3))
    assert np.array_equal(normalise_stain(grey), grey)  # one colour: nothing to separate
    rgba = np.dstack([glass, np.full((40, 40), 255, np.uint8)])
    assert normalise_stain(rgba).shape == (40, 40, 3)


@pytest.mark.skipif(not (SHARED / "nuclei").is_dir(), reason="shared data missing")
def test_shipped_reference_is_the_fit_on_the_real_he_tiles():
    images = dsb2018_tiles("he", root=SHARED).images + cryonuseg_tiles(SHARED).images
    assert fit_reference(images) == REFERENCE


def test_colour_augment_is_seeded_and_varied():
    tile = two_stain_tile(1)
    a = colour_augment(tile, np.random.default_rng(3))
    assert a.shape == tile.shape and a.dtype == np.uint8
    assert np.array_equal(a, colour_augment(tile, np.random.default_rng(3)))
    outs = [colour_augment(tile, np.random.default_rng(s)) for s in range(6)]
    means = np.array([o.reshape(-1, 3).mean(axis=0) for o in outs])
    assert means.std(axis=0).min() > 1.0  # colours really change between seeds
    # without eosin, the eosin background turns pale, the nuclei stay dark
    no_eosin = ColourParams(
        no_eosin=1.0, stain_scale=0, stain_shift=0, hue=0, saturation=0, brightness=0,
        contrast=0, gamma=0, blur=0,
    )  # fmt: skip
    pale = colour_augment(tile, np.random.default_rng(0), no_eosin)
    background = (slice(0, 4), slice(40, 96))
    assert pale[background].mean() > tile[background].mean() + 10


def test_random_scale_crop_keeps_arrays_aligned():
    image = np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    labels = np.arange(100 * 120, dtype=np.int32).reshape(100, 120)
    crop, crop_labels = random_scale_crop([image, labels], 48, np.random.default_rng(5))
    assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
    assert crop_labels.shape == (48, 48) and crop_labels.dtype == np.int32
    assert set(np.unique(crop_labels)) <= set(labels.ravel())  # nearest: no blended labels
    again = random_scale_crop([image, labels], 48, np.random.default_rng(5))
    assert np.array_equal(again[0], crop) and np.array_equal(again[1], crop_labels)


def test_resampling_shapes_and_nearest_labels():
    image = np.zeros((50, 70, 3), np.uint8)
    assert resize_image(image, 0.5).shape == (25, 35, 3)
    assert resize_image(image, 1.0) is image
    labels = np.array([[1, 2], [3, -1]], np.int32)
    big = resize_labels(labels, (4, 4))
    assert big.dtype == np.int32 and big[3, 3] == -1 and big[0, 1] == 1 and big[0, 2] == 2


def test_seeded_instances_split_touching_nuclei_at_the_border():
    yy, xx = np.mgrid[:40, :60]
    fg = (((yy - 20) ** 2 + (xx - 20) ** 2 < 100) | ((yy - 20) ** 2 + (xx - 37) ** 2 < 100)) * 1.0
    border = np.zeros_like(fg)
    border[:, 28:30] = 1.0  # where the two discs touch
    params = SegmentParams()
    labels = seeded_instances(fg, border, mpp=0.25, threshold=0.5, params=params)
    assert labels.max() == 2 and labels[20, 20] != labels[20, 37]
    # without a border they are one
    one = seeded_instances(fg, np.zeros_like(fg), mpp=0.25, threshold=0.5, params=params)
    assert one.max() == 1
    # outside the tissue nothing is found
    none = seeded_instances(
        fg, border, mpp=0.25, threshold=0.5, params=params, tissue=np.zeros_like(fg, bool)
    )
    assert none.max() == 0


@pytest.mark.skipif(not (SHARED / "nuclei").is_dir(), reason="shared data missing")
def test_cryonuseg_tiles_mark_the_unoutlined_area_unknown():
    tiles = cryonuseg_tiles(SHARED)
    assert tiles.names == ["TCGA-DE-A4MA", "TCGA-S4-A8RO"] and tiles.mpp == [0.25, 0.25]
    for image, labels in zip(tiles.images, tiles.instance_labels, strict=True):
        assert image.shape == (512, 512, 3) and labels.dtype == np.int32
        assert (labels == -1).any() and (labels == 0).any()
        # every outlined nucleus is inside the known area, with a background margin
        assert len(np.unique(labels[labels > 0])) > 50
