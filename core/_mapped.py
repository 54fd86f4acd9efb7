"""Memory-mapped inputs kept out of the resident set: pages handed back after a streamed pass,
scattered rows of large files read with ``pread`` instead of through the map.

A row read from a ``np.load(..., mmap_mode="r")`` array stays mapped into the process once
touched: streaming a 10M x 64 float32 file (2.4 GiB) block by block would end with all of it
counted in the process's RSS. :func:`release_pages` tells the kernel that the pages are not
needed now (``madvise(MADV_DONTNEED)``): they leave this process's resident set but stay in the
page cache, so reading them again costs no disk access while memory lasts.

Gathers of scattered rows (a cell's members) are another matter: one row maps a whole
page-cache folio, not its 4 KiB page (measured on Linux 6.18, ext4: 250 random 256-byte rows of
a 768 MB ``.npy`` left 204 MiB resident), and mapping it again after a release cost 43-250 us a
row. So rows of files above 1 GiB are read with ``os.pread`` (:class:`FileRows`, about 1.5 us a
row, nothing mapped); smaller files are gathered through the map and may stay resident.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

__all__ = [
    "READ_ABOVE_BYTES",
    "FileRows",
    "mapped_empty",
    "mapped_source",
    "release_pages",
]

#: memory-mapped files larger than this are gathered by ``pread`` (:class:`FileRows`).
READ_ABOVE_BYTES = 1 << 30


def mapped_source(array: Any) -> np.memmap | None:
    """The ``np.memmap`` that ``array``'s memory belongs to, or None.

    Follows ``.base``: ``np.asarray`` of a memmap (as input validation does) and its slices
    are plain ndarrays whose base chain ends in the memmap.
    """
    seen = 0
    while array is not None and seen < 64:
        if isinstance(array, np.memmap) and getattr(array, "_mmap", None) is not None:
            return array
        array = getattr(array, "base", None)
        seen += 1
    return None


def mapped_empty(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """A new uninitialised array of ``shape`` in an anonymous memory map of its own.

    For large scratch arrays written once and dropped (the screen's ``(N, d')`` projected
    rows, the routing's home-leaf limits): numpy asks for transparent huge pages above 4 MiB,
    whose first touch cost 0.1-0.4 s of system time per 128 MB on the project's 2-vCPU
    machines (the kernel compacting memory to find them), against a steady 0.15-0.18 s for
    the 4 KiB pages of a map (measured at 1M x 64 in the routing pass). The pages go back to
    the system when the array and its views go.

    Where the platform has them, the map is private (not shared memory) and populated when it
    is made (``MAP_POPULATE``): the kernel fills all its pages in one call instead of one fault
    per page at first touch (measured for 132 MB: about 0.09 s of system time shared and
    faulted, 0.06 private and faulted, 0.05 private and populated; and per 256 MB of a
    reference index's transformed rows in a fresh process, huge pages cost 0.02-0.04 s in some
    runs and 0.5-0.6 s in others, faulted 4 KiB pages a steady 0.16-0.18 s, populated ones
    0.08-0.11 s). Every array made here is written in full, so no page is made in vain; the
    pages count in the resident set from the start.
    """
    count = int(np.prod(shape, dtype=np.int64))
    size = max(1, count * np.dtype(dtype).itemsize)
    private = getattr(mmap, "MAP_PRIVATE", None)
    if private is None:  # no POSIX flags (Windows)
        buffer = mmap.mmap(-1, size)
    else:
        buffer = mmap.mmap(-1, size, flags=private | getattr(mmap, "MAP_POPULATE", 0))
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def release_pages(array: Any) -> bool:
    """Drop the pages of a file-backed ``np.memmap`` (or a view of one) from this process's
    resident set.

    Only read-only and shared writable maps (``mode`` ``"r"``, ``"r+"``, ``"w+"``): a
    copy-on-write map (``"c"``) would lose its private changes. Returns whether pages were
    released (False for anything else: plain arrays, other platforms).
    """
    source = mapped_source(array)
    if source is None or getattr(source, "mode", "c") == "c":
        return False
    handle = source._mmap
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or not hasattr(handle, "madvise"):
        return False
    try:
        handle.madvise(advice)
    except (OSError, ValueError):  # a closed or unusual map: leave it as it is
        return False
    return True


class FileRows:
    """Rows of a memory-mapped ``(N, d)`` array read from its file with ``os.pread``.

    The rows land in a new array without being mapped into this process, so gathers of
    scattered rows leave the resident set as it was. Use :meth:`of` to get one.
    """

    def __init__(self, path: str, start: int, stride: int, dtype: np.dtype, d: int) -> None:
        self._file = open(path, "rb")
        self._start = int(start)  # file position of row 0
        self._stride = int(stride)
        self._dtype = np.dtype(dtype)
        self._d = int(d)
        self._row_bytes = self._dtype.itemsize * self._d

    @classmethod
    def of(cls, array: Any, *, above: int | None = None) -> FileRows | None:
        """A reader for ``array`` when it is a 2-D view, with contiguous rows, of a read-only or
        shared ``np.memmap`` of a file larger than ``above`` bytes (``None``:
        :data:`READ_ABOVE_BYTES`); otherwise None."""
        above = READ_ABOVE_BYTES if above is None else int(above)
        source = mapped_source(array)
        if (
            source is None
            or getattr(source, "mode", "c") == "c"  # private changes are not in the file
            or not getattr(source, "filename", None)
            or not hasattr(os, "pread")
            or np.ndim(array) != 2
            or array.strides[1] != array.itemsize
            or array.strides[0] < array.itemsize * array.shape[1]
        ):
            return None
        try:
            size = os.path.getsize(source.filename)
        except OSError:
            return None
        if size <= above:
            return None
        # the map starts at the file position ``offset`` rounded down to the granularity (a
        # memmap's slices repeat their parent's ``offset``: positions come from the map)
        try:
            origin = np.frombuffer(source._mmap, dtype=np.uint8).__array_interface__["data"][0]
        except (TypeError, ValueError):
            return None
        at = array.__array_interface__["data"][0] - origin
        if not 0 <= at < len(source._mmap):
            return None
        start = int(source.offset) - int(source.offset) % mmap.ALLOCATIONGRANULARITY + at
        return cls(source.filename, start, array.strides[0], array.dtype, array.shape[1])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), d)`` copy of the given rows (positions in the array)."""
        fd, size, pread = self._file.fileno(), self._row_bytes, os.pread
        offsets = (self._start + np.asarray(rows, dtype=np.int64) * self._stride).tolist()
        data = b"".join([pread(fd, size, offset) for offset in offsets])
        if len(data) != size * len(offsets):
            raise OSError(f"short read from {self._file.name}: the file changed under its map")
        return np.frombuffer(data, dtype=self._dtype).reshape(len(offsets), self._d).copy()

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()
