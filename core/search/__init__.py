"""Neighbour search: the neighbour graph, exact and annoy backends, exact copies, streamed rows.

One graph format passes between pure functions: ``indices (N, k)`` and ``distances (N, k)``
with each sample's own entry removed (:class:`NeighborGraph`).
"""

from ._copies import CopyGroups, expand_neighbours, find_copies
from ._graph import (
    BACKENDS,
    DEFAULT_TREES,
    NeighborGraph,
    ProgressFn,
    build_annoy_index,
    build_graph,
    choose_backend,
    clamp_k,
    drop_self,
    graph_from_indices,
    nearest_among,
    pair_distances,
    query_all,
    resolve_query_jobs,
    row_distances,
)
from ._rows import Rows

__all__ = [
    "BACKENDS",
    "DEFAULT_TREES",
    "CopyGroups",
    "NeighborGraph",
    "ProgressFn",
    "Rows",
    "build_annoy_index",
    "build_graph",
    "choose_backend",
    "clamp_k",
    "drop_self",
    "expand_neighbours",
    "find_copies",
    "graph_from_indices",
    "nearest_among",
    "pair_distances",
    "query_all",
    "resolve_query_jobs",
    "row_distances",
]
