"""Partitioned exact join: every pair of rows within a distance, found cell by cell.

The rows are partitioned by k-means on a seeded sample (two levels when there are many cells:
coarse cells, each split into leaf cells). At each level a row goes to its nearest cell and to
every other cell whose Voronoi boundary with it lies within ``margin`` of the row. Within a
coarse cell, a row's nearest leaf is its *primary* leaf there. Inside each leaf the pairs with
at least one primary member are found exactly by blocked matrix products (``|b|^2 - 2 a.b`` as a
screen with a generous float32 slack, then the exact distance of every candidate), and the
cells' pairs are merged.

Why ``margin = threshold / 2`` is exact: take a pair ``(a, b)`` with ``|a - b| <= t`` whose
nearest cells ``A`` and ``B`` differ. ``a`` and ``b`` lie on either side of the bisector of ``A``
and ``B`` and their distances to it add up to the projection of ``b - a`` on its normal, at most
``t``: one of them is within ``t / 2`` and is routed to the other's cell. Applied to the coarse
cells, both rows meet in one coarse cell; applied to that coarse cell's leaves, one row reaches
the other's nearest leaf there, where the other is primary: the pair is joined.

Below half the threshold the join is not exact anyway (``neardup.search._margin`` chooses such
margins from sampled pairs), and :class:`~neardup.search.Cells` routes by the *home* leaf alone
(``route_entries(..., home_only=True)``): a row is primary only in its nearest leaf of its
nearest coarse cell, and is copied into the leaves of any coarse cell it reaches whose
boundary with that home leaf lies within the margin, as in a flat partition of the leaves.

Public contract (also used by the Ray executor, ``neardup.integrations``):

- :func:`fit_partition` ``(sample, n_cells, seed) -> Partition`` (plain arrays, no pickle);
- :func:`route_rows` ``(partition, rows, margin) -> (row_index, cell)``, each row's primary
  entry first;
- :func:`join_cell` ``(rows, row_ids, threshold) -> ClosePairs``;
- :func:`merge_pairs` ``(parts) -> ClosePairs``, deterministic whatever the order of the parts.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._mapped import mapped_empty
from .._normalize import squared_norms
from ._masks import true_positions
from ._torch_join import is_torch_tensor, torch_join

__all__ = [
    "ARGMIN_WIDTH",
    "DEFAULT_BLOCK_SIZE",
    "DENSE_CANDIDATES",
    "TORCH_BLOCK_SIZE",
    "ClosePairs",
    "HomeLimits",
    "Partition",
    "fit_partition",
    "join_cell",
    "merge_pairs",
    "orthonormal_projection",
    "padded_centres",
    "route_entries",
    "route_rows",
    "screen_cell",
    "stable_order",
]

#: query rows per matrix product inside a cell (a (block, cell) float32 product at a time):
#: blocks this small skip most of the lower triangle of the primary rows' square (measured
#: 17 % less join CPU at 100,000 x 40 than with 2,048).
DEFAULT_BLOCK_SIZE = 128
#: ...and in torch, where one launch per product costs more than the triangle.
TORCH_BLOCK_SIZE = 2048
#: ...and in the screens of projected rows (:func:`screen_cell`, ``d' + 1`` <= 129 columns):
#: a ``(64, m)`` product stays in the L2 cache and skips more of the triangle (measured at
#: 1M x 64, 394 captured cells, 16 paired runs: median 0.96 of the time with 128 rows)
SCREEN_BLOCK_SIZE = 64
#: above this many cells the partition has two levels (about sqrt(n_cells) coarse cells).
_FLAT_MAX_CELLS = 64
_KMEANS_ITERATIONS = 5
#: k-means sums: per-column bincounts up to this width, one-hot products (in row blocks) above.
_BINCOUNT_MAX_WIDTH = 128
_ONE_HOT_BLOCK = 8192
#: rows transposed at once for the per-column sums (:func:`_columns`).
_TRANSPOSE_ROWS = 256
#: relative float32 slack of the product screen (in squared-distance units, times the largest
#: squared row norm of the cell); candidates are then decided by exact distances.
_SCREEN_SLACK = 1e-4
#: bytes of candidate rows gathered at once to measure their exact distances.
_VERIFY_BYTES = 64 << 20
#: a projected screen passing more than this fraction of a cell's pairs is redone in full width
#: (measured: 1.4 million candidates in one cell of 60,000 x 3,072 pixels projected to 64).
DENSE_CANDIDATES = 0.05
#: bytes of ``(rows, centres)`` float32 scores routed at once (within a core's cache).
_SPILL_CACHE_BYTES = 1 << 20


@dataclass(frozen=True)
class ClosePairs:
    """Row pairs within a distance: ``i < j`` global row ids, sorted by ``(i, j)``.

    Attributes
    ----------
    i, j : (p,) int64
    distance : (p,) float32
        Exact Euclidean distances (float32 differences, float64 sums).
    """

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray

    @classmethod
    def empty(cls) -> ClosePairs:
        return cls(
            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, np.float32)
        )

    def __len__(self) -> int:
        return len(self.i)


@dataclass(frozen=True)
class Partition:
    """A two-level k-means partition (a flat one has a single coarse cell).

    Attributes
    ----------
    centroids : (C, d) float32
        Leaf cell centres; leaves of one coarse cell are contiguous.
    parent : (C,) int64
        Coarse cell of every leaf (non-decreasing).
    coarse : (C0, d) float32
        Coarse cell centres.
    projection : (d, D) float32 or None
        For wide rows (width ``D``): the orthonormal map into the partition's space ``d``
        (:func:`orthonormal_projection`); :func:`route_rows` takes rows of either width.
    """

    centroids: np.ndarray
    parent: np.ndarray
    coarse: np.ndarray
    projection: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (loads with ``allow_pickle=False``)."""
        out = {"centroids": self.centroids, "parent": self.parent, "coarse": self.coarse}
        if self.projection is not None:
            out["projection"] = self.projection
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> Partition:
        projection = arrays["projection"] if "projection" in arrays else None
        return cls(
            centroids=np.asarray(arrays["centroids"], dtype=np.float32),
            parent=np.asarray(arrays["parent"], dtype=np.int64),
            coarse=np.asarray(arrays["coarse"], dtype=np.float32),
            projection=None if projection is None else np.asarray(projection, np.float32),
        )

    def project(self, rows: np.ndarray) -> np.ndarray:
        """Rows in the partition's space: projected when they have the input's full width."""
        rows = np.asarray(rows, dtype=np.float32)
        if self.projection is not None and rows.shape[1] == self.projection.shape[1]:
            return rows @ self.projection.T
        return rows

    def leaves_of(self, coarse_cell: int) -> slice:
        """The leaves of ``coarse_cell``, as a slice of :attr:`centroids`."""
        return self._leaf_slices[coarse_cell]

    @functools.cached_property
    def _leaf_slices(self) -> list[slice]:
        """:meth:`leaves_of` of every coarse cell, found once (the routing asks about 2,000
        times per 1M rows: 0.03 CPU s of searches)."""
        bounds = np.searchsorted(self.parent, np.arange(len(self.coarse) + 1)).tolist()
        return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------- partition


