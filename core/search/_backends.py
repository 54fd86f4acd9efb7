"""Search backends as objects: ``Cells()`` (the default), ``Annoy(...)`` and ``Exact()``.

A backend either lists every pair of rows within the threshold (``Cells``: exact pairs from a
partitioned join, thresholds from the exact kNN of a seeded sample of rows), or builds a kNN
graph of every row whose close pairs are the duplicates (``Annoy``: approximate, the DNIKit
facade's engine; ``Exact``: brute force). ``result.settings`` records the backend's options.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import NeardupInputError
from .._mapped import mapped_empty
from ._annoy import resolve_query_jobs
from ._cells import (
    DENSE_CANDIDATES,
    ClosePairs,
    HomeLimits,
    Partition,
    exact_pair_distances,
    fit_partition,
    join_cell,
    merge_pairs,
    orthonormal_projection,
    route_entries,
    screen_cell,
    stable_order,
)
from ._executor import check_executor
from ._graph import DEFAULT_TREES, NeighborGraph, build_graph
from ._margin import EXACT_MARGIN, MarginChoice, choose_margins, trial_holds
from ._masks import true_positions
from ._progress import ProgressFn
from ._rows import Rows
from ._sample_knn import sample_rows, sampled_neighbor_graph

__all__ = [
    "BACKEND_NAMES",
    "Annoy",
    "Backend",
    "CellTask",
    "Cells",
    "Exact",
    "as_backend",
    "blas_threads",
    "join_cell_task",
]

BACKEND_NAMES = ("auto", "cells", "annoy", "exact")
_ANNOY_OPTIONS = ("n_trees", "search_k", "n_jobs", "query_jobs", "dedupe")
#: rows of the seeded sample that fits the k-means partition, per cell (capped below).
_FIT_ROWS_PER_CELL = 32
_FIT_ROWS_MAX = 65_536
#: ...but never fewer than this many per cell: at 10M x 64 (39,062 leaves) 65,536 rows left
#: 1.7 per leaf, whose cells were so uneven that 1 % of them held 74 % of the join's work
#: (1.23e11 row pairs, largest cell 82,951 rows); 6.7 per leaf (262,144 rows): 2.37e10 pairs,
#: largest 15,669, for 3.1 CPU s more fitting; 27 per leaf: 1.48e10 for 13.6 s more.
_FIT_ROWS_MIN_PER_CELL = 8
#: ...and at most this many bytes of them (wide rows).
_FIT_BYTES = 128 << 20
#: wide rows partitioned in full width get this many times more (smaller) cells: at 60,000 x
#: 3,072 (benchmark data, margin 0.15 t) cells of 128 rows made 20M row pairs to compare
#: instead of 114M (1.21 instead of 1.81 cells per row) and took 30 instead of 49 CPU s, with
#: the same sets and pair recall 1.0000 (64 rows: 33 CPU s). Cells of 64 rows (4x) since the
#: k-means sums of wide rows are products: 60,000 x 3,072 8.6 CPU s (128 rows: 8.4); 1M x 512
#: 78.6 CPU s (128 rows: 120.5), the same 28,650 sets, peak 3,130 vs 3,093 MB. There the
#: benchmark's 10,000 natural clusters outnumber 7,812 leaves of 128 rows; the clusters left
#: without a leaf gather in low-norm "hub" leaves that held 98 % of the join's work.
_FULL_WIDTH_SPLIT = 4
#: rows of the fit sample the wide rows' projection is fitted on.
_PROJECTION_ROWS = 2048
#: rows routed to cells at once (one (block, coarse cells) product at a time), and at most
#: this many bytes of them (wide rows).
_ROUTE_ROWS = 65_536
_ROUTE_BYTES = 64 << 20
#: automatic sample for the neighbour statistics: every row up to this many rows...
_SAMPLE_ALL_UP_TO = 5_000
#: ...above, as many as fit this many distances (m * N: the screen's elementwise passes cost
#: more than the product itself at d <= 64), within the bounds below.
_SAMPLE_WORK = 2.5e7
_SAMPLE_MAX = 5_000
#: ...and at least 500 rows up to 100,000 rows (5e7 distances), then fewer down to 250 from
#: 200,000 rows: at 1M x 64 the exact kNN of 500 rows took 3.1 of ~17 CPU s, while 250 rows
#: estimated the thresholds about as well (20 draws against a 4,000-row sample: Auto median
#: error 0.9 %, max 3.1 %; with 500 rows 0.9 % and 2.9 %; Relative 0.3 % / 1.1 %).
_SAMPLE_MIN_WORK = 5e7
_SAMPLE_MIN_LOW, _SAMPLE_MIN_HIGH = 250, 500
#: narrow rows (partitioned in full width) of at least this width are screened inside the
#: cells through an orthonormal projection to half their width, and every candidate is
#: measured in full width: the same pairs (the projection never lengthens a distance), with
#: half the products. Measured at 1M x 64 (a quarter of the cells, benchmark data, threshold
#: 0.267): 0.694 -> 0.534 CPU s (24 dims: 0.505; 16: 0.768, too many candidates); at
#: 100,000 x 40: 0.025 -> 0.022 (shared machine, min of 3).
_SCREEN_MIN_WIDTH = 32
#: ...and at most this wide: wider rows are screened through the partition's projection, or,
#: where that keeps too little variance, are joined in full width (half their width would
#: keep too little as well, and fitting it costs a range finder of that width).
_SCREEN_MAX_WIDTH = 256
#: ...when, of the sampled rows' neighbours farther than the threshold, at most this share
#: comes within it through the projection (candidates the full-width screen would not pass).
_SCREEN_MAX_FALSE = 0.05
#: rows the screen's projection is fitted on.
_SCREEN_FIT_ROWS = 2048
#: wide rows are projected only when the projection keeps at least this share of the variance
#: (60,000 x 3,072 of 600 random centres: 64 directions kept 11 %, squeezing 79 % of the rows
#: into one coarse cell and one cell's screen into 1.4 million candidates).
_MIN_CAPTURED_VARIANCE = 0.5


def _check_int(name: str, value: Any, *, minimum: int, allow: tuple = ()) -> None:
    if value in allow and not isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        extra = f" (or {', '.join(map(repr, allow))})" if allow else ""
        raise NeardupInputError(f"{name} must be an int >= {minimum}{extra}, got {value!r}.")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise NeardupInputError(f"{name} must be True or False, got {value!r}.")


class Backend:
    """Base class of the search backends."""

    name = "backend"
    #: True: ``find_pairs`` lists all close pairs; False: ``graph`` builds a kNN graph.
    finds_pairs = False

    def settings(self) -> dict[str, Any]:
        """The options recorded in ``result.settings``."""
        return {"backend": self.name}

    def thread_limits(self) -> AbstractContextManager:
        """A context in which the backend's steps run with its own BLAS thread limit."""
        return nullcontext()


