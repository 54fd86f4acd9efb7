"""``Auto``: the default threshold, chosen per view from its own nearest-neighbour distances.

Natural nearest neighbours form a broad bulk of distances; near-duplicates sit far below it.
``Auto`` locates the bulk from robust quantiles of the log nearest-neighbour distances and
cuts a fixed number of "bulk widths" below its lower quartile, so it needs no tuning per view
and stays silent on data whose nearest neighbours are all natural (i.i.d. noise, distinct real
samples): nothing lies that far below the bulk.

It reads only per-row statistics of the neighbour graph (each row's nearest and k-th
distances), so it works unchanged when the graph holds the neighbour lists of a random sample
of the rows only (their k nearest among all rows), as a sampling engine provides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._errors import NeardupInputError
from ._neighbors import NeighborGraph
from ._threshold import ThresholdStrategy

__all__ = ["Auto"]


@dataclass(frozen=True)
class Auto(ThresholdStrategy):
    """A threshold cut below the bulk of natural nearest-neighbour distances (the default).

    With ``r`` the nearest-neighbour distances (exact copies, at 0, left out) on a log scale,
    ``q25`` and ``q50`` their quartile and median, the cut is
    ``exp(q25 - width * (q50 - q25))``, capped at ``max_ratio`` times the median distance to
    the k-th neighbour (the scale :class:`Relative` uses). Exact copies are always found.

    Parameters
    ----------
    width:
        How many lower half-bulk widths ``(q50 - q25)`` below the lower quartile to cut.
        Larger is stricter.
    max_ratio:
        Never cut above this multiple of the median k-th neighbour distance.

    The resolved threshold's ``reason`` says where the bulk lies and where the cut fell. It
    uses each row's own neighbour distances only, so a graph of a random sample of rows (their
    neighbours among all rows) gives the same threshold up to sampling noise.
    """

    width: float = 3.0
    max_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.width)) and float(self.width) >= 0):
            raise NeardupInputError(f"Auto width must be a finite number >= 0, got {self.width!r}.")
        if not (0 < float(self.max_ratio) <= 1):
            raise NeardupInputError(f"Auto max_ratio must be in (0, 1], got {self.max_ratio!r}.")

    def explain(self, graph: NeighborGraph, normalize: str | None) -> tuple[float, str]:
        """The threshold and a one-line reason for it."""
        nearest = graph.distances[:, 0]
        nearest = nearest[np.isfinite(nearest)].astype(np.float64)
        kth = graph.distances[:, -1]
        kth = kth[np.isfinite(kth)].astype(np.float64)
        positive = nearest[nearest > 0]
        if positive.size < 4 or kth.size == 0:
            return 0.0, (
                f"too few non-identical neighbour distances ({positive.size}) to locate the "
                "natural ones: only exact copies are reported"
            )
        scale = float(np.median(kth))
        logs = np.log(positive)
        q25, q50 = (float(v) for v in np.quantile(logs, [0.25, 0.5]))
        fence = math.exp(q25 - float(self.width) * (q50 - q25))
        cap = float(self.max_ratio) * scale
        value = min(fence, cap)
        below = int(np.count_nonzero(positive <= value))
        bound = "the bulk fence" if fence <= cap else f"the cap {self.max_ratio:g} x k-th median"
        return value, (
            f"natural nearest-neighbour distances: median {math.exp(q50):.4g}, lower quartile "
            f"{math.exp(q25):.4g}; cut at {value:.4g} ({bound}, {self.width:g} half-widths below "
            f"the quartile); {below} of {positive.size} non-identical nearest distances and "
            f"{nearest.size - positive.size} exact copies fall below it"
        )

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        return self.explain(graph, normalize)[0]
