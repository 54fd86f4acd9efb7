"""Exact PCA from a streamed covariance, in numpy (no scikit-learn)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ._errors import NeardupInputError

__all__ = ["PCA", "as_reducer"]

_BLOCK_ROWS = 32768


class PCA:
    """Principal component analysis fitted from batches.

    The covariance is accumulated in float64 one block of rows at a time
    (``partial_fit``), so the data never needs to be held twice; the components are the top
    eigenvectors of that exact covariance (``numpy.linalg.eigh``). Signs are fixed (largest
    absolute loading positive) so results are reproducible.

    Parameters
    ----------
    n_components:
        Number of dimensions to keep. Data with no more features than this is passed
        through unchanged (a no-op, not an error).
    """

    def __init__(self, n_components: int) -> None:
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
            raise NeardupInputError(
                f"PCA n_components must be a positive int, got {n_components!r}."
            )
        if n_components < 1:
            raise NeardupInputError(f"PCA n_components must be >= 1, got {n_components}.")
        self.n_components = int(n_components)
        self._count = 0
        self._sum: np.ndarray | None = None
        self._gram: np.ndarray | None = None
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # (n_components, d)
        self.explained_variance_ratio_: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"PCA({self.n_components})"

    def partial_fit(self, block: np.ndarray) -> PCA:
        """Add a ``(n, d)`` block of samples to the running covariance."""
        block = np.asarray(block, dtype=np.float64).reshape(len(block), -1)
        if self._sum is None:
            d = block.shape[1]
            need = 2 * 8 * d * d  # the float64 covariance and its eigenvectors
            if need > MAX_COVARIANCE_BYTES:
                raise NeardupInputError(
                    f"reduce= on {d:,} features needs about {need / 2**30:.1f} GiB for the PCA "
                    f"covariance (d x d float64, twice); at most {MAX_COVARIANCE_BYTES / 2**30:.0f}"
                    " GiB is allowed. Pool the layer first (e.g. global average pooling of a "
                    "conv map), pick a narrower layer, or drop reduce=."
                )
            self._sum = np.zeros(block.shape[1])
            self._gram = np.zeros((block.shape[1], block.shape[1]))
        elif block.shape[1] != self._sum.shape[0]:
            raise NeardupInputError(
                f"PCA got a block with {block.shape[1]} features after blocks with "
                f"{self._sum.shape[0]}; every block must have the same width."
            )
        self._count += len(block)
        self._sum += block.sum(axis=0)
        self._gram += block.T @ block
        self.components_ = None
        return self

    def fit(self, data: np.ndarray | Iterable[np.ndarray]) -> PCA:
        """Fit on an ``(N, d)`` array (streamed in blocks) or on an iterable of blocks."""
        blocks = (
            (data[i : i + _BLOCK_ROWS] for i in range(0, len(data), _BLOCK_ROWS))
            if isinstance(data, np.ndarray)
            else data
        )
        for block in blocks:
            self.partial_fit(block)
        self._solve()
        return self

    def _solve(self) -> None:
        if self._count < 2:
            raise NeardupInputError("PCA needs at least 2 samples to fit.")
        mean = self._sum / self._count
        cov = (self._gram - self._count * np.outer(mean, mean)) / (self._count - 1)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][: self.n_components]
        components = vectors[:, order].T
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(1)])
        signs[signs == 0] = 1
        self.mean_ = mean
        self.components_ = components * signs[:, None]
        total = max(values.clip(min=0).sum(), np.finfo(float).tiny)
        self.explained_variance_ratio_ = values[order].clip(min=0) / total

    @property
    def is_noop_for(self) -> int | None:
        """Feature width this PCA would keep unchanged (``n_components >= d``), else None."""
        if self._sum is not None and self.n_components >= self._sum.shape[0]:
            return int(self._sum.shape[0])
        return None

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Project ``(N, d)`` data onto the components; returns float32 ``(N, n_components)``."""
        if self.components_ is None:
            if self._sum is None:
                raise NeardupInputError("PCA.transform called before fit.")
            self._solve()
        data = np.asarray(data).reshape(len(data), -1)
        if data.shape[1] != self.components_.shape[1]:
            raise NeardupInputError(
                f"PCA was fitted on {self.components_.shape[1]} features, got {data.shape[1]}."
            )
        out = np.empty((len(data), len(self.components_)), dtype=np.float32)
        comps = self.components_.T.astype(np.float32)
        shift = (self.mean_ @ self.components_.T).astype(np.float32)
        for start in range(0, len(data), _BLOCK_ROWS):
            block = np.asarray(data[start : start + _BLOCK_ROWS], dtype=np.float32)
            out[start : start + len(block)] = block @ comps - shift
        return out

    def fit_transform(self, data: np.ndarray) -> np.ndarray:
        """Fit on ``data`` and return its projection."""
        return self.fit(data).transform(data)


#: largest PCA covariance (plus eigenvectors) allowed: 4 GiB is about 16,000 features.
MAX_COVARIANCE_BYTES = 4 << 30


def as_reducer(reduce: Any) -> PCA | None:
    """Accept ``None``, an int (``PCA(n)``) or a :class:`PCA` for the ``reduce=`` option."""
    if reduce is None or isinstance(reduce, PCA):
        return reduce
    if isinstance(reduce, (int, np.integer)) and not isinstance(reduce, bool):
        return PCA(int(reduce))
    raise NeardupInputError(
        f"reduce={reduce!r} is not supported; use None, an int n (PCA to n dims) or PCA(n)."
    )
