"""The reference index's home listing: each reference row stored once, in its home cell.

A scored batch is routed to its cells with a spill margin (``route_entries``), so the
reference rows need not spill too: each is listed only in its *home* cell (its nearest leaf
of its nearest coarse cell) and a query meets a reference row when the query's routing
reaches that row's home. Why a margin of the whole threshold ``t`` finds every pair: for
``|q - r| <= t``, ``q`` lies within ``t`` of the bisector between its nearest coarse cell and
``r``'s (``r`` is on the other side), so it reaches ``r``'s coarse cell; there ``q`` is routed
to its nearest leaf ``L`` and ``r``'s home ``H`` is on the other side of the bisector of ``L``
and ``H``, again within ``t`` of ``q``.

Listing every row once costs one argmin per level instead of the spill tests and halves the
cell entries (measured at 1M x 64, 0.15 t: 1.91 entries per row before), and the automatic
margin needs no threshold join of the sampled rows against every row: their close pairs
are found in the coarse cells their routing at the pairs' radius reaches (a superset, by the
argument above).

The margin is the whole threshold when that routes a sampled row to at most 2 cells on
average. Otherwise it is chosen on the pairs of sampled rows within ``2 t``, as a multiple of
that radius: the smallest margin of a ladder at which 99.5 % of them meet both ways (each row
of the pair routed as a query reaches the other's home), one rung up, at least ``0.15``. The
margin a pair needs is about its length times the cosine between it and the boundary's
normal, so pairs up to ``2 t`` judge the same boundaries as those up to ``t``, and there are
many more of them: with pairs within ``t`` alone, Fashion-MNIST pixels at ``t = 0.1`` gave 3
sampled pairs, a margin of 0.15 and 4 of 54 test images missed; within ``2 t``, 0.7 and none.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..search import Partition, padded_centres, route_entries, stable_order
from ._products import (
    ProjectedRows,
    bounded_screen,
    close_pairs,
    is_dense,
    pair_distances,
    squared_norms,
)

__all__ = ["EXACT_HOME_MARGIN", "distinct_values", "home_cells", "home_margin", "list_homes"]

#: the margin (a multiple of the threshold) at which query routing reaches every home.
EXACT_HOME_MARGIN = 1.0
#: margins tried, ascending (multiples of the threshold).
_LADDER = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, EXACT_HOME_MARGIN)
_FLOOR = 0.15
#: at most this many cells per sampled row at the exact margin: keep it exact.
_CHEAP_ENTRIES_PER_ROW = 2.0
#: the sampled pairs are those within this multiple of the threshold, a margin is judged on
#: them as a multiple of it too (the margin a pair needs grows with its length: longer pairs
#: are many more, and judge the same boundaries), and is chosen where this fraction meets.
_PAIR_RADIUS = 2.0
_MEET_FRACTION = 0.995
#: sampled close pairs kept at most, per sampled row (a seeded subset above: huge thresholds).
_MAX_PAIRS_PER_ROW = 64
#: screened candidates of the sampled rows measured at once (huge thresholds: memory bounded).
_PENDING_CANDIDATES = 1 << 20
#: rows whose homes are computed at once (gathered or projected together).
_HOME_ROWS = 65_536
#: rows whose centre scores are formed at once: a (rows, ~62) float32 block that stays in
#: the CPU's cache through its product, sum and argmin (measured 13.0 -> 11.9 ms per 65,536
#: rows and 62 centres with 4,096 instead of 65,536).
_SCORE_ROWS = 4096


def _scores(x: np.ndarray, minus_twice: np.ndarray, sq_centres: np.ndarray) -> np.ndarray:
    """``(m, c)`` float32 ``|x - c|^2 - |x|^2`` (the row's own norm cancels in an argmin), from
    the centres times ``-2`` (``(c, d)``) and their squared norms."""
    scores = x @ minus_twice.T
    scores += sq_centres[None, :]
    return scores


def _nearest(x: np.ndarray, minus_twice: np.ndarray, sq_centres: np.ndarray) -> np.ndarray:
    """``(m,)`` int64 nearest centre of every row of ``x`` (``(m, d)`` float32, rows may be
    strided; ties to the lowest), about 4,096 rows at a time, in chunks of equal size (no
    small tail, which BLAS would multiply with other kernels and other roundings), the
    centres padded to a width where ``argmin`` is fast (``neardup.search.padded_centres``:
    at 1M x 64, 62 coarse cells of ~63 leaves, home cells 0.49-0.54 -> 0.42-0.47 CPU s, the
    same homes).

    Each chunk is copied into a buffer whose last column is 1 and multiplied by the centres
    times ``-2`` with their squared norms as a last column: one product gives the scores of
    :func:`_scores`, without the pass adding the norms (measured on 4,096 x 64 scores: the
    sum 70 of 270 us; at 1M x 64 and 62 coarse cells of ~63 leaves, home cells 0.36 -> 0.33
    CPU s, the same homes). The norm is summed inside the product, so a score may differ from
    :func:`_scores`'s in its last bit: a row as near to two centres as that is within any
    routing margin of both.
    """
    real = len(sq_centres)
    minus_twice, sq_centres = padded_centres(minus_twice, sq_centres)
    weights = np.concatenate([minus_twice, sq_centres[:, None]], axis=1)
    chunks = max(1, len(x) // _SCORE_ROWS)
    nearest = np.empty(len(x), dtype=np.int64)
    cuts = [len(x) * k // chunks for k in range(chunks + 1)]
    buffer = np.empty((cuts[1] - cuts[0] + 1 if len(x) else 0, x.shape[1] + 1), np.float32)
    buffer[:, -1] = 1.0
    for start, stop in itertools.pairwise(cuts):
        rows = buffer[: stop - start]
        rows[:, :-1] = x[start:stop]
        nearest[start:stop] = np.argmin(rows @ weights.T, axis=1)
    padding = np.flatnonzero(nearest >= real)  # every real score inf (overflow): as unpadded
    if len(padding):
        scores = _scores(x[padding], minus_twice[:real], sq_centres[:real])
        nearest[padding] = np.argmin(scores, axis=1)
    return nearest


def home_cells(
    partition: Partition, x: np.ndarray, *, projected: ProjectedRows | None = None
) -> np.ndarray:
    """``(N,)`` int64 home leaf of every row of ``x`` (``(N, d)`` or the partition's input
    width): its nearest leaf cell of its nearest coarse cell.

    ``projected``: ``x`` through a projection whose span holds the coarse centres (fitted
    with ``coarse_basis=projected.projection``): the nearest coarse cell of a row is then
    that of its projection (``|x - c|^2 = |P x - P c|^2 + |x - P P^T x|^2`` for ``c`` in the
    span), found there from the stored projected rows (at 1M x 64, 16 dimensions: a product
    of 17 instead of 64 columns). ``None``: in the partition's space.

    First the nearest coarse cell of every row (blocks of 65,536 rows), then, coarse cell by
    coarse cell, the nearest leaf of all its rows at once (gathered by ``take``, up to 65,536
    at a time): one leaf product per coarse cell instead of one per coarse cell and block
    (measured at 1M x 64, 62 coarse cells of 63 leaves, 2 x 3 alternating runs on a loaded
    box: median 0.73 -> 0.65 CPU s, the same homes; the leaf rows by `take`, not indexing).
    """
    coarse = _nearest_coarse(partition, x, projected)
    home = np.empty(len(x), dtype=np.int64)
    sq_leaves = squared_norms(partition.centroids)
    leaf_centres = partition.centroids * np.float32(-2.0)
    n_coarse = len(partition.coarse)
    order = stable_order(coarse, n_coarse)
    bounds = np.zeros(n_coarse + 1, dtype=np.int64)
    np.cumsum(np.bincount(coarse, minlength=n_coarse), out=bounds[1:])
    del coarse
    largest = min(_HOME_ROWS, int(np.diff(bounds).max()))
    buffer = np.empty((largest, x.shape[1]), dtype=np.float32)  # the gathered rows, reused
    for c in range(n_coarse):
        leaves = partition.leaves_of(c)
        for lo in range(int(bounds[c]), int(bounds[c + 1]), _HOME_ROWS):
            at = order[lo : min(lo + _HOME_ROWS, int(bounds[c + 1]))]
            if leaves.stop - leaves.start == 1:
                home[at] = leaves.start
                continue
            block = _partition_rows(partition, x, at, buffer)
            home[at] = _nearest(block, leaf_centres[leaves], sq_leaves[leaves]) + leaves.start
    return home


def _nearest_coarse(
    partition: Partition, x: np.ndarray, projected: ProjectedRows | None
) -> np.ndarray:
    """``(N,)`` int32 nearest coarse cell of every row of ``x``, 65,536 rows at a time
    (through ``projected`` when given: see :func:`home_cells`)."""
    n_coarse = len(partition.coarse)
    if n_coarse == 1:
        return np.zeros(len(x), dtype=np.int32)
    coarse = np.empty(len(x), dtype=np.int32)  # at most 2 ** 31 coarse cells
    if projected is not None:
        # the stored [P r, |P r|^2] without their last column, against the centres' P c
        through = partition.coarse @ projected.projection
        minus_twice = through * np.float32(-2.0)
        sq_through = squared_norms(through)
        width = through.shape[1]
        for start in range(0, len(x), _HOME_ROWS):
            block = np.asarray(projected.rows[start : start + _HOME_ROWS, :width])
            coarse[start : start + len(block)] = _nearest(block, minus_twice, sq_through)
        return coarse
    sq_coarse = squared_norms(partition.coarse)
    coarse_centres = partition.coarse * np.float32(-2.0)
    for start in range(0, len(x), _HOME_ROWS):
        block = np.ascontiguousarray(
            partition.project(np.asarray(x[start : start + _HOME_ROWS])), dtype=np.float32
        )
        coarse[start : start + len(block)] = _nearest(block, coarse_centres, sq_coarse)
    return coarse


def _partition_rows(
    partition: Partition, x: np.ndarray, at: np.ndarray, buffer: np.ndarray
) -> np.ndarray:
    """``(len(at), d)`` float32 rows ``x[at]`` in the partition's space, contiguous; float32
    rows are gathered into ``buffer`` (``(>= len(at), D)`` float32, reused from one coarse
    cell to the next: no fresh memory per cell)."""
    if x.dtype == np.float32 and x.shape[1] == buffer.shape[1]:
        rows = np.take(x, at, axis=0, out=buffer[: len(at)], mode="clip")  # "raise" buffers
    else:
        rows = np.take(x, at, axis=0)
    return np.ascontiguousarray(partition.project(rows), dtype=np.float32)


def distinct_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` of ``(n,)`` ints, by a stable sort: the
    ``(k,)`` ascending distinct values and ``(n,)`` int64 positions of each value among them
    (``np.unique`` imports ``numpy.ma`` on its first call: measured 11-17 ms of a build)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.empty(len(values), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], inverse


def list_homes(home: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, members)``: cell ``c`` lists ``members[starts[c]:starts[c + 1]]``, the rows
    at home there in ascending order (``(C + 1,)`` int64, ``(N,)`` int32 where it fits)."""
    index = np.int32 if len(home) < 2**31 else np.int64
    members = stable_order(home, n_cells).astype(index)
    starts = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(home, minlength=n_cells), out=starts[1:])
    return starts, members


