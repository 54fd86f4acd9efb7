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

import multiprocessing
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._errors import NeardupInputError
from ._copies import expand_neighbours, find_copies
from ._rows import Rows

__all__ = [
    "BACKENDS",
    "DEFAULT_TREES",
    "NeighborGraph",
    "ProgressFn",
    "build_annoy_index",
    "build_graph",
    "choose_backend",
    "clamp_k",
    "drop_self",
    "graph_from_indices",
    "nearest_among",
    "pair_distances",
    "query_all",
    "resolve_query_jobs",
    "row_distances",
]

ProgressFn = Callable[[str, int, int], None]
BACKENDS = ("auto", "annoy", "exact")

#: ``auto`` picks exact search while the full distance matrix costs at most this many
#: multiply-adds (N * N * d); above it, annoy is faster on one core (see benchmarks/).
_EXACT_MAX_WORK = 4e9
_BLOCK_BYTES = 128 << 20
#: neighbour rows gathered at once by row_distances: cache-sized blocks measured 3-4x faster
#: than 128 MB ones.
_GATHER_BYTES = 4 << 20
#: annoy trees by default (DNIKit: 30; its facade still asks for 30). Within-threshold recall
#: against exact search: 1.0 at 100k x 40 and 1M x 64 (benchmarks/bench_duplicates.py); on
#: near-duplicates spread up to the threshold (benchmarks/bench_recall.py, 100k rows) 0.994 at
#: d=64 and 0.998 at d=128 (4 trees: 0.988 at d=64; 8 trees: 0.998 at d=128).
DEFAULT_TREES = 6
#: below this many rows, forking query workers costs more than it saves.
_PARALLEL_MIN_ROWS = 20_000
_CHUNK_ROWS = 16_384
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


