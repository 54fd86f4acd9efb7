"""Mark (``annotate``) or remove (``drop_leaked``) what a ``find_leakage`` report found."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Value

from neardup import DuplicatesResult, NeardupInputError
from neardup.validators import closest_names

__all__ = ["annotate", "drop_leaked"]


def _check_report(parts: Mapping[str, Dataset], report: DuplicatesResult, single: bool) -> None:
    if not isinstance(report, DuplicatesResult):
        raise NeardupInputError(
            f"report must be the DuplicatesResult of find_leakage, got {type(report).__name__}."
        )
    if single and list(report.split_sizes) != ["data"]:
        raise NeardupInputError(
            f"the report covers splits {list(report.split_sizes)}, but a single Dataset was "
            "given; pass the DatasetDict the report was computed on."
        )
    for name, size in report.split_sizes.items():
        if name not in parts:
            raise NeardupInputError(
                f"the report has split {name!r}, which is not in the data "
                f"({closest_names(name, list(parts))}); annotate the datasets the report was "
                "computed on."
            )
        if len(parts[name]) != size:
            raise NeardupInputError(
                f"split {name!r} has {len(parts[name])} rows but the report saw {size}; the "
                "data changed since find_leakage (filtered or reordered?): run it again."
            )


def _flags(report: DuplicatesResult, single: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: ``(cluster (n,) int64, -1 = none; leaked (n,) bool)``."""
    out = {
        name: (np.full(size, -1, dtype=np.int64), np.zeros(size, dtype=bool))
        for name, size in report.split_sizes.items()
    }
    for k, cluster in enumerate(report.clusters):
        splits = np.asarray(cluster.splits)
        positions = np.asarray(cluster.positions, dtype=np.int64)
        for name in np.unique(splits):
            out[str(name)][0][positions[splits == name]] = k
        if single:  # every member but the first row of the set is a redundant copy
            out["data"][1][np.sort(positions)[1:]] = True
    for name, leak in report.leakage.items():
        out[name][1][np.asarray(leak.positions, dtype=np.int64)] = True
    return out


def annotate(
    data: DatasetDict | Dataset,
    report: DuplicatesResult,
    *,
    cluster_column: str = "neardup_cluster",
    leaked_column: str = "neardup_leaked",
) -> DatasetDict | Dataset:
    """Add ``neardup_cluster`` and ``neardup_leaked`` to every analysed split.

    ``neardup_cluster`` (int64) is the index of the example's set in ``report.clusters`` (-1:
    in no set). ``neardup_leaked`` (bool) is True for examples of an evaluation split with a
    near-duplicate in the reference split (never in the reference split itself). For a single
    ``Dataset`` it marks every member of a set except its first row, so filtering on it keeps
    one example per set. Rows are neither reordered nor dropped; splits the report did not
    cover are returned unchanged.
    """
    single, parts, flags = _analyzed_parts(data, report, "annotate")
    out = {}
    for name, ds in parts.items():
        if name in flags:
            cluster, leaked = flags[name]
            ds = _set_column(ds, cluster_column, cluster, Value("int64"))
            ds = _set_column(ds, leaked_column, leaked, Value("bool"))
        out[name] = ds
    return out["data"] if single else DatasetDict(out)


def _analyzed_parts(
    data: DatasetDict | Dataset, report: DuplicatesResult, caller: str
) -> tuple[bool, dict[str, Dataset], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Check ``data`` against ``report``; return (single, split -> Dataset, per-split flags)."""
    single = isinstance(data, Dataset)
    if not single and not isinstance(data, DatasetDict):
        raise NeardupInputError(
            f"{caller} takes the DatasetDict or Dataset given to find_leakage, got "
            f"{type(data).__name__}."
        )
    parts = {"data": data} if single else dict(data)
    _check_report(parts, report, single)
    return single, parts, _flags(report, single)


def _set_column(ds: Dataset, name: str, values: np.ndarray, feature: Any) -> Dataset:
    if name in ds.column_names:
        ds = ds.remove_columns(name)
    return ds.add_column(name, values, feature=feature)


def drop_leaked(data: DatasetDict | Dataset, report: DuplicatesResult) -> DatasetDict | Dataset:
    """The data without the examples :func:`annotate` marks as leaked (no columns added).

    For a DatasetDict: evaluation splits lose their examples that have a near-duplicate in
    the reference split; the reference split is kept whole. For a Dataset: one example per
    duplicate set is kept (its first row). Uses ``select`` (an indices mapping, no copy).
    """
    single, parts, flags = _analyzed_parts(data, report, "drop_leaked")
    out = {}
    for name, ds in parts.items():
        leaked = flags[name][1] if name in flags else None
        out[name] = ds if leaked is None or not leaked.any() else ds.select(np.flatnonzero(~leaked))
    return out["data"] if single else DatasetDict(out)
