"""Input forms of the Ray integration, read into per-split vectors, ids and labels.

A Ray Dataset (vector, split, id and label columns), a mapping ``split -> shard paths``
(``.npy`` or Parquet, each shard read by its own Ray task), or a Hugging Face ``datasets``
object (through ``ray.data.from_huggingface``). Row order is kept: rows of a split come in
the order of the dataset (Ray Data's ``preserve_order`` is switched on while reading) or of
the shard list, so a run on Ray and a run in one process see the same rows in the same order.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data

from neardup import NeardupInputError

__all__ = ["Columns", "SplitArrays", "embed_rows", "read_shard", "read_splits", "shard_rows"]

DEFAULT_SPLIT = "data"
SHARD_SUFFIXES = (".npy", ".parquet")


@dataclass(frozen=True)
class Columns:
    """Which columns of a table hold the vectors, the split, the ids and the labels.

    ``split=None`` reads every row as one split (``"data"``); ``ids=None`` numbers the rows
    of each split from 0; ``labels=None`` reads no labels.
    """

    vector: str = "vector"
    split: str | None = "split"
    ids: str | None = None
    labels: str | None = None

    def wanted(self) -> list[str]:
        return [c for c in (self.vector, self.split, self.ids, self.labels) if c is not None]


@dataclass
class SplitArrays:
    """Per split, in reading order: ``(n, d)`` float32 vectors, ids and labels (or None)."""

    vectors: dict[str, np.ndarray]
    ids: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """``ids=``/``labels=`` for :func:`neardup.find_duplicates` (None when absent)."""
        return {"ids": self.ids or None, "labels": self.labels or None}


def read_splits(source: Any, columns: Columns) -> SplitArrays:
    """Read any supported input form into :class:`SplitArrays`.

    Parameters
    ----------
    source:
        A ``ray.data.Dataset``; a mapping ``split -> [path, ...]`` of ``.npy`` shards
        (``(n, d)`` arrays) or Parquet shards (columns named by ``columns``); a Hugging Face
        ``datasets.Dataset`` or ``DatasetDict``.
    columns:
        The column names (ignored for ``.npy`` shards, which hold vectors only).
    """
    if isinstance(source, ray.data.Dataset):
        return _read_dataset(source, columns)
    if _is_hf_dataset_dict(source):
        return _merge_named(
            {
                str(name): _read_dataset(ray.data.from_huggingface(part), _without_split(columns))
                for name, part in source.items()
            }
        )
    if _is_hf_dataset(source):
        return _read_dataset(ray.data.from_huggingface(source), columns)
    if isinstance(source, Mapping):
        return _read_shards(source, columns)
    raise NeardupInputError(
        f"cannot read {type(source).__name__} on Ray; pass a ray.data.Dataset, a mapping "
        "split -> list of .npy/.parquet shard paths, or a Hugging Face datasets.Dataset / "
        "DatasetDict."
    )


def embed_rows(
    dataset: ray.data.Dataset,
    embed: Callable[..., Any],
    *,
    input_column: str | None,
    vector_column: str,
    batch_size: int,
    concurrency: int | None,
) -> ray.data.Dataset:
    """Compute the vector column with ``map_batches``: ``embed(inputs (B, ...)) -> (B, d)``.

    ``embed`` is a function, or a class whose instances are such callables (a model loaded
    once per Ray actor: ``concurrency`` actors). It gets the ``input_column`` values, or with
    ``input_column=None`` the whole batch (a dict of numpy arrays, as a ``datasets.map``
    function such as ``neardup.integrations.datasets.TransformerEmbedder`` takes). Other
    columns (split, ids, labels) pass on; the input column is dropped once embedded.
    """
    if input_column is not None:
        _check_columns(dataset, [input_column], what="input_column")
    kwargs: dict[str, Any] = {"batch_format": "numpy", "batch_size": batch_size}
    if isinstance(embed, type):
        return dataset.map_batches(
            _EmbedActor,
            fn_constructor_args=(embed, input_column, vector_column),
            concurrency=concurrency or 1,
            **kwargs,
        )
    if not callable(embed):
        raise NeardupInputError(
            f"embed must be a callable(inputs) -> (batch, d) array or a class of them, got "
            f"{type(embed).__name__}."
        )
    return dataset.map_batches(_embed_batch, fn_args=(embed, input_column, vector_column), **kwargs)


def _embed_batch(
    batch: dict[str, np.ndarray], embed: Callable[..., Any], input_column: str | None, column: str
) -> dict[str, np.ndarray]:
    if input_column is None:
        inputs = next(iter(batch.values()))
        vectors = np.asarray(embed(batch), dtype=np.float32)
    else:
        inputs = batch.pop(input_column)
        vectors = np.asarray(embed(inputs), dtype=np.float32)
    if vectors.ndim < 2 or len(vectors) != len(inputs):
        raise NeardupInputError(
            f"embed returned shape {vectors.shape} for a batch of {len(inputs)} inputs; it "
            "must return one row per input, shape (batch, d)."
        )
    batch[column] = vectors.reshape(len(vectors), -1)
    return batch


class _EmbedActor:
    """One model per Ray actor, built once by calling the user's class."""

    def __init__(self, factory: type, input_column: str | None, column: str) -> None:
        self.embed = factory()
        self.input_column = input_column
        self.column = column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _embed_batch(batch, self.embed, self.input_column, self.column)


