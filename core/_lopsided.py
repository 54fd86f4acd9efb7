"""Lopsided neighbourhoods: copies beyond the cut whose whole neighbourhood says "copy".

A view's global cut (:class:`neardup.Auto`) is one distance for every row. In the colour and
YCbCr 8x8 thumbnails of colour images, noisy and JPEG copies of faint pictures (a fore- and
background colour of nearly equal brightness) lie beyond it: standardising the thumbnail
amplifies the noise, and JPEG damages the chroma the picture lives in. Their source is
still their nearest row by far, and not only against the second nearest (the test of
:mod:`neardup._lone`, which two look-alike natural neighbours defeat) but against the whole
neighbourhood.

Under the local power law ``Auto`` uses (a natural row's neighbours spread like a Poisson
process in ``m`` dimensions, ``m`` the intrinsic dimension), the nearest of a natural row's
``k`` neighbours lies below ``r`` times the k-th with probability about
``(k - 1) * r ** m`` (``Auto`` sets rows below :data:`neardup.COPY_LEVEL` aside as likely
copies). Over ``Q`` query rows, ``Q * (k - 1) * r ** m`` natural rows are expected that
lopsided; a row is *lopsided* when that is at most :data:`LOPSIDED_FALSE_ALARMS` and its
nearest row lies within :data:`LOPSIDED_REACH` times the view's cut (a pair much farther
than the cut is not near anything, lopsided or not).

Measured on colourised Fashion-MNIST 20,000 + 5,000 (``benchmarks/bench_quality.py --only
colour``, seeds 0 / 1, exact 10 nearest train rows of each test row in the colour and YCbCr
views): the most lopsided unplanted test rows within 2 cuts have chances of 10**-4.7 /
10**-4.5 (natural rows are more often lopsided than the power law says: its tail is
heavier), while the noisy and JPEG copies the cut misses reach 10**-5 to 10**-7.3. At
``Q * chance <= 0.05`` (10**-5 per row for 5,000 queries) the route adds 6 / 4 noisy and
6 / 2 JPEG copies and no unplanted row; at 0.15 (10**-4.5) it adds 2 unplanted rows on
seed 0; a fixed 10**-6.5 per row adds 2 / 1 copies only.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "LOPSIDED_FALSE_ALARMS",
    "LOPSIDED_LEAST_ROWS",
    "LOPSIDED_REACH",
    "lopsided_chance",
    "lopsided_level",
    "lopsided_rows",
    "lopsided_scores",
]

#: natural rows expected as lopsided as a lopsided row, over all query rows
LOPSIDED_FALSE_ALARMS = 0.05
#: ... and its nearest row lies within this many cuts
LOPSIDED_REACH = 2.0
#: the level is never looser than for this many query rows, the size it was measured at
LOPSIDED_LEAST_ROWS = 5000


def lopsided_level(
    rows: int, false_alarms: float = LOPSIDED_FALSE_ALARMS, *, least_rows: int = 0
) -> float:
    """The largest chance :func:`lopsided_chance` of a lopsided row among ``rows`` query rows:
    ``false_alarms / max(rows, least_rows)`` (``0`` for no rows).

    ``least_rows`` (:data:`LOPSIDED_LEAST_ROWS` in ``find_duplicates``) keeps the level from
    loosening on few query rows: natural rows are more often lopsided than the power law says
    (at 5,000 rows the most lopsided reach 10**-4.5 where the law expects 10**-5.7), so at
    ``0.05 / rows`` a few hundred rows would take natural look-alikes (two different faint
    blue "5"s of colourised digits, 597 test rows, at 9.8e-5 against a level of 8.4e-5).
    """
    return float(false_alarms) / max(rows, least_rows) if rows > 0 else 0.0


def lopsided_chance(distances: np.ndarray, dimension: float) -> np.ndarray:
    """``(Q,)`` each row's ``(k - 1) * (d1 / dk) ** m``: how likely a natural row is that
    lopsided (``m = dimension``, at least 1).

    ``distances`` is ``(Q, k)``, each row sorted ascending, ``k >= 2``. Rows with a missing
    neighbour, a zero k-th distance or an unmeasured ``dimension`` score ``inf``.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2 or not math.isfinite(dimension):
        return np.full(len(d), np.inf)
    first, kth = d[:, 0], d[:, -1]
    ok = np.isfinite(first) & np.isfinite(kth) & (kth > 0)
    out = np.full(len(d), np.inf)
    out[ok] = (d.shape[1] - 1) * (first[ok] / kth[ok]) ** max(dimension, 1.0)
    return out


def lopsided_rows(
    distances: np.ndarray,
    dimension: float,
    cut: float,
    level: float,
    *,
    reach: float = LOPSIDED_REACH,
) -> np.ndarray:
    """``(Q,)`` bool: rows of ``distances`` ``(Q, k)`` (sorted) that are lopsided, i.e.
    :func:`lopsided_chance` at most ``level`` (:func:`lopsided_level`) and the nearest
    distance within ``reach * cut`` (none for a cut of 0 or less: only exact copies are
    reported there)."""
    d = np.asarray(distances, dtype=np.float64)
    if not (cut > 0) or not len(d):
        return np.zeros(len(d), dtype=bool)
    return (lopsided_chance(d, dimension) <= level) & (d[:, 0] <= reach * cut)


def lopsided_scores(distances: np.ndarray, dimension: float, level: float) -> np.ndarray:
    """``(Q,)`` each row's ``d1 / dk`` in units of the largest lopsided ratio
    ``(level / (k - 1)) ** (1 / m)``: at most 1 for a lopsided row (the scale of threshold
    units, where the combined verdict reads 1 as "close"); ``inf`` for a ``level`` of 0."""
    chance = lopsided_chance(distances, dimension)
    if not (level > 0):
        return np.full(len(chance), np.inf)
    return (chance / level) ** (1.0 / max(dimension, 1.0))
