"""Exact close pairs between query rows and reference rows, by one blocked matrix product.

The reference index's join inside a cell (and of the automatic margin's sampled rows): a
float32 screen ``|r|^2 - 2 q.r <= t^2 - |q|^2`` with a generous slack, then the exact distance
of every candidate (float32 differences, float64 sums: the value ``find_duplicates`` gives).
"""

from __future__ import annotations

import numpy as np

from .._mapped import mapped_empty
from ..search import exact_pair_distances, sample_rows

__all__ = [
    "NearestScreen",
    "ProjectedRows",
    "bounded_screen",
    "close_pairs",
    "dense_screen",
    "is_dense",
    "pair_distances",
    "screen_block",
    "squared_norms",
]

#: entries of one (queries, reference rows) product (64 MB of float32).
_PRODUCT_ENTRIES = 16 << 20
#: bytes of gathered rows measured at once.
_GATHER_BYTES = 64 << 20
#: relative float32 slack of the product screen (times the largest squared row norm).
_SCREEN_SLACK = 1e-4
#: rows the projection of :class:`ProjectedRows` is fitted on.
_PROJECTION_FIT_ROWS = 2048
#: a projected screen passing more than this share of its pairs is redone in full width.
_DENSE_CANDIDATES = 0.02


def close_pairs(
    q: np.ndarray,
    r: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, distance)``: every pair ``q[a]``, ``r[b]`` within ``threshold``, exactly
    (``q``: a few rows, ``r``: many; the product is ``(len(q), len(r))``).

    The screen compares ``-2 q.r`` with ``t^2 - |q|^2 - min |r|^2`` plus twice the slack (as
    :class:`NearestScreen`): one comparison per entry, no pass adding the rows' norms, and
    the exact distances decide every candidate.
    """
    sq_q = squared_norms(q)
    sq_r = np.einsum("ij,ij->i", r, r)  # float32 sums: only their extremes are used
    slack = np.float32(_SCREEN_SLACK * float(max(sq_q.max(), sq_r.max())) + 1e-12)
    limit = (np.float32(threshold) ** 2 + 2 * slack - sq_q - sq_r.min()).astype(np.float32)
    minus_twice = q * np.float32(-2.0)  # the product gives -2 q.r
    step = max(1, _PRODUCT_ENTRIES // len(r))
    found_a, found_b = [], []
    for start in range(0, len(q), step):
        d2 = minus_twice[start : start + step] @ r.T
        # np.flatnonzero and a divmod: 2-D np.nonzero walks the mask element by element
        a, b = np.divmod(np.flatnonzero(d2 <= limit[start : start + step, None]), len(r))
        found_a.append(a + start)
        found_b.append(b)
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    dist = pair_distances(r, b, q, a)
    keep = dist <= np.float32(threshold)
    return a[keep], b[keep], dist[keep]


class ProjectedRows:
    """The reference rows through an orthonormal projection to ``width`` dimensions, with
    their squared norms: an exact screen at ``width / d`` of a product's cost.

    The projection (the top principal directions of a seeded sample of the rows) never
    lengthens a distance, so a screen of the projected rows keeps every pair within the
    threshold; every candidate is then measured exactly in full width. The rows are stored
    as ``(N, width + 1)`` float32 ``[P r, |P r|^2]``, so that one product with a query's
    ``[-2 P q, 1]`` gives ``|P r|^2 - 2 P q.P r`` (no pass adding the norms); at
    ``d = 4 width`` they are a quarter of the rows' bytes to gather or map. A screen that
    passes more than 2 % of its pairs (little variance in the projection) is redone in full
    width by the caller.

    Parameters
    ----------
    projection:
        ``(d, width)`` float32 orthonormal columns.
    rows:
        ``(N, width + 1)`` float32 projected rows and their squared norms (may be a
        read-only memmap), in the order of the reference rows they stand for.
    largest:
        The largest squared norm of the projected rows.
    """

    def __init__(self, projection: np.ndarray, rows: np.ndarray, largest: float) -> None:
        self.projection = projection
        self.rows = rows
        self.largest = float(largest)

    @classmethod
    def fit(
        cls, x: np.ndarray, width: int, *, seed: int, among: np.ndarray | None = None
    ) -> ProjectedRows:
        """Project the ``(N, d)`` float32 rows ``x`` (``d > width``) on the top ``width``
        principal directions of a seeded sample of 2,048 of them, or of about 2,048 spread
        evenly over the ``(s,)`` ascending positions ``among`` when given (every
        ``s // 2,048``-th)."""
        if among is None:
            fit = x[sample_rows(len(x), _PROJECTION_FIT_ROWS, seed)]
        else:
            fit = x[among[:: max(1, len(among) // _PROJECTION_FIT_ROWS)]]
        projection = _principal_directions(fit, width, seed=seed)
        rows = mapped_empty((len(x), width + 1))  # kept with the index: see mapped_empty
        np.matmul(x, projection, out=rows[:, :width])
        rows[:, width] = np.einsum("ij,ij->i", rows[:, :width], rows[:, :width])
        return cls(projection, rows, float(rows[:, width].max()) if len(x) else 0.0)

    def queries(
        self, q: np.ndarray, projected: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(left, sq)``: ``(m, width + 1)`` float32 ``[-2 P q, 1]`` of the ``(m, d)`` rows
        ``q`` and ``(m,)`` their projections' squared norms (``projected``: ``P q`` when the
        caller has it)."""
        if projected is None:
            projected = q @ self.projection
        left = np.empty((len(q), projected.shape[1] + 1), dtype=np.float32)
        np.multiply(projected, np.float32(-2.0), out=left[:, :-1])
        left[:, -1] = 1.0
        return left, np.einsum("ij,ij->i", projected, projected)

    def bounded_queries(self, q: np.ndarray, threshold: float) -> np.ndarray:
        """``(m, width + 2)`` float32 ``[-2 P q, 1, -limit]`` of the ``(m, d)`` rows ``q``
        (``limit``: :meth:`limits`): times a row ``[P r, |P r|^2, 1]`` of :meth:`take_bounded`
        it gives ``|P r|^2 - 2 P q.P r - limit``, at most 0 for every row within ``threshold``
        (one comparison with 0 for all the products' entries, not a bound per row: a
        comparison with a column of bounds loops once per row)."""
        left, sq = self.queries(q)
        return np.concatenate([left, -self.limits(sq, threshold)[:, None]], axis=1)

    def bounded_buffer(self, rows: int) -> np.ndarray:
        """``(rows, width + 2)`` float32 for :meth:`take_bounded`, its last column 1."""
        return np.ones((rows, self.rows.shape[1] + 1), dtype=np.float32)

    def take_bounded(self, at: np.ndarray, buffer: np.ndarray) -> np.ndarray:
        """``(len(at), width + 2)`` float32 ``[P r, |P r|^2, 1]`` of the stored rows at the
        ``(n,)`` positions ``at``, written into ``buffer`` (:meth:`bounded_buffer` of at
        least ``n`` rows)."""
        out = buffer[: len(at)]
        out[:, :-1] = np.take(self.rows, at, axis=0)
        return out

    def queries_of(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`queries` of the projected rows ``at`` themselves (``(s,)`` positions)."""
        stored = np.take(self.rows, at, axis=0)
        left = stored.copy()
        left[:, :-1] *= np.float32(-2.0)
        left[:, -1] = 1.0
        return left, stored[:, -1].copy()

    def limits(self, sq: np.ndarray, threshold: float) -> np.ndarray:
        """``(m,)`` float32 bound on ``|P r|^2 - 2 P q.P r`` of queries whose projections'
        squared norms are ``sq``: ``t^2 - |P q|^2`` plus the float32 slack."""
        largest = max(float(sq.max()) if len(sq) else 0.0, self.largest)
        slack = np.float32(_SCREEN_SLACK * largest + 1e-12)
        return (np.float32(threshold) ** 2 + slack - sq).astype(np.float32)

    def pairs(
        self, x: np.ndarray, q: np.ndarray, listed: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, distance)``: every pair of ``q[a]`` (``(m, d)`` float32) and row
        ``listed[b]`` of ``x`` (the rows this projects) within ``threshold``, exactly, as
        :func:`close_pairs` finds them."""
        left = self.bounded_queries(q, threshold)
        flat = bounded_screen(left, self.take_bounded(listed, self.bounded_buffer(len(listed))))
        if is_dense(len(flat), len(q), len(listed)):
            return close_pairs(q, np.take(x, listed, axis=0), threshold)
        a, b = np.divmod(flat, len(listed))
        dist = pair_distances(x, listed[b], q, a)
        keep = dist <= np.float32(threshold)
        return a[keep], b[keep], dist[keep]


def bounded_screen(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``(p,)`` ascending flat positions ``a * len(right) + b`` where ``(left @ right.T)[a, b]
    <= 0`` (``(m, k)``, ``(n, k)`` float32: :meth:`ProjectedRows.bounded_queries` and
    :meth:`ProjectedRows.take_bounded`), at most 16M entries at once."""
    zero = np.float32(0.0)
    if len(left) * len(right) <= _PRODUCT_ENTRIES:
        # np.flatnonzero: 2-D np.nonzero walks the mask element by element
        return np.flatnonzero(left @ right.T <= zero)
    step = max(1, _PRODUCT_ENTRIES // max(1, len(right)))
    found = [
        np.flatnonzero(left[start : start + step] @ right.T <= zero) + start * len(right)
        for start in range(0, len(left), step)
    ]
    return np.concatenate(found)


def dense_screen(left: np.ndarray, limit: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``(p,)`` ascending flat positions ``a * len(right) + b`` where ``(left @ right.T)[a, b]
    <= limit[a]`` (``(m, k)``, ``(m,)``, ``(n, k)`` float32), at most 16M entries at once."""
    step = max(1, _PRODUCT_ENTRIES // max(1, len(right)))
    if len(left) <= step:
        # np.flatnonzero: 2-D np.nonzero walks the mask element by element
        return np.flatnonzero(left @ right.T <= limit[:, None])
    found = []
    for start in range(0, len(left), step):
        d2 = left[start : start + step] @ right.T
        found.append(np.flatnonzero(d2 <= limit[start : start + step, None]) + start * len(right))
    return np.concatenate(found)


def screen_block(left: np.ndarray, bound: np.ndarray, right: np.ndarray) -> np.ndarray:
    """:func:`dense_screen` with the ``(m, 1)`` column ``bound`` as the limit: one product,
    one comparison and one ``nonzero`` for a cell's entries (the scoring loop's few numpy
    calls per cell, the entries' rows gathered once per batch: measured at 1M x 64, 100k
    queries, 3,905 cells, warm: 0.26 -> 0.24 CPU s a batch, the same candidates)."""
    if len(left) * len(right) > _PRODUCT_ENTRIES:
        return dense_screen(left, bound[:, 0], right)
    return (left @ right.T <= bound).ravel().nonzero()[0]


def is_dense(candidates: int, rows: int, columns: int) -> bool:
    """Whether a projected screen passed more than 2 % of its ``rows x columns`` pairs."""
    return candidates > _DENSE_CANDIDATES * rows * columns


def _principal_directions(fit: np.ndarray, width: int, *, seed: int) -> np.ndarray:
    """``(d, width)`` float32 orthonormal columns spanning the top principal directions of the
    ``(s, d)`` rows ``fit``: a seeded randomized range finder with one power iteration (an
    exact SVD of 2,048 x 784 pixels cost 0.3 s; any orthonormal map keeps the screen exact,
    a better one only passes fewer candidates)."""
    rows = np.asarray(fit, dtype=np.float64)
    rows = rows - rows.mean(axis=0)
    rng = np.random.default_rng([int(seed), 0x9E4])
    basis, _ = np.linalg.qr(rows @ rng.normal(size=(rows.shape[1], width + 8)))
    basis, _ = np.linalg.qr(rows @ (rows.T @ basis))  # one power iteration
    _, _, vt = np.linalg.svd(basis.T @ rows, full_matrices=False)
    return np.ascontiguousarray(vt[:width].T, dtype=np.float32)


def pair_distances(r: np.ndarray, b: np.ndarray, q: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(p,)`` ``exact_pair_distances(r[b], q[a])``, at most 64 MB of gathered rows at a
    time (``r`` may be a memory map: its rows are gathered in the order of ``b``)."""
    step = max(1, _GATHER_BYTES // (4 * max(1, r.shape[1])))
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), step):
        stop = start + step
        out[start:stop] = exact_pair_distances(r[b[start:stop]], q[a[start:stop]])
    return out


def squared_norms(x: np.ndarray) -> np.ndarray:
    """``(m,)`` float32 squared norms of the rows of ``x`` (float64 sums)."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)


class NearestScreen:
    """Candidate pairs of query rows and a cell's reference rows, screened by one matrix
    product per cell; the queries' norms and bounds are computed once for the whole batch.

    The screen keeps, per query, the rows ``r`` of a cell whose ``-2 q.r`` in float32 lies
    within ``t^2 - |q|^2 - min |r|^2`` of the cell, plus a slack of ``1e-4`` times the largest
    squared norm of the batch and the reference (twice: once for the float32 product, once
    for the norms): every row within the threshold. The cell's smallest squared norm stands
    for each row's own, so a cell costs one product and one comparison (no pass adding the
    rows' norms); the few extra candidates are measured exactly (:func:`pair_distances`)
    like the others and dropped there.

    Parameters
    ----------
    queries:
        ``(m, d)`` float32 query rows.
    threshold:
        The distance.
    max_sq_reference:
        The largest squared norm of the reference rows.
    """

    def __init__(self, queries: np.ndarray, threshold: float, max_sq_reference: float) -> None:
        self._minus_twice = queries * np.float32(-2.0)  # one product gives -2 q.r
        sq_q = squared_norms(queries)
        largest = max(float(sq_q.max()) if len(sq_q) else 0.0, max_sq_reference)
        slack = np.float32(_SCREEN_SLACK * largest + 1e-12)
        # |q - r|^2 - |q|^2 - |r|^2 = -2 q.r is screened against t^2 + slack - |q|^2 - |r|^2
        self._limit = (np.float32(threshold) ** 2 + 2 * slack - sq_q).astype(np.float32)

    def bounds(self, at: np.ndarray, least_sq: np.ndarray) -> np.ndarray:
        """``(e,)`` float32 bound on ``-2 q.r`` of each entry: query ``at[e]`` in a cell whose
        rows' smallest squared norm is ``least_sq[e]``."""
        return self._limit[at] - least_sq

    def candidates(self, at: np.ndarray, bound: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``(p,)`` flat positions ``a * len(rows) + b`` of the candidate pairs of queries
        ``at[a]`` (with ``bound[a]`` from :meth:`bounds`) and ``rows[b]`` (``(n, d)`` float32
        reference rows of one cell), ascending."""
        return dense_screen(np.take(self._minus_twice, at, axis=0), bound, rows)