def pair_distances(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Exact Euclidean distances between ``x[rows]`` and ``x[cols]`` (float64 accumulation)."""
    out = np.empty(len(rows), dtype=np.float32)
    step = max(1, _BLOCK_BYTES // (8 * max(1, x.shape[1])))
    for start in range(0, len(rows), step):
        diff = x[rows[start : start + step]] - x[cols[start : start + step]]
        out[start : start + len(diff)] = np.sqrt(
            np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
        )
    return out


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


def _exact_indices(x: np.ndarray, k: int, progress: ProgressFn | None) -> np.ndarray:
    """Blocked brute force: ``|a|^2 + |b|^2 - 2ab`` per block of rows, then top-k selection."""
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    rows_per_block = int(max(1, min(n, _BLOCK_BYTES // (4 * n))))
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


def _annoy_indices(
    rows: Rows,
    items: np.ndarray | None,
    k: int,
    *,
    n_trees: int,
    search_k: int,
    seed: int,
    n_jobs: int,
    query_jobs: int,
    progress: ProgressFn | None,
) -> np.ndarray:
    """Approximate neighbours with annoy (euclidean), seeded; the query itself is removed.

    The index holds the rows ``items`` (ascending global rows; ``None``: every row) as items
    ``0..len(items)-1``, filled block by block from ``rows`` so no second full copy of the
    data is made. Returns ``(len(items), min(k, len(items) - 1))`` item numbers.

    With a fixed ``n_jobs`` the index (and so the result) is identical run to run; annoy
    builds different trees for different thread counts, so ``n_jobs=-1`` (DNIKit's choice)
    reproduces only on machines with the same number of cores. ``query_jobs`` never changes
    the result: each item's query depends on the index alone.
    """
    n_items = rows.n if items is None else len(items)
    k = min(k, n_items - 1)
    if k < 1:
        return np.full((n_items, 0), -1, dtype=np.int64)
    index = build_annoy_index(
        rows, items, n_trees=n_trees, seed=seed, n_jobs=n_jobs, progress=progress
    )
    try:
        found = query_all(index, n_items, k + 1, int(search_k), query_jobs, progress)
    finally:
        index.unload()  # free the index before the (N, k) post-processing arrays exist
    return drop_self(found, k)


def build_annoy_index(
    rows: Rows,
    items: np.ndarray | None = None,
    *,
    n_trees: int,
    seed: int,
    n_jobs: int,
    progress: ProgressFn | None = None,
):
    """A seeded euclidean annoy index of ``rows`` (or of the ascending global rows ``items``,
    as items ``0..len(items)-1``), filled block by block: no full copy of the data is made."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(rows.d, "euclidean")
    index.set_seed(int(seed))
    add = index.add_item
    for start, block in rows.blocks():
        if items is None:
            for i in range(len(block)):
                add(start + i, block[i].tolist())
            continue
        lo, hi = np.searchsorted(items, [start, start + len(block)])
        for item, row in zip(range(lo, hi), (items[lo:hi] - start).tolist()):
            add(item, block[row].tolist())
    if progress:
        progress("building annoy index", 0, 1)
    index.build(int(n_trees), n_jobs=int(n_jobs))
    if progress:
        progress("building annoy index", 1, 1)
    return index


#: the built index, inherited by forked query workers (copy-on-write, never pickled).
_SHARED_INDEX = None


def _query_rows(index, start: int, stop: int, n_results: int, search_k: int) -> np.ndarray:
    """One ``get_nns_by_item`` call per item ``start..stop-1``; rows padded with ``-1``."""
    found = np.full((stop - start, n_results), -1, dtype=_item_dtype(index.get_n_items()))
    query = index.get_nns_by_item
    for i in range(start, stop):
        hits = query(i, n_results, search_k)
        found[i - start, : len(hits)] = hits
    return found


def _query_chunk(task: tuple[int, int, int, int]) -> tuple[int, np.ndarray]:
    start, stop, n_results, search_k = task
    return start, _query_rows(_SHARED_INDEX, start, stop, n_results, search_k)


def resolve_query_jobs(query_jobs: int) -> int:
    """Worker processes for annoy queries: ``-1`` means one per available CPU."""
    if isinstance(query_jobs, bool) or not isinstance(query_jobs, (int, np.integer)):
        raise NeardupInputError(
            f"query_jobs must be an int (-1 for one worker per CPU, 1 for none), got "
            f"{query_jobs!r}."
        )
    if query_jobs == -1:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if query_jobs < 1:
        raise NeardupInputError(
            f"query_jobs must be >= 1 or -1 (one worker per CPU), got {query_jobs}."
        )
    return int(query_jobs)


def query_all(
    index, n: int, n_results: int, search_k: int, query_jobs: int, progress: ProgressFn | None
) -> np.ndarray:
    """Query every item, in forked workers sharing ``index`` when that can pay off."""
    global _SHARED_INDEX
    jobs = min(resolve_query_jobs(query_jobs), max(1, n // _CHUNK_ROWS))
    tasks = [
        (start, min(n, start + _CHUNK_ROWS), n_results, search_k)
        for start in range(0, n, _CHUNK_ROWS)
    ]
    found = np.empty((n, n_results), dtype=_item_dtype(n))
    done = 0
    if jobs > 1 and n >= _PARALLEL_MIN_ROWS and "fork" in multiprocessing.get_all_start_methods():
        _SHARED_INDEX = index
        try:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                for start, rows in pool.imap_unordered(_query_chunk, tasks):
                    found[start : start + len(rows)] = rows
                    done += len(rows)
                    if progress:
                        progress("querying annoy index", done, n)
        finally:
            _SHARED_INDEX = None
        return found
    for start, stop, _, _ in tasks:
        found[start:stop] = _query_rows(index, start, stop, n_results, search_k)
        if progress:
            progress("querying annoy index", stop, n)
    return found


def _item_dtype(n: int) -> type:
    """int32 item numbers while they fit: halves the largest array of the query phase."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def drop_self(found: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index from its ``k + 1`` results (or drop the last when absent).

    One boolean mask (no argsort of the whole matrix): annoy lists an item at most once, so
    every row loses exactly one entry and the kept entries keep their order.
    """
    keep = found != np.arange(len(found))[:, None]
    keep[keep.all(axis=1), -1] = False
    return found[keep].reshape(len(found), k).astype(np.int64)


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
    once (:mod:`neardup._copies`); ``prefer`` (``(N,)`` bool) then picks which copy stands
    for a group. Given :class:`Rows`, the annoy index is filled block by block and the full
    matrix is materialised only after the index is freed.
    """
    rows = x if isinstance(x, Rows) else Rows.from_matrix(x)
    backend = choose_backend(backend, *rows.shape)
    resolve_query_jobs(query_jobs)  # validate early, whatever the backend
    if backend == "exact":
        indices = _exact_indices(rows.matrix(), k, progress)
    else:
        if n_trees < 1:
            raise NeardupInputError(f"n_trees must be >= 1, got {n_trees}.")
        copies = find_copies(rows) if dedupe else None
        options = dict(n_trees=n_trees, search_k=search_k, seed=seed, n_jobs=n_jobs)
        items = None if copies is None else copies.first
        found = _annoy_indices(
            rows, items, k, query_jobs=query_jobs, progress=progress, **options
        )
        if copies is not None and copies.n_copies:
            indices = expand_neighbours(found, copies, k, prefer)
            del found, copies  # before the full matrix and the exact distances exist
        elif found.shape[1] == k:
            indices = found
        else:
            indices = np.full((rows.n, k), -1, dtype=np.int64)
            indices[:, : found.shape[1]] = found
    return graph_from_indices(indices, rows.matrix(), backend)


def nearest_among(
    x: np.ndarray, query_rows: np.ndarray, target_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest target row (and distance) for each query row, by blocked brute force."""
    targets = x[target_rows]
    sq = np.einsum("ij,ij->i", targets, targets)
    best = np.empty(len(query_rows), dtype=np.int64)
    step = int(max(1, _BLOCK_BYTES // (4 * max(1, len(targets)))))
    for start in range(0, len(query_rows), step):
        q = x[query_rows[start : start + step]]
        d2 = sq[None, :] - 2.0 * (q @ targets.T)
        best[start : start + len(q)] = target_rows[np.argmin(d2, axis=1)]
    return best, pair_distances(x, query_rows, best)
