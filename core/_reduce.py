"""PCA in numpy (no scikit-learn): exact from a streamed covariance, randomized when wide.

Up to :data:`MAX_COVARIANCE_WIDTH` features the ``d x d`` covariance is accumulated block by
block and solved exactly. Wider data (flattened feature maps, pixels) would need a covariance
that does not fit (100,000 features: 74.5 GiB), so :meth:`PCA.fit` then uses a randomized range
finder over the rows (Halko et al.: two streamed passes per power iteration, memory
``N x (n + 10)`` plus ``(n + 10) x d``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ._errors import NeardupInputError

__all__ = ["PCA", "as_reducer"]

_BLOCK_ROWS = 32768
#: widest data whose d x d float64 covariance is accumulated (4096: 128 MiB).
MAX_COVARIANCE_WIDTH = 4096
_OVERSAMPLE = 10
_POWER_ITERATIONS = 3


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
        if block.shape[1] > MAX_COVARIANCE_WIDTH:
            gib = block.shape[1] ** 2 * 8 / 2**30
            raise NeardupInputError(
                f"PCA.partial_fit got {block.shape[1]} features: its d x d covariance would take "
                f"{gib:.1f} GiB. Pass the whole (N, d) array to PCA.fit(...) (randomized PCA "
                f"for more than {MAX_COVARIANCE_WIDTH} features)."
            )
        if self._sum is None:
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
        """Fit on an ``(N, d)`` array (streamed in blocks) or on an iterable of blocks.

        An array wider than :data:`MAX_COVARIANCE_WIDTH` is fitted by randomized PCA (seeded,
        reproducible); no ``d x d`` matrix is built.
        """
        if isinstance(data, np.ndarray):
            return self.fit_arrays([data])
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

    def fit_arrays(self, arrays: Sequence[np.ndarray]) -> PCA:
        """Fit on the stacked rows of ``(n_i, d)`` arrays (any dtype, read block by block):
        exact from the streamed covariance, or randomized above ``MAX_COVARIANCE_WIDTH``."""
        arrays = [a.reshape(len(a), -1) for a in arrays]
        if arrays and arrays[0].shape[1] > MAX_COVARIANCE_WIDTH:
            self._fit_randomized(arrays)
            return self
        for block in _blocks(arrays):
            self.partial_fit(np.asarray(block, dtype=np.float32))
        self._solve()
        return self

    def _fit_randomized(self, arrays: list[np.ndarray]) -> None:
        """Top components of wide rows by a seeded randomized range finder (float64)."""
        n, d = sum(len(a) for a in arrays), arrays[0].shape[1]
        if n < 2:
            raise NeardupInputError("PCA needs at least 2 samples to fit.")
        self._count = n
        self._sum = np.zeros(d)  # marks the width for is_noop_for
        self._gram = None
        if self.n_components >= d:
            return
        mean = np.zeros(d)
        for block in _blocks(arrays):
            mean += block.sum(axis=0)
        mean /= n
        width = min(self.n_components + _OVERSAMPLE, n, d)
        rng = np.random.default_rng(0)
        basis = rng.normal(size=(d, width))  # (d, w)
        for _ in range(_POWER_ITERATIONS + 1):
            range_ = _centered_product(arrays, mean, basis)  # (n, w) = (X - m) basis
            q, _ = np.linalg.qr(range_)
            basis = _centered_product_t(arrays, mean, q)  # (d, w) = (X - m)^T q
            basis, _ = np.linalg.qr(basis)
        small = _centered_product(arrays, mean, basis)  # (n, w) in the found subspace
        _, singular, vt = np.linalg.svd(small, full_matrices=False)
        components = (basis @ vt.T).T[: self.n_components]  # (n_components, d)
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(1)])
        signs[signs == 0] = 1
        total = 0.0
        for block in _blocks(arrays):
            block -= mean
            total += float(np.einsum("ij,ij->", block, block))
        variances = singular[: self.n_components] ** 2
        self.mean_ = mean
        self.components_ = components * signs[:, None]
        self.explained_variance_ratio_ = variances / max(total, np.finfo(float).tiny)

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
            if self._gram is None:  # fitted randomized with n_components >= d: identity
                return np.asarray(data, dtype=np.float32).reshape(len(data), -1)
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


def _blocks(arrays: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """float64 copies of the rows of ``arrays``, ``_BLOCK_ROWS`` at a time, in order."""
    for array in arrays:
        for start in range(0, len(array), _BLOCK_ROWS):
            yield np.asarray(array[start : start + _BLOCK_ROWS], dtype=np.float64)


def _centered_product(
    arrays: Sequence[np.ndarray], mean: np.ndarray, basis: np.ndarray
) -> np.ndarray:
    """``(X - mean) @ basis`` over the stacked rows, ``(n, w)``."""
    shift = mean @ basis
    return np.concatenate([block @ basis - shift for block in _blocks(arrays)])


def _centered_product_t(
    arrays: Sequence[np.ndarray], mean: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """``(X - mean)^T @ q`` over the stacked rows, ``(d, w)``."""
    out = np.zeros((len(mean), q.shape[1]))
    start = 0
    for block in _blocks(arrays):
        out += block.T @ q[start : start + len(block)]
        start += len(block)
    return out - np.outer(mean, q.sum(axis=0))


def as_reducer(reduce: Any) -> PCA | None:
    """Accept ``None``, an int (``PCA(n)``) or a :class:`PCA` for the ``reduce=`` option."""
    if reduce is None or isinstance(reduce, PCA):
        return reduce
    if isinstance(reduce, (int, np.integer)) and not isinstance(reduce, bool):
        return PCA(int(reduce))
    raise NeardupInputError(
        f"reduce={reduce!r} is not supported; use None, an int n (PCA to n dims) or PCA(n)."
    )
