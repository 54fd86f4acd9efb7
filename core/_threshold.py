"""Threshold strategies: how close two samples must be to count as near-duplicates.

Every strategy resolves to one Euclidean distance in the normalised (and reduced) feature
space; pairs at or below it are close. ``Slope`` and ``Percentile`` follow DNIKit 2.0.0
exactly and always report *something* (they cut a fixed share of neighbour distances).
``Relative`` (the default of :func:`neardup.find_duplicates`) compares each pair to the
typical neighbour distance of the data, so data without duplicates gives none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import NeardupInputError
from ._plain import to_plain
from ._stats import median
from .search import NeighborGraph

__all__ = [
    "Cosine",
    "Distance",
    "Percentile",
    "Relative",
    "ResolvedThreshold",
    "Slope",
    "ThresholdStrategy",
    "as_strategy",
    "resolve_threshold",
    "sorted_neighbor_distances",
]


def _number(value: Any, what: str, rule: str) -> float:
    """``value`` as a float, or a clear error naming ``what`` and its ``rule``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise NeardupInputError(f"{what} must be a number {rule}, got {value!r}.")
    return float(value)


def sorted_neighbor_distances(graph: NeighborGraph) -> np.ndarray:
    """All finite neighbour distances, sorted, zeros trimmed (DNIKit's input to its strategies)."""
    values = graph.distances[np.isfinite(graph.distances)].astype(np.float64)
    values.sort()
    return values[np.searchsorted(values, 0.0, side="right") :]


class ThresholdStrategy:
    """Base class: ``resolve(graph, normalize)`` returns the distance threshold."""

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


@dataclass(frozen=True)
class Percentile(ThresholdStrategy):
    """DNIKit's percentile rule: ``Percentile(98.5)`` keeps the closest 1.5 % of neighbour pairs.

    The threshold is ``d[len - int(p / 100 * len)]`` of the sorted, zero-trimmed neighbour
    distances ``d``. Always reports duplicates, whether the data has any or not.
    """

    percentile: float

    def __post_init__(self) -> None:
        if not (0 < _number(self.percentile, "Percentile", "in (0, 100]") <= 100):
            raise NeardupInputError(
                f"Percentile must be in (0, 100], got {self.percentile!r} "
                "(98.5 keeps the closest 1.5 % of neighbour pairs)."
            )

    def __call__(self, distances: np.ndarray) -> float:
        if len(distances) == 0:
            return 0.0
        index = len(distances) - int(self.percentile * 0.01 * len(distances))
        return float(distances[min(index, len(distances) - 1)])

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        return self(sorted_neighbor_distances(graph))


