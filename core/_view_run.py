"""One view, analysed: normalise -> neighbours -> threshold, then the single-view result.

:func:`analyse_view` runs the shared steps for one view of a validated :class:`Dataset` and
returns a :class:`ViewRun` (its normalised rows, neighbour graph and resolved threshold);
:func:`single_view_result` turns a run into a :class:`DuplicatesResult`. The multi-view
combination (``_multiview``) reuses both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._auto_threshold import Auto
from ._chains import PairwiseFn, euclidean_pairwise, set_diameters, split_chains
from ._clusters import ClusterAssignment, cluster_rows, set_statistics
from ._errors import NeardupInputError
from ._leakage import leakage_record, nearest_reference, to_python
from ._normalize import check_normalize
from ._reduce import as_reducer
from ._threshold import ResolvedThreshold, as_strategy, resolve_threshold
from ._transform import Transform
from ._validate import Dataset
from .report import DuplicateSet, DuplicatesResult, Leakage
from .search import DEFAULT_TREES, NeighborGraph, ProgressFn, Rows, build_graph, clamp_k

__all__ = [
    "ViewRun",
    "analyse_view",
    "assignment_from_members",
    "check_max_diameter",
    "class_counts",
    "duplicate_sets",
    "histogram",
    "row_values",
    "single_view_result",
]

_HISTOGRAM_BINS = 60


@dataclass
class ViewRun:
    """One view after the shared steps.

    ``x`` ``(N, d)``: normalised (and reduced) float32 rows of all splits stacked;
    ``graph``: each row's k nearest rows; ``threshold``: the resolved threshold;
    ``settings``: the options it ran with.
    """

    x: np.ndarray
    graph: NeighborGraph
    threshold: ResolvedThreshold
    settings: dict[str, Any]

    def pairwise(self) -> PairwiseFn:
        """Exact member-to-member distances in threshold units (distance / threshold)."""
        return euclidean_pairwise(self.x, self.threshold.value)


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
    backend: str = "auto",
    reference_index: int | None = None,
    seed: int = 0,
    n_trees: int = DEFAULT_TREES,
    search_k: int = -1,
    n_jobs: int = 1,
    query_jobs: int = -1,
    dedupe: bool = True,
    progress: ProgressFn | None = None,
) -> ViewRun:
    """Normalise, reduce, build the neighbour graph and resolve the threshold of one view.

    ``threshold=None`` means :class:`Auto`. Options as in :func:`neardup.find_duplicates`.
    """
    normalize = check_normalize(normalize)
    if not isinstance(dedupe, (bool, np.bool_)):
        raise NeardupInputError(f"dedupe must be True or False, got {dedupe!r}.")
    strategy = Auto() if threshold is None else as_strategy(threshold)
    reducer = as_reducer(reduce)
    k = clamp_k(k, sum(dataset.sizes))
    transform = Transform.fit(dataset.arrays, normalize=normalize, reduce=reducer)
    if progress and reducer is not None:
        progress("PCA", 1, 1)
    rows = Rows.transformed(dataset.arrays, transform)
    split_of_row = dataset.split_of_row
    graph = build_graph(
        rows,
        k,
        backend=backend,
        n_trees=n_trees,
        search_k=search_k,
        seed=seed,
        n_jobs=n_jobs,
        query_jobs=query_jobs,
        dedupe=dedupe,
        prefer=None if reference_index is None else split_of_row == reference_index,
        progress=progress,
    )
    x = rows.matrix()
    resolved = resolve_threshold(strategy, graph, normalize)
    settings = {
        "normalize": normalize,
        "reduce": None if reducer is None else reducer.n_components,
        "k": k,
        "backend": graph.backend,
        "n_trees": n_trees if graph.backend == "annoy" else None,
        "search_k": search_k if graph.backend == "annoy" else None,
        "n_jobs": n_jobs if graph.backend == "annoy" else None,
        "dedupe": dedupe if graph.backend == "annoy" else None,
        "seed": seed,
        "dim": int(x.shape[1]),
    }
    return ViewRun(x=x, graph=graph, threshold=resolved, settings=settings)


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
    max_diameter = check_max_diameter(max_diameter)
    split_of_row = dataset.split_of_row
    value = run.threshold.value
    assignment = cluster_rows(run.graph, value)
    pairwise = run.pairwise()
    if max_diameter is not None:
        members = split_chains(assignment.members, pairwise, max_diameter)
        assignment = assignment_from_members(len(run.x), members)
    leakage = (
        _leakage(run.x, run.graph, value, dataset, split_of_row, reference_index)
        if reference_index is not None
        else {}
    )
    raw_counts, effective = class_counts(dataset, assignment)
    diameters = set_diameters(assignment.members, pairwise) * value
    settings = dict(run.settings, max_diameter=max_diameter)
    return DuplicatesResult(
        split_sizes=dict(zip(dataset.names, dataset.sizes)),
        reference=None if reference_index is None else dataset.names[reference_index],
        threshold=run.threshold,
        clusters=duplicate_sets(run.x, assignment, dataset, diameters),
        leakage=leakage,
        class_counts=raw_counts,
        effective_class_counts=effective,
        histogram=histogram(
            run.graph.distances[:, 0], run.graph.indices[:, 0], split_of_row, value
        ),
        settings=settings,
        layer=layer,
    )


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
    threshold units).
    """
    split_of_row = dataset.split_of_row
    local_members = assignment.members if local is None else [local[m] for m in assignment.members]
    means, stds, ordered_local, projections = set_statistics(x, local_members)
    offsets = dataset.offsets
    sets = []
    for index, (members_local, mean, std, proj, diameter) in enumerate(
        zip(ordered_local, means, stds, projections, diameters)
    ):
        # set_statistics orders members along their principal axis: same order, global rows
        # (``local`` is increasing, so each set's local rows are sorted like its global ones)
        rows = (
            members_local
            if local is None
            else assignment.members[index][np.searchsorted(local_members[index], members_local)]
        )
        members = x[members_local].astype(np.float64)
        spread = ((members - members.mean(axis=0)) ** 2).sum(axis=1)
        sets.append(
            DuplicateSet(
                ids=row_values(dataset.ids, rows, dataset),
                splits=[dataset.names[s] for s in split_of_row[rows]],
                positions=(rows - offsets[split_of_row[rows]]).tolist(),
                labels=row_values(dataset.labels, rows, dataset),
                mean=float(mean),
                std=float(std),
                projection=proj,
                diameter=float(diameter),
                central=int(np.argmin(spread)),
            )
        )
    order = sorted(range(len(sets)), key=lambda i: (sets[i].mean, -sets[i].size, i))
    return [sets[i] for i in order]


