"""The search engine's public API: backends, the cell engine's contract and its executors.

``Cells`` (the default backend) finds every pair of rows within a threshold exactly, cell by
cell; the functions below are the steps it runs, exposed so that other executors (Ray: one
task per cell) produce the same pairs:

>>> import numpy as np
>>> from neardup.search import fit_partition, route_rows, join_cell, merge_pairs
>>> x = np.random.default_rng(0).normal(size=(2000, 16)).astype("float32")
>>> x[1] = x[0] + 1e-3
>>> part = fit_partition(x, n_cells=8, seed=0)
>>> row, cell = route_rows(part, x, margin=0.05)
>>> pairs = merge_pairs(
...     join_cell(x[row[cell == c]], row[cell == c], threshold=0.05) for c in range(8)
... )
>>> (int(pairs.i[0]), int(pairs.j[0]))
(0, 1)
"""

from ._backends import Annoy, Backend, CellTask, Cells, Exact, as_backend, join_cell_task
from ._cells import (
    DEFAULT_BLOCK_SIZE,
    ClosePairs,
    Partition,
    exact_pair_distances,
    fit_partition,
    join_cell,
    merge_pairs,
    primary_mask,
    route_rows,
)
from ._executor import Executor, SerialExecutor, ThreadExecutor
from ._neighbors import NeighborGraph
from ._pipeline import result_from_pairs
from ._sample_knn import sample_rows, sampled_neighbor_graph

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "Annoy",
    "Backend",
    "CellTask",
    "Cells",
    "ClosePairs",
    "Exact",
    "Executor",
    "NeighborGraph",
    "Partition",
    "SerialExecutor",
    "ThreadExecutor",
    "as_backend",
    "exact_pair_distances",
    "fit_partition",
    "join_cell",
    "join_cell_task",
    "merge_pairs",
    "primary_mask",
    "result_from_pairs",
    "route_rows",
    "sample_rows",
    "sampled_neighbor_graph",
]
