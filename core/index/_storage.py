"""The on-disk format of a reference index: file names, ``meta.json``, atomic writes.

Directory layout (format 1; no pickle anywhere, every array loads with ``allow_pickle=False``)::

    meta.json      format version, neardup version, settings, resolved threshold, sizes
    index.ann      annoy index (euclidean) of the transformed reference rows
    vectors.npy    (size, dim) float32 transformed reference rows, for exact distances
    transform.npz  the fitted transform: column norms and/or PCA mean and components
    ids.npy        (size,) reference ids: integers or unicode strings
    labels.npy     (size,) reference labels, when given
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import NeardupInputError

__all__ = [
    "ANNOY",
    "FORMAT",
    "FORMAT_VERSION",
    "IDS",
    "LABELS",
    "META",
    "TRANSFORM",
    "VECTORS",
    "corrupt",
    "read_meta",
    "storable",
    "write_atomic",
]

#: version of the on-disk layout; :meth:`ReferenceIndex.load` refuses any other.
FORMAT_VERSION = 1
FORMAT = "neardup-reference-index"
META, ANNOY, VECTORS, TRANSFORM, IDS, LABELS = (
    "meta.json",
    "index.ann",
    "vectors.npy",
    "transform.npz",
    "ids.npy",
    "labels.npy",
)

def storable(values: np.ndarray, name: str, split: str) -> np.ndarray:
    """``values`` as an array ``np.save`` writes without pickle (numbers or unicode strings).

    Object arrays of all-str or all-int values are converted; anything else is refused.
    """
    if values.dtype != object:
        return values
    items = values.tolist()
    if all(isinstance(v, str) for v in items):
        return np.array(items, dtype=str)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        return np.array(items, dtype=np.int64)
    kinds = sorted({type(v).__name__ for v in items})
    raise NeardupInputError(
        f"{name} for split {split!r} hold {', '.join(kinds)} values; a saved reference index "
        f"stores {name} as ints or strings only. Convert them, e.g. [str(v) for v in {name}]."
    )


def write_atomic(target: Path, write: Any) -> None:
    """Call ``write(file)`` on a new file beside ``target``, then rename it over ``target``."""
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as fh:
        write(fh)
    os.replace(partial, target)


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of the index at ``path``, checked for format and version."""
    if not path.exists():
        raise NeardupInputError(
            f"no reference index at {str(path)!r}: the directory does not exist. Build one "
            "with ReferenceIndex.build(...).save(path) or `neardup index build`."
        )
    if not path.is_dir():
        raise NeardupInputError(
            f"{str(path)!r} is a file; a reference index is a directory written by "
            "ReferenceIndex.save or `neardup index build`."
        )
    if not (path / META).is_file():
        raise NeardupInputError(
            f"{str(path)!r} is not a neardup reference index: {META} is missing. Build one "
            "with ReferenceIndex.build(...).save(path) or `neardup index build`."
        )
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise corrupt(path, f"{META} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NeardupInputError(
            f"{str(path)!r} is not a neardup reference index: {META} does not describe one."
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise NeardupInputError(
            f"{str(path)!r} is a reference index of format version {version!r} (written by "
            f"neardup {meta.get('neardup_version')}); this neardup reads format version "
            f"{FORMAT_VERSION}. Rebuild the index with this version, or score it with the "
            "neardup that wrote it."
        )
    return meta


def corrupt(path: Path, detail: str) -> NeardupInputError:
    return NeardupInputError(
        f"the reference index at {str(path)!r} is damaged: {detail}. Save it again."
    )