@dataclass(frozen=True)
class Slope(ThresholdStrategy):
    """DNIKit's default: the elbow of the sorted neighbour distances.

    A window of ``len // sensitivity`` distances slides down from the median in steps of
    ``len // 1000 + 1``; the threshold is the first probe where the rise across the window
    exceeds the interquartile rise. Sensitivity must be > 2; higher finds fewer duplicates.
    Like ``Percentile``, it reports duplicates even in data that has none.
    """

    sensitivity: int = 5

    def __post_init__(self) -> None:
        sensitivity = self.sensitivity
        if isinstance(sensitivity, (bool, np.bool_)) or not isinstance(
            sensitivity, (int, np.integer)
        ):
            raise NeardupInputError(
                f"Slope sensitivity must be an int > 2 (it divides the number of distances "
                f"into windows), got {sensitivity!r}; e.g. Slope(5)."
            )
        if not sensitivity > 2:
            raise NeardupInputError(f"Slope sensitivity must be > 2, got {sensitivity!r}.")

    def __call__(self, distances: np.ndarray) -> float:
        n = len(distances)
        if n == 0:
            return 0.0
        last = n - 1
        stride = n // 1000 + 1
        probe = n // 2
        target = distances[min(probe + probe // 2, last)] - distances[probe - probe // 2]
        window = n // self.sensitivity
        while probe > stride:
            if distances[min(probe + window, last)] - distances[probe] > target:
                break
            probe -= stride
        return float(distances[probe])

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        return self(sorted_neighbor_distances(graph))


@dataclass(frozen=True)
class Distance(ThresholdStrategy):
    """An absolute Euclidean distance in the normalised (and reduced) feature space."""

    distance: float

    def __post_init__(self) -> None:
        value = _number(self.distance, "Distance", ">= 0")
        if not (value >= 0 and math.isfinite(value)):
            raise NeardupInputError(
                f"Distance must be a finite number >= 0, got {self.distance!r}."
            )

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        return float(self.distance)


@dataclass(frozen=True)
class Cosine(ThresholdStrategy):
    """Pairs with cosine similarity >= ``similarity`` (needs ``normalize="row"``).

    On unit vectors ``distance = sqrt(2 - 2 * similarity)``, so ``Cosine(0.98)`` is the
    distance 0.2. With ``reduce=``, the similarity is measured in the reduced space.
    """

    similarity: float

    def __post_init__(self) -> None:
        if not (-1.0 <= _number(self.similarity, "Cosine similarity", "in [-1, 1]") <= 1.0):
            raise NeardupInputError(
                f"Cosine similarity must be in [-1, 1], got {self.similarity!r}."
            )

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        if normalize != "row":
            raise NeardupInputError(
                f"threshold=Cosine(...) needs normalize='row' (got normalize={normalize!r}): "
                "cosine similarity is only a distance on unit-length rows. Use normalize='row' "
                "or an absolute Distance(...)."
            )
        return math.sqrt(max(0.0, 2.0 - 2.0 * float(self.similarity)))


@dataclass(frozen=True)
class Relative(ThresholdStrategy):
    """Close means ``ratio`` times closer than the data's typical neighbour distance.

    The reference is the median, over samples, of the distance to their k-th nearest
    neighbour (robust: a sample needs k near copies before its own reference moves). The
    default ``ratio=0.2`` was chosen by measurement (README, "Choosing the threshold"):
    i.i.d. Gaussian data, whose closest pairs sit at about 0.7x the reference, gives no
    duplicates, while exact, noisy and rescaled copies in real activations fall far below.
    """

    ratio: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < _number(self.ratio, "Relative ratio", "in (0, 1)") < 1):
            raise NeardupInputError(f"Relative ratio must be in (0, 1), got {self.ratio!r}.")

    def reference_distance(self, graph: NeighborGraph) -> float:
        """Median k-th neighbour distance over the samples whose k-th neighbour is not an
        exact copy.

        A sample with k or more exact copies has a k-th distance of 0 that says nothing
        about the data's spacing; when most samples are such copies, counting them would
        pull the median, and with it the threshold, to 0 and hide every near-duplicate. If
        every k-th distance is 0, the median of the positive neighbour distances is used.
        """
        kth = graph.distances[:, -1]
        kth = kth[np.isfinite(kth) & (kth > 0)]
        if kth.size:
            return median(kth)
        positive = graph.distances[np.isfinite(graph.distances) & (graph.distances > 0)]
        return median(positive) if positive.size else 0.0

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        return float(self.ratio) * self.reference_distance(graph)


@dataclass(frozen=True)
class _Custom(ThresholdStrategy):
    """A user callable with DNIKit's protocol: sorted distances -> threshold."""

    function: Callable[[np.ndarray], float] = field(repr=False)

    def resolve(self, graph: NeighborGraph, normalize: str | None) -> float:
        value = float(self.function(sorted_neighbor_distances(graph)))
        if not math.isfinite(value) or value < 0:
            raise NeardupInputError(f"custom threshold returned {value!r}; need a distance >= 0.")
        return value

    def params(self) -> dict[str, Any]:
        return {"function": getattr(self.function, "__name__", repr(self.function))}


@dataclass(frozen=True)
class ResolvedThreshold:
    """The strategy used and the distance it resolved to (``value``)."""

    strategy: str
    params: dict[str, Any]
    value: float
    reason: str = ""  # why the strategy cut there (filled by strategies that choose from data)

    def __str__(self) -> str:
        text = f"{self.strategy} -> distance {self.value:.4g}"
        return f"{text} ({self.reason})" if self.reason else text

    def to_dict(self) -> dict[str, Any]:
        """``{"strategy", "params", "value", "reason"}`` as JSON-ready values (reports, index
        meta)."""
        return {
            "strategy": self.strategy,
            "params": to_plain(self.params),
            "value": self.value,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResolvedThreshold:
        """The threshold :meth:`to_dict` wrote (``KeyError``/``TypeError`` when malformed)."""
        return cls(d["strategy"], dict(d["params"]), float(d["value"]), d.get("reason", ""))


def as_strategy(threshold: Any) -> ThresholdStrategy:
    """Accept a strategy, ``None`` (the default :class:`Relative`) or a DNIKit-style callable."""
    if threshold is None:
        return Relative()
    if isinstance(threshold, ThresholdStrategy):
        return threshold
    if callable(threshold):
        return _Custom(threshold)
    raise NeardupInputError(
        f"threshold={threshold!r} is not supported; use Relative(), Cosine(s), Distance(x), "
        "Percentile(p), Slope(), or a callable(sorted_distances) -> float."
    )


def resolve_threshold(
    strategy: ThresholdStrategy, graph: NeighborGraph, normalize: str | None
) -> ResolvedThreshold:
    """Resolve ``strategy`` on ``graph`` into a :class:`ResolvedThreshold`."""
    explain = getattr(strategy, "explain", None)
    if explain is not None:
        value, reason = explain(graph, normalize)
    else:
        value, reason = strategy.resolve(graph, normalize), ""
    name = type(strategy).__name__.lstrip("_")
    return ResolvedThreshold(
        strategy=name, params=strategy.params(), value=float(value), reason=reason
    )