class GraphBackend(Backend):
    """A backend that builds the kNN graph of every row (``Annoy``, ``Exact``)."""

    def graph_options(self, *, seed: int, prefer: np.ndarray | None) -> dict[str, Any]:
        """Keyword options of ``build_graph`` for this backend."""
        return {}

    def graph(
        self,
        rows: Rows,
        k: int,
        *,
        seed: int,
        prefer: np.ndarray | None = None,
        progress: ProgressFn | None = None,
    ) -> NeighborGraph:
        """The kNN graph of every row (exact distances for the pairs the search proposes)."""
        options = self.graph_options(seed=seed, prefer=prefer)
        return build_graph(rows, k, backend=self.name, progress=progress, **options)


@dataclass(frozen=True)
class Annoy(GraphBackend):
    """Approximate kNN graph with annoy (seeded), as DNIKit does.

    Parameters
    ----------
    n_trees:
        Trees of the index (DNIKit: 30); 6 keeps within-threshold recall >= 0.99 on the
        benchmarks.
    search_k:
        Nodes inspected per query (-1: ``n_trees * k``).
    n_jobs:
        Threads that build the index (1 reproduces on every machine; -1 uses all cores).
    query_jobs:
        Forked processes that query it (-1: one per CPU); never changes the result.
    dedupe:
        Group byte-identical rows by hashing first and index each distinct row once.
    """

    n_trees: int = DEFAULT_TREES
    search_k: int = -1
    n_jobs: int = 1
    query_jobs: int = -1
    dedupe: bool = True
    name = "annoy"

    def __post_init__(self) -> None:
        _check_int("n_trees", self.n_trees, minimum=1)
        _check_int("search_k", self.search_k, minimum=-1)
        _check_int("n_jobs", self.n_jobs, minimum=1, allow=(-1,))
        resolve_query_jobs(self.query_jobs)
        _check_bool("dedupe", self.dedupe)

    def graph_options(self, *, seed: int, prefer: np.ndarray | None) -> dict[str, Any]:
        return {
            "n_trees": self.n_trees,
            "search_k": self.search_k,
            "seed": seed,
            "n_jobs": self.n_jobs,
            "query_jobs": self.query_jobs,
            "dedupe": bool(self.dedupe),
            "prefer": prefer,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "n_trees": int(self.n_trees),
            "search_k": int(self.search_k),
            "n_jobs": int(self.n_jobs),
            "dedupe": bool(self.dedupe),
        }


@dataclass(frozen=True)
class Exact(GraphBackend):
    """Exact kNN graph of every row by blocked brute force (``N * N * d``: small data only)."""

    name = "exact"


@dataclass(frozen=True)
class CellTask:
    """One cell's join: its rows (primary rows first) and their global ids."""

    rows: Any  # (m, d) float32 (numpy or torch), projected when ``verify`` is given
    row_ids: np.ndarray  # (m,) int64
    n_primary: int
    threshold: float
    block_size: int | None = None  # None: join_cell's default for numpy or torch
    device: str | None = None
    verify: Any = None  # (m, D) float32 full-width rows whose distances decide
    #: False: ``rows`` are a projection and the task returns its screen's unmeasured candidate
    #: pairs ``(i, j)`` (:func:`~neardup.search.screen_cell`), measured by the caller
    measure: bool = True
    #: (``measure`` False only) ``rows`` end with a column of their squared norms
    with_squares: bool = False
    #: only the pairs of a primary row with a later, non-primary row
    cross_only: bool = False


def join_cell_task(task: CellTask) -> ClosePairs | tuple[np.ndarray, np.ndarray]:
    """Run :func:`~neardup._cells.join_cell` on one :class:`CellTask` (what executors map), or
    :func:`~neardup._cells.screen_cell` when the task's candidates are measured by the caller."""
    shared = {
        "threshold": task.threshold,
        "block_size": task.block_size,
        "n_primary": task.n_primary,
        "cross_only": task.cross_only,
    }
    if not task.measure:
        return screen_cell(task.rows, task.row_ids, with_squares=task.with_squares, **shared)
    return join_cell(task.rows, task.row_ids, device=task.device, verify=task.verify, **shared)


