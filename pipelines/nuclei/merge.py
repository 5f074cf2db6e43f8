"""Merging of watershed basins separated by shallow saddles (a fast h-maxima substitute).

A seeded watershed with generous markers over-splits: texture or a nucleolus adds a second
maximum inside one nucleus. Two touching basins are one object when the surface between them
(the saddle: the highest point of their common boundary) is barely lower than the lower of their
two peaks. Merging neighbours in order of decreasing saddle with a union-find gives the same
partition as seeding the watershed with the h-maxima of the surface, at a fraction of the cost.

Example:
    >>> import numpy as np
    >>> labels = np.array([[1, 1, 2, 2]])
    >>> surface = np.array([[1.0, 3.0, 1.5, 2.5]])  # saddle 1.5, lower peak 2.5
    >>> merge_shallow_basins(labels, surface, depth=1.5).tolist()
    [[1, 1, 1, 1]]
    >>> merge_shallow_basins(labels, surface, depth=0.5).tolist()
    [[1, 1, 2, 2]]
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def basin_saddles(
    labels: np.ndarray, surface: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The saddle height of every pair of 4-adjacent basins.

    Args:
        labels: ``(H, W)`` integer labels (0 background, never merged).
        surface: ``(H, W)`` float heights (higher inside objects).

    Returns:
        ``(a, b, saddle)``: label pairs with ``a < b`` and the highest ``min(surface[p],
        surface[q])`` over the adjacent pixel pairs ``p`` in ``a``, ``q`` in ``b``.
    """
    n = int(labels.max()) + 1
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for axis in (0, 1):
        lo = [slice(None), slice(None)]
        hi = [slice(None), slice(None)]
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        la, lb = labels[tuple(lo)], labels[tuple(hi)]
        touching = (la != lb) & (la > 0) & (lb > 0)
        if not touching.any():
            continue
        a = la[touching].astype(np.int64)
        b = lb[touching].astype(np.int64)
        keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        values.append(np.minimum(surface[tuple(lo)][touching], surface[tuple(hi)][touching]))
    if not keys:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float64)
    key = np.concatenate(keys)
    value = np.concatenate(values).astype(np.float64)
    order = np.lexsort((value, key))
    key, value = key[order], value[order]
    last = np.r_[key[1:] != key[:-1], True]
    key, value = key[last], value[last]
    return key // n, key % n, value


def merge_shallow_basins(
    labels: np.ndarray, surface: np.ndarray, depth: float, peaks: np.ndarray | None = None
) -> np.ndarray:
    """Merge neighbouring basins whose saddle lies less than ``depth`` below the lower peak.

    Args:
        labels: ``(H, W)`` integer labels (0 background).
        surface: ``(H, W)`` float heights the watershed flooded (higher inside objects).
        depth: Minimum dynamic (peak minus saddle) for two basins to stay apart.
        peaks: Height of each label's peak, indexed by label (``len > labels.max()``); the
            maximum of ``surface`` over each label when None. A seeded watershed can pass the
            heights of its markers, which is much cheaper.

    Returns:
        ``(H, W)`` labels of the same dtype; a merged group keeps the smallest label involved
        in its first merge (deterministic), others keep theirs.
    """
    a, b, saddle = basin_saddles(labels, surface)
    if len(saddle) == 0:
        return labels
    n = int(labels.max()) + 1
    if peaks is None:
        peak = np.full(n, -np.inf)
        peak[1:] = ndi.maximum(surface, labels, np.arange(1, n))
    else:
        peak = np.asarray(peaks, np.float64)[:n].copy()
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    merged = False
    for i in np.argsort(-saddle, kind="stable"):
        ra, rb = find(int(a[i])), find(int(b[i]))
        if ra == rb or min(peak[ra], peak[rb]) - saddle[i] >= depth:
            continue
        root, child = min(ra, rb), max(ra, rb)
        parent[child] = root
        peak[root] = max(peak[root], peak[child])
        merged = True
    if not merged:
        return labels
    roots = np.array([find(i) for i in range(n)], dtype=labels.dtype)
    out: np.ndarray = roots[labels]
    return out
