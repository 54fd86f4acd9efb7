"""Exact k nearest neighbours of a seeded sample of rows, searched among all rows.

Thresholds that need neighbour statistics (``Relative``, ``Slope``, ``Percentile``, ...) and the
nearest-neighbour histogram read this graph instead of a graph of every row: ``m`` sampled rows
cost ``m * N * d`` multiply-adds (one streamed pass over the rows) instead of ``N * N * d``.
With ``m >= N`` the sample is every row and the graph equals the exact backend's.
"""

from __future__ import annotations

import numpy as np

from ._cells import exact_pair_distances
from ._graph import NeighborGraph
from ._masks import true_positions
from ._rows import Rows

__all__ = ["sample_rows", "sampled_neighbor_graph"]

#: columns of a block whose k-th value per query seeds the bounds.
_BOUND_COLUMNS = 1024
#: rows per streamed block: its normalised rows (512 KB at 64 columns) and its (rows, sample)
#: scores (2 MB for 250 sampled rows) stay in the CPU's caches between the product and the
#: comparisons (measured: the kNN of 250 rows among 1M x 64, 0.74-0.89 CPU s with 16,384-row
#: blocks, 0.64-0.68 with 2,048; 500 among 100,000 x 40, 0.10-0.13 -> 0.10; the same graph)
_BLOCK_ROWS = 2048
#: scores of a block compared with the bounds at once (:func:`_within_bounds`).
_TILE_VALUES = 65536
_BLOCK_BYTES = 64 << 20  # wide rows: fewer per block


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """``min(n, size)`` distinct rows of ``range(n)``, sorted, chosen by ``seed``."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0x5A3])
    return np.sort(rng.choice(n, size, replace=False)).astype(np.int64)


def _block_rows(d: int) -> int:
    """Rows per streamed block for rows of width ``d``."""
    return max(256, min(_BLOCK_ROWS, _BLOCK_BYTES // (4 * d)))


def sampled_neighbor_graph(
    rows: Rows, sample: np.ndarray, k: int, *, backend: str = "cells"
) -> NeighborGraph:
    """The ``k`` nearest other rows (among all ``rows``) of every sampled row, exactly.

    Parameters
    ----------
    rows:
        All ``N`` rows, streamed block by block.
    sample:
        ``(m,)`` sorted distinct global rows.
    k:
        Neighbours per sampled row (``<= N - 1``).

    Returns
    -------
    NeighborGraph
        ``indices``/``distances`` ``(m, k)``, sorted by distance then row, with ``rows=sample``.
    """
    queries = rows.take(sample)
    m = len(sample)
    left = np.empty((m, rows.d + 1), dtype=np.float32)  # [-2 q, 1]
    np.multiply(queries, -2.0, out=left[:, :-1])  # exact: (-2 q).b is (-2 b).q, bit for bit
    left[:, -1] = 1.0
    best_d2 = np.full((m, k), np.inf, dtype=np.float32)  # |q - b|^2 - |q|^2
    best_id = np.full((m, k), -1, dtype=np.int64)
    # one buffer for every block's products and one for its mask, reused: fresh ones per
    # block are page-faulted in anew (the blocks at 100k x 40: 0.18 -> 0.10 CPU s)
    block_rows = min(_block_rows(rows.d), rows.n)
    scores = np.empty(m * block_rows, dtype=np.float32)
    hits = np.empty(m * block_rows, dtype=bool)
    # [b, |b|^2]: the blocks are normalised straight into its first columns (no copy)
    right = np.empty((block_rows, rows.d + 1), dtype=np.float32)
    for start, block in rows.blocks(_block_rows(rows.d), out=right):
        size = len(block)
        b = right[:size]
        b[:, -1] = rows.squares(start, block)  # recorded for the routing's pass
        # the products block by queries, (size, m): the same values as (m, size), at 6.6
        # against 9.5 ms for 16,384 x 65 x 250 (BLAS keeps the long side as its rows)
        d2 = np.matmul(b, left.T, out=scores[: m * size].reshape(size, m))
        lo, hi = np.searchsorted(sample, [start, start + size])
        d2[sample[lo:hi] - start, np.arange(lo, hi)] = np.inf  # never a row's own entry
        bound = best_d2[:, -1]
        if np.isinf(bound).any():  # rows without k candidates yet: the block's k-th value
            # the k-th value among the block's first rows bounds the k-th among them all
            # (a partition of 1,024 rows instead of 4,096)
            head = d2[:_BOUND_COLUMNS]
            take = min(k, len(head))
            bound = np.minimum(bound, np.partition(head, take - 1, axis=0)[take - 1])
        mask = _within_bounds(d2, bound, hits[: m * size].reshape(size, m))
        c, r = true_positions(mask)
        values = d2[c, r]
        keep = np.isfinite(values)
        _merge(best_d2, best_id, r[keep], c[keep] + start, values[keep])
    distances = np.full((m, k), np.inf, dtype=np.float32)
    valid = best_id >= 0
    q_rows = np.repeat(np.arange(m), k).reshape(m, k)[valid]
    distances[valid] = exact_pair_distances(queries[q_rows], rows.take(best_id[valid]))
    order = np.lexsort((np.where(valid, best_id, np.iinfo(np.int64).max), distances), axis=1)
    return NeighborGraph(
        indices=np.take_along_axis(best_id, order, axis=1),
        distances=np.take_along_axis(distances, order, axis=1),
        backend=backend,
        rows=sample,
        total_rows=rows.n,
    )


def _within_bounds(d2: np.ndarray, bound: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``d2 <= bound[None, :]`` of the ``(b, m)`` scores into ``out``, compared a few hundred
    rows at a time (``_TILE_VALUES`` scores) against the ``(m,)`` bounds repeated as often: a
    row-wise broadcast loops once per row of ``m`` values (measured 2.1 against 1.0-1.2 ms for
    16,384 x 250)."""
    size, m = d2.shape
    tile = max(1, _TILE_VALUES // max(1, m))
    full = size - size % tile
    if full:
        np.less_equal(
            d2[:full].reshape(-1, tile * m),
            np.tile(bound, tile),
            out=out[:full].reshape(-1, tile * m),
        )
    np.less_equal(d2[full:], bound[None, :], out=out[full:])
    return out


def _merge(
    best_d2: np.ndarray, best_id: np.ndarray, r: np.ndarray, ids: np.ndarray, values: np.ndarray
) -> None:
    """Fold candidates ``(r, ids, values)`` into each row's ``k`` best (ties by lower id)."""
    if len(r) == 0:
        return
    m, k = best_d2.shape
    # only the rows that have candidates are merged (after the first blocks, a few dozen of
    # the sampled rows a block): the others keep their k best as they are
    touched = np.zeros(m, dtype=bool)
    touched[r] = True
    rows = np.flatnonzero(touched)
    local = np.cumsum(touched) - 1  # a touched row's position among them
    sub_d2, sub_id = best_d2[rows], best_id[rows]
    have = sub_id >= 0
    rr = np.concatenate([np.nonzero(have)[0], local[r]])
    ii = np.concatenate([sub_id[have], ids])
    vv = np.concatenate([sub_d2[have], values])
    order = _candidate_order(rr, vv, ii, len(rows))
    rr, ii, vv = rr[order], ii[order], vv[order]
    starts = np.searchsorted(rr, np.arange(len(rows)))
    rank = np.arange(len(rr)) - starts[rr]
    keep = rank < k
    sub_d2.fill(np.inf)
    sub_id.fill(-1)
    sub_d2[rr[keep], rank[keep]] = vv[keep]
    sub_id[rr[keep], rank[keep]] = ii[keep]
    best_d2[rows] = sub_d2
    best_id[rows] = sub_id


def _candidate_order(rr: np.ndarray, vv: np.ndarray, ii: np.ndarray, m: int) -> np.ndarray:
    """``np.lexsort((ii, vv, rr))`` of ``(c,)`` candidates (query row ``rr < m``, finite float32
    score ``vv``, row id ``ii >= 0``, no pair ``(rr, ii)`` twice): one sort of a 64-bit key
    ``(rr, vv, ii)`` when the three fit in it (measured at 100,000 x 40: 17.6 -> 6.2 ms of the
    kNN's merges), the float32 scores as order-preserving unsigned bits (-0.0 as 0.0)."""
    id_bits = max(1, int(ii.max()).bit_length()) if len(ii) else 1
    if (m - 1).bit_length() + 32 + id_bits > 64:
        return np.lexsort((ii, vv, rr))
    bits = (vv + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 is 0.0: ties as in lexsort
    bits = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(1 << 31)).astype(np.uint64)
    key = rr.astype(np.uint64) << np.uint64(32 + id_bits)
    key |= bits << np.uint64(id_bits)
    key |= ii.astype(np.uint64)
    return np.argsort(key)
