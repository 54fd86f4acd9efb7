"""``find_duplicates``: validate -> transform -> search -> threshold -> sets/leakage -> report."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ._clusters import ClusterAssignment, close_pairs, set_statistics
from ._errors import NeardupInputError, closest_names
from ._leakage import (
    leakage_record,
    nearest_reference,
    nearest_reference_by_group,
    nearest_reference_in_pairs,
    to_python,
)
from ._normalize import check_normalize
from ._reduce import PCA, as_reducer
from ._threshold import ResolvedThreshold, ThresholdStrategy, as_strategy, resolve_threshold
from ._transform import Transform
from ._validate import Dataset, prepare, split_index
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
    find_copies,
    merge_pairs,
)

__all__ = [
    "analyze_layers",
    "find_duplicates",
    "find_duplicates_by_layer",
    "graph_close_pairs",
    "result_from_pairs",
]

_HISTOGRAM_BINS = 60


def find_duplicates(
    data: Any,
    *,
    labels: Any = None,
    ids: Any = None,
    threshold: ThresholdStrategy | None = None,
    normalize: str | None = "row",
    reduce: Any = None,
    k: int = 10,
    backend: Backend | str = "auto",
    reference: str | None = "train",
    seed: int = 0,
    n_trees: int | None = None,
    search_k: int | None = None,
    n_jobs: int | None = None,
    query_jobs: int | None = None,
    dedupe: bool | None = None,
    layer: str | None = None,
    progress: ProgressFn | None = None,
) -> DuplicatesResult:
    """Find near-duplicate samples in one layer's activations, within and across splits.

    Parameters
    ----------
    data:
        An ``(N, ...)`` array (one split, named ``"data"``) or a mapping ``split -> array``.
        Every sample is flattened; any float or integer dtype is computed in float32.
    labels, ids:
        Per split (a mapping like ``data``, or one sequence for a single array). Labels (int
        or str) give per-class leakage and effective class counts; ids (unique per split,
        any hashable) name samples in the result. Default ids: the position in the split.
    threshold:
        A strategy: ``Relative(0.2)`` by default (no duplicates on data that has none),
        ``Cosine(s)``, ``Distance(x)``, or DNIKit's ``Slope()`` / ``Percentile(p)``.
    normalize:
        ``"row"`` (cosine geometry, default), ``"column"`` (DNIKit) or ``None``.
    reduce:
        ``None``, an int ``n`` or ``PCA(n)``: project onto the top ``n`` principal components
        (computed from all splits) before normalising.
    k:
        Neighbours per sample for the neighbour statistics (clamped to N-1 with a warning).
    backend:
        ``neardup.Cells()`` (the default, also ``"auto"``/``"cells"``): every pair within the
        threshold, exactly, from a partitioned join; thresholds that need neighbour statistics
        read the exact kNN of a seeded sample of rows. ``neardup.Annoy(...)`` (``"annoy"``):
        approximate kNN graph of every row, as DNIKit. ``neardup.Exact()`` (``"exact"``): exact
        kNN graph by brute force (small data).
    n_trees, search_k, n_jobs, query_jobs, dedupe:
        The older keyword form of ``Annoy(...)``'s options, accepted with ``backend="annoy"``.
    reference:
        The split others are checked against for leakage (ignored with a single split);
        ``None`` skips leakage.
    seed:
        Seeds the samples and partition of ``Cells`` and annoy's trees.
    progress:
        Optional ``callback(stage, done, total)`` for long runs.

    Returns
    -------
    DuplicatesResult
    """
    # validate
    normalize = check_normalize(normalize)
    engine = as_backend(
        backend,
        n_trees=n_trees,
        search_k=search_k,
        n_jobs=n_jobs,
        query_jobs=query_jobs,
        dedupe=dedupe,
    )
    strategy = as_strategy(threshold)
    reducer = as_reducer(reduce)
    dataset = prepare(data, labels=labels, ids=ids)
    ref_index = None
    if reference is not None and len(dataset.names) > 1:
        ref_index = split_index(reference, dataset.names, what="reference split")
    k = clamp_k(k, sum(dataset.sizes))
    # transform
    rows = _transform(dataset, normalize, reducer, progress)
    # search, threshold
    split_of_row = dataset.split_of_row
    nearest = None
    if engine.finds_pairs:
        graph = engine.neighbor_graph(rows, k, seed=seed)
        resolved = resolve_threshold(strategy, graph, normalize)
        copies = find_copies(rows) if engine.dedupe else None
        if copies is not None and copies.n_copies:  # join each distinct row once
            pairs = engine.find_pairs(
                rows, resolved.value, seed=seed, items=copies.first, progress=progress
            )
            if ref_index is not None:
                nearest = nearest_reference_by_group(
                    pairs.i, pairs.j, pairs.distance, copies.group, split_of_row, ref_index
                )
            pairs = merge_pairs([pairs, copy_pairs(copies)])
        else:
            pairs = engine.find_pairs(rows, resolved.value, seed=seed, progress=progress)
        take = rows.take
    else:
        graph = engine.graph(
            rows,
            k,
            seed=seed,
            prefer=None if ref_index is None else split_of_row == ref_index,
            progress=progress,
        )
        x = rows.matrix()
        resolved = resolve_threshold(strategy, graph, normalize)
        pairs = graph_close_pairs(graph, resolved.value)
        if ref_index is not None:
            nearest = nearest_reference(x, graph, resolved.value, split_of_row, ref_index)

        def take(r: np.ndarray) -> np.ndarray:
            return x[r]

    # sets, leakage and report
    settings = {
        "normalize": normalize,
        "reduce": None if reducer is None else reducer.n_components,
        "k": k,
        **dict.fromkeys(("n_trees", "search_k", "n_jobs", "dedupe")),
        **engine.settings(),
        "seed": seed,
        "dim": int(rows.d),
    }
    return result_from_pairs(
        pairs,
        dataset=dataset,
        threshold=resolved,
        reference=ref_index,
        rows=take,
        graph=graph,
        settings=settings,
        layer=layer,
        nearest=nearest,
    )


def _transform(
    dataset: Dataset, normalize: str | None, reducer: PCA | None, progress: ProgressFn | None
) -> Rows:
    """Fit the transform (PCA, then the normalisation) on every split and return the rows."""
    transform = Transform.fit(dataset.arrays, normalize=normalize, reduce=reducer)
    if progress and reducer is not None:
        progress("PCA", 1, 1)
    return Rows.transformed(dataset.arrays, transform)


def graph_close_pairs(graph: NeighborGraph, threshold: float) -> ClosePairs:
    """The close pairs of a kNN graph of every row, as :class:`ClosePairs`."""
    rows, cols = close_pairs(graph, threshold)
    dist = graph.distances[graph.distances <= threshold]
    return merge_pairs(
        [ClosePairs(np.minimum(rows, cols), np.maximum(rows, cols), dist.astype(np.float32))]
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
        ``rows(global_rows) -> (len, d)`` normalised float32 rows (for the sets' statistics).
    graph:
        The neighbour graph the threshold was resolved on (every row, or a sample): the
        histogram is drawn from it.
    nearest:
        Each row's nearest reference row and distance, when the backend computed them itself;
        otherwise taken from the pairs.
    """
    n = int(sum(dataset.sizes))
    split_of_row = dataset.split_of_row
    assignment = ClusterAssignment(n, pairs.i, pairs.j)
    leakage = {}
    if reference is not None:
        if nearest is None:
            nearest = nearest_reference_in_pairs(
                pairs.i, pairs.j, pairs.distance, split_of_row, reference
            )
        leakage = _leakage(nearest, dataset, reference)
    class_counts, effective = _class_counts(dataset, assignment)
    return DuplicatesResult(
        split_sizes=dict(zip(dataset.names, dataset.sizes)),
        reference=None if reference is None else dataset.names[reference],
        threshold=threshold,
        clusters=_duplicate_sets(rows, assignment, dataset, split_of_row),
        leakage=leakage,
        class_counts=class_counts,
        effective_class_counts=effective,
        histogram=_histogram(graph, split_of_row, threshold.value),
        settings=settings,
        layer=layer,
    )


