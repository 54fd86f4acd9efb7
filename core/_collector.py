"""``ActivationCollector``: batches of activations in, one float32 matrix per (split, layer) out.

Integrations feed it batch by batch. Each batch is copied once into float32 storage (the
caller may reuse its buffer); no per-sample Python objects are kept, and every step is linear
in the number of rows.

In memory, a ``(split, layer)`` is a list of per-batch chunks until its matrix is first asked
for; then the chunks are copied into one array, once, last chunk first, each chunk freed as
soon as it is copied. That merge needs a second copy's worth of memory at its peak (the
allocator seldom hands freed chunks back to the system at once: measured, resident memory
reaches two copies with batches under a few MB), so under a ``memory_budget`` a
``(split, layer)`` is merged in memory only when both copies fit, and goes to disk otherwise.

On disk, the chunks are appended to a ``.npy`` file (each freed once written) and every later
batch is appended to that file, so each row is written exactly once and nothing grows or
moves in place; reading maps the file (``np.memmap``).
"""

from __future__ import annotations

import errno
import os
import re
import struct
import weakref
from typing import Any

import numpy as np

from ._errors import NeardupInputError, closest_names
from ._validate import as_feature_matrix, as_sample_column, check_finite
from .views import TextRows, as_text_rows

__all__ = ["ActivationCollector", "check_memory_budget", "check_spill_dir"]

_FLOAT32 = np.dtype(np.float32)
_HEADER_BYTES = 128  # fixed .npy header size, so the row count can be rewritten in place
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- options
def check_memory_budget(value: Any) -> int | None:
    """Return the budget in bytes (``None``: no budget), or raise naming the accepted forms.

    Accepts a non-negative number of bytes or a string such as ``"2GB"`` / ``"512MiB"``
    (decimal kB/MB/GB/TB and binary KiB/MiB/GiB/TiB, case-insensitive).
    """
    if value is None:
        return None
    number = None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    ):
        number = float(value)
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            number = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if number is None or not np.isfinite(number) or number < 0:
        raise NeardupInputError(
            f"memory_budget={value!r} is not a size in bytes. Give a number of bytes >= 0 "
            "(e.g. 2_000_000_000), a string such as '2GB' or '512MiB' (units B, KB, MB, GB, "
            "TB, KiB, MiB, GiB, TiB), or None to keep every activation in memory."
        )
    return int(number)


def check_spill_dir(spill_dir: Any, budget: int | None) -> str | None:
    """Return ``spill_dir`` as a string path; it only makes sense with a budget."""
    if spill_dir is None:
        return None
    if budget is None:
        raise NeardupInputError(
            f"spill_dir={spill_dir!r} is only used with memory_budget=; pass a budget "
            "(e.g. memory_budget='4GB') or drop spill_dir."
        )
    try:
        path = str(os.fspath(spill_dir))
    except TypeError as err:
        raise NeardupInputError(
            f"spill_dir must be a path (str or os.PathLike), got {type(spill_dir).__name__}."
        ) from err
    if os.path.exists(path) and not os.path.isdir(path):
        raise NeardupInputError(
            f"spill_dir={path!r} exists and is not a directory; give a directory "
            "(it is created when missing)."
        )
    return path


#: longest split or layer name accepted by ``add`` (names title reports and spill files).
_MAX_NAME = 200


# --------------------------------------------------------------------------- spill files
def _npy_header(rows: int, dim: int) -> bytes:
    """A ``.npy`` (version 1.0) header of exactly ``_HEADER_BYTES`` for ``(rows, dim)`` float32.

    A fixed size lets the row count be rewritten in place while rows are appended after it.
    """
    text = f"{{'descr': '{_FLOAT32.str}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = _HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
    return (
        np.lib.format.magic(1, 0)
        + struct.pack("<H", body)
        + (text.ljust(body - 1) + "\n").encode("latin1")
    )


def _remove_file(file: Any, path: str, pid: int) -> None:
    """Close and delete a spill file (finalizer: must not reference its owner).

    The file is unbuffered, so closing it writes nothing; even if closing fails, the file
    is still deleted.
    """
    try:
        file.close()
    except OSError:
        pass
    if os.getpid() == pid:  # a forked child never removes its parent's files
        try:
            os.remove(path)
        except OSError:  # already gone, or still mapped on Windows: best effort
            pass


