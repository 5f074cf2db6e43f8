"""Deterministic noise fields of absolute slide coordinates, for the synthetic slide generator.

Everything here is a pure function of ``(seed, salt, x, y)``: the same pixel gets the same value
whichever region is rendered and in whichever order, so tiles rendered separately join without
seams. Two building blocks:

- :func:`hash_uniform`: a per-point hash (splitmix64 finaliser) mapped to ``[0, 1)``.
- :func:`value_noise`: value noise on a square lattice of a given spacing (lattice values from
  :func:`hash_uniform`, smoothstep-weighted bilinear interpolation between them), evaluated on
  the separable grid ``ys x xs`` in ``O(H * W)``.

Example:
    >>> import numpy as np
    >>> xs = np.arange(100, 164, dtype=np.float64)
    >>> a = value_noise(xs, xs, spacing=32.0, seed=1, salt=2)
    >>> b = value_noise(xs[16:], xs[16:], spacing=32.0, seed=1, salt=2)
    >>> bool(np.array_equal(a[16:, 16:], b))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_F1 = np.uint64(0xBF58476D1CE4E5B9)
_F2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Splitmix64 finaliser (in place on a fresh array)."""
    h ^= h >> np.uint64(30)
    h *= _F1
    h ^= h >> np.uint64(27)
    h *= _F2
    h ^= h >> np.uint64(31)
    return h


