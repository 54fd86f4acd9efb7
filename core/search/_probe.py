"""k nearest rows by cell probing: sub-quadratic kNN between a query set and a target set.

The targets are partitioned by :func:`fit_partition` (k-means on a seeded sample, about
``sqrt(T)`` cells of ``sqrt(T)`` rows) and each target joins its nearest cell
(:func:`route_rows`, no spill). Each query visits its ``n_probe`` nearest cells and keeps
its ``k`` best targets among them, found exactly with one matrix product per cell. A query
thus compares against about ``n_probe * sqrt(T)`` targets instead of ``T``: the work grows
like ``Q * sqrt(T)``, not ``Q * T``. Below :data:`EXACT_PRODUCT` query-target pairs it is
plain blocked brute force (the exact answer).

Neighbours are nearest by inner product, which for rows of unit length (the candidate views
of :func:`neardup.views.candidate_features`) is nearest in Euclidean distance.
"""

from __future__ import annotations

import math

import numpy as np

from ._cells import fit_partition, route_rows

__all__ = ["DEFAULT_PROBES", "EXACT_PRODUCT", "probed_neighbors", "top_k_by_product"]

#: cells each query visits (of about ``sqrt(T)``)
DEFAULT_PROBES = 16
#: up to this many query-target pairs the search is exact brute force
EXACT_PRODUCT = 100_000_000
_SEARCH_BYTES = 64 << 20
_SAMPLE_PER_CELL = 32
_QUERY_CHUNK = 65_536


def top_k_by_product(queries: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """``(Q, min(k, T))`` indices into ``targets`` of each query's ``k`` largest inner
    products (unordered), by blocked brute force.

    Parameters
    ----------
    queries, targets:
        ``(Q, d)`` and ``(T, d)`` float32 rows.
    k:
        Neighbours per query.
    """
    k = min(k, len(targets))
    out = np.empty((len(queries), k), dtype=np.int64)
    if k == 0:
        return out
    step = max(1, _SEARCH_BYTES // (4 * max(1, len(targets))))
    for start in range(0, len(queries), step):
        sim = queries[start : start + step] @ targets.T
        out[start : start + len(sim)] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return out


def probed_neighbors(
    queries: np.ndarray,
    targets: np.ndarray,
    k: int,
    *,
    n_probe: int = DEFAULT_PROBES,
    seed: int = 0,
) -> np.ndarray:
    """Each query's ``k`` nearest targets (largest inner product), searching ``n_probe`` cells.

    Parameters
    ----------
    queries, targets:
        ``(Q, d)`` and ``(T, d)`` float32 rows (unit length for Euclidean neighbours).
    k:
        Neighbours per query.
    n_probe:
        Cells each query searches; more is slower and closer to exact.
    seed:
        Seed of the partition's k-means: the result is deterministic for a seed.

    Returns
    -------
    np.ndarray
        ``(Q, min(k, T))`` int64 indices into ``targets``, unordered; ``-1`` where a query's
        probed cells held fewer than ``k`` targets.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    targets = np.ascontiguousarray(targets, dtype=np.float32)
    k = min(int(k), len(targets))
    n_cells = int(math.sqrt(len(targets)))
    if len(queries) * len(targets) <= EXACT_PRODUCT or n_cells <= n_probe or k == 0:
        return top_k_by_product(queries, targets, k)
    rng = np.random.default_rng(seed)
    size = min(len(targets), _SAMPLE_PER_CELL * n_cells)
    sample = targets[np.sort(rng.choice(len(targets), size=size, replace=False))]
    partition = fit_partition(sample, n_cells=n_cells, seed=seed)
    row, cell = route_rows(partition, targets, margin=0.0)
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]  # each target's nearest cell comes first
    target_cell = np.empty(len(targets), dtype=np.int64)
    target_cell[row[first]] = cell[first]
    probes = _nearest_cells(queries, partition.centroids, min(n_probe, partition.n_cells))
    by_target = np.argsort(target_cell, kind="stable")
    bounds = np.searchsorted(target_cell[by_target], np.arange(partition.n_cells + 1))
    members = [by_target[bounds[c] : bounds[c + 1]] for c in range(partition.n_cells)]
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), _QUERY_CHUNK):  # bounds the (chunk, probes, k) buffers
        stop = start + _QUERY_CHUNK
        out[start:stop] = _search_cells(
            queries[start:stop], targets, members, probes[start:stop], k
        )
    return out


def _nearest_cells(queries: np.ndarray, centroids: np.ndarray, n_probe: int) -> np.ndarray:
    """``(Q, n_probe)`` nearest cell centres of each query (Euclidean)."""
    sq = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty((len(queries), n_probe), dtype=np.int64)
    step = max(1, _SEARCH_BYTES // (4 * len(centroids)))
    for start in range(0, len(queries), step):
        d2 = sq[None, :] - 2.0 * (queries[start : start + step] @ centroids.T)
        out[start : start + len(d2)] = np.argpartition(d2, n_probe - 1, axis=1)[:, :n_probe]
    return out


def _search_cells(
    queries: np.ndarray,
    targets: np.ndarray,
    members: list[np.ndarray],
    probes: np.ndarray,
    k: int,
) -> np.ndarray:
    """Best ``k`` targets of each query over its probed cells (``members[c]``: the targets
    of cell ``c``): one product per cell."""
    n_probe = probes.shape[1]
    scores = np.full((len(queries), n_probe, k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), n_probe, k), -1, dtype=np.int64)
    flat = probes.ravel()
    by_probe = np.argsort(flat, kind="stable")
    probe_bounds = np.searchsorted(flat[by_probe], np.arange(len(members) + 1))
    for c, cell in enumerate(members):
        visits = by_probe[probe_bounds[c] : probe_bounds[c + 1]]
        if not len(cell) or not len(visits):
            continue
        q, slot = np.divmod(visits, n_probe)
        sim = queries[q] @ targets[cell].T
        keep = min(k, len(cell))
        if keep < len(cell):
            best = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
        else:
            best = np.broadcast_to(np.arange(keep), sim.shape)
        scores[q, slot, :keep] = np.take_along_axis(sim, best, axis=1)
        found[q, slot, :keep] = cell[best]
    scores = scores.reshape(len(queries), -1)
    found = found.reshape(len(queries), -1)
    order = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(found, order, axis=1)
