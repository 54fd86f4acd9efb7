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

A seeded sample holds few close pairs (17 among 250 sampled rows of 1M x 64), too few to see
a tail of 1 % of pairs that need a wider margin. Where the ladder would go below the floor
(every sampled pair meets at ``0.05``), the join itself decides (:class:`MarginChoice`): it
first joins at the lower margin ``0.1``, then measures how many of the thousands of pairs it
found needed more than half of it (they would have been lost at ``0.05``). Pairs that need more
than the margin are lost, and their share is at most about that of the band just below it
(the pairs' needs thin out towards larger margins: measured on ``bench_recall.make_hard``
rows, pairs spread up to the threshold, 300,000 x 64, the band's share 1.9 % where 0.81 %
were lost, 1.2 % where 0.18 %; on the benchmark's 1M x 64, 0.055 % where none). When that
share is at most :data:`TRIAL_BAND_SHARE` of at least :data:`TRIAL_MIN_PAIRS` pairs, the lower
margin stands; otherwise the rows are routed again at the ladder's margin and only the entries
that the trial's routing did not make are joined, against each cell's primary rows (a row's
home is the same at any margin): every pair of the ladder's margin is then found. No trial
where it would be wasted: where the sampled pairs promise fewer pairs than that, or many of
them are long.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._stats import distinct
from ._cells import Partition, exact_pair_distances, route_rows

__all__ = [
    "EXACT_MARGIN",
    "TRIAL_BAND_SHARE",
    "TRIAL_MIN_PAIRS",
    "MarginChoice",
    "band_share",
    "choose_margins",
    "trial_holds",
]

#: the margin (a multiple of the threshold) that finds every pair.
EXACT_MARGIN = 0.5
#: margins tried, ascending (multiples of the threshold).
_LADDER = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, EXACT_MARGIN)
_FLOOR = 0.15
#: the lower margin the join tries first where the ladder goes below the floor.
_TRIAL = 0.1
#: at most this many cells per row at the exact margin: keep it exact.
_CHEAP_ENTRIES_PER_ROW = 2.0
#: the trial margin stands when at most this share of the pairs it found needed more than half
#: of it...
TRIAL_BAND_SHARE = 0.001
#: ...among at least this many pairs (fewer cannot show a share of 0.1 %).
TRIAL_MIN_PAIRS = 3000
#: no trial where more than this share of the sampled close pairs are longer than twice the
#: trial margin: only such pairs can need more than it (two rows on either side of a boundary
#: are together at most the pair's length from it), and a join that will not hold is wasted.
_TRIAL_LONG_SHARE = 0.25


@dataclass(frozen=True)
class MarginChoice:
    """The spill margin of a join (multiples of the threshold).

    Attributes
    ----------
    margin:
        The ladder's margin (:func:`choose_margins`): what the join uses unless the trial holds.
    trial:
        A lower margin joined first (``None``: none), kept when :func:`trial_holds` on the
        pairs it found.
    """

    margin: float
    trial: float | None = None