def _remove_dir(path: str, pid: int) -> None:
    """Delete a temporary spill directory and whatever is left in it (finalizer)."""
    if os.getpid() == pid:
        import shutil  # here: shutil (with bz2, lzma) is only needed once something spilled

        shutil.rmtree(path, ignore_errors=True)


def _slug(text: str) -> str:
    """A file-name-safe short form of a split or layer name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40]


class _SpillDir:
    """Where spill files go: ``spill_dir`` as given, or a temporary directory we own.

    Spill files hold a reference to it, so a temporary directory is removed (on garbage
    collection or at interpreter exit) only after the files in it.
    """

    def __init__(self, requested: str | None) -> None:
        if requested is None:
            import tempfile  # here: tempfile (with random, shutil) only once something spills

            self.path = tempfile.mkdtemp(prefix="neardup-")
            self._finalizer = weakref.finalize(self, _remove_dir, self.path, os.getpid())
        else:
            os.makedirs(requested, exist_ok=True)
            self.path = requested
            self._finalizer = None

    def remove(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


class _SpillFile:
    """The float32 rows of one ``(split, layer)`` in a ``.npy`` file, appended batch by batch.

    The file is only ever appended to (each row written once); its header is rewritten with
    the row count when the rows are read, as a read-only ``np.memmap``. It is deleted by
    :meth:`remove`, when this object is garbage collected, or at interpreter exit.
    """

    def __init__(self, place: _SpillDir, name: str, dim: int) -> None:
        import tempfile

        self.place = place  # keeps a temporary directory alive while this file exists
        fd, self.path = tempfile.mkstemp(prefix=f"neardup-{name}-", suffix=".npy", dir=place.path)
        # unbuffered: a failed write leaves nothing pending that a later seek, truncate or
        # close would try (and fail) to write again on a full disk
        self.file = os.fdopen(fd, "r+b", buffering=0)
        self.dim = dim
        self.rows = 0
        self._mapped: np.memmap | None = None
        self._finalizer = weakref.finalize(self, _remove_file, self.file, self.path, os.getpid())
        try:
            self._write_all(_npy_header(0, dim))
        except OSError as err:
            self._finalizer()
            raise self._full(err) from err

    def _write_all(self, data: Any) -> None:
        """Write every byte of ``data`` at the current position (raw writes may be short)."""
        view = memoryview(data).cast("B")
        while view:
            written = self.file.write(view)
            if not written:
                raise OSError(errno.ENOSPC, "no bytes written")
            view = view[written:]

    def _full(self, err: OSError) -> OSError:
        return OSError(
            err.errno,
            f"neardup: could not write activations to the spill file {self.path} ({err}); "
            "free space there, or pass ActivationCollector(spill_dir=...) on a larger disk. "
            "The rows collected before are kept.",
        )

    def append(self, values: np.ndarray) -> None:
        """Write ``(n, dim)`` rows after the others (converted to float32 batch by batch).

        A failed write (disk full) is cut back off, so the file keeps whole rows only.
        """
        try:
            self.file.seek(self.nbytes)
            self._write_all(np.ascontiguousarray(values, dtype=np.float32).data)
        except OSError as err:
            try:  # cut the partial rows off (shrinking needs no space)
                os.ftruncate(self.file.fileno(), self.nbytes)
            except OSError:
                pass  # the row count in the header still bounds what is read
            raise self._full(err) from err
        self.rows += len(values)
        self._mapped = None

    @property
    def nbytes(self) -> int:
        """Size of the file: header plus rows."""
        return _HEADER_BYTES + self.rows * self.dim * _FLOAT32.itemsize

    def array(self) -> np.memmap:
        """All rows so far as a read-only ``(rows, dim)`` memmap (the file is a valid .npy)."""
        if self._mapped is None:
            self.file.seek(0)
            self._write_all(_npy_header(self.rows, self.dim))  # rewrites bytes: no new space
            self._mapped = np.memmap(
                self.path, dtype=np.float32, mode="r", offset=_HEADER_BYTES,
                shape=(self.rows, self.dim),
            )  # fmt: skip
        return self._mapped

    def remove(self) -> None:
        self._mapped = None
        self._finalizer()


# --------------------------------------------------------------------------- buffers
class _Buffer:
    """Growing storage of one (split, layer): float32 rows (in memory or on disk), ids, labels."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.chunks: list[np.ndarray] = []  # in-memory rows; empty once spilled
        self.spill: _SpillFile | None = None
        self.id_chunks: list[np.ndarray] = []
        self.label_chunks: list[np.ndarray] = []
        self.rows = 0
        self.explicit_ids: bool | None = None
        self.has_labels: bool | None = None
        # the normalised texts of TextRows batches (the word check of find_duplicates); None
        # once a batch came without texts: the rows are then returned without them
        self.texts: list[str] | None = []
        self.ngram: int | None = None  # the TextView gram length of every batch, if one
        self.markup: list[str] | None = []  # their markup words ("": none), while all known
        self.grouped: list[str] | None = []  # their grouped words ("": none), while all known

    @property
    def ram_bytes(self) -> int:
        """Bytes of float32 rows held in memory (0 once spilled)."""
        return 0 if self.spill is not None else self.rows * self.dim * _FLOAT32.itemsize

    def append(
        self,
        values: np.ndarray,
        ids: Any,
        labels: Any,
        where: str,
        texts: tuple[str, ...] | None = None,
        ngram: int | None = None,
        markup: tuple[str, ...] | None = None,
        grouped: tuple[str, ...] | None = None,
    ) -> None:
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
        id_array = (
            _column(ids, n, "ids", where)
            if given_ids
            else np.arange(self.rows, self.rows + n, dtype=np.int64)
        )
        label_array = None if labels is None else _column(labels, n, "labels", where)
        # everything is checked: from here on the batch is stored whole or not at all (a
        # failed spill write raises before anything below changes)
        if self.spill is not None:
            self.spill.append(values)
        else:
            self.chunks.append(np.array(values, dtype=np.float32, copy=True))
        self.explicit_ids, self.has_labels = given_ids, labels is not None
        self.id_chunks.append(id_array)
        if label_array is not None:
            self.label_chunks.append(label_array)
        if self.texts is not None and texts is not None and len(texts) == n:
            self.texts.extend(texts)
        else:
            self.texts = None
        if self.texts is not None and self.markup is not None and markup is not None:
            self.markup.extend(markup)
        else:
            self.markup = None
        if self.texts is not None and self.grouped is not None and grouped is not None:
            self.grouped.extend(grouped)
        else:
            self.grouped = None
        self.ngram = ngram if self.rows == 0 or self.ngram == ngram else None
        self.rows += n

    def move_to_disk(self, spill: _SpillFile) -> None:
        """Write the in-memory chunks to ``spill`` in order, then drop them.

        Nothing new is allocated, and a failed write (disk full) leaves the rows in memory
        as they were.
        """
        try:
            for chunk in self.chunks:
                spill.append(chunk)
        except BaseException:
            spill.remove()
            raise
        self.chunks, self.spill = [], spill

    def consolidate(self) -> None:
        """Merge the in-memory chunks into one array, each chunk freed once it is copied.

        Filled from the end so that every ``pop`` is O(1) and the most recently allocated
        chunks (on top of the heap) are released first.
        """
        if len(self.chunks) > 1:
            out = np.empty((self.rows, self.dim), dtype=np.float32)
            end = self.rows
            chunks, self.chunks = self.chunks, []
            while chunks:
                chunk = chunks.pop()
                out[end - len(chunk) : end] = chunk
                end -= len(chunk)
                del chunk
            self.chunks = [out]
        for name in ("id_chunks", "label_chunks"):
            parts = getattr(self, name)
            if len(parts) > 1:
                setattr(self, name, [np.concatenate(parts)])

    def discard(self) -> None:
        """Drop the rows; a spill file is deleted."""
        if self.spill is not None:
            self.spill.remove()
            self.spill = None
        self.chunks, self.id_chunks, self.label_chunks = [], [], []
        self.texts = []
        self.ngram = None
        self.markup = []
        self.grouped = []

    @property
    def values(self) -> np.ndarray:
        """The stored ``(rows, dim)`` float32 rows: :class:`~neardup.views.TextRows` when
        every batch came with its texts."""
        self.consolidate()
        values = self.spill.array() if self.spill is not None else self.chunks[0]
        if self.texts and len(self.texts) == self.rows:
            markup = self.markup if self.markup and len(self.markup) == self.rows else None
            grouped = self.grouped if self.grouped and len(self.grouped) == self.rows else None
            return as_text_rows(values, self.texts, self.ngram, markup, grouped)
        return values

    @property
    def ids(self) -> np.ndarray:
        self.consolidate()
        return self.id_chunks[0]

    @property
    def labels(self) -> np.ndarray | None:
        self.consolidate()
        return self.label_chunks[0] if self.label_chunks else None