# --- Ray Datasets --------------------------------------------------------------------------


@contextmanager
def _preserved_order(dataset: ray.data.Dataset) -> Iterator[None]:
    """Ray Data keeps the dataset's row order while reading (it may reorder blocks otherwise).

    A dataset carries the context it was created with, so the switch goes there; it is put
    back afterwards, as the caller's dataset may share that context.
    """
    options = dataset.context.execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = before


def _read_dataset(dataset: ray.data.Dataset, columns: Columns) -> SplitArrays:
    _check_columns(dataset, columns.wanted(), what="columns")
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    selected = dataset.select_columns(columns.wanted())
    with _preserved_order(selected):
        batches = selected.iter_batches(batch_format="numpy", batch_size=8192)
        for batch in batches:
            _add_batch(parts, batch, columns)
    if not parts:
        raise NeardupInputError("the Ray Dataset has no rows; nothing to compare.")
    return _stack(parts, columns)


def _add_batch(
    parts: dict[str, list[dict[str, np.ndarray]]], batch: dict[str, np.ndarray], columns: Columns
) -> None:
    if columns.split is None:
        parts.setdefault(DEFAULT_SPLIT, []).append(batch)
        return
    splits = np.asarray(batch[columns.split])
    names, first = np.unique(splits, return_index=True)
    for name in names[np.argsort(first)]:  # order of first appearance
        mask = splits == name
        parts.setdefault(str(name), []).append({k: v[mask] for k, v in batch.items()})


def _stack(parts: dict[str, list[dict[str, np.ndarray]]], columns: Columns) -> SplitArrays:
    out = SplitArrays(vectors={})
    for split, batches in parts.items():
        out.vectors[split] = np.concatenate(
            [_vectors(b[columns.vector], columns.vector) for b in batches]
        )
        for name, into in ((columns.ids, out.ids), (columns.labels, out.labels)):
            values = _optional_column(batches, name, split)
            if values is not None:
                into[split] = values
    return out


def _optional_column(
    batches: list[dict[str, np.ndarray]], name: str | None, split: str
) -> np.ndarray | None:
    """The id or label column of a split, or None when no batch has it (``.npy`` shards)."""
    if name is None:
        return None
    present = [name in b for b in batches]
    if not any(present):
        return None
    if not all(present):
        raise NeardupInputError(
            f"split {split!r} mixes shards with and without the column {name!r} (.npy "
            "shards hold vectors only); give it for every shard of the split or for none."
        )
    return np.concatenate([np.asarray(b[name]) for b in batches])


def _vectors(values: Any, column: str) -> np.ndarray:
    """A batch of the vector column as ``(B, d)`` float32 (tensor or list-of-arrays column)."""
    array = np.asarray(values)
    if array.dtype == object:
        try:
            array = np.stack([np.asarray(v, dtype=np.float32) for v in values])
        except ValueError as err:
            raise NeardupInputError(
                f"column {column!r} holds vectors of different lengths; every row needs "
                "one vector of the same size (pad or pool them)."
            ) from err
    if array.ndim < 2 or array.dtype.kind not in "iufb":
        raise NeardupInputError(
            f"column {column!r} is not a vector column (got dtype {array.dtype}, shape "
            f"{array.shape}); it must hold one numeric vector per row."
        )
    return array.reshape(len(array), -1).astype(np.float32, copy=False)


