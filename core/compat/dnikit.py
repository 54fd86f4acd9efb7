"""DNIKit-compatible facade: ``Duplicates.introspect`` with the seed's defaults.

Code written for ``dnikit.introspectors.Duplicates`` runs with the import line changed:
column normalisation, annoy with 30 trees (seed 0, built on all cores), 10 neighbours per
query (the item itself included), the ``Slope`` threshold, and ``results[response_name]``
as a list of candidates with ``std``, ``mean``, ``projection``, ``indices`` and ``size``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import NeardupInputError
from .._threshold import Percentile, Slope

__all__ = ["Duplicates"]


def _fields(batch: Any) -> Mapping[str, Any]:
    if isinstance(batch, Mapping):
        return batch
    fields = getattr(batch, "fields", None)  # a dnikit Batch
    if isinstance(fields, Mapping):
        return fields
    raise NeardupInputError(
        f"a batch must be a mapping response name -> array (or have .fields); got "
        f"{type(batch).__name__}."
    )


def _accumulate(source: Any, batch_size: int) -> dict[str, np.ndarray]:
    """Collect a producer / iterable of batches / mapping of arrays into name -> (N, d)."""
    if isinstance(source, Mapping) and all(
        hasattr(v, "shape") or isinstance(v, (list, tuple)) for v in source.values()
    ):
        return {str(k): np.asarray(v) for k, v in source.items()}
    batches: Iterable[Any]
    if callable(source):  # a DNIKit-style producer: producer(batch_size) -> iterable of batches
        batches = source(batch_size)
    elif isinstance(source, Iterable):
        batches = source
    else:
        raise NeardupInputError(
            f"source must be a producer, an iterable of batches or a mapping of arrays; got "
            f"{type(source).__name__}."
        )
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, values in _fields(batch).items():
            parts.setdefault(str(name), []).append(np.asarray(values))
    if not parts:
        raise NeardupInputError("the source produced no batches.")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


class Duplicates:
    """Seed-compatible introspector. Use :meth:`introspect`; see ``neardup.find_duplicates``
    for the split-aware API with leakage reports."""

    class ThresholdStrategy:
        Percentile = Percentile
        Slope = Slope

    @dataclass
    class DuplicateSetCandidate:
        std: float
        mean: float
        projection: np.ndarray | None
        indices: list[int]

        @property
        def size(self) -> int:
            return len(self.indices)

    def __init__(self, results: dict[str, list[DuplicateSetCandidate]], count: int) -> None:
        self.results = results
        self.count = count

    @staticmethod
    def introspect(
        source: Any,
        *,
        batch_size: int = 128,
        threshold: Callable[[np.ndarray], float] | None = None,
    ) -> Duplicates:
        """Find duplicate candidates in every response of ``source`` (seed semantics)."""
        from .._pipeline import find_duplicates

        responses = _accumulate(source, batch_size)
        results: dict[str, list[Duplicates.DuplicateSetCandidate]] = {}
        count = 0
        for name, values in responses.items():
            result = find_duplicates(
                values,
                threshold=threshold if threshold is not None else Slope(),
                normalize="column",
                backend="annoy",
                n_trees=30,
                k=9,  # DNIKit asks annoy for 10 including the item itself
                seed=0,
                n_jobs=-1,  # as DNIKit builds its index (same trees on the same machine)
                dedupe=False,  # DNIKit indexes every row, copies included
                layer=name,
            )
            count = len(values)
            results[name] = [
                Duplicates.DuplicateSetCandidate(
                    std=c.std, mean=c.mean, projection=c.projection, indices=list(c.positions)
                )
                for c in result.clusters
            ]
        return Duplicates(results, count)