def find_duplicates_by_layer(
    data: Mapping[str, Mapping[str, Any]], **options: Any
) -> dict[str, DuplicatesResult]:
    """Run :func:`find_duplicates` for every layer of ``split -> {layer -> array}``.

    ``labels`` and ``ids``, if given, map ``split -> sequence`` (shared by all layers). The
    arrays are analysed as they are: nothing is copied before each layer's own analysis.
    """
    labels = _split_mapping(options.pop("labels", None), "labels", data)
    ids = _split_mapping(options.pop("ids", None), "ids", data)
    rows = {}
    for split, layers in data.items():
        if not isinstance(layers, Mapping):
            raise NeardupInputError(
                f"data[{split!r}] is not a mapping layer -> array; for one layer use "
                "find_duplicates(data)."
            )
        for layer, values in layers.items():
            rows[split, layer] = (values, ids.get(split), labels.get(split))
    return analyze_layers(rows, **options)


def analyze_layers(
    rows: Mapping[tuple[str, str], tuple[Any, Any, Any]],
    layers: Sequence[str] | None = None,
    **options: Any,
) -> dict[str, DuplicatesResult]:
    """:func:`find_duplicates` per layer of ``(split, layer) -> (values, ids, labels)``.

    The engine behind ``ActivationCollector.analyze``, ``find_duplicates_by_layer`` and the
    integrations: the arrays are passed on as they are (no copy), layer by layer.
    """
    if layers is not None and not list(layers):
        return {}
    if not rows:
        raise NeardupInputError(
            "no activations to analyse: nothing was collected (did the evaluation run, and do "
            "the layer names match?)."
        )
    for bad in ("labels", "ids"):
        if bad in options:
            raise NeardupInputError(
                f"{bad} come with the collected activations; pass {bad}= when adding them."
            )
    splits = list(dict.fromkeys(s for s, _ in rows))
    known = list(dict.fromkeys(layer for _, layer in rows))
    results = {}
    for layer in known if layers is None else layers:
        if layer not in known:
            raise NeardupInputError(f"unknown layer {layer!r} ({closest_names(layer, known)}).")
        missing = [s for s in splits if (s, layer) not in rows]
        if missing:
            raise NeardupInputError(
                f"layer {layer!r} has no activations for split(s) {missing}; every split "
                "must be collected for every layer."
            )
    inputs = {}
    for layer in known if layers is None else layers:  # every layer checked before any runs
        parts = {s: rows[s, layer] for s in splits}
        labels = {s: p[2] for s, p in parts.items() if p[2] is not None}
        ids = {s: p[1] for s, p in parts.items() if p[1] is not None}
        data = {s: p[0] for s, p in parts.items()}
        kwargs = dict(ids=ids or None, labels=labels or None)
        with _naming_layer(layer):
            prepare(data, **kwargs)  # validation only: nothing is copied
        inputs[layer] = (data, kwargs)
    results = {}
    for layer, (data, kwargs) in inputs.items():
        with _naming_layer(layer):
            results[layer] = find_duplicates(data, layer=layer, **kwargs, **options)
    return results