def _squared_norms(x: np.ndarray) -> np.ndarray:
    return squared_norms(x).astype(np.float32)


def _nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of every row (``|c|^2 - 2 x.c``; ties to the lowest)."""
    scores = _argmin_scores(x, centres, _squared_norms(centres))
    return _nearest_of(scores, len(centres))


def _kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, *, iterations: int = _KMEANS_ITERATIONS
) -> np.ndarray:
    """Lloyd's k-means from ``k`` distinct seeded rows; empty cells keep their centre."""
    k = min(k, len(x))
    centres = x[np.sort(rng.choice(len(x), k, replace=False))].astype(np.float32)
    # narrow rows are summed column by column: each column contiguous once, for all iterations
    columns = _columns(x) if x.shape[1] <= _BINCOUNT_MAX_WIDTH else None
    for _ in range(iterations):
        label = _nearest_centre(x, centres)
        counts = np.bincount(label, minlength=k)
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        _add_rows(sums, label, x, columns)
        filled = counts > 0
        centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return centres


def _add_rows(
    sums: np.ndarray, label: np.ndarray, x: np.ndarray, columns: np.ndarray | None = None
) -> None:
    """``sums[label[r]] += x[r]`` for every row of ``x`` (``(n, d)``; ``sums`` ``(k, d)`` float64).

    Narrow rows: one weighted ``bincount`` per column (float64, rows in order; measured 43 ms
    against 76 ms for sorting the rows at 65,536 x 64), read from ``columns`` (``(d, n)``,
    ``x`` transposed and contiguous) when given: a contiguous column is read in one pass
    (65,536 x 64: 21 -> 6.5 ms a call, the same sums, plus 10 ms once for the transpose of the
    five iterations of :func:`_kmeans`). Wide rows: a one-hot ``(k, block)``
    matrix product per block of rows, since a per-column loop costs ``d`` passes (10,922 x
    3,072 into 22 cells: 451 ms by columns, 50 ms by products; float32 sums within a block,
    relative error about 1e-7, harmless for k-means centres).
    """
    k = len(sums)
    if x.shape[1] <= _BINCOUNT_MAX_WIDTH:
        if columns is None:
            columns = _columns(x)
        for column in range(x.shape[1]):
            sums[:, column] += np.bincount(label, weights=columns[column], minlength=k)
        return
    for start in range(0, len(x), _ONE_HOT_BLOCK):
        block_label = label[start : start + _ONE_HOT_BLOCK]
        one_hot = np.zeros((k, len(block_label)), dtype=np.float32)
        one_hot[block_label, np.arange(len(block_label))] = 1.0
        sums += one_hot @ x[start : start + _ONE_HOT_BLOCK]


def _columns(x: np.ndarray) -> np.ndarray:
    """``(d, n)`` contiguous copy of ``x.T`` (``(n, d)``), transposed 256 rows at a time: each
    block's reads and writes stay in the CPU's cache (measured at 65,536 x 64 float32: 10.5
    -> 5.4 ms for the whole array at once)."""
    columns = np.empty((x.shape[1], x.shape[0]), dtype=x.dtype)
    for start in range(0, len(x), _TRANSPOSE_ROWS):
        columns[:, start : start + _TRANSPOSE_ROWS] = x[start : start + _TRANSPOSE_ROWS].T
    return columns


