"""Stain normalisation of H&E tiles (Macenko), against a reference shipped as a few numbers.

Macenko et al. (ISBI 2009): in optical density (OD) space the tissue pixels of an H&E tile lie
near the plane of its two stain vectors. The plane is the span of the two main eigenvectors of
the OD covariance; the stain vectors are the robust extreme angles (percentiles ``alpha`` and
``100 - alpha``) of the pixels projected on it; haematoxylin is the one that absorbs more red.
Normalisation expresses every pixel as concentrations of the tile's own stains, rescales each
concentration so that its 99th percentile matches the reference's, and recomposes the pixel
with the reference stain vectors.

OD uses the 8-bit lookup of :mod:`pipelines.nuclei.segment` (``-log10((v + 1) / 256)``), so
glass (255) has OD 0 and the reference numbers are in the same units as the classical
segmenter's stain matrix.

A tile with too little stained tissue, or whose two estimated stains are nearly the same colour
(a haematoxylin-only stain), is returned unchanged: forcing two stains onto one would paint
part of the nuclei with eosin.

Example:
    >>> import numpy as np
    >>> tile = np.full((32, 32, 3), 240, np.uint8)
    >>> np.array_equal(normalise_stain(tile), tile)  # glass only: nothing to estimate
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.nuclei.segment import OD_LUT


@dataclass(frozen=True)
class StainReference:
    """Target stains of the normalisation.

    Attributes:
        vectors: ``(2, 3)`` unit OD vectors (RGB) of haematoxylin (row 0) and eosin (row 1).
        max_concentrations: 99th percentile of each stain's concentration.
    """

    vectors: tuple[tuple[float, float, float], tuple[float, float, float]]
    max_concentrations: tuple[float, float]

    def matrix(self) -> np.ndarray:
        """The stain vectors as a ``(2, 3)`` float64 array."""
        return np.asarray(self.vectors, np.float64)


#: Reference fitted with :func:`fit_reference` on the real H&E tiles of the shared data
#: (the 4 DSB 2018 H&E tiles and the 2 CryoNuSeg crops; see ``pipelines/nuclei/train_default.py``).
REFERENCE = StainReference(
    vectors=((0.6296, 0.656, 0.4163), (0.3435, 0.8846, 0.3155)),
    max_concentrations=(1.458, 0.9866),
)

#: Smallest OD (every channel) of a pixel taken as stained tissue.
OD_THRESHOLD = 0.15
#: Fewest stained pixels needed to estimate the stains of a tile.
MIN_PIXELS = 200
#: Smallest angle (degrees) between the two estimated stains of a two-stain tile.
MIN_ANGLE_DEG = 6.0


def optical_density(image: np.ndarray) -> np.ndarray:
    """``(..., 3)`` OD (base 10) of a uint8 RGB array."""
    od: np.ndarray = OD_LUT[np.ascontiguousarray(image[..., :3])]
    return od


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """uint8 RGB of an OD array (the inverse of :func:`optical_density`, clipped)."""
    rgb = 256.0 * np.power(10.0, -np.asarray(od, np.float32), dtype=np.float32) - 1.0
    out: np.ndarray = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


def _stained(image: np.ndarray) -> np.ndarray:
    od = optical_density(image).reshape(-1, 3)
    return od[(od > OD_THRESHOLD).all(axis=1)].astype(np.float64)


def stain_vectors_of_od(od: np.ndarray, *, alpha: float = 1.0) -> np.ndarray | None:
    """Macenko stain vectors of stained-pixel ODs.

    Args:
        od: ``(N, 3)`` OD of stained pixels.
        alpha: Percentile of the extreme angles (robust to outliers).

    Returns:
        ``(2, 3)`` unit vectors (haematoxylin, eosin), or None when the pixels are too few or
        their two extreme colours are less than :data:`MIN_ANGLE_DEG` apart.
    """
    if len(od) < MIN_PIXELS:
        return None
    _, eigenvectors = np.linalg.eigh(np.cov(od.T))
    plane = eigenvectors[:, 1:3]  # the two largest (eigh sorts ascending)
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [alpha, 100.0 - alpha])
    if np.degrees(high - low) < MIN_ANGLE_DEG:
        return None
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    pair = [v * np.sign(v.sum()) / np.linalg.norm(v) for v in (first, second)]
    # haematoxylin (blue-purple) absorbs more red than eosin (pink)
    if pair[0][0] < pair[1][0]:
        pair.reverse()
    return np.stack(pair)


def stain_vectors(image: np.ndarray, *, alpha: float = 1.0) -> np.ndarray | None:
    """Macenko stain vectors of an RGB tile (see :func:`stain_vectors_of_od`)."""
    return stain_vectors_of_od(_stained(image), alpha=alpha)


def concentrations(od: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Least-squares stain concentrations ``(N, 2)`` of ODs ``(N, 3)`` for ``(2, 3)`` stains."""
    out: np.ndarray = od @ np.linalg.pinv(vectors)
    return out


def fit_reference(images: Sequence[np.ndarray], *, alpha: float = 1.0) -> StainReference:
    """Fit a reference on the pooled stained pixels of several H&E tiles.

    Args:
        images: uint8 RGB tiles.
        alpha: See :func:`stain_vectors_of_od`.

    Returns:
        The reference (rounded to 4 decimals, as it is shipped).

    Raises:
        ValueError: If the tiles do not show two stains.
    """
    od = np.concatenate([_stained(image) for image in images])
    vectors = stain_vectors_of_od(od, alpha=alpha)
    if vectors is None:
        raise ValueError("images must show two stains (H&E). Got too few or one-stain pixels.")
    top = np.percentile(concentrations(od, vectors), 99, axis=0)
    rounded = np.round(vectors, 4)
    return StainReference(
        vectors=(
            (float(rounded[0, 0]), float(rounded[0, 1]), float(rounded[0, 2])),
            (float(rounded[1, 0]), float(rounded[1, 1]), float(rounded[1, 2])),
        ),
        max_concentrations=(round(float(top[0]), 4), round(float(top[1]), 4)),
    )


def normalise_stain(
    image: np.ndarray, reference: StainReference = REFERENCE, *, alpha: float = 1.0
) -> np.ndarray:
    """Map an H&E tile's stains onto the reference's (Macenko).

    Args:
        image: ``(H, W, 3|4)`` uint8 RGB (an alpha channel is dropped).
        reference: The target stains.
        alpha: See :func:`stain_vectors_of_od`.

    Returns:
        ``(H, W, 3)`` uint8; the RGB input itself (copied) when its stains cannot be estimated.
    """
    rgb = np.ascontiguousarray(image[..., :3])
    stained = _stained(rgb)
    vectors = stain_vectors_of_od(stained, alpha=alpha)
    if vectors is None:
        return rgb.copy()
    top = np.percentile(concentrations(stained, vectors), 99, axis=0)
    scale = np.asarray(reference.max_concentrations) / np.maximum(top, 1e-6)
    od = optical_density(rgb).reshape(-1, 3).astype(np.float64)
    conc = concentrations(od, vectors) * scale
    return od_to_rgb(conc @ reference.matrix()).reshape(rgb.shape)
