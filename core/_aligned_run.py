"""The aligned view of :class:`neardup.views.ImageRows`: candidates, aligned distances, threshold.

For each query row (the evaluation rows when there is a reference split, otherwise every row)
the nearest rows it may duplicate (reference rows, or every other row) are found in three cheap
shift-tolerant views (:func:`neardup.views.candidate_features`, ``candidates`` per view, by
:func:`neardup.search.probed_neighbors`: exact for small inputs, otherwise each query searches
the nearest cells of a k-means partition, so the work grows like ``Q * sqrt(T)``, not
``Q * T``); each candidate pair is re-scored by
:func:`neardup.views.indexed_aligned_distances` on the grey thumbnails (with one split, each
unordered pair once). Thumbnails blown up from images smaller than 16 px (an 8x8 digit in a
16x16 thumbnail) are compared at their source resolution instead, over whole-pixel shifts
of up to 2 source pixels on the pair's overlap (:func:`neardup.views.overlap_distances`),
and each query's candidates are its nearest rows in that distance. Each query's candidates
sorted by aligned distance form a neighbour graph in the aligned metric, so the view's
threshold strategy (``Auto`` by default) reads it like any kNN graph: silent on data without
duplicates, with its reason. Pairs within the threshold are the view's close pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._auto_threshold import Auto
from ._chains import PairwiseFn
from ._threshold import as_strategy, resolve_threshold
from ._view_run import ViewRun, graph_close_pairs
from .search import NeighborGraph, Rows, probed_neighbors
from .views import (
    ImageRows,
    as_image_rows,
    candidate_features,
    indexed_aligned_distances,
    overlap_distances,
    shift_crops,
    shift_offsets,
    shift_reach,
    source_factor,
    source_images,
)

__all__ = ["ALIGNED_SUFFIX", "DEFAULT_CANDIDATES", "AlignedRun", "aligned_run"]

#: the aligned view of image view ``v`` is named ``v + ALIGNED_SUFFIX``
ALIGNED_SUFFIX = ":aligned"
#: nearest rows per candidate view and query row (two candidate views)
DEFAULT_CANDIDATES = 10
#: small images: up to this many query-target pairs, shift candidates by brute force
_EXACT_SHIFT_PAIRS = 20_000_000
_SEARCH_BYTES = 64 << 20  # one block of brute-force products


class AlignedRun(ViewRun):
    """A :class:`ViewRun` whose distance is the aligned distance of the thumbnails."""

    images: np.ndarray  # (N, R, R, 1) float32: the grey thumbnails
    scorer: _Scorer

    def pair_distances(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``(p,)`` aligned distances of rows ``i[p]`` and ``j[p]``."""
        return self.scorer(i, j)

    def pairwise(self) -> PairwiseFn:
        """Aligned member-to-member distances in threshold units."""
        scale = self.threshold.value if self.threshold.value > 0 else 1.0

        def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            ii, jj = np.meshgrid(np.asarray(a), np.asarray(b), indexing="ij")
            d = self.pair_distances(ii.ravel(), jj.ravel()).astype(np.float64)
            return d.reshape(ii.shape) / scale

        return pairwise


