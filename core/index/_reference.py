"""``ReferenceIndex``: a reference split indexed once, saved, and scored against later.

Built once from the reference (training) activations: the PCA and the normalisation are fitted
on the reference alone, the threshold is resolved once on the reference's neighbours, and the
transformed rows are indexed by an engine:

- ``Cells()`` (the default, ``_cell_engine``): k-means cells fitted on a seeded sample, each
  reference row listed once, in its home cell (``_home``; with a given ``Cells(margin=...)``
  also in the cells within it); a scored batch is routed to its cells with the margin and
  joined exactly there. The threshold's statistics come from the exact kNN of a seeded sample
  of reference rows, as in ``find_duplicates``.
- ``Annoy(...)`` (``_annoy_engine``): annoy proposes candidates, exact distances decide; the
  format of indexes saved by earlier versions (format 1 and 2), which ``load`` still reads.

:meth:`ReferenceIndex.save` writes a directory that :meth:`ReferenceIndex.load` maps back
(``np.load(mmap_mode="r")``, annoy's mmap), shared between processes by the page cache.
``load`` first checks every file's size and the SHA-256 of the small files (and of
``index.ann``). :meth:`ReferenceIndex.score` applies the same transform to new activations and
reports every new sample whose nearest reference sample lies within that fixed distance, as a
:class:`~neardup.Leakage`.

The directory layout is described in ``_storage``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import fsync_directory, write_text_atomically
from .._errors import NeardupInputError
from .._leakage import leakage_record
from .._mapped import mapped_empty
from .._params import check_option, check_options
from .._progress import as_progress
from .._reduce import PCA, as_reducer
from .._threshold import (
    Cosine,
    Distance,
    ResolvedThreshold,
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
from ..search import Annoy, Cells, Exact, NeighborGraph, ProgressFn, as_backend, clamp_k
from ._annoy_engine import AnnoyEngine
from ._cell_engine import CellEngine, check_cells_backend
from ._storage import (
    DIGESTED,
    FORMAT,
    FORMAT_VERSION,
    GENERATION_PREFIX,
    IDS,
    LABELS,
    LOAD_ATTEMPTS,
    META,
    SCREEN,
    TRANSFORM,
    VECTORS,
    GenerationGone,
    corrupt,
    file_record,
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

#: query rows transformed and searched at once by annoy (bounds the float32 copies of a batch).
_ANNOY_CHUNK_ROWS = 4096
#: the engine of each ``settings["backend"]`` (indexes of formats 1 and 2 have none: annoy).
_ENGINES = {"cells": CellEngine, "exact": CellEngine, "annoy": AnnoyEngine}


class ReferenceIndex:
    """A reference split (usually ``train``) indexed once, to score new data against it.

    Build it with :meth:`build`, keep it with :meth:`save`, open it anywhere with
    :meth:`load` and call :meth:`score` on each new batch: the reference is never rebuilt and
    every batch is judged by the same transform and the same distance threshold.

    The threshold is resolved once, at build time, on the reference's own neighbours, and then
    fixed: ``Relative``/``Slope``/``Percentile`` describe the reference, not the data being
    scored, so a batch full of duplicates cannot move the bar. (``find_duplicates`` resolves
    them on the neighbours of all splits together, so its relative thresholds can differ
    slightly; with ``Distance`` or ``Cosine`` both agree exactly.)

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
        engine: CellEngine | AnnoyEngine,
        ids: np.ndarray,
        labels: np.ndarray | None,
        transform: Transform,
        threshold: ResolvedThreshold,
        settings: dict[str, Any],
        reference: str,
    ) -> None:
        """Internal: use :meth:`build` or :meth:`load`."""
        self._engine = engine
        self._vectors = engine.vectors
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
        threshold: Any = None,
        normalize: str | None = "row",
        reduce: Any = None,
        k: int = 10,
        backend: Any = "auto",
        seed: int = 0,
        n_trees: int | None = None,
        n_jobs: int | None = None,
        query_jobs: int | None = None,
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
            resolved here, once, on the reference's neighbours (with ``Cells``: the exact kNN of
            a seeded sample of reference rows, as ``find_duplicates``).
        normalize, reduce:
            As in :func:`neardup.find_duplicates`, but fitted on the reference alone (PCA
            first, then the normalisation; ``"column"`` stores the reference's column norms).
        k:
            Neighbours per sampled row for the threshold's statistics (and, with ``Annoy``,
            candidates per scored sample).
        backend:
            The engine: ``"auto"``/``neardup.Cells(...)`` (the default: k-means cells, each
            reference row listed in its home cell, every scored batch routed to its cells
            with the automatic margin and joined exactly; ``Cells(margin=0.5)`` lists the
            rows within the margin too, as ``find_duplicates``, and finds every pair
            provably), ``"exact"``/``neardup.Exact()`` (one cell: brute force), or
            ``"annoy"``/``neardup.Annoy(n_trees=..., n_jobs=..., query_jobs=...)`` (annoy
            proposes candidates, as indexes saved by earlier versions).
        seed:
            Seed of the samples and the k-means (or of annoy's trees).
        n_trees, n_jobs, query_jobs:
            The older keyword form of ``backend=neardup.Annoy(...)`` (with ``backend="annoy"``).
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
                backend=backend,
                n_trees=n_trees,
                seed=seed,
                n_jobs=n_jobs,
                query_jobs=query_jobs,
                reference=reference,
                progress=progress,
            ),
            where="ReferenceIndex.build",
        )
        engine_backend = _index_backend(backend, n_trees, n_jobs, query_jobs)
        progress = as_progress(progress)
        strategy = as_strategy(threshold)
        reducer = as_reducer(reduce)
        # rows normalized by their norms are checked for NaN and Inf on those norms (apply_all)
        by_norms = normalize == "row" and reducer is None
        matrix, id_array, label_array = _reference_input(
            activations, ids, labels, reference, check_values=not by_norms
        )
        if normalize is None or reducer is not None:
            check_unnormalized_scale([matrix], f"reference {reference!r}")
        k = clamp_k(k, len(matrix))

        fresh = None if reducer is None else PCA(reducer.n_components)  # never fit the user's
        transform = Transform.fit([matrix], normalize=normalize, reduce=fresh)
        if progress and reducer is not None:
            progress("PCA", 1, 1)
        # kept as the index's rows: 4 KiB pages mapped in by one call (``mapped_empty``)
        x = transform.apply_all(
            [matrix],
            out=mapped_empty((len(matrix), transform.dim)),
            check=f"reference {reference!r}" if by_norms else None,
        )
        del matrix
        needs_graph = not isinstance(strategy, (Distance, Cosine))
        engine: CellEngine | AnnoyEngine
        if isinstance(engine_backend, Annoy):
            engine, graph = AnnoyEngine.build(
                x, engine_backend, k=k, strategy=strategy, needs_graph=needs_graph,
                seed=seed, progress=progress,
            )  # fmt: skip
            resolved = resolve_threshold(strategy, graph, normalize)
            engine_settings = {**engine_backend.settings(), "k": k}
        else:
            graph = None
            if needs_graph:
                graph = CellEngine.graph(x, engine_backend, k=k, seed=seed)
            resolved = resolve_threshold(strategy, graph or _no_graph(k), normalize)
            engine, multiple = CellEngine.build(
                x, engine_backend, threshold=resolved.value, seed=seed
            )
            engine_settings = {
                **engine_backend.settings(),
                "backend": "exact" if _is_exact(backend) else "cells",
                "k": k,
                "margin_used": multiple,
                "n_cells_used": int(engine.partition.n_cells),
                "entries_per_row": round(engine.entries_per_row, 4),
                "blas_threads": engine_backend.blas_threads,
            }  # fmt: skip
            for option in ("device", "executor", "dedupe"):
                engine_settings.pop(option, None)
        graph_backend = graph.backend if needs_graph else "none"
        del graph
        settings = {
            "normalize": normalize,
            "reduce": None if reducer is None else reducer.n_components,
            **engine_settings,
            "seed": int(seed),
            "graph_backend": graph_backend,
            "metric": "euclidean",
            "input_dim": transform.input_dim,
            "dim": transform.dim,
        }
        return cls(
            engine=engine,
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
        k, search_k:
            Only for an index built with ``backend=neardup.Annoy(...)``: annoy candidates per
            sample (default: the index's ``k``) and nodes inspected (-1: ``n_trees * k``;
            larger is slower and misses less). The cell engine compares every candidate of a
            sample's cells exactly and refuses them.

        Returns
        -------
        Leakage
            Samples whose nearest reference sample, by exact distance, is within
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
        self._engine.check_score_options(k, int(search_k))
        best_row, best_dist = self._nearest_within(matrix, k, int(search_k))
        return self._leakage(best_row, best_dist, split, query_ids, query_labels)

    def _nearest_within(
        self, matrix: np.ndarray, k: int | None, search_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest reference row within the threshold per query row (``-1`` / ``inf`` if none)."""
        n = len(matrix)
        best_row = np.full(n, -1, dtype=np.int64)
        best_dist = np.full(n, np.inf, dtype=np.float32)
        engine = self._engine
        step = engine.chunk_rows(self.dim) if isinstance(engine, CellEngine) else _ANNOY_CHUNK_ROWS
        for start in range(0, n, step):
            q = self._transform.apply(matrix[start : start + step])
            row, dist = engine.nearest_within(q, self._threshold.value, k=k, search_k=search_k)
            best_row[start : start + len(q)] = row
            best_dist[start : start + len(q)] = dist
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
                import shutil  # here: costs ~2 ms at import

                shutil.rmtree(folder, ignore_errors=True)
                raise
            remove_old_generations(path, keep=generation)
        return path

    def _write_generation(self, folder: Path) -> dict[str, dict[str, Any]]:
        """Write every file of the index into the new ``folder``; return sizes and digests."""
        self._engine.write_vectors(folder / VECTORS)
        write_file(folder / IDS, lambda fh: np.save(fh, self._ids, allow_pickle=False))
        if self._labels is not None:
            write_file(folder / LABELS, lambda fh: np.save(fh, self._labels, allow_pickle=False))
        write_file(folder / TRANSFORM, lambda fh: np.savez(fh, **self._transform.arrays()))
        self._engine.write(folder)
        fsync_directory(folder)
        names = [*self._engine.files, VECTORS, TRANSFORM, IDS]
        names += [LABELS] if self._labels is not None else []
        return {name: file_record(folder / name, digest=name in DIGESTED) for name in names}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceIndex:
        """Open an index written by :meth:`save` (vectors, and annoy's index, memory-mapped).

        Reads formats 5, 4 and 3 (cells or annoy; format 4 has no projected screen, format
        3 kept the cells' rows in row order) and the annoy indexes of formats 1 and 2. Every
        file's size, and the SHA-256 of the cells, ``index.ann`` and the small files, are
        checked against ``meta.json`` before anything is read: a damaged or substituted file
        is refused with :class:`NeardupInputError`, never handed to annoy. A save that swaps
        in a new generation while this runs makes it read the new ``meta.json`` again.
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
        if meta["format_version"] < 3:  # formats 1 and 2 were always annoy
            settings["backend"] = "annoy"
        engine_class = _ENGINES.get(settings.get("backend"))  # type: ignore[arg-type]
        if engine_class is None:
            raise corrupt(path, f"{META} names no known engine ({settings.get('backend')!r:.40})")
        folder = path if generation is None else path / generation_name(path, generation)
        needed = [*engine_class.files, VECTORS, TRANSFORM, IDS] + ([LABELS] if has_labels else [])
        if isinstance(files, dict) and SCREEN in files:  # format 5: the cells' screen
            needed.append(SCREEN)
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
        engine = engine_class.open(path, folder, vectors, settings)
        return cls(
            engine=engine,
            ids=ids,
            labels=labels,
            transform=transform,
            threshold=threshold,
            settings=settings,
            reference=reference,
        )


# ---------------------------------------------------------------------- helpers
def _reference_input(
    activations: Any, ids: Any, labels: Any, reference: Any, *, check_values: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated ``(N, d)`` reference matrix, ``(N,)`` storable ids and labels (or None);
    ``check_values=False``: rows holding NaN or Inf are left for the caller to refuse."""
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
    if check_values:
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


def _index_backend(
    backend: Any, n_trees: int | None, n_jobs: int | None, query_jobs: int | None
) -> Cells | Annoy:
    """The engine's backend object: ``Cells`` (also for ``"exact"``: one cell) or ``Annoy``."""
    engine = as_backend(backend, n_trees=n_trees, n_jobs=n_jobs, query_jobs=query_jobs)
    if isinstance(engine, Exact):
        return Cells(n_cells=1, margin=0.5)
    if isinstance(engine, Cells):
        check_cells_backend(engine)
    return engine  # type: ignore[return-value]


def _is_exact(backend: Any) -> bool:
    return isinstance(backend, Exact) or (isinstance(backend, str) and backend == "exact")


def _no_graph(k: int) -> NeighborGraph:
    """The empty graph a fixed threshold (``Distance``, ``Cosine``) resolves on."""
    empty = np.empty((0, k))
    return NeighborGraph(empty.astype(np.int64), empty.astype(np.float32), backend="none")
