"""Approximate neighbours with annoy: a seeded euclidean index, queried in forked workers.

Query results depend only on the index, never on the number of workers, so the graph is the
same for any ``query_jobs``.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import numpy as np

from .._errors import NeardupInputError
from ._progress import ProgressFn
from ._rows import Rows

__all__ = [
    "annoy_indices",
    "build_annoy_index",
    "drop_self",
    "query_all",
    "query_vectors",
    "resolve_query_jobs",
]

#: below this many rows, forking query workers costs more than it saves.
_PARALLEL_MIN_ROWS = 20_000
_CHUNK_ROWS = 16_384


def annoy_indices(
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


#: built indexes by token, inherited by forked query workers (copy-on-write, never pickled).
#: One entry per running query phase, so threads that query at once never see each other's
#: index: each task carries the token of its own.
_SHARED_INDEXES: dict[int, Any] = {}
_SHARED_LOCK = threading.Lock()
_TOKENS = itertools.count()


def _query_rows(index, start: int, stop: int, n_results: int, search_k: int) -> np.ndarray:
    """One ``get_nns_by_item`` call per item ``start..stop-1``; rows padded with ``-1``."""
    found = np.full((stop - start, n_results), -1, dtype=_item_dtype(index.get_n_items()))
    query = index.get_nns_by_item
    for i in range(start, stop):
        hits = query(i, n_results, search_k)
        found[i - start, : len(hits)] = hits
    return found


def _query_chunk(task: tuple[int, int, int, int, int]) -> tuple[int, np.ndarray]:
    token, start, stop, n_results, search_k = task
    return start, _query_rows(_SHARED_INDEXES[token], start, stop, n_results, search_k)


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
    jobs = min(resolve_query_jobs(query_jobs), max(1, n // _CHUNK_ROWS))
    tasks = [
        (start, min(n, start + _CHUNK_ROWS), n_results, search_k)
        for start in range(0, n, _CHUNK_ROWS)
    ]
    found = np.empty((n, n_results), dtype=_item_dtype(n))
    done = 0
    # imported here: multiprocessing (with socket, selectors, signal) costs ~5 ms at import
    import multiprocessing

    if jobs > 1 and n >= _PARALLEL_MIN_ROWS and "fork" in multiprocessing.get_all_start_methods():
        with _SHARED_LOCK:
            token = next(_TOKENS)
            _SHARED_INDEXES[token] = index
        try:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                chunks = [(token, *task) for task in tasks]
                for start, rows in pool.imap_unordered(_query_chunk, chunks):
                    found[start : start + len(rows)] = rows
                    done += len(rows)
                    if progress:
                        progress("querying annoy index", done, n)
        finally:
            with _SHARED_LOCK:
                del _SHARED_INDEXES[token]
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


def query_vectors(index, q: np.ndarray, k: int, search_k: int) -> np.ndarray:
    """``(m, k)`` items nearest to each row of ``q`` (one annoy call per row), ``-1`` padded."""
    found = np.full((len(q), k), -1, dtype=np.int64)
    get = index.get_nns_by_vector
    for i, row in enumerate(q.tolist()):
        hits = get(row, k, search_k)
        found[i, : len(hits)] = hits
    return found
