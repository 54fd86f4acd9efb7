"""Reading ``datasets`` columns as numpy through Arrow, without Python-level loops.

Arrow chunks are flattened with ``.flatten().to_numpy()`` (zero-copy per chunk where it can),
through the dataset's indices mapping after ``select``/``filter``/``shuffle``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from neardup import NeardupInputError
from neardup.validators import closest_names

__all__ = ["read_plain", "read_vectors"]


def _arrow_column(ds: Dataset, column: str, where: str) -> pa.ChunkedArray:
    """The column as Arrow, in the dataset's row order (through its indices mapping, if any)."""
    if column not in ds.column_names:
        raise NeardupInputError(
            f"{where} has no column {column!r} ({closest_names(column, ds.column_names)}). "
            "Add the vectors with ds.map(ActivationHook(embed_fn, column=...), batched=True) "
            "or pass column= naming an existing one."
        )
    chunked = ds.data.table.column(column)
    indices = getattr(ds, "_indices", None)  # after select/filter/shuffle (= flatten_indices)
    if indices is not None:
        chunked = chunked.take(indices.column(0))
    return chunked


def _segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over consecutive segments of the given lengths (empty -> 0)."""
    ends = np.cumsum(counts)
    total = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return total[ends] - total[ends - counts]


def _storage(array: pa.Array) -> pa.Array:
    """The storage of an extension array (datasets' Array2D/3D...), else the array itself."""
    return array.storage if isinstance(array, pa.ExtensionArray) else array


def _flatten_chunk(array: pa.Array, column: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat numeric values of one chunk and the number of values in each of its rows."""
    row_counts = np.ones(len(array), dtype=np.int64)
    depth = 0
    array = _storage(array)
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or (pa.types.is_fixed_size_list(array.type))
    ):
        if array.null_count:
            first = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
            raise NeardupInputError(
                f"{where}, column {column!r}: {array.null_count} missing (None) vectors"
                + (" or sub-lists" if depth else f" (first at row {first})")
                + "; embed every example, or filter out the empty ones first."
            )
        if pa.types.is_fixed_size_list(array.type):  # no per-row lengths to read
            row_counts = row_counts * array.type.list_size
        else:
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
            row_counts = _segment_sums(lengths.astype(np.int64), row_counts)
        array = _storage(array.flatten())  # flatten respects slicing (unlike .values)
        depth += 1
    kind = array.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
        raise NeardupInputError(
            f"{where}, column {column!r} has Arrow type {kind}, which is not numeric. "
            "find_leakage reads vectors: embed the column first with ActivationHook "
            "(e.g. TransformerEmbedder for text) and pass column= the vector column."
        )
    if depth == 0:
        raise NeardupInputError(
            f"{where}, column {column!r} holds one number per example ({kind}), not a vector; "
            "pass column= the column written by ActivationHook."
        )
    if array.null_count:
        raise NeardupInputError(
            f"{where}, column {column!r}: {array.null_count} vector entries are missing "
            "(None); the embedder must return finite numbers only."
        )
    if pa.types.is_boolean(kind) or pa.types.is_float16(kind):
        array = array.cast(pa.float32())
    return array.to_numpy(zero_copy_only=False), row_counts


def read_vectors(ds: Dataset, column: str, where: str) -> np.ndarray:
    """The vector column of ``ds`` as an ``(n, d)`` numpy array (zero-copy per chunk if it can).

    Any nesting of (fixed-size or variable) lists is flattened per example, so pixel columns
    stored as lists of lists read as flat vectors too.
    """
    chunked = _arrow_column(ds, column, where)
    if len(chunked) == 0:
        raise NeardupInputError(f"{where} has no rows; drop the empty split.")
    parts = [_flatten_chunk(chunk, column, where) for chunk in chunked.chunks if len(chunk)]
    counts = np.concatenate([c for _, c in parts])
    dim = int(np.bincount(counts).argmax()) if counts.size else 0
    ragged = np.flatnonzero(counts != dim)
    if ragged.size:
        shown = ", ".join(f"row {r}: {counts[r]}" for r in ragged[:3])
        raise NeardupInputError(
            f"{where}, column {column!r} is ragged: most vectors have {dim} values but "
            f"{ragged.size} differ ({shown}). Pad or pool every example to one length, or map "
            "with features=hook.features_for(ds) to enforce a fixed length."
        )
    if dim == 0:
        raise NeardupInputError(f"{where}, column {column!r} holds empty vectors.")
    values = parts[0][0] if len(parts) == 1 else np.concatenate([v for v, _ in parts])
    return values.reshape(len(counts), dim)


def read_plain(ds: Dataset, column: str, where: str, what: str) -> np.ndarray:
    """A scalar column (labels, ids) as a 1-D numpy array."""
    chunked = _arrow_column(ds, column, where).combine_chunks()
    if pa.types.is_dictionary(chunked.type):
        chunked = chunked.dictionary_decode()
    if not (
        pa.types.is_integer(chunked.type)
        or pa.types.is_string(chunked.type)
        or pa.types.is_large_string(chunked.type)
        or pa.types.is_boolean(chunked.type)
    ):
        raise NeardupInputError(
            f"{where}: {what} column {column!r} has Arrow type {chunked.type}; {what}s must "
            "be ints or strings, one per example."
        )
    if chunked.null_count:
        raise NeardupInputError(
            f"{where}: {what} column {column!r} has {chunked.null_count} missing values."
        )
    return chunked.to_numpy(zero_copy_only=False)
