"""Mark (``annotate``) or remove (``drop_leaked``) what a ``find_leakage`` report found."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value

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
        if not isinstance(parts[name], IterableDataset) and len(parts[name]) != size:
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
    cover are returned unchanged. A streaming dataset gets the columns lazily, by row
    position in the stream (``IterableDataset.map(with_indices=True)``), so read it in the
    order ``find_leakage`` read it.
    """
    single, parts, flags = _analyzed_parts(data, report, "annotate")
    out = {}
    for name, ds in parts.items():
        if name in flags and isinstance(ds, IterableDataset):
            ds = ds.map(
                _StreamFlags(name, *flags[name], cluster_column, leaked_column),
                with_indices=True,
                batched=True,
                remove_columns=[c for c in (cluster_column, leaked_column) if c in _names(ds)],
            )
        elif name in flags:
            cluster, leaked = flags[name]
            ds = _set_column(ds, cluster_column, cluster, Value("int64"))
            ds = _set_column(ds, leaked_column, leaked, Value("bool"))
        out[name] = ds
    return out["data"] if single else type(data)(out)


class _StreamFlags:
    """``IterableDataset.map`` function: the flags of the rows at the batch's positions."""

    def __init__(
        self,
        split: str,
        cluster: np.ndarray,
        leaked: np.ndarray,
        cluster_name: str,
        leaked_name: str,
    ) -> None:
        self.split, self.cluster, self.leaked = split, cluster, leaked
        self.cluster_name, self.leaked_name = cluster_name, leaked_name

    def positions(self, indices: list[int]) -> np.ndarray:
        positions = np.asarray(indices, dtype=np.int64)
        if len(positions) and positions.max() >= len(self.leaked):
            raise NeardupInputError(
                f"split {self.split!r} streams more rows than the report saw "
                f"({len(self.leaked)}); the data changed since find_leakage: run it again."
            )
        return positions

    def __call__(self, batch: Mapping[str, Any], indices: list[int]) -> dict[str, np.ndarray]:
        positions = self.positions(indices)
        return {
            self.cluster_name: self.cluster[positions],
            self.leaked_name: self.leaked[positions],
        }

    def kept(self, batch: Mapping[str, Any], indices: list[int]) -> list[bool]:
        """``IterableDataset.filter`` function: the rows :func:`drop_leaked` keeps."""
        return (~self.leaked[self.positions(indices)]).tolist()


def _names(ds: IterableDataset) -> list[str]:
    return list(ds.column_names or [])


def _analyzed_parts(
    data: DatasetDict | Dataset, report: DuplicatesResult, caller: str
) -> tuple[bool, dict[str, Dataset], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Check ``data`` against ``report``; return (single, split -> Dataset, per-split flags)."""
    single = isinstance(data, (Dataset, IterableDataset))
    if not single and not isinstance(data, (DatasetDict, IterableDatasetDict)):
        raise NeardupInputError(
            f"{caller} takes the DatasetDict or Dataset given to find_leakage (or its "
            f"streaming form), got {type(data).__name__}."
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
    duplicate set is kept (its first row). Uses ``select`` (an indices mapping, no copy); a
    streaming dataset is filtered lazily by row position in the stream.
    """
    single, parts, flags = _analyzed_parts(data, report, "drop_leaked")
    out = {}
    for name, ds in parts.items():
        leaked = flags[name][1] if name in flags else None
        if leaked is None or not leaked.any():
            out[name] = ds
        elif isinstance(ds, IterableDataset):
            rows = _StreamFlags(name, *flags[name], "", "")
            out[name] = ds.filter(rows.kept, with_indices=True, batched=True)
        else:
            out[name] = ds.select(np.flatnonzero(~leaked))
    return out["data"] if single else type(data)(out)