@contextmanager
def _naming_layer(layer: str) -> Iterator[None]:
    """Prefix input errors with the layer they come from."""
    try:
        yield
    except NeardupInputError as err:
        raise NeardupInputError(f"layer {layer!r}: {err}") from err


def _split_mapping(option: Any, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``labels``/``ids`` of find_duplicates_by_layer: a mapping split -> sequence, or None."""
    if option is None:
        return {}
    if not isinstance(option, Mapping):
        raise NeardupInputError(
            f"{name} must be a mapping split -> sequence (shared by all layers), got "
            f"{type(option).__name__}; e.g. {name}={{'train': y_train, 'test': y_test}}."
        )
    unknown = [s for s in option if s not in data]
    if unknown:
        raise NeardupInputError(
            f"{name} names split {unknown[0]!r}, which is not in the data "
            f"({closest_names(unknown[0], list(data))})."
        )
    return dict(option)


def _row_values(
    per_split: list[np.ndarray | None], rows: np.ndarray, dataset: Dataset, split_of_row: np.ndarray
) -> list[Any] | None:
    """Python values (ids or labels) of the given global rows; None when no split has any."""
    if all(v is None for v in per_split):
        return None
    offsets = dataset.offsets
    out = []
    for r in rows:
        s = split_of_row[r]
        values = per_split[s]
        out.append(None if values is None else to_python(values[r - offsets[s]]))
    return out


def _duplicate_sets(
    take: Callable[[np.ndarray], np.ndarray],
    assignment: ClusterAssignment,
    dataset: Dataset,
    split_of_row: np.ndarray,
) -> list[DuplicateSet]:
    members = assignment.members
    if members:  # only the member rows are gathered, renumbered 0.. in set order
        sizes = np.array([len(m) for m in members])
        member_rows = np.concatenate(members)
        local = np.split(np.arange(len(member_rows)), np.cumsum(sizes)[:-1])
        means, stds, ordered_local, projections = set_statistics(take(member_rows), local)
        ordered = [member_rows[o] for o in ordered_local]
    else:
        means, stds, ordered, projections = np.zeros(0), np.zeros(0), [], []
    offsets = dataset.offsets
    sets = [
        DuplicateSet(
            ids=_row_values(dataset.ids, rows, dataset, split_of_row),
            splits=[dataset.names[s] for s in split_of_row[rows]],
            positions=(rows - offsets[split_of_row[rows]]).tolist(),
            labels=_row_values(dataset.labels, rows, dataset, split_of_row),
            mean=float(mean),
            std=float(std),
            projection=proj,
        )
        for rows, mean, std, proj in zip(ordered, means, stds, projections)
    ]
    order = sorted(range(len(sets)), key=lambda i: (sets[i].mean, -sets[i].size, i))
    return [sets[i] for i in order]


def _leakage(
    nearest: tuple[np.ndarray, np.ndarray], dataset: Dataset, ref_index: int
) -> dict[str, Leakage]:
    best_row, best_dist = nearest
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


def _class_counts(
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


def _histogram(graph: NeighborGraph, split_of_row: np.ndarray, threshold: float) -> dict:
    """Nearest-neighbour distance histogram, split into within-split and cross-split pairs.

    Drawn from the rows of ``graph``: every row, or the sample of the ``Cells`` backend.
    """
    nearest = graph.distances[:, 0]
    valid = np.isfinite(nearest)
    nearest = nearest[valid].astype(np.float64)
    query_split = split_of_row[graph.query_rows[valid]]
    cross = query_split != split_of_row[graph.indices[valid, 0]]
    top = max(float(np.quantile(nearest, 0.995)) if nearest.size else 0.0, 2.0 * threshold)
    top = top if top > 0 else 1.0
    edges = np.linspace(0.0, top, _HISTOGRAM_BINS + 1)
    clipped = np.minimum(nearest, top)
    within_counts, _ = np.histogram(clipped[~cross], bins=edges)
    cross_counts, _ = np.histogram(clipped[cross], bins=edges)
    return {
        "edges": edges.tolist(),
        "within": within_counts.tolist(),
        "cross": cross_counts.tolist(),
    }
