"""Classical nucleus instance segmentation of H&E (or haematoxylin-only) tiles.

No training and no randomness. The steps, every length given in microns and converted with the
tile's ``mpp`` so that one parameter set serves 0.25 and 0.5 um/px alike:

1. Colour deconvolution with a fixed stain matrix (Ruifrok & Johnston) into haematoxylin
   optical density, smoothed.
2. Contrast against the local background: a white top-hat (the density minus its morphological
   opening by a disk larger than a nucleus), computed at a quarter of the resolution.
3. A two-part adaptive threshold: contrast above an absolute floor (so a tile without nuclei
   yields nothing) and above a fraction of the strongest contrast nearby (so a pale nucleus keeps
   its pale rim and the halo of a dark one is not taken for nucleus).
4. Opening, hole filling.
5. Markers: local maxima of a surface that adds the distance to the background (microns) and the
   locally normalised contrast; a seeded watershed on that surface splits touching nuclei. A
   piece too thin to hold a marker (narrower than ``2 * marker_min_um``) is dropped.
6. Neighbours separated by a shallow saddle (less than ``merge_depth_um``) are merged again;
   instances outside the plausible area range are dropped.

Local maxima ("the largest value within r") use a square of the same area as the disk of radius
``r``: OpenCV dilates by a rectangle in constant time per pixel, by a disk in time proportional
to its size, and the results are the same to within 0.01 F1.

The scale matters: give the true resolution of the pixels. Told 0.7x or 1.4x the true ``mpp``,
the object F1 on the real sets moves by up to 0.2 (mostly down); told 4x, it collapses.

Example:
    >>> import numpy as np
    >>> image = np.full((64, 64, 3), 235, np.uint8)
    >>> int(segment_nuclei(image, mpp=0.5).max())
    0
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np
from skimage.segmentation import watershed

from pipelines.nuclei.merge import merge_shallow_basins

#: Optical-density (RGB) vectors of haematoxylin, eosin and a residual channel (Ruifrok & Johnston).
STAIN_MATRIX = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
#: Inverse of :data:`STAIN_MATRIX`: optical density -> stain concentrations.
STAIN_INVERSE = np.linalg.inv(STAIN_MATRIX).astype(np.float32)
#: Optical density (base 10) of each 8-bit intensity, ``-log10((v + 1) / 256)``.
OD_LUT = (-np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)
#: Per-channel lookup tables giving each channel's share of the haematoxylin density.
_HEM_LUTS = tuple((OD_LUT * STAIN_INVERSE[c, 0]).astype(np.float32) for c in range(3))
#: Resolution reduction of the background estimate (it only needs to be smooth).
_BACKGROUND_FACTOR = 4


@dataclass(frozen=True)
class SegmentParams:
    """Parameters of :func:`segment_nuclei`; lengths in microns, areas in square microns.

    The defaults were tuned once, by coordinate search, for the mean object F1 over three real
    sets of different stains and scales (DSB 2018 H&E, DSB 2018 haematoxylin-only, CryoNuSeg
    frozen H&E; median nucleus about 17 um2), with the synthetic slides (nuclei of 30-130 um2)
    kept above 0.92; see ``benchmarks/nuclei_quality.py``.

    Attributes:
        smooth_sigma_um: Gaussian sigma applied to the haematoxylin density.
        background_radius_um: Radius of the opening that estimates the local background (must
            exceed the radius of the largest nucleus).
        min_contrast_od: Absolute floor of the contrast (optical density above the local
            background): a tile with no nuclei yields (almost) nothing.
        relative_threshold: A pixel is nucleus when its contrast exceeds this fraction of the
            largest contrast within ``peak_radius_um``.
        peak_radius_um: Neighbourhood of that local maximum.
        open_radius_um: Radius of the opening that removes thin strands and specks.
        min_distance_um: Minimum distance between two markers.
        marker_min_um: Minimum distance to the background of a marker (half the thinnest
            nucleus).
        intensity_weight_um: Weight of the locally normalised contrast (0..1) in the watershed
            surface, in microns of distance; 0 splits on shape alone.
        marker_sigma_um: Gaussian sigma applied to the watershed surface.
        merge_depth_um: Neighbouring basins whose saddle is less than this below the lower
            of their two peaks (surface units) are merged; 0 disables merging.
        min_area_um2: Smallest nucleus kept.
        max_area_um2: Largest nucleus kept.
    """

    smooth_sigma_um: float = 0.5
    background_radius_um: float = 5.0
    min_contrast_od: float = 0.12
    relative_threshold: float = 0.35
    peak_radius_um: float = 2.0
    open_radius_um: float = 0.5
    min_distance_um: float = 1.5
    marker_min_um: float = 1.0
    intensity_weight_um: float = 4.0
    marker_sigma_um: float = 0.5
    merge_depth_um: float = 0.5
    min_area_um2: float = 4.0
    max_area_um2: float = 400.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0. Got {value!r} instead.")
        for name in ("background_radius_um", "min_distance_um", "peak_radius_um"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive. Got {getattr(self, name)!r} instead.")
        if self.max_area_um2 <= self.min_area_um2:
            raise ValueError(
                "max_area_um2 must exceed min_area_um2. "
                f"Got {self.max_area_um2!r} <= {self.min_area_um2!r} instead."
            )


def stain_densities(image: np.ndarray) -> np.ndarray:
    """Deconvolve an RGB tile into haematoxylin, eosin and residual optical densities.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (an alpha channel is ignored).

    Returns:
        ``(H, W, 3)`` float32 stain concentrations (optical density, base 10).
    """
    od = OD_LUT[np.ascontiguousarray(image[..., :3])]
    densities: np.ndarray = od @ STAIN_INVERSE
    return densities


def hematoxylin_density(image: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density of an RGB tile (the first column of the deconvolution).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.

    Returns:
        ``(H, W)`` float32.
    """
    r, g, b = _HEM_LUTS
    hem: np.ndarray = r[image[..., 0]] + g[image[..., 1]] + b[image[..., 2]]
    return hem


