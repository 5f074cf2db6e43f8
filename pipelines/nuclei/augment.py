"""Colour and geometry augmentation of training tiles, for models that generalise across stains.

- :func:`stain_jitter`: HED-space jitter (Tellez et al., 2019): each stain concentration of the
  colour deconvolution is scaled and shifted, then brightness and contrast change.
- :func:`colour_augment`: the stronger recipe the nucleus U-Net trains with by default: HED
  jitter, sometimes eosin removed (a haematoxylin-only look), hue and saturation shifts,
  brightness, contrast and gamma, sometimes a slight blur.
- :func:`random_scale_crop`: a random window of aligned arrays, resized by a random factor
  (scanners and resolution estimates differ by tens of percent); :func:`random_crop` and
  :func:`random_dihedral` (flips and 90-degree rotations).

Every function draws only from the generator it is given, so a seed fixes the result.

Example:
    >>> import numpy as np
    >>> tile = np.full((8, 8, 3), 200, np.uint8)
    >>> a = colour_augment(tile, np.random.default_rng(0))
    >>> b = colour_augment(tile, np.random.default_rng(0))
    >>> a.dtype, a.shape, bool(np.array_equal(a, b))
    (dtype('uint8'), (8, 8, 3), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.nuclei.resample import resize_labels
from pipelines.nuclei.segment import OD_LUT, STAIN_INVERSE, STAIN_MATRIX

_STAINS = STAIN_MATRIX.astype(np.float32)


def _recompose(conc: np.ndarray) -> np.ndarray:
    rgb: np.ndarray = 256.0 * np.power(10.0, -(conc @ _STAINS), dtype=np.float32) - 1.0
    return rgb


def _light(rgb: np.ndarray, contrast: float, bright: float) -> np.ndarray:
    mean = rgb.mean()
    out: np.ndarray = ((rgb - mean) * contrast + mean) * bright
    return out


def stain_jitter(
    image: np.ndarray, rng: np.random.Generator, *, stain: float = 0.05, light: float = 0.1
) -> np.ndarray:
    """Random H&E stain, brightness and contrast perturbation of an RGB tile.

    Each stain concentration (colour deconvolution) is scaled by ``1 + U(-stain, stain)`` and
    shifted by ``U(-stain, stain)`` optical density; then brightness and contrast change by up
    to ``light`` (relative).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        rng: The random generator.
        stain: Amplitude of the stain perturbation.
        light: Amplitude of the brightness and contrast perturbation.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    conc = OD_LUT[image[..., :3]] @ STAIN_INVERSE
    alpha = 1.0 + rng.uniform(-stain, stain, 3).astype(np.float32)
    beta = rng.uniform(-stain, stain, 3).astype(np.float32)
    rgb = _recompose(conc * alpha + beta)
    contrast = 1.0 + rng.uniform(-light, light)
    bright = 1.0 + rng.uniform(-light, light)
    out: np.ndarray = np.clip(np.rint(_light(rgb, contrast, bright)), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class ColourParams:
    """Amplitudes of :func:`colour_augment` (each change is drawn uniformly in +-amplitude).

    Attributes:
        stain_scale: Relative scaling of each stain concentration.
        stain_shift: Shift of each stain concentration (optical density).
        no_eosin: Probability of removing the eosin (a haematoxylin-only stain).
        hue: Hue rotation, in fractions of the colour circle.
        saturation: Relative saturation change.
        brightness: Relative brightness change.
        contrast: Relative contrast change.
        gamma: Relative gamma change.
        blur: Probability of a Gaussian blur of sigma U(0.3, 1.0) px.
    """

    stain_scale: float = 0.25
    stain_shift: float = 0.05
    no_eosin: float = 0.15
    hue: float = 0.04
    saturation: float = 0.25
    brightness: float = 0.15
    contrast: float = 0.25
    gamma: float = 0.25
    blur: float = 0.2


def colour_augment(
    image: np.ndarray, rng: np.random.Generator, params: ColourParams = ColourParams()
) -> np.ndarray:
    """Strong, seeded colour augmentation of an RGB tile (see :class:`ColourParams`).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        rng: The random generator (the only source of randomness).
        params: The amplitudes.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    p = params
    draws = rng.uniform(-1.0, 1.0, 12).astype(np.float32)
    conc = OD_LUT[np.ascontiguousarray(image[..., :3])] @ STAIN_INVERSE
    scale = 1.0 + p.stain_scale * draws[0:3]
    shift = p.stain_shift * draws[3:6]
    if rng.random() < p.no_eosin:
        scale[1] = 0.0
        shift[1] = 0.0
    rgb = np.clip(_recompose(conc * scale + shift), 0, 255)
    if p.hue or p.saturation:
        hsv = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees
        hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * p.hue * draws[6], 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + p.saturation * draws[7]), 0.0, 1.0)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    gamma = 1.0 + p.gamma * draws[8]
    rgb = 255.0 * np.power(np.clip(rgb, 0, 255) / 255.0, gamma)
    rgb = _light(rgb, 1.0 + p.contrast * draws[9], 1.0 + p.brightness * draws[10])
    if rng.random() < p.blur:
        sigma = 0.65 + 0.35 * float(draws[11])
        rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), sigma)
    out: np.ndarray = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


def random_scale_crop(
    arrays: Sequence[np.ndarray],
    size: int,
    rng: np.random.Generator,
    *,
    scale: float = 0.2,
    nearest: Sequence[bool] = (),
) -> list[np.ndarray]:
    """The same random window of aligned arrays, resized by ``1 + U(-scale, scale)``.

    The window (``size / factor`` px) is cut first, reflect-padded when the arrays are smaller,
    then resized to ``size`` x ``size``.

    Args:
        arrays: ``(H, W, ...)`` arrays of the same height and width.
        size: Edge of the output.
        rng: The random generator.
        scale: Amplitude of the zoom.
        nearest: Per array, True to resize by nearest neighbour (labels, targets); default
            bilinear for the first array and nearest for the others.

    Returns:
        ``(size, size, ...)`` arrays, in order.
    """
    factor = 1.0 + float(rng.uniform(-scale, scale))
    window = max(round(size / factor), 1)
    crops = random_crop(arrays, window, rng)
    if window == size:
        return [np.ascontiguousarray(c) for c in crops]
    flags = list(nearest) or [i > 0 for i in range(len(arrays))]
    out = []
    for crop, near in zip(crops, flags, strict=True):
        if near:  # by indexing: any dtype (int32 labels included)
            out.append(np.ascontiguousarray(resize_labels(crop, (size, size))))
        else:
            resized = cv2.resize(
                np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_LINEAR
            )
            out.append(resized.reshape((size, size, *crop.shape[2:])))
    return out


def random_dihedral(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply one random flip and 90-degree rotation to several aligned ``(H, W, ...)`` arrays."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for array in arrays:
        turned = np.rot90(array, k, axes=(0, 1))
        out.append(np.ascontiguousarray(turned[:, ::-1] if flip else turned))
    return out


def random_crop(
    arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The same random ``size`` x ``size`` window of aligned arrays (reflect-padded if smaller)."""
    height, width = arrays[0].shape[:2]
    pad_y, pad_x = max(size - height, 0), max(size - width, 0)
    if pad_y or pad_x:
        arrays = [
            np.pad(a, ((0, pad_y), (0, pad_x)) + ((0, 0),) * (a.ndim - 2), mode="reflect")
            for a in arrays
        ]
        height, width = height + pad_y, width + pad_x
    y = int(rng.integers(height - size + 1))
    x = int(rng.integers(width - size + 1))
    return [a[y : y + size, x : x + size] for a in arrays]
