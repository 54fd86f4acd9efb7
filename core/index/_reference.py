"""``ReferenceIndex``: a reference split indexed once, saved, and scored against later.

Built once from the reference (training) activations: the PCA and the normalisation are fitted
on the reference alone, the threshold is resolved once on the reference's own kNN graph, and
the transformed rows go into an annoy index. :meth:`ReferenceIndex.save` writes a directory
that :meth:`ReferenceIndex.load` maps back (annoy's mmap, ``np.load(mmap_mode="r")``), shared
between processes by the page cache. ``load`` first checks every file's size and the SHA-256 of
``index.ann`` and the small files, and walks the annoy nodes: about 1.4 s for a 300k x 64
index (100 MB ``index.ann``) on the shared 2-vCPU box, most of it hashing.
:meth:`ReferenceIndex.score` applies the same transform to new activations and reports every
new sample whose nearest reference sample lies within that fixed distance, as a
:class:`~neardup.Leakage` (annoy proposes candidates, exact distances decide).

The directory layout is described in ``_storage``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import fsync_directory, write_text_atomically
from .._errors import NeardupInputError
from .._leakage import leakage_record
from .._params import check_option, check_options
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
from .._validate import (
    as_feature_matrix,
    check_finite,
    check_ids,
    check_labels,
    check_unnormalized_scale,
)
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
    row_distances,
)
from ._annoy_file import check_annoy_file
from ._storage import (
    ANNOY,
    DIGESTED,
    FORMAT,
    FORMAT_VERSION,
    GENERATION_PREFIX,
    IDS,
    LABELS,
    LOAD_ATTEMPTS,
    META,
    TRANSFORM,
    VECTORS,
    GenerationGone,
    corrupt,
    file_record,
    fsync_file,
    generation_name,
    meta_changed,
    read_meta,
    remove_old_generations,
    save_lock,
    storable,
    verify_file,
    write_file,
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
        check_options(
            dict(
                threshold=threshold,
                normalize=normalize,
                reduce=reduce,
                k=k,
                n_trees=n_trees,
                seed=seed,
                n_jobs=n_jobs,
                query_jobs=query_jobs,
                reference=reference,
                progress=progress,
            ),
            where="ReferenceIndex.build",
        )
        for name, value in (("n_trees", n_trees), ("n_jobs", n_jobs), ("query_jobs", query_jobs)):
            if value is None:  # None is the annoy-free default elsewhere, not here
                raise NeardupInputError(
                    f"ReferenceIndex.build: {name}=None is not valid: the index is built with "
                    f"annoy; pass an int (see the defaults)."
                )
        progress = as_progress(progress)
        strategy = as_strategy(threshold)
        reducer = as_reducer(reduce)
        matrix, id_array, label_array = _reference_input(activations, ids, labels, reference)
        if normalize is None or reducer is not None:
            check_unnormalized_scale([matrix], f"reference {reference!r}")
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
        check_options(dict(split=split, search_k=search_k), where="ReferenceIndex.score")
        if k is not None:
            check_option("k", k, where="ReferenceIndex.score")
        if split == self._reference:
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
        if self._transform.normalize is None or self._transform.reducer is not None:
            check_unnormalized_scale([matrix], what)
        n = len(matrix)
        query_ids = check_ids(ids, split, n)
        query_labels = check_labels(labels, split, n)
        k = self._candidates(k)
        if search_k != -1 and search_k < k:
            raise NeardupInputError(
                f"search_k={search_k} is too small for k={k} candidates: annoy would inspect "
                f"fewer nodes than it returns and miss duplicates. Use -1 (the default) or at "
                f"least {k}."
            )
        best_row, best_dist = self._nearest_within(matrix, k, int(search_k))
        return self._leakage(best_row, best_dist, split, query_ids, query_labels)

    def _candidates(self, k: int | None) -> int:
        if k is None:
            k = self._settings["k"]
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

        Crash-safe: the files are written, fsynced, into a new generation directory
        ``path/generation-<id>/``, and then ``meta.json``, which names that generation and
        records every file's size and SHA-256, is renamed into place in one step. A kill or a
        full disk at any point leaves the previous index whole; :meth:`load` never sees half
        of one, and an index already open from ``path`` keeps reading the files it mapped.
        Older generations are removed after the swap. A non-empty directory is only written
        into with ``overwrite=True``; saves to one directory are serialised by a lock file.
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
        with save_lock(path):
            generation = f"{GENERATION_PREFIX}{uuid.uuid4().hex[:16]}"
            folder = path / generation
            folder.mkdir()
            try:
                files = self._write_generation(folder)
                meta = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "neardup_version": __version__,
                    "generation": generation,
                    "files": files,
                    "reference": self._reference,
                    "size": self.size,
                    "has_labels": self._labels is not None,
                    "threshold": self._threshold.to_dict(),
                    "settings": to_plain(self._settings),
                }
                text = json.dumps(meta, indent=1, allow_nan=False)
                write_text_atomically(path / META, text)  # the swap: one rename
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            remove_old_generations(path, keep=generation)
        return path

    def _write_generation(self, folder: Path) -> dict[str, dict[str, Any]]:
        """Write every file of the index into the new ``folder``; return sizes and digests."""
        write_file(folder / VECTORS, lambda fh: np.save(fh, self._vectors, allow_pickle=False))
        write_file(folder / IDS, lambda fh: np.save(fh, self._ids, allow_pickle=False))
        if self._labels is not None:
            write_file(folder / LABELS, lambda fh: np.save(fh, self._labels, allow_pickle=False))
        write_file(folder / TRANSFORM, lambda fh: np.savez(fh, **self._transform.arrays()))
        ann = folder / ANNOY
        if not self._index.save(str(ann)):  # annoy then maps the new file itself
            raise OSError(f"annoy could not write {ann}")
        fsync_file(ann)
        fsync_directory(folder)
        names = [ANNOY, VECTORS, TRANSFORM, IDS] + ([LABELS] if self._labels is not None else [])
        return {name: file_record(folder / name, digest=name in DIGESTED) for name in names}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceIndex:
        """Open an index written by :meth:`save` (annoy index and vectors memory-mapped).

        Every file's size, and the SHA-256 of ``index.ann`` and the small files, are checked
        against ``meta.json`` before anything is mapped: a damaged or substituted file is
        refused with :class:`NeardupInputError`, never handed to annoy. A save that swaps in
        a new generation while this runs makes it read the new ``meta.json`` again.
        """
        path = Path(path)
        for _ in range(LOAD_ATTEMPTS):
            meta = read_meta(path)
            try:
                return cls._open(path, meta)
            except GenerationGone:
                time.sleep(0.01)
        raise NeardupInputError(
            f"the reference index at {str(path)!r} was replaced {LOAD_ATTEMPTS} times while "
            "it was being opened; open it again once the saves have finished."
        )

    @classmethod
    def _open(cls, path: Path, meta: dict[str, Any]) -> ReferenceIndex:
        """Open the generation ``meta`` names; :class:`GenerationGone` when a concurrent
        save removed it meanwhile (its files vanish, and ``meta.json`` names another)."""
        try:
            return cls._open_generation(path, meta)
        except (OSError, NeardupInputError):
            if meta_changed(path, meta):
                raise GenerationGone from None
            raise

    @classmethod
    def _open_generation(cls, path: Path, meta: dict[str, Any]) -> ReferenceIndex:
        from annoy import AnnoyIndex

        try:
            settings = dict(meta["settings"])
            size, dim = int(meta["size"]), int(settings["dim"])
            input_dim, normalize = int(settings["input_dim"]), settings["normalize"]
            has_labels, reference = bool(meta["has_labels"]), str(meta["reference"])
            threshold = ResolvedThreshold.from_dict(meta["threshold"])
            files = meta.get("files")
            generation = meta.get("generation")
            if meta["format_version"] >= 2 and not (
                isinstance(files, dict) and isinstance(generation, str)
            ):
                raise KeyError("files")
        except (KeyError, TypeError, ValueError) as err:
            raise corrupt(path, f"{META} lacks or garbles {err}") from err
        if normalize not in ("row", "column", None) or size < 2 or not 0 < dim <= input_dim:
            raise corrupt(path, f"{META} holds impossible settings")
        folder = path if generation is None else path / generation_name(path, generation)
        needed = [ANNOY, VECTORS, TRANSFORM, IDS] + ([LABELS] if has_labels else [])
        for name in needed:
            if not (folder / name).is_file():
                raise NeardupInputError(
                    f"{str(path)!r} is an incomplete neardup reference index: {name} is "
                    "missing. Save the index again (ReferenceIndex.save or neardup index build)."
                )
        if files is not None:
            for name in needed:
                verify_file(path, folder / name, files.get(name))
        try:
            vectors = np.load(folder / VECTORS, mmap_mode="r", allow_pickle=False)
            ids = np.load(folder / IDS, allow_pickle=False)
            labels = np.load(folder / LABELS, allow_pickle=False) if has_labels else None
            with np.load(folder / TRANSFORM, allow_pickle=False) as npz:
                transform = Transform.from_arrays(
                    {key: npz[key] for key in npz.files}, input_dim, normalize
                )
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise corrupt(path, f"{err}") from err
        if vectors.shape != (size, dim) or vectors.dtype != np.float32:
            raise corrupt(path, f"{VECTORS} does not match the sizes in {META}")
        for name, values in ((IDS, ids), (LABELS, labels)):
            if values is not None and (values.shape != (size,) or values.dtype.kind not in "iuU"):
                raise corrupt(
                    path,
                    f"{name} holds a {values.dtype} array of shape {values.shape}, not "
                    f"{size} ints or strings",
                )
        _check_transform(path, transform, dim)
        check_annoy_file(folder / ANNOY, dim=dim, n_items=size, where=str(path))
        index = AnnoyIndex(dim, "euclidean")
        try:
            index.load(str(folder / ANNOY))
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
    if reference is None:
        raise NeardupInputError(
            "reference=None: a reference index needs the reference split's name, e.g. 'train'."
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


def _check_transform(path: Path, transform: Transform, dim: int) -> None:
    """The stored transform must map ``input_dim`` features to ``dim`` finite ones."""
    if transform.normalize == "column":
        norms = transform.column_norms
        if norms is None or norms.shape != (dim,) or not np.all(np.isfinite(norms) & (norms > 0)):
            raise corrupt(path, f"{TRANSFORM} holds unusable column norms")
    pca = transform.reducer
    if pca is not None:
        comps, mean = pca.components_, pca.mean_
        if (
            comps.ndim != 2
            or comps.shape != (dim, transform.input_dim)
            or mean.shape != (transform.input_dim,)
            or not (np.all(np.isfinite(comps)) and np.all(np.isfinite(mean)))
        ):
            raise corrupt(path, f"{TRANSFORM} holds a PCA of the wrong shape")
    elif dim != transform.input_dim:
        raise corrupt(path, f"{META} says dim {dim} but {TRANSFORM} holds no PCA")


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