def choose_margins(
    partition: Partition,
    sample: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    neighbors: np.ndarray,
    threshold: float,
    *,
    n_rows: int | None = None,
) -> MarginChoice:
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
    n_rows:
        Rows the join covers, the sample's among them (``None``: the sample's own count).

    Returns
    -------
    MarginChoice
        ``margin``: ``0.5`` (exact) when that routes each sampled row to at most 2 cells on
        average; otherwise the smallest margin of the ladder ``0.05 ... 0.5`` at which every
        sampled pair meets in a cell, one rung up, and at least ``0.15``. ``trial``: ``0.1``
        where the rung up is below that floor, unless the join would find too few pairs for
        :func:`trial_holds` (the sampled pairs of distinct rows, scaled to ``n_rows``) or more
        than a quarter of the sampled pairs are longer than twice the trial margin (only such
        pairs can need more than it: a pair's rows on either side of a boundary are together
        at most its length from it); else ``None``.
    """
    if partition.n_cells == 1 or len(sample) == 0 or threshold <= 0:
        return MarginChoice(EXACT_MARGIN)
    row, _ = route_rows(partition, sample, margin=EXACT_MARGIN * threshold)
    if len(row) <= _CHEAP_ENTRIES_PER_ROW * len(sample):
        return MarginChoice(EXACT_MARGIN)
    a, b = pairs
    for rung, margin in enumerate(_LADDER):
        home_only = margin < EXACT_MARGIN
        if len(a) == 0 or _meeting(
            partition, sample, neighbors, a, b, margin * threshold, home_only
        ) == len(a):
            safe = _LADDER[min(rung + 1, len(_LADDER) - 1)]
            trial = max(safe, _TRIAL) if safe < _FLOOR else None
            if trial is not None and not _worth_a_trial(
                sample[a], neighbors[b], trial * threshold, len(sample), n_rows
            ):
                trial = None
            return MarginChoice(max(safe, _FLOOR), trial)
    return MarginChoice(EXACT_MARGIN)


def _worth_a_trial(
    first: np.ndarray, second: np.ndarray, trial: float, n_sampled: int, n_rows: int | None
) -> bool:
    """Whether a join at the ``trial`` margin (a distance) may hold, from the sampled close
    pairs ``(first[k], second[k])`` (``(p, d)`` rows) of ``n_sampled`` rows among ``n_rows``:
    enough pairs of distinct rows expected in all (at least :data:`TRIAL_MIN_PAIRS`, each
    counted from both its rows), and at most :data:`_TRIAL_LONG_SHARE` of the pairs longer
    than twice the trial margin. A join that will not hold costs a second routing."""
    lengths = exact_pair_distances(first, second)
    rows = n_sampled if n_rows is None else n_rows
    expected = np.count_nonzero(lengths > 0) * rows / (2 * max(1, n_sampled))
    if expected < TRIAL_MIN_PAIRS:
        return False
    return float(np.mean(lengths > 2 * trial)) <= _TRIAL_LONG_SHARE


def trial_holds(
    partition: Partition, first: np.ndarray, second: np.ndarray, trial: float, threshold: float
) -> bool:
    """Whether a join at the ``trial`` margin (a multiple of ``threshold``) is kept, from the
    pairs it found: at least :data:`TRIAL_MIN_PAIRS` pairs, of which at most
    :data:`TRIAL_BAND_SHARE` do not meet in a cell at half the trial margin.

    Parameters
    ----------
    partition:
        The join's partition.
    first, second:
        ``(p, d)`` float32 normalised rows of the found pairs (row ``k`` of each: one pair).
    trial:
        The margin they were joined at.
    threshold:
        The join's distance.
    """
    if len(first) < TRIAL_MIN_PAIRS:
        return False
    return band_share(partition, first, second, trial, threshold) <= TRIAL_BAND_SHARE


def band_share(
    partition: Partition, first: np.ndarray, second: np.ndarray, margin: float, threshold: float
) -> float:
    """Share of the pairs ``(first[k], second[k])`` (``(p, d)`` float32 normalised rows) that
    do not share a cell where one is primary when routed at half ``margin`` (a multiple of
    ``threshold``), as :class:`~neardup.search.Cells` routes below 0.5: of pairs found at
    ``margin``, those that needed more than half of it (0.0 for no pair)."""
    n = len(first)
    if n == 0:
        return 0.0
    pair = np.arange(n, dtype=np.int64)
    met = _meeting(partition, first, second, pair, pair, 0.5 * margin * threshold, True)
    return (n - met) / n


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


def _meeting(
    partition: Partition,
    sample: np.ndarray,
    neighbors: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    margin: float,
    home_only: bool,
) -> int:
    """How many pairs ``(sample[a], neighbors[b])`` share a cell where one is primary (rows
    routed as :class:`Cells` routes them at this ``margin``, a distance)."""
    cells = np.int64(partition.n_cells)
    pair_a, cell_a, primary_a = _cells_of(partition, sample, a, margin, home_only)
    pair_b, cell_b, primary_b = _cells_of(partition, neighbors, b, margin, home_only)
    _, at_a, at_b = np.intersect1d(
        pair_a * cells + cell_a, pair_b * cells + cell_b, assume_unique=True, return_indices=True
    )
    joined = primary_a[at_a] | primary_b[at_b]
    return len(distinct(pair_a[at_a][joined]))
