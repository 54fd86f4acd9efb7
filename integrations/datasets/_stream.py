"""Streaming datasets (``load_dataset(..., streaming=True)``): read once into Arrow in memory.

A streaming ``IterableDataset`` has no length and no random access, and near-duplicate
search needs every row of every split at once. :func:`materialized` iterates each split once,
as Arrow tables, and keeps only the columns an analysis reads (the vector column, the input
and sample columns, labels and ids), so an image dataset keeps its encoded image bytes and a
text dataset its texts, never the decoded pixels. The result is an in-memory ``Dataset`` (or
``DatasetDict``) with the same features, on which :func:`find_leakage` then runs as on any
other; rows stay in the stream's order, so positions in the report are positions in the
stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    Image,
    IterableDataset,
    IterableDatasetDict,
    Value,
)
from datasets.table import InMemoryTable

from neardup import NeardupInputError
from neardup.validators import closest_names

__all__ = ["STREAM_BATCH", "is_streaming", "materialized", "viewable_columns"]

STREAM_BATCH = 1000  # rows per Arrow table read from a stream


def is_streaming(data: Any) -> bool:
    """Whether ``data`` is an ``IterableDataset`` or ``IterableDatasetDict``."""
    return isinstance(data, (IterableDataset, IterableDatasetDict))


def viewable_columns(features: Features) -> list[str]:
    """The columns an input view or the report could show: ``Image()`` and string columns."""
    return [
        name
        for name, feature in features.items()
        if isinstance(feature, Image)
        or (isinstance(feature, Value) and feature.dtype in ("string", "large_string"))
    ]


def materialized(
    data: IterableDataset | IterableDatasetDict,
    keep: Callable[[Features], Iterable[str]],
    *,
    required: Iterable[str] = (),
    batch_size: int = STREAM_BATCH,
    where: str = "the dataset",
) -> Dataset | DatasetDict:
    """Read a streaming dataset (every split of a dict) into an in-memory Arrow ``Dataset``.

    Parameters
    ----------
    data:
        An ``IterableDataset`` or ``IterableDatasetDict``; each split is iterated once.
    keep:
        ``keep(features) -> column names`` to keep, given the split's features (those the
        stream declares, else those of its first Arrow table); names it lacks are skipped.
    required:
        Column names every split must have; a missing one raises an error that names the
        split and its closest columns, before the stream is read further.
    batch_size:
        Rows per Arrow table read from the stream.
    where:
        How errors name the split (a dict's splits are named by their keys).

    Returns
    -------
    datasets.Dataset or datasets.DatasetDict
        The kept columns of every row, in the stream's order, with the stream's features.
    """
    if isinstance(data, IterableDatasetDict):
        return DatasetDict(
            {
                split: materialized(
                    part, keep, required=required, batch_size=batch_size, where=f"split {split!r}"
                )
                for split, part in data.items()
            }
        )
    if not isinstance(data, IterableDataset):
        raise NeardupInputError(
            f"materialized takes an IterableDataset or IterableDatasetDict, got "
            f"{type(data).__name__}."
        )
    tables: list[pa.Table] = []
    features = data.features
    kept: list[str] | None = None
    for table in data.with_format("arrow").iter(batch_size=batch_size):
        if kept is None:
            features = features or Features.from_arrow_schema(table.schema)
            _check_required(table.column_names, required, where)
            wanted = set(keep(features))
            kept = [name for name in table.column_names if name in wanted]
        tables.append(table.select(kept))
    if kept is None:  # an empty stream: no rows, the declared columns it keeps
        declared = features or Features()
        if features is not None:
            _check_required(list(features), required, where)
        wanted = set(keep(declared))
        empty = Features({name: f for name, f in declared.items() if name in wanted})
        return Dataset.from_dict({name: [] for name in empty}, features=empty)
    table = pa.concat_tables(tables)
    if all(name in features for name in kept):
        try:  # the declared features (Image(), ClassLabel, fixed-size lists) over Arrow's own
            table = table.cast(Features({name: features[name] for name in kept}).arrow_schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError):
            pass  # a stream whose declared features do not fit its rows: read as they come
    return Dataset(InMemoryTable(table))


def _check_required(columns: list[str], required: Iterable[str], where: str) -> None:
    for name in required:
        if name not in columns:
            raise NeardupInputError(
                f"{where} has no column {name!r} ({closest_names(name, columns)})."
            )
