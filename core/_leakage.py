"""Leakage: which evaluation samples have a near-duplicate in the reference split.

Decided pair by pair (an eval sample leaks when some reference sample lies within the
threshold), not through chained clusters, so a chain of borderline pairs cannot make a
sample "leak" into a reference sample it does not resemble.
"""

from __future__ import annotations

import numpy as np

from ._neighbors import NeighborGraph, nearest_among

__all__ = ["nearest_reference"]


def nearest_reference(
    x: np.ndarray,
    graph: NeighborGraph,
    threshold: float,
    split_of_row: np.ndarray,
    reference: int,
) -> tuple[np.ndarray, np.ndarray]:
    """For every row, its nearest reference row within ``threshold`` (``-1`` / ``inf`` if none).

    Uses the graph's close pairs in both directions. Rows whose whole neighbour list is within
    the threshold without a reference row among it (a large group of copies inside an eval
    split) may have a reference duplicate beyond the k-th neighbour; they are checked by exact
    search against the reference rows.
    """
    n = len(graph.indices)
    best_row = np.full(n, -1, dtype=np.int64)
    best_dist = np.full(n, np.inf, dtype=np.float32)
    close = graph.distances <= threshold
    src = np.nonzero(close)[0].astype(np.int64)
    dst = graph.indices[close]
    dist = graph.distances[close]
    # both directions: (eval -> ref) and (ref -> eval) pairs
    a = np.concatenate([src, dst])
    b = np.concatenate([dst, src])
    d = np.concatenate([dist, dist])
    keep = (split_of_row[b] == reference) & (split_of_row[a] != reference)
    a, b, d = a[keep], b[keep], d[keep]
    order = np.lexsort((b, d, a))  # per eval row: nearest first, ties by row
    a, b, d = a[order], b[order], d[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = a[1:] != a[:-1]
    best_row[a[first]] = b[first]
    best_dist[a[first]] = d[first]

    saturated = (
        (split_of_row != reference) & (best_row < 0) & np.all(close, axis=1) & (graph.k < n - 1)
    )
    rows = np.flatnonzero(saturated)
    if rows.size:
        ref_rows = np.flatnonzero(split_of_row == reference)
        nearest, distances = nearest_among(x, rows, ref_rows)
        hit = distances <= threshold
        best_row[rows[hit]] = nearest[hit]
        best_dist[rows[hit]] = distances[hit]
    return best_row, best_dist