def _check_columns(dataset: ray.data.Dataset, wanted: Sequence[str], *, what: str) -> None:
    have = list(dataset.columns() or [])
    for name in wanted:
        if name not in have:
            near = difflib.get_close_matches(name, have, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise NeardupInputError(
                f"the dataset has no column {name!r} ({hint}columns: {have}); name the "
                f"columns with {what}."
            )


def _without_split(columns: Columns) -> Columns:
    return Columns(vector=columns.vector, split=None, ids=columns.ids, labels=columns.labels)


def _merge_named(named: Mapping[str, SplitArrays]) -> SplitArrays:
    out = SplitArrays(vectors={})
    for name, part in named.items():
        out.vectors[name] = part.vectors[DEFAULT_SPLIT]
        if DEFAULT_SPLIT in part.ids:
            out.ids[name] = part.ids[DEFAULT_SPLIT]
        if DEFAULT_SPLIT in part.labels:
            out.labels[name] = part.labels[DEFAULT_SPLIT]
    return out


def _is_hf_dataset(source: Any) -> bool:
    kind = type(source)
    return kind.__module__.startswith("datasets.") and kind.__name__ == "Dataset"


def _is_hf_dataset_dict(source: Any) -> bool:
    kind = type(source)
    return kind.__module__.startswith("datasets.") and kind.__name__ == "DatasetDict"


# --- shards --------------------------------------------------------------------------------


def _read_shards(shards: Mapping[Any, Any], columns: Columns) -> SplitArrays:
    tasks: list[tuple[str, ray.ObjectRef]] = []
    reader = ray.remote(read_shard)
    for split, paths in shards.items():
        if isinstance(paths, (str, Path)) or not isinstance(paths, Sequence) or not paths:
            raise NeardupInputError(
                f"shards[{split!r}] must be a non-empty list of .npy/.parquet paths, got {paths!r}."
            )
        for path in paths:
            tasks.append((str(split), reader.remote(str(path), columns)))
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    for split, ref in tasks:  # shard order: rows in the order the lists give
        parts.setdefault(split, []).append(_shard_result(ref))
    return _stack(parts, _without_split(columns))


def _shard_result(ref: ray.ObjectRef) -> dict[str, np.ndarray]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, NeardupInputError):
            raise err.cause from None
        raise


def shard_rows(path: str) -> int:
    """Rows in a ``.npy`` or Parquet shard, from its header or footer (a Ray task)."""
    file = _shard_file(path)
    if file.suffix == ".npy":
        return int(np.load(file, mmap_mode="r", allow_pickle=False).shape[0])
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(file).metadata.num_rows)


def _shard_file(path: str) -> Path:
    file = Path(path)
    if file.suffix not in SHARD_SUFFIXES:
        raise NeardupInputError(
            f"shard {path!r} is neither .npy nor .parquet; write shards as (n, d) .npy "
            "arrays or Parquet tables with a vector column."
        )
    if not file.is_file():
        raise NeardupInputError(f"shard {path!r} does not exist (or is not a file).")
    return file


def read_shard(path: str, columns: Columns) -> dict[str, np.ndarray]:
    """One Ray task: a shard's columns as numpy arrays."""
    file = _shard_file(path)
    if file.suffix == ".npy":
        try:
            vectors = np.load(file, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise NeardupInputError(f"shard {path!r} is not a numeric .npy array: {err}") from err
        return {columns.vector: _vectors(vectors, path)}
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as err:  # pyarrow raises several types for unreadable files
        raise NeardupInputError(f"shard {path!r} is not a readable Parquet file: {err}") from err
    wanted = [c for c in columns.wanted() if c != columns.split]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise NeardupInputError(
            f"shard {path!r} has no column {missing[0]!r} (columns: {table.column_names}); "
            "name the vector, id and label columns to read."
        )
    out = {columns.vector: _arrow_vectors(table[columns.vector], path, columns.vector)}
    for name in wanted[1:]:
        out[name] = table[name].to_numpy()
    return out


def _arrow_vectors(chunked: Any, path: str, column: str) -> np.ndarray:
    """A Parquet list / fixed-size-list column as ``(n, d)`` float32 without Python loops."""
    import pyarrow as pa

    array = chunked.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        return _vectors(array.flatten().to_numpy().reshape(len(array), width), column)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = np.diff(array.offsets.to_numpy())
        if len(lengths) and (lengths != lengths[0]).any():
            raise NeardupInputError(
                f"shard {path!r}: column {column!r} holds vectors of different lengths; "
                "every row needs one vector of the same size."
            )
        width = int(lengths[0]) if len(lengths) else 0
        return _vectors(array.flatten().to_numpy().reshape(len(array), width), column)
    return _vectors(np.asarray(array.to_pylist()), column)
