"""``find_duplicates``: validate -> transform -> search -> threshold -> sets/leakage -> report.

One view runs through :mod:`neardup._view_run` (the backend's close pairs and threshold, then
the result); several views of the same samples through :mod:`neardup._multiview`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ._errors import NeardupInputError, check_split_mapping, closest_names
from ._multiview import find_duplicates_multiview
from ._params import check_option, check_options
from ._progress import as_progress
from ._text_join import text_source
from ._threshold import ThresholdStrategy
from ._validate import prepare, split_index
from ._view_run import analyse_view, graph_close_pairs, result_from_pairs, single_view_result
from .report import DuplicatesResult
from .search import Backend, ProgressFn, as_backend
from .views import ImageRows

__all__ = [
    "ANALYSIS_OPTIONS",
    "analyze_layers",
    "find_duplicates",
    "find_duplicates_by_layer",
    "graph_close_pairs",
    "result_from_pairs",
]


def _is_multiview(data: Any) -> bool:
    """``{split: {view: array}}`` (several views) rather than ``{split: array}``."""
    return (
        isinstance(data, Mapping)
        and len(data) > 0
        and all(isinstance(v, Mapping) for v in data.values())
    )


def _image_rows_as_view(data: Any) -> Any:
    """:class:`neardup.views.ImageRows` given as the data itself (one view) -> the view
    ``"image"`` (analysed with its aligned view)."""
    if isinstance(data, ImageRows):
        return {"data": {"image": data}}
    if isinstance(data, Mapping) and any(isinstance(v, ImageRows) for v in data.values()):
        return {split: {"image": values} for split, values in data.items()}
    return data


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
    combine: str = "any",
    max_diameter: float | None = None,
    layer: str | None = None,
    progress: bool | ProgressFn | None = None,
) -> DuplicatesResult:
    """Find near-duplicate samples, within and across splits, in one or several views.

    Parameters
    ----------
    data:
        An ``(N, ...)`` array (one split, named ``"data"``) or a mapping ``split -> array``.
        Every sample is flattened; any float or integer dtype is computed in float32.
        Several *views* of the same samples (a model layer, :class:`neardup.views.ImageView`
        thumbnails, :class:`neardup.views.TextView` n-grams, ...): a mapping
        ``split -> {view -> (N_split, ...) array}``, every split with the same views. Each view
        gets its own threshold; the result combines them (see ``combine``) and keeps each
        view's own result in ``result.views``. :class:`neardup.views.ImageRows` (from
        :class:`neardup.views.AlignedImageView`), as a view or as the data (then named
        ``"image"``), is analysed as two views: its 8x8 thumbnail and ``"<view>:aligned"``,
        candidate pairs re-scored over small shifts and scales (1-2 px shifts, 90 % crops).
        :class:`neardup.views.TextRows` (from :class:`neardup.views.TextView`) as a view keep
        their texts: a pair within that view's threshold whose words were replaced rather
        than dropped or misspelt (:func:`neardup.views.word_edits`, over whitespace tokens:
        templated sentences) is not close in it (``settings["word_check"]`` counts such pairs
        per view).
    labels, ids:
        Per split (a mapping like ``data``, or one sequence for a single array). Labels (int
        or str) give per-class leakage and effective class counts; ids (unique per split,
        any hashable) name samples in the result. Default ids: the position in the split.
    threshold:
        A strategy: ``Auto()`` by default (cut below the bulk of natural nearest-neighbour
        distances, chosen per view; silent on data without duplicates; the result's
        ``threshold.reason`` says why it cut there), ``Relative(r)``, ``Cosine(s)``,
        ``Distance(x)``, or DNIKit's ``Slope()`` / ``Percentile(p)``. With several views, one
        strategy for all or a mapping ``view -> strategy`` (missing views get ``Auto()``).
    normalize:
        ``"row"`` (cosine geometry, default), ``"column"`` (DNIKit) or ``None``; with several
        views, one value or a mapping ``view -> value``.
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
    combine:
        With several views, how their verdicts combine into one: ``"any"`` (a pair is a
        near-duplicate when it is within its threshold in at least one view), or
        ``"confirm:<view>"`` (as ``"any"``, and the named view must also put the pair within
        1.1 of its thresholds; a text view within its own, passing its word check: a text view
        confirming an embedding's finds, so that the embedding's paraphrases are not
        reported; for :class:`~neardup.views.AlignedImageView` rows, one of the image's
        pixel views within 2.5 of its thresholds, so that a model's look-alikes are not).
    max_diameter:
        Split chained duplicate sets so that no two members of a set are further apart than
        ``max_diameter`` thresholds (a multiple of the threshold, so one value fits every
        view; 1.0 makes every member pair itself a near-duplicate). ``None``: sets are the
        connected components of close pairs, and ``DuplicateSet.diameter`` reports how far
        they stretch.
    progress:
        ``True`` draws ``tqdm`` progress bars (a widget in Jupyter, stderr elsewhere); or a
        ``callback(stage, done, total)`` for long runs.

    Returns
    -------
    DuplicatesResult
        With several views, ``leakage[split]`` is the combined verdict: each leaked pair
        records which views found it (``found_by``) and its distance in every view
        (``view_distances``); its ``distances`` are relative (distance / threshold in the view
        where the pair is closest, so <= 1). ``clusters`` come from the union of all views'
        close pairs; ``views[name]`` holds each view's own result.
    """
    # validate (every option, before any work)
    per_view = {"threshold": threshold, "normalize": normalize}
    for name, value in per_view.items():
        if isinstance(value, Mapping):
            if not _is_multiview(data):
                raise NeardupInputError(
                    "threshold= and normalize= take one value per view only when data has "
                    "several views ({split: {view: array}}); got a mapping for a single view."
                )
            for view_value in value.values():
                check_option(name, view_value, where="find_duplicates")
    check_options(
        dict(
            {n: v for n, v in per_view.items() if not isinstance(v, Mapping)},
            reduce=reduce,
            k=k,
            backend=backend,
            reference=reference,
            seed=seed,
            n_trees=n_trees,
            search_k=search_k,
            n_jobs=n_jobs,
            query_jobs=query_jobs,
            dedupe=dedupe,
            combine=combine,
            max_diameter=max_diameter,
            layer=layer,
            progress=progress,
        ),
        where="find_duplicates",
    )
    data = _image_rows_as_view(data)
    progress = as_progress(progress)
    engine = as_backend(
        backend,
        n_trees=n_trees,
        search_k=search_k,
        n_jobs=n_jobs,
        query_jobs=query_jobs,
        dedupe=dedupe,
    )
    if _is_multiview(data):
        return find_duplicates_multiview(
            data,
            labels=labels,
            ids=ids,
            threshold=threshold,
            normalize=normalize,
            reduce=reduce,
            k=k,
            backend=engine,
            reference=reference,
            seed=seed,
            combine=combine,
            max_diameter=max_diameter,
            progress=progress,
        )
    dataset = prepare(data, labels=labels, ids=ids)
    ref_index = None
    if reference is not None and len(dataset.names) > 1:
        ref_index = split_index(reference, dataset.names, what="reference split")
    run = analyse_view(
        dataset,
        threshold=threshold,
        normalize=normalize,
        reduce=reduce,
        k=k,
        backend=engine,
        reference_index=ref_index,
        seed=seed,
        progress=progress,
        text=text_source(list(data.values()) if isinstance(data, Mapping) else [data]),
    )
    return single_view_result(run, dataset, ref_index, max_diameter=max_diameter, layer=layer)


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
    options = check_options(options, where="analyze", allowed=ANALYSIS_OPTIONS)
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


#: the options of find_duplicates besides the data and its labels and ids.
ANALYSIS_OPTIONS = tuple(
    name
    for name in inspect.signature(find_duplicates).parameters
    if name not in ("data", "labels", "ids", "layer")
)


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
    check_split_mapping(option, name, data, f"{name}={{'train': y_train, 'test': y_test}}")
    return dict(option)
