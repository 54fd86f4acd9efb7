"""Connected components of a graph given as edge lists, in numpy alone (no scipy import).

Union-find, vectorised: every round hooks the larger root of each edge onto the smaller one
and then shortcuts every row straight to its root (pointer jumping); edges whose ends share a
root are dropped. Roots only ever decrease, so each component ends rooted at its smallest row.
``import scipy.sparse.csgraph`` alone cost ~0.4 s of CPU, about a third of the whole
``find_duplicates`` on 100,000 rows (``benchmarks/bench_duplicates.py``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["component_roots"]


def component_roots(n_rows: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``(n_rows,)`` int64: the smallest row of each row's connected component.

    Parameters
    ----------
    n_rows:
        Number of rows (vertices).
    i, j:
        ``(p,)`` integer row pairs (undirected edges; self-loops and repeats allowed).
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    root = np.arange(n_rows, dtype=np.int64)
    if len(i) == 0:
        return root
    # only rows on an edge take part: union-find over them, numbered in ascending row order
    touched, compact = np.unique(np.concatenate([i, j]), return_inverse=True)
    local = _roots(len(touched), compact[: len(i)], compact[len(i) :])
    root[touched] = touched[local]
    return root


def _roots(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    root = np.arange(n, dtype=np.int64)
    while len(i):
        ri, rj = root[i], root[j]
        apart = ri != rj
        if not apart.any():
            break
        i, j, ri, rj = i[apart], j[apart], ri[apart], rj[apart]
        low, high = np.minimum(ri, rj), np.maximum(ri, rj)
        np.minimum.at(root, high, low)  # hook each larger root onto a smaller one
        while True:  # pointer jumping: every row straight to its root
            above = root[root]
            if np.array_equal(above, root):
                break
            root = above
    return root
