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

from neardup import NeardupInputError

from .._common import missing_framework

try:
    import datasets
    import xxhash
    from datasets import (
        Dataset,
        DatasetDict,
        Features,
        IterableDataset,
        IterableDatasetDict,
        Value,
    )
    from datasets.fingerprint import Hasher
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise missing_framework("neardup.integrations.datasets", "datasets", _err) from _err

from ._weights import models_in, weights_hash

__all__ = ["ActivationHook", "vector_feature"]

_IDENTITY_VERSION = "neardup.ActivationHook/1"


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

    def features_for(self, dataset: Dataset | IterableDataset) -> Features | None:
        """``dataset.features`` plus the fixed-size float32 vector column, for ``map(features=)``.

        Without ``dim``, the vector length is probed by embedding the first example once. A
        stream (``IterableDataset``) that does not declare its features gives ``None``: the
        vectors are then stored as variable-length lists, which ``find_leakage`` reads too.
        """
        streaming = isinstance(dataset, IterableDataset)
        if not streaming and not isinstance(dataset, Dataset):
            raise NeardupInputError(
                f"features_for takes one datasets.Dataset or IterableDataset, got "
                f"{type(dataset).__name__}; for a DatasetDict use hook.map(dsd) or "
                "features_for(dsd[split])."
            )
        if dataset.features is None:
            return None
        dim = self.dim or self._probed_dim
        if dim is None:
            first = next(iter(dataset.iter(batch_size=1)), None) if streaming else None
            if (first is None) if streaming else len(dataset) == 0:
                raise NeardupInputError(
                    "cannot probe the vector length on an empty dataset; pass dim= to "
                    "ActivationHook."
                )
            dim = self._probed_dim = self(first if streaming else dataset[:1])[self.column].shape[1]
        features = dataset.features.copy()
        features[self.column] = vector_feature(dim)
        return features

    def map(
        self,
        data: Dataset | DatasetDict | IterableDataset | IterableDatasetDict,
        *,
        batch_size: int = 64,
        num_proc: int | None = None,
        **map_kwargs: Any,
    ) -> Dataset | DatasetDict | IterableDataset | IterableDatasetDict:
        """``data.map(self, batched=True, features=...)``, per split for a DatasetDict.

        The vector column comes out as a fixed-size float32 list; other keyword arguments go
        to ``Dataset.map`` (``load_from_cache_file``, ``desc``, ``remove_columns``, ...).
        A streaming ``IterableDataset``/``IterableDatasetDict`` is mapped lazily, as
        ``datasets`` maps streams: the vectors are computed while the stream is read (by
        :func:`find_leakage`, once); ``IterableDataset.map`` has no ``num_proc``.
        """
        for bad in ("batched", "features", "input_columns", "function"):
            if bad in map_kwargs:
                raise NeardupInputError(
                    f"hook.map() sets {bad}= itself; call data.map(hook, ...) directly to "
                    "choose it."
                )
        if isinstance(data, (DatasetDict, IterableDatasetDict)):
            return type(data)(
                {
                    split: self.map(ds, batch_size=batch_size, num_proc=num_proc, **map_kwargs)
                    for split, ds in data.items()
                }
            )
        if not isinstance(data, (Dataset, IterableDataset)):
            raise NeardupInputError(
                f"hook.map() takes a datasets.Dataset or DatasetDict (or their streaming "
                f"IterableDataset forms), got {type(data).__name__}."
            )
        if isinstance(data, IterableDataset) and num_proc not in (None, 1):
            raise NeardupInputError(
                f"num_proc={num_proc!r} does not apply to a streaming IterableDataset "
                "(IterableDataset.map runs in the process that reads the stream); drop "
                "num_proc=, or load the dataset without streaming=True."
            )
        features = self.features_for(data)
        removed = map_kwargs.get("remove_columns") or []
        for col in [removed] if isinstance(removed, str) else removed:
            if features is not None and col != self.column and col in features:
                del features[col]
        if isinstance(data, IterableDataset):
            return data.map(
                self, batched=True, batch_size=batch_size, features=features, **map_kwargs
            )
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
        from datasets.utils._dill import pklregister  # noqa: PLC2701 (see above)
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
