"""Neighbour search: backends, the cell engine, the neighbour graph, exact copies, streamed rows.

``Cells`` (the default backend, ``_backends``) finds every pair of rows within a threshold
exactly, cell by cell (``_cells``), its thresholds reading the exact kNN of a seeded sample of
rows (``_sample_knn``); per-cell joins run through an executor (``_executor``). ``_graph`` builds
a kNN graph of every row with ``_exact`` (blocked brute force) or ``_annoy`` (approximate,
seeded) for the ``Exact`` and ``Annoy`` backends; ``_copies`` groups exact copies by hashing;
``_rows`` streams the (normalised) rows; ``_minhash`` finds candidate pairs of rows whose
token sets are alike (banded MinHash: texts at scale); ``_probe`` finds each query's k nearest
targets by probing the nearest cells of a partition (sub-quadratic kNN between two sets).

The cell engine's steps are public so that other executors (Ray: one task per cell) produce
the same pairs:

>>> import numpy as np
>>> from neardup.search import fit_partition, route_rows, join_cell, merge_pairs
>>> x = np.random.default_rng(0).normal(size=(2000, 16)).astype("float32")
>>> x[1] = x[0] + 1e-3
>>> part = fit_partition(x, n_cells=8, seed=0)
>>> row, cell = route_rows(part, x, margin=0.025)  # half the threshold: exact
>>> pairs = merge_pairs(
...     join_cell(x[row[cell == c]], row[cell == c], threshold=0.05) for c in range(8)
... )
>>> (int(pairs.i[0]), int(pairs.j[0]))
(0, 1)

One graph format passes between pure functions: ``indices (N, k)`` and ``distances (N, k)``
with each sample's own entry removed (:class:`NeighborGraph`).
"""

from typing import Any

from ._annoy import build_annoy_index, drop_self, query_all, query_vectors, resolve_query_jobs
from ._backends import (
    BACKEND_NAMES,
    Annoy,
    Backend,
    Cells,
    CellTask,
    Exact,
    as_backend,
    blas_threads,
    join_cell_task,
)
from ._cells import (
    DEFAULT_BLOCK_SIZE,
    TORCH_BLOCK_SIZE,
    ClosePairs,
    HomeLimits,
    Partition,
    exact_pair_distances,
    fit_partition,
    join_cell,
    merge_pairs,
    padded_centres,
    route_entries,
    route_rows,
    screen_cell,
    stable_order,
)
from ._copies import CopyGroups, copy_pairs, expand_neighbors, find_copies
from ._exact import nearest_among, pair_distances
from ._executor import Executor, SerialExecutor, ThreadExecutor, check_executor
from ._graph import (
    BACKENDS,
    DEFAULT_TREES,
    NeighborGraph,
    build_graph,
    choose_backend,
    clamp_k,
    graph_from_indices,
    row_distances,
)
from ._margin import MarginChoice, band_share
from ._minhash import BAND_ROWS, PAIR_RECALL, banded_candidates, bands_for, minhash_signatures
from ._probe import DEFAULT_PROBES, probed_neighbors, top_k_by_product
from ._progress import ProgressFn
from ._rows import Rows
from ._sample_knn import sample_rows, sampled_neighbor_graph

__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "BAND_ROWS",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_PROBES",
    "DEFAULT_TREES",
    "PAIR_RECALL",
    "TORCH_BLOCK_SIZE",
    "Annoy",
    "Backend",
    "CellTask",
    "Cells",
    "ClosePairs",
    "CopyGroups",
    "Exact",
    "Executor",
    "HomeLimits",
    "MarginChoice",
    "NeighborGraph",
    "Partition",
    "ProgressFn",
    "Rows",
    "SerialExecutor",
    "ThreadExecutor",
    "as_backend",
    "band_share",
    "banded_candidates",
    "bands_for",
    "blas_threads",
    "build_annoy_index",
    "build_graph",
    "check_executor",
    "choose_backend",
    "clamp_k",
    "copy_pairs",
    "drop_self",
    "exact_pair_distances",
    "expand_neighbors",
    "find_copies",
    "fit_partition",
    "graph_from_indices",
    "join_cell",
    "join_cell_task",
    "merge_pairs",
    "minhash_signatures",
    "nearest_among",
    "padded_centres",
    "pair_distances",
    "probed_neighbors",
    "query_all",
    "query_vectors",
    "resolve_query_jobs",
    "route_entries",
    "route_rows",
    "row_distances",
    "sample_rows",
    "sampled_neighbor_graph",
    "screen_cell",
    "stable_order",
    "top_k_by_product",
]


def __getattr__(name: str) -> Any:
    """``result_from_pairs`` lives with the pipeline (which imports this package)."""
    if name == "result_from_pairs":
        from .._pipeline import result_from_pairs

        return result_from_pairs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