def _column(values: Any, n: int, name: str, where: str) -> np.ndarray:
    array = as_sample_column(values)
    if array.ndim != 1 or len(array) != n:
        raise NeardupInputError(
            f"{where}: {name} has shape {array.shape} for a batch of {n} samples; "
            f"give one {name[:-1]} per sample."
        )
    return array.copy()


# --------------------------------------------------------------------------- public API
class ActivationCollector:
    """Accumulates activations per ``(split, layer)`` for :meth:`analyze`.

    Parameters
    ----------
    memory_budget:
        Most bytes of float32 activation rows to hold in memory (an int, or a string such
        as ``"2GB"`` / ``"512MiB"``). When a batch would take the rows in memory past it, the
        ``(split, layer)`` receiving the batch moves to a ``.npy`` file and collects there
        from then on. A ``(split, layer)`` is merged into one array in memory (which needs
        a second copy while it runs) only when both copies fit too, so the activation bytes
        the collector holds never exceed the budget. Ids and labels stay in memory (8 bytes
        or so per sample). ``None`` (default): everything in memory.
        :meth:`get`, :meth:`arrays` and :meth:`analyze` read spilled rows as read-only
        ``np.memmap`` arrays; :meth:`analyze` still builds one in-memory float32 matrix of
        the layer it is analysing (one layer at a time).
    spill_dir:
        Directory for the spill files (created when missing; files are named
        ``neardup-<split>-<layer>-*.npy``). Default: a fresh ``neardup-*`` directory in
        :func:`tempfile.gettempdir` (``$TMPDIR``), created at the first spill. Spill files
        (and that temporary directory) are deleted by :meth:`clear`, when the collector is
        garbage collected, and at interpreter exit; on Linux and macOS arrays already
        returned keep reading their data after that.

    Examples
    --------
    >>> collector = ActivationCollector()
    >>> collector.add("train", "embedding", np.random.rand(32, 64), labels=np.zeros(32))
    >>> results = collector.analyze()  # doctest: +SKIP
    >>> big = ActivationCollector(memory_budget="2GB")  # larger runs go to disk
    """

    def __init__(
        self,
        *,
        memory_budget: int | float | str | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._budget = check_memory_budget(memory_budget)
        self._spill_dir = check_spill_dir(spill_dir, self._budget)
        self._place: _SpillDir | None = None
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
        ``labels`` (ints or strings) are optional. Values are copied as float32 rows
        (written to the spill file instead when this ``(split, layer)`` is on disk). When
        every batch of a ``(split, layer)`` is :class:`~neardup.views.TextRows` (a
        ``TextView``'s output), their texts are kept too, so :meth:`get` returns text rows
        and the analysis checks the words of each close pair.
        """
        for what, name in (("split", split), ("layer", layer)):
            if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
                raise NeardupInputError(
                    f"{what}={str(name)[:40]!r} ({type(name).__name__}) is not valid: a {what} "
                    f"name must be a non-empty string of at most {_MAX_NAME} characters; pass "
                    f"e.g. str({what}) or a short name."
                )
        where = f"split {split!r}, layer {layer!r}"
        texts = values.texts if isinstance(values, TextRows) else None
        ngram = values.ngram if isinstance(values, TextRows) else None
        markup = values.markup if isinstance(values, TextRows) else None
        grouped = values.grouped if isinstance(values, TextRows) else None
        matrix = as_feature_matrix(values, f"batch for {where}")
        check_finite(matrix, f"batch for {where}")
        buffer = self._buffers.get((split, layer))
        if buffer is None:  # registered once its first batch is stored
            buffer = _Buffer(matrix.shape[1])
        elif matrix.shape[1] != buffer.dim:
            raise NeardupInputError(
                f"{where}: batch has {matrix.shape[1]} features per sample, earlier batches "
                f"had {buffer.dim}. Pool or flatten every batch the same way."
            )
        if self._over_budget(buffer, matrix.size * _FLOAT32.itemsize):
            self._spill(buffer, split, layer)
        buffer.append(matrix, ids, labels, where, texts, ngram, markup, grouped)
        self._buffers[(split, layer)] = buffer

    def _over_budget(self, buffer: _Buffer, incoming: int) -> bool:
        """Whether ``incoming`` more bytes for an in-memory ``buffer`` would exceed the budget."""
        if self._budget is None or buffer.spill is not None:
            return False
        return self.nbytes + incoming > self._budget

    def _spill(self, buffer: _Buffer, split: str, layer: str) -> None:
        """Move ``buffer``'s rows to a new spill file (creating the spill directory once)."""
        if self._place is None:
            self._place = _SpillDir(self._spill_dir)
        name = f"{_slug(split)}-{_slug(layer)}"
        buffer.move_to_disk(_SpillFile(self._place, name, buffer.dim))

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self._buffers))

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(layer for _, layer in self._buffers))

    def __len__(self) -> int:
        return len(self._buffers)

    @property
    def memory_budget(self) -> int | None:
        """The budget in bytes (``None``: no budget)."""
        return self._budget

    @property
    def nbytes(self) -> int:
        """Bytes of float32 activation rows held in memory (spilled rows not counted)."""
        return sum(b.ram_bytes for b in self._buffers.values())

    @property
    def disk_nbytes(self) -> int:
        """Bytes of the spill files on disk (rows plus a 128-byte header per file)."""
        return sum(b.spill.nbytes for b in self._buffers.values() if b.spill is not None)

    @property
    def spill_files(self) -> list[str]:
        """Paths of the ``.npy`` files holding spilled rows (valid .npy once read)."""
        return [b.spill.path for b in self._buffers.values() if b.spill is not None]

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
        """``(values (n, d) float32, ids (n,), labels (n,) or None)`` of one split and layer.

        ``values`` is the stored array itself (no copy): in memory, or a read-only
        ``np.memmap`` of the spill file when this split and layer went to disk; viewed as
        :class:`~neardup.views.TextRows` when every batch came with its texts.
        """
        buffer = self._buffer(split, layer)
        if len(buffer.chunks) > 1 and self._over_budget(buffer, buffer.ram_bytes):
            self._spill(buffer, split, layer)  # merging in memory would need two copies
        return buffer.values, buffer.ids, buffer.labels

    def arrays(self, layer: str) -> dict[str, np.ndarray]:
        """``split -> values`` for one layer (views of the stored data, not copies)."""
        return {s: self.get(s, layer)[0] for s in self.splits if (s, layer) in self._buffers}

    def clear(self) -> None:
        """Drop every stored activation and delete the spill files."""
        for buffer in self._buffers.values():
            buffer.discard()
        self._buffers.clear()
        if self._place is not None:
            self._place.remove()
            self._place = None

    def analyze(self, layers: list[str] | None = None, **options: Any) -> dict:
        """Run :func:`neardup.find_duplicates` on every layer (or ``layers``).

        Options are those of ``find_duplicates`` (threshold, normalize, reduce, k, backend,
        reference, seed, ...). Returns ``layer -> DuplicatesResult``.
        """
        from ._pipeline import analyze_layers

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
        for layer in layers or []:
            if layer not in self.layers:
                raise NeardupInputError(
                    f"unknown layer {layer!r} ({closest_names(layer, self.layers)})."
                )
        wanted = self.layers if layers is None else list(layers)
        for layer in wanted:
            missing = [s for s in self.splits if (s, layer) not in self._buffers]
            if missing:
                raise NeardupInputError(
                    f"layer {layer!r} has no activations for split(s) {missing}; every split "
                    "must be collected for every layer."
                )
        rows = {(s, layer): self.get(s, layer) for s, layer in self._buffers if layer in wanted}
        return analyze_layers(rows, wanted, **options)