def home_margin(
    partition: Partition,
    x: np.ndarray,
    home: np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    sample: np.ndarray,
    threshold: float,
    *,
    seed: int,
    projected: ProjectedRows | None = None,
) -> float:
    """The query routing margin (a multiple of ``threshold``) for rows listed at home.

    Parameters
    ----------
    partition, x, home, starts, members:
        The partition, the ``(N, d)`` float32 rows, their ``(N,)`` home cells and the
        listing of :func:`list_homes`.
    sample:
        ``(s,)`` ascending rows whose close pairs (among all rows) the margin must join.
    threshold:
        The distance of the pairs.
    seed:
        Seed of the subset of pairs kept when there are more than 64 per sampled row.
    projected:
        ``x`` through a projection (:class:`ProjectedRows`): the sampled pairs are screened
        there (measured at 1M x 64, 16 dimensions: the same 6 pairs of 250 sampled rows in
        0.23-0.34 instead of 0.55-0.59 CPU s, shared machine; Fashion-MNIST 60k/10k at
        t = 0.08-0.2: the same margins and flagged images). ``None``: in full width.

    Returns
    -------
    float
        ``1.0`` (exact) when that routes a sampled row to at most 2 cells on average;
        otherwise the smallest margin of the ladder ``0.05 ... 1.0`` at which 99.5 % of the
        sampled pairs within twice ``threshold`` meet both ways (margins as multiples of that
        radius), one rung up, and at least ``0.15``.
    """
    if partition.n_cells == 1 or len(sample) == 0 or threshold <= 0:
        return EXACT_HOME_MARGIN
    rows = np.ascontiguousarray(x[sample])
    row, cell, _, _ = route_entries(partition, rows, margin=EXACT_HOME_MARGIN * threshold)
    if len(row) <= _CHEAP_ENTRIES_PER_ROW * len(sample):
        return EXACT_HOME_MARGIN
    radius = _PAIR_RADIUS * threshold
    if _PAIR_RADIUS != 1.0:
        row, cell, _, _ = route_entries(partition, rows, margin=radius)
    a, b = _sampled_pairs(
        partition, x, starts, members, sample, rows, row, cell, radius,
        keep=_MAX_PAIRS_PER_ROW * len(sample), seed=seed, projected=projected,
    )  # fmt: skip
    for rung, margin in enumerate(_LADDER):
        if _met_fraction(partition, x, home, sample, a, b, margin * radius) >= _MEET_FRACTION:
            return max(_LADDER[min(rung + 1, len(_LADDER) - 1)], _FLOOR)
    return EXACT_HOME_MARGIN


