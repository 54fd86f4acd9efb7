"""The callback's data: one split source per ``data`` value, read batch by batch.

Accepted values (as Keras's ``fit`` accepts them): numpy arrays (or lists/dicts of arrays for
multi-input models), ``(x, y)`` / ``(x, y, sample_weight)`` tuples, finite ``tf.data.Dataset``
(batched, or unbatched and then batched here) and ``keras.utils.PyDataset``. ``y`` becomes
per-sample labels (one-hot -> argmax); labels are optional.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from neardup import NeardupInputError

__all__ = ["SplitSource", "as_source", "labels_of"]

_TYPES_HELP = (
    "use a numpy array, an (x, y) tuple of arrays, a finite tf.data.Dataset or a "
    "keras.utils.PyDataset"
)


def _tf_dataset_type() -> type | None:
    """``tf.data.Dataset`` if TensorFlow is already imported (never import it here)."""
    tf = sys.modules.get("tensorflow")
    return getattr(getattr(tf, "data", None), "Dataset", None)


def _is_arrayish(x: Any) -> bool:
    if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        return True
    if isinstance(x, Mapping):
        return bool(x) and all(_is_arrayish(v) for v in x.values())
    if isinstance(x, list):
        return bool(x) and all(_is_arrayish(v) for v in x)
    return False


def _length(x: Any) -> int:
    return len(keras.tree.flatten(x)[0])


def _take(x: Any, start: int, stop: int) -> Any:
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def _unpack(batch: Any) -> tuple[Any, Any]:
    """``x`` and ``y`` (or None) of one batch, Keras-style: tuples are (x, y[, weights])."""
    if isinstance(batch, tuple):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) in (2, 3):
            return batch[0], batch[1]
        raise NeardupInputError(
            f"a batch is a tuple of {len(batch)} elements; Keras expects x, (x,), (x, y) or "
            "(x, y, sample_weight)."
        )
    return batch, None


def labels_of(y: Any) -> np.ndarray | None:
    """Per-sample labels from ``y``: ints/strings as they are, one-hot rows -> argmax.

    Returns None for targets that are not one label per sample (multi-output dicts,
    segmentation maps, regression vectors of another shape).
    """
    if y is None or isinstance(y, (Mapping, list)):
        return None
    y = np.asarray(keras.ops.convert_to_numpy(y))
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "fiub":
        return y.argmax(axis=1)
    return y if y.ndim == 1 else None


class SplitSource:
    """One split's data, read as ``(x, y)`` batches; ``samples`` are its arrays when known."""

    def __init__(self, name: str, value: Any, steps: int | None) -> None:
        self.name = name
        self.steps = steps
        self.arrays: tuple[Any, Any] | None = None
        self.dataset: Any = None
        self.pydataset: Any = None
        ds_type = _tf_dataset_type()
        if ds_type is not None and isinstance(value, ds_type):
            self.dataset = value
            self._check_cardinality()
        elif isinstance(value, keras.utils.PyDataset):
            self.pydataset = value
            self._py_batches = _py_num_batches(name, value)
            if self._py_batches is None and steps is None:
                raise NeardupInputError(
                    f"data[{name!r}] is an infinite PyDataset (num_batches is None); pass "
                    f"steps={{{name!r}: n}} to read n batches of it."
                )
        elif isinstance(value, tuple):
            if len(value) not in (2, 3) or not all(_is_arrayish(v) for v in value[:2]):
                raise NeardupInputError(
                    f"data[{name!r}] is a tuple of {len(value)} items; give (x, y) or "
                    f"(x, y, sample_weight) with arrays ({_TYPES_HELP})."
                )
            self.arrays = (value[0], value[1])
        elif _is_arrayish(value):
            self.arrays = (value, None)
        else:
            raise NeardupInputError(
                f"data[{name!r}] is a {type(value).__name__}, which is not supported; "
                f"{_TYPES_HELP}."
            )
        if self.arrays is not None:
            self._check_arrays()

    def _check_arrays(self) -> None:
        x, y = self.arrays
        self.arrays = (keras.tree.map_structure(np.asarray, x), y)
        n = _length(self.arrays[0])
        if n == 0:
            raise NeardupInputError(f"data[{self.name!r}] has no samples.")
        if y is not None and not isinstance(y, (Mapping, list)) and len(y) != n:
            raise NeardupInputError(
                f"data[{self.name!r}]: x has {n} samples but y has {len(y)}; give one target "
                "per sample."
            )

    def _check_cardinality(self) -> None:
        import tensorflow as tf

        card = int(self.dataset.cardinality())
        if card == tf.data.INFINITE_CARDINALITY and self.steps is None:
            raise NeardupInputError(
                f"data[{self.name!r}] is an infinite tf.data.Dataset (e.g. after .repeat()); "
                f"drop the repeat or pass steps={{{self.name!r}: n}} to read n batches of it."
            )
        if card == 0:
            raise NeardupInputError(f"data[{self.name!r}] is an empty tf.data.Dataset.")

    @property
    def samples(self) -> Any:
        """The split's input array (single-input arrays only), for report thumbnails."""
        if self.arrays is None or not isinstance(self.arrays[0], np.ndarray):
            return None
        return self.arrays[0]

    def x_shapes(self) -> list[tuple[int, ...]] | None:
        """Input shapes, flattened like ``model.inputs`` (None: known at the first batch).

        Arrays: ``(n, ...)``; datasets: the element spec, without a batch axis if unbatched.
        """
        if self.arrays is not None:
            return [tuple(a.shape) for a in keras.tree.flatten(self.arrays[0])]
        if self.dataset is not None:
            spec = _unpack(self.dataset.element_spec)[0]
            return [tuple(s.shape) for s in keras.tree.flatten(spec)]
        return None

    def num_batches(self, batch_size: int) -> int | None:
        if self.arrays is not None:
            return -(-_length(self.arrays[0]) // batch_size)
        if self.pydataset is not None:
            n = self._py_batches
        else:
            n = int(self.dataset.cardinality())
            n = n if n >= 0 else None
        if self.steps is not None:
            return self.steps if n is None else min(n, self.steps)
        return n

    def batches(self, batch_size: int, input_ranks: list[int]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(x, y)`` batches (``y`` may be None); an unbatched dataset is batched."""
        if self.arrays is not None:
            x, y = self.arrays
            n = _length(x)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                yield _take(x, start, stop), None if y is None else _take(y, start, stop)
            return
        if self.pydataset is not None:
            limit = self.num_batches(batch_size)
            for i in range(limit):
                yield _unpack(self.pydataset[i])
            return
        dataset = self.dataset
        spec = keras.tree.flatten(_unpack(dataset.element_spec)[0])
        if [len(s.shape) for s in spec] == [r - 1 for r in input_ranks]:
            dataset = dataset.batch(batch_size)  # unbatched: one sample per element
        if self.steps is not None:
            dataset = dataset.take(self.steps)
        for batch in dataset:
            yield _unpack(batch)


def _py_num_batches(name: str, dataset: Any) -> int | None:
    try:
        return dataset.num_batches
    except NotImplementedError as err:
        raise NeardupInputError(
            f"data[{name!r}] is a PyDataset without __len__ or num_batches; implement one "
            "(num_batches returning None marks an infinite dataset, then pass steps=)."
        ) from err


def as_source(name: Any, value: Any, steps: int | None) -> SplitSource:
    """Validate one ``data`` entry (``name -> value``)."""
    if not isinstance(name, str) or not name:
        raise NeardupInputError(f"data keys are split names (non-empty str), got {name!r}.")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1
    ):
        raise NeardupInputError(f"steps for split {name!r} must be an int >= 1, got {steps!r}.")
    return SplitSource(name, value, None if steps is None else int(steps))


def warn_no_labels(name: str) -> None:
    warnings.warn(
        f"neardup: the targets of split {name!r} are not one label per sample; the report "
        "has no per-class statistics for it.",
        stacklevel=3,
    )
