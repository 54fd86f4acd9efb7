"""k-nearest-neighbour graphs: the one format every later step reads.

A :class:`NeighborGraph` holds ``indices (N, k)`` and exact Euclidean ``distances (N, k)``
for every row, each row's own entry removed (wherever the backend put it: with many identical
copies the query is not always at position 0), sorted by distance then index, padded with
``-1`` / ``inf`` where a backend returned fewer than ``k`` neighbours.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._errors import NeardupInputError

__all__ = [
    "BACKENDS",
    "NeighborGraph",
    "ProgressFn",
    "build_graph",
    "choose_backend",
    "clamp_k",
    "nearest_among",
    "pair_distances",
]

ProgressFn = Callable[[str, int, int], None]
BACKENDS = ("auto", "annoy", "exact")

#: ``auto`` picks exact search while the full distance matrix costs at most this many
#: multiply-adds (N * N * d); above it, annoy is faster on one core (see benchmarks/).
_EXACT_MAX_WORK = 4e9
_BLOCK_BYTES = 128 << 20


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


def _finish(indices: np.ndarray, x: np.ndarray, backend: str) -> NeighborGraph:
    """Recompute exact distances for the candidate pairs and sort each row."""
    n, k = indices.shape
    valid = indices >= 0
    rows = np.repeat(np.arange(n, dtype=np.int64), k)[valid.ravel()]
    distances = np.full(indices.shape, np.inf, dtype=np.float32)
    distances[valid] = pair_distances(x, rows, indices[valid])
    order = np.lexsort((np.where(valid, indices, np.iinfo(np.int64).max), distances), axis=-1)
    return NeighborGraph(
        indices=np.take_along_axis(indices, order, axis=1),
        distances=np.take_along_axis(distances, order, axis=1),
        backend=backend,
    )


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
    x: np.ndarray,
    k: int,
    *,
    n_trees: int,
    search_k: int,
    seed: int,
    n_jobs: int,
    progress: ProgressFn | None,
) -> np.ndarray:
    """Approximate neighbours with annoy (euclidean), seeded; the query itself is removed.

    With a fixed ``n_jobs`` the index (and so the result) is identical run to run; annoy
    builds different trees for different thread counts, so ``n_jobs=-1`` (DNIKit's choice)
    reproduces only on machines with the same number of cores.
    """
    from annoy import AnnoyIndex

    n, d = x.shape
    index = AnnoyIndex(d, "euclidean")
    index.set_seed(int(seed))
    for i in range(n):
        index.add_item(i, x[i].tolist())
    if progress:
        progress("building annoy index", 0, 1)
    index.build(int(n_trees), n_jobs=int(n_jobs))
    if progress:
        progress("building annoy index", 1, 1)
    found = np.full((n, k + 1), -1, dtype=np.int64)
    report_every = max(1, n // 100)
    for i in range(n):
        hits = index.get_nns_by_item(i, k + 1, search_k)
        found[i, : len(hits)] = hits
        if progress and (i + 1) % report_every == 0:
            progress("querying annoy index", i + 1, n)
    index.unload()
    return _drop_self(found, k)


def _drop_self(found: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index from its ``k + 1`` results (or drop the last when absent)."""
    is_self = found == np.arange(len(found))[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")
    return np.take_along_axis(found, order, axis=1)[:, :k]


def build_graph(
    x: np.ndarray,
    k: int,
    *,
    backend: str = "auto",
    n_trees: int = 30,
    search_k: int = -1,
    seed: int = 0,
    n_jobs: int = 1,
    progress: ProgressFn | None = None,
) -> NeighborGraph:
    """Build the kNN graph of ``x`` (``(N, d)`` float32) with the chosen backend."""
    backend = choose_backend(backend, *x.shape)
    if backend == "exact":
        indices = _exact_indices(x, k, progress)
    else:
        if n_trees < 1:
            raise NeardupInputError(f"n_trees must be >= 1, got {n_trees}.")
        indices = _annoy_indices(
            x, k, n_trees=n_trees, search_k=search_k, seed=seed, n_jobs=n_jobs, progress=progress
        )
    return _finish(indices, x, backend)


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