def fit_partition(
    sample: np.ndarray,
    *,
    n_cells: int,
    seed: int,
    coarse_rows_per_cell: int | None = None,
    leaf_iterations: int | None = None,
    coarse_basis: np.ndarray | None = None,
) -> Partition:
    """k-means partition of ``sample`` (``(s, d)`` float32) into about ``n_cells`` leaf cells.

    Flat up to 64 cells; above, about ``sqrt(n_cells)`` coarse cells, each split into leaves in
    proportion to its share of the sample. Deterministic for a ``seed``.

    ``coarse_rows_per_cell``: fit the coarse centres on every ``k``-th row of the sample,
    ``k`` the largest stride that leaves at least this many rows per coarse cell (``None``,
    the default: on the whole sample); the leaves are fitted on the whole sample either way.
    ``leaf_iterations``: Lloyd iterations of the leaves of a two-level partition (``None``,
    the default: 5, as every other k-means here).
    ``coarse_basis``: a ``(d, w)`` orthonormal basis; the coarse centres are fitted on the
    sample projected onto it and lifted back, so they lie in its span and a row's nearest
    coarse centre is that of its projection (``neardup.index`` finds home cells from its
    stored projected rows). ``None``, the default: in full width.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    n_cells = max(1, min(int(n_cells), len(sample)))
    rng = np.random.default_rng(seed)
    if n_cells <= _FLAT_MAX_CELLS:
        coarse = sample.mean(axis=0, keepdims=True).astype(np.float32)
        leaves = _kmeans(sample, n_cells, rng) if n_cells > 1 else coarse.copy()
        return Partition(leaves, np.zeros(len(leaves), dtype=np.int64), coarse)
    n_coarse = round(math.sqrt(n_cells))
    stride = 1
    if coarse_rows_per_cell is not None:
        stride = max(1, len(sample) // max(1, int(coarse_rows_per_cell) * n_coarse))
    through = sample if coarse_basis is None else sample @ coarse_basis
    coarse = _kmeans(through[::stride] if stride > 1 else through, n_coarse, rng)
    label = _nearest_centre(through, coarse)
    if coarse_basis is not None:
        coarse = (coarse @ coarse_basis.T).astype(np.float32)
    # the sample grouped by coarse cell, each group in row order (= sample[label == c])
    grouped = sample[stable_order(label, len(coarse))]
    bounds = np.zeros(len(coarse) + 1, dtype=np.int64)
    np.cumsum(np.bincount(label, minlength=len(coarse)), out=bounds[1:])
    kept = [c for c in range(len(coarse)) if bounds[c + 1] > bounds[c]]
    shares = [max(1, round(n_cells * int(bounds[c + 1] - bounds[c]) / len(sample))) for c in kept]
    split = [i for i, share in enumerate(shares) if share > 1]
    parts = _kmeans_groups(
        grouped,
        [(int(bounds[kept[i]]), int(bounds[kept[i] + 1])) for i in split],
        [shares[i] for i in split],
        [np.random.default_rng([seed, kept[i]]) for i in split],
        iterations=_KMEANS_ITERATIONS if leaf_iterations is None else int(leaf_iterations),
    )
    leaves = [grouped[bounds[c] : bounds[c + 1]].mean(0, keepdims=True) for c in kept]
    for i, part in zip(split, parts):
        leaves[i] = part
    parents = [np.full(len(part), i, dtype=np.int64) for i, part in enumerate(leaves)]
    leaves = [part.astype(np.float32) for part in leaves]
    return Partition(np.concatenate(leaves), np.concatenate(parents), coarse[kept])


def _kmeans_groups(
    x: np.ndarray,
    groups: list[tuple[int, int]],
    ks: list[int],
    rngs: list[np.random.Generator],
    *,
    iterations: int = _KMEANS_ITERATIONS,
) -> list[np.ndarray]:
    """:func:`_kmeans` of each group of rows ``x[lo:hi]`` (``(n, d)``, groups disjoint) into
    ``ks[g]`` centres with ``rngs[g]``: the same ``(k_g, d)`` float32 centres, bit for bit
    (with ``iterations`` Lloyd iterations, 5 as :func:`_kmeans`).

    Narrow rows: the groups' sums of an iteration come from one weighted ``bincount`` per
    column over all groups together (each leaf's rows summed in the same order as alone),
    instead of one per column and group (measured: :func:`fit_partition` of 65,536 x 64 rows
    into 3,905 leaves of 62 coarse cells, median 338 -> 300 CPU ms, the same centres). Wide
    rows: :func:`_kmeans` per group (their one-hot products sum in blocks of rows, which a
    batch would cut differently).
    """
    if x.shape[1] > _BINCOUNT_MAX_WIDTH:
        return [
            _kmeans(x[lo:hi], k, rng, iterations=iterations)
            for (lo, hi), k, rng in zip(groups, ks, rngs)
        ]
    centres = []
    for (lo, hi), k, rng in zip(groups, ks, rngs):
        k = min(k, hi - lo)
        centres.append(x[lo + np.sort(rng.choice(hi - lo, k, replace=False))].astype(np.float32))
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in centres], out=offsets[1:])
    within = np.concatenate([np.arange(lo, hi) for lo, hi in groups]) if groups else []
    rows = x[within] if len(within) != len(x) else x
    columns = _columns(rows)
    label = np.empty(len(rows), dtype=np.int64)
    starts = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([hi - lo for lo, hi in groups], out=starts[1:])
    for _ in range(iterations):
        for g, part in enumerate(centres):
            lo, hi = starts[g], starts[g + 1]
            label[lo:hi] = _nearest_centre(rows[lo:hi], part) + offsets[g]
        counts = np.bincount(label, minlength=offsets[-1])
        sums = np.zeros((int(offsets[-1]), x.shape[1]), dtype=np.float64)
        _add_rows(sums, label, rows, columns)
        filled = counts > 0
        means = np.zeros_like(sums, dtype=np.float32)
        means[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        for g, part in enumerate(centres):
            lo, hi = offsets[g], offsets[g + 1]
            keep = filled[lo:hi]
            part[keep] = means[lo:hi][keep]
    return centres


def _centre_gaps(centres: np.ndarray) -> np.ndarray:
    """``(c, c)`` Euclidean distances between centres (float64)."""
    c = centres.astype(np.float64)
    sq = np.einsum("ij,ij->i", c, c)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), 0.0))


def _centre_scores(x: np.ndarray, centres: np.ndarray, sq_c: np.ndarray) -> np.ndarray:
    """``(m, c)`` float32 ``|x - c|^2 - |x|^2`` (the row's own norm cancels in every test)."""
    # -2 folded into the (c, d) centres: scaling by a power of two is exact, so the scores are
    # the same bits as (x @ c.T) * -2, with one pass fewer over the (m, c) scores
    d2 = x @ (centres * np.float32(-2.0)).T
    d2 += sq_c[None, :]
    return d2


#: score rows narrower than this (and at least half as wide) are padded to it with centres
#: that never win: numpy's ``argmin`` along a row of 64 or more float32 takes its vector
#: loop, 3x faster than along a row of 62 (measured on 4,228 x 62 scores: 300 -> 87 us; the
#: product 420 -> 379 us; ``neardup.index``'s home cells: 288 -> 85-88 us per 4,096 x 62).
ARGMIN_WIDTH = 64
#: ...for at least this many rows: BLAS multiplies fewer rows (up to about 40) with kernels
#: whose roundings depend on the number of centres (measured: padded and unpadded products
#: agree bit for bit from 41 rows on, for widths 8 to 256 and 32 to 63 centres).
_ARGMIN_PAD_ROWS = 64


def padded_centres(centres: np.ndarray, sq_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres padded for a fast ``argmin`` over their scores.

    Parameters
    ----------
    centres:
        ``(c, d)`` float32 centres (or the centres times ``-2``: the padding rows are zeros).
    sq_c:
        ``(c,)`` float32 squared norms of the centres.

    Returns
    -------
    tuple of np.ndarray
        ``(w, d)`` centres and ``(w,)`` norms: when ``c`` lies in ``[ARGMIN_WIDTH / 2,
        ARGMIN_WIDTH)``, rows of zeros whose norm is the largest float32 appended up to
        :data:`ARGMIN_WIDTH` (``w``); else the inputs. The padding scores that value, after
        every real column (``argmin`` ties go to the lowest), so the nearest centre is the
        same unless every real score overflowed to ``inf`` (callers redo those rows over the
        real columns). Not ``inf`` itself: an ``argmin`` meeting ``inf`` is 1.5x slower
        (measured 125 against 85 us).
    """
    c = len(sq_c)
    if not ARGMIN_WIDTH // 2 <= c < ARGMIN_WIDTH:
        return centres, sq_c
    pad = ARGMIN_WIDTH - c
    zeros = np.zeros((pad, centres.shape[1]), dtype=centres.dtype)
    largest = np.full(pad, np.finfo(np.float32).max, dtype=np.float32)
    return np.concatenate([centres, zeros]), np.concatenate([sq_c, largest])


def _argmin_scores(x: np.ndarray, centres: np.ndarray, sq_c: np.ndarray) -> np.ndarray:
    """:func:`_centre_scores` of the ``(m, d)`` rows and ``(c, d)`` centres, as an ``(m, w)``
    float32 array whose first ``c`` columns are the scores, bit for bit: the centres
    :func:`padded_centres` when ``m`` is at least :data:`_ARGMIN_PAD_ROWS` (:func:`_nearest_of`
    finds the same centre), else ``w = c``."""
    if len(x) >= _ARGMIN_PAD_ROWS:
        centres, sq_c = padded_centres(centres, sq_c)
    return _centre_scores(x, centres, sq_c)


def _nearest_of(scores: np.ndarray, c: int) -> np.ndarray:
    """``(m,)`` argmin of the first ``c`` columns of :func:`_argmin_scores`'s ``(m, w)``
    scores: over all ``w`` (the fast loop), rows where the padding won (every real score
    overflowed to ``inf``) redone over the real columns."""
    nearest = np.argmin(scores, axis=1)
    if scores.shape[1] > c:
        padding = np.flatnonzero(nearest >= c)
        if len(padding):
            nearest[padding] = np.argmin(scores[padding, :c], axis=1)
    return nearest


def _slack(sq_x: np.ndarray, max_sq_c: float) -> np.ndarray:
    """``(m, 1)`` allowance for float32 rounding in differences of ``|x - c|^2``."""
    return (1e-5 * (sq_x + max_sq_c) + 1e-12)[:, None]


def _spill(
    x: np.ndarray,
    sq_x: np.ndarray,
    centres: np.ndarray,
    gaps: np.ndarray,
    sq_c: np.ndarray,
    max_sq_c: float,
    margin: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows to their nearest centre and every centre whose bisector with it is within ``margin``.

    Returns ``(row, centre, primary)`` for the kept entries, then per row ``nearest`` (its
    nearest centre) and ``best`` (``|x - c1|^2 - |x|^2`` there). The test is
    ``|x-c|^2 - |x-c1|^2 <= 2 |c-c1| margin`` (distance of ``x`` to the bisector of ``c1``, ``c``
    times ``2 |c - c1|``), with a small slack for float32 rounding.
    """
    # every pass runs over the whole (m, w) scores: a view of their first c columns would
    # make each ufunc loop once per row (measured 4 -> 60 us for a comparison of 1,000 x 62)
    d2 = _argmin_scores(x, centres, sq_c)
    nearest = _nearest_of(d2, len(centres))
    best = d2[np.arange(len(x)), nearest]
    d2 -= best[:, None] + _slack(sq_x, max_sq_c)  # the nearest centre itself stays below 0
    limits = _spill_limits(gaps, margin, d2.shape[1])
    row, centre = true_positions(d2 <= np.take(limits, nearest, axis=0))
    return row, centre, centre == nearest[row], nearest, best


#: :func:`_spill_limits` of the current partition's gaps, by ``(id(gaps), margin, width)``.
_LIMITS: dict[tuple[int, float, int], tuple[np.ndarray, np.ndarray]] = {}


def _spill_limits(gaps: np.ndarray, margin: float, width: int | None = None) -> np.ndarray:
    """``(c, w)`` float32 limits ``2 * margin * gaps`` rounded down (:func:`_float32_at_most`),
    computed once per gaps array, margin and width rather than in every block's spill
    (measured 1,211 times, 0.07 CPU s, at 1M x 64); cleared with the partition's geometry.
    ``width`` (``w >= c``, ``None``: ``c``): the columns past ``c`` are NaN, which no padded
    score of :func:`_argmin_scores` passes (not even ``-inf``, the padding's score less an
    infinite best score)."""
    c = len(gaps)
    width = c if width is None else int(width)
    key = (id(gaps), float(margin), width)
    cached = _LIMITS.get(key)
    if cached is not None and cached[0] is gaps:
        return cached[1]
    limits = np.full((c, width), np.nan, dtype=np.float32)
    limits[:, :c] = _float32_at_most((2.0 * float(margin)) * gaps)
    _LIMITS[key] = (gaps, limits)
    return limits


def _float32_at_most(values: np.ndarray) -> np.ndarray:
    """The largest float32 values ``<= values`` (float64): for any float32 ``x``,
    ``x <= values`` exactly when ``x <=`` the result, so a float32 comparison (and a float32
    gather of the per-row limits, half the bytes) decides as the float64 one did (measured
    28 -> 24 ms per 65,536 rows routed among 62 coarse cells at 1M x 64)."""
    out = values.astype(np.float32)
    over = out.astype(np.float64) > values
    out[over] = np.nextafter(out[over], np.float32(-np.inf))
    return out


def route_rows(
    partition: Partition,
    rows: np.ndarray,
    *,
    margin: float,
    return_primary: bool = False,
    home_only: bool = False,
) -> tuple[np.ndarray, ...]:
    """Cells of every row: its nearest leaf cell and the neighbouring ones within ``margin``.

    Parameters
    ----------
    partition:
        From :func:`fit_partition`.
    rows:
        ``(m, d)`` float32 rows (in the partition's space).
    margin:
        Distance to a cell boundary under which a row is copied into that cell; half the
        threshold of the join makes it exact (see the module docstring).
    return_primary:
        Also return ``primary`` ``(e,)`` bool: the entry is the row's nearest leaf within that
        coarse cell (one per coarse cell the row reaches). :func:`join_cell` needs only the
        pairs with at least one primary member.
    home_only:
        Route by the row's home leaf alone (:func:`route_entries`): one primary entry per row.

    Returns
    -------
    row_index, cell : (e,) int64
        Entries sorted by row; each row's nearest cell (its nearest leaf of its nearest coarse
        cell) comes first.
    """
    row, cell, primary, first = route_entries(partition, rows, margin=margin, home_only=home_only)
    cells = np.int64(partition.n_cells)
    key = (row * 4 + (~first) * 2 + (~primary)) * cells + cell
    order = np.argsort(key)
    if return_primary:
        return row[order], cell[order], primary[order]
    return row[order], cell[order]


def route_entries(
    partition: Partition,
    rows: np.ndarray,
    *,
    margin: float,
    home_only: bool = False,
    home_limits: HomeLimits | None = None,
    coarse_through: tuple[np.ndarray, np.ndarray] | None = None,
    squares: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`route_rows`'s entries, unsorted: ``(row, cell, primary, first)``, where ``first``
    marks each row's nearest cell overall (its *home*: nearest leaf of its nearest coarse cell).

    ``home_only=False`` (exact with ``margin`` = half the threshold, see the module docstring):
    in every coarse cell a row reaches, it is primary in its nearest leaf there and spills to
    the leaves within ``margin`` of that leaf's boundaries. ``home_only=True``: a row is
    primary in its home leaf only, and is copied into any leaf of the coarse cells it reaches
    whose boundary with its home leaf lies within ``margin`` (the test of a flat partition of
    leaves). It costs far fewer entries and products when rows reach several coarse cells
    (measured at 1M x 64 and 0.15 t: 2.2 primary entries per row become 1), but is not exact
    at any margin (a row's home leaf need not be its nearest leaf overall); the automatic
    margin (``neardup.search._margin``) checks it on sampled pairs.

    ``home_limits`` (``home_only`` only): a :class:`HomeLimits` of this partition and
    ``margin``, for a caller that routes many blocks: each coarse cell's limits are then
    computed once, not for the home leaves of every block. ``None``: each block computes the
    limits of its own home leaves.

    ``coarse_through``: ``(through, basis)``, the ``(m, w)`` float32 ``rows`` times a
    ``(d, w)`` orthonormal ``basis`` whose span holds the coarse centers (fitted with
    ``fit_partition(coarse_basis=basis)``): the coarse level is routed from them (``|x - c|^2
    - |x|^2 = |B^T x - B^T c|^2 - |B^T x|^2`` for ``c`` in the span, a product of ``w``
    instead of ``d`` columns; measured at 1M x 64, 100k queries through 16 dimensions: 37 ->
    25 ms, the scores equal up to float32 rounding, far inside the spill test's slack).

    ``squares``: the ``(m,)`` float32 ``_squared_norms`` of ``rows``, when the caller has
    them (a partition without a projection only; ``None``: computed here).
    """
    rows = np.ascontiguousarray(partition.project(rows), dtype=np.float32)
    if len(rows) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    known = squares is not None and partition.projection is None
    sq = np.asarray(squares, dtype=np.float32) if known else _squared_norms(rows)
    geometry = _geometry(partition)
    if len(partition.coarse) == 1:
        c_row = np.arange(len(rows))
        c_cell = np.zeros(len(rows), dtype=np.int64)
        c_primary = np.ones(len(rows), dtype=bool)
    else:
        c_rows, coarse = rows, partition.coarse
        if coarse_through is not None:
            c_rows, basis = coarse_through
            coarse = (partition.coarse @ basis).astype(np.float32)
        c_row, c_cell, c_primary = _spill_chunked(c_rows, sq, coarse, geometry[-1], margin)
    order = stable_order(c_cell, len(partition.coarse))
    bounds = np.searchsorted(c_cell[order], np.arange(len(partition.coarse) + 1))
    by_coarse = [order[bounds[c] : bounds[c + 1]] for c in range(len(partition.coarse))]
    if home_only:
        return _route_home_leaves(
            partition, rows, sq, geometry, by_coarse, c_row, c_primary, margin, home_limits
        )
    out_row, out_cell, out_primary, out_first = [], [], [], []
    for c, entries in enumerate(by_coarse):
        if len(entries) == 0:
            continue
        members = c_row[entries]
        leaves = partition.leaves_of(c)
        if leaves.stop - leaves.start == 1:
            l_row = np.arange(len(members))
            l_cell = np.zeros(len(members), dtype=np.int64)
            l_primary = np.ones(len(members), dtype=bool)
        else:
            mine = np.take(rows, members, axis=0)  # faster than rows[members]
            l_row, l_cell, l_primary, _, _ = _spill(
                mine, sq[members], partition.centroids[leaves], *geometry[c], margin
            )
        out_row.append(members[l_row])
        out_cell.append(l_cell + leaves.start)
        out_primary.append(l_primary)
        out_first.append(l_primary & c_primary[entries][l_row])
    return _joined(out_row, out_cell, out_primary, out_first)


def _spill_chunked(
    rows: np.ndarray,
    sq: np.ndarray,
    centres: np.ndarray,
    geometry: tuple[np.ndarray, np.ndarray, float],
    margin: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_spill`'s ``(row, centre, primary)`` of ``(m, d)`` rows, a few thousand rows at
    a time: the ``(rows, centres)`` scores and their masks then stay in the CPU's cache through
    their half a dozen passes (measured at 1M x 64, 62 coarse cells: about 0.05 of 1.75 CPU s
    of routing; the same scores, bit for bit, as the whole block's)."""
    step = max(256, _SPILL_CACHE_BYTES // (4 * max(1, len(centres))))
    if len(rows) <= step:
        return _spill(rows, sq, centres, *geometry, margin)[:3]
    # chunks of equal size (at least half a step): no small tail, which BLAS would multiply
    # with its small-matrix kernel (other roundings than the whole block's product)
    chunks = -(-len(rows) // step)
    cuts = [len(rows) * k // chunks for k in range(chunks + 1)]
    out_row, out_cell, out_primary = [], [], []
    for start, stop in itertools.pairwise(cuts):
        row, cell, primary, _, _ = _spill(
            rows[start:stop], sq[start:stop], centres, *geometry, margin
        )
        out_row.append(row + start)
        out_cell.append(cell)
        out_primary.append(primary)
    return np.concatenate(out_row), np.concatenate(out_cell), np.concatenate(out_primary)


def stable_order(values: np.ndarray, bound: int) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` of ``(n,)`` ints in ``[0, bound)``, sorted as the
    smallest unsigned type that holds them: numpy radix-sorts 8- and 16-bit keys (measured
    3.2 -> 0.4 ms for the coarse cells of 80,000 routed entries; 102 -> 16 ms for the home
    cells of 1M rows among 3,905 cells)."""
    for dtype in (np.uint8, np.uint16):
        if bound <= np.iinfo(dtype).max + 1:
            return np.argsort(values.astype(dtype), kind="stable")
    return np.argsort(values, kind="stable")


def _joined(out_row: list, out_cell: list, out_primary: list, out_first: list) -> tuple:
    return (  # the pieces are int64 already: no second copy
        np.concatenate(out_row).astype(np.int64, copy=False),
        np.concatenate(out_cell).astype(np.int64, copy=False),
        np.concatenate(out_primary),
        np.concatenate(out_first),
    )


def _route_home_leaves(
    partition: Partition,
    rows: np.ndarray,
    sq: np.ndarray,
    geometry: list[tuple[np.ndarray, np.ndarray, float]],
    by_coarse: list[np.ndarray],
    c_row: np.ndarray,
    c_primary: np.ndarray,
    margin: float,
    home_limits: HomeLimits | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`route_entries` with ``home_only``: first every row's home leaf (and the leaves
    of its home coarse cell within ``margin`` of it), then, in the other coarse cells it
    reaches, the leaves within ``margin`` of its home leaf's boundary with them (their limits
    kept in ``home_limits`` when given, see :func:`route_entries`)."""
    home = np.zeros(len(rows), dtype=np.int64)
    home_score = np.zeros(len(rows), dtype=np.float32)  # |x - home|^2 - |x|^2
    out_row, out_cell, out_primary = [], [], []
    for c, entries in enumerate(by_coarse):  # rows at home in coarse cell c
        members = c_row[entries[c_primary[entries]]]
        if len(members) == 0:
            continue
        leaves = partition.leaves_of(c)
        mine = np.take(rows, members, axis=0)  # faster than rows[members]
        if leaves.stop - leaves.start == 1:
            l_row, l_cell = np.arange(len(members)), np.zeros(len(members), dtype=np.int64)
            l_primary, nearest = np.ones(len(members), dtype=bool), l_cell
            best = _centre_scores(mine, partition.centroids[leaves], geometry[c][1])[:, 0]
        else:
            l_row, l_cell, l_primary, nearest, best = _spill(
                mine, sq[members], partition.centroids[leaves], *geometry[c], margin
            )
        home[members] = nearest + leaves.start
        home_score[members] = best
        out_row.append(members[l_row])
        out_cell.append(l_cell + leaves.start)
        out_primary.append(l_primary)
    sq_centres = _squared_norms(partition.centroids)
    for c, entries in enumerate(by_coarse):  # rows reaching coarse cell c from elsewhere
        members = c_row[entries[~c_primary[entries]]]
        if len(members) == 0:
            continue
        leaves = partition.leaves_of(c)
        centres = partition.centroids[leaves]
        d2 = _centre_scores(np.take(rows, members, axis=0), centres, sq_centres[leaves])
        d2 -= home_score[members][:, None] + _slack(sq[members], float(sq_centres.max()))
        if home_limits is None:
            homes, which = _distinct(home[members], partition.n_cells)
            limits = _home_limits(homes, partition, leaves, sq_centres, margin)[which]
        else:
            limits = np.take(home_limits.of(c, sq_centres), home[members], axis=0)
        l_row, l_cell = true_positions(d2 <= limits)
        out_row.append(members[l_row])
        out_cell.append(l_cell + leaves.start)
        out_primary.append(np.zeros(len(l_row), dtype=bool))
    return _joined(out_row, out_cell, out_primary, out_primary)


class HomeLimits:
    """The limits ``2 * margin * |home - leaf|`` of every leaf of a partition, as a home,
    against the leaves of each coarse cell: what :func:`route_entries` with ``home_only``
    tests a row against in the coarse cells it reaches from its home. Kept for a caller that
    routes many blocks with one partition and margin: a coarse cell's ``(C, c)`` float32 table
    is computed on first use, once, instead of for the home leaves of every block (measured at
    1M x 64, 16 blocks: 907,039 home rows of products in 992 calls, about 0.15 CPU s).

    One ``(C * C,)`` float32 buffer (60 MB at 3,910 leaves) holds all tables; the caller drops
    the object after routing, so the buffer goes back before the entries are sorted. A table
    comes from one product of all ``C`` leaves; a block's own product of a handful of home
    leaves (below about 22 rows) takes another BLAS kernel, which may round the last bit
    differently, so a row within a rounding error of a limit could route otherwise than with
    ``home_limits=None`` (the same entries at 1M x 64 and in the tests).

    Parameters
    ----------
    partition:
        The routed :class:`Partition` (``C`` leaves).
    margin:
        The spill margin the blocks are routed with (a distance, as in :func:`route_entries`).
    """

    def __init__(self, partition: Partition, margin: float) -> None:
        self.partition = partition
        self.margin = float(margin)
        n = partition.n_cells
        self._buffer = mapped_empty((n * n,))  # populated: every table is built at 1M rows
        self._tables: dict[int, np.ndarray] = {}

    @classmethod
    def within(cls, partition: Partition, margin: float, budget: int) -> HomeLimits | None:
        """A :class:`HomeLimits` when its buffer takes at most ``budget`` bytes, else ``None``."""
        return cls(partition, margin) if 4 * partition.n_cells**2 <= budget else None

    def of(self, coarse_cell: int, sq_centres: np.ndarray) -> np.ndarray:
        """``(C, c)`` float32 limits of every leaf against the ``c`` leaves of ``coarse_cell``
        (``sq_centres``: ``(C,)`` squared norms of the leaves)."""
        table = self._tables.get(coarse_cell)
        if table is None:
            partition = self.partition
            leaves = partition.leaves_of(coarse_cell)
            n = partition.n_cells
            width = leaves.stop - leaves.start
            table = self._buffer[n * leaves.start : n * leaves.stop].reshape(n, width)
            table[...] = _home_limits(np.arange(n), partition, leaves, sq_centres, self.margin)
            self._tables[coarse_cell] = table
        return table


def _home_limits(
    homes: np.ndarray, partition: Partition, leaves: slice, sq_centres: np.ndarray, margin: float
) -> np.ndarray:
    """``(h, c)`` float32 ``2 * margin * |home - leaf|`` of the ``(h,)`` leaves ``homes``
    against the ``c`` leaves ``leaves`` (``sq_centres``: squared norms of every leaf)."""
    centres = partition.centroids
    gaps = _centre_scores(centres[homes], centres[leaves], sq_centres[leaves])
    gaps += sq_centres[homes][:, None]
    np.sqrt(np.maximum(gaps, 0.0, out=gaps), out=gaps)  # |home - leaf|
    gaps *= 2.0 * float(margin)
    return gaps


def _distinct(values: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for ints in ``[0, bound)``, by a lookup
    table instead of a sort (measured 16 % of the routing at 1M x 64 with the sort)."""
    seen = np.zeros(bound, dtype=bool)
    seen[values] = True
    distinct = np.flatnonzero(seen)
    position = np.zeros(bound, dtype=np.int64)
    position[distinct] = np.arange(len(distinct))
    return distinct, position[values]


_GEOMETRY: dict[int, tuple[Partition, list]] = {}


def _geometry(partition: Partition) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per coarse cell (and, last, for the coarse cells): ``(gaps, |c|^2, max |c|^2)`` of its
    centres, computed once per partition (cached on its identity)."""
    cached = _GEOMETRY.get(id(partition))
    if cached is not None and cached[0] is partition:
        return cached[1]
    out = []
    for c in range(len(partition.coarse)):
        centres = partition.centroids[partition.leaves_of(c)]
        out.append(_centres_geometry(centres))
    out.append(_centres_geometry(partition.coarse))
    _GEOMETRY.clear()  # one partition at a time
    _LIMITS.clear()
    _GEOMETRY[id(partition)] = (partition, out)
    return out


def _centres_geometry(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    sq = _squared_norms(centres)
    return _centre_gaps(centres), sq, float(sq.max()) if len(sq) else 0.0


def orthonormal_projection(sample: np.ndarray, width: int, *, seed: int) -> np.ndarray:
    """``(width, d)`` float32 with orthonormal rows spanning ``sample``'s top principal
    directions (seeded randomized range finder, one power iteration). Distances through it
    never grow: ``|P a - P b| <= |a - b|``, so a screen in ``width`` dimensions keeps every pair.
    """
    x = np.asarray(sample, dtype=np.float64)
    x = x - x.mean(axis=0)
    width = min(width, *x.shape)
    rng = np.random.default_rng([int(seed), 0x9E3])
    basis, _ = np.linalg.qr(x @ rng.normal(size=(x.shape[1], width + 10)))
    basis, _ = np.linalg.qr(x @ (x.T @ basis))  # one power iteration
    _, _, vt = np.linalg.svd(basis.T @ x, full_matrices=False)
    return np.ascontiguousarray(vt[:width], dtype=np.float32)


# --------------------------------------------------------------------------- join


def exact_pair_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(p,)`` float32 distances between rows ``a[p]`` and ``b[p]``: float32 differences,
    float64 sums of squares (the same value whichever cell computes it)."""
    diff = a - b
    return np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64)).astype(np.float32)


def join_cell(
    rows: Any,
    row_ids: np.ndarray,
    *,
    threshold: float,
    block_size: int | None = None,
    n_primary: int | None = None,
    device: str | None = None,
    verify: Any = None,
    cross_only: bool = False,
) -> ClosePairs:
    """Every pair of ``rows`` within ``threshold``, exactly, by blocked matrix products.

    Parameters
    ----------
    rows:
        ``(m, d)`` float32 rows of one cell: a numpy array, or a torch tensor (the products run
        on its device).
    row_ids:
        ``(m,)`` global row ids (distinct).
    threshold:
        Pairs at distance ``<= threshold`` (compared in float32, as the neighbour graphs are).
    block_size:
        Rows per matrix product (a ``(block_size, m)`` float32 product at a time); ``None``:
        128 in numpy, 2,048 in torch.
    n_primary:
        Only pairs with at least one of the first ``n_primary`` rows (the cell's primary rows);
        ``None``: all pairs.
    device:
        ``None`` (numpy, BLAS) or a torch device name (``"cpu"``, ``"cuda"``) to run the products
        in torch; a torch tensor in ``rows`` implies its own device.
    verify:
        ``(m, D)`` rows whose distances decide, when ``rows`` are their projection through an
        orthonormal ``(d, D)`` map (``|P a - P b| <= |a - b|``): the products screen in ``d``
        dimensions and every candidate is measured in ``D``; the pairs are those of ``verify``.
    cross_only:
        Only pairs of a primary row with a later, non-primary row (a cell's entries added by
        a wider margin, joined after its primary rows' own pairs were found).
    """
    row_ids = np.asarray(row_ids, dtype=np.int64)
    m = len(row_ids)
    n_primary = m if n_primary is None else min(int(n_primary), m)
    if m < 2 or n_primary < 1 or (cross_only and n_primary >= m):
        return ClosePairs.empty()
    in_torch = device is not None or is_torch_tensor(rows)
    if block_size is None:
        block_size = TORCH_BLOCK_SIZE if in_torch else DEFAULT_BLOCK_SIZE
    if in_torch:
        a, b, dist = torch_join(
            rows,
            verify,
            threshold=threshold,
            slack=_SCREEN_SLACK,
            block_size=block_size,
            n_primary=n_primary,
            device=device,
        )
        if cross_only:
            a, b, dist = _crossing(a, b, dist, n_primary)
    else:
        x = np.ascontiguousarray(rows, dtype=np.float32)
        a, b = _screen_numpy(x, threshold, block_size, n_primary, cross_only=cross_only)
        source = x if verify is None else np.ascontiguousarray(verify, dtype=np.float32)
        if verify is not None and len(a) > DENSE_CANDIDATES * m * n_primary:
            # the projection screens out too little here: screen in full width instead
            a, b = _screen_numpy(source, threshold, block_size, n_primary, cross_only=cross_only)
        dist = _candidate_distances(source, a, b)
    keep = dist <= threshold
    a, b, dist = a[keep], b[keep], dist[keep]
    gi, gj = row_ids[a], row_ids[b]
    i, j = np.minimum(gi, gj), np.maximum(gi, gj)
    order = np.lexsort((j, i))
    return ClosePairs(i[order], j[order], dist[order])


def _crossing(a: np.ndarray, b: np.ndarray, dist: np.ndarray, n_primary: int) -> tuple:
    """The pairs ``(a, b, dist)`` (``(p,)`` cell positions and distances) that are not
    between two of the first ``n_primary`` rows."""
    keep = (np.asarray(a) >= n_primary) | (np.asarray(b) >= n_primary)
    return a[keep], b[keep], dist[keep]


def screen_cell(
    rows: np.ndarray,
    row_ids: np.ndarray,
    *,
    threshold: float,
    block_size: int | None = None,
    n_primary: int | None = None,
    with_squares: bool = False,
    cross_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs ``(i, j)`` of :func:`join_cell`'s screen, unmeasured: ``(c,)`` int64
    global row ids, ``i < j``, of every pair of ``rows`` within ``threshold`` and a few more.
    ``with_squares``: ``rows`` is ``(m, d' + 1)``, each row followed by its float32 squared
    norm (the screen then reads the norms instead of summing them).

    For rows that are the projection of the caller's rows through an orthonormal map
    (``|P a - P b| <= |a - b|``): the caller measures the candidates in full width, once for
    all cells (a pair screened in several cells is measured once), so a cell's task carries
    only its projected ``(m, d')`` float32 ``rows`` instead of also its ``(m, D)`` full rows.
    Options as in :func:`join_cell` (numpy only; ``block_size`` ``None``:
    :data:`SCREEN_BLOCK_SIZE`).
    """
    row_ids = np.asarray(row_ids, dtype=np.int64)
    m = len(row_ids)
    n_primary = m if n_primary is None else min(int(n_primary), m)
    if m < 2 or n_primary < 1 or (cross_only and n_primary >= m):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    x = np.ascontiguousarray(rows, dtype=np.float32)
    size = block_size or SCREEN_BLOCK_SIZE
    a, b = _screen_numpy(
        x, threshold, size, n_primary, with_squares=with_squares, cross_only=cross_only
    )
    gi, gj = row_ids[a], row_ids[b]
    return np.minimum(gi, gj), np.maximum(gi, gj)


def _candidate_distances(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`exact_pair_distances` of rows ``x[a]``, ``x[b]``, at most ~64 MB of rows at a time."""
    step = max(1, _VERIFY_BYTES // (4 * x.shape[1]))
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), step):
        stop = start + step
        out[start:stop] = exact_pair_distances(x[a[start:stop]], x[b[start:stop]])
    return out


def _screen_numpy(
    x: np.ndarray,
    threshold: float,
    block_size: int,
    n_primary: int,
    *,
    with_squares: bool = False,
    cross_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(a, b)``, ``a < b``, ``a < n_primary``: every pair within
    ``threshold`` and a few more (float32 slack); with ``cross_only``, only those with
    ``b >= n_primary`` (the primary rows against the others alone).

    One product gives ``|b|^2 - 2 a.b``: the primary rows ``[-2 a, 1]`` (``(n_primary, d + 1)``)
    times the columns ``[b; |b|^2]`` (``(d + 1, m)``, contiguous: BLAS reads it faster than a
    transposed view), ``block_size`` primary rows at a time against the columns from the
    block's first row on, into one scratch buffer per cell. A row's pair with itself is masked
    on the diagonal; each block keeps only its rows' minima. The (rare, ~6 % at 1M x 64) rows
    whose minimum passes are multiplied again, all together, against every column, and their
    pairs with a later row kept (:func:`_hit_pairs`): two calls per cell instead of half a dozen
    per block with a hit (measured at 1M x 64, 3,910 cells: 1.85-1.95 -> 1.68-1.78 CPU s of
    screens, the same candidates).
    """
    m, d = x.shape
    if with_squares:  # x is [rows, |rows|^2] already: one transposed copy is the columns
        right = np.ascontiguousarray(x.T)
        sq = right[-1]
        left = np.multiply(x[:n_primary], -2.0)  # times -2: exact, as on the columns
        left[:, -1] = 1.0
    else:
        # float32 sums (10 against 32 us for 750 x 64): their rounding (~1e-7 relative) is far
        # inside the screen's slack, and the exact distances decide every candidate
        sq = np.einsum("ij,ij->i", x, x)
        right = np.empty((d + 1, m), dtype=np.float32)
        right[:-1] = x.T
        right[-1] = sq
        left = np.empty((n_primary, d + 1), dtype=np.float32)
        np.multiply(x[:n_primary], -2.0, out=left[:, :-1])  # times -2: exact, as on the columns
        left[:, -1] = 1.0
    slack = np.float32(_SCREEN_SLACK * float(sq.max()) + 1e-12)
    limit = np.float32(threshold) ** 2 + slack - sq[:n_primary]  # float32, as the scores
    minima = np.empty(n_primary, dtype=np.float32)
    scratch = np.empty(min(block_size, n_primary) * m, dtype=np.float32)
    row_minima = np.minimum.reduce  # without np.min's Python wrapper
    for start in range(0, n_primary, block_size):
        stop = min(start + block_size, n_primary)
        first = n_primary if cross_only else start  # b from here on
        width = m - first
        d2 = scratch[: (stop - start) * width].reshape(stop - start, width)
        np.matmul(left[start:stop], right[:, first:], out=d2)  # |x_a - x_b|^2 - |x_a|^2
        if not cross_only:
            d2.ravel()[:: width + 1] = np.inf  # each row against itself
        row_minima(d2, axis=1, out=minima[start:stop])
    hit = np.flatnonzero(minima <= limit)
    return _hit_pairs(left, right, limit, hit, first=n_primary if cross_only else None)


def _hit_pairs(
    left: np.ndarray,
    right: np.ndarray,
    limit: np.ndarray,
    hit: np.ndarray,
    *,
    first: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_screen_numpy`'s candidates ``(a, b)``, ``a < b``, of the ``(h,)`` primary rows
    ``hit`` (those with a score within their limit): their ``(h, d + 1)`` rows of ``left``
    against every ``(d + 1, m)`` column of ``right`` at once (from column ``first`` on when
    given), compared with their ``limit``. The scores may round otherwise than the blocks'
    products did; the slack covers that (a pair within the threshold passes either way), and
    the exact distances decide."""
    if len(hit) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if first is not None:  # columns from `first` on, all later than every primary row
        d2 = left[hit] @ right[:, first:]
        a, b = np.divmod(np.flatnonzero(d2 <= limit[hit, None]), d2.shape[1])
        return hit[a], b + first
    d2 = left[hit] @ right
    a, b = np.divmod(np.flatnonzero(d2 <= limit[hit, None]), d2.shape[1])  # true_positions
    a = hit[a]
    later = b > a  # each pair once: from its earlier row (and never a row with itself)
    return a[later], b[later]


def merge_pairs(parts: Iterable[ClosePairs]) -> ClosePairs:
    """Union of close pairs, deduplicated and sorted by ``(i, j)``: the same whatever the order
    of ``parts`` (a pair found in several cells has the same exact distance in each)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return ClosePairs.empty()
    i = np.concatenate([p.i for p in parts])
    j = np.concatenate([p.j for p in parts])
    dist = np.concatenate([p.distance for p in parts])
    order = np.lexsort((dist, j, i))
    i, j, dist = i[order], j[order], dist[order]
    first = np.ones(len(i), dtype=bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return ClosePairs(i[first], j[first], dist[first])
