"""``ShardedReference``: a reference split as saved ``ReferenceIndex`` shards, on Ray.

Building: one Ray task per shard builds a :class:`neardup.ReferenceIndex` of that shard's
rows and saves it under one directory (shared storage on a cluster); a shard given as a
``.npy``/Parquet path is read by its own task, so the driver never holds the reference.
Scoring: one Ray task per (shard, batch of new rows) opens its shard (memory-mapped) and
scores the batch; the driver keeps, for each new row, its nearest reference row over all
shards (ties: the earlier shard, then the earlier row, as one index over the whole split
breaks them) and fills the same :class:`neardup.Leakage` one index gives.

Shards must judge alike, so the threshold is a fixed distance (``Cosine``/``Distance``), the
normalisation per row (or none) and there is no PCA: these do not depend on the shard.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import neardup
from neardup import Leakage, NeardupInputError, ReferenceIndex

from ._executor import RayExecutor
from ._sources import Columns, read_shard, shard_rows

__all__ = ["ShardedReference"]

MANIFEST = "shards.json"
FORMAT_VERSION = 1
_SCORE_ROWS = 20_000


@dataclass(frozen=True)
class ShardedReference:
    """Saved ``ReferenceIndex`` shards of one reference split, built and scored on Ray.

    Attributes
    ----------
    directory : Path
        Holds ``shard-00000/`` ... (each a saved ReferenceIndex) and ``shards.json``.
    sizes : tuple of int
        Rows per shard, in order; shard ``s`` holds reference positions
        ``sum(sizes[:s])`` to ``sum(sizes[:s + 1]) - 1``.
    reference : str
        The reference split's name (``Leakage.reference``).
    """

    directory: Path
    sizes: tuple[int, ...]
    reference: str = "train"

    @property
    def paths(self) -> list[Path]:
        return [self.directory / f"shard-{s:05d}" for s in range(len(self.sizes))]

    @property
    def size(self) -> int:
        return int(sum(self.sizes))

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        reference: Any,
        directory: str | os.PathLike[str],
        *,
        threshold: Any,
        n_shards: int | None = None,
        ids: Any = None,
        labels: Any = None,
        vector_column: str = "vector",
        id_column: str | None = None,
        label_column: str | None = None,
        normalize: str | None = "row",
        name: str = "train",
        executor: RayExecutor | None = None,
        overwrite: bool = False,
        **index_options: Any,
    ) -> ShardedReference:
        """Build and save one ``ReferenceIndex`` per shard, each in its own Ray task.

        Parameters
        ----------
        reference:
            An ``(N, d)`` array (cut into ``n_shards`` consecutive shards, shipped through the
            object store), or a list of ``.npy``/Parquet shard paths on storage every node
            reads (one shard each, read by its task).
        directory:
            Where the shards and the manifest go (created; must be empty unless
            ``overwrite``).
        threshold:
            ``neardup.Cosine(s)`` or ``neardup.Distance(x)``: the same for every shard.
        n_shards:
            Shards of an array (default: 1 per 1M rows); not used with paths.
        ids, labels:
            ``(N,)`` sequences for an array input (default ids: the row position in the
            whole reference); with paths, name the Parquet columns with ``id_column`` /
            ``label_column`` (``.npy`` shards get their position in the whole reference).
        normalize:
            ``"row"`` or ``None`` (column norms would differ per shard).
        name:
            The reference split's name in the results.
        **index_options:
            Passed on to :meth:`neardup.ReferenceIndex.build` (e.g. ``k``, ``seed``).
        """
        _check_shard_options(threshold, normalize, index_options)
        target = _empty_directory(directory, overwrite)
        executor = executor or RayExecutor()
        options = dict(threshold=threshold, normalize=normalize, reference=name, **index_options)
        if _is_path_list(reference):
            columns = Columns(vector_column, None, id_column, label_column)
            paths = [str(p) for p in reference]
            sizes = list(executor.map(shard_rows, paths))
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            tasks = [
                (str(target / f"shard-{s:05d}"), (path, columns, int(offsets[s])), None, None)
                for s, path in enumerate(paths)
            ]
        else:
            matrix = np.asarray(reference)
            if matrix.ndim < 2 or len(matrix) < 2:
                raise NeardupInputError(
                    f"reference must be an (N, d) array of N >= 2 samples or a list of shard "
                    f"paths, got shape {matrix.shape}."
                )
            n = len(matrix)
            count = _check_shards(n_shards, n)
            bounds = np.linspace(0, n, count + 1).astype(np.int64)
            id_array = np.arange(n) if ids is None else np.asarray(ids)
            label_array = None if labels is None else np.asarray(labels)
            for what, values in (("ids", id_array), ("labels", label_array)):
                if values is not None and len(values) != n:
                    raise NeardupInputError(
                        f"{what} has {len(values)} entries for {n} reference rows; give one "
                        "per row."
                    )
            tasks = [
                (
                    str(target / f"shard-{s:05d}"),
                    matrix[lo:hi],
                    id_array[lo:hi],
                    None if label_array is None else label_array[lo:hi],
                )
                for s, (lo, hi) in enumerate(itertools.pairwise(bounds))
            ]
            sizes = [int(hi - lo) for lo, hi in itertools.pairwise(bounds)]
        built = list(executor.map(functools.partial(_build_shard, options), tasks))
        sharded = cls(target, tuple(int(s) for s in built), name)
        if list(built) != list(sizes):
            raise RuntimeError(f"shards hold {built} rows, expected {sizes}")  # pragma: no cover
        sharded._write_manifest()
        return sharded

    def _write_manifest(self) -> None:
        manifest = {
            "format": "neardup-sharded-reference",
            "version": FORMAT_VERSION,
            "reference": self.reference,
            "sizes": list(self.sizes),
        }
        tmp = self.directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(tmp, self.directory / MANIFEST)  # last: a half-built directory has none

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ShardedReference:
        """Open a directory written by :meth:`build` (the shards open lazily, in the tasks)."""
        path = Path(directory)
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise NeardupInputError(
                f"{path} is not a sharded reference (no {MANIFEST}; an interrupted build "
                "leaves none): build it with ShardedReference.build."
            )
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if meta.get("format") != "neardup-sharded-reference" or meta.get("version") != 1:
            raise NeardupInputError(
                f"{manifest} has format {meta.get('format')!r} version {meta.get('version')!r};"
                f" this neardup reads neardup-sharded-reference version {FORMAT_VERSION}."
            )
        return cls(path, tuple(int(s) for s in meta["sizes"]), str(meta["reference"]))

    # ------------------------------------------------------------------ score
    def score(
        self,
        activations: Any,
        *,
        ids: Any = None,
        labels: Any = None,
        split: str = "new",
        batch_rows: int = _SCORE_ROWS,
        executor: RayExecutor | None = None,
    ) -> Leakage:
        """Score new rows against every shard, one Ray task per (shard, batch); merged.

        Parameters
        ----------
        activations:
            ``(M, d)`` new rows (the reference's layer and pooling).
        ids, labels:
            ``(M,)`` sequences (default ids: the row position).
        split:
            The name of the new data (``Leakage.split``).
        batch_rows:
            New rows per task.

        Returns
        -------
        Leakage
            What one ``ReferenceIndex`` over the whole reference reports: each leaked row with
            its nearest reference row over all shards (positions in the whole reference).
        """
        matrix = np.asarray(activations)
        if matrix.ndim < 2:
            raise NeardupInputError(
                f"activations must be an (M, d) array of new rows, got shape {matrix.shape}."
            )
        m = len(matrix)
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise NeardupInputError(f"batch_rows must be an int >= 1, got {batch_rows!r}.")
        query_ids = np.arange(m) if ids is None else np.asarray(ids)
        query_labels = None if labels is None else np.asarray(labels)
        for what, values in (("ids", query_ids), ("labels", query_labels)):
            if values is not None and len(values) != m:
                raise NeardupInputError(
                    f"{what} has {len(values)} entries for {m} rows; give one per row."
                )
        starts = range(0, m, batch_rows)
        tasks = [
            (
                str(path),
                matrix[lo : lo + batch_rows],
                query_ids[lo : lo + batch_rows],
                None if query_labels is None else query_labels[lo : lo + batch_rows],
                split,
            )
            for path in self.paths
            for lo in starts
        ]
        answers = (executor or RayExecutor()).map(_score_batch, tasks)
        offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        best: dict[int, tuple[float, int, int, Any, dict | None]] = {}
        for t, leak in enumerate(answers):
            shard, batch = divmod(t, len(starts))
            conflicts = {c["id"]: c for c in leak.label_conflicts}
            rows = zip(leak.positions, leak.nearest_positions, leak.nearest_ids, leak.distances)
            for position, nearest, nearest_id, dist in rows:
                row = batch * batch_rows + int(position)
                key = (float(dist), shard, int(nearest) + int(offsets[shard]))
                if row not in best or key < best[row][:3]:
                    conflict = conflicts.get(_plain(query_ids[row]))
                    best[row] = (*key, nearest_id, conflict)
        return _leakage(best, query_ids, query_labels, split, self.reference, m)


def _leakage(
    best: dict[int, tuple[float, int, int, Any, dict | None]],
    ids: np.ndarray,
    labels: np.ndarray | None,
    split: str,
    reference: str,
    total: int,
) -> Leakage:
    """The merged :class:`Leakage`: closest first, ties by position, as one index fills it."""
    rows = sorted(best, key=lambda r: (np.float32(best[r][0]), r))
    by_class: dict[Any, dict[str, float]] = {}
    if labels is not None:
        classes, totals = np.unique(labels, return_counts=True)
        leaked = labels[np.asarray(rows, dtype=np.int64)] if rows else labels[:0]
        counts = dict(zip(*np.unique(leaked, return_counts=True)))
        for c, n in zip(classes.tolist(), totals.tolist()):
            count = int(counts.get(c, 0))
            by_class[c] = {"count": count, "total": n, "fraction": count / n}
    return Leakage(
        split=split,
        reference=reference,
        ids=[_plain(ids[r]) for r in rows],
        nearest_ids=[best[r][3] for r in rows],
        distances=np.array([best[r][0] for r in rows], dtype=np.float32),
        total=total,
        positions=list(rows),
        nearest_positions=[best[r][2] for r in rows],
        by_class=by_class,
        label_conflicts=[best[r][4] for r in rows if best[r][4] is not None],
    )


def _build_shard(options: dict[str, Any], task: tuple) -> int:
    """One Ray task: build one shard's ReferenceIndex and save it; returns its rows."""
    target, rows, ids, labels = task
    if isinstance(rows, tuple):  # (path, columns, offset): read the shard here
        path, columns, offset = rows
        table = read_shard(path, columns)
        rows = table[columns.vector]
        ids = table.get(columns.ids) if columns.ids else None
        if ids is None:
            ids = np.arange(offset, offset + len(rows))
        labels = table.get(columns.labels) if columns.labels else None
    index = ReferenceIndex.build(rows, ids=ids, labels=labels, **options)
    index.save(target, overwrite=True)
    return index.size


@functools.lru_cache(maxsize=4)
def _open_shard(path: str) -> ReferenceIndex:
    """Each worker process opens a shard once (memory-mapped) for all its batches."""
    return ReferenceIndex.load(path)


def _score_batch(task: tuple) -> Leakage:
    path, rows, ids, labels, split = task
    return _open_shard(path).score(rows, ids=ids, labels=labels, split=split)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _is_path_list(reference: Any) -> bool:
    return (
        isinstance(reference, Sequence)
        and not isinstance(reference, (str, bytes))
        and len(reference) > 0
        and all(isinstance(p, (str, os.PathLike)) for p in reference)
    )


def _check_shard_options(threshold: Any, normalize: Any, options: dict[str, Any]) -> None:
    if not isinstance(threshold, (neardup.Cosine, neardup.Distance)):
        raise NeardupInputError(
            f"threshold={threshold!r}: every shard must judge with the same distance, so "
            "ShardedReference needs a fixed one: neardup.Cosine(s) or neardup.Distance(x) "
            "(e.g. the value a ReferenceIndex of one shard resolves)."
        )
    if normalize not in ("row", None):
        raise NeardupInputError(
            f"normalize={normalize!r}: column norms differ from shard to shard; use 'row' "
            "(the default) or None."
        )
    if options.get("reduce") is not None:
        raise NeardupInputError(
            "reduce= fits a PCA per shard, and shards would differ; reduce the activations "
            "before sharding, or leave reduce unset."
        )


def _check_shards(n_shards: Any, n: int) -> int:
    if n_shards is None:
        return max(1, -(-n // 1_000_000))
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or not 1 <= n_shards <= n // 2:
        raise NeardupInputError(
            f"n_shards must be an int from 1 to {n // 2} (at least 2 rows a shard) for {n} "
            f"rows, got {n_shards!r}."
        )
    return n_shards


def _empty_directory(directory: str | os.PathLike[str], overwrite: bool) -> Path:
    target = Path(directory)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise NeardupInputError(
            f"{target} is not empty; pass overwrite=True to replace a sharded reference there, "
            "or choose a new directory."
        )
    target.mkdir(parents=True, exist_ok=True)
    (target / MANIFEST).unlink(missing_ok=True)
    return target