def _leakage(
    x: np.ndarray,
    graph: NeighborGraph,
    threshold: float,
    dataset: Dataset,
    split_of_row: np.ndarray,
    ref_index: int,
) -> dict[str, Leakage]:
    best_row, best_dist = nearest_reference(x, graph, threshold, split_of_row, ref_index)
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
    dataset: Dataset, assignment: ClusterAssignment
) -> tuple[dict[str, dict[Any, int]], dict[str, dict[Any, int]]]:
    """Per split: label -> samples, and label -> samples once each set is collapsed to one.

    A set collapses separately in each split and for each label it holds, so a set whose
    members disagree on the label still counts once per label.
    """
    raw: dict[str, dict[Any, int]] = {}
    effective: dict[str, dict[Any, int]] = {}
    offsets = dataset.offsets
    for s, name in enumerate(dataset.names):
        set_of = assignment.label[offsets[s] : offsets[s + 1]]
        labels = dataset.labels[s]
        if labels is None:
            labels = np.zeros(dataset.sizes[s], dtype=np.int8)
            keys = [None]
        else:
            keys = np.unique(labels).tolist()
        raw[name], effective[name] = {}, {}
        for key, code in zip(keys, [0] if keys == [None] else keys):
            mask = labels == code
            members = set_of[mask]
            alone = int(np.count_nonzero(members < 0))
            raw[name][key] = int(mask.sum())
            effective[name][key] = alone + len(np.unique(members[members >= 0]))
    return raw, effective


def histogram(
    nearest: np.ndarray, nearest_row: np.ndarray, split_of_row: np.ndarray, threshold: float
) -> dict:
    """Histogram of nearest-neighbour distances ``(N,)``, within-split vs cross-split.

    ``nearest_row`` ``(N,)`` is each row's nearest neighbour (``-1``: none).
    """
    valid = np.isfinite(nearest) & (nearest_row >= 0)
    values = nearest[valid].astype(np.float64)
    cross = split_of_row[valid] != split_of_row[nearest_row[valid]]
    top = max(float(np.quantile(values, 0.995)) if values.size else 0.0, 2.0 * threshold)
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
