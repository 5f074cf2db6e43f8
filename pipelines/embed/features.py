"""Fixed-length descriptors of a tile: stain colour, texture and the nucleus U-Net's encoder.

Each block is L2-normalised on its own, so that no block outweighs another by its scale, and the
concatenation is L2-normalised again by the unit: cosine similarity and Euclidean distance then
rank neighbours alike.

- :func:`colour_features` (:data:`COLOUR_DIM` values): histograms of the hematoxylin and eosin
  concentrations (Ruifrok and Johnston's colour deconvolution) over the tissue pixels, their
  means and spreads, the mean RGB of the tissue and the tissue fraction.
- :func:`texture_features` (:data:`TEXTURE_DIM`): rotation-invariant uniform local binary pattern
  histograms at two radii and grey-level co-occurrence statistics at two distances.
- :func:`encoder_features` (:data:`ENCODER_DIM`): the shipped nucleus U-Net's encoder activations,
  averaged over the tile at each level.

Histograms enter as square roots (the Hellinger embedding), so that Euclidean distance between
them behaves like a distance between distributions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.color import rgb2hed
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

#: Bins of the hematoxylin and the eosin histograms, and their upper ends (concentrations).
STAIN_BINS = 14
STAIN_RANGES = ((0.0, 0.3), (0.0, 0.15))
#: Colour block: two stain histograms, their means and spreads, mean RGB, tissue fraction.
COLOUR_DIM = 2 * STAIN_BINS + 4 + 3 + 1
#: Local binary patterns: (points, radius) pairs; a uniform pattern of P points has P + 2 codes.
LBP_SCALES = ((8, 1.0), (8, 3.0))
GLCM_DISTANCES = (1, 3)
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
GLCM_LEVELS = 16
TEXTURE_DIM = sum(p + 2 for p, _ in LBP_SCALES) + len(GLCM_DISTANCES) * len(GLCM_PROPS)
#: Feature channels of the shipped U-Net's encoder levels (its ``channels`` config).
ENCODER_CHANNELS = (16, 32, 64)
ENCODER_DIM = sum(ENCODER_CHANNELS)
HAND_DIM = COLOUR_DIM + TEXTURE_DIM


def unit_norm(values: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (rows of zeros stay zero).

    Args:
        values: ``(N, D)`` or ``(D,)`` array.

    Returns:
        float32 array of the same shape.
    """
    values = np.asarray(values, np.float32)
    norm = np.linalg.norm(values, axis=-1, keepdims=True)
    return np.divide(values, norm, out=np.zeros_like(values), where=norm > 0)


def _histogram(values: np.ndarray, bins: int, value_range: tuple[float, float]) -> np.ndarray:
    counts, _ = np.histogram(np.clip(values, *value_range), bins=bins, range=value_range)
    total = counts.sum()
    return np.sqrt(counts / total) if total else np.zeros(bins)


def colour_features(image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Stain colour of one tile's tissue.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        tissue: ``(H, W)`` bool, the tile's tissue pixels.

    Returns:
        ``(COLOUR_DIM,)`` float32, unit norm (zeros for a tile without tissue).
    """
    tissue = np.asarray(tissue, bool)
    if not tissue.any():
        return np.zeros(COLOUR_DIM, np.float32)
    rgb = np.asarray(image)[..., :3]
    hed = rgb2hed(rgb)[tissue]
    parts = []
    for channel, value_range in enumerate(STAIN_RANGES):
        parts.append(_histogram(hed[:, channel], STAIN_BINS, value_range))
    spans = np.array([r[1] for r in STAIN_RANGES])
    stats = np.concatenate([hed[:, :2].mean(axis=0) / spans, hed[:, :2].std(axis=0) / spans])
    parts += [stats, rgb[tissue].mean(axis=0) / 255.0, np.array([tissue.mean()])]
    return unit_norm(np.concatenate(parts))


def texture_features(image: np.ndarray) -> np.ndarray:
    """Texture of one tile's grey levels.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.

    Returns:
        ``(TEXTURE_DIM,)`` float32, unit norm.
    """
    rgb = np.asarray(image)[..., :3].astype(np.float32)
    grey = (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    parts = []
    for points, radius in LBP_SCALES:
        codes = local_binary_pattern(grey, points, radius, method="uniform")
        parts.append(_histogram(codes, points + 2, (0, points + 2)))
    levels = (grey // (256 // GLCM_LEVELS)).astype(np.uint8)
    angles = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
    glcm = graycomatrix(levels, GLCM_DISTANCES, angles, levels=GLCM_LEVELS, normed=True)
    for prop in GLCM_PROPS:
        values = graycoprops(glcm, prop).mean(axis=1)  # per distance, averaged over angles
        if prop == "contrast":
            values = np.log1p(values) / np.log1p((GLCM_LEVELS - 1) ** 2)
        elif prop == "correlation":
            values = (np.nan_to_num(values, nan=1.0) + 1.0) / 2.0
        parts.append(values)
    return unit_norm(np.concatenate(parts))


def encoder_features(model: Any, images: np.ndarray) -> np.ndarray:
    """The U-Net encoder's activations, averaged per level, for tiles at the model's resolution.

    Args:
        model: A U-Net of :func:`pipelines.nuclei.unet.build_unet` (its ``down`` blocks and
            ``pool``), in eval mode.
        images: ``(N, H, W, 3)`` uint8 RGB.

    Returns:
        ``(N, ENCODER_DIM)`` float32, each row of unit norm.
    """
    import torch

    from pipelines.nuclei.unet import to_tensor

    pooled = []
    with torch.inference_mode():
        x = to_tensor(np.asarray(images)[..., :3])
        for i, layer in enumerate(model.down):
            x = layer(x if i == 0 else model.pool(x))
            pooled.append(x.mean(dim=(2, 3)))
    return unit_norm(torch.cat(pooled, dim=1).numpy())


__all__ = [
    "COLOUR_DIM",
    "ENCODER_DIM",
    "HAND_DIM",
    "TEXTURE_DIM",
    "colour_features",
    "encoder_features",
    "texture_features",
    "unit_norm",
]
