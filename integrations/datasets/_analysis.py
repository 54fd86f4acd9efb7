"""``find_leakage``: near-duplicates and leakage from a vector column of a DatasetDict."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, Value

from neardup import DuplicatesResult, NeardupInputError, find_duplicates
from neardup.validators import closest_names

from ._arrow import read_plain, read_vectors

__all__ = ["find_leakage"]

_RESERVED_OPTIONS = {
    "labels": "label_column=",
    "ids": "id_column=",
    "data": "the first argument",
}


def _split_map(
    data: Any, splits: list[str] | None, reference: str | None
) -> tuple[dict[str, Dataset], bool]:
    """``split -> Dataset`` to analyse, and whether the input was a single Dataset."""
    if isinstance(data, Dataset):
        if splits is not None:
            raise NeardupInputError(
                "splits= only applies to a DatasetDict; a single Dataset is analysed whole "
                "(duplicates within it)."
            )
        return {"data": data}, True
    if not isinstance(data, DatasetDict):
        iterable = type(data).__name__.startswith("Iterable")
        raise NeardupInputError(
            f"find_leakage takes a datasets.DatasetDict (leakage across splits) or a Dataset "
            f"(duplicates within it), got {type(data).__name__}"
            + (
                "; materialise a streaming dataset first (Dataset.from_generator or "
                "load_dataset(..., streaming=False))."
                if iterable
                else "."
            )
        )
    names = list(data) if splits is None else list(splits)
    if not names:
        raise NeardupInputError("the DatasetDict has no splits.")
    for name in names:
        if name not in data:
            raise NeardupInputError(
                f"split {name!r} is not in the DatasetDict ({closest_names(name, list(data))})."
            )
    if reference is not None and len(names) > 1 and reference not in names:
        raise NeardupInputError(
            f"reference split {reference!r} is not among the analysed splits {names} "
            f"({closest_names(reference, names)}); pass reference= the training split's name, "
            "or reference=None to skip leakage."
        )
    return {name: data[name] for name in names}, False


def find_leakage(
    data: DatasetDict | Dataset,
    *,
    column: str = "neardup_embedding",
    label_column: str | None = None,
    id_column: str | None = None,
    splits: list[str] | None = None,
    reference: str | None = "train",
    html: str | os.PathLike[str] | None = None,
    sample_column: str | None = None,
    **options: Any,
) -> DuplicatesResult:
    """Near-duplicates and train/test leakage from a vector column of a DatasetDict.

    Parameters
    ----------
    data:
        A ``DatasetDict`` (every split, or those in ``splits``, checked against
        ``reference``) or one ``Dataset`` (duplicates within it; its split is ``"data"``).
    column:
        The vector column (fixed-size or variable-length lists of numbers, any nesting).
    label_column, id_column:
        Optional columns with per-example labels (int/ClassLabel/str: per-class leakage) and
        ids (unique per split). Without ids, samples are named by their row position.
    reference:
        The split other splits are checked against (``None``: duplicate sets only).
    html:
        Also write the HTML report to this path, with thumbnails (``Image()`` columns or any
        array column) or texts read from the datasets, row by row, for the samples shown.
    sample_column:
        The column shown in the report (default: the first ``Image()`` column, else the
        first string column).
    **options:
        Any option of :func:`neardup.find_duplicates` (threshold, normalize, reduce, k,
        backend, seed, ...).

    Returns
    -------
    neardup.DuplicatesResult
        Positions in it are row positions within each split, as the datasets are now.
    """
    for bad, hint in _RESERVED_OPTIONS.items():
        if bad in options:
            raise NeardupInputError(
                f"find_leakage reads {bad} from the datasets; use {hint} instead of {bad}=."
            )
    parts, single = _split_map(data, splits, reference)
    vectors, labels, ids = {}, {}, {}
    for name, ds in parts.items():
        where = "the dataset" if single else f"split {name!r}"
        vectors[name] = read_vectors(ds, column, where)
        if label_column is not None:
            labels[name] = read_plain(ds, label_column, where, "label")
        if id_column is not None:
            ids[name] = read_plain(ds, id_column, where, "id")
    layer = options.pop("layer", column)
    if single:
        result = find_duplicates(
            vectors["data"],
            labels=labels.get("data"),
            ids=ids.get("data"),
            layer=layer,
            **options,
        )
    else:
        result = find_duplicates(
            vectors,
            labels=labels or None,
            ids=ids or None,
            reference=reference,
            layer=layer,
            **options,
        )
    if html is not None:
        shown = _sample_column(parts, sample_column, column)
        samples = (
            None if shown is None else {n: _ColumnSamples(ds, shown) for n, ds in parts.items()}
        )
        result.to_html(html, samples=samples)
    return result


class _ColumnSamples:
    """One column of a Dataset as a lazy sequence: rows are read only for samples shown."""

    def __init__(self, ds: Dataset, column: str) -> None:
        self.ds, self.column = ds, column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, position: int) -> Any:
        return self.ds[int(position)][self.column]


def _sample_column(parts: Mapping[str, Dataset], chosen: str | None, vectors: str) -> str | None:
    """The column to show in the report: ``chosen``, else an Image(), else a string column."""
    if chosen is not None:
        for name, ds in parts.items():
            if chosen not in ds.column_names:
                raise NeardupInputError(
                    f"sample_column {chosen!r} is not a column of split {name!r} "
                    f"({closest_names(chosen, ds.column_names)})."
                )
        return chosen
    features = next(iter(parts.values())).features
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name, feature in features.items():
        text = isinstance(feature, Value) and feature.dtype in ("string", "large_string")
        if name != vectors and text:
            return name
    return None
