"""Close pairs -> duplicate sets: connected components and per-set statistics."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .search import NeighborGraph

__all__ = ["ClusterAssignment", "close_pairs", "cluster_rows", "set_statistics"]


def close_pairs(graph: NeighborGraph, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(i, j)`` of the graph whose distance is at most ``threshold``."""
    mask = graph.distances <= threshold
    rows = np.nonzero(mask)[0].astype(np.int64)
    return rows, graph.indices[mask]


class ClusterAssignment:
    """Connected components of the close-pair graph, keeping components of 2+ rows.

    ``label[i]`` is the set number of row ``i`` or ``-1``; ``members[s]`` the sorted rows of
    set ``s``. Sets are numbered by their smallest row.
    """

    def __init__(self, n_rows: int, rows: np.ndarray, cols: np.ndarray) -> None:
        graph = coo_matrix(
            (np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_rows, n_rows)
        ).tocsr()
        _, component = connected_components(graph, directed=True, connection="weak")
        sizes = np.bincount(component)
        keep = sizes[component] >= 2
        self.label = np.full(n_rows, -1, dtype=np.int64)
        kept_rows = np.flatnonzero(keep)
        # renumber the kept components by their first (smallest) row
        _, first_pos, inverse = np.unique(
            component[kept_rows], return_index=True, return_inverse=True
        )
        rank = np.argsort(np.argsort(kept_rows[first_pos]))
        self.label[kept_rows] = rank[inverse]
        order = np.argsort(self.label[kept_rows], kind="stable")
        sorted_rows = kept_rows[order]
        bounds = np.cumsum(np.bincount(self.label[kept_rows], minlength=len(first_pos)))[:-1]
        self.members: list[np.ndarray] = np.split(sorted_rows, bounds) if len(kept_rows) else []

    def __len__(self) -> int:
        return len(self.members)


def cluster_rows(graph: NeighborGraph, threshold: float) -> ClusterAssignment:
    """Transitive closure of all close pairs (DNIKit's merging of candidate groups)."""
    rows, cols = close_pairs(graph, threshold)
    return ClusterAssignment(len(graph.indices), rows, cols)


def _pca_scores(samples: np.ndarray, n_components: int) -> np.ndarray:
    centered = samples - samples.mean(axis=0)
    u, s, _ = np.linalg.svd(centered.astype(np.float64), full_matrices=False)
    scores = u[:, :n_components] * s[:n_components]
    # deterministic signs: the largest-magnitude score of each component is positive
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(scores.shape[1])])
    signs[signs == 0] = 1
    return scores * signs


def set_statistics(
    x: np.ndarray, members: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray | None]]:
    """Per set: mean and std distance to the centroid, member order, 2-D projection.

    Members of sets with more than 2 rows are ordered by their first principal component
    (similar samples end up side by side); sets with more than 5 rows get a 2-D projection
    (as DNIKit does). Means and stds are computed for all sets at once.
    """
    if not members:
        return np.zeros(0), np.zeros(0), [], []
    sizes = np.array([len(m) for m in members])
    rows = np.concatenate(members)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sums = np.add.reduceat(x[rows].astype(np.float64), starts, axis=0)
    centroids = sums / sizes[:, None]
    owner = np.repeat(np.arange(len(members)), sizes)
    dist = np.empty(len(rows))
    step = 65536
    for s in range(0, len(rows), step):
        diff = x[rows[s : s + step]] - centroids[owner[s : s + step]]
        dist[s : s + len(diff)] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    means = np.add.reduceat(dist, starts) / sizes
    variances = np.add.reduceat((dist - means[owner]) ** 2, starts) / sizes
    ordered: list[np.ndarray] = []
    projections: list[np.ndarray | None] = []
    for m in members:
        projection = None
        if len(m) > 2:
            m = m[np.argsort(_pca_scores(x[m], 1)[:, 0], kind="stable")]
        if len(m) > 5:
            projection = _pca_scores(x[m], 2).astype(np.float32)
        ordered.append(m)
        projections.append(projection)
    return means, np.sqrt(variances), ordered, projections
