"""The on-disk format of a reference index: file names, ``meta.json``, generations, checks.

Directory layout (format 5; no pickle anywhere, every array loads with ``allow_pickle=False``)::

    meta.json        format version, neardup version, settings (``backend``: "cells" or
                     "annoy"), resolved threshold, sizes, the current generation and each of
                     its files' size and SHA-256
    .lock            serialises saves to the directory
    generation-<id>/ the files below (format 1 had them beside meta.json; still readable)
      cells.npz      the cell engine (default): cell centres (``centroids``, ``parent``,
                     ``coarse``, ``projection`` for wide rows), ``starts`` (C + 1,) and
                     ``members`` (E,) listing the reference rows of each cell, ``margin``;
                     format 4: ``in_cell_order`` when every row is listed once (at home)
                     and ``vectors.npy`` holds the rows in that order; format 5:
                     ``screen_projection`` (dim, 16) and ``screen_largest`` with screen.npy
      index.ann      or, for ``backend=Annoy(...)`` and formats 1 and 2 (always annoy): the
                     annoy index (euclidean) of the transformed reference rows
      vectors.npy    (size, dim) float32 transformed reference rows, for exact distances
                     (row ``s`` is reference row ``members[s]`` with ``in_cell_order``)
      screen.npy     format 5, cells listed at home with rows of 32+ dimensions (where
                     the projection screens out at least 98 % of a sample's in-cell pairs):
                     (size, 17) float32 rows through a 16-dimension projection and their
                     squared norms, in the order of vectors.npy (the scoring screen; the
                     projection is ``screen_projection`` in cells.npz)
      transform.npz  the fitted transform: column norms and/or PCA mean and components
      ids.npy        (size,) reference ids: integers or unicode strings
      labels.npy     (size,) reference labels, when given

A save writes a new generation, fsyncs it, and swaps it in by renaming ``meta.json`` (one
atomic step); older generations are removed afterwards. A load reads ``meta.json`` once and
opens the generation it names, after checking sizes and digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import NeardupInputError

__all__ = [
    "ANNOY",
    "CELLS",
    "DIGESTED",
    "FORMAT",
    "FORMAT_VERSION",
    "GENERATION_PREFIX",
    "IDS",
    "LABELS",
    "LEGACY_FILES",
    "LOAD_ATTEMPTS",
    "LOCK",
    "META",
    "READABLE_VERSIONS",
    "SCREEN",
    "TRANSFORM",
    "VECTORS",
    "GenerationGone",
    "corrupt",
    "file_record",
    "fsync_file",
    "generation_name",
    "meta_changed",
    "read_meta",
    "remove_old_generations",
    "save_lock",
    "storable",
    "verify_file",
    "write_file",
    "write_rows_in_order",
]

#: version of the on-disk layout (5: the cells may carry a projected screen, ``screen.npy``;
#: 4: the cells' rows may be stored in cell order,
#: ``in_cell_order``; 3: the engine in ``settings["backend"]``, cells by default; 2: files in
#: a generation folder named by ``meta.json``, with sizes and digests, always annoy);
#: :meth:`ReferenceIndex.load` also reads versions 1 to 4.
FORMAT_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
GENERATION_PREFIX = "generation-"
LOCK = ".lock"
#: times load re-reads meta.json when a concurrent save swapped the generation it named.
LOAD_ATTEMPTS = 20
FORMAT = "neardup-reference-index"
META, ANNOY, VECTORS, TRANSFORM, IDS, LABELS = (
    "meta.json",
    "index.ann",
    "vectors.npy",
    "transform.npz",
    "ids.npy",
    "labels.npy",
)
CELLS = "cells.npz"
SCREEN = "screen.npy"
LEGACY_FILES = (ANNOY, VECTORS, TRANSFORM, IDS, LABELS)
#: files whose SHA-256 is recorded and checked (vectors.npy and screen.npy: size and shape
#: only, so a large index still opens quickly; they are only read, never trusted for memory
#: safety).
DIGESTED = (ANNOY, CELLS, TRANSFORM, IDS, LABELS)


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


def write_file(target: Path, write: Any) -> None:
    """Call ``write(file)`` on the new file ``target`` (in a new generation), then fsync it."""
    with open(target, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


#: bytes of rows gathered at once by write_rows_in_order (4 MB: a 16 MB buffer raised the
#: build-and-save peak RSS by 9 MiB at 1M x 64, where no freed memory was left to hold it;
#: 1M x 64 rows in a shuffled order, median of 4: 0.185 -> 0.156 CPU s).
_WRITE_BYTES = 4 << 20


def write_rows_in_order(fh: Any, rows: np.ndarray, order: np.ndarray) -> None:
    """Write ``rows[order]`` (``(N, d)``, ``order`` a permutation) to ``fh`` as a ``.npy``
    file, gathered 4 MB at a time into one reused buffer (no second copy of the rows in
    memory, and no fresh pages to fault in per block: measured 0.18 -> 0.11 CPU s at 1M x 64)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(rows.dtype),
        "fortran_order": False,
        "shape": (len(order), *rows.shape[1:]),
    }
    np.lib.format.write_array_header_1_0(fh, header)
    step = max(1, _WRITE_BYTES // max(1, rows[:1].nbytes))
    buffer = np.empty((min(step, len(order)), *rows.shape[1:]), dtype=rows.dtype)
    for start in range(0, len(order), step):
        chosen = order[start : start + step]
        np.take(rows, chosen, axis=0, out=buffer[: len(chosen)])
        fh.write(buffer[: len(chosen)].data)


def fsync_file(target: Path) -> None:
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())


