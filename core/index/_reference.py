"""``ReferenceIndex``: a reference split indexed once, saved, and scored against later.

Built once from the reference (training) activations: the PCA and the normalisation are fitted
on the reference alone, the threshold is resolved once on the reference's own kNN graph, and
the transformed rows go into an annoy index. :meth:`ReferenceIndex.save` writes a directory
that :meth:`ReferenceIndex.load` maps back (annoy's mmap, ``np.load(mmap_mode="r")``), so a
large index opens instantly and is shared between processes by the page cache.
:meth:`ReferenceIndex.score` applies the same transform to new activations and reports every
new sample whose nearest reference sample lies within that fixed distance, as a
:class:`~neardup.Leakage` (annoy proposes candidates, exact distances decide).

The directory layout is described in ``_storage``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import NeardupInputError
from .._leakage import leakage_record
from .._normalize import check_normalize
from .._progress import as_progress
from .._reduce import PCA, as_reducer
from .._threshold import (
    Cosine,
    Distance,
    ResolvedThreshold,
    ThresholdStrategy,
    as_strategy,
    resolve_threshold,
)
from .._transform import Transform
from .._validate import as_feature_matrix, check_finite, check_ids, check_labels
from ..report import Leakage, to_plain
from ..search import (
    DEFAULT_TREES,
    NeighborGraph,
    ProgressFn,
    Rows,
    build_annoy_index,
    build_graph,
    choose_backend,
    clamp_k,
    drop_self,
    graph_from_indices,
    query_all,
    query_vectors,
    resolve_query_jobs,
    row_distances,
)
from ._storage import (
    ANNOY,
    FORMAT,
    FORMAT_VERSION,
    IDS,
    LABELS,
    META,
    TRANSFORM,
    VECTORS,
    corrupt,
    read_meta,
    storable,
    write_atomic,
)

__all__ = ["ReferenceIndex"]

#: query rows transformed and searched at once (bounds the float32 copies of a batch).
_CHUNK_ROWS = 4096


class ReferenceIndex:
    """A reference split (usually ``train``) indexed once, to score new data against it.

    Build it with :meth:`build`, keep it with :meth:`save`, open it anywhere with
    :meth:`load` and call :meth:`score` on each new batch: the reference is never rebuilt and
    every batch is judged by the same transform and the same distance threshold.

    The threshold is resolved once, at build time, on the reference's own kNN graph, and then
    fixed: ``Relative``/``Slope``/``Percentile`` describe the reference, not the data being
    scored, so a batch full of duplicates cannot move the bar. (``find_duplicates`` resolves
    them on the graph of all splits together, so its relative thresholds can differ slightly;
    with ``Distance`` or ``Cosine`` both agree exactly.)

    >>> import numpy as np, neardup
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(500, 32)).astype("float32")
    >>> index = neardup.ReferenceIndex.build(train)
    >>> index.score(np.concatenate([train[:3] + 0.01, rng.normal(size=(7, 32))])).count
    3
    """

    def __init__(
        self,
        *,
        index: Any,
        vectors: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray | None,
        transform: Transform,
        threshold: ResolvedThreshold,
        settings: dict[str, Any],
        reference: str,
    ) -> None:
        """Internal: use :meth:`build` or :meth:`load`."""
        self._index = index
        self._vectors = vectors
        self._ids = ids
        self._labels = labels
        self._transform = transform
        self._threshold = threshold
        self._settings = settings
        self._reference = reference

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        activations: Any,
        *,
        labels: Any = None,
        ids: Any = None,
        threshold: ThresholdStrategy | None = None,
        normalize: str | None = "row",
        reduce: Any = None,
        k: int = 10,
        n_trees: int = DEFAULT_TREES,
        seed: int = 0,
        n_jobs: int = 1,
        query_jobs: int = -1,
        reference: str = "train",
        progress: bool | ProgressFn | None = None,
    ) -> ReferenceIndex:
        """Index the reference activations.

        Parameters
        ----------
        activations:
            ``(N, ...)`` reference activations (flattened per sample, computed in float32).
        labels, ids:
            ``(N,)`` sequences. Ids are unique ints or strings (default: the row position),
            labels ints or strings; both are stored with the index.
        threshold:
            A strategy as in :func:`neardup.find_duplicates` (default ``Relative(0.2)``),
            resolved here, once, on the reference's kNN graph (exact search for small
            references, annoy above, as ``backend="auto"``; ``Distance`` and ``Cosine``
            need no graph and skip it).
        normalize, reduce:
            As in :func:`neardup.find_duplicates`, but fitted on the reference alone (PCA
            first, then the normalisation; ``"column"`` stores the reference's column norms).
        k:
            Neighbours per sample of the reference graph, and candidates per scored sample.
        n_trees, seed, n_jobs:
            The annoy index: trees, seed, and build threads (a fixed ``n_jobs`` gives the
            same index on every machine).
        query_jobs:
            Processes that query the reference graph when resolving the threshold.
        reference:
            The name scored splits are reported against (``Leakage.reference``).
        progress:
            ``True`` for ``tqdm`` progress bars, or a ``callback(stage, done, total)``.

        Returns
        -------
        ReferenceIndex
        """
        progress = as_progress(progress)
        normalize = check_normalize(normalize)
        strategy = as_strategy(threshold)
        reducer = as_reducer(reduce)
        _check_annoy_options(n_trees=n_trees, seed=seed, n_jobs=n_jobs, query_jobs=query_jobs)
        matrix, id_array, label_array = _reference_input(activations, ids, labels, reference)
        k = clamp_k(k, len(matrix))

        fresh = None if reducer is None else PCA(reducer.n_components)  # never fit the user's
        transform = Transform.fit([matrix], normalize=normalize, reduce=fresh)
        if progress and reducer is not None:
            progress("PCA", 1, 1)
        x = transform.apply_all([matrix])
        index = build_annoy_index(
            Rows.from_matrix(x), n_trees=n_trees, seed=seed, n_jobs=n_jobs, progress=progress
        )
        graph = _reference_graph(x, k, strategy, index, query_jobs=query_jobs, progress=progress)
        resolved = resolve_threshold(strategy, graph, normalize)
        graph_backend = graph.backend
        del graph
        settings = {
            "normalize": normalize,
            "reduce": None if reducer is None else reducer.n_components,
            "k": k,
            "n_trees": int(n_trees),
            "seed": int(seed),
            "n_jobs": int(n_jobs),
            "graph_backend": graph_backend,
            "metric": "euclidean",
            "input_dim": transform.input_dim,
            "dim": transform.dim,
        }
        return cls(
            index=index,
            vectors=x,
            ids=id_array,
            labels=label_array,
            transform=transform,
            threshold=resolved,
            settings=settings,
            reference=reference,
        )

    # ------------------------------------------------------------------ properties
    @property
    def threshold(self) -> ResolvedThreshold:
        """The strategy and the fixed distance every :meth:`score` uses."""
        return self._threshold

    @property
    def size(self) -> int:
        """Number of reference samples."""
        return int(self._vectors.shape[0])

    @property
    def dim(self) -> int:
        """Width of the activations :meth:`score` expects (before any PCA)."""
        return self._transform.input_dim

    @property
    def reference(self) -> str:
        """The reference split's name (``Leakage.reference``)."""
        return self._reference

    @property
    def settings(self) -> dict[str, Any]:
        """Options the index was built with (``dim`` is the indexed width, after PCA)."""
        return dict(self._settings)

    @property
    def ids(self) -> np.ndarray:
        """``(size,)`` reference ids."""
        return self._ids

    @property
    def labels(self) -> np.ndarray | None:
        """``(size,)`` reference labels, or None."""
        return self._labels

    def __repr__(self) -> str:
        s = self._settings
        reduce = f", reduce={s['reduce']}" if s["reduce"] is not None else ""
        return (
            f"ReferenceIndex({self._reference!r}: {self.size:,} samples x {self.dim} features"
            f"{reduce}, normalize={s['normalize']!r}, threshold {self._threshold})"
        )

    # ------------------------------------------------------------------ score
    def score(
        self,
        activations: Any,
        *,
        ids: Any = None,
        labels: Any = None,
        split: str = "new",
        k: int | None = None,
        search_k: int = -1,
    ) -> Leakage:
        """Which new samples have a near-duplicate in the reference.

        Parameters
        ----------
        activations:
            ``(M, ...)`` activations of the same layer, with the same pooling, as the
            reference (``M * prod(...) == M * dim`` features).
        ids, labels:
            ``(M,)`` sequences for the new samples (default ids: the row position in this
            batch). Labels give ``by_class`` and ``label_conflicts``.
        split:
            Name of the new data in the result (``Leakage.split``).
        k:
            Annoy candidates per sample (default: the index's ``k``; at most ``size``).
        search_k:
            Annoy ``search_k`` (-1: ``n_trees * k``); larger is slower and misses less.

        Returns
        -------
        Leakage
            Samples whose nearest candidate, by exact distance, is within
            :attr:`threshold`, closest first, with ``total = M``.
        """
        if not isinstance(split, str) or not split or split == self._reference:
            raise NeardupInputError(
                f"split={split!r} must be a non-empty name other than the reference's "
                f"({self._reference!r}), e.g. 'test' or 'new'."
            )
        what = f"split {split!r}"
        matrix = as_feature_matrix(activations, what)
        if matrix.shape[1] != self.dim:
            raise NeardupInputError(
                f"{what} has {matrix.shape[1]} features per sample, but the reference index "
                f"was built from {self.dim}; score activations of the same layer, with the "
                f"same pooling, as the reference {self._reference!r}."
            )
        check_finite(matrix, what)
        n = len(matrix)
        query_ids = check_ids(ids, split, n)
        query_labels = check_labels(labels, split, n)
        k = self._candidates(k)
        _check_int("search_k", search_k, minimum=-1)
        best_row, best_dist = self._nearest_within(matrix, k, int(search_k))
        return self._leakage(best_row, best_dist, split, query_ids, query_labels)

    def _candidates(self, k: int | None) -> int:
        if k is None:
            k = self._settings["k"]
        _check_int("k", k, minimum=1)
        return min(int(k), self.size)

    def _nearest_within(
        self, matrix: np.ndarray, k: int, search_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest reference row within the threshold per query row (``-1`` / ``inf`` if none)."""
        n = len(matrix)
        best_row = np.full(n, -1, dtype=np.int64)
        best_dist = np.full(n, np.inf, dtype=np.float32)
        for start in range(0, n, _CHUNK_ROWS):
            q = self._transform.apply(matrix[start : start + _CHUNK_ROWS])
            candidates = query_vectors(self._index, q, k, search_k)
            distances = row_distances(self._vectors, candidates, q)
            row, dist = _nearest(candidates, distances)
            hit = dist <= self._threshold.value
            best_row[start : start + len(q)][hit] = row[hit]
            best_dist[start : start + len(q)][hit] = dist[hit]
        return best_row, best_dist

    def _leakage(
        self,
        best_row: np.ndarray,
        best_dist: np.ndarray,
        split: str,
        ids: np.ndarray,
        labels: np.ndarray | None,
    ) -> Leakage:
        """The :class:`Leakage` record, filled as ``find_duplicates`` fills it."""
        return leakage_record(
            best_row,
            best_dist,
            split=split,
            reference=self._reference,
            ids=ids,
            labels=labels,
            ref_ids=self._ids,
            ref_labels=self._labels,
        )

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index to the directory ``path`` (created if needed) and return it.

        Every file is written beside its final name and then renamed over it, and
        ``meta.json`` comes last: an interrupted save never looks like an index, and an index
        already open from ``path`` (this one or another) keeps reading the files it mapped.
        A non-empty directory is only written into with ``overwrite=True``.
        """
        from .. import __version__

        path = Path(path)
        if path.exists() and not path.is_dir():
            raise NeardupInputError(f"cannot save the index to {str(path)!r}: it is a file.")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise NeardupInputError(
                f"cannot save the index to {str(path)!r}: the directory is not empty. "
                "Choose a new directory or pass overwrite=True."
            )
        path.mkdir(parents=True, exist_ok=True)
        (path / META).unlink(missing_ok=True)
        (path / LABELS).unlink(missing_ok=True)
        write_atomic(path / VECTORS, lambda fh: np.save(fh, self._vectors, allow_pickle=False))
        write_atomic(path / IDS, lambda fh: np.save(fh, self._ids, allow_pickle=False))
        if self._labels is not None:
            write_atomic(path / LABELS, lambda fh: np.save(fh, self._labels, allow_pickle=False))
        write_atomic(path / TRANSFORM, lambda fh: np.savez(fh, **self._transform.arrays()))
        ann = path / (ANNOY + ".partial")
        if not self._index.save(str(ann)):  # annoy then maps the new file itself
            raise OSError(f"annoy could not write {ann}")
        os.replace(ann, path / ANNOY)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "neardup_version": __version__,
            "reference": self._reference,
            "size": self.size,
            "has_labels": self._labels is not None,
            "threshold": self._threshold.to_dict(),
            "settings": to_plain(self._settings),
        }
        text = json.dumps(meta, indent=1, allow_nan=False)
        write_atomic(path / META, lambda fh: fh.write(text.encode("utf-8")))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceIndex:
        """Open an index written by :meth:`save` (annoy index and vectors memory-mapped)."""
        from annoy import AnnoyIndex

        path = Path(path)
        meta = read_meta(path)
        try:
            settings = dict(meta["settings"])
            size, dim = int(meta["size"]), int(settings["dim"])
            input_dim, normalize = int(settings["input_dim"]), settings["normalize"]
            has_labels, reference = bool(meta["has_labels"]), str(meta["reference"])
            threshold = ResolvedThreshold.from_dict(meta["threshold"])
        except (KeyError, TypeError, ValueError) as err:
            raise corrupt(path, f"{META} lacks or garbles {err}") from err
        needed = [ANNOY, VECTORS, TRANSFORM, IDS] + ([LABELS] if has_labels else [])
        for name in needed:
            if not (path / name).is_file():
                raise NeardupInputError(
                    f"{str(path)!r} is an incomplete neardup reference index: {name} is "
                    "missing. Save the index again (ReferenceIndex.save or neardup index build)."
                )
        try:
            vectors = np.load(path / VECTORS, mmap_mode="r", allow_pickle=False)
            ids = np.load(path / IDS, allow_pickle=False)
            labels = np.load(path / LABELS, allow_pickle=False) if has_labels else None
            with np.load(path / TRANSFORM, allow_pickle=False) as npz:
                transform = Transform.from_arrays(
                    {key: npz[key] for key in npz.files}, input_dim, normalize
                )
        except (OSError, ValueError, KeyError) as err:
            raise corrupt(path, f"{err}") from err
        if vectors.shape != (size, dim) or vectors.dtype != np.float32 or len(ids) != size:
            raise corrupt(path, f"{VECTORS} or {IDS} do not match the sizes in {META}")
        index = AnnoyIndex(dim, "euclidean")
        try:
            index.load(str(path / ANNOY))
        except OSError as err:
            raise corrupt(path, f"annoy cannot load {ANNOY}: {err}") from err
        if index.get_n_items() != size:
            raise corrupt(path, f"{ANNOY} holds {index.get_n_items()} items, not {size}")
        return cls(
            index=index,
            vectors=vectors,
            ids=ids,
            labels=labels,
            transform=transform,
            threshold=threshold,
            settings=settings,
            reference=reference,
        )


# ---------------------------------------------------------------------- helpers
def _reference_input(
    activations: Any, ids: Any, labels: Any, reference: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated ``(N, d)`` reference matrix, ``(N,)`` storable ids and labels (or None)."""
    if not isinstance(reference, str) or not reference:
        raise NeardupInputError(
            f"reference must be a non-empty split name such as 'train', got {reference!r}."
        )
    what = f"reference {reference!r}"
    matrix = as_feature_matrix(activations, what)
    n = len(matrix)
    if n < 2:
        raise NeardupInputError(
            f"{what} holds a single sample; a reference index needs at least 2 samples."
        )
    check_finite(matrix, what)
    id_array = storable(check_ids(ids, reference, n), "ids", reference)
    label_array = check_labels(labels, reference, n)
    if label_array is not None:
        label_array = storable(label_array, "labels", reference)
    return matrix, id_array, label_array


def _check_annoy_options(*, n_trees: Any, seed: Any, n_jobs: Any, query_jobs: Any) -> None:
    _check_int("n_trees", n_trees, minimum=1)
    _check_int("seed", seed, minimum=0)
    if (
        isinstance(n_jobs, bool)
        or not isinstance(n_jobs, (int, np.integer))
        or not (n_jobs == -1 or n_jobs >= 1)
    ):
        raise NeardupInputError(
            f"n_jobs must be an int >= 1, or -1 for every core, got {n_jobs!r} "
            "(it shapes the annoy trees: a fixed value reproduces on every machine)."
        )
    resolve_query_jobs(query_jobs)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise NeardupInputError(f"{name} must be an int >= {minimum}, got {value!r}.")


def _reference_graph(
    x: np.ndarray,
    k: int,
    strategy: ThresholdStrategy,
    index: Any,
    *,
    query_jobs: int,
    progress: ProgressFn | None,
) -> NeighborGraph:
    """The reference's kNN graph (for the threshold), or an empty one for a fixed distance.

    Small references use exact search (as ``backend="auto"``); larger ones query the index
    that is kept, so annoy builds it once.
    """
    if isinstance(strategy, (Distance, Cosine)):
        empty = np.empty((0, k))
        return NeighborGraph(empty.astype(np.int64), empty.astype(np.float32), backend="none")
    if choose_backend("auto", *x.shape) == "exact":
        return build_graph(x, k, backend="exact", query_jobs=query_jobs, progress=progress)
    found = query_all(index, len(x), k + 1, -1, query_jobs, progress)
    return graph_from_indices(drop_self(found, k), x, "annoy")


def _nearest(candidates: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row the closest candidate, ties to the lowest row (as the neighbour graph sorts)."""
    dist = distances.min(axis=1)
    tied = (distances == dist[:, None]) & (candidates >= 0)
    row = np.where(tied, candidates, np.iinfo(np.int64).max).min(axis=1)
    return np.where(np.isfinite(dist), row, -1), dist
