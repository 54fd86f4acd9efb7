"""``ActivationCollector``: batches of activations in, one float32 matrix per (split, layer) out.

Integrations feed it batch by batch. Each batch is copied once into float32 storage (the
caller may reuse its buffer); no per-sample Python objects are kept. When a matrix is needed,
the chunks are moved into one array chunk by chunk, each chunk freed as soon as it is copied,
so the collector never holds two copies of the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._errors import NeardupInputError, closest_names
from ._validate import as_feature_matrix, check_finite

__all__ = ["ActivationCollector"]


class _Buffer:
    """Growing storage of one (split, layer): float32 rows plus ids and labels."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.chunks: list[np.ndarray] = []
        self.id_chunks: list[np.ndarray] = []
        self.label_chunks: list[np.ndarray] = []
        self.rows = 0
        self.explicit_ids: bool | None = None
        self.has_labels: bool | None = None

    def append(self, values: np.ndarray, ids: Any, labels: Any, where: str) -> None:
        n = len(values)
        given_ids = ids is not None
        if self.explicit_ids is not None and given_ids != self.explicit_ids:
            raise NeardupInputError(
                f"{where}: some batches came with ids and others without; pass ids= with "
                "every batch or with none (then ids are positions)."
            )
        if self.has_labels is not None and (labels is not None) != self.has_labels:
            raise NeardupInputError(
                f"{where}: some batches came with labels and others without; pass labels= "
                "with every batch or with none."
            )
        self.explicit_ids, self.has_labels = given_ids, labels is not None
        id_array = (
            _column(ids, n, "ids", where)
            if given_ids
            else np.arange(self.rows, self.rows + n, dtype=np.int64)
        )
        if labels is not None:
            self.label_chunks.append(_column(labels, n, "labels", where))
        self.id_chunks.append(id_array)
        self.chunks.append(np.array(values, dtype=np.float32, copy=True))
        self.rows += n

    def consolidate(self) -> None:
        """Merge the chunks into one array, freeing each chunk once it is copied."""
        if len(self.chunks) > 1:
            out = np.empty((self.rows, self.dim), dtype=np.float32)
            start = 0
            chunks, self.chunks = self.chunks, []
            while chunks:
                chunk = chunks.pop(0)
                out[start : start + len(chunk)] = chunk
                start += len(chunk)
                del chunk
            self.chunks = [out]
        for name in ("id_chunks", "label_chunks"):
            parts = getattr(self, name)
            if len(parts) > 1:
                setattr(self, name, [np.concatenate(parts)])

    @property
    def values(self) -> np.ndarray:
        self.consolidate()
        return self.chunks[0]

    @property
    def ids(self) -> np.ndarray:
        self.consolidate()
        return self.id_chunks[0]

    @property
    def labels(self) -> np.ndarray | None:
        self.consolidate()
        return self.label_chunks[0] if self.label_chunks else None


def _column(values: Any, n: int, name: str, where: str) -> np.ndarray:
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor, without torch
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or len(array) != n:
        raise NeardupInputError(
            f"{where}: {name} has shape {array.shape} for a batch of {n} samples; "
            f"give one {name[:-1]} per sample."
        )
    return array.copy()


class ActivationCollector:
    """Accumulates activations per ``(split, layer)`` for :meth:`analyze`.

    Examples
    --------
    >>> collector = ActivationCollector()
    >>> collector.add("train", "embedding", np.random.rand(32, 64), labels=np.zeros(32))
    >>> results = collector.analyze()  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, str], _Buffer] = {}

    def add(
        self,
        split: str,
        layer: str,
        values: Any,
        ids: Any = None,
        labels: Any = None,
    ) -> None:
        """Append one batch of ``(B, ...)`` activations of ``layer`` for samples of ``split``.

        ``ids`` (one per sample, e.g. dataset indices) default to running positions;
        ``labels`` (ints or strings) are optional. Values are copied as float32 rows.
        """
        where = f"split {split!r}, layer {layer!r}"
        matrix = as_feature_matrix(values, f"batch for {where}")
        check_finite(matrix, f"batch for {where}")
        buffer = self._buffers.get((split, layer))
        if buffer is None:
            buffer = self._buffers[(split, layer)] = _Buffer(matrix.shape[1])
        elif matrix.shape[1] != buffer.dim:
            raise NeardupInputError(
                f"{where}: batch has {matrix.shape[1]} features per sample, earlier batches "
                f"had {buffer.dim}. Pool or flatten every batch the same way."
            )
        buffer.append(matrix, ids, labels, where)

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self._buffers))

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(layer for _, layer in self._buffers))

    def __len__(self) -> int:
        return len(self._buffers)

    @property
    def nbytes(self) -> int:
        """Bytes of activation storage held."""
        return sum(c.nbytes for b in self._buffers.values() for c in b.chunks)

    def num_samples(self, split: str, layer: str) -> int:
        return self._buffer(split, layer).rows

    def _buffer(self, split: str, layer: str) -> _Buffer:
        if layer not in self.layers:
            raise NeardupInputError(
                f"unknown layer {layer!r} ({closest_names(layer, self.layers)})."
            )
        if (split, layer) not in self._buffers:
            raise NeardupInputError(
                f"no activations of layer {layer!r} for split {split!r} "
                f"({closest_names(split, self.splits)})."
            )
        return self._buffers[(split, layer)]

    def get(self, split: str, layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(values (n, d) float32, ids (n,), labels (n,) or None)`` of one split and layer."""
        buffer = self._buffer(split, layer)
        return buffer.values, buffer.ids, buffer.labels

    def arrays(self, layer: str) -> dict[str, np.ndarray]:
        """``split -> values`` for one layer (views of the stored data, not copies)."""
        return {s: self.get(s, layer)[0] for s in self.splits if (s, layer) in self._buffers}

    def clear(self) -> None:
        """Drop every stored activation."""
        self._buffers.clear()

    def analyze(self, layers: list[str] | None = None, **options: Any) -> dict:
        """Run :func:`neardup.find_duplicates` on every layer (or ``layers``).

        Options are those of ``find_duplicates`` (threshold, normalize, reduce, k, backend,
        reference, seed, ...). Returns ``layer -> DuplicatesResult``.
        """
        from ._pipeline import find_duplicates

        if not self._buffers:
            raise NeardupInputError(
                "the collector is empty: no activations were added (did the evaluation run, "
                "and do the layer names match?)."
            )
        for bad in ("labels", "ids"):
            if bad in options:
                raise NeardupInputError(
                    f"analyze() takes {bad} from the collected batches; pass {bad}= to add()."
                )
        results = {}
        for layer in layers if layers is not None else self.layers:
            if layer not in self.layers:
                raise NeardupInputError(
                    f"unknown layer {layer!r} ({closest_names(layer, self.layers)})."
                )
            splits = [s for s in self.splits if (s, layer) in self._buffers]
            missing = [s for s in self.splits if s not in splits]
            if missing:
                raise NeardupInputError(
                    f"layer {layer!r} has no activations for split(s) {missing}; every split "
                    "must be collected for every layer."
                )
            parts = {s: self.get(s, layer) for s in splits}
            labels = {s: p[2] for s, p in parts.items() if p[2] is not None}
            results[layer] = find_duplicates(
                {s: p[0] for s, p in parts.items()},
                ids={s: p[1] for s, p in parts.items()},
                labels=labels or None,
                layer=layer,
                **options,
            )
        return results
