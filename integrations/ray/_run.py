"""``find_duplicates`` on Ray: read the input there, join every cell as one Ray task.

The driver reads the rows (each shard, Ray Dataset block or Hugging Face table is read by Ray
workers), fits the partition on a seeded sample, routes the rows to their cells, and hands
the cell joins to :class:`~neardup.integrations.ray.RayExecutor`; the pairs merge in the
driver with union-find into the :class:`~neardup.DuplicatesResult` that
:func:`neardup.find_duplicates` returns. The steps are the cell engine's own
(:class:`neardup.Cells` with a Ray executor), so the result equals the single-process one
pair for pair, for the same data and seed.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import ray.data

import neardup
from neardup import DuplicatesResult, NeardupInputError
from neardup.search import Backend, Cells, as_backend
from neardup.validators import ANALYSIS_OPTIONS, check_option, check_options

from ._executor import RayExecutor
from ._sources import Columns, SplitArrays, embed_rows, read_splits

__all__ = ["find_duplicates", "ray_backend", "read_vectors"]


def read_vectors(
    source: Any,
    *,
    vector_column: str = "vector",
    split_column: str | None = "split",
    id_column: str | None = None,
    label_column: str | None = None,
    embed: Callable[..., Any] | None = None,
    input_column: str | None = None,
    batch_size: int = 256,
    concurrency: int | None = None,
) -> SplitArrays:
    """Read ``source`` on Ray into per-split ``(n, d)`` float32 vectors, ids and labels.

    Parameters
    ----------
    source:
        A ``ray.data.Dataset`` (one row per sample; the split in ``split_column``, or one
        split ``"data"`` with ``split_column=None``); a mapping ``split -> [shard paths]`` of
        ``.npy`` arrays ``(n, d)`` or Parquet tables; a Hugging Face ``datasets.Dataset`` or
        ``DatasetDict`` (its keys are the splits), read through ``ray.data.from_huggingface``.
    vector_column, split_column, id_column, label_column:
        Column names (ids and labels are optional: ``None`` numbers rows from 0 per split
        and reads no labels).
    embed:
        Raw samples instead of vectors: ``embed(inputs (B, ...)) -> (B, d)`` runs over
        ``input_column`` with ``map_batches`` (a Ray Dataset or Hugging Face input); with
        ``input_column=None`` it gets the whole batch (a dict of numpy arrays), as the
        ``datasets`` integration's ``TransformerEmbedder`` does. A class is instantiated once
        per Ray actor (``concurrency`` actors), for models.
    batch_size:
        Rows per ``embed`` call.
    """
    columns = Columns(vector_column, split_column, id_column, label_column)
    if embed is None:
        return read_splits(source, columns)
    _check_int("batch_size", batch_size)
    if concurrency is not None:
        _check_int("concurrency", concurrency)
    per_split = _as_ray_datasets(source, columns)
    parts = {}
    for name, dataset in per_split.items():
        embedded = embed_rows(
            dataset,
            embed,
            input_column=input_column,
            vector_column=vector_column,
            batch_size=batch_size,
            concurrency=concurrency,
        )
        parts[name] = read_splits(embedded, columns if name is None else _no_split(columns))
    if None in parts:
        return parts[None]
    return SplitArrays(
        vectors={s: p.vectors["data"] for s, p in parts.items()},
        ids={s: p.ids["data"] for s, p in parts.items() if "data" in p.ids},
        labels={s: p.labels["data"] for s, p in parts.items() if "data" in p.labels},
    )


def ray_backend(backend: Any = "auto", *, executor: RayExecutor | None = None) -> Cells:
    """The cell engine with its joins on Ray: ``Cells(..., executor=RayExecutor())``.

    ``backend`` is ``"auto"``/``"cells"`` or a :class:`neardup.Cells` whose options are kept
    (its executor is replaced by ``executor``, default ``RayExecutor()``).
    """
    engine: Backend = as_backend(backend)
    if not isinstance(engine, Cells):
        raise NeardupInputError(
            f"backend={backend!r}: on Ray, neardup runs the cell engine (one Ray task per "
            "cell); pass neardup.Cells(...) with the options you need, or 'auto'."
        )
    if executor is not None and not isinstance(executor, RayExecutor):
        raise NeardupInputError(
            f"executor={executor!r} is not a RayExecutor; pass RayExecutor(max_retries=...)."
        )
    return dataclasses.replace(engine, executor=executor or RayExecutor())


def find_duplicates(
    source: Any,
    *,
    backend: Any = "auto",
    executor: RayExecutor | None = None,
    **options: Any,
) -> DuplicatesResult:
    """Near-duplicates and leakage of data read on Ray, the cell joins run as Ray tasks.

    Parameters
    ----------
    source:
        The input, read by :func:`read_vectors`; its options (``vector_column``,
        ``split_column``, ``id_column``, ``label_column``, ``embed``, ``input_column``,
        ``batch_size``, ``concurrency``) are passed by keyword among ``**options``.
    backend:
        ``"auto"`` or a :class:`neardup.Cells` (cell size, margin, sample size, seed, block
        size); its joins run on Ray whatever its executor.
    executor:
        The :class:`RayExecutor` (task retries, CPUs per task); default ``RayExecutor()``.
    **options:
        :func:`read_vectors`'s options, and every other option of
        :func:`neardup.find_duplicates` (``threshold``, ``normalize``, ``reference``,
        ``seed``, ``k``, ``reduce``, ...).

    Returns
    -------
    DuplicatesResult
        The same as :func:`neardup.find_duplicates` on the same rows with the same options
        (``result.settings["backend"] == "cells"``).

    Notes
    -----
    Ray must be initialised (``ray.init()`` for a local Ray, ``ray.init(address=...)`` for a
    cluster), or Ray's auto-init starts a local one on first use.
    """
    for bad in ("ids", "labels"):
        if bad in options:
            raise NeardupInputError(
                f"{bad}= is read from the data on Ray; name the column with "
                f"{'id_column' if bad == 'ids' else 'label_column'}= instead."
            )
    check_option("backend", backend, where="ray find_duplicates")
    read_options = _pop_read_options(options)
    options = check_options(
        options,
        where="ray find_duplicates",
        allowed=[name for name in ANALYSIS_OPTIONS if name != "backend"],
    )
    engine = ray_backend(backend, executor=executor)
    splits = read_vectors(source, **read_options)
    return neardup.find_duplicates(splits.vectors, **splits.options(), backend=engine, **options)


def _pop_read_options(options: dict[str, Any]) -> dict[str, Any]:
    """Take :func:`read_vectors`'s keyword options out of ``options`` (left: the analysis's)."""
    names = [name for name in inspect.signature(read_vectors).parameters if name != "source"]
    return {name: options.pop(name) for name in names if name in options}


def _as_ray_datasets(source: Any, columns: Columns) -> dict[str | None, ray.data.Dataset]:
    """Raw-sample input as Ray Datasets: ``{None: ds}`` (split column) or one per split."""
    if isinstance(source, ray.data.Dataset):
        return {None: source}
    kind = type(source)
    if kind.__module__.startswith("datasets."):
        if kind.__name__ == "DatasetDict":
            return {str(s): ray.data.from_huggingface(part) for s, part in source.items()}
        if kind.__name__ == "Dataset":
            return {None: ray.data.from_huggingface(source)}
    raise NeardupInputError(
        f"embed= runs over a ray.data.Dataset or a Hugging Face dataset of raw samples, got "
        f"{kind.__name__}; shards of vectors need no embed=."
    )


def _no_split(columns: Columns) -> Columns:
    return Columns(columns.vector, None, columns.ids, columns.labels)


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NeardupInputError(f"{name} must be an int >= 1, got {value!r}.")
