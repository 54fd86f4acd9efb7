"""Turn user input (one array, or ``split -> array``) into validated per-split arrays.

Every check here raises :class:`NeardupInputError` with the problem and its fix; nothing
downstream has to re-check shapes, dtypes or finiteness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ._errors import NeardupInputError, closest_names
from ._mapped import release_pages

DEFAULT_SPLIT = "data"

__all__ = [
    "DEFAULT_SPLIT",
    "Dataset",
    "as_feature_matrix",
    "as_sample_column",
    "check_finite",
    "check_ids",
    "check_labels",
    "check_unnormalized_scale",
    "prepare",
]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: largest row norm computed in float32 without normalisation: its square (1e36) stays far
#: below float32's maximum (3.4e38) in the matrix products of the exact search and PCA.
_SAFE_ROW_NORM = 1e18
_SCAN_ROWS = 65536
#: longest split name accepted (it titles every table of the report).
MAX_SPLIT_NAME_LENGTH = 200


@dataclass
class Dataset:
    """Validated input: per split, an ``(n_split, d)`` array (the caller's, not copied)."""

    names: list[str]
    sizes: list[int]
    arrays: list[np.ndarray]  # per split, (n_split, d), any numeric dtype; never modified
    ids: list[np.ndarray]  # per split, (n_split,)
    labels: list[np.ndarray | None]  # per split, (n_split,) or None

    @cached_property
    def matrix(self) -> np.ndarray:
        """All splits stacked into one ``(N, d)`` float32 copy (owned: safe to modify)."""
        matrix = np.empty((sum(self.sizes), self.arrays[0].shape[1]), dtype=np.float32)
        for start, a in zip(self.offsets, self.arrays):
            matrix[start : start + len(a)] = a
        return matrix

    @cached_property
    def offsets(self) -> np.ndarray:
        """Row offset of each split in :attr:`matrix` (length ``len(names) + 1``)."""
        return np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @cached_property
    def split_of_row(self) -> np.ndarray:
        """Split index (into :attr:`names`) of every row, shape ``(N,)``."""
        return np.repeat(np.arange(len(self.names), dtype=np.int32), self.sizes)


def as_feature_matrix(values: Any, what: str) -> np.ndarray:
    """Return ``values`` as an ``(N, d)`` array (any ``(N, ...)`` shape is flattened per sample).

    The dtype is kept (no copy) when it is numeric; conversion to float32 happens later.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, without torch
        tensor = values.detach().cpu()
        try:
            values = tensor.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks: widen to float32
            values = tensor.float().numpy()
    try:
        array = np.asarray(values)
    except ValueError as err:
        raise NeardupInputError(
            f"{what} is ragged (its samples have different shapes): {err}. "
            "Pad or pool every sample to one shape, or pass one (N, d) array."
        ) from err
    if array.dtype == object:
        raise NeardupInputError(
            f"{what} is ragged or not numeric (numpy made an object array of it). "
            "Pass one numeric (N, d) array; pad or pool samples to a common shape."
        )
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iuf":
        raise NeardupInputError(
            f"{what} has dtype {array.dtype}, which is not numeric. "
            "Pass float16/float32/float64 or integer activations."
        )
    if array.ndim == 0:
        raise NeardupInputError(f"{what} is a scalar; pass an (N, d) array of N samples.")
    if array.ndim == 1:
        raise NeardupInputError(
            f"{what} is 1-D with shape {array.shape}; an (N, d) array is expected. "
            "Use values.reshape(-1, 1) for N samples of one feature, "
            "or values.reshape(1, -1) for a single sample."
        )
    if array.shape[0] == 0:
        raise NeardupInputError(f"{what} is empty (0 samples); drop it or give it samples.")
    n = array.shape[0]
    array = array.reshape(n, -1)
    if array.shape[1] == 0:
        raise NeardupInputError(f"{what} has 0 features per sample (shape {array.shape}).")
    return array


def _row_sums(matrix: np.ndarray) -> np.ndarray:
    """``(N,)`` sum of every row, block by block: the pages of a memory-mapped input are handed
    back after each block (measured: a 10M x 64 ``.npy`` stayed resident in full, 2.4 GiB,
    after a one-shot sum). float64 sums, except float32 rows: float32 sums (``einsum``; 9
    against 58 ms at 1M x 64), which may overflow where float64 sums would not."""
    float32 = matrix.dtype == np.float32
    sums = np.empty(len(matrix), dtype=np.float32 if float32 else np.float64)
    for start in range(0, len(matrix), _SCAN_ROWS):
        stop = start + _SCAN_ROWS
        if float32:
            np.einsum("ij->i", matrix[start:stop], out=sums[start:stop])
        else:
            np.add.reduce(matrix[start:stop], axis=1, dtype=np.float64, out=sums[start:stop])
        release_pages(matrix)
    return sums


def check_finite(matrix: np.ndarray, what: str, row_offset: int = 0) -> None:
    """Raise if any row holds NaN or Inf, naming the first offending rows."""
    # One sum per row: NaN and Inf propagate, and float64 cannot overflow for
    # float32/float16/int inputs of any realistic width. float32 rows are summed in float32
    # first: a finite sum proves a finite row, and the rows whose sum is not finite (NaN,
    # Inf, or an overflow of large values) are summed again in float64.
    sums = _row_sums(matrix)
    bad = np.flatnonzero(~np.isfinite(sums))
    if bad.size and sums.dtype != np.float64:
        again = np.add.reduce(np.asarray(matrix[bad]), axis=1, dtype=np.float64)
        bad = bad[~np.isfinite(again)]
    if bad.size:
        shown = ", ".join(str(int(i) + row_offset) for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise NeardupInputError(
            f"{what} has {bad.size} row(s) with NaN or Inf values (rows {shown}{more}). "
            "Remove those samples or fix the layer that produced them (e.g. a division by zero)."
        )
    if matrix.dtype.kind == "f" and matrix.dtype.itemsize > 4:
        peak = _max_abs(matrix)
        if peak > _FLOAT32_MAX:
            raise NeardupInputError(
                f"{what} holds values up to {peak:.3g}, beyond float32's range (3.4e38), in "
                "which neardup computes; they would become Inf/NaN rows. Rescale the data "
                "(e.g. divide it by a constant) or fix the layer that produced them."
            )


def _max_abs(matrix: np.ndarray) -> float:
    """Largest absolute value of ``matrix``, blocked over rows (no full-size temporary)."""
    peak = 0.0
    for start in range(0, len(matrix), _SCAN_ROWS):
        block = matrix[start : start + _SCAN_ROWS]
        if block.size:
            peak = max(peak, float(np.max(np.abs(block))))
        release_pages(matrix)
    return peak


def check_unnormalized_scale(arrays: Sequence[np.ndarray], what: str) -> None:
    """Refuse data whose squared norms would overflow float32 when it is not normalised.

    Without ``normalize`` (and before a PCA) rows are multiplied as they are: a row norm
    above 1e18 squares past float32's range and distances become Inf or NaN, so planted
    copies are silently missed.
    """
    for array in arrays:
        if array.dtype.kind not in "iuf":
            continue
        peak = _max_abs(array) * float(np.sqrt(array.shape[1]))
        if peak > _SAFE_ROW_NORM:
            raise NeardupInputError(
                f"{what}: row norms reach about {peak:.3g}; without normalisation their squares "
                f"overflow float32 (max 3.4e38) and distances become Inf. Use normalize='row' "
                f"or 'column', or divide the data by a constant (e.g. by {peak / 1e6:.1g})."
            )


def _per_split(option: Any, name: str, splits: list[str], single: bool) -> list[Any]:
    """Spread an option given per split (a mapping) or for a single array over the splits."""
    if option is None:
        return [None] * len(splits)
    if isinstance(option, Mapping):
        unknown = [s for s in option if s not in splits]
        if unknown:
            raise NeardupInputError(
                f"{name} names split {unknown[0]!r}, which is not in the data "
                f"({closest_names(unknown[0], splits)}). Use the same split names as the data."
            )
        return [option.get(s) for s in splits]
    if single:
        return [option]
    raise NeardupInputError(
        f"{name} must be a mapping split -> sequence when the data has several splits "
        f"(splits: {', '.join(map(repr, splits))}); got {type(option).__name__}."
    )


def check_ids(ids: Any, split: str, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    array = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
    if array.ndim != 1 or len(array) != n:
        raise NeardupInputError(
            f"ids for split {split!r} have shape {array.shape}, but the split has {n} samples; "
            "give exactly one id per sample."
        )
    try:
        unique, counts = np.unique(array, return_counts=True)
    except TypeError as err:  # mixed, unorderable ids
        raise NeardupInputError(
            f"ids for split {split!r} mix types that cannot be compared ({err}); "
            "use all ints or all strings."
        ) from err
    _check_name_lengths(array, f"ids for split {split!r}")
    if unique.size != n:
        dupes = unique[counts > 1][:5].tolist()
        raise NeardupInputError(
            f"ids for split {split!r} are not unique: {dupes} appear more than once. "
            "Every sample needs its own id (e.g. its dataset index)."
        )
    return array


def as_sample_column(values: Any) -> np.ndarray:
    """Per-sample values (numpy, list, torch tensor: no torch import) as an array.

    A ``(N, 1)`` column becomes ``(N,)``; other shapes are returned as they are, for the
    caller to check against its number of samples.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return array


def check_labels(labels: Any, split: str, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    array = as_sample_column(labels)
    if array.ndim != 1 or len(array) != n:
        raise NeardupInputError(
            f"labels for split {split!r} have shape {array.shape}, but the split has {n} "
            "samples; give one label (int or string) per sample, e.g. y.argmax(1) for one-hot."
        )
    if array.dtype == object:
        array = _uniform_names(array, f"labels for split {split!r}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array))[:5].tolist()
        raise NeardupInputError(
            f"labels for split {split!r} contain NaN or Inf (positions {bad}); give every "
            "sample a real label, or drop the unlabelled samples."
        )
    if array.dtype.kind not in "iufbU":
        raise NeardupInputError(
            f"labels for split {split!r} have dtype {array.dtype}; use ints or strings."
        )
    _check_name_lengths(array, f"labels for split {split!r}")
    return array


#: longest id or label string kept (they are names, shown in every report).
MAX_NAME_LENGTH = 1000


def _uniform_names(array: np.ndarray, what: str) -> np.ndarray:
    """An object array of ids or labels as all-int or all-str values, or a clear error."""
    items = array.tolist()
    if all(isinstance(v, str) for v in items):
        return np.array(items, dtype=str) if items else array
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
        try:
            return np.array(items, dtype=np.int64)
        except OverflowError:
            return array
    kinds = sorted({type(v).__name__ for v in items})
    raise NeardupInputError(
        f"{what} hold {', '.join(kinds)} values; use all ints or all strings (e.g. "
        "[str(v) for v in values]), with no None."
    )


def _check_name_lengths(array: np.ndarray, what: str) -> None:
    if array.dtype.kind == "U" and array.dtype.itemsize // 4 > MAX_NAME_LENGTH:
        longest = int(np.char.str_len(array).max()) if array.size else 0
        if longest > MAX_NAME_LENGTH:
            raise NeardupInputError(
                f"{what} include a string of {longest:,} characters; ids and labels are names "
                f"shown in every report, at most {MAX_NAME_LENGTH:,} characters. Use a short "
                "key (e.g. a file name or a hash) and keep the content elsewhere."
            )


def prepare(data: Any, *, labels: Any = None, ids: Any = None) -> Dataset:
    """Validate ``data`` (an array or ``split -> array``) and stack it into a :class:`Dataset`."""
    if isinstance(data, Mapping):
        if not data:
            raise NeardupInputError("data is an empty mapping; give at least one split.")
        first = next(iter(data.values()))
        if isinstance(first, Mapping):
            raise NeardupInputError(
                "data mixes split -> {view -> array} and split -> array; give every split the "
                "same views (find_duplicates combines them into one verdict), or use "
                "neardup.find_duplicates_by_layer(data, ...) for one result per layer."
            )
        names = [str(s) for s in data]
        for name in names:
            if not name or len(name) > MAX_SPLIT_NAME_LENGTH:
                raise NeardupInputError(
                    f"split name {name[:40]!r}{'...' if len(name) > 40 else ''} has "
                    f"{len(name):,} characters; use a short non-empty name (at most "
                    f"{MAX_SPLIT_NAME_LENGTH}) such as 'train' or 'test'."
                )
        arrays = [as_feature_matrix(v, f"split {s!r}") for s, v in zip(names, data.values())]
        single = False
    else:
        names = [DEFAULT_SPLIT]
        arrays = [as_feature_matrix(data, "data")]
        single = True

    dims = {s: a.shape[1] for s, a in zip(names, arrays)}
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"{s}: {d}" for s, d in dims.items())
        raise NeardupInputError(
            f"splits have different feature sizes ({listed}); every split must come from the "
            "same layer with the same pooling."
        )
    sizes = [a.shape[0] for a in arrays]
    if sum(sizes) < 2:
        raise NeardupInputError(
            "data holds a single sample; near-duplicates need at least 2 samples."
        )
    for s, a in zip(names, arrays):
        check_finite(a, f"split {s!r}" if not single else "data")

    id_list = [
        check_ids(i, s, n) for i, s, n in zip(_per_split(ids, "ids", names, single), names, sizes)
    ]
    label_list = [
        check_labels(lab, s, n)
        for lab, s, n in zip(_per_split(labels, "labels", names, single), names, sizes)
    ]
    return Dataset(names=names, sizes=sizes, arrays=arrays, ids=id_list, labels=label_list)


def split_index(name: str, names: Sequence[str], what: str = "split") -> int:
    """Index of split ``name``; a clear error with the closest names when it is unknown."""
    if name in names:
        return list(names).index(name)
    raise NeardupInputError(
        f"unknown {what} {name!r}; the data has {', '.join(map(repr, names))} "
        f"({closest_names(name, names)})."
    )
