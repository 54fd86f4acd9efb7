"""``Rows``: the transformed float32 feature rows, streamed block by block or materialised once.

The annoy index keeps its own copy of every vector, so filling it from a full normalised
matrix would hold the data three times (the caller's arrays, the matrix, the index). ``Rows``
produces the normalised rows block by block straight from the caller's arrays; the matrix is
materialised only once the index is gone (the exact distances need it). At 1M x 64 this is
the difference between ~1 GiB and ~0.75 GiB peak RSS (``benchmarks/bench_duplicates.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .._mapped import FileRows, release_pages
from .._normalize import row_norms, squared_norms
from .._transform import Transform

__all__ = ["Rows"]

_BLOCK_ROWS = 65_536
#: a gather whose rows switch arrays fewer than this many times copies each run of rows from
#: one array straight into place (a cell's rows are two ascending runs, so a handful of runs
#: over the splits), instead of masking and scattering per array (measured at 1M x 64 over
#: two splits: 0.39 -> 0.36 s for the rows of every cell).
_FEW_RUNS = 16


class Rows:
    """Rows of one or more ``(n_i, d)`` arrays, stacked, cast to float32 and normalised.

    Parameters
    ----------
    arrays:
        Validated ``(n_i, d)`` numeric arrays (any float or int dtype); never modified.
    normalize:
        ``"row"``, ``"column"`` or ``None``, as in :func:`neardup.find_duplicates` (column
        norms are then taken over all arrays together, in one streamed pass), or a fitted
        ``Transform`` (``core/_transform.py``) without PCA: the width must not change, as the
        values before the transform are hashed for exact copies.
    """

    def __init__(self, arrays: Sequence[np.ndarray], normalize: str | Transform | None) -> None:
        self._arrays = list(arrays)
        self.transform = (
            normalize
            if isinstance(normalize, Transform)
            else Transform.fit(self._arrays, normalize=normalize)
        )
        if self.transform.reducer is not None:
            raise ValueError("Rows streams width-preserving transforms only (no PCA)")
        self.normalize = self.transform.normalize
        self.n = sum(len(a) for a in self._arrays)
        self.d = int(self._arrays[0].shape[1])
        self._offsets = np.concatenate([[0], np.cumsum([len(a) for a in self._arrays])])
        self._dtype = np.result_type(*self._arrays)  # of a gather across arrays
        self._matrix: np.ndarray | None = None
        # row normalisation without PCA: every row's norm, kept from the first full pass so
        # that a gather divides by it (one pass) instead of normalising the rows again
        self._by_row = self.normalize == "row" and self.transform.reducer is None
        self._norms: np.ndarray | None = None
        self._norms_filled = 0
        # squared norms of the normalised rows, kept from the first full pass (see squares)
        self._squares: np.ndarray | None = None
        self._squares_filled = 0
        # memmapped inputs above 1 GiB: scattered rows read from the file (not mapped)
        self._readers = [FileRows.of(a) for a in self._arrays]

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Rows:
        """Wrap an already normalised float32 ``(N, d)`` matrix (no copy)."""
        rows = cls([matrix], None)
        rows._matrix = matrix
        return rows

    @classmethod
    def transformed(cls, arrays: Sequence[np.ndarray], transform: Transform) -> Rows:
        """The rows of ``arrays`` through a fitted ``transform``.

        Streamed block by block when the width is kept (no full copy while the annoy index
        exists); with PCA the reduced rows are materialised at once (they are small).
        """
        if transform.reducer is None:
            return cls(arrays, transform)
        return cls.from_matrix(transform.apply_all(arrays))

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.d

    def _raw_blocks(self, block_rows: int = _BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(global start row, view)`` blocks of the caller's arrays, in their own dtype."""
        for offset, array in zip(self._offsets, self._arrays):
            for start in range(0, len(array), block_rows):
                yield int(offset) + start, array[start : start + block_rows]
                release_pages(array)  # a memmap's block is copied by now: out of the RSS

    def blocks(
        self, block_rows: int = _BLOCK_ROWS, *, reuse: bool = False, out: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(global start row, normalised float32 block)``; one block in memory at a time.

        ``reuse``: row-normalised blocks are written into one buffer, each over the last (for
        a caller done with a block before it asks for the next): no new pages for every block
        (at 1M x 64, 16 blocks of 16 MB in the routing pass).

        ``out``: that buffer, the caller's: a float32 ``(block_rows, w)`` array, ``w >= d``,
        whose first ``d`` columns receive every block (each over the last; the block is that
        view), for a caller that keeps columns of its own beside the rows. Row-normalised
        blocks are divided straight into it; the same values either way.
        """
        if self._matrix is not None or not self._by_row:
            for start, block in self._unscaled_blocks(block_rows):
                if out is not None:
                    into = out[: len(block), : self.d]
                    np.copyto(into, block)
                    block = into
                yield start, block
            return
        buffer = None if out is None else out[:, : self.d]
        for start, raw in self._raw_blocks(block_rows):
            # float32 rows are divided straight into a new block (one pass); others are cast
            # to a float32 copy first and divided in place (the same values either way)
            if reuse and buffer is None:
                buffer = np.empty((min(block_rows, self.n), self.d), dtype=np.float32)
            if raw.dtype == np.float32:
                block = raw
            elif buffer is not None:
                block = buffer[: len(raw)]
                np.copyto(block, raw, casting="unsafe")
            else:
                block = np.array(raw, dtype=np.float32)
            if self._norms_filled == self.n:  # recorded by an earlier pass: the same values
                norms = self._norms[start : start + len(block)]
            else:
                norms = row_norms(block)
                self._keep_norms(start, norms)
            if block is raw:
                out = None if buffer is None else buffer[: len(raw)]
                block = np.divide(raw, norms[:, None], out=out)
            else:
                block /= norms[:, None]
            yield start, block

    def _unscaled_blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`blocks` of a materialised matrix or of a transform other than row norms."""
        if self._matrix is not None:
            for start in range(0, self.n, block_rows):
                yield start, self._matrix[start : start + block_rows]
            return
        for start, raw in self._raw_blocks(block_rows):
            yield start, self.transform.apply(raw)

    def _keep_norms(self, start: int, norms: np.ndarray) -> None:
        """Record the norms of rows ``start:start + len(norms)`` while a pass runs in order."""
        if self._norms is None:
            if start != 0:
                return
            self._norms = np.empty(self.n, dtype=np.float32)
        if start == self._norms_filled:
            self._norms[start : start + len(norms)] = norms
            self._norms_filled += len(norms)

    def squares(self, start: int, block: np.ndarray) -> np.ndarray:
        """``(m,)`` float32 squared norms (float64 sums, :func:`squared_norms`) of ``block``,
        the ``(m, d)`` normalised rows ``start:start + m`` as :meth:`blocks` gives them.

        Recorded while a pass asks for them in order from row 0 (the sample kNN's), then read
        back (the routing's pass: the same values, 0.09 CPU s fewer at 1M x 64).
        """
        if self._squares_filled == self.n:
            return self._squares[start : start + len(block)]
        values = squared_norms(block).astype(np.float32)
        if self._squares is None and start == 0:
            self._squares = np.empty(self.n, dtype=np.float32)
        if self._squares is not None and start == self._squares_filled:
            self._squares[start : start + len(values)] = values
            self._squares_filled += len(values)
        return values

    def raw_blocks(self, block_rows: int = _BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """Blocks of the values before normalisation, cast to float32 (for exact-copy hashing)."""
        source = self._raw_blocks(block_rows) if self._matrix is None else self.blocks(block_rows)
        for start, raw in source:
            yield start, np.asarray(raw, dtype=np.float32)

    def raw_rows(self, rows: np.ndarray) -> np.ndarray:
        """Values of the given global ``rows`` before normalisation, as float32 ``(len, d)``."""
        if self._matrix is not None:
            return self._matrix[rows]
        return np.asarray(self._gather(np.asarray(rows, dtype=np.int64)), dtype=np.float32)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """A copy of the given global ``rows`` of the caller's arrays, in their dtype when they
        share one. Runs of rows from one array are copied in place when there are few."""
        if len(self._arrays) == 1:
            return self._rows_of(0, rows)
        block = np.empty((len(rows), self.d), dtype=self._dtype)
        which = np.searchsorted(self._offsets, rows, side="right") - 1
        cuts = np.flatnonzero(which[1:] != which[:-1]) + 1
        if len(rows) and len(cuts) < _FEW_RUNS:  # e.g. a cell's rows: two ascending runs
            for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)]):
                a = int(which[lo])
                self._rows_of(a, rows[lo:hi] - self._offsets[a], out=block[lo:hi])
            return block
        for a in range(len(self._arrays)):
            at = np.flatnonzero(which == a)
            if len(at):
                block[at] = self._rows_of(a, rows[at] - self._offsets[a])
        return block

    def _rows_of(self, a: int, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A copy of ``rows`` (positions) of array ``a``: read from its file when it is a large
        memmap, else by ``np.take`` (measured 64 against 100-128 us for 750 rows of 64 float32
        from two arrays by boolean masks and fancy indexing). With ``out`` (``(len(rows), d)``)
        the rows are written there: by ``np.take`` straight into it when the dtypes agree
        (``mode="clip"``: unbuffered; the positions are valid), saving a pass over them."""
        reader = self._readers[a]
        array = self._arrays[a]
        if out is None:
            return np.take(array, rows, axis=0) if reader is None else reader.take(rows)
        if reader is None and array.dtype == out.dtype:
            return np.take(array, rows, axis=0, out=out, mode="clip")
        out[...] = np.take(array, rows, axis=0) if reader is None else reader.take(rows)
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Normalised float32 ``(len(rows), d)`` copy of the given global ``rows`` (no full
        matrix is built: rows are read from the caller's arrays and normalised; after one full
        pass of :meth:`blocks` with row normalisation, by dividing by the recorded norms)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._matrix is not None:
            return np.take(self._matrix, rows, axis=0)
        block = self._gather(rows)
        if self._by_row and self._norms_filled == self.n:
            block = np.asarray(block, dtype=np.float32)  # owned either way: divided in place
            block /= np.take(self._norms, rows)[:, None]
            return block
        return self.transform.apply(block)

    def matrix(self) -> np.ndarray:
        """The full normalised ``(N, d)`` float32 matrix, built once (the only full copy)."""
        if self._matrix is None:
            matrix = np.empty((self.n, self.d), dtype=np.float32)
            for start, block in self.blocks():
                matrix[start : start + len(block)] = block
            self._matrix = matrix
        return self._matrix
