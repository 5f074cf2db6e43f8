"""Exact outlines of binary masks along pixel edges, and the inverse: pixel-centre rasterisation.

The pixel in row ``r`` and column ``c`` is the square ``[c, c + 1] x [r, r + 1]``. Tracing walks
the edges between foreground and background pixels, so the polygons it returns cover exactly the
foreground pixels; :func:`fill_polygon` sets a pixel when its centre lies inside (even-odd rule,
half-open on edges), so tracing then filling gives back the same pixels.

Pixels that touch only at a corner are treated as separate (4-connectivity): such a shape becomes
a MultiPolygon whose parts touch at a point, or a polygon with a hole touching its shell at a
point; both are valid OGC geometries.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import Polygon

# Edge directions in image coordinates: east, south, west, north; (d + 1) % 4 is a right turn.
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


def trace_mask(mask: np.ndarray) -> list[Polygon]:
    """Return the polygons (with holes) outlining the ``True`` pixels of a 2-D mask.

    Args:
        mask: A 2-D boolean array.

    Returns:
        Polygons in the mask's pixel coordinates, largest first; an empty list for an empty mask.

    Example:
        >>> import numpy as np
        >>> trace_mask(np.array([[0, 1], [1, 1]], bool))[0].area
        3.0
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    sx, sy, d = _edges(m)
    if len(d) == 0:
        return []
    width = m.shape[1] + 1
    start = sy * width + sx
    end = (sy + _DY[d]) * width + (sx + _DX[d])
    keys = start * 4 + d
    order = np.argsort(keys)
    sorted_keys = keys[order]

    def lookup(query: np.ndarray) -> np.ndarray:
        idx = np.minimum(np.searchsorted(sorted_keys, query), len(keys) - 1)
        return np.where(sorted_keys[idx] == query, order[idx], -1)

    right = lookup(end * 4 + (d + 1) % 4)
    straight = lookup(end * 4 + d)
    left = lookup(end * 4 + (d + 3) % 4)
    nxt = np.where(right >= 0, right, np.where(straight >= 0, straight, left))
    rings = _cycles(nxt.tolist(), start.tolist())

    shells: list[tuple[np.ndarray, float]] = []
    holes: list[tuple[np.ndarray, float]] = []
    for ring in rings:
        idx = np.asarray(ring)
        dirs = d[idx]
        corner = dirs != np.roll(dirs, 1)  # keep a vertex only where the direction changes
        xy = np.stack([sx[idx][corner], sy[idx][corner]], axis=1).astype(float) - 1.0
        area = _signed_area(xy)
        (shells if area > 0 else holes).append((xy, area))
    return _assemble(shells, holes)


def _edges(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return start x, start y and direction of every foreground/background pixel edge."""
    # ``m`` has a background border, so shifted copies can be plain slices
    up, down, left, right = (np.zeros_like(m) for _ in range(4))
    up[1:] = m[:-1]
    down[:-1] = m[1:]
    left[:, 1:] = m[:, :-1]
    right[:, :-1] = m[:, 1:]
    sides = (
        (m & ~up, 0, 0, 0),  # top edge, heading east
        (m & ~right, 1, 0, 1),  # right edge, heading south
        (m & ~down, 1, 1, 2),  # bottom edge, heading west
        (m & ~left, 0, 1, 3),  # left edge, heading north
    )
    xs, ys, ds = [], [], []
    for sel, ox, oy, direction in sides:
        r, c = np.nonzero(sel)
        xs.append(c + ox)
        ys.append(r + oy)
        ds.append(np.full(len(r), direction))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ds)


def _cycles(nxt: list[int], start: list[int]) -> list[list[int]]:
    """Split the edge permutation into simple rings (no vertex visited twice)."""
    visited = [False] * len(nxt)
    rings: list[list[int]] = []
    for e0 in range(len(nxt)):
        if visited[e0]:
            continue
        path: list[int] = []
        pos: dict[int, int] = {}
        e = e0
        while not visited[e]:
            visited[e] = True
            v = start[e]
            k = pos.get(v)
            if k is not None:  # back at a vertex of this walk: cut the loop off as a ring
                loop = path[k:]
                rings.append(loop)
                for f in loop:
                    del pos[start[f]]
                del path[k:]
            pos[v] = len(path)
            path.append(e)
            e = nxt[e]
        rings.append(path)
    return rings


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2.0


def _assemble(
    shells: list[tuple[np.ndarray, float]], holes: list[tuple[np.ndarray, float]]
) -> list[Polygon]:
    shell_polys = [Polygon(xy) for xy, _ in shells]
    owned: list[list[np.ndarray]] = [[] for _ in shells]
    for xy, area in holes:
        ring = shapely.LinearRing(xy)
        best, best_area = -1, np.inf
        for i, (poly, (_, shell_area)) in enumerate(zip(shell_polys, shells, strict=True)):
            if best_area > shell_area > -area and poly.covers(ring):
                best, best_area = i, shell_area
        if best >= 0:
            owned[best].append(xy)
    polys = [Polygon(xy, owned[i]) for i, (xy, _) in enumerate(shells)]
    return sorted(polys, key=lambda p: -p.area)


def fill_polygon(out: np.ndarray, rings: list[np.ndarray], value: int) -> None:
    """Set ``out`` to ``value`` at pixels whose centre lies inside ``rings`` (even-odd rule).

    Args:
        out: A 2-D array, changed in place.
        rings: Closed or open rings as ``(n, 2)`` arrays of ``(x, y)`` in ``out``'s pixel frame;
            exteriors and holes of one (multi)polygon together.
        value: The value to write.
    """
    rings = [r for r in rings if len(r) >= 3]
    if not rings:
        return
    height, width = out.shape
    a = np.concatenate(rings)
    b = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    r0 = max(int(np.floor(a[:, 1].min())), 0)
    r1 = min(int(np.ceil(a[:, 1].max())), height)
    c0 = max(int(np.floor(a[:, 0].min())), 0)
    c1 = min(int(np.ceil(a[:, 0].max())), width)
    if r0 >= r1 or c0 >= c1:
        return
    ymin, ymax = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    # rows whose centre y = r + 0.5 satisfies ymin <= y < ymax (half-open: no double counting)
    first = np.clip(np.ceil(ymin - 0.5), r0, r1).astype(np.int64)
    last = np.clip(np.ceil(ymax - 0.5), r0, r1).astype(np.int64)
    counts = last - first
    keep = counts > 0
    if not keep.any():
        return
    a, b, first, counts = a[keep], b[keep], first[keep], counts[keep]
    edge = np.repeat(np.arange(len(a)), counts)
    rows = first[edge] + (np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts, counts))
    yc = rows + 0.5
    x0, y0, x1, y1 = a[edge, 0], a[edge, 1], b[edge, 0], b[edge, 1]
    x = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
    col = np.clip(np.floor(x - 0.5) + 1, c0, c1).astype(np.int64) - c0
    win_w = c1 - c0 + 1
    chunk = max(1, (1 << 22) // win_w)
    for start in range(r0, r1, chunk):
        stop = min(start + chunk, r1)
        sel = (rows >= start) & (rows < stop)
        flat = (rows[sel] - start) * win_w + col[sel]
        toggles = np.bincount(flat, minlength=(stop - start) * win_w).reshape(-1, win_w)
        inside = (np.cumsum(toggles, axis=1)[:, :-1] & 1).astype(bool)
        out[start:stop, c0:c1][inside] = value
