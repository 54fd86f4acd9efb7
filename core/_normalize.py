"""Feature normalisation applied before the neighbour search (in place, float32)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._errors import NeardupInputError

NORMALIZE_CHOICES = ("row", "column", None)

__all__ = [
    "NORMALIZE_CHOICES",
    "check_normalize",
    "column_norms",
    "normalize_inplace",
    "row_norms",
    "squared_norms",
]

_BLOCK_ROWS = 65536


def check_normalize(normalize: str | None) -> str | None:
    """Validate the ``normalize`` option and return it."""
    if normalize not in NORMALIZE_CHOICES:
        raise NeardupInputError(
            f"normalize={normalize!r} is not supported; use 'row' (cosine geometry, the default), "
            "'column' (DNIKit's per-column L2) or None (raw Euclidean distances)."
        )
    return normalize


def column_norms(blocks: Iterable[np.ndarray]) -> np.ndarray:
    """L2 norm of every column over all row ``blocks`` (float64 sums), zero columns as 1.

    Returned as float32, ready to divide float32 rows by (DNIKit's column normalisation).
    """
    sq = None
    for block in blocks:
        part = np.einsum("ij,ij->j", block, block, dtype=np.float64)
        sq = part if sq is None else sq + part
    norms = np.sqrt(sq)
    norms[norms == 0] = 1.0
    return norms.astype(np.float32)


def row_norms(block: np.ndarray) -> np.ndarray:
    """``(m,)`` float32 L2 norm of every row of a float32 ``(m, d)`` block (float64 sums), zero
    rows as 1: what ``"row"`` normalisation divides each row by."""
    norms = np.sqrt(squared_norms(block))
    norms[norms == 0] = 1.0
    return norms.astype(np.float32)


def squared_norms(block: np.ndarray) -> np.ndarray:
    """``(m,)`` float64 sums of squares of every row of an ``(m, d)`` block.

    One ``np.einsum("ij,ij->i", block, block, dtype=np.float64)``: its buffered casting loop
    (each row summed in the same order as a float64 copy's) is now the faster way (numpy
    2.4, measured at 1M x 64 float32: 64-66 against 82-84 ms for float64 copies of a few
    thousand rows at a time; 60,000 x 784: 45 against 61 ms; the same values bit for bit).
    """
    block = np.asarray(block)
    return np.einsum("ij,ij->i", block, block, dtype=np.float64)


def normalize_inplace(matrix: np.ndarray, normalize: str | None) -> np.ndarray:
    """Normalise ``matrix`` (``(N, d)`` float32) in place and return it.

    ``"row"`` scales every sample to unit L2 norm, so Euclidean distance is a monotone function
    of cosine similarity (``d = sqrt(2 - 2 cos)``). ``"column"`` divides every feature by its L2
    norm over all samples (DNIKit's choice). All-zero rows or columns are left at zero instead
    of becoming NaN.
    """
    check_normalize(normalize)
    if normalize == "row":
        for start in range(0, len(matrix), _BLOCK_ROWS):
            block = matrix[start : start + _BLOCK_ROWS]
            block /= row_norms(block)[:, None]
    elif normalize == "column":
        matrix /= column_norms(
            matrix[start : start + _BLOCK_ROWS] for start in range(0, len(matrix), _BLOCK_ROWS)
        )
    return matrix
