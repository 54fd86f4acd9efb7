"""The spill margin of the cell join, chosen from the sampled neighbour graph.

A margin of half the threshold makes the join exact (``neardup.search._cells``) but, in
spread-out data of 40+ dimensions, copies each row into tens of cells: a ball of radius
``t / 2`` meets many Voronoi boundaries, while the pair that crosses a boundary seldom needs
it (the two rows' distances to the boundary add up to the pair's distance times the cosine
between the pair and the boundary's normal, small in high dimension). Measured at 300,000 x 64
(``benchmarks/bench_duplicates.py``'s data, 1,172 cells): 60 entries per row at ``0.5 t``,
3.1 at ``0.15 t``, with every sampled pair still found down to ``0.05 t``.

So the margin is the exact ``0.5`` when that is cheap (few copies per row), and otherwise the
smallest margin of a fixed ladder that joins every close pair of the seeded sample, one rung
up for safety and never below ``0.15``.
"""

from __future__ import annotations

import numpy as np

from .._stats import distinct
from ._cells import Partition, route_rows

__all__ = ["EXACT_MARGIN", "choose_margin"]

#: the margin (a multiple of the threshold) that finds every pair.
EXACT_MARGIN = 0.5
#: margins tried, ascending (multiples of the threshold).
_LADDER = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, EXACT_MARGIN)
_FLOOR = 0.15
#: at most this many cells per row at the exact margin: keep it exact.
_CHEAP_ENTRIES_PER_ROW = 2.0


def choose_margin(
    partition: Partition,
    sample: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    neighbors: np.ndarray,
    threshold: float,
) -> float:
    """The spill margin, as a multiple of ``threshold``, for joining with ``partition``.

    Parameters
    ----------
    partition:
        The join's partition.
    sample:
        ``(m, d)`` float32 normalised rows of a seeded sample (as routed by the join).
    pairs:
        ``(a, b)``, each ``(p,)`` int64: positions in ``sample`` and in ``neighbors`` of the
        sampled close pairs (within ``threshold``): row ``sample[a[i]]`` and row
        ``neighbors[b[i]]``.
    neighbors:
        ``(q, d)`` float32 rows, the sampled rows' close neighbours.
    threshold:
        The join's distance.

    Returns
    -------
    float
        ``0.5`` (exact) when that routes each sampled row to at most 2 cells on average;
        otherwise the smallest margin of the ladder ``0.05 ... 0.5`` at which every sampled
        pair meets in a cell, one rung up, and at least ``0.15``.
    """
    if partition.n_cells == 1 or len(sample) == 0 or threshold <= 0:
        return EXACT_MARGIN
    row, _ = route_rows(partition, sample, margin=EXACT_MARGIN * threshold)
    if len(row) <= _CHEAP_ENTRIES_PER_ROW * len(sample):
        return EXACT_MARGIN
    a, b = pairs
    for rung, margin in enumerate(_LADDER):
        if _all_pairs_meet(
            partition, sample, neighbors, a, b, margin * threshold, home_only=margin < EXACT_MARGIN
        ):
            safe = _LADDER[min(rung + 1, len(_LADDER) - 1)]
            return max(safe, _FLOOR)
    return EXACT_MARGIN


def _cells_of(
    partition: Partition, rows: np.ndarray, which: np.ndarray, margin: float, home_only: bool
):
    """``(pair, cell, primary)`` entries of ``rows[which[pair]]`` for every pair."""
    row, cell, primary = route_rows(
        partition, rows, margin=margin, return_primary=True, home_only=home_only
    )
    starts = np.searchsorted(row, np.arange(len(rows)))
    counts = np.diff(np.r_[starts, len(row)])[which]
    pair = np.repeat(np.arange(len(which)), counts)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.repeat(starts[which], counts) + offset
    return pair, cell[index], primary[index]


def _all_pairs_meet(
    partition: Partition,
    sample: np.ndarray,
    neighbors: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    margin: float,
    *,
    home_only: bool,
) -> bool:
    """Whether every pair ``(sample[a], neighbors[b])`` shares a cell where one is primary
    (rows routed as :class:`Cells` routes them at this margin)."""
    if len(a) == 0:
        return True
    cells = np.int64(partition.n_cells)
    pair_a, cell_a, primary_a = _cells_of(partition, sample, a, margin, home_only)
    pair_b, cell_b, primary_b = _cells_of(partition, neighbors, b, margin, home_only)
    _, at_a, at_b = np.intersect1d(
        pair_a * cells + cell_a, pair_b * cells + cell_b, assume_unique=True, return_indices=True
    )
    joined = primary_a[at_a] | primary_b[at_b]
    return len(distinct(pair_a[at_a][joined])) == len(a)
