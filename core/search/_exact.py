"""Exact neighbour search by blocked brute force (matrix products, float64 accumulation)."""

from __future__ import annotations

import numpy as np

from ._progress import ProgressFn

__all__ = ["exact_indices", "nearest_among", "pair_distances"]

#: rows of the distance matrix formed at once: about this many bytes per block.
BLOCK_BYTES = 128 << 20


def pair_distances(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Exact Euclidean distances between ``x[rows]`` and ``x[cols]`` (float64 accumulation)."""
    out = np.empty(len(rows), dtype=np.float32)
    step = max(1, BLOCK_BYTES // (8 * max(1, x.shape[1])))
    for start in range(0, len(rows), step):
        diff = x[rows[start : start + step]] - x[cols[start : start + step]]
        out[start : start + len(diff)] = np.sqrt(
            np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
        )
    return out


def exact_indices(x: np.ndarray, k: int, progress: ProgressFn | None) -> np.ndarray:
    """Blocked brute force: ``|a|^2 + |b|^2 - 2ab`` per block of rows, then top-k selection."""
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    rows_per_block = int(max(1, min(n, BLOCK_BYTES // (4 * n))))
    indices = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        d2 = x[start:stop] @ x.T
        d2 *= -2.0
        d2 += sq[None, :]
        d2 += sq[start:stop, None]
        d2[np.arange(stop - start), np.arange(start, stop)] = np.inf
        indices[start:stop] = np.argpartition(d2, k - 1, axis=1)[:, :k]
        if progress:
            progress("exact neighbour search", stop, n)
    return indices


def nearest_among(
    x: np.ndarray, query_rows: np.ndarray, target_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest target row (and distance) for each query row, by blocked brute force."""
    targets = x[target_rows]
    sq = np.einsum("ij,ij->i", targets, targets)
    best = np.empty(len(query_rows), dtype=np.int64)
    step = int(max(1, BLOCK_BYTES // (4 * max(1, len(targets)))))
    for start in range(0, len(query_rows), step):
        q = x[query_rows[start : start + step]]
        d2 = sq[None, :] - 2.0 * (q @ targets.T)
        best[start : start + len(q)] = target_rows[np.argmin(d2, axis=1)]
    return best, pair_distances(x, query_rows, best)
