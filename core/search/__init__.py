"""Neighbour search: the neighbour graph, exact and annoy backends, exact copies, streamed rows.

``_graph`` builds the graph with ``_exact`` (blocked brute force) or ``_annoy`` (approximate,
seeded); ``_copies`` groups exact copies by hashing; ``_rows`` streams the (normalised) rows.

One graph format passes between pure functions: ``indices (N, k)`` and ``distances (N, k)``
with each sample's own entry removed (:class:`NeighborGraph`).
"""

from ._annoy import build_annoy_index, drop_self, query_all, query_vectors, resolve_query_jobs
from ._copies import CopyGroups, expand_neighbors, find_copies
from ._exact import nearest_among, pair_distances
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
from ._progress import ProgressFn
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
    "expand_neighbors",
    "find_copies",
    "graph_from_indices",
    "nearest_among",
    "pair_distances",
    "query_all",
    "query_vectors",
    "resolve_query_jobs",
    "row_distances",
]