class GenerationGone(Exception):
    """The generation named by the ``meta.json`` just read was swapped out meanwhile."""


def meta_changed(path: Path, meta: dict[str, Any]) -> bool:
    try:
        return json.loads((path / META).read_text(encoding="utf-8")) != meta
    except (OSError, ValueError):
        return True


def generation_name(path: Path, generation: str) -> str:
    """The generation folder named in ``meta.json``: a plain name, never a path elsewhere."""
    if not re.fullmatch(re.escape(GENERATION_PREFIX) + r"[0-9a-f]{1,64}", generation):
        raise corrupt(path, f"{META} names an invalid generation {generation[:80]!r}")
    return generation


@contextlib.contextmanager
def save_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path/.lock`` for the duration of one save (POSIX flock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: saves are not serialised
        yield
        return
    with open(path / LOCK, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_old_generations(path: Path, keep: str) -> None:
    """Delete every other generation and the files of a format-1 index (after the swap)."""
    for entry in path.iterdir():
        if entry.name.startswith(GENERATION_PREFIX) and entry.name != keep and entry.is_dir():
            import shutil  # here: costs ~2 ms at import

            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name in LEGACY_FILES and entry.is_file():
            entry.unlink(missing_ok=True)


def file_record(target: Path, *, digest: bool) -> dict[str, Any]:
    """Size (and SHA-256) of ``target`` for ``meta.json``."""
    record: dict[str, Any] = {"bytes": target.stat().st_size}
    if digest:
        with open(target, "rb") as fh:
            record["sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
    return record


def verify_file(path: Path, target: Path, record: Any) -> None:
    """Refuse ``target`` unless its size (and SHA-256, when recorded) match ``meta.json``."""
    name = target.name
    if not isinstance(record, dict) or not isinstance(record.get("bytes"), int):
        raise corrupt(path, f"{META} records no size for {name}")
    size = target.stat().st_size
    if size != record["bytes"]:
        raise corrupt(path, f"{name} has {size:,} bytes, {META} recorded {record['bytes']:,}")
    expected = record.get("sha256")
    if name in DIGESTED and not isinstance(expected, str):
        raise corrupt(path, f"{META} records no SHA-256 for {name}")
    if expected is not None:
        with open(target, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
        if actual != expected:
            raise corrupt(
                path, f"{name} does not match the SHA-256 recorded in {META} (changed or damaged)"
            )


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
    except (OSError, ValueError, RecursionError) as err:
        raise corrupt(path, f"{META} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NeardupInputError(
            f"{str(path)!r} is not a neardup reference index: {META} does not describe one."
        )
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise NeardupInputError(
            f"{str(path)!r} is a reference index of format version {version!r} (written by "
            f"neardup {meta.get('neardup_version')!s:.40}); this neardup reads format "
            f"versions {READABLE_VERSIONS[0]} to {FORMAT_VERSION}. Rebuild the index with "
            "this version, or score it with the neardup that wrote it."
        )
    return meta


def corrupt(path: Path, detail: str) -> NeardupInputError:
    return NeardupInputError(
        f"the reference index at {str(path)!r} is damaged: {detail}. Save it again."
    )
