"""Hugging Face ``datasets`` integration: activations as a column, leakage across a DatasetDict.

>>> from neardup.integrations.datasets import ActivationHook, find_leakage, annotate
>>> hook = ActivationHook(embed_fn, column="neardup_embedding")  # doctest: +SKIP
>>> dsd = hook.map(dsd, batch_size=64)          # or dsd.map(hook, batched=True, ...)
>>> report = find_leakage(dsd, column="neardup_embedding")
>>> clean = annotate(dsd, report)   # + neardup_cluster (int, -1 = none), neardup_leaked (bool)
>>> clean["test"].filter(lambda ex: not ex["neardup_leaked"])

How a hook is identified (what ``datasets`` hashes for its cache)
-----------------------------------------------------------------
``Dataset.map`` fingerprints its function with ``datasets.fingerprint.Hasher`` (dill). Hashing
a closure over a model would serialise every weight on every ``map`` call, and an
unpicklable one gets a random fingerprint (no cache). An :class:`ActivationHook` is therefore
hashed by a short identity string only (a reducer registered with ``datasets``' pickler; the
hook itself still pickles in full for ``num_proc > 1``). The identity is made of the column,
``dim``, ``version`` and, in this order of preference:

1. ``name=`` when given: you own the identity; bump ``version=`` whenever the model or the
   embedding code changes. If the weights of a torch/Keras model that ``embed_fn`` reaches
   change while ``name``/``version`` stay the same, the hook warns: the cache would hand
   back vectors of the old weights;
2. ``embed_fn.neardup_fingerprint()`` when the embedder has one: :class:`TransformerEmbedder`
   and :class:`ImageEmbedder` hash their current weights' raw bytes (xxhash, milliseconds),
   so fine-tuning changes it;
3. otherwise ``Hasher.hash(embed_fn)``, computed **once** when the hook is built (a closure
   over a model is serialised once, not per call), plus a hash of the *current* weights of
   every torch/Keras model ``embed_fn`` reaches (its closure, ``__self__``, attributes), taken
   at each ``map``: changing the weights changes the identity.

The cache itself only exists for datasets backed by Arrow files on disk (``load_dataset``,
``load_from_disk``, or the result of an earlier ``map``); a dataset built in memory with
``Dataset.from_dict``/``from_pandas`` is mapped again on every call.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from neardup import DuplicatesResult, NeardupInputError, find_duplicates
from neardup.validators import closest_names

from .._common import missing_framework

try:
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc
    import xxhash
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets.fingerprint import Hasher
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise missing_framework("neardup.integrations.datasets", "datasets", _err) from _err

from ._embedder import POOLING_CHOICES, TransformerEmbedder
from ._image import ImageEmbedder
from ._weights import models_in, weights_hash

__all__ = [
    "POOLING_CHOICES",
    "ActivationHook",
    "ImageEmbedder",
    "TransformerEmbedder",
    "annotate",
    "drop_leaked",
    "find_leakage",
    "vector_feature",
]

_IDENTITY_VERSION = "neardup.ActivationHook/1"
_RESERVED_OPTIONS = {
    "labels": "label_column=",
    "ids": "id_column=",
    "data": "the first argument",
}


def vector_feature(dim: int) -> Any:
    """The ``datasets`` feature of a fixed-size float32 vector (Arrow ``fixed_size_list``)."""
    list_type = getattr(datasets, "List", None)  # datasets >= 4; older: Sequence(length=)
    if list_type is not None:
        return list_type(Value("float32"), length=dim)
    return datasets.Sequence(Value("float32"), length=dim)  # pragma: no cover


# --------------------------------------------------------------------------------------------
# The map hook
# --------------------------------------------------------------------------------------------


class ActivationHook:
    """A ``Dataset.map`` function that adds one float32 activation vector per example.

    ``embed_fn(batch) -> (B, d)`` receives the batch as ``map`` formats it (a dict of
    columns) and returns a numpy array, torch tensor or anything ``np.asarray`` takes;
    ``(B, ...)`` outputs are flattened per example. Use ``batched=True``.

    Parameters
    ----------
    embed_fn:
        The embedding function, e.g. a :class:`TransformerEmbedder` or a closure over any model.
    column:
        Name of the vector column to write.
    dim:
        Expected vector length; checked on every batch. Without it, :meth:`features_for`
        probes it by embedding the first example.
    name, version:
        An explicit identity for the ``datasets`` cache (see the module docstring); without
        ``name`` the identity comes from ``embed_fn``.

    For a fixed-size column (Arrow ``fixed_size_list<float>[d]``) map with
    ``features=hook.features_for(ds)``, or call :meth:`map`, which does it per split; without
    ``features=``, ``datasets`` stores variable-length lists (``find_leakage`` reads both).
    """

    def __init__(
        self,
        embed_fn: Callable[[Mapping[str, Any]], Any],
        *,
        column: str = "neardup_embedding",
        dim: int | None = None,
        name: str | None = None,
        version: str | int | None = None,
    ) -> None:
        if not callable(embed_fn):
            raise NeardupInputError(
                f"embed_fn must be callable(batch: dict) -> (B, d) array, got "
                f"{type(embed_fn).__name__}."
            )
        if not isinstance(column, str) or not column:
            raise NeardupInputError(f"column must be a non-empty str, got {column!r}.")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise NeardupInputError(f"dim must be a positive int or None, got {dim!r}.")
        if name is not None and (not isinstance(name, str) or not name):
            raise NeardupInputError(f"name must be a non-empty str or None, got {name!r}.")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, (str, int))
        ):
            raise NeardupInputError(f"version must be a str, an int or None, got {version!r}.")
        self.embed_fn = embed_fn
        self.column = column
        self.dim = dim
        self.name = name
        self.version = version
        self._probed_dim: int | None = None
        self._owner_pid = os.getpid()
        self._embed_hash = (
            None
            if name is not None or callable(getattr(embed_fn, "neardup_fingerprint", None))
            else _hash_embed_fn(embed_fn)
        )
        own = callable(getattr(embed_fn, "neardup_fingerprint", None))
        self._models = [] if own else models_in(embed_fn)  # whose weights tie the identity
        self._built_weights = weights_hash(self._models) if self._models else None
        self._warned_weights: str | None = None

    def __repr__(self) -> str:
        who = f"name={self.name!r}" if self.name is not None else repr(self.embed_fn)
        return f"ActivationHook({who}, column={self.column!r}, dim={self.dim})"

    def fingerprint(self) -> str:
        """The hook's identity for ``datasets``' cache (16 hex digits; see the module doc)."""
        if self.name is not None:
            source = f"name:{self.name}"
            self._warn_if_weights_changed()
        elif callable(getattr(self.embed_fn, "neardup_fingerprint", None)):
            source = f"embedder:{self.embed_fn.neardup_fingerprint()}"
        else:
            weights = weights_hash(self._models) if self._models else ""
            source = f"hash:{self._embed_hash}|weights:{weights}"
        text = f"{_IDENTITY_VERSION}|{self.column}|{self.dim}|{self.version}|{source}"
        return xxhash.xxh64(text.encode()).hexdigest()

    def _warn_if_weights_changed(self) -> None:
        """With ``name=``, say when the weights moved on but the identity did not."""
        if not self._models:
            return
        now = weights_hash(self._models)
        if now != self._built_weights and now != self._warned_weights:
            self._warned_weights = now
            warnings.warn(
                f"ActivationHook(name={self.name!r}, version={self.version!r}): the weights of "
                "the model(s) embed_fn uses changed since the hook was built, but name= fixes "
                "the hook's identity, so datasets may load vectors computed with the old "
                "weights from its cache. Bump version= (or drop name= to let the hook follow "
                "the weights).",
                stacklevel=3,
            )

    def __call__(self, batch: Mapping[str, Any], *_indices_or_rank: Any) -> dict[str, np.ndarray]:
        """Embed one batch: ``{column: (B, d) float32}`` (merged into the batch by ``map``)."""
        _one_torch_thread_in_worker(self._owner_pid)
        n = _batch_length(batch)
        vectors = _as_vectors(self.embed_fn(batch), n, self.dim or self._probed_dim)
        return {self.column: vectors}

    def features_for(self, dataset: Dataset) -> Features:
        """``dataset.features`` plus the fixed-size float32 vector column, for ``map(features=)``.

        Without ``dim``, the vector length is probed by embedding ``dataset[:1]`` once.
        """
        if not isinstance(dataset, Dataset):
            raise NeardupInputError(
                f"features_for takes one datasets.Dataset, got {type(dataset).__name__}; "
                "for a DatasetDict use hook.map(dsd) or features_for(dsd[split])."
            )
        dim = self.dim or self._probed_dim
        if dim is None:
            if len(dataset) == 0:
                raise NeardupInputError(
                    "cannot probe the vector length on an empty dataset; pass dim= to "
                    "ActivationHook."
                )
            dim = self._probed_dim = self(dataset[:1])[self.column].shape[1]
        features = dataset.features.copy()
        features[self.column] = vector_feature(dim)
        return features

    def map(
        self,
        data: Dataset | DatasetDict,
        *,
        batch_size: int = 64,
        num_proc: int | None = None,
        **map_kwargs: Any,
    ) -> Dataset | DatasetDict:
        """``data.map(self, batched=True, features=...)``, per split for a DatasetDict.

        The vector column comes out as a fixed-size float32 list; other keyword arguments go
        to ``Dataset.map`` (``load_from_cache_file``, ``desc``, ``remove_columns``, ...).
        """
        for bad in ("batched", "features", "input_columns", "function"):
            if bad in map_kwargs:
                raise NeardupInputError(
                    f"hook.map() sets {bad}= itself; call data.map(hook, ...) directly to "
                    "choose it."
                )
        if isinstance(data, DatasetDict):
            return DatasetDict(
                {
                    split: self.map(ds, batch_size=batch_size, num_proc=num_proc, **map_kwargs)
                    for split, ds in data.items()
                }
            )
        if not isinstance(data, Dataset):
            raise NeardupInputError(
                f"hook.map() takes a datasets.Dataset or DatasetDict, got {type(data).__name__}."
            )
        features = self.features_for(data)
        removed = map_kwargs.get("remove_columns") or []
        for col in [removed] if isinstance(removed, str) else removed:
            if col != self.column and col in features:
                del features[col]
        return data.map(
            self,
            batched=True,
            batch_size=batch_size,
            num_proc=num_proc,
            features=features,
            **map_kwargs,
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register_hasher(cls)


_THREADS_LIMITED_IN: int | None = None


def _one_torch_thread_in_worker(owner_pid: int) -> None:
    """In a ``map(num_proc=...)`` worker, limit torch to one thread (once per process).

    ``datasets`` forks its workers; torch's OpenMP pool does not survive a fork, and a
    forked worker hangs in its first parallel op (measured: MiniLM's layer_norm). PyTorch's
    own DataLoader workers do the same; with ``num_proc`` workers, one thread each is right.
    """
    global _THREADS_LIMITED_IN
    pid = os.getpid()
    if pid == owner_pid or pid == _THREADS_LIMITED_IN or "torch" not in sys.modules:
        return
    sys.modules["torch"].set_num_threads(1)
    _THREADS_LIMITED_IN = pid


def _hash_embed_fn(embed_fn: Any) -> str:
    """``datasets``' own hash of ``embed_fn``, once; a random one (with a warning) on failure."""
    try:
        return Hasher.hash(embed_fn)
    except Exception as err:  # dill raises many types for unpicklable objects
        warnings.warn(
            f"ActivationHook: embed_fn {embed_fn!r} cannot be hashed by datasets ({err}); "
            "the datasets cache will not be reused between runs. Pass name= (and version=) "
            "to ActivationHook to give it a stable identity.",
            stacklevel=3,
        )
        return uuid.uuid4().hex


def _hook_identity(fingerprint: str) -> str:
    """Stand-in that ``datasets`` hashes instead of a hook (never called to unpickle)."""
    return fingerprint


def _save_hook(pickler: Any, obj: ActivationHook) -> None:
    pickler.save_reduce(_hook_identity, (obj.fingerprint(),), obj=obj)


def _register_hasher(cls: type) -> None:
    """Make ``datasets.fingerprint.Hasher`` hash hooks of ``cls`` by their identity only.

    ``datasets.utils._dill.pklregister`` is private; without it (another datasets version)
    hooks are hashed in full, which is slower but still stable.
    """
    try:
        from datasets.utils._dill import pklregister
    except ImportError:  # pragma: no cover - depends on the datasets version
        return
    pklregister(cls)(_save_hook)


_register_hasher(ActivationHook)


def _batch_length(batch: Any) -> int | None:
    """Examples in a ``map`` batch; a clear error when ``map`` was not batched."""
    if not isinstance(batch, Mapping):
        raise NeardupInputError(
            f"ActivationHook received a {type(batch).__name__}, not a batch dict; call map "
            "without input_columns= (the hook reads the whole batch)."
        )
    for value in batch.values():
        if value is None or isinstance(value, (str, bytes, int, float, bool, np.generic)):
            raise NeardupInputError(
                "ActivationHook received a single example; map with batched=True "
                "(e.g. ds.map(hook, batched=True, batch_size=64))."
            )
        if hasattr(value, "__len__"):
            return len(value)
    return None


def _as_vectors(output: Any, n: int | None, dim: int | None) -> np.ndarray:
    """Check ``embed_fn``'s output and return it as a C-contiguous ``(n, d)`` float32 array."""
    if hasattr(output, "detach") and hasattr(output, "cpu"):  # a torch tensor, without torch
        output = output.detach().float().cpu().numpy()
    try:
        array = np.asarray(output)
    except ValueError as err:
        raise NeardupInputError(
            f"embed_fn returned ragged vectors ({err}); return one (B, d) array per batch."
        ) from err
    if array.dtype.kind not in "biuf":
        raise NeardupInputError(
            f"embed_fn returned {array.dtype} values; return a numeric (B, d) array."
        )
    if array.ndim < 2:
        raise NeardupInputError(
            f"embed_fn returned shape {array.shape}; return one vector per example, shape "
            "(B, d) (use batched=True, and reshape(-1, 1) for one feature)."
        )
    if n is not None and array.shape[0] != n:
        raise NeardupInputError(
            f"embed_fn returned {array.shape[0]} vectors for a batch of {n} examples; "
            "return exactly one per example."
        )
    array = np.ascontiguousarray(array.reshape(array.shape[0], -1), dtype=np.float32)
    if dim is not None and array.shape[1] != dim:
        raise NeardupInputError(
            f"embed_fn returned vectors of length {array.shape[1]}, expected dim={dim}; every "
            "batch must give vectors of the same length."
        )
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise NeardupInputError(
            f"embed_fn returned NaN or inf for {bad.size} example(s) (first: position "
            f"{bad[0]} in the batch); check the model's inputs and dtype."
        )
    return array


# --------------------------------------------------------------------------------------------
# Reading columns without Python-level loops
# --------------------------------------------------------------------------------------------


def _arrow_column(ds: Dataset, column: str, where: str) -> pa.ChunkedArray:
    """The column as Arrow, in the dataset's row order (through its indices mapping, if any)."""
    if column not in ds.column_names:
        raise NeardupInputError(
            f"{where} has no column {column!r} ({closest_names(column, ds.column_names)}). "
            "Add the vectors with ds.map(ActivationHook(embed_fn, column=...), batched=True) "
            "or pass column= naming an existing one."
        )
    chunked = ds.data.table.column(column)
    indices = getattr(ds, "_indices", None)  # after select/filter/shuffle (= flatten_indices)
    if indices is not None:
        chunked = chunked.take(indices.column(0))
    return chunked


def _segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over consecutive segments of the given lengths (empty -> 0)."""
    ends = np.cumsum(counts)
    total = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return total[ends] - total[ends - counts]


def _storage(array: pa.Array) -> pa.Array:
    """The storage of an extension array (datasets' Array2D/3D...), else the array itself."""
    return array.storage if isinstance(array, pa.ExtensionArray) else array


def _flatten_chunk(array: pa.Array, column: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat numeric values of one chunk and the number of values in each of its rows."""
    row_counts = np.ones(len(array), dtype=np.int64)
    depth = 0
    array = _storage(array)
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or (pa.types.is_fixed_size_list(array.type))
    ):
        if array.null_count:
            first = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
            raise NeardupInputError(
                f"{where}, column {column!r}: {array.null_count} missing (None) vectors"
                + (" or sub-lists" if depth else f" (first at row {first})")
                + "; embed every example, or filter out the empty ones first."
            )
        if pa.types.is_fixed_size_list(array.type):  # no per-row lengths to read
            row_counts = row_counts * array.type.list_size
        else:
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
            row_counts = _segment_sums(lengths.astype(np.int64), row_counts)
        array = _storage(array.flatten())  # flatten respects slicing (unlike .values)
        depth += 1
    kind = array.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
        raise NeardupInputError(
            f"{where}, column {column!r} has Arrow type {kind}, which is not numeric. "
            "find_leakage reads vectors: embed the column first with ActivationHook "
            "(e.g. TransformerEmbedder for text) and pass column= the vector column."
        )
    if depth == 0:
        raise NeardupInputError(
            f"{where}, column {column!r} holds one number per example ({kind}), not a vector; "
            "pass column= the column written by ActivationHook."
        )
    if array.null_count:
        raise NeardupInputError(
            f"{where}, column {column!r}: {array.null_count} vector entries are missing "
            "(None); the embedder must return finite numbers only."
        )
    if pa.types.is_boolean(kind) or pa.types.is_float16(kind):
        array = array.cast(pa.float32())
    return array.to_numpy(zero_copy_only=False), row_counts


def _read_vectors(ds: Dataset, column: str, where: str) -> np.ndarray:
    """The vector column of ``ds`` as an ``(n, d)`` numpy array (zero-copy per chunk if it can).

    Any nesting of (fixed-size or variable) lists is flattened per example, so pixel columns
    stored as lists of lists read as flat vectors too.
    """
    chunked = _arrow_column(ds, column, where)
    if len(chunked) == 0:
        raise NeardupInputError(f"{where} has no rows; drop the empty split.")
    parts = [_flatten_chunk(chunk, column, where) for chunk in chunked.chunks if len(chunk)]
    counts = np.concatenate([c for _, c in parts])
    dim = int(np.bincount(counts).argmax()) if counts.size else 0
    ragged = np.flatnonzero(counts != dim)
    if ragged.size:
        shown = ", ".join(f"row {r}: {counts[r]}" for r in ragged[:3])
        raise NeardupInputError(
            f"{where}, column {column!r} is ragged: most vectors have {dim} values but "
            f"{ragged.size} differ ({shown}). Pad or pool every example to one length, or map "
            "with features=hook.features_for(ds) to enforce a fixed length."
        )
    if dim == 0:
        raise NeardupInputError(f"{where}, column {column!r} holds empty vectors.")
    values = parts[0][0] if len(parts) == 1 else np.concatenate([v for v, _ in parts])
    return values.reshape(len(counts), dim)


def _read_plain(ds: Dataset, column: str, where: str, what: str) -> np.ndarray:
    """A scalar column (labels, ids) as a 1-D numpy array."""
    chunked = _arrow_column(ds, column, where).combine_chunks()
    if pa.types.is_dictionary(chunked.type):
        chunked = chunked.dictionary_decode()
    if not (
        pa.types.is_integer(chunked.type)
        or pa.types.is_string(chunked.type)
        or pa.types.is_large_string(chunked.type)
        or pa.types.is_boolean(chunked.type)
    ):
        raise NeardupInputError(
            f"{where}: {what} column {column!r} has Arrow type {chunked.type}; {what}s must "
            "be ints or strings, one per example."
        )
    if chunked.null_count:
        raise NeardupInputError(
            f"{where}: {what} column {column!r} has {chunked.null_count} missing values."
        )
    return chunked.to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------------------------
# Analysis and annotation
# --------------------------------------------------------------------------------------------


def _split_map(
    data: Any, splits: list[str] | None, reference: str | None
) -> tuple[dict[str, Dataset], bool]:
    """``split -> Dataset`` to analyse, and whether the input was a single Dataset."""
    if isinstance(data, Dataset):
        if splits is not None:
            raise NeardupInputError(
                "splits= only applies to a DatasetDict; a single Dataset is analysed whole "
                "(duplicates within it)."
            )
        return {"data": data}, True
    if not isinstance(data, DatasetDict):
        iterable = type(data).__name__.startswith("Iterable")
        raise NeardupInputError(
            f"find_leakage takes a datasets.DatasetDict (leakage across splits) or a Dataset "
            f"(duplicates within it), got {type(data).__name__}"
            + (
                "; materialise a streaming dataset first (Dataset.from_generator or "
                "load_dataset(..., streaming=False))."
                if iterable
                else "."
            )
        )
    names = list(data) if splits is None else list(splits)
    if not names:
        raise NeardupInputError("the DatasetDict has no splits.")
    for name in names:
        if name not in data:
            raise NeardupInputError(
                f"split {name!r} is not in the DatasetDict ({closest_names(name, list(data))})."
            )
    if reference is not None and len(names) > 1 and reference not in names:
        raise NeardupInputError(
            f"reference split {reference!r} is not among the analysed splits {names} "
            f"({closest_names(reference, names)}); pass reference= the training split's name, "
            "or reference=None to skip leakage."
        )
    return {name: data[name] for name in names}, False


def find_leakage(
    data: DatasetDict | Dataset,
    *,
    column: str = "neardup_embedding",
    label_column: str | None = None,
    id_column: str | None = None,
    splits: list[str] | None = None,
    reference: str | None = "train",
    html: str | os.PathLike[str] | None = None,
    sample_column: str | None = None,
    **options: Any,
) -> DuplicatesResult:
    """Near-duplicates and train/test leakage from a vector column of a DatasetDict.

    Parameters
    ----------
    data:
        A ``DatasetDict`` (every split, or those in ``splits``, checked against
        ``reference``) or one ``Dataset`` (duplicates within it; its split is ``"data"``).
    column:
        The vector column (fixed-size or variable-length lists of numbers, any nesting).
    label_column, id_column:
        Optional columns with per-example labels (int/ClassLabel/str: per-class leakage) and
        ids (unique per split). Without ids, samples are named by their row position.
    reference:
        The split other splits are checked against (``None``: duplicate sets only).
    html:
        Also write the HTML report to this path, with thumbnails (``Image()`` columns or any
        array column) or texts read from the datasets, row by row, for the samples shown.
    sample_column:
        The column shown in the report (default: the first ``Image()`` column, else the
        first string column).
    **options:
        Any option of :func:`neardup.find_duplicates` (threshold, normalize, reduce, k,
        backend, seed, ...).

    Returns
    -------
    neardup.DuplicatesResult
        Positions in it are row positions within each split, as the datasets are now.
    """
    for bad, hint in _RESERVED_OPTIONS.items():
        if bad in options:
            raise NeardupInputError(
                f"find_leakage reads {bad} from the datasets; use {hint} instead of {bad}=."
            )
    parts, single = _split_map(data, splits, reference)
    vectors, labels, ids = {}, {}, {}
    for name, ds in parts.items():
        where = "the dataset" if single else f"split {name!r}"
        vectors[name] = _read_vectors(ds, column, where)
        if label_column is not None:
            labels[name] = _read_plain(ds, label_column, where, "label")
        if id_column is not None:
            ids[name] = _read_plain(ds, id_column, where, "id")
    layer = options.pop("layer", column)
    if single:
        result = find_duplicates(
            vectors["data"],
            labels=labels.get("data"),
            ids=ids.get("data"),
            layer=layer,
            **options,
        )
    else:
        result = find_duplicates(
            vectors,
            labels=labels or None,
            ids=ids or None,
            reference=reference,
            layer=layer,
            **options,
        )
    if html is not None:
        shown = _sample_column(parts, sample_column, column)
        samples = (
            None if shown is None else {n: _ColumnSamples(ds, shown) for n, ds in parts.items()}
        )
        result.to_html(html, samples=samples)
    return result


class _ColumnSamples:
    """One column of a Dataset as a lazy sequence: rows are read only for samples shown."""

    def __init__(self, ds: Dataset, column: str) -> None:
        self.ds, self.column = ds, column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, position: int) -> Any:
        return self.ds[int(position)][self.column]


def _sample_column(parts: Mapping[str, Dataset], chosen: str | None, vectors: str) -> str | None:
    """The column to show in the report: ``chosen``, else an Image(), else a string column."""
    first = next(iter(parts.values()))
    if chosen is not None:
        for name, ds in parts.items():
            if chosen not in ds.column_names:
                raise NeardupInputError(
                    f"sample_column {chosen!r} is not a column of split {name!r} "
                    f"({closest_names(chosen, ds.column_names)})."
                )
        return chosen
    features = first.features
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name, feature in features.items():
        if (
            name != vectors
            and isinstance(feature, Value)
            and feature.dtype in ("string", "large_string")
        ):
            return name
    return None


def _check_report(parts: Mapping[str, Dataset], report: DuplicatesResult, single: bool) -> None:
    if not isinstance(report, DuplicatesResult):
        raise NeardupInputError(
            f"report must be the DuplicatesResult of find_leakage, got {type(report).__name__}."
        )
    if single and list(report.split_sizes) != ["data"]:
        raise NeardupInputError(
            f"the report covers splits {list(report.split_sizes)}, but a single Dataset was "
            "given; pass the DatasetDict the report was computed on."
        )
    for name, size in report.split_sizes.items():
        if name not in parts:
            raise NeardupInputError(
                f"the report has split {name!r}, which is not in the data "
                f"({closest_names(name, list(parts))}); annotate the datasets the report was "
                "computed on."
            )
        if len(parts[name]) != size:
            raise NeardupInputError(
                f"split {name!r} has {len(parts[name])} rows but the report saw {size}; the "
                "data changed since find_leakage (filtered or reordered?): run it again."
            )


def _flags(report: DuplicatesResult, single: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: ``(cluster (n,) int64, -1 = none; leaked (n,) bool)``."""
    out = {
        name: (np.full(size, -1, dtype=np.int64), np.zeros(size, dtype=bool))
        for name, size in report.split_sizes.items()
    }
    for k, cluster in enumerate(report.clusters):
        splits = np.asarray(cluster.splits)
        positions = np.asarray(cluster.positions, dtype=np.int64)
        for name in np.unique(splits):
            out[str(name)][0][positions[splits == name]] = k
        if single:  # every member but the first row of the set is a redundant copy
            out["data"][1][np.sort(positions)[1:]] = True
    for name, leak in report.leakage.items():
        out[name][1][np.asarray(leak.positions, dtype=np.int64)] = True
    return out


def annotate(
    data: DatasetDict | Dataset,
    report: DuplicatesResult,
    *,
    cluster_column: str = "neardup_cluster",
    leaked_column: str = "neardup_leaked",
) -> DatasetDict | Dataset:
    """Add ``neardup_cluster`` and ``neardup_leaked`` to every analysed split.

    ``neardup_cluster`` (int64) is the index of the example's set in ``report.clusters`` (-1:
    in no set). ``neardup_leaked`` (bool) is True for examples of an evaluation split with a
    near-duplicate in the reference split (never in the reference split itself). For a single
    ``Dataset`` it marks every member of a set except its first row, so filtering on it keeps
    one example per set. Rows are neither reordered nor dropped; splits the report did not
    cover are returned unchanged.
    """
    single, parts, flags = _analysed_parts(data, report, "annotate")
    out = {}
    for name, ds in parts.items():
        if name in flags:
            cluster, leaked = flags[name]
            ds = _set_column(ds, cluster_column, cluster, Value("int64"))
            ds = _set_column(ds, leaked_column, leaked, Value("bool"))
        out[name] = ds
    return out["data"] if single else DatasetDict(out)


def _analysed_parts(
    data: DatasetDict | Dataset, report: DuplicatesResult, caller: str
) -> tuple[bool, dict[str, Dataset], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Check ``data`` against ``report``; return (single, split -> Dataset, per-split flags)."""
    single = isinstance(data, Dataset)
    if not single and not isinstance(data, DatasetDict):
        raise NeardupInputError(
            f"{caller} takes the DatasetDict or Dataset given to find_leakage, got "
            f"{type(data).__name__}."
        )
    parts = {"data": data} if single else dict(data)
    _check_report(parts, report, single)
    return single, parts, _flags(report, single)


def _set_column(ds: Dataset, name: str, values: np.ndarray, feature: Any) -> Dataset:
    if name in ds.column_names:
        ds = ds.remove_columns(name)
    return ds.add_column(name, values, feature=feature)


def drop_leaked(data: DatasetDict | Dataset, report: DuplicatesResult) -> DatasetDict | Dataset:
    """The data without the examples :func:`annotate` marks as leaked (no columns added).

    For a DatasetDict: evaluation splits lose their examples that have a near-duplicate in
    the reference split; the reference split is kept whole. For a Dataset: one example per
    duplicate set is kept (its first row). Uses ``select`` (an indices mapping, no copy).
    """
    single, parts, flags = _analysed_parts(data, report, "drop_leaked")
    out = {}
    for name, ds in parts.items():
        leaked = flags[name][1] if name in flags else None
        out[name] = ds if leaked is None or not leaked.any() else ds.select(np.flatnonzero(~leaked))
    return out["data"] if single else DatasetDict(out)
