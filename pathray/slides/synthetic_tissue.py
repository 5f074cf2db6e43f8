"""The tissue layout of a synthetic slide: where tissue lies and which kind of tissue it is.

All fields are deterministic functions of absolute level-0 coordinates (see
:mod:`pathray.slides.synthetic_noise`), evaluable on any region, on a separable grid (for
rendering) or at scattered points (for placing nuclei), and both give the same values.

- *tissue field*: fractal value noise at a scale tied to the slide size (so even a small slide
  shows tissue and background), lowered near the slide's border; tissue is where it exceeds a
  threshold chosen so that about ``tissue_fraction`` of the slide is tissue.
- *tumour field* and *lymphocyte field*: mid-frequency noise that make tumour nests and
  lymphocyte aggregates; the rest of the tissue is stroma.
- *orientation field*: the local direction of stroma fibres (and of fibroblast nuclei).

Example:
    >>> layout = TissueLayout(2048, 2048, mpp=0.25, seed=0, tissue_fraction=0.5)
    >>> mask = layout.tissue_mask(0, 0, 2048, 2048, downsample=16)
    >>> mask.shape, bool(0.3 < mask.mean() < 0.7)
    ((128, 128), True)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from pathray.slides.synthetic_noise import (
    coarse_window,
    fractal_noise,
    hash_uniform,
    upsample_window,
    value_noise,
)

F64 = NDArray[np.float64]
Field = NDArray[np.floating[Any]]

SALT_TISSUE, SALT_TUMOUR, SALT_LYMPH, SALT_ORIENT = 100, 200, 300, 400
_STRIDE = 8  # px between samples of the slow fields when rendering
_BLOCK, _PAD = 128, 8  # cached blocks of slow-field samples (1024 px), with overlap


def _smooth(t: F64) -> F64:
    out: F64 = t * t * (3.0 - 2.0 * t)
    return out


def _noise_points(x: F64, y: F64, spacing: float, seed: int, salt: int) -> F64:
    """Value noise at scattered points; the same arithmetic as ``value_noise`` on a grid."""
    sx, sy = x / spacing, y / spacing
    ix, iy = np.floor(sx), np.floor(sy)
    wx, wy = _smooth(sx - ix), _smooth(sy - iy)
    ix64, iy64 = ix.astype(np.int64), iy.astype(np.int64)
    v00 = hash_uniform(ix64, iy64, seed, salt)
    v01 = hash_uniform(ix64 + 1, iy64, seed, salt)
    v10 = hash_uniform(ix64, iy64 + 1, seed, salt)
    v11 = hash_uniform(ix64 + 1, iy64 + 1, seed, salt)
    out: F64 = (v00 * (1.0 - wx) + v01 * wx) * (1.0 - wy) + (v10 * (1.0 - wx) + v11 * wx) * wy
    return out


def _fractal_points(x: F64, y: F64, spacing: float, seed: int, salt: int, octaves: int) -> F64:
    total = np.zeros(np.broadcast(x, y).shape, dtype=np.float64)
    amplitude, norm = 1.0, 0.0
    for k in range(octaves):
        total += amplitude * _noise_points(x, y, spacing / 2**k, seed, salt + k)
        norm += amplitude
        amplitude *= 0.5
    out: F64 = total / norm
    return out


class TissueLayout:
    """Tissue, tumour, lymphocyte and orientation fields of one synthetic slide.

    Args:
        width: Slide width in level-0 pixels.
        height: Slide height in level-0 pixels.
        mpp: Microns per pixel of level 0.
        seed: The slide's seed.
        tissue_fraction: Approximate fraction of the slide covered by tissue (0 < f < 1).
    """

    def __init__(
        self, width: int, height: int, *, mpp: float, seed: int, tissue_fraction: float
    ) -> None:
        self.width, self.height, self.mpp, self.seed = width, height, mpp, seed
        longest = max(width, height)
        #: Lattice spacing of the coarsest tissue octave (px): a third of the slide, at most 3 mm.
        self.tissue_spacing = float(min(longest / 3.0, 3000.0 / mpp))
        self.tumour_spacing = float(min(longest / 2.0, 600.0 / mpp))
        self.lymph_spacing = float(min(longest / 3.0, 300.0 / mpp))
        self.orient_spacing = float(150.0 / mpp)
        self.margin = 0.05 * min(width, height)
        self.threshold, gradient = self._calibrate(tissue_fraction)
        #: Width (in field units) of the soft tissue edge: about 2 px.
        self.edge = 2.0 * gradient
        self._lock = threading.Lock()
        self._blocks: OrderedDict[tuple[int, int], NDArray[np.float32]] = OrderedDict()
        self._max_blocks = math.ceil(width / (_BLOCK * _STRIDE)) + 4

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_blocks"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- tissue ---------------------------------------------------------------------------

    def _border_penalty(self, x: F64, y: F64) -> F64:
        d = np.minimum(np.minimum(x, self.width - x), np.minimum(y, self.height - y))
        ramp = np.clip(1.0 - d / max(self.margin, 1.0), 0.0, 1.0)
        out: F64 = 0.6 * ramp * ramp
        return out

    def tissue_field(self, xs: F64, ys: F64) -> Field:
        """Tissue field on the grid ``ys x xs`` (tissue where it exceeds :attr:`threshold`).

        Args:
            xs: Column coordinates (level-0 px; pixel centres are ``i + 0.5``).
            ys: Row coordinates.

        Returns:
            ``(len(ys), len(xs))`` float64 array.
        """
        base = fractal_noise(xs, ys, self.tissue_spacing, self.seed, SALT_TISSUE, octaves=3)
        pen_x = self._border_penalty(xs, np.full_like(xs, self.height / 2))
        pen_y = self._border_penalty(np.full_like(ys, self.width / 2), ys)
        out: Field = base - np.maximum(pen_x[None, :], pen_y[:, None])
        return out

    def tissue_field_points(self, x: F64, y: F64) -> F64:
        """Tissue field at scattered points ``(x[i], y[i])`` (same values as the grid form)."""
        base = _fractal_points(x, y, self.tissue_spacing, self.seed, SALT_TISSUE, 3)
        out: F64 = base - self._border_penalty(x, y)
        return out

    def _calibrate(self, fraction: float) -> tuple[float, float]:
        """Threshold giving ``fraction`` tissue, and the field's gradient (per px) at the edge."""
        n = 256
        xs = (np.arange(n) + 0.5) * self.width / n
        ys = (np.arange(n) + 0.5) * self.height / n
        field = self.tissue_field(xs, ys).astype(np.float64)
        threshold = float(np.quantile(field, 1.0 - fraction))
        gy, gx = np.gradient(field, self.height / n, self.width / n)
        grad = np.hypot(gx, gy)
        near = np.abs(field - threshold) < 0.02
        typical = float(np.median(grad[near])) if near.any() else 1.0 / self.tissue_spacing
        return threshold, max(typical, 1e-6)

    def tissue_mask(self, x: int, y: int, w: int, h: int, downsample: float = 1.0) -> NDArray:
        """Boolean tissue mask of a region, sampled every ``downsample`` level-0 pixels.

        Args:
            x: Left edge (level-0 px).
            y: Top edge.
            w: Width (level-0 px).
            h: Height.
            downsample: Level-0 pixels per mask pixel.

        Returns:
            ``(ceil(h / downsample), ceil(w / downsample))`` bool array.

        Example:
            >>> TissueLayout(1024, 1024, mpp=0.5, seed=1, tissue_fraction=0.4).tissue_mask(
            ...     0, 0, 1024, 512, downsample=8
            ... ).shape
            (64, 128)
        """
        xs = x + (np.arange(math.ceil(w / downsample), dtype=np.float64) + 0.5) * downsample
        ys = y + (np.arange(math.ceil(h / downsample), dtype=np.float64) + 0.5) * downsample
        mask: NDArray[np.bool_] = self.tissue_field(xs, ys) > self.threshold
        return mask

    # --- tissue kinds ---------------------------------------------------------------------

    def tumour_field(self, xs: F64, ys: F64) -> Field:
        """Tumour-nest field in ``[0, 1]`` on a grid (nests where it is high)."""
        return fractal_noise(xs, ys, self.tumour_spacing, self.seed, SALT_TUMOUR, octaves=2)

    def class_fields_points(self, x: F64, y: F64) -> tuple[F64, F64, F64]:
        """Tumour field, lymphocyte field and orientation (radians) at scattered points."""
        tumour = _fractal_points(x, y, self.tumour_spacing, self.seed, SALT_TUMOUR, 2)
        lymph = _fractal_points(x, y, self.lymph_spacing, self.seed, SALT_LYMPH, 2)
        orient = _noise_points(x, y, self.orient_spacing, self.seed, SALT_ORIENT) * 2.0 * np.pi
        return tumour, lymph, orient

    def orientation_weight(self, xs: F64, ys: F64) -> Field:
        """Weight in ``[0, 1]`` of horizontal (1) against vertical (0) fibres on a grid."""
        theta = value_noise(xs, ys, self.orient_spacing, self.seed, SALT_ORIENT) * 2.0 * np.pi
        out: Field = np.cos(theta) ** 2
        return out

    def _slow_coarse(self, cx: F64, cy: F64) -> NDArray[np.float32]:
        """Tissue field, tumour weight and fibre weight on a grid of coordinates."""
        tumour = np.clip((self.tumour_field(cx, cy) - 0.45) * 5.0, 0.0, 1.0)
        parts = [self.tissue_field(cx, cy), tumour, self.orientation_weight(cx, cy)]
        return np.stack(parts, axis=-1).astype(np.float32)

    def _slow_window(self, kx0: int, ky0: int, nx: int, ny: int) -> NDArray[np.float32]:
        """Coarse slow fields for lattice indices ``[kx0, kx0 + nx) x [ky0, ky0 + ny)``.

        Served from cached blocks of ``_BLOCK`` lattice points (plus ``_PAD`` on each side),
        which is what a tile needs; anything else is computed directly. Both give the same
        values: every lattice value depends only on its own coordinates.
        """
        bx, by = (kx0 + _PAD) // _BLOCK, (ky0 + _PAD) // _BLOCK
        ox, oy = kx0 - (bx * _BLOCK - _PAD), ky0 - (by * _BLOCK - _PAD)
        size = _BLOCK + 2 * _PAD
        if ox < 0 or oy < 0 or ox + nx > size or oy + ny > size:
            return self._slow_coarse(
                np.arange(kx0, kx0 + nx, dtype=np.float64) * _STRIDE,
                np.arange(ky0, ky0 + ny, dtype=np.float64) * _STRIDE,
            )
        with self._lock:
            block = self._blocks.get((bx, by))
            if block is not None:
                self._blocks.move_to_end((bx, by))
        if block is None:
            start_x, start_y = bx * _BLOCK - _PAD, by * _BLOCK - _PAD
            block = self._slow_coarse(
                np.arange(start_x, start_x + size, dtype=np.float64) * _STRIDE,
                np.arange(start_y, start_y + size, dtype=np.float64) * _STRIDE,
            )
            with self._lock:
                self._blocks[(bx, by)] = block
                while len(self._blocks) > self._max_blocks:
                    self._blocks.popitem(last=False)
        return block[oy : oy + ny, ox : ox + nx]

    def slow_fields(self, x: int, y: int, w: int, h: int) -> NDArray[np.float32]:
        """Tissue alpha, tumour weight and horizontal-fibre weight over a region's pixels.

        The slowly varying fields are evaluated every 8 pixels of an absolute lattice (cached
        in blocks) and interpolated bilinearly (see
        :func:`~pathray.slides.synthetic_noise.sampled`); the tissue alpha is then computed per
        pixel from the interpolated tissue field, so the tissue edge stays sharp and in place.

        Args:
            x: Left edge (integer level-0 px).
            y: Top edge.
            w: Width.
            h: Height.

        Returns:
            ``(h, w, 3)`` float32 array.
        """
        kx0, ky0, nx, ny = coarse_window(x, y, w, h, _STRIDE)
        coarse = self._slow_window(kx0, ky0, nx, ny)
        out = upsample_window(coarse, kx0, ky0, _STRIDE, x, y, w, h)
        alpha = out[..., 0]
        alpha -= np.float32(self.threshold)
        alpha *= np.float32(1.0 / self.edge)
        alpha += np.float32(0.5)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        return out

    # --- tissue outlines ------------------------------------------------------------------

    def tissue_polygons(self, max_grid: int = 1024) -> Iterator[list[list[list[float]]]]:
        """Outlines of the tissue pieces as GeoJSON polygon rings in level-0 px.

        The field is sampled every ``D = ceil(max(width, height) / max_grid)`` pixels and traced,
        so outlines are accurate to about ``D`` pixels.

        Args:
            max_grid: Longest side of the sampling grid.

        Yields:
            Per piece: ``[exterior, hole, hole, ...]``, each ring ``[[x, y], ...]`` closed.
        """
        step = max(1, math.ceil(max(self.width, self.height) / max_grid))
        mask = self.tissue_mask(0, 0, self.width, self.height, downsample=step)
        padded = np.pad(mask.astype(np.uint8), 1)
        contours, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            return
        links = hierarchy[0]

        def ring(contour: Any) -> list[list[float]]:
            pts = cv2.approxPolyDP(contour, 0.7, True).reshape(-1, 2).astype(np.float64)
            pts = np.clip((pts - 1 + 0.5) * step, 0, [self.width, self.height])
            out = [[round(float(px), 2), round(float(py), 2)] for px, py in pts]
            return [*out, out[0]]

        for index, contour in enumerate(contours):
            if links[index][3] != -1 or cv2.contourArea(contour) < 4:
                continue  # holes are emitted with their parent; drop specks
            rings = [ring(contour)]
            child = links[index][2]
            while child != -1:
                if cv2.contourArea(contours[child]) >= 4:
                    rings.append(ring(contours[child]))
                child = links[child][0]
            if len(rings[0]) >= 4:
                yield rings