class _Scorer:
    """The aligned distance of row pairs of ``images`` ``(N, R, R, 1)``: a crop of either image
    is matched (:func:`neardup.views.indexed_aligned_distances`), except for thumbnails blown
    up from small images (``source``: ``(N, S, S, 1)`` at the source resolution, ``S < 16``),
    whose distance is the overlap distance over whole-pixel shifts of up to ``reach`` source
    pixels (:func:`neardup.views.overlap_distances`), which reaches a 2 px shift of an 8x8
    image. Taking the smaller of the two for those instead (``bench_quality.py --only
    small``, Fashion-MNIST box-filtered to 12x12 / 10x10) found no crop either way and brought
    natural pairs closer: 3 / 1 false alarms on the disjoint controls instead of 1 / 0."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        factor = source_factor(images)
        self.source = source_images(images, factor) if factor > 1 else None
        self.reach = shift_reach(self.source.shape[1]) if self.source is not None else 0

    def __call__(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``(p,)`` distances of rows ``i[p]`` and ``j[p]`` (each image's own share of the
        work done once)."""
        if self.reach:
            return overlap_distances(self.source, i, j, reach=self.reach)
        return indexed_aligned_distances(self.images, i, j)

    def unordered(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """As calling it, scoring each unordered pair once, as ``(min, max)``: in a split
        searched against itself most candidate pairs are listed both ways round."""
        low, high = np.minimum(i, j), np.maximum(i, j)
        key = low.astype(np.int64) * len(self.images) + high
        _, first, back = np.unique(key, return_index=True, return_inverse=True)
        return self(low[first], high[first])[back.ravel()]


def _shift_candidates(
    source: np.ndarray, query: np.ndarray, target: np.ndarray, per_view: int, reach: int
) -> np.ndarray:
    """``(len(query), per_view)`` global rows: each query's nearest ``target`` rows in the
    overlap correlation over whole-pixel shifts within ``reach`` (``source`` ``(N, S, S, 1)``,
    small images at their own resolution), from the overlapping crops of every shift
    (:func:`neardup.views.shift_crops`, ``S * S`` or fewer dimensions). Up to
    :data:`_EXACT_SHIFT_PAIRS` query-target pairs: exactly (the best shift's product of every
    pair, then each query's top rows); beyond: each shift's nearest rows by
    :func:`neardup.search.probed_neighbors`, merged by best correlation. ``-1``: none."""
    offsets = shift_offsets(reach)
    if len(query) * len(target) <= _EXACT_SHIFT_PAIRS:
        return _exact_shift_candidates(source, query, target, per_view, offsets)
    want = per_view + 1 if np.array_equal(query, target) else per_view
    rows, scores = [], []
    for dy, dx in offsets:
        first, second = shift_crops(source, dy, dx)
        nearest = probed_neighbors(first[query], second[target], want)
        safe = np.maximum(nearest, 0)
        corr = np.einsum("qn,qkn->qk", first[query], second[target[safe]])
        rows.append(np.where(nearest >= 0, target[safe], -1))
        scores.append(np.where(nearest >= 0, corr, -np.inf))
    found, score = np.concatenate(rows, axis=1), np.concatenate(scores, axis=1)
    score[(found == query[:, None]) | (found < 0)] = -np.inf
    order = np.lexsort((-score, found), axis=-1)  # by row, its best shift first
    found, score = np.take_along_axis(found, order, 1), np.take_along_axis(score, order, 1)
    score[:, 1:][found[:, 1:] == found[:, :-1]] = -np.inf  # the row's other shifts
    best = np.argsort(-score, axis=1, kind="stable")[:, :per_view]
    return np.where(
        np.isfinite(np.take_along_axis(score, best, 1)), np.take_along_axis(found, best, 1), -1
    )


def _exact_shift_candidates(
    source: np.ndarray,
    query: np.ndarray,
    target: np.ndarray,
    per_view: int,
    offsets: list[tuple[int, int]],
) -> np.ndarray:
    """:func:`_shift_candidates` by brute force: for each block of queries, the best
    correlation over the shifts with every target (one product per shift), then the top."""
    crops = [shift_crops(source, dy, dx) for dy, dx in offsets]
    k = min(per_view, len(target))
    out = np.full((len(query), per_view), -1, dtype=np.int64)
    step = max(1, _SEARCH_BYTES // (4 * len(target)))
    for start in range(0, len(query), step):
        rows = query[start : start + step]
        best = np.full((len(rows), len(target)), -np.inf, dtype=np.float32)
        for first, second in crops:
            np.maximum(best, first[rows] @ second[target].T, out=best)
        best[rows[:, None] == target[None, :]] = -np.inf  # no self
        top = np.argpartition(-best, k - 1, axis=1)[:, :k]
        keep = np.isfinite(np.take_along_axis(best, top, 1))
        out[start : start + len(rows), :k] = np.where(keep, target[top], -1)
    return out


def _candidates(
    images: np.ndarray, query: np.ndarray, target: np.ndarray, per_view: int
) -> np.ndarray:
    """``(len(query), c)`` global candidate rows of each query (``-1``: none; no self, no
    repeats), the union of its nearest ``target`` rows in each candidate view."""
    lists = []
    for features in candidate_features(images):
        want = per_view + 1 if np.array_equal(query, target) else per_view
        nearest = probed_neighbors(features[query], features[target], want)
        lists.append(np.where(nearest >= 0, target[nearest], -1))
    return _union(query, lists)


def _union(query: np.ndarray, lists: list[np.ndarray]) -> np.ndarray:
    """The rows of the ``(len(query), c_l)`` global candidate ``lists`` side by side, without
    each query itself and without repeats (``-1``: none)."""
    found = np.concatenate(lists, axis=1)
    found = np.where(found == query[:, None], -1, found)
    found.sort(axis=1)  # -1 (none) first, then repeats side by side
    repeat = np.zeros_like(found, dtype=bool)
    repeat[:, 1:] = found[:, 1:] == found[:, :-1]
    found[repeat] = -1
    return found


def aligned_run(
    parts: list[ImageRows],
    split_of_row: np.ndarray,
    reference_index: int | None,
    *,
    threshold: Any = None,
    candidates: int = DEFAULT_CANDIDATES,
) -> AlignedRun:
    """Analyse the aligned view of the splits' ``parts`` (``(N_split, R*R*C)`` each, in order).

    ``threshold``: a strategy or ``None`` (:class:`neardup.Auto`), resolved on each query's
    candidates sorted by aligned distance.
    """
    strategy = Auto() if threshold is None else as_strategy(threshold)
    rows = as_image_rows(np.concatenate(parts), parts[0].side, parts[0].channels)
    # geometry is matched on the grey image (colour changes are the 8x8 colour view's job):
    # a third of the work and memory of matching three channels
    images = np.ascontiguousarray(rows.images().mean(axis=-1, keepdims=True))
    n = len(images)
    everyone = np.arange(n)
    if reference_index is None:
        query, target = everyone, everyone
    else:
        query = np.flatnonzero(split_of_row != reference_index)
        target = np.flatnonzero(split_of_row == reference_index)
    if not len(query) or not len(target):
        query = target = everyone
    scorer = _Scorer(images)
    if scorer.reach:  # small images: their nearest rows in the overlap distance itself
        shifted = _shift_candidates(scorer.source, query, target, candidates, scorer.reach)
        found = _union(query, [shifted])
    else:
        found = _candidates(images, query, target, candidates)
    valid = found >= 0
    q_rows = np.repeat(query, found.shape[1])[valid.ravel()]
    distances = np.full(found.shape, np.inf, dtype=np.float32)
    score = scorer.unordered if query is target else scorer
    distances[valid] = score(q_rows, found[valid])
    # each query's best `candidates` (all finite: every candidate view gives that many rows)
    order = np.lexsort((np.where(valid, found, n), distances), axis=-1)[:, :candidates]
    graph = NeighborGraph(
        indices=np.take_along_axis(np.where(valid, found, -1), order, axis=1),
        distances=np.take_along_axis(distances, order, axis=1),
        backend="aligned",
        rows=query,
        total_rows=len(query),
    )
    resolved = resolve_threshold(strategy, graph, "row")
    pairs = graph_close_pairs(_global_graph(graph, n), resolved.value)
    settings: dict[str, Any] = {
        "normalize": "standardised thumbnail",
        "reduce": None,
        "k": int(graph.k),
        "backend": "aligned",
        "candidates": candidates,
        "side": int(rows.side),
        "dim": int(images[0].size),
        "shift_reach": (
            f"{scorer.reach} source px of {scorer.source.shape[1]}x{scorer.source.shape[1]}"
            if scorer.reach
            else None
        ),
    }
    run = AlignedRun(
        rows=Rows.from_matrix(images.reshape(n, -1)),
        graph=graph,
        threshold=resolved,
        settings=settings,
        pairs=pairs,
    )
    run.images = images
    run.scorer = scorer
    return run


def _global_graph(graph: NeighborGraph, n: int) -> NeighborGraph:
    """The graph as ``(N, k)`` over every row (rows that were no query list no neighbour)."""
    indices = np.full((n, graph.k), -1, dtype=np.int64)
    distances = np.full((n, graph.k), np.inf, dtype=np.float32)
    indices[graph.query_rows] = graph.indices
    distances[graph.query_rows] = graph.distances
    return NeighborGraph(indices=indices, distances=distances, backend=graph.backend)
