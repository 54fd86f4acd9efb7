"""The reference index's annoy engine: the format of neardup 0.x indexes (format versions 1, 2),
and ``ReferenceIndex.build(..., backend=neardup.Annoy(...))``.

annoy proposes ``k`` candidates per query row and exact distances decide. The threshold's kNN
graph of the reference comes from exact search for small references and from the kept index
above (as ``backend="auto"`` did in those versions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._errors import NeardupInputError
from .._threshold import ThresholdStrategy
from ..search import (
    Annoy,
    NeighborGraph,
    ProgressFn,
    Rows,
    build_annoy_index,
    build_graph,
    choose_backend,
    drop_self,
    graph_from_indices,
    query_all,
    query_vectors,
    row_distances,
)
from ._annoy_file import check_annoy_file
from ._storage import ANNOY, corrupt, fsync_file, write_file

__all__ = ["AnnoyEngine", "nearest_candidate"]


class AnnoyEngine:
    """An annoy index over the ``(N, d)`` float32 reference ``vectors``.

    Parameters
    ----------
    index:
        A built or loaded ``annoy.AnnoyIndex`` (euclidean) of ``vectors``.
    vectors:
        ``(N, d)`` float32 transformed reference rows (may be a read-only memmap).
    k:
        Candidates per scored row (the index's default).
    """

    name = "annoy"
    files = (ANNOY,)

    def __init__(self, index: Any, vectors: np.ndarray, *, k: int) -> None:
        self._index = index
        self.vectors = vectors
        self._k = int(k)

    @classmethod
    def build(
        cls,
        x: np.ndarray,
        backend: Annoy,
        *,
        k: int,
        strategy: ThresholdStrategy,
        needs_graph: bool,
        seed: int,
        progress: ProgressFn | None,
    ) -> tuple[AnnoyEngine, NeighborGraph]:
        """Index ``x`` (``(N, d)`` float32) and return the engine with the reference's kNN
        graph (an empty one when ``needs_graph`` is false)."""
        index = build_annoy_index(
            Rows.from_matrix(x),
            n_trees=backend.n_trees,
            seed=seed,
            n_jobs=backend.n_jobs,
            progress=progress,
        )
        if not needs_graph:
            empty = np.empty((0, k))
            graph = NeighborGraph(empty.astype(np.int64), empty.astype(np.float32), backend="none")
        elif choose_backend("auto", *x.shape) == "exact":
            graph = build_graph(x, k, backend="exact", query_jobs=backend.query_jobs,
                                progress=progress)  # fmt: skip
        else:
            found = query_all(index, len(x), k + 1, -1, backend.query_jobs, progress)
            graph = graph_from_indices(drop_self(found, k), x, "annoy")
        return cls(index, x, k=k), graph

    def candidates(self, k: int | None) -> int:
        """Candidates per scored row: ``k``, or the index's own, at most the reference size."""
        return min(int(self._k if k is None else k), len(self.vectors))

    def check_score_options(self, k: int | None, search_k: int) -> None:
        """Refuse a ``search_k`` too small for the candidates asked for."""
        k = self.candidates(k)
        if search_k != -1 and search_k < k:
            raise NeardupInputError(
                f"search_k={search_k} is too small for k={k} candidates: annoy would inspect "
                f"fewer nodes than it returns and miss duplicates. Use -1 (the default) or at "
                f"least {k}."
            )

    def nearest_within(
        self, queries: np.ndarray, threshold: float, *, k: int | None, search_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(m,)`` nearest reference row of each transformed query row and its distance, or
        ``-1`` and ``inf`` where no candidate lies within ``threshold``."""
        k = self.candidates(k)
        found = query_vectors(self._index, queries, k, int(search_k))
        distances = row_distances(self.vectors, found, queries)
        row, dist = nearest_candidate(found, distances)
        hit = dist <= threshold
        return np.where(hit, row, -1), np.where(hit, dist, np.float32(np.inf)).astype(np.float32)

    def write_vectors(self, target: Path) -> None:
        """Write ``vectors.npy`` (fsynced), in row order."""
        write_file(target, lambda fh: np.save(fh, self.vectors, allow_pickle=False))

    def write(self, folder: Path) -> None:
        """Write ``index.ann`` into ``folder`` (fsynced)."""
        target = folder / ANNOY
        if not self._index.save(str(target)):  # annoy then maps the new file itself
            raise OSError(f"annoy could not write {target}")
        fsync_file(target)

    @classmethod
    def open(
        cls, path: Path, folder: Path, vectors: np.ndarray, settings: dict[str, Any]
    ) -> AnnoyEngine:
        """Map ``folder/index.ann`` after checking that annoy can walk it safely."""
        from annoy import AnnoyIndex

        size, dim = vectors.shape
        check_annoy_file(folder / ANNOY, dim=dim, n_items=size, where=str(path))
        index = AnnoyIndex(dim, "euclidean")
        try:
            index.load(str(folder / ANNOY))
        except OSError as err:
            raise corrupt(path, f"annoy cannot load {ANNOY}: {err}") from err
        if index.get_n_items() != size:
            raise corrupt(path, f"{ANNOY} holds {index.get_n_items()} items, not {size}")
        try:
            k = int(settings["k"])
        except (KeyError, TypeError, ValueError) as err:
            raise corrupt(path, "meta.json lacks the annoy index's k") from err
        return cls(index, vectors, k=k)


def nearest_candidate(
    candidates: np.ndarray, distances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row the closest candidate, ties to the lowest row (as the neighbour graph sorts)."""
    dist = distances.min(axis=1)
    tied = (distances == dist[:, None]) & (candidates >= 0)
    row = np.where(tied, candidates, np.iinfo(np.int64).max).min(axis=1)
    return np.where(np.isfinite(dist), row, -1), dist
