"""Lone nearest neighbours: copies that stand out in their own neighbourhood.

A view's global cut (:class:`neardup.Auto`) is one distance for every row. Some copies lie
beyond it although nothing natural lies near them: a noisy copy of a dark, low-contrast
picture (standardising the thumbnail amplifies the noise) or a crop whose resampling blurred
it. Their source is still their nearest neighbour *by far*: the second nearest row is a
natural neighbour many times farther. This module turns that into a second route with its
own automatic cut.

Under the local power law ``Auto`` uses (a natural row's neighbours spread like a Poisson
process in ``m`` dimensions, ``m`` the intrinsic dimension), the ratio ``d1 / d2`` of a
natural row's two nearest distances lies below ``r`` with probability ``r ** m``, whatever
the local density. Over ``Q`` rows, ``Q * r ** m`` natural rows are expected below ``r``; a
row is *lone* where that is at most ``false_alarms`` (the same budget ``Auto`` spends on its
global cut), i.e. ``d1 / d2 <= (false_alarms / Q) ** (1 / m)``, and its nearest distance is
within the distance that a quarter of natural rows reach (``Auto.quantile``): a pair farther
than that is not near anything, lone or not.

Measured on grey Fashion-MNIST 60,000 + 10,000 (``benchmarks/bench_quality.py``, seed 0,
aligned view, ``m`` 9.9): every planted copy missed by the global cut (4 noisy copies at
1.1-2.0 x the cut, two crops at 1.03 / 1.22 x, one JPEG copy at 1.65 x) has
``Q (d1/d2) ** m`` at most 0.054, while the first unplanted row that is not the same picture
(``same_picture``) sits at 1.6.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["lone_ratio", "lone_scores"]


def lone_ratio(dimension: float, rows: int, false_alarms: float) -> float:
    """The largest ``d1 / d2`` of a lone row: ``(false_alarms / rows) ** (1 / m)``, in
    ``(0, 1]`` (``m`` at least 1; ``nan`` for an unmeasured ``dimension``)."""
    if not math.isfinite(dimension) or rows < 1:
        return math.nan
    return min(1.0, (float(false_alarms) / rows) ** (1.0 / max(dimension, 1.0)))


def lone_scores(distances: np.ndarray, ratio: float) -> np.ndarray:
    """``(Q,)`` each row's ``d1 / d2`` in units of ``ratio`` (:func:`lone_ratio`): at most 1
    for a lone row.

    ``distances`` is ``(Q, k)``, each row sorted ascending, ``k >= 2``. Rows with fewer than
    two finite neighbours, or whose second neighbour is an exact copy (``d2 = 0``), score
    ``inf`` (not lone); an exact copy with a distinct second neighbour scores 0.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2 or not math.isfinite(ratio) or ratio <= 0:
        return np.full(len(d), np.inf)
    first, second = d[:, 0], d[:, 1]
    ok = np.isfinite(first) & np.isfinite(second) & (second > 0)
    out = np.full(len(d), np.inf)
    out[ok] = first[ok] / second[ok] / ratio
    return out
