"""Nuclei of a synthetic slide: classes, shapes and their placement, one grid cell at a time.

The slide is cut into square cells (``CELL`` level-0 pixels). The nuclei of a cell depend only
on ``(seed, cell_x, cell_y)`` and on the tissue layout at their own positions, and every nucleus
lies entirely inside its cell, so a tile needs only the cells it overlaps and the ground truth
can be streamed cell by cell. Within a cell, candidates (a Poisson number, uniform positions)
are thinned by tissue (every vertex inside tissue), by class density, and by random sequential
adsorption: a candidate whose bounding circle meets an accepted one is dropped, so nuclei never
overlap (neighbours may touch).

Vertices are multiples of 1/4 px in the pixel-corner convention of GeoJSON/QuPath (pixel
``(i, j)`` covers ``[i, i+1) x [j, j+1)``); :mod:`pathray.slides.synthetic_render` fills pixel
``(i, j)`` when its centre ``(i + 0.5, j + 0.5)`` lies inside the polygon.

Example:
    >>> from pathray.slides.synthetic_tissue import TissueLayout
    >>> layout = TissueLayout(2048, 2048, mpp=0.25, seed=0, tissue_fraction=0.6)
    >>> cell = place_cell_nuclei(layout, 2, 2, seed=0, classes=CLASSES, nuclei_per_mm2=2500)
    >>> len(cell.polygons) == len(cell.classes)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pathray.slides.synthetic_tissue import TissueLayout

F64 = NDArray[np.float64]

#: Edge of a placement cell in level-0 pixels.
CELL = 512


@dataclass(frozen=True)
class NucleusClass:
    """Appearance and frequency of one nucleus class.

    Attributes:
        name: Class name written to the ground truth.
        color: QuPath display colour ``(r, g, b)``.
        length_um: Range of the long axis in microns.
        aspect: Range of short axis / long axis.
        irregularity: Amplitude of the boundary's low harmonics (0: a perfect ellipse).
        darkness: Haematoxylin concentration (optical-density units).
        texture: Relative amplitude of the chromatin texture.
        density: Relative density of candidate nuclei of this class.
        vertices: Polygon vertex count.
        nucleolus: Whether a dark nucleolus is drawn.
    """

    name: str
    color: tuple[int, int, int]
    length_um: tuple[float, float]
    aspect: tuple[float, float]
    irregularity: float
    darkness: float
    texture: float
    density: float
    vertices: int
    nucleolus: bool = False


#: The known classes: tumour (large, irregular, pale, nucleolus), lymphocyte (small, round,
#: dark, crowded in aggregates) and stroma (elongated fibroblasts along the fibres).
CLASSES: dict[str, NucleusClass] = {
    "tumor": NucleusClass(
        "tumor", (200, 0, 0), (10.0, 14.0), (0.65, 0.95), 0.07, 1.45, 0.45, 1.0, 24, True
    ),
    "lymphocyte": NucleusClass(
        "lymphocyte", (160, 90, 160), (6.0, 8.0), (0.85, 1.0), 0.025, 2.3, 0.1, 3.0, 16
    ),
    "stroma": NucleusClass(
        "stroma", (150, 200, 150), (12.0, 20.0), (0.2, 0.35), 0.03, 1.9, 0.15, 0.4, 20
    ),
}


@dataclass
class CellNuclei:
    """The nuclei of one placement cell.

    Attributes:
        cell: ``(cell_x, cell_y)``.
        polygons: One ``(n, 2)`` float64 array of vertices (level-0 px, open ring) per nucleus.
        classes: Index into the slide's class tuple, per nucleus.
        darkness: Haematoxylin concentration, per nucleus.
        texture: Chromatin texture amplitude, per nucleus.
        nucleoli: ``(x, y, radius)`` per nucleus (radius 0: none).
        bboxes: ``(x0, y0, x1, y1)`` per nucleus.
    """

    cell: tuple[int, int]
    polygons: list[F64] = field(default_factory=list)
    classes: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    darkness: F64 = field(default_factory=lambda: np.zeros(0))
    texture: F64 = field(default_factory=lambda: np.zeros(0))
    nucleoli: F64 = field(default_factory=lambda: np.zeros((0, 3)))
    bboxes: F64 = field(default_factory=lambda: np.zeros((0, 4)))


def _class_probabilities(tumour: F64, lymph: F64, specs: list[NucleusClass]) -> F64:
    """Per-candidate class probabilities from the tumour and lymphocyte fields."""

    def sigmoid(v: F64) -> F64:
        out: F64 = 1.0 / (1.0 + np.exp(-v))
        return out

    weight = {
        "tumor": 0.03 + sigmoid((tumour - 0.5) * 25.0),
        "lymphocyte": 0.02 + 0.9 * sigmoid((lymph - 0.66) * 25.0),
        "stroma": np.full_like(tumour, 0.25),
    }
    columns = [weight[s.name] for s in specs]
    probs = np.stack(columns, axis=1)
    out: F64 = probs / probs.sum(axis=1, keepdims=True)
    return out


def _polygons(
    draws: F64,
    cls: NDArray[np.int64],
    centre: F64,
    angle: F64,
    specs: list[NucleusClass],
    mpp: float,
) -> tuple[list[F64], F64]:
    """Vertices (level-0 px, on the 1/4 px lattice) and bounding radius of each nucleus.

    ``draws`` holds 8 uniform numbers per nucleus: length, aspect, 3 harmonic phases and
    3 harmonic amplitudes.
    """
    n = len(cls)
    polygons: list[F64] = [np.zeros((0, 2))] * n
    radii = np.zeros(n)
    for k, spec in enumerate(specs):
        sel = np.flatnonzero(cls == k)
        if not len(sel):
            continue
        u = draws[sel]
        length = (spec.length_um[0] + u[:, 0] * (spec.length_um[1] - spec.length_um[0])) / mpp
        aspect = spec.aspect[0] + u[:, 1] * (spec.aspect[1] - spec.aspect[0])
        theta = np.linspace(0.0, 2.0 * np.pi, spec.vertices, endpoint=False)[None, :]
        r = np.ones((len(sel), spec.vertices))
        for h in range(3):
            amp = spec.irregularity * (u[:, 5 + h] - 0.5) * 3.4 / (h + 1)
            r += amp[:, None] * np.cos((h + 2) * theta + 2.0 * np.pi * u[:, 2 + h, None])
        r = np.clip(r, 0.6, 1.4)
        ex = 0.5 * length[:, None] * r * np.cos(theta)
        ey = 0.5 * (length * aspect)[:, None] * r * np.sin(theta)
        c, s = np.cos(angle[sel])[:, None], np.sin(angle[sel])[:, None]
        vx = np.round((centre[sel, 0, None] + ex * c - ey * s) * 4.0) / 4.0
        vy = np.round((centre[sel, 1, None] + ex * s + ey * c) * 4.0) / 4.0
        radii[sel] = np.hypot(ex, ey).max(axis=1) + 0.25
        block = np.stack([vx, vy], axis=2)
        for j, i in enumerate(sel):
            polygons[i] = block[j]
    return polygons, radii


def place_cell_nuclei(
    layout: TissueLayout,
    cell_x: int,
    cell_y: int,
    *,
    seed: int,
    classes: dict[str, NucleusClass] | tuple[NucleusClass, ...],
    nuclei_per_mm2: float,
) -> CellNuclei:
    """Place the nuclei of one cell (deterministic in ``(seed, cell_x, cell_y)``).

    Args:
        layout: The slide's tissue layout.
        cell_x: Cell column (``x // CELL``).
        cell_y: Cell row.
        seed: The slide's seed.
        classes: The enabled nucleus classes, in the slide's class order.
        nuclei_per_mm2: Density of candidate nuclei of relative density 1 (tumour); the
            realised density is lower (tissue, class thinning and overlap rejection).

    Returns:
        The cell's :class:`CellNuclei`.
    """
    specs = list(classes.values()) if isinstance(classes, dict) else list(classes)
    out = CellNuclei((cell_x, cell_y))
    x0, y0 = cell_x * CELL, cell_y * CELL
    x1, y1 = min(x0 + CELL, layout.width), min(y0 + CELL, layout.height)
    if x1 <= x0 or y1 <= y0 or not specs:
        return out
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, cell_x, cell_y, 77]))
    top = max(s.density for s in specs)
    area_mm2 = (x1 - x0) * (y1 - y0) * (layout.mpp * 1e-3) ** 2
    n = int(rng.poisson(nuclei_per_mm2 * top * area_mm2))
    if n == 0:
        return out
    # All draws happen up front for every candidate, so the stream never depends on which
    # candidates survive.
    # Columns: 0-1 position, 2 class, 3 density thinning, 4 angle, 5-12 shape (see
    # _polygons), 13 darkness, 14 texture, 15-16 nucleolus offset.
    draws = rng.random((n, 17))
    cx = x0 + draws[:, 0] * (x1 - x0)
    cy = y0 + draws[:, 1] * (y1 - y0)
    tumour, lymph, orient = layout.class_fields_points(cx, cy)
    probs = _class_probabilities(tumour, lymph, specs)
    cls = np.minimum((draws[:, 2, None] > np.cumsum(probs, axis=1)).sum(axis=1), len(specs) - 1)
    density = np.array([s.density / top for s in specs])[cls]
    idx = np.flatnonzero(draws[:, 3] < density)
    if len(idx):
        field_c = layout.tissue_field_points(cx[idx], cy[idx])
        idx = idx[field_c > layout.threshold + layout.edge]
    if not len(idx):
        return out
    # Stroma nuclei follow the fibres; others take a random angle.
    stroma = np.array([s.name == "stroma" for s in specs])[cls[idx]]
    angle = np.where(stroma, orient[idx] + (draws[idx, 4] - 0.5) * 0.6, draws[idx, 4] * 2 * np.pi)
    centre = np.stack([cx[idx], cy[idx]], axis=1)
    verts, radii = _polygons(draws[idx, 5:], cls[idx], centre, angle, specs, layout.mpp)
    all_v = np.concatenate(verts)
    inside = layout.tissue_field_points(all_v[:, 0], all_v[:, 1]) > layout.threshold + layout.edge
    # Every vertex in tissue and inside the cell: a nucleus never leaves its cell.
    inside &= (all_v[:, 0] >= x0) & (all_v[:, 0] <= x1 - 1) & (all_v[:, 1] >= y0)
    inside &= all_v[:, 1] <= y1 - 1
    starts = np.cumsum([0, *[len(v) for v in verts[:-1]]])
    in_tissue = np.logical_and.reduceat(inside, starts)
    # Random sequential adsorption on bounding circles, in candidate order.
    d = np.hypot(centre[:, 0, None] - centre[None, :, 0], centre[:, 1, None] - centre[None, :, 1])
    conflict = d < radii[:, None] + radii[None, :]
    accepted = np.zeros(len(idx), dtype=bool)
    for j in np.flatnonzero(in_tissue):
        if not (conflict[j] & accepted).any():
            accepted[j] = True
    final = np.flatnonzero(accepted)
    if not len(final):
        return out
    out.polygons = [verts[j] for j in final]
    out.classes = cls[idx[final]].astype(np.int64)
    jitter = draws[idx[final]]
    out.darkness = np.array([specs[c].darkness for c in out.classes]) * (0.85 + 0.3 * jitter[:, 13])
    out.texture = np.array([specs[c].texture for c in out.classes]) * (0.8 + 0.4 * jitter[:, 14])
    has_nucleolus = np.array([specs[c].nucleolus for c in out.classes])
    offset = (jitter[:, 15:17] - 0.5) * radii[final, None] * 0.3
    out.nucleoli = np.column_stack(
        [centre[final] + offset, np.where(has_nucleolus, 0.9 / layout.mpp, 0.0)]
    )
    out.bboxes = np.array(
        [[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in out.polygons]
    )
    return out
