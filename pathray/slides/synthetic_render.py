"""Rendering of synthetic H&E pixels for any region, in optical density.

Each pixel's optical density is ``background + H * h_vector + E * e_vector`` (Beer-Lambert),
with the stain vectors taken from typical colours (nuclei about (80, 40, 130), eosin about
(230, 150, 190), glass about (240, 240, 240)), so colour deconvolution
(:func:`skimage.color.rgb2hed`) separates the haematoxylin of the nuclei from the eosin of the
tissue. Haematoxylin comes from the nuclei (per-nucleus darkness, chromatin texture, a darker
rim, a nucleolus in tumour cells) and a faint counterstain that is stronger in tumour nests;
eosin from the tissue, textured by fibres along two directions and finer noise. A mild Gaussian
blur imitates the optics; the writer's JPEG compression does the rest.

The region is rendered with a margin wide enough for both blurs, then cropped, so a region's
pixels do not depend on how the slide is cut into tiles.

Example:
    >>> from pathray.slides.synthetic import SyntheticHE
    >>> he = SyntheticHE(1024, 1024, mpp=0.25, seed=0)
    >>> render_region(he, 256, 256, 64, 64).shape
    (64, 64, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from pathray.slides.synthetic_noise import lattice_noise, value_noise
from pathray.slides.synthetic_nuclei import CELL, CellNuclei
from pathray.slides.synthetic_raster import rasterise

if TYPE_CHECKING:
    from pathray.slides.synthetic import SyntheticHE

F32 = NDArray[np.float32]


def _unit_od(rgb: tuple[float, float, float], minus: float = 0.0) -> NDArray[np.float32]:
    od = -np.log(np.asarray(rgb, dtype=np.float64) / 255.0) - minus
    return (od / np.linalg.norm(od)).astype(np.float32)


GLASS_OD = 0.06  # about (240, 240, 240)
H_VECTOR = _unit_od((80, 40, 130), GLASS_OD)
E_VECTOR = _unit_od((230, 150, 190), GLASS_OD)
EOSIN = 0.53  # optical density of stroma eosin
SIGMA_RIM = 1.5  # px, the blur that shapes the nuclear rim
SIGMA_OPTICS = 0.6  # px, the final blur
SALT_FINE, SALT_FIBRE, SALT_CHROMATIN = 600, 700, 800
GRAIN_OD = 0.025  # amplitude of the per-pixel optical-density noise of the glass

# (grain, H, E) -> log(RGB): log 255 - glass OD - grain noise - H * h_vector - E * e_vector.
_TO_LOG_RGB = np.array(
    [
        [-GRAIN_OD, -H_VECTOR[c], -E_VECTOR[c], math.log(255.0) - GLASS_OD + GRAIN_OD / 2]
        for c in range(3)
    ],
    dtype=np.float32,
)


def _kernel(sigma: float) -> int:
    return 2 * math.ceil(3 * sigma) + 1


MARGIN = (_kernel(SIGMA_RIM) // 2) + (_kernel(SIGMA_OPTICS) // 2) + 1


@dataclass(frozen=True)
class DrawnNuclei:
    """Attributes of the nuclei drawn over a region; row ``k`` is label ``k + 1``.

    Attributes:
        classes: Class index per nucleus.
        darkness: Haematoxylin concentration.
        texture: Chromatin texture amplitude.
        nucleoli: ``(x, y, radius)`` (radius 0: none).
    """

    classes: NDArray[np.int64]
    darkness: NDArray[np.float64]
    texture: NDArray[np.float64]
    nucleoli: NDArray[np.float64]


def nucleus_labels(
    he: SyntheticHE, x: int, y: int, w: int, h: int
) -> tuple[NDArray[np.int32], DrawnNuclei]:
    """Rasterise the nuclei over a region: label image and the attributes of those drawn.

    Pixel ``(i, j)`` is labelled when its centre ``(i + 0.5, j + 0.5)`` lies inside the nucleus
    polygon (:func:`pathray.slides.synthetic_raster.rasterise`), the rule shapely, skimage and
    QuPath use for the GeoJSON polygons.

    Args:
        he: The slide generator.
        x: Left edge (level-0 px).
        y: Top edge.
        w: Width.
        h: Height.

    Returns:
        ``(labels, drawn)``: an ``(h, w)`` int32 image, 0 outside nuclei and ``k + 1`` inside
        the nucleus of row ``k`` of ``drawn``.
    """
    polygons: list[NDArray[np.float64]] = []
    parts: list[tuple[CellNuclei, NDArray[np.intp]]] = []
    for cy in range(max(0, y // CELL), min(he.cells_y, (y + h - 1) // CELL + 1)):
        for cx in range(max(0, x // CELL), min(he.cells_x, (x + w - 1) // CELL + 1)):
            cell = he.cell(cx, cy)
            if not cell.polygons:
                continue
            b = cell.bboxes
            hit = np.flatnonzero(
                (b[:, 2] >= x) & (b[:, 0] <= x + w) & (b[:, 3] >= y) & (b[:, 1] <= y + h)
            )
            if len(hit):
                parts.append((cell, hit))
                polygons.extend(cell.polygons[k] for k in hit)

    def gather(name: str, empty: NDArray[Any]) -> NDArray[Any]:
        if not parts:
            return empty
        return np.concatenate([getattr(cell, name)[hit] for cell, hit in parts])

    drawn = DrawnNuclei(
        classes=gather("classes", np.zeros(0, np.int64)),
        darkness=gather("darkness", np.zeros(0)),
        texture=gather("texture", np.zeros(0)),
        nucleoli=gather("nucleoli", np.zeros((0, 3))),
    )
    return rasterise(polygons, x, y, w, h), drawn


def _tissue_layer(
    he: SyntheticHE, x: int, y: int, w: int, h: int, grain: F32
) -> tuple[F32, F32] | None:
    """Haematoxylin counterstain and eosin of the tissue (None where there is none)."""
    slow = he.layout.slow_fields(x, y, w, h)  # tissue alpha, tumour weight, fibre direction
    alpha, tumour, weight = slow[..., 0], slow[..., 1], slow[..., 2]
    if not alpha.any():
        return None
    um, seed = 1.0 / he.mpp, he.seed
    xs = np.arange(x, x + w, dtype=np.float64) + 0.5
    ys = np.arange(y, y + h, dtype=np.float64) + 0.5
    fine = lattice_noise(x, y, w, h, (2.0 * um, 2.0 * um), seed, SALT_FINE)
    horiz = value_noise(xs, ys, (24.0 * um, 2.5 * um), seed, SALT_FIBRE)
    vert = value_noise(xs, ys, (2.5 * um, 24.0 * um), seed, SALT_FIBRE + 1)
    texture = 0.55 * (vert + weight * (horiz - vert)) + 0.3 * fine + 0.15 * grain
    eosin = (alpha * EOSIN) * (0.45 + 1.1 * texture) * (1.0 - 0.25 * tumour)
    haem = alpha * (0.05 + 0.2 * tumour + 0.04 * fine)
    return haem, eosin


def _nuclei_layer(
    he: SyntheticHE, x: int, y: int, labels: NDArray[np.int32], drawn: DrawnNuclei
) -> tuple[F32, F32]:
    """Nuclear haematoxylin and the (float) nucleus mask of a region."""
    h, w = labels.shape
    darkness = np.concatenate([[0.0], drawn.darkness]).astype(np.float32)
    chroma = np.concatenate([[0.0], 2.0 * drawn.texture]).astype(np.float32)
    nucleoli = np.zeros((h, w), dtype=np.float32)
    for nx, ny, r in drawn.nucleoli[drawn.nucleoli[:, 2] > 0]:
        centre = (round((nx - x - 0.5) * 4), round((ny - y - 0.5) * 4))
        cv2.circle(nucleoli, centre, round(r * 4), 1.0, -1, cv2.LINE_AA, shift=2)
    inside = (labels > 0).astype(np.float32)
    step = 1.0 / he.mpp
    chromatin = lattice_noise(x, y, w, h, (step, step), he.seed, SALT_CHROMATIN) - 0.5
    ks = _kernel(SIGMA_RIM)
    rim = 2.0 * np.maximum(inside - cv2.GaussianBlur(inside, (ks, ks), SIGMA_RIM), 0.0)
    nuc = darkness[labels] * (1.0 + chroma[labels] * chromatin) * (1.0 + rim)
    nuc += 0.9 * nucleoli
    return nuc * inside, inside


def render_region(he: SyntheticHE, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
    """Render the RGB pixels of a level-0 region.

    Args:
        he: The slide generator.
        x: Left edge (level-0 px; may lie outside the slide).
        y: Top edge.
        w: Width in pixels.
        h: Height in pixels.

    Returns:
        ``(h, w, 3)`` uint8 RGB.
    """
    m = MARGIN
    px, py, pw, ph = x - m, y - m, w + 2 * m, h + 2 * m  # the padded region
    grain = he.grain(px, py, pw, ph)
    stains = _tissue_layer(he, px, py, pw, ph, grain)
    labels, drawn = nucleus_labels(he, px, py, pw, ph)
    if len(drawn.classes):
        nuc, inside = _nuclei_layer(he, px, py, labels, drawn)
        if stains is None:
            stains = (nuc, np.zeros_like(nuc))
        else:
            haem, eosin = stains
            stains = (haem * (1.0 - inside) + nuc, eosin * (1.0 - 0.75 * inside))
    ko = _kernel(SIGMA_OPTICS)
    r = ko // 2  # the final blur needs r pixels of context
    crop = (slice(m - r, m + h + r), slice(m - r, m + w + r))
    if stains is None:
        zero = np.zeros((ph, pw), dtype=np.float32)
        stains = (zero, zero)
    layers = cv2.merge([grain[crop], stains[0][crop], stains[1][crop]])
    # rgb = 255 * exp(-(glass + 0.025 * (grain - 0.5) + H * h_vector + E * e_vector))
    linear = cv2.exp(cv2.transform(layers, _TO_LOG_RGB))
    blurred = cv2.GaussianBlur(linear, (ko, ko), SIGMA_OPTICS)
    return np.asarray(cv2.convertScaleAbs(blurred[r : r + h, r : r + w]), dtype=np.uint8)
