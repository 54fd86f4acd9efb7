"""Order statistics without ``np.median``'s, ``np.quantile``'s and ``np.unique``'s first-call cost.

``np.median`` (its NaN check), ``np.quantile`` and ``np.unique`` (its masked-array check)
import ``numpy.ma`` on first use: 8 ms of CPU on a quiet 2-vCPU machine and up to 80 ms on a
loaded one, paid by every run for its threshold and sets (the benchmark at 100,000 x 40 takes
about 0.6 CPU s in all).
:func:`median`, :func:`quantile` and :func:`distinct` give the same values without that import.
"""

from __future__ import annotations

import numpy as np

__all__ = ["distinct", "median", "quantile"]


def median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a ``(n,)`` (or any-shape, flattened) numeric array;
    NaN when it is empty or holds a NaN."""
    a = np.asarray(values).ravel()
    n = a.size
    if n == 0 or (a.dtype.kind in "fc" and np.isnan(a).any()):
        return float("nan")
    half = n // 2
    if n % 2:
        return float(np.partition(a, half)[half])
    part = np.partition(a, [half - 1, half])
    return float(np.mean(part[half - 1 : half + 1]))


def quantile(values: np.ndarray, q: float) -> float:
    """``float(np.quantile(values, q))`` (its default, linear method) for ``0 <= q <= 1``:
    the same interpolation between the same order statistics, without ``np.quantile``'s
    ``np.unique``, which imports ``numpy.ma`` as ``np.median`` does. NaN when ``values`` is
    empty or holds a NaN."""
    a = np.asarray(values).ravel()
    n = a.size
    if n == 0 or (a.dtype.kind in "fc" and np.isnan(a).any()):
        return float("nan")
    q = float(q)
    virtual = (n - 1) * q
    low = min(max(int(np.floor(virtual)), 0), n - 1)
    high = min(low + 1, n - 1)
    part = np.partition(a, sorted({low, high}))
    previous, following = part[low], part[high]
    gamma = virtual - low
    diff = following - previous
    if gamma >= 0.5:  # numpy's _lerp: from the upper end past half way
        return float(following - diff * (1 - gamma))
    return float(previous + diff * gamma)


def distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` (sorted distinct values, one NaN kept) without its masked-array
    check, which imports ``numpy.ma``."""
    a = np.sort(np.asarray(values).ravel())
    if a.size < 2:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    if a.dtype.kind in "fc" and np.isnan(a[-1]):  # NaNs sort last: keep the first one only
        first_nan = int(np.argmax(np.isnan(a)))
        keep[first_nan + 1 :] = False
    return a[keep]
