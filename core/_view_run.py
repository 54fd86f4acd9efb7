"""One view, analysed: normalise -> backend (close pairs, threshold) -> the single-view result.

:func:`analyse_view` runs the shared steps for one view of a validated :class:`Dataset` and
returns a :class:`ViewRun` (its normalised rows, neighbour graph, resolved threshold and every
close pair); :func:`single_view_result` (:func:`result_from_pairs`) turns a run into a
:class:`DuplicatesResult`. The multi-view combination (``_multiview``) reuses both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._auto_threshold import Auto
from ._chains import PairwiseFn, euclidean_pairwise, euclidean_set_diameters, split_chains
from ._clusters import ClusterAssignment, close_pairs, set_statistics
from ._errors import NeardupInputError
from ._leakage import (
    leakage_record,
    nearest_reference,
    nearest_reference_by_group,
    nearest_reference_in_pairs,
    to_python,
)
from ._reduce import as_reducer
from ._stats import distinct, quantile
from ._text_join import TextSource, text_join, uses_text_join
from ._threshold import ResolvedThreshold, as_strategy, resolve_threshold
from ._transform import Transform
from ._validate import Dataset, check_unnormalized_scale
from .report import DuplicateSet, DuplicatesResult, Leakage
from .search import (
    Backend,
    ClosePairs,
    NeighborGraph,
    ProgressFn,
    Rows,
    as_backend,
    clamp_k,
    copy_pairs,
    exact_pair_distances,
    find_copies,
    merge_pairs,
)

__all__ = [
    "ViewRun",
    "analyse_view",
    "assignment_from_members",
    "check_max_diameter",
    "class_counts",
    "duplicate_sets",
    "graph_close_pairs",
    "histogram",
    "leakage_by_split",
    "result_from_pairs",
    "row_values",
    "single_view_result",
]

_HISTOGRAM_BINS = 60
#: pairs whose distances are measured at once (two gathers of this many rows).
_PAIR_BLOCK = 65_536


@dataclass
class ViewRun:
    """One view after the shared steps.

    ``rows``: the normalised (and reduced) float32 rows of all splits stacked (``rows.take``
    reads any of them); ``graph``: the k nearest rows of every row, or of a seeded sample
    (``Cells``); ``threshold``: the resolved threshold; ``pairs``: every pair within it;
    ``nearest``: each row's nearest reference row and distance when the backend computed
    them (otherwise they come from ``pairs``); ``settings``: the options it ran with;
    ``reach_pairs``: the pairs beyond the threshold but within ``reach`` times it (a text
    view's word reach, :data:`~neardup.views.WORD_REACH`: pairs the word check may still
    confirm), empty unless :func:`analyse_view` was given a reach; ``markup_candidates``:
    the ``(marked, plain)`` rows the n-gram join listed for the markup route
    (:mod:`neardup._markup_route`), ``None`` when the rows were not joined through their
    texts' n-grams.
    """

    rows: Rows
    graph: NeighborGraph
    threshold: ResolvedThreshold
    settings: dict[str, Any]
    pairs: ClosePairs
    nearest: tuple[np.ndarray, np.ndarray] | None = None
    reach_pairs: ClosePairs = field(default_factory=ClosePairs.empty)
    markup_candidates: tuple[np.ndarray, np.ndarray] | None = None

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), d)`` normalised float32 rows."""
        return self.rows.take(rows)

    def pairwise(self) -> PairwiseFn:
        """Exact member-to-member distances in threshold units (distance / threshold)."""
        return euclidean_pairwise(self.rows.take, self.threshold.value)

    def relative(self, i: np.ndarray, j: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """``(p,)`` float64 ``distance`` (of the pairs ``(i[p], j[p])``) in threshold units,
        the scale the combined verdict compares views on (within 1: close). A zero threshold
        gives 0 for exact copies and ``inf`` otherwise."""
        value = self.threshold.value
        if value > 0:
            return np.asarray(distance, dtype=np.float64) / value
        return np.where(np.asarray(distance) > 0, np.inf, 0.0)

    def pair_distances(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``(p,)`` float32 exact distances between rows ``i[p]`` and ``j[p]``."""
        out = np.empty(len(i), dtype=np.float32)
        for start in range(0, len(i), _PAIR_BLOCK):
            stop = start + _PAIR_BLOCK
            out[start:stop] = exact_pair_distances(
                self.take(i[start:stop]), self.take(j[start:stop])
            )
        return out


def check_max_diameter(max_diameter: Any) -> float | None:
    """``None`` or a finite number > 0 (a multiple of the threshold)."""
    if max_diameter is None:
        return None
    if isinstance(max_diameter, bool) or not isinstance(max_diameter, (int, float, np.number)):
        raise NeardupInputError(
            f"max_diameter must be a number > 0 (a multiple of the threshold) or None, got "
            f"{max_diameter!r}."
        )
    value = float(max_diameter)
    if not (np.isfinite(value) and value > 0):
        raise NeardupInputError(
            f"max_diameter must be a finite number > 0 (a multiple of the threshold, e.g. 2.0), "
            f"got {max_diameter!r}."
        )
    return value


def analyse_view(
    dataset: Dataset,
    *,
    threshold: Any = None,
    normalize: str | None = "row",
    reduce: Any = None,
    k: int = 10,
    backend: Backend | str = "auto",
    reference_index: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    text: TextSource | None = None,
    reach: float = 1.0,
) -> ViewRun:
    """Normalise, reduce, search and resolve the threshold of one view.

    ``threshold=None`` means :class:`Auto`. Options as in :func:`neardup.find_duplicates`
    (already validated there); ``backend`` is a backend object or name. ``text``: the texts
    of :class:`~neardup.views.TextRows` rows, whose close pairs then come from their n-grams
    at scale (:func:`~neardup._text_join.uses_text_join`). ``reach`` (>= 1): the pairs are
    searched within ``reach`` times the threshold; those beyond the threshold are kept apart
    (:attr:`ViewRun.reach_pairs`), the threshold and ``pairs`` are as without it.
    """
    engine = as_backend(backend)
    strategy = Auto() if threshold is None else as_strategy(threshold)
    reducer = as_reducer(reduce)
    if normalize is None or reducer is not None:
        check_unnormalized_scale(dataset.arrays, "find_duplicates")
    k = clamp_k(k, sum(dataset.sizes))
    transform = Transform.fit(dataset.arrays, normalize=normalize, reduce=reducer)
    if progress and reducer is not None:
        progress("PCA", 1, 1)
    rows = Rows.transformed(dataset.arrays, transform)
    split_of_row = dataset.split_of_row
    ref_index = reference_index
    nearest = margin = screen = join_info = markup = None
    if engine.finds_pairs:
        with engine.thread_limits():
            graph = engine.neighbor_graph(rows, k, seed=seed)
            resolved = resolve_threshold(strategy, graph, normalize)
            copies = find_copies(rows) if engine.dedupe else None
            items = copies.first if copies is not None and copies.n_copies else None
            n_joined = rows.n if items is None else len(items)
            searched = resolved.value * reach  # pairs beyond the threshold: reach_pairs
            through_text = text is not None and uses_text_join(
                engine,
                normalize=normalize,
                reduced=reducer is not None,
                n_rows=n_joined,
                threshold=searched,
            )
            if through_text:
                joined = text_join(rows, text, searched, items=items, seed=seed)
                pairs, join_info, markup = joined.pairs, joined.info, joined.markup
            else:
                partition = engine.fit(rows, seed=seed)
                margins = engine.margins_for(rows, partition, graph, searched)
                screen = engine.screen_for(rows, partition, graph, searched, seed=seed)
                join = {
                    "seed": seed,
                    "partition": partition,
                    "margin": margins,
                    "screen": screen,
                    "progress": progress,
                }
                pairs, margin = engine.join(rows, searched, items=items, **join)
            pairs, reach_pairs = _beyond(pairs, resolved.value)
            if items is not None:  # each distinct row was joined once: link its copies
                if ref_index is not None:
                    nearest = nearest_reference_by_group(
                        pairs.i, pairs.j, pairs.distance, copies.group, split_of_row, ref_index
                    )
                pairs = merge_pairs([pairs, copy_pairs(copies)])
    else:
        graph = engine.graph(
            rows,
            k,
            seed=seed,
            prefer=None if ref_index is None else split_of_row == ref_index,
            progress=progress,
        )
        x = rows.matrix()  # rows.take reads it from now on
        resolved = resolve_threshold(strategy, graph, normalize)
        pairs, reach_pairs = _beyond(
            graph_close_pairs(graph, resolved.value * reach), resolved.value
        )
        if ref_index is not None:
            nearest = nearest_reference(x, graph, resolved.value, split_of_row, ref_index)
    settings = {
        "normalize": normalize,
        "reduce": None if reducer is None else reducer.n_components,
        "k": k,
        **dict.fromkeys(("n_trees", "search_k", "n_jobs", "dedupe")),
        **engine.settings(),
        **({} if margin is None else {"margin_used": margin}),
        **({} if screen is None else {"screen_width": int(screen.shape[0])}),
        **({} if join_info is None else {"text_join": join_info}),
        "seed": seed,
        "dim": int(rows.d),
    }
    return ViewRun(
        rows=rows,
        graph=graph,
        threshold=resolved,
        settings=settings,
        pairs=pairs,
        nearest=nearest,
        reach_pairs=reach_pairs,
        markup_candidates=markup,
    )


def _beyond(pairs: ClosePairs, threshold: float) -> tuple[ClosePairs, ClosePairs]:
    """``pairs`` split into those within ``threshold`` and those beyond it (order kept)."""
    within = pairs.distance <= threshold
    if within.all():
        return pairs, ClosePairs.empty()
    beyond = ~within
    return (
        ClosePairs(pairs.i[within], pairs.j[within], pairs.distance[within]),
        ClosePairs(pairs.i[beyond], pairs.j[beyond], pairs.distance[beyond]),
    )


def graph_close_pairs(graph: NeighborGraph, threshold: float) -> ClosePairs:
    """The close pairs of a kNN graph of every row, as :class:`ClosePairs`."""
    rows, cols = close_pairs(graph, threshold)
    dist = graph.distances[graph.distances <= threshold]
    return merge_pairs(
        [ClosePairs(np.minimum(rows, cols), np.maximum(rows, cols), dist.astype(np.float32))]
    )


def assignment_from_members(n_rows: int, members: list[np.ndarray]) -> ClusterAssignment:
    """A :class:`ClusterAssignment` whose sets are exactly ``members`` (each of 2+ rows)."""
    if not members:
        return ClusterAssignment(n_rows, np.zeros(0, np.int64), np.zeros(0, np.int64))
    rows = np.concatenate([np.full(len(m), m[0]) for m in members]).astype(np.int64)
    cols = np.concatenate(members).astype(np.int64)
    return ClusterAssignment(n_rows, rows, cols)


def single_view_result(
    run: ViewRun,
    dataset: Dataset,
    reference_index: int | None,
    *,
    max_diameter: Any = None,
    layer: str | None = None,
) -> DuplicatesResult:
    """The :class:`DuplicatesResult` of one analysed view."""
    return result_from_pairs(
        run.pairs,
        dataset=dataset,
        threshold=run.threshold,
        reference=reference_index,
        rows=run.take,
        graph=run.graph,
        settings=run.settings,
        layer=layer,
        nearest=run.nearest,
        max_diameter=max_diameter,
    )


def result_from_pairs(
    pairs: ClosePairs,
    *,
    dataset: Dataset,
    threshold: ResolvedThreshold,
    reference: int | None,
    rows: Callable[[np.ndarray], np.ndarray],
    graph: NeighborGraph,
    settings: dict[str, Any],
    layer: str | None = None,
    nearest: tuple[np.ndarray, np.ndarray] | None = None,
    max_diameter: float | None = None,
) -> DuplicatesResult:
    """The :class:`DuplicatesResult` of all close pairs (what every backend ends with).

    Parameters
    ----------
    pairs:
        Every pair within ``threshold.value`` (global rows over the splits in order).
    dataset:
        The validated splits (sizes, ids, labels) from :func:`neardup._validate.prepare`.
    reference:
        Index of the reference split (``None``: no leakage).
    rows:
        ``rows(global_rows) -> (len, d)`` normalised float32 rows (for the sets' statistics
        and diameters).
    graph:
        The neighbour graph the threshold was resolved on (every row, or a sample): the
        histogram is drawn from it.
    nearest:
        Each row's nearest reference row and distance, when the backend computed them itself;
        otherwise taken from the pairs.
    max_diameter:
        Split sets wider than this many thresholds (``None``: keep them whole).
    """
    max_diameter = check_max_diameter(max_diameter)
    n = int(sum(dataset.sizes))
    split_of_row = dataset.split_of_row
    value = threshold.value
    assignment = ClusterAssignment(n, pairs.i, pairs.j)
    pairwise = euclidean_pairwise(rows, value)
    if max_diameter is not None:
        assignment = assignment_from_members(
            n, split_chains(assignment.members, pairwise, max_diameter)
        )
    leakage = {}
    if reference is not None:
        if nearest is None:
            nearest = nearest_reference_in_pairs(
                pairs.i, pairs.j, pairs.distance, split_of_row, reference
            )
        leakage = leakage_by_split(*nearest, dataset, reference)
    raw_counts, effective = class_counts(dataset, assignment, reference)
    stats_x, local = _member_rows(rows, assignment)  # rows read once
    diameters = euclidean_set_diameters(stats_x, local[assignment.rows], assignment.sizes)
    return DuplicatesResult(
        split_sizes=dict(zip(dataset.names, dataset.sizes)),
        reference=None if reference is None else dataset.names[reference],
        threshold=threshold,
        clusters=duplicate_sets(stats_x, assignment, dataset, diameters, local=local),
        leakage=leakage,
        class_counts=raw_counts,
        effective_class_counts=effective,
        histogram=histogram(
            graph.distances[:, 0],
            graph.indices[:, 0],
            split_of_row,
            value,
            query_rows=graph.query_rows,
        ),
        settings=dict(settings, max_diameter=max_diameter),
        layer=layer,
    )


def _member_rows(
    rows: Callable[[np.ndarray], np.ndarray], assignment: ClusterAssignment
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of every set member ``(M, d)`` and each global row's position among them
    ``(N,)`` (-1 for rows in no set): only members are gathered."""
    n = len(assignment.label)
    members = np.flatnonzero(assignment.label >= 0)
    local = np.full(n, -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    return rows(members), local


def row_values(per_split: list[np.ndarray | None], rows: np.ndarray, dataset: Dataset) -> Any:
    """Python values (ids or labels) of the given global rows; None when no split has any."""
    if all(v is None for v in per_split):
        return None
    split_of_row = dataset.split_of_row
    offsets = dataset.offsets
    out = []
    for r in rows:
        s = split_of_row[r]
        values = per_split[s]
        out.append(None if values is None else to_python(values[r - offsets[s]]))
    return out


def duplicate_sets(
    x: np.ndarray,
    assignment: ClusterAssignment,
    dataset: Dataset,
    diameters: np.ndarray,
    *,
    local: np.ndarray | None = None,
) -> list[DuplicateSet]:
    """:class:`DuplicateSet` records of every set, tightest first.

    ``x`` is the space the centroid statistics are measured in: ``(N, d)``, or only the rows
    in sets with ``local`` ``(N,)`` giving each global row's position in ``x``.
    ``diameters`` ``(n_sets,)`` comes from the caller (in the view's distance or in
    threshold units). Members' splits, positions, ids and labels are gathered for all sets at
    once; only the records themselves are built one by one.
    """
    sizes = assignment.sizes
    members = assignment.rows
    stats = set_statistics(x, members if local is None else local[members], sizes)
    rows = members[stats.order]  # global rows, each set in its principal-axis order
    split = dataset.split_of_row[rows]
    positions = (rows - dataset.offsets[split]).tolist()
    splits = np.asarray(dataset.names, dtype=object)[split].tolist()
    ids = _member_values(dataset.ids, split, positions)
    labels = _member_values(dataset.labels, split, positions)
    ends = np.cumsum(sizes).tolist()
    starts = [0, *ends[:-1]]
    sets = [
        DuplicateSet(
            ids=None if ids is None else ids[lo:hi],
            splits=splits[lo:hi],
            positions=positions[lo:hi],
            labels=None if labels is None else labels[lo:hi],
            mean=mean,
            std=std,
            projection=projection,
            diameter=diameter,
            central=central,
        )
        for lo, hi, mean, std, projection, diameter, central in zip(
            starts,
            ends,
            stats.mean.tolist(),
            stats.std.tolist(),
            stats.projections,
            np.asarray(diameters, dtype=np.float64).tolist(),
            stats.central.tolist(),
        )
    ]
    order = np.lexsort((np.arange(len(sets)), -sizes, stats.mean))
    return [sets[i] for i in order.tolist()]


def _member_values(
    per_split: list[np.ndarray | None], split: np.ndarray, positions: list[int]
) -> list[Any] | None:
    """Python values (ids or labels) of members given by split and position; ``None`` when no
    split has any (a split without values gives ``None`` for its members)."""
    if all(v is None for v in per_split):
        return None
    at = np.asarray(positions, dtype=np.int64)
    out = np.full(len(at), None, dtype=object)
    for s, values in enumerate(per_split):
        mine = split == s
        if values is not None and mine.any():
            picked = values[at[mine]]
            out[mine] = [to_python(v) for v in picked] if picked.dtype == object else picked
    return out.tolist()


def leakage_by_split(
    best_row: np.ndarray, best_dist: np.ndarray, dataset: Dataset, ref_index: int
) -> dict[str, Leakage]:
    """One :class:`Leakage` per evaluation split from every row's nearest reference row.

    ``best_row`` ``(N,)``: global row of each row's nearest reference partner (``-1``: none);
    ``best_dist`` ``(N,)``: its distance (or score).
    """
    offsets = dataset.offsets
    out = {}
    for s, name in enumerate(dataset.names):
        if s == ref_index:
            continue
        best = best_row[offsets[s] : offsets[s + 1]]
        out[name] = leakage_record(
            np.where(best >= 0, best - offsets[ref_index], -1),
            best_dist[offsets[s] : offsets[s + 1]],
            split=name,
            reference=dataset.names[ref_index],
            ids=dataset.ids[s],
            labels=dataset.labels[s],
            ref_ids=dataset.ids[ref_index],
            ref_labels=dataset.labels[ref_index],
        )
    return out


def class_counts(
    dataset: Dataset, assignment: ClusterAssignment, ref_index: int | None = None
) -> tuple[dict[str, dict[Any, int]], dict[str, dict[Any, int]]]:
    """Per split: label -> samples, and label -> samples once each set is collapsed to one.

    Each set is kept in one split: the reference split when it has members there (a test
    sample copied from train is not a test sample of its own), else the first split, in input
    order, that it reaches. There it counts once for each label it holds (a set whose members
    disagree on the label counts once per label); in every other split its members vanish.
    """
    raw: dict[str, dict[Any, int]] = {}
    effective: dict[str, dict[Any, int]] = {}
    kept_in = _split_keeping_each_set(dataset, assignment, ref_index)
    offsets = dataset.offsets
    for s, name in enumerate(dataset.names):
        set_of = assignment.label[offsets[s] : offsets[s + 1]]
        labels = dataset.labels[s]
        if labels is None:
            labels = np.zeros(dataset.sizes[s], dtype=np.int8)
            keys = [None]
        else:
            keys = distinct(labels).tolist()
        raw[name], effective[name] = {}, {}
        for key, code in zip(keys, [0] if keys == [None] else keys):
            mask = labels == code
            members = set_of[mask]
            alone = int(np.count_nonzero(members < 0))
            grouped = members[members >= 0]
            kept_here = distinct(grouped[kept_in[grouped] == s])
            raw[name][key] = int(mask.sum())
            effective[name][key] = alone + len(kept_here)
    return raw, effective


def _split_keeping_each_set(
    dataset: Dataset, assignment: ClusterAssignment, ref_index: int | None
) -> np.ndarray:
    """``(num_sets,)`` split index where each set counts: the reference if it reaches it."""
    set_of = assignment.label
    grouped = set_of >= 0
    num_sets = int(set_of.max()) + 1 if grouped.any() else 0
    rank = dataset.split_of_row.astype(np.int64)
    if ref_index is not None:
        rank = np.where(rank == ref_index, -1, rank)
    kept = np.full(num_sets, len(dataset.names), dtype=np.int64)
    np.minimum.at(kept, set_of[grouped], rank[grouped])
    return np.where(kept < 0, -1 if ref_index is None else ref_index, kept)


def histogram(
    nearest: np.ndarray,
    nearest_row: np.ndarray,
    split_of_row: np.ndarray,
    threshold: float,
    *,
    query_rows: np.ndarray | None = None,
) -> dict:
    """Histogram of nearest-neighbour distances ``(m,)``, within-split vs cross-split.

    ``nearest_row`` ``(m,)`` is each row's nearest neighbour (``-1``: none); ``query_rows``
    ``(m,)`` the global rows they belong to (``None``: every row, in order; the ``Cells``
    backend's graph covers a seeded sample).
    """
    valid = np.isfinite(nearest) & (nearest_row >= 0)
    values = nearest[valid].astype(np.float64)
    query = np.flatnonzero(valid) if query_rows is None else query_rows[valid]
    cross = split_of_row[query] != split_of_row[nearest_row[valid]]
    top = max(quantile(values, 0.995) if values.size else 0.0, 2.0 * threshold)
    top = top if top > 0 else 1.0
    edges = np.linspace(0.0, top, _HISTOGRAM_BINS + 1)
    clipped = np.minimum(values, top)
    within_counts, _ = np.histogram(clipped[~cross], bins=edges)
    cross_counts, _ = np.histogram(clipped[cross], bins=edges)
    return {
        "edges": edges.tolist(),
        "within": within_counts.tolist(),
        "cross": cross_counts.tolist(),
    }
