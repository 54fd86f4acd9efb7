"""Exact close pairs between query rows and reference rows, by one blocked matrix product.

The reference index's join inside a cell (and of the automatic margin's sampled rows): a
float32 screen ``|r|^2 - 2 q.r <= t^2 - |q|^2`` with a generous slack, then the exact distance
of every candidate (float32 differences, float64 sums: the value ``find_duplicates`` gives).
"""

from __future__ import annotations

import numpy as np

from ..search import exact_pair_distances, sample_rows

__all__ = ["NearestScreen", "ProjectedPairs", "close_pairs", "pair_distances", "squared_norms"]

#: entries of one (queries, reference rows) product (64 MB of float32).
_PRODUCT_ENTRIES = 16 << 20
#: bytes of gathered rows measured at once.
_GATHER_BYTES = 64 << 20
#: relative float32 slack of the product screen (times the largest squared row norm).
_SCREEN_SLACK = 1e-4
#: rows the projection of :class:`ProjectedPairs` is fitted on.
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


class ProjectedPairs:
    """Close pairs of a few query rows and listed rows of ``x``, screened through an
    orthonormal projection to ``width`` dimensions.

    The projection (the top principal directions of a seeded sample of ``x``) never
    lengthens a distance, so a screen of the projected rows keeps every pair within the
    threshold, at ``width / d`` of the product's cost; the projected rows and their squared
    norms are stored once (``(N, width + 1)`` float32: one product gives ``|P r|^2 - 2 P q.P r``)
    and gathered per call, a quarter of the bytes of the rows at ``d = 4 width``. Every
    candidate is measured exactly in full width (:func:`pair_distances`); a screen that
    passes more than 2 % of its pairs (little variance in the projection) is redone in full
    width by :func:`close_pairs`.

    Parameters
    ----------
    x:
        ``(N, d)`` float32 rows, ``d > width``.
    width:
        Dimensions of the projection.
    seed:
        Seed of the sample the projection is fitted on.
    """

    def __init__(self, x: np.ndarray, width: int, *, seed: int) -> None:
        self._projection = _principal_directions(
            x[sample_rows(len(x), _PROJECTION_FIT_ROWS, seed)], width, seed=seed
        )
        self._x = x
        augmented = np.empty((len(x), width + 1), dtype=np.float32)
        np.matmul(x, self._projection, out=augmented[:, :width])
        projected = augmented[:, :width]
        augmented[:, width] = np.einsum("ij,ij->i", projected, projected)
        self._augmented = augmented
        self._max_sq = float(augmented[:, width].max()) if len(x) else 0.0

    def pairs(
        self, q: np.ndarray, listed: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, distance)``: every pair of ``q[a]`` (``(m, d)`` float32) and row
        ``listed[b]`` of ``x`` within ``threshold``, exactly (as :func:`close_pairs`)."""
        projected = q @ self._projection
        sq_q = np.einsum("ij,ij->i", projected, projected)
        left = np.empty((len(q), projected.shape[1] + 1), dtype=np.float32)
        np.multiply(projected, np.float32(-2.0), out=left[:, :-1])
        left[:, -1] = 1.0
        right = np.take(self._augmented, listed, axis=0)
        largest = max(float(sq_q.max()) if len(sq_q) else 0.0, self._max_sq)
        slack = np.float32(_SCREEN_SLACK * largest + 1e-12)
        limit = (np.float32(threshold) ** 2 + slack - sq_q).astype(np.float32)
        step = max(1, _PRODUCT_ENTRIES // max(1, len(listed)))
        found = []
        for start in range(0, len(q), step):
            d2 = left[start : start + step] @ right.T  # |P r|^2 - 2 P q.P r
            found.append(np.flatnonzero(d2 <= limit[start : start + step, None]))
            found[-1] += start * len(listed)
        flat = np.concatenate(found)
        if len(flat) > _DENSE_CANDIDATES * len(q) * len(listed):
            return close_pairs(q, np.take(self._x, listed, axis=0), threshold)
        a, b = np.divmod(flat, len(listed))
        dist = pair_distances(self._x, listed[b], q, a)
        keep = dist <= np.float32(threshold)
        return a[keep], b[keep], dist[keep]


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
        step = max(1, _PRODUCT_ENTRIES // max(1, len(rows)))
        if len(at) <= step:
            d2 = np.take(self._minus_twice, at, axis=0) @ rows.T
            # np.flatnonzero: 2-D np.nonzero walks the mask element by element
            return np.flatnonzero(d2 <= bound[:, None])
        found = []
        for start in range(0, len(at), step):
            d2 = np.take(self._minus_twice, at[start : start + step], axis=0) @ rows.T
            flat = np.flatnonzero(d2 <= bound[start : start + step, None])
            found.append(flat + start * len(rows))
        return np.concatenate(found)
