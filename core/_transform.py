"""``Transform``: the map from raw activations to the searched space (reduce, then normalise).

One object, used by :func:`neardup.find_duplicates` (fitted on all splits),
:class:`neardup.ReferenceIndex` (fitted on the reference, stored with it, applied to every
scored batch) and the rows the neighbour search streams (:class:`neardup.search.Rows`), so
they cannot drift apart. It is fitted block by block (PCA from a streamed covariance, column
norms from streamed sums) and applied block by block: no step needs the whole data as one
float32 copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ._normalize import check_normalize, column_norms, normalize_inplace, row_norms
from ._reduce import PCA
from ._validate import check_finite

__all__ = ["Transform"]

#: rows per block when summing column norms and applying.
_BLOCK_ROWS = 65_536


def _check_finite(arrays: Sequence[np.ndarray], what: str, skip: type | None = None) -> None:
    """:func:`~neardup._validate.check_finite` of each array (rows numbered across them),
    except those of dtype ``skip``."""
    offset = 0
    for array in arrays:
        if skip is None or array.dtype != skip:
            check_finite(array, what, row_offset=offset)
        offset += len(array)


def _blocks(arrays: Sequence[np.ndarray], rows: int = _BLOCK_ROWS) -> Iterator[np.ndarray]:
    """Views of ``arrays`` (``(n_i, d)`` each), ``rows`` rows at a time, in order."""
    for array in arrays:
        for start in range(0, len(array), rows):
            yield array[start : start + rows]


@dataclass
class Transform:
    """PCA (optional) then normalisation, fitted on data and applied to any rows.

    Attributes
    ----------
    input_dim:
        Width ``d`` of the raw rows.
    normalize:
        ``"row"``, ``"column"`` or ``None``, as in :func:`neardup.find_duplicates`.
    reducer:
        The fitted :class:`neardup.PCA`, or ``None`` (no PCA, or one that keeps every
        dimension: a no-op).
    column_norms:
        ``(dim,)`` float32 column norms of the fitted data (``"column"`` only), zero columns
        stored as 1.
    """

    input_dim: int
    normalize: str | None
    reducer: PCA | None = None
    column_norms: np.ndarray | None = None

    @classmethod
    def fit(
        cls,
        arrays: Sequence[np.ndarray],
        *,
        normalize: str | None,
        reduce: PCA | None = None,
    ) -> Transform:
        """Fit on the rows of ``arrays`` (``(n_i, d)`` each, stacked), block by block.

        ``reduce`` (an unfitted :class:`neardup.PCA`) is fitted in place on the rows cast to
        float32; the column norms (``"column"``) are those of the reduced rows.
        """
        arrays = list(arrays)
        transform = cls(input_dim=int(arrays[0].shape[1]), normalize=check_normalize(normalize))
        if reduce is not None:
            reduce.fit_arrays(arrays)  # randomized above MAX_COVARIANCE_WIDTH features
            transform.reducer = None if reduce.is_noop_for is not None else reduce
        if transform.normalize == "column":
            transform.column_norms = column_norms(
                transform._project(block, copy=False) for block in _blocks(arrays)
            )
        return transform

    @property
    def dim(self) -> int:
        """Width of the transformed rows."""
        return self.input_dim if self.reducer is None else len(self.reducer.components_)

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Map ``(m, input_dim)`` raw rows to new ``(m, dim)`` float32 rows (never in place)."""
        x = self._project(block, copy=True)
        if self.normalize == "column":
            x /= self.column_norms
            return x
        return normalize_inplace(x, self.normalize)

    def apply_all(
        self,
        arrays: Sequence[np.ndarray],
        *,
        out: np.ndarray | None = None,
        check: str | None = None,
    ) -> np.ndarray:
        """The rows of ``arrays`` transformed into one ``(N, dim)`` float32 matrix: written
        into ``out`` when given (an ``(N, dim)`` float32 array, e.g. in memory of a chosen
        kind) and returned, else into a new array.

        ``check``: refuse rows holding NaN or Inf with the error of
        :func:`~neardup._validate.check_finite`, naming the data ``check``. float32 rows that
        ``"row"`` divides by their norms (no PCA) are judged on those norms, with no pass of
        their own (a NaN or Inf makes the float64 norm of its row NaN or Inf, and that of a
        finite float32 row never overflows; measured at 1M x 64: 13 ms less); other arrays
        are checked before anything is written.
        """
        arrays = list(arrays)
        shape = (sum(len(a) for a in arrays), self.dim)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be a {shape} float32 array, not {out.dtype} {out.shape}")
        by_norms = self.reducer is None and self.normalize == "row"
        if check is not None:
            _check_finite(arrays, check, skip=np.float32 if by_norms else None)
        start = 0
        for block in _blocks(arrays):
            target = out[start : start + len(block)]
            if by_norms and block.dtype == np.float32:
                # divided straight into the output: one pass over the rows (the same values)
                norms = row_norms(block)
                if check is not None and not np.isfinite(norms).all():
                    _check_finite(arrays, check)  # raises, naming the rows as check_finite
                np.divide(block, norms[:, None], out=target)
            elif self.reducer is None:  # straight into the output: one copy, not two
                target[...] = block
                if self.normalize == "column":
                    target /= self.column_norms
                else:
                    normalize_inplace(target, self.normalize)
            else:
                target[...] = self.apply(block)
            start += len(block)
        return out

    def _project(self, block: np.ndarray, *, copy: bool) -> np.ndarray:
        if self.reducer is not None:
            return self.reducer.transform(block)
        return np.array(block, dtype=np.float32, copy=True) if copy else block

    # ------------------------------------------------------------------ storage
    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted parameters as plain arrays (a reference index's ``transform.npz``)."""
        out: dict[str, np.ndarray] = {}
        if self.column_norms is not None:
            out["column_norms"] = self.column_norms
        if self.reducer is not None:
            out["pca_mean"] = self.reducer.mean_
            out["pca_components"] = self.reducer.components_
            out["pca_explained_variance_ratio"] = self.reducer.explained_variance_ratio_
        return out

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], input_dim: int, normalize: str | None
    ) -> Transform:
        """The transform :meth:`arrays` wrote (``input_dim`` and ``normalize`` stored apart)."""
        transform = cls(input_dim=input_dim, normalize=normalize)
        if "pca_components" in arrays:
            components = arrays["pca_components"]
            pca = PCA(len(components))
            pca.mean_ = arrays["pca_mean"]
            pca.components_ = components
            pca.explained_variance_ratio_ = arrays.get("pca_explained_variance_ratio")
            transform.reducer = pca
        if normalize == "column":
            transform.column_norms = arrays["column_norms"].astype(np.float32)
        return transform
