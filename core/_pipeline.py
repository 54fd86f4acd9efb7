"""``find_duplicates``: validate -> transform -> search -> threshold -> sets/leakage -> report."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ._clusters import ClusterAssignment, cluster_rows, set_statistics
from ._errors import NeardupInputError, closest_names
from ._leakage import leakage_record, nearest_reference, to_python
from ._normalize import check_normalize
from ._progress import as_progress
from ._reduce import PCA, as_reducer
from ._threshold import ResolvedThreshold, ThresholdStrategy, as_strategy, resolve_threshold
from ._transform import Transform
from ._validate import Dataset, prepare, split_index
from .report import DuplicateSet, DuplicatesResult, Leakage
from .search import DEFAULT_TREES, NeighborGraph, ProgressFn, Rows, build_graph, clamp_k

__all__ = ["analyze_layers", "find_duplicates", "find_duplicates_by_layer"]

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
    backend: str = "auto",
    reference: str | None = "train",
    seed: int = 0,
    n_trees: int = DEFAULT_TREES,
    search_k: int = -1,
    n_jobs: int = 1,
    query_jobs: int = -1,
    dedupe: bool = True,
    layer: str | None = None,
    progress: bool | ProgressFn | None = None,
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
        Neighbours per sample (clamped to N-1 with a warning).
    backend:
        ``"exact"`` (blocked BLAS), ``"annoy"`` (approximate; ``n_trees``/``search_k``,
        seeded by ``seed``; ``n_jobs`` threads build the index: 1 gives the same result on
        every machine, -1 uses all cores as DNIKit does) or ``"auto"`` (exact for small
        N*N*d, annoy above). ``n_trees`` defaults to 6 (DNIKit: 30), measured to keep
        within-threshold recall >= 0.99 (``benchmarks/bench_duplicates.py``).
    query_jobs:
        Processes that query the annoy index (-1: one per CPU, 1: in this process). The
        result is the same for any value.
    dedupe:
        With annoy, group byte-identical rows by hashing first and index each distinct row
        once; copies are then found exactly and cost no approximate search.
    reference:
        The split others are checked against for leakage (ignored with a single split);
        ``None`` skips leakage.
    progress:
        ``True`` draws ``tqdm`` progress bars (a widget in Jupyter, stderr elsewhere); or a
        ``callback(stage, done, total)`` for long runs.

    Returns
    -------
    DuplicatesResult
    """
    # validate
    progress = as_progress(progress)
    normalize = check_normalize(normalize)
    if not isinstance(dedupe, (bool, np.bool_)):
        raise NeardupInputError(f"dedupe must be True or False, got {dedupe!r}.")
    strategy = as_strategy(threshold)
    reducer = as_reducer(reduce)
    dataset = prepare(data, labels=labels, ids=ids)
    ref_index = None
    if reference is not None and len(dataset.names) > 1:
        ref_index = split_index(reference, dataset.names, what="reference split")
    k = clamp_k(k, sum(dataset.sizes))
    # transform
    rows = _transform(dataset, normalize, reducer, progress)
    # search
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
        prefer=None if ref_index is None else split_of_row == ref_index,
        progress=progress,
    )
    x = rows.matrix()
    # threshold, sets and leakage
    resolved = resolve_threshold(strategy, graph, normalize)
    assignment = cluster_rows(graph, resolved.value)
    leakage = (
        _leakage(x, graph, resolved.value, dataset, split_of_row, ref_index)
        if ref_index is not None
        else {}
    )
    # report
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
    return _report(
        dataset, x, graph, resolved, assignment, leakage, ref_index, settings=settings, layer=layer
    )


def _transform(
    dataset: Dataset, normalize: str | None, reducer: PCA | None, progress: ProgressFn | None
) -> Rows:
    """Fit the transform (PCA, then the normalisation) on every split and return the rows."""
    transform = Transform.fit(dataset.arrays, normalize=normalize, reduce=reducer)
    if progress and reducer is not None:
        progress("PCA", 1, 1)
    return Rows.transformed(dataset.arrays, transform)


def _report(
    dataset: Dataset,
    x: np.ndarray,
    graph: NeighborGraph,
    resolved: ResolvedThreshold,
    assignment: ClusterAssignment,
    leakage: dict[str, Leakage],
    ref_index: int | None,
    *,
    settings: dict[str, Any],
    layer: str | None,
) -> DuplicatesResult:
    """The :class:`DuplicatesResult`: sets, leakage, class counts and the distance histogram."""
    split_of_row = dataset.split_of_row
    class_counts, effective = _class_counts(dataset, assignment, ref_index)
    return DuplicatesResult(
        split_sizes=dict(zip(dataset.names, dataset.sizes)),
        reference=None if ref_index is None else dataset.names[ref_index],
        threshold=resolved,
        clusters=_duplicate_sets(x, assignment, dataset, split_of_row),
        leakage=leakage,
        class_counts=class_counts,
        effective_class_counts=effective,
        histogram=_histogram(graph, split_of_row, resolved.value),
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
    x: np.ndarray, assignment: ClusterAssignment, dataset: Dataset, split_of_row: np.ndarray
) -> list[DuplicateSet]:
    means, stds, ordered, projections = set_statistics(x, assignment.members)
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


def _class_counts(
    dataset: Dataset, assignment: ClusterAssignment, ref_index: int | None
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
            keys = np.unique(labels).tolist()
        raw[name], effective[name] = {}, {}
        for key, code in zip(keys, [0] if keys == [None] else keys):
            mask = labels == code
            members = set_of[mask]
            alone = int(np.count_nonzero(members < 0))
            grouped = members[members >= 0]
            kept_here = np.unique(grouped[kept_in[grouped] == s])
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


def _histogram(graph: NeighborGraph, split_of_row: np.ndarray, threshold: float) -> dict:
    """Nearest-neighbour distance histogram, split into within-split and cross-split pairs."""
    nearest = graph.distances[:, 0]
    valid = np.isfinite(nearest)
    nearest = nearest[valid].astype(np.float64)
    cross = split_of_row[valid] != split_of_row[graph.indices[valid, 0]]
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