def _sampled_pairs(
    partition: Partition,
    x: np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    sample: np.ndarray,
    rows: np.ndarray,
    row: np.ndarray,
    cell: np.ndarray,
    threshold: float,
    *,
    keep: int,
    seed: int,
    projected: ProjectedRows | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``: the pairs of a sampled row ``sample[a]`` and another row ``b`` (global)
    within ``threshold``, found among the rows at home in the cells that the sampled rows'
    routing at ``threshold`` (``row``, ``cell`` entries) reaches: all of them, or a seeded
    subset of ``keep`` pairs when there are more (a huge threshold: memory stays bounded; the
    subset does not depend on the order the cells are visited). Screened through
    ``projected`` leaf by leaf when given (:func:`_projected_pairs`), else in full width
    coarse cell by coarse cell: the same pairs."""
    found = _Found(sample, len(x), keep, seed)
    if projected is not None:
        _projected_pairs(
            partition, x, starts, members, rows, row, cell, threshold, projected, found
        )
        return found.pairs()
    coarse = partition.parent[cell]
    key, _ = distinct_values(coarse * len(rows) + row)  # (coarse cell, sampled row), once
    coarse, row = np.divmod(key, len(rows))
    bounds = np.searchsorted(coarse, np.arange(len(partition.coarse) + 1))
    for c in np.flatnonzero(np.diff(bounds)).tolist():
        leaves = partition.leaves_of(c)
        listed = members[starts[leaves.start] : starts[leaves.stop]]
        at = row[bounds[c] : bounds[c + 1]]
        pa, pb, _ = close_pairs(rows[at], np.take(x, listed, axis=0), threshold)
        found.add(at[pa], listed[pb])
    return found.pairs()


def _projected_pairs(
    partition: Partition,
    x: np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    rows: np.ndarray,
    row: np.ndarray,
    cell: np.ndarray,
    threshold: float,
    projected: ProjectedRows,
    found: _Found,
) -> None:
    """Add to ``found`` the pairs of the sampled ``rows`` (``(s, d)``) within ``threshold`` of
    the rows at home in the leaves their routing (``row``, ``cell`` entries) reaches, screened
    leaf by leaf through ``projected`` (a leaf whose screen is dense: in full width), every
    candidate measured exactly.

    A row within ``threshold`` of a sampled row is at home in a leaf that the routing at
    ``threshold`` reaches (the argument of the module docstring, leaf by leaf), so the leaves
    find the pairs that whole coarse cells find, with fewer products: at 1M x 64, 250 sampled
    rows at ``2 t`` reach 1,500 of the 3,908 leaves each, 104 instead of 170 million pairs.
    The rows of a coarse cell are gathered once, with a column of ones, and each sampled row
    carries its bound (:meth:`ProjectedRows.bounded_queries`): one product and a comparison
    with 0 per leaf (measured at 1M x 64: 0.14-0.15 -> 0.13 CPU s, the same 6 pairs).
    """
    left = projected.bounded_queries(rows, threshold)
    order = stable_order(cell, partition.n_cells)
    row, cell = row[order], cell[order]
    first = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])  # sorted: no np.unique
    leaves, lows = cell[first], np.r_[first, len(cell)]
    coarse_leaves = np.searchsorted(partition.parent, np.arange(len(partition.coarse) + 1))
    buffer = projected.bounded_buffer(int(np.diff(starts[coarse_leaves]).max()))
    starts_of = starts.tolist()
    pending_a: list[np.ndarray] = []
    pending_b: list[np.ndarray] = []
    pending = 0
    current, base, listed, right = -1, 0, members[:0], buffer[:0]
    groups = zip(
        leaves.tolist(), partition.parent[leaves].tolist(), lows[:-1].tolist(), lows[1:].tolist()
    )
    for leaf, parent, lo, hi in groups:
        if parent != current:  # the coarse cell's rows, gathered once for its leaves
            span = partition.leaves_of(parent)
            current, base = parent, starts_of[span.start]
            listed = members[base : starts_of[span.stop]]
            right = projected.take_bounded(listed, buffer)
        first_row, stop = starts_of[leaf] - base, starts_of[leaf + 1] - base
        if stop == first_row:
            continue
        at = row[lo:hi]
        flat = bounded_screen(np.take(left, at, axis=0), right[first_row:stop])
        if is_dense(len(flat), len(at), stop - first_row):
            mine = listed[first_row:stop]
            pa, pb, _ = close_pairs(rows[at], np.take(x, mine, axis=0), threshold)
            found.add(at[pa], mine[pb])
        elif len(flat):
            a, b = np.divmod(flat, stop - first_row)
            pending_a.append(at[a])
            pending_b.append(listed[first_row + b])
            pending += len(a)
            if pending > _PENDING_CANDIDATES:
                _measure(x, rows, pending_a, pending_b, threshold, found)
                pending_a, pending_b, pending = [], [], 0
    _measure(x, rows, pending_a, pending_b, threshold, found)


def _measure(
    x: np.ndarray,
    rows: np.ndarray,
    pending_a: list[np.ndarray],
    pending_b: list[np.ndarray],
    threshold: float,
    found: _Found,
) -> None:
    """Add to ``found`` the candidates ``rows[a]``, ``x[b]`` (``pending_a``, ``pending_b``:
    pieces of positions) whose exact distance is within ``threshold``."""
    if pending_a:
        a, b = np.concatenate(pending_a), np.concatenate(pending_b).astype(np.int64)
        keep = pair_distances(x, b, rows, a) <= np.float32(threshold)
        found.add(a[keep], b[keep])


class _Found:
    """The sampled pairs ``(a, b)`` found so far (``sample[a]`` and the global row ``b``, a
    row's pair with itself left out): all of them, or, once there are more than four times
    ``keep``, the seeded subset of :func:`_subset` (memory stays bounded)."""

    def __init__(self, sample: np.ndarray, n: int, keep: int, seed: int) -> None:
        self._sample, self._n, self._keep, self._seed = sample, n, keep, seed
        self._a: list[np.ndarray] = [np.zeros(0, np.int64)]
        self._b: list[np.ndarray] = [np.zeros(0, np.int64)]
        self._count = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add the pairs of ``(p,)`` positions in the sample and ``(p,)`` global rows."""
        b = b.astype(np.int64)
        other = self._sample[a] != b
        self._a.append(a[other])
        self._b.append(b[other])
        self._count += int(np.count_nonzero(other))
        if self._count > 4 * self._keep:
            kept_a, kept_b = self.pairs()
            self._a, self._b, self._count = [kept_a], [kept_b], len(kept_a)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)``: all the pairs, or the ``keep`` of :func:`_subset`."""
        return _subset(self._a, self._b, self._n, self._keep, self._seed)


def _subset(
    found_a: list[np.ndarray], found_b: list[np.ndarray], n: int, keep: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs ``(a, b)`` found so far, concatenated: all of them, or the ``keep`` whose
    seeded pseudo-random key (a hash of the pair) is smallest."""
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    if len(a) <= keep:
        return a, b
    key = (a.astype(np.uint64) * np.uint64(n) + b.astype(np.uint64)) ^ np.uint64(seed)
    key *= np.uint64(0x9E3779B97F4A7C15)  # multiplicative hash (wraps modulo 2**64)
    key ^= key >> np.uint64(29)
    chosen = np.sort(np.argpartition(key, keep - 1)[:keep])
    return a[chosen], b[chosen]


def _met_fraction(
    partition: Partition,
    x: np.ndarray,
    home: np.ndarray,
    sample: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    margin: float,
) -> float:
    """The fraction of the sampled pairs, taken both ways, whose query side reaches the other
    side's home when routed with ``margin``: ``sample[a]`` that of ``b``, ``b`` that of
    ``sample[a]`` (1.0 when there are none)."""
    if len(a) == 0:
        return 1.0
    cells = np.int64(partition.n_cells)
    met = 0
    for queries, targets in ((sample[a], b), (b, sample[a])):
        distinct, which = distinct_values(queries)
        row, cell, _, _ = route_entries(partition, x[distinct], margin=margin)
        wanted = which.astype(np.int64) * cells + home[targets]
        met += int(np.count_nonzero(np.isin(wanted, row * cells + cell)))
    return met / (2 * len(a))
