"""Optimal one-to-one assignment on a sparse bipartite graph of candidate pairs.

The objective is lexicographic: first the **largest number of pairs**, then the **largest total
weight** (weights in ``[0, 1]``: IoU, or closeness for points). Pairs whose two ends have no
other candidate are taken directly (with IoU >= 0.5 and non-overlapping objects on each side
that is every pair); the rest goes, in one call, to the sparse Jonker-Volgenant solver
:func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching`. Its cost grows with how
ambiguous the candidates are, not with the number of objects.

Example:
    >>> # Greedy by weight would take (0, 0) and stop at one pair; the optimum has two.
    >>> pos = max_matching(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.3, 0.2]),
    ...                    n_pred=2, n_ref=2)
    >>> sorted(pos.tolist())
    [1, 2]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

_INT = np.int64


def max_matching(
    pred_idx: NDArray[np.int64],
    ref_idx: NDArray[np.int64],
    weight: NDArray[np.float64],
    n_pred: int,
    n_ref: int,
) -> NDArray[np.int64]:
    """Choose candidate pairs: the most pairs, then the largest total weight.

    Args:
        pred_idx: Prediction index of each candidate pair (no pair repeated).
        ref_idx: Reference index of each candidate pair.
        weight: Weight of each pair, in ``[0, 1]`` (clipped).
        n_pred: Number of predictions (indices below it).
        n_ref: Number of references.

    Returns:
        Positions (into the candidate arrays) of the chosen pairs, ascending.

    Example:
        >>> # Two pairs either way; the second choice has the larger total weight (1.0 > 0.8).
        >>> max_matching(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]),
        ...              np.array([0.6, 0.5, 0.5, 0.2]), n_pred=2, n_ref=2).tolist()
        [1, 2]
    """
    pi = np.asarray(pred_idx, dtype=_INT)
    ri = np.asarray(ref_idx, dtype=_INT)
    if not len(pi):
        return np.zeros(0, _INT)
    deg_p = np.bincount(pi, minlength=n_pred)
    deg_r = np.bincount(ri, minlength=n_ref)
    alone = (deg_p[pi] == 1) & (deg_r[ri] == 1)
    chosen = np.flatnonzero(alone)
    rest = np.flatnonzero(~alone)
    if len(rest):
        w = np.clip(np.asarray(weight, dtype=np.float64)[rest], 0.0, 1.0)
        chosen = np.concatenate([chosen, rest[_solve(pi[rest], ri[rest], w)]])
    return np.sort(chosen)


def _solve(pi: NDArray[np.int64], ri: NDArray[np.int64], w: NDArray[np.float64]) -> NDArray[_INT]:
    """Positions of the chosen pairs of a (count, weight) lexicographic maximum matching.

    Each pair gets weight ``W = C + w`` with ``C`` larger than the largest matching of its
    connected component, so one more pair outweighs any gain in total ``w``. The rectangular,
    partial problem becomes a full one by giving every vertex a dummy partner: a vertex left
    alone uses its dummy (cost ``a``), and when ``(p, r)`` is used (cost ``top - W``) the
    dummies of ``p`` and ``r`` pair up through the mirrored edge (cost 1). Every full matching
    then costs ``a * (vertices) - sum(W)``, and all costs stay positive as the solver requires.
    """
    up, pc = np.unique(pi, return_inverse=True)
    ur, rc = np.unique(ri, return_inverse=True)
    n_p, n_r, n_e = len(up), len(ur), len(pi)
    graph = sp.coo_matrix((np.ones(n_e), (pc, rc)), shape=(n_p, n_r))
    n_comp, label = connected_components(sp.bmat([[None, graph], [graph.T, None]]), directed=False)
    size = np.bincount(label, minlength=n_comp)
    big_w = size[label[pc]] + 1.0 + w
    top = float(big_w.max()) + 1.0
    alone = (top + 1.0) / 2.0
    rows = np.concatenate([pc, np.arange(n_p), n_p + rc, n_p + np.arange(n_r)])
    cols = np.concatenate([rc, n_r + np.arange(n_p), n_r + pc, np.arange(n_r)])
    cost = np.concatenate([top - big_w, np.full(n_p, alone), np.ones(n_e), np.full(n_r, alone)])
    mat = sp.csr_matrix((cost, (rows, cols)), shape=(n_p + n_r, n_r + n_p))
    row_ind, col_ind = min_weight_full_bipartite_matching(mat)
    real = (row_ind < n_p) & (col_ind < n_r)
    key = pc.astype(_INT) * n_r + rc
    order = np.argsort(key)
    wanted = row_ind[real].astype(_INT) * n_r + col_ind[real]
    return np.asarray(order[np.searchsorted(key[order], wanted)], dtype=_INT)
