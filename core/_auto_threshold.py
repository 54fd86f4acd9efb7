"""``Auto``: the default threshold, chosen per view from its own nearest-neighbour distances.

Natural nearest neighbours follow a power law at small distances: the share of samples whose
nearest neighbour lies within ``t`` grows like ``t ** m``, with ``m`` the intrinsic dimension
of the data. ``Auto`` measures ``m`` (Levina-Bickel maximum likelihood, from each row's k
neighbour distances), anchors the law at a low quantile of the nearest-neighbour distances,
and cuts where fewer than ``false_alarms`` natural samples are expected below the cut among
all rows. Near-duplicates lie far below that; data without duplicates (i.i.d. noise, distinct
real samples) has, by construction, almost nothing there, whatever its dimension or size.

Many near-copies (scraped data: a quarter of the rows or more) would pull the low quantile
into the copies' own cluster of tiny distances and hide them all. So the law is anchored on
the *natural* rows only: a row whose nearest neighbour is far closer than its k-th one
(``(k - 1) * (d_1 / d_k) ** m`` below :data:`COPY_LEVEL`, the chance of a natural row being
that lopsided when its neighbours follow the power law) is set aside as a likely copy, in two
passes (``m`` first from each row's 2nd to k-th neighbours, then re-estimated on the natural
rows: copies would drag it down).

The law is checked against the data below the cut. Where the density of the rows varies
widely (a layer whose activations a colour dominates), the natural low tail falls far more
slowly than ``t ** m`` and the cut lies among natural rows that are not copy-like: measured on
a Keras CNN's max-pooled layer over colourised Fashion-MNIST, 33 of 2,050 natural rows (1.6 %)
lay below a cut that expected 0.1 there, and their share fell with slope 2.7 where ``m`` was
10.2. When at least :data:`CROWDED_SHARE` of the natural rows lie below the cut and their
tail's slope is under :data:`MAX_TAIL_SLOPE`, the cut is placed again with that slope: a lower
cut. Groups of natural near-duplicates (templated mails, templated sentences) also crowd the
cut, but with a steeper tail (5.7-7.4 measured); they keep it.

It reads only per-row statistics of the neighbour graph (each row's own neighbour distances)
and the number of rows, so it also works when the graph holds the neighbour lists of a random
sample of the rows (their k nearest among all rows): set the graph's ``total_rows`` attribute
to the number of rows of the whole data (without it, a sampled graph's size is estimated, see
:func:`total_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._errors import NeardupInputError
from ._stats import median, quantile
from ._threshold import Relative, ThresholdStrategy
from .search import NeighborGraph

__all__ = [
    "COPY_LEVEL",
    "CROWDED_SHARE",
    "MAX_TAIL_SLOPE",
    "Auto",
    "copy_like_rows",
    "intrinsic_dimension",
    "natural_dimension",
    "total_rows",
]

#: a row is set aside as a likely copy when its nearest neighbour is this unlikely for a
#: natural row, given its k-th neighbour distance and the intrinsic dimension.
COPY_LEVEL = 0.001

#: natural (not copy-like) rows below the power law's cut from which the law may be failing
#: there, as a share of the natural rows (under the law ``false_alarms``, 0.1, are expected).
CROWDED_SHARE = 0.005

#: the steepest low tail that counts as failing: the slope of the natural rows' share below
#: ``t`` against ``t`` (log-log), between the anchor and the cut. Real data hold natural
#: near-duplicates that are not lopsided (groups of more than k), which crowd the cut too, but
#: their tails stay steep: 5.7 in Fashion-MNIST's aligned view (re-cut, it found 46 instead of
#: 48 of 50 planted crops), 6.3 in the SpamAssassin corpus' templated mails (re-cut, half of
#: the 654 near-duplicate mails difflib confirms were lost), 7.1-7.4 for MiniLM on pydoc
#: sentences (re-cut, one planted one-word drop lost); a Keras layer dominated by colour had
#: 2.7, clusters of varied density 2.3-3.5.
MAX_TAIL_SLOPE = 4.0


def intrinsic_dimension(distances: np.ndarray) -> float:
    """Median over rows of the Levina-Bickel estimate from ``(N, k)`` sorted neighbour distances.

    Rows with a zero, missing or tied neighbour list are skipped; ``nan`` when none is left
    (needs ``k >= 3``).
    """
    if distances.ndim != 2 or distances.shape[1] < 3:
        return math.nan
    d = distances.astype(np.float64)
    ok = np.all(np.isfinite(d), axis=1) & (d[:, 0] > 0)
    d = d[ok]
    if not len(d):
        return math.nan
    logs = np.log(d[:, -1:] / d[:, :-1]).sum(axis=1)
    good = logs > 0
    if not good.any():
        return math.nan
    return median((d.shape[1] - 1) / logs[good])


def copy_like_rows(distances: np.ndarray, dimension: float) -> np.ndarray:
    """``(N,)`` bool: rows whose nearest neighbour is a likely copy, not a natural neighbour.

    Under the local power law (``m = dimension``), the nearest of a row's ``k`` neighbours
    lies below ``r`` times the k-th one with probability about ``(k - 1) * r ** m``; rows
    where that is below :data:`COPY_LEVEL` are copy-like, and so are rows whose neighbours are
    all exact copies (k-th distance 0). ``distances`` is ``(N, k)``, sorted, ``k >= 2``.
    """
    d = distances.astype(np.float64)
    nearest, kth = d[:, 0], d[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        chance = (d.shape[1] - 1) * (nearest / kth) ** max(dimension, 1.0)
    return ~(np.isfinite(chance) & (chance >= COPY_LEVEL))


def natural_dimension(distances: np.ndarray) -> tuple[float, np.ndarray]:
    """The intrinsic dimension of the natural rows and which rows are natural.

    ``distances`` is ``(N, k)``, sorted, finite. A first ``m`` without each row's nearest
    neighbour (a copy's is tiny and drags ``m`` down when most rows have one), then, twice:
    set the likely copies aside (:func:`copy_like_rows`) and re-measure ``m`` on the rest.
    Returns ``m`` (``nan`` when it cannot be measured) and the ``(N,)`` bool natural rows.
    """
    dimension = intrinsic_dimension(distances[:, 1:] if distances.shape[1] > 3 else distances)
    natural = np.ones(len(distances), dtype=bool)
    for _ in range(2):
        if not math.isfinite(dimension) or distances.shape[1] < 2:
            break
        natural = ~copy_like_rows(distances, dimension)
        dimension = intrinsic_dimension(distances[natural])
    return dimension, natural


def total_rows(graph: NeighborGraph) -> int:
    """Rows of the whole data: ``graph.total_rows`` if set, else the graph's own row count.

    A graph of a sample of rows (``graph.rows`` set, as the sampling engine gives) without
    ``total_rows`` is estimated by its largest neighbour index + 1 (close to the total for a
    random sample).
    """
    explicit = getattr(graph, "total_rows", None)
    if explicit is not None:
        return int(explicit)
    if getattr(graph, "rows", None) is not None and graph.indices.size:
        return max(len(graph.indices), int(graph.indices.max()) + 1)
    return len(graph.indices)


@dataclass(frozen=True)
class Auto(ThresholdStrategy):
    """Cut below the natural nearest-neighbour distances, expecting ``false_alarms`` there.

    With ``x_q`` the ``quantile`` of the non-zero nearest-neighbour distances, ``m`` the
    intrinsic dimension (:func:`intrinsic_dimension`) and ``N`` the number of rows, natural
    samples are expected below ``t`` about ``N * quantile * (t / x_q) ** m`` times; the cut is
    the ``t`` where that is ``false_alarms``, capped at ``max_ratio`` times the median distance
    to the k-th neighbour (the scale :class:`Relative` uses). Exact copies are always found.

    Parameters
    ----------
    false_alarms:
        Natural (non-duplicate) samples expected below the cut, over the whole data; smaller
        is stricter.
    quantile:
        Where the power law is anchored: the natural bulk must hold at least this share of
        the samples (near-duplicates below it are fine; they are what is looked for).
    max_ratio:
        Never cut above this multiple of the median k-th neighbour distance.

    The resolved threshold's ``reason`` gives ``m``, ``x_q``, the cut and how many nearest
    distances fall below it.
    """

    false_alarms: float = 0.1
    quantile: float = 0.25
    max_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.false_alarms)) and float(self.false_alarms) > 0):
            raise NeardupInputError(
                f"Auto false_alarms must be a finite number > 0, got {self.false_alarms!r}."
            )
        if not (0 < float(self.quantile) < 1):
            raise NeardupInputError(f"Auto quantile must be in (0, 1), got {self.quantile!r}.")
        if not (0 < float(self.max_ratio) <= 1):
            raise NeardupInputError(f"Auto max_ratio must be in (0, 1], got {self.max_ratio!r}.")

    def explain(self, graph: NeighborGraph, normalize: str | None) -> tuple[float, str]:
        """The threshold and a one-line reason for it."""
        distances = graph.distances[np.all(np.isfinite(graph.distances), axis=1)]
        nearest = distances[:, 0].astype(np.float64)
        # median k-th distance over samples whose k-th neighbour is no exact copy (as
        # Relative: with most samples in groups of k+ copies it would be 0 and hide every leak)
        kth_scale = Relative().reference_distance(graph)
        positive = nearest[nearest > 0]
        dimension, natural = natural_dimension(distances)
        anchored = nearest[natural & (nearest > 0)]
        if anchored.size < 8 or kth_scale <= 0 or not math.isfinite(dimension):
            return 0.0, (
                f"too few distinct natural neighbour distances ({anchored.size} non-zero, "
                f"{positive.size} in all) to model the natural ones: only exact copies are "
                "reported"
            )
        rows = total_rows(graph)
        anchor = quantile(anchored, self.quantile)
        expected_ratio = float(self.false_alarms) / (float(self.quantile) * rows)
        fence = anchor * min(1.0, expected_ratio) ** (1.0 / max(dimension, 1.0))
        cap = float(self.max_ratio) * kth_scale
        value = min(fence, cap)
        bound = (
            f"where {self.false_alarms:g} natural samples are expected below"
            if fence <= cap
            else f"capped at {self.max_ratio:g} x the median k-th neighbour distance"
        )
        value, bound = _recut_if_crowded(
            anchored, anchor, value, bound, dimension, self.quantile, expected_ratio
        )
        below = int(np.count_nonzero(positive <= value))
        return value, (
            f"intrinsic dimension {dimension:.1f}, {100 * self.quantile:g} % of the natural "
            f"nearest neighbours within {anchor:.4g} ({len(nearest) - int(natural.sum())} "
            f"copy-like rows set aside); cut at {value:.4g} ({bound}); {below} of "
            f"{positive.size} non-identical nearest distances and "
            f"{nearest.size - positive.size} exact copies fall below it"
        )

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        return self.explain(graph, normalize)[0]


def _recut_if_crowded(
    natural: np.ndarray,
    anchor: float,
    value: float,
    bound: str,
    dimension: float,
    share: float,
    expected_ratio: float,
) -> tuple[float, str]:
    """The cut, placed again where the natural low tail contradicts the power law.

    ``natural`` ``(n,)`` holds the natural rows' non-zero nearest distances and ``anchor``
    their ``share`` quantile. With at least :data:`CROWDED_SHARE` of them (and 3) at or below
    ``value``, the law ``share * (t / anchor) ** dimension`` underestimates them there; where
    the slope the data shows between ``anchor`` and ``value`` is also below ``dimension`` and
    :data:`MAX_TAIL_SLOPE` (real data's own near-duplicate groups keep a steeper tail), it
    places the cut where ``expected_ratio`` of the rows are expected below. Returns
    ``(value, bound)``, both unchanged when the law holds.
    """
    crowded = int(np.count_nonzero(natural <= value))
    if crowded < max(3.0, CROWDED_SHARE * len(natural)) or not 0 < value < anchor:
        return value, bound
    slope = math.log(share * len(natural) / crowded) / math.log(anchor / value)
    if not 0 < slope < min(dimension, MAX_TAIL_SLOPE):
        return value, bound
    recut = anchor * min(1.0, expected_ratio) ** (1.0 / slope)
    return recut, (
        f"{bound}, with the natural low tail's own slope {slope:.1f} instead of the "
        f"dimension: {crowded} natural nearest distances lay below the power law's cut at "
        f"{value:.4g}"
    )
