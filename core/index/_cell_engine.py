"""The reference index's cell engine (the default): reference rows partitioned once, every
scored batch routed to its cells and joined exactly there.

Build: k-means cells fitted on a seeded sample of the transformed reference rows
(``Cells.fit``: the coarse centres on a subset of it, the leaves in 1 Lloyd iteration; rows
listed at home of 32+ dimensions: the coarse centres fitted in the 16-dimension screen
projection below and lifted back, so that each row's coarse cell is found from its
projection),
then every reference row listed in its home cell, its nearest leaf of its nearest coarse
cell (``_home``), with the automatic margin (``Cells(margin=None)``, the default); with a
given margin, also in each cell whose boundary lies within it (``route_entries``). Only the
cells are stored: centres, and per cell the reference rows it lists (``(E,)`` row numbers;
``E = N`` at home); the rows themselves are ``vectors.npy``.
Rows listed at home (32+ dimensions) are also stored through a 16-dimension principal
projection with their squared norms (``screen.npy``, format 5), where that projection passes
at most 2 % of a sample's in-cell pairs.

Score: each query row goes to its nearest cell and to every cell within the margin; in each
cell the queries are compared with the listed reference rows by one matrix product (a float32
screen with a generous slack: through the projection when stored, which never lengthens a
distance, else in full width) and every candidate's exact distance decides.

Which pairs are found: rows listed at home, a query meets every reference row within ``t``
with a margin of the whole threshold ``t`` (``_home``); the automatic margin is smaller, the
smallest at which 99.5 % of the close pairs (within ``2 t``) of a seeded sample of the
reference meet both ways, one step up, so pairs that cross a boundary at a steep angle can in
principle be missed. Rows listed with a margin
too: for ``|q - r| <= t`` whose nearest cells differ, their distances to the bisector of the
two cells add up to at most ``t``, so one of them lies within ``t / 2`` of it and reaches the
other's nearest cell (applied at the coarse level first, then to the leaves of the coarse cell
they share): ``Cells(margin=0.5)`` is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._errors import NeardupInputError
from ..search import (
    Cells,
    NeighborGraph,
    Partition,
    Rows,
    blas_threads,
    route_entries,
    sample_rows,
    stable_order,
)
from ._home import distinct_values, home_cells, home_margin, list_homes
from ._products import (
    NearestScreen,
    ProjectedRows,
    dense_screen,
    is_dense,
    pair_distances,
    screen_block,
)
from ._storage import CELLS, SCREEN, corrupt, write_file, write_rows_in_order

__all__ = ["CellEngine", "check_cells_backend"]

#: rows listed at home at least twice this wide are screened through a projection to this
#: many dimensions (``ProjectedRows``: the margin's sampled pairs at build, the queries when
#: scored; measured at 1M x 64, 100k queries: the cells' screens 0.08 instead of 0.22 CPU s).
_SCREEN_WIDTH = 16
#: the coarse k-means centres are fitted on a subset of the sample with at least this many
#: rows per coarse cell (the leaves on all of it): measured at 1M x 64, 62 coarse cells
#: fitted on 16,384 instead of 65,536 rows: k-means 0.42-0.56 -> 0.21-0.22 CPU s, the same
#: leaked rows, nearest rows and distances, the same margin.
_COARSE_FIT_ROWS = 256
#: Lloyd iterations of the leaf cells (5 elsewhere). The leaves bound the scoring's work,
#: which hardly depends on their iterations, each 0.024 CPU s of k-means at 1M x 64: for
#: 100k queries the projected screen compares 65.7 million pairs after 3 iterations, 64.6
#: after 2, 64.5 after 1 (largest cell 812, 688, 651 rows); at 300k x 64 anisotropic
#: clusters with full-width screens, 4 % more after 1 than after 3. The same leaked rows,
#: nearest rows and distances in both, and the same margins on the latter.
_LEAF_ITERATIONS = 1
#: query rows transformed and routed at once, and at most this many bytes of them.
_QUERY_ROWS = 262_144
_QUERY_BYTES = 64 << 20
#: routed query entries whose projected rows are gathered at once when scored.
_ENTRY_WINDOW = 32_768


def check_cells_backend(backend: Cells) -> None:
    """A reference index scores on the CPU in this process: refuse ``device``/``executor``."""
    for name in ("device", "executor"):
        if getattr(backend, name) is not None:
            raise NeardupInputError(
                f"ReferenceIndex: Cells({name}=...) is not supported; a reference index is "
                f"built and scored with numpy in this process. Drop {name}=."
            )


class CellEngine:
    """Cells over the ``(N, d)`` float32 reference ``vectors``.

    Parameters
    ----------
    partition:
        The fitted k-means cells (``neardup.search.Partition``).
    margin:
        Spill margin in distance units (rows within it of a cell boundary are listed in both).
    starts:
        ``(C + 1,)`` int64: cell ``c`` lists ``members[starts[c]:starts[c + 1]]``.
    members:
        ``(E,)`` int32 or int64 reference rows, grouped by cell.
    vectors:
        ``(N, d)`` float32 transformed reference rows (may be a read-only memmap).
    in_cell_order:
        ``vectors`` hold the rows in the order of ``members`` (each row listed once): cell
        ``c``'s rows are the slice ``vectors[starts[c]:starts[c + 1]]``, no gather (an index
        saved with rows listed at home, format 4); otherwise ``vectors[r]`` is row ``r``.
    projected:
        The ``vectors`` through a projection, in the same order (:class:`ProjectedRows`):
        each cell is screened there first (format 5), else in full width.
    """

    name = "cells"
    files = (CELLS,)

    def __init__(
        self,
        partition: Partition,
        *,
        margin: float,
        starts: np.ndarray,
        members: np.ndarray,
        vectors: np.ndarray,
        blas_threads: int | None = 1,
        in_cell_order: bool = False,
        projected: ProjectedRows | None = None,
    ) -> None:
        self.partition = partition
        self.projected = projected
        self.files = (CELLS,) if projected is None else (CELLS, SCREEN)
        self.margin = float(margin)
        self.starts = starts
        self.members = members
        self.vectors = vectors
        self.in_cell_order = bool(in_cell_order)
        self._blas_threads = blas_threads
        self._least: tuple[np.ndarray, float] | None = None  # per-cell norms, once scored
        self._in_span: bool | None = None  # the coarse centers in the projection's span

    def _least_norms(self) -> tuple[np.ndarray, float]:
        """``(C,)`` float32 smallest squared norm of each cell's listed rows (``inf`` for an
        empty cell) and the largest of all rows, computed once, blocked (float32 sums: their
        rounding is far inside the screen's slack)."""
        if self._least is None:
            sq = np.empty(len(self.vectors), dtype=np.float32)
            step = max(1, _QUERY_BYTES // (4 * max(1, self.vectors.shape[1])))
            for start in range(0, len(sq), step):
                block = np.asarray(self.vectors[start : start + step])
                sq[start : start + step] = np.einsum("ij,ij->i", block, block)
            listed = sq if self.in_cell_order else sq[self.members]
            least = np.full(self.partition.n_cells, np.inf, dtype=np.float32)
            filled = np.flatnonzero(np.diff(self.starts) > 0)
            if len(filled):
                least[filled] = np.minimum.reduceat(listed, self.starts[filled])
            self._least = (least, float(sq.max()) if len(sq) else 0.0)
        return self._least

    # ------------------------------------------------------------------ build
    @staticmethod
    def graph(x: np.ndarray, backend: Cells, *, k: int, seed: int) -> NeighborGraph:
        """Exact ``k`` nearest neighbours (among all rows) of a seeded sample of ``x``: the
        threshold's statistics."""
        return backend.neighbor_graph(Rows.from_matrix(x), k, seed=seed)

    @classmethod
    def build(
        cls, x: np.ndarray, backend: Cells, *, threshold: float, seed: int
    ) -> tuple[CellEngine, float]:
        """Partition ``x`` (``(N, d)`` float32) and list every row in its cells.

        With the automatic margin (``backend.margin=None``) every row is listed once, in its
        home cell, and the margin routes the queries alone (``neardup.index._home``: chosen
        on the close pairs of a seeded sample of rows). With a given margin every row is
        also listed in the cells within it, as the queries are (0.5 finds every pair).

        Returns the engine and the margin used, as a multiple of ``threshold``.
        """
        rows = Rows.from_matrix(x)
        seed = backend.seed if backend.seed is not None else seed
        with blas_threads(backend.blas_threads):
            projected = None
            if backend.margin is None and x.shape[1] >= 2 * _SCREEN_WIDTH:
                # the screen's projection, fitted on rows of the partition's sample, is the
                # span of the coarse centres: home_cells finds a row's coarse cell from the
                # stored projected rows, a product of 17 instead of 64 columns at 1M x 64
                # (home cells 0.43 -> 0.36 CPU s; k-means 0.18 -> 0.14 s; 3,908 cells, the
                # same margin, leaked rows, nearest rows and distances; Fashion-MNIST-like
                # wide rows are partitioned through their own projection: no coarse basis)
                among = backend.fit_sample(*x.shape, seed=seed)
                projected = ProjectedRows.fit(x, _SCREEN_WIDTH, seed=seed, among=among)
            partition = backend.fit(
                rows,
                seed=seed,
                coarse_rows_per_cell=_COARSE_FIT_ROWS,
                leaf_iterations=_LEAF_ITERATIONS,
                coarse_basis=None if projected is None else projected.projection,
            )
            if backend.margin is None:
                # the coarse centres lie in the screen's span unless the partition projects
                through = projected if partition.projection is None else None
                home = home_cells(partition, x, projected=through)
                starts, members = list_homes(home, partition.n_cells)
                sample = sample_rows(len(x), backend.sample_size_for(*x.shape), seed)
                if projected is not None:
                    if not _screens_sparsely(projected, sample, home, starts, members, threshold):
                        projected = None  # most cells would be screened twice
                multiple = home_margin(
                    partition, x, home, starts, members, sample, threshold, seed=seed,
                    projected=projected,
                )  # fmt: skip
                del home
            else:
                multiple = float(backend.margin)
                members, cell = _list_rows(partition, x, multiple * threshold)
                starts = np.searchsorted(cell, np.arange(partition.n_cells + 1))
        engine = cls(
            partition,
            margin=multiple * threshold,
            starts=starts.astype(np.int64),
            members=members,
            vectors=x,
            blas_threads=backend.blas_threads,
            projected=projected,
        )
        return engine, multiple

    @property
    def entries_per_row(self) -> float:
        """Cells each reference row is listed in, on average."""
        return len(self.members) / max(1, len(self.vectors))

    # ------------------------------------------------------------------ score
    @staticmethod
    def chunk_rows(dim: int) -> int:
        """Query rows scored at once."""
        return max(4096, min(_QUERY_ROWS, _QUERY_BYTES // (4 * max(1, dim))))

    def check_score_options(self, k: int | None, search_k: int) -> None:
        """``k`` and ``search_k`` tune annoy's candidates; the cells have none to tune."""
        given = [f"{name}={value}" for name, value in (("k", k), ("search_k", search_k))
                 if value not in (None, -1)]  # fmt: skip
        if given:
            raise NeardupInputError(
                f"{' and '.join(given)}: annoy options, but this reference index uses the cell "
                "engine, which compares every candidate exactly. Drop them, or build the index "
                "with backend=neardup.Annoy(...)."
            )

    def nearest_within(
        self, queries: np.ndarray, threshold: float, *, k: int | None = None, search_k: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(m,)`` nearest reference row of each transformed ``(m, d)`` query row within
        ``threshold`` (ties to the lowest row) and its distance, else ``-1`` and ``inf``."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        best_row = np.full(len(queries), -1, dtype=np.int64)
        best_dist = np.full(len(queries), np.inf, dtype=np.float32)
        if len(queries) == 0:
            return best_row, best_dist
        with blas_threads(self._blas_threads):
            q, r = self._candidates(queries, threshold)
        d = pair_distances(self.vectors, r, queries, q)
        keep = d <= np.float32(threshold)
        q, r, d = q[keep], r[keep], d[keep]
        if not len(q):  # no candidate, or none within the threshold
            return best_row, best_dist
        if self.in_cell_order:  # r: positions in vectors, then reference rows
            r = self.members[r].astype(np.int64)
        order = np.lexsort((r, d, q))
        q, r, d = q[order], r[order], d[order]
        first_of_query = np.r_[True, q[1:] != q[:-1]]
        best_row[q[first_of_query]] = r[first_of_query]
        best_dist[q[first_of_query]] = d[first_of_query]
        return best_row, best_dist

    def _candidates(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """``(q, r)`` int64 candidate pairs: query rows and positions in ``vectors``.

        The queries are routed to their cells with the margin and grouped by cell; each cell
        costs one product and one comparison, through the projection when the index has one
        (a dense projected screen is redone in full width, :class:`NearestScreen`), and the
        flat positions it passes are decoded into pairs once, for all cells together.
        """
        projected = self.projected
        through = None if projected is None else queries @ projected.projection
        coarse_through = None
        if through is not None and self._coarse_in_span():
            coarse_through = (through, projected.projection)
        q_row, q_cell, _, _ = route_entries(
            self.partition, queries, margin=self.margin, coarse_through=coarse_through
        )
        order = stable_order(q_cell, self.partition.n_cells)
        q_row, q_cell = q_row[order], q_cell[order]
        first = np.flatnonzero(np.r_[True, q_cell[1:] != q_cell[:-1]])  # sorted: no np.unique
        cells, lows = q_cell[first], np.r_[first, len(q_cell)]
        if projected is not None:
            left, sq = projected.queries(queries, through)
            # per entry, in cell order: one gather per window of cells, a slice per cell
            entry_left = _EntryRows(left, q_row)
            entry_bound = projected.limits(sq, threshold).take(q_row)[:, None]
            projected_rows = np.asarray(projected.rows)
        full: tuple[NearestScreen, np.ndarray] | None = None  # made when first needed
        starts = self.starts.tolist()
        vectors = np.asarray(self.vectors)  # a plain view of a memory map: cheaper slices
        found, where = [], []
        for i, (c, lo, hi) in enumerate(zip(cells.tolist(), lows[:-1].tolist(), lows[1:].tolist())):
            first_row, stop = starts[c], starts[c + 1]
            if stop == first_row:
                continue
            at = q_row[lo:hi]
            # the cell's rows are one slice in cell order (no gather), else listed by members
            listed = slice(first_row, stop) if self.in_cell_order else self.members[first_row:stop]
            flat = None
            if projected is not None:
                flat = screen_block(
                    entry_left.rows(lo, hi), entry_bound[lo:hi], projected_rows[listed]
                )
                if is_dense(len(flat), hi - lo, stop - first_row):
                    flat = None
            if flat is None:
                full = full or self._full_screen(queries, threshold, q_row, q_cell)
                flat = full[0].candidates(at, full[1][lo:hi], vectors[listed])
            if len(flat):
                found.append(flat)
                where.append(i)
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy()
        piece = np.repeat(np.asarray(where), [len(flat) for flat in found])
        cell = cells[piece]
        a, b = np.divmod(np.concatenate(found), (self.starts[cell + 1] - self.starts[cell]))
        q = q_row[lows[piece] + a].astype(np.int64)
        r = self.starts[cell] + b  # a position in the cell's listing
        if not self.in_cell_order:
            r = self.members[r].astype(np.int64)
        return q, r

    def _coarse_in_span(self) -> bool:
        """Whether the coarse centers lie in the span of the screen's projection (fitted
        through it: ``CellEngine.build`` since the coarse basis; not in indexes built before,
        nor where the partition projects the rows itself), so that queries are routed to
        their coarse cells through it: each center within a relative ``1e-6`` of its
        projection (measured ``9e-8`` for float32 centers lifted from 16 dimensions, ``0.86``
        for centers fitted in 64)."""
        if self._in_span is None:
            self._in_span = False
            if self.projected is not None and self.partition.projection is None:
                coarse = self.partition.coarse.astype(np.float64)
                basis = self.projected.projection.astype(np.float64)
                off = np.linalg.norm(coarse - (coarse @ basis) @ basis.T, axis=1)
                largest = float(np.linalg.norm(coarse, axis=1).max()) if len(coarse) else 0.0
                self._in_span = bool(off.max(initial=0.0) <= 1e-6 * largest)
        return self._in_span

    def _full_screen(
        self, queries: np.ndarray, threshold: float, q_row: np.ndarray, q_cell: np.ndarray
    ) -> tuple[NearestScreen, np.ndarray]:
        """The full-width screen of the batch and the ``(e,)`` bounds of its entries."""
        least, largest = self._least_norms()
        screen = NearestScreen(queries, threshold, largest)
        return screen, screen.bounds(q_row, least[q_cell])

    # ------------------------------------------------------------------ save / load
    @property
    def listed_once(self) -> bool:
        """Every reference row is listed in exactly one cell (the home listing)."""
        return len(self.members) == len(self.vectors)

    def write(self, folder: Path) -> None:
        """Write ``cells.npz`` into ``folder`` (fsynced)."""
        arrays = {
            **self.partition.arrays(),
            "starts": self.starts,
            "members": self.members,
            "margin": np.float64(self.margin),
        }
        if self.listed_once:
            arrays["in_cell_order"] = np.bool_(True)
        if self.projected is not None:
            arrays["screen_projection"] = self.projected.projection
            arrays["screen_largest"] = np.float64(self.projected.largest)
            self._write_in_order(folder / SCREEN, self.projected.rows)
        write_file(folder / CELLS, lambda fh: np.savez(fh, **arrays))

    def write_vectors(self, target: Path) -> None:
        """Write ``vectors.npy`` (fsynced): in cell order when every row is listed once (a
        cell is then one slice of the mapped file when scored), else in row order."""
        self._write_in_order(target, self.vectors)

    def _write_in_order(self, target: Path, rows: np.ndarray) -> None:
        """Write ``(N, k)`` ``rows`` in the order of ``vectors`` as a ``.npy`` (fsynced): in
        cell order when every row is listed once, else in row order."""
        if not self.listed_once or self.in_cell_order:
            write_file(target, lambda fh: np.save(fh, rows, allow_pickle=False))
            return
        write_file(target, lambda fh: write_rows_in_order(fh, rows, self.members))

    @classmethod
    def open(
        cls, path: Path, folder: Path, vectors: np.ndarray, settings: dict[str, Any]
    ) -> CellEngine:
        """Read ``folder/cells.npz`` (no pickle) and check it against the reference rows."""
        try:
            with np.load(folder / CELLS, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            partition = Partition.from_arrays(arrays)
            starts = np.asarray(arrays["starts"])
            members = np.asarray(arrays["members"])
            margin = float(arrays["margin"])
            in_cell_order = bool(arrays.get("in_cell_order", False))
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            raise corrupt(path, f"{CELLS} cannot be read ({err})") from err
        _check_cells(path, partition, starts, members, margin, vectors.shape)
        if in_cell_order and not _is_permutation(members, len(vectors)):
            raise corrupt(path, f"{CELLS} holds rows in cell order that are not each row once")
        projected = _open_screen(path, folder, arrays, vectors.shape)
        return cls(
            partition,
            margin=margin,
            starts=starts.astype(np.int64),
            members=members,
            vectors=vectors,
            blas_threads=settings.get("blas_threads", 1),
            in_cell_order=in_cell_order,
            projected=projected,
        )


class _EntryRows:
    """The rows ``source[index[lo:hi]]`` of the entries of one cell after another (ascending
    ``lo``), gathered a window of at least 32,768 entries at a time: one ``take`` per window
    instead of one per cell, and no copy of every entry's row at once (at 1M x 64, 100k
    queries: 13 MB)."""

    def __init__(self, source: np.ndarray, index: np.ndarray) -> None:
        self._source, self._index = source, index
        self._lo = self._hi = 0
        self._rows = source[:0]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """``(hi - lo, k)`` rows of entries ``lo:hi`` (``lo`` at least the last call's)."""
        if hi > self._hi:
            self._lo, self._hi = lo, max(hi, lo + _ENTRY_WINDOW)
            self._rows = np.take(self._source, self._index[self._lo : self._hi], axis=0)
        return self._rows[lo - self._lo : hi - self._lo]


def _list_rows(partition: Partition, x: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """``(row, cell)`` of every entry of the ``(N, d)`` rows ``x`` routed with ``margin`` (the
    same routing as the queries'), sorted by cell, then row; rows as int32 where they fit."""
    step = max(256, min(_QUERY_ROWS, _QUERY_BYTES // (4 * max(1, x.shape[1]))))
    index = np.int32 if len(x) < 2**31 else np.int64
    rows, cells = [], []
    for start in range(0, len(x), step):
        r, c, _, _ = route_entries(partition, np.asarray(x[start : start + step]), margin=margin)
        rows.append((r + start).astype(index))
        cells.append(c.astype(np.int32))
    row, cell = np.concatenate(rows), np.concatenate(cells)
    order = np.lexsort((row, cell))
    return row[order], cell[order]


def _screens_sparsely(
    projected: ProjectedRows,
    sample: np.ndarray,
    home: np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    threshold: float,
) -> bool:
    """Whether the projected screen passes at most 2 % of the pairs of the ``(s,)`` sampled
    rows and the rows at home in their home cells, at ``threshold``: else most scored cells
    would be screened twice, projected and then in full width (measured on Fashion-MNIST
    pixels at t = 0.2: 190 of 234 cells, 1.24 instead of 0.99 CPU s for 10k queries)."""
    if len(sample) == 0:
        return False
    cells, which = distinct_values(home[sample])
    left, sq = projected.queries_of(sample)
    limit = projected.limits(sq, threshold)
    passed = pairs = 0
    for i, c in enumerate(cells.tolist()):
        group = np.flatnonzero(which == i)
        listed = members[starts[c] : starts[c + 1]]
        right = np.take(projected.rows, listed, axis=0)
        passed += len(dense_screen(left[group], limit[group], right))
        pairs += len(group) * len(listed)
    return not is_dense(passed, pairs, 1)


def _open_screen(
    path: Path, folder: Path, arrays: dict[str, np.ndarray], shape: tuple[int, int]
) -> ProjectedRows | None:
    """The projected screen named in ``cells.npz`` (format 5): ``screen.npy`` memory-mapped
    and checked against the ``(size, dim)`` reference rows; ``None`` when there is none."""
    if "screen_projection" not in arrays:
        return None
    size, dim = shape
    try:
        projection = np.asarray(arrays["screen_projection"])
        largest = float(arrays["screen_largest"])
        rows = np.load(folder / SCREEN, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
        raise corrupt(path, f"{SCREEN} cannot be read ({err})") from err
    width = projection.shape[1] if projection.ndim == 2 else 0
    if (
        projection.dtype != np.float32
        or projection.shape != (dim, width)
        or width < 1
        or not np.all(np.isfinite(projection))
        or not (np.isfinite(largest) and largest >= 0)
    ):
        raise corrupt(path, f"{CELLS} holds a screen projection of the wrong shape")
    if rows.dtype != np.float32 or rows.shape != (size, width + 1):
        raise corrupt(path, f"{SCREEN} does not match the reference rows")
    return ProjectedRows(projection, rows, largest)


def _is_permutation(members: np.ndarray, size: int) -> bool:
    """``members`` (checked within ``[0, size)``) holds every row of ``range(size)`` once."""
    return len(members) == size and bool(np.all(np.bincount(members, minlength=size) == 1))


def _check_cells(
    path: Path,
    partition: Partition,
    starts: np.ndarray,
    members: np.ndarray,
    margin: float,
    shape: tuple[int, int],
) -> None:
    """Refuse cells that do not describe ``shape`` reference rows (crafted or damaged)."""
    size, dim = shape
    centroids, parent, coarse = partition.centroids, partition.parent, partition.coarse
    width = dim if partition.projection is None else partition.projection.shape[0]
    problems = []
    if partition.projection is not None and partition.projection.shape != (width, dim):
        problems.append("a projection of the wrong width")
    if centroids.ndim != 2 or centroids.shape[1] != width or len(centroids) < 1:
        problems.append("cell centres of the wrong shape")
    elif coarse.ndim != 2 or coarse.shape[1] != width or len(coarse) < 1:
        problems.append("coarse centres of the wrong shape")
    elif parent.shape != (len(centroids),) or (
        len(parent) and (parent[0] < 0 or parent[-1] >= len(coarse) or np.any(np.diff(parent) < 0))
    ):
        problems.append("cells with impossible coarse cells")
    elif not all(np.all(np.isfinite(a)) for a in partition.arrays().values()):
        problems.append("centres that are not finite")
    if starts.shape != (len(centroids) + 1,) or starts.dtype.kind not in "iu":
        problems.append("cell bounds of the wrong shape")
    elif starts[0] != 0 or starts[-1] != len(members) or np.any(np.diff(starts) < 0):
        problems.append("cell bounds that do not cover the listed rows")
    if members.ndim != 1 or members.dtype.kind not in "iu":
        problems.append("listed rows that are not integers")
    elif len(members) < size or (len(members) and (members.min() < 0 or members.max() >= size)):
        problems.append(f"listed rows outside the {size:,} reference rows")
    if not (np.isfinite(margin) and margin >= 0):
        problems.append("an impossible margin")
    if problems:
        raise corrupt(path, f"{CELLS} holds {problems[0]}")