@dataclass(frozen=True)
class Cells(Backend):
    """Exact close pairs from a partitioned join (the default backend).

    Parameters
    ----------
    cell_size:
        Target rows per leaf cell (the partition has ``N / cell_size`` cells).
    n_cells:
        Number of leaf cells, instead of ``cell_size``.
    margin:
        Spill margin as a multiple of the threshold: rows within ``margin * threshold`` of a
        cell boundary are joined in both cells. 0.5 finds every pair exactly
        (``neardup.search._cells``); less trades recall for speed. ``None`` (the default):
        0.5 where it routes a row to at most 2 cells on average, otherwise the smallest
        margin (at least 0.15) that joins every close pair of the seeded sample, one step up
        (``neardup.search._margin``).
    sample_size:
        Rows whose exact k nearest neighbours (among all rows) feed the threshold and the
        histogram; ``None``: every row up to 5,000 rows, above ``2.5e7 / N`` (at most 5,000,
        at least 500 up to 100,000 rows, then ``5e7 / N`` down to 250).
    seed:
        Seed of the samples and the k-means (``None``: ``find_duplicates``'s ``seed``).
    block_size:
        Rows per matrix product inside a cell (``None``: 128 in numpy, 64 in the numpy screens
        of projected rows, 2,048 in torch).
    device:
        ``None`` (numpy/BLAS) or a torch device (``"cuda"``, ``"cpu"``) for the in-cell products.
    project_above, project_to:
        Rows wider than ``project_above`` are partitioned and screened through an orthonormal
        projection to ``project_to`` dimensions (top principal directions of a sample; it never
        lengthens a distance, so no pair is lost) and every candidate is measured in full
        width: the same pairs, at a fraction of the products. ``project_above=None``: never.
        Rows whose projection keeps less than half of a sample's variance are not projected
        (their cells would collapse into a few huge ones); they are joined in full width, in
        cells of a quarter of ``cell_size`` rows (a pair costs ``D`` there).
    dedupe:
        Group byte-identical rows by hashing first and join each distinct row once; copies are
        linked to their group's first row (so a group of thousands of identical rows costs
        O(group), not O(group^2) pairs).
    blas_threads:
        BLAS threads for the engine's products (1: the small per-cell products run fastest on
        one thread, and multi-threaded BLAS spins idle threads; measured 6x less CPU at
        100k x 40 on a busy 2-vCPU machine). Parallelism across cells comes from
        ``executor``. ``None``: leave BLAS as configured. Needs ``threadpoolctl`` (a
        dependency); without it, BLAS is left as configured.
    executor:
        Runs the per-cell joins: ``None`` (in this process), ``ThreadExecutor(n)``, or any
        object with ``map(fn, tasks)`` yielding results in task order (e.g. a Ray executor).
        The pairs never depend on it.
    """

    cell_size: int = 256
    n_cells: int | None = None
    margin: float | None = None
    sample_size: int | None = None
    seed: int | None = None
    block_size: int | None = None
    device: str | None = None
    project_above: int | None = 256
    project_to: int = 64
    dedupe: bool = True
    blas_threads: int | None = 1
    executor: Any = field(default=None, compare=False)
    name = "cells"
    finds_pairs = True

    def __post_init__(self) -> None:
        _check_int("cell_size", self.cell_size, minimum=2)
        if self.n_cells is not None:
            _check_int("n_cells", self.n_cells, minimum=1)
        if self.margin is not None and not (
            isinstance(self.margin, (int, float))
            and not isinstance(self.margin, bool)
            and math.isfinite(self.margin)
            and self.margin >= 0
        ):
            raise NeardupInputError(
                f"margin must be a number >= 0 (a multiple of the threshold) or None, "
                f"got {self.margin!r}."
            )
        if self.sample_size is not None:
            _check_int("sample_size", self.sample_size, minimum=2)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        if self.block_size is not None:
            _check_int("block_size", self.block_size, minimum=1)
        _check_bool("dedupe", self.dedupe)
        if self.blas_threads is not None:
            _check_int("blas_threads", self.blas_threads, minimum=1)
        if self.project_above is not None:
            _check_int("project_above", self.project_above, minimum=1)
        _check_int("project_to", self.project_to, minimum=1)
        if self.device is not None and not isinstance(self.device, str):
            raise NeardupInputError(
                f"device must be None or a torch device name such as 'cuda', got {self.device!r}."
            )
        check_executor(self.executor)

    def thread_limits(self) -> AbstractContextManager:
        """BLAS limited to ``blas_threads`` threads (k-means, routing, products, statistics)."""
        return blas_threads(self.blas_threads)

    # ----------------------------------------------------------------- statistics
    def sample_size_for(self, n: int, d: int) -> int:
        """Rows sampled for the neighbour statistics of ``n`` rows of width ``d``."""
        if self.sample_size is not None:
            return min(n, int(self.sample_size))
        if n <= _SAMPLE_ALL_UP_TO:
            return n
        least = min(_SAMPLE_MIN_HIGH, max(_SAMPLE_MIN_LOW, _SAMPLE_MIN_WORK / float(n)))
        return int(min(n, _SAMPLE_MAX, max(least, _SAMPLE_WORK / float(n))))

    def neighbor_graph(self, rows: Rows, k: int, *, seed: int) -> NeighborGraph:
        """Exact ``k`` nearest neighbours (among all rows) of a seeded sample of rows."""
        seed = self.seed if self.seed is not None else seed
        sample = sample_rows(rows.n, self.sample_size_for(*rows.shape), seed)
        with blas_threads(self.blas_threads):
            return sampled_neighbor_graph(rows, sample, k)

    # ----------------------------------------------------------------- pairs
    def cells_for(self, n: int) -> int:
        """Leaf cells for ``n`` rows."""
        if self.n_cells is not None:
            return max(1, min(int(self.n_cells), n))
        return max(1, round(n / self.cell_size))

    def fit(
        self,
        rows: Rows,
        *,
        seed: int,
        coarse_rows_per_cell: int | None = None,
        leaf_iterations: int | None = None,
        coarse_basis: np.ndarray | None = None,
    ) -> Partition:
        """The k-means partition of ``rows`` (fitted on a seeded sample; the coarse centres
        on a subset of it with ``coarse_rows_per_cell``, the leaves with ``leaf_iterations``
        Lloyd iterations, the coarse centres in the span of the ``(d, w)`` orthonormal
        ``coarse_basis``: see :func:`fit_partition`). ``coarse_basis`` is ignored when the
        rows are partitioned through a projection (``Partition.projection`` set: rows wider
        than ``project_above``)."""
        with self.thread_limits():
            return self._fit(
                rows,
                seed=self.seed if self.seed is not None else seed,
                coarse_rows_per_cell=coarse_rows_per_cell,
                leaf_iterations=leaf_iterations,
                coarse_basis=coarse_basis,
            )

    def fit_sample(self, n: int, d: int, *, seed: int) -> np.ndarray:
        """The rows that :meth:`fit` fits its partition of ``n`` rows on.

        Parameters
        ----------
        n, d:
            Number and width of the rows.
        seed:
            The seed that :meth:`fit` is given (the backend's own ``seed`` wins, as there).

        Returns
        -------
        np.ndarray
            ``(s,)`` int64 ascending row positions (a caller fitting something else on the
            same rows, e.g. the span of ``fit``'s ``coarse_basis``).
        """
        seed = self.seed if self.seed is not None else seed
        return self._fit_positions(n, d, self.cells_for(n), seed)

    @staticmethod
    @functools.lru_cache(maxsize=4)
    def _fit_positions(n: int, d: int, n_cells: int, seed: int) -> np.ndarray:
        """The seeded sample of :meth:`fit` for ``n_cells`` cells of ``n`` rows of width ``d``,
        read-only, drawn once for the same arguments (``neardup.index`` asks for it through
        :meth:`fit_sample` before :meth:`fit` does: 65,536 of 1M rows, 6 ms a draw)."""
        size = min(n, max(_FIT_ROWS_PER_CELL * n_cells, 4096), _FIT_ROWS_MAX)
        size = max(size, min(n, _FIT_ROWS_MIN_PER_CELL * n_cells))
        size = min(size, max(256, _FIT_BYTES // (4 * d)))
        positions = sample_rows(n, size, seed + 1)
        positions.flags.writeable = False
        return positions

    def _fit(
        self,
        rows: Rows,
        *,
        seed: int,
        coarse_rows_per_cell: int | None,
        leaf_iterations: int | None,
        coarse_basis: np.ndarray | None = None,
    ) -> Partition:
        n_cells = self.cells_for(rows.n)
        wide = self.project_above is not None and rows.d > max(self.project_above, self.project_to)
        if n_cells == 1 and not wide:
            centre = np.zeros((1, rows.d), dtype=np.float32)
            return Partition(centre, np.zeros(1, dtype=np.int64), centre.copy())
        fit_rows = rows.take(self._fit_positions(rows.n, rows.d, n_cells, seed))
        projection = None
        if wide:
            # a range finder needs a few times project_to rows: 2,048 spread over the sample
            # (measured 1.9 -> 0.4 CPU s at 60,000 x 3,072), its variance judged on them all
            spread = fit_rows[:: max(1, len(fit_rows) // _PROJECTION_ROWS)]
            projection = orthonormal_projection(spread, self.project_to, seed=seed)
            if _captured_variance(fit_rows, projection) >= _MIN_CAPTURED_VARIANCE:
                fit_rows = fit_rows @ projection.T
            else:  # distances shrink so much there that cells collapse: stay in full width
                projection = None
                if self.n_cells is None:  # a pair costs d there: smaller cells
                    n_cells = min(rows.n, n_cells * _FULL_WIDTH_SPLIT)
        part = fit_partition(
            fit_rows,
            n_cells=n_cells,
            seed=seed,
            coarse_rows_per_cell=coarse_rows_per_cell,
            leaf_iterations=leaf_iterations,
            coarse_basis=coarse_basis if projection is None else None,
        )
        return Partition(part.centroids, part.parent, part.coarse, projection)

    def margin_for(
        self, rows: Rows, partition: Partition, graph: NeighborGraph, threshold: float
    ) -> float:
        """The spill margin (a multiple of ``threshold``): ``self.margin``, or when ``None``
        chosen from the close pairs of the sampled neighbour ``graph`` (the ladder's margin of
        :meth:`margins_for`, without its trial).
        """
        return self.margins_for(rows, partition, graph, threshold).margin

    def margins_for(
        self, rows: Rows, partition: Partition, graph: NeighborGraph, threshold: float
    ) -> MarginChoice:
        """The spill margin and the lower one :meth:`join` tries first
        (``neardup.search._margin``): ``self.margin`` alone when set; else chosen from the
        close pairs of the sampled neighbour ``graph``, with no trial for a torch ``device``."""
        if self.margin is not None:
            return MarginChoice(float(self.margin))
        close = graph.distances <= threshold
        sample_at, _ = true_positions(close)
        neighbor_ids, neighbor_at = np.unique(graph.indices[close], return_inverse=True)
        with blas_threads(self.blas_threads):
            choice = choose_margins(
                partition,
                rows.take(graph.query_rows),
                (sample_at.astype(np.int64), neighbor_at.astype(np.int64)),
                rows.take(neighbor_ids),
                threshold,
                n_rows=rows.n,
            )
        return choice if self.device is None else MarginChoice(choice.margin)

    def screen_for(
        self,
        rows: Rows,
        partition: Partition,
        graph: NeighborGraph,
        threshold: float,
        *,
        seed: int,
    ) -> np.ndarray | None:
        """The ``(d // 2, d)`` orthonormal projection the cells screen through, or ``None``.

        Only for rows 32 to 256 wide partitioned in full width (wider rows are screened
        through the partition's own projection), joined with numpy, and only when the
        projection passes few false candidates: of the sampled ``graph``'s neighbours farther
        than ``threshold``, at most 5 % come within it through the projection. The pairs never
        depend on it: candidates are measured in full width.
        """
        if (
            partition.projection is not None
            or not _SCREEN_MIN_WIDTH <= rows.d <= _SCREEN_MAX_WIDTH
            or self.device is not None
            or partition.n_cells == 1
        ):
            return None
        seed = self.seed if self.seed is not None else seed
        with blas_threads(self.blas_threads):
            fit_rows = rows.take(sample_rows(rows.n, _SCREEN_FIT_ROWS, seed + 2))
            screen = orthonormal_projection(fit_rows, rows.d // 2, seed=seed)
            far = graph.distances > threshold
            far &= np.isfinite(graph.distances) & (graph.indices >= 0)
            if not far.any():
                return screen
            at, _ = true_positions(far)
            queries = rows.take(graph.query_rows[at]) @ screen.T
            neighbors = rows.take(graph.indices[far]) @ screen.T
        projected = exact_pair_distances(queries, neighbors)
        false = np.count_nonzero(projected <= threshold) / len(projected)
        return screen if false <= _SCREEN_MAX_FALSE else None

    def find_pairs(
        self,
        rows: Rows,
        threshold: float,
        *,
        seed: int,
        partition: Partition | None = None,
        margin: float | MarginChoice | None = None,
        items: np.ndarray | None = None,
        screen: np.ndarray | None = None,
        progress: ProgressFn | None = None,
    ) -> ClosePairs:
        """Every pair of rows within ``threshold`` (exactly with a margin >= 0.5).

        ``margin``: the spill margin as a multiple of the threshold (``None``: ``self.margin``,
        or 0.5 when that is ``None`` too; :meth:`margin_for` chooses one), or a
        :class:`~neardup.search.MarginChoice` whose trial margin is tried first
        (:meth:`margins_for`; :meth:`join` also says which margin stood). ``items``
        (ascending global rows): join only these rows (the distinct rows, when exact copies
        were grouped first); ``None``: every row. ``screen``: the ``(d', d)`` orthonormal
        projection the cells are screened through (:meth:`screen_for`; the same pairs).
        """
        pairs, _ = self.join(
            rows,
            threshold,
            seed=seed,
            partition=partition,
            margin=margin,
            items=items,
            screen=screen,
            progress=progress,
        )
        return pairs

    def join(
        self,
        rows: Rows,
        threshold: float,
        *,
        seed: int,
        partition: Partition | None = None,
        margin: float | MarginChoice | None = None,
        items: np.ndarray | None = None,
        screen: np.ndarray | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[ClosePairs, float]:
        """:meth:`find_pairs`'s pairs and the margin they were joined at.

        With a :class:`~neardup.search.MarginChoice` that has a trial margin, the rows are
        routed and joined at the trial margin first. When the pairs found do not show that it
        suffices (``neardup.search._margin.trial_holds``), the rows are routed again at the
        larger margin and only the entries that the first routing did not make are joined,
        against each cell's primary rows (a row's home, its primary entry, is the same at any
        margin): then every pair of the larger margin's join is found.
        """
        choice = (
            margin if isinstance(margin, MarginChoice) else MarginChoice(_margin_of(self, margin))
        )
        trial = choice.trial
        if trial is not None and (self.device is not None or trial >= choice.margin):
            trial = None
        with blas_threads(self.blas_threads):
            partition = self.fit(rows, seed=seed) if partition is None else partition
            projected = on_block = None
            if _projects_once(rows, partition, screen, self.device):
                projected, on_block = _projection_sink(rows, screen)
            joining = functools.partial(
                self._join_routed,
                rows,
                partition,
                threshold,
                screen=screen,
                projected=projected,
                executor=check_executor(self.executor),
                progress=progress,
            )
            first = choice.margin if trial is None else trial
            routed = self.route(
                rows, partition, threshold, margin=first, items=items, on_block=on_block
            )
            found = joining(routed)
            if trial is None:
                return found, choice.margin
            # the band is read on at most 100,000 seeded pairs (their rows gathered twice)
            pick = sample_rows(
                len(found), _TRIAL_PAIRS, self.seed if self.seed is not None else seed
            )
            first_rows, second_rows = rows.take(found.i[pick]), rows.take(found.j[pick])
            if trial_holds(partition, first_rows, second_rows, trial, threshold):
                return found, trial
            del first_rows, second_rows
            made = _entry_keys(routed, rows.n)
            made.sort()
            del routed
            routed = self.route(rows, partition, threshold, margin=choice.margin, items=items)
            beyond = ~_sorted_contains(made, _entry_keys(routed, rows.n))
            del made
            return merge_pairs([found, joining(routed, beyond=beyond)]), choice.margin

    def _join_routed(
        self,
        rows: Rows,
        partition: Partition,
        threshold: float,
        routed: tuple[np.ndarray, np.ndarray, np.ndarray],
        *,
        beyond: np.ndarray | None = None,
        screen: np.ndarray | None,
        projected: np.ndarray | None,
        executor: Any,
        progress: ProgressFn | None,
    ) -> ClosePairs:
        """The pairs of the routed entries' cells (``beyond`` as in :meth:`cell_tasks`).

        With ``projected`` (the ``(N, d' + 1)`` rows through ``screen`` and their squared
        norms, made in the routing pass): the cells screen their projected rows and return
        unmeasured candidates, and the candidates of all cells are measured here in full
        width, each pair once (:func:`_measured`). A cell whose screen passes more than 5 % of
        its pairs is joined again in full width instead. The same pairs and distances as
        screening and measuring cell by cell (measured at 1M x 64: 54,634 candidates for 3.3M
        routed rows, whose full-width gathers, normalisation and per-cell projections this
        saves)."""
        shapes: list[tuple[np.ndarray, int]] | None = [] if projected is not None else None
        tasks = self.cell_tasks(
            rows,
            partition,
            threshold,
            screen=screen,
            routed=routed,
            projected=projected,
            shapes=shapes,
            progress=progress,
            beyond=beyond,
        )
        if projected is None:
            return merge_pairs(executor.map(join_cell_task, tasks))
        found_i, found_j, joined = [], [], []
        for k, (i, j) in enumerate(executor.map(join_cell_task, tasks)):
            ids, n_primary = shapes[k]
            if len(i) > DENSE_CANDIDATES * len(ids) * n_primary:
                # the projection screens out too little here: join the cell in full width
                joined.append(
                    join_cell(
                        rows.take(ids),
                        ids,
                        threshold=float(threshold),
                        block_size=self.block_size,
                        n_primary=n_primary,
                        cross_only=beyond is not None,
                    )
                )
                continue
            found_i.append(i)
            found_j.append(j)
        return merge_pairs([_measured(rows, found_i, found_j, threshold), *joined])

    def route(
        self,
        rows: Rows,
        partition: Partition,
        threshold: float,
        *,
        margin: float | None = None,
        items: np.ndarray | None = None,
        on_block: Callable[[int, np.ndarray], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row, cell, primary)`` of every routed entry (of ``items`` only, when given),
        sorted by cell, primary rows first and by row within each cell. ``margin``: as in
        :meth:`find_pairs`. ``on_block(start, block)``: called with every ``(b, d)`` block of
        normalised rows the routing reads (all rows, ``items`` or not), in order."""
        margin = _margin_of(self, margin)
        home_only = float(margin) < EXACT_MARGIN  # not exact anyway: the cheaper routing
        margin = float(margin) * float(threshold)
        if partition.n_cells == 1 and partition.projection is None:
            if on_block is not None:
                for start, block in rows.blocks(_route_rows(rows.d)):
                    on_block(start, block)
            row = np.arange(rows.n, dtype=np.int64) if items is None else np.asarray(items)
            return row, np.zeros(len(row), dtype=np.int64), np.ones(len(row), dtype=bool)
        keep = None
        if items is not None:
            keep = np.zeros(rows.n, dtype=bool)
            keep[items] = True
        n = np.int64(rows.n)
        small = 2 * partition.n_cells <= _SMALL_KEYS
        keys, at = [], []  # per block: (cell, primary first) keys and their rows
        limits = HomeLimits.within(partition, margin, _HOME_LIMITS_BYTES) if home_only else None
        for start, block in rows.blocks(_route_rows(rows.d), reuse=True):
            if on_block is not None:
                on_block(start, block)
            local = None if keep is None else np.flatnonzero(keep[start : start + len(block)])
            if local is not None and len(local) >= _ROUTE_ALL_SHARE * len(block):
                local = None  # nearly every row: route them all, drop the others' entries
                mine = keep[start : start + len(block)]
            else:
                mine = None
            squares = rows.squares(start, block)  # recorded by the sample kNN's pass
            if local is not None:
                block, squares = block[local], squares[local]
            r, c, p, _ = route_entries(
                partition,
                block,
                margin=margin,
                home_only=home_only,
                home_limits=limits,
                squares=squares,
            )
            del block  # not held while the next block is read (one block fewer at the peak)
            if local is not None:
                r = local[r]
            if mine is not None:
                kept = np.take(mine, r)
                r, c, p = r[kept], c[kept], p[kept]
            if not small:  # one int64 per entry, (cell, primary first, row): sorted below
                keys.append((c * 2 + ~p) * n + (r + start))
                continue
            by_row = stable_order(r, _ROUTE_ROWS)  # the block's entries in row order
            keys.append((c * 2 + ~p)[by_row].astype(np.uint16))
            at.append((r[by_row] + start).astype(_index_dtype(int(n))))
        del limits  # its buffer goes back before the entries are sorted (the peak)
        if not small:
            key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
            del keys
            key.sort()  # in place: no argsort index and no gathers (the entries set the peak)
            return _decode_entries(key, n, partition.n_cells)
        return _order_entries(keys, at, partition.n_cells, int(n))

    def cell_tasks(
        self,
        rows: Rows,
        partition: Partition,
        threshold: float,
        *,
        margin: float | None = None,
        items: np.ndarray | None = None,
        screen: np.ndarray | None = None,
        progress: ProgressFn | None = None,
        routed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        projected: np.ndarray | None = None,
        shapes: list[tuple[np.ndarray, int]] | None = None,
        beyond: np.ndarray | None = None,
    ):
        """Lazily built :class:`CellTask` of every non-empty cell, in cell order (screened
        through ``screen``, a ``(d', d)`` orthonormal projection, when given).

        ``routed``: :meth:`route`'s entries, when already routed. ``projected``: the
        ``(N, d' + 1)`` projected rows, each followed by its squared norm; the tasks then carry
        their rows' projections and return unmeasured candidates (``CellTask.measure`` False).
        ``shapes``: a list to which each task's ``(row ids, primary rows)`` is appended as it
        is built. ``beyond``: ``(e,)`` bool over the routed entries: each cell's primary rows
        are joined only against its entries marked there (``CellTask.cross_only``); ``None``:
        every pair of a cell with a primary row.
        """
        if routed is None:
            routed = self.route(rows, partition, threshold, margin=margin, items=items)
        row, cell, primary = routed
        bounds = np.searchsorted(cell, np.arange(partition.n_cells + 1))
        n_primary = _per_cell(primary, bounds)
        label = "joining cells" if beyond is None else "joining cells at the wider margin"
        for c in range(partition.n_cells):
            lo, hi = int(bounds[c]), int(bounds[c + 1])
            if hi - lo >= 2 and n_primary[c] >= 1:
                ids = row[lo:hi]
                if beyond is not None:  # the primary rows, then the entries marked beyond
                    split = lo + int(n_primary[c])
                    ids = np.concatenate([row[lo:split], row[split:hi][beyond[split:hi]]])
                if len(ids) > n_primary[c] or beyond is None:
                    if shapes is not None:
                        shapes.append((ids, int(n_primary[c])))
                    yield self._cell_task(
                        rows,
                        partition,
                        ids,
                        int(n_primary[c]),
                        threshold,
                        screen,
                        projected,
                        cross_only=beyond is not None,
                    )
            if progress:
                progress(label, c + 1, partition.n_cells)

    def _cell_task(
        self,
        rows: Rows,
        partition: Partition,
        ids: np.ndarray,
        n_primary: int,
        threshold: float,
        screen: np.ndarray | None,
        projected: np.ndarray | None,
        *,
        cross_only: bool = False,
    ) -> CellTask:
        """The :class:`CellTask` of one cell's rows ``ids`` (primary rows first)."""
        common = {
            "row_ids": ids,
            "n_primary": n_primary,
            "threshold": float(threshold),
            "block_size": self.block_size,
            "device": self.device,
            "cross_only": cross_only,
        }
        if projected is not None:  # np.take: faster than projected[ids]
            rows = np.take(projected, ids, axis=0)
            return CellTask(rows=rows, measure=False, with_squares=True, **common)
        full = rows.take(ids)
        if partition.projection is not None:
            screened = partition.project(full)
        elif screen is not None:
            screened = full @ screen.T
        else:
            return CellTask(rows=full, **common)
        return CellTask(rows=screened, verify=full, **common)

    def settings(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "cell_size": int(self.cell_size),
            "n_cells": self.n_cells,
            "margin": None if self.margin is None else float(self.margin),
            "sample_size": self.sample_size,
            "device": self.device,
            "project_above": self.project_above,
            "project_to": int(self.project_to),
            "dedupe": bool(self.dedupe),
        }


#: the rows are projected once for the screen (an ``(N, d')`` float32 matrix) up to this size;
#: above (e.g. 10M x 64: 1.28 GB), each cell projects its own rows, as the input may be a
#: memory map that the engine never holds in full.
_PROJECTED_BYTES = 256 << 20


#: found pairs on which the trial margin is judged, at most (a seeded subset beyond).
_TRIAL_PAIRS = 100_000


def _per_cell(flags: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``(C,)`` count of the true ``(e,)`` bool ``flags`` of each cell's entries
    ``[bounds[c], bounds[c + 1])``: ``np.add.reduceat`` over the flags and one false entry (it
    refuses a start at ``e``, which an empty last cell has), empty cells set to 0 (it gives
    them the entry at their start). One bool copy of the flags: 30 MB at 10M rows, where a
    cumulative sum in int64 took 240 MB at the routing's peak."""
    padded = np.zeros(len(flags) + 1, dtype=bool)
    padded[:-1] = flags
    counts = np.add.reduceat(padded, bounds[:-1])
    counts[bounds[:-1] == bounds[1:]] = 0
    return counts


def _entry_keys(routed: tuple[np.ndarray, np.ndarray, np.ndarray], n: int) -> np.ndarray:
    """``(e,)`` int64 ``cell * n + row`` of :meth:`Cells.route`'s entries (``n`` rows)."""
    row, cell, _ = routed
    return cell.astype(np.int64) * np.int64(n) + row


def _sorted_contains(known: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``(k,)`` bool: whether each of ``keys`` is among the ascending ``known``."""
    if len(known) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
    return known[at] == keys


def _margin_of(engine: Cells, margin: float | None) -> float:
    """The spill margin a join uses: ``margin``, else the engine's own, else the exact 0.5."""
    if margin is not None:
        return float(margin)
    return EXACT_MARGIN if engine.margin is None else float(engine.margin)


def _projection_sink(
    rows: Rows, screen: np.ndarray
) -> tuple[np.ndarray, Callable[[int, np.ndarray], None]]:
    """An ``(N, d' + 1)`` float32 matrix for the rows through the ``(d', d)`` ``screen``, each
    followed by its squared norm (one gather serves every cell, with no per-cell sums of
    squares), and the ``on_block(start, block)`` that fills it from :meth:`Cells.route`'s
    pass over the rows."""
    width = screen.shape[0]
    projected = mapped_empty((rows.n, width + 1))  # 4 KiB pages: see mapped_empty
    across = np.ascontiguousarray(screen.T)  # (d, d'): 65,536 x 64 rows 7.9 -> 4.3 ms

    def project(start: int, block: np.ndarray) -> None:
        out = projected[start : start + len(block)]
        np.matmul(block, across, out=out[:, :width])
        np.einsum("ij,ij->i", out[:, :width], out[:, :width], out=out[:, width])

    return projected, project


def _projects_once(
    rows: Rows, partition: Partition, screen: np.ndarray | None, device: str | None
) -> bool:
    """Whether :meth:`Cells.find_pairs` projects every row once for the cells' screens."""
    if screen is None or partition.projection is not None or device is not None:
        return False
    return 4 * rows.n * screen.shape[0] <= _PROJECTED_BYTES


#: a block whose rows to route (``items``) are at least this share of it is routed whole and
#: the other rows' entries dropped, instead of gathering the rows first (a row's cells never
#: depend on the other rows of its block; measured at 1M x 64 with 1 % exact copies set aside:
#: one copy of every block fewer, the same entries)
_ROUTE_ALL_SHARE = 0.9


def _route_rows(d: int) -> int:
    """Rows routed at once, for rows of width ``d``."""
    return max(256, min(_ROUTE_ROWS, _ROUTE_BYTES // (4 * d)))


def _measured(
    rows: Rows, found_i: list[np.ndarray], found_j: list[np.ndarray], threshold: float
) -> ClosePairs:
    """The candidate pairs ``(i, j)`` (global rows, ``i < j``; a pair may come several times)
    within ``threshold``, each measured once by :func:`exact_pair_distances` of its
    normalised rows, at most ~64 MB of rows at a time."""
    if not found_i:
        return ClosePairs.empty()
    n = np.int64(rows.n)
    key = np.concatenate(found_i).astype(np.int64) * n + np.concatenate(found_j)
    # np.unique's keys, by a sort in place: numpy 2's np.unique imports numpy.ma on first use
    # (10 ms of a 1M x 64 run) to ask whether the array is masked
    key.sort()
    key = key[np.concatenate([[True], key[1:] != key[:-1]])] if len(key) else key
    i, j = np.divmod(key, n)
    step = max(1, _MEASURE_BYTES // (8 * rows.d))
    dist = np.empty(len(key), dtype=np.float32)
    for start in range(0, len(key), step):
        stop = start + step
        dist[start:stop] = exact_pair_distances(rows.take(i[start:stop]), rows.take(j[start:stop]))
    keep = dist <= threshold
    return ClosePairs(i[keep], j[keep], dist[keep])


#: bytes of candidate rows gathered at once to measure them (both rows of each pair).
_MEASURE_BYTES = 64 << 20

#: :class:`HomeLimits` tables kept while routing up to this many bytes (``4 * C^2``: 60 MB at
#: 1M rows of 256-row cells; above, each block computes the limits of its own home leaves).
_HOME_LIMITS_BYTES = 64 << 20

#: (cell, primary) keys below this many are sorted as 16-bit ints (by radix in numpy).
_SMALL_KEYS = 1 << 16


def _order_entries(
    keys: list[np.ndarray], at: list[np.ndarray], n_cells: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, cell, primary)`` sorted by cell, primary first, then row, from per-block
    ``(e_b,)`` uint16 keys ``cell * 2 + (not primary)`` and their rows, each block in row order
    and the blocks in row order: one stable radix sort of the keys keeps the rows ascending
    within each key (at 1M x 64, 3.3M entries: about 0.09 s, against 0.22 s for sorting
    int64 keys of ``(cell, primary, row)`` and decoding them)."""
    if not keys:
        return (
            np.zeros(0, _index_dtype(n)),
            np.zeros(0, _index_dtype(n_cells)),
            np.zeros(0, dtype=bool),
        )
    key = np.concatenate(keys)
    del keys[:]
    row = np.concatenate(at)
    del at[:]  # the blocks' pieces go before the sort's int64 index comes (the peak)
    order = np.argsort(key, kind="stable")
    row = row[order]
    key = key[order]
    del order
    cell = (key >> 1).astype(_index_dtype(n_cells))
    primary = (key & 1) == 0
    return row, cell, primary


#: entries decoded at a time (bounded int64 temporaries).
_DECODE_CHUNK = 1 << 22


def _decode_entries(
    key: np.ndarray, n: np.int64, n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, cell, primary)`` of sorted keys ``(cell * 2 + (not primary)) * n + row``, in
    int32 where the values fit (measured at 1M x 64: about 3.3 entries a row)."""
    row = np.empty(len(key), dtype=_index_dtype(int(n)))
    cell = np.empty(len(key), dtype=_index_dtype(n_cells))
    primary = np.empty(len(key), dtype=bool)
    for start in range(0, len(key), _DECODE_CHUNK):
        stop = start + _DECODE_CHUNK
        quotient, row[start:stop] = np.divmod(key[start:stop], n)
        cell[start:stop] = quotient >> 1
        np.equal(quotient & 1, 0, out=primary[start:stop])
    return row, cell, primary


def _index_dtype(count: int) -> type:
    """int32 for indices below ``count`` when they fit, else int64."""
    return np.int32 if count < 2**31 else np.int64


def _captured_variance(sample: np.ndarray, projection: np.ndarray) -> float:
    """Fraction of ``sample``'s ``(s, D)`` variance kept by the ``(d, D)`` orthonormal map."""
    centred = sample - sample.mean(axis=0)
    total = float(np.einsum("ij,ij->", centred, centred, dtype=np.float64))
    kept = centred @ projection.T
    return float(np.einsum("ij,ij->", kept, kept, dtype=np.float64)) / total if total else 1.0


@contextmanager
def blas_threads(limit: int | None) -> Iterator[None]:
    """Limit the BLAS thread pools to ``limit`` threads inside the block (``None``: as is).

    Inside an enclosing block of the same limit (the engine's steps nest in
    ``analyse_view``'s) nothing is done again: each ``threadpool_limits`` scans the loaded
    libraries (0.3-0.4 ms, six times a run).
    """
    if limit is None or (_BLAS_LIMITS and _BLAS_LIMITS[-1] == int(limit)):
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=int(limit), user_api="blas"):
        _BLAS_LIMITS.append(int(limit))
        try:
            yield
        finally:
            _BLAS_LIMITS.pop()


#: the limits of the ``blas_threads`` blocks open now, innermost last (BLAS pools are global).
_BLAS_LIMITS: list[int] = []


def _annoy_options_error(given: dict[str, Any], middle: str, end: str = "") -> NeardupInputError:
    """``n_trees is an option of the annoy backend{middle} backend=neardup.Annoy(...){end}.``"""
    verb = "is an option" if len(given) == 1 else "are options"
    call = f"backend=neardup.Annoy({', '.join(f'{k}=...' for k in given)})"
    return NeardupInputError(f"{', '.join(given)} {verb} of the annoy backend{middle} {call}{end}.")


def as_backend(backend: Any, **annoy_options: Any) -> Backend:
    """Accept a backend object or a name (``"auto"``/``"cells"``, ``"annoy"``, ``"exact"``).

    ``annoy_options`` (``n_trees``, ``search_k``, ``n_jobs``, ``query_jobs``, ``dedupe``; ``None``
    when not given) are the older keyword form of ``Annoy(...)``: accepted with
    ``backend="annoy"`` (and checked but unused with ``"exact"``).
    """
    given = {k: v for k, v in annoy_options.items() if v is not None}
    unknown = set(given) - set(_ANNOY_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)}")
    if isinstance(backend, Backend):
        if given:
            raise _annoy_options_error(given, f"; with backend={backend!r} drop it, or pass")
        return backend
    if isinstance(backend, str) and backend in BACKEND_NAMES:
        if backend == "annoy":
            return Annoy(**given)
        if given:
            Annoy(**given)  # validated as before, whatever the backend
        if backend == "exact":
            return Exact()
        if given:
            raise _annoy_options_error(
                given, f", but backend={backend!r} uses the cell engine; pass", " for annoy"
            )
        return Cells()
    raise NeardupInputError(
        f"backend={backend!r} is not supported; use neardup.Cells() (the default, also "
        "'auto'/'cells'), neardup.Annoy(...) ('annoy') or neardup.Exact() ('exact')."
    )