def _disk(radius_px: float) -> np.ndarray:
    r = max(round(radius_px), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _local_max(image: np.ndarray, radius_px: float) -> np.ndarray:
    """Grey dilation by the square of the same area as a disk of ``radius_px`` (separable, fast)."""
    half = max(round(radius_px * np.sqrt(np.pi) / 2), 1)
    out: np.ndarray = cv2.dilate(image, np.ones((2 * half + 1, 2 * half + 1), np.uint8))
    return out


def local_contrast(hem: np.ndarray, *, mpp: float, radius_um: float) -> np.ndarray:
    """White top-hat of the haematoxylin density: its height above the local background.

    The background is the morphological opening by a disk of ``radius_um``, computed at a
    quarter of the resolution, smoothed and brought back to full size.

    Args:
        hem: ``(H, W)`` float32 haematoxylin density.
        mpp: Microns per pixel.
        radius_um: Radius of the opening disk.

    Returns:
        ``(H, W)`` float32 contrast (can be slightly negative).
    """
    height, width = hem.shape
    factor = _BACKGROUND_FACTOR if min(height, width) >= 4 * _BACKGROUND_FACTOR else 1
    small = hem
    if factor > 1:
        size = (max(width // factor, 1), max(height // factor, 1))
        small = cv2.resize(hem, size, interpolation=cv2.INTER_AREA)
    radius = max(radius_um / mpp / factor, 1.0)
    background = cv2.morphologyEx(small, cv2.MORPH_OPEN, _disk(radius))
    background = cv2.GaussianBlur(background, (0, 0), radius / 2)
    if factor > 1:
        background = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
    contrast: np.ndarray = hem - background
    return contrast


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a binary mask (background not 4-connected to the border).

    Args:
        mask: ``(H, W)`` uint8 or bool.

    Returns:
        ``(H, W)`` uint8 in {0, 1}.
    """
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    padded[1:-1, 1:-1] = mask.astype(bool)
    cv2.floodFill(padded, None, (0, 0), 2, flags=4)
    filled: np.ndarray = (padded[1:-1, 1:-1] != 2).astype(np.uint8)
    return filled


def nucleus_mask(
    image: np.ndarray, *, mpp: float, params: SegmentParams
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground (nucleus) mask and the normalised contrast of a tile.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mpp: Microns per pixel.
        params: The segmentation parameters.

    Returns:
        ``(mask, normalised)``: ``(H, W)`` uint8 {0, 1} nucleus pixels, and ``(H, W)`` float32
        contrast divided by its local maximum (0..1), used to place and split instances.
    """
    hem = hematoxylin_density(image)
    if params.smooth_sigma_um > 0:
        hem = cv2.GaussianBlur(hem, (0, 0), params.smooth_sigma_um / mpp)
    contrast = local_contrast(hem, mpp=mpp, radius_um=params.background_radius_um)
    peak = _local_max(contrast, params.peak_radius_um / mpp)
    mask = (contrast > params.min_contrast_od) & (contrast > params.relative_threshold * peak)
    mask8: np.ndarray = mask.astype(np.uint8)
    if params.open_radius_um > 0:
        mask8 = cv2.morphologyEx(mask8, cv2.MORPH_OPEN, _disk(params.open_radius_um / mpp))
    normalised = np.clip(contrast, 0, None) / np.maximum(peak, max(params.min_contrast_od, 1e-3))
    return fill_holes(mask8), normalised.astype(np.float32)


def split_instances(
    mask: np.ndarray, normalised: np.ndarray, *, mpp: float, params: SegmentParams
) -> np.ndarray:
    """Split a nucleus mask into instances with a seeded watershed.

    Args:
        mask: ``(H, W)`` uint8 {0, 1} nucleus pixels.
        normalised: ``(H, W)`` float32 locally normalised contrast (0..1).
        mpp: Microns per pixel.
        params: The segmentation parameters.

    Returns:
        ``(H, W)`` int32 labels (not renumbered).
    """
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5) * np.float32(mpp)
    surface = dist + np.float32(params.intensity_weight_um) * normalised * mask
    if params.marker_sigma_um > 0:
        surface = cv2.GaussianBlur(surface, (0, 0), params.marker_sigma_um / mpp)
    is_peak = surface >= _local_max(surface, params.min_distance_um / mpp)
    is_peak &= (dist > params.marker_min_um) & (mask > 0)
    count, markers = cv2.connectedComponents(is_peak.astype(np.uint8), connectivity=8)
    labels: np.ndarray = watershed(-surface, markers, mask=mask > 0)
    if params.merge_depth_um > 0 and count > 2:
        rows, cols = np.nonzero(markers)
        peaks = np.full(count, -np.inf)
        np.maximum.at(peaks, markers[rows, cols], surface[rows, cols])
        labels = merge_shallow_basins(labels, surface, params.merge_depth_um, peaks)
    return labels.astype(np.int32, copy=False)


def segment_nuclei(
    image: np.ndarray,
    *,
    mpp: float,
    tissue_mask: np.ndarray | None = None,
    params: SegmentParams | None = None,
) -> np.ndarray:
    """Segment the nuclei of an RGB tile into instances.

    Args:
        image: ``(H, W, 3)`` uint8 RGB tile (an alpha channel is ignored).
        mpp: Microns per pixel of the tile.
        tissue_mask: ``(H, W)`` bool, True on tissue; pixels outside it are never nuclei.
            None: everywhere (glass yields no nuclei anyway: it has no haematoxylin contrast).
        params: Algorithm parameters; the defaults when None.

    Returns:
        ``(H, W)`` int32 label image: 0 is background, ``1..N`` the nuclei, numbered in
        raster order of their watershed seeds.

    Raises:
        ValueError: If the image is not ``(H, W, 3|4)`` uint8, ``mpp`` is not positive, or the
            tissue mask does not match the image.

    Example:
        >>> import numpy as np
        >>> image = np.full((80, 80, 3), (240, 200, 220), np.uint8)
        >>> yy, xx = np.mgrid[:80, :80]
        >>> image[(yy - 40) ** 2 + (xx - 40) ** 2 < 8**2] = (70, 40, 130)
        >>> int(segment_nuclei(image, mpp=0.5).max())
        1
    """
    params = params or SegmentParams()
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 RGB array. Got {image.shape} {image.dtype} instead."
        )
    if not mpp > 0:
        raise ValueError(f"mpp must be positive. Got {mpp!r} instead.")
    if tissue_mask is not None and tissue_mask.shape != image.shape[:2]:
        raise ValueError(
            f"tissue_mask must have the image's shape {image.shape[:2]}. "
            f"Got {tissue_mask.shape} instead."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        return np.zeros(image.shape[:2], np.int32)
    mask, normalised = nucleus_mask(image, mpp=mpp, params=params)
    if tissue_mask is not None:
        mask &= np.asarray(tissue_mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    labels = split_instances(mask, normalised, mpp=mpp, params=params)
    return filter_and_renumber(labels, mpp=mpp, params=params)


def filter_and_renumber(labels: np.ndarray, *, mpp: float, params: SegmentParams) -> np.ndarray:
    """Drop instances outside the plausible area range; renumber the rest ``1..N`` in label order.

    Args:
        labels: ``(H, W)`` integer labels (0 background).
        mpp: Microns per pixel.
        params: Supplies ``min_area_um2`` and ``max_area_um2``.

    Returns:
        ``(H, W)`` int32 labels.
    """
    areas = np.bincount(labels.ravel()) * (mpp * mpp)
    keep = (areas >= params.min_area_um2) & (areas <= params.max_area_um2)
    keep[0] = False
    lut = np.zeros(len(areas), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    out: np.ndarray = lut[labels]
    return out