def hash_uniform(
    ix: NDArray[np.int64], iy: NDArray[np.int64], seed: int, salt: int
) -> NDArray[np.float64]:
    """Hash integer coordinates to uniform floats in ``[0, 1)``.

    Args:
        ix: Integer x coordinates (any shape; negative values are fine).
        iy: Integer y coordinates, broadcastable against ``ix``.
        seed: The slide's seed.
        salt: Distinguishes independent fields of one slide.

    Returns:
        Floats in ``[0, 1)`` of the broadcast shape.

    Example:
        >>> v = hash_uniform(np.arange(3), np.zeros(3, dtype=np.int64), seed=0, salt=0)
        >>> v.shape, bool(((v >= 0) & (v < 1)).all())
        ((3,), True)
    """
    key = np.uint64(((seed & 0xFFFFFFFF) * 0x100000001B3 + salt * 0x2545F4914F6CDD1D) & _MASK64)
    hx = np.asarray(ix, dtype=np.int64).view(np.uint64) * _M1
    hy = np.asarray(iy, dtype=np.int64).view(np.uint64) * _M2
    h = _mix((hx ^ hy) + (key ^ _M3))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _axis_weights(
    coords: NDArray[np.float64], spacing: float, smooth: bool = True
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Lattice cell index and interpolation weight of each coordinate along one axis."""
    scaled = np.asarray(coords, dtype=np.float64) / spacing
    index = np.floor(scaled)
    t = scaled - index
    if smooth:
        t = t * t * (3.0 - 2.0 * t)
    return index.astype(np.int64), t.astype(np.float32)


def _interpolate(
    lattice: NDArray[np.float32],
    ix: NDArray[np.int64],
    wx: NDArray[np.float32],
    iy: NDArray[np.int64],
    wy: NDArray[np.float32],
) -> NDArray[np.float32]:
    """Separable interpolation of ``lattice`` (indices relative to its first row/column)."""
    if lattice.ndim == 3:  # trailing channels
        wx, wy = wx[:, None], wy[:, None]
    left = lattice[:, ix]
    along_x = left + (lattice[:, ix + 1] - left) * wx
    top = along_x[iy]
    out: NDArray[np.float32] = top + (along_x[iy + 1] - top) * wy[:, None]
    return out


def value_noise(
    xs: NDArray[np.float64],
    ys: NDArray[np.float64],
    spacing: float | tuple[float, float],
    seed: int,
    salt: int,
) -> NDArray[np.float32]:
    """Smooth value noise in ``[0, 1]`` on the grid ``ys x xs`` of absolute coordinates.

    Args:
        xs: Sorted x coordinates of the columns (level-0 pixels, may be fractional).
        ys: Sorted y coordinates of the rows.
        spacing: Lattice spacing in pixels; a pair ``(sx, sy)`` gives anisotropic noise
            (streaks along the axis with the larger spacing).
        seed: The slide's seed.
        salt: Distinguishes independent fields.

    Returns:
        ``(len(ys), len(xs))`` float32 array.

    Example:
        >>> xs = np.linspace(0, 255, 256)
        >>> value_noise(xs, xs, spacing=64.0, seed=3, salt=1).shape
        (256, 256)
    """
    sx, sy = (spacing, spacing) if isinstance(spacing, float | int) else spacing
    ix, wx = _axis_weights(xs, float(sx))
    iy, wy = _axis_weights(ys, float(sy))
    x0, y0 = int(ix[0]), int(iy[0])
    lx = np.arange(x0, int(ix[-1]) + 2, dtype=np.int64)
    ly = np.arange(y0, int(iy[-1]) + 2, dtype=np.int64)
    lattice = hash_uniform(lx[None, :], ly[:, None], seed, salt).astype(np.float32)
    return _interpolate(lattice, ix - x0, wx, iy - y0, wy)


def _even(spacing: float) -> int:
    return max(2, 2 * round(spacing / 2))


def lattice_noise(
    x: int, y: int, w: int, h: int, spacing: tuple[float, float], seed: int, salt: int
) -> NDArray[np.float32]:
    """Bicubic value noise over the pixels of a region (fast, for fine textures).

    Lattice values sit at absolute multiples of the spacing (rounded to even pixels) and are
    upsampled with ``cv2.resize`` (bicubic), then cropped so that pixel ``(i, j)`` of the
    result is absolute pixel ``(x + i, y + j)``: the value of a pixel does not depend on the
    region. Values lie roughly in ``[0, 1]`` (bicubic overshoots a little).

    Args:
        x: Left edge of the region (integer level-0 px).
        y: Top edge.
        w: Width.
        h: Height.
        spacing: Lattice spacing ``(sx, sy)`` in pixels.
        seed: The slide's seed.
        salt: Distinguishes independent fields.

    Returns:
        ``(h, w)`` float32 array.

    Example:
        >>> a = lattice_noise(0, 0, 64, 64, (8, 8), seed=1, salt=2)
        >>> b = lattice_noise(16, 8, 32, 32, (8, 8), seed=1, salt=2)
        >>> bool(np.allclose(a[8:40, 16:48], b, atol=1e-6))
        True
    """
    sx, sy = _even(spacing[0]), _even(spacing[1])
    kx0, ky0 = x // sx - 2, y // sy - 2
    nx, ny = (x + w) // sx + 3 - kx0, (y + h) // sy + 3 - ky0
    kx = np.arange(kx0, kx0 + nx, dtype=np.int64)
    ky = np.arange(ky0, ky0 + ny, dtype=np.int64)
    lattice = hash_uniform(kx[None, :], ky[:, None], seed, salt).astype(np.float32)
    return _upsample(lattice, kx0 * sx, ky0 * sy, sx, sy, x, y, w, h, cv2.INTER_CUBIC)


def _upsample(
    coarse: NDArray[np.float32],
    px: int,
    py: int,
    sx: int,
    sy: int,
    x: int,
    y: int,
    w: int,
    h: int,
    interpolation: int,
) -> NDArray[np.float32]:
    """Resize a lattice whose sample (0, 0) sits at absolute ``(px, py)`` and crop a region.

    ``cv2.resize`` by integer factors maps output pixel ``j`` to lattice coordinate
    ``(j + 0.5) / s - 0.5``, i.e. to absolute position ``p + j + 0.5 - s / 2``; pixel centre
    ``x + i + 0.5`` is therefore output pixel ``x - p + s / 2 + i`` (an integer, s even).
    """
    ny, nx = coarse.shape[:2]
    big = cv2.resize(coarse, (nx * sx, ny * sy), interpolation=interpolation)
    ox, oy = x - px + sx // 2, y - py + sy // 2
    return np.asarray(big[oy : oy + h, ox : ox + w], dtype=np.float32)


def sampled(
    fn: Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[Any]],
    x: int,
    y: int,
    w: int,
    h: int,
    stride: int = 8,
) -> NDArray[np.float32]:
    """Evaluate a smooth field on a coarse absolute grid and interpolate it bilinearly.

    The coarse grid is ``stride * k`` for integers ``k`` (independent of the region), so the
    result is still a function of absolute coordinates only. Use it for fields that vary
    slowly compared with ``stride``.

    Args:
        fn: ``fn(xs, ys) -> (len(ys), len(xs)[, channels])`` field on a grid of coordinates.
        x: Left edge of the region (integer level-0 px).
        y: Top edge.
        w: Width.
        h: Height.
        stride: Coarse grid spacing in pixels (even).

    Returns:
        ``(h, w[, channels])`` float32 array: the field at the pixel centres.

    Example:
        >>> f = sampled(lambda a, b: np.add.outer(b, a), 3, 5, 64, 48, stride=8)
        >>> bool(np.allclose(f, np.add.outer(np.arange(5, 53), np.arange(3, 67)) + 1.0))
        True
    """
    s = _even(stride)
    kx0, ky0, nx, ny = coarse_window(x, y, w, h, s)
    cx = np.arange(kx0, kx0 + nx, dtype=np.float64) * s
    cy = np.arange(ky0, ky0 + ny, dtype=np.float64) * s
    return upsample_window(np.asarray(fn(cx, cy), dtype=np.float32), kx0, ky0, s, x, y, w, h)


def coarse_window(x: int, y: int, w: int, h: int, stride: int) -> tuple[int, int, int, int]:
    """Coarse lattice indices ``(kx0, ky0, nx, ny)`` that :func:`sampled` needs for a region.

    Example:
        >>> coarse_window(0, 0, 256, 256, 8)
        (-1, -1, 35, 35)
    """
    kx0, ky0 = x // stride - 1, y // stride - 1
    return kx0, ky0, (x + w) // stride + 2 - kx0, (y + h) // stride + 2 - ky0


def upsample_window(
    coarse: NDArray[np.float32], kx0: int, ky0: int, stride: int, x: int, y: int, w: int, h: int
) -> NDArray[np.float32]:
    """Bilinear upsampling of a coarse window (from :func:`coarse_window`) to a region."""
    s = stride
    return _upsample(coarse, kx0 * s, ky0 * s, s, s, x, y, w, h, cv2.INTER_LINEAR)


def fractal_noise(
    xs: NDArray[np.float64],
    ys: NDArray[np.float64],
    spacing: float,
    seed: int,
    salt: int,
    octaves: int = 3,
    gain: float = 0.5,
) -> NDArray[np.float32]:
    """Sum of ``octaves`` value-noise layers, each at half the spacing of the one before.

    Args:
        xs: Column coordinates.
        ys: Row coordinates.
        spacing: Lattice spacing of the coarsest octave, in pixels.
        seed: The slide's seed.
        salt: Distinguishes independent fields (each octave uses ``salt + k``).
        octaves: Number of layers.
        gain: Amplitude factor from one octave to the next.

    Returns:
        ``(len(ys), len(xs))`` float32 array normalised to ``[0, 1]``.

    Example:
        >>> xs = np.arange(0, 512, 8, dtype=np.float64)
        >>> f = fractal_noise(xs, xs, spacing=256.0, seed=0, salt=10)
        >>> bool(((f >= 0) & (f <= 1)).all())
        True
    """
    total = np.zeros((len(ys), len(xs)), dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for k in range(octaves):
        total += np.float32(amplitude) * value_noise(xs, ys, spacing / 2**k, seed, salt + k)
        norm += amplitude
        amplitude *= gain
    out: NDArray[np.float32] = total / np.float32(norm)
    return out
