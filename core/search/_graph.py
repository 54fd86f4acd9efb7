"""k-nearest-neighbour graphs: the one format every later step reads.

A :class:`NeighborGraph` holds ``indices (N, k)`` and exact Euclidean ``distances (N, k)``
for every row, each row's own entry removed (wherever the backend put it: with many identical
copies the query is not always at position 0), sorted by distance then index, padded with
``-1`` / ``inf`` where a backend returned fewer than ``k`` neighbours.

Speed (see ``benchmarks/bench_duplicates.py``): annoy defaults to :data:`DEFAULT_TREES` trees
(30 in DNIKit; fewer trees keep within-threshold recall at 1.0 on the benchmark's planted
near-duplicates), and its queries run in ``query_jobs`` forked worker processes that share the
built index copy-on-write. Query results depend only on the index, never on the number of
workers, so the graph is the same for any ``query_jobs``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._errors import NeardupInputError
from ._annoy import annoy_indices, resolve_query_jobs
from ._copies import expand_neighbors, find_copies
from ._exact import exact_indices
from ._progress import ProgressFn
from ._rows import Rows

__all__ = [
    "BACKENDS",
    "DEFAULT_TREES",
    "NeighborGraph",
    "build_graph",
    "choose_backend",
    "clamp_k",
    "graph_from_indices",
    "row_distances",
]

BACKENDS = ("auto", "annoy", "exact")

#: ``auto`` picks exact search while the full distance matrix costs at most this many
#: multiply-adds (N * N * d); above it, annoy is faster on one core (see benchmarks/).
_EXACT_MAX_WORK = 4e9
#: neighbour rows gathered at once by row_distances: cache-sized blocks measured 3-4x faster
#: than 128 MB ones.
_GATHER_BYTES = 4 << 20
#: annoy trees by default (DNIKit: 30; its facade still asks for 30). Within-threshold recall
#: against exact search: 1.0 at 100k x 40 and 1M x 64 (benchmarks/bench_duplicates.py); on
#: near-duplicates spread up to the threshold (benchmarks/bench_recall.py, 100k rows) 0.994 at
#: d=64 and 0.998 at d=128 (4 trees: 0.988 at d=64; 8 trees: 0.998 at d=128).
DEFAULT_TREES = 6
_SORT_ROWS = 65_536


@dataclass
class NeighborGraph:
    """Each row's ``k`` nearest other rows with exact distances."""

    indices: np.ndarray  # (N, k) int64, -1 where missing
    distances: np.ndarray  # (N, k) float32, inf where missing
    backend: str

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def clamp_k(k: int, n: int) -> int:
    """Validate ``k`` and clamp it to ``n - 1`` (with a warning) when there are fewer samples."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise NeardupInputError(f"k must be a positive int (neighbours per sample), got {k!r}.")
    if k > n - 1:
        warnings.warn(
            f"k={k} but there are only {n} samples; using k={n - 1} (every other sample).",
            stacklevel=3,
        )
        return n - 1
    return int(k)


def choose_backend(backend: str, n: int, d: int) -> str:
    """Resolve ``backend`` (``auto`` | ``annoy`` | ``exact``) for ``n`` samples of width ``d``."""
    if backend not in BACKENDS:
        raise NeardupInputError(
            f"backend={backend!r} is not supported; use one of {', '.join(map(repr, BACKENDS))}."
        )
    if backend == "auto":
        return "exact" if float(n) * n * d <= _EXACT_MAX_WORK else "annoy"
    return backend


def row_distances(
    x: np.ndarray, indices: np.ndarray, queries: np.ndarray | None = None
) -> np.ndarray:
    """Exact distances from every query row ``i`` to the rows ``x[indices[i]]`` (``inf`` at -1).

    The query rows are ``x`` itself unless ``queries`` (``(len(indices), d)``) is given.
    Blocked over rows so only one gather of the neighbour rows is held at a time; the
    differences are formed in float32 (no cancellation: near-duplicate pairs keep their digits)
    and their squares summed in float64.
    """
    queries = x if queries is None else queries
    n, k = indices.shape
    out = np.empty((n, k), dtype=np.float32)
    step = max(1, _GATHER_BYTES // (4 * k * max(1, x.shape[1])))
    for start in range(0, n, step):
        stop = min(n, start + step)
        diff = np.asarray(x[np.maximum(indices[start:stop], 0)], dtype=np.float32)
        diff -= queries[start:stop, None, :]
        out[start:stop] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff, dtype=np.float64))
    out[indices < 0] = np.inf
    return out


def graph_from_indices(indices: np.ndarray, x: np.ndarray, backend: str) -> NeighborGraph:
    """Recompute exact distances for the candidate pairs and sort each row (in place, blocked).

    Sorting block by block keeps the temporaries (sort keys, orders) to one block instead of
    three more ``(N, k)`` arrays at once.
    """
    distances = row_distances(x, indices)
    missing = np.iinfo(np.int64).max
    for start in range(0, len(indices), _SORT_ROWS):
        idx = indices[start : start + _SORT_ROWS]
        dist = distances[start : start + _SORT_ROWS]
        order = np.lexsort((np.where(idx >= 0, idx, missing), dist), axis=-1)
        idx[:] = np.take_along_axis(idx, order, axis=1)
        dist[:] = np.take_along_axis(dist, order, axis=1)
    return NeighborGraph(indices=indices, distances=distances, backend=backend)


def build_graph(
    x: np.ndarray | Rows,
    k: int,
    *,
    backend: str = "auto",
    n_trees: int = DEFAULT_TREES,
    search_k: int = -1,
    seed: int = 0,
    n_jobs: int = 1,
    query_jobs: int = -1,
    dedupe: bool = False,
    prefer: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> NeighborGraph:
    """Build the kNN graph of ``x`` (an ``(N, d)`` float32 matrix, or :class:`Rows`).

    ``n_jobs`` threads build the annoy index (it shapes the trees); ``query_jobs`` forked
    processes query it (-1: one per CPU; the result is the same for any value). With
    ``dedupe``, exact copies are grouped by hashing first and annoy indexes each distinct row
    once (``neardup.search._copies``); ``prefer`` (``(N,)`` bool) then picks which copy stands
    for a group. Given :class:`Rows`, the annoy index is filled block by block and the full
    matrix is materialised only after the index is freed.
    """
    rows = x if isinstance(x, Rows) else Rows.from_matrix(x)
    backend = choose_backend(backend, *rows.shape)
    resolve_query_jobs(query_jobs)  # validate early, whatever the backend
    if backend == "exact":
        indices = exact_indices(rows.matrix(), k, progress)
    else:
        if n_trees < 1:
            raise NeardupInputError(f"n_trees must be >= 1, got {n_trees}.")
        copies = find_copies(rows) if dedupe else None
        options = dict(n_trees=n_trees, search_k=search_k, seed=seed, n_jobs=n_jobs)
        items = None if copies is None else copies.first
        found = annoy_indices(
            rows, items, k, query_jobs=query_jobs, progress=progress, **options
        )
        if copies is not None and copies.n_copies:
            indices = expand_neighbors(found, copies, k, prefer)
            del found, copies  # before the full matrix and the exact distances exist
        elif found.shape[1] == k:
            indices = found
        else:
            indices = np.full((rows.n, k), -1, dtype=np.int64)
            indices[:, : found.shape[1]] = found
    return graph_from_indices(indices, rows.matrix(), backend)


